/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a thread class's seccomp filter (core/seccomp-filters.c) costs per
 * system call: a thread of each class, and one with no filter, times the
 * call a vCPU thread makes at every exit (ioctl KVM_RUN, here on /dev/null:
 * ENOTTY, so only the entry, the filter and the return are timed) and one
 * every thread makes (read of one byte, at end of file).  Built by bench/seccomp.
 *
 *   seccompcost [CALLS] [ROUNDS]  ->  "CLASS CALL ns/call" lines, medians
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb-plugin.h>

#include "seccomp-filters.h"

static long calls = 200000;
static int rounds = 31;
static int devnull = -1;

#define NCLS 5
static const int classes[NCLS] = {0, MSB_THREAD_VCPU, MSB_THREAD_VMM, MSB_THREAD_IO,
				  MSB_THREAD_PROXY};

struct job {
	int thread_class; /* 0: no filter */
	double ioctl_ns, read_ns;
	int err;
};

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[n / 2];
}

/* One round for one class: a fresh thread, its filter, then the two timed loops. */
static void *run(void *arg)
{
	struct job *j = arg;
	char why[200], b;
	if (j->thread_class &&
	    (j->err = msb_seccomp_enter(j->thread_class, why, sizeof(why))) < 0) {
		fprintf(stderr, "seccompcost: %s\n", why);
		return NULL;
	}
	double t0 = now_ns();
	for (long i = 0; i < calls; i++)
		(void)ioctl(devnull, KVM_RUN, 0);
	double t1 = now_ns();
	for (long i = 0; i < calls; i++)
		(void)!read(devnull, &b, 1);
	double t2 = now_ns();
	j->ioctl_ns = (t1 - t0) / (double)calls;
	j->read_ns = (t2 - t1) / (double)calls;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		calls = atol(argv[1]);
	if (argc > 2)
		rounds = atoi(argv[2]);
	if (calls <= 0 || rounds <= 0 || rounds > 64) {
		fprintf(stderr, "usage: seccompcost [CALLS > 0] [ROUNDS 1..64]\n");
		return 2;
	}
	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0) {
		perror("seccompcost: /dev/null");
		return 1;
	}
	/* One CPU for every thread, so no class gains or loses by where it ran. */
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu() < 0 ? 0 : sched_getcpu(), &one);
	sched_setaffinity(0, sizeof(one), &one);
	double io[NCLS][64], rd[NCLS][64];
	for (int r = 0; r < rounds; r++) {
		/* Every class each round, the order rotating, so drift hits all alike. */
		for (int k = 0; k < NCLS; k++) {
			int c = (k + r) % NCLS;
			struct job j = {.thread_class = classes[c]};
			pthread_t t;
			if (pthread_create(&t, NULL, run, &j) != 0 || pthread_join(t, NULL) != 0 ||
			    j.err)
				return 1;
			io[c][r] = j.ioctl_ns;
			rd[c][r] = j.read_ns;
		}
	}
	for (int c = 0; c < NCLS; c++) {
		const char *name = classes[c] ? msb_seccomp_class_name(classes[c]) : "none";
		printf("%s ioctl-KVM_RUN %.1f\n%s read %.1f\n", name, median(io[c], rounds), name,
		       median(rd[c], rounds));
	}
	return 0;
}
