/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Linux boot, the 64-bit boot protocol (Documentation/x86/boot.rst): the
 * bzImage's protected-mode part is loaded at 1 MiB — or an uncompressed
 * vmlinux's segments at their physical addresses, so the guest skips the
 * decompressor — a zero page (struct
 * boot_params) with the setup header, command line, initramfs and e820 map
 * is written at 0x7000, and the boot vCPU starts in long mode at the 64-bit
 * entry (load address + 0x200) with identity-mapped page tables and %rsi
 * pointing at the zero page.
 *
 * The kernel file is the host's (a trusted input: msb's own kernel or the
 * user's --kernel), but it is still parsed with every offset checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmlinux.h"
#include "vm.h"

#define ZERO_PAGE     0x7000
#define CMDLINE_ADDR  0x20000
#define CMDLINE_MAX   4096
#define KERNEL_LOAD   0x100000
#define BOOT_GDT_ADDR 0x500
#define BOOT_PML4     0x9000
#define BOOT_PDPT     0xa000
#define BOOT_PD	      0xb000
#define EBDA_START    0x9fc00

/* Offsets in struct boot_params and its setup header. */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES	     0x1e8
#define BP_SETUP_SECTS	     0x1f1
#define BP_HDR_JUMP	     0x200
#define BP_HDR_MAGIC	     0x202
#define BP_VERSION	     0x206
#define BP_TYPE_OF_LOADER    0x210
#define BP_LOADFLAGS	     0x211
#define BP_RAMDISK_IMAGE     0x218
#define BP_RAMDISK_SIZE	     0x21c
#define BP_BOOT_FLAG	     0x1fe
#define BP_HEAP_END_PTR	     0x224
#define BP_CMD_LINE_PTR	     0x228
#define BP_INITRD_ADDR_MAX   0x22c
#define BP_KERNEL_ALIGN	     0x230
#define BP_XLOADFLAGS	     0x236
#define BP_CMDLINE_SIZE	     0x238
#define BP_E820_TABLE	     0x2d0
#define E820_MAX	     128

#define LOADFLAGS_LOADED_HIGH  0x01
#define LOADFLAGS_CAN_USE_HEAP 0x80
#define XLF_KERNEL_64	       0x01
#define E820_RAM	       1
#define E820_RESERVED	       2

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static int read_all(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/*
 * vmlinux: no setup header in the file, so the zero page gets the fields a
 * boot loader would have copied, and the vCPU starts at the ELF entry
 * (startup_64, the decompressor's jump target).  The kernel clears its own
 * bss (x86_64_start_kernel), and guest RAM starts zeroed anyway.
 */
static int load_vmlinux(struct vm *vm, int fd, const char *path, const uint8_t *hdr, size_t hlen,
			uint64_t file_size, struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	struct elf_plan plan;
	const char *why = "";
	uint64_t ram_hi = vm->mem.regions[0].len;
	if (ram_hi > GMEM_MMIO_START - 0x4000)
		ram_hi = GMEM_MMIO_START - 0x4000;
	if (elf_plan(hdr, hlen, file_size, KERNEL_LOAD, ram_hi, &plan, &why) < 0)
		return h->error_set(h, err, -ENOEXEC,
				    "kernel '%s': %s (expected a bzImage or an x86-64 vmlinux)",
				    path, why);
	/* Any x86-64 executable parses; only a kernel carries "Linux" notes. */
	uint8_t notes[ELF_NOTES_MAX];
	if (!plan.note_size || read_all(fd, notes, plan.note_size, (off_t)plan.note_offset) < 0 ||
	    !elf_notes_have_owner(notes, plan.note_size, "Linux"))
		return h->error_set(
			h, err, -ENOEXEC,
			"kernel '%s': an ELF file without Linux's notes is not a kernel "
			"(expected a bzImage or an x86-64 vmlinux)",
			path);
	for (size_t i = 0; i < plan.nsegs; i++) {
		const struct elf_seg *sg = &plan.segs[i];
		uint8_t *dst = gmem_ptr(&vm->mem, sg->paddr, sg->memsz);
		int r = dst ? read_all(fd, dst, sg->filesz, (off_t)sg->offset) : -EFAULT;
		if (r < 0)
			return h->error_set(h, err, r, "kernel '%s': loading a segment: %s", path,
					    strerror(-r));
	}
	uint8_t *zp = gmem_ptr(&vm->mem, ZERO_PAGE, 4096);
	memset(zp, 0, 4096);
	zp[BP_BOOT_FLAG] = 0x55;
	zp[BP_BOOT_FLAG + 1] = 0xaa;
	memcpy(zp + BP_HDR_MAGIC, "HdrS", 4);
	uint16_t ver = 0x020f;
	memcpy(zp + BP_VERSION, &ver, 2);
	put32(zp + BP_KERNEL_ALIGN, 0x1000000);
	put32(zp + BP_INITRD_ADDR_MAX, 0x7fffffff);
	zp[BP_XLOADFLAGS] = XLF_KERNEL_64;
	vm->entry = plan.entry;
	vm->kernel_end = plan.end;
	return 0;
}

int boot_load_kernel(struct vm *vm, const char *path, struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return h->error_set(h, err, -errno, "kernel '%s': %s", path, strerror(errno));
	struct stat st;
	uint8_t hdr[1024];
	int r = fstat(fd, &st) < 0 ? -errno : 0;
	if (r == 0 && st.st_size < (off_t)sizeof(hdr))
		r = -ENOEXEC;
	if (r == 0)
		r = read_all(fd, hdr, sizeof(hdr), 0);
	if (r == 0 && elf_is_elf(hdr, sizeof(hdr))) {
		uint8_t eh[ELF_HEADERS_READ];
		size_t elen = st.st_size < (off_t)sizeof(eh) ? (size_t)st.st_size : sizeof(eh);
		r = read_all(fd, eh, elen, 0);
		if (r == 0)
			r = load_vmlinux(vm, fd, path, eh, elen, (uint64_t)st.st_size, err);
		else
			h->error_set(h, err, r, "kernel '%s': %s", path, strerror(-r));
		close(fd);
		return r;
	}
	if (r == 0 && memcmp(hdr + BP_HDR_MAGIC, "HdrS", 4) != 0)
		r = -ENOEXEC;
	if (r < 0) {
		close(fd);
		return h->error_set(h, err, r,
				    "kernel '%s' is neither a bzImage nor a vmlinux (expected a "
				    "Linux boot protocol header or an ELF file)",
				    path);
	}
	uint16_t version = get16(hdr + BP_VERSION);
	uint16_t xlf = get16(hdr + BP_XLOADFLAGS);
	if (version < 0x020c || !(xlf & XLF_KERNEL_64)) {
		close(fd);
		return h->error_set(h, err, -ENOEXEC,
				    "kernel '%s': boot protocol %u.%02u without a 64-bit entry "
				    "(expected 2.12+ with XLF_KERNEL_64)",
				    path, version >> 8, version & 0xff);
	}
	unsigned setup_sects = hdr[BP_SETUP_SECTS] ? hdr[BP_SETUP_SECTS] : 4;
	off_t kernel_off = (off_t)(setup_sects + 1) * 512;
	if (kernel_off >= st.st_size) {
		close(fd);
		return h->error_set(h, err, -ENOEXEC, "kernel '%s': truncated", path);
	}
	uint64_t ksize = (uint64_t)(st.st_size - kernel_off);
	uint8_t *dst = gmem_ptr(&vm->mem, KERNEL_LOAD, ksize);
	if (!dst) {
		close(fd);
		return h->error_set(h, err, -E2BIG,
				    "kernel '%s' (%llu bytes) does not fit in memory", path,
				    (unsigned long long)ksize);
	}
	r = read_all(fd, dst, ksize, kernel_off);
	if (r < 0) {
		close(fd);
		return h->error_set(h, err, r, "kernel '%s': %s", path, strerror(-r));
	}
	/* The zero page starts as a copy of the image's setup header. */
	uint8_t *zp = gmem_ptr(&vm->mem, ZERO_PAGE, 4096);
	memset(zp, 0, 4096);
	size_t hdr_end = 0x202 + hdr[0x201]; /* the jump at 0x200 gives the header's length */
	if (hdr_end > sizeof(hdr))
		hdr_end = sizeof(hdr);
	memcpy(zp + BP_SETUP_SECTS, hdr + BP_SETUP_SECTS, hdr_end - BP_SETUP_SECTS);
	close(fd);
	vm->entry = KERNEL_LOAD + 0x200;
	vm->kernel_end = KERNEL_LOAD + ksize;
	return 0;
}

int boot_load_initrd(struct vm *vm, const char *path, struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return h->error_set(h, err, -errno, "initramfs '%s': %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size == 0) {
		close(fd);
		return h->error_set(h, err, -EINVAL, "initramfs '%s' is empty", path);
	}
	uint8_t *zp = gmem_ptr(&vm->mem, ZERO_PAGE, 4096);
	uint64_t max = get32(zp + BP_INITRD_ADDR_MAX);
	uint64_t top = vm->mem.regions[0].len; /* low RAM */
	if (max && max + 1 < top)
		top = max + 1;
	uint64_t size = (uint64_t)st.st_size;
	uint64_t addr = (top - size) & ~0xfffull;
	if (size >= top || addr < vm->kernel_end + (64u << 20)) {
		close(fd);
		return h->error_set(h, err, -E2BIG,
				    "initramfs '%s' (%llu bytes) does not fit below the kernel's "
				    "limit; give the VM more memory",
				    path, (unsigned long long)size);
	}
	int r = read_all(fd, gmem_ptr(&vm->mem, addr, size), size, 0);
	close(fd);
	if (r < 0)
		return h->error_set(h, err, r, "initramfs '%s': %s", path, strerror(-r));
	put32(zp + BP_RAMDISK_IMAGE, (uint32_t)addr);
	put32(zp + BP_RAMDISK_SIZE, (uint32_t)size);
	put32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(addr >> 32));
	put32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(size >> 32));
	return 0;
}

static void e820_add(uint8_t *zp, uint64_t addr, uint64_t size, uint32_t type)
{
	uint8_t n = zp[BP_E820_ENTRIES];
	if (n >= E820_MAX)
		return;
	uint8_t *e = zp + BP_E820_TABLE + 20u * n;
	put64(e, addr);
	put64(e + 8, size);
	put32(e + 16, type);
	zp[BP_E820_ENTRIES] = (uint8_t)(n + 1);
}

int boot_finish(struct vm *vm, struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	uint8_t *zp = gmem_ptr(&vm->mem, ZERO_PAGE, 4096);
	size_t cl = strlen(vm->cmdline);
	if (cl >= CMDLINE_MAX)
		return h->error_set(h, err, -E2BIG, "kernel command line longer than %d bytes",
				    CMDLINE_MAX - 1);
	memcpy(gmem_ptr(&vm->mem, CMDLINE_ADDR, cl + 1), vm->cmdline, cl + 1);
	zp[BP_TYPE_OF_LOADER] = 0xff; /* "undefined" boot loader */
	zp[BP_LOADFLAGS] |= LOADFLAGS_LOADED_HIGH | LOADFLAGS_CAN_USE_HEAP;
	put32(zp + BP_HEAP_END_PTR, 0xfe00);
	put32(zp + BP_CMD_LINE_PTR, CMDLINE_ADDR);
	put32(zp + BP_EXT_CMD_LINE_PTR, 0);
	put32(zp + BP_CMDLINE_SIZE, (uint32_t)cl);

	/* Memory map: low RAM, the EBDA/BIOS hole (our MP table lives there),
	 * RAM from 1 MiB, the KVM pages below the MMIO window, RAM above 4 GiB. */
	zp[BP_E820_ENTRIES] = 0;
	e820_add(zp, 0, EBDA_START, E820_RAM);
	e820_add(zp, EBDA_START, 0x100000 - EBDA_START, E820_RESERVED);
	uint64_t low_end = vm->mem.regions[0].len;
	uint64_t kvm_pages = GMEM_MMIO_START - 0x4000;
	if (low_end > kvm_pages) {
		e820_add(zp, 0x100000, kvm_pages - 0x100000, E820_RAM);
		e820_add(zp, kvm_pages, low_end - kvm_pages, E820_RESERVED);
	} else {
		e820_add(zp, 0x100000, low_end - 0x100000, E820_RAM);
	}
	if (vm->mem.nregions > 1)
		e820_add(zp, vm->mem.regions[1].gpa, vm->mem.regions[1].len, E820_RAM);

	/* GDT: null, null, __BOOT_CS (64-bit code), __BOOT_DS (data), TSS. */
	uint64_t gdt[5] = {0, 0, 0x00af9b000000ffffull, 0x00cf93000000ffffull,
			   0x00008b0000000067ull};
	memcpy(gmem_ptr(&vm->mem, BOOT_GDT_ADDR, sizeof(gdt)), gdt, sizeof(gdt));

	/* Identity map of the first 1 GiB with 2 MiB pages: enough for the
	 * decompressor, which builds its own tables before touching more. */
	uint8_t *pml4 = gmem_ptr(&vm->mem, BOOT_PML4, 4096);
	uint8_t *pdpt = gmem_ptr(&vm->mem, BOOT_PDPT, 4096);
	uint8_t *pd = gmem_ptr(&vm->mem, BOOT_PD, 4096);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	put64(pml4, BOOT_PDPT | 0x3);
	put64(pdpt, BOOT_PD | 0x3);
	for (uint64_t i = 0; i < 512; i++)
		put64(pd + 8 * i, (i << 21) | 0x83); /* present, writable, 2 MiB page */

	return vcpu_setup_boot(&vm->vcpus[0], vm->entry, ZERO_PAGE, err);
}
