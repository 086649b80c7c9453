/* SPDX-License-Identifier: Apache-2.0 */
#include "memory.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

void gmem_layout(struct gmem *m, uint8_t *base, uint64_t bytes)
{
	memset(m, 0, sizeof(*m));
	m->total = bytes;
	uint64_t low = bytes < GMEM_MMIO_START ? bytes : GMEM_MMIO_START;
	m->regions[0] = (struct gmem_region){0, low, base};
	m->nregions = 1;
	if (bytes > low) {
		m->regions[1] = (struct gmem_region){GMEM_4G, bytes - low, base + low};
		m->nregions = 2;
	}
}

#define HUGE_2M (2ull << 20)

int gmem_init(struct gmem *m, uint64_t bytes)
{
	/*
	 * Reserve 2 MiB more and align: transparent huge pages need 2 MiB
	 * alignment, and with them one nested page fault maps 2 MiB instead of
	 * 4 KiB — far fewer VM exits while the guest first touches its RAM.
	 */
	uint64_t span = bytes + HUGE_2M;
	uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return -errno;
	uint8_t *p = (uint8_t *)(((uintptr_t)raw + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	if (p + bytes < raw + span)
		munmap(p + bytes, (size_t)(raw + span - (p + bytes)));
	madvise(p, bytes, MADV_HUGEPAGE);
	/* Guest memory is the guest's: keep it out of the monitor's core dumps. */
	madvise(p, bytes, MADV_DONTDUMP);
	gmem_layout(m, p, bytes);
	return 0;
}

void gmem_free(struct gmem *m)
{
	if (m->nregions)
		munmap(m->regions[0].host, m->total);
	memset(m, 0, sizeof(*m));
}

void *gmem_ptr(const struct gmem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct gmem_region *r = &m->regions[i];
		/* Written to avoid overflow: gpa + len may wrap for hostile values. */
		if (gpa >= r->gpa && gpa - r->gpa <= r->len && len <= r->len - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}
