/* SPDX-License-Identifier: Apache-2.0 */
/*
 * secrets: the "tls-intercept" secrets module — a TLS-intercepting proxy
 * that swaps placeholders for real credentials only at allowed hosts.
 *
 * This is the module's foundation: descriptor, lifecycle and the guest's
 * placeholder naming.  The proxy comes in the files beside this one
 * (proxy.c, ca.c, http.c, substitute.c); until then proxy_start fails with
 * -ENOSYS and says so.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <msb/msb-plugin.h>

struct secrets_instance {
	const struct msb_host *host;
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

static void secrets_destroy(void *inst)
{
	free(inst);
}

static int secrets_proxy_start(void *inst, const struct msb_proxy_config *cfg,
			       struct msb_proxy_info *info, struct msb_error *err)
{
	struct secrets_instance *s = inst;
	(void)cfg;
	(void)info;
	return s->host->error_set(s->host, err, -ENOSYS, "the TLS proxy is not built yet");
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

static void secrets_proxy_stop(void *inst)
{
	(void)inst;
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
	.version = "0.1.0",
	.create = secrets_create,
	.destroy = secrets_destroy,
	.ops = &secrets_ops,
};

MSB_PLUGIN_DEFINE(secrets_desc)
