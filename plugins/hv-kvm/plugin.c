/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hv-kvm: msb's own KVM virtual machine monitor.
 *
 * This is the module's foundation: its descriptor and instance lifecycle.
 * An instance checks that /dev/kvm is usable and speaks the stable KVM API
 * (version 12).  The VM itself — memory, vCPUs, Linux boot, virtio-mmio
 * devices — is built in the files that come beside this one (vm.c, vcpu.c,
 * boot.c, virtio/, devices/); until then every VM operation fails with
 * -ENOSYS and says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <msb/msb-plugin.h>

/* From <linux/kvm.h>; the API version has been 12 since Linux 2.6.22. */
#define KVM_API_VERSION_EXPECTED  12
#define KVM_GET_API_VERSION_IOCTL 0xAE00

struct kvm_instance {
	const struct msb_host *host;
	int kvm_fd;
};

static int kvm_create(const struct msb_host *host, void **inst, struct msb_error *err)
{
	const char *dev = getenv("MSB_KVM_DEVICE");
	if (!dev)
		dev = "/dev/kvm";
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return host->error_set(host, err, -errno,
				       "no usable %s (%s): run where KVM is available, or inside "
				       "tests/kvmhost/run",
				       dev, strerror(errno));
	int version = ioctl(fd, KVM_GET_API_VERSION_IOCTL, 0);
	if (version != KVM_API_VERSION_EXPECTED) {
		close(fd);
		return host->error_set(host, err, -ENOTSUP, "%s speaks KVM API %d, expected %d",
				       dev, version, KVM_API_VERSION_EXPECTED);
	}
	struct kvm_instance *k = calloc(1, sizeof(*k));
	if (!k) {
		close(fd);
		return host->error_set(host, err, -ENOMEM, "out of memory");
	}
	k->host = host;
	k->kvm_fd = fd;
	*inst = k;
	return 0;
}

static void kvm_destroy(void *inst)
{
	struct kvm_instance *k = inst;
	if (!k)
		return;
	close(k->kvm_fd);
	free(k);
}

static int not_yet(void *inst, struct msb_error *err)
{
	struct kvm_instance *k = inst;
	return k->host->error_set(k->host, err, -ENOSYS,
				  "the kvm monitor cannot build VMs yet in this build");
}

static int kvm_configure(void *inst, const struct msb_vm_config *cfg, struct msb_error *err)
{
	(void)cfg;
	return not_yet(inst, err);
}

static int kvm_add_disk(void *inst, const struct msb_disk *disk, struct msb_error *err)
{
	(void)disk;
	return not_yet(inst, err);
}

static int kvm_start(void *inst, struct msb_error *err)
{
	return not_yet(inst, err);
}

static int kvm_agent_connect(void *inst, int *fd, struct msb_error *err)
{
	(void)fd;
	return not_yet(inst, err);
}

static int kvm_kill(void *inst, struct msb_error *err)
{
	(void)inst;
	(void)err;
	return 0; /* nothing runs yet */
}

static int kvm_exited(void *inst, const char **reason, const char **detail)
{
	(void)inst;
	*reason = "error";
	*detail = "never started";
	return 1;
}

static const struct msb_hv_ops kvm_ops = {
	.size = sizeof(struct msb_hv_ops),
	.configure = kvm_configure,
	.add_disk = kvm_add_disk,
	.start = kvm_start,
	.agent_connect = kvm_agent_connect,
	.kill = kvm_kill,
	.exited = kvm_exited,
};

static const struct msb_plugin_desc kvm_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_HV,
	.name = "kvm",
	.version = "0.1.0",
	.features = 0,
	.create = kvm_create,
	.destroy = kvm_destroy,
	.ops = &kvm_ops,
};

MSB_PLUGIN_DEFINE(kvm_desc)
