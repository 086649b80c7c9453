/* SPDX-License-Identifier: Apache-2.0 */
/*
 * hello: the smallest useful msb module, as a third party would write it.
 *
 * It is a storage module named "hello" whose shares refuse politely; what it
 * shows is the shape every module has:
 *   - one static const descriptor, stamped with MSB_PLUGIN_ABI and sizeof;
 *   - create / phase / destroy callbacks that keep their state in an
 *     instance, never in globals (one process may run several sandboxes);
 *   - errors as a negative errno plus a message through host->error_set;
 *   - MSB_PLUGIN_DEFINE(desc) exporting msb_plugin_entry_v1.
 */
#include <errno.h>
#include <stdlib.h>

#include <msb/msb-plugin.h>

struct hello {
	const struct msb_host *host;
	unsigned phases_seen;
};

static int hello_create(const struct msb_host *host, void **inst, struct msb_error *err)
{
	struct hello *h = calloc(1, sizeof(*h));
	if (!h)
		return host->error_set(host, err, -ENOMEM, "out of memory");
	h->host = host;
	host->log(host, MSB_LOG_INFO, "hello, sandbox %s", host->sandbox_name);
	*inst = h;
	return 0;
}

static int hello_phase(void *inst, int phase, struct msb_error *err)
{
	struct hello *h = inst;
	(void)err;
	h->phases_seen |= 1u << phase;
	return 0;
}

static void hello_destroy(void *inst)
{
	free(inst);
}

static int hello_share_open(void *inst, const struct msb_share *share, struct msb_fs_server *srv,
			    struct msb_error *err)
{
	struct hello *h = inst;
	(void)srv;
	return h->host->error_set(h->host, err, -EOPNOTSUPP, "hello does not serve %s",
				  share->host_path);
}

static void hello_share_close(void *inst, struct msb_fs_server *srv)
{
	(void)inst;
	(void)srv;
}

static const struct msb_storage_ops hello_ops = {
	.size = sizeof(struct msb_storage_ops),
	.share_open = hello_share_open,
	.share_close = hello_share_close,
};

static const struct msb_plugin_desc hello_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_STORAGE,
	.name = "hello",
	.version = "1.0.0",
	.create = hello_create,
	.phase = hello_phase,
	.destroy = hello_destroy,
	.ops = &hello_ops,
};

MSB_PLUGIN_DEFINE(hello_desc)
