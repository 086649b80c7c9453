/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Split virtqueues (virtio 1.x, section 2.7).  The rings live in guest memory
 * and the guest writes them concurrently: every index and descriptor is read
 * once into a local copy, then validated, then used.  A chain that loops, is
 * longer than the queue, points outside guest RAM, puts a device-readable
 * buffer after a device-writable one, uses a feature we did not offer
 * (indirect descriptors), or exceeds the byte limit is rejected and the queue
 * is marked broken — it is never followed.
 */
#ifndef MSB_HV_QUEUE_H
#define MSB_HV_QUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "../memory.h"

#define VQ_SIZE_MAX 256
/* Most bytes one chain may describe: bounds any device's work per request. */
#define VQ_CHAIN_BYTES_MAX (64u << 20)

struct vq {
	uint16_t size; /* negotiated, power of two, <= VQ_SIZE_MAX */
	bool ready;
	bool broken; /* a malformed chain was seen: the device needs a reset */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t last_avail;
	uint16_t used_idx;
	const struct gmem *mem;
};

struct vq_elem {
	uint16_t head;
	unsigned nread, nwrite;
	struct iovec read[VQ_SIZE_MAX];	 /* device-readable (driver -> device) */
	struct iovec write[VQ_SIZE_MAX]; /* device-writable (device -> driver) */
	uint64_t read_bytes, write_bytes;
};

/* Check the ring addresses and size once the driver marks the queue ready. */
int vq_activate(struct vq *q, const struct gmem *mem);
void vq_reset(struct vq *q);
/*
 * Take the next available chain: 1 with *e filled, 0 when none is available,
 * -EINVAL for a malformed chain (the queue is then broken and pops nothing).
 */
int vq_pop(struct vq *q, struct vq_elem *e);
/* Whether the driver has made a chain available that vq_pop has not taken (a hint). */
bool vq_pending(const struct vq *q);
/*
 * Ask the driver to kick this queue when it makes a chain available (on), or
 * not to (off): VIRTQ_USED_F_NO_NOTIFY in the used ring (2.7.7.2; the device
 * offers no VIRTIO_F_EVENT_IDX).  Only a hint to the driver.  After turning
 * kicks back on, look at the queue again (vq_pending): the flag write is
 * fenced before that read, and the driver reads the flag after publishing
 * its index, so a chain either comes with a kick or is seen then.  Nothing
 * on a queue that is not ready.
 */
void vq_set_notify(struct vq *q, bool on);
/* Return a chain to the driver with `written` bytes written into it. */
void vq_push(struct vq *q, uint16_t head, uint32_t written);
/* Copy from a chain's readable buffers starting at byte `off`; returns bytes copied. */
size_t vq_read(const struct vq_elem *e, size_t off, void *dst, size_t len);
/* Copy into a chain's writable buffers starting at byte `off`; returns bytes copied. */
size_t vq_write(const struct vq_elem *e, size_t off, const void *src, size_t len);

#endif
