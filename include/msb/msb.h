/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb.h — the msb C SDK.
 *
 * Conventions (docs/error-handling.md):
 *  - Functions that can fail return 0 (or a count) on success and a negative
 *    errno on failure, and fill the caller-owned `err` (which may be NULL)
 *    with a one-line message naming what was wrong and what was expected.
 *  - Handles are opaque.  A function is never changed once published; a
 *    changed signature gets a numbered successor (msb_foo2).
 *  - No SDK function exits the process or prints.
 *  - Strings returned as `char *` are the caller's, freed with msb_free().
 */
#ifndef MSB_H
#define MSB_H

#include <stddef.h>
#include <stdint.h>

#include <msb/msb-error.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MSB_VERSION_MAJOR 0
#define MSB_VERSION_MINOR 2
#define MSB_VERSION_PATCH 0

/* The library's version, "0.2.0". */
const char *msb_version(void);

/* Free a string or buffer the SDK returned. */
void msb_free(void *p);

/* ---- errors ---------------------------------------------------------- */

/* Set err to code and a formatted message; return code (negative errno). */
int msb_error_set(struct msb_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefix err's message with formatted context ("loading x: "); return err->code. */
int msb_error_prefix(struct msb_error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void msb_error_clear(struct msb_error *err);

/* ---- values ------------------------------------------------------------ */

/*
 * A size: a whole number followed by K, M, G or T (powers of 1024, optionally
 * written KiB/MiB/KB/...), or a plain number of bytes.  "512M", "1G".
 */
int msb_parse_size(const char *text, uint64_t *bytes, struct msb_error *err);

/*
 * A duration: one or more <number><unit> with units ms, s, m, h, d, in
 * decreasing order ("30s", "5m", "1h30m"), or "0" for none.  In milliseconds.
 */
int msb_parse_duration(const char *text, uint64_t *ms, struct msb_error *err);

/* ---- network rules ------------------------------------------------------ */

/*
 * The rule grammar (docs/network-rules.md), rules comma-separated:
 *   <action>[:<direction>]@<target>[:<proto>[:<ports>]]
 */
enum msb_rule_action {
	MSB_RULE_ALLOW = 1,
	MSB_RULE_DENY = 2,
};

enum msb_rule_direction {
	MSB_RULE_EGRESS = 1, /* the default */
	MSB_RULE_INGRESS = 2,
	MSB_RULE_ANY_DIRECTION = 3,
};

enum msb_rule_target {
	MSB_TARGET_ANY = 1,
	MSB_TARGET_DNS = 2,    /* DNS to the sandbox's interceptor */
	MSB_TARGET_GROUP = 3,  /* see enum msb_rule_group */
	MSB_TARGET_IPV4 = 4,   /* address + prefix */
	MSB_TARGET_IPV6 = 5,   /* address + prefix */
	MSB_TARGET_DOMAIN = 6, /* exact name */
	MSB_TARGET_SUFFIX = 7, /* *.suffix: any name under suffix (not suffix itself) */
};

enum msb_rule_group {
	MSB_GROUP_PUBLIC = 1,
	MSB_GROUP_PRIVATE = 2,
	MSB_GROUP_LOOPBACK = 3,
	MSB_GROUP_LINK_LOCAL = 4,
	MSB_GROUP_META = 5,
	MSB_GROUP_MULTICAST = 6,
	MSB_GROUP_HOST = 7,
};

enum msb_rule_proto {
	MSB_PROTO_ANY = 0,
	MSB_PROTO_TCP = 1,
	MSB_PROTO_UDP = 2,
	MSB_PROTO_ICMP = 3,
};

#define MSB_DOMAIN_MAX 253
/* Most rules one sandbox may have, and the longest rule text accepted. */
#define MSB_NET_RULES_MAX      4096
#define MSB_NET_RULES_TEXT_MAX (256 * 1024)

struct msb_net_rule {
	int action;			 /* enum msb_rule_action */
	int direction;			 /* enum msb_rule_direction */
	int target;			 /* enum msb_rule_target */
	int group;			 /* enum msb_rule_group, for MSB_TARGET_GROUP */
	uint8_t addr[16];		 /* network address (IPv4 in the first 4 bytes) */
	uint8_t prefix;			 /* prefix length */
	char domain[MSB_DOMAIN_MAX + 1]; /* lower case; for SUFFIX without "*." */
	int proto;			 /* enum msb_rule_proto */
	uint16_t port_lo;		 /* 0 and 0: any port */
	uint16_t port_hi;
};

/*
 * Parse comma-separated rules from text, appending them to *rules (a
 * malloc'd array the caller frees with msb_free; may start NULL) and
 * updating *count.  On error nothing is appended, and err names the bad rule
 * and token, with a suggestion for a misspelled keyword.
 */
int msb_net_rules_parse(const char *text, struct msb_net_rule **rules, size_t *count,
			struct msb_error *err);

/* The rule's canonical text ("allow@public:tcp:443"), NUL-terminated. */
int msb_net_rule_format(const struct msb_net_rule *rule, char *buf, size_t len);

/* ---- sandbox specs ------------------------------------------------------ */

/* A sandbox spec: what `msb create` is asked to make.  Opaque. */
struct msb_spec;

struct msb_spec *msb_spec_new(void);
void msb_spec_free(struct msb_spec *spec);

/*
 * Apply one option, named and written as on the msb command line without
 * the dashes: ("memory", "1G"), ("net-rule", "deny@meta"), ("volume",
 * "./data:/data:ro"), ("no-net", NULL), ("image", "python").  Options that
 * can repeat (net-rule, volume, env, secret, publish) append.
 */
int msb_spec_set(struct msb_spec *spec, const char *option, const char *value,
		 struct msb_error *err);

/*
 * Check the spec as a whole (conflicting options, defaults) and fill in
 * defaults.  Host-dependent checks (paths exist, secret values available)
 * are made here too.
 */
int msb_spec_validate(struct msb_spec *spec, struct msb_error *err);

/* The spec as JSON (docs/spec.md); free with msb_free.  NULL on ENOMEM. */
char *msb_spec_to_json(const struct msb_spec *spec, int pretty);

/* Parse and validate a JSON spec (at most MSB_SPEC_JSON_MAX bytes). */
#define MSB_SPEC_JSON_MAX (1024 * 1024)
int msb_spec_from_json(const char *json, size_t len, struct msb_spec **spec, struct msb_error *err);

/* The sandbox name, or NULL when unnamed. */
const char *msb_spec_name(const struct msb_spec *spec);

/*
 * Give secret ENV's value directly (since 0.2).  The spec must bind ENV
 * first (msb_spec_set(spec, "secret", "ENV@HOST[,HOST...]")).  The bytes
 * (1 to 8192, no NUL) are copied into memory kept out of core dumps and
 * forked children, and wiped by msb_spec_free; they are never part of
 * msb_spec_to_json (its "source" says "value").  A value given here takes
 * precedence over the host environment and the config file's [secrets];
 * a --secret-file (option "secret-file") over it.  msb_create hands
 * it to the sandbox's supervisor in a memfd: never argv, the environment
 * or a file.  docs/secrets.md.
 */
int msb_spec_set_secret_value(struct msb_spec *spec, const char *env, const char *value, size_t len,
			      struct msb_error *err);

/* ---- sandboxes (since 0.2) --------------------------------------------- */

/*
 * These run the msb program, so an application that links libmsb never
 * loads VM, image or network code into its own process: $MSB_PROGRAM if
 * set, else msb in the install's bindir.  It inherits the caller's
 * environment (MSB_HOME, MSB_CONFIG, ...).  On failure err holds msb's own
 * one-line message.
 */

/*
 * Create and boot the sandbox `spec` describes, as `msb create` does, and
 * return once its agent answered.  The spec is validated first (if it was
 * not yet).  *name (optional; free with msb_free) receives the sandbox's
 * name, the spec's or a generated one.
 */
int msb_create(struct msb_spec *spec, char **name, struct msb_error *err);

/*
 * Run argv (NULL-terminated) in sandbox `name`, as `msb exec NAME --
 * ARGV...`, with the given descriptors as its stdin, stdout and stderr
 * (-1: /dev/null).  *status receives msb exec's exit status: the command's
 * own, 128+N for a signal, 125 when msb failed (its message went to
 * stderr_fd).  Returns 0 once the command ran, or a negative errno when msb
 * could not be started.
 */
int msb_exec(const char *name, const char *const argv[], int stdin_fd, int stdout_fd, int stderr_fd,
	     int *status, struct msb_error *err);

/* Stop sandbox `name` (`msb stop`): its writable disk stays. */
int msb_stop(const char *name, struct msb_error *err);

/* Remove sandbox `name` and its state (`msb rm`; with force, stop it first). */
int msb_rm(const char *name, int force, struct msb_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MSB_H */
