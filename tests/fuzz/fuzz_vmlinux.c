/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer: the vmlinux (ELF64) load planner.  The input is a kernel file's
 * first bytes; its size is taken from the input too.  Every plan accepted
 * must keep each segment inside the file and the RAM window, without
 * overlaps, with the entry inside loaded bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmlinux.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_LO 0x100000ull
#define RAM_HI 0x20000000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t file_size = size;
	if (size >= 8) { /* the last 8 bytes may claim a bigger file */
		uint64_t claim;
		memcpy(&claim, data + size - 8, 8);
		if (claim & 1)
			file_size = claim >> 1;
	}
	/* The same bytes as a notes segment: the walk must stay inside them. */
	elf_notes_have_owner(data, size < ELF_NOTES_MAX ? size : ELF_NOTES_MAX, "Linux");
	size_t len = size < ELF_HEADERS_READ ? size : ELF_HEADERS_READ;
	struct elf_plan plan;
	const char *why = NULL;
	if (elf_plan(data, len, file_size, RAM_LO, RAM_HI, &plan, &why) < 0) {
		if (!why)
			abort();
		return 0;
	}
	int entry_ok = 0;
	for (size_t i = 0; i < plan.nsegs; i++) {
		const struct elf_seg *s = &plan.segs[i];
		if (s->filesz > s->memsz || s->offset > file_size ||
		    s->filesz > file_size - s->offset || s->paddr < RAM_LO ||
		    s->memsz > RAM_HI - s->paddr || s->paddr + s->memsz > plan.end)
			abort();
		for (size_t j = 0; j < i; j++) {
			const struct elf_seg *o = &plan.segs[j];
			if (s->paddr < o->paddr + o->memsz && o->paddr < s->paddr + s->memsz)
				abort();
		}
		if (plan.entry >= s->paddr && plan.entry < s->paddr + s->filesz)
			entry_ok = 1;
	}
	if (plan.note_size > ELF_NOTES_MAX || plan.note_offset > file_size ||
	    plan.note_size > file_size - plan.note_offset)
		abort();
	if (!plan.nsegs || !entry_ok)
		abort();
	return 0;
}
