/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets module's TLS material: a per-sandbox CA (which the guest
 * trusts) that mints a leaf certificate for each intercepted host name, the
 * guest-facing server SSL_CTX that picks that leaf from the SNI, and the
 * upstream client SSL_CTX that verifies the real server against the host's
 * trust store.
 *
 * Ownership: a struct ca owns its keys, certificate and leaf cache; an
 * SSL_CTX from ca_server_ctx keeps a pointer to the struct ca, so free every
 * such SSL_CTX (and every SSL made from it) before ca_free.
 *
 * Threads: after ca_open returns, ca_leaf, ca_leaf_key, ca_cert_path and
 * handshakes on SSLs from ca_server_ctx may run on any number of threads
 * at once (the leaf cache has a lock; the keys are never modified).
 *
 * Errors: negative errno, with a one-line reason in why[why_len] where the
 * function takes one (why may be NULL).
 */
#ifndef MSB_SECRETS_CA_H
#define MSB_SECRETS_CA_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define CA_LEAF_CACHE 256	 /* leaves kept, least recently used evicted */
#define CA_LEAF_DAYS  30	 /* leaf validity (browsers cap it at 398) */
#define CA_CERT_DAYS  (3650 + 2) /* the CA's validity: ten years */
#define CA_LABEL_MAX  48	 /* "msb sandbox CA <label>" fits a 64-byte CN */

struct ca; /* opaque: CA key + cert, leaf key, leaf cache, lock */

/*
 * Load the CA from dir/ca.pem + dir/ca.key, or create it there when ca.key
 * is absent: an EC P-256 key and a self-signed X509v3 CA certificate
 * (basicConstraints critical CA:TRUE, pathlen:0; keyUsage critical
 * keyCertSign, cRLSign; subjectKeyIdentifier; CN "msb sandbox CA <label>";
 * valid from an hour ago for ten years; a random serial).  When ca.key is
 * there but ca.pem is not (a crash between the two writes), a certificate
 * is made again for the key.
 *
 * dir must exist.  ca.key is written 0600 and ca.pem 0644, each to a temp
 * name and renamed into place (ca.key without replacing: when two openers
 * race, one key wins and both use it).  An existing ca.key must be a
 * regular file (not a symlink: -ELOOP), owned by the caller's euid and of
 * mode exactly 0600 (-EPERM otherwise); ca.pem must be a regular file
 * holding a CA certificate for that key that has not expired (-EINVAL,
 * -EKEYEXPIRED).  label (NULL for none) is printable ASCII of at most
 * CA_LABEL_MAX bytes; it only names a new CA.  Returns 0 and *out.
 */
int ca_open(const char *dir, const char *label, struct ca **out, char *why, size_t why_len);
void ca_free(struct ca *ca);

/* dir/ca.pem: the certificate to put in the guest's trust store. */
const char *ca_cert_path(const struct ca *ca);

/* The CA certificate (borrowed). */
X509 *ca_cert(const struct ca *ca);

/*
 * A leaf certificate for the host name `name`: X509v3, SAN DNS:name only
 * (CN = name too), extendedKeyUsage serverAuth, keyUsage critical
 * digitalSignature, basicConstraints critical CA:FALSE, authorityKeyIdentifier
 * of the CA, valid from an hour ago for CA_LEAF_DAYS days (never past the
 * CA), a random serial, and the shared leaf key (ca_leaf_key).  name must be
 * valid per sni_name_valid (checked again here; NULL otherwise); it is
 * lowercased.  Leaves are cached per name (CA_LEAF_CACHE of them, the least
 * recently used evicted; one older than a week is made again).  Returns a
 * new reference the caller frees with X509_free, or NULL on error.
 */
X509 *ca_leaf(struct ca *ca, const char *name);

/* The EC P-256 key of every leaf (borrowed; made at ca_open, never written to disk). */
EVP_PKEY *ca_leaf_key(struct ca *ca);

/*
 * A server SSL_CTX for the guest-facing side: TLS 1.2 and up; no session
 * cache and no tickets; ALPN offering only "http/1.1" (chosen when the
 * client offers it; a client that offers ALPN without it gets a fatal
 * no_application_protocol alert; a client that offers no ALPN gets none);
 * and a servername callback that installs ca_leaf(name) and ca_leaf_key on
 * the SSL.  The callback fails the handshake with a fatal alert when the
 * client sent no SNI or an invalid one (unrecognized_name), when the name
 * differs from the one bound with ca_ssl_bind_name (unrecognized_name), or
 * when the leaf cannot be made (internal_error).  The CTX holds no
 * certificate of its own.  Free it with SSL_CTX_free before ca_free.
 */
SSL_CTX *ca_server_ctx(struct ca *ca, char *why, size_t why_len);

/*
 * Bind an SSL made from a ca_server_ctx CTX to the name the proxy decided on
 * (what sni_peek found in the same bytes): its handshake then fails unless
 * the SNI OpenSSL parses is that name (after the same normalization).  Call
 * before SSL_accept.  Returns 0, -EINVAL for an invalid name, -ENOMEM.
 */
int ca_ssl_bind_name(SSL *ssl, const char *name);

/*
 * A client SSL_CTX for upstream connections: TLS 1.2 and up, SSL_VERIFY_PEER,
 * trusting the PEM bundle cafile when non-NULL (tests play the host's trust
 * store with it) and the system's default paths otherwise; ALPN "http/1.1".
 */
SSL_CTX *upstream_ctx_new(const char *cafile, char *why, size_t why_len);

/*
 * An SSL in connect state for one upstream connection on fd (not owned: the
 * caller closes it after SSL_free): SNI = name, the certificate must be
 * valid for name (SSL_set1_host, no partial wildcards).  name must be valid
 * per sni_name_valid.  NULL on error.
 */
SSL *upstream_ssl_new(SSL_CTX *ctx, int fd, const char *name);

#endif
