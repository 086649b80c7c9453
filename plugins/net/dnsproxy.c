/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DNS interceptor: one epoll loop on a thread of its own.
 *
 * What it defends against (the guest is hostile, and so may be any answer
 * for a name the guest chose):
 *  - Malformed or huge messages: everything goes through dns.c's bounded
 *    parser; what goes upstream is a query built here from the parsed
 *    question (dns_build_forward), never the guest's bytes.
 *  - Exhaustion: at most max_pending UDP queries in flight (beyond that the
 *    guest gets SERVFAIL at once) and max_tcp TCP connections (beyond that a
 *    new one is closed at once); a TCP client has tcp_idle_ms to send one
 *    whole query or take one reply, so a slow client holds a slot for a
 *    bounded time; reading is bounded per wakeup so neither socket starves
 *    the other.
 *  - Hangs: every query in flight has a deadline per upstream try; after the
 *    last try the guest gets SERVFAIL.  A blocked name is answered without
 *    going upstream.
 *  - Forged or stray replies: each try gets a fresh random id from
 *    getrandom(), upstream UDP sockets are connected (the kernel drops
 *    datagrams from anyone else), and a reply must echo the question asked.
 *  - DNS rebinding: see dns_addr_internal and handle_reply.
 *
 * All big buffers live in struct dnsproxy on the heap: the loop may run on a
 * host thread with a 256 KiB stack.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "dns.h"
#include "dnsproxy.h"

/* The largest query dns_build_forward writes: header, name, type/class, OPT. */
#define FWD_MAX (DNS_HDR_LEN + DNS_NAME_WIRE_MAX + 4 + 11)
#define TCP_BUF (2 + DNS_MSG_MAX)

union sa {
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

/* A UDP query waiting for an upstream. */
struct pending {
	bool used;
	uint8_t up;	/* the upstream it was last sent to */
	uint16_t up_id; /* the id of that try */
	uint16_t client_id;
	uint16_t fwd_len;
	uint64_t deadline; /* of this try, CLOCK_MONOTONIC ms */
	union sa client;
	socklen_t client_len;
	uint8_t fwd[FWD_MAX]; /* the query as sent upstream */
};

enum conn_state {
	C_FREE = 0,
	C_READ,	    /* reading a length-prefixed query from the client */
	C_CONNECT,  /* connecting to upstream `up` */
	C_UP_WRITE, /* sending the query upstream */
	C_UP_READ,  /* reading the reply */
	C_WRITE,    /* writing the reply to the client */
};

struct conn {
	enum conn_state st;
	int fd, up_fd;
	uint32_t gen; /* bumped on close: events for an old connection are stale */
	uint8_t up;
	uint16_t client_id, up_id, fwd_len;
	uint64_t deadline;
	uint8_t *buf; /* TCP_BUF bytes while connected */
	size_t have, need, sent;
	uint8_t fwd[FWD_MAX];
};

enum tag_kind { K_STOP = 1, K_UDP, K_UP_UDP, K_LISTEN, K_TCP, K_TCP_UP };

struct dnsproxy {
	struct dnsproxy_cfg cfg;
	struct dnsproxy_policy policy;
	pthread_t tid;
	int epfd, stopfd;
	int up_udp[DNSPROXY_UPSTREAMS_MAX];
	unsigned max_pending, max_tcp, timeout_ms, idle_ms;

	struct pending *pending;
	unsigned npending;
	struct conn *conns;

	uint8_t rnd[64];
	size_t rnd_pos;

	struct dnsproxy_stats stats; /* written by the loop with atomics */

	/* Scratch for the loop thread. */
	uint8_t buf[DNS_MSG_MAX];
	uint8_t out[FWD_MAX];
	struct dns_msg q, r;
};

#define STAT(p, field) __atomic_fetch_add(&(p)->stats.field, 1, __ATOMIC_RELAXED)

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t tag(enum tag_kind k, uint32_t gen, uint32_t idx)
{
	return (uint64_t)k << 56 | (uint64_t)(gen & 0xffffffu) << 32 | idx;
}

static int ep_set(struct dnsproxy *p, int op, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};
	return epoll_ctl(p->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static void wr16(uint8_t *b, uint16_t v)
{
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}

static uint16_t rd16(const uint8_t *b)
{
	return (uint16_t)((uint16_t)b[0] << 8 | b[1]);
}

static uint16_t random16(struct dnsproxy *p)
{
	if (p->rnd_pos + 2 > sizeof(p->rnd)) {
		ssize_t n;
		do {
			n = getrandom(p->rnd, sizeof(p->rnd), 0);
		} while (n < 0 && errno == EINTR);
		if (n != (ssize_t)sizeof(p->rnd)) {
			/* Never seen on Linux >= 3.17; stir the old pool rather than stall. */
			uint64_t t = now_ms() * 0x9e3779b97f4a7c15ull;
			for (size_t i = 0; i < sizeof(p->rnd); i++)
				p->rnd[i] ^= (uint8_t)(t >> (i % 8 * 8)) + (uint8_t)i;
		}
		p->rnd_pos = 0;
	}
	uint16_t v = rd16(p->rnd + p->rnd_pos);
	p->rnd_pos += 2;
	return v;
}

/* A fresh id no UDP query in flight uses (so a reply maps to one query). */
static uint16_t fresh_id(struct dnsproxy *p)
{
	for (;;) {
		uint16_t id = random16(p);
		bool taken = false;
		for (unsigned i = 0; i < p->max_pending && !taken; i++)
			taken = p->pending[i].used && p->pending[i].up_id == id;
		if (!taken)
			return id;
	}
}

/* ---- queries ----------------------------------------------------------------- */

enum verdict { V_DROP, V_REPLY, V_FORWARD };

/*
 * Decide what to do with a query from the guest.  V_REPLY: the answer is in
 * p->out[0..*out_len).  V_FORWARD: p->q holds the parsed query.
 */
static enum verdict classify(struct dnsproxy *p, const uint8_t *msg, size_t len, size_t *out_len)
{
	struct dns_header h;
	int n;

	STAT(p, queries);
	/* Too short to answer, or a response: answering those could start a loop. */
	if (dns_parse_header(msg, len, &h) < 0 || (h.flags & DNS_F_QR)) {
		STAT(p, dropped);
		return V_DROP;
	}
	if (dns_parse_query(msg, len, &p->q) < 0) {
		n = dns_build_formerr(msg, len, p->out, sizeof(p->out));
		STAT(p, formerr);
	} else if (DNS_F_OPCODE(h.flags) != DNS_OP_QUERY) {
		n = dns_build_reply(&p->q, DNS_R_NOTIMP, p->out, sizeof(p->out));
		STAT(p, refused);
	} else if (p->q.q.klass != DNS_C_IN || p->q.q.type == DNS_T_ANY ||
		   p->q.q.type == DNS_T_AXFR || p->q.q.type == DNS_T_IXFR ||
		   p->q.q.type == DNS_T_MAILA || p->q.q.type == DNS_T_MAILB) {
		/* Zone transfers span messages, ANY is deprecated (RFC 8482). */
		n = dns_build_refused(&p->q, p->out, sizeof(p->out));
		STAT(p, refused);
	} else if (p->policy.query &&
		   p->policy.query(p->cfg.ctx, p->q.q.name, p->q.q.type) != DNSPROXY_ALLOW) {
		n = dns_build_nxdomain(&p->q, p->out, sizeof(p->out));
		STAT(p, blocked);
	} else {
		return V_FORWARD;
	}
	if (n < 0) { /* cannot happen: out holds any header and question */
		STAT(p, dropped);
		return V_DROP;
	}
	*out_len = (size_t)n;
	return V_REPLY;
}

/* SERVFAIL to the asker of our forwarded query fwd, in p->out. */
static size_t servfail_for(struct dnsproxy *p, const uint8_t *fwd, size_t fwd_len,
			   uint16_t client_id)
{
	STAT(p, servfail);
	if (dns_parse_query(fwd, fwd_len, &p->q) < 0)
		return 0; /* our own bytes: cannot happen */
	p->q.h.id = client_id;
	int n = dns_build_servfail(&p->q, p->out, sizeof(p->out));
	return n < 0 ? 0 : (size_t)n;
}

static void pin_one(void *arg, const struct dns_rr *rr)
{
	struct dnsproxy *p = arg;
	struct sockaddr_storage ss;
	if (dns_rr_sockaddr(rr, &ss) == 0)
		return;
	STAT(p, pins);
	p->policy.pin(p->cfg.ctx, p->q.q.name, (const struct sockaddr *)&ss, rr->ttl);
}

/*
 * An upstream's reply msg[0..len) to our query fwd: check it and make it the
 * guest's, in place.  The length to send, or 0 when this upstream failed
 * (garbage, another question, SERVFAIL/REFUSED/NOTIMP/FORMERR) and the next
 * one should be tried.
 */
static size_t handle_reply(struct dnsproxy *p, const uint8_t *fwd, size_t fwd_len,
			   uint16_t client_id, uint8_t *msg, size_t len)
{
	if (dns_parse_query(fwd, fwd_len, &p->q) < 0 || dns_parse_reply(msg, len, &p->r) < 0)
		return 0;
	if (p->r.h.id != p->q.h.id || p->r.q.type != p->q.q.type || p->r.q.klass != p->q.q.klass ||
	    strcmp(p->r.q.name, p->q.q.name) != 0)
		return 0;
	switch (DNS_F_RCODE(p->r.h.flags)) {
	case DNS_R_FORMERR:
	case DNS_R_SERVFAIL:
	case DNS_R_NOTIMP:
	case DNS_R_REFUSED:
		return 0;
	default:
		break;
	}

	/*
	 * Rebind protection: an internal address anywhere in the reply (any
	 * section: a stub may use additional records too) that the policy does
	 * not allow makes the whole reply NXDOMAIN, so a public name can never
	 * hand the guest a way to the host, its LAN or the metadata service.
	 */
	for (unsigned i = 0; i < p->r.nrr; i++) {
		const struct dns_rr *rr = &p->r.rr[i];
		if (rr->type == DNS_T_CNAME)
			continue;
		bool v4 = rr->type == DNS_T_A;
		if (!dns_addr_internal(v4 ? AF_INET : AF_INET6, v4 ? rr->data.a : rr->data.aaaa))
			continue;
		struct sockaddr_storage ss;
		dns_rr_sockaddr(rr, &ss);
		if (p->policy.address_allowed &&
		    p->policy.address_allowed(p->cfg.ctx, (const struct sockaddr *)&ss))
			continue;
		size_t n;
		if (dns_rewrite_nxdomain(msg, len, &n) < 0)
			return 0; /* parsed above: cannot happen */
		wr16(msg, client_id);
		STAT(p, rebind);
		return n;
	}

	if (p->policy.pin)
		dns_reply_addresses(&p->r, p->q.q.name, pin_one, p);
	wr16(msg, client_id);
	STAT(p, answered);
	return len;
}

/* ---- UDP --------------------------------------------------------------------- */

static void udp_reply(struct dnsproxy *p, const uint8_t *msg, size_t len, const union sa *to,
		      socklen_t tolen)
{
	if (len == 0)
		return;
	/* The socket of the client's family: a v4 client asked on udp_fd, a v6 one on udp6_fd. */
	int fd = to->sa.sa_family == AF_INET6 && p->cfg.udp6_fd >= 0 ? p->cfg.udp6_fd
								     : p->cfg.udp_fd;
	/* A full socket buffer drops the reply, as the network would: the guest retries. */
	(void)sendto(fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL, &to->sa, tolen);
}

static void pending_free(struct dnsproxy *p, struct pending *e)
{
	e->used = false;
	p->npending--;
}

/*
 * The connected UDP socket for upstream i, made now if it could not be made
 * before (at start the sandbox's uplink may have no route yet).  Connected,
 * so that the kernel drops datagrams from anyone but the upstream.
 */
static int upstream_udp(struct dnsproxy *p, unsigned i)
{
	if (p->up_udp[i] >= 0)
		return p->up_udp[i];
	const struct sockaddr_storage *ss = &p->cfg.upstream[i];
	int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = 0;
	if (connect(fd, (const struct sockaddr *)ss, p->cfg.upstream_len[i]) < 0)
		r = -errno;
	else
		r = ep_set(p, EPOLL_CTL_ADD, fd, EPOLLIN, tag(K_UP_UDP, 0, i));
	if (r < 0) {
		close(fd);
		return r;
	}
	p->up_udp[i] = fd;
	return fd;
}

/* Send e to upstream e->up or the ones after it; SERVFAIL when none takes it. */
static void pending_send(struct dnsproxy *p, struct pending *e)
{
	while (e->up < p->cfg.nupstream) {
		int fd = upstream_udp(p, e->up);
		e->up_id = fresh_id(p);
		wr16(e->fwd, e->up_id);
		STAT(p, forwarded);
		if (fd >= 0 && send(fd, e->fwd, e->fwd_len, MSG_DONTWAIT | MSG_NOSIGNAL) ==
				       (ssize_t)e->fwd_len) {
			e->deadline = now_ms() + p->timeout_ms;
			return;
		}
		e->up++;
	}
	size_t n = servfail_for(p, e->fwd, e->fwd_len, e->client_id);
	udp_reply(p, p->out, n, &e->client, e->client_len);
	pending_free(p, e);
}

static void pending_next(struct dnsproxy *p, struct pending *e)
{
	e->up++;
	pending_send(p, e);
}

static void udp_query(struct dnsproxy *p, size_t len, const union sa *from, socklen_t fromlen)
{
	size_t n = 0;
	switch (classify(p, p->buf, len, &n)) {
	case V_DROP:
		return;
	case V_REPLY:
		udp_reply(p, p->out, n, from, fromlen);
		return;
	case V_FORWARD:
	default:
		break;
	}
	struct pending *e = NULL;
	if (p->npending < p->max_pending) {
		for (unsigned i = 0; i < p->max_pending && !e; i++)
			if (!p->pending[i].used)
				e = &p->pending[i];
	}
	if (!e) {
		/* Full: answer now rather than make the guest wait for a timeout. */
		STAT(p, servfail);
		int r = dns_build_servfail(&p->q, p->out, sizeof(p->out));
		if (r > 0)
			udp_reply(p, p->out, (size_t)r, from, fromlen);
		return;
	}
	int r = dns_build_forward(&p->q, 0, e->fwd, sizeof(e->fwd));
	if (r < 0)
		return; /* cannot happen: fwd is FWD_MAX */
	e->used = true;
	p->npending++;
	e->fwd_len = (uint16_t)r;
	e->client_id = p->q.h.id;
	e->client = *from;
	e->client_len = fromlen;
	e->up = 0;
	pending_send(p, e);
}

static void udp_client_ready(struct dnsproxy *p, int fd)
{
	for (unsigned i = 0; i < DNSPROXY_UDP_BURST; i++) {
		union sa from;
		socklen_t fromlen = sizeof(from);
		ssize_t n = recvfrom(fd, p->buf, sizeof(p->buf), MSG_DONTWAIT, &from.sa, &fromlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* EAGAIN, or an error that belongs to no query */
		}
		if (fromlen > sizeof(from))
			continue;
		udp_query(p, (size_t)n, &from, fromlen);
	}
}

static void udp_upstream_ready(struct dnsproxy *p, unsigned up)
{
	for (unsigned i = 0; i < DNSPROXY_UDP_BURST; i++) {
		ssize_t n = recv(p->up_udp[up], p->buf, sizeof(p->buf), MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECONNREFUSED) {
				/* Nothing listens there: move its queries on now. */
				for (unsigned k = 0; k < p->max_pending; k++) {
					struct pending *e = &p->pending[k];
					if (e->used && e->up == up)
						pending_next(p, e);
				}
				continue;
			}
			return;
		}
		if (n < DNS_HDR_LEN)
			continue;
		uint16_t id = rd16(p->buf);
		struct pending *e = NULL;
		for (unsigned k = 0; k < p->max_pending && !e; k++)
			if (p->pending[k].used && p->pending[k].up == up &&
			    p->pending[k].up_id == id)
				e = &p->pending[k];
		if (!e)
			continue; /* late (a try we gave up on) or forged */
		size_t len = handle_reply(p, e->fwd, e->fwd_len, e->client_id, p->buf, (size_t)n);
		if (len == 0) {
			pending_next(p, e);
			continue;
		}
		udp_reply(p, p->buf, len, &e->client, e->client_len);
		pending_free(p, e);
	}
}

/* ---- TCP --------------------------------------------------------------------- */

static void conn_close_up(struct dnsproxy *p, struct conn *c)
{
	if (c->up_fd >= 0) {
		epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->up_fd, NULL);
		close(c->up_fd);
		c->up_fd = -1;
	}
}

static void conn_close(struct dnsproxy *p, struct conn *c)
{
	conn_close_up(p, c);
	epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->buf);
	uint32_t gen = c->gen + 1;
	memset(c, 0, sizeof(*c));
	c->gen = gen;
	c->fd = c->up_fd = -1;
	c->st = C_FREE;
}

static uint32_t conn_idx(struct dnsproxy *p, struct conn *c)
{
	return (uint32_t)(c - p->conns);
}

static void conn_client_events(struct dnsproxy *p, struct conn *c, uint32_t events)
{
	if (ep_set(p, EPOLL_CTL_MOD, c->fd, events, tag(K_TCP, c->gen, conn_idx(p, c))) < 0)
		conn_close(p, c);
}

static void conn_read_next(struct dnsproxy *p, struct conn *c)
{
	c->st = C_READ;
	c->have = 0;
	c->need = 2;
	c->deadline = now_ms() + p->idle_ms;
	conn_client_events(p, c, EPOLLIN);
}

/* Send the reply msg[0..len) to the client, length first. */
static void conn_write(struct dnsproxy *p, struct conn *c, const uint8_t *msg, size_t len)
{
	if (len == 0) {
		conn_close(p, c);
		return;
	}
	memmove(c->buf + 2, msg, len);
	wr16(c->buf, (uint16_t)len);
	c->need = len + 2;
	c->sent = 0;
	c->st = C_WRITE;
	c->deadline = now_ms() + p->idle_ms;
	conn_client_events(p, c, EPOLLOUT);
}

/* Connect to upstream c->up or the ones after it; SERVFAIL when none works. */
static void conn_upstream(struct dnsproxy *p, struct conn *c)
{
	conn_close_up(p, c);
	while (c->up < p->cfg.nupstream) {
		const struct sockaddr_storage *ss = &p->cfg.upstream[c->up];
		int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd >= 0 &&
		    (connect(fd, (const struct sockaddr *)ss, p->cfg.upstream_len[c->up]) == 0 ||
		     errno == EINPROGRESS)) {
			c->up_fd = fd;
			if (ep_set(p, EPOLL_CTL_ADD, fd, EPOLLOUT,
				   tag(K_TCP_UP, c->gen, conn_idx(p, c))) == 0) {
				c->up_id = random16(p);
				wr16(c->fwd, c->up_id);
				c->st = C_CONNECT;
				c->deadline = now_ms() + p->timeout_ms;
				STAT(p, forwarded);
				conn_client_events(p, c, 0);
				return;
			}
			c->up_fd = -1;
		}
		if (fd >= 0)
			close(fd);
		c->up++;
	}
	size_t n = servfail_for(p, c->fwd, c->fwd_len, c->client_id);
	conn_write(p, c, p->out, n);
}

static void conn_upstream_next(struct dnsproxy *p, struct conn *c)
{
	c->up++;
	conn_upstream(p, c);
}

static void conn_query(struct dnsproxy *p, struct conn *c)
{
	size_t n = 0;
	switch (classify(p, c->buf + 2, c->need - 2, &n)) {
	case V_DROP:
		conn_close(p, c);
		return;
	case V_REPLY:
		conn_write(p, c, p->out, n);
		return;
	case V_FORWARD:
	default:
		break;
	}
	int r = dns_build_forward(&p->q, 0, c->fwd, sizeof(c->fwd));
	if (r < 0) {
		conn_close(p, c);
		return;
	}
	c->fwd_len = (uint16_t)r;
	c->client_id = p->q.h.id;
	c->up = 0;
	conn_upstream(p, c);
}

/*
 * Read a length-prefixed message from fd into c->buf, at most max bytes
 * after the prefix.  1: complete (c->need bytes), 0: more to come,
 * -1: EOF, error or a bad length.
 */
static int read_framed(struct conn *c, int fd, size_t max)
{
	for (;;) {
		ssize_t n = read(fd, c->buf + c->have, c->need - c->have);
		if (n == 0)
			return -1;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		c->have += (size_t)n;
		if (c->have == 2 && c->need == 2) {
			size_t l = rd16(c->buf);
			if (l < DNS_HDR_LEN || l > max)
				return -1;
			c->need = 2 + l;
		}
		if (c->need > 2 && c->have == c->need)
			return 1;
	}
}

/* Send c->buf[c->sent..c->need) on fd: 1 all sent, 0 would block, -1 failed. */
static int conn_send(struct conn *c, int fd)
{
	while (c->sent < c->need) {
		ssize_t n =
			send(fd, c->buf + c->sent, c->need - c->sent, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return -1;
		c->sent += (size_t)n;
	}
	return 1;
}

static void conn_client_ready(struct dnsproxy *p, struct conn *c, uint32_t events)
{
	if (events & (EPOLLERR | EPOLLHUP)) {
		conn_close(p, c);
		return;
	}
	if (c->st == C_READ && (events & EPOLLIN)) {
		int r = read_framed(c, c->fd, DNSPROXY_TCP_QUERY_MAX);
		if (r < 0)
			conn_close(p, c);
		else if (r > 0)
			conn_query(p, c);
	} else if (c->st == C_WRITE && (events & EPOLLOUT)) {
		int r = conn_send(c, c->fd);
		if (r < 0)
			conn_close(p, c);
		else if (r > 0)
			conn_read_next(p, c);
	}
}

static void conn_upstream_ready(struct dnsproxy *p, struct conn *c, uint32_t events)
{
	if (c->st == C_CONNECT) {
		int err = 0;
		socklen_t l = sizeof(err);
		if (getsockopt(c->up_fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err != 0) {
			conn_upstream_next(p, c);
			return;
		}
		wr16(c->buf, c->fwd_len);
		memcpy(c->buf + 2, c->fwd, c->fwd_len);
		c->need = 2u + c->fwd_len;
		c->sent = 0;
		c->st = C_UP_WRITE;
	}
	if (c->st == C_UP_WRITE) {
		int r = conn_send(c, c->up_fd);
		if (r < 0) {
			conn_upstream_next(p, c);
			return;
		}
		if (r == 0)
			return;
		c->st = C_UP_READ;
		c->have = 0;
		c->need = 2;
		if (ep_set(p, EPOLL_CTL_MOD, c->up_fd, EPOLLIN,
			   tag(K_TCP_UP, c->gen, conn_idx(p, c))) < 0)
			conn_upstream_next(p, c);
		return;
	}
	if (c->st == C_UP_READ && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
		int r = read_framed(c, c->up_fd, DNS_MSG_MAX);
		if (r == 0)
			return;
		size_t n = 0;
		if (r > 0)
			n = handle_reply(p, c->fwd, c->fwd_len, c->client_id, c->buf + 2,
					 c->need - 2);
		if (n == 0) {
			conn_upstream_next(p, c);
			return;
		}
		conn_close_up(p, c);
		conn_write(p, c, c->buf + 2, n);
	}
}

static void listen_ready(struct dnsproxy *p, int lfd)
{
	for (unsigned i = 0; i < DNSPROXY_UDP_BURST; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return; /* EAGAIN; EMFILE and the like wait for the next wakeup */
		}
		struct conn *c = NULL;
		for (unsigned k = 0; k < p->max_tcp && !c; k++)
			if (p->conns[k].st == C_FREE)
				c = &p->conns[k];
		uint8_t *buf = c ? malloc(TCP_BUF) : NULL;
		if (!buf ||
		    ep_set(p, EPOLL_CTL_ADD, fd, EPOLLIN, tag(K_TCP, c->gen, conn_idx(p, c))) < 0) {
			/* No room: closing at once beats leaving it to hang in the backlog. */
			STAT(p, tcp_refused);
			free(buf);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->up_fd = -1;
		c->buf = buf;
		c->st = C_READ;
		c->have = 0;
		c->need = 2;
		c->deadline = now_ms() + p->idle_ms;
	}
}

/* ---- the loop ----------------------------------------------------------------- */

/* Act on every expired deadline; the epoll timeout until the next one. */
static int expire(struct dnsproxy *p)
{
	uint64_t now = now_ms(), next = UINT64_MAX;

	for (unsigned i = 0; i < p->max_pending && p->npending; i++) {
		struct pending *e = &p->pending[i];
		if (e->used && e->deadline <= now)
			pending_next(p, e);
		if (e->used && e->deadline < next)
			next = e->deadline;
	}
	for (unsigned i = 0; i < p->max_tcp; i++) {
		struct conn *c = &p->conns[i];
		if (c->st == C_FREE)
			continue;
		if (c->deadline <= now) {
			if (c->st == C_READ || c->st == C_WRITE)
				conn_close(p, c);
			else
				conn_upstream_next(p, c);
		}
		if (c->st != C_FREE && c->deadline < next)
			next = c->deadline;
	}
	if (next == UINT64_MAX)
		return -1;
	now = now_ms();
	return next <= now ? 0 : (int)(next - now < 60000 ? next - now : 60000);
}

static void *loop_main(void *arg)
{
	struct dnsproxy *p = arg;
	struct epoll_event evs[32];

	for (;;) {
		int timeout = expire(p);
		int n = epoll_wait(p->epfd, evs, 32, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return NULL; /* cannot happen with a valid epfd */
		}
		for (int i = 0; i < n; i++) {
			uint64_t t = evs[i].data.u64;
			enum tag_kind k = (enum tag_kind)(t >> 56);
			uint32_t gen = (uint32_t)(t >> 32) & 0xffffffu;
			uint32_t idx = (uint32_t)t;
			struct conn *c = NULL;
			if (k == K_TCP || k == K_TCP_UP) {
				c = &p->conns[idx];
				if (c->st == C_FREE || (c->gen & 0xffffffu) != gen)
					continue; /* closed earlier in this batch */
			}
			switch (k) {
			case K_STOP:
				return NULL;
			case K_UDP:
				udp_client_ready(p, idx ? p->cfg.udp6_fd : p->cfg.udp_fd);
				break;
			case K_UP_UDP:
				udp_upstream_ready(p, idx);
				break;
			case K_LISTEN:
				listen_ready(p, idx ? p->cfg.tcp6_listen_fd : p->cfg.tcp_listen_fd);
				break;
			case K_TCP:
				conn_client_ready(p, c, evs[i].events);
				break;
			case K_TCP_UP:
				conn_upstream_ready(p, c, evs[i].events);
				break;
			default:
				break;
			}
		}
	}
}

/* ---- start and stop ------------------------------------------------------------ */

static int default_thread(void *thread_ctx, void *(*fn)(void *), void *arg, pthread_t *tid)
{
	(void)thread_ctx;
	int r = pthread_create(tid, NULL, fn, arg);
	return -r;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static bool upstream_ok(const struct sockaddr_storage *ss, socklen_t len)
{
	if (ss->ss_family == AF_INET)
		return len == sizeof(struct sockaddr_in);
	if (ss->ss_family == AF_INET6)
		return len == sizeof(struct sockaddr_in6);
	return false;
}

static void release(struct dnsproxy *p)
{
	if (p->conns) {
		for (unsigned i = 0; i < p->max_tcp; i++)
			if (p->conns[i].st != C_FREE)
				conn_close(p, &p->conns[i]);
	}
	for (unsigned i = 0; i < DNSPROXY_UPSTREAMS_MAX; i++)
		if (p->up_udp[i] >= 0)
			close(p->up_udp[i]);
	if (p->stopfd >= 0)
		close(p->stopfd);
	if (p->epfd >= 0)
		close(p->epfd);
	free(p->conns);
	free(p->pending);
	free(p);
}

static int setup(struct dnsproxy *p)
{
	const struct dnsproxy_cfg *cfg = &p->cfg;

	p->pending = calloc(p->max_pending, sizeof(*p->pending));
	p->conns = calloc(p->max_tcp, sizeof(*p->conns));
	if (!p->pending || !p->conns)
		return -ENOMEM;
	for (unsigned i = 0; i < p->max_tcp; i++)
		p->conns[i].fd = p->conns[i].up_fd = -1;
	p->rnd_pos = sizeof(p->rnd); /* fill on first use */

	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	p->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->epfd < 0 || p->stopfd < 0)
		return -errno;
	int r = ep_set(p, EPOLL_CTL_ADD, p->stopfd, EPOLLIN, tag(K_STOP, 0, 0));
	if (r < 0)
		return r;
	const int udp[2] = {cfg->udp_fd, cfg->udp6_fd};
	const int lst[2] = {cfg->tcp_listen_fd, cfg->tcp6_listen_fd};
	for (uint32_t i = 0; i < 2; i++) {
		if (udp[i] >= 0 &&
		    ((r = set_nonblock(udp[i])) < 0 ||
		     (r = ep_set(p, EPOLL_CTL_ADD, udp[i], EPOLLIN, tag(K_UDP, 0, i))) < 0))
			return r;
		if (lst[i] >= 0 &&
		    ((r = set_nonblock(lst[i])) < 0 ||
		     (r = ep_set(p, EPOLL_CTL_ADD, lst[i], EPOLLIN, tag(K_LISTEN, 0, i))) < 0))
			return r;
	}
	/* One that cannot be made now (no route yet, say) is tried again on use. */
	for (unsigned i = 0; i < cfg->nupstream; i++)
		(void)upstream_udp(p, i);
	return 0;
}

int dnsproxy_start(const struct dnsproxy_cfg *cfg, struct dnsproxy **out)
{
	if (!cfg || !out ||
	    (cfg->udp_fd < 0 && cfg->tcp_listen_fd < 0 && cfg->udp6_fd < 0 &&
	     cfg->tcp6_listen_fd < 0) ||
	    cfg->nupstream > DNSPROXY_UPSTREAMS_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < cfg->nupstream; i++)
		if (!upstream_ok(&cfg->upstream[i], cfg->upstream_len[i]))
			return -EINVAL;

	struct dnsproxy *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	if (cfg->policy)
		p->policy = *cfg->policy;
	p->epfd = p->stopfd = -1;
	for (unsigned i = 0; i < DNSPROXY_UPSTREAMS_MAX; i++)
		p->up_udp[i] = -1;
	p->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DNSPROXY_TIMEOUT_MS;
	p->idle_ms = cfg->tcp_idle_ms ? cfg->tcp_idle_ms : DNSPROXY_TCP_IDLE_MS;
	p->max_pending = cfg->max_pending && cfg->max_pending < DNSPROXY_PENDING_MAX
				 ? cfg->max_pending
				 : DNSPROXY_PENDING_MAX;
	p->max_tcp =
		cfg->max_tcp && cfg->max_tcp < DNSPROXY_TCP_MAX ? cfg->max_tcp : DNSPROXY_TCP_MAX;

	int r = setup(p);
	if (r == 0) {
		dnsproxy_thread_fn create =
			cfg->thread_create ? cfg->thread_create : default_thread;
		r = create(cfg->thread_ctx, loop_main, p, &p->tid);
		if (r > 0)
			r = -r;
	}
	if (r < 0) {
		/* The caller's sockets were only added to our epoll set: nothing to undo. */
		release(p);
		return r;
	}
	*out = p;
	return 0;
}

void dnsproxy_stop(struct dnsproxy *p)
{
	if (!p)
		return;
	uint64_t one = 1;
	while (write(p->stopfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(p->tid, NULL);
	release(p);
}

void dnsproxy_stats(const struct dnsproxy *p, struct dnsproxy_stats *out)
{
	const uint64_t *src = (const uint64_t *)&p->stats;
	uint64_t *dst = (uint64_t *)out;
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
