/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry client: pull.h says what it promises.  How:
 *
 *  - One `struct pull` per pull; one curl easy handle per thread (`struct
 *    conn`).  The manifest and config are fetched by the calling thread,
 *    layers by up to `parallel` worker threads, each streaming into a
 *    msb_blob_writer under the blob's store lock (so a concurrent pull of
 *    the same blob in another process waits, then finds it present).
 *  - Redirects are not left to libcurl: each hop is checked (http(s) only,
 *    http only with --insecure, at most 5) and the registry's Authorization
 *    is sent only to the registry's own origin (scheme, host and port), so a
 *    blob redirect to a CDN or another port never carries it.
 *  - Auth: a request goes out with the current Authorization (none at
 *    first); a 401 from the registry runs the WWW-Authenticate challenge
 *    once (Basic: our credentials; Bearer: a token from the realm, fetched
 *    with our credentials if we have any) and the request is sent again.
 *    The token is shared by the threads under a mutex; a generation counter
 *    makes threads that saw the same 401 refresh it once.
 *  - Everything that came from the network and ends up in a message is
 *    cut to printable ASCII first, so a registry cannot drive the terminal.
 *  - What the registry and the token realm send (header lines, the
 *    challenge, the token, error bodies) and the credentials files are read
 *    by pure, bounded parsers (pull-parse.h), fuzzed by
 *    tests/fuzz/fuzz_registry_auth.c; the rest of this file never looks at
 *    those bytes itself.
 */
#include "pull.h"

#include <archive.h>
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb.h>

#include "catalog.h"
#include "error.h"
#include "log.h"
#include "manifest.h"
#include "pull-parse.h"
#include "state.h"

#define TRIES		 4 /* attempts per request */
#define MISMATCH_TRIES	 2 /* attempts when the bytes do not match the digest */
#define REDIRECTS_MAX	 5 /* hops per request */
#define CA_FILE_MAX	 (4u << 20)
#define CA_CERTS_MAX	 4096
#define PARALLEL_DEFAULT 4
#define PARALLEL_MAX	 16
#define DOCKER_HUB	 "docker.io"
#define DOCKER_HUB_KEY	 "https://index.docker.io/v1/"
#define DEFAULT_OS	 MSB_PULL_DEFAULT_OS
#define DEFAULT_ARCH	 MSB_PULL_DEFAULT_ARCH
#define WHO		 "pull"

/* ---- small helpers ---------------------------------------------------------------------- */

/* Untrusted text for a message: printable ASCII only, at most outlen - 1 bytes. */
static void sanitize(const char *in, size_t n, char *out, size_t outlen)
{
	size_t j = 0;
	for (size_t i = 0; i < n && in[i] && j + 1 < outlen; i++)
		out[j++] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
	out[j] = '\0';
}

static char *b64_encode(const char *in, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
	return out;
}

/* Decode base64 (no whitespace); NULL if malformed. */
static char *b64_decode(const char *in)
{
	size_t n = strlen(in);
	if (n == 0 || n % 4 || n > MSB_PULL_AUTH_FILE_MAX)
		return NULL;
	unsigned char *out = malloc(n / 4 * 3 + 1);
	if (!out)
		return NULL;
	int k = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
	if (k < 0) {
		free(out);
		return NULL;
	}
	if (in[n - 1] == '=')
		k--;
	if (in[n - 2] == '=')
		k--;
	out[k] = '\0';
	if (memchr(out, '\0', (size_t)k)) {
		free(out);
		return NULL;
	}
	return (char *)out;
}

/* Free a string that held a secret (a password, or credentials in base64). */
static void wipe_free(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 0.5 s, 1 s, 2 s (+ up to 25% jitter, so pulls that failed together do not retry together). */
static void backoff(int attempt, double retry_after)
{
	static const double base[] = {0.5, 1.0, 2.0};
	double d = base[attempt - 1 < 3 ? attempt - 1 : 2];
	unsigned short rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) == (ssize_t)sizeof(rnd))
		d += d * 0.25 * (double)rnd / 65535.0;
	if (retry_after > d && retry_after <= 10)
		d = retry_after;
	sleep_s(d);
}

static void human(uint64_t n, char *out, size_t len)
{
	if (n < 1024)
		snprintf(out, len, "%llu B", (unsigned long long)n);
	else if (n < (1u << 20))
		snprintf(out, len, "%.1f KiB", (double)n / 1024);
	else if (n < (1u << 30))
		snprintf(out, len, "%.1f MiB", (double)n / (1 << 20));
	else
		snprintf(out, len, "%.2f GiB", (double)n / (1 << 30));
}

/* ---- the pull and its progress ------------------------------------------------------------- */

struct lprog {
	char id[24]; /* "sha256:" and 12 hex digits */
	uint64_t total, done;
	const char *state;
};

struct progress {
	bool on;
	size_t n;
	struct lprog *l;
	pthread_mutex_t mu;
	double last;
	bool drawn;
};

struct creds {
	char *user, *pass;
};

struct pull {
	const struct msb_store *s;
	const struct msb_pull_opts *o;
	const char *os, *arch, *variant;
	const char *registry;		      /* as in the reference ("docker.io") */
	const char *repo;		      /* NULL for a login check */
	char name[320];			      /* "registry/repository", for messages */
	char origin[MSB_PULL_ORIGIN_MAX];     /* "https://host[:port]" of the registry's API */
	char origin_key[MSB_PULL_ORIGIN_MAX]; /* as msb_pull_url_origin writes it, to compare */
	STACK_OF(X509) * cas;		      /* --ca-certs */
	struct creds cr;
	pthread_mutex_t mu; /* authz, gen */
	char *authz;	    /* "Authorization: ..." for the registry's origin */
	unsigned gen;
	atomic_int cancel;
	struct progress pr;
	char unusable[MSB_ERROR_MSG_MAX]; /* why a local image was not whole, for --pull never */
};

struct conn {
	CURL *h;
	char errbuf[CURL_ERROR_SIZE];
};

static void progress_draw(struct progress *pr, bool force)
{
	if (!pr->on)
		return;
	double t = now_s();
	if (!force && t - pr->last < 0.1)
		return;
	pr->last = t;
	if (pr->drawn)
		fprintf(stderr, "\033[%zuA", pr->n);
	for (size_t i = 0; i < pr->n; i++) {
		struct lprog *l = &pr->l[i];
		char done[32], total[32];
		human(l->done, done, sizeof(done));
		human(l->total, total, sizeof(total));
		if (l->state && !strcmp(l->state, "downloading"))
			fprintf(stderr, "\r\033[K%s  %-12s %s / %s\n", l->id, l->state, done,
				total);
		else
			fprintf(stderr, "\r\033[K%s  %-12s %s\n", l->id, l->state ? l->state : "",
				total);
	}
	fflush(stderr);
	pr->drawn = true;
}

static void progress_set(struct pull *p, struct lprog *l, const char *state, uint64_t done)
{
	if (!p->pr.on || !l)
		return;
	pthread_mutex_lock(&p->pr.mu);
	bool force = state != l->state;
	l->state = state;
	l->done = done;
	progress_draw(&p->pr, force);
	pthread_mutex_unlock(&p->pr.mu);
}

/* ---- TLS: extra CAs ------------------------------------------------------------------------- */

static int load_pem_file(const char *path, STACK_OF(X509) * sk, bool must, struct msb_error *err)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return msb_error_errno(err, -errno, "--ca-certs '%s'", path);
	if (!S_ISREG(st.st_mode) || st.st_size > CA_FILE_MAX) {
		if (must)
			return msb_error_set(err, -EINVAL,
					     "--ca-certs '%s': expected a PEM file of at most %u "
					     "bytes or a directory of them",
					     path, CA_FILE_MAX);
		return 0;
	}
	BIO *bio = BIO_new_file(path, "r");
	if (!bio) {
		ERR_clear_error();
		return must ? msb_error_set(err, -EINVAL, "--ca-certs '%s': cannot open", path) : 0;
	}
	int n = 0;
	X509 *x;
	while (sk_X509_num(sk) < CA_CERTS_MAX && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			break;
		}
		n++;
	}
	BIO_free(bio);
	ERR_clear_error(); /* the end of the file reads as a PEM "error" */
	return n;
}

static int load_cas(const char *path, STACK_OF(X509) * *out, struct msb_error *err)
{
	*out = NULL;
	struct stat st;
	if (stat(path, &st) < 0)
		return msb_error_errno(err, -errno, "--ca-certs '%s'", path);
	STACK_OF(X509) *sk = sk_X509_new_null();
	if (!sk)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int total = 0, r = 0;
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		if (!d) {
			sk_X509_free(sk);
			return msb_error_errno(err, -errno, "--ca-certs '%s'", path);
		}
		struct dirent *de;
		while ((de = readdir(d)) && r >= 0) {
			if (de->d_name[0] == '.')
				continue;
			char file[PATH_MAX];
			if (snprintf(file, sizeof(file), "%s/%s", path, de->d_name) >=
			    (int)sizeof(file))
				continue;
			r = load_pem_file(file, sk, false, err);
			if (r > 0)
				total += r;
		}
		closedir(d);
	} else {
		r = load_pem_file(path, sk, true, err);
		if (r > 0)
			total = r;
	}
	if (r >= 0 && total == 0)
		r = msb_error_set(err, -EINVAL, "--ca-certs '%s': no PEM certificates found", path);
	if (r < 0) {
		sk_X509_pop_free(sk, X509_free);
		return r;
	}
	*out = sk;
	return 0;
}

/*
 * libcurl has loaded the system CAs into the context's store by now; add
 * ours to them (not instead of them, as CURLOPT_CAINFO would).
 */
static CURLcode add_cas(CURL *h, void *sslctx, void *arg)
{
	(void)h;
	STACK_OF(X509) *sk = arg;
	X509_STORE *st = SSL_CTX_get_cert_store((SSL_CTX *)sslctx);
	for (int i = 0; i < sk_X509_num(sk); i++)
		X509_STORE_add_cert(st, sk_X509_value(sk, i)); /* a duplicate is fine */
	ERR_clear_error();
	return CURLE_OK;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

struct xfer {
	struct pull *p;
	struct conn *c;
	const char *what; /* "layer sha256:... from host/repo" */
	const char *accept;
	/* the body of a 2xx: to a blob writer, or to memory (at most max bytes) */
	struct msb_blob_writer *w;
	struct msb_error werr;
	int wfail;
	uint8_t *buf;
	size_t len, cap, max;
	int too_big;
	struct lprog *lp;
	const char *basic; /* "Authorization: Basic ..." for a token request */
	/* the response */
	long status;
	char ctype[128], dcd[80];
	char *www, *location;
	double retry_after;
	char errbody[MSB_PULL_ERRBODY_MAX];
	size_t errlen;
	int transient; /* the failure may pass if tried again */
};

static void xfer_clear_response(struct xfer *x)
{
	x->status = 0;
	x->ctype[0] = x->dcd[0] = '\0';
	free(x->www);
	free(x->location);
	x->www = x->location = NULL;
	x->retry_after = 0;
	x->errlen = 0;
	x->errbody[0] = '\0';
}

static void xfer_free(struct xfer *x)
{
	xfer_clear_response(x);
	free(x->buf);
	x->buf = NULL;
}

/*
 * One response header line: `HTTP/1.1 401 Unauthorized\r\n` or `Name: value\r\n`.
 * libcurl hands over the status line of each response it reads (redirects,
 * 401s), so a line need not be the last response's.
 */
void msb_pull_header_parse(const char *line, size_t n, struct msb_pull_header *h)
{
	memset(h, 0, sizeof(*h));
	if (n >= 5 && !memcmp(line, "HTTP/", 5)) {
		h->kind = MSB_PULL_HEADER_STATUS;
		const char *sp = memchr(line, ' ', n);
		if (sp && (size_t)(sp - line) + 4 <= n && isdigit((unsigned char)sp[1]) &&
		    isdigit((unsigned char)sp[2]) && isdigit((unsigned char)sp[3]))
			h->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
		return;
	}
	const char *colon = memchr(line, ':', n);
	if (!colon)
		return;
	size_t klen = (size_t)(colon - line);
	const char *v = colon + 1;
	size_t vlen = n - klen - 1;
	while (vlen && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	if (vlen >= MSB_PULL_HEADER_MAX)
		return; /* not one we could use */
	/* A NUL ends the value (it would end it as a C string anyway), and blanks before it. */
	const char *nul = memchr(v, '\0', vlen);
	if (nul)
		vlen = (size_t)(nul - v);
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
#define IS(name) (klen == sizeof(name) - 1 && !strncasecmp(line, name, klen))
	if (IS("content-type"))
		h->kind = MSB_PULL_HEADER_CONTENT_TYPE;
	else if (IS("docker-content-digest"))
		h->kind = MSB_PULL_HEADER_DIGEST;
	else if (IS("www-authenticate"))
		h->kind = MSB_PULL_HEADER_WWW_AUTHENTICATE;
	else if (IS("location"))
		h->kind = MSB_PULL_HEADER_LOCATION;
	else if (IS("retry-after"))
		h->kind = MSB_PULL_HEADER_RETRY_AFTER;
	else
		return;
#undef IS
	h->value = v;
	h->len = vlen;
	if (h->kind == MSB_PULL_HEADER_RETRY_AFTER) {
		/* Delta-seconds; an HTTP-date reads as 0 (none), as do "nan", "inf", "-1". */
		char tmp[16];
		snprintf(tmp, sizeof(tmp), "%.*s", (int)(vlen < 15 ? vlen : 15), v);
		double d = atof(tmp);
		h->retry_after = isfinite(d) && d > 0 ? d : 0;
	}
}

static bool is_bearer(const char *v, size_t n)
{
	return n >= 6 && !strncasecmp(v, "bearer", 6);
}

static size_t on_header(char *data, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nitems;
	struct msb_pull_header h;
	msb_pull_header_parse(data, n, &h);
	switch (h.kind) {
	case MSB_PULL_HEADER_STATUS:
		/* A new response. */
		xfer_clear_response(x);
		x->status = h.status;
		break;
	case MSB_PULL_HEADER_CONTENT_TYPE:
		snprintf(x->ctype, sizeof(x->ctype), "%.*s", (int)h.len, h.value);
		break;
	case MSB_PULL_HEADER_DIGEST:
		snprintf(x->dcd, sizeof(x->dcd), "%.*s", (int)h.len, h.value);
		break;
	case MSB_PULL_HEADER_WWW_AUTHENTICATE:
		/* Several challenges: Bearer wins over Basic. */
		if (!x->www || (!is_bearer(x->www, strlen(x->www)) && is_bearer(h.value, h.len))) {
			free(x->www);
			x->www = strndup(h.value, h.len);
		}
		break;
	case MSB_PULL_HEADER_LOCATION:
		free(x->location);
		x->location = strndup(h.value, h.len);
		break;
	case MSB_PULL_HEADER_RETRY_AFTER:
		x->retry_after = h.retry_after;
		break;
	case MSB_PULL_HEADER_OTHER:
	default:
		break;
	}
	return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;
	if (x->status < 200 || x->status > 299) {
		size_t room = sizeof(x->errbody) - 1 - x->errlen;
		size_t k = n < room ? n : room;
		memcpy(x->errbody + x->errlen, data, k);
		x->errlen += k;
		x->errbody[x->errlen] = '\0';
		return n;
	}
	if (x->w) {
		if (msb_blob_writer_write(x->w, data, n, &x->werr) < 0) {
			x->wfail = 1;
			return 0; /* curl stops: CURLE_WRITE_ERROR */
		}
		return n;
	}
	if (n > x->max - x->len) {
		x->too_big = 1;
		return 0;
	}
	if (x->len + n > x->cap) {
		size_t cap = x->cap ? x->cap : 16384;
		while (cap < x->len + n)
			cap *= 2;
		if (cap > x->max + 1)
			cap = x->max + 1;
		uint8_t *b = realloc(x->buf, cap + 1);
		if (!b) {
			x->too_big = 1;
			return 0;
		}
		x->buf = b;
		x->cap = cap;
	}
	memcpy(x->buf + x->len, data, n);
	x->len += n;
	return n;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	(void)dltotal;
	(void)ultotal;
	(void)ulnow;
	struct xfer *x = arg;
	if (atomic_load(&x->p->cancel))
		return 1; /* another layer failed: stop */
	if (x->lp && x->w && x->status >= 200 && x->status <= 299)
		progress_set(x->p, x->lp, "downloading", (uint64_t)dlnow);
	return 0;
}

/* Same-origin checks compare what this writes (pull-parse.h). */
int msb_pull_url_origin(const char *url, char *origin, size_t len, char scheme[8])
{
	CURLU *u = curl_url();
	if (!u)
		return -ENOMEM;
	char *sch = NULL, *host = NULL, *port = NULL;
	int r = -EINVAL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &sch, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
	    (!strcasecmp(sch, "https") || !strcasecmp(sch, "http"))) {
		for (char *q = host; *q; q++)
			*q = (char)tolower((unsigned char)*q);
		snprintf(scheme, 8, "%s", strcasecmp(sch, "https") ? "http" : "https");
		int k = snprintf(origin, len, "%s://%s:%s", scheme, host, port);
		r = k >= 0 && (size_t)k < len ? 0 : -ENAMETOOLONG;
	}
	if (r < 0 && len)
		origin[0] = '\0';
	curl_free(sch);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

/* May we send a request to url?  https always; http only with --insecure. */
static int url_allowed(const struct pull *p, const char *url, char *origin, size_t len)
{
	char scheme[8];
	if (msb_pull_url_origin(url, origin, len, scheme) < 0)
		return -EINVAL;
	if (!strcmp(scheme, "http") && !p->o->insecure)
		return -EPERM;
	return 0;
}

static void curl_failure(struct xfer *x, CURLcode rc, struct msb_error *err, int *code)
{
	char detail[CURL_ERROR_SIZE + 8];
	sanitize(x->c->errbuf[0] ? x->c->errbuf : curl_easy_strerror(rc), CURL_ERROR_SIZE, detail,
		 sizeof(detail));
	const char *reg = x->p->registry;
	x->transient = 0;
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		x->transient = 1;
		*code = msb_error_set(err, -EIO, "%s: %s", x->what, detail);
		break;
	case CURLE_PEER_FAILED_VERIFICATION:
		*code = msb_error_set(err, -EIO,
				      "%s: TLS: the certificate of %s is not trusted (%s); pass "
				      "--ca-certs with its CA",
				      x->what, reg, detail);
		break;
	case CURLE_SSL_CONNECT_ERROR:
		*code = msb_error_set(
			err, -EIO, "%s: TLS handshake with %s failed (%s)%s", x->what, reg, detail,
			x->p->o->insecure ? ""
					  : "; if the registry speaks plain HTTP, pass --insecure");
		break;
	case CURLE_ABORTED_BY_CALLBACK:
		*code = msb_error_set(err, -ECANCELED, "%s: cancelled", x->what);
		break;
	default:
		*code = msb_error_set(err, -EIO, "%s: %s", x->what, detail);
		break;
	}
}

/*
 * One HTTP GET of url: a complete response of any status (0), or a
 * transport failure (negative, x->transient set when worth retrying).
 */
static int perform_once(struct xfer *x, const char *url, const char *authz, struct msb_error *err)
{
	struct pull *p = x->p;
	CURL *h = x->c->h;
	curl_easy_reset(h);
	xfer_clear_response(x);
	x->len = 0;
	x->too_big = 0;
	x->wfail = 0;
	x->transient = 0;
	x->c->errbuf[0] = '\0';
	struct curl_slist *hdrs = NULL, *t;
	char accept[512];
	if (x->accept) {
		snprintf(accept, sizeof(accept), "Accept: %s", x->accept);
		if ((t = curl_slist_append(hdrs, accept)))
			hdrs = t;
	}
	const char *auth = authz ? authz : x->basic;
	if (auth && (t = curl_slist_append(hdrs, auth)))
		hdrs = t;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, p->o->insecure ? "http,https" : "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
	/* No total timeout (layers can be large): a transfer slower than 1 KiB/s for 30 s fails. */
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "msb/" MSB_VERSION_STRING);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->c->errbuf);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	if (hdrs)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (p->cas) {
		curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, add_cas);
		curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, p->cas);
	}
	msb_log(MSB_LOG_DEBUG, WHO, "GET %s%s", url, auth ? " (with Authorization)" : "");
	CURLcode rc = curl_easy_perform(h);
	curl_slist_free_all(hdrs);
	int r = 0;
	if (x->wfail) {
		/* The store refused the bytes: too many (a mismatch), or the disk. */
		*err = x->werr;
		r = x->werr.code;
		x->transient = 0;
	} else if (x->too_big) {
		r = msb_error_set(err, -E2BIG, "%s: more than the %zu bytes allowed", x->what,
				  x->max);
	} else if (rc != CURLE_OK) {
		curl_failure(x, rc, err, &r);
	} else if (!x->status) {
		long st = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
		x->status = st;
	}
	return r;
}

void msb_pull_challenge_free(struct msb_pull_challenge *ch)
{
	free(ch->realm);
	free(ch->service);
	free(ch->scope);
	memset(ch, 0, sizeof(*ch));
}

/*
 * One auth-param value at *pp (end: e): a quoted-string with its
 * backslash escapes undone, or a token up to ',' or ' '.  *pp moves past it.
 * out (NULL: the value is skipped) has room for e - *pp bytes and a NUL.
 */
static void challenge_value(const char **pp, const char *e, char *out)
{
	const char *p = *pp;
	size_t o = 0;
	if (p < e && *p == '"') {
		for (p++; p < e && *p != '"'; p++) {
			if (*p == '\\' && p + 1 < e)
				p++;
			if (out)
				out[o++] = *p;
		}
		if (p < e)
			p++; /* the closing quote */
	} else {
		for (; p < e && *p != ',' && *p != ' '; p++)
			if (out)
				out[o++] = *p;
	}
	if (out)
		out[o] = '\0';
	*pp = p;
}

/*
 * RFC 7235's grammar, leniently: the scheme up to a space, then key=value
 * pairs separated by commas and spaces; a key not followed by '=' is the
 * next challenge's scheme, which ends ours.
 */
int msb_pull_challenge_parse(const char *h, size_t n, struct msb_pull_challenge *ch)
{
	memset(ch, 0, sizeof(*ch));
	if (n >= MSB_PULL_HEADER_MAX)
		return -E2BIG;
	const char *nul = memchr(h, '\0', n);
	const char *p = h, *e = nul ? nul : h + n; /* a NUL ends it, as in a C string */
	while (p < e && *p == ' ')
		p++;
	const char *sp = memchr(p, ' ', (size_t)(e - p));
	size_t sl = (size_t)((sp ? sp : e) - p);
	if (sl == 0 || sl >= sizeof(ch->scheme))
		return -EPROTO;
	memcpy(ch->scheme, p, sl);
	ch->scheme[sl] = '\0';
	ch->kind = !strcasecmp(ch->scheme, "basic")    ? MSB_PULL_AUTH_BASIC
		   : !strcasecmp(ch->scheme, "bearer") ? MSB_PULL_AUTH_BEARER
						       : MSB_PULL_AUTH_OTHER;
	p += sl;
	for (unsigned params = 0;; params++) {
		while (p < e && (*p == ' ' || *p == ','))
			p++;
		if (p == e)
			break;
		const char *k = p;
		while (p < e && (isalnum((unsigned char)*p) || *p == '_' || *p == '-'))
			p++;
		size_t klen = (size_t)(p - k);
		while (p < e && *p == ' ')
			p++;
		if (!klen || p == e || *p != '=')
			break; /* the next challenge begins: ours is complete */
		if (params == MSB_PULL_CHALLENGE_PARAMS_MAX) {
			msb_pull_challenge_free(ch);
			return -E2BIG;
		}
		p++;
		while (p < e && *p == ' ')
			p++;
		char **slot = NULL;
		if (klen == 5 && !strncasecmp(k, "realm", 5))
			slot = &ch->realm;
		else if (klen == 7 && !strncasecmp(k, "service", 7))
			slot = &ch->service;
		else if (klen == 5 && !strncasecmp(k, "scope", 5))
			slot = &ch->scope;
		if (slot && *slot)
			slot = NULL; /* the first one counts */
		char *val = NULL;
		if (slot && !(val = malloc((size_t)(e - p) + 1))) {
			msb_pull_challenge_free(ch);
			return -ENOMEM;
		}
		challenge_value(&p, e, val);
		if (slot)
			*slot = val;
	}
	return 0;
}

static int do_request(struct xfer *x, const char *url0, struct msb_error *err);

/* The "errors" of a registry's error body, for a message: " (CODE: message)". */
void msb_pull_error_detail(const char *body, size_t n, char *out, size_t len)
{
	if (!len)
		return;
	out[0] = '\0';
	if (n > MSB_PULL_ERRBODY_MAX)
		n = MSB_PULL_ERRBODY_MAX; /* what the client keeps of a body */
	if (!n)
		return;
	json_t *j = json_loadb(body, n, 0, NULL);
	if (!j) {
		/* Not the registry's JSON (a proxy, or Go's "Client sent an HTTP request to an
		 * HTTPS server."): its first line. */
		char line[120];
		size_t ll = 0;
		while (ll < n && body[ll] != '\r' && body[ll] != '\n')
			ll++;
		sanitize(body, ll, line, sizeof(line));
		if (line[0])
			snprintf(out, len, " (%s)", line);
		return;
	}
	json_t *e0 = json_array_get(json_object_get(j, "errors"), 0);
	const char *code = json_string_value(json_object_get(e0, "code"));
	const char *msg = json_string_value(json_object_get(e0, "message"));
	char c[64] = "", m[160] = "";
	if (code)
		sanitize(code, strlen(code), c, sizeof(c));
	if (msg)
		sanitize(msg, strlen(msg), m, sizeof(m));
	if (code || msg)
		snprintf(out, len, " (%s%s%s)", c, code && msg ? ": " : "", m);
	json_decref(j);
}

/* A non-2xx answer as an error; x->transient for 5xx and 429. */
static int status_error(struct xfer *x, struct msb_error *err)
{
	char d[256];
	msb_pull_error_detail(x->errbody, x->errlen, d, sizeof(d));
	struct pull *p = x->p;
	long st = x->status;
	x->transient = 0;
	if (st == 401) {
		if (p->cr.user)
			return msb_error_set(err, -EACCES,
					     "%s: %s refused the credentials of user '%s'%s",
					     x->what, p->registry, p->cr.user, d);
		return msb_error_set(err, -EACCES,
				     "%s: %s requires credentials%s; run msb registry login %s",
				     x->what, p->registry, d, p->registry);
	}
	if (st == 403)
		return msb_error_set(err, -EACCES, "%s: access denied (403)%s", x->what, d);
	if (st == 404)
		return msb_error_set(err, -ENOENT, "%s: not found (404)%s", x->what, d);
	if (st == 429 || (st >= 500 && st <= 599)) {
		x->transient = 1;
		return msb_error_set(err, -EIO, "%s: the registry answered %ld%s", x->what, st, d);
	}
	return msb_error_set(err, -EPROTO, "%s: unexpected HTTP status %ld%s", x->what, st, d);
}

int msb_pull_token_parse(const void *body, size_t n, char **token)
{
	*token = NULL;
	if (n > MSB_PULL_TOKEN_RESP_MAX)
		return -E2BIG;
	json_t *j = json_loadb(body, n, 0, NULL);
	const char *tok = json_string_value(json_object_get(j, "token"));
	if (!tok || !*tok)
		tok = json_string_value(json_object_get(j, "access_token"));
	size_t tl = tok ? strlen(tok) : 0;
	/* The token goes into a header line as it is: no CR, LF or anything else odd. */
	bool ok = tl > 0 && tl <= MSB_PULL_TOKEN_MAX;
	for (size_t i = 0; ok && i < tl; i++)
		ok = isalnum((unsigned char)tok[i]) || strchr("-._~+/=", tok[i]);
	int r = ok ? 0 : -EPROTO;
	if (ok && !(*token = strdup(tok)))
		r = -ENOMEM;
	json_decref(j);
	return r;
}

/* A token from the Bearer realm; on success p->authz is "Authorization: Bearer <token>". */
static int bearer_token(struct xfer *x, const struct msb_pull_challenge *ch, struct msb_error *err)
{
	struct pull *p = x->p;
	char origin[MSB_PULL_ORIGIN_MAX];
	if (!ch->realm)
		return msb_error_set(err, -EPROTO, "%s: %s's Bearer challenge has no realm",
				     x->what, p->registry);
	int r = url_allowed(p, ch->realm, origin, sizeof(origin));
	if (r < 0) {
		char rs[200];
		sanitize(ch->realm, strlen(ch->realm), rs, sizeof(rs));
		return msb_error_set(err, -EPROTO, "%s: token realm '%s' refused (%s)", x->what, rs,
				     r == -EPERM ? "plain http needs --insecure"
						 : "expected an http(s) URL");
	}
	char defscope[400];
	const char *scope = ch->scope;
	if (!scope && p->repo) {
		snprintf(defscope, sizeof(defscope), "repository:%s:pull", p->repo);
		scope = defscope;
	}
	char *esvc = ch->service ? curl_easy_escape(x->c->h, ch->service, 0) : NULL;
	char *escope = scope ? curl_easy_escape(x->c->h, scope, 0) : NULL;
	char *url = NULL;
	const char *sep = strchr(ch->realm, '?') ? "&" : "?";
	int n = asprintf(&url, "%s%s%s%s%s%s%s", ch->realm, (esvc || escope) ? sep : "",
			 esvc ? "service=" : "", esvc ? esvc : "", esvc && escope ? "&" : "",
			 escope ? "scope=" : "", escope ? escope : "");
	curl_free(esvc);
	curl_free(escope);
	if (n < 0)
		return msb_error_set(err, -ENOMEM, "out of memory");
	char *basic = NULL;
	if (p->cr.user) {
		char *up = NULL, *b = NULL;
		if (asprintf(&up, "%s:%s", p->cr.user, p->cr.pass ? p->cr.pass : "") < 0 ||
		    !(b = b64_encode(up, strlen(up))) ||
		    asprintf(&basic, "Authorization: Basic %s", b) < 0)
			basic = NULL;
		wipe_free(up);
		wipe_free(b);
		if (!basic) {
			free(url);
			return msb_error_set(err, -ENOMEM, "out of memory");
		}
	}
	char what[400];
	snprintf(what, sizeof(what), "token for %s from %s", p->registry, origin);
	struct xfer t = {
		.p = p, .c = x->c, .what = what, .max = MSB_PULL_TOKEN_RESP_MAX, .basic = basic};
	/* Not do_request: the realm's answers are never retried with a registry token. */
	for (int attempt = 1;; attempt++) {
		r = perform_once(&t, url, NULL, err);
		if (r == 0 && (t.status < 200 || t.status > 299)) {
			if (t.status == 401 || t.status == 403) {
				r = p->cr.user ? msb_error_set(err, -EACCES,
							       "%s: %s refused the credentials of "
							       "user '%s'",
							       x->what, origin, p->cr.user)
					       : msb_error_set(err, -EACCES,
							       "%s: %s refused an anonymous token; "
							       "run msb registry login %s",
							       x->what, origin, p->registry);
				t.transient = 0;
			} else {
				r = status_error(&t, err);
			}
		}
		if (r == 0 || !t.transient || attempt >= TRIES || atomic_load(&p->cancel))
			break;
		backoff(attempt, t.retry_after);
	}
	free(url);
	wipe_free(basic);
	if (r < 0) {
		xfer_free(&t);
		return r;
	}
	char *tok = NULL;
	r = msb_pull_token_parse(t.buf, t.len, &tok);
	xfer_free(&t);
	if (r == -ENOMEM)
		return msb_error_set(err, r, "out of memory");
	if (r < 0)
		return msb_error_set(err, -EPROTO, "%s: %s answered no usable token", x->what,
				     origin);
	char *line = NULL;
	if (asprintf(&line, "Authorization: Bearer %s", tok) < 0)
		line = NULL;
	wipe_free(tok);
	if (!line)
		return msb_error_set(err, -ENOMEM, "out of memory");
	free(p->authz);
	p->authz = line;
	return 0;
}

/* Answer the registry's 401 challenge (once per request); gen: the authz the request used. */
static int authenticate(struct xfer *x, unsigned gen, struct msb_error *err)
{
	struct pull *p = x->p;
	struct msb_pull_challenge ch;
	int r = 0;
	pthread_mutex_lock(&p->mu);
	if (p->gen != gen) {
		/* Another thread answered the same challenge meanwhile: use its answer. */
		pthread_mutex_unlock(&p->mu);
		return 0;
	}
	if ((r = msb_pull_challenge_parse(x->www, strlen(x->www), &ch)) < 0) {
		pthread_mutex_unlock(&p->mu);
		if (r == -ENOMEM)
			return msb_error_set(err, r, "out of memory");
		return msb_error_set(err, -EPROTO, "%s: unreadable WWW-Authenticate from %s",
				     x->what, p->registry);
	}
	if (ch.kind == MSB_PULL_AUTH_BASIC) {
		if (!p->cr.user) {
			r = msb_error_set(err, -EACCES,
					  "%s: %s requires credentials; run msb registry login %s",
					  x->what, p->registry, p->registry);
		} else {
			char *up = NULL, *b = NULL, *line = NULL;
			if (asprintf(&up, "%s:%s", p->cr.user, p->cr.pass ? p->cr.pass : "") < 0 ||
			    !(b = b64_encode(up, strlen(up))) ||
			    asprintf(&line, "Authorization: Basic %s", b) < 0) {
				line = NULL;
				r = msb_error_set(err, -ENOMEM, "out of memory");
			} else {
				free(p->authz);
				p->authz = line;
			}
			wipe_free(up);
			wipe_free(b);
		}
	} else if (ch.kind == MSB_PULL_AUTH_BEARER) {
		r = bearer_token(x, &ch, err);
	} else {
		char sch[20];
		sanitize(ch.scheme, strlen(ch.scheme), sch, sizeof(sch));
		r = msb_error_set(err, -ENOTSUP,
				  "%s: %s asks for '%s' authentication, which msb "
				  "does not speak (Basic, Bearer)",
				  x->what, p->registry, sch);
	}
	if (r == 0)
		p->gen++;
	pthread_mutex_unlock(&p->mu);
	msb_pull_challenge_free(&ch);
	return r;
}

/*
 * GET url0 on the registry, following redirects and answering one auth
 * challenge: 0 with the final response's x->status, or a transport error.
 */
static int do_request(struct xfer *x, const char *url0, struct msb_error *err)
{
	struct pull *p = x->p;
	char *url = strdup(url0);
	if (!url)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int r, hops = 0;
	bool authed = false;
	for (;;) {
		char origin[MSB_PULL_ORIGIN_MAX];
		if ((r = url_allowed(p, url, origin, sizeof(origin))) < 0) {
			r = msb_error_set(err, -EPROTO, "%s: refusing %s URL", x->what,
					  r == -EPERM ? "a plain http (no --insecure)"
						      : "a non-http(s)");
			break;
		}
		/* The registry's credentials go to the registry's origin and nowhere else. */
		bool same = !strcmp(origin, p->origin_key);
		char *authz = NULL;
		unsigned gen = 0;
		if (same) {
			pthread_mutex_lock(&p->mu);
			authz = p->authz ? strdup(p->authz) : NULL;
			gen = p->gen;
			pthread_mutex_unlock(&p->mu);
		}
		r = perform_once(x, url, authz, err);
		free(authz);
		if (r < 0)
			break;
		long st = x->status;
		if (st == 301 || st == 302 || st == 303 || st == 307 || st == 308) {
			char *loc = NULL;
			curl_easy_getinfo(x->c->h, CURLINFO_REDIRECT_URL, &loc);
			if (!loc) {
				r = msb_error_set(err, -EPROTO,
						  "%s: redirect (%ld) without a Location", x->what,
						  st);
				break;
			}
			if (++hops > REDIRECTS_MAX) {
				r = msb_error_set(err, -EPROTO, "%s: more than %d redirects",
						  x->what, REDIRECTS_MAX);
				break;
			}
			char scheme[8], o2[MSB_PULL_ORIGIN_MAX];
			if (msb_pull_url_origin(loc, o2, sizeof(o2), scheme) < 0 ||
			    (!strcmp(scheme, "http") && !p->o->insecure)) {
				char l[120];
				sanitize(loc, strlen(loc), l, sizeof(l));
				r = msb_error_set(
					err, -EPROTO,
					"%s: refusing the redirect to '%s' (only https%s)", x->what,
					l, p->o->insecure ? " and http" : "");
				break;
			}
			char *next = strdup(loc);
			if (!next) {
				r = msb_error_set(err, -ENOMEM, "out of memory");
				break;
			}
			free(url);
			url = next;
			continue;
		}
		if (st == 401 && same && !authed && x->www) {
			authed = true;
			if ((r = authenticate(x, gen, err)) < 0)
				break;
			continue;
		}
		break;
	}
	free(url);
	return r;
}

/* A transient failure that outlasted every try says so. */
static void note_tries(struct msb_error *err, int attempts)
{
	size_t n = strlen(err->msg);
	if (attempts > 1 && n + 24 < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - n, " (tried %d times)", attempts);
}

/* ---- fetching documents and blobs ---------------------------------------------------------------
 */

/* GET a manifest or index (by tag or digest) into memory, with retries. */
static int fetch_manifest(struct pull *p, struct conn *c, const char *reference, const char *what,
			  struct xfer *x, struct msb_error *err)
{
	char url[1024];
	snprintf(url, sizeof(url), "%s/v2/%s/manifests/%s", p->origin, p->repo, reference);
	memset(x, 0, sizeof(*x));
	x->p = p;
	x->c = c;
	x->what = what;
	x->accept = msb_media_accept_header();
	x->max = MSB_MANIFEST_MAX;
	int r;
	for (int attempt = 1;; attempt++) {
		r = do_request(x, url, err);
		if (r == 0 && x->status != 200)
			r = status_error(x, err);
		if (r == 0 || !x->transient || atomic_load(&p->cancel))
			break;
		if (attempt >= TRIES) {
			note_tries(err, attempt);
			break;
		}
		backoff(attempt, x->retry_after);
	}
	if (r < 0)
		xfer_free(x);
	return r;
}

/*
 * Make sure blob d is in the store: under its lock, present already or
 * downloaded, verified and published here.  kind: "layer", "config".
 */
static int fetch_blob(struct pull *p, struct conn *c, const struct msb_descriptor *d,
		      const char *kind, struct lprog *lp, struct msb_error *err)
{
	char what[512];
	snprintf(what, sizeof(what), "%s %s from %s", kind, d->digest, p->name);
	int lk = msb_store_lock(p->s, d->digest, err);
	if (lk < 0)
		return lk;
	if (msb_store_has(p->s, d->digest)) {
		msb_store_unlock(lk);
		progress_set(p, lp, "exists", (uint64_t)d->size);
		return 0;
	}
	char url[1024];
	snprintf(url, sizeof(url), "%s/v2/%s/blobs/%s", p->origin, p->repo, d->digest);
	struct xfer x = {.p = p, .c = c, .what = what, .lp = lp};
	int r = 0, mismatches = 0;
	progress_set(p, lp, "downloading", 0);
	for (int attempt = 1;; attempt++) {
		if (!x.w) {
			if ((r = msb_blob_writer_open(p->s, d->digest, d->size, &x.w, err)) < 0)
				break;
			msb_blob_writer_label(x.w, what);
		} else if ((r = msb_blob_writer_reset(x.w, err)) < 0) {
			break;
		}
		memset(&x.werr, 0, sizeof(x.werr));
		r = do_request(&x, url, err);
		if (r == 0 && x.status != 200)
			r = status_error(&x, err);
		if (r == 0 && msb_blob_writer_written(x.w) < (uint64_t)d->size) {
			/* A short body that looked complete (or a proxy that cut it). */
			r = msb_error_set(err, -EIO,
					  "%s: the download stopped after %llu of %lld bytes", what,
					  (unsigned long long)msb_blob_writer_written(x.w),
					  (long long)d->size);
			x.transient = 1;
		}
		if (r == 0) {
			r = msb_blob_writer_commit(x.w,
						   err); /* size and sha256; frees the writer */
			x.w = NULL;
			if (r == 0)
				break;
		}
		/* Wrong bytes once may be a bad proxy or network; twice is the registry. */
		if (r == -EBADMSG)
			x.transient = ++mismatches < MISMATCH_TRIES;
		if (r == -EBADMSG && mismatches > 1)
			note_tries(err, mismatches);
		if (!x.transient || atomic_load(&p->cancel))
			break;
		if (attempt >= TRIES) {
			note_tries(err, attempt);
			break;
		}
		msb_log(MSB_LOG_DEBUG, WHO, "retrying: %s", err->msg);
		backoff(attempt, x.retry_after);
	}
	if (x.w)
		msb_blob_writer_abort(x.w);
	xfer_free(&x);
	msb_store_unlock(lk);
	progress_set(p, lp, r == 0 ? "done" : "failed", r == 0 ? (uint64_t)d->size : 0);
	return r;
}

/* sha256 of the uncompressed layer (gzip and zstd decompressed natively, by content). */
static int compute_diffid(struct pull *p, const char *digest, char out[72], struct msb_error *err)
{
	int fd = msb_store_blob_open(p->s, digest, err);
	if (fd < 0)
		return fd;
	struct archive *a = archive_read_new();
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int r = 0;
	if (!a || !md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		r = msb_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	/* Built-in decompressors only (ARCHIVE_WARN would mean an external program). */
	if (archive_read_support_filter_gzip(a) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(a) != ARCHIVE_OK ||
	    archive_read_support_format_raw(a) != ARCHIVE_OK) {
		r = msb_error_set(err, -ENOTSUP, "libarchive lacks built-in gzip/zstd");
		goto out;
	}
	struct archive_entry *e;
	if (archive_read_open_fd(a, fd, 65536) != ARCHIVE_OK ||
	    archive_read_next_header(a, &e) != ARCHIVE_OK) {
		const char *why = archive_error_string(a);
		char w[160];
		sanitize(why ? why : "unreadable", 200, w, sizeof(w));
		r = msb_error_set(err, -EINVAL, "layer %s from %s: %s", digest, p->name, w);
		goto out;
	}
	if (archive_filter_count(a) > 2) {
		r = msb_error_set(err, -EINVAL, "layer %s from %s: compressed more than once",
				  digest, p->name);
		goto out;
	}
	char *buf = malloc(65536);
	if (!buf) {
		r = msb_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	la_ssize_t n;
	while ((n = archive_read_data(a, buf, 65536)) > 0)
		EVP_DigestUpdate(md, buf, (size_t)n);
	free(buf);
	if (n < 0) {
		const char *why = archive_error_string(a);
		char w[160];
		sanitize(why ? why : "unreadable", 200, w, sizeof(w));
		r = msb_error_set(err, -EINVAL, "layer %s from %s: decompressing: %s", digest,
				  p->name, w);
		goto out;
	}
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned hl = 0;
	static const char hexd[] = "0123456789abcdef";
	if (!EVP_DigestFinal_ex(md, h, &hl) || hl != 32) {
		r = msb_error_set(err, -ENOMEM, "sha256 failed");
		goto out;
	}
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++) {
		out[7 + 2 * i] = hexd[h[i] >> 4];
		out[8 + 2 * i] = hexd[h[i] & 15];
	}
	out[71] = '\0';
out:
	if (a)
		archive_read_free(a);
	EVP_MD_CTX_free(md);
	close(fd);
	return r;
}

/* The layer's uncompressed digest must be the config's diff_id for it. */
static int check_diffid(struct pull *p, const struct msb_descriptor *d, const char *want,
			struct msb_error *err)
{
	char got[72];
	if (msb_store_diffid_get(p->s, d->digest, got) < 0) {
		int r = compute_diffid(p, d->digest, got, err);
		if (r < 0)
			return r;
		struct msb_error e2 = MSB_ERROR_INIT;
		if (msb_store_diffid_set(p->s, d->digest, got, &e2) < 0)
			msb_log(MSB_LOG_DEBUG, WHO, "%s", e2.msg); /* only a cache */
	}
	if (strcmp(got, want))
		return msb_error_set(err, -EBADMSG,
				     "layer %s from %s: uncompressed digest %s does not match the "
				     "config's diff_id %s",
				     d->digest, p->name, got, want);
	return 0;
}

/* ---- layers in parallel --------------------------------------------------------------------- */

struct job {
	struct pull *p;
	const struct msb_manifest *m;
	const struct msb_image_config *cfg;
	pthread_mutex_t mu;
	size_t next;
	int r;
	struct msb_error err;
};

static void *layer_worker(void *arg)
{
	struct job *j = arg;
	struct conn c = {.h = curl_easy_init()};
	for (;;) {
		pthread_mutex_lock(&j->mu);
		size_t i = j->next;
		bool stop = j->r < 0 || i >= j->m->nlayers || !c.h;
		if (!stop)
			j->next++;
		pthread_mutex_unlock(&j->mu);
		if (stop)
			break;
		struct msb_error e = MSB_ERROR_INIT;
		const struct msb_descriptor *d = &j->m->layers[i];
		struct lprog *lp = j->p->pr.on ? &j->p->pr.l[i] : NULL;
		int r = fetch_blob(j->p, &c, d, "layer", lp, &e);
		if (r == 0)
			r = check_diffid(j->p, d, j->cfg->diff_ids[i], &e);
		if (r < 0) {
			pthread_mutex_lock(&j->mu);
			/* The first failure is the one to report; later ones are its echo. */
			if (j->r == 0) {
				j->r = r;
				j->err = e;
				atomic_store(&j->p->cancel, 1);
			}
			pthread_mutex_unlock(&j->mu);
			break;
		}
	}
	if (!c.h) {
		pthread_mutex_lock(&j->mu);
		if (j->r == 0) {
			j->r = msb_error_set(&j->err, -ENOMEM, "curl: out of memory");
			atomic_store(&j->p->cancel, 1);
		}
		pthread_mutex_unlock(&j->mu);
	}
	curl_easy_cleanup(c.h);
	return NULL;
}

static int fetch_layers(struct pull *p, const struct msb_manifest *m,
			const struct msb_image_config *cfg, struct msb_error *err)
{
	struct job j = {.p = p, .m = m, .cfg = cfg};
	pthread_mutex_init(&j.mu, NULL);
	int par = p->o->parallel > 0 ? p->o->parallel : PARALLEL_DEFAULT;
	if (par > PARALLEL_MAX)
		par = PARALLEL_MAX;
	if ((size_t)par > m->nlayers)
		par = (int)m->nlayers;
	pthread_t th[PARALLEL_MAX];
	int started = 0;
	/* The calling thread is one of the workers, so a failed pthread_create only slows us. */
	for (int i = 1; i < par; i++)
		if (pthread_create(&th[started], NULL, layer_worker, &j) == 0)
			started++;
	layer_worker(&j);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&j.mu);
	if (j.r < 0)
		*err = j.err;
	return j.r;
}

/* ---- what the store holds ----------------------------------------------------------------------
 */

/* The config is for the platform we want (variant aside: the index chose that). */
static int check_platform(struct pull *p, const struct msb_image_config *cfg, const char *what,
			  struct msb_error *err)
{
	if ((cfg->os && strcmp(cfg->os, p->os)) || (cfg->arch && strcmp(cfg->arch, p->arch))) {
		char o[40], a[40];
		sanitize(cfg->os ? cfg->os : "?", 64, o, sizeof(o));
		sanitize(cfg->arch ? cfg->arch : "?", 64, a, sizeof(a));
		return msb_error_set(err, -ENOENT, "%s is an image for %s/%s, not %s/%s", what, o,
				     a, p->os, p->arch);
	}
	return 0;
}

/* Manifest and config parsed, and the layer count checked, from the store. */
static int load_image(struct pull *p, const char *mdigest, struct msb_manifest *m,
		      struct msb_image_config *cfg, struct msb_error *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	enum msb_media_kind kind;
	memset(m, 0, sizeof(*m));
	memset(cfg, 0, sizeof(*cfg));
	int r = msb_store_blob_read(p->s, mdigest, MSB_MANIFEST_MAX, &buf, &len, err);
	if (r == 0)
		r = msb_manifest_detect(NULL, buf, len, &kind, err);
	if (r == 0 && kind != MSB_MEDIA_OCI_MANIFEST && kind != MSB_MEDIA_DOCKER_MANIFEST)
		r = msb_error_set(err, -EINVAL, "%s is not an image manifest", mdigest);
	if (r == 0)
		r = msb_manifest_parse(buf, len, m, err);
	free(buf);
	buf = NULL;
	if (r == 0)
		r = msb_store_blob_read(p->s, m->config.digest, MSB_CONFIG_MAX, &buf, &len, err);
	if (r == 0)
		r = msb_image_config_parse(buf, len, cfg, err);
	free(buf);
	if (r == 0 && cfg->ndiff_ids != m->nlayers)
		r = msb_error_set(err, -EINVAL, "%s: the config lists %zu diff_ids for %zu layers",
				  mdigest, cfg->ndiff_ids, m->nlayers);
	if (r < 0) {
		msb_manifest_free(m);
		msb_image_config_free(cfg);
	}
	return r;
}

/* 1 if the platform manifest mdigest and everything it names are in the store, verified. */
static int image_complete(struct pull *p, const char *mdigest)
{
	struct msb_manifest m;
	struct msb_image_config cfg;
	struct msb_error e = MSB_ERROR_INIT;
	if (load_image(p, mdigest, &m, &cfg, &e) < 0) {
		msb_log(MSB_LOG_DEBUG, WHO, "%s: not complete: %s", mdigest, e.msg);
		return 0;
	}
	int ok = check_platform(p, &cfg, mdigest, &e) == 0;
	for (size_t i = 0; ok && i < m.nlayers; i++)
		ok = msb_store_has(p->s, m.layers[i].digest) &&
		     check_diffid(p, &m.layers[i], cfg.diff_ids[i], &e) == 0;
	if (!ok && e.msg[0])
		snprintf(p->unusable, sizeof(p->unusable), "%s", e.msg);
	msb_manifest_free(&m);
	msb_image_config_free(&cfg);
	return ok;
}

/* A digest ref already in the store: its platform manifest, if complete. */
static int local_digest(struct pull *p, const char *digest, char out[72])
{
	uint8_t *buf = NULL;
	size_t len = 0;
	enum msb_media_kind kind;
	struct msb_error e = MSB_ERROR_INIT;
	if (msb_store_blob_read(p->s, digest, MSB_MANIFEST_MAX, &buf, &len, &e) < 0)
		return 0;
	int ok = 0;
	if (msb_manifest_detect(NULL, buf, len, &kind, &e) == 0) {
		if (kind == MSB_MEDIA_OCI_INDEX || kind == MSB_MEDIA_DOCKER_LIST) {
			struct msb_index idx;
			if (msb_index_parse(buf, len, &idx, &e) == 0) {
				int i = msb_index_select(&idx, p->os, p->arch, p->variant, &e);
				if (i >= 0 && image_complete(p, idx.manifests[i].digest)) {
					snprintf(out, 72, "%s", idx.manifests[i].digest);
					ok = 1;
				}
				msb_index_free(&idx);
			}
		} else if (image_complete(p, digest)) {
			snprintf(out, 72, "%s", digest);
			ok = 1;
		}
	}
	free(buf);
	return ok;
}

/* ---- the pull from the registry -----------------------------------------------------------------
 */

/* The bytes of a manifest: digest as expected (when one is), Docker-Content-Digest agreeing. */
static int check_manifest_bytes(const struct xfer *x, const char *expect, int64_t size,
				char got[72], struct msb_error *err)
{
	msb_digest_of(x->buf ? (const void *)x->buf : "", x->len, got);
	if (!got[0])
		return msb_error_set(err, -ENOMEM, "sha256 failed");
	if (size >= 0 && (uint64_t)size != x->len)
		return msb_error_set(err, -EBADMSG, "%s: got %zu bytes, the index says %lld",
				     x->what, x->len, (long long)size);
	if (expect && strcmp(expect, got))
		return msb_error_set(err, -EBADMSG, "%s: content digest %s does not match", x->what,
				     got);
	if (msb_digest_valid(x->dcd) && strcmp(x->dcd, got))
		return msb_error_set(err, -EBADMSG,
				     "%s: content digest %s does not match the registry's "
				     "Docker-Content-Digest %s",
				     x->what, got, x->dcd);
	return 0;
}

/*
 * The platform manifest `ref` names, fetched, checked and stored: its bytes
 * in x->buf (x->len) and its digest in mdigest.  An index on the way is
 * checked and stored too, and its entry for our platform fetched by digest.
 */
static int resolve(struct pull *p, struct conn *c, const struct msb_image_ref *ref, struct xfer *x,
		   char mdigest[72], struct msb_error *err)
{
	char what[512];
	enum msb_media_kind kind = MSB_MEDIA_UNKNOWN;
	if (ref->digest)
		snprintf(what, sizeof(what), "manifest %s of %s", ref->digest, p->name);
	else
		snprintf(what, sizeof(what), "manifest of %s:%s", p->name, ref->tag);
	int r = fetch_manifest(p, c, ref->digest ? ref->digest : ref->tag, what, x, err);
	if (r < 0)
		return r;
	r = check_manifest_bytes(x, ref->digest, -1, mdigest, err);
	if (r == 0)
		r = msb_manifest_detect(x->ctype, x->buf, x->len, &kind, err);
	if (r == 0)
		r = msb_store_put(p->s, mdigest, x->buf, x->len, err);
	if (r < 0 || (kind != MSB_MEDIA_OCI_INDEX && kind != MSB_MEDIA_DOCKER_LIST))
		goto out;

	/* An index: the entry for our platform, fetched by its digest. */
	struct msb_index idx;
	char child[72];
	int64_t size;
	if ((r = msb_index_parse(x->buf, x->len, &idx, err)) < 0) {
		msb_error_prefix(err, "%s: ", what);
		goto out;
	}
	int i = msb_index_select(&idx, p->os, p->arch, p->variant, err);
	if (i >= 0) {
		snprintf(child, sizeof(child), "%s", idx.manifests[i].digest);
		size = idx.manifests[i].size;
	}
	msb_index_free(&idx);
	if (i < 0) {
		msb_error_prefix(err, "%s: ", what);
		r = i;
		goto out;
	}
	snprintf(what, sizeof(what), "manifest %s of %s", child, p->name);
	if (size > (int64_t)MSB_MANIFEST_MAX) {
		r = msb_error_set(err, -E2BIG, "%s: %lld bytes, over the %u allowed", what,
				  (long long)size, MSB_MANIFEST_MAX);
		goto out;
	}
	xfer_free(x);
	if ((r = fetch_manifest(p, c, child, what, x, err)) < 0)
		return r;
	r = check_manifest_bytes(x, child, size, mdigest, err);
	if (r == 0)
		r = msb_manifest_detect(x->ctype, x->buf, x->len, &kind, err);
	if (r == 0 && kind != MSB_MEDIA_OCI_MANIFEST && kind != MSB_MEDIA_DOCKER_MANIFEST)
		r = msb_error_set(err, -EPROTO, "%s: an index inside an index", what);
	if (r == 0)
		r = msb_store_put(p->s, mdigest, x->buf, x->len, err);
out:
	if (r < 0)
		xfer_free(x);
	return r;
}

/* The manifest names a container image config and layers msb can unpack. */
static int check_manifest(struct pull *p, const struct msb_manifest *m, struct msb_error *err)
{
	char t[100];
	enum msb_media_kind ck = msb_media_kind(m->config.media_type);
	if (ck != MSB_MEDIA_OCI_CONFIG && ck != MSB_MEDIA_DOCKER_CONFIG) {
		sanitize(m->config.media_type ? m->config.media_type : "(none)", 200, t, sizeof(t));
		return msb_error_set(err, -ENOTSUP,
				     "%s: not a container image (config media type '%s')", p->name,
				     t);
	}
	if (m->config.size > (int64_t)MSB_CONFIG_MAX)
		return msb_error_set(
			err, -E2BIG, "config %s from %s: %lld bytes, over the %u allowed",
			m->config.digest, p->name, (long long)m->config.size, MSB_CONFIG_MAX);
	for (size_t l = 0; l < m->nlayers; l++) {
		enum msb_media_kind lk = msb_media_kind(m->layers[l].media_type);
		if (lk == MSB_MEDIA_LAYER_FOREIGN)
			return msb_error_set(err, -ENOTSUP,
					     "layer %s of %s is a foreign (non-distributable) "
					     "layer, which msb does not pull",
					     m->layers[l].digest, p->name);
		if (lk != MSB_MEDIA_LAYER_TAR && lk != MSB_MEDIA_LAYER_GZIP &&
		    lk != MSB_MEDIA_LAYER_ZSTD) {
			sanitize(m->layers[l].media_type ? m->layers[l].media_type : "(none)", 200,
				 t, sizeof(t));
			return msb_error_set(err, -ENOTSUP,
					     "layer %s of %s: unknown media type '%s'",
					     m->layers[l].digest, p->name, t);
		}
	}
	return 0;
}

static void progress_begin(struct pull *p, const struct msb_manifest *m)
{
	if (!p->pr.on)
		return;
	p->pr.l = calloc(m->nlayers, sizeof(struct lprog));
	if (!p->pr.l) {
		p->pr.on = false;
		return;
	}
	p->pr.n = m->nlayers;
	for (size_t l = 0; l < m->nlayers; l++) {
		snprintf(p->pr.l[l].id, sizeof(p->pr.l[l].id), "%.19s", m->layers[l].digest);
		p->pr.l[l].total = (uint64_t)m->layers[l].size;
		p->pr.l[l].state = "waiting";
	}
	progress_draw(&p->pr, true);
}

static int remote_pull(struct pull *p, struct conn *c, const struct msb_image_ref *ref,
		       char out[72], struct msb_error *err)
{
	struct xfer x;
	char mdigest[72];
	int r = resolve(p, c, ref, &x, mdigest, err);
	if (r < 0)
		return r;
	struct msb_manifest m;
	r = msb_manifest_parse(x.buf, x.len, &m, err);
	xfer_free(&x);
	if (r < 0) {
		msb_error_prefix(err, "manifest %s of %s: ", mdigest, p->name);
		return r;
	}
	struct msb_image_config cfg = {0};
	uint8_t *cbuf = NULL;
	size_t clen = 0;
	r = check_manifest(p, &m, err);
	/* The config first: a wrong layer count costs no layer download. */
	if (r == 0)
		r = fetch_blob(p, c, &m.config, "config", NULL, err);
	if (r == 0)
		r = msb_store_blob_read(p->s, m.config.digest, MSB_CONFIG_MAX, &cbuf, &clen, err);
	if (r == 0 && (r = msb_image_config_parse(cbuf, clen, &cfg, err)) < 0)
		msb_error_prefix(err, "config %s from %s: ", m.config.digest, p->name);
	free(cbuf);
	if (r == 0 && cfg.ndiff_ids != m.nlayers)
		r = msb_error_set(err, -EINVAL,
				  "config %s from %s lists %zu diff_ids for the manifest's %zu "
				  "layers",
				  m.config.digest, p->name, cfg.ndiff_ids, m.nlayers);
	if (r == 0)
		r = check_platform(p, &cfg, p->name, err);
	if (r == 0) {
		progress_begin(p, &m);
		r = fetch_layers(p, &m, &cfg, err);
		if (p->pr.on) {
			pthread_mutex_lock(&p->pr.mu);
			progress_draw(&p->pr, true);
			pthread_mutex_unlock(&p->pr.mu);
		}
	}
	if (r == 0)
		snprintf(out, 72, "%s", mdigest);
	msb_manifest_free(&m);
	msb_image_config_free(&cfg);
	return r;
}

/* ---- credentials ------------------------------------------------------------------------------
 */

/* "host[:port]" of an auths key ("https://index.docker.io/v1/", "h:5000", "http://h/"). */
static void key_host(const char *key, char *out, size_t len)
{
	const char *k = key;
	if (!strncasecmp(k, "https://", 8))
		k += 8;
	else if (!strncasecmp(k, "http://", 7))
		k += 7;
	size_t n = strcspn(k, "/");
	if (n >= len)
		n = len - 1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)k[i]);
	out[n] = '\0';
	if (!strcmp(out, "index.docker.io") || !strcmp(out, "registry-1.docker.io"))
		snprintf(out, len, DOCKER_HUB);
}

int msb_pull_creds_parse(const void *text, size_t n, const char *host, struct msb_pull_creds *c)
{
	memset(c, 0, sizeof(*c));
	if (n > MSB_PULL_AUTH_FILE_MAX)
		return -E2BIG;
	json_t *j = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
	if (!j)
		return -EINVAL;
	if (json_object_get(j, "credsStore") || json_object_get(j, "credHelpers"))
		c->notes |= MSB_PULL_CREDS_HELPERS;
	json_t *auths = json_object_get(j, "auths");
	const char *k;
	json_t *v;
	int found = 0;
	json_object_foreach(auths, k, v)
	{
		char kh[300];
		key_host(k, kh, sizeof(kh));
		if (strcmp(kh, host) || !json_is_object(v))
			continue;
		const char *a = json_string_value(json_object_get(v, "auth"));
		const char *u = json_string_value(json_object_get(v, "username"));
		const char *pw = json_string_value(json_object_get(v, "password"));
		if (a && *a) {
			char *dec = b64_decode(a);
			char *colon = dec ? strchr(dec, ':') : NULL;
			if (colon) {
				*colon = '\0';
				c->user = strdup(dec);
				c->pass = strdup(colon + 1);
				c->from_auth = true;
				found = c->user && c->pass;
			} else {
				c->notes |= MSB_PULL_CREDS_BAD_AUTH;
			}
			wipe_free(dec);
		} else if (u && pw) {
			c->user = strdup(u);
			c->pass = strdup(pw);
			found = c->user && c->pass;
		} else if (json_object_get(v, "identitytoken")) {
			c->notes |= MSB_PULL_CREDS_IDENTITY_TOKEN;
		}
		if (found)
			break;
		msb_pull_creds_free(c);
	}
	json_decref(j);
	return found;
}

void msb_pull_creds_free(struct msb_pull_creds *c)
{
	free(c->user);
	wipe_free(c->pass);
	c->user = c->pass = NULL;
	c->from_auth = false;
}

/*
 * The bytes of the regular file path (NUL-terminated, malloc'd): 0, or
 * -errno, -EFBIG for more than max bytes or not a regular file.  The bound
 * holds as the file is read, not only as fstat saw it.
 */
static int read_file_max(const char *path, size_t max, char **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		close(fd);
		return -EFBIG;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	char *buf = malloc(cap + 1);
	int r = buf ? 0 : -ENOMEM;
	while (r == 0) {
		if (len == cap) {
			if (cap > max) {
				r = -EFBIG;
				break;
			}
			size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			char *nb = malloc(ncap + 1);
			if (!nb) {
				r = -ENOMEM;
				break;
			}
			memcpy(nb, buf, len);
			explicit_bzero(buf, len);
			free(buf);
			buf = nb;
			cap = ncap;
		}
		ssize_t k = read(fd, buf + len, cap - len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			r = -errno;
		else if (k == 0)
			break;
		else
			len += (size_t)k;
	}
	close(fd);
	if (r == 0 && len > max)
		r = -EFBIG;
	if (r < 0) {
		if (buf)
			explicit_bzero(buf, len);
		free(buf);
		return r;
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
}

/* A credentials file's text, wiped when freed. */
static void text_free(char *t, size_t n)
{
	if (t)
		explicit_bzero(t, n);
	free(t);
}

static json_t *load_json_file(const char *path, size_t max, int *errno_out)
{
	char *t;
	size_t n;
	int r = read_file_max(path, max, &t, &n);
	*errno_out = -r;
	if (r < 0)
		return NULL;
	json_t *j = json_loadb(t, n, JSON_REJECT_DUPLICATES, NULL);
	text_free(t, n);
	if (!j)
		*errno_out = EINVAL;
	return j;
}

/* Credentials for host from one config file's "auths": 1 found, 0 not. */
static int creds_from(const char *path, const char *host, struct creds *cr)
{
	char *t;
	size_t n;
	struct msb_pull_creds c;
	int r = read_file_max(path, MSB_PULL_AUTH_FILE_MAX, &t, &n);
	if (r == 0) {
		r = msb_pull_creds_parse(t, n, host, &c);
		text_free(t, n);
	}
	if (r < 0) {
		if (r != -ENOENT)
			msb_log(MSB_LOG_DEBUG, WHO, "%s: unreadable (%s); ignored", path,
				strerror(-r));
		return 0;
	}
	if (c.notes & MSB_PULL_CREDS_HELPERS)
		msb_log(MSB_LOG_DEBUG, WHO,
			"%s: credential helpers (credsStore, credHelpers) are not run by msb; "
			"use msb registry login",
			path);
	if (c.notes & MSB_PULL_CREDS_BAD_AUTH)
		msb_log(MSB_LOG_DEBUG, WHO,
			"%s: auths[%s].auth is not base64 of user:password; ignored", path, host);
	if (c.notes & MSB_PULL_CREDS_IDENTITY_TOKEN)
		msb_log(MSB_LOG_DEBUG, WHO,
			"%s: auths[%s] holds an identity token, which msb does not use", path,
			host);
	if (r == 0)
		return 0;
	msb_log(MSB_LOG_DEBUG, WHO, "credentials for %s from %s", host, path);
	cr->user = c.user;
	cr->pass = c.pass;
	return 1;
}

static void creds_lookup(const char *home, const char *host, struct creds *cr)
{
	char path[PATH_MAX];
	cr->user = cr->pass = NULL;
	if (home) {
		snprintf(path, sizeof(path), "%s/auth.json", home);
		if (creds_from(path, host, cr))
			return;
	}
	const char *dc = getenv("DOCKER_CONFIG");
	const char *h = getenv("HOME");
	if (dc && *dc) {
		snprintf(path, sizeof(path), "%s/config.json", dc);
	} else {
		if (!h || !*h) {
			struct passwd *pw = getpwuid(getuid());
			h = pw ? pw->pw_dir : NULL;
		}
		if (!h)
			return;
		snprintf(path, sizeof(path), "%s/.docker/config.json", h);
	}
	creds_from(path, host, cr);
}

static void creds_free(struct creds *cr)
{
	free(cr->user);
	wipe_free(cr->pass);
	cr->user = cr->pass = NULL;
}

/* ---- setting up and tearing down ----------------------------------------------------------------
 */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const char *api_host_of(const char *registry)
{
	return strcmp(registry, DOCKER_HUB) ? registry : "registry-1.docker.io";
}

static int pull_init(struct pull *p, const struct msb_store *s, const char *registry,
		     const char *repo, const struct msb_pull_opts *o, struct msb_error *err)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->pr.mu, NULL);
	atomic_init(&p->cancel, 0);
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return msb_error_set(err, -ENOMEM, "curl: %s", curl_easy_strerror(curl_init_rc));
	p->s = s;
	p->o = o;
	p->os = o->os ? o->os : DEFAULT_OS;
	p->arch = o->arch ? o->arch : DEFAULT_ARCH;
	p->variant = o->variant && *o->variant ? o->variant : NULL;
	p->registry = registry;
	p->repo = repo;
	if (repo)
		snprintf(p->name, sizeof(p->name), "%s/%s", registry, repo);
	else
		snprintf(p->name, sizeof(p->name), "%s", registry);
	snprintf(p->origin, sizeof(p->origin), "%s://%s", o->insecure ? "http" : "https",
		 api_host_of(registry));
	char sch[8];
	if (msb_pull_url_origin(p->origin, p->origin_key, sizeof(p->origin_key), sch) < 0)
		return msb_error_set(err, -EINVAL, "registry '%s': not a host[:port]", registry);
	if (o->ca_certs) {
		int r = load_cas(o->ca_certs, &p->cas, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static void pull_fini(struct pull *p)
{
	if (p->cas)
		sk_X509_pop_free(p->cas, X509_free);
	creds_free(&p->cr);
	wipe_free(p->authz);
	if (p->pr.l)
		free(p->pr.l);
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->pr.mu);
}

/* MSB_HOME of a store ("<home>/images"). */
static char *store_home(const struct msb_store *s)
{
	size_t n = strlen(s->dir);
	if (n > 7 && !strcmp(s->dir + n - 7, "/images"))
		return strndup(s->dir, n - 7);
	return NULL;
}

int msb_image_pull(const struct msb_store *s, const struct msb_image_ref *ref,
		   const struct msb_pull_opts *o, char manifest_digest[72], struct msb_error *err)
{
	static const struct msb_pull_opts defaults;
	if (!o)
		o = &defaults;
	if (!ref || !ref->registry || !ref->repository || (!ref->tag && !ref->digest))
		return msb_error_set(err, -EINVAL, "pull: incomplete image reference");
	struct pull p;
	struct conn c = {0};
	char *key = NULL, *home = NULL;
	char pinned[72] = "", got[72] = "";
	int guard = -1;
	struct msb_error e2 = MSB_ERROR_INIT;
	int r = pull_init(&p, s, ref->registry, ref->repository, o, err);
	if (r < 0)
		goto out;
	if (!ref->digest) {
		if (!(key = msb_image_pin_key(ref, o))) {
			r = msb_error_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		if ((r = msb_store_pin_get(s, key, pinned, &e2)) < 0 && r != -ENOENT) {
			*err = e2;
			goto out;
		}
	}
	r = 0;
	/* A digest names one thing forever: never asked for again once it is here. */
	if (ref->digest && local_digest(&p, ref->digest, got))
		goto done;
	if (!ref->digest && o->policy != MSB_PULL_ALWAYS && pinned[0] &&
	    image_complete(&p, pinned)) {
		snprintf(got, sizeof(got), "%s", pinned);
		goto done;
	}
	if (o->policy == MSB_PULL_NEVER) {
		if (p.unusable[0])
			r = msb_error_set(err, -EBADMSG,
					  "%s%s%s in the image store is not usable: %s", p.name,
					  ref->digest ? "@" : ":",
					  ref->digest ? ref->digest : ref->tag, p.unusable);
		else
			r = msb_error_set(err, -ENOENT,
					  "%s%s%s is not in the image store (pull policy never)",
					  p.name, ref->digest ? "@" : ":",
					  ref->digest ? ref->digest : ref->tag);
		goto out;
	}
	home = store_home(s);
	creds_lookup(home, ref->registry, &p.cr);
	p.pr.on = !o->quiet && isatty(STDERR_FILENO);
	if (!(c.h = curl_easy_init())) {
		r = msb_error_set(err, -ENOMEM, "curl: out of memory");
		goto out;
	}
	/* Prune must not take blobs published before their pin exists. */
	if ((guard = msb_image_prune_guard(s, err)) < 0) {
		r = guard;
		goto out;
	}
	if ((r = remote_pull(&p, &c, ref, got, err)) < 0)
		goto out;
	if (key) {
		if ((r = msb_store_pin_set(s, key, got, err)) < 0)
			goto out;
		if (pinned[0] && strcmp(pinned, got) && !o->quiet)
			fprintf(stderr, "msb: %s moved: now %s (was %s)\n", key, got, pinned);
	}
done:
	snprintf(manifest_digest, 72, "%s", got);
	r = 0;
out:
	if (guard >= 0)
		msb_store_unlock(guard);
	if (c.h)
		curl_easy_cleanup(c.h);
	free(home);
	free(key);
	pull_fini(&p);
	return r;
}

/* ---- login / logout ----------------------------------------------------------------------------
 */

int msb_registry_normalize(const char *in, char *out, size_t len, struct msb_error *err)
{
	char host[300];
	if (!in || !*in || strlen(in) > 255)
		return msb_error_set(err, -EINVAL,
				     "invalid registry '%.80s' (expected host[:port])",
				     in ? in : "");
	key_host(in, host, sizeof(host));
	if (!strcmp(host, DOCKER_HUB)) {
		snprintf(out, len, DOCKER_HUB);
		return 0;
	}
	/* The reference grammar knows what a registry host is: "<host>/x" must parse to it. */
	char probe[320];
	snprintf(probe, sizeof(probe), "%s/x", host);
	struct msb_image_ref ref;
	struct msb_error e = MSB_ERROR_INIT;
	int ok = msb_image_ref_parse(probe, &ref, &e) == 0 && !strcmp(ref.registry, host);
	if (ok)
		snprintf(out, len, "%s", ref.registry);
	msb_image_ref_free(&ref);
	if (!ok) {
		char q[100];
		sanitize(in, strlen(in), q, sizeof(q));
		return msb_error_set(err, -EINVAL,
				     "invalid registry '%s' (expected host[:port] with a '.' or a "
				     "port, or localhost)",
				     q);
	}
	return 0;
}

static const char *auth_key(const char *host)
{
	return strcmp(host, DOCKER_HUB) ? host : DOCKER_HUB_KEY;
}

/* Replace home/auth.json with j: 0600 from its creation, fsync'd, renamed into place. */
static int auth_write(const char *home, json_t *j, struct msb_error *err)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/auth.json", home) >= (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s/.auth.json.XXXXXX", home) >= (int)sizeof(tmp))
		return msb_error_set(err, -ENAMETOOLONG, "credentials: path too long");
	char *text = json_dumps(j, JSON_SORT_KEYS | JSON_INDENT(2));
	if (!text)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
	int r = 0;
	if (fd < 0) {
		r = msb_error_errno(err, -errno, "credentials: create '%s'", tmp);
		goto out;
	}
	size_t n = strlen(text), off = 0;
	while (off < n) {
		ssize_t k = write(fd, text + off, n - off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			r = msb_error_errno(err, k < 0 ? -errno : -EIO, "credentials: write '%s'",
					    tmp);
			break;
		}
		off += (size_t)k;
	}
	if (r == 0 && (fchmod(fd, 0600) < 0 || write(fd, "\n", 1) != 1 || fsync(fd) < 0))
		r = msb_error_errno(err, -errno, "credentials: write '%s'", tmp);
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = msb_error_errno(err, -errno, "credentials: rename to '%s'", path);
	if (r < 0) {
		unlink(tmp);
		goto out;
	}
	int dfd = open(home, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
out:
	explicit_bzero(text, strlen(text));
	free(text);
	return r;
}

/* Read-modify-write MSB_HOME/auth.json under the store's "auth" lock. */
static int auth_update(const char *home_in, const char *host, const char *user, const char *pw,
		       struct msb_error *err)
{
	char home[PATH_MAX];
	int r;
	if (home_in)
		snprintf(home, sizeof(home), "%s", home_in);
	else if ((r = msb_state_default_home(home, sizeof(home), err)) < 0)
		return r;
	struct msb_store s;
	if ((r = msb_store_open(home, &s, err)) < 0)
		return r;
	int lk = msb_store_lock(&s, "auth", err);
	if (lk < 0) {
		msb_store_close(&s);
		return lk;
	}
	char path[PATH_MAX];
	int e;
	if (snprintf(path, sizeof(path), "%s/auth.json", home) >= (int)sizeof(path)) {
		r = msb_error_set(err, -ENAMETOOLONG, "credentials: path too long");
		goto unlock;
	}
	json_t *j = load_json_file(path, MSB_PULL_AUTH_FILE_MAX, &e);
	if (!j && e != ENOENT) {
		r = msb_error_set(err, -EINVAL,
				  "credentials: '%s' is unreadable (%s); not touching it", path,
				  strerror(e));
		goto out;
	}
	if (!j)
		j = json_object();
	json_t *auths = json_object_get(j, "auths");
	if (!json_is_object(auths)) {
		auths = json_object();
		json_object_set_new(j, "auths", auths);
	}
	/* Drop every key that names this registry ("https://h", "h"), then add ours. */
	bool had = false;
	const char *k;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(auths, tmp, k, v)
	{
		char kh[300];
		key_host(k, kh, sizeof(kh));
		if (!strcmp(kh, host)) {
			json_object_del(auths, k);
			had = true;
		}
	}
	if (user) {
		char *up = NULL, *b = NULL;
		if (asprintf(&up, "%s:%s", user, pw) < 0 || !(b = b64_encode(up, strlen(up)))) {
			free(up);
			r = msb_error_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		json_object_set_new(auths, auth_key(host), json_pack("{ss}", "auth", b));
		wipe_free(up);
		wipe_free(b);
	} else if (!had) {
		r = msb_error_set(err, -ENOENT, "no stored credentials for %s", host);
		goto out;
	}
	r = auth_write(home, j, err);
out:
	json_decref(j);
unlock:
	msb_store_unlock(lk);
	msb_store_close(&s);
	return r;
}

int msb_registry_login(const char *home, const char *registry, const char *user,
		       const char *password, const struct msb_pull_opts *o, struct msb_error *err)
{
	static const struct msb_pull_opts defaults;
	if (!o)
		o = &defaults;
	char host[300];
	int r = msb_registry_normalize(registry, host, sizeof(host), err);
	if (r < 0)
		return r;
	if (!user || !*user || strchr(user, ':') || !password)
		return msb_error_set(err, -EINVAL,
				     "login: expected a user name without ':' and a password");
	struct pull p;
	if ((r = pull_init(&p, NULL, host, NULL, o, err)) < 0) {
		pull_fini(&p);
		return r;
	}
	p.cr.user = strdup(user);
	p.cr.pass = strdup(password);
	struct conn c = {.h = curl_easy_init()};
	char what[400], url[400];
	snprintf(what, sizeof(what), "login to %s", host);
	snprintf(url, sizeof(url), "%s/v2/", p.origin);
	struct xfer x = {.p = &p, .c = &c, .what = what, .max = 1u << 20};
	if (!c.h || !p.cr.user || !p.cr.pass) {
		r = msb_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (int attempt = 1;; attempt++) {
		r = do_request(&x, url, err);
		if (r == 0 && x.status != 200)
			r = status_error(&x, err);
		if (r == 0 || !x.transient || attempt >= TRIES)
			break;
		backoff(attempt, x.retry_after);
	}
	if (r == 0 && !p.authz)
		msb_log(MSB_LOG_INFO, WHO, "%s did not ask for credentials; storing them anyway",
			host);
	if (r == 0)
		r = auth_update(home, host, user, password, err);
out:
	xfer_free(&x);
	curl_easy_cleanup(c.h);
	pull_fini(&p);
	return r;
}

int msb_registry_logout(const char *home, const char *registry, struct msb_error *err)
{
	char host[300];
	int r = msb_registry_normalize(registry, host, sizeof(host), err);
	if (r < 0)
		return r;
	return auth_update(home, host, NULL, NULL, err);
}
