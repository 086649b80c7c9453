/* SPDX-License-Identifier: Apache-2.0 */
#include "queue.h"

#include <errno.h>
#include <string.h>

/* Descriptor flags (virtio 1.x 2.7.5). */
#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4
/* Used ring flags (2.7.8). */
#define VRING_USED_F_NO_NOTIFY 1

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
} __attribute__((packed));

static uint16_t load16(const void *p)
{
	uint16_t v;
	__atomic_load((const uint16_t *)p, &v, __ATOMIC_ACQUIRE);
	return v;
}

int vq_activate(struct vq *q, const struct gmem *mem)
{
	if (q->size == 0 || q->size > VQ_SIZE_MAX || (q->size & (q->size - 1)))
		return -EINVAL;
	uint64_t n = q->size;
	/* desc: 16 bytes each; avail: flags, idx, ring[n], used_event; used: flags, idx, ring[n] (8
	 * each), avail_event. */
	if (!gmem_ptr(mem, q->desc_gpa, 16 * n) || !gmem_ptr(mem, q->avail_gpa, 6 + 2 * n) ||
	    !gmem_ptr(mem, q->used_gpa, 6 + 8 * n))
		return -EFAULT;
	/* Alignment required by the spec (2.7): 16, 2 and 4 bytes. */
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3))
		return -EINVAL;
	q->mem = mem;
	q->last_avail = 0;
	q->used_idx = 0;
	q->broken = false;
	q->ready = true;
	return 0;
}

void vq_reset(struct vq *q)
{
	memset(q, 0, sizeof(*q));
}

static int broken(struct vq *q)
{
	q->broken = true;
	return -EINVAL;
}

/*
 * Chains the driver has made available that we have not taken (0 on a dead
 * queue); *ring is the avail ring when that is not 0.
 */
static uint16_t avail_pending(const struct vq *q, const uint8_t **ring)
{
	if (!q->ready || q->broken)
		return 0;
	*ring = gmem_ptr(q->mem, q->avail_gpa, 4 + 2u * q->size);
	return (uint16_t)(load16(*ring + 2) - q->last_avail);
}

int vq_pop(struct vq *q, struct vq_elem *e)
{
	const uint8_t *avail = NULL;
	uint16_t pending = avail_pending(q, &avail);
	if (pending == 0)
		return 0;
	/* The driver cannot have more chains outstanding than the queue holds. */
	if (pending > q->size)
		return broken(q);
	uint16_t head = load16(avail + 4 + 2u * (q->last_avail % q->size));
	if (head >= q->size)
		return broken(q);
	const struct vring_desc *table = gmem_ptr(q->mem, q->desc_gpa, 16u * q->size);
	e->head = head;
	e->nread = e->nwrite = 0;
	e->read_bytes = e->write_bytes = 0;
	uint16_t i = head;
	for (unsigned count = 0;; count++) {
		/* A chain longer than the table must revisit a descriptor: a loop. */
		if (count >= q->size)
			return broken(q);
		struct vring_desc d;
		memcpy(&d, &table[i], sizeof(d)); /* one snapshot; the guest may race us */
		if (d.flags & VRING_DESC_F_INDIRECT)
			return broken(q); /* not offered */
		if (d.len) {
			void *p = gmem_ptr(q->mem, d.addr, d.len);
			if (!p)
				return broken(q);
			if (d.flags & VRING_DESC_F_WRITE) {
				e->write_bytes += d.len;
				e->write[e->nwrite++] = (struct iovec){p, d.len};
			} else {
				/* Readable buffers all come before writable ones (2.7.4.2). */
				if (e->nwrite)
					return broken(q);
				e->read_bytes += d.len;
				e->read[e->nread++] = (struct iovec){p, d.len};
			}
			if (e->read_bytes + e->write_bytes > VQ_CHAIN_BYTES_MAX)
				return broken(q);
		}
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		if (d.next >= q->size)
			return broken(q);
		i = d.next;
	}
	q->last_avail++;
	return 1;
}

bool vq_pending(const struct vq *q)
{
	const uint8_t *avail;
	return avail_pending(q, &avail) != 0;
}

void vq_set_notify(struct vq *q, bool on)
{
	if (!q->ready)
		return;
	uint16_t flags = on ? 0 : VRING_USED_F_NO_NOTIFY;
	__atomic_store((uint16_t *)gmem_ptr(q->mem, q->used_gpa, 2), &flags, __ATOMIC_RELAXED);
	/* The flag, then the caller's look at the avail index: a full fence. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void vq_push(struct vq *q, uint16_t head, uint32_t written)
{
	if (!q->ready)
		return;
	uint8_t *used = gmem_ptr(q->mem, q->used_gpa, 4 + 8u * q->size);
	uint8_t *slot = used + 4 + 8u * (q->used_idx % q->size);
	uint32_t id = head;
	memcpy(slot, &id, 4);
	memcpy(slot + 4, &written, 4);
	q->used_idx++;
	/* The element must be visible before the index that publishes it. */
	__atomic_store((uint16_t *)(used + 2), &q->used_idx, __ATOMIC_RELEASE);
}

size_t vq_read(const struct vq_elem *e, size_t off, void *dst, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < e->nread && done < len; i++) {
		size_t l = e->read[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		size_t n = l - off < len - done ? l - off : len - done;
		memcpy((uint8_t *)dst + done, (uint8_t *)e->read[i].iov_base + off, n);
		done += n;
		off = 0;
	}
	return done;
}

size_t vq_write(const struct vq_elem *e, size_t off, const void *src, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < e->nwrite && done < len; i++) {
		size_t l = e->write[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		size_t n = l - off < len - done ? l - off : len - done;
		memcpy((uint8_t *)e->write[i].iov_base + off, (const uint8_t *)src + done, n);
		done += n;
		off = 0;
	}
	return done;
}
