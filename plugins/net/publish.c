/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Published ports (`-p [ADDR:]HOST:GUEST[/udp]`, docs/network.md).
 *
 * The host side listens on ADDR:HOST (127.0.0.1 unless ADDR is given) in the
 * supervisor's own namespace; one forwarder thread, which moves itself into
 * the sandbox's namespace, carries each accepted connection (or each UDP
 * peer's datagrams) to the guest's address on GUEST, from the gateway.
 * Nothing is ever forwarded into the sandbox's namespace by the kernel: the
 * guest is reachable only on what is published, only through this thread,
 * and its egress policy does not apply to the replies (they are ours).
 *
 * Bounded: PUB_CONNS_MAX TCP connections (more are accepted and closed at
 * once), PUB_FLOWS_MAX UDP peers (the one idle longest is dropped for a new
 * one; any idle PUB_UDP_IDLE_S goes), PUB_BUF bytes buffered per direction.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net.h"

#define PUB_CONNS_MAX  256
#define PUB_FLOWS_MAX  256
#define PUB_BUF	       (64 * 1024)
#define PUB_UDP_IDLE_S 60
#define PUB_DGRAM_MAX  65535

enum { K_STOP, K_LISTEN, K_UDP, K_HOST, K_GUEST, K_FLOW };

struct pub_rule {
	bool udp;
	struct sockaddr_storage host;
	socklen_t host_len;
	uint16_t guest_port;
	int fd; /* listening (TCP) or bound (UDP), in the host's namespace */
};

struct pub_buf {
	char *data;
	size_t off, len;
	bool eof;  /* the reading side is done */
	bool shut; /* shutdown(SHUT_WR) passed on */
};

struct pub_conn {
	bool used, connecting;
	/* A hang-up seen on the fd, and whether it is in the epoll set now. */
	bool h_hup, g_hup, h_in, g_in;
	uint32_t gen;
	int hfd, gfd;		   /* the host's client, the guest */
	struct pub_buf to_g, to_h; /* host -> guest, guest -> host */
};

struct pub_flow {
	bool used;
	uint32_t gen;
	unsigned rule;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	int fd; /* connected to the guest, in the sandbox's namespace */
	time_t last;
};

struct pubfwd {
	struct pubfwd_cfg cfg;
	int nsfd;
	struct in_addr guest;
	struct pub_rule *rules;
	unsigned nrules;
	int epfd, stopfd;
	pthread_t tid;
	bool running;
	uint32_t gen;
	struct pub_conn conns[PUB_CONNS_MAX];
	struct pub_flow flows[PUB_FLOWS_MAX];
	char dgram[PUB_DGRAM_MAX];
};

static uint64_t tag(int kind, uint32_t gen, uint32_t idx)
{
	return (uint64_t)kind << 56 | (uint64_t)(gen & 0xffffffu) << 32 | idx;
}

static int ep(struct pubfwd *f, int op, int fd, uint32_t events, uint64_t t)
{
	struct epoll_event ev = {.events = events, .data.u64 = t};
	return epoll_ctl(f->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

/* ---- the spec ------------------------------------------------------------------- */

static int parse_one(json_t *p, struct pub_rule *r, char *why, size_t why_len, size_t i)
{
	const char *addr = json_string_value(json_object_get(p, "address"));
	const char *proto = json_string_value(json_object_get(p, "proto"));
	json_int_t hp = json_integer_value(json_object_get(p, "host_port"));
	json_int_t gp = json_integer_value(json_object_get(p, "guest_port"));
	if (!addr || !json_is_integer(json_object_get(p, "host_port")) ||
	    !json_is_integer(json_object_get(p, "guest_port")) || hp < 1 || hp > 65535 || gp < 1 ||
	    gp > 65535 || (proto && strcmp(proto, "tcp") && strcmp(proto, "udp"))) {
		snprintf(why, why_len,
			 "network.publish[%zu]: expected {address, host_port 1-65535, "
			 "guest_port 1-65535, proto tcp|udp}",
			 i);
		return -EINVAL;
	}
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->udp = proto && !strcmp(proto, "udp");
	r->guest_port = (uint16_t)gp;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&r->host;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&r->host;
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)hp);
		r->host_len = sizeof(*s4);
	} else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)hp);
		r->host_len = sizeof(*s6);
	} else {
		snprintf(why, why_len,
			 "network.publish[%zu]: bad address '%.64s' (expected an IPv4 or IPv6 "
			 "address)",
			 i, addr);
		return -EINVAL;
	}
	return 0;
}

int pub_parse(const char *network_json, struct pub_rule **out, unsigned *n, char *why,
	      size_t why_len)
{
	*out = NULL;
	*n = 0;
	json_error_t je;
	json_t *root = json_loads(network_json ? network_json : "{}", 0, &je);
	if (!root) {
		snprintf(why, why_len, "network spec: bad JSON (%s)", je.text);
		return -EINVAL;
	}
	json_t *net = json_object_get(root, "network");
	if (!net)
		net = root;
	json_t *pubs = json_object_get(net, "publish");
	int r = 0;
	if (pubs && !json_is_array(pubs)) {
		snprintf(why, why_len, "network.publish: expected an array");
		r = -EINVAL;
	} else if (json_array_size(pubs) > NET_PUBLISH_MAX) {
		snprintf(why, why_len, "network.publish: %zu ports (at most %d)",
			 json_array_size(pubs), NET_PUBLISH_MAX);
		r = -EINVAL;
	} else if (json_array_size(pubs)) {
		size_t cnt = json_array_size(pubs);
		*out = calloc(cnt, sizeof(**out));
		if (!*out)
			r = -ENOMEM;
		for (size_t i = 0; r == 0 && i < cnt; i++)
			r = parse_one(json_array_get(pubs, i), &(*out)[i], why, why_len, i);
		if (r == 0)
			*n = (unsigned)cnt;
	}
	if (r < 0) {
		free(*out);
		*out = NULL;
	}
	json_decref(root);
	return r;
}

static void describe(const struct pub_rule *r, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";
	unsigned port;
	if (r->host.ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)&r->host;
		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		port = ntohs(s->sin_port);
		snprintf(buf, len, "%s:%u:%u/%s", a, port, r->guest_port, r->udp ? "udp" : "tcp");
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&r->host;
		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		port = ntohs(s->sin6_port);
		snprintf(buf, len, "[%s]:%u:%u/%s", a, port, r->guest_port, r->udp ? "udp" : "tcp");
	}
}

/* ---- TCP ------------------------------------------------------------------------ */

static void conn_close(struct pubfwd *f, struct pub_conn *c)
{
	if (c->hfd >= 0)
		close(c->hfd);
	if (c->gfd >= 0)
		close(c->gfd);
	free(c->to_g.data);
	free(c->to_h.data);
	memset(c, 0, sizeof(*c));
	c->hfd = c->gfd = -1;
	(void)f;
}

/* Move what can be moved from src to dst through b; false: the pair is done. */
static bool pump(int src, int dst, struct pub_buf *b, bool can_write)
{
	for (;;) {
		if (b->len == 0 && !b->eof) {
			ssize_t n = read(src, b->data, PUB_BUF);
			if (n > 0) {
				b->off = 0;
				b->len = (size_t)n;
			} else if (n == 0) {
				b->eof = true;
			} else if (errno == EAGAIN || errno == EINTR) {
				/* nothing now */
			} else {
				return false;
			}
		}
		if (b->len && can_write) {
			ssize_t n = send(dst, b->data + b->off, b->len, MSG_NOSIGNAL);
			if (n > 0) {
				b->off += (size_t)n;
				b->len -= (size_t)n;
				continue;
			}
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				return false;
		}
		break;
	}
	if (b->eof && b->len == 0 && !b->shut) {
		shutdown(dst, SHUT_WR);
		b->shut = true;
	}
	return true;
}

/*
 * epoll reports a hang-up whatever the mask: a hung-up fd we want nothing
 * from is taken out of the set (else it would wake the loop forever), and
 * put back when we want to read or write it again.
 */
static void watch(struct pubfwd *f, int fd, uint32_t events, bool hup, bool *in, uint64_t t)
{
	if (hup && !events) {
		if (*in && ep(f, EPOLL_CTL_DEL, fd, 0, t) == 0)
			*in = false;
		return;
	}
	if (ep(f, *in ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, events, t) == 0)
		*in = true;
}

static void conn_interest(struct pubfwd *f, struct pub_conn *c, uint32_t idx)
{
	uint32_t he = 0, ge = 0;
	if (c->connecting) {
		ge = EPOLLOUT;
	} else {
		if (c->to_g.len == 0 && !c->to_g.eof)
			he |= EPOLLIN;
		if (c->to_h.len)
			he |= EPOLLOUT;
		if (c->to_h.len == 0 && !c->to_h.eof)
			ge |= EPOLLIN;
		if (c->to_g.len)
			ge |= EPOLLOUT;
	}
	watch(f, c->hfd, he, c->h_hup, &c->h_in, tag(K_HOST, c->gen, idx));
	watch(f, c->gfd, ge, c->g_hup, &c->g_in, tag(K_GUEST, c->gen, idx));
}

static void conn_event(struct pubfwd *f, uint32_t idx, int kind, uint32_t events)
{
	struct pub_conn *c = &f->conns[idx];
	if (events & EPOLLHUP) {
		if (kind == K_HOST)
			c->h_hup = true;
		else
			c->g_hup = true;
	}
	if (c->connecting) {
		int err = 0;
		socklen_t el = sizeof(err);
		getsockopt(c->gfd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err || (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLOUT))) {
			conn_close(f, c);
			return;
		}
		c->connecting = false;
	} else if (events & EPOLLERR) {
		conn_close(f, c); /* reset: what was in flight is gone anyway */
		return;
	}
	/* A hang-up may still leave data to read: pump drains it to EOF. */
	if (!pump(c->hfd, c->gfd, &c->to_g, true) || !pump(c->gfd, c->hfd, &c->to_h, true)) {
		conn_close(f, c);
		return;
	}
	if (c->to_g.shut && c->to_h.shut) {
		conn_close(f, c);
		return;
	}
	conn_interest(f, c, idx);
}

static int guest_socket(struct pubfwd *f, int type, uint16_t port, int *out)
{
	int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in sa = {
		.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = f->guest};
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		int e = -errno;
		close(fd);
		return e;
	}
	*out = fd;
	return 0;
}

static bool peer_allowed(struct pubfwd *f, const struct sockaddr_storage *peer, unsigned ri)
{
	const struct pub_rule *r = &f->rules[ri];
	return !f->cfg.allowed ||
	       f->cfg.allowed(f->cfg.ctx, (const struct sockaddr *)peer, r->udp, r->guest_port);
}

static void accept_ready(struct pubfwd *f, unsigned ri)
{
	for (;;) {
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		int hfd = accept4(f->rules[ri].fd, (struct sockaddr *)&peer, &pl,
				  SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (hfd < 0)
			return;
		if (!peer_allowed(f, &peer, ri)) {
			close(hfd); /* an ingress rule denies this peer */
			continue;
		}
		uint32_t idx = PUB_CONNS_MAX;
		for (uint32_t i = 0; i < PUB_CONNS_MAX; i++)
			if (!f->conns[i].used) {
				idx = i;
				break;
			}
		struct pub_conn *c = idx < PUB_CONNS_MAX ? &f->conns[idx] : NULL;
		if (!c) {
			close(hfd); /* full: refused at once, never queued */
			continue;
		}
		memset(c, 0, sizeof(*c));
		c->used = true;
		c->gen = ++f->gen;
		c->hfd = hfd;
		c->gfd = -1;
		c->to_g.data = malloc(PUB_BUF);
		c->to_h.data = malloc(PUB_BUF);
		if (!c->to_g.data || !c->to_h.data ||
		    guest_socket(f, SOCK_STREAM, f->rules[ri].guest_port, &c->gfd) < 0) {
			conn_close(f, c);
			continue;
		}
		c->connecting = true;
		if (ep(f, EPOLL_CTL_ADD, c->hfd, 0, tag(K_HOST, c->gen, idx)) < 0 ||
		    ep(f, EPOLL_CTL_ADD, c->gfd, EPOLLOUT, tag(K_GUEST, c->gen, idx)) < 0)
			conn_close(f, c);
		else
			c->h_in = c->g_in = true;
	}
}

/* ---- UDP ------------------------------------------------------------------------ */

static void flow_close(struct pub_flow *fl)
{
	if (fl->fd >= 0)
		close(fl->fd);
	memset(fl, 0, sizeof(*fl));
	fl->fd = -1;
}

static void udp_ready(struct pubfwd *f, unsigned ri)
{
	for (;;) {
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		ssize_t n = recvfrom(f->rules[ri].fd, f->dgram, sizeof(f->dgram), MSG_DONTWAIT,
				     (struct sockaddr *)&peer, &pl);
		if (n < 0)
			return;
		if (!peer_allowed(f, &peer, ri))
			continue;
		time_t now = time(NULL);
		struct pub_flow *fl = NULL, *oldest = NULL, *freeone = NULL;
		for (unsigned i = 0; i < PUB_FLOWS_MAX; i++) {
			struct pub_flow *x = &f->flows[i];
			if (!x->used) {
				if (!freeone)
					freeone = x;
				continue;
			}
			if (x->rule == ri && x->peer_len == pl && !memcmp(&x->peer, &peer, pl)) {
				fl = x;
				break;
			}
			if (!oldest || x->last < oldest->last)
				oldest = x;
		}
		if (!fl) {
			fl = freeone ? freeone : oldest;
			if (fl->used)
				flow_close(fl);
			fl->fd = -1;
			if (guest_socket(f, SOCK_DGRAM, f->rules[ri].guest_port, &fl->fd) < 0)
				continue;
			fl->used = true;
			fl->gen = ++f->gen;
			fl->rule = ri;
			memcpy(&fl->peer, &peer, pl);
			fl->peer_len = pl;
			if (ep(f, EPOLL_CTL_ADD, fl->fd, EPOLLIN,
			       tag(K_FLOW, fl->gen, (uint32_t)(fl - f->flows))) < 0) {
				flow_close(fl);
				continue;
			}
		}
		fl->last = now;
		(void)send(fl->fd, f->dgram, (size_t)n, MSG_DONTWAIT);
	}
}

static void flow_ready(struct pubfwd *f, struct pub_flow *fl)
{
	for (;;) {
		ssize_t n = recv(fl->fd, f->dgram, sizeof(f->dgram), MSG_DONTWAIT);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED)
				flow_close(fl);
			return;
		}
		fl->last = time(NULL);
		(void)sendto(f->rules[fl->rule].fd, f->dgram, (size_t)n, MSG_DONTWAIT,
			     (struct sockaddr *)&fl->peer, fl->peer_len);
	}
}

static void flows_expire(struct pubfwd *f)
{
	time_t now = time(NULL);
	for (unsigned i = 0; i < PUB_FLOWS_MAX; i++)
		if (f->flows[i].used && now - f->flows[i].last > PUB_UDP_IDLE_S)
			flow_close(&f->flows[i]);
}

/* ---- the thread ----------------------------------------------------------------- */

static void *loop_main(void *arg)
{
	struct pubfwd *f = arg;
	/* Sockets made from here on (to the guest) are in the sandbox's namespace. */
	if (setns(f->nsfd, CLONE_NEWNET) < 0) {
		/* Refuse rather than queue: close the host side's sockets. */
		for (unsigned i = 0; i < f->nrules; i++) {
			close(f->rules[i].fd);
			f->rules[i].fd = -1;
		}
		return NULL;
	}
	struct epoll_event evs[64];
	for (;;) {
		int n = epoll_wait(f->epfd, evs, 64, 5000);
		if (n < 0 && errno != EINTR)
			return NULL;
		for (int i = 0; i < n; i++) {
			uint64_t t = evs[i].data.u64;
			int k = (int)(t >> 56);
			uint32_t gen = (uint32_t)(t >> 32) & 0xffffffu;
			uint32_t idx = (uint32_t)t;
			switch (k) {
			case K_STOP:
				return NULL;
			case K_LISTEN:
				accept_ready(f, idx);
				break;
			case K_UDP:
				udp_ready(f, idx);
				break;
			case K_HOST:
			case K_GUEST:
				if (f->conns[idx].used && (f->conns[idx].gen & 0xffffffu) == gen)
					conn_event(f, idx, k, evs[i].events);
				break;
			case K_FLOW:
				if (f->flows[idx].used && (f->flows[idx].gen & 0xffffffu) == gen)
					flow_ready(f, &f->flows[idx]);
				break;
			default:
				break;
			}
		}
		flows_expire(f);
	}
}

static void release(struct pubfwd *f)
{
	for (unsigned i = 0; i < PUB_CONNS_MAX; i++)
		if (f->conns[i].used)
			conn_close(f, &f->conns[i]);
	for (unsigned i = 0; i < PUB_FLOWS_MAX; i++)
		if (f->flows[i].used)
			flow_close(&f->flows[i]);
	for (unsigned i = 0; i < f->nrules; i++)
		if (f->rules[i].fd >= 0)
			close(f->rules[i].fd);
	if (f->epfd >= 0)
		close(f->epfd);
	if (f->stopfd >= 0)
		close(f->stopfd);
	free(f->rules);
	free(f);
}

static int listen_on(struct pub_rule *r, char *why, size_t why_len)
{
	char d[96];
	describe(r, d, sizeof(d));
	r->fd = socket(r->host.ss_family,
		       (r->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1, e = 0;
	if (r->fd < 0)
		e = errno;
	else if (!r->udp && setsockopt(r->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		e = errno;
	else if (r->host.ss_family == AF_INET6 &&
		 setsockopt(r->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		e = errno;
	else if (bind(r->fd, (struct sockaddr *)&r->host, r->host_len) < 0)
		e = errno;
	else if (!r->udp && listen(r->fd, 128) < 0)
		e = errno;
	if (e) {
		snprintf(why, why_len, "--publish %s: cannot listen on the host: %s", d,
			 strerror(e));
		return -e;
	}
	return 0;
}

int pubfwd_start(const struct pubfwd_cfg *cfg, struct pubfwd **out, char *why, size_t why_len)
{
	*out = NULL;
	struct pub_rule *rules;
	unsigned n;
	const char *guest4 = cfg->guest4;
	int r = pub_parse(cfg->network_json, &rules, &n, why, why_len);
	if (r < 0 || n == 0)
		return r;
	struct pubfwd *f = calloc(1, sizeof(*f));
	if (!f) {
		free(rules);
		return -ENOMEM;
	}
	f->cfg = *cfg;
	f->rules = rules;
	f->nrules = n;
	f->nsfd = cfg->nsfd;
	f->epfd = f->stopfd = -1;
	for (unsigned i = 0; i < PUB_CONNS_MAX; i++)
		f->conns[i].hfd = f->conns[i].gfd = -1;
	for (unsigned i = 0; i < PUB_FLOWS_MAX; i++)
		f->flows[i].fd = -1;
	if (inet_pton(AF_INET, guest4, &f->guest) != 1) {
		snprintf(why, why_len, "publish: bad guest address '%.48s'", guest4);
		release(f);
		return -EINVAL;
	}
	f->epfd = epoll_create1(EPOLL_CLOEXEC);
	f->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (f->epfd < 0 || f->stopfd < 0 ||
	    ep(f, EPOLL_CTL_ADD, f->stopfd, EPOLLIN, tag(K_STOP, 0, 0))) {
		r = -errno;
		snprintf(why, why_len, "publish: %s", strerror(errno));
		release(f);
		return r;
	}
	for (unsigned i = 0; i < n; i++) {
		if ((r = listen_on(&rules[i], why, why_len)) < 0) {
			release(f);
			return r;
		}
		ep(f, EPOLL_CTL_ADD, rules[i].fd, EPOLLIN,
		   tag(rules[i].udp ? K_UDP : K_LISTEN, 0, i));
	}
	r = cfg->thread_create ? cfg->thread_create(cfg->thread_ctx, loop_main, f, &f->tid)
			       : -pthread_create(&f->tid, NULL, loop_main, f);
	if (r) {
		snprintf(why, why_len, "publish: cannot start the forwarder: %s",
			 strerror(r < 0 ? -r : r));
		release(f);
		return r < 0 ? r : -r;
	}
	f->running = true;
	*out = f;
	return 0;
}

void pubfwd_stop(struct pubfwd *f)
{
	if (!f)
		return;
	if (f->running) {
		uint64_t one = 1;
		while (write(f->stopfd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
		pthread_join(f->tid, NULL);
	}
	release(f);
}
