/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest's side of a virtio-mmio device, for the device unit tests
 * (test_virtio_net.c, test_virtio_fs.c): fake guest RAM, a fake host (log,
 * errors, plain threads), the driver's initialisation through the mmio
 * registers, chains put in the available ring, kicks as the VMM thread
 * delivers them (ops->notify), and waits on the used ring and the irqfd.
 * One device at a time, in `dev`.  Include once, after cmocka.h; define
 * VD_NAME (the log prefix) first.
 */
#ifndef MSB_TEST_VDRIVER_H
#define MSB_TEST_VDRIVER_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "virtio/mmio.h"
#include "vm.h"

#ifndef VD_NAME
#define VD_NAME "dev"
#endif
#define VD_QUEUES 2

/* Guest RAM layout. */
#define MEM	   (4u << 20)
#define QSIZE	   32
#define RING(q)	   (0x10000u + (q)*0x4000u) /* desc; avail +0x1000; used +0x2000 */
#define DATA_START 0x100000u

/* virtio-mmio registers (4.2.2) and status bits (2.1). */
#define R_DEVICE_ID	      0x008
#define R_DEVICE_FEATURES     0x010
#define R_DEVICE_FEATURES_SEL 0x014
#define R_DRIVER_FEATURES     0x020
#define R_DRIVER_FEATURES_SEL 0x024
#define R_QUEUE_SEL	      0x030
#define R_QUEUE_NUM	      0x038
#define R_QUEUE_READY	      0x044
#define R_STATUS	      0x070
#define R_QUEUE_DESC_LOW      0x080
#define R_QUEUE_DESC_HIGH     0x084
#define R_QUEUE_DRIVER_LOW    0x090
#define R_QUEUE_DRIVER_HIGH   0x094
#define R_QUEUE_DEVICE_LOW    0x0a0
#define R_QUEUE_DEVICE_HIGH   0x0a4
#define R_CONFIG	      0x100
#define S_ACK		      1
#define S_DRIVER	      2
#define S_DRIVER_OK	      4
#define S_FEATURES_OK	      8
#define S_NEEDS_RESET	      64

/* Descriptor flags (2.7.5). */
#define D_NEXT	1
#define D_WRITE 2

/* The device and its fake guest. */
static uint8_t *ram;
static struct vm vm;
static struct vdev *dev;
static uint64_t next_data;

struct drvq {
	uint16_t next_desc;
	uint16_t avail_idx;
};
static struct drvq dq[VD_QUEUES];

/* mmio.c wires kicks to the VMM loop in vdev_attach, which these tests never call. */
int vm_watch(struct vm *v, int fd, uint32_t epoll_events, vm_event_cb cb, void *arg)
{
	(void)v, (void)fd, (void)epoll_events, (void)cb, (void)arg;
	return -ENOSYS;
}

static void host_log(const struct msb_host *h, int level, const char *fmt, ...)
{
	(void)h, (void)level;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "[%s] ", VD_NAME);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static int host_error_set(const struct msb_host *h, struct msb_error *err, int code,
			  const char *fmt, ...)
{
	(void)h;
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
		err->code = code;
	}
	return code;
}

static int host_thread_create(const struct msb_host *h, int cls, const char *name,
			      void *(*fn)(void *), void *arg, unsigned long *tid)
{
	(void)h, (void)name;
	assert_int_equal(cls, MSB_THREAD_IO);
	pthread_t t;
	int r = pthread_create(&t, NULL, fn, arg);
	if (r)
		return -r;
	*tid = (unsigned long)t;
	return 0;
}

static const struct msb_host host = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_host),
	.log = host_log,
	.error_set = host_error_set,
	.thread_create = host_thread_create,
};

/* Fresh zeroed guest RAM and a VM around it, for the device to be made on. */
static int vd_ram_new(void)
{
	ram = calloc(1, MEM);
	if (!ram)
		return -1;
	memset(&vm, 0, sizeof(vm));
	vm.host = &host;
	gmem_layout(&vm.mem, ram, MEM);
	next_data = DATA_START;
	memset(dq, 0, sizeof(dq));
	return 0;
}

/* What vdev_attach would do, less KVM: the VM (for its RAM) and an interrupt to watch. */
static int vd_attach(void)
{
	dev->vm = &vm;
	dev->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return dev->irqfd < 0 ? -1 : 0;
}

/* Free the device (its ops->free stops its threads; the transport closes the irqfd), then RAM. */
static int vd_free(void)
{
	if (dev)
		vdev_free(dev);
	dev = NULL;
	free(ram);
	ram = NULL;
	return 0;
}

static uint32_t mmio_r(uint64_t off)
{
	uint32_t v;
	vdev_mmio(dev, off, (uint8_t *)&v, 4, false);
	return v;
}

static void mmio_w(uint64_t off, uint32_t v)
{
	vdev_mmio(dev, off, (uint8_t *)&v, 4, true);
}

/* The driver's side of initialisation (3.1.1), with `features` asked for and nq queues. */
static void driver_init_queues(uint64_t features, unsigned nq)
{
	assert_true(nq <= VD_QUEUES);
	mmio_w(R_STATUS, 0);
	memset(ram + RING(0), 0, 0x4000u * nq);
	memset(dq, 0, sizeof(dq));
	mmio_w(R_STATUS, S_ACK | S_DRIVER);
	mmio_w(R_DEVICE_FEATURES_SEL, 0);
	uint64_t offered = mmio_r(R_DEVICE_FEATURES);
	mmio_w(R_DEVICE_FEATURES_SEL, 1);
	offered |= (uint64_t)mmio_r(R_DEVICE_FEATURES) << 32;
	features |= 1ull << 32; /* VIRTIO_F_VERSION_1 */
	assert_true((offered & features) == features);
	mmio_w(R_DRIVER_FEATURES_SEL, 0);
	mmio_w(R_DRIVER_FEATURES, (uint32_t)features);
	mmio_w(R_DRIVER_FEATURES_SEL, 1);
	mmio_w(R_DRIVER_FEATURES, (uint32_t)(features >> 32));
	mmio_w(R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
	assert_true(mmio_r(R_STATUS) & S_FEATURES_OK);
	for (unsigned q = 0; q < nq; q++) {
		mmio_w(R_QUEUE_SEL, q);
		mmio_w(R_QUEUE_NUM, QSIZE);
		mmio_w(R_QUEUE_DESC_LOW, RING(q));
		mmio_w(R_QUEUE_DESC_HIGH, 0);
		mmio_w(R_QUEUE_DRIVER_LOW, RING(q) + 0x1000);
		mmio_w(R_QUEUE_DRIVER_HIGH, 0);
		mmio_w(R_QUEUE_DEVICE_LOW, RING(q) + 0x2000);
		mmio_w(R_QUEUE_DEVICE_HIGH, 0);
		mmio_w(R_QUEUE_READY, 1);
		assert_int_equal(mmio_r(R_QUEUE_READY), 1);
	}
	mmio_w(R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
}

static uint64_t galloc(size_t len)
{
	uint64_t gpa = next_data;
	next_data = (next_data + len + 63) & ~63ull;
	assert_true(next_data <= MEM);
	return gpa;
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

/* Put a chain in queue q's available ring; returns its head. */
static uint16_t add_chain(unsigned q, const struct seg *segs, unsigned n)
{
	uint8_t *table = ram + RING(q);
	uint16_t head = dq[q].next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t idx = dq[q].next_desc;
		dq[q].next_desc = (uint16_t)((idx + 1) % QSIZE);
		uint16_t flags =
			(uint16_t)((segs[i].write ? D_WRITE : 0) | (i + 1 < n ? D_NEXT : 0));
		uint16_t next = dq[q].next_desc;
		uint8_t *d = table + 16 * idx;
		memcpy(d, &segs[i].gpa, 8);
		memcpy(d + 8, &segs[i].len, 4);
		memcpy(d + 12, &flags, 2);
		memcpy(d + 14, &next, 2);
	}
	uint8_t *avail = ram + RING(q) + 0x1000;
	memcpy(avail + 4 + 2 * (dq[q].avail_idx % QSIZE), &head, 2);
	dq[q].avail_idx++;
	__atomic_store((uint16_t *)(avail + 2), &dq[q].avail_idx, __ATOMIC_RELEASE);
	return head;
}

static void kick(unsigned q)
{
	dev->ops->notify(dev, q); /* what the VMM thread does on a queue's ioeventfd */
}

static uint16_t used_idx(unsigned q)
{
	uint16_t v;
	__atomic_load((uint16_t *)(ram + RING(q) + 0x2000 + 2), &v, __ATOMIC_ACQUIRE);
	return v;
}

static void used_elem(unsigned q, unsigned i, uint32_t *id, uint32_t *len)
{
	const uint8_t *e = ram + RING(q) + 0x2000 + 4 + 8 * (i % QSIZE);
	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait (on the guest's interrupt) until queue q's used index reaches `want`. */
static bool wait_used(unsigned q, uint16_t want, int timeout_ms)
{
	long end = now_ms() + timeout_ms;
	for (;;) {
		if ((uint16_t)(used_idx(q) - want) < 0x8000)
			return true;
		long left = end - now_ms();
		if (left <= 0)
			return false;
		struct pollfd p = {.fd = dev->irqfd, .events = POLLIN};
		if (poll(&p, 1, (int)left) > 0) {
			uint64_t v;
			(void)!read(dev->irqfd, &v, sizeof(v));
		}
	}
}

#endif
