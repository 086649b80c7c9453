/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets module's configuration: the spec's "secrets" and
 * "secrets_policy" (docs/spec.md), the module's options (docs/secrets.md),
 * and the values themselves, read from the host environment or a
 * --secret-file at start.  plugin.c and the tests' harness both build the
 * proxy's configuration with it.
 */
#ifndef MSB_SECRETS_CONFIG_H
#define MSB_SECRETS_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy.h"

#define SECRETS_PORTS_MAX  8
#define SECRETS_BYPASS_MAX 64

struct secrets_conf {
	struct proxy_secret secrets[PROXY_SECRETS_MAX];
	size_t nsecrets;
	const char *bypass[SECRETS_BYPASS_MAX];
	size_t nbypass;
	unsigned where;			   /* SUBST_* */
	enum proxy_violation on_violation; /* the spec's secrets_policy.on_violation */
	bool trust_host_cas;		   /* ship the host's roots into the guest */
	uint16_t ports[SECRETS_PORTS_MAX]; /* steered guest ports (default 443) */
	unsigned nports;
	const char *ca_file; /* the host trust store for upstream TLS (NULL: the default) */
	void *arena;	     /* private: everything above points here */
};

/*
 * Module options, by key without the "plugin." prefix (NULL: unset):
 *   ports      "443,8443"                  the guest ports to steer (default 443)
 *   bypass     "a.example.com,*.corp"      names never intercepted
 *   substitute "headers,query,body"        where placeholders are replaced
 *                                          (default headers; headers always)
 *   ca_file    PATH                        the host trust store for upstream TLS
 */
typedef const char *(*secrets_opt_fn)(void *ctx, const char *key);

/*
 * A secret's value, for one without a --secret-file: copied into buf (at
 * most cap bytes, not NUL-terminated).  0, -ENOENT (none), -EFBIG (over cap).
 * The module's asks the core (msb_host.secret_value); NULL: getenv only.
 */
typedef int (*secrets_value_fn)(void *ctx, const char *env, char *buf, size_t cap, size_t *len);

/*
 * Fill c from the spec JSON and the options; read every value (its file,
 * else value(ctx, ...)).  0, or -errno with one line in why; nothing is kept
 * on failure.
 */
int secrets_conf_load(struct secrets_conf *c, const char *spec_json, secrets_opt_fn opt,
		      secrets_value_fn value, void *ctx, char *why, size_t why_len);
/* Wipe the values and free everything. */
void secrets_conf_free(struct secrets_conf *c);

#endif
