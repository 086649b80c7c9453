/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the secrets proxy's placeholder substitution
 * (plugins/secrets/substitute.c).
 *
 * The input is: one byte flipping which of a fixed set of secrets are
 * allowed, one byte choosing what subst_head rewrites, then a body.  It
 * checks:
 *  - subst_buffer on the body and subst_stream fed the body in random
 *    pieces agree: same result, same violation, same bytes;
 *  - the values of secrets that are not allowed never reach any output (it
 *    is the same with those values changed); a body without '$' comes out
 *    as is;
 *  - max_out is exact: the output length passes, one byte less is -E2BIG;
 *  - when the body starts with a request head that parses, subst_head's
 *    output parses again as the same request (method, header count, framing,
 *    the new Content-Length), is within max_out, and is refused whenever the
 *    raw head holds a placeholder of a secret that is not allowed.
 *
 * Seeds: tests/fuzz/corpus/secrets_subst/.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "substitute.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define NSEC 7
static char long_name[SUBST_PLACEHOLDER_MAX + 1];
static const struct subst_secret base[NSEC] = {
	{"$MSB_KEY", 8, "sk-live-0123456789", 18, true},
	{"$MSB_KEY2", 9, "v2 with space&=/+", 17, true},
	{"$MSB_DENIED", 11, "DENIED-VALUE-7f3a", 17, false},
	{"$MSB_A", 6, "", 0, true},
	{"$MSB_K", 6, "k", 1, true},
	{"$MSB__", 6, "UNDERSCORE-VALUE-91c2", 21, false},
	{long_name, SUBST_PLACEHOLDER_MAX, "LONG-VALUE-55e0", 15, true},
};
static struct subst_secret sec[NSEC];
static struct http_request req, again;

static uint32_t rng;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

/*
 * The value of a secret that is not allowed never reaches the output: the
 * same call with those values changed gives the same bytes.
 */
static struct subst_secret other[NSEC];

static void swap_denied_values(void)
{
	memcpy(other, sec, sizeof(other));
	for (size_t i = 0; i < NSEC; i++)
		if (!other[i].allowed) {
			other[i].value = "a different value";
			other[i].value_len = 17;
		}
}

static void check_no_leak_buffer(const char *in, size_t len, const char *out, size_t out_len)
{
	char *o2;
	size_t l2, v2;
	swap_denied_values();
	CHECK(subst_buffer(in, len, other, NSEC, SIZE_MAX, &o2, &l2, &v2) == 0);
	CHECK(l2 == out_len && !memcmp(o2, out, l2));
	subst_free(o2, l2);
}

static void check_no_leak_head(unsigned where, uint64_t new_cl, const char *out, size_t out_len)
{
	char *o2;
	size_t l2, v2;
	swap_denied_values();
	CHECK(subst_head(&req, other, NSEC, where, new_cl, SIZE_MAX, &o2, &l2, &v2) == 0);
	CHECK(l2 == out_len && !memcmp(o2, out, l2));
	subst_free(o2, l2);
}

static void check_stream(const char *in, size_t len, int want, const char *want_out,
			 size_t want_len, size_t want_viol)
{
	struct subst_stream st;
	char *out = NULL;
	size_t out_len = 0, out_cap = 0, viol = SIZE_MAX, off = 0;
	int r = 0;
	CHECK(subst_stream_init(&st, sec, NSEC) == 0);
	do {
		size_t piece = len - off;
		if (piece && rnd() % 4) {
			size_t p = rnd() % (rnd() % 2 ? 8 : 300);
			if (p < piece)
				piece = p;
		}
		bool final = off + piece == len;
		size_t before = out_len;
		r = subst_stream_feed(&st, in + off, piece, final, &out, &out_len, &out_cap, &viol);
		CHECK(out_len >= before && out_len <= out_cap);
		/* Held back: at most the longest placeholder. */
		CHECK(r != 0 || st.carry_len <= SUBST_PLACEHOLDER_MAX);
		CHECK(r != 0 || !final || st.carry_len == 0);
		off += piece;
		if (final)
			break;
	} while (r == 0);
	CHECK(r == want);
	if (r == 0) {
		CHECK(out_len == want_len);
		CHECK(want_len == 0 || !memcmp(out, want_out, want_len));
	} else if (r == -EPERM) {
		CHECK(viol == want_viol);
		/* Sticky. */
		size_t v2 = SIZE_MAX;
		CHECK(subst_stream_feed(&st, "x", 1, true, &out, &out_len, &out_cap, &v2) ==
		      -EPERM);
		CHECK(v2 == want_viol);
	}
	subst_stream_free(&st);
	subst_free(out, out_cap);
}

static void check_head(const char *body, size_t len, unsigned where_byte)
{
	const char *why;
	if (http_parse_request(body, len, &req, &why) != 1)
		return;
	unsigned where = where_byte & 7;
	uint64_t new_cl = UINT64_MAX;
	if ((where_byte & 8) && req.body == HTTP_BODY_LENGTH)
		new_cl = (where_byte & 16)   ? 0
			 : (where_byte & 64) ? 10000000000000000000ull
					     : 9999999999999999999ull;
	size_t max_out = (where_byte & 32) ? req.head_len : HTTP_HEAD_MAX * 2;
	char *out = (char *)1;
	size_t out_len = 0, viol = SIZE_MAX;
	int r = subst_head(&req, sec, NSEC, where, new_cl, max_out, &out, &out_len, &viol);
	CHECK(r == 0 || r == -EPERM || r == -E2BIG || r == -EINVAL);
	CHECK((r == -EINVAL) == (new_cl == 10000000000000000000ull));
	if (r != 0)
		CHECK(out == NULL);
	if (r == -EPERM)
		CHECK(viol < NSEC && !sec[viol].allowed);

	/* A raw placeholder of a secret not allowed in the head always refuses it. */
	char *raw;
	size_t raw_len, raw_viol = SIZE_MAX;
	int rr = subst_buffer(body, req.head_len, sec, NSEC, SIZE_MAX, &raw, &raw_len, &raw_viol);
	if (rr == -EPERM)
		CHECK(r == -EPERM || r == -EINVAL);
	else
		subst_free(raw, raw_len);
	if (r != 0)
		return;

	CHECK(out_len <= max_out);
	check_no_leak_head(where, new_cl, out, out_len);
	CHECK(http_parse_request(out, out_len, &again, &why) == 1);
	CHECK(again.head_len == out_len);
	CHECK(again.nheaders == req.nheaders && again.body == req.body);
	CHECK(again.method_len == req.method_len &&
	      !memcmp(again.method, req.method, req.method_len));
	if (new_cl != UINT64_MAX)
		CHECK(again.content_length == new_cl);
	else
		CHECK(again.content_length == req.content_length);
	if (!(where & SUBST_QUERY))
		CHECK(again.target_len == req.target_len &&
		      !memcmp(again.target, req.target, req.target_len));
	if (where == 0 && new_cl == UINT64_MAX)
		CHECK(out_len == req.head_len && !memcmp(out, body, out_len));
	subst_free(out, out_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	if (!long_name[0]) {
		memcpy(long_name, "$MSB_", 5);
		memset(long_name + 5, 'L', SUBST_PLACEHOLDER_MAX - 5);
	}
	memcpy(sec, base, sizeof(sec));
	for (size_t i = 0; i < NSEC; i++)
		if (data[0] & (1u << i))
			sec[i].allowed = !sec[i].allowed;
	unsigned where_byte = data[1];
	const char *body = (const char *)data + 2;
	size_t len = size - 2;
	rng = 2463534242u ^ (uint32_t)size ^ (uint32_t)data[0] << 8 ^ (uint32_t)data[1] << 16;

	char *out = (char *)1;
	size_t out_len = 0, viol = SIZE_MAX;
	int r = subst_buffer(body, len, sec, NSEC, SIZE_MAX, &out, &out_len, &viol);
	CHECK(r == 0 || r == -EPERM);
	if (r == 0) {
		CHECK(out != NULL);
		check_no_leak_buffer(body, len, out, out_len);
		if (!memchr(body, '$', len))
			CHECK(out_len == len && !memcmp(out, body, len));
		/* The bound is exact. */
		char *o2;
		size_t l2, v2;
		CHECK(subst_buffer(body, len, sec, NSEC, out_len, &o2, &l2, &v2) == 0);
		CHECK(l2 == out_len && !memcmp(o2, out, l2));
		subst_free(o2, l2);
		if (out_len)
			CHECK(subst_buffer(body, len, sec, NSEC, out_len - 1, &o2, &l2, &v2) ==
			      -E2BIG);
	} else {
		CHECK(out == NULL && viol < NSEC && !sec[viol].allowed);
	}
	check_stream(body, len, r, out, out_len, viol);
	if (r == 0)
		subst_free(out, out_len);
	check_head(body, len, where_byte);
	return 0;
}
