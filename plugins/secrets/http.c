/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets proxy's HTTP/1.1 request parser, chunked decoder and encoder,
 * and host matching (http.h says what is refused and why).
 *
 * Bounds: the head parser only looks at [buf, buf + min(len, HTTP_HEAD_MAX)),
 * finds each line's CRLF before reading the line, and fills at most
 * HTTP_HEADERS_MAX headers.  The chunked decoder is a byte-at-a-time state
 * machine outside chunk data (so any split of the input gives the same
 * result), with every line and the trailer section bounded, and it never
 * writes more than out_cap bytes.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "http.h"

/* ---- character classes (ASCII only, never the locale's) ------------------------------------ */

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 9110 5.6.2 tchar. */
static bool is_tchar(unsigned char c)
{
	return is_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* Control bytes other than HT (RFC 5234 CTL is 0x00-0x1f and 0x7f). */
static bool is_ctl(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool ci_eqn(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
}

static bool ci_eq(const char *a, size_t alen, const char *lit)
{
	return alen == strlen(lit) && ci_eqn(a, lit, alen);
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int fail(const char **why, int err, const char *reason)
{
	*why = reason;
	return err;
}

/* ---- the request head ---------------------------------------------------------------------- */

/*
 * The line starting at pos: 1 with *eol at its CR, 0 when its CRLF is not
 * inside [0, lim), -EINVAL for a bare LF or a CR not followed by LF.
 */
static int find_eol(const char *buf, size_t lim, size_t pos, size_t *eol, const char **why)
{
	for (size_t i = pos; i < lim; i++) {
		if (buf[i] == '\n')
			return fail(why, -EINVAL, "bare LF (lines must end in CRLF)");
		if (buf[i] == '\r') {
			if (i + 1 == lim)
				return 0;
			if (buf[i + 1] != '\n')
				return fail(why, -EINVAL, "bare CR (lines must end in CRLF)");
			*eol = i;
			return 1;
		}
	}
	return 0;
}

static int need_more(size_t len, const char **why)
{
	if (len >= HTTP_HEAD_MAX)
		return fail(why, -E2BIG, "request head larger than 64 KiB");
	*why = NULL;
	return 0;
}

static int parse_request_line(const char *l, size_t n, struct http_request *req, const char **why)
{
	size_t i = 0;
	if (n == 0)
		return fail(why, -EINVAL, "empty line before the request line");
	while (i < n && is_tchar((unsigned char)l[i]))
		i++;
	if (i == 0 || i == n || l[i] != ' ')
		return fail(why, -EINVAL, "method is not a token followed by one space");
	req->method = l;
	req->method_len = i;

	size_t t = ++i;
	while (i < n && (unsigned char)l[i] > 0x20 && (unsigned char)l[i] < 0x7f)
		i++;
	if (i == t)
		return fail(why, -EINVAL, "empty request-target");
	if (i == n)
		return fail(why, -EINVAL, "no HTTP version (HTTP/0.9 is not supported)");
	if (l[i] != ' ')
		return fail(why, -EINVAL, "control byte or non-ASCII byte in the request-target");
	req->target = l + t;
	req->target_len = i - t;

	const char *v = l + i + 1;
	size_t vlen = n - i - 1;
	if (vlen == 8 && !memcmp(v, "HTTP/1.1", 8))
		req->minor = 1;
	else if (vlen == 8 && !memcmp(v, "HTTP/1.0", 8))
		req->minor = 0;
	else if (req->method_len == 3 && !memcmp(l, "PRI", 3) && vlen == 8 &&
		 !memcmp(v, "HTTP/2.0", 8))
		return fail(why, -EINVAL,
			    "HTTP/2 connection preface (only HTTP/1.x is intercepted)");
	else
		return fail(why, -EINVAL, "HTTP version is not exactly HTTP/1.0 or HTTP/1.1");

	bool connect = req->method_len == 7 && !memcmp(l, "CONNECT", 7);
	bool options = req->method_len == 7 && !memcmp(l, "OPTIONS", 7);
	if (req->target[0] == '/' || connect)
		return 0;
	if (options && req->target_len == 1 && req->target[0] == '*')
		return 0;
	/* An origin routes by an absolute-form target, not by Host (RFC 9112 3.2.2). */
	return fail(why, -EINVAL, "request-target not in origin-form");
}

static int parse_header_line(const char *l, size_t n, struct http_header *h, const char **why)
{
	size_t i = 0;
	if (is_ows((unsigned char)l[0]))
		return fail(why, -EINVAL, "obs-fold (a header line starting with whitespace)");
	while (i < n && is_tchar((unsigned char)l[i]))
		i++;
	if (i == n)
		return fail(why, -EINVAL, "header line without a colon");
	if (l[i] != ':') {
		if (is_ows((unsigned char)l[i]))
			return fail(why, -EINVAL, "whitespace between a header name and its colon");
		return fail(why, -EINVAL, "header name is not a token");
	}
	if (i == 0)
		return fail(why, -EINVAL, "empty header name");
	h->name = l;
	h->name_len = i;

	i++;
	while (i < n && is_ows((unsigned char)l[i]))
		i++;
	size_t start = i, end = i;
	for (; i < n; i++) {
		unsigned char c = (unsigned char)l[i];
		if (is_ows(c))
			continue;
		if (is_ctl(c))
			return fail(why, -EINVAL, "control byte in a header value");
		end = i + 1;
	}
	h->value = l + start;
	h->value_len = end - start;
	return 0;
}

/*
 * Does a comma-separated list value (RFC 9110 5.6.1) have a member equal to
 * `lit` (case-insensitive, OWS around members ignored)?
 */
static bool list_has(const char *v, size_t n, const char *lit)
{
	size_t i = 0;
	while (i < n) {
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (s < e && is_ows((unsigned char)v[s]))
			s++;
		while (e > s && is_ows((unsigned char)v[e - 1]))
			e--;
		if (ci_eq(v + s, e - s, lit))
			return true;
		i++;
	}
	return false;
}

struct seen {
	size_t host, cl, te;
	bool close, keep;
};

/* What one header means for framing and connection handling. */
static int note_header(struct http_request *req, const struct http_header *h, struct seen *s,
		       const char **why)
{
	if (ci_eq(h->name, h->name_len, "host")) {
		if (++s->host > 1)
			return fail(why, -EINVAL, "two Host headers");
		req->host = h->value;
		req->host_len = h->value_len;
	} else if (ci_eq(h->name, h->name_len, "content-length")) {
		if (++s->cl > 1)
			return fail(why, -EINVAL, "two Content-Length headers");
		if (h->value_len == 0 || h->value_len > 19)
			return fail(why, -EINVAL, "Content-Length is not 1-19 digits");
		uint64_t v = 0;
		for (size_t i = 0; i < h->value_len; i++) {
			char c = h->value[i];
			if (c < '0' || c > '9')
				return fail(why, -EINVAL, "Content-Length is not 1-19 digits");
			v = v * 10 + (uint64_t)(c - '0'); /* 19 digits cannot overflow */
		}
		req->content_length = v;
	} else if (ci_eq(h->name, h->name_len, "transfer-encoding")) {
		if (++s->te > 1)
			return fail(why, -EINVAL, "two Transfer-Encoding headers");
		if (!ci_eq(h->value, h->value_len, "chunked"))
			return fail(why, -EINVAL, "Transfer-Encoding other than exactly chunked");
	} else if (ci_eq(h->name, h->name_len, "connection")) {
		s->close |= list_has(h->value, h->value_len, "close");
		s->keep |= list_has(h->value, h->value_len, "keep-alive");
	} else if (ci_eq(h->name, h->name_len, "expect")) {
		req->expect_continue |= list_has(h->value, h->value_len, "100-continue");
	} else if (ci_eq(h->name, h->name_len, "upgrade")) {
		req->upgrade = true;
	}
	return 0;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req, const char **why)
{
	size_t lim = len < HTTP_HEAD_MAX ? len : HTTP_HEAD_MAX;
	size_t eol, pos;
	struct seen s = {0};
	int r;

	memset(req, 0, sizeof(*req));
	*why = NULL;
	r = find_eol(buf, lim, 0, &eol, why);
	if (r <= 0)
		return r < 0 ? r : need_more(len, why);
	r = parse_request_line(buf, eol, req, why);
	if (r < 0)
		return r;
	pos = eol + 2;

	for (;;) {
		r = find_eol(buf, lim, pos, &eol, why);
		if (r <= 0)
			return r < 0 ? r : need_more(len, why);
		if (eol == pos)
			break;
		if (req->nheaders == HTTP_HEADERS_MAX)
			return fail(why, -E2BIG, "more than 128 header fields");
		struct http_header *h = &req->headers[req->nheaders];
		r = parse_header_line(buf + pos, eol - pos, h, why);
		if (r < 0)
			return r;
		r = note_header(req, h, &s, why);
		if (r < 0)
			return r;
		req->nheaders++;
		pos = eol + 2;
	}
	req->head_len = eol + 2;

	if (req->minor == 1 && s.host == 0)
		return fail(why, -EINVAL, "HTTP/1.1 request without a Host header");
	if (s.cl && s.te)
		return fail(why, -EINVAL, "both Content-Length and Transfer-Encoding");
	/* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing. */
	if (s.te && req->minor == 0)
		return fail(why, -EINVAL, "Transfer-Encoding in an HTTP/1.0 request");
	req->body = s.te ? HTTP_BODY_CHUNKED : s.cl ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
	req->keep_alive = req->minor == 1 ? !s.close : (s.keep && !s.close);
	/* RFC 9110 10.1.1: a 100-continue expectation in HTTP/1.0 is ignored. */
	if (req->minor == 0)
		req->expect_continue = false;
	if (req->method_len == 7 && !memcmp(req->method, "CONNECT", 7))
		req->upgrade = true;
	return 1;
}

const struct http_header *http_header_find(const struct http_request *req, const char *name)
{
	for (size_t i = 0; i < req->nheaders; i++)
		if (ci_eq(req->headers[i].name, req->headers[i].name_len, name))
			return &req->headers[i];
	return NULL;
}

/* ---- chunked bodies ------------------------------------------------------------------------ */

enum {
	CH_SIZE,	  /* hex digits of the chunk size */
	CH_SIZE_WS,	  /* BWS after the size: only a ';' may follow */
	CH_EXT,		  /* chunk extensions up to the CR */
	CH_SIZE_LF,	  /* the LF ending the size line */
	CH_DATA,	  /* c->remaining bytes of data */
	CH_DATA_CR,	  /* the CRLF after the data */
	CH_DATA_LF,	  /* the LF of that CRLF */
	CH_TRAILER_START, /* the start of a trailer line, or the final CRLF */
	CH_TRAILER_LINE,  /* inside a trailer field line */
	CH_TRAILER_LF,	  /* the LF ending a trailer field line */
	CH_END_LF,	  /* the LF of the final CRLF */
	CH_DONE,
	CH_ERROR,
};

#define CHUNK_DIGITS_MAX 15 /* 60 bits: the size cannot overflow */

void http_chunked_init(struct http_chunked *c)
{
	memset(c, 0, sizeof(*c));
	c->phase = CH_SIZE;
}

static void ch_fail(struct http_chunked *c, const char *reason)
{
	c->phase = CH_ERROR;
	c->error = reason;
}

/* One byte of a size line (digits, BWS, extensions). */
static void ch_size_line(struct http_chunked *c, unsigned char ch)
{
	if (++c->line_len > HTTP_CHUNK_LINE_MAX && ch != '\r') {
		ch_fail(c, "chunk-size line over 4096 bytes");
		return;
	}
	switch (c->phase) {
	case CH_SIZE: {
		int v = hexval(ch);
		if (v >= 0) {
			if (c->digits == CHUNK_DIGITS_MAX) {
				ch_fail(c, "chunk size over 15 hex digits");
				return;
			}
			c->remaining = c->remaining << 4 | (uint64_t)v;
			c->digits++;
		} else if (c->digits == 0) {
			ch_fail(c, "chunk size is not hex");
		} else if (ch == ';') {
			c->phase = CH_EXT;
		} else if (is_ows(ch)) {
			c->phase = CH_SIZE_WS;
		} else if (ch == '\r') {
			c->phase = CH_SIZE_LF;
		} else {
			ch_fail(c, "bad byte after the chunk size");
		}
		break;
	}
	case CH_SIZE_WS:
		if (ch == ';')
			c->phase = CH_EXT;
		else if (!is_ows(ch))
			ch_fail(c, "whitespace after a chunk size not followed by an extension");
		break;
	case CH_EXT:
		if (ch == '\r')
			c->phase = CH_SIZE_LF;
		else if (is_ctl(ch))
			ch_fail(c, "control byte in a chunk extension");
		break;
	default:
		break;
	}
}

/* One byte of the trailer section, which is checked and dropped. */
static void ch_trailer(struct http_chunked *c, unsigned char ch)
{
	if (++c->trailer_len > HTTP_TRAILER_MAX) {
		ch_fail(c, "trailer section over 8 KiB");
		return;
	}
	switch (c->phase) {
	case CH_TRAILER_START:
		if (ch == '\r')
			c->phase = CH_END_LF;
		else if (is_ows(ch))
			ch_fail(c, "obs-fold in the trailer section");
		else if (is_tchar(ch))
			c->phase = CH_TRAILER_LINE;
		else
			ch_fail(c, "trailer field name is not a token");
		break;
	case CH_TRAILER_LINE:
		if (ch == '\r')
			c->phase = CH_TRAILER_LF;
		else if (is_ctl(ch))
			ch_fail(c, "control byte or bare LF in the trailer section");
		break;
	case CH_TRAILER_LF:
		if (ch == '\n')
			c->phase = CH_TRAILER_START;
		else
			ch_fail(c, "bare CR in the trailer section");
		break;
	case CH_END_LF:
		if (ch == '\n')
			c->phase = CH_DONE;
		else
			ch_fail(c, "bare CR ending the trailer section");
		break;
	default:
		break;
	}
}

int http_chunked_decode(struct http_chunked *c, const char *in, size_t in_len, size_t *consumed,
			char *out, size_t out_cap, size_t *produced, const char **why)
{
	size_t i = 0, o = 0;

	*why = NULL;
	while (c->phase != CH_DONE && c->phase != CH_ERROR) {
		if (c->phase == CH_DATA) {
			size_t n = in_len - i;
			if (n > out_cap - o)
				n = out_cap - o;
			if (n > c->remaining)
				n = (size_t)c->remaining;
			if (n == 0)
				break;
			memcpy(out + o, in + i, n);
			i += n;
			o += n;
			c->remaining -= n;
			if (c->remaining == 0)
				c->phase = CH_DATA_CR;
			continue;
		}
		if (i == in_len)
			break;
		unsigned char ch = (unsigned char)in[i++];
		switch (c->phase) {
		case CH_SIZE:
		case CH_SIZE_WS:
		case CH_EXT:
			ch_size_line(c, ch);
			break;
		case CH_SIZE_LF:
			if (ch != '\n')
				ch_fail(c, "bare CR in a chunk-size line");
			else if (c->remaining == 0)
				c->phase = CH_TRAILER_START;
			else
				c->phase = CH_DATA;
			break;
		case CH_DATA_CR:
			if (ch == '\r')
				c->phase = CH_DATA_LF;
			else
				ch_fail(c, "chunk data not followed by CRLF");
			break;
		case CH_DATA_LF:
			if (ch == '\n') {
				c->phase = CH_SIZE;
				c->remaining = 0;
				c->digits = 0;
				c->line_len = 0;
			} else {
				ch_fail(c, "chunk data not followed by CRLF");
			}
			break;
		default:
			ch_trailer(c, ch);
			break;
		}
	}
	*consumed = i;
	*produced = o;
	if (c->phase == CH_DONE)
		return 1;
	if (c->phase == CH_ERROR)
		return fail(why, -EINVAL, c->error);
	return 0;
}

ssize_t http_chunk_encode(const char *data, size_t len, char *out, size_t cap)
{
	char line[24];
	int h = snprintf(line, sizeof(line), "%zx\r\n", len);
	if (h < 0 || len > cap || (size_t)h + 2 > cap - len || (size_t)h + len + 2 > SSIZE_MAX)
		return -ENOSPC;
	memcpy(out, line, (size_t)h);
	if (len)
		memcpy(out + h, data, len);
	memcpy(out + (size_t)h + len, "\r\n", 2);
	return (ssize_t)((size_t)h + len + 2);
}

/* ---- host names ---------------------------------------------------------------------------- */

static size_t strip_dot(const char *s, size_t n)
{
	return n > 0 && s[n - 1] == '.' ? n - 1 : n;
}

/* Non-empty, and no empty label: no leading or trailing dot, no "..". */
static bool labels_ok(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 1; i < n; i++)
		if (s[i] == '.' && s[i - 1] == '.')
			return false;
	return true;
}

/* The labels a wildcard stands for: letters, digits, '-' and '_' only. */
static bool ldh_labels(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_alnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.')
			return false;
	return labels_ok(s, n);
}

bool http_host_matches(const char *pattern, const char *name)
{
	if (!pattern || !name)
		return false;
	size_t pl = strip_dot(pattern, strlen(pattern));
	size_t nl = strip_dot(name, strlen(name));
	if (!labels_ok(name, nl) || pl == 0)
		return false;
	if (pl >= 2 && pattern[0] == '*' && pattern[1] == '.') {
		const char *suffix = pattern + 1; /* ".suffix" */
		size_t sl = pl - 1;
		if (!labels_ok(suffix + 1, sl - 1) || nl <= sl)
			return false;
		return ci_eqn(name + nl - sl, suffix, sl) && ldh_labels(name, nl - sl);
	}
	return pl == nl && ci_eqn(pattern, name, nl);
}

/* What may stand between the brackets of an IPv6 literal: hex digits, ':' and '.', a ':'. */
static bool ipv6_text(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (hexval((unsigned char)s[i]) < 0 && s[i] != ':' && s[i] != '.')
			return false;
	return memchr(s, ':', n) != NULL;
}

bool http_host_equals_sni(const char *host, size_t host_len, const char *sni, unsigned port)
{
	if (!host || !sni || host_len == 0 || !*sni || memchr(host, '@', host_len))
		return false;
	size_t sl = strlen(sni);
	size_t nl; /* the name part of host, before any ":port" */

	if (host[0] == '[') {
		const char *close = memchr(host, ']', host_len);
		if (!close || !ipv6_text(host + 1, (size_t)(close - host) - 1))
			return false;
		nl = (size_t)(close - host) + 1;
		/* The SNI may carry the literal with or without its brackets. */
		if (!(nl == sl && ci_eqn(host, sni, sl)) &&
		    !(nl - 2 == sl && ci_eqn(host + 1, sni, sl)))
			return false;
	} else {
		const char *colon = memchr(host, ':', host_len);
		nl = colon ? (size_t)(colon - host) : host_len;
		size_t a = strip_dot(host, nl), b = strip_dot(sni, sl);
		if (a == 0 || a != b || !ci_eqn(host, sni, a))
			return false;
	}

	const char *p = host + nl;
	size_t pl = host_len - nl;
	if (pl == 0)
		return true;
	if (p[0] != ':' || pl < 2 || pl > 6)
		return false;
	unsigned v = 0;
	for (size_t i = 1; i < pl; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	return v == port;
}
