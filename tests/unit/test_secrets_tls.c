/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets module's TLS pieces (plugins/secrets/ca.c, sni.c).
 *
 * The CA is made in temp directories and its files are checked the way a
 * hostile neighbour would probe them (modes, owner, symlinks, a certificate
 * that belongs to another key).  Leaves are verified with OpenSSL's own
 * X509_verify_cert and X509_check_host.  Real handshakes run in-process over
 * socketpairs: a thread plays the proxy's guest-facing server (or a
 * "public" upstream server with a second CA), the test plays the guest (or
 * the proxy's upstream client).  The SNI peek gets ClientHellos written by
 * OpenSSL's client, and hand-built hostile ones.  Nothing touches the
 * network.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "sni.h"

#define NAME  "api.example.test"
#define NAME2 "other.example.test"

/* ---- temp directories and files ---------------------------------------------------- */

static void mkdir_tmp(char *dir, size_t cap)
{
	snprintf(dir, cap, "/tmp/msb-secrets-tls-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_in(char *buf, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(buf, cap, "%s/%s", dir, name);
	assert_true(n > 0 && (size_t)n < cap);
}

static mode_t mode_of(const char *dir, const char *name)
{
	char p[512];
	struct stat st;
	path_in(p, sizeof(p), dir, name);
	assert_int_equal(lstat(p, &st), 0);
	return st.st_mode & 07777;
}

static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(in >= 0 && out >= 0);
	ssize_t n = read(in, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
}

static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

/* ---- certificates ------------------------------------------------------------------ */

static size_t der(X509 *x, unsigned char **out)
{
	*out = NULL;
	int n = i2d_X509(x, out);
	assert_true(n > 0);
	return (size_t)n;
}

static bool same_der(X509 *a, X509 *b)
{
	unsigned char *da, *db;
	size_t na = der(a, &da), nb = der(b, &db);
	bool same = na == nb && memcmp(da, db, na) == 0;
	OPENSSL_free(da);
	OPENSSL_free(db);
	return same;
}

static X509 *read_pem(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

/* Verify leaf against the single trusted root, as a TLS server certificate. */
static int verify_leaf(X509 *root, X509 *leaf)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	assert_true(store && ctx);
	assert_int_equal(X509_STORE_add_cert(store, root), 1);
	assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, NULL), 1);
	assert_int_equal(X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER), 1);
	int ok = X509_verify_cert(ctx);
	int err = X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok == 1 ? X509_V_OK : (err ? err : -1);
}

/* The one critical-or-not flag and DNS names of the SAN. */
static int san_dns_count(X509 *x, const char **first)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	static char buf[300];
	int n = 0, total = gens ? sk_GENERAL_NAME_num(gens) : 0;
	for (int i = 0; i < total; i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(gens, i);
		if (gn->type != GEN_DNS)
			return -1;
		if (n++ == 0)
			snprintf(buf, sizeof(buf), "%.*s", ASN1_STRING_length(gn->d.dNSName),
				 (const char *)ASN1_STRING_get0_data(gn->d.dNSName));
	}
	GENERAL_NAMES_free(gens);
	*first = buf;
	return n;
}

/* ---- shared fixtures --------------------------------------------------------------- */

static char gdir[64], pdir[64]; /* the sandbox's CA, and a "public" CA for upstream */
static struct ca *G, *P;
static SSL_CTX *gsrv;

static int group_setup(void **state)
{
	char why[256];
	(void)state;
	mkdir_tmp(gdir, sizeof(gdir));
	mkdir_tmp(pdir, sizeof(pdir));
	if (ca_open(gdir, "test", &G, why, sizeof(why)) != 0 ||
	    ca_open(pdir, "public", &P, why, sizeof(why)) != 0) {
		fprintf(stderr, "ca_open: %s\n", why);
		return -1;
	}
	gsrv = ca_server_ctx(G, why, sizeof(why));
	return gsrv ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	SSL_CTX_free(gsrv);
	ca_free(G);
	ca_free(P);
	rm_tree(gdir);
	rm_tree(pdir);
	return 0;
}

/* ---- ca_open ----------------------------------------------------------------------- */

static void t_ca_create_reload(void **state)
{
	char dir[64], why[256], p[512];
	struct ca *a, *b;
	(void)state;
	mkdir_tmp(dir, sizeof(dir));
	mode_t old = umask(0077); /* must not narrow ca.pem's 0644 */
	assert_int_equal(ca_open(dir, "box1", &a, why, sizeof(why)), 0);
	umask(old);
	assert_int_equal(mode_of(dir, "ca.pem"), 0644);
	assert_int_equal(mode_of(dir, "ca.key"), 0600);
	assert_int_equal(entries(dir), 2); /* no temp files left behind */
	path_in(p, sizeof(p), dir, "ca.pem");
	assert_string_equal(ca_cert_path(a), p);

	/* What is on disk is what is in memory, and it is a CA. */
	X509 *disk = read_pem(p);
	assert_true(same_der(disk, ca_cert(a)));
	assert_int_equal(X509_check_ca(disk), 1);
	assert_int_equal(X509_get_pathlen(disk), 0);
	assert_true(X509_get_extension_flags(disk) & EXFLAG_CA);
	assert_int_equal(X509_get_key_usage(disk), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	int crit = 0;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(disk, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_true(bc->ca && crit);
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING *ku = X509_get_ext_d2i(disk, NID_key_usage, &crit, NULL);
	assert_true(ku && crit);
	ASN1_BIT_STRING_free(ku);
	assert_non_null(X509_get0_subject_key_id(disk));
	assert_int_equal(X509_get_ext_by_NID(disk, NID_name_constraints, -1), -1);
	char cn[128];
	X509_NAME_get_text_by_NID(X509_get_subject_name(disk), NID_commonName, cn, sizeof(cn));
	assert_string_equal(cn, "msb sandbox CA box1");
	assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(disk)), EVP_PKEY_EC);
	assert_int_equal(X509_cmp_current_time(X509_get0_notBefore(disk)), -1);
	int days, secs;
	assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(disk)), 1);
	assert_true(days > 3640 && days <= 3653);
	const ASN1_INTEGER *serial = X509_get0_serialNumber(disk);
	assert_true(serial->length >= 15 && serial->length <= 16);

	/* Opened again: the same certificate, a different label changes nothing. */
	assert_int_equal(ca_open(dir, "other", &b, why, sizeof(why)), 0);
	assert_true(same_der(ca_cert(a), ca_cert(b)));
	assert_int_equal(entries(dir), 2);
	/* Two CAs in the same dir mint leaves that verify against the one ca.pem. */
	X509 *la = ca_leaf(a, NAME), *lb = ca_leaf(b, NAME);
	assert_int_equal(verify_leaf(disk, la), X509_V_OK);
	assert_int_equal(verify_leaf(disk, lb), X509_V_OK);
	X509_free(la);
	X509_free(lb);
	X509_free(disk);
	ca_free(a);
	ca_free(b);
	rm_tree(dir);
}

static void t_ca_key_mode(void **state)
{
	char dir[64], why[256] = "", p[512];
	struct ca *a;
	(void)state;
	mkdir_tmp(dir, sizeof(dir));
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), 0);
	ca_free(a);
	path_in(p, sizeof(p), dir, "ca.key");
	static const mode_t bad[] = {0644, 0640, 0604, 0400, 0700, 04600};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(chmod(p, bad[i]), 0);
		a = (struct ca *)1;
		assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), -EPERM);
		assert_null(a);
		assert_non_null(strstr(why, "0600"));
	}
	assert_int_equal(chmod(p, 0600), 0);
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), 0);
	ca_free(a);
	rm_tree(dir);
}

static void t_ca_key_symlink(void **state)
{
	char dir[64], why[256] = "", from[512], to[512];
	struct ca *a;
	(void)state;
	mkdir_tmp(dir, sizeof(dir));
	/* A symlink to a perfectly good key (the sandbox CA's): still refused. */
	path_in(from, sizeof(from), gdir, "ca.key");
	path_in(to, sizeof(to), dir, "ca.key");
	assert_int_equal(symlink(from, to), 0);
	path_in(from, sizeof(from), gdir, "ca.pem");
	path_in(to, sizeof(to), dir, "ca.pem");
	copy_file(from, to);
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), -ELOOP);
	assert_non_null(strstr(why, "symlink"));
	/* A dangling one too: it must not be followed to create a key elsewhere. */
	char target[512];
	path_in(target, sizeof(target), dir, "elsewhere.key");
	path_in(to, sizeof(to), dir, "ca.key");
	assert_int_equal(unlink(to), 0);
	assert_int_equal(symlink(target, to), 0);
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), -ELOOP);
	assert_int_equal(access(target, F_OK), -1);
	rm_tree(dir);
}

static void t_ca_key_owner(void **state)
{
	char dir[64], why[256] = "", p[512];
	struct ca *a;
	(void)state;
	if (geteuid() != 0)
		skip(); /* only root can give a file away */
	mkdir_tmp(dir, sizeof(dir));
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), 0);
	ca_free(a);
	path_in(p, sizeof(p), dir, "ca.key");
	assert_int_equal(chown(p, 65534, 65534), 0);
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, "owned"));
	rm_tree(dir);
}

static void t_ca_mismatch_and_recovery(void **state)
{
	char dir[64], why[256] = "", from[512], to[512];
	struct ca *a;
	(void)state;
	mkdir_tmp(dir, sizeof(dir));
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), 0);
	ca_free(a);
	/* Another CA's certificate next to our key. */
	path_in(from, sizeof(from), pdir, "ca.pem");
	path_in(to, sizeof(to), dir, "ca.pem");
	copy_file(from, to);
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), -EINVAL);
	/* Garbage instead of a certificate. */
	FILE *f = fopen(to, "w");
	fputs("not a certificate\n", f);
	fclose(f);
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), -EINVAL);
	/* No certificate at all (a crash between the writes): made again for the key. */
	assert_int_equal(unlink(to), 0);
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), 0);
	assert_int_equal(mode_of(dir, "ca.pem"), 0644);
	X509 *disk = read_pem(to), *leaf = ca_leaf(a, NAME);
	assert_int_equal(verify_leaf(disk, leaf), X509_V_OK);
	X509_free(disk);
	X509_free(leaf);
	ca_free(a);
	/* A label that cannot be a CN. */
	assert_int_equal(ca_open(dir, "bad\nlabel", &a, why, sizeof(why)), -EINVAL);
	rm_tree(dir);
}

/* ---- ca_leaf ----------------------------------------------------------------------- */

static void t_leaf(void **state)
{
	(void)state;
	X509 *leaf = ca_leaf(G, NAME);
	assert_non_null(leaf);
	assert_int_equal(verify_leaf(ca_cert(G), leaf), X509_V_OK);
	/* Not under another CA. */
	assert_int_not_equal(verify_leaf(ca_cert(P), leaf), X509_V_OK);
	assert_int_equal(X509_check_host(leaf, NAME, 0, 0, NULL), 1);
	assert_int_equal(X509_check_host(leaf, NAME2, 0, 0, NULL), 0);
	assert_int_equal(X509_check_host(leaf, "example.test", 0, 0, NULL), 0);
	const char *dns;
	assert_int_equal(san_dns_count(leaf, &dns), 1);
	assert_string_equal(dns, NAME);
	char cn[300];
	X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn));
	assert_string_equal(cn, NAME);

	assert_int_equal(X509_check_ca(leaf), 0);
	int crit = 0;
	BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(leaf, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_false(bc->ca);
	BASIC_CONSTRAINTS_free(bc);
	assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
	assert_int_equal(X509_get_extended_key_usage(leaf), XKU_SSL_SERVER);
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf),
					       X509_get0_subject_key_id(ca_cert(G))),
			 0);
	assert_int_equal(X509_check_private_key(leaf, ca_leaf_key(G)), 1);
	assert_int_equal(EVP_PKEY_get_base_id(ca_leaf_key(G)), EVP_PKEY_EC);

	int days, secs;
	assert_int_equal(
		ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf)),
		1);
	assert_true(days < 398);
	assert_true(days >= 30 && days <= 31);
	assert_int_equal(X509_cmp_current_time(X509_get0_notBefore(leaf)), -1);

	/* Another name: another certificate; the same name (any case): the cached one. */
	X509 *other = ca_leaf(G, NAME2);
	X509 *again = ca_leaf(G, NAME);
	X509 *upper = ca_leaf(G, "API.Example.TEST");
	assert_non_null(other);
	assert_non_null(again);
	assert_non_null(upper);
	assert_int_not_equal(
		ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(other)), 0);
	assert_int_equal(X509_check_host(other, NAME, 0, 0, NULL), 0);
	assert_int_equal(
		ASN1_INTEGER_cmp(X509_get0_serialNumber(leaf), X509_get0_serialNumber(again)), 0);
	assert_true(same_der(leaf, again));
	assert_true(same_der(leaf, upper));
	/* A trailing dot is the same name. */
	X509 *dot = ca_leaf(G, NAME ".");
	assert_non_null(dot);
	assert_true(same_der(leaf, dot));
	X509_free(dot);
	X509_free(upper);
	X509_free(again);
	X509_free(other);
	X509_free(leaf);

	/* Names the caller should have refused are refused here too: in particular
	 * nothing that OpenSSL's config syntax would read as a second SAN. */
	static const char *const bad[] = {
		"",	   "a b.test", "a..b",	   ".a.test", "x,DNS:evil.test",     "*.a.test",
		"1.2.3.4", "a_b.test", "a.test..", "a\tb",    "m\xc3\xbcnchen.test", "..",
		"::1",	   "[::1]",    "a/b.test", NULL,
	};
	for (size_t i = 0; bad[i]; i++)
		assert_null(ca_leaf(G, bad[i]));
	char big[300];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_null(ca_leaf(G, big));
	/* 254 characters in labels of 63: over the 253 limit. */
	for (size_t i = 63; i < 254; i += 64)
		big[i] = '.';
	big[254] = '\0';
	assert_null(ca_leaf(G, big));
	big[253] = '\0'; /* 253 is fine */
	X509 *longest = ca_leaf(G, big);
	assert_non_null(longest);
	assert_int_equal(X509_check_host(longest, big, 0, 0, NULL), 1);
	assert_int_equal(verify_leaf(ca_cert(G), longest), X509_V_OK);
	/* Too long for a commonName: an empty subject and a critical SAN. */
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(longest)), 0);
	crit = 0;
	GENERAL_NAMES *gens = X509_get_ext_d2i(longest, NID_subject_alt_name, &crit, NULL);
	assert_true(gens && crit == 1);
	GENERAL_NAMES_free(gens);
	X509_free(longest);
}

static void t_leaf_cache_lru(void **state)
{
	char dir[64], why[256], name[64];
	struct ca *a;
	(void)state;
	mkdir_tmp(dir, sizeof(dir));
	assert_int_equal(ca_open(dir, NULL, &a, why, sizeof(why)), 0);
	X509 *first[CA_LEAF_CACHE];
	for (int i = 0; i < CA_LEAF_CACHE; i++) {
		snprintf(name, sizeof(name), "h%d.example.test", i);
		first[i] = ca_leaf(a, name);
		assert_non_null(first[i]);
	}
	/* Full; touch h0, then one more name evicts the least recently used: h1. */
	X509 *x = ca_leaf(a, "h0.example.test");
	assert_ptr_equal(x, first[0]);
	X509_free(x);
	x = ca_leaf(a, "new.example.test");
	assert_non_null(x);
	X509_free(x);
	x = ca_leaf(a, "h0.example.test");
	assert_ptr_equal(x, first[0]);
	X509_free(x);
	x = ca_leaf(a, "h2.example.test");
	assert_ptr_equal(x, first[2]);
	X509_free(x);
	x = ca_leaf(a, "h1.example.test"); /* made again: another serial */
	assert_non_null(x);
	assert_ptr_not_equal(x, first[1]);
	assert_int_not_equal(
		ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(first[1])), 0);
	X509_free(x);
	/* The caller's references outlive eviction and the CA. */
	ca_free(a);
	for (int i = 0; i < CA_LEAF_CACHE; i++) {
		snprintf(name, sizeof(name), "h%d.example.test", i);
		assert_int_equal(X509_check_host(first[i], name, 0, 0, NULL), 1);
		X509_free(first[i]);
	}
	rm_tree(dir);
}

/* Many threads asking for overlapping names at once. */
struct hammer {
	struct ca *ca;
	int id;
	int bad;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	char name[64];
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "n%d.example.test", (i * 7 + h->id) % 300);
		X509 *x = ca_leaf(h->ca, name);
		if (!x || X509_check_host(x, name, 0, 0, NULL) != 1)
			h->bad++;
		X509_free(x);
	}
	return NULL;
}

static void t_leaf_threads(void **state)
{
	(void)state;
	pthread_t tid[8];
	struct hammer h[8];
	for (int i = 0; i < 8; i++) {
		h[i] = (struct hammer){.ca = G, .id = i};
		assert_int_equal(pthread_create(&tid[i], NULL, hammer_main, &h[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(tid[i], NULL);
		assert_int_equal(h[i].bad, 0);
	}
}

/* ---- handshakes -------------------------------------------------------------------- */

struct srv {
	SSL_CTX *ctx;
	int fd;
	const char *bind; /* ca_ssl_bind_name, or NULL */
	int ok;
	char alpn[32];
	char sni[300];
	char offered[64]; /* the ALPN list the client offered (test servers only) */
	pthread_t tid;
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	SSL *ssl = SSL_new(s->ctx);
	SSL_set_fd(ssl, s->fd);
	if (s->bind && ca_ssl_bind_name(ssl, s->bind) != 0)
		goto out;
	s->ok = SSL_accept(ssl) == 1;
	if (s->ok) {
		const unsigned char *p;
		unsigned int n;
		SSL_get0_alpn_selected(ssl, &p, &n);
		snprintf(s->alpn, sizeof(s->alpn), "%.*s", (int)n, (const char *)p);
		const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
		snprintf(s->sni, sizeof(s->sni), "%s", sn ? sn : "");
		SSL_write(ssl, "hello", 5);
		SSL_shutdown(ssl);
	}
out:
	SSL_free(ssl);
	ERR_clear_error();
	return NULL;
}

static void timeouts(int fd)
{
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Start a server thread on one end of a socketpair; returns the other end. */
static int srv_start(struct srv *s, SSL_CTX *ctx, const char *bind)
{
	int sv[2];
	memset(s, 0, sizeof(*s));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	timeouts(sv[0]);
	timeouts(sv[1]);
	s->ctx = ctx;
	s->fd = sv[0];
	s->bind = bind;
	assert_int_equal(pthread_create(&s->tid, NULL, srv_main, s), 0);
	return sv[1];
}

static void srv_join(struct srv *s, int cfd)
{
	close(cfd); /* a failed client: the server sees EOF rather than waiting */
	pthread_join(s->tid, NULL);
	close(s->fd);
}

struct guest {
	const char *sni;  /* NULL: none */
	const char *alpn; /* wire format, NULL: none */
	size_t alpn_len;
	int max_version;    /* 0: any */
	const char *verify; /* the name the guest checks the certificate for */
};

/* Why the guest's last handshake failed: for an alert from the server, SSL_R_TLSV1_* or
 * SSL_R_SSLV3_ALERT_*. */
static int guest_reason;

/* The guest: trusts only the sandbox CA's ca.pem. Returns whether the handshake and
 * the first read worked; the negotiated ALPN into alpn. */
static bool guest_connect(int fd, const struct guest *g, char *alpn, size_t alpn_cap, long *verify)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca_cert_path(G), NULL), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (g->max_version)
		SSL_CTX_set_max_proto_version(ctx, g->max_version);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (g->sni)
		assert_int_equal(SSL_set_tlsext_host_name(ssl, g->sni), 1);
	if (g->verify)
		SSL_set1_host(ssl, g->verify); /* may refuse the invalid names: then no check */
	if (g->alpn)
		assert_int_equal(SSL_set_alpn_protos(ssl, (const unsigned char *)g->alpn,
						     (unsigned)g->alpn_len),
				 0);
	bool ok = SSL_connect(ssl) == 1;
	*verify = SSL_get_verify_result(ssl);
	guest_reason = ok ? 0 : ERR_GET_REASON(ERR_peek_last_error());
	if (ok) {
		const unsigned char *p;
		unsigned int n;
		SSL_get0_alpn_selected(ssl, &p, &n);
		snprintf(alpn, alpn_cap, "%.*s", (int)n, (const char *)p);
		X509 *peer = SSL_get1_peer_certificate(ssl);
		ok = peer && g->verify && X509_check_host(peer, g->verify, 0, 0, NULL) == 1;
		X509_free(peer);
		char buf[8];
		ok = ok && SSL_read(ssl, buf, sizeof(buf)) == 5 && memcmp(buf, "hello", 5) == 0;
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

#define ALPN_H11    "\x08http/1.1"
#define ALPN_H2	    "\x02h2"
#define ALPN_H2_H11 "\x02h2\x08http/1.1"

static void t_handshake_ok(void **state)
{
	(void)state;
	static const struct guest cases[] = {
		{NAME, ALPN_H11, sizeof(ALPN_H11) - 1, 0, NAME},
		{NAME, ALPN_H11, sizeof(ALPN_H11) - 1, TLS1_2_VERSION, NAME},
		{NAME, ALPN_H2_H11, sizeof(ALPN_H2_H11) - 1, 0, NAME},
		{"API.EXAMPLE.test", ALPN_H11, sizeof(ALPN_H11) - 1, 0, NAME},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct srv s;
		char alpn[32] = "";
		long v;
		int fd = srv_start(&s, gsrv, NULL);
		assert_true(guest_connect(fd, &cases[i], alpn, sizeof(alpn), &v));
		srv_join(&s, fd);
		assert_int_equal(v, X509_V_OK);
		assert_true(s.ok);
		assert_string_equal(alpn, "http/1.1");
		assert_string_equal(s.alpn, "http/1.1");
	}
	/* No ALPN at all: fine, and none is chosen. */
	struct srv s;
	struct guest g = {NAME, NULL, 0, 0, NAME};
	char alpn[32] = "x";
	long v;
	int fd = srv_start(&s, gsrv, NAME);
	assert_true(guest_connect(fd, &g, alpn, sizeof(alpn), &v));
	srv_join(&s, fd);
	assert_true(s.ok);
	assert_string_equal(alpn, "");
}

static void t_handshake_refused(void **state)
{
	(void)state;
	static const struct {
		struct guest g;
		int reason; /* the alert the guest gets */
	} cases[] = {
		/* no SNI */
		{{NULL, ALPN_H11, sizeof(ALPN_H11) - 1, 0, NAME}, SSL_R_TLSV1_UNRECOGNIZED_NAME},
		{{NULL, ALPN_H11, sizeof(ALPN_H11) - 1, TLS1_2_VERSION, NAME},
		 SSL_R_TLSV1_UNRECOGNIZED_NAME},
		/* ALPN without http/1.1 */
		{{NAME, ALPN_H2, sizeof(ALPN_H2) - 1, 0, NAME},
		 SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL},
		{{NAME, ALPN_H2, sizeof(ALPN_H2) - 1, TLS1_2_VERSION, NAME},
		 SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL},
		/* invalid SNI */
		{{"a..b.test", ALPN_H11, sizeof(ALPN_H11) - 1, 0, "a..b.test"},
		 SSL_R_TLSV1_UNRECOGNIZED_NAME},
		{{"1.2.3.4", ALPN_H11, sizeof(ALPN_H11) - 1, 0, "1.2.3.4"},
		 SSL_R_TLSV1_UNRECOGNIZED_NAME},
		{{"a_b.test", ALPN_H11, sizeof(ALPN_H11) - 1, 0, "a_b.test"},
		 SSL_R_TLSV1_UNRECOGNIZED_NAME},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct srv s;
		char alpn[32];
		long v;
		int fd = srv_start(&s, gsrv, NULL);
		assert_false(guest_connect(fd, &cases[i].g, alpn, sizeof(alpn), &v));
		srv_join(&s, fd);
		assert_false(s.ok);
		assert_int_equal(guest_reason, cases[i].reason);
	}
	/* An SNI other than the one the proxy decided on (ca_ssl_bind_name). */
	struct srv s;
	struct guest g = {NAME2, ALPN_H11, sizeof(ALPN_H11) - 1, 0, NAME2};
	char alpn[32];
	long v;
	int fd = srv_start(&s, gsrv, NAME);
	assert_false(guest_connect(fd, &g, alpn, sizeof(alpn), &v));
	srv_join(&s, fd);
	assert_false(s.ok);
	assert_int_equal(guest_reason, SSL_R_TLSV1_UNRECOGNIZED_NAME);
	/* The guest checks the name too: a leaf for NAME2 is not one for NAME. */
	g.verify = NAME;
	fd = srv_start(&s, gsrv, NULL);
	assert_false(guest_connect(fd, &g, alpn, sizeof(alpn), &v));
	srv_join(&s, fd);
	assert_int_equal(v, X509_V_ERR_HOSTNAME_MISMATCH);
}

/* ---- upstream ---------------------------------------------------------------------- */

static int record_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	struct srv *s = arg;
	(void)ssl;
	(void)out;
	(void)outlen;
	snprintf(s->offered, sizeof(s->offered), "%.*s", (int)inlen, (const char *)in);
	return SSL_TLSEXT_ERR_NOACK;
}

/* A "public" server presenting a fixed certificate signed by the public CA. */
static SSL_CTX *public_server(X509 *cert, EVP_PKEY *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	return ctx;
}

/* The proxy's upstream side against it: returns SSL_connect's success and the verify result. */
static bool upstream_connect(SSL_CTX *server, const char *cafile, const char *name, long *verify,
			     struct srv *s)
{
	char why[256];
	SSL_CTX *up = upstream_ctx_new(cafile, why, sizeof(why));
	assert_non_null(up);
	SSL_CTX_set_alpn_select_cb(server, record_alpn, s);
	int fd = srv_start(s, server, NULL);
	SSL *ssl = upstream_ssl_new(up, fd, name);
	assert_non_null(ssl);
	bool ok = SSL_connect(ssl) == 1;
	*verify = SSL_get_verify_result(ssl);
	if (ok) {
		char buf[8];
		ok = SSL_read(ssl, buf, sizeof(buf)) == 5;
	}
	SSL_free(ssl);
	srv_join(s, fd);
	SSL_CTX_free(up);
	ERR_clear_error();
	return ok;
}

static void t_upstream(void **state)
{
	(void)state;
	X509 *leaf = ca_leaf(P, NAME);
	SSL_CTX *server = public_server(leaf, ca_leaf_key(P));
	struct srv s;
	long v;

	assert_true(upstream_connect(server, ca_cert_path(P), NAME, &v, &s));
	assert_int_equal(v, X509_V_OK);
	assert_true(s.ok);
	assert_string_equal(s.sni, NAME);
	assert_string_equal(s.offered, ALPN_H11);

	/* The certificate is not for this name. */
	assert_false(upstream_connect(server, ca_cert_path(P), NAME2, &v, &s));
	assert_int_equal(v, X509_V_ERR_HOSTNAME_MISMATCH);
	assert_false(s.ok);
	/* Trusting the sandbox CA (or the system's) instead of the public one. */
	assert_false(upstream_connect(server, ca_cert_path(G), NAME, &v, &s));
	assert_int_not_equal(v, X509_V_OK);
	assert_false(upstream_connect(server, NULL, NAME, &v, &s));
	assert_int_not_equal(v, X509_V_OK);
	SSL_CTX_free(server);
	X509_free(leaf);

	/* A trust file that is not there. */
	char why[256] = "";
	assert_null(upstream_ctx_new("/nonexistent/ca.pem", why, sizeof(why)));
	assert_true(why[0] != '\0');
	/* Names upstream_ssl_new refuses. */
	SSL_CTX *up = upstream_ctx_new(ca_cert_path(P), why, sizeof(why));
	assert_null(upstream_ssl_new(up, 0, "a b.test"));
	assert_null(upstream_ssl_new(up, 0, "1.2.3.4"));
	assert_null(upstream_ssl_new(up, -1, NAME));
	SSL_CTX_free(up);
}

/* A certificate with the given SAN DNS name, signed by the public CA's key (read from
 * its ca.key, as only a test may). */
static X509 *public_cert_for(const char *dns, EVP_PKEY *pub)
{
	char p[512];
	path_in(p, sizeof(p), pdir, "ca.key");
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	EVP_PKEY *cakey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(cakey);
	X509 *x = X509_new();
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"wildcard", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(ca_cert(P)));
	X509_set_pubkey(x, pub);
	char san[128];
	snprintf(san, sizeof(san), "DNS:%s", dns);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, ca_cert(P), x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, NID_subject_alt_name, san);
	assert_non_null(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	assert_true(X509_sign(x, cakey, EVP_sha256()) > 0);
	EVP_PKEY_free(cakey);
	return x;
}

static void t_upstream_wildcards(void **state)
{
	(void)state;
	struct srv s;
	long v;
	/* A full-label wildcard is fine... */
	X509 *full = public_cert_for("*.example.test", ca_leaf_key(P));
	SSL_CTX *server = public_server(full, ca_leaf_key(P));
	assert_true(upstream_connect(server, ca_cert_path(P), "ab.example.test", &v, &s));
	assert_int_equal(v, X509_V_OK);
	assert_false(upstream_connect(server, ca_cert_path(P), "x.ab.example.test", &v, &s));
	SSL_CTX_free(server);
	X509_free(full);
	/* ...a partial one is not (X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS). */
	X509 *partial = public_cert_for("a*.example.test", ca_leaf_key(P));
	server = public_server(partial, ca_leaf_key(P));
	assert_false(upstream_connect(server, ca_cert_path(P), "ab.example.test", &v, &s));
	assert_int_equal(v, X509_V_ERR_HOSTNAME_MISMATCH);
	SSL_CTX_free(server);
	X509_free(partial);
}

/* ---- sni_peek ---------------------------------------------------------------------- */

struct wbuf {
	uint8_t b[70000];
	size_t n;
};

static void w8(struct wbuf *w, size_t v)
{
	assert_true(w->n < sizeof(w->b));
	w->b[w->n++] = (uint8_t)v;
}

static void w16(struct wbuf *w, size_t v)
{
	w8(w, v >> 8);
	w8(w, v);
}

static void w24(struct wbuf *w, size_t v)
{
	w8(w, v >> 16);
	w16(w, v);
}

static void wbytes(struct wbuf *w, const void *p, size_t n)
{
	assert_true(n <= sizeof(w->b) - w->n);
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void wfill(struct wbuf *w, uint8_t v, size_t n)
{
	assert_true(n <= sizeof(w->b) - w->n);
	memset(w->b + w->n, v, n);
	w->n += n;
}

/* A server_name extension with one host_name entry. */
static void ext_sni(struct wbuf *e, const char *name, size_t len)
{
	w16(e, 0);
	w16(e, len + 5);
	w16(e, len + 3);
	w8(e, 0);
	w16(e, len);
	wbytes(e, name, len);
}

/* A handshake message: ClientHello with these extensions (none when !e). */
static void hello(struct wbuf *h, const struct wbuf *e)
{
	h->n = 0;
	w8(h, 1);
	w24(h, 0);
	w16(h, 0x0303);
	wfill(h, 0x11, 32);
	w8(h, 32);
	wfill(h, 0x22, 32);
	w16(h, 4);
	w16(h, 0x1301);
	w16(h, 0xc02b);
	w8(h, 1);
	w8(h, 0);
	if (e) {
		w16(h, e->n);
		wbytes(h, e->b, e->n);
	}
	size_t body = h->n - 4;
	h->b[1] = (uint8_t)(body >> 16);
	h->b[2] = (uint8_t)(body >> 8);
	h->b[3] = (uint8_t)body;
}

/* Wrap handshake bytes in records of at most frag bytes. */
static void records(struct wbuf *r, const uint8_t *hs, size_t len, size_t frag)
{
	r->n = 0;
	for (size_t off = 0; off < len; off += frag) {
		size_t k = len - off < frag ? len - off : frag;
		w8(r, 22);
		w16(r, 0x0301);
		w16(r, k);
		wbytes(r, hs + off, k);
	}
}

static struct wbuf E, H, R;

/* The SNI peek on a hand-built hello with one server_name of these bytes. */
static int peek_name(const char *name, size_t len, char *out, size_t cap)
{
	E.n = 0;
	ext_sni(&E, name, len);
	hello(&H, &E);
	records(&R, H.b, H.n, SNI_RECORD_MAX);
	return sni_peek(R.b, R.n, out, cap);
}

/* What OpenSSL's client sends first. */
static size_t openssl_hello(uint8_t *out, size_t cap, const char *sni, int max_version)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	if (max_version)
		SSL_CTX_set_max_proto_version(ctx, max_version);
	SSL *ssl = SSL_new(ctx);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	SSL_set_bio(ssl, rb, wb);
	if (sni)
		assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
	assert_int_equal(SSL_set_alpn_protos(ssl, (const unsigned char *)ALPN_H2_H11,
					     sizeof(ALPN_H2_H11) - 1),
			 0);
	assert_int_equal(SSL_connect(ssl), -1);
	assert_int_equal(SSL_get_error(ssl, -1), SSL_ERROR_WANT_READ);
	int n = BIO_read(wb, out, (int)cap);
	assert_true(n > 0 && (size_t)n < cap);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return (size_t)n;
}

static void every_prefix_needs_more(const uint8_t *b, size_t n)
{
	char name[256];
	for (size_t i = 0; i < n; i++) {
		int rc = sni_peek(b, i, name, sizeof(name));
		if (rc != 0)
			fail_msg("prefix %zu of %zu: %d", i, n, rc);
	}
}

static void t_sni_openssl(void **state)
{
	uint8_t b[4096];
	char name[256];
	(void)state;
	static const int versions[] = {0, TLS1_2_VERSION};
	for (size_t v = 0; v < 2; v++) {
		size_t n = openssl_hello(b, sizeof(b), NAME, versions[v]);
		assert_int_equal(sni_peek(b, n, name, sizeof(name)), 1);
		assert_string_equal(name, NAME);
		every_prefix_needs_more(b, n);
		/* Followed by more data: the same answer. */
		memset(b + n, 0x17, 100);
		assert_int_equal(sni_peek(b, n + 100, name, sizeof(name)), 1);
		assert_string_equal(name, NAME);
		/* Too small a buffer for the name. */
		assert_int_equal(sni_peek(b, n, name, sizeof(NAME) - 1), -ENOSPC);
		assert_int_equal(sni_peek(b, n, name, sizeof(NAME)), 1);

		n = openssl_hello(b, sizeof(b), "API.Example.TEST.", versions[v]);
		assert_int_equal(sni_peek(b, n, name, sizeof(name)), 1);
		assert_string_equal(name, NAME);

		n = openssl_hello(b, sizeof(b), NULL, versions[v]);
		assert_int_equal(sni_peek(b, n, name, sizeof(name)), -ENOENT);
		every_prefix_needs_more(b, n);

		n = openssl_hello(b, sizeof(b), "bad name.test", versions[v]);
		assert_int_equal(sni_peek(b, n, name, sizeof(name)), -EINVAL);
	}
}

static void t_sni_split_records(void **state)
{
	uint8_t b[4096];
	char name[256];
	static struct wbuf split;
	(void)state;
	size_t n = openssl_hello(b, sizeof(b), NAME, 0);
	/* Re-cut the one record's handshake bytes into small records. */
	assert_true(n > 5 && (size_t)(b[3] << 8 | b[4]) == n - 5);
	static const size_t frags[] = {1, 2, 3, 7, 64, 100, 1000};
	for (size_t i = 0; i < sizeof(frags) / sizeof(frags[0]); i++) {
		records(&split, b + 5, n - 5, frags[i]);
		assert_int_equal(sni_peek(split.b, split.n, name, sizeof(name)), 1);
		assert_string_equal(name, NAME);
		every_prefix_needs_more(split.b, split.n);
	}
	/* Something else between the pieces. */
	records(&split, b + 5, n - 5, 64);
	split.b[69] = 21; /* the second record becomes an alert */
	assert_int_equal(sni_peek(split.b, split.n, name, sizeof(name)), -EINVAL);
	split.b[69] = 23;
	assert_int_equal(sni_peek(split.b, split.n, name, sizeof(name)), -EINVAL);
	/* A zero-length record. */
	records(&split, b + 5, n - 5, 64);
	uint8_t *p = split.b + 69;
	memmove(p + 5, p, split.n - 69);
	memcpy(p, "\x16\x03\x03\x00\x00", 5);
	assert_int_equal(sni_peek(split.b, split.n + 5, name, sizeof(name)), -EINVAL);
}

static void t_sni_not_tls(void **state)
{
	char name[256];
	(void)state;
#define BYTES(lit)                                                                                 \
	{                                                                                          \
		lit, sizeof(lit) - 1                                                               \
	}
	static const struct {
		const char *b;
		size_t n;
	} texts[] = {
		BYTES("GET / HTTP/1.1\r\nHost: api.example.test\r\n\r\n"),
		BYTES("CONNECT api.example.test:443 HTTP/1.1\r\n\r\n"),
		BYTES("SSH-2.0-OpenSSH_9.2\r\n"),
		BYTES("G"),
		BYTES("\x16\x02"),			       /* record version 2.x */
		BYTES("\x16\x03\x01\x00\x00"),		       /* empty record */
		BYTES("\x16\x03\x01\x40\x01"),		       /* record over 2^14 */
		BYTES("\x15\x03\x03\x00\x02\x02\x28"),	       /* an alert */
		BYTES("\x16\x03\x01\x00\x04\x02\x00\x00\x00"), /* a ServerHello */
		BYTES("\x16\x03\x01\x00\x04\x01\x00\x00\x00"), /* a ClientHello of length 0 */
		BYTES("\x16\x03\x01\x00\x01\x02"),	       /* not a hello, one byte in */
		BYTES("\x80\x2e\x01\x00\x02"), /* SSLv2-style hello: no SNI possible */
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		assert_int_equal(
			sni_peek((const uint8_t *)texts[i].b, texts[i].n, name, sizeof(name)),
			-EINVAL);
	/* Seeded garbage: never a name, never a crash. */
	uint8_t b[2048];
	srand(7);
	for (int round = 0; round < 2000; round++) {
		size_t len = (size_t)(rand() % (int)sizeof(b));
		for (size_t i = 0; i < len; i++)
			b[i] = (uint8_t)rand();
		if (round % 2) { /* a plausible record header in front */
			b[0] = 22;
			b[1] = 3;
			b[5] = 1;
		}
		int rc = sni_peek(b, len, name, sizeof(name));
		assert_true(rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -ENOENT);
	}
	/* A real hello with its version field broken. */
	size_t n = openssl_hello(b, sizeof(b), NAME, 0);
	b[9] = 0;
	b[10] = 0;
	assert_int_equal(sni_peek(b, n, name, sizeof(name)), -EINVAL);
}

static void t_sni_names(void **state)
{
	char name[300], big[400];
	(void)state;
	assert_int_equal(peek_name("a.b", 3, name, sizeof(name)), 1);
	assert_string_equal(name, "a.b");
	assert_int_equal(peek_name("Mixed-Case.EXAMPLE.test", 23, name, sizeof(name)), 1);
	assert_string_equal(name, "mixed-case.example.test");
	assert_int_equal(peek_name("localhost", 9, name, sizeof(name)), 1);
	assert_string_equal(name, "localhost");
	assert_int_equal(peek_name("example.com.", 12, name, sizeof(name)), 1);
	assert_string_equal(name, "example.com");
	assert_int_equal(peek_name("1.2.3.example", 13, name, sizeof(name)), 1);

	static const char *const bad[] = {
		"a b.test", "a..b",	 ".a.test",  "a.test..",
		".",	    "..",	 "a\tb",     "x_y.test",
		"1.2.3.4",  "10.0.0.1.", "1234",     "[::1]",
		"::1",	    "a,b.test",	 "*.a.test", "m\xc3\xbcnchen.test",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(name, 'X', sizeof(name));
		assert_int_equal(peek_name(bad[i], strlen(bad[i]), name, sizeof(name)), -EINVAL);
		assert_int_equal(name[0], 'X'); /* untouched */
	}
	assert_int_equal(peek_name("a\0b.test", 8, name, sizeof(name)), -EINVAL);
	assert_int_equal(peek_name("", 0, name, sizeof(name)), -EINVAL);
	/* 300 characters; a 64-character label; 254 characters in 63-byte labels. */
	memset(big, 'a', sizeof(big));
	assert_int_equal(peek_name(big, 300, name, sizeof(name)), -EINVAL);
	memcpy(big + 64, ".test", 5);
	assert_int_equal(peek_name(big, 69, name, sizeof(name)), -EINVAL);
	memset(big, 'a', sizeof(big));
	for (size_t i = 63; i < 254; i += 64)
		big[i] = '.';
	assert_int_equal(peek_name(big, 254, name, sizeof(name)), -EINVAL);
	assert_int_equal(peek_name(big, 253, name, sizeof(name)), 1);
	assert_int_equal(strlen(name), 253);
	assert_int_equal(peek_name(big, 253, name, 253), -ENOSPC);
	assert_int_equal(peek_name(big, 253, name, 254), 1);
	big[253] = '.'; /* 253 and a trailing dot: fine */
	assert_int_equal(peek_name(big, 254, name, sizeof(name)), 1);
	assert_int_equal(strlen(name), 253);
}

static void t_sni_structure(void **state)
{
	char name[256];
	(void)state;
	/* Other extensions around the server_name: found. */
	E.n = 0;
	w16(&E, 0x000a);
	w16(&E, 4);
	w16(&E, 2);
	w16(&E, 0x001d);
	ext_sni(&E, NAME, strlen(NAME));
	w16(&E, 0xff01);
	w16(&E, 1);
	w8(&E, 0);
	hello(&H, &E);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), 1);
	assert_string_equal(name, NAME);
	every_prefix_needs_more(R.b, R.n);

	/* Two server_name extensions (even agreeing ones). */
	E.n = 0;
	ext_sni(&E, NAME, strlen(NAME));
	ext_sni(&E, NAME, strlen(NAME));
	hello(&H, &E);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -EINVAL);

	/* Two entries in one server_name list. */
	E.n = 0;
	w16(&E, 0);
	w16(&E, 2 + 2 * (3 + strlen(NAME)));
	w16(&E, 2 * (3 + strlen(NAME)));
	for (int i = 0; i < 2; i++) {
		w8(&E, 0);
		w16(&E, strlen(NAME));
		wbytes(&E, NAME, strlen(NAME));
	}
	hello(&H, &E);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -EINVAL);

	/* A name type other than host_name. */
	E.n = 0;
	ext_sni(&E, NAME, strlen(NAME));
	E.b[6] = 1;
	hello(&H, &E);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -EINVAL);

	/* Lengths that disagree with their containers, one at a time. */
	static const size_t at[] = {2, 3, 4, 5, 7, 8}; /* in the extension's bytes */
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		for (int d = -1; d <= 1; d += 2) {
			E.n = 0;
			ext_sni(&E, NAME, strlen(NAME));
			E.b[at[i]] = (uint8_t)(E.b[at[i]] + d);
			hello(&H, &E);
			records(&R, H.b, H.n, 16384);
			int rc = sni_peek(R.b, R.n, name, sizeof(name));
			assert_int_equal(rc, -EINVAL);
		}
	}
	/* The extensions block longer or shorter than what is left of the hello. */
	E.n = 0;
	ext_sni(&E, NAME, strlen(NAME));
	hello(&H, &E);
	H.b[4 + 2 + 32 + 1 + 32 + 2 + 4 + 1 + 1 + 1] ^= 1; /* its low byte */
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -EINVAL);
	/* A byte after the extensions block, inside the hello. */
	E.n = 0;
	ext_sni(&E, NAME, strlen(NAME));
	hello(&H, &E);
	w8(&H, 0);
	H.b[3]++;
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -EINVAL);
	/* A session id over 32 bytes, an odd cipher suite length, no compression methods. */
	static const size_t field[] = {4 + 2 + 32, 4 + 2 + 32 + 1 + 32 + 1,
				       4 + 2 + 32 + 1 + 32 + 2 + 4};
	static const uint8_t value[] = {33, 3, 0};
	for (size_t i = 0; i < 3; i++) {
		E.n = 0;
		ext_sni(&E, NAME, strlen(NAME));
		hello(&H, &E);
		H.b[field[i]] = value[i];
		records(&R, H.b, H.n, 16384);
		assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -EINVAL);
	}

	/* A hello without an extensions block (TLS 1.2 allows it), and with an empty one. */
	hello(&H, NULL);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -ENOENT);
	E.n = 0;
	hello(&H, &E);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -ENOENT);

	/* The biggest hello (padded to SNI_HELLO_MAX), over two records: still found;
	 * one byte more is refused as soon as its header is seen. */
	E.n = 0;
	ext_sni(&E, NAME, strlen(NAME));
	w16(&E, 21);
	w16(&E, 0);
	hello(&H, &E);
	size_t pad = SNI_HELLO_MAX + 4 - H.n;
	E.b[E.n - 2] = (uint8_t)(pad >> 8);
	E.b[E.n - 1] = (uint8_t)pad;
	wfill(&E, 0, pad);
	hello(&H, &E);
	assert_int_equal(H.n, 4 + SNI_HELLO_MAX);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(R.n, SNI_PEEK_MAX);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), 1);
	assert_string_equal(name, NAME);
	assert_int_equal(sni_peek(R.b, R.n - 1, name, sizeof(name)), 0);
	E.b[E.n - pad - 1]++;
	wfill(&E, 0, 1);
	hello(&H, &E);
	records(&R, H.b, H.n, 16384);
	assert_int_equal(sni_peek(R.b, 9, name, sizeof(name)), -E2BIG);
	assert_int_equal(sni_peek(R.b, R.n, name, sizeof(name)), -E2BIG);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_ca_create_reload),
		cmocka_unit_test(t_ca_key_mode),
		cmocka_unit_test(t_ca_key_symlink),
		cmocka_unit_test(t_ca_key_owner),
		cmocka_unit_test(t_ca_mismatch_and_recovery),
		cmocka_unit_test(t_leaf),
		cmocka_unit_test(t_leaf_cache_lru),
		cmocka_unit_test(t_leaf_threads),
		cmocka_unit_test(t_handshake_ok),
		cmocka_unit_test(t_handshake_refused),
		cmocka_unit_test(t_upstream),
		cmocka_unit_test(t_upstream_wildcards),
		cmocka_unit_test(t_sni_openssl),
		cmocka_unit_test(t_sni_split_records),
		cmocka_unit_test(t_sni_not_tls),
		cmocka_unit_test(t_sni_names),
		cmocka_unit_test(t_sni_structure),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
