/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox spec: every create/run option parsed in one place, validated as
 * a whole, and written as JSON (docs/spec.md).  Values from the command line
 * or the SDK are untrusted text; each option's parser is bounded and names the
 * bad token and what was expected.
 */
#include "spec.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <msb/msb-plugin.h>

#include "config.h"
#include "error.h"
#include "secretval.h"
#include "suggest.h"

/* Quote at most this much of a bad value back to the user. */
#define Q	      60
#define PATH_TEXT_MAX 4096
#define ENV_TEXT_MAX  (128 * 1024)
#define LIST_MAX      256 /* volumes, publish, env, secrets, hosts per secret */

const char *const msb_default_modules[MSB_SLOT_COUNT] = {"kvm", "netfilter", "virtiofs",
							 "tls-intercept"};
const char *const msb_slot_option[MSB_SLOT_COUNT] = {"hypervisor", "net-backend", "storage-backend",
						     "secrets-backend"};

static const struct msb_spec_option options[] = {
	{"name", 0, MSB_OPT_VALUE, "NAME", "name the sandbox ([A-Za-z0-9][A-Za-z0-9_.-]*, <= 63)"},
	{"cpus", 0, MSB_OPT_VALUE, "N", "virtual CPUs (1-64, default 1)"},
	{"memory", 'm', MSB_OPT_VALUE, "SIZE", "guest memory, e.g. 512M or 1G (default 512M)"},
	{"no-net", 0, MSB_OPT_FLAG, NULL, "no network device at all"},
	{"net-default-egress", 0, MSB_OPT_VALUE, "allow|deny",
	 "egress when no rule matches (default deny)"},
	{"net-rule", 0, MSB_OPT_REPEAT, "RULES",
	 "rules, comma-separated, first match wins (docs/network-rules.md)"},
	{"publish", 'p', MSB_OPT_REPEAT, "[ADDR:]HOST:GUEST[/udp]",
	 "publish a guest port on the host (127.0.0.1 unless ADDR)"},
	{"dns-nameserver", 0, MSB_OPT_REPEAT, "ADDR",
	 "resolver the DNS interceptor forwards to (IPv4 or IPv6; up to 3; default the host's)"},
	{"user", 'u', MSB_OPT_VALUE, "USER[:GROUP]", "run commands as this user (name or uid)"},
	{"security", 0, MSB_OPT_VALUE, "default|restricted", "guest security profile"},
	{"volume", 'v', MSB_OPT_REPEAT, "SRC:GUEST[:OPTS]",
	 "share a host directory or named volume (SRC: /path, ./path or NAME; OPTS: ro|rw, "
	 "noexec, identity=strict|off, locks=guest|host)"},
	{"secret", 0, MSB_OPT_REPEAT, "ENV@HOST[,HOST...]",
	 "a secret, usable only at HOST; its value from --secret-file, --secret-values-fd, the "
	 "host environment or the config file's [secrets]"},
	{"secret-file", 0, MSB_OPT_REPEAT, "ENV=PATH", "read secret ENV's value from PATH"},
	{"on-secret-violation", 0, MSB_OPT_VALUE, "MODE",
	 "block (default), block-and-log or passthrough: a request whose placeholder may not get "
	 "its value"},
	{"trust-host-cas", 0, MSB_OPT_FLAG, NULL,
	 "install the host's CA roots in the guest (off: only behind a TLS-inspecting proxy)"},
	{"env", 'e', MSB_OPT_REPEAT, "KEY=VALUE|KEY", "set a guest environment variable"},
	{"workdir", 'w', MSB_OPT_VALUE, "DIR", "working directory in the guest (absolute)"},
	{"idle-timeout", 0, MSB_OPT_VALUE, "DURATION", "stop after this long idle (e.g. 5m)"},
	{"max-duration", 0, MSB_OPT_VALUE, "DURATION", "stop after this long in all (e.g. 1h)"},
	{"hypervisor", 0, MSB_OPT_VALUE, "MODULE", "hypervisor module (default kvm)"},
	{"net-backend", 0, MSB_OPT_VALUE, "MODULE", "network module (default netfilter)"},
	{"storage-backend", 0, MSB_OPT_VALUE, "MODULE", "storage module (default virtiofs)"},
	{"secrets-backend", 0, MSB_OPT_VALUE, "MODULE", "secrets module (default tls-intercept)"},
	{"kernel", 0, MSB_OPT_VALUE, "PATH", "guest kernel (bzImage or vmlinux)"},
	{"rootfs", 0, MSB_OPT_VALUE, "DIR", "boot this directory tree instead of an image"},
	{NULL, 0, 0, NULL, NULL},
};

const struct msb_spec_option *msb_spec_options(void)
{
	return options;
}

const struct msb_spec_option *msb_spec_option_find(const char *name)
{
	for (const struct msb_spec_option *o = options; o->name; o++)
		if (strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

struct msb_spec *msb_spec_new(void)
{
	return calloc(1, sizeof(struct msb_spec));
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void msb_spec_free(struct msb_spec *s)
{
	if (!s)
		return;
	free(s->image);
	free(s->rootfs);
	free(s->name);
	free_strv(s->command, s->ncommand);
	free(s->rules);
	free(s->publish);
	free_strv(s->dns, s->ndns);
	free(s->user);
	for (size_t i = 0; i < s->nvolumes; i++) {
		free(s->volumes[i].source);
		free(s->volumes[i].target);
		free(s->volumes[i].host_path);
	}
	free(s->volumes);
	for (size_t i = 0; i < s->nsecrets; i++) {
		free(s->secrets[i].env);
		free_strv(s->secrets[i].hosts, s->secrets[i].nhosts);
		free(s->secrets[i].file);
		msb_secret_mem_free(s->secrets[i].value, MSB_SECRET_VALUE_MAX);
	}
	free(s->secrets);
	free_strv(s->secret_files, s->nsecret_files);
	free_strv(s->env, s->nenv);
	free(s->workdir);
	for (int i = 0; i < MSB_SLOT_COUNT; i++)
		free(s->modules[i]);
	free(s->kernel);
	free(s);
}

const char *msb_spec_name(const struct msb_spec *spec)
{
	return spec->name;
}

const char *msb_spec_module(const struct msb_spec *spec, int slot)
{
	return spec->modules[slot] ? spec->modules[slot] : msb_default_modules[slot];
}

/* Grow *arr (of n elements of size sz) by one zeroed element. */
static void *grow(void *arr_p, size_t *n, size_t sz, const char *what, struct msb_error *err)
{
	void **arr = arr_p;
	if (*n >= LIST_MAX) {
		msb_error_set(err, -E2BIG, "too many %s (at most %d)", what, LIST_MAX);
		return NULL;
	}
	char *p = realloc(*arr, (*n + 1) * sz);
	if (!p) {
		msb_error_set(err, -ENOMEM, "out of memory");
		return NULL;
	}
	memset(p + *n * sz, 0, sz);
	*arr = p;
	return p + (*n)++ * sz;
}

static int set_str(char **dst, const char *v, struct msb_error *err)
{
	char *c = strdup(v);
	if (!c)
		return msb_error_set(err, -ENOMEM, "out of memory");
	free(*dst);
	*dst = c;
	return 0;
}

/* No control characters: values end up in JSON, logs and one-line errors. */
static int printable(const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

int msb_name_valid(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > MSB_NAME_MAX || !isalnum((unsigned char)name[0]))
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '_' && c != '.' && c != '-')
			return 0;
	}
	return 1;
}

static int env_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > 255 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return 0;
	for (size_t i = 1; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return 0;
	return 1;
}

/* A host name in a secret's allow list: name.tld or *.suffix. */
static int host_pattern_valid(const char *h)
{
	const char *p = h;
	if (strncmp(p, "*.", 2) == 0)
		p += 2;
	size_t len = strlen(p);
	if (len == 0 || len > MSB_DOMAIN_MAX)
		return 0;
	size_t label = 0;
	for (size_t i = 0; i <= len; i++) {
		char c = p[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || p[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)c) && c != '-')
			return 0;
		if (label == 0 && c == '-')
			return 0;
		label++;
	}
	return 1;
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	if (!*s || !isdigit((unsigned char)*s) || (s[0] == '0' && s[1]))
		return -1;
	unsigned long v = 0;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
		if (v > max)
			return -1;
	}
	*out = v;
	return 0;
}

/* ---- one parser per option ------------------------------------------- */

static int opt_name(struct msb_spec *s, const char *v, struct msb_error *err)
{
	if (!msb_name_valid(v))
		return msb_error_set(
			err, -EINVAL,
			"--name '%.*s': invalid name (expected 1-%d of A-Z a-z 0-9 _ . -, "
			"starting with a letter or digit)",
			Q, v, MSB_NAME_MAX);
	return set_str(&s->name, v, err);
}

static int opt_cpus(struct msb_spec *s, const char *v, struct msb_error *err)
{
	unsigned long n;
	if (parse_uint(v, MSB_MAX_CPUS, &n) < 0 || n == 0)
		return msb_error_set(err, -EINVAL,
				     "--cpus '%.*s': expected a whole number from 1 to %d", Q, v,
				     MSB_MAX_CPUS);
	s->cpus = (uint32_t)n;
	return 0;
}

static int opt_memory(struct msb_spec *s, const char *v, struct msb_error *err)
{
	uint64_t b;
	int r = msb_parse_size(v, &b, err);
	if (r < 0)
		return msb_error_prefix(err, "--memory: ");
	if (b < MSB_MIN_MEMORY || b > MSB_MAX_MEMORY)
		return msb_error_set(err, -EINVAL,
				     "--memory '%.*s': out of range (expected 64M to 1T)", Q, v);
	if (b % (1u << 20))
		return msb_error_set(err, -EINVAL,
				     "--memory '%.*s': expected a whole number of MiB", Q, v);
	s->memory = b;
	return 0;
}

static int opt_egress(struct msb_spec *s, const char *v, struct msb_error *err)
{
	static const char *const words[] = {"allow", "deny", NULL};
	if (strcmp(v, "allow") == 0) {
		s->egress = MSB_EGRESS_ALLOW;
		return 0;
	}
	if (strcmp(v, "deny") == 0) {
		s->egress = MSB_EGRESS_DENY;
		return 0;
	}
	const char *m = msb_suggest(v, words);
	return msb_error_set(err, -EINVAL,
			     "--net-default-egress '%.*s': expected allow or deny%s%s%s", Q, v,
			     m ? "; did you mean '" : "", m ? m : "", m ? "'?" : "");
}

static int opt_net_rule(struct msb_spec *s, const char *v, struct msb_error *err)
{
	/* The parser's message already starts "net rule '...'". */
	int r = msb_net_rules_parse(v, &s->rules, &s->nrules, err);
	if (r < 0)
		return r;
	s->rules_given = 1;
	return 0;
}

static int opt_publish(struct msb_spec *s, const char *v, struct msb_error *err)
{
	static const char expected[] = "expected [ADDR:]HOST:GUEST[/tcp|/udp], e.g. 8080:80";
	char buf[128];
	if (strlen(v) >= sizeof(buf))
		return msb_error_set(err, -EINVAL, "--publish '%.*s': too long (%s)", Q, v,
				     expected);
	strcpy(buf, v);
	int udp = 0;
	char *slash = strrchr(buf, '/');
	if (slash) {
		*slash = '\0';
		if (strcmp(slash + 1, "udp") == 0)
			udp = 1;
		else if (strcmp(slash + 1, "tcp") != 0)
			return msb_error_set(err, -EINVAL,
					     "--publish '%.*s': unknown protocol '%s' (%s)", Q, v,
					     slash + 1, expected);
	}
	/* Split from the right: the address may be [IPv6] with colons inside. */
	char *guest = strrchr(buf, ':');
	if (!guest)
		return msb_error_set(err, -EINVAL, "--publish '%.*s': %s", Q, v, expected);
	*guest++ = '\0';
	char *host = strrchr(buf, ':');
	const char *addr = "127.0.0.1";
	if (host) {
		*host++ = '\0';
		addr = buf;
	} else {
		host = buf;
	}
	unsigned long hp, gp;
	if (parse_uint(host, 65535, &hp) < 0 || hp == 0)
		return msb_error_set(err, -EINVAL,
				     "--publish '%.*s': bad host port '%.*s' (expected 1-65535)", Q,
				     v, Q, host);
	if (parse_uint(guest, 65535, &gp) < 0 || gp == 0)
		return msb_error_set(err, -EINVAL,
				     "--publish '%.*s': bad guest port '%.*s' (expected 1-65535)",
				     Q, v, Q, guest);
	char a[64];
	size_t al = strlen(addr);
	unsigned char tmp[16];
	if (addr[0] == '[' && al > 2 && addr[al - 1] == ']' && al - 2 < sizeof(a)) {
		memcpy(a, addr + 1, al - 2);
		a[al - 2] = '\0';
		if (inet_pton(AF_INET6, a, tmp) != 1)
			goto bad_addr;
	} else if (al < sizeof(a)) {
		strcpy(a, addr);
		if (inet_pton(AF_INET, a, tmp) != 1)
			goto bad_addr;
	} else {
		goto bad_addr;
	}
	for (size_t i = 0; i < s->npublish; i++)
		if (s->publish[i].host_port == hp && s->publish[i].udp == udp &&
		    strcmp(s->publish[i].address, a) == 0)
			return msb_error_set(err, -EINVAL,
					     "--publish '%.*s': host port %lu is already published",
					     Q, v, hp);
	struct msb_publish *p = grow(&s->publish, &s->npublish, sizeof(*p), "--publish", err);
	if (!p)
		return err ? err->code : -ENOMEM;
	snprintf(p->address, sizeof(p->address), "%s", a);
	p->host_port = (uint16_t)hp;
	p->guest_port = (uint16_t)gp;
	p->udp = udp;
	return 0;
bad_addr:
	return msb_error_set(err, -EINVAL,
			     "--publish '%.*s': bad address '%.*s' (expected an IPv4 address or "
			     "[IPv6])",
			     Q, v, Q, addr);
}

#define DNS_MAX 3 /* the interceptor's DNSPROXY_UPSTREAMS_MAX */

static int opt_dns(struct msb_spec *s, const char *v, struct msb_error *err)
{
	unsigned char tmp[16];
	if (inet_pton(AF_INET, v, tmp) != 1 && inet_pton(AF_INET6, v, tmp) != 1)
		return msb_error_set(err, -EINVAL,
				     "--dns-nameserver '%.*s': expected an IPv4 or IPv6 address", Q,
				     v);
	if (s->ndns >= DNS_MAX)
		return msb_error_set(err, -EINVAL, "--dns-nameserver '%.*s': at most %d resolvers",
				     Q, v, DNS_MAX);
	char **d = grow(&s->dns, &s->ndns, sizeof(*d), "--dns-nameserver", err);
	if (!d)
		return err ? err->code : -ENOMEM;
	if (!(*d = strdup(v))) {
		s->ndns--;
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

static int opt_user(struct msb_spec *s, const char *v, struct msb_error *err)
{
	/* name or uid, optionally :group or :gid; POSIX-portable names only. */
	size_t len = strlen(v);
	int ok = len > 0 && len <= 65;
	int colons = 0;
	for (size_t i = 0; ok && i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == ':') {
			ok = ++colons == 1 && i > 0 && i + 1 < len;
			continue;
		}
		int first = i == 0 || v[i - 1] == ':';
		ok = islower(c) || isdigit(c) || c == '_' || (!first && (c == '-' || c == '.'));
		if (first && c == '-')
			ok = 0;
	}
	if (!ok)
		return msb_error_set(err, -EINVAL,
				     "--user '%.*s': expected a user name or uid, optionally "
				     ":group or :gid (e.g. app, 1000:1000)",
				     Q, v);
	return set_str(&s->user, v, err);
}

static int opt_violation(struct msb_spec *s, const char *v, struct msb_error *err)
{
	static const char *const words[] = {"block", "block-and-log", "passthrough", NULL};
	for (int i = 0; words[i]; i++)
		if (!strcmp(v, words[i])) {
			s->on_violation = i;
			s->on_violation_set = 1;
			return 0;
		}
	const char *m = msb_suggest(v, words);
	return msb_error_set(err, -EINVAL,
			     "--on-secret-violation '%.*s': expected block, block-and-log or "
			     "passthrough%s%s%s",
			     Q, v, m ? "; did you mean '" : "", m ? m : "", m ? "'?" : "");
}

static int opt_security(struct msb_spec *s, const char *v, struct msb_error *err)
{
	static const char *const words[] = {"default", "restricted", NULL};
	if (strcmp(v, "default") == 0) {
		s->security = MSB_SECURITY_DEFAULT;
		return 0;
	}
	if (strcmp(v, "restricted") == 0) {
		s->security = MSB_SECURITY_RESTRICTED;
		return 0;
	}
	const char *m = msb_suggest(v, words);
	return msb_error_set(err, -EINVAL,
			     "--security '%.*s': expected default or restricted%s%s%s", Q, v,
			     m ? "; did you mean '" : "", m ? m : "", m ? "'?" : "");
}

/* An absolute guest path without "." or ".." parts, normalised. */
static int guest_path(const char *opt, const char *full, const char *p, char **out,
		      struct msb_error *err)
{
	if (p[0] != '/')
		return msb_error_set(err, -EINVAL,
				     "%s '%.*s': guest path '%.*s' is not absolute (expected /...)",
				     opt, Q, full, Q, p);
	if (strlen(p) >= PATH_TEXT_MAX)
		return msb_error_set(err, -EINVAL, "%s '%.*s': guest path too long", opt, Q, full);
	char *norm = malloc(strlen(p) + 1);
	if (!norm)
		return msb_error_set(err, -ENOMEM, "out of memory");
	size_t n = 0;
	const char *c = p;
	while (*c) {
		while (*c == '/')
			c++;
		const char *e = c;
		while (*e && *e != '/')
			e++;
		size_t l = (size_t)(e - c);
		if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.')) {
			free(norm);
			return msb_error_set(err, -EINVAL,
					     "%s '%.*s': guest path '%.*s' has a '.' or '..' part "
					     "(expected a plain absolute path)",
					     opt, Q, full, Q, p);
		}
		if (l) {
			norm[n++] = '/';
			memcpy(norm + n, c, l);
			n += l;
		}
		c = e;
	}
	if (n == 0)
		norm[n++] = '/';
	norm[n] = '\0';
	*out = norm;
	return 0;
}

static int opt_volume(struct msb_spec *s, const char *v, struct msb_error *err)
{
	static const char expected[] =
		"expected HOST:GUEST[:ro|rw][,noexec][,identity=strict|off][,locks=guest|host]";
	if (strlen(v) >= PATH_TEXT_MAX * 2)
		return msb_error_set(err, -EINVAL, "--volume '%.*s': too long", Q, v);
	cleanup_free char *buf = strdup(v);
	if (!buf)
		return msb_error_set(err, -ENOMEM, "out of memory");
	char *guest = strchr(buf, ':');
	if (!guest || guest == buf)
		return msb_error_set(err, -EINVAL, "--volume '%.*s': %s", Q, v, expected);
	*guest++ = '\0';
	char *opts = strchr(guest, ':');
	int ro = 0, noexec = 0, identity = MSB_SHARE_IDENTITY_STRICT, locks = MSB_SHARE_LOCKS_GUEST;
	if (opts) {
		*opts++ = '\0';
		static const char *const words[] = {
			"ro",		"rw",	       "noexec",     "identity=strict",
			"identity=off", "locks=guest", "locks=host", NULL};
		char *save = NULL;
		int seen_mode = 0, seen_identity = 0, seen_locks = 0;
		for (char *o = strtok_r(opts, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
			if (strcmp(o, "ro") == 0 || strcmp(o, "rw") == 0) {
				if (seen_mode++)
					return msb_error_set(err, -EINVAL,
							     "--volume '%.*s': ro/rw given twice",
							     Q, v);
				ro = o[1] == 'o';
			} else if (strcmp(o, "noexec") == 0) {
				noexec = 1;
			} else if (strcmp(o, "identity=strict") == 0 ||
				   strcmp(o, "identity=off") == 0) {
				if (seen_identity++)
					return msb_error_set(
						err, -EINVAL,
						"--volume '%.*s': identity given twice", Q, v);
				identity = o[9] == 'o' ? MSB_SHARE_IDENTITY_OFF
						       : MSB_SHARE_IDENTITY_STRICT;
			} else if (strcmp(o, "locks=guest") == 0 || strcmp(o, "locks=host") == 0) {
				if (seen_locks++)
					return msb_error_set(err, -EINVAL,
							     "--volume '%.*s': locks given twice",
							     Q, v);
				locks = o[6] == 'h' ? MSB_SHARE_LOCKS_HOST : MSB_SHARE_LOCKS_GUEST;
			} else {
				const char *m = msb_suggest(o, words);
				return msb_error_set(
					err, -EINVAL,
					"--volume '%.*s': unknown option '%.*s' (expected "
					"ro, rw, noexec, identity=strict|off or "
					"locks=guest|host)%s%s%s",
					Q, v, Q, o, m ? "; did you mean '" : "", m ? m : "",
					m ? "'?" : "");
			}
		}
		if (!seen_mode && !noexec && !seen_identity && !seen_locks)
			return msb_error_set(err, -EINVAL, "--volume '%.*s': empty options (%s)", Q,
					     v, expected);
	}
	char *target = NULL;
	int r = guest_path("--volume", v, guest, &target, err);
	if (r < 0)
		return r;
	struct msb_volume vol = {.read_only = ro,
				 .noexec = noexec,
				 .identity = identity,
				 .locks = locks,
				 .target = target};
	if (buf[0] == '/' || buf[0] == '.' || strchr(buf, '/')) {
		vol.source = strdup(buf); /* resolved against the host in validate */
	} else if (msb_name_valid(buf)) {
		vol.named = 1;
		vol.source = strdup(buf);
	} else {
		free(target);
		return msb_error_set(err, -EINVAL,
				     "--volume '%.*s': '%.*s' is neither a path nor a volume name "
				     "(%s; host paths start with / or ./)",
				     Q, v, Q, buf, expected);
	}
	struct msb_volume *slot =
		vol.source ? grow(&s->volumes, &s->nvolumes, sizeof(vol), "--volume", err) : NULL;
	if (!slot) {
		free(vol.source);
		free(target);
		return vol.source ? (err ? err->code : -ENOMEM)
				  : msb_error_set(err, -ENOMEM, "out of memory");
	}
	*slot = vol;
	return 0;
}

static int opt_secret(struct msb_spec *s, const char *v, struct msb_error *err)
{
	static const char expected[] = "expected ENV@HOST[,HOST...]; the value comes from the "
				       "host environment or --secret-file, never the command line";
	const char *at = strchr(v, '@');
	const char *eq = strchr(v, '=');
	if (eq && (!at || eq < at))
		/* Quote the name only: echoing the value would leak it to logs. */
		return msb_error_set(err, -EINVAL,
				     "--secret '%.*s=...': an inline value is refused (%s)",
				     (int)(eq - v) > Q ? Q : (int)(eq - v), v, expected);
	if (!at)
		return msb_error_set(err, -EINVAL, "--secret '%.*s': no @HOST (%s)", Q, v,
				     expected);
	if (!env_name_valid(v, (size_t)(at - v)))
		return msb_error_set(err, -EINVAL,
				     "--secret '%.*s': '%.*s' is not an environment variable name "
				     "(%s)",
				     Q, v, (int)(at - v) > Q ? Q : (int)(at - v), v, expected);
	for (size_t i = 0; i < s->nsecrets; i++)
		if (strncmp(s->secrets[i].env, v, (size_t)(at - v)) == 0 &&
		    s->secrets[i].env[at - v] == '\0')
			return msb_error_set(err, -EINVAL, "--secret '%.*s': %.*s is bound twice",
					     Q, v, (int)(at - v), v);
	struct msb_secret sec = {0};
	sec.env = strndup(v, (size_t)(at - v));
	cleanup_free char *hosts = strdup(at + 1);
	if (!sec.env || !hosts) {
		free(sec.env);
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	int r = 0;
	char *save = NULL;
	const char *h;
	char *list = hosts;
	/* strtok_r would skip empty items; walk by hand so "a,,b" is an error. */
	for (char *item = list;; item = save + 1) {
		save = strchr(item, ',');
		if (save)
			*save = '\0';
		h = item;
		if (!*h || !host_pattern_valid(h)) {
			r = msb_error_set(
				err, -EINVAL,
				"--secret '%.*s': bad host '%.*s' (expected a domain name "
				"like api.example.com or *.example.com)",
				Q, v, Q, h);
			break;
		}
		char **slot = grow(&sec.hosts, &sec.nhosts, sizeof(char *), "secret hosts", err);
		if (!slot) {
			r = err ? err->code : -ENOMEM;
			break;
		}
		*slot = strdup(h);
		if (!*slot) {
			r = msb_error_set(err, -ENOMEM, "out of memory");
			break;
		}
		for (char *c = *slot; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		if (!save)
			break;
	}
	struct msb_secret *slot =
		r == 0 ? grow(&s->secrets, &s->nsecrets, sizeof(sec), "--secret", err) : NULL;
	if (!slot) {
		free(sec.env);
		free_strv(sec.hosts, sec.nhosts);
		return r < 0 ? r : (err ? err->code : -ENOMEM);
	}
	*slot = sec;
	return 0;
}

static int append_str(char ***v, size_t *n, const char *what, const char *value,
		      struct msb_error *err)
{
	char **slot = grow(v, n, sizeof(char *), what, err);
	if (!slot)
		return err ? err->code : -ENOMEM;
	*slot = strdup(value);
	if (!*slot) {
		(*n)--;
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

static int opt_secret_file(struct msb_spec *s, const char *v, struct msb_error *err)
{
	const char *eq = strchr(v, '=');
	if (!eq || !env_name_valid(v, (size_t)(eq - v)) || !eq[1])
		return msb_error_set(err, -EINVAL,
				     "--secret-file '%.*s': expected ENV=PATH (a file holding the "
				     "value of secret ENV)",
				     Q, v);
	return append_str(&s->secret_files, &s->nsecret_files, "--secret-file", v, err);
}

int msb_spec_set_secret_value(struct msb_spec *s, const char *env, const char *value, size_t len,
			      struct msb_error *err)
{
	if (!s || !env || !value)
		return msb_error_set(err, -EINVAL, "secret value: no spec, name or value");
	if (s->validated)
		return msb_error_set(err, -EBUSY, "the spec was already validated");
	struct msb_secret *sec = NULL;
	for (size_t i = 0; i < s->nsecrets; i++)
		if (!strcmp(s->secrets[i].env, env))
			sec = &s->secrets[i];
	if (!sec)
		return msb_error_set(err, -EINVAL,
				     "secret value for '%.*s': no secret of that name is bound "
				     "(expected the option secret = %.*s@HOST first)",
				     Q, env, Q, env);
	if (!len || memchr(value, '\0', len))
		return msb_error_set(
			err, -EINVAL, "secret value for %s: %s (expected 1 to %d bytes, no NUL)",
			env, len ? "it holds a NUL byte" : "it is empty", MSB_SECRET_VALUE_MAX);
	if (len > MSB_SECRET_VALUE_MAX)
		return msb_error_set(err, -EFBIG,
				     "secret value for %s: %zu bytes (expected at most %d)", env,
				     len, MSB_SECRET_VALUE_MAX);
	if (!sec->value && !(sec->value = msb_secret_mem_alloc(MSB_SECRET_VALUE_MAX)))
		return msb_error_set(err, -ENOMEM, "out of memory");
	explicit_bzero(sec->value, MSB_SECRET_VALUE_MAX);
	memcpy(sec->value, value, len);
	sec->value_len = len;
	return 0;
}

int msb_spec_values_memfd(const struct msb_spec *s, int keep_open, struct msb_error *err)
{
	const char *names[MSB_SECRET_VALUES_MAX], *values[MSB_SECRET_VALUES_MAX];
	size_t lens[MSB_SECRET_VALUES_MAX], n = 0;
	for (size_t i = 0; i < s->nsecrets && n < MSB_SECRET_VALUES_MAX; i++) {
		const struct msb_secret *sec = &s->secrets[i];
		if (sec->source != MSB_SECRET_FROM_VALUE)
			continue;
		names[n] = sec->env;
		if (sec->value) {
			values[n] = sec->value;
			lens[n] = sec->value_len;
		} else if (!(values[n] = msb_secret_vault_get(sec->env, &lens[n]))) {
			continue;
		}
		n++;
	}
	return n ? msb_secret_values_memfd(names, values, lens, n, keep_open, err) : -ENOENT;
}

static int opt_env(struct msb_spec *s, const char *v, struct msb_error *err)
{
	const char *eq = strchr(v, '=');
	size_t klen = eq ? (size_t)(eq - v) : strlen(v);
	if (!env_name_valid(v, klen))
		return msb_error_set(err, -EINVAL,
				     "--env '%.*s': '%.*s' is not a variable name (expected "
				     "KEY=VALUE or KEY, KEY of A-Z a-z 0-9 _)",
				     Q, v, (int)(klen > Q ? Q : klen), v);
	if (strlen(v) > ENV_TEXT_MAX)
		return msb_error_set(err, -EINVAL, "--env '%.*s': longer than %d bytes", Q, v,
				     ENV_TEXT_MAX);
	if (eq)
		return append_str(&s->env, &s->nenv, "--env", v, err);
	/* KEY alone takes the host's value, as docker does. */
	const char *hv = getenv(v);
	if (!hv)
		return msb_error_set(err, -EINVAL,
				     "--env '%.*s': not set in the host environment (expected "
				     "KEY=VALUE, or KEY set on the host)",
				     Q, v);
	cleanup_free char *kv = NULL;
	if (asprintf(&kv, "%s=%s", v, hv) < 0)
		return msb_error_set(err, -ENOMEM, "out of memory");
	return append_str(&s->env, &s->nenv, "--env", kv, err);
}

static int opt_workdir(struct msb_spec *s, const char *v, struct msb_error *err)
{
	char *p = NULL;
	int r = guest_path("--workdir", v, v, &p, err);
	if (r < 0)
		return r;
	free(s->workdir);
	s->workdir = p;
	return 0;
}

static int opt_duration(uint64_t *dst, int *set, const char *opt, const char *v,
			struct msb_error *err)
{
	int r = msb_parse_duration(v, dst, err);
	if (r < 0)
		return msb_error_prefix(err, "%s: ", opt);
	*set = 1;
	return 0;
}

static int opt_module(struct msb_spec *s, int slot, const char *v, struct msb_error *err)
{
	size_t len = strlen(v);
	int ok = len > 0 && len <= 32 &&
		 (islower((unsigned char)v[0]) || isdigit((unsigned char)v[0]));
	for (size_t i = 0; ok && i < len; i++)
		ok = islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]) || v[i] == '-' ||
		     v[i] == '_';
	if (!ok)
		return msb_error_set(
			err, -EINVAL,
			"--%s '%.*s': invalid module name (expected [a-z0-9][a-z0-9_-]*, "
			"at most 32)",
			msb_slot_option[slot], Q, v);
	return set_str(&s->modules[slot], v, err);
}

static int opt_path(char **dst, const char *opt, const char *v, struct msb_error *err)
{
	if (!*v || strlen(v) >= PATH_TEXT_MAX)
		return msb_error_set(err, -EINVAL, "--%s '%.*s': expected a path", opt, Q, v);
	return set_str(dst, v, err);
}

static int opt_image(struct msb_spec *s, const char *v, struct msb_error *err)
{
	/* The reference grammar is the image module's; here only sanity. */
	size_t len = strlen(v);
	int ok = len > 0 && len <= 512 && v[0] != '-';
	for (size_t i = 0; ok && i < len; i++)
		ok = isgraph((unsigned char)v[i]);
	if (!ok)
		return msb_error_set(err, -EINVAL,
				     "image '%.*s': expected an image reference like python, "
				     "alpine:3.20 or registry:5000/repo@sha256:...",
				     Q, v);
	return set_str(&s->image, v, err);
}

int msb_spec_set(struct msb_spec *s, const char *option, const char *value, struct msb_error *err)
{
	if (!s || !option)
		return msb_error_set(err, -EINVAL, "no option given");
	if (s->validated)
		return msb_error_set(err, -EBUSY, "the spec was already validated");
	const struct msb_spec_option *o = msb_spec_option_find(option);
	if (!o && strcmp(option, "image") != 0)
		return msb_error_set(err, -EINVAL, "unknown option '%.*s'", Q, option);
	if (o && o->arg == MSB_OPT_FLAG) {
		if (value)
			return msb_error_set(err, -EINVAL, "--%s takes no value", option);
	} else if (!value) {
		return msb_error_set(err, -EINVAL, "--%s needs a value", option);
	} else if (!printable(value)) {
		return msb_error_set(err, -EINVAL, "--%s: value has control characters", option);
	}
	const char *v = value;
	if (!strcmp(option, "image"))
		return opt_image(s, v, err);
	if (!strcmp(option, "name"))
		return opt_name(s, v, err);
	if (!strcmp(option, "cpus"))
		return opt_cpus(s, v, err);
	if (!strcmp(option, "memory"))
		return opt_memory(s, v, err);
	if (!strcmp(option, "no-net")) {
		s->no_net = 1;
		return 0;
	}
	if (!strcmp(option, "net-default-egress"))
		return opt_egress(s, v, err);
	if (!strcmp(option, "net-rule"))
		return opt_net_rule(s, v, err);
	if (!strcmp(option, "publish"))
		return opt_publish(s, v, err);
	if (!strcmp(option, "dns-nameserver"))
		return opt_dns(s, v, err);
	if (!strcmp(option, "user"))
		return opt_user(s, v, err);
	if (!strcmp(option, "security"))
		return opt_security(s, v, err);
	if (!strcmp(option, "volume"))
		return opt_volume(s, v, err);
	if (!strcmp(option, "secret"))
		return opt_secret(s, v, err);
	if (!strcmp(option, "secret-file"))
		return opt_secret_file(s, v, err);
	if (!strcmp(option, "on-secret-violation"))
		return opt_violation(s, v, err);
	if (!strcmp(option, "trust-host-cas")) {
		s->trust_host_cas = 1;
		return 0;
	}
	if (!strcmp(option, "env"))
		return opt_env(s, v, err);
	if (!strcmp(option, "workdir"))
		return opt_workdir(s, v, err);
	if (!strcmp(option, "idle-timeout"))
		return opt_duration(&s->idle_timeout_ms, &s->idle_set, "--idle-timeout", v, err);
	if (!strcmp(option, "max-duration"))
		return opt_duration(&s->max_duration_ms, &s->max_set, "--max-duration", v, err);
	for (int slot = 0; slot < MSB_SLOT_COUNT; slot++)
		if (!strcmp(option, msb_slot_option[slot]))
			return opt_module(s, slot, v, err);
	if (!strcmp(option, "kernel"))
		return opt_path(&s->kernel, "kernel", v, err);
	if (!strcmp(option, "rootfs"))
		return opt_path(&s->rootfs, "rootfs", v, err);
	return msb_error_set(err, -EINVAL, "unknown option '%.*s'", Q, option);
}

int msb_spec_set_command(struct msb_spec *s, char *const *argv, size_t argc, struct msb_error *err)
{
	if (argc > 4096)
		return msb_error_set(err, -E2BIG, "command has too many arguments (at most 4096)");
	char **v = calloc(argc + 1, sizeof(char *));
	if (!v)
		return msb_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < argc; i++) {
		v[i] = strdup(argv[i]);
		if (!v[i]) {
			free_strv(v, i);
			return msb_error_set(err, -ENOMEM, "out of memory");
		}
	}
	free_strv(s->command, s->ncommand);
	s->command = v;
	s->ncommand = argc;
	return 0;
}

/* ---- whole-spec validation ------------------------------------------- */

static int add_default_rules(struct msb_spec *s, struct msb_error *err)
{
	/* The default posture: deny by default, public egress and DNS allowed. */
	return msb_net_rules_parse("allow@public,allow@dns", &s->rules, &s->nrules, err);
}

/*
 * Guest paths a share may not cover: the agent's own directory and the API
 * filesystems it mounts (a share there would hide /proc or /dev from the
 * workload, or the agent's channel from the agent).  The agent refuses them
 * too, after resolving symlinks inside the guest.
 */
static const char *const reserved_targets[] = {"/.msb", "/proc", "/sys", "/dev", "/run"};

static int validate_volumes(struct msb_spec *s, struct msb_error *err)
{
	if (s->nvolumes > MSB_VOLUMES_MAX)
		return msb_error_set(err, -EINVAL, "--volume: %zu volumes (expected at most %d)",
				     s->nvolumes, MSB_VOLUMES_MAX);
	for (size_t i = 0; i < s->nvolumes; i++) {
		struct msb_volume *v = &s->volumes[i];
		if (strcmp(v->target, "/") == 0)
			return msb_error_set(
				err, -EINVAL,
				"--volume '%s:%s': cannot mount over the guest's / (expected "
				"a directory below it)",
				v->source, v->target);
		for (size_t k = 0; k < sizeof(reserved_targets) / sizeof(reserved_targets[0]);
		     k++) {
			const char *t = reserved_targets[k];
			size_t tl = strlen(t);
			if (strncmp(v->target, t, tl) == 0 &&
			    (v->target[tl] == '\0' || v->target[tl] == '/'))
				return msb_error_set(
					err, -EINVAL,
					"--volume '%s:%s': %s is %s (expected a guest path outside "
					"/proc, /sys, /dev, /run and /.msb)",
					v->source, v->target, t,
					k == 0 ? "reserved for the guest agent"
					       : "an API filesystem the guest agent mounts");
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(s->volumes[j].target, v->target) == 0)
				return msb_error_set(err, -EINVAL,
						     "--volume: guest path %s is used twice",
						     v->target);
		if (v->named) {
			/* Named volumes live in MSB_HOME: msb_volumes_resolve checks them. */
			continue;
		}
		char real[PATH_MAX];
		struct stat st;
		if (!realpath(v->source, real) || stat(real, &st) < 0)
			return msb_error_errno(
				err, -errno,
				"--volume '%s:%s': host path '%s' (expected an existing "
				"directory)",
				v->source, v->target, v->source);
		if (!S_ISDIR(st.st_mode))
			return msb_error_set(err, -ENOTDIR,
					     "--volume '%s:%s': host path '%s' is not a directory "
					     "(expected a directory: shares are directories)",
					     v->source, v->target, v->source);
		char *c = strdup(real);
		if (!c)
			return msb_error_set(err, -ENOMEM, "out of memory");
		free(v->source);
		v->source = c;
	}
	return 0;
}

static int read_secret_value(const char *path, size_t *len, struct msb_error *err)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return msb_error_errno(err, -errno, "--secret-file: '%s'", path);
	if (!S_ISREG(st.st_mode))
		return msb_error_set(err, -EINVAL, "--secret-file: '%s' is not a regular file",
				     path);
	if (access(path, R_OK) < 0)
		return msb_error_errno(err, -errno, "--secret-file: '%s'", path);
	*len = (size_t)st.st_size;
	return 0;
}

static int validate_secrets(struct msb_spec *s, struct msb_error *err)
{
	for (size_t f = 0; f < s->nsecret_files; f++) {
		const char *kv = s->secret_files[f];
		const char *eq = strchr(kv, '=');
		struct msb_secret *sec = NULL;
		for (size_t i = 0; i < s->nsecrets; i++)
			if (strncmp(s->secrets[i].env, kv, (size_t)(eq - kv)) == 0 &&
			    s->secrets[i].env[eq - kv] == '\0')
				sec = &s->secrets[i];
		if (!sec)
			return msb_error_set(err, -EINVAL,
					     "--secret-file '%.*s': no --secret %.*s@HOST binds it",
					     Q, kv, (int)(eq - kv), kv);
		char real[PATH_MAX];
		if (!realpath(eq + 1, real))
			return msb_error_errno(err, -errno, "--secret-file '%.*s': '%s'", Q, kv,
					       eq + 1);
		size_t len = 0;
		int r = read_secret_value(real, &len, err);
		if (r < 0)
			return r;
		if (len == 0)
			return msb_error_set(err, -EINVAL,
					     "--secret-file '%.*s': the file is empty", Q, kv);
		if (set_str(&sec->file, real, err) < 0)
			return -ENOMEM;
	}
	for (size_t i = 0; i < s->nsecrets; i++) {
		struct msb_secret *sec = &s->secrets[i];
		/* Precedence: --secret-file, a value given directly, the host
		 * environment, the config file's [secrets] (docs/secrets.md). */
		const char *val;
		size_t vl;
		int src;
		if (sec->file)
			src = MSB_SECRET_FROM_FILE;
		else if (sec->value)
			src = MSB_SECRET_FROM_VALUE;
		else if ((src = msb_secret_lookup(sec->env, &val, &vl)) < 0) {
			int r = msb_config_load(err); /* for its [secrets] */
			if (r < 0)
				return r;
			src = msb_secret_lookup(sec->env, &val, &vl);
		}
		if (src < 0)
			return msb_error_set(
				err, -EINVAL,
				"--secret %s: %s is not set in the host environment "
				"(expected it exported, --secret-file %s=PATH, a value given "
				"directly "
				"by the SDK or --secret-values-fd, or %s = VALUE in the config "
				"file's [secrets])",
				sec->env, sec->env, sec->env, sec->env);
		sec->source = src;
		for (size_t e = 0; e < s->nenv; e++)
			if (strncmp(s->env[e], sec->env, strlen(sec->env)) == 0 &&
			    s->env[e][strlen(sec->env)] == '=')
				return msb_error_set(
					err, -EINVAL,
					"--env %s conflicts with --secret %s (the guest "
					"gets a placeholder for a secret)",
					sec->env, sec->env);
	}
	return 0;
}

int msb_spec_validate(struct msb_spec *s, struct msb_error *err)
{
	if (!s)
		return msb_error_set(err, -EINVAL, "no spec");
	if (s->validated)
		return 0;
	if (!s->image && !s->rootfs)
		return msb_error_set(err, -EINVAL,
				     "no image given (expected an IMAGE argument or --rootfs DIR)");
	if (s->image && s->rootfs)
		return msb_error_set(err, -EINVAL,
				     "both IMAGE '%.*s' and --rootfs given (expected one of them)",
				     Q, s->image);
	if (s->no_net && s->nsecrets)
		return msb_error_set(err, -EINVAL,
				     "--no-net cannot be combined with --secret (a secret is only "
				     "ever sent over the network, by the secrets proxy)");
	if (!s->nsecrets && (s->trust_host_cas || s->on_violation_set))
		return msb_error_set(err, -EINVAL,
				     "%s needs a --secret (it sets how secrets are "
				     "handled)",
				     s->trust_host_cas ? "--trust-host-cas"
						       : "--on-secret-violation");
	if (s->no_net && (s->rules_given || s->egress || s->npublish || s->ndns))
		return msb_error_set(err, -EINVAL,
				     "--no-net cannot be combined with %s (a sandbox without a "
				     "network has no rules or ports)",
				     s->rules_given ? "--net-rule"
				     : s->egress    ? "--net-default-egress"
				     : s->npublish  ? "--publish"
						    : "--dns-nameserver");
	if (s->rootfs) {
		char real[PATH_MAX];
		struct stat st;
		if (!realpath(s->rootfs, real) || stat(real, &st) < 0)
			return msb_error_errno(err, -errno,
					       "--rootfs '%.*s' (expected an existing directory)",
					       Q, s->rootfs);
		if (!S_ISDIR(st.st_mode))
			return msb_error_set(err, -ENOTDIR, "--rootfs '%.*s' is not a directory", Q,
					     s->rootfs);
		if (set_str(&s->rootfs, real, err) < 0)
			return -ENOMEM;
	}
	if (s->kernel) {
		char real[PATH_MAX];
		struct stat st;
		if (!realpath(s->kernel, real) || stat(real, &st) < 0)
			return msb_error_errno(
				err, -errno, "--kernel '%.*s' (expected a bzImage or vmlinux file)",
				Q, s->kernel);
		if (!S_ISREG(st.st_mode))
			return msb_error_set(err, -EINVAL, "--kernel '%.*s' is not a regular file",
					     Q, s->kernel);
		if (set_str(&s->kernel, real, err) < 0)
			return -ENOMEM;
	}
	int r = validate_volumes(s, err);
	if (r < 0)
		return r;
	r = validate_secrets(s, err);
	if (r < 0)
		return r;
	if (!s->cpus)
		s->cpus = MSB_DEFAULT_CPUS;
	if (!s->memory)
		s->memory = MSB_DEFAULT_MEMORY;
	if (!s->no_net) {
		/* Neither rules nor a default given: the default posture. */
		if (!s->rules_given && !s->egress) {
			r = add_default_rules(s, err);
			if (r < 0)
				return r;
		}
		if (!s->egress)
			s->egress = MSB_EGRESS_DENY;
	}
	s->validated = 1;
	return 0;
}

/* ---- JSON ------------------------------------------------------------- */

static const char *const action_names[] = {"", "allow", "deny"};
static const char *const direction_names[] = {"", "egress", "ingress", "any"};
static const char *const target_names[] = {"",	   "any",  "dns",    "group",
					   "ipv4", "ipv6", "domain", "suffix"};
static const char *const group_names[] = {"",		"public", "private",   "loopback",
					  "link-local", "meta",	  "multicast", "host"};
static const char *const proto_names[] = {"any", "tcp", "udp", "icmp"};

#define NAME_OF(tab, i) ((i) >= 0 && (size_t)(i) < sizeof(tab) / sizeof(tab[0]) ? tab[i] : "?")

static json_t *strv_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *rule_json(const struct msb_net_rule *r)
{
	char text[512];
	if (msb_net_rule_format(r, text, sizeof(text)) < 0)
		text[0] = '\0';
	json_t *t = json_object();
	json_object_set_new(t, "kind", json_string(NAME_OF(target_names, r->target)));
	char addr[INET6_ADDRSTRLEN];
	switch (r->target) {
	case MSB_TARGET_GROUP:
		json_object_set_new(t, "group", json_string(NAME_OF(group_names, r->group)));
		break;
	case MSB_TARGET_IPV4:
	case MSB_TARGET_IPV6:
		inet_ntop(r->target == MSB_TARGET_IPV4 ? AF_INET : AF_INET6, r->addr, addr,
			  sizeof(addr));
		json_object_set_new(t, "address", json_string(addr));
		json_object_set_new(t, "prefix", json_integer(r->prefix));
		break;
	case MSB_TARGET_DOMAIN:
	case MSB_TARGET_SUFFIX:
		json_object_set_new(t, "name", json_string(r->domain));
		break;
	default:
		break;
	}
	json_t *ports = r->port_lo ? json_pack("[ii]", r->port_lo, r->port_hi) : json_null();
	return json_pack("{s:s,s:s,s:s,s:o,s:s,s:o}", "rule", text, "action",
			 NAME_OF(action_names, r->action), "direction",
			 NAME_OF(direction_names, r->direction), "target", t, "proto",
			 NAME_OF(proto_names, r->proto), "ports", ports);
}

static json_t *opt_str(const char *s)
{
	return s ? json_string(s) : json_null();
}

char *msb_spec_to_json(const struct msb_spec *s, int pretty)
{
	json_t *root = json_object();
	if (!root)
		return NULL;
	json_object_set_new(root, "msb_spec", json_integer(1));
	json_object_set_new(root, "name", opt_str(s->name));
	json_object_set_new(root, "image", opt_str(s->image));
	json_object_set_new(root, "rootfs", opt_str(s->rootfs));
	json_object_set_new(root, "command", strv_json(s->command, s->ncommand));
	json_object_set_new(
		root, "resources",
		json_pack("{s:i,s:I}", "cpus", (int)s->cpus, "memory", (json_int_t)s->memory));
	json_object_set_new(root, "lifetime",
			    json_pack("{s:I,s:I}", "idle_timeout_ms",
				      (json_int_t)s->idle_timeout_ms, "max_duration_ms",
				      (json_int_t)s->max_duration_ms));
	json_t *rules = json_array();
	for (size_t i = 0; i < s->nrules; i++)
		json_array_append_new(rules, rule_json(&s->rules[i]));
	json_t *publish = json_array();
	for (size_t i = 0; i < s->npublish; i++)
		json_array_append_new(publish, json_pack("{s:s,s:i,s:i,s:s}", "address",
							 s->publish[i].address, "host_port",
							 s->publish[i].host_port, "guest_port",
							 s->publish[i].guest_port, "proto",
							 s->publish[i].udp ? "udp" : "tcp"));
	json_object_set_new(root, "network",
			    json_pack("{s:b,s:s?,s:o,s:o}", "enabled", !s->no_net, "default_egress",
				      s->no_net			      ? NULL
				      : s->egress == MSB_EGRESS_ALLOW ? "allow"
								      : "deny",
				      "rules", rules, "publish", publish));
	if (s->ndns)
		json_object_set_new(json_object_get(root, "network"), "dns",
				    strv_json(s->dns, s->ndns));
	json_object_set_new(root, "process",
			    json_pack("{s:o,s:o,s:o}", "user", opt_str(s->user), "env",
				      strv_json(s->env, s->nenv), "workdir", opt_str(s->workdir)));
	json_object_set_new(
		root, "security",
		json_string(s->security == MSB_SECURITY_RESTRICTED ? "restricted" : "default"));
	json_t *vols = json_array();
	for (size_t i = 0; i < s->nvolumes; i++)
		json_array_append_new(
			vols,
			json_pack(
				"{s:s,s:s,s:s,s:b,s:b,s:s,s:s}", "type",
				s->volumes[i].named ? "volume" : "bind", "source",
				s->volumes[i].source, "target", s->volumes[i].target, "read_only",
				s->volumes[i].read_only, "noexec", s->volumes[i].noexec, "identity",
				s->volumes[i].identity == MSB_SHARE_IDENTITY_OFF ? "off" : "strict",
				"locks",
				s->volumes[i].locks == MSB_SHARE_LOCKS_HOST ? "host" : "guest"));
	json_object_set_new(root, "volumes", vols);
	json_t *secrets = json_array();
	for (size_t i = 0; i < s->nsecrets; i++) {
		/* The value is never in the spec: only where it comes from. */
		json_array_append_new(
			secrets,
			json_pack("{s:s,s:o,s:s,s:o}", "env", s->secrets[i].env, "hosts",
				  strv_json(s->secrets[i].hosts, s->secrets[i].nhosts), "source",
				  msb_secret_source_name(s->secrets[i].file ? MSB_SECRET_FROM_FILE
							 : s->secrets[i].value
								 ? MSB_SECRET_FROM_VALUE
								 : s->secrets[i].source),
				  "file", opt_str(s->secrets[i].file)));
	}
	json_object_set_new(root, "secrets", secrets);
	static const char *const modes[] = {"block", "block-and-log", "passthrough"};
	json_object_set_new(root, "secrets_policy",
			    json_pack("{s:s,s:b}", "on_violation", modes[s->on_violation],
				      "trust_host_cas", s->trust_host_cas));
	json_object_set_new(root, "modules",
			    json_pack("{s:s,s:s,s:s,s:s}", "hypervisor",
				      msb_spec_module(s, MSB_SLOT_HV), "network",
				      msb_spec_module(s, MSB_SLOT_NET), "storage",
				      msb_spec_module(s, MSB_SLOT_STORAGE), "secrets",
				      msb_spec_module(s, MSB_SLOT_SECRETS)));
	json_object_set_new(root, "kernel", opt_str(s->kernel));
	char *out =
		json_dumps(root, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return out;
}

/* ---- from JSON: every field re-enters through its option parser ------- */

static int json_fail(struct msb_error *err, const char *field, const char *expected)
{
	return msb_error_set(err, -EINVAL, "spec: field '%s' is malformed (expected %s)", field,
			     expected);
}

static int set_from_string(struct msb_spec *s, json_t *v, const char *opt, const char *field,
			   struct msb_error *err)
{
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return json_fail(err, field, "a string or null");
	int r = msb_spec_set(s, opt, json_string_value(v), err);
	return r < 0 ? msb_error_prefix(err, "spec field '%s': ", field) : 0;
}

static int from_json_fill(struct msb_spec *s, json_t *root, struct msb_error *err)
{
	if (!json_is_object(root))
		return json_fail(err, "(top)", "an object");
	json_t *ver = json_object_get(root, "msb_spec");
	if (!json_is_integer(ver) || json_integer_value(ver) != 1)
		return json_fail(err, "msb_spec", "1");
	int r;
	if ((r = set_from_string(s, json_object_get(root, "name"), "name", "name", err)) < 0 ||
	    (r = set_from_string(s, json_object_get(root, "image"), "image", "image", err)) < 0 ||
	    (r = set_from_string(s, json_object_get(root, "rootfs"), "rootfs", "rootfs", err)) <
		    0 ||
	    (r = set_from_string(s, json_object_get(root, "kernel"), "kernel", "kernel", err)) < 0)
		return r;
	json_t *cmd = json_object_get(root, "command");
	if (cmd && !json_is_null(cmd)) {
		if (!json_is_array(cmd) || json_array_size(cmd) > 4096)
			return json_fail(err, "command", "an array of strings");
		size_t n = json_array_size(cmd);
		cleanup_free char **argv = calloc(n + 1, sizeof(char *));
		if (!argv)
			return msb_error_set(err, -ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			json_t *a = json_array_get(cmd, i);
			if (!json_is_string(a))
				return json_fail(err, "command", "an array of strings");
			argv[i] = (char *)json_string_value(a);
		}
		if ((r = msb_spec_set_command(s, argv, n, err)) < 0)
			return r;
	}
	json_t *res = json_object_get(root, "resources");
	if (res) {
		json_t *c = json_object_get(res, "cpus"), *m = json_object_get(res, "memory");
		char buf[32];
		if (c) {
			if (!json_is_integer(c))
				return json_fail(err, "resources.cpus", "an integer");
			snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(c));
			if ((r = msb_spec_set(s, "cpus", buf, err)) < 0)
				return r;
		}
		if (m) {
			if (!json_is_integer(m))
				return json_fail(err, "resources.memory", "an integer (bytes)");
			snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(m));
			if ((r = msb_spec_set(s, "memory", buf, err)) < 0)
				return r;
		}
	}
	json_t *life = json_object_get(root, "lifetime");
	if (life) {
		static const char *const keys[2] = {"idle_timeout_ms", "max_duration_ms"};
		static const char *const opts[2] = {"idle-timeout", "max-duration"};
		for (int i = 0; i < 2; i++) {
			json_t *v = json_object_get(life, keys[i]);
			if (!v)
				continue;
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return json_fail(err, keys[i], "a non-negative integer");
			char buf[32];
			snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT "ms",
				 json_integer_value(v));
			if (json_integer_value(v) == 0)
				snprintf(buf, sizeof(buf), "0");
			if ((r = msb_spec_set(s, opts[i], buf, err)) < 0)
				return r;
		}
	}
	json_t *net = json_object_get(root, "network");
	if (net) {
		json_t *en = json_object_get(net, "enabled");
		if (en && !json_is_boolean(en))
			return json_fail(err, "network.enabled", "true or false");
		if (en && json_is_false(en) && (r = msb_spec_set(s, "no-net", NULL, err)) < 0)
			return r;
		if ((r = set_from_string(s, json_object_get(net, "default_egress"),
					 "net-default-egress", "network.default_egress", err)) < 0)
			return r;
		json_t *rules = json_object_get(net, "rules");
		size_t i;
		json_t *rule;
		if (rules && !json_is_array(rules))
			return json_fail(err, "network.rules", "an array");
		json_array_foreach(rules, i, rule)
		{
			json_t *t = json_is_object(rule) ? json_object_get(rule, "rule") : rule;
			if ((r = set_from_string(s, t, "net-rule", "network.rules", err)) < 0)
				return r;
		}
		json_t *pubs = json_object_get(net, "publish"), *p;
		if (pubs && !json_is_array(pubs))
			return json_fail(err, "network.publish", "an array");
		json_array_foreach(pubs, i, p)
		{
			const char *addr, *proto;
			int hp, gp;
			if (json_unpack(p, "{s:s,s:i,s:i,s:s}", "address", &addr, "host_port", &hp,
					"guest_port", &gp, "proto", &proto) < 0)
				return json_fail(err, "network.publish",
						 "address, ports and proto");
			char buf[128];
			int v6 = strchr(addr, ':') != NULL;
			snprintf(buf, sizeof(buf), "%s%s%s:%d:%d/%s", v6 ? "[" : "", addr,
				 v6 ? "]" : "", hp, gp, proto);
			if ((r = msb_spec_set(s, "publish", buf, err)) < 0)
				return r;
		}
		json_t *dns = json_object_get(net, "dns"), *d;
		if (dns && !json_is_array(dns))
			return json_fail(err, "network.dns", "an array of addresses");
		json_array_foreach(dns, i, d)
		{
			if ((r = set_from_string(s, d, "dns-nameserver", "network.dns", err)) < 0)
				return r;
		}
	}
	json_t *proc = json_object_get(root, "process");
	if (proc) {
		if ((r = set_from_string(s, json_object_get(proc, "user"), "user", "process.user",
					 err)) < 0 ||
		    (r = set_from_string(s, json_object_get(proc, "workdir"), "workdir",
					 "process.workdir", err)) < 0)
			return r;
		json_t *env = json_object_get(proc, "env"), *e;
		size_t i;
		if (env && !json_is_array(env))
			return json_fail(err, "process.env", "an array of KEY=VALUE");
		json_array_foreach(env, i, e)
		{
			if (!json_is_string(e) || !strchr(json_string_value(e), '='))
				return json_fail(err, "process.env", "an array of KEY=VALUE");
			if ((r = msb_spec_set(s, "env", json_string_value(e), err)) < 0)
				return r;
		}
	}
	if ((r = set_from_string(s, json_object_get(root, "security"), "security", "security",
				 err)) < 0)
		return r;
	json_t *vols = json_object_get(root, "volumes"), *v;
	size_t i;
	if (vols && !json_is_array(vols))
		return json_fail(err, "volumes", "an array");
	json_array_foreach(vols, i, v)
	{
		const char *src, *dst, *identity = "strict", *locks = "guest";
		int ro = 0, noexec = 0;
		if (json_unpack(v, "{s:s,s:s,s?b,s?b,s?s,s?s}", "source", &src, "target", &dst,
				"read_only", &ro, "noexec", &noexec, "identity", &identity, "locks",
				&locks) < 0)
			return json_fail(err, "volumes", "objects with source and target");
		if (strchr(src, ':') || strchr(dst, ':'))
			return json_fail(err, "volumes", "paths without ':'");
		if (strcmp(identity, "strict") != 0 && strcmp(identity, "off") != 0)
			return json_fail(err, "volumes", "identity \"strict\" or \"off\"");
		if (strcmp(locks, "guest") != 0 && strcmp(locks, "host") != 0)
			return json_fail(err, "volumes", "locks \"guest\" or \"host\"");
		cleanup_free char *buf = NULL;
		if (asprintf(&buf, "%s:%s:%s%s,identity=%s,locks=%s", src, dst, ro ? "ro" : "rw",
			     noexec ? ",noexec" : "", identity, locks) < 0)
			return msb_error_set(err, -ENOMEM, "out of memory");
		if ((r = msb_spec_set(s, "volume", buf, err)) < 0)
			return r;
	}
	json_t *secs = json_object_get(root, "secrets"), *sec;
	if (secs && !json_is_array(secs))
		return json_fail(err, "secrets", "an array");
	json_array_foreach(secs, i, sec)
	{
		const char *env, *file = NULL;
		json_t *hosts, *jfile = NULL;
		if (json_unpack(sec, "{s:s,s:o,s?o}", "env", &env, "hosts", &hosts, "file",
				&jfile) < 0 ||
		    !json_is_array(hosts) || json_array_size(hosts) == 0 ||
		    (jfile && !json_is_null(jfile) && !json_is_string(jfile)))
			return json_fail(err, "secrets", "objects with env and hosts");
		if (jfile && json_is_string(jfile))
			file = json_string_value(jfile);
		cleanup_free char *buf = strdup(env);
		size_t j;
		json_t *h;
		json_array_foreach(hosts, j, h)
		{
			if (!json_is_string(h))
				return json_fail(err, "secrets", "host names");
			char *nb = NULL;
			if (!buf ||
			    asprintf(&nb, "%s%c%s", buf, j ? ',' : '@', json_string_value(h)) < 0)
				return msb_error_set(err, -ENOMEM, "out of memory");
			free(buf);
			buf = nb;
		}
		if ((r = msb_spec_set(s, "secret", buf, err)) < 0)
			return r;
		if (file) {
			cleanup_free char *sf = NULL;
			if (asprintf(&sf, "%s=%s", env, file) < 0)
				return msb_error_set(err, -ENOMEM, "out of memory");
			if ((r = msb_spec_set(s, "secret-file", sf, err)) < 0)
				return r;
		}
	}
	json_t *pol = json_object_get(root, "secrets_policy");
	if (pol) {
		json_t *th = json_object_get(pol, "trust_host_cas");
		if (!json_is_object(pol) || (th && !json_is_boolean(th)))
			return json_fail(err, "secrets_policy",
					 "an object with on_violation and trust_host_cas");
		json_t *ov = json_object_get(pol, "on_violation");
		/* The defaults are written out too: only a change is an option given. */
		if (ov && json_is_string(ov) && strcmp(json_string_value(ov), "block") &&
		    (r = msb_spec_set(s, "on-secret-violation", json_string_value(ov), err)) < 0)
			return r;
		if (ov && !json_is_string(ov))
			return json_fail(err, "secrets_policy.on_violation", "a string");
		if (th && json_is_true(th) &&
		    (r = msb_spec_set(s, "trust-host-cas", NULL, err)) < 0)
			return r;
	}
	json_t *mods = json_object_get(root, "modules");
	if (mods) {
		static const char *const keys[MSB_SLOT_COUNT] = {"hypervisor", "network", "storage",
								 "secrets"};
		for (int slot = 0; slot < MSB_SLOT_COUNT; slot++)
			if ((r = set_from_string(s, json_object_get(mods, keys[slot]),
						 msb_slot_option[slot], keys[slot], err)) < 0)
				return r;
	}
	return 0;
}

int msb_spec_from_json(const char *json, size_t len, struct msb_spec **out, struct msb_error *err)
{
	if (len > MSB_SPEC_JSON_MAX)
		return msb_error_set(err, -E2BIG, "spec: larger than %d bytes", MSB_SPEC_JSON_MAX);
	json_error_t jerr;
	/* Depth is bounded by jansson (JSON_PARSER_MAX_DEPTH). */
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return msb_error_set(err, -EINVAL, "spec: not JSON: %s (line %d)", jerr.text,
				     jerr.line);
	struct msb_spec *s = msb_spec_new();
	int r = s ? from_json_fill(s, root, err) : msb_error_set(err, -ENOMEM, "out of memory");
	json_decref(root);
	if (r == 0)
		r = msb_spec_validate(s, err);
	if (r < 0) {
		msb_spec_free(s);
		return r;
	}
	*out = s;
	return 0;
}
