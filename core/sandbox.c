/* SPDX-License-Identifier: Apache-2.0 */
#include "sandbox.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "error.h"

static char *first_existing(const char *const *candidates)
{
	for (size_t i = 0; candidates[i]; i++)
		if (candidates[i][0] && access(candidates[i], R_OK) == 0)
			return realpath(candidates[i], NULL);
	return NULL;
}

int msb_assets_find(const struct msb_spec *spec, const char *build_root, struct msb_assets *a,
		    struct msb_error *err)
{
	memset(a, 0, sizeof(*a));
	char bv[PATH_MAX] = "", bk[PATH_MAX] = "", bi[PATH_MAX] = "";
	if (build_root) {
		snprintf(bv, sizeof(bv), "%s/guest/vmlinux", build_root);
		snprintf(bk, sizeof(bk), "%s/guest/bzImage", build_root);
		snprintf(bi, sizeof(bi), "%s/guest/initramfs.cpio", build_root);
	}
	const char *env_k = getenv("MSB_KERNEL"), *cfg_k = msb_config_get(NULL, "kernel");
	if (spec->kernel) {
		a->kernel = strdup(spec->kernel);
	} else {
		/* The uncompressed vmlinux first: the guest skips its decompressor. */
		const char *const ks[] = {
			env_k ? env_k : "",	  cfg_k ? cfg_k : "",	    bv,	 bk,
			MSB_ASSET_DIR "/vmlinux", MSB_ASSET_DIR "/bzImage", NULL};
		a->kernel = first_existing(ks);
		if (!a->kernel)
			return msb_error_set(
				err, -ENOENT,
				"no guest kernel found (expected --kernel PATH, MSB_KERNEL, "
				"or %s; `make` builds it)",
				build_root ? bk : MSB_ASSET_DIR "/bzImage");
	}
	const char *env_i = getenv("MSB_INITRAMFS");
	const char *const is[] = {env_i ? env_i : "", bi, MSB_ASSET_DIR "/initramfs.cpio", NULL};
	a->initramfs = first_existing(is);
	if (!a->initramfs) {
		msb_assets_free(a);
		return msb_error_set(
			err, -ENOENT,
			"no agent initramfs found (expected MSB_INITRAMFS or %s; `make` "
			"builds it)",
			build_root ? bi : MSB_ASSET_DIR "/initramfs.cpio");
	}
	return 0;
}

void msb_assets_free(struct msb_assets *a)
{
	free(a->kernel);
	free(a->initramfs);
	memset(a, 0, sizeof(*a));
}

const char *msb_sandbox_exit_reason(struct msb_sandbox *sb, char *buf, size_t len)
{
	const char *reason, *detail;
	if (!sb->hv || !sb->hv_module->ops.hv.exited(sb->hv->inst, &reason, &detail))
		return NULL;
	snprintf(buf, len, "%s%s%s", reason, detail && *detail ? ": " : "", detail ? detail : "");
	return buf;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The console's last lines, to show why a guest that never answered died. */
static void console_tail(const char *path, char *out, size_t len)
{
	out[0] = '\0';
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char line[256], last[256] = "";
	while (fgets(line, sizeof(line), f))
		if (line[0] != '\n')
			snprintf(last, sizeof(last), "%s", line);
	fclose(f);
	last[strcspn(last, "\n")] = '\0';
	snprintf(out, len, "%s", last);
}

int msb_sandbox_check_supported(const struct msb_spec *spec, struct msb_error *err)
{
	/*
	 * Options no module serves yet are refused, not ignored: a sandbox
	 * must never silently lack a secret or a port it was promised.
	 */
	if (spec->nsecrets)
		return msb_error_set(err, -ENOTSUP,
				     "--secret is not supported yet (the secrets module is not "
				     "built); nothing was started");
	return 0;
}

/* The root image msb_rootfs_prepare recorded: a path, one line. */
static int read_root_image(const char *state_dir, char **path, struct msb_error *err)
{
	char file[PATH_MAX], buf[PATH_MAX + 2];
	snprintf(file, sizeof(file), "%s/" MSB_ROOT_IMAGE_FILE, state_dir);
	FILE *f = fopen(file, "re");
	if (!f)
		return msb_error_errno(err, -errno, "the sandbox's root image record '%s'", file);
	int ok = fgets(buf, sizeof(buf), f) != NULL;
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	if (!ok || buf[0] != '/')
		return msb_error_set(err, -EINVAL,
				     "the sandbox's root image record '%s' is malformed (expected "
				     "an absolute path)",
				     file);
	if (access(buf, R_OK) != 0)
		return msb_error_errno(err, -errno,
				       "the sandbox's root image '%s' (was it removed?)", buf);
	*path = strdup(buf);
	return *path ? 0 : msb_error_set(err, -ENOMEM, "out of memory");
}

/*
 * Open one share per volume and give each to the hypervisor as a virtio-fs
 * device (before start).  What was opened is in sb->shares[0..nshares),
 * closed by msb_sandbox_stop after the VM is gone.
 */
static int shares_open(struct msb_sandbox *sb, const struct msb_spec *spec, const char *name,
		       const char *spec_json, struct msb_error *err)
{
	const struct msb_module *hv = sb->hv_module, *st = sb->storage_module;
	if (!spec->nvolumes)
		return 0;
	if (!st)
		return msb_error_set(err, -ENOENT,
				     "--volume needs a storage module, and '%s' "
				     "was not found (see msb plugins)",
				     msb_spec_module(spec, MSB_SLOT_STORAGE));
	if (!(hv->desc.features & MSB_HV_F_VIRTIO_FS) || !hv->ops.hv.add_fs)
		return msb_error_set(err, -ENOTSUP,
				     "--volume: hypervisor module '%s' has no virtio-fs device",
				     hv->name);
	sb->shares = calloc(spec->nvolumes, sizeof(*sb->shares));
	if (!sb->shares)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int r = msb_instance_create(st, name, sb->state_dir, spec_json, NULL, &sb->storage, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < spec->nvolumes; i++) {
		const struct msb_volume *v = &spec->volumes[i];
		char tag[sizeof(sb->shares[i].tag)];
		snprintf(tag, sizeof(tag), MSB_SHARE_TAG_FMT, i);
		if (!v->host_path && v->named)
			return msb_error_set(err, -EINVAL, "volume '%s' was not resolved",
					     v->source);
		struct msb_share share = {
			.size = sizeof(share),
			.host_path = v->host_path ? v->host_path : v->source,
			.guest_path = v->target,
			.read_only = v->read_only,
			.noexec = v->noexec,
			.tag = tag,
			.identity = (uint32_t)v->identity,
		};
		struct msb_fs_server *srv = &sb->shares[i];
		memset(srv, 0, sizeof(*srv));
		srv->size = sizeof(*srv);
		r = st->ops.storage.share_open(sb->storage->inst, &share, srv, err);
		if (r < 0) {
			msb_error_prefix(err, "storage module '%s': volume %s:%s: ", st->name,
					 v->source, v->target);
			return r;
		}
		sb->nshares = i + 1;
		/* The tag is the core's choice, whatever the module wrote there. */
		srv->size = sizeof(*srv);
		snprintf(srv->tag, sizeof(srv->tag), "%s", tag);
		r = hv->ops.hv.add_fs(sb->hv->inst, srv, err);
		if (r < 0) {
			msb_error_prefix(err, "hypervisor module '%s': volume %s:%s: ", hv->name,
					 v->source, v->target);
			return r;
		}
	}
	return 0;
}

/*
 * The sandbox's network from the net module: leftovers of dead sandboxes
 * reaped first, then setup, which fills *attach for the hypervisor.
 */
static int net_open(struct msb_sandbox *sb, const struct msb_spec *spec, const char *name,
		    const char *spec_json, struct msb_net_attach *attach, struct msb_error *err)
{
	const struct msb_module *hv = sb->hv_module, *nm = sb->net_module;
	if (!nm)
		return msb_error_set(err, -ENOENT,
				     "network module '%s' not found (see msb plugins); for a "
				     "sandbox without a network, use --no-net",
				     msb_spec_module(spec, MSB_SLOT_NET));
	if (!(hv->desc.features & MSB_HV_F_VIRTIO_NET) || !hv->ops.hv.add_net)
		return msb_error_set(
			err, -ENOTSUP,
			"hypervisor module '%s' has no virtio-net device; use --no-net", hv->name);
	int r = msb_instance_create(nm, name, sb->state_dir, spec_json, NULL, &sb->net, err);
	if (r < 0)
		return r;
	nm->ops.net.reap(&sb->net->host, NULL);
	struct msb_net_config cfg = {.size = sizeof(cfg), .enabled = 1};
	r = nm->ops.net.setup(sb->net->inst, &cfg, attach, err);
	if (r < 0) {
		msb_error_prefix(err, "network module '%s': ", nm->name);
		return r;
	}
	sb->net_up = true;
	if (attach->tap_fd < 0)
		return msb_error_set(err, -EINVAL, "network module '%s' made no TAP", nm->name);
	return 0;
}

/* Ask the agent to mount every share, in spec order (nested targets after their parents). */
static int shares_mount(struct msb_sandbox *sb, const struct msb_spec *spec, int timeout_ms,
			struct msb_error *err)
{
	for (size_t i = 0; i < spec->nvolumes; i++) {
		const struct msb_volume *v = &spec->volumes[i];
		struct msb_agent_mount m = {
			.flags = (v->read_only ? MSB_AGENT_MOUNT_RO : 0) |
				 (v->noexec ? MSB_AGENT_MOUNT_NOEXEC : 0),
			.tag = sb->shares[i].tag,
			.path = v->target,
		};
		int r = msb_agent_client_mount(sb->agent, &m, timeout_ms, err);
		if (r < 0) {
			msb_error_prefix(err, "volume %s:%s: ", v->source, v->target);
			return r;
		}
	}
	return 0;
}

int msb_sandbox_boot(struct msb_sandbox *sb, const struct msb_spec *spec,
		     const struct msb_module *hv, const struct msb_module *storage,
		     const struct msb_module *net, const struct msb_assets *assets,
		     const char *state_dir, const struct msb_agent_client_ops *ops, void *opaque,
		     int timeout_ms, struct msb_error *err)
{
	memset(sb, 0, sizeof(*sb));
	sb->agent_fd = -1;
	sb->hv_module = hv;
	sb->storage_module = storage;
	sb->net_module = net;
	int r;
	sb->state_dir = strdup(state_dir);
	if (!sb->state_dir || asprintf(&sb->upper, "%s/" MSB_UPPER_FILE, state_dir) < 0 ||
	    asprintf(&sb->console_log, "%s/console.log", state_dir) < 0) {
		r = msb_error_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	if ((r = msb_sandbox_check_supported(spec, err)) < 0 ||
	    (r = read_root_image(state_dir, &sb->root_image, err)) < 0)
		goto fail;
	if (access(sb->upper, R_OK | W_OK) != 0) {
		r = msb_error_errno(err, -errno, "the sandbox's upper disk '%s'", sb->upper);
		goto fail;
	}

	char *json = msb_spec_to_json(spec, 0);
	if (!json) {
		r = msb_error_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	const char *name = spec->name ? spec->name : "msb";
	r = msb_instance_create(hv, name, state_dir, json, NULL, &sb->hv, err);
	if (r < 0) {
		free(json);
		goto fail;
	}
	char cmdline[1024];
	int cl = snprintf(cmdline, sizeof(cmdline),
			  "msb.root=/dev/vda msb.upper=/dev/vdb msb.hostname=%s", name);
	struct msb_net_attach attach = {.size = sizeof(attach), .tap_fd = -1, .netns_fd = -1};
	if (!spec->no_net) {
		if ((r = net_open(sb, spec, name, json, &attach, err)) < 0) {
			free(json);
			goto fail;
		}
		snprintf(cmdline + cl, sizeof(cmdline) - (size_t)cl,
			 " msb.net=%s,%s%s%s%s%s msb.dns=%s msb.mtu=%u", attach.guest_ipv4,
			 attach.gateway_ipv4, attach.guest_ipv6[0] ? "," : "", attach.guest_ipv6,
			 attach.guest_ipv6[0] ? "," : "", attach.gateway_ipv6, attach.dns,
			 attach.mtu ? attach.mtu : 1500);
	}
	struct msb_vm_config cfg = {
		.size = sizeof(cfg),
		.cpus = spec->cpus,
		.memory_bytes = spec->memory,
		.kernel_path = assets->kernel,
		.initrd_path = assets->initramfs,
		.cmdline = cmdline,
		.console_log = sb->console_log,
	};
	const struct msb_hv_ops *o = &hv->ops.hv;
	struct msb_disk root = {
		.size = sizeof(root), .path = sb->root_image, .read_only = 1, .serial = "msb-root"};
	struct msb_disk upper = {.size = sizeof(upper), .path = sb->upper, .serial = "msb-upper"};
	if ((r = o->configure(sb->hv->inst, &cfg, err)) < 0 ||
	    (r = o->add_disk(sb->hv->inst, &root, err)) < 0 ||
	    (r = o->add_disk(sb->hv->inst, &upper, err)) < 0) {
		free(json);
		msb_error_prefix(err, "hypervisor module '%s': ", hv->name);
		goto fail;
	}
	if (sb->net_up && (r = o->add_net(sb->hv->inst, &attach, err)) < 0) {
		free(json);
		msb_error_prefix(err, "hypervisor module '%s': network: ", hv->name);
		goto fail;
	}
	r = shares_open(sb, spec, name, json, err);
	free(json);
	if (r < 0)
		goto fail;
	if ((r = o->start(sb->hv->inst, err)) < 0 ||
	    (r = o->agent_connect(sb->hv->inst, &sb->agent_fd, err)) < 0) {
		msb_error_prefix(err, "hypervisor module '%s': ", hv->name);
		goto fail;
	}
	if ((r = msb_agent_client_new(sb->agent_fd, ops, opaque, &sb->agent, err)) < 0)
		goto fail;
	sb->agent_fd = -1; /* the client owns it */

	/* Wait for the agent, watching the VM: a guest that dies says so. */
	long long deadline = now_ms() + timeout_ms;
	for (;;) {
		char why[300];
		if (msb_sandbox_exit_reason(sb, why, sizeof(why))) {
			char tail[256];
			console_tail(sb->console_log, tail, sizeof(tail));
			r = msb_error_set(err, -ECHILD,
					  "the guest stopped before its agent answered (%s)%s%s",
					  why, tail[0] && !strstr(why, tail) ? "; console: " : "",
					  tail[0] && !strstr(why, tail) ? tail : "");
			goto fail;
		}
		r = msb_agent_client_wait_hello(sb->agent, 250, err);
		if (r == 0)
			break;
		if (r != -ETIMEDOUT)
			goto fail;
		if (now_ms() > deadline) {
			r = msb_error_set(
				err, -ETIMEDOUT,
				"the guest agent did not answer within %d s (console log: %s)",
				timeout_ms / 1000, sb->console_log);
			goto fail;
		}
	}
	/* The shares, before anything else can run in the guest. */
	long long left = deadline - now_ms();
	if ((r = shares_mount(sb, spec, left > 10000 ? (int)left : 10000, err)) < 0)
		goto fail;
	msb_error_clear(err);
	return 0;
fail:
	msb_sandbox_stop(sb, 0);
	return r;
}

void msb_sandbox_stop(struct msb_sandbox *sb, int timeout_ms)
{
	if (sb->agent && timeout_ms > 0)
		msb_agent_client_shutdown(sb->agent, MSB_AGENT_POWEROFF, timeout_ms, NULL);
	if (sb->hv) {
		/* After the agent's ACK the disks are synced: the VM can go. */
		sb->hv_module->ops.hv.kill(sb->hv->inst, NULL);
		msb_instance_destroy(sb->hv);
		sb->hv = NULL;
	}
	/* Only now, with the VM (and its virtio-fs workers) gone, may the servers go. */
	for (size_t i = sb->nshares; i-- > 0;)
		sb->storage_module->ops.storage.share_close(sb->storage->inst, &sb->shares[i]);
	sb->nshares = 0;
	free(sb->shares);
	sb->shares = NULL;
	if (sb->storage)
		msb_instance_destroy(sb->storage);
	sb->storage = NULL;
	/* The TAP's last user, the VM, is gone: now the network may go. */
	if (sb->net) {
		if (sb->net_up)
			sb->net_module->ops.net.teardown(sb->net->inst, NULL);
		msb_instance_destroy(sb->net);
	}
	sb->net = NULL;
	sb->net_up = false;
	if (sb->agent)
		msb_agent_client_free(sb->agent);
	sb->agent = NULL;
	if (sb->agent_fd >= 0)
		close(sb->agent_fd);
	sb->agent_fd = -1;
	free(sb->state_dir);
	free(sb->root_image);
	free(sb->upper);
	free(sb->console_log);
	sb->state_dir = sb->root_image = sb->upper = sb->console_log = NULL;
}
