/* SPDX-License-Identifier: Apache-2.0 */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "devices/serial.h"
#include "virtio/mmio.h"

/*
 * KVM on Intel needs three pages for the real-mode TSS and one for an
 * identity-map table, at guest addresses no RAM or device uses: just below
 * the MMIO window, which boot.c reports to the guest as reserved.
 */
#define KVM_TSS_ADDR	  (GMEM_MMIO_START - 0x4000)
#define KVM_IDENTITY_ADDR (GMEM_MMIO_START - 0x1000)

/* The API version has been 12 since Linux 2.6.22. */
#define KVM_API_EXPECTED 12

static int kvm_check_caps(struct vm *vm, struct msb_error *err)
{
	static const struct {
		long cap;
		const char *name;
	} needed[] = {
		{KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
		{KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
		{KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
		{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
		{KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
		{KVM_CAP_PIT2, "KVM_CAP_PIT2"},
		{KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
	};
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
		if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, needed[i].cap) <= 0)
			return vm->host->error_set(vm->host, err, -ENOTSUP,
						   "this KVM lacks %s, which msb needs",
						   needed[i].name);
	return 0;
}

int vm_create(struct vm *vm, const struct msb_host *host, unsigned cpus, uint64_t mem_bytes,
	      struct msb_error *err)
{
	memset(vm, 0, sizeof(*vm));
	vm->host = host;
	vm->kvm_fd = vm->vm_fd = vm->epfd = vm->stop_efd = vm->exit_efd = -1;
	vm->console_log_fd = -1;
	for (unsigned i = 0; i < VM_MAX_CPUS; i++)
		vm->vcpus[i].fd = -1;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->exited_cond, NULL);
	if (cpus == 0 || cpus > VM_MAX_CPUS)
		return host->error_set(host, err, -EINVAL, "cpus %u out of range (1-%d)", cpus,
				       VM_MAX_CPUS);

	const char *dev = getenv("MSB_KVM_DEVICE");
	if (!dev)
		dev = "/dev/kvm";
	vm->kvm_fd = open(dev, O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0)
		return host->error_set(host, err, -errno,
				       "no usable %s (%s): run where KVM is available, or inside "
				       "tests/kvmhost/run",
				       dev, strerror(errno));
	int api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_EXPECTED)
		return host->error_set(host, err, -ENOTSUP, "%s speaks KVM API %d, expected %d",
				       dev, api, KVM_API_EXPECTED);
	int r = kvm_check_caps(vm, err);
	if (r < 0)
		return r;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return host->error_set(host, err, -errno, "KVM_CREATE_VM: %s", strerror(errno));
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size <= 0)
		return host->error_set(host, err, -EIO, "KVM_GET_VCPU_MMAP_SIZE failed");
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
		return host->error_set(host, err, -errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
	uint64_t ident = KVM_IDENTITY_ADDR;
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0)
		return host->error_set(host, err, -errno, "KVM_SET_IDENTITY_MAP_ADDR: %s",
				       strerror(errno));
	/* In-kernel PIC, IOAPIC and LAPICs, and the PIT: no interrupt-controller emulation
	 * in msb, and no exit per timer tick. */
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return host->error_set(host, err, -errno, "KVM_CREATE_IRQCHIP: %s",
				       strerror(errno));
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return host->error_set(host, err, -errno, "KVM_CREATE_PIT2: %s", strerror(errno));

	r = gmem_init(&vm->mem, mem_bytes);
	if (r < 0)
		return host->error_set(host, err, r, "guest memory (%llu bytes): %s",
				       (unsigned long long)mem_bytes, strerror(-r));
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		struct kvm_userspace_memory_region region = {
			.slot = i,
			.guest_phys_addr = vm->mem.regions[i].gpa,
			.memory_size = vm->mem.regions[i].len,
			.userspace_addr = (uint64_t)(uintptr_t)vm->mem.regions[i].host,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
			return host->error_set(host, err, -errno, "KVM_SET_USER_MEMORY_REGION: %s",
					       strerror(errno));
	}
	vm->ncpus = cpus;
	for (unsigned i = 0; i < cpus; i++)
		if ((r = vcpu_create(vm, (int)i, err)) < 0)
			return r;

	vm->epfd = epoll_create1(EPOLL_CLOEXEC);
	vm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->exit_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->epfd < 0 || vm->stop_efd < 0 || vm->exit_efd < 0)
		return host->error_set(host, err, -errno, "epoll/eventfd: %s", strerror(errno));
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (epoll_ctl(vm->epfd, EPOLL_CTL_ADD, vm->stop_efd, &ev) < 0)
		return host->error_set(host, err, -errno, "epoll_ctl: %s", strerror(errno));
	vm->serial = serial_new(vm);
	if (!vm->serial)
		return host->error_set(host, err, -ENOMEM, "out of memory");
	return 0;
}

int vm_add_vdev(struct vm *vm, struct vdev *d, struct msb_error *err)
{
	if (vm->nvdevs >= VM_MAX_VDEVS)
		return vm->host->error_set(vm->host, err, -ENOSPC, "too many devices (at most %d)",
					   VM_MAX_VDEVS);
	unsigned i = vm->nvdevs;
	int r = vdev_attach(d, vm, VM_MMIO_BASE + (uint64_t)i * VM_MMIO_STRIDE,
			    VM_VDEV_IRQ_BASE + i, err);
	if (r < 0)
		return r;
	vm->vdevs[vm->nvdevs++] = d;
	return 0;
}

int vm_watch(struct vm *vm, int fd, uint32_t epoll_events, vm_event_cb cb, void *arg)
{
	if (vm->nwatches >= VM_WATCH_MAX)
		return -ENOSPC;
	struct vm_watch *w = &vm->watches[vm->nwatches];
	*w = (struct vm_watch){fd, cb, arg};
	struct epoll_event ev = {.events = epoll_events, .data.ptr = w};
	if (epoll_ctl(vm->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	vm->nwatches++;
	return 0;
}

int vm_watch_mod(struct vm *vm, int fd, uint32_t epoll_events)
{
	for (unsigned i = 0; i < vm->nwatches; i++) {
		if (vm->watches[i].fd != fd)
			continue;
		struct epoll_event ev = {.events = epoll_events, .data.ptr = &vm->watches[i]};
		return epoll_ctl(vm->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
	}
	return -ENOENT;
}

/* The VMM thread: device queues and back ends, until the VM stops. */
static void *vmm_thread(void *arg)
{
	struct vm *vm = arg;
	for (;;) {
		struct epoll_event evs[32];
		int n = epoll_wait(vm->epfd, evs, 32, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			vm_request_exit(vm, VM_EXIT_ERROR, "VMM thread: epoll_wait failed");
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			struct vm_watch *w = evs[i].data.ptr;
			if (!w) /* stop_efd */
				return NULL;
			w->cb(vm, w->fd, evs[i].events, w->arg);
		}
	}
}

int vm_start(struct vm *vm, struct msb_error *err)
{
	int r = mptable_write(vm, err);
	if (r < 0)
		return r;
	r = boot_finish(vm, err);
	if (r < 0)
		return r;
	r = vm->host->thread_create(vm->host, MSB_THREAD_VMM, "msb-vmm", vmm_thread, vm,
				    &vm->vmm_thread);
	if (r < 0)
		return vm->host->error_set(vm->host, err, r, "starting the VMM thread: %s",
					   strerror(-r));
	vm->vmm_started = true;
	for (unsigned i = 0; i < vm->ncpus; i++)
		if ((r = vcpu_start(&vm->vcpus[i], err)) < 0)
			return r;
	return 0;
}

void vm_request_exit(struct vm *vm, int kind, const char *detail)
{
	pthread_mutex_lock(&vm->lock);
	bool first = vm->exit_kind == VM_RUNNING;
	if (first) {
		vm->exit_kind = kind;
		snprintf(vm->exit_detail, sizeof(vm->exit_detail), "%s", detail ? detail : "");
	}
	vm->stopping = true;
	pthread_cond_broadcast(&vm->exited_cond);
	pthread_mutex_unlock(&vm->lock);
	if (!first)
		return;
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	uint64_t one = 1;
	(void)!write(vm->stop_efd, &one, sizeof(one));
	(void)!write(vm->exit_efd, &one, sizeof(one));
}

int vm_irq_pulse(struct vm *vm, unsigned irq)
{
	struct kvm_irq_level l = {.irq = irq, .level = 1};
	if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0)
		return -errno;
	l.level = 0;
	return ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

/* The i8042 keyboard controller's reset line: the guest's reboot=k path. */
#define I8042_DATA	0x60
#define I8042_CMD	0x64
#define I8042_CMD_RESET 0xfe

void vm_pio(struct vm *vm, uint16_t port, uint8_t *data, unsigned size, bool is_write)
{
	if (serial_handles(port)) {
		serial_pio(vm->serial, port, data, size, is_write);
		return;
	}
	if (port == I8042_CMD && is_write && size == 1 && data[0] == I8042_CMD_RESET) {
		vm_request_exit(vm, VM_EXIT_REBOOT, "the guest reset the machine");
		return;
	}
	if (!is_write) {
		/* Nothing here: an empty ISA bus reads as all ones, except the
		 * keyboard controller's status (no data, input buffer empty). */
		memset(data, port == I8042_CMD ? 0 : 0xff, size);
	}
}

void vm_mmio(struct vm *vm, uint64_t addr, uint8_t *data, unsigned size, bool is_write)
{
	if (addr >= VM_MMIO_BASE && addr < VM_MMIO_BASE + (uint64_t)vm->nvdevs * VM_MMIO_STRIDE) {
		struct vdev *d = vm->vdevs[(addr - VM_MMIO_BASE) / VM_MMIO_STRIDE];
		vdev_mmio(d, (addr - VM_MMIO_BASE) % VM_MMIO_STRIDE, data, size, is_write);
		return;
	}
	if (!is_write)
		memset(data, 0xff, size);
}

void vm_destroy(struct vm *vm)
{
	if (vm->kvm_fd < 0 && vm->vm_fd < 0 && !vm->mem.nregions)
		return;
	vm_request_exit(vm, VM_EXIT_KILLED, "the monitor was closed");
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].started)
			pthread_join((pthread_t)vm->vcpus[i].thread, NULL);
	if (vm->vmm_started)
		pthread_join((pthread_t)vm->vmm_thread, NULL);
	for (unsigned i = 0; i < vm->nvdevs; i++)
		vdev_free(vm->vdevs[i]);
	serial_free(vm->serial);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		if (vm->vcpus[i].run)
			munmap(vm->vcpus[i].run, (size_t)vm->run_size);
		if (vm->vcpus[i].fd >= 0)
			close(vm->vcpus[i].fd);
	}
	int fds[] = {vm->epfd,	vm->stop_efd, vm->exit_efd,
		     vm->vm_fd, vm->kvm_fd,   vm->console_log_fd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	gmem_free(&vm->mem);
	vm->kvm_fd = vm->vm_fd = -1;
}
