/* SPDX-License-Identifier: Apache-2.0 */
#include "vmlinux.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

int elf_is_elf(const uint8_t *buf, size_t len)
{
	return len >= SELFMAG && memcmp(buf, ELFMAG, SELFMAG) == 0;
}

/* a + b without wrapping, else UINT64_MAX (always out of any bound). */
static uint64_t add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static int refuse(const char **why, const char *reason)
{
	*why = reason;
	return -ENOEXEC;
}

int elf_plan(const uint8_t *buf, size_t len, uint64_t file_size, uint64_t ram_lo, uint64_t ram_hi,
	     struct elf_plan *plan, const char **why)
{
	memset(plan, 0, sizeof(*plan));
	Elf64_Ehdr eh;
	if (len < sizeof(eh) || file_size < sizeof(eh) || !elf_is_elf(buf, len))
		return refuse(why, "not an ELF file");
	memcpy(&eh, buf, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
		return refuse(why, "not a little-endian ELF64 file");
	if (eh.e_machine != EM_X86_64 || eh.e_type != ET_EXEC)
		return refuse(why, "not an x86-64 executable (expected a vmlinux)");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 64)
		return refuse(why, "bad program header table (size or count)");
	uint64_t ph_end = add(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr));
	if (ph_end > len || ph_end > file_size)
		return refuse(why, "program headers outside the file's first 4 KiB");
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, buf + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_NOTE && !plan->note_size && ph.p_filesz &&
		    ph.p_filesz <= ELF_NOTES_MAX && add(ph.p_offset, ph.p_filesz) <= file_size) {
			plan->note_offset = ph.p_offset;
			plan->note_size = ph.p_filesz;
		}
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (plan->nsegs == ELF_SEGS_MAX)
			return refuse(why, "too many loadable segments");
		if (ph.p_filesz > ph.p_memsz)
			return refuse(why, "a segment's file size exceeds its memory size");
		if (add(ph.p_offset, ph.p_filesz) > file_size)
			return refuse(why, "a segment extends past the end of the file");
		uint64_t end = add(ph.p_paddr, ph.p_memsz);
		if (ph.p_paddr < ram_lo || end > ram_hi)
			return refuse(why, "a segment's physical address is outside guest RAM");
		for (size_t j = 0; j < plan->nsegs; j++) {
			const struct elf_seg *o = &plan->segs[j];
			if (ph.p_paddr < o->paddr + o->memsz && o->paddr < end)
				return refuse(why, "segments overlap");
		}
		plan->segs[plan->nsegs++] = (struct elf_seg){
			.paddr = ph.p_paddr,
			.offset = ph.p_offset,
			.filesz = ph.p_filesz,
			.memsz = ph.p_memsz,
		};
		if (end > plan->end)
			plan->end = end;
	}
	if (plan->nsegs == 0)
		return refuse(why, "no loadable segments");
	/* The entry must be in loaded code; vmlinux's is physical (phys_startup_64). */
	for (size_t j = 0; j < plan->nsegs; j++) {
		const struct elf_seg *s = &plan->segs[j];
		if (eh.e_entry >= s->paddr && eh.e_entry < s->paddr + s->filesz) {
			plan->entry = eh.e_entry;
			return 0;
		}
	}
	return refuse(why, "the entry point is not inside a loaded segment");
}

int elf_notes_have_owner(const uint8_t *buf, size_t len, const char *owner)
{
	size_t olen = strlen(owner) + 1, off = 0;
	while (len - off >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		memcpy(&nh, buf + off, sizeof(nh));
		off += sizeof(nh);
		/* Name and descriptor are each padded to 4 bytes. */
		uint64_t nsz = ((uint64_t)nh.n_namesz + 3) & ~3ull;
		uint64_t dsz = ((uint64_t)nh.n_descsz + 3) & ~3ull;
		if (nsz > len - off)
			return 0;
		if (nh.n_namesz == olen && memcmp(buf + off, owner, olen) == 0)
			return 1;
		off += nsz;
		if (dsz > len - off)
			return 0;
		off += dsz;
	}
	return 0;
}
