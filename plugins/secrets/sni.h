/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ClientHello SNI peek: the proxy reads (MSG_PEEK) the first bytes a
 * guest sends on a redirected port-443 connection and decides from the
 * server_name in its ClientHello whether to intercept it (the name is a
 * secret's allowed host) or to splice it raw.
 *
 * Every byte here comes from the guest and is hostile.  The parser reads
 * only inside [buf, buf + len), checks every length against its container,
 * allocates nothing, and decides nothing before the whole ClientHello is
 * there, so a truncated hello is "need more" and never a wrong answer.
 *
 * It is as strict as OpenSSL's server is about the parts that carry the
 * name (one server_name extension, holding exactly one host_name entry), so
 * the name the proxy decides on is the name OpenSSL's servername callback
 * later sees for the same bytes; the proxy should still bind the two
 * (ca_ssl_bind_name in ca.h).
 */
#ifndef MSB_SECRETS_SNI_H
#define MSB_SECRETS_SNI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNI_NAME_MAX   253 /* a host name's text, without the NUL */
#define SNI_LABEL_MAX  63
#define SNI_RECORD_MAX 16384 /* a plaintext TLS record's payload, 2^14 */
#define SNI_HELLO_MAX  16384 /* the largest ClientHello body peeked, joined across records */
/* The most bytes the caller ever needs to peek to get an answer from sni_peek: the hello
 * and its handshake header in records of at least SNI_RECORD_MAX bytes, each with a 5-byte
 * header.  A guest that splits its hello into smaller records needs more; a caller that
 * stops peeking at this limit treats such a guest as not TLS. */
#define SNI_PEEK_MAX (5 + SNI_HELLO_MAX + 4 + 5)

/*
 * Find the SNI host name in the first bytes a TLS client sent: one or more
 * handshake records carrying a ClientHello (joined across records, up to
 * SNI_HELLO_MAX bytes of ClientHello body).  Returns
 *    1        found: the name, lowercased, one trailing dot stripped and
 *             valid per sni_name_valid, NUL-terminated in name[cap];
 *    0        the bytes so far are a valid beginning: peek again with more;
 *   -ENOENT   a well-formed ClientHello without a server_name extension;
 *   -EINVAL   not a TLS handshake, a malformed ClientHello, or a server_name
 *             that is not a valid host name (bad bytes, empty or overlong
 *             labels, over 253 characters, an IP literal), or a server_name
 *             that is not exactly one host_name entry in one extension;
 *   -E2BIG    a ClientHello longer than SNI_HELLO_MAX;
 *   -ENOSPC   a valid name that does not fit in cap bytes (name untouched).
 * Bytes after the ClientHello are ignored.  Reentrant; allocates nothing,
 * but uses about 16 KiB of stack (the hello joined across records).
 */
int sni_peek(const uint8_t *buf, size_t len, char *name, size_t cap);

/*
 * Whether name[0..len) is a host name in the form the proxy uses: labels of
 * [a-z0-9-] (uppercase is accepted too: callers lowercase), 1..63 bytes
 * each, at most 253 bytes in all, no empty label (so no leading, trailing
 * or double dot), and not an IP literal (a name whose last label is all
 * digits; no top-level domain is).
 */
bool sni_name_valid(const char *name, size_t len);

/*
 * Bring a name as a client sent it to that form: strip one trailing dot,
 * lowercase, validate; write it NUL-terminated to out[cap].  Returns the
 * length, -EINVAL for an invalid name, -ENOSPC when it does not fit (out is
 * then untouched).  sni_peek and the servername callback (ca.c) both use it,
 * so they agree on every name.
 */
int sni_name_normalize(const char *in, size_t len, char *out, size_t cap);

#endif
