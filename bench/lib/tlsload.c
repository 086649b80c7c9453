// SPDX-License-Identifier: Apache-2.0
// bench/lib/tlsload.c -- the HTTPS load client of bench/secrets: HTTP/1.1
// GETs over TLS (OpenSSL), each connection on its own thread, every request
// timed from the write of its head to the last byte of its answer.
//
//   tlsload [--fresh] ADDR PORT NAME CA AUTH REQUESTS CONNS
//
// Opens CONNS connections to ADDR:PORT (numeric IPv4 or IPv6), TLS with SNI
// NAME verified against CA for NAME, and sends one untimed request on each;
// then, all together, REQUESTS keep-alive requests spread over them
// ("GET /r/I", "Host: NAME", "Authorization: AUTH").  With --fresh every
// request is a connection of its own instead (connect + handshake + request
// + close, all timed).  An answer other than 200 is an error; a connection
// that fails is opened again.  Prints one JSON line:
//   {"mode", "requests", "conns", "seconds", "rps", "p50_us", "p90_us",
//    "p99_us", "max_us", "ok", "errors", "reconnects", "first_error"}
// where ok counts the requests answered 200 (the latency samples), rps
// those over the timed span, errors
// every request (or untimed first one) without a 200, reconnects the
// keep-alive connections opened again after a failure or a close.
// Every wait is bounded (10 s per I/O step).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "httphead.h"
#include <openssl/x509v3.h>

#define IO_TIMEOUT 10
#define BUF	   16384
#define MAX_FAILS  5 /* opens in a row that fail before a thread gives up */

static struct {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	const char *name, *auth;
	long requests;
	int conns;
	bool fresh;
} opt;

static SSL_CTX *ctx;
static uint64_t *lat; /* ns per request; 0: no answer */
static long next_req, n_errors, n_reconnects;
static pthread_barrier_t start;
static pthread_mutex_t err_mu = PTHREAD_MUTEX_INITIALIZER;
static char first_error[256];

struct conn {
	int fd;
	SSL *ssl;
	char buf[BUF];
	size_t have;
};

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// Count an error; the first one's "WHAT: DETAIL" (or WHAT) is reported.
static void error_note(const char *what, const char *detail)
{
	__atomic_fetch_add(&n_errors, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&err_mu);
	if (!first_error[0])
		snprintf(first_error, sizeof(first_error), "%s%s%s", what, detail ? ": " : "",
			 detail ? detail : "");
	pthread_mutex_unlock(&err_mu);
}

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
	c->have = 0;
	ERR_clear_error();
}

static int conn_open(struct conn *c)
{
	char why[160];
	c->have = 0;
	c->fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		error_note("socket", strerror(errno));
		return -1;
	}
	int one = 1;
	struct timeval tv = {.tv_sec = IO_TIMEOUT};
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(c->fd, (struct sockaddr *)&opt.addr, opt.addr_len) < 0) {
		error_note("connect", strerror(errno));
		conn_close(c);
		return -1;
	}
	c->ssl = SSL_new(ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 ||
	    SSL_set_tlsext_host_name(c->ssl, opt.name) != 1 ||
	    SSL_set1_host(c->ssl, opt.name) != 1) {
		error_note("SSL_new", NULL);
		conn_close(c);
		return -1;
	}
	if (SSL_connect(c->ssl) != 1) {
		long v = SSL_get_verify_result(c->ssl);
		unsigned long e = ERR_peek_last_error();
		if (v != X509_V_OK)
			snprintf(why, sizeof(why), "certificate: %s",
				 X509_verify_cert_error_string(v));
		else
			snprintf(why, sizeof(why), "%s",
				 e ? ERR_reason_error_string(e) : strerror(errno));
		error_note("TLS handshake", why);
		conn_close(c);
		return -1;
	}
	return 0;
}

static int fill(struct conn *c)
{
	size_t got = 0;
	if (c->have == sizeof(c->buf))
		return -1;
	if (SSL_read_ex(c->ssl, c->buf + c->have, sizeof(c->buf) - c->have, &got) != 1)
		return -1;
	c->have += got;
	return 0;
}

/*
 * One request and its answer.  Returns the status (> 0), or -1 when the
 * connection failed (it is closed then).  *keep is false when the answer
 * said the connection ends.
 */
static int request(struct conn *c, long i, bool close_after, bool *keep)
{
	char req[1024];
	int n = snprintf(req, sizeof(req),
			 "GET /r/%ld HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n%s\r\n", i,
			 opt.name, opt.auth, close_after ? "Connection: close\r\n" : "");
	size_t put = 0;
	if (n <= 0 || (size_t)n >= sizeof(req) || SSL_write_ex(c->ssl, req, (size_t)n, &put) != 1 ||
	    put != (size_t)n) {
		error_note("write", strerror(errno));
		conn_close(c);
		return -1;
	}
	char *end;
	while (!(end = memmem(c->buf, c->have, "\r\n\r\n", 4)))
		if (fill(c) < 0) {
			error_note("read", c->have ? "a truncated answer" : "closed");
			conn_close(c);
			return -1;
		}
	end += 4;
	int status = 0;
	if (c->have < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0 ||
	    sscanf(c->buf + 8, " %d", &status) != 1 || status < 100) {
		error_note("a malformed status line", NULL);
		conn_close(c);
		return -1;
	}
	size_t vl = 0;
	const char *v = header(c->buf, end, "content-length", &vl);
	size_t body = v ? strtoul(v, NULL, 10) : 0;
	v = header(c->buf, end, "connection", &vl);
	*keep = !(v && vl == 5 && !strncasecmp(v, "close", 5));
	size_t need = (size_t)(end - c->buf) + body;
	if (need > sizeof(c->buf)) {
		error_note("an answer larger than the buffer", NULL);
		conn_close(c);
		return -1;
	}
	while (c->have < need)
		if (fill(c) < 0) {
			error_note("read body", "closed");
			conn_close(c);
			return -1;
		}
	memmove(c->buf, c->buf + need, c->have - need);
	c->have -= need;
	return status;
}

// A status other than 200 is an error; a timed request (I >= 0) leaves the samples.
static void count_status(int status, long i)
{
	if (status != 200) {
		char s[16];
		snprintf(s, sizeof(s), "%d", status);
		error_note("HTTP status", s);
		if (i >= 0)
			lat[i] = 0;
	}
}

static void *worker(void *arg)
{
	(void)arg;
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		error_note("out of memory", NULL);
		pthread_barrier_wait(&start);
		return NULL;
	}
	c->fd = -1;
	bool keep = true;
	// Untimed: the connection and one request on it (a fresh one with --fresh).
	if (conn_open(c) == 0) {
		int status = request(c, -1, opt.fresh, &keep);
		if (status > 0)
			count_status(status, -1);
		if (status > 0 && (!keep || opt.fresh))
			conn_close(c);
	}
	pthread_barrier_wait(&start);
	int fails = 0;
	for (;;) {
		long i = __atomic_fetch_add(&next_req, 1, __ATOMIC_RELAXED);
		if (i >= opt.requests)
			break;
		uint64_t t0 = now_ns();
		if (c->fd < 0) {
			if (!opt.fresh)
				__atomic_fetch_add(&n_reconnects, 1, __ATOMIC_RELAXED);
			if (conn_open(c) < 0) {
				if (++fails >= MAX_FAILS)
					break;
				continue;
			}
			fails = 0;
		}
		int status = request(c, i, opt.fresh, &keep);
		if (status < 0)
			continue;
		lat[i] = now_ns() - t0;
		count_status(status, i);
		if (!keep || opt.fresh)
			conn_close(c);
	}
	conn_close(c);
	free(c);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

// Nearest rank: the smallest sample with at least p of them at or below it.
static double pct_us(const uint64_t *s, size_t n, double p)
{
	if (!n)
		return -1;
	size_t k = (size_t)(p * (double)n + 0.999999);
	if (k < 1)
		k = 1;
	return (double)s[(k > n ? n : k) - 1] / 1000.0;
}

static void usage(void)
{
	fprintf(stderr, "usage: tlsload [--fresh] ADDR PORT NAME CA AUTH REQUESTS CONNS\n");
	exit(2);
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {{"fresh", no_argument, NULL, 'f'}, {0}};
	int o;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (o != 'f')
			usage();
		opt.fresh = true;
	}
	if (argc - optind != 7)
		usage();
	char **a = argv + optind;
	int port = atoi(a[1]);
	opt.name = a[2];
	opt.auth = a[4];
	opt.requests = atol(a[5]);
	opt.conns = atoi(a[6]);
	if (port <= 0 || port > 65535 || opt.requests <= 0 || opt.conns <= 0 || opt.conns > 1024)
		usage();
	struct sockaddr_in *s4 = (struct sockaddr_in *)&opt.addr;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&opt.addr;
	if (inet_pton(AF_INET, a[0], &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		opt.addr_len = sizeof(*s4);
	} else if (inet_pton(AF_INET6, a[0], &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		opt.addr_len = sizeof(*s6);
	} else {
		fprintf(stderr, "tlsload: bad address '%s': expected a numeric address\n", a[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_load_verify_locations(ctx, a[3], NULL) != 1) {
		fprintf(stderr, "tlsload: cannot load the CA file %s\n", a[3]);
		ERR_print_errors_fp(stderr);
		return 1;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	// No resumption: with --fresh every connection is a full handshake.
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	lat = calloc((size_t)opt.requests, sizeof(*lat));
	pthread_t *t = calloc((size_t)opt.conns, sizeof(*t));
	if (!lat || !t) {
		fprintf(stderr, "tlsload: out of memory\n");
		return 1;
	}
	pthread_barrier_init(&start, NULL, (unsigned)opt.conns + 1);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	for (int i = 0; i < opt.conns; i++)
		if (pthread_create(&t[i], &attr, worker, NULL) != 0) {
			fprintf(stderr, "tlsload: pthread_create failed\n");
			return 1;
		}
	pthread_barrier_wait(&start);
	uint64_t t0 = now_ns();
	for (int i = 0; i < opt.conns; i++)
		pthread_join(t[i], NULL);
	double secs = (double)(now_ns() - t0) / 1e9;

	size_t n = 0;
	for (long i = 0; i < opt.requests; i++)
		if (lat[i])
			lat[n++] = lat[i];
	// Requests never answered (their thread gave up) are errors too.
	long claimed = __atomic_load_n(&next_req, __ATOMIC_RELAXED);
	if (claimed < opt.requests)
		n_errors += opt.requests - claimed;
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("{\"mode\": \"%s\", \"requests\": %ld, \"conns\": %d, \"seconds\": %.6f, "
	       "\"rps\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
	       "\"max_us\": %.1f, \"ok\": %zu, \"errors\": %ld, \"reconnects\": %ld, "
	       "\"first_error\": ",
	       opt.fresh ? "fresh" : "keepalive", opt.requests, opt.conns, secs, (double)n / secs,
	       pct_us(lat, n, 0.50), pct_us(lat, n, 0.90), pct_us(lat, n, 0.99),
	       n ? (double)lat[n - 1] / 1000.0 : -1, n, n_errors, n_reconnects);
	json_string(first_error);
	printf("}\n");
	return 0;
}
