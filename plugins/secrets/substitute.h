/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Placeholder substitution: the one place where a real credential enters a
 * guest's request.  The guest only knows placeholders ("$MSB_OPENAI_API_KEY");
 * the proxy decides per request which secrets may be used (every gate holds:
 * host, SNI, ...) and hands them here with `allowed` set.
 *
 * A placeholder is "$MSB_" followed by [A-Za-z_][A-Za-z0-9_]*, at most
 * SUBST_PLACEHOLDER_MAX bytes.  It matches only as a whole name: the byte
 * after it must not be [A-Za-z0-9_], so "$MSB_KEY" never matches inside
 * "$MSB_KEY2" (and so, of two placeholders where one is a prefix of the
 * other, the longest wins).  A placeholder of a secret that is not allowed
 * makes the whole request fail with -EPERM and the secret's index: its value
 * is never written anywhere, and the proxy refuses the request instead of
 * sending the placeholder text on.
 *
 * Secret values may be any bytes but CR, LF and NUL (checked: -EINVAL), so
 * a substituted header value cannot end a header line early.  Every buffer
 * that held a value is wiped (explicit_bzero) before it is freed, and
 * buffers are grown by allocate-copy-wipe-free, never realloc, which could
 * leave a copy behind.
 *
 * Errors: -EINVAL for a malformed placeholder or value, -EPERM (with
 * *violation) for a placeholder of a secret that is not allowed, -E2BIG when
 * the output would exceed its bound, -ENOMEM.
 */
#ifndef MSB_SECRETS_SUBSTITUTE_H
#define MSB_SECRETS_SUBSTITUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

#define SUBST_PLACEHOLDER_MAX 200
#define SUBST_CARRY_MAX	      256

struct subst_secret {
	const char *placeholder; /* e.g. "$MSB_OPENAI_API_KEY" */
	size_t placeholder_len;
	const char *value; /* the real secret */
	size_t value_len;
	bool allowed; /* every gate holds for this secret on this request */
};

#define SUBST_HEADERS 0x1u /* header values (always on in practice) */
#define SUBST_QUERY   0x2u /* the request-target's query string */
#define SUBST_BODY    0x4u /* identity and chunked bodies (for the proxy; subst_head ignores it) */

/*
 * Copy in[0..len) to a newly malloc'd *out (never NULL on success, even when
 * empty), replacing every allowed secret's placeholder by its value; the end
 * of in ends a placeholder.  Returns 0 with *out_len, -EPERM with *violation
 * (nothing allocated), -E2BIG when the result would exceed max_out, -EINVAL
 * or -ENOMEM.  Free *out with subst_free(*out, *out_len).
 */
int subst_buffer(const char *in, size_t len, const struct subst_secret *s, size_t n, size_t max_out,
		 char **out, size_t *out_len, size_t *violation);

/*
 * Rewrite a head parsed by http_parse_request (req->method must be the start
 * of the head, as the parser leaves it).  Every byte is kept as sent (request
 * line, header names, order, spacing) except:
 *  - with SUBST_HEADERS, placeholders in header values but Host's (the proxy
 *    checked Host against the SNI: the upstream routes by exactly that); in
 *    "Authorization:
 *    Basic <b64>" and "Proxy-Authorization: Basic <b64>" the credential is
 *    decoded, substituted in user:password and re-encoded (kept byte for byte
 *    when it holds no placeholder); a credential that is not base64 is
 *    substituted like any other value;
 *  - with SUBST_QUERY, placeholders in the request-target's query (after the
 *    first '?'), written either "$MSB_NAME" or "%24MSB_NAME", whose values
 *    are percent-encoded (all but A-Z a-z 0-9 - . _ ~), so a value cannot
 *    break the request line and reads back as itself; placeholders in the
 *    path are never substituted;
 *  - with new_content_length != UINT64_MAX, the Content-Length value, written
 *    in decimal (-EINVAL when the request has no Content-Length, or for a
 *    length over 19 digits, which http_parse_request would refuse).
 * A placeholder of a secret that is not allowed anywhere in the head (the
 * request line and header names included, "%24" forms in the target, inside
 * Basic credentials, whatever `where` says) is -EPERM + *violation.  The
 * output is at most max_out bytes (-E2BIG).  Free *out with subst_free.
 */
int subst_head(const struct http_request *req, const struct subst_secret *s, size_t n,
	       unsigned where, uint64_t new_content_length, size_t max_out, char **out,
	       size_t *out_len, size_t *violation);

/*
 * Streaming substitution for bodies whose length may change (chunked): feed
 * pieces, split anywhere, and the output is what subst_buffer gives for the
 * whole.  It holds back at most the longest placeholder's length (the bytes
 * that could still become a placeholder: a whole placeholder waits for the
 * byte after it).  The fields are private; the secrets must outlive it.
 */
struct subst_stream {
	const struct subst_secret *s;
	size_t n;
	size_t longest;
	char carry[SUBST_CARRY_MAX];
	size_t carry_len;
	int error; /* sticky: once a feed failed, every later one fails the same */
	size_t violation;
};

/* 0, or -EINVAL for a malformed secret (placeholder over SUBST_PLACEHOLDER_MAX included). */
int subst_stream_init(struct subst_stream *st, const struct subst_secret *s, size_t n);

/*
 * Append the substituted output for in[0..len) to a growable buffer (*out,
 * *out_len, *out_cap: start with NULL, 0, 0 or a malloc'd buffer; it is
 * replaced like realloc would, the old one wiped).  With final set, also
 * flush what was held back (the end of the body ends a placeholder).
 * Returns 0, or -EPERM with *violation, or -ENOMEM; on failure *out_len is
 * what it was before the call (what this call appended is wiped) and the
 * stream fails from then on.  Free the buffer with subst_free(*out, *out_cap).
 */
int subst_stream_feed(struct subst_stream *st, const char *in, size_t len, bool final, char **out,
		      size_t *out_len, size_t *out_cap, size_t *violation);

void subst_stream_free(struct subst_stream *st);

/* Wipe (explicit_bzero) and free a buffer that may hold a secret; NULL is fine. */
void subst_free(char *buf, size_t len);

#endif
