/* SPDX-License-Identifier: Apache-2.0 */
/* The vmlinux load planner against well-formed and hostile ELF headers. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vmlinux.h"

#define LO   0x100000ull
#define HI   0x10000000ull
#define FILE (8ull << 20)

struct img {
	uint8_t b[ELF_HEADERS_READ];
};

/* A vmlinux-shaped header: text at 16 MiB (entry there), data after, bss. */
static void make(struct img *m, unsigned nph)
{
	memset(m, 0, sizeof(*m));
	Elf64_Ehdr eh = {0};
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_entry = 0x1000000;
	eh.e_phoff = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = (uint16_t)nph;
	memcpy(m->b, &eh, sizeof(eh));
	Elf64_Phdr ph[3] = {
		{.p_type = PT_LOAD,
		 .p_offset = 0x200000,
		 .p_paddr = 0x1000000,
		 .p_filesz = 0x200000,
		 .p_memsz = 0x200000},
		{.p_type = PT_NOTE,
		 .p_offset = 0x1000,
		 .p_paddr = 0,
		 .p_filesz = 0x10,
		 .p_memsz = 0x10},
		{.p_type = PT_LOAD,
		 .p_offset = 0x400000,
		 .p_paddr = 0x1400000,
		 .p_filesz = 0x100000,
		 .p_memsz = 0x300000},
	};
	memcpy(m->b + sizeof(eh), ph, sizeof(ph));
}

static Elf64_Ehdr *eh(struct img *m)
{
	return (Elf64_Ehdr *)m->b;
}

static Elf64_Phdr *ph(struct img *m, unsigned i)
{
	return (Elf64_Phdr *)(m->b + sizeof(Elf64_Ehdr)) + i;
}

static int plan_of(struct img *m, uint64_t file, struct elf_plan *p, const char **why)
{
	return elf_plan(m->b, sizeof(m->b), file, LO, HI, p, why);
}

static void test_good(void **state)
{
	(void)state;
	struct img m;
	make(&m, 3);
	struct elf_plan p;
	const char *why = NULL;
	assert_int_equal(plan_of(&m, FILE, &p, &why), 0);
	assert_int_equal(p.nsegs, 2); /* the note is not loaded */
	assert_int_equal(p.entry, 0x1000000);
	assert_int_equal(p.end, 0x1700000);
	assert_int_equal(p.segs[1].memsz, 0x300000);
	assert_int_equal(p.segs[1].filesz, 0x100000);
}

static void expect_refused(struct img *m, uint64_t file, const char *what)
{
	struct elf_plan p;
	const char *why = NULL;
	assert_int_equal(plan_of(m, file, &p, &why), -ENOEXEC);
	assert_non_null(why);
	assert_non_null(strstr(why, what));
}

static void test_hostile(void **state)
{
	(void)state;
	struct img m;
	make(&m, 3);
	m.b[0] = 'X';
	expect_refused(&m, FILE, "not an ELF");
	make(&m, 3);
	eh(&m)->e_ident[EI_CLASS] = ELFCLASS32;
	expect_refused(&m, FILE, "ELF64");
	make(&m, 3);
	eh(&m)->e_machine = EM_AARCH64;
	expect_refused(&m, FILE, "x86-64");
	make(&m, 3);
	eh(&m)->e_phnum = 65;
	expect_refused(&m, FILE, "program header");
	make(&m, 3);
	eh(&m)->e_phoff = ELF_HEADERS_READ - 8; /* table runs past what was read */
	expect_refused(&m, FILE, "first 4 KiB");
	make(&m, 3);
	eh(&m)->e_phoff = UINT64_MAX - 8; /* wraps */
	expect_refused(&m, FILE, "first 4 KiB");
	make(&m, 3);
	ph(&m, 0)->p_filesz = 0x300000; /* more file bytes than memory */
	expect_refused(&m, FILE, "exceeds its memory size");
	make(&m, 3);
	expect_refused(&m, 0x450000, "past the end of the file");
	make(&m, 3);
	ph(&m, 2)->p_offset = UINT64_MAX - 0x10; /* offset + size wraps */
	expect_refused(&m, FILE, "past the end of the file");
	make(&m, 3);
	ph(&m, 0)->p_paddr = 0x80000; /* below 1 MiB: the zero page, tables */
	expect_refused(&m, FILE, "outside guest RAM");
	make(&m, 3);
	ph(&m, 2)->p_paddr = HI - 0x100000; /* runs past RAM */
	expect_refused(&m, FILE, "outside guest RAM");
	make(&m, 3);
	ph(&m, 2)->p_paddr = UINT64_MAX - 0x1000; /* address + size wraps */
	expect_refused(&m, FILE, "outside guest RAM");
	make(&m, 3);
	ph(&m, 2)->p_paddr = 0x1100000; /* overlaps the text */
	expect_refused(&m, FILE, "overlap");
	make(&m, 3);
	eh(&m)->e_entry = 0x1500000; /* in bss, not in loaded bytes */
	expect_refused(&m, FILE, "entry point");
	make(&m, 3);
	ph(&m, 0)->p_type = PT_NULL;
	ph(&m, 2)->p_type = PT_NULL;
	expect_refused(&m, FILE, "no loadable");
	/* Too short to be anything. */
	struct elf_plan p;
	const char *why = NULL;
	assert_int_equal(elf_plan(m.b, 10, 10, LO, HI, &p, &why), -ENOEXEC);
}

static void test_notes(void **state)
{
	(void)state;
	/* Two notes: GNU (build id) then Linux; sizes padded to 4. */
	uint8_t b[64] = {0};
	Elf64_Nhdr n1 = {.n_namesz = 4, .n_descsz = 5, .n_type = 3};
	memcpy(b, &n1, sizeof(n1));
	memcpy(b + 12, "GNU", 4);
	Elf64_Nhdr n2 = {.n_namesz = 6, .n_descsz = 4, .n_type = 0};
	memcpy(b + 24, &n2, sizeof(n2));
	memcpy(b + 36, "Linux", 6);
	assert_true(elf_notes_have_owner(b, 48, "Linux"));
	assert_true(elf_notes_have_owner(b, 48, "GNU"));
	assert_false(elf_notes_have_owner(b, 48, "Xen"));
	assert_false(elf_notes_have_owner(b, 40, "Linux")); /* name cut short */
	/* A descriptor size that runs off the end stops the walk. */
	n1.n_descsz = 0xfffffff0u;
	memcpy(b, &n1, sizeof(n1));
	assert_false(elf_notes_have_owner(b, 48, "Linux"));
	/* The planner finds the note segment. */
	struct img m;
	make(&m, 3);
	struct elf_plan p;
	const char *why = NULL;
	assert_int_equal(plan_of(&m, FILE, &p, &why), 0);
	assert_int_equal(p.note_offset, 0x1000);
	assert_int_equal(p.note_size, 0x10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_notes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
