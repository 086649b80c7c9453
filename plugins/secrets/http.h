/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.1 requests from the guest, as the secrets proxy sees them: a strict
 * parser of request heads, an incremental chunked-body decoder, the chunk
 * encoder the proxy re-frames bodies with, and host-name matching.
 *
 * Everything here is hostile input.  The proxy replaces placeholders by real
 * credentials only on requests whose gates hold, and the gates are decided on
 * what this parser says; if the upstream read the same bytes differently
 * (request smuggling, RFC 9112 11.2) a guest could get a secret attached to a
 * request the proxy never judged.  So the parser refuses every form on which
 * implementations disagree instead of guessing:
 *  - CRLF only (a bare CR or a bare LF anywhere in the head is refused),
 *    no empty lines before the request line, no obs-fold;
 *  - method a token, one SP, a request-target of visible ASCII, one SP, and
 *    exactly "HTTP/1.0" or "HTTP/1.1" (an HTTP/2 preface is refused);
 *  - the request-target in origin-form ("/..."), or "*" for OPTIONS, or
 *    authority-form for CONNECT; absolute-form ("http://other/...") is
 *    refused because an origin routes by it and ignores Host (RFC 9112
 *    3.2.2), which would let the guest pick a virtual host behind the
 *    checked SNI and Host;
 *  - header names tokens with the colon right after them, values without
 *    control bytes other than HT;
 *  - at most one Host (exactly one in HTTP/1.1), at most one Content-Length
 *    of 1-19 digits, at most one Transfer-Encoding and then exactly
 *    "chunked", never both, and no Transfer-Encoding in HTTP/1.0.
 *
 * Nothing allocates; parsed fields point into the caller's buffer.
 */
#ifndef MSB_SECRETS_HTTP_H
#define MSB_SECRETS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_HEAD_MAX	 (64 * 1024) /* request line + headers + CRLFCRLF */
#define HTTP_HEADERS_MAX 128

#define HTTP_CHUNK_LINE_MAX 4096 /* a chunk-size line, extensions included, CRLF not */
#define HTTP_TRAILER_MAX    8192 /* the whole trailer section, its final CRLF included */

struct http_header {
	const char *name;
	size_t name_len;
	const char *value; /* leading and trailing OWS trimmed */
	size_t value_len;
};

enum http_body { HTTP_BODY_NONE, HTTP_BODY_LENGTH, HTTP_BODY_CHUNKED };

struct http_request {
	const char *method; /* also the start of the head */
	size_t method_len;
	const char *target; /* request-target as sent */
	size_t target_len;
	int minor; /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
	struct http_header headers[HTTP_HEADERS_MAX];
	size_t nheaders;
	enum http_body body;
	uint64_t content_length; /* with HTTP_BODY_LENGTH */
	const char *host;	 /* the single Host header's value (NULL if none) */
	size_t host_len;
	bool keep_alive;      /* 1.1: unless Connection: close; 1.0: only with keep-alive */
	bool expect_continue; /* Expect: 100-continue (HTTP/1.1 only) */
	bool upgrade;	      /* an Upgrade header or CONNECT method: the proxy refuses these */
	size_t head_len;      /* bytes of the head including the final CRLFCRLF */
};

/*
 * Parse a request head at the start of buf.  Returns 1 when complete (req
 * filled, pointers into buf; bytes from head_len on are the body or the next
 * request), 0 when more bytes are needed (only while len < HTTP_HEAD_MAX), or
 * -EINVAL for a malformed request and -E2BIG for a head over HTTP_HEAD_MAX or
 * with more than HTTP_HEADERS_MAX headers, with *why a static one-line reason.
 * Checks run left to right as lines complete, so a malformed line is refused
 * as soon as it is whole, without waiting for the rest of the head.  The
 * head is re-parsed from the start on every call: call it again only when
 * new bytes arrived.
 */
int http_parse_request(const char *buf, size_t len, struct http_request *req, const char **why);

/* The first header named `name` (case-insensitive), or NULL. */
const struct http_header *http_header_find(const struct http_request *req, const char *name);

/*
 * Incremental chunked-body decoder (RFC 9112 7.1).  Chunk sizes are 1-15 hex
 * digits (so no overflow), a chunk-size line with its extensions is at most
 * HTTP_CHUNK_LINE_MAX bytes, extensions are checked for control bytes and
 * skipped, the data must be followed by exactly CRLF.  The trailer section
 * (at most HTTP_TRAILER_MAX bytes) is checked the same way and dropped: it
 * is never written to out, so the proxy forwards a body without trailers.
 * The fields are private.
 */
struct http_chunked {
	int phase;
	uint64_t remaining; /* data bytes left in this chunk, or the size being read */
	size_t digits;	    /* hex digits read of the size */
	size_t line_len;    /* bytes of the current size or trailer line */
	size_t trailer_len; /* bytes of the trailer section so far */
	const char *error;  /* once malformed, the reason, returned again */
};

void http_chunked_init(struct http_chunked *c);

/*
 * Consume from in[0..in_len), write decoded data to out[0..out_cap);
 * *consumed and *produced are always set.  Returns 1 when the last chunk and
 * the trailer section are fully consumed (it stops right there: bytes after
 * belong to the next request; later calls return 1 and consume nothing), 0
 * when more input is needed or out is full (call again with more room), or
 * -EINVAL when malformed, with *why (and every later call fails the same).
 */
int http_chunked_decode(struct http_chunked *c, const char *in, size_t in_len, size_t *consumed,
			char *out, size_t out_cap, size_t *produced, const char **why);

/*
 * Append one chunk ("%zx\r\n" data "\r\n") to out or, with len 0, the last
 * chunk "0\r\n\r\n" (no trailers).  Returns the bytes written or -ENOSPC.
 */
ssize_t http_chunk_encode(const char *data, size_t len, char *out, size_t cap);

/*
 * Does host name `name` match allow-list pattern `pattern`?  Exact
 * (case-insensitive, one trailing dot on either ignored) or "*.suffix", which
 * matches a name with at least one more label (of letters, digits, '-' and
 * '_', none empty) before ".suffix", never the bare suffix.  Empty names
 * and names with an empty label never match.
 */
bool http_host_matches(const char *pattern, const char *name);

/*
 * Does an HTTP Host / :authority value equal the TLS SNI name?  A ":port"
 * suffix is accepted only when it is `port` (the connection's port), no port
 * is accepted too; case-insensitive; one trailing dot on either ignored.
 * Refused: empty values, userinfo ("@"), more than one colon outside
 * brackets, empty or non-numeric ports, and IPv6 literals ("[...]": hex
 * digits, ':' and '.' with at least one ':') unless sni is that same literal
 * (with or without the brackets).
 */
bool http_host_equals_sni(const char *host, size_t host_len, const char *sni, unsigned port);

#endif
