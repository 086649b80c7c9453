/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ClientHello SNI peek (sni.h).  RFC 8446 section 4.1.2 and RFC 5246
 * section 7.4.1.2 give the ClientHello, RFC 6066 section 3 the server_name
 * extension.
 *
 * Two stages, each bounded:
 *  1. join the payloads of consecutive handshake records until the whole
 *     ClientHello (its 4-byte handshake header says how long) is there;
 *     anything that is not a handshake record, or a handshake message that
 *     is not a ClientHello, is refused as soon as its first byte is seen;
 *  2. walk the ClientHello with a cursor that cannot step outside its
 *     container: every length is checked against what encloses it, and the
 *     extension block and the server_name list must fill their containers
 *     exactly (as OpenSSL requires), so no byte is read twice as two things.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sni.h"

#define TLS_CT_HANDSHAKE    22
#define TLS_HS_CLIENT_HELLO 1
#define TLS_EXT_SERVER_NAME 0
#define SNI_HOST_NAME	    0
#define REC_HDR		    5
#define HS_HDR		    4

/* A read cursor over [p, p + n). */
struct rd {
	const uint8_t *p;
	size_t n;
};

static bool rd_u8(struct rd *r, size_t *v)
{
	if (r->n < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->n--;
	return true;
}

static bool rd_u16(struct rd *r, size_t *v)
{
	if (r->n < 2)
		return false;
	*v = (size_t)r->p[0] << 8 | r->p[1];
	r->p += 2;
	r->n -= 2;
	return true;
}

/* Take the next k bytes as a sub-cursor. */
static bool rd_sub(struct rd *r, size_t k, struct rd *sub)
{
	if (r->n < k)
		return false;
	sub->p = r->p;
	sub->n = k;
	r->p += k;
	r->n -= k;
	return true;
}

/* A length-prefixed vector (1- or 2-byte length) as a sub-cursor. */
static bool rd_vec(struct rd *r, int lenbytes, struct rd *sub)
{
	size_t k;
	if (!(lenbytes == 1 ? rd_u8(r, &k) : rd_u16(r, &k)))
		return false;
	return rd_sub(r, k, sub);
}

bool sni_name_valid(const char *name, size_t len)
{
	size_t label = 0;
	bool digits = true; /* the current label is all digits so far */
	if (len == 0 || len > SNI_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			digits = true;
			continue;
		}
		bool digit = c >= '0' && c <= '9';
		if (!digit && c != '-' && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z'))
			return false;
		if (++label > SNI_LABEL_MAX)
			return false;
		digits = digits && digit;
	}
	/* A trailing dot leaves an empty last label; an all-digit last label
	 * is an IPv4 literal (or a decimal one), which SNI must not carry. */
	return label > 0 && !digits;
}

int sni_name_normalize(const char *in, size_t len, char *out, size_t cap)
{
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (!sni_name_valid(in, len))
		return -EINVAL;
	if (len >= cap)
		return -ENOSPC;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[len] = '\0';
	return (int)len;
}

/*
 * Stage 1: join the handshake records' payloads into hs[] until it holds the
 * whole ClientHello.  Returns the ClientHello body length (> 0 means hs[]
 * holds HS_HDR + that many bytes), 0 for "need more", or a negative errno.
 * Records with a zero length are refused (RFC 8446 5.1 forbids them for
 * handshake messages), which also bounds the loop by the bytes given.
 */
static long join_hello(const uint8_t *buf, size_t len, uint8_t *hs)
{
	size_t have = 0, need = HS_HDR, body = 0, off = 0;
	while (have < need) {
		if (off == len)
			return 0;
		size_t avail = len - off;
		if (buf[off] != TLS_CT_HANDSHAKE)
			return -EINVAL;
		if (avail >= 2 && buf[off + 1] != 3) /* record version 3.x */
			return -EINVAL;
		if (avail < REC_HDR)
			return 0;
		size_t rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
		if (rlen == 0 || rlen > SNI_RECORD_MAX)
			return -EINVAL;
		off += REC_HDR;
		avail -= REC_HDR;
		/* The bytes of this record that are here and that the hello needs. */
		size_t take = rlen < avail ? rlen : avail;
		while (take > 0 && have < need) {
			size_t k = need - have < take ? need - have : take;
			memcpy(hs + have, buf + off, k);
			have += k;
			off += k;
			take -= k;
			rlen -= k;
			if (have >= 1 && hs[0] != TLS_HS_CLIENT_HELLO)
				return -EINVAL;
			if (need == HS_HDR && have == HS_HDR) {
				body = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
				if (body > SNI_HELLO_MAX)
					return -E2BIG;
				if (body == 0)
					return -EINVAL;
				need = HS_HDR + body;
			}
		}
		if (have >= need)
			break;
		if (rlen > 0) /* the record goes on past what has arrived */
			return 0;
	}
	return (long)body;
}

int sni_peek(const uint8_t *buf, size_t len, char *name, size_t cap)
{
	/* About 16 KiB of stack: the hello joined across records. */
	uint8_t hs[HS_HDR + SNI_HELLO_MAX];
	long body = join_hello(buf, len, hs);
	if (body <= 0)
		return (int)body;

	struct rd r = {hs + HS_HDR, (size_t)body}, skip, exts, ext;
	size_t v;
	/* legacy_version 3.x, random, legacy_session_id <0..32>,
	 * cipher_suites <2..2^16-2> (pairs), legacy_compression_methods <1..2^8-1>. */
	if (!rd_u16(&r, &v) || v >> 8 != 3 || !rd_sub(&r, 32, &skip))
		return -EINVAL;
	if (!rd_vec(&r, 1, &skip) || skip.n > 32)
		return -EINVAL;
	if (!rd_vec(&r, 2, &skip) || skip.n < 2 || skip.n % 2 != 0)
		return -EINVAL;
	if (!rd_vec(&r, 1, &skip) || skip.n < 1)
		return -EINVAL;
	if (r.n == 0) /* a hello without extensions (TLS 1.2 allows it) */
		return -ENOENT;
	if (!rd_vec(&r, 2, &exts) || r.n != 0)
		return -EINVAL;

	const char *host = NULL;
	size_t host_len = 0;
	while (exts.n > 0) {
		size_t type;
		if (!rd_u16(&exts, &type) || !rd_vec(&exts, 2, &ext))
			return -EINVAL;
		if (type != TLS_EXT_SERVER_NAME)
			continue;
		/* Exactly one server_name extension holding exactly one
		 * host_name entry: a second one, or a list OpenSSL would read
		 * differently, must not let the name decided on here differ
		 * from the one the TLS server sees. */
		struct rd list, hn;
		size_t ntype;
		if (host || !rd_vec(&ext, 2, &list) || ext.n != 0)
			return -EINVAL;
		if (!rd_u8(&list, &ntype) || ntype != SNI_HOST_NAME || !rd_vec(&list, 2, &hn) ||
		    list.n != 0 || hn.n == 0)
			return -EINVAL;
		host = (const char *)hn.p;
		host_len = hn.n;
	}
	if (!host)
		return -ENOENT;
	int n = sni_name_normalize(host, host_len, name, cap);
	return n < 0 ? n : 1;
}
