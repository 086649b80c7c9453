/* SPDX-License-Identifier: Apache-2.0 */
#include "sandbox.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "seccomp-filters.h"
#include "secretval.h"

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
	/* A secret's value only ever leaves through the proxy, on the network. */
	if (spec->nsecrets && spec->no_net)
		return msb_error_set(err, -EINVAL,
				     "--secret needs the network (it conflicts with --no-net)");
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
			.locks = (uint32_t)v->locks,
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

/* The DNS pin set, asked of the net module on the secrets proxy's behalf. */
static int pin_check(void *ctx, const char *name, const struct sockaddr *addr, socklen_t len)
{
	struct msb_sandbox *sb = ctx;
	return sb->net_module->ops.net.pin_check(sb->net->inst, name, addr, len);
}

static int env_add(struct msb_sandbox *sb, const char *kv, struct msb_error *err)
{
	char **n = realloc(sb->env, (sb->nenv + 2) * sizeof(char *));
	if (!n)
		return msb_error_set(err, -ENOMEM, "out of memory");
	sb->env = n;
	if (!(sb->env[sb->nenv] = strdup(kv)))
		return msb_error_set(err, -ENOMEM, "out of memory");
	sb->env[++sb->nenv] = NULL;
	return 0;
}

/*
 * Wipe a secret's value from this process's environment: the bytes in place
 * (what /proc/PID/environ shows), then the entry.  The proxy holds its own
 * copy, in memory kept out of core dumps.
 */
static void env_scrub(const char *name)
{
	extern char **environ;
	size_t nl = strlen(name);
	for (char **e = environ; e && *e; e++)
		if (!strncmp(*e, name, nl) && (*e)[nl] == '=')
			explicit_bzero(*e + nl + 1, strlen(*e + nl + 1));
	unsetenv(name);
}

/*
 * The secrets proxy, in the namespace net_open made, and the steering of
 * guest TLS to it.  Fills sb->env with the placeholders and CA paths.
 */
static int secrets_open(struct msb_sandbox *sb, const struct msb_spec *spec, const char *name,
			const char *spec_json, const struct msb_net_attach *attach,
			struct msb_error *err)
{
	const struct msb_module *sm = sb->secrets_module, *nm = sb->net_module;
	if (!sm)
		return msb_error_set(err, -ENOENT,
				     "--secret needs a secrets module, and '%s' was not found (see "
				     "msb plugins)",
				     msb_spec_module(spec, MSB_SLOT_SECRETS));
	if (!nm || !sb->net_up || !(nm->desc.features & MSB_NET_F_TLS_STEER) ||
	    !nm->ops.net.steer_tls || !nm->ops.net.pin_check)
		return msb_error_set(
			err, -ENOTSUP,
			"--secret: network module '%s' cannot steer TLS to the secrets "
			"proxy or check DNS pins",
			nm ? nm->name : "?");
	int r = msb_instance_create(sm, name, sb->state_dir, spec_json, NULL, &sb->secrets, err);
	if (r < 0)
		return r;
	struct msb_proxy_config pc = {.size = sizeof(pc),
				      .netns_fd = attach->netns_fd,
				      .pins = {.ctx = sb, .check = pin_check}};
	struct msb_proxy_info info = {.size = sizeof(info)};
	r = sm->ops.secrets.proxy_start(sb->secrets->inst, &pc, &info, err);
	if (r < 0) {
		msb_error_prefix(err, "secrets module '%s': ", sm->name);
		return r;
	}
	sb->secrets_up = true;
	/*
	 * The values are the proxy's now: none stays in this process's
	 * environment, and the process is no longer dumpable (no core file).
	 */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	for (size_t i = 0; i < spec->nsecrets; i++)
		if (!spec->secrets[i].file)
			env_scrub(spec->secrets[i].env);
	msb_secret_vault_wipe();
	msb_config_forget_secrets();
	if (!(sb->ca_path = strdup(info.ca_cert_path)))
		return msb_error_set(err, -ENOMEM, "out of memory");
	info.steer.size = sizeof(info.steer);
	r = nm->ops.net.steer_tls(sb->net->inst, &info.steer, err);
	if (r < 0) {
		msb_error_prefix(err, "network module '%s': steering TLS: ", nm->name);
		return r;
	}
	for (size_t i = 0; i < spec->nsecrets; i++) {
		char kv[512];
		r = sm->ops.secrets.guest_env(sb->secrets->inst, spec->secrets[i].env, kv,
					      sizeof(kv), err);
		if (r < 0 || (r = env_add(sb, kv, err)) < 0)
			return r;
	}
	/* Clients that read their own variables find the bundle with the CA in it. */
	static const char *const ca_env[] = {
		"SSL_CERT_FILE=" MSB_GUEST_CA_BUNDLE, "REQUESTS_CA_BUNDLE=" MSB_GUEST_CA_BUNDLE,
		"CURL_CA_BUNDLE=" MSB_GUEST_CA_BUNDLE, "NODE_EXTRA_CA_CERTS=" MSB_GUEST_CA_FILE};
	for (size_t i = 0; i < sizeof(ca_env) / sizeof(ca_env[0]); i++)
		if ((r = env_add(sb, ca_env[i], err)) < 0)
			return r;
	return 0;
}

static int read_small(const char *path, char **out, size_t *len, size_t max)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	char *b = malloc(max + 1);
	size_t n = b ? fread(b, 1, max + 1, f) : 0;
	int bad = ferror(f);
	fclose(f);
	if (!b || bad || n > max) {
		free(b);
		return b ? (bad ? -EIO : -EFBIG) : -ENOMEM;
	}
	*out = b;
	*len = n;
	return 0;
}

/*
 * The proxy's CA into the guest's trust stores; with --trust-host-cas, the
 * host's roots too, in pieces cut at certificate ends.
 */
static int secrets_trust(struct msb_sandbox *sb, const struct msb_spec *spec, int timeout_ms,
			 struct msb_error *err)
{
	char *pem = NULL;
	size_t len = 0;
	int r = read_small(sb->ca_path, &pem, &len, 64 * 1024);
	if (r < 0)
		return msb_error_set(err, r, "the secrets proxy's CA '%s': %s", sb->ca_path,
				     strerror(-r));
	r = msb_agent_client_trust(sb->agent, MSB_AGENT_TRUST_CA, pem, len, timeout_ms, err);
	free(pem);
	if (r < 0 || !spec->trust_host_cas)
		return r < 0 ? msb_error_prefix(err, "installing the sandbox's CA: "), r : 0;
	const char *host = getenv("SSL_CERT_FILE");
	if (!host || !*host)
		host = "/etc/ssl/certs/ca-certificates.crt";
	r = read_small(host, &pem, &len, 8u << 20);
	if (r < 0)
		return msb_error_set(err, r, "--trust-host-cas: the host's roots '%s': %s", host,
				     strerror(-r));
	static const char end[] = "-----END CERTIFICATE-----";
	size_t off = 0;
	while (r == 0 && off < len) {
		/* The largest run of whole certificates that fits in one frame. */
		size_t cut = off, lim = off + MSB_AGENT_FRAME_MAX - 4;
		for (const char *e = pem + off;
		     (e = memmem(e, len - (size_t)(e - pem), end, sizeof(end) - 1));) {
			size_t stop = (size_t)(e - pem) + sizeof(end) - 1;
			if (stop < len && pem[stop] == '\n')
				stop++;
			if (stop > lim)
				break;
			cut = stop;
			e = pem + stop;
		}
		if (cut == off)
			break; /* no certificate (left), or one bigger than a frame */
		r = msb_agent_client_trust(sb->agent, MSB_AGENT_TRUST_ROOTS, pem + off, cut - off,
					   timeout_ms, err);
		off = cut;
	}
	free(pem);
	return r < 0 ? msb_error_prefix(err, "--trust-host-cas: "), r : 0;
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
		     const struct msb_module *net, const struct msb_module *secrets,
		     const struct msb_assets *assets, const char *state_dir,
		     const struct msb_agent_client_ops *ops, void *opaque, int timeout_ms,
		     struct msb_error *err)
{
	memset(sb, 0, sizeof(*sb));
	sb->agent_fd = -1;
	sb->hv_module = hv;
	sb->storage_module = storage;
	sb->net_module = net;
	sb->secrets_module = secrets;
	int r;
	for (size_t i = 0; i < spec->nenv; i++)
		if ((r = env_add(sb, spec->env[i], err)) < 0)
			goto fail;
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
		if (spec->nsecrets && (r = secrets_open(sb, spec, name, json, &attach, err)) < 0) {
			free(json);
			goto fail;
		}
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
	if (sb->secrets_up && (r = secrets_trust(sb, spec, 10000, err)) < 0)
		goto fail;
	msb_error_clear(err);
	return 0;
fail:
	msb_sandbox_stop(sb, 0);
	return r;
}

int msb_sandbox_confine(struct msb_error *err)
{
	char why[200];
	int r = msb_seccomp_enter(MSB_SECCOMP_SUPERVISOR, why, sizeof(why));
	return r < 0 ? msb_error_set(err, r, "%s", why) : 0;
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
	/* The proxy next: it lives in the network's namespace and uses its pin set. */
	if (sb->secrets) {
		if (sb->secrets_up)
			sb->secrets_module->ops.secrets.proxy_stop(sb->secrets->inst);
		msb_instance_destroy(sb->secrets);
	}
	sb->secrets = NULL;
	sb->secrets_up = false;
	free(sb->ca_path);
	sb->ca_path = NULL;
	for (size_t i = 0; i < sb->nenv; i++)
		free(sb->env[i]);
	free(sb->env);
	sb->env = NULL;
	sb->nenv = 0;
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
