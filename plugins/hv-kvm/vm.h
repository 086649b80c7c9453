/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VM: one KVM VM, its RAM, its vCPUs and its devices.  Threads: one per
 * vCPU (hostile code runs there from the first KVM_RUN) and one VMM thread
 * serving device queues and back ends.  Both are made through the host's
 * thread_create so the core can confine each class.
 */
#ifndef MSB_HV_VM_H
#define MSB_HV_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <msb/msb-plugin.h>

#include "memory.h"

#define VM_MAX_CPUS	 64
#define VM_MAX_VDEVS	 16
#define VM_MMIO_BASE	 GMEM_MMIO_START
#define VM_MMIO_STRIDE	 0x1000u
#define VM_VDEV_IRQ_BASE 5 /* 0-4 are the PIT, keyboard, cascade, COM2, COM1 */

struct vdev;
struct serial;
struct vm;

typedef void (*vm_event_cb)(struct vm *vm, int fd, uint32_t events, void *arg);

struct vm_watch {
	int fd;
	vm_event_cb cb;
	void *arg;
};
#define VM_WATCH_MAX 64

struct vcpu {
	struct vm *vm;
	int index;
	int fd;
	struct kvm_run *run;
	unsigned long thread;
	bool started;
};

enum vm_exit_kind {
	VM_RUNNING = 0,
	VM_EXIT_REBOOT, /* the guest reset the machine (its reboot and poweroff path) */
	VM_EXIT_PANIC,	/* the guest kernel panicked */
	VM_EXIT_KILLED, /* the host stopped it */
	VM_EXIT_ERROR,	/* the monitor failed, or the guest did something fatal */
};

struct vm {
	const struct msb_host *host;
	int kvm_fd;
	int vm_fd;
	int run_size;
	struct gmem mem;
	unsigned ncpus;
	struct vcpu vcpus[VM_MAX_CPUS];
	struct vdev *vdevs[VM_MAX_VDEVS];
	unsigned nvdevs;
	struct serial *serial;
	int console_log_fd;

	/* Boot. */
	uint64_t entry;
	uint64_t kernel_end;
	char cmdline[4096];

	/* The VMM thread's event loop. */
	int epfd;
	int stop_efd; /* written to stop the VMM thread */
	struct vm_watch watches[VM_WATCH_MAX];
	unsigned nwatches;
	unsigned long vmm_thread;
	bool vmm_started;

	/* How it ended.  Guarded by lock; `exited` wakes waiters. */
	pthread_mutex_t lock;
	pthread_cond_t exited_cond;
	int exit_kind;
	char exit_detail[256];
	bool stopping;
	int exit_efd; /* readable once the VM has ended, for event loops */
};

int vm_create(struct vm *vm, const struct msb_host *host, unsigned cpus, uint64_t mem_bytes,
	      struct msb_error *err);
void vm_destroy(struct vm *vm);
/* Register a device; assigns its MMIO window and IRQ. */
int vm_add_vdev(struct vm *vm, struct vdev *d, struct msb_error *err);
/* Watch fd on the VMM thread's loop. */
int vm_watch(struct vm *vm, int fd, uint32_t epoll_events, vm_event_cb cb, void *arg);
int vm_watch_mod(struct vm *vm, int fd, uint32_t epoll_events);
int vm_start(struct vm *vm, struct msb_error *err);
/* Record how the VM ended (first reason wins) and stop every thread. */
void vm_request_exit(struct vm *vm, int kind, const char *detail);
/* Pulse an IRQ line (edge). */
int vm_irq_pulse(struct vm *vm, unsigned irq);

/* vcpu.c */
int vcpu_create(struct vm *vm, int index, struct msb_error *err);
int vcpu_setup_boot(struct vcpu *c, uint64_t entry, uint64_t boot_params, struct msb_error *err);
int vcpu_start(struct vcpu *c, struct msb_error *err);
void vcpu_kick(struct vcpu *c);

/* boot.c: load a bzImage (or a PVH-less vmlinux is refused) and the initramfs. */
int boot_load_kernel(struct vm *vm, const char *path, struct msb_error *err);
int boot_load_initrd(struct vm *vm, const char *path, struct msb_error *err);
/* Write the zero page, command line, e820 map, page tables and GDT. */
int boot_finish(struct vm *vm, struct msb_error *err);
/* mptable.c */
int mptable_write(struct vm *vm, struct msb_error *err);

/* Port I/O and MMIO dispatch from vCPU exits. */
void vm_pio(struct vm *vm, uint16_t port, uint8_t *data, unsigned size, bool is_write);
void vm_mmio(struct vm *vm, uint64_t addr, uint8_t *data, unsigned size, bool is_write);

#endif
