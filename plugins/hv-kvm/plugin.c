/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hv-kvm: msb's own KVM virtual machine monitor, as an msb hypervisor module.
 *
 * configure() creates the VM (RAM, vCPUs, in-kernel irqchip and PIT), loads
 * the kernel and initramfs, and makes the agent's channel (virtio-console)
 * and an entropy source (virtio-rng); add_disk() adds virtio-blk disks in
 * order (vda, vdb, ...); add_net() adds a virtio-net device on the network
 * module's TAP (eth0, eth1, ... in order); add_fs() adds one virtio-fs device
 * per share (its tag names it in the guest); start() writes the boot
 * structures and runs it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb-plugin.h>

#include "devices/devices.h"
#include "devices/serial.h"
#include "virtio/mmio.h"
#include "vm.h"

/*
 * The guest's fixed command line.  reboot=k: reboots (and the agent's
 * power-off) go through the keyboard controller's reset line, which ends the
 * VM.  panic=-1: a panic resets at once (the console shows why).  pci=off,
 * no ACPI: devices come from virtio_mmio.device= entries and the MP table.
 */
static const char base_cmdline[] =
	"console=ttyS0 reboot=k panic=-1 pci=off nomodule 8250.nr_uarts=1 i8042.noaux "
	"i8042.nomux i8042.nopnp i8042.dumbkbd quiet";

struct kvm_instance {
	const struct msb_host *host;
	struct vm vm;
	bool configured;
	bool started;
	int agent_fd; /* host end of the agent channel */
	char extra_cmdline[2048];
	const char *reason;
};

static int kvm_create(const struct msb_host *host, void **inst, struct msb_error *err)
{
	/* Fail before anything is prepared when this machine cannot run VMs. */
	const char *dev = getenv("MSB_KVM_DEVICE");
	if (!dev)
		dev = "/dev/kvm";
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return host->error_set(host, err, -errno,
				       "no usable %s (%s): run where KVM is available, or inside "
				       "tests/kvmhost/run",
				       dev, strerror(errno));
	close(fd);
	/*
	 * A /dev/kvm without VMX or SVM under it (kvm_pvm, say) opens and makes
	 * VMs, but cannot boot an ordinary kernel: say so now rather than spin
	 * until the agent timeout.  MSB_KVM_NO_CPU_CHECK=1 skips the check.
	 */
	if (!getenv("MSB_KVM_NO_CPU_CHECK")) {
		FILE *ci = fopen("/proc/cpuinfo", "r");
		char line[4096];
		int hw = ci ? 0 : 1;
		while (ci && !hw && fgets(line, sizeof(line), ci))
			if (!strncmp(line, "flags", 5) &&
			    (strstr(line, " vmx") || strstr(line, " svm")))
				hw = 1;
		if (ci)
			fclose(ci);
		if (!hw)
			return host->error_set(
				host, err, -ENOTSUP,
				"%s has no hardware virtualization (vmx/svm) under it: run "
				"inside tests/kvmhost/run",
				dev);
	}
	struct kvm_instance *k = calloc(1, sizeof(*k));
	if (!k)
		return host->error_set(host, err, -ENOMEM, "out of memory");
	k->host = host;
	k->agent_fd = -1;
	k->vm.kvm_fd = k->vm.vm_fd = -1;
	*inst = k;
	return 0;
}

static void kvm_destroy(void *inst)
{
	struct kvm_instance *k = inst;
	if (!k)
		return;
	if (k->configured)
		vm_destroy(&k->vm);
	if (k->agent_fd >= 0)
		close(k->agent_fd);
	free(k);
}

static int add_vdev(struct kvm_instance *k, struct vdev *d, struct msb_error *err)
{
	int r = vm_add_vdev(&k->vm, d, err);
	if (r < 0)
		vdev_free(d);
	return r;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static int kvm_configure(void *inst, const struct msb_vm_config *cfg, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	const struct msb_host *h = k->host;
	if (k->configured)
		return h->error_set(h, err, -EBUSY, "the VM is already configured");
	if (!cfg->kernel_path)
		return h->error_set(h, err, -EINVAL, "no kernel given");
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int r = vm_create(&k->vm, h, cfg->cpus ? cfg->cpus : 1,
			  cfg->memory_bytes ? cfg->memory_bytes : (512ull << 20), err);
	k->configured = true; /* vm_destroy cleans up whatever vm_create made */
	if (r < 0)
		return r;
	double t_vm = ms_since(&t0);
	if ((r = boot_load_kernel(&k->vm, cfg->kernel_path, err)) < 0)
		return r;
	double t_kernel = ms_since(&t0);
	if (cfg->initrd_path && (r = boot_load_initrd(&k->vm, cfg->initrd_path, err)) < 0)
		return r;
	h->log(h, MSB_LOG_DEBUG,
	       "VM made in %.1f ms, kernel loaded in %.1f ms, initramfs in %.1f ms", t_vm,
	       t_kernel - t_vm, ms_since(&t0) - t_kernel);
	if (cfg->console_log) {
		k->vm.console_log_fd =
			open(cfg->console_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (k->vm.console_log_fd < 0)
			return h->error_set(h, err, -errno, "console log '%s': %s",
					    cfg->console_log, strerror(errno));
		serial_set_output(k->vm.serial, k->vm.console_log_fd);
	}
	snprintf(k->extra_cmdline, sizeof(k->extra_cmdline), "%s",
		 cfg->cmdline ? cfg->cmdline : "");
	struct vdev *d;
	if ((r = console_new(&k->vm, &k->agent_fd, &d, err)) < 0 || (r = add_vdev(k, d, err)) < 0)
		return r;
	if ((r = rng_new(&k->vm, &d, err)) < 0 || (r = add_vdev(k, d, err)) < 0)
		return r;
	return 0;
}

static int kvm_add_disk(void *inst, const struct msb_disk *disk, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	if (!k->configured || k->started)
		return k->host->error_set(k->host, err, -EINVAL,
					  "disks are added after configure, before start");
	struct vdev *d;
	int r = blk_new(&k->vm, disk->path, disk->read_only, disk->serial, &d, err);
	if (r < 0)
		return r;
	return add_vdev(k, d, err);
}

static int kvm_add_net(void *inst, const struct msb_net_attach *net, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	if (!k->configured || k->started)
		return k->host->error_set(
			k->host, err, -EINVAL,
			"network devices are added after configure, before start");
	struct vdev *d;
	int r = net_new(&k->vm, net, &d, err);
	if (r < 0)
		return r;
	return add_vdev(k, d, err);
}

static int kvm_add_fs(void *inst, const struct msb_fs_server *fs, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	if (!k->configured || k->started)
		return k->host->error_set(k->host, err, -EINVAL,
					  "shares are added after configure, before start");
	struct vdev *d;
	int r = fs_new(&k->vm, fs, &d, err);
	if (r < 0)
		return r;
	return add_vdev(k, d, err);
}

static int kvm_start(void *inst, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	const struct msb_host *h = k->host;
	if (!k->configured || k->started)
		return h->error_set(h, err, -EINVAL, "start needs a configured, unstarted VM");
	size_t len = (size_t)snprintf(k->vm.cmdline, sizeof(k->vm.cmdline), "%s", base_cmdline);
	/*
	 * MSB_GUEST_DEBUG=1: the guest kernel's boot messages on the console
	 * log; =2: each initcall's time in the guest's kernel log (dmesg), the
	 * console left quiet so the timing is not the console's.
	 */
	const char *dbg = getenv("MSB_GUEST_DEBUG");
	if (dbg && !strcmp(dbg, "1") && len < sizeof(k->vm.cmdline))
		len += (size_t)snprintf(
			k->vm.cmdline + len, sizeof(k->vm.cmdline) - len,
			" loglevel=8 earlyprintk=serial,ttyS0,115200 ignore_loglevel");
	else if (dbg && !strcmp(dbg, "2") && len < sizeof(k->vm.cmdline))
		len += (size_t)snprintf(k->vm.cmdline + len, sizeof(k->vm.cmdline) - len,
					" initcall_debug printk.time=1 log_buf_len=1M");
	for (unsigned i = 0; i < k->vm.nvdevs && len < sizeof(k->vm.cmdline); i++)
		len += (size_t)vdev_cmdline(k->vm.vdevs[i], k->vm.cmdline + len,
					    sizeof(k->vm.cmdline) - len);
	if (k->extra_cmdline[0] && len < sizeof(k->vm.cmdline))
		len += (size_t)snprintf(k->vm.cmdline + len, sizeof(k->vm.cmdline) - len, " %s",
					k->extra_cmdline);
	if (len >= sizeof(k->vm.cmdline))
		return h->error_set(h, err, -E2BIG, "kernel command line too long");
	int r = vm_start(&k->vm, err);
	if (r < 0)
		return r;
	k->started = true;
	return 0;
}

static int kvm_agent_connect(void *inst, int *fd, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	if (k->agent_fd < 0)
		return k->host->error_set(k->host, err, -ENOTCONN, "the VM has no agent channel");
	*fd = fcntl(k->agent_fd, F_DUPFD_CLOEXEC, 0);
	if (*fd < 0)
		return k->host->error_set(k->host, err, -errno, "dup: %s", strerror(errno));
	return 0;
}

static int kvm_kill(void *inst, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	(void)err;
	if (k->configured)
		vm_request_exit(&k->vm, VM_EXIT_KILLED, "stopped by the host");
	return 0;
}

static int kvm_exited(void *inst, const char **reason, const char **detail)
{
	struct kvm_instance *k = inst;
	static const char *const names[] = {"running", "reboot", "panic", "killed", "error"};
	if (!k->configured) {
		*reason = "error";
		*detail = "never started";
		return 1;
	}
	pthread_mutex_lock(&k->vm.lock);
	int kind = k->vm.exit_kind;
	pthread_mutex_unlock(&k->vm.lock);
	if (kind == VM_RUNNING)
		return 0;
	*reason = names[kind];
	*detail = k->vm.exit_detail;
	return 1;
}

static int kvm_exit_fd(void *inst)
{
	struct kvm_instance *k = inst;
	return k->configured ? k->vm.exit_efd : -1;
}

static const struct msb_hv_ops kvm_ops = {
	.size = sizeof(struct msb_hv_ops),
	.configure = kvm_configure,
	.add_disk = kvm_add_disk,
	.add_net = kvm_add_net,
	.add_fs = kvm_add_fs,
	.start = kvm_start,
	.agent_connect = kvm_agent_connect,
	.kill = kvm_kill,
	.exited = kvm_exited,
	.exit_fd = kvm_exit_fd,
};

static const struct msb_plugin_desc kvm_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_HV,
	.name = "kvm",
	.version = "0.2.0",
	.features = MSB_HV_F_SMP | MSB_HV_F_VIRTIO_FS | MSB_HV_F_VIRTIO_NET,
	.create = kvm_create,
	.destroy = kvm_destroy,
	.ops = &kvm_ops,
};

MSB_PLUGIN_DEFINE(kvm_desc)
