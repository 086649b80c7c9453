/* SPDX-License-Identifier: Apache-2.0 */
/*
 * openlat DIR N: open(2)+close(2) of DIR/f0..f999 (made by `fsops DIR setup
 * 1000`), N times, timing each open and noting whether the caller ended on
 * another CPU than it started on.  Prints percentiles and the mean of the
 * opens that moved and of those that did not (docs/performance.md, "Shares").
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int n = argc == 3 ? atoi(argv[2]) : 0;
	if (n <= 0) {
		fprintf(stderr, "usage: openlat DIR N (N > 0; DIR made by fsops DIR setup 1000)\n");
		return 2;
	}
	int dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	double *lat = malloc((size_t)n * sizeof(*lat));
	if (dfd < 0 || !lat) {
		perror(argv[1]);
		return 1;
	}
	double sum[2] = {0, 0};
	int count[2] = {0, 0};
	for (int i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "f%d", i % 1000);
		int cpu = sched_getcpu();
		double t = now_us();
		int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
		lat[i] = now_us() - t;
		if (fd < 0) {
			perror(name);
			return 1;
		}
		close(fd);
		int moved = sched_getcpu() != cpu;
		sum[moved] += lat[i];
		count[moved]++;
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp);
	printf("p10 %.1f p50 %.1f p90 %.1f p99 %.1f us | moved %d mean %.1f us, stayed %d mean "
	       "%.1f "
	       "us\n",
	       lat[n / 10], lat[n / 2], lat[n * 9 / 10], lat[n * 99 / 100], count[1],
	       count[1] ? sum[1] / count[1] : 0, count[0], count[0] ? sum[0] / count[0] : 0);
	return 0;
}
