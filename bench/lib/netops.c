// SPDX-License-Identifier: Apache-2.0
// bench/lib/netops.c -- the timed network operations of bench/net, built
// static so the same binary runs on the host, in the "world" namespace and
// inside a guest.
//
//   netops sink ADDR PORT            accept forever; read each connection to
//                                    EOF on its own thread (throughput and
//                                    connection-rate server)
//   netops send HOST PORT MIB        one connection, MIB MiB in 128 KiB
//                                    writes, then shutdown and wait for EOF
//                                    -> "send MIB MiB SECONDS s MIBPS MiB/s"
//   netops connect HOST PORT N       N connections one after another, each
//                                    connect + close
//                                    -> "connect N conns SECONDS s RATE conn/s"
//   netops dns SERVER NAME N         N A queries over UDP, one at a time
//                                    -> "dns N queries P50 us P90 us"
//
// HOST is a numeric IPv4 or IPv6 address.  Every wait is bounded (10 s per
// I/O step): a blocked path fails with a message instead of hanging.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 10000
#define CHUNK	      (128 * 1024)

static void die(const char *what)
{
	fprintf(stderr, "netops: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static socklen_t parse_addr(const char *host, const char *port, struct sockaddr_storage *ss)
{
	char *end;
	long p = strtol(port, &end, 10);
	if (*end || p <= 0 || p > 65535) {
		fprintf(stderr, "netops: bad port '%s': expected 1-65535\n", port);
		exit(2);
	}
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)p);
		return sizeof(*s4);
	}
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)p);
		return sizeof(*s6);
	}
	fprintf(stderr, "netops: bad address '%s': expected a numeric IPv4 or IPv6 address\n",
		host);
	exit(2);
}

static void wait_fd(int fd, short ev, const char *what)
{
	struct pollfd pfd = {.fd = fd, .events = ev};
	int r = poll(&pfd, 1, IO_TIMEOUT_MS);
	if (r == 0) {
		fprintf(stderr, "netops: %s: no progress in %d ms\n", what, IO_TIMEOUT_MS);
		exit(1);
	}
	if (r < 0)
		die(what);
}

static int dial(const struct sockaddr_storage *ss, socklen_t len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		die("socket");
	if (connect(fd, (const struct sockaddr *)ss, len) < 0) {
		if (errno != EINPROGRESS)
			die("connect");
		wait_fd(fd, POLLOUT, "connect");
		int err = 0;
		socklen_t el = sizeof(err);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			errno = err;
			die("connect");
		}
	}
	return fd;
}

static void *drain(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char *buf = malloc(CHUNK);
	for (; buf;) {
		ssize_t n = read(fd, buf, CHUNK);
		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		break;
	}
	free(buf);
	close(fd);
	return NULL;
}

__attribute__((noreturn)) static void cmd_sink(const char *host, const char *port)
{
	struct sockaddr_storage ss;
	socklen_t len = parse_addr(host, port, &ss);
	int ls = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (ls < 0)
		die("socket");
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&ss, len) < 0)
		die("bind");
	if (listen(ls, 1024) < 0)
		die("listen");
	printf("up\n");
	fflush(stdout);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (;;) {
		int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			die("accept");
		}
		pthread_t t;
		if (pthread_create(&t, &attr, drain, (void *)(intptr_t)fd) != 0)
			close(fd);
	}
}

static long parse_count(const char *s, long max)
{
	char *end;
	long n = strtol(s, &end, 10);
	if (*end || n <= 0 || n > max) {
		fprintf(stderr, "netops: bad count '%s': expected 1-%ld\n", s, max);
		exit(2);
	}
	return n;
}

static int cmd_send(const char *host, const char *port, const char *mib)
{
	struct sockaddr_storage ss;
	socklen_t len = parse_addr(host, port, &ss);
	long total = parse_count(mib, 1L << 20) << 20;
	static char buf[CHUNK];
	memset(buf, 'x', sizeof(buf));
	double t0 = now();
	int fd = dial(&ss, len);
	long sent = 0;
	while (sent < total) {
		size_t want = (size_t)(total - sent < CHUNK ? total - sent : CHUNK);
		ssize_t n = write(fd, buf, want);
		if (n < 0) {
			if (errno == EAGAIN) {
				wait_fd(fd, POLLOUT, "send");
				continue;
			}
			if (errno == EINTR)
				continue;
			die("send");
		}
		sent += n;
	}
	// The bytes count once the receiver has them all: its EOF after ours.
	shutdown(fd, SHUT_WR);
	for (;;) {
		wait_fd(fd, POLLIN, "waiting for the receiver's close");
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
	}
	double s = now() - t0;
	close(fd);
	printf("send %ld MiB %.6f s %.2f MiB/s\n", total >> 20, s, (double)(total >> 20) / s);
	return 0;
}

static int cmd_connect(const char *host, const char *port, const char *count)
{
	struct sockaddr_storage ss;
	socklen_t len = parse_addr(host, port, &ss);
	long n = parse_count(count, 1000000);
	double t0 = now();
	for (long i = 0; i < n; i++) {
		int fd = dial(&ss, len);
		// RST on close: no TIME_WAIT pile-up over thousands of connections.
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
	}
	double s = now() - t0;
	printf("connect %ld conns %.6f s %.1f conn/s\n", n, s, (double)n / s);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int cmd_dns(const char *server, const char *name, const char *count)
{
	struct sockaddr_storage ss;
	socklen_t len = parse_addr(server, "53", &ss);
	long n = parse_count(count, 100000);
	uint8_t q[300], r[1500];
	size_t ql = 12;
	memset(q, 0, sizeof(q));
	q[2] = 0x01; // RD
	q[5] = 1;    // QDCOUNT
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		if (l == 0 || l > 63 || ql + l + 6 > sizeof(q)) {
			fprintf(stderr, "netops: bad name '%s': expected a host name\n", name);
			return 2;
		}
		q[ql++] = (uint8_t)l;
		memcpy(q + ql, p, l);
		ql += l;
		p += l + (dot ? 1 : 0);
		if (!dot)
			break;
	}
	q[ql++] = 0;
	q[ql++] = 0, q[ql++] = 1; // A
	q[ql++] = 0, q[ql++] = 1; // IN
	int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&ss, len) < 0)
		die("connect");
	double *lat = calloc((size_t)n, sizeof(double));
	if (!lat)
		die("calloc");
	for (long i = 0; i < n; i++) {
		q[0] = (uint8_t)(i >> 8), q[1] = (uint8_t)i;
		double t0 = now();
		if (send(fd, q, ql, 0) < 0)
			die("send");
		for (;;) {
			wait_fd(fd, POLLIN, "dns answer");
			ssize_t got = recv(fd, r, sizeof(r), 0);
			if (got < 0)
				die("recv");
			if (got >= 12 && r[0] == q[0] && r[1] == q[1])
				break;
		}
		lat[i] = (now() - t0) * 1e6;
	}
	qsort(lat, (size_t)n, sizeof(double), cmp_double);
	printf("dns %ld queries %.1f us %.1f us\n", n, lat[n / 2], lat[(n * 9) / 10]);
	free(lat);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "sink") == 0)
		cmd_sink(argv[2], argv[3]);
	if (argc == 5 && strcmp(argv[1], "send") == 0)
		return cmd_send(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "connect") == 0)
		return cmd_connect(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "dns") == 0)
		return cmd_dns(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: netops sink ADDR PORT | send HOST PORT MIB | "
			"connect HOST PORT N | dns SERVER NAME N\n");
	return 2;
}
