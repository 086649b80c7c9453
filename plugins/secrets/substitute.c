/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Placeholder substitution (substitute.h).
 *
 * One scanner does all the work: it looks for an introducer ("$MSB_", and in
 * request-targets "%24MSB_"), takes the whole [A-Za-z0-9_] run after it as
 * the name, and looks the name up among the secrets.  Because the name is
 * the whole run, a match can never be a prefix of a longer name, and at most
 * one secret matches at any position.  A run longer than the longest
 * placeholder cannot match and is skipped (it contains no introducer).
 *
 * Cost: O(len * n) in the worst case (every byte an introducer, n secrets
 * compared by length first); n is the handful of secrets of one sandbox.
 * Output growth is bounded by max_out (buffer, head); a stream's output per
 * feed is bounded by len times the largest value / placeholder ratio.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "substitute.h"

/* ---- the output buffer ------------------------------------------------------------------- */

/* A growable buffer that may hold secret values: grown by copy and wipe, never realloc. */
struct obuf {
	char *p;
	size_t len, cap, max;
};

static int ob_reserve(struct obuf *o, size_t extra)
{
	if (extra > o->max - o->len)
		return -E2BIG;
	size_t need = o->len + extra;
	if (need <= o->cap)
		return 0;
	size_t cap = o->cap ? o->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > o->max)
		cap = o->max;
	char *p = malloc(cap);
	if (!p)
		return -ENOMEM;
	if (o->len)
		memcpy(p, o->p, o->len);
	subst_free(o->p, o->cap);
	o->p = p;
	o->cap = cap;
	return 0;
}

static int ob_put(struct obuf *o, const void *d, size_t n)
{
	if (!o || n == 0)
		return 0;
	int r = ob_reserve(o, n);
	if (r < 0)
		return r;
	memcpy(o->p + o->len, d, n);
	o->len += n;
	return 0;
}

static void ob_wipe(struct obuf *o)
{
	subst_free(o->p, o->cap);
	o->p = NULL;
	o->len = o->cap = 0;
}

/* ---- secrets ------------------------------------------------------------------------------- */

static bool is_ident(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_';
}

static bool placeholder_ok(const char *p, size_t n)
{
	if (!p || n < 6 || n > SUBST_PLACEHOLDER_MAX || memcmp(p, "$MSB_", 5) != 0)
		return false;
	if (p[5] >= '0' && p[5] <= '9')
		return false;
	for (size_t i = 5; i < n; i++)
		if (!is_ident((unsigned char)p[i]))
			return false;
	return true;
}

/* Placeholders well-formed, values free of CR, LF and NUL; *longest placeholder. */
static int check_secrets(const struct subst_secret *s, size_t n, size_t *longest)
{
	*longest = 0;
	if (n && !s)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!placeholder_ok(s[i].placeholder, s[i].placeholder_len))
			return -EINVAL;
		if (s[i].value_len && (!s[i].value || memchr(s[i].value, '\r', s[i].value_len) ||
				       memchr(s[i].value, '\n', s[i].value_len) ||
				       memchr(s[i].value, '\0', s[i].value_len)))
			return -EINVAL;
		if (s[i].placeholder_len > *longest)
			*longest = s[i].placeholder_len;
	}
	return 0;
}

/* ---- the scanner --------------------------------------------------------------------------- */

struct scan {
	const struct subst_secret *s;
	size_t n;
	size_t longest;
	bool pct;    /* "%24MSB_" introduces a placeholder too (request-targets) */
	bool encode; /* percent-encode values (request-targets) */
	bool check;  /* only look for placeholders of secrets not allowed; write nothing */
	size_t hits; /* placeholders replaced */
	size_t *violation;
};

/* The secret whose placeholder is "$MSB_" + name[0..len), or -1. */
static long lookup(const struct scan *sc, const char *name, size_t len)
{
	for (size_t i = 0; i < sc->n; i++)
		if (sc->s[i].placeholder_len == len + 5 &&
		    memcmp(sc->s[i].placeholder + 5, name, len) == 0)
			return (long)i;
	return -1;
}

static int put_value(const struct scan *sc, const struct subst_secret *sec, struct obuf *o)
{
	static const char hex[] = "0123456789ABCDEF";
	if (!sc->encode)
		return ob_put(o, sec->value, sec->value_len);
	for (size_t i = 0; i < sec->value_len; i++) {
		unsigned char c = (unsigned char)sec->value[i];
		int r;
		if (is_ident(c) || c == '-' || c == '.' || c == '~') {
			r = ob_put(o, &c, 1);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};
			r = ob_put(o, e, 3);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static size_t next_intro(const struct scan *sc, const char *p, size_t n, size_t i)
{
	if (!sc->pct) {
		const char *q = memchr(p + i, '$', n - i);
		return q ? (size_t)(q - p) : n;
	}
	while (i < n && p[i] != '$' && p[i] != '%')
		i++;
	return i;
}

/*
 * Substitute in p[0..n), appending to o (nothing when sc->check).  Unless
 * at_end, a tail that could still turn into a placeholder once more bytes
 * come is held back: *used is where it starts (n when nothing is held).
 */
static int scan(struct scan *sc, const char *p, size_t n, bool at_end, struct obuf *o, size_t *used)
{
	size_t i = 0, flushed = 0;
	int r;

	*used = n;
	if (sc->check)
		o = NULL;
	while (sc->n && i < n) {
		size_t k = next_intro(sc, p, n, i);
		if (k == n)
			break;
		const char *intro = p[k] == '$' ? "$MSB_" : "%24MSB_";
		size_t ilen = strlen(intro), m = 0;
		while (m < ilen && k + m < n && p[k + m] == intro[m])
			m++;
		if (m < ilen) {
			if (k + m == n && !at_end) {
				*used = k;
				break;
			}
			i = k + 1;
			continue;
		}
		/* The name: the whole identifier run, unless it is already too long to match. */
		size_t j = k + ilen;
		while (j < n && is_ident((unsigned char)p[j]) && j - (k + ilen) + 5 <= sc->longest)
			j++;
		size_t name_len = j - (k + ilen);
		if (name_len + 5 > sc->longest) {
			i = j;
			continue;
		}
		if (j == n && !at_end) {
			*used = k;
			break;
		}
		i = j;
		long idx = lookup(sc, p + k + ilen, name_len);
		if (idx < 0)
			continue;
		if (!sc->s[idx].allowed) {
			if (sc->violation)
				*sc->violation = (size_t)idx;
			return -EPERM;
		}
		if (!o)
			continue;
		r = ob_put(o, p + flushed, k - flushed);
		if (r == 0)
			r = put_value(sc, &sc->s[idx], o);
		if (r < 0)
			return r;
		flushed = j;
		sc->hits++;
	}
	return ob_put(o, p + flushed, *used - flushed);
}

static void scan_init(struct scan *sc, const struct subst_secret *s, size_t n, size_t longest,
		      size_t *violation)
{
	memset(sc, 0, sizeof(*sc));
	sc->s = s;
	sc->n = n;
	sc->longest = longest;
	sc->violation = violation;
}

/* ---- whole buffers ------------------------------------------------------------------------- */

int subst_buffer(const char *in, size_t len, const struct subst_secret *s, size_t n, size_t max_out,
		 char **out, size_t *out_len, size_t *violation)
{
	struct obuf o = {.max = max_out};
	struct scan sc;
	size_t longest, used;

	*out = NULL;
	*out_len = 0;
	int r = check_secrets(s, n, &longest);
	if (r < 0)
		return r;
	if (!in)
		in = "";
	scan_init(&sc, s, n, longest, violation);
	r = scan(&sc, in, len, true, &o, &used);
	if (r == 0 && !o.p) {
		o.p = malloc(1);
		o.cap = 1;
		r = o.p ? 0 : -ENOMEM;
	}
	if (r < 0) {
		ob_wipe(&o);
		return r;
	}
	*out = o.p;
	*out_len = o.len;
	return 0;
}

/* ---- Basic credentials --------------------------------------------------------------------- */

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard base64, padded or not; out holds at least n / 4 * 3 + 2 bytes.  Length or -1. */
static long b64_decode(const char *in, size_t n, unsigned char *out)
{
	size_t pad = 0, o = 0;
	uint32_t acc = 0;
	while (pad < 2 && n > pad && in[n - 1 - pad] == '=')
		pad++;
	size_t m = n - pad;
	if (m == 0 || m % 4 == 1 || (pad && n % 4))
		return -1;
	for (size_t i = 0; i < m; i++) {
		int v = b64_val((unsigned char)in[i]);
		if (v < 0)
			return -1;
		acc = acc << 6 | (uint32_t)v;
		if (i % 4 == 3) {
			out[o++] = (unsigned char)(acc >> 16);
			out[o++] = (unsigned char)(acc >> 8);
			out[o++] = (unsigned char)acc;
			acc = 0;
		}
	}
	if (m % 4 == 2) {
		out[o++] = (unsigned char)(acc >> 4);
	} else if (m % 4 == 3) {
		out[o++] = (unsigned char)(acc >> 10);
		out[o++] = (unsigned char)(acc >> 2);
	}
	return (long)o;
}

static int b64_put(struct obuf *o, const unsigned char *d, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)d[i + 1] << 8;
		if (i + 2 < n)
			v |= d[i + 2];
		char q[4] = {tab[v >> 18 & 63], tab[v >> 12 & 63],
			     i + 1 < n ? tab[v >> 6 & 63] : '=', i + 2 < n ? tab[v & 63] : '='};
		int r = ob_put(o, q, 4);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ASCII case-insensitive equality with a lowercase literal. */
static bool ci_eq(const char *a, size_t n, const char *lit)
{
	if (n != strlen(lit))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] - 'A' + 'a') : a[i];
		if (c != lit[i])
			return false;
	}
	return true;
}

static bool is_auth_header(const struct http_header *h)
{
	return ci_eq(h->name, h->name_len, "authorization") ||
	       ci_eq(h->name, h->name_len, "proxy-authorization");
}

/*
 * An (Proxy-)Authorization value "Basic" 1*SP token68 whose token decodes:
 * 1 with the decoded credential in a new *dec (free with subst_free(*dec,
 * *dlen)) and *tok the token's offset in the value; 0 when it is not one.
 */
static int basic_decode(const struct http_header *h, unsigned char **dec, size_t *dlen, size_t *tok)
{
	const char *v = h->value;
	size_t n = h->value_len, t = 5;
	if (!is_auth_header(h) || n < 7 || !ci_eq(v, 5, "basic") || v[5] != ' ')
		return 0;
	while (t < n && v[t] == ' ')
		t++;
	unsigned char *d = malloc((n - t) / 4 * 3 + 3);
	if (!d)
		return -ENOMEM;
	long l = b64_decode(v + t, n - t, d);
	if (l < 0) {
		free(d);
		return 0;
	}
	*dec = d;
	*dlen = (size_t)l;
	*tok = t;
	return 1;
}

/* Substitute inside a Basic credential: 1 done (written to o), 0 not a Basic credential. */
static int subst_basic(struct scan *sc, const struct http_header *h, struct obuf *o)
{
	unsigned char *dec;
	size_t dlen, tok, used;
	int r = basic_decode(h, &dec, &dlen, &tok);
	if (r <= 0)
		return r;
	struct obuf d = {.max = o->max};
	sc->hits = 0;
	r = scan(sc, (const char *)dec, dlen, true, &d, &used);
	if (r == 0 && sc->hits == 0)
		r = ob_put(o, h->value, h->value_len);
	else if (r == 0)
		r = ob_put(o, h->value, tok);
	if (r == 0 && sc->hits)
		r = b64_put(o, (const unsigned char *)d.p, d.len);
	ob_wipe(&d);
	subst_free((char *)dec, dlen);
	return r < 0 ? r : 1;
}

/* ---- heads --------------------------------------------------------------------------------- */

/* Pass one: any placeholder of a secret not allowed, in any form, anywhere in the head. */
static int head_violations(const struct http_request *req, struct scan *sc)
{
	size_t used;
	int r;

	sc->check = true;
	r = scan(sc, req->method, req->head_len, true, NULL, &used);
	sc->pct = true;
	if (r == 0)
		r = scan(sc, req->target, req->target_len, true, NULL, &used);
	sc->pct = false;
	for (size_t i = 0; r == 0 && i < req->nheaders; i++) {
		unsigned char *dec;
		size_t dlen, tok;
		r = basic_decode(&req->headers[i], &dec, &dlen, &tok);
		if (r <= 0)
			continue;
		r = scan(sc, (const char *)dec, dlen, true, NULL, &used);
		subst_free((char *)dec, dlen);
	}
	sc->check = false;
	return r;
}

/* Pass two: the request line, its query substituted when asked. */
static int head_request_line(const struct http_request *req, struct scan *sc, unsigned where,
			     struct obuf *o)
{
	const char *head = req->method, *t = req->target;
	size_t used, plen = req->target_len;
	const char *q = memchr(t, '?', req->target_len);
	int r = ob_put(o, head, (size_t)(t - head));

	if (r == 0 && q && (where & SUBST_QUERY))
		plen = (size_t)(q - t) + 1;
	if (r == 0)
		r = ob_put(o, t, plen);
	if (r == 0 && plen < req->target_len) {
		sc->pct = sc->encode = true;
		r = scan(sc, t + plen, req->target_len - plen, true, o, &used);
		sc->pct = sc->encode = false;
	}
	return r;
}

int subst_head(const struct http_request *req, const struct subst_secret *s, size_t n,
	       unsigned where, uint64_t new_content_length, size_t max_out, char **out,
	       size_t *out_len, size_t *violation)
{
	struct obuf o = {.max = max_out};
	struct scan sc;
	size_t longest, used;
	bool cl_done = false;

	*out = NULL;
	*out_len = 0;
	int r = check_secrets(s, n, &longest);
	if (r < 0)
		return r;
	const char *head = req->method;
	if (!head || !req->target || req->head_len == 0)
		return -EINVAL;
	/* The parser takes 1-19 digits: write nothing it (or an upstream like it) would refuse. */
	if (new_content_length != UINT64_MAX && new_content_length > 9999999999999999999ull)
		return -EINVAL;
	scan_init(&sc, s, n, longest, violation);
	r = head_violations(req, &sc);
	if (r < 0)
		return r;

	r = head_request_line(req, &sc, where, &o);
	size_t cur = (size_t)(req->target - head) + req->target_len;
	for (size_t i = 0; r == 0 && i < req->nheaders; i++) {
		const struct http_header *h = &req->headers[i];
		size_t vs = (size_t)(h->value - head);
		r = ob_put(&o, head + cur, vs - cur);
		if (r < 0)
			break;
		cur = vs + h->value_len;
		if (new_content_length != UINT64_MAX &&
		    ci_eq(h->name, h->name_len, "content-length")) {
			char num[24];
			int l = snprintf(num, sizeof(num), "%" PRIu64, new_content_length);
			r = ob_put(&o, num, (size_t)l);
			cl_done = true;
		} else if (!(where & SUBST_HEADERS) || ci_eq(h->name, h->name_len, "host")) {
			r = ob_put(&o, h->value, h->value_len);
		} else {
			r = subst_basic(&sc, h, &o);
			if (r == 0)
				r = scan(&sc, h->value, h->value_len, true, &o, &used);
			else if (r > 0)
				r = 0;
		}
	}
	if (r == 0)
		r = ob_put(&o, head + cur, req->head_len - cur);
	if (r == 0 && new_content_length != UINT64_MAX && !cl_done)
		r = -EINVAL;
	if (r < 0) {
		ob_wipe(&o);
		return r;
	}
	*out = o.p;
	*out_len = o.len;
	return 0;
}

/* ---- streams ------------------------------------------------------------------------------- */

int subst_stream_init(struct subst_stream *st, const struct subst_secret *s, size_t n)
{
	memset(st, 0, sizeof(*st));
	int r = check_secrets(s, n, &st->longest);
	if (r < 0)
		return r;
	st->s = s;
	st->n = n;
	return 0;
}

/*
 * The held-back tail first, joined with the start of in in a small buffer:
 * a held-back tail is at most `longest` (<= 200) bytes, so once 312 more
 * bytes are there it is decided either way.  *consumed: the bytes of in used.
 */
static int stream_carry(struct subst_stream *st, struct scan *sc, const char *in, size_t len,
			bool final, struct obuf *o, size_t *consumed)
{
	char tmp[2 * SUBST_CARRY_MAX];
	size_t used, take = sizeof(tmp) - st->carry_len;
	if (take > len)
		take = len;
	memcpy(tmp, st->carry, st->carry_len);
	if (take)
		memcpy(tmp + st->carry_len, in, take);
	size_t tl = st->carry_len + take;
	int r = scan(sc, tmp, tl, final && take == len, o, &used);
	if (r == 0 && used >= st->carry_len) {
		*consumed = used - st->carry_len;
		st->carry_len = 0;
	} else if (r == 0) {
		/* Still undecided: only possible when all of in fit (take == len). */
		memmove(st->carry, tmp + used, tl - used);
		st->carry_len = tl - used;
		*consumed = len;
	}
	explicit_bzero(tmp, sizeof(tmp));
	return r;
}

int subst_stream_feed(struct subst_stream *st, const char *in, size_t len, bool final, char **out,
		      size_t *out_len, size_t *out_cap, size_t *violation)
{
	struct obuf o = {.p = *out, .len = *out_len, .cap = *out_cap, .max = SIZE_MAX};
	size_t start = o.len, off = 0, used;
	struct scan sc;
	int r = 0;

	if (st->error) {
		if (st->error == -EPERM && violation)
			*violation = st->violation;
		return st->error;
	}
	if (!in)
		in = "";
	scan_init(&sc, st->s, st->n, st->longest, &st->violation);
	bool held = false;
	if (st->carry_len) {
		r = stream_carry(st, &sc, in, len, final, &o, &off);
		held = st->carry_len > 0;
	}
	if (r == 0 && !held) {
		r = scan(&sc, in + off, len - off, final, &o, &used);
		if (r == 0) {
			st->carry_len = len - off - used;
			memcpy(st->carry, in + off + used, st->carry_len);
		}
	}
	if (r < 0) {
		if (o.p)
			explicit_bzero(o.p + start, o.len - start);
		o.len = start;
		st->error = r;
		if (r == -EPERM && violation)
			*violation = st->violation;
	}
	*out = o.p;
	*out_len = o.len;
	*out_cap = o.cap;
	return r;
}

void subst_stream_free(struct subst_stream *st)
{
	explicit_bzero(st, sizeof(*st));
}

void subst_free(char *buf, size_t len)
{
	if (!buf)
		return;
	explicit_bzero(buf, len);
	free(buf);
}
