/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net: the "netfilter" network module — a network namespace per sandbox
 * with the guest's TAP and an uplink to the host, the egress policy in
 * nftables, and the DNS interceptor (docs/network.md).  The work is in
 * sandbox.c; this file is the module's face.
 *
 * Module options ([network.netfilter] in the config file):
 *   pool    the IPv4 pool sandboxes' /29 slots come from (10.200.0.0/16)
 *   rundir  where slot locks live (/run/msb/net)
 *   dns     the DNS interceptor's upstream resolvers (the host's resolv.conf)
 */
#include <stddef.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msb/msb-plugin.h>

#include "net.h"

struct net_instance {
	const struct msb_host *host;
	bool up;
	struct snet sn;
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

static int net_teardown(void *inst, struct msb_error *err)
{
	struct net_instance *n = inst;
	(void)err;
	if (n->up)
		snet_destroy(&n->sn);
	n->up = false;
	return 0;
}

static void net_destroy(void *inst)
{
	net_teardown(inst, NULL);
	free(inst);
}

static const char *opt(const struct msb_host *h, const char *key)
{
	const char *v = h->config_get ? h->config_get(h, key) : NULL;
	return v && *v ? v : NULL;
}

/* The DNS interceptor's and the port forwarder's threads: proxy-class threads of the core's. */
static int proxy_thread(void *ctx, void *(*fn)(void *), void *arg, pthread_t *tid)
{
	const struct msb_host *h = ctx;
	unsigned long t;
	int r = h->thread_create(h, MSB_THREAD_PROXY, "msb-netproxy", fn, arg, &t);
	if (r == 0)
		*tid = (pthread_t)t;
	return r;
}

/* The spec's network.dns as the interceptor's "ADDR,[ADDR6]:53" list; false if none. */
static bool spec_dns(const char *spec, char *out, size_t len)
{
	json_t *root = spec ? json_loads(spec, 0, NULL) : NULL;
	json_t *dns = json_object_get(json_object_get(root, "network"), "dns"), *d;
	size_t i, used = 0;
	out[0] = '\0';
	json_array_foreach(dns, i, d)
	{
		const char *a = json_string_value(d);
		if (!a)
			continue;
		int v6 = strchr(a, ':') != NULL;
		int n = snprintf(out + used, len - used, "%s%s%s%s", used ? "," : "", v6 ? "[" : "",
				 a, v6 ? "]:53" : "");
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	json_decref(root);
	return used > 0;
}

static int net_setup(void *inst, const struct msb_net_config *cfg, struct msb_net_attach *attach,
		     struct msb_error *err)
{
	struct net_instance *n = inst;
	const struct msb_host *h = n->host;
	if (!cfg->enabled)
		return 0; /* --no-net: nothing to build, and that is complete */
	if (n->up)
		return h->error_set(h, err, -EALREADY, "network: set up twice");
	if (geteuid() != 0)
		return h->error_set(h, err, -EPERM,
				    "sandbox networking needs root for now (the rootless path is "
				    "later work); use --no-net");
	const char *spec = h->spec_json(h);
	/* --dns-nameserver (the spec's network.dns) before the module's `dns` option. */
	char dns[256];
	const char *upstreams = spec_dns(spec, dns, sizeof(dns)) ? dns : opt(h, "plugin.dns");
	struct snet_opts o = {
		.rundir = opt(h, "plugin.rundir"),
		.pool = opt(h, "plugin.pool"),
		.network_json = spec ? spec : "{}",
		.guest_nsfd = -1,
		.dns = upstreams,
		.thread_create = proxy_thread,
		.thread_ctx = (void *)h,
	};
	char why[512];
	int r = snet_create(&n->sn, &o, why, sizeof(why));
	if (r < 0)
		return h->error_set(h, err, r, "%s", why);
	n->up = true;
	struct snet *sn = &n->sn;
	attach->tap_fd = sn->tap_fd;
	memcpy(attach->mac, sn->mac, 6);
	attach->mtu = NET_MTU;
	attach->netns_fd = sn->nsfd;
	snprintf(attach->guest_ipv4, sizeof(attach->guest_ipv4), "%s/%u", sn->a.guest4,
		 sn->prefix4);
	snprintf(attach->gateway_ipv4, sizeof(attach->gateway_ipv4), "%s", sn->a.gw4);
	snprintf(attach->guest_ipv6, sizeof(attach->guest_ipv6), "%s/64", sn->a.guest6);
	snprintf(attach->gateway_ipv6, sizeof(attach->gateway_ipv6), "%s", sn->a.gw6);
	snprintf(attach->dns, sizeof(attach->dns), "%s", sn->a.gw4);
	h->log(h, MSB_LOG_INFO, "slot %u: guest %s and %s, gateway %s", sn->slot,
	       attach->guest_ipv4, attach->guest_ipv6, sn->a.gw4);
	return 0;
}

static int net_apply_policy(void *inst, const char *network_json, struct msb_error *err)
{
	struct net_instance *n = inst;
	if (!n->up)
		return n->host->error_set(n->host, err, -ENOTCONN, "network: not set up");
	char why[512];
	int r = snet_apply(&n->sn, network_json, why, sizeof(why));
	return r < 0 ? n->host->error_set(n->host, err, r, "%s", why) : 0;
}

static int net_steer_tls(void *inst, const struct msb_tls_steer *steer, struct msb_error *err)
{
	struct net_instance *n = inst;
	const struct msb_host *h = n->host;
	if (!n->up)
		return h->error_set(h, err, -ENOTCONN, "network: not set up");
	if (steer->size < offsetof(struct msb_tls_steer, block_quic) + sizeof(steer->block_quic))
		return h->error_set(h, err, -EINVAL, "network: TLS steering: a short table");
	struct net_steer st = {.proxy_port = steer->proxy_port, .block_quic = steer->block_quic};
	for (unsigned i = 0; i < 8; i++)
		if (steer->ports[i])
			st.ports[st.nports++] = steer->ports[i];
	char why[512];
	int r = snet_steer(&n->sn, &st, why, sizeof(why));
	return r < 0 ? h->error_set(h, err, r, "%s", why) : 0;
}

static int net_pin_check(void *inst, const char *name, const struct sockaddr *addr,
			 socklen_t addr_len)
{
	struct net_instance *n = inst;
	if (!n->up || !name || !addr)
		return -EINVAL;
	if (addr->sa_family == AF_INET && addr_len >= sizeof(struct sockaddr_in))
		return snet_pin_check(
			&n->sn, name, AF_INET,
			(const uint8_t *)&((const struct sockaddr_in *)addr)->sin_addr);
	if (addr->sa_family == AF_INET6 && addr_len >= sizeof(struct sockaddr_in6)) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6))
			return snet_pin_check(&n->sn, name, AF_INET, a6->s6_addr + 12);
		return snet_pin_check(&n->sn, name, AF_INET6, a6->s6_addr);
	}
	return -EAFNOSUPPORT;
}

static int net_reap(const struct msb_host *host, struct msb_error *err)
{
	(void)err;
	if (geteuid() != 0)
		return 0; /* nothing was ever made without root */
	return snet_reap(host ? opt(host, "plugin.rundir") : NULL);
}

static const struct msb_net_ops net_ops = {
	.size = sizeof(struct msb_net_ops),
	.setup = net_setup,
	.apply_policy = net_apply_policy,
	.steer_tls = net_steer_tls,
	.pin_check = net_pin_check,
	.teardown = net_teardown,
	.reap = net_reap,
};

static const struct msb_plugin_desc net_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_NET,
	.name = "netfilter",
	.version = "0.3.0",
	.features = MSB_NET_F_DNS_PINNING | MSB_NET_F_TLS_STEER,
	.create = net_create,
	.destroy = net_destroy,
	.ops = &net_ops,
};

MSB_PLUGIN_DEFINE(net_desc)
