/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fsops: one file-system microbenchmark row, timed in C so the caller's
 * interpreter does not blur the figures (bench/storage builds it static so the
 * same binary runs on the host and inside a guest).
 *
 *   fsops DIR setup N          create N empty files DIR/f<i>
 *   fsops DIR stat N ROUNDS    stat(2) each of the N files, ROUNDS times
 *   fsops DIR open N ROUNDS    open(2)+close(2) each of the N files, ROUNDS times
 *   fsops DIR create N         create+close+unlink N new files
 *   fsops DIR write MIB        write DIR/big (MIB MiB, 1 MiB writes), fsync, close
 *   fsops DIR read MIB         read DIR/big in 1 MiB reads
 *
 * Prints one line: "<op> <count> <seconds> <microseconds per op or MiB/s>".
 * Exits nonzero with a one-line error on any failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "fsops: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

static long arg(const char *s, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v <= 0 || v > 100000000) {
		fprintf(stderr, "fsops: %s '%s' (expected a positive integer)\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: fsops DIR setup|stat|open|create|write|read N [ROUNDS]\n");
		return 2;
	}
	const char *dir = argv[1], *op = argv[2];
	long n = arg(argv[3], "count");
	long rounds = argc > 4 ? arg(argv[4], "rounds") : 1;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		die("open", dir);
	char name[64];
	double t0, t;
	if (strcmp(op, "setup") == 0) {
		for (long i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "f%ld", i);
			int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
			if (fd < 0)
				die("create", name);
			close(fd);
		}
		printf("setup %ld 0 0\n", n);
		return 0;
	}
	if (strcmp(op, "stat") == 0 || strcmp(op, "open") == 0) {
		int do_open = op[0] == 'o';
		struct stat st;
		t0 = now();
		for (long r = 0; r < rounds; r++)
			for (long i = 0; i < n; i++) {
				snprintf(name, sizeof(name), "f%ld", i);
				if (do_open) {
					int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
					if (fd < 0)
						die("open", name);
					close(fd);
				} else if (fstatat(dfd, name, &st, 0) < 0) {
					die("stat", name);
				}
			}
		t = now() - t0;
		printf("%s %ld %.6f %.3f\n", op, n * rounds, t, t * 1e6 / (double)(n * rounds));
		return 0;
	}
	if (strcmp(op, "create") == 0) {
		t0 = now();
		for (long i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "c%ld", i);
			int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			if (fd < 0)
				die("create", name);
			close(fd);
			if (unlinkat(dfd, name, 0) < 0)
				die("unlink", name);
		}
		t = now() - t0;
		printf("create %ld %.6f %.3f\n", n, t, t * 1e6 / (double)n);
		return 0;
	}
	if (strcmp(op, "write") == 0 || strcmp(op, "read") == 0) {
		int wr = op[0] == 'w';
		char *buf = aligned_alloc(4096, CHUNK);
		if (!buf)
			die("allocate", "buffer");
		memset(buf, 0x5a, CHUNK);
		int fd = openat(
			dfd, "big",
			wr ? O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC : O_RDONLY | O_CLOEXEC, 0644);
		if (fd < 0)
			die("open", "big");
		t0 = now();
		for (long i = 0; i < n; i++) {
			size_t done = 0;
			while (done < CHUNK) {
				ssize_t k = wr ? write(fd, buf + done, CHUNK - done)
					       : read(fd, buf + done, CHUNK - done);
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0)
					die(op, "big");
				if (k == 0) {
					fprintf(stderr, "fsops: big is shorter than %ld MiB\n", n);
					return 1;
				}
				done += (size_t)k;
			}
		}
		if (wr && fsync(fd) < 0)
			die("fsync", "big");
		close(fd);
		t = now() - t0;
		printf("%s %ld %.6f %.1f\n", op, n, t, (double)n / t);
		free(buf);
		return 0;
	}
	fprintf(stderr,
		"fsops: unknown operation '%s' (expected setup, stat, open, create, write "
		"or read)\n",
		op);
	return 2;
}
