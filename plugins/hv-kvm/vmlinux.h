/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An uncompressed kernel (vmlinux, ELF64 x86-64): where its loadable
 * segments go in guest memory and where it starts.  Pure parsing, no I/O:
 * the caller reads the headers, asks elf_plan(), then copies each segment's
 * file bytes and zeroes the rest.  Every offset, size and address is checked
 * (against the file's size and the RAM window given), so a malformed or
 * hostile file is refused, never followed.
 */
#ifndef MSB_HV_KVM_VMLINUX_H
#define MSB_HV_KVM_VMLINUX_H

#include <stddef.h>
#include <stdint.h>

#define ELF_SEGS_MAX	 16
#define ELF_HEADERS_READ 4096 /* the caller passes the file's first bytes, up to this */

struct elf_seg {
	uint64_t paddr;	 /* guest-physical load address */
	uint64_t offset; /* in the file */
	uint64_t filesz; /* bytes copied from the file */
	uint64_t memsz;	 /* bytes at paddr, the rest zeroed (bss) */
};

struct elf_plan {
	uint64_t entry; /* guest-physical 64-bit entry (startup_64) */
	uint64_t end;	/* the highest byte any segment occupies, plus one */
	size_t nsegs;
	struct elf_seg segs[ELF_SEGS_MAX];
	uint64_t note_offset, note_size; /* the first PT_NOTE (size <= ELF_NOTES_MAX), or 0 */
};

#define ELF_NOTES_MAX 4096

/* Nonzero when buf (len bytes) starts like an ELF file. */
int elf_is_elf(const uint8_t *buf, size_t len);

/*
 * Plan loading the ELF whose first len bytes are buf (len = min(file size,
 * ELF_HEADERS_READ)) and whose size is file_size, into guest RAM
 * [ram_lo, ram_hi).  0, or -ENOEXEC with *why set to a static reason.
 */
int elf_plan(const uint8_t *buf, size_t len, uint64_t file_size, uint64_t ram_lo, uint64_t ram_hi,
	     struct elf_plan *plan, const char **why);

/*
 * Nonzero when the notes in buf (a PT_NOTE segment's bytes) include one
 * whose owner is `owner` (a vmlinux carries "Linux" notes; any other ELF
 * executable is not a kernel).  Walks the notes with every size checked.
 */
int elf_notes_have_owner(const uint8_t *buf, size_t len, const char *owner);

#endif
