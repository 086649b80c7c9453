/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the secrets proxy's ClientHello SNI peek
 * (plugins/secrets/sni.c): arbitrary bytes as what a guest sends first on a
 * redirected port-443 connection.
 *
 * Besides memory safety (run under ASan/UBSan) it checks the contract:
 *  - the result is one of 1, 0, -ENOENT, -EINVAL, -E2BIG, -ENOSPC;
 *  - a name that comes out is NUL-terminated inside cap and valid by the
 *    rules (checked here independently of sni_name_valid): labels of
 *    [a-z0-9-], 1..63 each, at most 253 in all, the last not all digits;
 *  - a small cap gives the same name or -ENOSPC, and nothing else changes;
 *  - answers are final: when a prefix of the input already gets an answer
 *    other than "need more", the whole input gets the same answer;
 *  - OpenSSL's server agrees: when sni_peek finds a name and OpenSSL's
 *    servername callback (the one that picks the leaf in ca.c) runs on the
 *    same bytes, OpenSSL sees that name (up to case and one trailing dot);
 *    when sni_peek finds no server_name, OpenSSL sees none either.  A
 *    disagreement would let a guest get past the intercept decision with
 *    one name and be served a leaf for another.
 *
 * Seeds: tests/fuzz/corpus/secrets_sni/ (ClientHellos written by OpenSSL's
 * client: TLS 1.3 and 1.2, with and without SNI, one split across records).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "sni.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define CAP	  256
#define SMALL_CAP 12

static void check_name(const char *name, size_t cap)
{
	size_t len = strnlen(name, cap);
	CHECK(len < cap);
	CHECK(len >= 1 && len <= 253);
	size_t label = 0;
	bool digits = true;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (c == '.') {
			CHECK(label > 0);
			label = 0;
			digits = true;
			continue;
		}
		bool digit = c >= '0' && c <= '9';
		CHECK(digit || (c >= 'a' && c <= 'z') || c == '-');
		CHECK(++label <= 63);
		digits = digits && digit;
	}
	CHECK(label > 0);
	CHECK(!digits);
}

static bool known(int rc)
{
	return rc == 1 || rc == 0 || rc == -ENOENT || rc == -EINVAL || rc == -E2BIG ||
	       rc == -ENOSPC;
}

/* ---- OpenSSL's view of the same bytes ------------------------------------------------- */

static SSL_CTX *octx;
static int ossl_called; /* the servername callback ran */
static char ossl_name[512];
static bool ossl_has_name;

static int on_servername(SSL *ssl, int *al, void *arg)
{
	(void)arg;
	const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	ossl_called = 1;
	ossl_has_name = sn != NULL;
	snprintf(ossl_name, sizeof(ossl_name), "%s", sn ? sn : "");
	/* Stop here: the rest of the handshake is not under test. */
	*al = SSL_AD_UNRECOGNIZED_NAME;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static void openssl_view(const uint8_t *data, size_t size)
{
	if (!octx) {
		octx = SSL_CTX_new(TLS_server_method());
		CHECK(octx);
		/* As ca_server_ctx sets it up. */
		SSL_CTX_set_min_proto_version(octx, TLS1_2_VERSION);
		SSL_CTX_set_options(octx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
		SSL_CTX_set_session_cache_mode(octx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_tlsext_servername_callback(octx, on_servername);
	}
	ossl_called = 0;
	ossl_has_name = false;
	ossl_name[0] = '\0';
	SSL *ssl = SSL_new(octx);
	BIO *rb = BIO_new_mem_buf(data, (int)size), *wb = BIO_new(BIO_s_mem());
	CHECK(ssl && rb && wb);
	SSL_set_bio(ssl, rb, wb);
	SSL_set_accept_state(ssl);
	SSL_do_handshake(ssl);
	SSL_free(ssl);
	ERR_clear_error();
}

/* name as sni_peek gives it vs OpenSSL's raw one: equal up to case and one trailing dot. */
static bool same_name(const char *ours, const char *raw)
{
	size_t n = strlen(raw);
	if (n > 0 && raw[n - 1] == '.')
		n--;
	return strlen(ours) == n && strncasecmp(ours, raw, n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char name[CAP], small[SMALL_CAP];
	memset(name, 'X', sizeof(name));
	int rc = sni_peek(data, size, name, sizeof(name));
	CHECK(known(rc));
	CHECK(rc != -ENOSPC); /* 256 holds any valid name */
	if (rc == 1)
		check_name(name, sizeof(name));
	else
		CHECK(name[0] == 'X'); /* untouched */

	int rs = sni_peek(data, size, small, sizeof(small));
	if (rc == 1 && strlen(name) >= sizeof(small))
		CHECK(rs == -ENOSPC);
	else
		CHECK(rs == rc);
	if (rs == 1)
		CHECK(strcmp(small, name) == 0);

	/* Answers are final. */
	size_t cut[] = {size / 2, size - size / 4, size > 0 ? size - 1 : 0};
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		char pn[CAP];
		int rp = sni_peek(data, cut[i], pn, sizeof(pn));
		CHECK(known(rp));
		if (rp != 0)
			CHECK(rp == rc);
		if (rp == 1)
			CHECK(strcmp(pn, name) == 0);
	}

	/* OpenSSL agrees on every name the proxy would decide on. */
	if (rc == 1 || rc == -ENOENT) {
		openssl_view(data, size);
		if (ossl_called && rc == 1)
			CHECK(ossl_has_name && same_name(name, ossl_name));
		if (ossl_called && rc == -ENOENT)
			CHECK(!ossl_has_name);
	}
	return 0;
}
