/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net: the "netfilter" network module — per-sandbox network namespace and
 * TAP, nftables egress policy, DNS interception and pinning.
 *
 * This is the module's foundation: descriptor and lifecycle.  The network
 * itself comes in the files beside this one (netns.c, policy.c, nft.c,
 * dns.c); until then setup fails with -ENOSYS and says so, and reap finds
 * nothing to clean because nothing is ever made.
 */
#include <errno.h>
#include <stdlib.h>

#include <msb/msb-plugin.h>

struct net_instance {
	const struct msb_host *host;
};

static int net_create(const struct msb_host *host, void **inst, struct msb_error *err)
{
	struct net_instance *n = calloc(1, sizeof(*n));
	if (!n)
		return host->error_set(host, err, -ENOMEM, "out of memory");
	n->host = host;
	*inst = n;
	return 0;
}

static void net_destroy(void *inst)
{
	free(inst);
}

static int net_setup(void *inst, const struct msb_net_config *cfg, struct msb_net_attach *attach,
		     struct msb_error *err)
{
	struct net_instance *n = inst;
	(void)attach;
	if (!cfg->enabled)
		return 0; /* --no-net: nothing to build, and that is complete */
	return n->host->error_set(n->host, err, -ENOSYS,
				  "sandbox networking is not built yet; use --no-net");
}

static int net_apply_policy(void *inst, const char *network_json, struct msb_error *err)
{
	struct net_instance *n = inst;
	(void)network_json;
	return n->host->error_set(n->host, err, -ENOSYS, "egress policy is not built yet");
}

static int net_teardown(void *inst, struct msb_error *err)
{
	(void)inst;
	(void)err;
	return 0;
}

static int net_reap(const struct msb_host *host, struct msb_error *err)
{
	(void)host;
	(void)err;
	return 0;
}

static const struct msb_net_ops net_ops = {
	.size = sizeof(struct msb_net_ops),
	.setup = net_setup,
	.apply_policy = net_apply_policy,
	.teardown = net_teardown,
	.reap = net_reap,
};

static const struct msb_plugin_desc net_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_NET,
	.name = "netfilter",
	.version = "0.1.0",
	.create = net_create,
	.destroy = net_destroy,
	.ops = &net_ops,
};

MSB_PLUGIN_DEFINE(net_desc)
