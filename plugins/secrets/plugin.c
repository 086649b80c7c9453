/* SPDX-License-Identifier: Apache-2.0 */
/*
 * secrets: the "tls-intercept" secrets module — a TLS-intercepting proxy
 * that swaps placeholders for real credentials only at allowed hosts
 * (docs/secrets.md).  This file is the ABI around proxy.c: the spec and
 * the module's options into a proxy configuration (config.c), the proxy in
 * the sandbox's network namespace, and what the network module needs to
 * steer the guest's TLS to it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <msb/msb-plugin.h>

#include "config.h"
#include "proxy.h"

struct secrets_instance {
	const struct msb_host *host;
	struct proxy *proxy;
};

static int secrets_create(const struct msb_host *host, void **inst, struct msb_error *err)
{
	struct secrets_instance *s = calloc(1, sizeof(*s));
	if (!s)
		return host->error_set(host, err, -ENOMEM, "out of memory");
	s->host = host;
	*inst = s;
	return 0;
}

static void secrets_proxy_stop(void *inst)
{
	struct secrets_instance *s = inst;
	proxy_stop(s->proxy);
	s->proxy = NULL;
}

static void secrets_destroy(void *inst)
{
	secrets_proxy_stop(inst);
	free(inst);
}

static const char *opt(void *ctx, const char *key)
{
	const struct msb_host *h = ctx;
	char k[64];
	snprintf(k, sizeof(k), "plugin.%s", key);
	return h->config_get(h, k);
}

static void log_line(void *ctx, int level, const char *line)
{
	const struct msb_host *h = ctx;
	h->log(h, level, "%s", line);
}

static int proxy_thread(void *ctx, void *(*fn)(void *), void *arg, pthread_t *tid)
{
	const struct msb_host *h = ctx;
	unsigned long t = 0;
	int r = h->thread_create(h, MSB_THREAD_PROXY, "msb-secrets", fn, arg, &t);
	if (r == 0)
		*tid = (pthread_t)t;
	return r;
}

/* ABI 1.2 cores keep the values given directly and the config's; ask them. */
static int host_value(void *ctx, const char *env, char *buf, size_t cap, size_t *len)
{
	const struct msb_host *h = ctx;
	return h->secret_value(h, env, buf, cap, len);
}

static int secrets_proxy_start(void *inst, const struct msb_proxy_config *cfg,
			       struct msb_proxy_info *info, struct msb_error *err)
{
	struct secrets_instance *s = inst;
	const struct msb_host *h = s->host;
	if (s->proxy)
		return h->error_set(h, err, -EALREADY, "secrets: the proxy runs already");
	char why[512], dir[4096];
	struct secrets_conf conf;
	int r = secrets_conf_load(&conf, h->spec_json(h), opt,
				  MSB_HOST_HAS(h, secret_value) ? host_value : NULL, (void *)h, why,
				  sizeof(why));
	if (r < 0)
		return h->error_set(h, err, r, "%s", why);
	/* The CA and its key (0600) live in the sandbox's private state directory. */
	snprintf(dir, sizeof(dir), "%s/secrets", h->state_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		secrets_conf_free(&conf);
		return h->error_set(h, err, r, "secrets: '%s': %s", dir, strerror(-r));
	}
	struct proxy_cfg pc = {
		.netns_fd = cfg->netns_fd,
		.secrets = conf.secrets,
		.nsecrets = conf.nsecrets,
		.bypass = conf.bypass,
		.nbypass = conf.nbypass,
		.where = conf.where,
		.on_violation = conf.on_violation,
		.ca_dir = dir,
		.ca_label = h->sandbox_name,
		.upstream_ca_file = conf.ca_file,
		.pin_check = cfg->pins.check,
		.pin_ctx = cfg->pins.ctx,
		.log = log_line,
		.log_ctx = (void *)h,
		.thread_create = proxy_thread,
		.thread_ctx = (void *)h,
	};
	r = proxy_start(&pc, &s->proxy, why, sizeof(why));
	if (r < 0) {
		secrets_conf_free(&conf);
		return h->error_set(h, err, r, "%s", why);
	}
	/* The proxy holds its own copy of the values now; this one is wiped. */
	info->steer.size = sizeof(info->steer);
	memset(info->steer.ports, 0, sizeof(info->steer.ports));
	for (unsigned i = 0; i < conf.nports && i < 8; i++)
		info->steer.ports[i] = conf.ports[i];
	info->steer.proxy_port = proxy_port(s->proxy);
	info->steer.proxy_addr[0] = '\0'; /* every address of the namespace: redirect */
	info->steer.block_quic = 1;
	snprintf(info->ca_cert_path, sizeof(info->ca_cert_path), "%s", proxy_ca_path(s->proxy));
	h->log(h, MSB_LOG_INFO, "proxy on port %u for %zu secret(s)", info->steer.proxy_port,
	       conf.nsecrets);
	secrets_conf_free(&conf);
	return 0;
}

/* The guest only ever sees a placeholder: ENV=$MSB_ENV. */
static int secrets_guest_env(void *inst, const char *env_name, char *buf, size_t len,
			     struct msb_error *err)
{
	struct secrets_instance *s = inst;
	int n = snprintf(buf, len, "%s=$MSB_%s", env_name, env_name);
	if (n < 0 || (size_t)n >= len)
		return s->host->error_set(s->host, err, -ENOSPC, "placeholder for %s too long",
					  env_name);
	return n;
}

static const struct msb_secrets_ops secrets_ops = {
	.size = sizeof(struct msb_secrets_ops),
	.proxy_start = secrets_proxy_start,
	.guest_env = secrets_guest_env,
	.proxy_stop = secrets_proxy_stop,
};

static const struct msb_plugin_desc secrets_desc = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_plugin_desc),
	.kind = MSB_PLUGIN_SECRETS,
	.name = "tls-intercept",
	.version = "0.2.0",
	.features = MSB_SECRETS_F_HTTP1,
	.create = secrets_create,
	.destroy = secrets_destroy,
	.ops = &secrets_ops,
};

MSB_PLUGIN_DEFINE(secrets_desc)
