/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The per-sandbox CA, leaf minting, and the two SSL_CTXs of the secrets
 * proxy (ca.h).
 *
 * What this defends against:
 *  - another local user planting or reading the CA key: ca.key is opened
 *    with O_NOFOLLOW (no symlink redirects it), must be a regular file owned
 *    by us with mode exactly 0600, and is created 0600 under a temp name
 *    with O_CREAT|O_EXCL|O_NOFOLLOW, so it never exists with a wider mode or
 *    half-written under its real name;
 *  - a hostile guest steering certificate contents through the SNI: names
 *    are re-validated here (labels of [a-z0-9-]) and go into the SAN as one
 *    IA5String built directly, never through OpenSSL's config-string syntax
 *    where a ',' would add names;
 *  - a guest making the proxy mint without bound: leaves share one key
 *    (only a signature per name) and live in a fixed-size LRU cache;
 *  - a guest using a leaf for a second purpose: the leaf is CA:FALSE,
 *    serverAuth only, valid for one name, for 30 days; the CA is pathlen:0.
 * The CA key never leaves the host; the guest gets only ca.pem.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "sni.h"

#define CA_KEY_FILE	 "ca.key"
#define CA_CERT_FILE	 "ca.pem"
#define CA_FILE_MAX	 (64 * 1024)	    /* either file: one PEM object */
#define LEAF_REMINT_SECS (7 * 24 * 60 * 60) /* a cached leaf older than this is made again */
#define CN_PREFIX	 "msb sandbox CA"
#define CN_MAX		 64 /* ub-common-name */

struct leaf_slot {
	char name[SNI_NAME_MAX + 1];
	X509 *cert; /* NULL: the slot is free */
	time_t minted;
	uint64_t used; /* the ca's clock at the last use */
};

struct ca {
	char cert_path[PATH_MAX];
	EVP_PKEY *key;
	X509 *cert;
	EVP_PKEY *leaf_key;
	pthread_mutex_t lock; /* guards clock and cache */
	uint64_t clock;
	struct leaf_slot cache[CA_LEAF_CACHE];
};

__attribute__((format(printf, 4, 5))) static int fail(char *why, size_t why_len, int err,
						      const char *fmt, ...)
{
	if (why && why_len > 0) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
		/* Add OpenSSL's reason when it has one (the queue is cleared
		 * on entry to each function here, so it is ours). */
		unsigned long e = ERR_peek_last_error();
		const char *reason = e ? ERR_reason_error_string(e) : NULL;
		if (reason && n >= 0 && (size_t)n < why_len)
			snprintf(why + n, why_len - (size_t)n, ": %s", reason);
	}
	ERR_clear_error();
	return err;
}

/* ---- files ------------------------------------------------------------------------ */

/* Never ask for a pass phrase (the default would prompt on a terminal). */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* Read a small regular file fd (at most CA_FILE_MAX bytes) into a new buffer. */
static int read_small(int fd, const struct stat *st, unsigned char **out, size_t *len)
{
	if (st->st_size <= 0 || st->st_size > CA_FILE_MAX)
		return -EFBIG;
	size_t want = (size_t)st->st_size, got = 0;
	unsigned char *buf = OPENSSL_secure_malloc(want);
	if (!buf)
		return -ENOMEM;
	while (got < want) {
		ssize_t n = read(fd, buf + got, want - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;
			OPENSSL_secure_clear_free(buf, want);
			return err;
		}
		got += (size_t)n;
	}
	*out = buf;
	*len = got;
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Rename without replacing an existing file: renameat2(RENAME_NOREPLACE), or
 * link + unlink on filesystems without it.  -EEXIST when the name is taken. */
static int rename_noreplace(int dfd, const char *from, const char *to)
{
	if (renameat2(dfd, from, dfd, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	if (linkat(dfd, from, dfd, to, 0) < 0)
		return -errno;
	unlinkat(dfd, from, 0);
	return 0;
}

/*
 * Write data to dfd/name with the given mode, atomically: a temp name made
 * with O_CREAT|O_EXCL|O_NOFOLLOW and that mode (so a key is never readable
 * by others, not even for a moment), fsync, then renamed into place;
 * replace says whether an existing name may be replaced.
 */
static int write_atomic(int dfd, const char *name, mode_t mode, const char *data, size_t len,
			bool replace)
{
	char tmp[64];
	uint64_t r;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		return -EIO;
	snprintf(tmp, sizeof(tmp), ".%s.%ld.%016llx", name, (long)getpid(), (unsigned long long)r);
	int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	int rc = 0;
	/* fchmod: the umask must not narrow 0644, nor anything widen 0600. */
	if (fchmod(fd, mode) < 0)
		rc = -errno;
	if (rc == 0)
		rc = write_all(fd, data, len);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0) {
		if (replace)
			rc = renameat(dfd, tmp, dfd, name) < 0 ? -errno : 0;
		else
			rc = rename_noreplace(dfd, tmp, name);
	}
	if (rc < 0) {
		unlinkat(dfd, tmp, 0);
		return rc;
	}
	fsync(dfd);
	return 0;
}

/* Open dfd/name for reading: never through a symlink, never blocking on a FIFO. */
static int open_file(int dfd, const char *dir, const char *name, struct stat *st, char *why,
		     size_t why_len)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;
		if (err == ENOENT)
			return -ENOENT;
		if (err == ELOOP)
			return fail(why, why_len, -ELOOP, "%s/%s is a symlink", dir, name);
		return fail(why, why_len, -err, "cannot open %s/%s: %s", dir, name, strerror(err));
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		return fail(why, why_len, -EINVAL, "%s/%s is not a regular file", dir, name);
	}
	return fd;
}

static int load_key(int dfd, const char *dir, EVP_PKEY **key, char *why, size_t why_len)
{
	struct stat st;
	int fd = open_file(dfd, dir, CA_KEY_FILE, &st, why, why_len);
	if (fd < 0)
		return fd;
	/* Checked on the open file, so there is no window to swap it. */
	if (st.st_uid != geteuid()) {
		close(fd);
		return fail(why, why_len, -EPERM, "%s/%s is owned by uid %u, not %u", dir,
			    CA_KEY_FILE, (unsigned)st.st_uid, (unsigned)geteuid());
	}
	if ((st.st_mode & 07777) != 0600) {
		close(fd);
		return fail(why, why_len, -EPERM, "%s/%s has mode %04o, not 0600", dir, CA_KEY_FILE,
			    (unsigned)(st.st_mode & 07777));
	}
	unsigned char *pem;
	size_t len;
	int rc = read_small(fd, &st, &pem, &len);
	close(fd);
	if (rc < 0)
		return fail(why, why_len, rc, "cannot read %s/%s: %s", dir, CA_KEY_FILE,
			    strerror(-rc));
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	*key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
	BIO_free(bio);
	OPENSSL_secure_clear_free(pem, len);
	if (!*key)
		return fail(why, why_len, -EINVAL, "%s/%s holds no private key", dir, CA_KEY_FILE);
	/* Signed with SHA-256 below: EC and RSA keys only. */
	int type = EVP_PKEY_get_base_id(*key);
	if (type != EVP_PKEY_EC && type != EVP_PKEY_RSA) {
		EVP_PKEY_free(*key);
		*key = NULL;
		return fail(why, why_len, -EINVAL, "%s/%s is neither an EC nor an RSA key", dir,
			    CA_KEY_FILE);
	}
	return 0;
}

static int load_cert(int dfd, const char *dir, EVP_PKEY *key, X509 **cert, char *why,
		     size_t why_len)
{
	struct stat st;
	int fd = open_file(dfd, dir, CA_CERT_FILE, &st, why, why_len);
	if (fd < 0)
		return fd;
	unsigned char *pem;
	size_t len;
	int rc = read_small(fd, &st, &pem, &len);
	close(fd);
	if (rc < 0)
		return fail(why, why_len, rc, "cannot read %s/%s: %s", dir, CA_CERT_FILE,
			    strerror(-rc));
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	X509 *x = bio ? PEM_read_bio_X509(bio, NULL, no_passphrase, NULL) : NULL;
	BIO_free(bio);
	OPENSSL_secure_clear_free(pem, len);
	if (!x)
		return fail(why, why_len, -EINVAL, "%s/%s holds no certificate", dir, CA_CERT_FILE);
	if (X509_check_private_key(x, key) != 1) {
		X509_free(x);
		return fail(why, why_len, -EINVAL, "%s/%s is not the certificate of %s", dir,
			    CA_CERT_FILE, CA_KEY_FILE);
	}
	if (X509_check_ca(x) != 1) {
		X509_free(x);
		return fail(why, why_len, -EINVAL, "%s/%s is not a CA certificate", dir,
			    CA_CERT_FILE);
	}
	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
		X509_free(x);
		return fail(why, why_len, -EKEYEXPIRED, "%s/%s has expired", dir, CA_CERT_FILE);
	}
	*cert = x;
	return 0;
}

/* ---- certificates ----------------------------------------------------------------- */

/* A random positive serial of 16 bytes: the top bit clear (no sign byte in DER) and the
 * next one set (never shorter), 126 random bits in all. */
static bool set_serial(X509 *x)
{
	unsigned char b[16];
	if (RAND_bytes(b, sizeof(b)) != 1)
		return false;
	b[0] = (unsigned char)((b[0] & 0x7f) | 0x40);
	BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
	ASN1_INTEGER *ai = bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
	bool ok = ai && X509_set_serialNumber(x, ai) == 1;
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return ok;
}

/* One extension from OpenSSL's value syntax; only ever constant values here. */
static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
	bool ok = ext && X509_add_ext(x, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok;
}

/* subjectAltName = one dNSName, built as data (see the top of the file). */
static bool add_san(X509 *x, const char *name, int critical)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *gn = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	bool ok = gens && gn && ia5 && ASN1_STRING_set(ia5, name, (int)strlen(name)) == 1;
	if (ok) {
		GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
		ia5 = NULL;
		ok = sk_GENERAL_NAME_push(gens, gn) > 0;
		if (ok)
			gn = NULL;
	}
	ok = ok &&
	     X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical, X509V3_ADD_DEFAULT) == 1;
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gn);
	GENERAL_NAMES_free(gens);
	return ok;
}

static bool set_cn(X509_NAME *nm, const char *cn)
{
	return X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
					  0) == 1;
}

static X509 *mint_ca(EVP_PKEY *key, const char *label)
{
	char cn[sizeof(CN_PREFIX) + 1 + CA_LABEL_MAX];
	if (label && *label)
		snprintf(cn, sizeof(cn), "%s %s", CN_PREFIX, label);
	else
		snprintf(cn, sizeof(cn), "%s", CN_PREFIX);
	X509 *x = X509_new();
	bool ok = x && X509_set_version(x, X509_VERSION_3) == 1 && set_serial(x) &&
		  X509_gmtime_adj(X509_getm_notBefore(x), -60 * 60) &&
		  X509_time_adj_ex(X509_getm_notAfter(x), CA_CERT_DAYS, 0, NULL) &&
		  set_cn(X509_get_subject_name(x), cn) &&
		  X509_set_issuer_name(x, X509_get_subject_name(x)) == 1 &&
		  X509_set_pubkey(x, key) == 1 &&
		  add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
		  add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") &&
		  add_ext(x, x, NID_subject_key_identifier, "hash") &&
		  X509_sign(x, key, EVP_sha256()) > 0;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/*
 * name: already normalized.  A commonName holds at most 64 characters
 * (RFC 5280 ub-common-name, which OpenSSL enforces); a longer name gets an
 * empty subject and, as RFC 5280 4.2.1.6 then requires, a critical SAN.
 * Clients match the SAN alone anyway.
 */
static X509 *mint_leaf(struct ca *ca, const char *name)
{
	bool long_name = strlen(name) > CN_MAX;
	X509 *x = X509_new();
	bool ok = x && X509_set_version(x, X509_VERSION_3) == 1 && set_serial(x) &&
		  X509_gmtime_adj(X509_getm_notBefore(x), -60 * 60) &&
		  X509_time_adj_ex(X509_getm_notAfter(x), CA_LEAF_DAYS, 0, NULL) &&
		  (long_name || set_cn(X509_get_subject_name(x), name)) &&
		  X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) == 1 &&
		  X509_set_pubkey(x, ca->leaf_key) == 1;
	/* Never valid past the CA (a leaf would not verify there anyway). */
	if (ok && ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca->cert)) > 0)
		ok = X509_set1_notAfter(x, X509_get0_notAfter(ca->cert)) == 1;
	ok = ok && add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") &&
	     add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") &&
	     add_ext(x, ca->cert, NID_ext_key_usage, "serverAuth") &&
	     add_ext(x, ca->cert, NID_subject_key_identifier, "hash") &&
	     add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") &&
	     add_san(x, name, long_name) && X509_sign(x, ca->key, EVP_sha256()) > 0;
	if (!ok) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* ---- the CA ----------------------------------------------------------------------- */

static bool label_ok(const char *label)
{
	if (!label)
		return true;
	size_t n = strnlen(label, CA_LABEL_MAX + 1);
	if (n > CA_LABEL_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (label[i] < 0x20 || label[i] > 0x7e)
			return false;
	return true;
}

static int pem_bytes(BIO *bio, const char **data, size_t *len)
{
	char *p;
	long n = BIO_get_mem_data(bio, &p);
	if (n <= 0)
		return -EIO;
	*data = p;
	*len = (size_t)n;
	return 0;
}

/* A new CA key, written to dfd/ca.key unless one is there already (-EEXIST). */
static int create_key(int dfd, const char *dir, EVP_PKEY **key, char *why, size_t why_len)
{
	/* secmem: the PEM text is wiped when the BIO is freed. */
	BIO *bio = BIO_new(BIO_s_secmem());
	EVP_PKEY *k = EVP_EC_gen(SN_X9_62_prime256v1);
	const char *data;
	size_t len;
	int rc = -EIO;
	if (bio && k && PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) == 1 &&
	    pem_bytes(bio, &data, &len) == 0)
		rc = write_atomic(dfd, CA_KEY_FILE, 0600, data, len, false);
	BIO_free(bio);
	if (rc < 0) {
		EVP_PKEY_free(k);
		if (rc == -EEXIST)
			return rc;
		return fail(why, why_len, rc, "cannot create %s/%s: %s", dir, CA_KEY_FILE,
			    strerror(-rc));
	}
	*key = k;
	return 0;
}

static int create_cert(int dfd, const char *dir, EVP_PKEY *key, const char *label, X509 **cert,
		       char *why, size_t why_len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	X509 *x = mint_ca(key, label);
	const char *data;
	size_t len;
	int rc = -EIO;
	if (bio && x && PEM_write_bio_X509(bio, x) == 1 && pem_bytes(bio, &data, &len) == 0)
		rc = write_atomic(dfd, CA_CERT_FILE, 0644, data, len, true);
	BIO_free(bio);
	if (rc < 0) {
		X509_free(x);
		return fail(why, why_len, rc, "cannot create %s/%s: %s", dir, CA_CERT_FILE,
			    strerror(-rc));
	}
	*cert = x;
	return 0;
}

int ca_open(const char *dir, const char *label, struct ca **out, char *why, size_t why_len)
{
	ERR_clear_error();
	if (out)
		*out = NULL;
	if (!dir || !*dir || !out)
		return fail(why, why_len, -EINVAL, "no CA directory");
	if (!label_ok(label))
		return fail(why, why_len, -EINVAL,
			    "CA label must be printable ASCII of at most %d bytes", CA_LABEL_MAX);
	struct ca *ca = calloc(1, sizeof(*ca));
	if (!ca)
		return fail(why, why_len, -ENOMEM, "out of memory");
	int n = snprintf(ca->cert_path, sizeof(ca->cert_path), "%s/%s", dir, CA_CERT_FILE);
	if (n < 0 || (size_t)n >= sizeof(ca->cert_path)) {
		free(ca);
		return fail(why, why_len, -ENAMETOOLONG, "CA directory name too long");
	}
	int rc;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		int err = errno;
		rc = fail(why, why_len, -err, "cannot open %s: %s", dir, strerror(err));
		goto err;
	}
	bool created = false;
	rc = load_key(dfd, dir, &ca->key, why, why_len);
	if (rc == -ENOENT) {
		rc = create_key(dfd, dir, &ca->key, why, why_len);
		if (rc == -EEXIST) /* another opener won the race: use its key */
			rc = load_key(dfd, dir, &ca->key, why, why_len);
		else
			created = rc == 0;
	}
	if (rc < 0)
		goto err;
	/* A new key replaces whatever ca.pem was there (it had no key); an old key
	 * without ca.pem (a crash between the writes) gets a new certificate. */
	rc = created ? -ENOENT : load_cert(dfd, dir, ca->key, &ca->cert, why, why_len);
	if (rc == -ENOENT)
		rc = create_cert(dfd, dir, ca->key, label, &ca->cert, why, why_len);
	if (rc < 0)
		goto err;
	ca->leaf_key = EVP_EC_gen(SN_X9_62_prime256v1);
	if (!ca->leaf_key) {
		rc = fail(why, why_len, -EIO, "cannot make the leaf key");
		goto err;
	}
	rc = -pthread_mutex_init(&ca->lock, NULL);
	if (rc < 0) {
		rc = fail(why, why_len, rc, "cannot make the CA lock");
		goto err;
	}
	close(dfd);
	*out = ca;
	return 0;
err:
	if (dfd >= 0)
		close(dfd);
	EVP_PKEY_free(ca->leaf_key);
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca);
	return rc;
}

void ca_free(struct ca *ca)
{
	if (!ca)
		return;
	for (size_t i = 0; i < CA_LEAF_CACHE; i++)
		X509_free(ca->cache[i].cert);
	pthread_mutex_destroy(&ca->lock);
	EVP_PKEY_free(ca->leaf_key);
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca);
}

const char *ca_cert_path(const struct ca *ca)
{
	return ca->cert_path;
}

X509 *ca_cert(const struct ca *ca)
{
	return ca->cert;
}

EVP_PKEY *ca_leaf_key(struct ca *ca)
{
	return ca->leaf_key;
}

/* Caller holds ca->lock. */
static struct leaf_slot *cache_find(struct ca *ca, const char *name)
{
	for (size_t i = 0; i < CA_LEAF_CACHE; i++)
		if (ca->cache[i].cert && strcmp(ca->cache[i].name, name) == 0)
			return &ca->cache[i];
	return NULL;
}

/* A free slot, or else the least recently used one.  Caller holds ca->lock. */
static struct leaf_slot *cache_victim(struct ca *ca)
{
	struct leaf_slot *v = &ca->cache[0];
	for (size_t i = 0; i < CA_LEAF_CACHE; i++) {
		if (!ca->cache[i].cert)
			return &ca->cache[i];
		if (ca->cache[i].used < v->used)
			v = &ca->cache[i];
	}
	return v;
}

static bool fresh(const struct leaf_slot *s, time_t now)
{
	return now >= s->minted && now - s->minted < LEAF_REMINT_SECS;
}

X509 *ca_leaf(struct ca *ca, const char *name)
{
	char lname[SNI_NAME_MAX + 1];
	if (!ca || !name)
		return NULL;
	size_t n = strnlen(name, SNI_NAME_MAX + 2);
	if (n > SNI_NAME_MAX + 1 || sni_name_normalize(name, n, lname, sizeof(lname)) < 0)
		return NULL;
	time_t now = time(NULL);
	X509 *ret = NULL;

	pthread_mutex_lock(&ca->lock);
	struct leaf_slot *s = cache_find(ca, lname);
	if (s && fresh(s, now)) {
		s->used = ++ca->clock;
		if (X509_up_ref(s->cert) == 1)
			ret = s->cert;
		pthread_mutex_unlock(&ca->lock);
		return ret;
	}
	pthread_mutex_unlock(&ca->lock);

	/* Sign outside the lock: other names are not held up behind it. */
	X509 *x = mint_leaf(ca, lname);
	if (!x)
		return NULL;

	pthread_mutex_lock(&ca->lock);
	s = cache_find(ca, lname);
	if (s && fresh(s, now)) { /* another thread made one meanwhile: share it */
		X509_free(x);
	} else {
		if (!s)
			s = cache_victim(ca);
		X509_free(s->cert);
		memcpy(s->name, lname, strlen(lname) + 1);
		s->cert = x;
		s->minted = now;
	}
	s->used = ++ca->clock;
	if (X509_up_ref(s->cert) == 1)
		ret = s->cert;
	pthread_mutex_unlock(&ca->lock);
	return ret;
}

/* ---- the guest-facing server ------------------------------------------------------ */

static pthread_once_t bind_once = PTHREAD_ONCE_INIT;
static int bind_index = -1;

static void bind_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

static void bind_init(void)
{
	bind_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, bind_free);
}

int ca_ssl_bind_name(SSL *ssl, const char *name)
{
	char lname[SNI_NAME_MAX + 1];
	if (!ssl || !name)
		return -EINVAL;
	size_t n = strnlen(name, SNI_NAME_MAX + 2);
	if (n > SNI_NAME_MAX + 1 || sni_name_normalize(name, n, lname, sizeof(lname)) < 0)
		return -EINVAL;
	pthread_once(&bind_once, bind_init);
	if (bind_index < 0)
		return -ENOMEM;
	char *copy = strdup(lname);
	if (!copy)
		return -ENOMEM;
	free(SSL_get_ex_data(ssl, bind_index));
	if (SSL_set_ex_data(ssl, bind_index, copy) != 1) {
		SSL_set_ex_data(ssl, bind_index, NULL);
		free(copy);
		return -ENOMEM;
	}
	return 0;
}

/*
 * The servername callback: runs once per handshake, after OpenSSL has parsed
 * the ClientHello's extensions and before it picks a certificate, also when
 * the client sent no SNI.  It installs the leaf for the (normalized) SNI.
 */
static int on_servername(SSL *ssl, int *al, void *arg)
{
	struct ca *ca = arg;
	char name[SNI_NAME_MAX + 1];
	const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!sn || sni_name_normalize(sn, strnlen(sn, SNI_NAME_MAX + 2), name, sizeof(name)) < 0) {
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	const char *bound = bind_index >= 0 ? SSL_get_ex_data(ssl, bind_index) : NULL;
	if (bound && strcmp(bound, name) != 0) {
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	X509 *leaf = ca_leaf(ca, name);
	/* SSL_use_* take their own references; the leaf key is shared. */
	bool ok = leaf && SSL_use_certificate(ssl, leaf) == 1 &&
		  SSL_use_PrivateKey(ssl, ca->leaf_key) == 1;
	X509_free(leaf);
	if (!ok) {
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* ALPN: "http/1.1" or nothing; the proxy speaks HTTP/1.1 only. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const char h11[] = "http/1.1";
	(void)ssl;
	(void)arg;
	/* OpenSSL has checked the list's framing; the bounds are checked again anyway. */
	for (unsigned int i = 0; i < inlen;) {
		unsigned int n = in[i++];
		if (n > inlen - i)
			break;
		if (n == sizeof(h11) - 1 && memcmp(in + i, h11, n) == 0) {
			*out = in + i;
			*outlen = (unsigned char)n;
			return SSL_TLSEXT_ERR_OK;
		}
		i += n;
	}
	/* OpenSSL sends the fatal no_application_protocol alert. */
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

SSL_CTX *ca_server_ctx(struct ca *ca, char *why, size_t why_len)
{
	ERR_clear_error();
	if (!ca) {
		fail(why, why_len, -EINVAL, "no CA");
		return NULL;
	}
	pthread_once(&bind_once, bind_init);
	if (bind_index < 0) {
		fail(why, why_len, -ENOMEM, "cannot allocate SSL ex_data");
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		SSL_CTX_free(ctx);
		fail(why, why_len, -EIO, "cannot make the server TLS context");
		return NULL;
	}
	/* No resumption at all: every connection presents the leaf for its own
	 * SNI, and the proxy keeps no state across connections. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
	SSL_CTX_set_tlsext_servername_arg(ctx, ca);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	return ctx;
}

/* ---- upstream --------------------------------------------------------------------- */

SSL_CTX *upstream_ctx_new(const char *cafile, char *why, size_t why_len)
{
	static const unsigned char alpn[] = "\x08http/1.1";
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		SSL_CTX_free(ctx);
		fail(why, why_len, -EIO, "cannot make the upstream TLS context");
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1
		   : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		SSL_CTX_free(ctx);
		fail(why, why_len, -EINVAL, "cannot load trusted CAs from %s",
		     cafile ? cafile : "the system's default paths");
		return NULL;
	}
	/* SSL_CTX_set_alpn_protos returns 0 on success. */
	if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0) {
		SSL_CTX_free(ctx);
		fail(why, why_len, -ENOMEM, "cannot set ALPN");
		return NULL;
	}
	return ctx;
}

SSL *upstream_ssl_new(SSL_CTX *ctx, int fd, const char *name)
{
	char lname[SNI_NAME_MAX + 1];
	if (!ctx || fd < 0 || !name)
		return NULL;
	size_t n = strnlen(name, SNI_NAME_MAX + 2);
	if (n > SNI_NAME_MAX + 1 || sni_name_normalize(name, n, lname, sizeof(lname)) < 0)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	if (!ssl)
		return NULL;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (SSL_set_fd(ssl, fd) != 1 || SSL_set_tlsext_host_name(ssl, lname) != 1 ||
	    SSL_set1_host(ssl, lname) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}
