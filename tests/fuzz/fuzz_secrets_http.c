/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the secrets proxy's HTTP/1.1 request parser and
 * chunked decoder (plugins/secrets/http.c): arbitrary bytes from the guest.
 *
 * Besides memory safety (run under ASan/UBSan) it checks the contract:
 *  - the parser answers 1, 0 (only below HTTP_HEAD_MAX), -EINVAL or -E2BIG,
 *    with a reason on refusal;
 *  - a complete head ends in CRLFCRLF at head_len <= min(len, HTTP_HEAD_MAX),
 *    every pointer lies inside it, names are tokens, values are trimmed and
 *    free of CR/LF/NUL, framing agrees with the headers, HTTP/1.1 has a Host;
 *  - every prefix shorter than the head is "need more", the head alone is
 *    the same request, and so is the head with any tail;
 *  - the chunked decoder gives the same result, consumption and output
 *    whether fed whole into a big buffer or in random pieces into random
 *    small buffers, never consumes past the end of the body, and what it
 *    decodes re-encodes (http_chunk_encode) into a body it decodes back;
 *  - Host == SNI and the allow-list matcher hold up on whatever Host came in.
 *
 * Seeds: tests/fuzz/corpus/secrets_http/.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static struct http_request req, again;

static uint32_t rng;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static bool inside(const char *p, size_t n, const char *buf, size_t len)
{
	return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

static bool tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool ci_eq(const char *a, size_t n, const char *lit)
{
	if (n != strlen(lit))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
		if (c != lit[i])
			return false;
	}
	return true;
}

static void check_head(const char *buf, size_t len)
{
	size_t h = req.head_len;
	CHECK(h >= 4 && h <= len && h <= HTTP_HEAD_MAX);
	CHECK(!memcmp(buf + h - 4, "\r\n\r\n", 4));
	CHECK(req.method == buf && req.method_len > 0);
	for (size_t i = 0; i < req.method_len; i++)
		CHECK(tchar((unsigned char)buf[i]));
	CHECK(inside(req.target, req.target_len, buf, h) && req.target_len > 0);
	for (size_t i = 0; i < req.target_len; i++)
		CHECK((unsigned char)req.target[i] > 0x20 && (unsigned char)req.target[i] < 0x7f);
	CHECK(req.minor == 0 || req.minor == 1);
	CHECK(req.nheaders <= HTTP_HEADERS_MAX);
	bool host_seen = false, cl = false, te = false;
	for (size_t i = 0; i < req.nheaders; i++) {
		const struct http_header *x = &req.headers[i];
		CHECK(inside(x->name, x->name_len, buf, h) && x->name_len > 0);
		CHECK(inside(x->value, x->value_len, buf, h));
		CHECK(i == 0 || x->name > req.headers[i - 1].value);
		for (size_t k = 0; k < x->name_len; k++)
			CHECK(tchar((unsigned char)x->name[k]));
		CHECK(x->name + x->name_len < buf + h && x->name[x->name_len] == ':');
		for (size_t k = 0; k < x->value_len; k++)
			CHECK(x->value[k] != '\r' && x->value[k] != '\n' && x->value[k] != 0);
		if (x->value_len)
			CHECK(x->value[0] != ' ' && x->value[0] != '\t' &&
			      x->value[x->value_len - 1] != ' ' &&
			      x->value[x->value_len - 1] != '\t');
		if (ci_eq(x->name, x->name_len, "host")) {
			CHECK(!host_seen && req.host == x->value && req.host_len == x->value_len);
			host_seen = true;
		}
		cl |= ci_eq(x->name, x->name_len, "content-length");
		te |= ci_eq(x->name, x->name_len, "transfer-encoding");
	}
	CHECK(host_seen == (req.host != NULL));
	CHECK(req.minor == 0 || host_seen);
	CHECK(!(cl && te));
	CHECK(req.body == (te ? HTTP_BODY_CHUNKED : cl ? HTTP_BODY_LENGTH : HTTP_BODY_NONE));
	CHECK(http_header_find(&req, "host") == NULL || host_seen);
}

/* Prefixes are "need more"; the head alone parses the same. */
static void check_prefixes(const char *buf, size_t len)
{
	const char *why;
	size_t h = req.head_len;
	size_t cuts[4] = {h - 1, h - 2, rnd() % h, rnd() % h};
	for (size_t i = 0; i < 4; i++)
		CHECK(http_parse_request(buf, cuts[i], &again, &why) == 0);
	CHECK(http_parse_request(buf, h, &again, &why) == 1);
	CHECK(again.head_len == h && again.nheaders == req.nheaders && again.body == req.body);
	CHECK(again.content_length == req.content_length && again.keep_alive == req.keep_alive);
	CHECK(again.upgrade == req.upgrade && again.expect_continue == req.expect_continue);
	(void)len;
}

static void check_hosts(void)
{
	if (!req.host || req.host_len > 300)
		return;
	char name[301];
	memcpy(name, req.host, req.host_len);
	name[req.host_len] = 0;
	if (http_host_equals_sni(req.host, req.host_len, "api.example.com", 443)) {
		size_t n = strcspn(name, ":");
		if (n && name[n - 1] == '.')
			n--;
		CHECK(ci_eq(name, n, "api.example.com"));
		CHECK(http_host_matches("api.example.com", name) || strchr(name, ':'));
	}
	if (http_host_matches("*.example.com", name)) {
		size_t n = strlen(name);
		if (name[n - 1] == '.')
			n--;
		CHECK(n > 12 && ci_eq(name + n - 12, 12, ".example.com"));
	}
	(void)http_host_equals_sni(req.host, req.host_len, name, 8443);
	(void)http_host_matches(name, "api.example.com");
}

/* Re-encode decoded data in random chunks; it must decode back the same. */
static void check_reencode(const char *data, size_t n)
{
	size_t cap = n + (n / 1 + 1) * 24 + 8, off = 0, w = 0;
	char *enc = malloc(cap), *back = malloc(n ? n : 1);
	CHECK(enc && back);
	while (off < n) {
		size_t c = 1 + rnd() % 300;
		if (c > n - off)
			c = n - off;
		ssize_t r = http_chunk_encode(data + off, c, enc + w, cap - w);
		CHECK(r > 0 && (size_t)r >= c + 5);
		w += (size_t)r;
		off += c;
	}
	ssize_t r = http_chunk_encode(NULL, 0, enc + w, cap - w);
	CHECK(r == 5);
	w += 5;
	CHECK(http_chunk_encode(data, n, enc, n + 4) == -ENOSPC);

	struct http_chunked c;
	size_t used, made;
	const char *why;
	http_chunked_init(&c);
	CHECK(http_chunked_decode(&c, enc, w, &used, back, n, &made, &why) == 1);
	CHECK(used == w && made == n && !memcmp(back, data, n));
	free(enc);
	free(back);
}

static void check_chunked(const char *in, size_t n)
{
	struct http_chunked a, b;
	const char *why;
	size_t used1, made1;
	char *out1 = malloc(n ? n : 1), *out2 = malloc(n ? n : 1);
	CHECK(out1 && out2);

	http_chunked_init(&a);
	int r1 = http_chunked_decode(&a, in, n, &used1, out1, n, &made1, &why);
	CHECK(r1 == 1 || r1 == 0 || r1 == -EINVAL);
	CHECK(used1 <= n && made1 <= used1);
	CHECK(r1 != 0 || used1 == n); /* out never fills: the output is no bigger than the input */
	CHECK(r1 != -EINVAL || (why && *why));

	http_chunked_init(&b);
	size_t off = 0, made2 = 0, stalls = 0;
	int r2;
	for (;;) {
		size_t piece = n - off, cap, used, made;
		size_t p = 1 + rnd() % 64;
		if (p < piece)
			piece = p;
		cap = rnd() % 8 == 0 ? 0 : 1 + rnd() % 32;
		if (cap > n - made2)
			cap = n - made2;
		r2 = http_chunked_decode(&b, in + off, piece, &used, out2 + made2, cap, &made,
					 &why);
		CHECK(used <= piece && made <= cap);
		off += used;
		made2 += made;
		if (r2 != 0)
			break;
		if (used == 0 && made == 0) {
			if (off == n)
				break;
			CHECK(++stalls < 100000);
		}
	}
	CHECK(r2 == r1);
	if (r1 != -EINVAL) {
		CHECK(off == used1 && made2 == made1);
		CHECK(!memcmp(out1, out2, made1));
	}
	if (r1 == 1) {
		size_t used, made;
		/* Done is done: nothing more is eaten. */
		CHECK(http_chunked_decode(&a, in, n, &used, out1, n, &made, &why) == 1);
		CHECK(used == 0 && made == 0);
		check_reencode(out1, made1);
	}
	free(out1);
	free(out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	const char *why = NULL;

	rng = 2463534242u ^ (uint32_t)size;
	for (size_t i = 0; i < size && i < 16; i++)
		rng = rng * 31 + data[i];
	if (!rng)
		rng = 1;

	int r = http_parse_request(buf, size, &req, &why);
	CHECK(r == 1 || r == 0 || r == -EINVAL || r == -E2BIG);
	CHECK(r != 0 || size < HTTP_HEAD_MAX);
	CHECK(r >= 0 || (why && *why));
	if (r != 1) {
		check_chunked(buf, size);
		return 0;
	}
	check_head(buf, size);
	check_prefixes(buf, size);
	check_hosts();
	if (req.body == HTTP_BODY_CHUNKED || size - req.head_len > 0)
		check_chunked(buf + req.head_len, size - req.head_len);
	return 0;
}
