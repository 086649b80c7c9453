/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Booting a sandbox: the root image, the upper disk, the hypervisor module's
 * VM, and the guest agent's connection — wired together by the core, so no
 * module knows another.
 */
#ifndef MSB_CORE_SANDBOX_H
#define MSB_CORE_SANDBOX_H

#include <stdbool.h>

#include <msb/msb.h>

#include "agent-client.h"
#include "host.h"
#include "registry.h"
#include "spec.h"

/* Where the guest kernel and the agent's initramfs are. */
struct msb_assets {
	char *kernel;
	char *initramfs;
};

/*
 * Find the kernel (spec --kernel, MSB_KERNEL, config `kernel`, the build
 * tree's guest/vmlinux or guest/bzImage, the installed ones) and the initramfs (MSB_INITRAMFS,
 * the build tree, the installed one).  Errors say how to get them.
 */
int msb_assets_find(const struct msb_spec *spec, const char *build_root, struct msb_assets *a,
		    struct msb_error *err);
void msb_assets_free(struct msb_assets *a);

/* The virtio-fs tag of the i-th volume: "msbfs0", "msbfs1", ... */
#define MSB_SHARE_TAG_FMT "msbfs%zu"

/* Files of a sandbox's state directory that hold its disks. */
/* Where the agent puts the secrets proxy's CA, alone and in a full bundle. */
#define MSB_GUEST_CA_FILE   "/etc/msb/ca.pem"
#define MSB_GUEST_CA_BUNDLE "/etc/msb/ca-bundle.pem"
#define MSB_ROOT_IMAGE_FILE "root.image" /* the shared root image's path, one line */
#define MSB_UPPER_FILE	    "upper.ext4"

/*
 * Refuse options whose modules are not built yet (-ENOTSUP, one line): a sandbox never silently
 * lacks what it was promised.
 */
int msb_sandbox_check_supported(const struct msb_spec *spec, struct msb_error *err);

struct msb_sandbox {
	const struct msb_module *hv_module;
	struct msb_instance *hv;
	/* Shares: one storage instance, one open file server per spec volume. */
	const struct msb_module *storage_module;
	struct msb_instance *storage;
	struct msb_fs_server *shares;
	size_t nshares; /* opened so far: what stop closes */
	/* The network: a net module instance whose setup made the guest's TAP. */
	const struct msb_module *net_module;
	struct msb_instance *net;
	bool net_up;
	/* Secrets: a secrets module instance whose proxy runs in the network's namespace. */
	const struct msb_module *secrets_module;
	struct msb_instance *secrets;
	bool secrets_up;
	char *ca_path; /* the proxy's CA (PEM), for the guest's trust stores */
	/* Every exec's default environment: the spec's, the secrets' placeholders, CA paths. */
	char **env;
	size_t nenv;
	struct msb_agent_client *agent;
	int agent_fd;
	char *state_dir;
	char *root_image;
	char *upper;
	char *console_log;
};

/*
 * Boot the sandbox whose state directory is state_dir (it holds the disks
 * msb_rootfs_prepare made, and the console log) and wait until its agent
 * said HELLO (timeout_ms).  With volumes (their host_path resolved, see
 * msb_volumes_resolve), a `storage` module instance serves one share per
 * volume, tagged msbfs0, msbfs1, ... in spec order, each a virtio-fs device,
 * and the agent mounts them, in order, before this returns: no workload
 * runs without its shares.  On failure everything made is undone and err
 * says why — with the guest's last words when its kernel panicked.
 * Without --no-net, the `net` module builds the sandbox's network first
 * (its namespace, TAP and policy) and the guest gets one virtio-net device,
 * configured by the agent from msb.net/msb.dns/msb.mtu on its command line.
 * With secrets, the `secrets` module's proxy starts inside that network's
 * namespace, the net module steers guest TLS to it, the agent installs its
 * CA in the guest's trust stores, and sb->env holds each secret's
 * placeholder (never its value) for every command; the values are wiped
 * from this process's environment.
 */
int msb_sandbox_boot(struct msb_sandbox *sb, const struct msb_spec *spec,
		     const struct msb_module *hv, const struct msb_module *storage,
		     const struct msb_module *net, const struct msb_module *secrets,
		     const struct msb_assets *assets, const char *state_dir,
		     const struct msb_agent_client_ops *ops, void *opaque, int timeout_ms,
		     struct msb_error *err);
/*
 * Orderly stop: the agent syncs and powers off; then the VM is torn down
 * (killed after timeout_ms).  Safe on a half-booted sandbox.
 */
void msb_sandbox_stop(struct msb_sandbox *sb, int timeout_ms);
/*
 * Once the sandbox is up, put the calling (main) thread under the
 * supervisor's seccomp filter (core/seccomp-filters.h): it decodes the
 * guest agent's frames from here on.  For the rest of the process's life.
 */
int msb_sandbox_confine(struct msb_error *err);
/* How the VM ended, as "reason: detail", or NULL while it runs. */
const char *msb_sandbox_exit_reason(struct msb_sandbox *sb, char *buf, size_t len);

#endif
