/* SPDX-License-Identifier: Apache-2.0 */
/*
 * storage: the "virtiofs" storage module — FUSE-protocol file servers for
 * virtio-fs shares, every lookup contained with openat2(RESOLVE_IN_ROOT).
 *
 * This file is the module: descriptor, lifecycle, share_open/share_close.
 * The server itself is in server.c and the files it names (fs.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <msb/msb-plugin.h>

#include "fs.h"

struct storage_instance {
	const struct msb_host *host;
	int warned_fallback;
};

static int storage_create(const struct msb_host *host, void **inst, struct msb_error *err)
{
	struct storage_instance *s = calloc(1, sizeof(*s));
	if (!s)
		return host->error_set(host, err, -ENOMEM, "out of memory");
	s->host = host;
	*inst = s;
	return 0;
}

static void storage_destroy(void *inst)
{
	free(inst);
}

/*
 * Each inode the guest holds is an O_PATH fd here, so the server needs many
 * more fds than the default soft limit of 1024: raise it to the hard limit
 * (a process-wide change, logged).  The tables stay bounded by FSRV_MAX_*.
 */
static void raise_nofile(const struct msb_host *host)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rlim_t old = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		host->log(host, MSB_LOG_DEBUG, "RLIMIT_NOFILE raised from %llu to %llu",
			  (unsigned long long)old, (unsigned long long)rl.rlim_max);
}

/* Whether a caller's msb_fs_server of `size` bytes holds ABI 1.4's handle_ref and ref_done. */
static int srv_holds_ref(uint32_t size)
{
	return size >= offsetof(struct msb_fs_server, ref_done) +
			       sizeof(((struct msb_fs_server *)0)->ref_done);
}

static int storage_share_open(void *inst, const struct msb_share *share, struct msb_fs_server *srv,
			      struct msb_error *err)
{
	struct storage_instance *s = inst;
	const struct msb_host *host = s->host;
	if (!share->tag || strlen(share->tag) >= sizeof(srv->tag))
		return host->error_set(host, err, -EINVAL, "share %s: bad virtio-fs tag",
				       share->host_path ? share->host_path : "(none)");
	raise_nofile(host);
	struct fsrv *fs;
	int rc = fsrv_open(host, share, &fs, err);
	if (rc < 0)
		return rc;
	if (!fs->openat2 && !s->warned_fallback) {
		s->warned_fallback = 1;
		host->log(host, MSB_LOG_WARN,
			  "openat2 is not available (ENOSYS): shares resolve each name with "
			  "openat(O_NOFOLLOW) from its directory; mount points are detected "
			  "after the open, by mount id (docs/storage.md)");
	}
	/*
	 * What the caller's struct holds: a core before ABI 1.4 has no
	 * handle_ref (and one that left size 0 is taken to be that old).
	 */
	uint32_t room =
		srv->size ? srv->size : (uint32_t)offsetof(struct msb_fs_server, handle_ref);
	srv->size = sizeof(*srv) < room ? (uint32_t)sizeof(*srv) : room;
	srv->ctx = fs;
	srv->handle = fsrv_handle;
	if (srv_holds_ref(room)) {
		srv->handle_ref = fsrv_handle_ref;
		srv->ref_done = fsrv_ref_done;
	}
	memset(srv->tag, 0, sizeof(srv->tag));
	memcpy(srv->tag, share->tag, strlen(share->tag));
	host->log(host, MSB_LOG_DEBUG, "share %s as %s%s, identity %s", share->host_path, srv->tag,
		  fs->read_only ? " (read-only)" : "",
		  fs->identity == MSB_SHARE_IDENTITY_STRICT ? fs->id_xattr : "off");
	return 0;
}

static void storage_share_close(void *inst, struct msb_fs_server *srv)
{
	(void)inst;
	if (!srv || !srv->ctx)
		return;
	fsrv_close(srv->ctx);
	srv->ctx = NULL;
	srv->handle = NULL;
	if (srv_holds_ref(srv->size)) {
		srv->handle_ref = NULL;
		srv->ref_done = NULL;
	}
}

static const struct msb_storage_ops storage_ops = {
	.size = sizeof(struct msb_storage_ops),
	.share_open = storage_share_open,
	.share_close = storage_share_close,
};

/* Not const: the entry point fills in MSB_STORAGE_F_OPENAT2 once. */
static struct msb_plugin_desc storage_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_STORAGE,
	.name = "virtiofs",
	.version = "0.2.0",
	.create = storage_create,
	.destroy = storage_destroy,
	.ops = &storage_ops,
};

static pthread_once_t features_once = PTHREAD_ONCE_INIT;

static void probe_features(void)
{
	int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0 && fsrv_probe_openat2(fd) == 1)
		storage_desc.features |= MSB_STORAGE_F_OPENAT2;
	if (fd >= 0)
		close(fd);
}

/*
 * The entry point (what MSB_PLUGIN_DEFINE would emit), plus the feature
 * probe: MSB_STORAGE_F_OPENAT2 says whether openat2 works at load time.
 * share_open probes again per share and logs when it has to fall back.
 */
MSB_PLUGIN_EXPORT const struct msb_plugin_desc *msb_plugin_entry_v1(void);
MSB_PLUGIN_EXPORT const struct msb_plugin_desc *msb_plugin_entry_v1(void)
{
	pthread_once(&features_once, probe_features);
	return &storage_desc;
}
