/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Intel MultiProcessor table (MP spec 1.4): how a guest without ACPI
 * learns its CPUs, the IOAPIC and how ISA interrupts are wired.  Linux finds
 * the floating pointer by scanning the last KiB of base memory, where we put
 * it (e820 reports that range reserved).
 */
#include <errno.h>
#include <string.h>

#include "vm.h"

#define MP_ADDR		  0x9fc00
#define MP_LAPIC_ADDR	  0xfee00000u
#define MP_IOAPIC_ADDR	  0xfec00000u
#define MP_IOAPIC_PINS	  24
#define MP_APIC_VERSION	  0x14
#define MP_IOAPIC_VERSION 0x11

enum { MP_PROCESSOR = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_INTSRC = 3, MP_LINTSRC = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };

static uint8_t checksum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = (uint8_t)(s + p[i]);
	return (uint8_t)(0 - s);
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

int mptable_write(struct vm *vm, struct msb_error *err)
{
	/* 16 (floating pointer) + 44 (header) + 20/CPU + 8 bus + 8 IOAPIC + 8 per pin + 2 * 8. */
	size_t size = 16 + 44 + 20u * vm->ncpus + 8 + 8 + 8u * MP_IOAPIC_PINS + 16;
	if (size > 0x400)
		return vm->host->error_set(vm->host, err, -E2BIG, "MP table too large for %u CPUs",
					   vm->ncpus);
	uint8_t *base = gmem_ptr(&vm->mem, MP_ADDR, 0x400);
	memset(base, 0, 0x400);
	uint8_t *mpf = base, *table = base + 16, *p = table + 44;
	uint16_t entries = 0;
	uint8_t ioapic_id = (uint8_t)vm->ncpus;

	for (unsigned i = 0; i < vm->ncpus; i++, entries++, p += 20) {
		p[0] = MP_PROCESSOR;
		p[1] = (uint8_t)i; /* local APIC id */
		p[2] = MP_APIC_VERSION;
		p[3] = (uint8_t)(0x1 | (i == 0 ? 0x2 : 0)); /* enabled; the boot CPU */
		put32(p + 4, 0x600);			    /* family 6 signature */
		put32(p + 8, 0x201);			    /* FPU, APIC */
	}
	p[0] = MP_BUS;
	memcpy(p + 2, "ISA   ", 6);
	p += 8, entries++;
	p[0] = MP_IOAPIC;
	p[1] = ioapic_id;
	p[2] = MP_IOAPIC_VERSION;
	p[3] = 1; /* enabled */
	put32(p + 4, MP_IOAPIC_ADDR);
	p += 8, entries++;
	for (unsigned pin = 0; pin < MP_IOAPIC_PINS; pin++, p += 8, entries++) {
		p[0] = MP_INTSRC;
		p[1] = MP_INT;
		put16(p + 2, 0); /* conforming polarity and trigger */
		p[4] = 0;	 /* ISA bus */
		p[5] = (uint8_t)pin;
		p[6] = ioapic_id;
		p[7] = (uint8_t)pin;
	}
	p[0] = MP_LINTSRC;
	p[1] = MP_EXTINT;
	p[6] = 0; /* to local APIC 0 */
	p[7] = 0; /* LINT0 */
	p += 8, entries++;
	p[0] = MP_LINTSRC;
	p[1] = MP_NMI;
	p[6] = 0xff; /* to every local APIC */
	p[7] = 1;    /* LINT1 */
	p += 8, entries++;

	uint16_t table_len = (uint16_t)(p - table);
	memcpy(table, "PCMP", 4);
	put16(table + 4, table_len);
	table[6] = 4; /* spec 1.4 */
	memcpy(table + 8, "MSB     ", 8);
	memcpy(table + 16, "MICROVM     ", 12);
	put16(table + 34, entries);
	put32(table + 36, MP_LAPIC_ADDR);
	table[7] = checksum(table, table_len);

	memcpy(mpf, "_MP_", 4);
	put32(mpf + 4, (uint32_t)(MP_ADDR + 16));
	mpf[8] = 1; /* length in 16-byte paragraphs */
	mpf[9] = 4; /* spec 1.4 */
	mpf[10] = checksum(mpf, 16);
	return 0;
}
