// SPDX-License-Identifier: Apache-2.0
// bench/lib/tlsecho.c -- the HTTPS server of bench/secrets: HTTP/1.1 with
// keep-alive over TLS (OpenSSL), one thread per connection, a small fixed
// answer to every request.  It checks each request's Authorization header
// against the value it was given: 200 "ok" when it carries it, 403 when not,
// so a proxy that failed to inject shows up as errors in the client.
//
//   tlsecho ADDR PORT CERT KEY AUTH
//
// ADDR is a numeric IPv4 or IPv6 address, AUTH the whole header value the
// requests must carry ("Bearer s3cr3t...").  Prints "up" once listening;
// for every line on stdin, the counters so far as one JSON line
// {"ok": N, "bad": N, "malformed": N, "conns": N}; at EOF the same, and it
// exits.  Each connection's reads and writes are bounded (30 s).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
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
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "httphead.h"

#define HEAD_MAX   16384
#define IO_TIMEOUT 30

static SSL_CTX *ctx;
static const char *want_auth;
static size_t want_len;
static unsigned long n_ok, n_bad, n_malformed, n_conns;

static const char ok_reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			       "Content-Length: 3\r\n\r\nok\n";
static const char bad_reply[] = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
				"Content-Length: 9\r\n\r\nbad auth\n";
static const char malformed_reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
				      "Connection: close\r\n\r\n";

static void die(const char *what)
{
	fprintf(stderr, "tlsecho: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void die_ssl(const char *what)
{
	fprintf(stderr, "tlsecho: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

static int write_all(SSL *ssl, const char *b, size_t len)
{
	size_t put = 0;
	return SSL_write_ex(ssl, b, len, &put) == 1 && put == len ? 0 : -1;
}

static void serve(SSL *ssl)
{
	static __thread char buf[HEAD_MAX];
	size_t have = 0;
	for (;;) {
		char *end = NULL;
		// A whole head: pipelined requests stay in buf for the next round.
		while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
			size_t got = 0;
			if (have == sizeof(buf)) {
				__atomic_fetch_add(&n_malformed, 1, __ATOMIC_RELAXED);
				write_all(ssl, malformed_reply, sizeof(malformed_reply) - 1);
				return;
			}
			if (SSL_read_ex(ssl, buf + have, sizeof(buf) - have, &got) != 1)
				return; // EOF or error: the client is done
			have += got;
		}
		end += 4;
		size_t vl = 0;
		const char *v = header(buf, end, "authorization", &vl);
		bool ok = v && vl == want_len && !memcmp(v, want_auth, vl);
		bool close_after = false;
		const char *c = header(buf, end, "connection", &vl);
		if (c && vl == 5 && !strncasecmp(c, "close", 5))
			close_after = true;
		unsigned long long body = 0;
		const char *cl = header(buf, end, "content-length", &vl);
		if (cl) {
			char tmp[24];
			char *e;
			if (vl == 0 || vl >= sizeof(tmp)) {
				__atomic_fetch_add(&n_malformed, 1, __ATOMIC_RELAXED);
				write_all(ssl, malformed_reply, sizeof(malformed_reply) - 1);
				return;
			}
			memcpy(tmp, cl, vl);
			tmp[vl] = '\0';
			body = strtoull(tmp, &e, 10);
			if (*e) {
				__atomic_fetch_add(&n_malformed, 1, __ATOMIC_RELAXED);
				write_all(ssl, malformed_reply, sizeof(malformed_reply) - 1);
				return;
			}
		}
		size_t used = (size_t)(end - buf);
		memmove(buf, end, have - used);
		have -= used;
		// Skip the body: what is buffered first, then read and drop the rest.
		while (body) {
			if (have) {
				size_t k = have < body ? have : (size_t)body;
				memmove(buf, buf + k, have - k);
				have -= k;
				body -= k;
				continue;
			}
			size_t got = 0;
			if (SSL_read_ex(ssl, buf, sizeof(buf), &got) != 1)
				return;
			have = got;
		}
		__atomic_fetch_add(ok ? &n_ok : &n_bad, 1, __ATOMIC_RELAXED);
		if (ok ? write_all(ssl, ok_reply, sizeof(ok_reply) - 1)
		       : write_all(ssl, bad_reply, sizeof(bad_reply) - 1))
			return;
		if (close_after)
			return;
	}
}

static void *conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	int one = 1;
	struct timeval tv = {.tv_sec = IO_TIMEOUT};
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	SSL *ssl = SSL_new(ctx);
	if (ssl && SSL_set_fd(ssl, fd) == 1 && SSL_accept(ssl) == 1) {
		serve(ssl);
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	close(fd);
	ERR_clear_error();
	return NULL;
}

static void *accept_main(void *arg)
{
	int lfd = (int)(intptr_t)arg;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			die("accept");
		}
		__atomic_fetch_add(&n_conns, 1, __ATOMIC_RELAXED);
		pthread_t t;
		if (pthread_create(&t, &attr, conn_main, (void *)(intptr_t)fd) != 0)
			close(fd);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: tlsecho ADDR PORT CERT KEY AUTH\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	want_auth = argv[5];
	want_len = strlen(want_auth);
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	int port = atoi(argv[2]);
	if (port <= 0 || port > 65535) {
		fprintf(stderr, "tlsecho: bad port '%s'\n", argv[2]);
		return 2;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, argv[1], &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		sl = sizeof(*s4);
	} else if (inet_pton(AF_INET6, argv[1], &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*s6);
	} else {
		fprintf(stderr, "tlsecho: bad address '%s': expected a numeric address\n", argv[1]);
		return 2;
	}

	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1)
		die_ssl("loading the certificate and key");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);

	int lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&ss, sl) < 0 || listen(lfd, 256) < 0)
		die("bind/listen");
	pthread_t t;
	if (pthread_create(&t, NULL, accept_main, (void *)(intptr_t)lfd) != 0)
		die("pthread_create");
	printf("up\n");
	fflush(stdout);
	char line[256];
	while (fgets(line, sizeof(line), stdin)) {
		// Any line: the counters so far (the driver reads them between runs).
		printf("{\"ok\": %lu, \"bad\": %lu, \"malformed\": %lu, \"conns\": %lu}\n",
		       __atomic_load_n(&n_ok, __ATOMIC_RELAXED),
		       __atomic_load_n(&n_bad, __ATOMIC_RELAXED),
		       __atomic_load_n(&n_malformed, __ATOMIC_RELAXED),
		       __atomic_load_n(&n_conns, __ATOMIC_RELAXED));
		fflush(stdout);
	}
	printf("{\"ok\": %lu, \"bad\": %lu, \"malformed\": %lu, \"conns\": %lu}\n", n_ok, n_bad,
	       n_malformed, n_conns);
	return 0;
}
