/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vCPUs.  From its first KVM_RUN a vCPU thread runs hostile code; everything
 * it hands the monitor (port and MMIO exits) is bounded by the dispatchers in
 * vm.c, which only ever touch device registers.
 */
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm.h"

/* The signal that kicks a vCPU out of KVM_RUN. */
#define VCPU_KICK_SIGNAL (SIGRTMIN + 4)

#define MSR_IA32_MISC_ENABLE		 0x1a0
#define MSR_IA32_MISC_ENABLE_FAST_STRING 1

#define CPUID_MAX_ENTRIES 256

static int set_cpuid(struct vcpu *c, struct msb_error *err)
{
	const struct msb_host *h = c->vm->host;
	size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *cpuid = calloc(1, sz);
	if (!cpuid)
		return h->error_set(h, err, -ENOMEM, "out of memory");
	cpuid->nent = CPUID_MAX_ENTRIES;
	if (ioctl(c->vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) {
		int e = errno;
		free(cpuid);
		return h->error_set(h, err, -e, "KVM_GET_SUPPORTED_CPUID: %s", strerror(e));
	}
	/* KVM emulates the LAPIC's TSC-deadline mode but leaves the CPUID bit to us;
	 * without it the guest falls back to the PIT, slower and exit-heavy. */
	bool tsc_deadline =
		ioctl(c->vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
	for (uint32_t i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		switch (e->function) {
		case 1:
			if (tsc_deadline)
				e->ecx |= 1u << 24;
			/* Initial APIC id = vCPU index; logical processors in the package. */
			e->ebx = (e->ebx & 0x0000ffffu) | ((uint32_t)c->index << 24) |
				 ((c->vm->ncpus & 0xffu) << 16);
			e->ecx |= 1u << 31; /* "running under a hypervisor" */
			break;
		case 0xb:
		case 0x1f:
			/* x2APIC id of this vCPU. */
			e->edx = (uint32_t)c->index;
			break;
		default:
			break;
		}
	}
	int r = ioctl(c->fd, KVM_SET_CPUID2, cpuid);
	int e = errno;
	free(cpuid);
	if (r < 0)
		return h->error_set(h, err, -e, "KVM_SET_CPUID2: %s", strerror(e));
	return 0;
}

/* LINT0 delivers the PIC's ExtINT, LINT1 NMIs: what a PC's BIOS would program. */
static int set_lint(struct vcpu *c, struct msb_error *err)
{
	const struct msb_host *h = c->vm->host;
	struct kvm_lapic_state lapic;
	if (ioctl(c->fd, KVM_GET_LAPIC, &lapic) < 0)
		return h->error_set(h, err, -errno, "KVM_GET_LAPIC: %s", strerror(errno));
	uint32_t *lvt0 = (uint32_t *)(void *)&lapic.regs[0x350];
	uint32_t *lvt1 = (uint32_t *)(void *)&lapic.regs[0x360];
	*lvt0 = (*lvt0 & ~0x700u) | (7u << 8); /* ExtINT */
	*lvt1 = (*lvt1 & ~0x700u) | (4u << 8); /* NMI */
	if (ioctl(c->fd, KVM_SET_LAPIC, &lapic) < 0)
		return h->error_set(h, err, -errno, "KVM_SET_LAPIC: %s", strerror(errno));
	return 0;
}

int vcpu_create(struct vm *vm, int index, struct msb_error *err)
{
	struct vcpu *c = &vm->vcpus[index];
	c->vm = vm;
	c->index = index;
	c->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (c->fd < 0)
		return vm->host->error_set(vm->host, err, -errno, "KVM_CREATE_VCPU %d: %s", index,
					   strerror(errno));
	c->run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (c->run == MAP_FAILED) {
		c->run = NULL;
		return vm->host->error_set(vm->host, err, -errno, "mmap kvm_run: %s",
					   strerror(errno));
	}
	int r = set_cpuid(c, err);
	if (r == 0)
		r = set_lint(c, err);
	return r;
}

/* GDT layout of the 64-bit boot protocol: __BOOT_CS = 0x10, __BOOT_DS = 0x18. */
#define BOOT_GDT_ADDR 0x500
#define BOOT_CS	      0x10
#define BOOT_DS	      0x18
#define BOOT_TSS      0x20
#define BOOT_PML4     0x9000
#define BOOT_STACK    0x8ff0

#define CR0_PE	 0x1ull
#define CR0_ET	 0x10ull
#define CR0_PG	 0x80000000ull
#define CR4_PAE	 0x20ull
#define EFER_LME 0x100ull
#define EFER_LMA 0x400ull

static struct kvm_segment seg(uint16_t sel, uint8_t type, bool code64)
{
	return (struct kvm_segment){
		.base = 0,
		.limit = 0xffffffff,
		.selector = sel,
		.type = type,
		.present = 1,
		.dpl = 0,
		.db = code64 ? 0 : 1,
		.s = 1,
		.l = code64 ? 1 : 0,
		.g = 1,
	};
}

int vcpu_setup_boot(struct vcpu *c, uint64_t entry, uint64_t boot_params, struct msb_error *err)
{
	const struct msb_host *h = c->vm->host;
	struct kvm_sregs sregs;
	if (ioctl(c->fd, KVM_GET_SREGS, &sregs) < 0)
		return h->error_set(h, err, -errno, "KVM_GET_SREGS: %s", strerror(errno));
	sregs.cs = seg(BOOT_CS, 0xb, true);
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg(BOOT_DS, 0x3, false);
	sregs.tr = (struct kvm_segment){
		.base = 0, .limit = 0x67, .selector = BOOT_TSS, .type = 0xb, .present = 1};
	sregs.gdt.base = BOOT_GDT_ADDR;
	sregs.gdt.limit = 5 * 8 - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	sregs.cr3 = BOOT_PML4;
	sregs.cr4 = CR4_PAE;
	sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(c->fd, KVM_SET_SREGS, &sregs) < 0)
		return h->error_set(h, err, -errno, "KVM_SET_SREGS: %s", strerror(errno));

	struct kvm_regs regs = {
		.rflags = 0x2,
		.rip = entry,
		.rsp = BOOT_STACK,
		.rbp = BOOT_STACK,
		.rsi = boot_params,
	};
	if (ioctl(c->fd, KVM_SET_REGS, &regs) < 0)
		return h->error_set(h, err, -errno, "KVM_SET_REGS: %s", strerror(errno));

	struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
	if (ioctl(c->fd, KVM_SET_FPU, &fpu) < 0)
		return h->error_set(h, err, -errno, "KVM_SET_FPU: %s", strerror(errno));

	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[1];
	} msrs = {.hdr.nmsrs = 1,
		  .e = {{.index = MSR_IA32_MISC_ENABLE, .data = MSR_IA32_MISC_ENABLE_FAST_STRING}}};
	if (ioctl(c->fd, KVM_SET_MSRS, &msrs) != 1)
		return h->error_set(h, err, -EIO, "KVM_SET_MSRS failed");
	return 0;
}

/*
 * Where the guest was when it died: one line for the log (and the reason,
 * for the exit detail), read from this vCPU by its own thread.
 */
static void fatal_state(struct vcpu *c, const char *what, char *detail, size_t len)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	if (ioctl(c->fd, KVM_GET_REGS, &r) < 0 || ioctl(c->fd, KVM_GET_SREGS, &s) < 0) {
		snprintf(detail, len, "%s", what);
		return;
	}
	snprintf(detail, len, "%s at rip %#llx", what, (unsigned long long)r.rip);
	c->vm->host->log(c->vm->host, MSB_LOG_WARN,
			 "vCPU %d: %s: rip %#llx rsp %#llx rflags %#llx cs %#x cr0 %#llx "
			 "cr2 %#llx cr3 %#llx cr4 %#llx efer %#llx",
			 c->index, what, (unsigned long long)r.rip, (unsigned long long)r.rsp,
			 (unsigned long long)r.rflags, s.cs.selector, (unsigned long long)s.cr0,
			 (unsigned long long)s.cr2, (unsigned long long)s.cr3,
			 (unsigned long long)s.cr4, (unsigned long long)s.efer);
}

static void kick_handler(int sig)
{
	(void)sig;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *c = arg;
	struct vm *vm = c->vm;
	/* The host blocks every signal in module threads; the kick must get through. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	for (;;) {
		pthread_mutex_lock(&vm->lock);
		bool stop = vm->stopping;
		pthread_mutex_unlock(&vm->lock);
		if (stop)
			return NULL;
		int r = ioctl(c->fd, KVM_RUN, 0);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				c->run->immediate_exit = 0;
				continue;
			}
			char why[128];
			snprintf(why, sizeof(why), "vCPU %d: KVM_RUN: %s", c->index,
				 strerror(errno));
			vm_request_exit(vm, VM_EXIT_ERROR, why);
			return NULL;
		}
		struct kvm_run *run = c->run;
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			/* Bounded: data_offset and count come from KVM, not the guest. */
			uint8_t *data = (uint8_t *)run + run->io.data_offset;
			for (uint32_t i = 0; i < run->io.count; i++)
				vm_pio(vm, run->io.port, data + i * run->io.size, run->io.size,
				       run->io.direction == KVM_EXIT_IO_OUT);
			break;
		}
		case KVM_EXIT_MMIO:
			vm_mmio(vm, run->mmio.phys_addr, run->mmio.data,
				run->mmio.len <= 8 ? run->mmio.len : 8, run->mmio.is_write);
			break;
		case KVM_EXIT_SHUTDOWN: {
			/* A triple fault: on a PC that resets the machine. */
			char why[128];
			fatal_state(c, "the guest triple-faulted (reset)", why, sizeof(why));
			vm_request_exit(vm, VM_EXIT_REBOOT, why);
			return NULL;
		}
		case KVM_EXIT_SYSTEM_EVENT:
			vm_request_exit(vm, VM_EXIT_REBOOT, "the guest asked for a system reset");
			return NULL;
		case KVM_EXIT_HLT:
			/* Only without an in-kernel LAPIC; treat as the machine halting. */
			vm_request_exit(vm, VM_EXIT_REBOOT, "the guest halted");
			return NULL;
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_FAIL_ENTRY: {
			char what[64], why[128];
			snprintf(what, sizeof(what), "vCPU %d: entry failed (reason 0x%llx)",
				 c->index,
				 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			fatal_state(c, what, why, sizeof(why));
			vm_request_exit(vm, VM_EXIT_ERROR, why);
			return NULL;
		}
		case KVM_EXIT_INTERNAL_ERROR: {
			char what[64], why[128];
			snprintf(what, sizeof(what), "vCPU %d: KVM internal error %u", c->index,
				 run->internal.suberror);
			fatal_state(c, what, why, sizeof(why));
			vm_request_exit(vm, VM_EXIT_ERROR, why);
			return NULL;
		}
		default: {
			char why[128];
			snprintf(why, sizeof(why), "vCPU %d: unexpected exit %u", c->index,
				 run->exit_reason);
			vm_request_exit(vm, VM_EXIT_ERROR, why);
			return NULL;
		}
		}
	}
}

int vcpu_start(struct vcpu *c, struct msb_error *err)
{
	static int handler_installed;
	if (!__atomic_exchange_n(&handler_installed, 1, __ATOMIC_SEQ_CST)) {
		/* No SA_RESTART: the kick must make KVM_RUN return EINTR. */
		struct sigaction sa = {.sa_handler = kick_handler};
		sigemptyset(&sa.sa_mask);
		sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
	}
	char name[16];
	snprintf(name, sizeof(name), "msb-vcpu%d", c->index);
	int r = c->vm->host->thread_create(c->vm->host, MSB_THREAD_VCPU, name, vcpu_thread, c,
					   &c->thread);
	if (r < 0)
		return c->vm->host->error_set(c->vm->host, err, r, "starting vCPU %d: %s", c->index,
					      strerror(-r));
	c->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *c)
{
	if (!c->started)
		return;
	if (c->run)
		c->run->immediate_exit = 1;
	pthread_kill((pthread_t)c->thread, VCPU_KICK_SIGNAL);
}
