/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the registry client's parsers of untrusted input
 * (core/image/pull-parse.h).  The first byte picks the parser, the rest is
 * its input:
 *
 *   'H'  a response header line           msb_pull_header_parse (and, for
 *        WWW-Authenticate and Location, the parser its value goes on to)
 *   'C'  a WWW-Authenticate value          msb_pull_challenge_parse
 *   'U'  a URL (token realm, Location)     msb_pull_url_origin
 *   'T'  a token response body             msb_pull_token_parse
 *   'E'  a registry error body             msb_pull_error_detail
 *   'A'  a credentials file (auth.json, Docker's config.json): the second
 *        byte picks the host looked up    msb_pull_creds_parse
 *   'R'  credentials written as `msb registry login` or Docker would write
 *        them and read back: "<form><user>:<password>"
 *
 * Any other first byte picks one of them by its value modulo their number.
 * Besides memory safety and leaks (ASan/UBSan), each checks its contract:
 * results within their bounds, NUL-free and no longer than the input, a
 * challenge's kind agreeing with its scheme, an origin of the form
 * "http(s)://host:port" that is never cut short, a token that cannot end a
 * header line, a message of printable ASCII, credentials split at the first
 * ':' of the decoded "auth" and read back exactly as written.
 *
 * Seeds: tests/fuzz/corpus/registry_auth/.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "pull-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* A malloc'd NUL-terminated copy of data[0..n) (which may hold NULs itself). */
static char *cstr(const uint8_t *data, size_t n)
{
	char *s = malloc(n + 1);
	CHECK(s);
	memcpy(s, data, n);
	s[n] = '\0';
	return s;
}

/* s is NUL-terminated within max bytes (so it is NUL-free and no longer than the input). */
static void check_str(const char *s, size_t max)
{
	CHECK(s);
	CHECK(strnlen(s, max + 1) <= max);
}

static void check_origin(const char *origin, const char *scheme)
{
	CHECK(!strcmp(scheme, "http") || !strcmp(scheme, "https"));
	size_t sl = strlen(scheme), n = strlen(origin);
	CHECK(n < MSB_PULL_ORIGIN_MAX);
	CHECK(!strncmp(origin, scheme, sl) && !strncmp(origin + sl, "://", 3));
	for (const char *p = origin; *p; p++) {
		CHECK(!isupper((unsigned char)*p)); /* compared byte for byte */
		CHECK(*p != '/' || p == origin + sl + 1 || p == origin + sl + 2);
	}
	/* ":port" at the end: 1-5 digits. */
	const char *colon = strrchr(origin, ':');
	CHECK(colon && colon > origin + sl + 3);
	size_t pl = strlen(colon + 1);
	CHECK(pl >= 1 && pl <= 5 && strspn(colon + 1, "0123456789") == pl);
}

/* msb_pull_url_origin on s, with a full-size buffer and a small one. */
static void url(const char *s)
{
	char origin[MSB_PULL_ORIGIN_MAX], scheme[8] = "", small[24];
	int r = msb_pull_url_origin(s, origin, sizeof(origin), scheme);
	CHECK(r == 0 || r == -EINVAL || r == -ENAMETOOLONG || r == -ENOMEM);
	if (r < 0) {
		CHECK(origin[0] == '\0');
		return;
	}
	check_origin(origin, scheme);
	int r2 = msb_pull_url_origin(s, small, sizeof(small), scheme);
	if (strlen(origin) < sizeof(small))
		CHECK(r2 == 0 && !strcmp(small, origin));
	else
		CHECK(r2 == -ENAMETOOLONG && small[0] == '\0'); /* never cut to a prefix */
}

static void challenge(const uint8_t *data, size_t n)
{
	struct msb_pull_challenge ch;
	int r = msb_pull_challenge_parse((const char *)data, n, &ch);
	CHECK(r == 0 || r == -EPROTO || r == -E2BIG || r == -ENOMEM);
	if (n >= MSB_PULL_HEADER_MAX)
		CHECK(r == -E2BIG);
	if (r < 0) {
		CHECK(!ch.scheme[0] && !ch.realm && !ch.service && !ch.scope);
		return;
	}
	size_t sl = strnlen(ch.scheme, sizeof(ch.scheme));
	CHECK(sl > 0 && sl < sizeof(ch.scheme) && sl <= n && !strchr(ch.scheme, ' '));
	if (!strcasecmp(ch.scheme, "basic"))
		CHECK(ch.kind == MSB_PULL_AUTH_BASIC);
	else if (!strcasecmp(ch.scheme, "bearer"))
		CHECK(ch.kind == MSB_PULL_AUTH_BEARER);
	else
		CHECK(ch.kind == MSB_PULL_AUTH_OTHER);
	if (ch.realm)
		check_str(ch.realm, n);
	if (ch.service)
		check_str(ch.service, n);
	if (ch.scope)
		check_str(ch.scope, n);
	/* A Bearer realm is where the token request goes: the client takes its origin. */
	if (ch.kind == MSB_PULL_AUTH_BEARER && ch.realm)
		url(ch.realm);
	msb_pull_challenge_free(&ch);
	CHECK(!ch.realm && !ch.service && !ch.scope);
}

static void header(const uint8_t *data, size_t n)
{
	struct msb_pull_header h;
	const char *line = (const char *)data;
	msb_pull_header_parse(line, n, &h);
	switch (h.kind) {
	case MSB_PULL_HEADER_OTHER:
		CHECK(!h.value && !h.len && h.status == 0);
		return;
	case MSB_PULL_HEADER_STATUS:
		CHECK(n >= 5 && !memcmp(line, "HTTP/", 5));
		CHECK(h.status >= 0 && h.status <= 999 && !h.value);
		return;
	case MSB_PULL_HEADER_CONTENT_TYPE:
	case MSB_PULL_HEADER_DIGEST:
	case MSB_PULL_HEADER_WWW_AUTHENTICATE:
	case MSB_PULL_HEADER_LOCATION:
	case MSB_PULL_HEADER_RETRY_AFTER:
		break;
	default:
		CHECK(!"unknown header kind");
	}
	/* A value: inside the line, after its colon, trimmed, bounded, NUL-free. */
	CHECK(h.value && h.value > line && h.value + h.len <= line + n);
	CHECK(memchr(line, ':', (size_t)(h.value - line)));
	CHECK(h.len < MSB_PULL_HEADER_MAX && !memchr(h.value, '\0', h.len));
	if (h.len) {
		CHECK(h.value[0] != ' ' && h.value[0] != '\t');
		char last = h.value[h.len - 1];
		CHECK(last != '\r' && last != '\n' && last != ' ');
	}
	CHECK(isfinite(h.retry_after) && h.retry_after >= 0);
	if (h.kind != MSB_PULL_HEADER_RETRY_AFTER)
		CHECK(h.retry_after == 0);
	if (h.kind == MSB_PULL_HEADER_WWW_AUTHENTICATE) {
		challenge((const uint8_t *)h.value, h.len);
	} else if (h.kind == MSB_PULL_HEADER_LOCATION) {
		char *s = cstr((const uint8_t *)h.value, h.len);
		url(s);
		free(s);
	}
}

static void token(const uint8_t *data, size_t n)
{
	static char unset;
	char *tok = &unset;
	int r = msb_pull_token_parse(data, n, &tok);
	CHECK(r == 0 || r == -EPROTO || r == -E2BIG || r == -ENOMEM);
	if (r < 0) {
		CHECK(!tok);
		return;
	}
	size_t tl = strnlen(tok, MSB_PULL_TOKEN_MAX + 1);
	CHECK(tl > 0 && tl <= MSB_PULL_TOKEN_MAX && tl <= n);
	/* It goes into "Authorization: Bearer <token>\r\n" as it is. */
	for (size_t i = 0; i < tl; i++)
		CHECK(isalnum((unsigned char)tok[i]) || strchr("-._~+/=", tok[i]));
	free(tok);
}

static void error_detail(const uint8_t *data, size_t n)
{
	static const size_t lens[] = {256, 9, 1};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		char out[256];
		memset(out, 'x', sizeof(out));
		msb_pull_error_detail((const char *)data, n, out, lens[i]);
		size_t ol = strnlen(out, lens[i]);
		CHECK(ol < lens[i]);
		for (size_t j = 0; j < ol; j++)
			CHECK(out[j] >= 0x20 && out[j] < 0x7f);
		if (ol && lens[i] == 256)
			CHECK(ol >= 3 && !strncmp(out, " (", 2) && out[ol - 1] == ')');
	}
}

static const char *const hosts[] = {"docker.io", "localhost:5000", "ghcr.io", "[::1]:5000"};
#define NHOSTS (sizeof(hosts) / sizeof(hosts[0]))

static void check_creds(int r, const struct msb_pull_creds *c, size_t n)
{
	CHECK(r == 0 || r == 1 || r == -EINVAL || r == -E2BIG);
	CHECK(c->notes < (1u << 3));
	if (r != 1) {
		CHECK(!c->user && !c->pass && !c->from_auth);
		return;
	}
	check_str(c->user, n);
	check_str(c->pass, n);
	if (c->from_auth)
		CHECK(!strchr(c->user, ':'));
}

static void creds(const uint8_t *data, size_t n)
{
	if (n < 1)
		return;
	const char *host = hosts[data[0] % NHOSTS];
	struct msb_pull_creds c;
	int r = msb_pull_creds_parse(data + 1, n - 1, host, &c);
	check_creds(r, &c, n - 1);
	msb_pull_creds_free(&c);
	CHECK(!c.user && !c.pass);
}

/* Printable ASCII of data[0..n) (what jansson takes as a string without question). */
static char *printable(const uint8_t *data, size_t n)
{
	char *s = malloc(n + 1);
	CHECK(s);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (data[i] >= 0x20 && data[i] < 0x7f)
			s[k++] = (char)data[i];
	s[k] = '\0';
	return s;
}

/*
 * "<form><user>:<password>": the form byte picks the host, the key naming it
 * and whether the file holds "auth" (as msb and docker login write it) or
 * "username"/"password".  The user is what comes before the first ':'.
 */
static void roundtrip(const uint8_t *data, size_t n)
{
	static const char *const keys[][3] = {
		{"https://index.docker.io/v1/", "docker.io", "registry-1.docker.io"},
		{"localhost:5000", "http://localhost:5000/", "https://LOCALHOST:5000/v2/"},
		{"ghcr.io", "https://ghcr.io", "GHCR.io/"},
		{"[::1]:5000", "https://[::1]:5000/", "http://[::1]:5000"},
	};
	if (n < 1)
		return;
	unsigned form = data[0];
	size_t hi = form % NHOSTS;
	const char *key = keys[hi][(form / NHOSTS) % 3];
	bool b64 = !((form / NHOSTS / 3) & 1);
	const uint8_t *colon = memchr(data + 1, ':', n - 1);
	size_t ul = colon ? (size_t)(colon - data - 1) : n - 1;
	char *user = printable(data + 1, ul);
	char *pass = colon ? printable(colon + 1, n - 2 - ul) : printable(data, 0);
	json_t *entry;
	if (b64) {
		size_t ulen = strlen(user), plen = strlen(pass);
		char *up = malloc(ulen + plen + 2);
		char *enc = malloc(4 * ((ulen + plen + 1 + 2) / 3) + 1);
		CHECK(up && enc);
		memcpy(up, user, ulen);
		up[ulen] = ':';
		memcpy(up + ulen + 1, pass, plen + 1);
		EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)up,
				(int)(ulen + plen + 1));
		entry = json_pack("{ss}", "auth", enc);
		free(up);
		free(enc);
	} else {
		entry = json_pack("{ssss}", "username", user, "password", pass);
	}
	json_t *file = json_pack("{s{so}}", "auths", key, entry);
	CHECK(file);
	char *text = json_dumps(file, 0);
	CHECK(text);
	struct msb_pull_creds c;
	int r = msb_pull_creds_parse(text, strlen(text), hosts[hi], &c);
	check_creds(r, &c, strlen(text));
	CHECK(r == 1 && c.from_auth == b64 && c.notes == 0);
	CHECK(!strcmp(c.user, user) && !strcmp(c.pass, pass));
	msb_pull_creds_free(&c);
	/* Another registry's credentials are not ours. */
	r = msb_pull_creds_parse(text, strlen(text), hosts[(hi + 1) % NHOSTS], &c);
	CHECK(r == 0 && !c.user && !c.pass);
	free(text);
	json_decref(file);
	free(user);
	free(pass);
}

static void url_input(const uint8_t *data, size_t n)
{
	char *s = cstr(data, n);
	url(s);
	free(s);
}

static const struct {
	uint8_t tag;
	void (*run)(const uint8_t *data, size_t n);
} modes[] = {
	{'H', header},	     {'C', challenge}, {'U', url_input}, {'T', token},
	{'E', error_detail}, {'A', creds},     {'R', roundtrip},
};
#define NMODES (sizeof(modes) / sizeof(modes[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t m = data[0] % NMODES;
	for (size_t i = 0; i < NMODES; i++)
		if (modes[i].tag == data[0])
			m = i;
	modes[m].run(data + 1, size - 1);
	return 0;
}
