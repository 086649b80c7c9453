/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets proxy: listeners, one thread per connection, interception and
 * splicing (proxy.h, docs/secrets.md).
 *
 * A connection thread owns both sockets.  It peeks at the guest's first
 * bytes (MSG_PEEK: nothing is consumed) for a TLS ClientHello and its SNI
 * (sni.c).  Only a name that some secret is bound to, and that the bypass
 * list does not name, is intercepted; everything else is spliced through to
 * the real destination byte for byte, so a guest's TLS to other hosts is
 * its own business and verifies against the guest's own trust store.
 *
 * Intercepted: the guest's handshake against a leaf for the SNI from the
 * sandbox's CA, then TCP + TLS to the real destination (SO_ORIGINAL_DST,
 * which steer_check in the net module already held to the egress policy),
 * verified for the same name against the host's CAs.  Then HTTP/1.1: each
 * request head from the guest is parsed (http.c, strict) and rewritten
 * (substitute.c); a secret's value is written only if, for that request,
 *   1. the SNI matches one of the secret's hosts,
 *   2. the destination address was given to this sandbox for that name by
 *      the DNS interceptor (the pin check),
 *   3. the connection is intercepted TLS (this path, by construction), and
 *   4. the request's Host equals the SNI.
 * A placeholder whose secret fails a gate is a violation: the request is
 * refused (403) and the connection closed, or passed on unchanged under
 * PROXY_PASSTHROUGH.  Responses are relayed untouched.
 *
 * One loop per connection, non-blocking sockets, both directions: OpenSSL
 * does not allow SSL_read and SSL_write on one SSL from two threads.
 */
#include <arpa/inet.h> /* before the kernel's netfilter header, which needs in.h first */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/netfilter_ipv4.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ca.h"
#include "http.h"
#include "proxy.h"
#include "sni.h"
#include "substitute.h"

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h; clashes with net/if.h */
#endif

#define HANDSHAKE_MS  10000
#define FIRST_BYTE_MS 1000
#define IDLE_MS	      (5 * 60 * 1000)
#define BUF_DOWN      (64 * 1024)	       /* upstream -> guest */
#define OUT_HIGH      (PROXY_BODY_MAX + 65536) /* stop reading the guest above this */
#define IN_MAX	      (HTTP_HEAD_MAX + PROXY_BODY_MAX)
#define SPLICE_BUF    (64 * 1024)

struct secret {
	char placeholder[SUBST_PLACEHOLDER_MAX + 1];
	char *value; /* in p->vault */
	size_t value_len;
	char **hosts;
	size_t nhosts;
	char *env;
};

struct proxy {
	struct proxy_cfg cfg;
	struct secret secrets[PROXY_SECRETS_MAX];
	size_t nsecrets;
	char **bypass;
	size_t nbypass;
	/* The values, in one mapping kept out of core dumps and (if allowed) locked. */
	void *vault;
	size_t vault_len;
	struct ca *ca;
	SSL_CTX *server_ctx, *up_ctx;
	int lfd[2]; /* IPv4, IPv6 listeners (inside the namespace) */
	uint16_t port;
	int stopfd;
	pthread_t accept_tid;
	bool accept_started;
	/* Live connections: their sockets, shut down at stop. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int conn_fds[PROXY_CONNS_MAX][2];
	unsigned nconns;
	bool stopping;
	struct proxy_stats st;
	/* Start-up handshake with the accept thread. */
	int ready_err;
	bool ready;
	char ready_why[200];
};

#define STAT(p, f) __atomic_fetch_add(&(p)->st.f, 1, __ATOMIC_RELAXED)

static void plog(struct proxy *p, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void plog(struct proxy *p, int level, const char *fmt, ...)
{
	if (!p->cfg.log)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	p->cfg.log(p->cfg.log_ctx, level, line);
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static bool name_listed(char *const *list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (http_host_matches(list[i], name))
			return true;
	return false;
}

/* ---- one connection ---------------------------------------------------------- */

/* One side: a socket, and TLS over it once intercepted. */
struct end {
	int fd;
	SSL *ssl;
	bool eof;  /* nothing more will come from it */
	bool shut; /* we have closed our writing side */
	/* What the last read (r_) and the last write (w_) wait for: TLS may need the other way. */
	bool r_out; /* a read that needs the socket writable */
	bool w_in;  /* a write that needs it readable */
};

struct conn {
	struct proxy *p;
	int slot;
	struct end g, u; /* guest, upstream */
	struct sockaddr_storage dst;
	socklen_t dst_len;
	unsigned dst_port;
	char dst_text[INET6_ADDRSTRLEN + 8];
	char sni[256];
	bool intercept;
	bool sni_match[PROXY_SECRETS_MAX];
	bool pinned;
	/* guest -> upstream: raw bytes in, bytes to send out. */
	char *in;
	size_t in_len, in_cap; /* IN_MAX intercepted (a whole head and body); less spliced */
	char *out;
	size_t out_len, out_off, out_cap;
	/* upstream -> guest */
	char down[BUF_DOWN];
	size_t down_len, down_off;
	/* The HTTP request being forwarded (intercepted connections). */
	enum { R_HEAD, R_BODY_LEN, R_BODY_CHUNKED, R_CLOSING } rs;
	uint64_t body_left;
	bool scan; /* a streamed body is checked for placeholders it cannot carry */
	struct http_chunked ch;
	struct subst_stream ss;
	bool ss_on;
	struct subst_secret subst[PROXY_SECRETS_MAX];
	bool sent_continue;
	struct http_request req;
};

/* Grow c->out by `add` bytes of room: allocate, copy, wipe the old, free (it may hold values). */
static int out_room(struct conn *c, size_t add)
{
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + add <= c->out_cap)
		return 0;
	size_t cap = c->out_cap ? c->out_cap : 16384;
	while (cap < c->out_len + add)
		cap *= 2;
	char *n = malloc(cap);
	if (!n)
		return -ENOMEM;
	memcpy(n, c->out, c->out_len);
	subst_free(c->out, c->out_cap);
	c->out = n;
	c->out_cap = cap;
	return 0;
}

static int out_put(struct conn *c, const char *b, size_t len)
{
	int r = out_room(c, len);
	if (r == 0) {
		memcpy(c->out + c->out_len, b, len);
		c->out_len += len;
	}
	return r;
}

/* Answer the guest ourselves (403, 400, 502 ...) and stop forwarding requests. */
static void reply_and_close(struct conn *c, int code, const char *reason, const char *text)
{
	char buf[1024];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n%s\n",
			 code, reason, strlen(text) + 1, text);
	if (n > 0 && (size_t)n < sizeof(buf) && c->down_len + (size_t)n <= sizeof(c->down)) {
		memcpy(c->down + c->down_len, buf, (size_t)n);
		c->down_len += (size_t)n;
	}
	c->rs = R_CLOSING;
	/* Nothing more goes upstream: a half-sent request must not complete. */
	c->out_len = c->out_off = 0;
	c->in_len = 0;
}

static void consume_in(struct conn *c, size_t n)
{
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
}

/* The gates for one request: which secrets may be substituted in it. */
static void gates(struct conn *c, const struct http_request *req)
{
	bool host_ok =
		req->host && http_host_equals_sni(req->host, req->host_len, c->sni, c->dst_port);
	for (size_t i = 0; i < c->p->nsecrets; i++)
		c->subst[i].allowed = c->sni_match[i] && c->pinned && host_ok;
}

static void violation(struct conn *c, size_t which)
{
	struct proxy *p = c->p;
	STAT(p, blocked);
	char text[600];
	snprintf(text, sizeof(text),
		 "msb: the request carries the placeholder for secret %s, which may not be sent "
		 "to %s (%s) on this request",
		 p->secrets[which].env, c->sni, c->dst_text);
	if (p->cfg.on_violation == PROXY_BLOCK_AND_LOG)
		plog(p, 1, "blocked: secret %s at %s (%s)", p->secrets[which].env, c->sni,
		     c->dst_text);
	reply_and_close(c, 403, "Forbidden", text);
}

/*
 * Move what can be moved from c->in to c->out, request by request.  Returns
 * 0, or -1 when the connection must end after flushing what is queued.
 */
static int process_requests(struct conn *c)
{
	struct proxy *p = c->p;
	const size_t n = p->nsecrets;
	for (;;) {
		if (c->rs == R_CLOSING)
			return -1;
		if (c->out_len - c->out_off > OUT_HIGH)
			return 0; /* upstream is slow: wait */
		if (c->rs == R_HEAD) {
			if (!c->in_len)
				return 0;
			const char *why = NULL;
			int r = http_parse_request(c->in, c->in_len, &c->req, &why);
			if (r == 0)
				return 0;
			if (r < 0) {
				STAT(p, malformed);
				char text[300];
				snprintf(text, sizeof(text), "msb: malformed request: %s",
					 why ? why : "?");
				reply_and_close(c, r == -E2BIG ? 431 : 400,
						r == -E2BIG ? "Request Header Fields Too Large"
							    : "Bad Request",
						text);
				return -1;
			}
			struct http_request *q = &c->req;
			if (q->upgrade) {
				reply_and_close(c, 501, "Not Implemented",
						"msb: Upgrade and CONNECT are not carried through "
						"the secrets proxy");
				return -1;
			}
			gates(c, q);
			size_t head = q->head_len;
			bool pass = false;
			uint64_t new_cl = UINT64_MAX;
			char *body = NULL;
			size_t body_len = 0, viol = 0;
			bool buffered = q->body == HTTP_BODY_LENGTH &&
					(p->cfg.where & SUBST_BODY) &&
					q->content_length <= PROXY_BODY_MAX;
			if (buffered) {
				if (c->in_len - head < q->content_length) {
					if (q->expect_continue && !c->sent_continue) {
						static const char cont[] =
							"HTTP/1.1 100 Continue\r\n\r\n";
						if (c->down_len + sizeof(cont) - 1 <=
						    sizeof(c->down)) {
							memcpy(c->down + c->down_len, cont,
							       sizeof(cont) - 1);
							c->down_len += sizeof(cont) - 1;
							c->sent_continue = true;
						}
					}
					return 0; /* the whole body first: its length may change */
				}
				r = subst_buffer(c->in + head, (size_t)q->content_length, c->subst,
						 n, PROXY_BODY_MAX + 65536, &body, &body_len,
						 &viol);
				if (r == -EPERM && p->cfg.on_violation == PROXY_PASSTHROUGH)
					pass = true;
				else if (r == -EPERM) {
					violation(c, viol);
					return -1;
				} else if (r < 0) {
					reply_and_close(c, 413, "Content Too Large",
							"msb: the request body could not be "
							"substituted");
					return -1;
				}
				new_cl = body_len;
			}
			char *h = NULL;
			size_t h_len = 0;
			if (!pass) {
				r = subst_head(q, c->subst, n, p->cfg.where, new_cl,
					       HTTP_HEAD_MAX + 65536, &h, &h_len, &viol);
				if (r == -EPERM && p->cfg.on_violation == PROXY_PASSTHROUGH) {
					pass = true;
				} else if (r == -EPERM) {
					subst_free(body, body_len);
					violation(c, viol);
					return -1;
				} else if (r < 0) {
					subst_free(body, body_len);
					reply_and_close(c, 431, "Request Header Fields Too Large",
							"msb: the request head could not be "
							"substituted");
					return -1;
				}
			}
			STAT(p, requests);
			if (pass) {
				/* As sent: no value anywhere in this request. */
				subst_free(h, h_len);
				subst_free(body, body_len);
				h = NULL;
				body = NULL;
				r = out_put(c, c->in, head);
			} else {
				bool changed =
					h_len != head || memcmp(h, c->in, head) != 0 ||
					(body && (body_len != q->content_length ||
						  memcmp(body, c->in + head, body_len) != 0));
				if (changed)
					STAT(p, injected);
				r = out_put(c, h, h_len);
				subst_free(h, h_len);
			}
			if (r == 0 && body)
				r = out_put(c, body, body_len);
			subst_free(body, body_len);
			if (r < 0)
				return -1;
			c->sent_continue = false;
			if (buffered) {
				if (pass)
					r = out_put(c, c->in + head, (size_t)q->content_length);
				consume_in(c, head + (size_t)q->content_length);
				if (r < 0)
					return -1;
				continue;
			}
			consume_in(c, head);
			if (q->body == HTTP_BODY_LENGTH) {
				c->rs = R_BODY_LEN;
				c->body_left = q->content_length;
				/* Too big to hold: passed as is, but it may not carry a
				 * placeholder. */
				c->scan = (p->cfg.where & SUBST_BODY) && !pass;
				if (c->scan) {
					for (size_t i = 0; i < n; i++)
						c->subst[i].allowed = false;
					subst_stream_init(&c->ss, c->subst, n);
				}
			} else if (q->body == HTTP_BODY_CHUNKED) {
				c->rs = R_BODY_CHUNKED;
				http_chunked_init(&c->ch);
				c->ss_on = (p->cfg.where & SUBST_BODY) && !pass;
				if (c->ss_on)
					subst_stream_init(&c->ss, c->subst, n);
			}
			continue;
		}
		if (c->rs == R_BODY_LEN) {
			size_t k = c->in_len < c->body_left ? c->in_len : (size_t)c->body_left;
			if (!k && c->body_left)
				return 0;
			if (c->scan) {
				char *tmp = NULL;
				size_t tl = 0, tc = 0, viol = 0;
				int r = subst_stream_feed(&c->ss, c->in, k, k == c->body_left, &tmp,
							  &tl, &tc, &viol);
				subst_free(tmp, tc);
				if (r == -EPERM) {
					/* Part of the body went: end upstream without the rest. */
					violation(c, viol);
					return -1;
				}
			}
			if (out_put(c, c->in, k) < 0)
				return -1;
			consume_in(c, k);
			c->body_left -= k;
			if (!c->body_left) {
				if (c->scan)
					subst_stream_free(&c->ss);
				c->scan = false;
				c->rs = R_HEAD;
			}
			continue;
		}
		/* R_BODY_CHUNKED: decode, substitute, frame again. */
		{
			static __thread char dec[4096]; /* small: a placeholder may expand ~1000x */
			size_t used = 0, got = 0;
			const char *why = NULL;
			int r = http_chunked_decode(&c->ch, c->in, c->in_len, &used, dec,
						    sizeof(dec), &got, &why);
			if (r < 0) {
				STAT(p, malformed);
				char text[300];
				snprintf(text, sizeof(text), "msb: malformed chunked body: %s",
					 why ? why : "?");
				reply_and_close(c, 400, "Bad Request", text);
				return -1;
			}
			consume_in(c, used);
			char *data = dec, *sub = NULL;
			size_t dl = got, sl = 0, sc = 0, viol = 0;
			if (c->ss_on) {
				int e = subst_stream_feed(&c->ss, dec, got, r == 1, &sub, &sl, &sc,
							  &viol);
				if (e == -EPERM) {
					subst_free(sub, sc);
					violation(c, viol);
					return -1;
				}
				if (e < 0) {
					subst_free(sub, sc);
					return -1;
				}
				data = sub;
				dl = sl;
			}
			int e = 0;
			if (dl) {
				char hdr[24];
				int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", dl);
				e = out_put(c, hdr, (size_t)hl);
				if (!e)
					e = out_put(c, data, dl);
				if (!e)
					e = out_put(c, "\r\n", 2);
			}
			subst_free(sub, sc);
			if (e < 0)
				return -1;
			if (r == 1) {
				if (out_put(c, "0\r\n\r\n", 5) < 0)
					return -1;
				if (c->ss_on)
					subst_stream_free(&c->ss);
				c->ss_on = false;
				c->rs = R_HEAD;
				continue;
			}
			if (!used && !got)
				return 0;
		}
	}
}

/* Read from one end into buf: >0 bytes, 0 nothing now, -1 EOF, -2 error. */
static ssize_t end_read(struct end *e, char *buf, size_t len)
{
	e->r_out = false;
	if (e->ssl) {
		size_t got = 0;
		ERR_clear_error();
		if (SSL_read_ex(e->ssl, buf, len, &got) == 1)
			return (ssize_t)got;
		switch (SSL_get_error(e->ssl, 0)) {
		case SSL_ERROR_WANT_READ:
			return 0;
		case SSL_ERROR_WANT_WRITE:
			e->r_out = true;
			return 0;
		case SSL_ERROR_ZERO_RETURN:
			return -1;
		case SSL_ERROR_SYSCALL:
			/* A TCP close without close_notify: the end of the stream, as for TCP. */
			return errno == 0 || errno == ECONNRESET ? -1 : -2;
		default:
			return -2;
		}
	}
	ssize_t r = recv(e->fd, buf, len, MSG_DONTWAIT);
	if (r > 0)
		return r;
	if (r == 0)
		return -1;
	if (errno == EAGAIN || errno == EINTR)
		return 0;
	return errno == ECONNRESET ? -1 : -2;
}

/* Write to one end: >0 bytes, 0 not now, -2 error. */
static ssize_t end_write(struct end *e, const char *buf, size_t len)
{
	e->w_in = false;
	if (e->ssl) {
		size_t put = 0;
		ERR_clear_error();
		if (SSL_write_ex(e->ssl, buf, len, &put) == 1)
			return (ssize_t)put;
		switch (SSL_get_error(e->ssl, 0)) {
		case SSL_ERROR_WANT_READ:
			e->w_in = true;
			return 0;
		case SSL_ERROR_WANT_WRITE:
			return 0;
		default:
			return -2;
		}
	}
	ssize_t r = send(e->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r >= 0)
		return r;
	if (errno == EAGAIN || errno == EINTR)
		return 0;
	return -2;
}

static void end_shut(struct end *e)
{
	if (e->shut)
		return;
	e->shut = true;
	if (e->ssl)
		SSL_shutdown(e->ssl); /* close_notify; non-blocking: best effort */
	shutdown(e->fd, SHUT_WR);
}

/* Both directions until both ends are done, an error, or idleness. */
static void relay(struct conn *c)
{
	int64_t last = now_ms();
	bool closing = false; /* stop taking requests; flush and go */
	for (;;) {
		bool progress = false;
		/* guest -> in */
		if (!c->g.eof && !closing && c->in_len < c->in_cap &&
		    c->out_len - c->out_off <= OUT_HIGH) {
			size_t room = c->in_cap - c->in_len;
			ssize_t r = end_read(&c->g, c->in + c->in_len, room > 65536 ? 65536 : room);
			if (r > 0) {
				c->in_len += (size_t)r;
				progress = true;
			} else if (r == -1) {
				c->g.eof = true;
				progress = true;
			} else if (r == -2) {
				return;
			}
		}
		/* in -> out */
		if (c->intercept) {
			if (!closing && process_requests(c) < 0)
				closing = true;
		} else if (c->in_len && out_put(c, c->in, c->in_len) == 0) {
			c->in_len = 0;
		}
		/* out -> upstream */
		if (c->out_off < c->out_len && !c->u.shut) {
			ssize_t r = end_write(&c->u, c->out + c->out_off, c->out_len - c->out_off);
			if (r > 0) {
				c->out_off += (size_t)r;
				progress = true;
			} else if (r == -2) {
				return;
			}
		}
		if ((c->g.eof || closing) && c->out_off == c->out_len && !c->in_len)
			end_shut(&c->u);
		/* upstream -> down */
		if (!c->u.eof && c->down_len < sizeof(c->down) && !closing) {
			ssize_t r = end_read(&c->u, c->down + c->down_len,
					     sizeof(c->down) - c->down_len);
			if (r > 0) {
				c->down_len += (size_t)r;
				progress = true;
			} else if (r == -1) {
				c->u.eof = true;
				progress = true;
			} else if (r == -2) {
				c->u.eof = true; /* an upstream error: what came still goes */
			}
		}
		/* down -> guest */
		if (c->down_off < c->down_len) {
			ssize_t r =
				end_write(&c->g, c->down + c->down_off, c->down_len - c->down_off);
			if (r > 0) {
				c->down_off += (size_t)r;
				progress = true;
				if (c->down_off == c->down_len)
					c->down_off = c->down_len = 0;
			} else if (r == -2) {
				return;
			}
		}
		bool down_empty = c->down_off == c->down_len;
		if ((c->u.eof || closing) && down_empty) {
			end_shut(&c->g);
			if (closing || (c->g.eof && c->out_off == c->out_len))
				return;
		}
		if (c->g.eof && c->u.eof && down_empty)
			return;
		if (progress) {
			last = now_ms();
			continue;
		}
		/* SSL may hold decrypted bytes the socket no longer shows. */
		if ((c->g.ssl && SSL_pending(c->g.ssl) && !c->g.eof) ||
		    (c->u.ssl && SSL_pending(c->u.ssl) && !c->u.eof &&
		     c->down_len < sizeof(c->down)))
			continue;
		/*
		 * Wait only for what we would act on: a side whose buffer is full
		 * is not polled for reading (or it would wake us at once, forever).
		 */
		bool g_rd = !c->g.eof && !closing && c->in_len < c->in_cap &&
			    c->out_len - c->out_off <= OUT_HIGH;
		bool u_rd = !c->u.eof && !closing && c->down_len < sizeof(c->down);
		bool g_wr = c->down_off < c->down_len, u_wr = c->out_off < c->out_len && !c->u.shut;
		struct pollfd pf[2] = {{.fd = c->g.fd}, {.fd = c->u.fd}};
		if (g_rd)
			pf[0].events |= c->g.r_out ? POLLOUT : POLLIN;
		if (g_wr)
			pf[0].events |= c->g.w_in ? POLLIN : POLLOUT;
		if (u_rd)
			pf[1].events |= c->u.r_out ? POLLOUT : POLLIN;
		if (u_wr)
			pf[1].events |= c->u.w_in ? POLLIN : POLLOUT;
		for (int i = 0; i < 2; i++)
			if (!pf[i].events)
				pf[i].fd = -1; /* nothing wanted: not even its POLLHUP */
		int64_t left = last + IDLE_MS - now_ms();
		if (left <= 0)
			return;
		int r = poll(pf, 2, (int)(left > 1000 ? 1000 : left));
		if (r < 0 && errno != EINTR)
			return;
		if (__atomic_load_n(&c->p->stopping, __ATOMIC_RELAXED))
			return;
		if ((pf[0].revents & (POLLERR | POLLNVAL)) || (pf[1].revents & POLLNVAL))
			return;
	}
}

static int set_timeouts(int fd, int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

static int set_nonblock(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -errno;
	return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0 ? -errno : 0;
}

/* TCP to the real destination, from inside the sandbox's namespace. */
static int connect_upstream(struct conn *c)
{
	int fd = socket(c->dst.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&c->dst, c->dst_len) < 0 && errno != EINPROGRESS) {
		int e = -errno;
		close(fd);
		return e;
	}
	struct pollfd pf = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t el = sizeof(err);
	if (poll(&pf, 1, HANDSHAKE_MS) != 1 ||
	    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
		close(fd);
		return -(err ? err : ETIMEDOUT);
	}
	pthread_mutex_lock(&c->p->mu);
	c->p->conn_fds[c->slot][1] = fd;
	pthread_mutex_unlock(&c->p->mu);
	c->u.fd = fd;
	return 0;
}

/* Peek at the guest's first bytes: fill c->sni and decide whether to intercept. */
static void classify(struct conn *c)
{
	struct proxy *p = c->p;
	static __thread uint8_t peek[SNI_PEEK_MAX];
	/*
	 * A TLS client speaks first, at once.  One that waits for the server
	 * (SSH on 443, say) gets spliced after FIRST_BYTE_MS (1 s); a hello that stops
	 * coming is spliced at the handshake deadline.  Never a hang.
	 */
	int64_t start = now_ms(), deadline = start + HANDSHAKE_MS;
	int r = 0;
	for (bool first = true;; first = false) {
		int64_t left = (first ? start + FIRST_BYTE_MS : deadline) - now_ms();
		struct pollfd pf = {.fd = c->g.fd, .events = POLLIN};
		if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
			return;
		ssize_t n = recv(c->g.fd, peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
		if (n <= 0)
			return; /* closed: splice what there is */
		r = sni_peek(peek, (size_t)n, c->sni, sizeof(c->sni));
		if (r != 0 || (size_t)n == sizeof(peek))
			break;
		usleep(2000); /* more of the hello is on its way: peek again */
	}
	if (r != 1)
		return; /* not TLS, no SNI, or a bad one: nothing to inject into */
	if (name_listed(p->bypass, p->nbypass, c->sni))
		return;
	bool any = false;
	for (size_t i = 0; i < p->nsecrets; i++) {
		c->sni_match[i] = name_listed(p->secrets[i].hosts, p->secrets[i].nhosts, c->sni);
		any |= c->sni_match[i];
	}
	c->intercept = any;
}

static void conn_run(struct conn *c)
{
	struct proxy *p = c->p;
	classify(c);
	/* Spliced bytes only pass through: a buffer the size of one read is enough. */
	c->in_cap = c->intercept ? IN_MAX : SPLICE_BUF;
	c->in = malloc(c->in_cap);
	if (!c->in)
		return;
	if (!c->intercept) {
		STAT(p, spliced);
		if (connect_upstream(c) == 0 && set_nonblock(c->g.fd, true) == 0)
			relay(c);
		return;
	}
	STAT(p, intercepted);
	/* Gate 2, once per connection: this address was given to this guest for this name. */
	c->pinned =
		p->cfg.pin_check && p->cfg.pin_check(p->cfg.pin_ctx, c->sni,
						     (struct sockaddr *)&c->dst, c->dst_len) == 1;
	/* The guest's handshake, blocking with a deadline. */
	set_timeouts(c->g.fd, HANDSHAKE_MS);
	c->g.ssl = SSL_new(p->server_ctx);
	if (!c->g.ssl || ca_ssl_bind_name(c->g.ssl, c->sni) < 0 || !SSL_set_fd(c->g.ssl, c->g.fd) ||
	    SSL_accept(c->g.ssl) != 1) {
		plog(p, 3, "guest TLS handshake for %s failed", c->sni);
		return;
	}
	int r = connect_upstream(c);
	if (r == 0) {
		set_nonblock(c->u.fd, false);
		set_timeouts(c->u.fd, HANDSHAKE_MS);
		c->u.ssl = upstream_ssl_new(p->up_ctx, c->u.fd, c->sni);
		ERR_clear_error();
		if (!c->u.ssl || SSL_connect(c->u.ssl) != 1) {
			long v = c->u.ssl ? SSL_get_verify_result(c->u.ssl) : X509_V_OK;
			char text[512];
			snprintf(text, sizeof(text), "msb: TLS to %s (%s) failed%s%s", c->sni,
				 c->dst_text,
				 v != X509_V_OK ? ": the certificate did not verify: " : "",
				 v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
			STAT(p, upstream_failed);
			plog(p, 2, "%s", text + 5);
			reply_and_close(c, 502, "Bad Gateway", text);
			set_nonblock(c->g.fd, true);
			c->u.eof = c->u.shut = true;
			relay(c);
			return;
		}
	} else {
		char text[400];
		snprintf(text, sizeof(text), "msb: cannot reach %s (%s): %s", c->sni, c->dst_text,
			 strerror(-r));
		STAT(p, upstream_failed);
		reply_and_close(c, 502, "Bad Gateway", text);
		set_nonblock(c->g.fd, true);
		c->u.fd = -1;
		c->u.eof = c->u.shut = true;
		relay(c);
		return;
	}
	set_timeouts(c->g.fd, 0);
	set_timeouts(c->u.fd, 0);
	set_nonblock(c->g.fd, true);
	set_nonblock(c->u.fd, true);
	SSL_set_mode(c->g.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_set_mode(c->u.ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	relay(c);
}

static void conn_free(struct conn *c)
{
	struct proxy *p = c->p;
	if (c->g.ssl)
		SSL_free(c->g.ssl);
	if (c->u.ssl)
		SSL_free(c->u.ssl);
	pthread_mutex_lock(&p->mu);
	p->conn_fds[c->slot][0] = p->conn_fds[c->slot][1] = -1;
	p->nconns--;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (c->g.fd >= 0)
		close(c->g.fd);
	if (c->u.fd >= 0)
		close(c->u.fd);
	if (c->ss_on || c->scan)
		subst_stream_free(&c->ss);
	subst_free(c->in, c->in_cap);
	subst_free(c->out, c->out_cap);
	OPENSSL_cleanse(c->down, sizeof(c->down));
	free(c);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	conn_run(c);
	conn_free(c);
	return NULL;
}

/* ---- listeners ----------------------------------------------------------------- */

static int listen_on(int family, uint16_t port, int *fd)
{
	int one = 1;
	*fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (*fd < 0)
		return -errno;
	setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage a = {.ss_family = (sa_family_t)family};
	socklen_t al;
	if (family == AF_INET) {
		((struct sockaddr_in *)&a)->sin_port = htons(port);
		al = sizeof(struct sockaddr_in);
	} else {
		setsockopt(*fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		((struct sockaddr_in6 *)&a)->sin6_port = htons(port);
		al = sizeof(struct sockaddr_in6);
	}
	if (bind(*fd, (struct sockaddr *)&a, al) < 0 || listen(*fd, 128) < 0)
		return -errno;
	return 0;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &al) < 0)
		return 0;
	return ntohs(a.ss_family == AF_INET ? ((struct sockaddr_in *)&a)->sin_port
					    : ((struct sockaddr_in6 *)&a)->sin6_port);
}

static void ready(struct proxy *p, int err, const char *why)
{
	pthread_mutex_lock(&p->mu);
	p->ready = true;
	p->ready_err = err;
	if (why)
		snprintf(p->ready_why, sizeof(p->ready_why), "%s", why);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static void accept_one(struct proxy *p, int lfd)
{
	struct sockaddr_storage peer;
	socklen_t pl = sizeof(peer);
	int fd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	STAT(p, accepted);
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->p = p;
	c->g.fd = fd;
	c->u.fd = -1;
	/* Where the guest meant to go, kept by conntrack across the redirect. */
	c->dst_len = sizeof(c->dst);
	int ok = peer.ss_family == AF_INET
			 ? getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &c->dst, &c->dst_len)
			 : getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &c->dst, &c->dst_len);
	if (ok < 0) {
		/* Not steered here (someone connected to the port itself): nothing to do. */
		close(fd);
		free(c);
		return;
	}
	const void *a = c->dst.ss_family == AF_INET
				? (const void *)&((struct sockaddr_in *)&c->dst)->sin_addr
				: (const void *)&((struct sockaddr_in6 *)&c->dst)->sin6_addr;
	c->dst_port =
		ntohs(c->dst.ss_family == AF_INET ? ((struct sockaddr_in *)&c->dst)->sin_port
						  : ((struct sockaddr_in6 *)&c->dst)->sin6_port);
	inet_ntop(c->dst.ss_family, a, c->dst_text, sizeof(c->dst_text));
	pthread_mutex_lock(&p->mu);
	int slot = -1;
	for (int i = 0; i < PROXY_CONNS_MAX && slot < 0; i++)
		if (p->conn_fds[i][0] < 0)
			slot = i;
	if (slot >= 0) {
		p->conn_fds[slot][0] = fd;
		p->nconns++;
	}
	pthread_mutex_unlock(&p->mu);
	if (slot < 0) {
		STAT(p, refused);
		close(fd);
		free(c);
		return;
	}
	c->slot = slot;
	for (size_t i = 0; i < p->nsecrets; i++)
		c->subst[i] = (struct subst_secret){
			.placeholder = p->secrets[i].placeholder,
			.placeholder_len = strlen(p->secrets[i].placeholder),
			.value = p->secrets[i].value,
			.value_len = p->secrets[i].value_len,
		};
	pthread_t t;
	int r = p->cfg.thread_create ? p->cfg.thread_create(p->cfg.thread_ctx, conn_main, c, &t)
				     : -pthread_create(&t, NULL, conn_main, c);
	if (r != 0) {
		pthread_mutex_lock(&p->mu);
		p->conn_fds[slot][0] = -1;
		p->nconns--;
		pthread_mutex_unlock(&p->mu);
		close(fd);
		free(c);
		return;
	}
	pthread_detach(t);
}

static void *accept_main(void *arg)
{
	struct proxy *p = arg;
	/* Into the sandbox's namespace: listeners, and every connection thread after. */
	if (p->cfg.netns_fd >= 0 && setns(p->cfg.netns_fd, CLONE_NEWNET) < 0) {
		ready(p, -errno, "entering the sandbox's network namespace");
		return NULL;
	}
	int r = listen_on(AF_INET, p->cfg.port, &p->lfd[0]);
	if (r == 0) {
		p->port = bound_port(p->lfd[0]);
		r = listen_on(AF_INET6, p->port, &p->lfd[1]);
	}
	if (r < 0) {
		ready(p, r, "listening");
		return NULL;
	}
	ready(p, 0, NULL);
	for (;;) {
		struct pollfd pf[3] = {{.fd = p->stopfd, .events = POLLIN},
				       {.fd = p->lfd[0], .events = POLLIN},
				       {.fd = p->lfd[1], .events = POLLIN}};
		if (poll(pf, 3, -1) < 0 && errno != EINTR)
			break;
		if (pf[0].revents)
			break;
		for (int i = 1; i < 3; i++)
			if (pf[i].revents & POLLIN)
				accept_one(p, pf[i].fd);
	}
	/* Stop: wake every connection thread and wait for the last. */
	pthread_mutex_lock(&p->mu);
	__atomic_store_n(&p->stopping, true, __ATOMIC_RELAXED);
	for (int i = 0; i < PROXY_CONNS_MAX; i++)
		for (int k = 0; k < 2; k++)
			if (p->conn_fds[i][k] >= 0)
				shutdown(p->conn_fds[i][k], SHUT_RDWR);
	while (p->nconns)
		pthread_cond_wait(&p->cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ---- start and stop -------------------------------------------------------------- */

static char **strv_dup(const char *const *v, size_t n)
{
	char **out = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; out && i < n; i++)
		if (!(out[i] = strdup(v[i]))) {
			for (size_t k = 0; k < i; k++)
				free(out[k]);
			free(out);
			return NULL;
		}
	return out;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static void release(struct proxy *p)
{
	for (int i = 0; i < 2; i++)
		if (p->lfd[i] >= 0)
			close(p->lfd[i]);
	if (p->stopfd >= 0)
		close(p->stopfd);
	SSL_CTX_free(p->server_ctx);
	SSL_CTX_free(p->up_ctx);
	ca_free(p->ca);
	for (size_t i = 0; i < p->nsecrets; i++) {
		strv_free(p->secrets[i].hosts, p->secrets[i].nhosts);
		free(p->secrets[i].env);
	}
	strv_free(p->bypass, p->nbypass);
	if (p->vault) {
		OPENSSL_cleanse(p->vault, p->vault_len);
		munmap(p->vault, p->vault_len);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}

/* Values: one private mapping, never in a core dump, locked in RAM when allowed. */
static int vault_fill(struct proxy *p, const struct proxy_cfg *cfg, char *why, size_t wl)
{
	size_t total = 0;
	for (size_t i = 0; i < cfg->nsecrets; i++)
		total += cfg->secrets[i].value_len + 1;
	long pg = sysconf(_SC_PAGESIZE);
	p->vault_len = (total + (size_t)pg - 1) / (size_t)pg * (size_t)pg;
	if (!p->vault_len)
		p->vault_len = (size_t)pg;
	p->vault = mmap(NULL, p->vault_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			0);
	if (p->vault == MAP_FAILED) {
		p->vault = NULL;
		snprintf(why, wl, "secrets: no memory for the values");
		return -ENOMEM;
	}
	madvise(p->vault, p->vault_len, MADV_DONTDUMP);
	madvise(p->vault, p->vault_len, MADV_WIPEONFORK);
	(void)mlock(p->vault, p->vault_len); /* best effort: RLIMIT_MEMLOCK may say no */
	char *at = p->vault;
	for (size_t i = 0; i < cfg->nsecrets; i++) {
		memcpy(at, cfg->secrets[i].value, cfg->secrets[i].value_len);
		p->secrets[i].value = at;
		p->secrets[i].value_len = cfg->secrets[i].value_len;
		at += cfg->secrets[i].value_len + 1;
	}
	return 0;
}

static int check_secret(const struct proxy_secret *s, char *why, size_t wl)
{
	size_t el = s->env ? strlen(s->env) : 0;
	if (!el || el + 5 > SUBST_PLACEHOLDER_MAX) {
		snprintf(why, wl, "secrets: a secret without a usable name");
		return -EINVAL;
	}
	if (!s->value_len || s->value_len > PROXY_VALUE_MAX) {
		snprintf(why, wl, "secret %s: its value is empty or over %d bytes", s->env,
			 PROXY_VALUE_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < s->value_len; i++)
		if (s->value[i] == '\r' || s->value[i] == '\n' || s->value[i] == '\0') {
			snprintf(why, wl,
				 "secret %s: its value holds a CR, LF or NUL byte (it must fit in "
				 "one HTTP header line)",
				 s->env);
			return -EINVAL;
		}
	if (!s->nhosts) {
		snprintf(why, wl, "secret %s: no hosts", s->env);
		return -EINVAL;
	}
	return 0;
}

int proxy_start(const struct proxy_cfg *cfg, struct proxy **out, char *why, size_t wl)
{
	if (!cfg || !out || cfg->nsecrets > PROXY_SECRETS_MAX || !cfg->ca_dir) {
		snprintf(why, wl, "secrets: bad proxy configuration");
		return -EINVAL;
	}
	struct proxy *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(why, wl, "out of memory");
		return -ENOMEM;
	}
	p->cfg = *cfg;
	p->cfg.secrets = NULL;
	p->cfg.bypass = NULL;
	p->lfd[0] = p->lfd[1] = p->stopfd = -1;
	for (int i = 0; i < PROXY_CONNS_MAX; i++)
		p->conn_fds[i][0] = p->conn_fds[i][1] = -1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	int r = 0;
	for (size_t i = 0; i < cfg->nsecrets && r == 0; i++) {
		const struct proxy_secret *s = &cfg->secrets[i];
		if ((r = check_secret(s, why, wl)) < 0)
			break;
		struct secret *d = &p->secrets[i];
		snprintf(d->placeholder, sizeof(d->placeholder), "$MSB_%s", s->env);
		d->env = strdup(s->env);
		d->hosts = strv_dup(s->hosts, s->nhosts);
		if (!d->env || !d->hosts) {
			free(d->env);
			strv_free(d->hosts, s->nhosts);
			snprintf(why, wl, "out of memory");
			r = -ENOMEM;
			break;
		}
		d->nhosts = s->nhosts;
		p->nsecrets = i + 1;
	}
	if (r == 0 && cfg->nbypass && !(p->bypass = strv_dup(cfg->bypass, cfg->nbypass))) {
		snprintf(why, wl, "out of memory");
		r = -ENOMEM;
	}
	p->nbypass = p->bypass ? cfg->nbypass : 0;
	if (r == 0)
		r = vault_fill(p, cfg, why, wl);
	if (r == 0)
		r = ca_open(cfg->ca_dir, cfg->ca_label, &p->ca, why, wl);
	if (r == 0 && !(p->server_ctx = ca_server_ctx(p->ca, why, wl)))
		r = -EINVAL;
	if (r == 0 && !(p->up_ctx = upstream_ctx_new(cfg->upstream_ca_file, why, wl)))
		r = -EINVAL;
	if (r == 0 && (p->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		r = -errno;
		snprintf(why, wl, "secrets: eventfd: %s", strerror(errno));
	}
	if (r == 0) {
		r = cfg->thread_create
			    ? cfg->thread_create(cfg->thread_ctx, accept_main, p, &p->accept_tid)
			    : -pthread_create(&p->accept_tid, NULL, accept_main, p);
		if (r > 0)
			r = -r;
		if (r < 0)
			snprintf(why, wl, "secrets: the proxy's thread: %s", strerror(-r));
		p->accept_started = r == 0;
	}
	if (r == 0) {
		pthread_mutex_lock(&p->mu);
		while (!p->ready)
			pthread_cond_wait(&p->cv, &p->mu);
		r = p->ready_err;
		pthread_mutex_unlock(&p->mu);
		if (r < 0) {
			snprintf(why, wl, "secrets: the proxy: %s: %s", p->ready_why, strerror(-r));
			pthread_join(p->accept_tid, NULL);
			p->accept_started = false;
		}
	}
	if (r < 0) {
		release(p);
		return r;
	}
	*out = p;
	return 0;
}

uint16_t proxy_port(const struct proxy *p)
{
	return p->port;
}

const char *proxy_ca_path(const struct proxy *p)
{
	return ca_cert_path(p->ca);
}

void proxy_get_stats(const struct proxy *p, struct proxy_stats *out)
{
	const uint64_t *src = (const uint64_t *)&p->st;
	uint64_t *dst = (uint64_t *)out;
	for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void proxy_stop(struct proxy *p)
{
	if (!p)
		return;
	if (p->accept_started) {
		uint64_t one = 1;
		while (write(p->stopfd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
		pthread_join(p->accept_tid, NULL);
	}
	release(p);
}
