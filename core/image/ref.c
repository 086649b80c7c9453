/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references (see ref.h for the grammar).  The text comes from users,
 * spec files and the SDK; it ends up in registry URLs and cache paths, so
 * everything is checked against the grammar here and nowhere else: the
 * accepted characters leave no room for "..", "%", "?", "#", whitespace or
 * control characters in a URL path, and the registry is a host[:port] and
 * nothing more (no userinfo, no path).
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <msb/msb.h>

#include "error.h"
#include "pull.h"
#include "ref.h"

#define DOCKER_HUB    "docker.io"
#define DOCKER_LEGACY "index.docker.io"
#define DOCKER_API    "registry-1.docker.io"
#define OFFICIAL      "library/"
#define DEFAULT_TAG   "latest"
#define TAG_MAX	      128
#define PATH_EXPECTED "expected [a-z0-9] separated by . _ __ or -"
#define TAG_EXPECTED  "expected [A-Za-z0-9_] then up to 127 of [A-Za-z0-9_.-]"
#define DIGEST_EXPECT "expected sha256: and 64 lowercase hex digits"
#define QUOTE_MAX     80

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/*
 * Copy n bytes of untrusted text into out for an error message: at most
 * QUOTE_MAX bytes, anything outside printable ASCII (escape sequences,
 * newlines, UTF-8) shown as '?', so a message cannot drive the terminal.
 */
static void quote(const char *s, size_t n, char out[QUOTE_MAX + 4])
{
	size_t i;
	for (i = 0; i < n && i < QUOTE_MAX && s[i]; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (i < n && s[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}

__attribute__((format(printf, 4, 5))) static int ref_fail(struct msb_error *err, int code,
							  const char *input, const char *fmt, ...)
{
	char q[QUOTE_MAX + 4], what[MSB_ERROR_MSG_MAX];
	quote(input, SIZE_MAX, q);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return msb_error_set(err, code, "image reference '%s': %s", q, what);
}

int msb_digest_valid(const char *s)
{
	if (!s || strncmp(s, "sha256:", 7) != 0)
		return 0;
	for (int i = 0; i < 64; i++)
		if (!is_lower_hex(s[7 + i]))
			return 0;
	return s[71] == '\0';
}

void msb_digest_format(const unsigned char md[32], char out[72])
{
	static const char hexd[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < 32; i++) {
		out[7 + 2 * i] = hexd[md[i] >> 4];
		out[8 + 2 * i] = hexd[md[i] & 15];
	}
	out[71] = '\0';
}

void msb_digest_of(const void *buf, size_t len, char out[72])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (!EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) || n != 32) {
		out[0] = '\0';
		return;
	}
	msb_digest_format(md, out);
}

/* Why digest d (n bytes, the text after '@') is not one we accept; NULL if it is. */
static const char *digest_problem(const char *d, size_t n, char *buf, size_t bufsz)
{
	char q[QUOTE_MAX + 4];
	if (n == 0)
		return "empty digest after '@' (" DIGEST_EXPECT ")";
	const char *colon = memchr(d, ':', n);
	if (!colon) {
		quote(d, n, q);
		snprintf(buf, bufsz, "digest '%s' has no algorithm (" DIGEST_EXPECT ")", q);
		return buf;
	}
	size_t alen = (size_t)(colon - d);
	if (alen != 6 || memcmp(d, "sha256", 6) != 0) {
		quote(d, alen, q);
		snprintf(buf, bufsz, "digest algorithm '%s' is not supported (" DIGEST_EXPECT ")",
			 q);
		return buf;
	}
	const char *hex = colon + 1;
	size_t hlen = n - alen - 1;
	for (size_t i = 0; i < hlen; i++) {
		if (is_lower_hex(hex[i]))
			continue;
		if (is_hex(hex[i]))
			return "digest has uppercase hex digits (" DIGEST_EXPECT ")";
		quote(hex + i, 1, q);
		snprintf(buf, bufsz, "digest has '%s', not a hex digit (" DIGEST_EXPECT ")", q);
		return buf;
	}
	if (hlen != 64) {
		snprintf(buf, bufsz, "digest has %zu hex digits (" DIGEST_EXPECT ")", hlen);
		return buf;
	}
	return NULL;
}

/* Why tag t (n bytes) is not a valid tag; NULL if it is. */
static const char *tag_problem(const char *t, size_t n, char *buf, size_t bufsz)
{
	char q[QUOTE_MAX + 4];
	if (n == 0)
		return "empty tag after ':' (" TAG_EXPECTED ")";
	if (n > TAG_MAX) {
		snprintf(buf, bufsz, "tag is %zu characters (" TAG_EXPECTED ")", n);
		return buf;
	}
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (is_alnum(c) || c == '_' || (i > 0 && (c == '.' || c == '-')))
			continue;
		quote(t, n, q);
		char cq[QUOTE_MAX + 4];
		quote(t + i, 1, cq);
		snprintf(buf, bufsz, "tag '%s': '%s' is not allowed %s (" TAG_EXPECTED ")", q, cq,
			 i == 0 ? "first" : "there");
		return buf;
	}
	return NULL;
}

/* Why path component c (n bytes, already known lowercase) is invalid; NULL if valid. */
static const char *component_problem(const char *c, size_t n, char *buf, size_t bufsz)
{
	char q[QUOTE_MAX + 4];
	if (n == 0)
		return "empty path component (" PATH_EXPECTED ")";
	size_t i = 0;
	for (;;) {
		if (i >= n || !is_lower_alnum(c[i]))
			break;
		while (i < n && is_lower_alnum(c[i]))
			i++;
		if (i == n)
			return NULL;
		if (c[i] == '.')
			i++;
		else if (c[i] == '_')
			i += (i + 1 < n && c[i + 1] == '_') ? 2 : 1;
		else if (c[i] == '-')
			while (i < n && c[i] == '-')
				i++;
		else
			break;
		if (i == n) {
			quote(c, n, q);
			snprintf(buf, bufsz, "path component '%s' ends in a separator (%s)", q,
				 PATH_EXPECTED);
			return buf;
		}
	}
	quote(c, n, q);
	char cq[QUOTE_MAX + 4];
	quote(c + i, 1, cq);
	snprintf(buf, bufsz, "path component '%s': '%s' is not allowed %s (%s)", q, cq,
		 i == 0 ? "first" : "there", PATH_EXPECTED);
	return buf;
}

/* Why port p (n bytes, after ':') is invalid; NULL if valid. */
static const char *port_problem(const char *p, size_t n, char *buf, size_t bufsz)
{
	char q[QUOTE_MAX + 4];
	unsigned long v = 0;
	bool ok = n > 0 && n <= 5 && p[0] != '0';
	for (size_t i = 0; ok && i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			ok = false;
		else
			v = v * 10 + (unsigned long)(p[i] - '0');
	}
	if (ok && v >= 1 && v <= 65535)
		return NULL;
	quote(p, n, q);
	snprintf(buf, bufsz, "registry port '%s' (expected a number 1-65535 without leading zeros)",
		 q);
	return buf;
}

/* Why registry r (n bytes, the first path component) is invalid; NULL if valid. */
static const char *registry_problem(const char *r, size_t n, char *buf, size_t bufsz)
{
	char q[QUOTE_MAX + 4];
	size_t i = 0;
	if (r[0] == '[') {
		/* An IPv6 literal: the characters Docker allows, in brackets. */
		const char *close = memchr(r, ']', n);
		size_t end = close ? (size_t)(close - r) : n;
		bool ok = close && end > 1;
		for (i = 1; ok && i < end; i++)
			ok = is_hex(r[i]) || r[i] == ':';
		if (!ok) {
			quote(r, n, q);
			snprintf(buf, bufsz,
				 "registry '%s' (expected an IPv6 address as [hex digits and :])",
				 q);
			return buf;
		}
		i = end + 1;
	} else {
		/* Dot-separated labels of [A-Za-z0-9-], no '-' at either end. */
		size_t start = 0;
		bool ok;
		for (;;) {
			while (i < n && (is_alnum(r[i]) || r[i] == '-'))
				i++;
			ok = i > start && r[start] != '-' && r[i - 1] != '-';
			if (ok && i < n && r[i] == '.') {
				start = ++i;
				continue;
			}
			break;
		}
		if (!ok || (i < n && r[i] != ':')) {
			quote(r, n, q);
			snprintf(
				buf, bufsz,
				"registry host '%s' (expected DNS labels of [A-Za-z0-9-] separated "
				"by '.', or an IP address, then an optional :port)",
				q);
			return buf;
		}
	}
	if (i == n)
		return NULL;
	if (r[i] != ':') {
		quote(r, n, q);
		snprintf(buf, bufsz, "registry '%s' (expected host[:port])", q);
		return buf;
	}
	return port_problem(r + i + 1, n - i - 1, buf, bufsz);
}

void msb_image_ref_free(struct msb_image_ref *ref)
{
	if (!ref)
		return;
	free(ref->registry);
	free(ref->repository);
	free(ref->tag);
	free(ref->digest);
	ref->registry = ref->repository = ref->tag = ref->digest = NULL;
}

static int fill(struct msb_image_ref *ref, const char *reg, size_t reglen, bool official,
		const char *path, size_t pathlen, const char *tag, size_t taglen,
		const char *digest)
{
	ref->registry = strndup(reg, reglen);
	if (ref->registry)
		for (char *p = ref->registry; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
	if (official && asprintf(&ref->repository, OFFICIAL "%.*s", (int)pathlen, path) < 0)
		ref->repository = NULL;
	else if (!official)
		ref->repository = strndup(path, pathlen);
	if (tag)
		ref->tag = strndup(tag, taglen);
	else if (!digest)
		ref->tag = strdup(DEFAULT_TAG);
	if (digest)
		ref->digest = strdup(digest);
	if (!ref->registry || !ref->repository || (tag && !ref->tag) ||
	    (!tag && !digest && !ref->tag) || (digest && !ref->digest))
		return -ENOMEM;
	return 0;
}

int msb_image_ref_parse(const char *s, struct msb_image_ref *ref, struct msb_error *err)
{
	char buf[MSB_ERROR_MSG_MAX];
	const char *why;
	memset(ref, 0, sizeof(*ref));
	if (!s)
		return msb_error_set(err, -EINVAL, "image reference: missing");
	size_t len = strnlen(s, MSB_IMAGE_REF_MAX + 1);
	if (len > MSB_IMAGE_REF_MAX)
		return ref_fail(err, -E2BIG, s, "longer than %d bytes", MSB_IMAGE_REF_MAX);
	if (len == 0)
		return msb_error_set(
			err, -EINVAL,
			"image reference '': empty (expected "
			"[registry/]repository[:tag][@sha256:digest], e.g. 'python:3.12')");
	/* Docker refuses these: a bare image ID is not a name. */
	if (len == 64 && strspn(s, "0123456789abcdef") == 64)
		return ref_fail(err, -EINVAL, s,
				"a 64-hex-digit image ID is not a repository name "
				"(expected name@sha256:<digest> to pin by digest)");

	/* name[:tag] "@" digest: names and tags never contain '@'. */
	const char *at = strchr(s, '@');
	size_t ntlen = at ? (size_t)(at - s) : len;
	const char *digest = at ? at + 1 : NULL;
	if (digest && (why = digest_problem(digest, len - ntlen - 1, buf, sizeof(buf))))
		return ref_fail(err, -EINVAL, s, "%s", why);

	/* registry "/" only if the first component looks like a host. */
	const char *reg = DOCKER_HUB, *rest = s;
	size_t reglen = strlen(DOCKER_HUB);
	const char *slash = memchr(s, '/', ntlen);
	if (slash) {
		size_t flen = (size_t)(slash - s);
		if (memchr(s, '.', flen) || memchr(s, ':', flen) ||
		    (flen == 9 && memcmp(s, "localhost", 9) == 0)) {
			if ((why = registry_problem(s, flen, buf, sizeof(buf))))
				return ref_fail(err, -EINVAL, s, "%s", why);
			/* Docker Hub's names, in any case, are one registry. */
			bool hub = (flen == strlen(DOCKER_HUB) &&
				    strncasecmp(s, DOCKER_HUB, flen) == 0) ||
				   (flen == strlen(DOCKER_LEGACY) &&
				    strncasecmp(s, DOCKER_LEGACY, flen) == 0);
			if (!hub) {
				reg = s;
				reglen = flen;
			}
			rest = slash + 1;
		}
	}
	size_t restlen = ntlen - (size_t)(rest - s);

	/* path [":" tag]: the path has no ':', so the first one starts the tag. */
	const char *colon = memchr(rest, ':', restlen);
	size_t pathlen = colon ? (size_t)(colon - rest) : restlen;
	const char *tag = colon ? colon + 1 : NULL;
	size_t taglen = colon ? restlen - pathlen - 1 : 0;
	if (pathlen == 0)
		return ref_fail(
			err, -EINVAL, s,
			"no repository name (expected [registry/]repository[:tag][@digest])");
	for (size_t i = 0; i < pathlen; i++) {
		if (rest[i] >= 'A' && rest[i] <= 'Z') {
			char lower[QUOTE_MAX + 4];
			quote(rest, pathlen, lower);
			for (char *p = lower; *p; p++)
				if (*p >= 'A' && *p <= 'Z')
					*p = (char)(*p - 'A' + 'a');
			return ref_fail(err, -EINVAL, s,
					"repository names are lowercase (" PATH_EXPECTED
					"; did you mean '%s'?)",
					lower);
		}
	}
	for (size_t i = 0; i <= pathlen;) {
		const char *c = rest + i;
		const char *end = memchr(c, '/', pathlen - i);
		size_t clen = end ? (size_t)(end - c) : pathlen - i;
		if ((why = component_problem(c, clen, buf, sizeof(buf))))
			return ref_fail(err, -EINVAL, s, "%s", why);
		i += clen + 1;
	}
	if (tag && (why = tag_problem(tag, taglen, buf, sizeof(buf))))
		return ref_fail(err, -EINVAL, s, "%s", why);

	/* "python" is "library/python", on Docker Hub only. */
	bool official = reg != s && !memchr(rest, '/', pathlen);
	size_t namelen = reglen + 1 + (official ? strlen(OFFICIAL) : 0) + pathlen;
	if (namelen > MSB_IMAGE_NAME_MAX)
		return ref_fail(
			err, -EINVAL, s,
			"name is %zu characters (expected at most %d for registry/repository)",
			namelen, MSB_IMAGE_NAME_MAX);

	if (fill(ref, reg, reglen, official, rest, pathlen, tag, taglen, digest) < 0) {
		msb_image_ref_free(ref);
		return msb_error_set(err, -ENOMEM, "image reference: out of memory");
	}
	return 0;
}

char *msb_image_ref_format(const struct msb_image_ref *ref)
{
	if (!ref || !ref->registry || !ref->repository)
		return NULL;
	char *out = NULL;
	if (asprintf(&out, "%s/%s%s%s%s%s", ref->registry, ref->repository, ref->tag ? ":" : "",
		     ref->tag ? ref->tag : "", ref->digest ? "@" : "",
		     ref->digest ? ref->digest : "") < 0)
		return NULL;
	return out;
}

const char *msb_image_ref_api_host(const struct msb_image_ref *ref)
{
	if (!ref || !ref->registry)
		return NULL;
	if (strcmp(ref->registry, DOCKER_HUB) == 0)
		return DOCKER_API;
	return ref->registry;
}

/* (msb_image_pin_key is here, not in pull.c: the catalog uses it without the image I/O module.) */
static bool platform_default(const struct msb_pull_opts *o)
{
	return (!o->os || !strcmp(o->os, MSB_PULL_DEFAULT_OS)) &&
	       (!o->arch || !strcmp(o->arch, MSB_PULL_DEFAULT_ARCH)) &&
	       (!o->variant || !*o->variant);
}

char *msb_image_pin_key(const struct msb_image_ref *ref, const struct msb_pull_opts *o)
{
	char *k = NULL;
	static const struct msb_pull_opts none;
	if (!o)
		o = &none;
	const char *tag = ref->tag ? ref->tag : "latest";
	int n;
	if (platform_default(o))
		n = asprintf(&k, "%s/%s:%s", ref->registry, ref->repository, tag);
	else
		n = asprintf(&k, "%s/%s:%s#%s/%s%s%s", ref->registry, ref->repository, tag,
			     o->os ? o->os : MSB_PULL_DEFAULT_OS,
			     o->arch ? o->arch : MSB_PULL_DEFAULT_ARCH,
			     o->variant && *o->variant ? "/" : "",
			     o->variant && *o->variant ? o->variant : "");
	return n < 0 ? NULL : k;
}
