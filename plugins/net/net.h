/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The netfilter network module's insides (docs/network.md).
 *
 *   ns.c      network namespaces: make one, run a function inside one
 *   link.c    links and addresses over rtnetlink (libnl-route): veth, TAP
 *   policy.c  the sandbox's nftables ruleset, from the spec's rules
 *   plugin.c  the module: slots, setup, teardown, reap
 *
 * Layout of one sandbox (slot N, pool P = 10.200.0.0/16 by default):
 *
 *   guest eth0 P+8N+2/30 ── tap0 P+8N+1/30 (the gateway, group `host`)
 *        [sandbox netns: table inet msb — egress policy, NAT]
 *   up0 P+8N+6/30 ── veth ── msbhN P+8N+5/30 on the host
 *        [host: table inet msb_hN — masquerade to the uplink, isolation]
 *
 * IPv6 mirrors it in the ULA fd6d:7362:6e00::/48: the TAP link is /64 number
 * 2N, the veth link 2N+1 (::1 the host or gateway side, ::2 the other).
 */
#ifndef MSB_NET_NET_H
#define MSB_NET_NET_H

#include <arpa/inet.h>
#include <net/if.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <msb/msb-plugin.h>

#define NET_TAP_NAME  "tap0"
#define NET_UP_NAME   "up0"
#define NET_HOST_FMT  "msbh%u"	/* the host end of the uplink veth */
#define NET_TABLE     "msb"	/* inet table inside the sandbox's namespace */
#define NET_HTABLE    "msb_h%u" /* inet table on the host, per slot */
#define NET_SLOTS_MAX 8192	/* /29 per slot in a /16 */
#define NET_MTU	      1500

/* ---- ns.c ------------------------------------------------------------------ */

/* A new network namespace with its loopback up: *fd refers to it.  0 or -errno. */
int ns_new(int *fd);
/* Run fn(arg) on a thread inside the namespace nsfd; fn's result, or -errno. */
int ns_run(int nsfd, int (*fn)(void *arg), void *arg);
/* Write a sysctl under /proc/sys (path relative to it) in the calling thread's namespace. */
int ns_sysctl(const char *path, const char *value);

/* ---- link.c ----------------------------------------------------------------- */

struct nl_sock;
struct dnsproxy;
struct nft_ctx;

/* A NETLINK_ROUTE socket in the calling thread's namespace. */
struct nl_sock *link_sock(void);
int link_index(struct nl_sock *s, const char *name);
/* Up/down and MTU (0: unchanged). */
int link_up(struct nl_sock *s, const char *name, unsigned mtu);
int link_del(struct nl_sock *s, const char *name);
/* A veth pair: `name` here, `peer` moved into the namespace peer_nsfd. */
int link_veth(struct nl_sock *s, const char *name, const char *peer, int peer_nsfd);
/* Add "addr/prefix" (v4 or v6) to the link. */
int link_addr(struct nl_sock *s, const char *name, const char *cidr);
/* A default route through gw (v4 or v6 text). */
int link_default_route(struct nl_sock *s, const char *gw);
/* A TAP (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) named name in this namespace: its fd. */
int link_tap(const char *name);

/* ---- policy.c ---------------------------------------------------------------- */

/* What the ruleset needs to know of the sandbox's addressing. */
struct net_addrs {
	char gw4[INET6_ADDRSTRLEN], guest4[INET6_ADDRSTRLEN], hostend4[INET6_ADDRSTRLEN];
	char gw6[INET6_ADDRSTRLEN], guest6[INET6_ADDRSTRLEN], hostend6[INET6_ADDRSTRLEN];
	char up4[INET6_ADDRSTRLEN], up6[INET6_ADDRSTRLEN]; /* up0, the namespace's uplink end */
};

struct net_policy; /* parsed rules */

/*
 * Parse the spec's "network" object (docs/spec.md) into *p: 0, or -EINVAL
 * with a one-line reason in why.
 */
int policy_parse(const char *network_json, struct net_policy **p, char *why, size_t why_len);
void policy_free(struct net_policy *p);
/*
 * The sandbox namespace's whole table as nft text: deleting and recreating
 * `table inet msb` in one transaction.  malloc'd; NULL on ENOMEM.
 */
/* TLS steering for the secrets proxy (msb_tls_steer, checked). */
struct net_steer {
	uint16_t ports[8];
	unsigned nports;
	uint16_t proxy_port;
	bool block_quic;
};
/* The conntrack mark of a connection steer_check allowed (nat_pre redirects it). */
#define NET_STEER_MARK "0x6d736273"
char *policy_ruleset(const struct net_policy *p, const struct net_addrs *a,
		     const struct net_steer *steer);
/* The host side's table for slot N (masquerade, isolation). */
char *policy_host_ruleset(unsigned slot, const struct net_addrs *a);
/*
 * Domain rules: for a name the DNS interceptor answered, the names of the
 * pin sets (set "pin<k>_4"/"pin<k>_6" for rule k) that an address must join.
 * Calls cb for each matching rule index k.  Returns the number of matches.
 */
int policy_domain_rules(const struct net_policy *p, const char *name, void (*cb)(void *, unsigned),
			void *arg);
/* Whether the policy has domain rules (DNS then only goes to the interceptor). */
bool policy_has_domains(const struct net_policy *p);
/*
 * Rebind protection: true when an explicit address or group rule allows
 * traffic to addr (so a DNS answer with it may pass).
 */
bool policy_address_allowed(const struct net_policy *p, int family, const uint8_t *addr);

/*
 * Ingress to a published port: the first ingress (or any-direction) rule
 * matching the peer's address, the protocol and the guest port decides;
 * none matching: allowed.  A peer on an IPv4-mapped IPv6 address is given
 * as AF_INET.
 */
bool policy_ingress_allowed(const struct net_policy *p, int family, const uint8_t *addr, bool udp,
			    unsigned port);

/*
 * The DNS interceptor's question: NXDOMAIN at once for name?  When the first
 * name rule matching it denies, or when nothing could ever allow traffic to
 * it (deny by default, no name rule for it, no allow rule on addresses).
 */
bool policy_name_blocked(const struct net_policy *p, const char *name);

/* Run nft text in the calling thread's namespace: 0, or -EINVAL with nft's message. */
int nft_apply(const char *text, char *why, size_t why_len);

/* ---- publish.c ---------------------------------------------------------------- */

#define NET_PUBLISH_MAX 256 /* published ports per sandbox (the spec's LIST_MAX) */

struct pub_rule;
struct pubfwd;

/*
 * The spec's network.publish list: 0 with *out malloc'd (*n entries, none:
 * NULL), or -EINVAL with a one-line reason.
 */
int pub_parse(const char *network_json, struct pub_rule **out, unsigned *n, char *why,
	      size_t why_len);
/*
 * Listen on every published host address and port (here, in the caller's
 * namespace) and start the forwarder thread, which enters nsfd and connects
 * to guest4.  Nothing published: 0 with *out NULL.  On failure nothing is
 * left and why names the port.
 */
struct pubfwd_cfg {
	const char *network_json;
	int nsfd;
	const char *guest4;
	int (*thread_create)(void *ctx, void *(*fn)(void *), void *arg, pthread_t *tid);
	void *thread_ctx;
	/* Whether peer may use the published guest port (NULL: everyone). */
	bool (*allowed)(void *ctx, const struct sockaddr *peer, bool udp, unsigned guest_port);
	void *ctx;
};
int pubfwd_start(const struct pubfwd_cfg *cfg, struct pubfwd **out, char *why, size_t why_len);
/* Stop the thread, close every listener and connection.  NULL is fine. */
void pubfwd_stop(struct pubfwd *f);

/* ---- sandbox.c ---------------------------------------------------------------- */

/* One (name, address) the DNS interceptor gave the guest, and until when. */
#define NET_ANSWERS_MAX 1024
struct net_answer {
	char name[254];
	uint8_t family;
	uint8_t addr[16];
	uint64_t until; /* CLOCK_MONOTONIC seconds; 0: a free slot */
};

/* One sandbox's network, as built. */
struct snet {
	unsigned slot;
	int lock_fd; /* flock on RUNDIR/slot-N, held while the network exists */
	int nsfd;    /* the sandbox's namespace */
	int tap_fd;  /* the TAP (or -1 in test mode) */
	uint8_t mac[6];
	char hostdev[IFNAMSIZ];
	bool host_link, host_table;
	struct net_addrs a;
	unsigned prefix4; /* of the guest's link: 30 */
	struct net_policy *pol;
	pthread_mutex_t nft_mu; /* nft and pol */
	struct nft_ctx *nft;	/* a context inside the namespace, for pins */
	/* The DNS interceptor on the gateway's port 53 (docs/network-dns.md). */
	int dns_udp, dns_tcp, dns_udp6, dns_tcp6; /* the interceptor's, on gw4 and gw6 */
	struct dnsproxy *dns;
	struct pubfwd *pub; /* published ports, or NULL */
	/* TLS steering to the secrets proxy, once asked for (under nft_mu). */
	struct net_steer steer;
	bool steered;
	/* Every answer the guest got, for the secrets proxy's pin check. */
	pthread_mutex_t answers_mu;
	struct net_answer answers[NET_ANSWERS_MAX];
};

struct snet_opts {
	const char *rundir;	  /* slot locks; default NET_RUNDIR */
	const char *pool;	  /* IPv4 pool, "10.200.0.0/16" by default */
	const char *network_json; /* the spec (or its "network" object) */
	/*
	 * Tests: instead of a TAP, "tap0" is a veth whose peer, "eth0", goes into
	 * this namespace (where the test plays the guest).  -1: a real TAP.
	 */
	int guest_nsfd;
	/*
	 * Upstream resolvers for the DNS interceptor, "ADDR[,ADDR...]" (port 53,
	 * or [v6]:port / v4:port); NULL: the host's /etc/resolv.conf.
	 */
	const char *dns;
	/* How the interceptor's thread is made (NULL: pthread_create). */
	int (*thread_create)(void *ctx, void *(*fn)(void *), void *arg, pthread_t *tid);
	void *thread_ctx;
};

#define NET_RUNDIR "/run/msb/net"

/* Build it all (slot, namespace, TAP, uplink, NAT, policy); on failure nothing is left. */
int snet_create(struct snet *sn, const struct snet_opts *o, char *why, size_t why_len);
/* Undo snet_create.  Idempotent. */
void snet_destroy(struct snet *sn);
/* Replace the policy atomically (nothing changes on failure). */
int snet_apply(struct snet *sn, const char *network_json, char *why, size_t why_len);
/* Pin addr (AF_INET/AF_INET6 bytes) for name for ttl seconds in every matching rule's set. */
int snet_pin(struct snet *sn, const char *name, int family, const uint8_t *addr, uint32_t ttl);
/* Steer guest TLS to the secrets proxy (the ruleset is rebuilt with it, atomically). */
int snet_steer(struct snet *sn, const struct net_steer *steer, char *why, size_t why_len);
/* 1 if the guest was given addr for name (and the answer has not expired), else 0. */
int snet_pin_check(struct snet *sn, const char *name, int family, const uint8_t *addr);
/* Remove what dead owners of slots left (host link and table); the number cleaned. */
int snet_reap(const char *rundir);

#endif
