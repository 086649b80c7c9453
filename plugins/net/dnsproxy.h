/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DNS interceptor (docs/network-dns.md): answers the guest's DNS on the
 * sandbox's gateway.  Every query passes the policy (blocked names get
 * NXDOMAIN at once), goes to the host's upstream resolvers as a query the
 * interceptor builds itself, and every reply passes rebind protection
 * before the guest sees it; the addresses it finally hands out are pinned.
 *
 * One thread runs the whole loop (epoll); the policy callbacks are called
 * on it, one at a time.
 */
#ifndef MSB_NET_DNSPROXY_H
#define MSB_NET_DNSPROXY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNSPROXY_UPSTREAMS_MAX 3
#define DNSPROXY_PENDING_MAX   1024  /* UDP queries waiting for an upstream */
#define DNSPROXY_TCP_MAX       64    /* client TCP connections at once */
#define DNSPROXY_TCP_QUERY_MAX 4096  /* the largest query accepted over TCP */
#define DNSPROXY_TIMEOUT_MS    2000  /* per upstream try, when cfg says 0 */
#define DNSPROXY_TCP_IDLE_MS   10000 /* to read one whole query or write one reply */
#define DNSPROXY_UDP_BURST     64    /* datagrams read per wakeup per socket */

enum { DNSPROXY_ALLOW = 0, DNSPROXY_BLOCK = 1 };

/*
 * What the interceptor asks its owner.  Every callback may be NULL: a NULL
 * query allows every name, a NULL address_allowed refuses every internal
 * address (the safe default), a NULL pin pins nothing.
 */
struct dnsproxy_policy {
	/* DNSPROXY_ALLOW or DNSPROXY_BLOCK for a question (qname as in dns.h). */
	int (*query)(void *ctx, const char *qname, uint16_t qtype);
	/*
	 * Rebind protection: whether a reply may carry addr, an internal
	 * address (dns_addr_internal) that some answer record holds.  false
	 * turns the whole reply into NXDOMAIN.  addr's port is 0.
	 */
	bool (*address_allowed)(void *ctx, const struct sockaddr *addr);
	/*
	 * For each A or AAAA record that the guest receives as the answer to
	 * its question (dns_reply_addresses: the question's name or a name its
	 * CNAME chain reaches), called before the reply is sent, with the
	 * question's name, the address (port 0) and that record's own TTL.
	 * It must not block for long: the loop waits for it.
	 */
	void (*pin)(void *ctx, const char *qname, const struct sockaddr *addr, uint32_t ttl);
};

/*
 * Start a thread running fn(arg); *tid is the pthread_t that dnsproxy_stop
 * joins.  0 or -errno.  (The module passes one that calls
 * host->thread_create with MSB_THREAD_PROXY.)
 */
typedef int (*dnsproxy_thread_fn)(void *thread_ctx, void *(*fn)(void *), void *arg, pthread_t *tid);

struct dnsproxy_cfg {
	/*
	 * The guest-facing sockets, bound by the caller (perhaps inside the
	 * sandbox's namespace): a UDP socket, and a listening TCP socket or
	 * -1.  They stay the caller's; the interceptor sets O_NONBLOCK on
	 * them and never closes them.
	 */
	int udp_fd;
	int tcp_listen_fd;
	/*
	 * A second pair, for IPv6 clients (the gateway's IPv6 address), or -1
	 * each (set them: 0 is a valid fd).  A reply goes out on the socket of
	 * its client's address family.
	 */
	int udp6_fd;
	int tcp6_listen_fd;
	/*
	 * Upstream resolvers (port included), tried in this order.  None at
	 * all is allowed (a host without a resolver): every query that
	 * passes the policy then gets SERVFAIL at once.
	 */
	struct sockaddr_storage upstream[DNSPROXY_UPSTREAMS_MAX];
	socklen_t upstream_len[DNSPROXY_UPSTREAMS_MAX];
	unsigned nupstream;
	unsigned timeout_ms;		      /* per upstream try; 0: DNSPROXY_TIMEOUT_MS */
	unsigned max_pending;		      /* 0 or above DNSPROXY_PENDING_MAX: that */
	unsigned max_tcp;		      /* 0 or above DNSPROXY_TCP_MAX: that */
	unsigned tcp_idle_ms;		      /* 0: DNSPROXY_TCP_IDLE_MS */
	const struct dnsproxy_policy *policy; /* NULL: allow all, refuse internal addresses */
	void *ctx;			      /* the policy callbacks' first argument */
	dnsproxy_thread_fn thread_create;     /* NULL: pthread_create */
	void *thread_ctx;
};

/* Counters, for logs and tests; read with dnsproxy_stats. */
struct dnsproxy_stats {
	uint64_t queries;     /* queries read, UDP and TCP */
	uint64_t forwarded;   /* sent upstream (each try counts) */
	uint64_t answered;    /* upstream replies passed to the guest */
	uint64_t blocked;     /* NXDOMAIN by policy */
	uint64_t rebind;      /* replies turned into NXDOMAIN by rebind protection */
	uint64_t servfail;    /* SERVFAIL after every upstream failed, or a full table */
	uint64_t refused;     /* REFUSED or NOTIMP: not IN, ANY/AXFR/IXFR/MAILA/MAILB, opcode */
	uint64_t formerr;     /* FORMERR answered to an unparseable query */
	uint64_t dropped;     /* dropped unanswered: shorter than a header, or a response */
	uint64_t pins;	      /* pin callbacks made */
	uint64_t tcp_refused; /* TCP connections closed at once for want of room */
};

struct dnsproxy;

/*
 * Check cfg, make the upstream sockets (in the calling thread's network
 * namespace; the loop thread inherits it for TCP upstream connections) and
 * start the loop thread.  cfg is copied.  0 and *out, or -EINVAL (bad cfg),
 * -ENOMEM, or another -errno; nothing is left running on failure.
 */
int dnsproxy_start(const struct dnsproxy_cfg *cfg, struct dnsproxy **out);

/*
 * Stop the loop, join its thread, close what the interceptor opened and
 * free it.  Queries in flight are dropped.  NULL is a no-op.
 */
void dnsproxy_stop(struct dnsproxy *p);

/* A snapshot of the counters (any thread). */
void dnsproxy_stats(const struct dnsproxy *p, struct dnsproxy_stats *out);

#endif
