/* SPDX-License-Identifier: Apache-2.0 */
/*
 * storage: the "virtiofs" storage module — FUSE-protocol file servers for
 * virtio-fs shares, every lookup contained with openat2(RESOLVE_IN_ROOT).
 *
 * This is the module's foundation: descriptor and lifecycle.  The server
 * comes in the files beside this one (server.c, inode.c, safe_open.c);
 * until then share_open fails with -ENOSYS and says so.
 */
#include <errno.h>
#include <stdlib.h>

#include <msb/msb-plugin.h>

struct storage_instance {
	const struct msb_host *host;
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

static int storage_share_open(void *inst, const struct msb_share *share, struct msb_fs_server *srv,
			      struct msb_error *err)
{
	struct storage_instance *s = inst;
	(void)srv;
	return s->host->error_set(s->host, err, -ENOSYS,
				  "cannot share %s yet: the virtio-fs server is not built",
				  share->host_path);
}

static void storage_share_close(void *inst, struct msb_fs_server *srv)
{
	(void)inst;
	(void)srv;
}

static const struct msb_storage_ops storage_ops = {
	.size = sizeof(struct msb_storage_ops),
	.share_open = storage_share_open,
	.share_close = storage_share_close,
};

static const struct msb_plugin_desc storage_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_STORAGE,
	.name = "virtiofs",
	.version = "0.1.0",
	.create = storage_create,
	.destroy = storage_destroy,
	.ops = &storage_ops,
};

MSB_PLUGIN_DEFINE(storage_desc)
