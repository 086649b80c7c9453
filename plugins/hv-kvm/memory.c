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

int gmem_init(struct gmem *m, uint64_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
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
