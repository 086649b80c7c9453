/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets module's configuration (config.h).  Values are read here and
 * nowhere else: from the secret's --secret-file (one trailing newline
 * dropped), else from the core (a value given directly, the host
 * environment variable the secret is named after, the config file).  They
 * live in one buffer that secrets_conf_free wipes; the proxy copies them
 * into its own undumpable memory at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "config.h"
#include "substitute.h"

/* What the arena holds; freed (values wiped) together. */
struct arena {
	json_t *spec; /* host names point into it */
	char *values; /* every value, NUL-separated */
	size_t values_len;
	char *opts; /* copies of the option strings, split in place */
	const char *hosts[PROXY_SECRETS_MAX][64];
};

static int read_file(const char *path, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == cap) {
			close(fd);
			return -EFBIG;
		}
	}
	close(fd);
	if (n && buf[n - 1] == '\n')
		n--;
	if (n && buf[n - 1] == '\r')
		n--;
	*len = n;
	return 0;
}

/* Split "a,b, c" in place into out[]; the count, or -E2BIG. */
static int split(char *s, const char **out, size_t max)
{
	size_t n = 0;
	char *save = NULL;
	for (char *t = strtok_r(s, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
		if (n == max)
			return -E2BIG;
		out[n++] = t;
	}
	return (int)n;
}

static int load_options(struct secrets_conf *c, struct arena *a, secrets_opt_fn opt, void *ctx,
			char *why, size_t wl)
{
	const char *ports = opt ? opt(ctx, "ports") : NULL;
	const char *bypass = opt ? opt(ctx, "bypass") : NULL;
	const char *where = opt ? opt(ctx, "substitute") : NULL;
	c->ca_file = opt ? opt(ctx, "ca_file") : NULL;
	if (c->ca_file && !*c->ca_file)
		c->ca_file = NULL;
	if (asprintf(&a->opts, "%s%c%s%c%s", ports ? ports : "443", '\0', bypass ? bypass : "",
		     '\0', where ? where : "headers") < 0) {
		a->opts = NULL;
		snprintf(why, wl, "out of memory");
		return -ENOMEM;
	}
	char *p = a->opts, *b = p + strlen(p) + 1, *w = b + strlen(b) + 1;
	const char *list[SECRETS_BYPASS_MAX];
	int n = split(p, list, SECRETS_PORTS_MAX);
	if (n <= 0) {
		snprintf(why, wl,
			 "secrets: option ports '%s': expected 1 to %d ports, e.g. 443,8443",
			 ports ? ports : "", SECRETS_PORTS_MAX);
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		char *end;
		unsigned long v = strtoul(list[i], &end, 10);
		if (*end || !v || v > 65535 || v == 53 || v == 853) {
			snprintf(why, wl,
				 "secrets: option ports: '%s' is not a port to steer (expected "
				 "1-65535, not DNS's 53 or 853)",
				 list[i]);
			return -EINVAL;
		}
		c->ports[c->nports++] = (uint16_t)v;
	}
	n = split(b, c->bypass, SECRETS_BYPASS_MAX);
	if (n < 0) {
		snprintf(why, wl, "secrets: option bypass: more than %d names", SECRETS_BYPASS_MAX);
		return -EINVAL;
	}
	c->nbypass = (size_t)n;
	n = split(w, list, 8);
	c->where = SUBST_HEADERS;
	for (int i = 0; i < n; i++) {
		if (!strcmp(list[i], "headers"))
			c->where |= SUBST_HEADERS;
		else if (!strcmp(list[i], "query"))
			c->where |= SUBST_QUERY;
		else if (!strcmp(list[i], "body"))
			c->where |= SUBST_BODY;
		else {
			snprintf(why, wl,
				 "secrets: option substitute: '%s' (expected headers, query, body)",
				 list[i]);
			return -EINVAL;
		}
	}
	return 0;
}

/* Without the core's help: the host environment only. */
static int env_value(void *ctx, const char *env, char *buf, size_t cap, size_t *len)
{
	(void)ctx;
	const char *v = getenv(env);
	size_t l = v ? strlen(v) : 0;
	if (!l)
		return -ENOENT;
	if (l > cap)
		return -EFBIG;
	memcpy(buf, v, l);
	*len = l;
	return 0;
}

int secrets_conf_load(struct secrets_conf *c, const char *spec_json, secrets_opt_fn opt,
		      secrets_value_fn value, void *ctx, char *why, size_t wl)
{
	memset(c, 0, sizeof(*c));
	struct arena *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(why, wl, "out of memory");
		return -ENOMEM;
	}
	c->arena = a;
	int r = load_options(c, a, opt, ctx, why, wl);
	if (r < 0)
		goto fail;
	a->spec = json_loads(spec_json ? spec_json : "{}", 0, NULL);
	json_t *secs = a->spec ? json_object_get(a->spec, "secrets") : NULL;
	json_t *pol = a->spec ? json_object_get(a->spec, "secrets_policy") : NULL;
	if (!a->spec || (secs && !json_is_array(secs)) || (pol && !json_is_object(pol))) {
		snprintf(why, wl, "secrets: the spec's secrets are malformed");
		r = -EINVAL;
		goto fail;
	}
	const char *mode = json_string_value(json_object_get(pol, "on_violation"));
	if (!mode || !strcmp(mode, "block"))
		c->on_violation = PROXY_BLOCK;
	else if (!strcmp(mode, "block-and-log"))
		c->on_violation = PROXY_BLOCK_AND_LOG;
	else if (!strcmp(mode, "passthrough"))
		c->on_violation = PROXY_PASSTHROUGH;
	else {
		snprintf(why, wl,
			 "secrets: on_violation '%s' (expected block, block-and-log or "
			 "passthrough)",
			 mode);
		r = -EINVAL;
		goto fail;
	}
	c->trust_host_cas = json_is_true(json_object_get(pol, "trust_host_cas"));
	size_t n = json_array_size(secs);
	if (n > PROXY_SECRETS_MAX) {
		snprintf(why, wl, "secrets: more than %d secrets", PROXY_SECRETS_MAX);
		r = -E2BIG;
		goto fail;
	}
	/* Every value, NUL-separated, in one buffer that is wiped at the end. */
	a->values_len = n * (PROXY_VALUE_MAX + 2) + 1;
	a->values = calloc(1, a->values_len);
	if (!a->values) {
		snprintf(why, wl, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	char *at = a->values;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(secs, i), *hosts = json_object_get(s, "hosts");
		const char *env = json_string_value(json_object_get(s, "env"));
		const char *file = json_string_value(json_object_get(s, "file"));
		size_t nh = json_array_size(hosts);
		if (!env || !nh || nh > 64) {
			snprintf(why, wl, "secrets: secret %zu has no name or 1 to 64 hosts", i);
			r = -EINVAL;
			goto fail;
		}
		for (size_t k = 0; k < nh; k++)
			if (!(a->hosts[i][k] = json_string_value(json_array_get(hosts, k)))) {
				snprintf(why, wl, "secrets: secret %s: a host that is not a string",
					 env);
				r = -EINVAL;
				goto fail;
			}
		size_t len = 0;
		if (file) {
			r = read_file(file, at, PROXY_VALUE_MAX + 1, &len);
			if (r < 0) {
				snprintf(why, wl, "secret %s: its file '%s': %s", env, file,
					 r == -EFBIG ? "over 8 KiB" : strerror(-r));
				goto fail;
			}
		} else {
			r = (value ? value : env_value)(ctx, env, at, PROXY_VALUE_MAX, &len);
			if (r == -ENOENT || (r == 0 && !len)) {
				snprintf(
					why, wl,
					"secret %s: no value: %s is not set in the environment of "
					"msb, nor given directly or in the config file's [secrets] "
					"(export it, or use --secret-file %s=PATH)",
					env, env, env);
				r = -ENOENT;
				goto fail;
			}
			if (r == -EFBIG) {
				snprintf(why, wl, "secret %s: its value is over %d bytes", env,
					 PROXY_VALUE_MAX);
				goto fail;
			}
			if (r < 0) {
				snprintf(why, wl, "secret %s: its value: %s", env, strerror(-r));
				goto fail;
			}
		}
		c->secrets[i] = (struct proxy_secret){.env = env,
						      .hosts = a->hosts[i],
						      .nhosts = nh,
						      .value = at,
						      .value_len = len};
		at += len + 1;
		c->nsecrets = i + 1;
	}
	return 0;
fail:
	secrets_conf_free(c);
	return r;
}

void secrets_conf_free(struct secrets_conf *c)
{
	struct arena *a = c->arena;
	if (a) {
		if (a->values) {
			OPENSSL_cleanse(a->values, a->values_len);
			free(a->values);
		}
		free(a->opts);
		json_decref(a->spec);
		free(a);
	}
	memset(c, 0, sizeof(*c));
}
