/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer: the virtqueue walker.  The input is guest memory (descriptor
 * table, avail ring) written by a hostile driver; every chain popped must lie
 * wholly inside guest memory and respect the queue's limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memory.h"
#include "virtio/queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM (64u * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *ram;
	if (!ram)
		ram = malloc(RAM);
	memset(ram, 0, RAM);
	/* The first bytes pick the queue size; the rest are the rings. */
	uint16_t qsize = size ? (uint16_t)(1u << (data[0] % 9)) : 8;
	size_t n = size > 1 ? size - 1 : 0;
	memcpy(ram, data + (size ? 1 : 0), n < RAM ? n : RAM);
	struct gmem mem;
	gmem_layout(&mem, ram, RAM);
	struct vq q;
	vq_reset(&q);
	q.size = qsize;
	q.desc_gpa = 0;
	q.avail_gpa = 0x1000;
	q.used_gpa = 0x2000;
	if (vq_activate(&q, &mem) < 0)
		return 0;
	static struct vq_elem e;
	for (int i = 0; i < 64; i++) {
		int r = vq_pop(&q, &e);
		if (r <= 0)
			break;
		if (e.nread + e.nwrite > qsize)
			abort();
		for (unsigned j = 0; j < e.nread; j++)
			if ((uint8_t *)e.read[j].iov_base < ram ||
			    (uint8_t *)e.read[j].iov_base + e.read[j].iov_len > ram + RAM)
				abort();
		for (unsigned j = 0; j < e.nwrite; j++)
			if ((uint8_t *)e.write[j].iov_base < ram ||
			    (uint8_t *)e.write[j].iov_base + e.write[j].iov_len > ram + RAM)
				abort();
		vq_push(&q, e.head, 0);
	}
	return 0;
}
