/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets module's HTTP/1.1 request parser, chunked decoder, host
 * matching and placeholder substitution (plugins/secrets/http.c,
 * substitute.c), on hand-made requests, hostile ones included: every
 * smuggling shape the parser must refuse, input cut at every byte, and
 * placeholders of secrets that are not allowed.
 *
 * Inputs are copied into exactly-sized heap buffers (no NUL after them) so
 * that a read past the end shows up under ASan.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "substitute.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* An exactly-sized copy of n bytes of s. */
static char *dup_n(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

static int parse_n(const char *s, size_t n, struct http_request *req, const char **why)
{
	char *b = dup_n(s, n);
	int r = http_parse_request(b, n, req, why);
	/* The request points into b: only the return value is safe to use after the free,
	 * so parse_ok below keeps its own buffer. */
	free(b);
	return r;
}

/* Parse a NUL-terminated request that must be complete; the buffer is the caller's. */
static void parse_ok(const char *s, struct http_request *req)
{
	const char *why = NULL;
	int r = http_parse_request(s, strlen(s), req, &why);
	if (r != 1)
		print_error("parsing '%s': %d %s\n", s, r, why ? why : "");
	assert_int_equal(r, 1);
}

static bool span_eq(const char *p, size_t n, const char *lit)
{
	return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static void assert_span(const char *p, size_t n, const char *lit)
{
	if (!span_eq(p, n, lit))
		print_error("got '%.*s', want '%s'\n", (int)n, p ? p : "", lit);
	assert_true(span_eq(p, n, lit));
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(const char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned char)in[i + 1] << 8;
		if (i + 2 < n)
			v |= (unsigned char)in[i + 2];
		out[o++] = b64tab[v >> 18 & 63];
		out[o++] = b64tab[v >> 12 & 63];
		out[o++] = i + 1 < n ? b64tab[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? b64tab[v & 63] : '=';
	}
	out[o] = 0;
}

static size_t b64_decode(const char *in, size_t n, char *out)
{
	size_t o = 0;
	unsigned acc = 0, bits = 0;
	for (size_t i = 0; i < n && in[i] != '='; i++) {
		const char *c = strchr(b64tab, in[i]);
		assert_non_null(c);
		acc = acc << 6 | (unsigned)(c - b64tab);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)(acc >> bits);
		}
	}
	out[o] = 0;
	return o;
}

/* ---- request heads ------------------------------------------------------------------------- */

static void t_get_11(void **state)
{
	(void)state;
	const char *s = "GET /v1/models?limit=2 HTTP/1.1\r\nHost: api.example.com\r\n"
			"User-Agent:  curl/8.5 \r\nAccept:\r\n\r\n";
	struct http_request r;
	parse_ok(s, &r);
	assert_span(r.method, r.method_len, "GET");
	assert_span(r.target, r.target_len, "/v1/models?limit=2");
	assert_int_equal(r.minor, 1);
	assert_int_equal(r.nheaders, 3);
	assert_span(r.headers[0].name, r.headers[0].name_len, "Host");
	assert_span(r.host, r.host_len, "api.example.com");
	assert_span(r.headers[1].value, r.headers[1].value_len, "curl/8.5");
	assert_int_equal(r.headers[2].value_len, 0);
	assert_int_equal(r.body, HTTP_BODY_NONE);
	assert_true(r.keep_alive);
	assert_false(r.expect_continue);
	assert_false(r.upgrade);
	assert_int_equal(r.head_len, strlen(s));
	assert_ptr_equal(http_header_find(&r, "user-AGENT"), &r.headers[1]);
	assert_null(http_header_find(&r, "Cookie"));
}

static void t_post_10(void **state)
{
	(void)state;
	const char *s = "POST /submit HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello";
	struct http_request r;
	parse_ok(s, &r);
	assert_span(r.method, r.method_len, "POST");
	assert_int_equal(r.minor, 0);
	assert_null(r.host);
	assert_int_equal(r.body, HTTP_BODY_LENGTH);
	assert_int_equal(r.content_length, 5);
	assert_false(r.keep_alive);
	assert_int_equal(r.head_len, strlen(s) - 5);
}

static void t_post_11_bodies(void **state)
{
	(void)state;
	struct http_request r;
	parse_ok("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t Chunked \r\n\r\n", &r);
	assert_int_equal(r.body, HTTP_BODY_CHUNKED);
	parse_ok("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000012\r\n\r\n", &r);
	assert_int_equal(r.body, HTTP_BODY_LENGTH);
	assert_int_equal(r.content_length, 12);
	parse_ok("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n", &r);
	assert_true(r.content_length == 9999999999999999999ull);
	parse_ok("PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
		 &r);
	assert_true(r.expect_continue);
	parse_ok("PUT /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &r);
	assert_false(r.expect_continue);
}

static void t_keep_alive(void **state)
{
	(void)state;
	static const struct {
		const char *req;
		bool keep;
	} cases[] = {
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true},
		{"GET / HTTP/1.0\r\n\r\n", false},
		{"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
		{"GET / HTTP/1.0\r\nConnection: keep-alive,close\r\n\r\n", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_request r;
		parse_ok(cases[i].req, &r);
		if (r.keep_alive != cases[i].keep)
			print_error("case %zu: %s\n", i, cases[i].req);
		assert_int_equal(r.keep_alive, cases[i].keep);
	}
}

static void t_upgrade_connect_options(void **state)
{
	(void)state;
	struct http_request r;
	parse_ok("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		 &r);
	assert_true(r.upgrade);
	parse_ok("CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n", &r);
	assert_true(r.upgrade);
	parse_ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &r);
	assert_false(r.upgrade);
	assert_span(r.target, r.target_len, "*");
}

/* Every proper prefix of a request is "need more"; from the head's end on it is complete. */
static void t_partial(void **state)
{
	(void)state;
	const char *s = "POST /v1/chat HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 2\r\n"
			"Authorization: Bearer $MSB_KEY\r\n\r\n{}";
	size_t n = strlen(s), head = n - 2;
	for (size_t k = 0; k <= n; k++) {
		struct http_request r;
		const char *why = "unset";
		char *b = dup_n(s, k);
		int ret = http_parse_request(b, k, &r, &why);
		if (k < head) {
			assert_int_equal(ret, 0);
			assert_null(why);
		} else {
			assert_int_equal(ret, 1);
			assert_int_equal(r.head_len, head);
			assert_int_equal(r.content_length, 2);
			assert_span(r.host, r.host_len, "api.example.com");
		}
		free(b);
	}
}

static const struct {
	const char *req;
	int err;
	const char *why;
} refusals[] = {
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	 -EINVAL, "both Content-Length and Transfer-Encoding"},
	{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
	 -EINVAL, "both Content-Length and Transfer-Encoding"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", -EINVAL,
	 "two Content-Length"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", -EINVAL,
	 "two Content-Length"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", -EINVAL, "1-19 digits"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", -EINVAL, "1-19 digits"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", -EINVAL, "1-19 digits"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", -EINVAL, "1-19 digits"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", -EINVAL, "1-19 digits"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", -EINVAL, "1-19 digits"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12345678901234567890\r\n\r\n", -EINVAL,
	 "1-19 digits"},
	{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", -EINVAL,
	 "other than exactly chunked"},
	{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -EINVAL,
	 "other than exactly chunked"},
	{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", -EINVAL,
	 "other than exactly chunked"},
	{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", -EINVAL,
	 "other than exactly chunked"},
	{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
	 "chunked\r\n\r\n",
	 -EINVAL, "two Transfer-Encoding"},
	{"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -EINVAL,
	 "Transfer-Encoding in an HTTP/1.0"},
	{"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", -EINVAL, "obs-fold"},
	{"GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", -EINVAL, "obs-fold"},
	{"GET / HTTP/1.1\nHost: a\r\n\r\n", -EINVAL, "bare LF"},
	{"GET / HTTP/1.1\r\nHost: a\n\r\n", -EINVAL, "bare LF"},
	{"GET / HTTP/1.1\r\nHost: a\r\n\n", -EINVAL, "bare LF"},
	{"GET / HTTP/1.1\rHost: a\r\n\r\n", -EINVAL, "bare CR"},
	{"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", -EINVAL, "bare CR"},
	{"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", -EINVAL, "bare CR"},
	{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", -EINVAL, "whitespace between a header name"},
	{"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", -EINVAL, "whitespace between a header name"},
	{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", -EINVAL,
	 "whitespace between a header name"},
	{"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", -EINVAL, "two Host"},
	{"GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n", -EINVAL, "two Host"},
	{"GET / HTTP/1.1\r\nX: a\r\n\r\n", -EINVAL, "without a Host"},
	{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", -EINVAL, "HTTP/2 connection preface"},
	{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", -EINVAL, "HTTP version"},
	{"GET / HTTP/1.2\r\nHost: a\r\n\r\n", -EINVAL, "HTTP version"},
	{"GET / http/1.1\r\nHost: a\r\n\r\n", -EINVAL, "HTTP version"},
	{"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -EINVAL, "HTTP version"},
	{"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "HTTP version"},
	{"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "empty request-target"},
	{"GET /a\x01"
	 "b HTTP/1.1\r\nHost: a\r\n\r\n",
	 -EINVAL, "in the request-target"},
	{"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "in the request-target"},
	{"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "in the request-target"},
	{"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "in the request-target"},
	{"GET http://other.example/ HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "origin-form"},
	{"GET * HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "origin-form"},
	{"GET /\r\n\r\n", -EINVAL, "HTTP/0.9"},
	{"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "empty line before"},
	{"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "method is not a token"},
	{" GET / HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, "method is not a token"},
	{"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", -EINVAL, "without a colon"},
	{"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", -EINVAL, "empty header name"},
	{"GET / HTTP/1.1\r\nHost: a\r\nX(: x\r\n\r\n", -EINVAL, "not a token"},
	{"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
	 "b\r\n\r\n",
	 -EINVAL, "control byte in a header value"},
	{"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", -EINVAL,
	 "control byte in a header value"},
};

static void t_refusals(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		struct http_request r;
		const char *why = NULL;
		int ret = parse_n(refusals[i].req, strlen(refusals[i].req), &r, &why);
		if (ret != refusals[i].err || !why || !strstr(why, refusals[i].why))
			print_error("refusal %zu: got %d '%s', want %d '%s'\n", i, ret,
				    why ? why : "(null)", refusals[i].err, refusals[i].why);
		assert_int_equal(ret, refusals[i].err);
		assert_non_null(why);
		assert_non_null(strstr(why, refusals[i].why));
	}
}

/* NUL bytes are never skipped over: in a header value, in a name, in the target. */
static void t_nul(void **state)
{
	(void)state;
	static const char a[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
	static const char b[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0Y: ab\r\n\r\n";
	static const char c[] = "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n";
	struct http_request r;
	const char *why;
	assert_int_equal(parse_n(a, sizeof(a) - 1, &r, &why), -EINVAL);
	assert_int_equal(parse_n(b, sizeof(b) - 1, &r, &why), -EINVAL);
	assert_int_equal(parse_n(c, sizeof(c) - 1, &r, &why), -EINVAL);
}

/* A head of `total` bytes: request line, Host, then one X-Pad header filling the rest. */
static char *big_head(size_t total)
{
	const char *pre = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
	size_t pl = strlen(pre);
	char *b = malloc(total);
	assert_non_null(b);
	memcpy(b, pre, pl);
	memset(b + pl, 'p', total - pl - 4);
	memcpy(b + total - 4, "\r\n\r\n", 4);
	return b;
}

static void t_head_too_large(void **state)
{
	(void)state;
	struct http_request r;
	const char *why;
	char *b = big_head(HTTP_HEAD_MAX);
	assert_int_equal(http_parse_request(b, HTTP_HEAD_MAX, &r, &why), 1);
	assert_int_equal(r.head_len, HTTP_HEAD_MAX);
	free(b);

	b = big_head(HTTP_HEAD_MAX + 1);
	assert_int_equal(http_parse_request(b, HTTP_HEAD_MAX + 1, &r, &why), -E2BIG);
	assert_non_null(strstr(why, "64 KiB"));
	/* Short of the bound it is still "need more"; at it, no more is waited for. */
	assert_int_equal(http_parse_request(b, HTTP_HEAD_MAX - 1, &r, &why), 0);
	assert_int_equal(http_parse_request(b, HTTP_HEAD_MAX, &r, &why), -E2BIG);
	free(b);
}

static void t_too_many_headers(void **state)
{
	(void)state;
	char *b = malloc(16384);
	assert_non_null(b);
	for (size_t count = HTTP_HEADERS_MAX; count <= HTTP_HEADERS_MAX + 1; count++) {
		size_t n = (size_t)sprintf(b, "GET / HTTP/1.1\r\nHost: a\r\n");
		for (size_t i = 1; i < count; i++)
			n += (size_t)sprintf(b + n, "X-%zu: v\r\n", i);
		n += (size_t)sprintf(b + n, "\r\n");
		struct http_request r;
		const char *why;
		int ret = http_parse_request(b, n, &r, &why);
		if (count == HTTP_HEADERS_MAX) {
			assert_int_equal(ret, 1);
			assert_int_equal(r.nheaders, HTTP_HEADERS_MAX);
		} else {
			assert_int_equal(ret, -E2BIG);
			assert_non_null(strstr(why, "header fields"));
		}
	}
	free(b);
}

static void t_pipelined(void **state)
{
	(void)state;
	const char *s = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
			"GET /b HTTP/1.1\r\nHost: b\r\n\r\n";
	struct http_request r, r2;
	parse_ok(s, &r);
	assert_span(r.target, r.target_len, "/a");
	size_t next = r.head_len + (size_t)r.content_length;
	assert_memory_equal(s + next, "GET /b", 6);
	parse_ok(s + next, &r2);
	assert_span(r2.target, r2.target_len, "/b");
	assert_span(r2.host, r2.host_len, "b");
	assert_int_equal(r2.head_len, strlen(s + next));
}

/* ---- chunked bodies ------------------------------------------------------------------------ */

struct dec_result {
	int ret;
	size_t consumed;
	char out[256];
	size_t out_len;
	const char *why;
};

/* Decode in[0..n) fed as two pieces split at `split`, with an out buffer of out_cap bytes
 * drained whenever full. */
static void decode_split(const char *in, size_t n, size_t split, size_t out_cap,
			 struct dec_result *res)
{
	struct http_chunked c;
	http_chunked_init(&c);
	memset(res, 0, sizeof(*res));
	char *a = dup_n(in, split), *b = dup_n(in + split, n - split);
	const char *pieces[2] = {a, b};
	size_t lens[2] = {split, n - split};
	for (int p = 0; p < 2; p++) {
		size_t off = 0;
		for (;;) {
			char out[256];
			size_t used, made;
			int ret = http_chunked_decode(&c, pieces[p] + off, lens[p] - off, &used,
						      out, out_cap, &made, &res->why);
			assert_true(used <= lens[p] - off);
			assert_true(made <= out_cap);
			assert_true(res->out_len + made <= sizeof(res->out));
			memcpy(res->out + res->out_len, out, made);
			res->out_len += made;
			off += used;
			res->consumed += used;
			res->ret = ret;
			if (ret != 0 || (used == 0 && made == 0))
				break;
		}
		if (res->ret != 0)
			break;
	}
	free(a);
	free(b);
}

static void t_chunked_splits(void **state)
{
	(void)state;
	const char *s = "5;name=\"v\"\r\nhello\r\n1A\r\n abcdefghijklmnopqrstuvwxy\r\n"
			"0;last\r\nX-Trailer: t\r\nX-More: m\r\n\r\nGET /next";
	size_t n = strlen(s), body_end = n - strlen("GET /next");
	const char *want = "hello abcdefghijklmnopqrstuvwxy";
	for (size_t cap = 1; cap <= 64; cap *= 4) {
		for (size_t k = 0; k <= n; k++) {
			struct dec_result res;
			decode_split(s, n, k, cap, &res);
			if (res.ret != 1)
				print_error("split %zu cap %zu: %d %s\n", k, cap, res.ret,
					    res.why ? res.why : "");
			assert_int_equal(res.ret, 1);
			assert_int_equal(res.consumed, body_end);
			assert_int_equal(res.out_len, strlen(want));
			assert_memory_equal(res.out, want, strlen(want));
		}
	}
}

static void t_chunked_done_and_partial(void **state)
{
	(void)state;
	struct http_chunked c;
	char out[16];
	size_t used, made;
	const char *why;
	http_chunked_init(&c);
	assert_int_equal(
		http_chunked_decode(&c, "3\r\nab", 5, &used, out, sizeof(out), &made, &why), 0);
	assert_int_equal(used, 5);
	assert_int_equal(made, 2);
	assert_int_equal(http_chunked_decode(&c, "c\r\n0\r\n\r\nXY", 10, &used, out, sizeof(out),
					     &made, &why),
			 1);
	assert_int_equal(used, 8);
	assert_int_equal(made, 1);
	assert_int_equal(out[0], 'c');
	/* Done stays done and eats nothing of the next request. */
	assert_int_equal(http_chunked_decode(&c, "XY", 2, &used, out, sizeof(out), &made, &why), 1);
	assert_int_equal(used, 0);
	assert_int_equal(made, 0);

	/* A full out buffer stops in the data and resumes. */
	http_chunked_init(&c);
	assert_int_equal(
		http_chunked_decode(&c, "4\r\nwxyz\r\n0\r\n\r\n", 14, &used, out, 3, &made, &why),
		0);
	assert_int_equal(used, 6);
	assert_int_equal(made, 3);
	assert_int_equal(
		http_chunked_decode(&c, "z\r\n0\r\n\r\n", 8, &used, out, sizeof(out), &made, &why),
		1);
	assert_int_equal(made, 1);
}

static void t_chunked_refusals(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		const char *why;
	} cases[] = {
		{"g\r\n", "not hex"},
		{"\r\n", "not hex"},
		{"-1\r\n", "not hex"},
		{"0x5\r\nhello\r\n", "bad byte after the chunk size"},
		{"1000000000000000\r\n", "over 15 hex digits"},
		{"0000000000000000\r\n\r\n", "over 15 hex digits"},
		{"3\r\nabcX\r\n", "not followed by CRLF"},
		{"3\r\nabc\rX", "not followed by CRLF"},
		{"3\r\nabc\n0\r\n\r\n", "not followed by CRLF"},
		{"3\nabc\r\n", "bad byte after the chunk size"},
		{"3;a\nabc\r\n", "control byte in a chunk extension"},
		{"3\rabc\r\n", "bare CR"},
		{"3 \r\nabc\r\n", "not followed by an extension"},
		{"3;a\x01\r\nabc\r\n", "control byte in a chunk extension"},
		{"0\r\nX: a\nY: b\r\n\r\n", "bare LF"},
		{"0\r\n\r\r\n", "bare CR ending"},
		{"0\r\nX: a\r\r\n", "bare CR in the trailer"},
		{"0\r\n folded\r\n\r\n", "obs-fold"},
		{"0\r\n\n", "not a token"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dec_result res;
		size_t n = strlen(cases[i].in);
		decode_split(cases[i].in, n, n, 64, &res);
		if (res.ret != -EINVAL || !res.why || !strstr(res.why, cases[i].why))
			print_error("case %zu: got %d '%s', want '%s'\n", i, res.ret,
				    res.why ? res.why : "(null)", cases[i].why);
		assert_int_equal(res.ret, -EINVAL);
		assert_non_null(strstr(res.why, cases[i].why));
	}
	/* Fifteen digits are fine (no overflow), and an error is sticky. */
	struct http_chunked c;
	char out[8];
	size_t used, made;
	const char *why;
	http_chunked_init(&c);
	assert_int_equal(
		http_chunked_decode(&c, "fffffffffffffff\r\nabc", 20, &used, out, 8, &made, &why),
		0);
	assert_int_equal(made, 3);
	http_chunked_init(&c);
	assert_int_equal(http_chunked_decode(&c, "z", 1, &used, out, 8, &made, &why), -EINVAL);
	assert_int_equal(http_chunked_decode(&c, "0\r\n\r\n", 5, &used, out, 8, &made, &why),
			 -EINVAL);
}

static void t_chunked_bounds(void **state)
{
	(void)state;
	size_t big = 20000;
	char *b = malloc(big);
	assert_non_null(b);
	struct http_chunked c;
	char out[8];
	size_t used, made;
	const char *why;

	/* A size line of exactly 4096 bytes passes; one more byte does not. */
	for (size_t line = HTTP_CHUNK_LINE_MAX; line <= HTTP_CHUNK_LINE_MAX + 1; line++) {
		memcpy(b, "1;", 2);
		memset(b + 2, 'e', line - 2);
		memcpy(b + line, "\r\nx\r\n0\r\n\r\n", 10);
		http_chunked_init(&c);
		int r = http_chunked_decode(&c, b, line + 10, &used, out, 8, &made, &why);
		assert_int_equal(r, line == HTTP_CHUNK_LINE_MAX ? 1 : -EINVAL);
	}
	/* Trailers: 8 KiB in all, the final CRLF included. */
	for (size_t total = HTTP_TRAILER_MAX; total <= HTTP_TRAILER_MAX + 1; total++) {
		size_t n = 0, left = total - 2;
		n += (size_t)sprintf(b, "0\r\n");
		memcpy(b + n, "X:", 2);
		memset(b + n + 2, 't', left - 4);
		memcpy(b + n + left - 2, "\r\n\r\n", 4);
		n += left + 2;
		http_chunked_init(&c);
		int r = http_chunked_decode(&c, b, n, &used, out, 8, &made, &why);
		assert_int_equal(r, total == HTTP_TRAILER_MAX ? 1 : -EINVAL);
		assert_int_equal(made, 0); /* trailers are dropped */
		if (r < 0)
			assert_non_null(strstr(why, "trailer section over"));
	}
	free(b);
}

static void t_chunk_encode(void **state)
{
	(void)state;
	char out[512], data[300];
	assert_int_equal(http_chunk_encode("hello", 5, out, sizeof(out)), 10);
	assert_memory_equal(out, "5\r\nhello\r\n", 10);
	assert_int_equal(http_chunk_encode(NULL, 0, out, sizeof(out)), 5);
	assert_memory_equal(out, "0\r\n\r\n", 5);
	memset(data, 'd', sizeof(data));
	assert_int_equal(http_chunk_encode(data, 300, out, sizeof(out)), 3 + 2 + 300 + 2);
	assert_memory_equal(out, "12c\r\n", 5);
	assert_int_equal(http_chunk_encode("hello", 5, out, 9), -ENOSPC);
	assert_int_equal(http_chunk_encode("hello", 5, out, 10), 10);
	assert_int_equal(http_chunk_encode(NULL, 0, out, 4), -ENOSPC);

	/* What the encoder writes, the decoder reads back. */
	ssize_t a = http_chunk_encode(data, 300, out, sizeof(out));
	ssize_t z = http_chunk_encode(NULL, 0, out + a, sizeof(out) - (size_t)a);
	struct http_chunked c;
	char back[300];
	size_t used, made;
	const char *why;
	http_chunked_init(&c);
	assert_int_equal(http_chunked_decode(&c, out, (size_t)(a + z), &used, back, sizeof(back),
					     &made, &why),
			 1);
	assert_int_equal(used, (size_t)(a + z));
	assert_int_equal(made, 300);
	assert_memory_equal(back, data, 300);
}

/* ---- host names ---------------------------------------------------------------------------- */

static void t_host_matches(void **state)
{
	(void)state;
	assert_true(http_host_matches("api.example.com", "api.example.com"));
	assert_true(http_host_matches("api.example.com", "API.Example.COM"));
	assert_true(http_host_matches("api.example.com.", "api.example.com"));
	assert_true(http_host_matches("api.example.com", "api.example.com."));
	assert_false(http_host_matches("api.example.com", "api.example.com.evil"));
	assert_false(http_host_matches("api.example.com", "xapi.example.com"));
	assert_false(http_host_matches("api.example.com", ""));
	assert_false(http_host_matches("", "api.example.com"));

	assert_true(http_host_matches("*.example.com", "api.example.com"));
	assert_true(http_host_matches("*.example.com", "a.b.EXAMPLE.com."));
	assert_true(http_host_matches("*.example.com.", "a_b-c.example.com"));
	assert_false(http_host_matches("*.example.com", "example.com"));
	assert_false(http_host_matches("*.example.com", "badexample.com"));
	assert_false(http_host_matches("*.example.com", ".example.com"));
	assert_false(http_host_matches("*.example.com", "a..example.com"));
	assert_false(http_host_matches("*.example.com", "evil.com/.example.com"));
	assert_false(http_host_matches("*.example.com", "api.example.com.evil.net"));
	assert_false(http_host_matches("*.", "a"));
	assert_false(http_host_matches("*.example.com", "a.example.com.."));
}

static bool sni_eq(const char *host, const char *sni, unsigned port)
{
	char *h = dup_n(host, strlen(host));
	bool r = http_host_equals_sni(h, strlen(host), sni, port);
	free(h);
	return r;
}

static void t_host_equals_sni(void **state)
{
	(void)state;
	assert_true(sni_eq("api.example.com", "api.example.com", 443));
	assert_true(sni_eq("api.example.com:443", "api.example.com", 443));
	assert_false(sni_eq("api.example.com:8443", "api.example.com", 443));
	assert_true(sni_eq("api.example.com:8443", "api.example.com", 8443));
	assert_false(sni_eq("api.example.com:443", "api.example.com", 8443));
	assert_true(sni_eq("API.EXAMPLE.com", "api.example.com", 443));
	assert_true(sni_eq("api.example.com.", "api.example.com", 443));
	assert_true(sni_eq("api.example.com.:443", "api.example.com.", 443));
	assert_false(sni_eq("user@api.example.com", "api.example.com", 443));
	assert_false(sni_eq("api.example.com@evil", "api.example.com", 443));
	assert_false(sni_eq("u@api.example.com", "u@api.example.com", 443)); /* even if equal */
	assert_false(sni_eq("evil.example.com", "api.example.com", 443));
	assert_false(sni_eq("api.example.co", "api.example.com", 443));
	assert_false(sni_eq("api.example.com:", "api.example.com", 443));
	assert_false(sni_eq("api.example.com:443:443", "api.example.com", 443));
	assert_false(sni_eq("api.example.com:44x", "api.example.com", 443));
	assert_false(sni_eq("api.example.com:0000443", "api.example.com", 443));
	assert_false(sni_eq("", "api.example.com", 443));
	assert_false(sni_eq(":443", "", 443));
	assert_false(sni_eq(".", ".", 443));
	assert_false(sni_eq("[::1]", "api.example.com", 443));
	assert_true(sni_eq("[::1]", "::1", 443));
	assert_true(sni_eq("[::1]:443", "[::1]", 443));
	assert_false(sni_eq("[::1]:80", "::1", 443));
	assert_false(sni_eq("[]", "", 443));
	assert_false(sni_eq("[api.example.com]", "api.example.com", 443));
	assert_true(sni_eq("[2001:DB8::1]", "2001:db8::1", 443));
	assert_false(sni_eq("::1", "::1", 443));
}

/* ---- substitution -------------------------------------------------------------------------- */

#define SECRET(ph, val, ok)                                                                        \
	{                                                                                          \
		ph, sizeof(ph) - 1, val, sizeof(val) - 1, ok                                       \
	}

static const struct subst_secret secrets[] = {
	SECRET("$MSB_KEY", "sk-live-123", true),
	SECRET("$MSB_KEY2", "second value", true),
	SECRET("$MSB_DENIED", "do-not-leak", false),
	SECRET("$MSB_EMPTY", "", true),
};
#define NSECRETS (sizeof(secrets) / sizeof(secrets[0]))

static void expect_buffer(const char *in, const char *want)
{
	char *out = NULL;
	size_t len = 0, viol = 99;
	char *b = dup_n(in, strlen(in));
	int r = subst_buffer(b, strlen(in), secrets, NSECRETS, 4096, &out, &len, &viol);
	free(b);
	if (r != 0 || len != strlen(want) || memcmp(out, want, len))
		print_error("'%s': got %d '%.*s', want '%s'\n", in, r, (int)len, out ? out : "",
			    want);
	assert_int_equal(r, 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(out, want, len);
	assert_int_equal(viol, 99);
	subst_free(out, len);
}

static void t_subst_buffer(void **state)
{
	(void)state;
	expect_buffer("Bearer $MSB_KEY", "Bearer sk-live-123");
	expect_buffer("$MSB_KEY2", "second value");
	expect_buffer("$MSB_KEY2x", "$MSB_KEY2x");
	expect_buffer("$MSB_KEYS $MSB_KEY_", "$MSB_KEYS $MSB_KEY_");
	expect_buffer("$MSB_KEY.", "sk-live-123.");
	expect_buffer("x$MSB_KEY$MSB_KEY2-", "xsk-live-123second value-");
	expect_buffer("$$MSB_KEY $MSB_ $MSB $MSB_KEY", "$sk-live-123 $MSB_ $MSB sk-live-123");
	expect_buffer("[$MSB_EMPTY]", "[]");
	expect_buffer("$msb_key %24MSB_KEY", "$msb_key %24MSB_KEY");
	expect_buffer("$MSB_DENIEDX $MSB_DENIE", "$MSB_DENIEDX $MSB_DENIE");
	expect_buffer("", "");

	char *out = (char *)1;
	size_t len = 7, viol = 99;
	const char *in = "a $MSB_KEY b $MSB_DENIED c";
	assert_int_equal(subst_buffer(in, strlen(in), secrets, NSECRETS, 4096, &out, &len, &viol),
			 -EPERM);
	assert_int_equal(viol, 2);
	assert_null(out);
	assert_int_equal(len, 0);

	/* The bound is on the output: exactly enough passes, one byte less does not. */
	in = "k=$MSB_KEY";
	assert_int_equal(subst_buffer(in, strlen(in), secrets, NSECRETS, 13, &out, &len, &viol), 0);
	assert_int_equal(len, 13);
	subst_free(out, len);
	assert_int_equal(subst_buffer(in, strlen(in), secrets, NSECRETS, 12, &out, &len, &viol),
			 -E2BIG);
	assert_null(out);
}

static void t_subst_bad_secrets(void **state)
{
	(void)state;
	static char longname[SUBST_PLACEHOLDER_MAX + 2];
	memcpy(longname, "$MSB_", 5);
	memset(longname + 5, 'A', sizeof(longname) - 6);
	struct subst_secret bad[] = {
		SECRET("MSB_KEY", "v", true),
		SECRET("$MSB_", "v", true),
		SECRET("$MSB_1A", "v", true),
		SECRET("$MSB_A-B", "v", true),
		SECRET("$MSB_CR", "a\rb", true),
		SECRET("$MSB_LF", "a\nb", true),
		SECRET("$MSB_NUL", "a\0b", true),
		{longname, SUBST_PLACEHOLDER_MAX + 1, "v", 1, true},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *out;
		size_t len, viol;
		struct subst_stream st;
		assert_int_equal(subst_buffer("x", 1, &bad[i], 1, 64, &out, &len, &viol), -EINVAL);
		assert_int_equal(subst_stream_init(&st, &bad[i], 1), -EINVAL);
	}
	struct subst_secret ok = {longname, SUBST_PLACEHOLDER_MAX, "v", 1, true};
	struct subst_stream st;
	assert_int_equal(subst_stream_init(&st, &ok, 1), 0);
	subst_stream_free(&st);
}

/* Substitute a head; the output must parse again. */
static int head(const char *in, unsigned where, uint64_t new_cl, size_t max_out, char **out,
		size_t *len, size_t *viol)
{
	struct http_request r;
	parse_ok(in, &r);
	int ret = subst_head(&r, secrets, NSECRETS, where, new_cl, max_out, out, len, viol);
	if (ret == 0) {
		struct http_request again;
		const char *why;
		assert_int_equal(http_parse_request(*out, *len, &again, &why), 1);
		assert_int_equal(again.head_len, *len);
		assert_int_equal(again.nheaders, r.nheaders);
	}
	return ret;
}

static void expect_head(const char *in, unsigned where, uint64_t new_cl, const char *want)
{
	char *out;
	size_t len, viol = 99;
	int r = head(in, where, new_cl, 4096, &out, &len, &viol);
	if (r != 0 || len != strlen(want) || memcmp(out, want, len))
		print_error("got %d '%.*s'\nwant '%s'\n", r, r ? 0 : (int)len, r ? "" : out, want);
	assert_int_equal(r, 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(out, want, len);
	subst_free(out, len);
}

static void t_subst_head_headers(void **state)
{
	(void)state;
	const unsigned H = SUBST_HEADERS;
	expect_head(
		"GET /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer $MSB_KEY\r\n"
		"X-Two:\t$MSB_KEY2 and $MSB_KEY  \r\n\r\n",
		H, UINT64_MAX,
		"GET /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer sk-live-123\r\n"
		"X-Two:\tsecond value and sk-live-123  \r\n\r\n");
	/* Prefix names: $MSB_KEY2 is its own secret, $MSB_KEY22 nobody's. */
	expect_head("GET / HTTP/1.1\r\nHost: a\r\nX: $MSB_KEY2;$MSB_KEY22;$MSB_KEY\r\n\r\n", H,
		    UINT64_MAX,
		    "GET / HTTP/1.1\r\nHost: a\r\nX: second value;$MSB_KEY22;sk-live-123\r\n\r\n");
	/* Host is what the proxy checked against the SNI: it goes upstream as it is. */
	expect_head("GET / HTTP/1.1\r\nHost: $MSB_KEY\r\nX: $MSB_KEY\r\n\r\n", H, UINT64_MAX,
		    "GET / HTTP/1.1\r\nHost: $MSB_KEY\r\nX: sk-live-123\r\n\r\n");
	/* Without SUBST_HEADERS nothing changes. */
	expect_head("GET / HTTP/1.1\r\nHost: a\r\nX: $MSB_KEY\r\n\r\n", 0, UINT64_MAX,
		    "GET / HTTP/1.1\r\nHost: a\r\nX: $MSB_KEY\r\n\r\n");
	/* Header names and the request line are never substituted. */
	expect_head("GET /$MSB_KEY HTTP/1.1\r\nHost: a\r\n$MSB_KEY: x\r\n\r\n", H | SUBST_QUERY,
		    UINT64_MAX, "GET /$MSB_KEY HTTP/1.1\r\nHost: a\r\n$MSB_KEY: x\r\n\r\n");
}

static void t_subst_head_basic(void **state)
{
	(void)state;
	static const char *const names[] = {"Authorization", "proxy-authorization"};
	for (size_t i = 0; i < 2; i++) {
		char enc[128], in[512], want_cred[128], dec[128];
		b64_encode("user:$MSB_KEY", 13, enc);
		snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n%s: Basic  %s\r\n\r\n",
			 names[i], enc);
		char *out;
		size_t len, viol;
		assert_int_equal(head(in, SUBST_HEADERS, UINT64_MAX, 4096, &out, &len, &viol), 0);
		/* Find the credential in the output and decode it. */
		char *nul = malloc(len + 1);
		assert_non_null(nul);
		memcpy(nul, out, len);
		nul[len] = 0;
		char *cred = strstr(nul, "Basic  ");
		assert_non_null(cred);
		cred += 7;
		size_t clen = strcspn(cred, "\r");
		assert_int_equal(b64_decode(cred, clen, dec), strlen("user:sk-live-123"));
		assert_string_equal(dec, "user:sk-live-123");
		b64_encode("user:sk-live-123", 16, want_cred);
		assert_int_equal(clen, strlen(want_cred));
		free(nul);
		subst_free(out, len);
	}
	char enc[128], in[512];
	/* A credential without placeholders stays byte for byte (even unpadded). */
	expect_head("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: basic dXNlcjpwYXNz\r\n\r\n",
		    SUBST_HEADERS, UINT64_MAX,
		    "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: basic dXNlcjpwYXNz\r\n\r\n");
	expect_head("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dXNlcjpwYXM\r\n\r\n",
		    SUBST_HEADERS, UINT64_MAX,
		    "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dXNlcjpwYXM\r\n\r\n");
	/* Not base64: an ordinary value (a pre-encoded credential as the secret). */
	expect_head("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic $MSB_KEY\r\n\r\n",
		    SUBST_HEADERS, UINT64_MAX,
		    "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic sk-live-123\r\n\r\n");
	/* Other headers are not decoded. */
	b64_encode("u:$MSB_KEY", 10, enc);
	snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nX-Auth: Basic %s\r\n\r\n", enc);
	expect_head(in, SUBST_HEADERS, UINT64_MAX, in);

	/* A denied secret inside a credential is found, whatever `where` says. */
	b64_encode("user:$MSB_DENIED", 16, enc);
	snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic %s\r\n\r\n",
		 enc);
	for (unsigned where = 0; where <= SUBST_HEADERS; where++) {
		char *out = (char *)1;
		size_t len, viol = 99;
		assert_int_equal(head(in, where, UINT64_MAX, 4096, &out, &len, &viol), -EPERM);
		assert_int_equal(viol, 2);
		assert_null(out);
	}
}

static void t_subst_head_query(void **state)
{
	(void)state;
	const unsigned HQ = SUBST_HEADERS | SUBST_QUERY;
	expect_head("GET /v1?key=$MSB_KEY&b=%24MSB_KEY2&c=%24MSB_KEY22 HTTP/1.1\r\nHost: a\r\n\r\n",
		    HQ, UINT64_MAX,
		    "GET /v1?key=sk-live-123&b=second%20value&c=%24MSB_KEY22 HTTP/1.1\r\nHost: "
		    "a\r\n\r\n");
	/* The path is left alone, and so is the query without SUBST_QUERY. */
	expect_head("GET /a/$MSB_KEY/%24MSB_KEY?x=$MSB_KEY HTTP/1.1\r\nHost: a\r\n\r\n", HQ,
		    UINT64_MAX,
		    "GET /a/$MSB_KEY/%24MSB_KEY?x=sk-live-123 HTTP/1.1\r\nHost: a\r\n\r\n");
	expect_head("GET /v1?key=$MSB_KEY HTTP/1.1\r\nHost: a\r\n\r\n", SUBST_HEADERS, UINT64_MAX,
		    "GET /v1?key=$MSB_KEY HTTP/1.1\r\nHost: a\r\n\r\n");

	/* Values are percent-encoded in the target so they cannot break the request line. */
	static const struct subst_secret odd[] = {
		SECRET("$MSB_ODD", "a b&c=d/+%~_.-Z\x7f\xff", true)};
	struct http_request r;
	parse_ok("GET /?q=$MSB_ODD HTTP/1.1\r\nHost: a\r\n\r\n", &r);
	char *out;
	size_t len, viol;
	assert_int_equal(subst_head(&r, odd, 1, HQ, UINT64_MAX, 4096, &out, &len, &viol), 0);
	const char *want = "GET /?q=a%20b%26c%3Dd%2F%2B%25~_.-Z%7F%FF HTTP/1.1\r\nHost: a\r\n\r\n";
	assert_int_equal(len, strlen(want));
	assert_memory_equal(out, want, len);
	subst_free(out, len);
}

static void t_subst_head_denied(void **state)
{
	(void)state;
	static const char *const reqs[] = {
		"GET /?k=$MSB_DENIED HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /?k=%24MSB_DENIED HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /p/%24MSB_DENIED HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /$MSB_DENIED/x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-$MSB_DENIED: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: $MSB_KEY $MSB_DENIED\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: $MSB_DENIED\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		for (unsigned where = 0; where < 8; where++) {
			char *out = (char *)1;
			size_t len, viol = 99;
			int r = head(reqs[i], where, UINT64_MAX, 4096, &out, &len, &viol);
			if (r != -EPERM)
				print_error("req %zu where %u: %d\n", i, where, r);
			assert_int_equal(r, -EPERM);
			assert_int_equal(viol, 2);
			assert_null(out);
		}
	}
	/* Same name plus one character: another name, not a violation. */
	expect_head("GET / HTTP/1.1\r\nHost: a\r\nX: $MSB_DENIEDX\r\n\r\n", SUBST_HEADERS,
		    UINT64_MAX, "GET / HTTP/1.1\r\nHost: a\r\nX: $MSB_DENIEDX\r\n\r\n");
}

static void t_subst_head_content_length(void **state)
{
	(void)state;
	char *out;
	size_t len, viol;
	expect_head("POST /v1 HTTP/1.1\r\nHost: a\r\ncontent-length:  10 \r\nX: $MSB_KEY\r\n\r\n",
		    SUBST_HEADERS, 12345678901234ull,
		    "POST /v1 HTTP/1.1\r\nHost: a\r\ncontent-length:  12345678901234 \r\nX: "
		    "sk-live-123\r\n\r\n");
	expect_head("POST /v1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n", 0, 0,
		    "POST /v1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
	/* Nothing over 19 digits, which the parser would refuse. */
	expect_head("POST /v1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n", 0,
		    9999999999999999999ull,
		    "POST /v1 HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n");
	assert_int_equal(head("POST /v1 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n", 0,
			      10000000000000000000ull, 4096, &out, &len, &viol),
			 -EINVAL);
	/* A new length for a request without one is a caller bug. */
	assert_int_equal(head("POST /v1 HTTP/1.1\r\nHost: a\r\n\r\n", SUBST_HEADERS, 5, 4096, &out,
			      &len, &viol),
			 -EINVAL);
}

static void t_subst_head_bound(void **state)
{
	(void)state;
	const char *in = "GET / HTTP/1.1\r\nHost: a\r\nX: $MSB_KEY\r\n\r\n";
	size_t want = strlen(in) - 8 + 11;
	char *out;
	size_t len, viol;
	assert_int_equal(head(in, SUBST_HEADERS, UINT64_MAX, want, &out, &len, &viol), 0);
	assert_int_equal(len, want);
	subst_free(out, len);
	assert_int_equal(head(in, SUBST_HEADERS, UINT64_MAX, want - 1, &out, &len, &viol), -E2BIG);
	assert_null(out);
}

/* Feed in[0..n) to a stream in pieces cut at the given points; returns the result. */
static int stream_pieces(const char *in, size_t n, const size_t *cuts, size_t ncuts, char **out,
			 size_t *len, size_t *cap, size_t *viol)
{
	struct subst_stream st;
	assert_int_equal(subst_stream_init(&st, secrets, NSECRETS), 0);
	*out = NULL;
	*len = *cap = 0;
	size_t prev = 0;
	int r = 0;
	for (size_t i = 0; i <= ncuts && r == 0; i++) {
		size_t end = i < ncuts ? cuts[i] : n;
		char *piece = dup_n(in + prev, end - prev);
		r = subst_stream_feed(&st, piece, end - prev, i == ncuts, out, len, cap, viol);
		free(piece);
		prev = end;
	}
	subst_stream_free(&st);
	return r;
}

static void t_stream_splits(void **state)
{
	(void)state;
	const char *in = "$MSB_KEY{\"a\":\"$MSB_KEY2\",\"b\":\"$MSB_KEY22 $$MSB_KEY $MSB_\","
			 "\"c\":\"%24MSB_KEY $MSB_EMPTY$MSB_KEY2\"}$MSB_KEY";
	size_t n = strlen(in);
	char *want;
	size_t want_len, viol;
	assert_int_equal(subst_buffer(in, n, secrets, NSECRETS, SIZE_MAX, &want, &want_len, &viol),
			 0);
	for (size_t a = 0; a <= n; a++) {
		for (size_t b = a; b <= n; b += 3) {
			size_t cuts[2] = {a, b};
			char *out;
			size_t len, cap;
			assert_int_equal(stream_pieces(in, n, cuts, 2, &out, &len, &cap, &viol), 0);
			if (len != want_len || memcmp(out, want, len))
				print_error("cuts %zu %zu: '%.*s'\n", a, b, (int)len, out);
			assert_int_equal(len, want_len);
			assert_memory_equal(out, want, len);
			subst_free(out, cap);
		}
	}
	/* Byte by byte. */
	size_t cuts[256];
	assert_true(n < 256);
	for (size_t i = 0; i < n; i++)
		cuts[i] = i + 1;
	char *out;
	size_t len, cap;
	assert_int_equal(stream_pieces(in, n, cuts, n, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, want_len);
	assert_memory_equal(out, want, len);
	subst_free(out, cap);
	subst_free(want, want_len);
}

static void t_stream_carry(void **state)
{
	(void)state;
	struct subst_stream st;
	char *out = NULL;
	size_t len = 0, cap = 0, viol;
	assert_int_equal(subst_stream_init(&st, secrets, NSECRETS), 0);
	/* A whole placeholder at the end of a piece waits for the byte after it. */
	assert_int_equal(subst_stream_feed(&st, "abc $MSB_KEY", 12, false, &out, &len, &cap, &viol),
			 0);
	assert_int_equal(len, 4);
	assert_memory_equal(out, "abc ", 4);
	assert_int_equal(subst_stream_feed(&st, "2", 1, false, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, 4);
	assert_int_equal(subst_stream_feed(&st, "!", 1, false, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, 4 + 12 + 1);
	assert_memory_equal(out, "abc second value!", 17);
	/* A partial one is flushed as it is at the end, a whole one substituted. */
	assert_int_equal(subst_stream_feed(&st, " $MSB_KE", 8, false, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, 18);
	assert_int_equal(subst_stream_feed(&st, "Y", 1, true, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, 18 + 11);
	assert_memory_equal(out + 17, " sk-live-123", 12);
	subst_stream_free(&st);
	subst_free(out, cap);

	out = NULL;
	len = cap = 0;
	assert_int_equal(subst_stream_init(&st, secrets, NSECRETS), 0);
	assert_int_equal(subst_stream_feed(&st, "x $MS", 5, false, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, 2);
	assert_int_equal(subst_stream_feed(&st, NULL, 0, true, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(out, "x $MS", 5);
	subst_stream_free(&st);
	subst_free(out, cap);

	/* A name longer than any placeholder is not held back. */
	char big[600];
	memcpy(big, "$MSB_", 5);
	memset(big + 5, 'Z', sizeof(big) - 5);
	out = NULL;
	len = cap = 0;
	assert_int_equal(subst_stream_init(&st, secrets, NSECRETS), 0);
	assert_int_equal(subst_stream_feed(&st, big, sizeof(big), false, &out, &len, &cap, &viol),
			 0);
	assert_int_equal(len, sizeof(big));
	subst_stream_free(&st);
	subst_free(out, cap);
}

static void t_stream_denied(void **state)
{
	(void)state;
	struct subst_stream st;
	char *out = NULL;
	size_t len = 0, cap = 0, viol = 99;
	assert_int_equal(subst_stream_init(&st, secrets, NSECRETS), 0);
	assert_int_equal(subst_stream_feed(&st, "ok $MSB_KEY ", 12, false, &out, &len, &cap, &viol),
			 0);
	assert_int_equal(len, 15);
	/* The denied placeholder straddles two pieces; what the failing feed wrote is undone. */
	assert_int_equal(
		subst_stream_feed(&st, "$MSB_KEY $MSB_DEN", 17, false, &out, &len, &cap, &viol), 0);
	assert_int_equal(len, 15 + 12);
	assert_int_equal(subst_stream_feed(&st, "IED.", 4, false, &out, &len, &cap, &viol), -EPERM);
	assert_int_equal(viol, 2);
	assert_int_equal(len, 27);
	viol = 99;
	assert_int_equal(subst_stream_feed(&st, "more", 4, true, &out, &len, &cap, &viol), -EPERM);
	assert_int_equal(viol, 2);
	assert_int_equal(len, 27);
	subst_stream_free(&st);
	subst_free(out, cap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_get_11),
		cmocka_unit_test(t_post_10),
		cmocka_unit_test(t_post_11_bodies),
		cmocka_unit_test(t_keep_alive),
		cmocka_unit_test(t_upgrade_connect_options),
		cmocka_unit_test(t_partial),
		cmocka_unit_test(t_refusals),
		cmocka_unit_test(t_nul),
		cmocka_unit_test(t_head_too_large),
		cmocka_unit_test(t_too_many_headers),
		cmocka_unit_test(t_pipelined),
		cmocka_unit_test(t_chunked_splits),
		cmocka_unit_test(t_chunked_done_and_partial),
		cmocka_unit_test(t_chunked_refusals),
		cmocka_unit_test(t_chunked_bounds),
		cmocka_unit_test(t_chunk_encode),
		cmocka_unit_test(t_host_matches),
		cmocka_unit_test(t_host_equals_sni),
		cmocka_unit_test(t_subst_buffer),
		cmocka_unit_test(t_subst_bad_secrets),
		cmocka_unit_test(t_subst_head_headers),
		cmocka_unit_test(t_subst_head_basic),
		cmocka_unit_test(t_subst_head_query),
		cmocka_unit_test(t_subst_head_denied),
		cmocka_unit_test(t_subst_head_content_length),
		cmocka_unit_test(t_subst_head_bound),
		cmocka_unit_test(t_stream_splits),
		cmocka_unit_test(t_stream_carry),
		cmocka_unit_test(t_stream_denied),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
