/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE over io_uring for msb-fusemount (Linux 6.14+, fuse.enable_uring=1):
 * one queue per possible CPU, each served by its own thread pinned to that
 * CPU, so a request is answered on the CPU that sent it.  See fusering.c.
 */
#ifndef MSB_TESTS_FUSERING_H
#define MSB_TESTS_FUSERING_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <msb/msb-plugin.h>

/* FUSE_OVER_IO_URING (1ULL << 41) as a bit of fuse_init_in/out.flags2 (ABI 7.42). */
#define FM_FUSE_OVER_IO_URING_FLAGS2 (1u << 9)

struct fm_rings;

struct fm_ring_hooks {
	void *ctx;
	/* A protocol anomaly (counted by the caller, who exits 4). */
	void (*anomaly)(void *ctx, const char *msg);
	/* A line for --verbose; NULL when quiet. */
	void (*verbose)(void *ctx, const char *msg);
};

/*
 * Before the mount: start one thread per possible CPU, each with its ring
 * and buffers, waiting for fm_rings_go.  0, or -errno with a reason in why
 * (the caller then serves through /dev/fuse alone and must not offer
 * FUSE_OVER_IO_URING to the kernel).
 */
int fm_rings_prepare(int fuse_fd, const struct msb_fs_server *srv,
		     const struct fm_ring_hooks *hooks, struct fm_rings **out, char *why,
		     size_t whylen);

/*
 * After the kernel accepted FUSE_OVER_IO_URING in INIT: register every
 * queue's entries and wait for the outcome.  0 once all are registered (the
 * kernel then sends requests through the rings); -errno with a reason if a
 * registration failed (the kernel then goes on through /dev/fuse).
 */
int fm_rings_go(struct fm_rings *r, char *why, size_t whylen);

/* The number of queues (possible CPUs). */
unsigned fm_rings_count(const struct fm_rings *r);

/*
 * Stop every ring thread (signal: one that waits is woken with SIGUSR1,
 * which the caller has made interrupt system calls) and free everything.
 */
void fm_rings_stop(struct fm_rings *r);

/*
 * Join a thread that may be blocked in a system call: call nudge(arg) (if
 * any), send it SIGUSR1 (which the caller has made interrupt system calls),
 * and wait 50 ms for it, until it has exited.
 */
void fm_join_poking(pthread_t thread, void (*nudge)(void *), void *arg);

#endif
