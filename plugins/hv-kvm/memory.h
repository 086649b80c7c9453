/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest RAM.  Every guest physical address the monitor touches is turned into
 * a host pointer here, and only here: gmem_ptr() refuses any range that is
 * not wholly inside one RAM region, so a hostile guest address can never make
 * the monitor read or write outside guest memory.
 */
#ifndef MSB_HV_MEMORY_H
#define MSB_HV_MEMORY_H

#include <stddef.h>
#include <stdint.h>

/* Devices live in [MMIO_START, 4 GiB); RAM above it moves past 4 GiB. */
#define GMEM_MMIO_START 0xd0000000ull
#define GMEM_4G		0x100000000ull

struct gmem_region {
	uint64_t gpa;
	uint64_t len;
	uint8_t *host;
};

struct gmem {
	struct gmem_region regions[2];
	unsigned nregions;
	uint64_t total;
};

/*
 * Map `bytes` of guest RAM.  MAP_NORESERVE and anonymous: a page costs the
 * host nothing until the guest touches it.
 */
int gmem_init(struct gmem *m, uint64_t bytes);
void gmem_free(struct gmem *m);
/* A host pointer for [gpa, gpa+len), or NULL if any byte is outside RAM. */
void *gmem_ptr(const struct gmem *m, uint64_t gpa, uint64_t len);
/* Lay out regions without mapping (host pointers from `base`); for tests. */
void gmem_layout(struct gmem *m, uint8_t *base, uint64_t bytes);

#endif
