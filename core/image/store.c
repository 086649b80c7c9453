/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image store (store.h says what it holds and promises).
 *
 * How the promises are kept:
 *  - Nothing enters blobs/ unverified: a blob is streamed into images/tmp
 *    while sha256 runs over it, checked against the digest and size it was
 *    opened with, fsync'd, made read-only and renamed into place.  rename(2)
 *    is atomic, so a reader sees the whole blob or none; two writers of one
 *    digest publish identical bytes, so the last rename wins harmlessly.
 *  - Every temp entry is flock'd by its owner from creation to publish or
 *    removal.  A sweep removes only entries it can lock itself (their owner
 *    is gone) and that are older than a minute (which covers the instant
 *    between creating a file and locking it).  Names are random and never
 *    reused, so a sweep cannot hit a successor's file.
 *  - Lock files are never removed: removing one while a process waits on it
 *    would let a newcomer lock a fresh file with the same name, and two
 *    writers would then both believe they hold the lock.
 *  - Every path is built from a validated digest's hex or a fixed name, and
 *    opened relative to the store's directory fd with O_NOFOLLOW.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"
#include "ref.h"
#include "state.h"

#define BLOBS_DIR     "blobs/sha256"
#define REFS_FILE     "refs.json"
#define REFS_LOCK     "refs"
#define REFS_MAX      (16u << 20)
#define SWEEP_AGE     60
#define LOCK_NAME_MAX 128

/* ---- small helpers ---------------------------------------------------------------------- */

static void hex_of(const unsigned char *md, size_t n, char *out)
{
	static const char hexd[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hexd[md[i] >> 4];
		out[2 * i + 1] = hexd[md[i] & 15];
	}
	out[2 * n] = '\0';
}

/* "blobs/sha256/<hex>" relative to the store; -EINVAL for an invalid digest. */
static int blob_rel(const char *digest, char rel[96])
{
	if (!digest || !msb_digest_valid(digest))
		return -EINVAL;
	snprintf(rel, 96, BLOBS_DIR "/%s", digest + 7);
	return 0;
}

static int fsync_dir_at(int dirfd, const char *rel)
{
	int fd = openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

static int flock_retry(int fd, int op)
{
	while (flock(fd, op) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/*
 * Create and lock a fresh file images/tmp/<prefix>.<pid>.<random> (mode
 * 0600); name receives the path relative to the store.
 */
static int tmp_create(const struct msb_store *s, const char *prefix, char name[64],
		      struct msb_error *err)
{
	for (int tries = 0; tries < 16; tries++) {
		unsigned char rnd[8];
		char hex[17];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return msb_error_errno(err, -EIO, "image store: getrandom");
		hex_of(rnd, sizeof(rnd), hex);
		snprintf(name, 64, "tmp/%s.%ld.%s", prefix, (long)getpid(), hex);
		int fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
				0600);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0)
			return msb_error_errno(err, -errno, "image store: create '%s/%s'", s->dir,
					       name);
		/* Fresh and unique: nobody else can hold this lock; it marks the file live. */
		int r = flock_retry(fd, LOCK_EX | LOCK_NB);
		if (r < 0) {
			unlinkat(s->dirfd, name, 0);
			close(fd);
			return msb_error_errno(err, r, "image store: lock '%s/%s'", s->dir, name);
		}
		return fd;
	}
	return msb_error_set(err, -EEXIST, "image store: no free temp name in '%s/tmp'", s->dir);
}

/* ---- open / close / sweep ----------------------------------------------------------------- */

int msb_store_sweep(const struct msb_store *s, int min_age)
{
	int tfd = openat(s->dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (tfd < 0)
		return -errno;
	DIR *d = fdopendir(tfd);
	if (!d) {
		close(tfd);
		return -errno;
	}
	int removed = 0;
	time_t now = time(NULL);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int fd = openat(tfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
		struct stat st;
		if (fd < 0) {
			/* A symlink or something odd: nothing msb made; remove it if old. */
			if (fstatat(tfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    now - st.st_mtime >= min_age && unlinkat(tfd, de->d_name, 0) == 0)
				removed++;
			continue;
		}
		/* Held by a live owner: leave it. */
		if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, &st) < 0 ||
		    now - st.st_mtime < min_age) {
			close(fd);
			continue;
		}
		if (msb_remove_tree_at(tfd, de->d_name) == 0)
			removed++;
		close(fd);
	}
	closedir(d);
	return removed;
}

int msb_store_open(const char *home, struct msb_store *s, struct msb_error *err)
{
	static const char *const dirs[] = {"blobs", BLOBS_DIR, "tmp", "locks", "roots", "diffids"};
	char buf[PATH_MAX];
	int r;
	s->dir = NULL;
	s->dirfd = -1;
	if (!home) {
		if ((r = msb_state_default_home(buf, sizeof(buf), err)) < 0)
			return r;
		home = buf;
	}
	if ((r = msb_mkdir_p(home, 0700)) < 0)
		return msb_error_errno(err, r, "state directory '%s'", home);
	char *dir = NULL;
	if (asprintf(&dir, "%s/images", home) < 0)
		return msb_error_set(err, -ENOMEM, "out of memory");
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		r = msb_error_errno(err, -errno, "image store '%s'", dir);
		free(dir);
		return r;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		r = msb_error_errno(err, -errno, "image store '%s'", dir);
		free(dir);
		return r;
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (mkdirat(fd, dirs[i], i == 2 ? 0700 : 0755) < 0 && errno != EEXIST) {
			r = msb_error_errno(err, -errno, "image store '%s/%s'", dir, dirs[i]);
			close(fd);
			free(dir);
			return r;
		}
	s->dir = dir;
	s->dirfd = fd;
	msb_store_sweep(s, SWEEP_AGE);
	return 0;
}

void msb_store_close(struct msb_store *s)
{
	if (!s)
		return;
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s->dir);
	s->dir = NULL;
	s->dirfd = -1;
}

/* ---- reading blobs ------------------------------------------------------------------------ */

int msb_store_has(const struct msb_store *s, const char *digest)
{
	char rel[96];
	struct stat st;
	if (blob_rel(digest, rel) < 0)
		return 0;
	return fstatat(s->dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int msb_store_blob_path(const struct msb_store *s, const char *digest, char *buf, size_t len)
{
	char rel[96];
	if (blob_rel(digest, rel) < 0)
		return -EINVAL;
	int n = snprintf(buf, len, "%s/%s", s->dir, rel);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int msb_store_blob_open(const struct msb_store *s, const char *digest, struct msb_error *err)
{
	char rel[96];
	if (blob_rel(digest, rel) < 0)
		return msb_error_set(err, -EINVAL, "image store: invalid digest '%.80s'",
				     digest ? digest : "(null)");
	int fd = openat(s->dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return msb_error_errno(err, -errno, "image store: blob %s", digest);
	return fd;
}

int msb_store_blob_read(const struct msb_store *s, const char *digest, size_t max, uint8_t **buf,
			size_t *len, struct msb_error *err)
{
	*buf = NULL;
	*len = 0;
	cleanup_fd int fd = msb_store_blob_open(s, digest, err);
	if (fd < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return msb_error_errno(err, -errno, "image store: blob %s", digest);
	if (!S_ISREG(st.st_mode))
		return msb_error_set(err, -EINVAL, "image store: blob %s is not a regular file",
				     digest);
	if ((uint64_t)st.st_size > max)
		return msb_error_set(
			err, -E2BIG,
			"image store: blob %s is %lld bytes, more than the %zu allowed", digest,
			(long long)st.st_size, max);
	size_t n = (size_t)st.st_size;
	uint8_t *b = malloc(n + 1);
	if (!b)
		return msb_error_set(err, -ENOMEM, "out of memory");
	size_t got = 0;
	while (got < n) {
		ssize_t k = pread(fd, b + got, n - got, (off_t)got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			int e = k < 0 ? -errno : -EIO;
			free(b);
			return msb_error_errno(err, e, "image store: read blob %s", digest);
		}
		got += (size_t)k;
	}
	b[n] = '\0';
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[65];
	if (!EVP_Digest(b, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
		free(b);
		return msb_error_set(err, -ENOMEM, "image store: sha256 failed");
	}
	hex_of(md, 32, hex);
	if (strcmp(hex, digest + 7) != 0) {
		/*
		 * Changed on disk since it was verified (a disk error, or someone
		 * writing into the store).  Drop it, if it is still the file we read,
		 * so the next pull fetches it again instead of failing forever.
		 */
		char rel[96];
		struct stat now;
		blob_rel(digest, rel);
		if (fstatat(s->dirfd, rel, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
		    now.st_ino == st.st_ino && now.st_dev == st.st_dev)
			unlinkat(s->dirfd, rel, 0);
		free(b);
		return msb_error_set(err, -EBADMSG,
				     "image store: blob %s is corrupt (content digest sha256:%s); "
				     "removed it, pull the image again",
				     digest, hex);
	}
	*buf = b;
	*len = n;
	return 0;
}

/* ---- locks ---------------------------------------------------------------------------------- */

/* A digest's hex, or a plain name [a-z0-9][a-z0-9._-]*: a file name that cannot escape locks/. */
static int lock_name(const char *name, char out[LOCK_NAME_MAX + 8])
{
	if (!name)
		return -EINVAL;
	if (msb_digest_valid(name)) {
		snprintf(out, LOCK_NAME_MAX + 8, "%s.lock", name + 7);
		return 0;
	}
	size_t n = strlen(name);
	if (n == 0 || n > LOCK_NAME_MAX || name[0] == '.' || name[0] == '-')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-'))
			return -EINVAL;
	}
	snprintf(out, LOCK_NAME_MAX + 8, "%s.lock", name);
	return 0;
}

int msb_store_lock(const struct msb_store *s, const char *digest, struct msb_error *err)
{
	char file[LOCK_NAME_MAX + 8], rel[LOCK_NAME_MAX + 16];
	if (lock_name(digest, file) < 0)
		return msb_error_set(err, -EINVAL,
				     "image store: invalid lock name '%.80s' (expected a digest or "
				     "[a-z0-9][a-z0-9._-]*)",
				     digest ? digest : "(null)");
	snprintf(rel, sizeof(rel), "locks/%s", file);
	int fd = openat(s->dirfd, rel, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return msb_error_errno(err, -errno, "image store: open lock '%s/%s'", s->dir, rel);
	int r = flock_retry(fd, LOCK_EX);
	if (r < 0) {
		close(fd);
		return msb_error_errno(err, r, "image store: lock '%s/%s'", s->dir, rel);
	}
	return fd;
}

void msb_store_unlock(int lock_fd)
{
	if (lock_fd >= 0)
		close(lock_fd); /* releases the flock */
}

/* ---- writing blobs ------------------------------------------------------------------------ */

struct msb_blob_writer {
	const struct msb_store *s;
	char digest[72];
	char tmp[64];
	char label[160];
	int fd;
	int64_t size;
	uint64_t written;
	EVP_MD_CTX *md;
};

static void writer_free(struct msb_blob_writer *w, bool unlink_tmp)
{
	if (unlink_tmp && w->tmp[0])
		unlinkat(w->s->dirfd, w->tmp, 0);
	if (w->fd >= 0)
		close(w->fd);
	EVP_MD_CTX_free(w->md);
	free(w);
}

int msb_blob_writer_open(const struct msb_store *s, const char *digest, int64_t size,
			 struct msb_blob_writer **wp, struct msb_error *err)
{
	*wp = NULL;
	if (!digest || !msb_digest_valid(digest))
		return msb_error_set(err, -EINVAL, "image store: invalid digest '%.80s'",
				     digest ? digest : "(null)");
	struct msb_blob_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return msb_error_set(err, -ENOMEM, "out of memory");
	w->s = s;
	w->fd = -1;
	w->size = size < 0 ? -1 : size;
	snprintf(w->digest, sizeof(w->digest), "%s", digest);
	snprintf(w->label, sizeof(w->label), "blob %s", digest);
	w->md = EVP_MD_CTX_new();
	if (!w->md || !EVP_DigestInit_ex(w->md, EVP_sha256(), NULL)) {
		writer_free(w, false);
		return msb_error_set(err, -ENOMEM, "image store: sha256 unavailable");
	}
	int fd = tmp_create(s, "blob", w->tmp, err);
	if (fd < 0) {
		w->tmp[0] = '\0';
		writer_free(w, false);
		return fd;
	}
	w->fd = fd;
	*wp = w;
	return 0;
}

void msb_blob_writer_label(struct msb_blob_writer *w, const char *label)
{
	if (w && label)
		snprintf(w->label, sizeof(w->label), "%s", label);
}

int msb_blob_writer_write(struct msb_blob_writer *w, const void *buf, size_t len,
			  struct msb_error *err)
{
	if (w->size >= 0 && len > (uint64_t)w->size - w->written)
		return msb_error_set(err, -EBADMSG, "%s: more than the %lld bytes expected",
				     w->label, (long long)w->size);
	int r = write_all(w->fd, buf, len, (off_t)w->written);
	if (r < 0)
		return msb_error_errno(err, r, "%s: writing to the image store", w->label);
	if (!EVP_DigestUpdate(w->md, buf, len))
		return msb_error_set(err, -ENOMEM, "%s: sha256 failed", w->label);
	w->written += len;
	return 0;
}

int msb_blob_writer_reset(struct msb_blob_writer *w, struct msb_error *err)
{
	if (ftruncate(w->fd, 0) < 0)
		return msb_error_errno(err, -errno, "%s: truncating the temp file", w->label);
	if (!EVP_DigestInit_ex(w->md, EVP_sha256(), NULL))
		return msb_error_set(err, -ENOMEM, "%s: sha256 failed", w->label);
	w->written = 0;
	return 0;
}

uint64_t msb_blob_writer_written(const struct msb_blob_writer *w)
{
	return w->written;
}

int msb_blob_writer_commit(struct msb_blob_writer *w, struct msb_error *err)
{
	int r;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[65], rel[96];
	if (w->size >= 0 && w->written != (uint64_t)w->size) {
		r = msb_error_set(err, -EBADMSG, "%s: got %llu bytes, expected %lld", w->label,
				  (unsigned long long)w->written, (long long)w->size);
		goto fail;
	}
	if (!EVP_DigestFinal_ex(w->md, md, &mdlen) || mdlen != 32) {
		r = msb_error_set(err, -ENOMEM, "%s: sha256 failed", w->label);
		goto fail;
	}
	hex_of(md, 32, hex);
	if (strcmp(hex, w->digest + 7) != 0) {
		r = msb_error_set(err, -EBADMSG, "%s: content digest sha256:%s does not match",
				  w->label, hex);
		goto fail;
	}
	/* Durable before visible: a crash never leaves a published blob with lost bytes. */
	if (fsync(w->fd) < 0) {
		r = msb_error_errno(err, -errno, "%s: writing to the image store", w->label);
		goto fail;
	}
	if (fchmod(w->fd, 0444) < 0) {
		r = msb_error_errno(err, -errno, "%s: chmod", w->label);
		goto fail;
	}
	blob_rel(w->digest, rel);
	if (renameat(w->s->dirfd, w->tmp, w->s->dirfd, rel) < 0) {
		r = msb_error_errno(err, -errno, "%s: publishing into the image store", w->label);
		goto fail;
	}
	w->tmp[0] = '\0';
	fsync_dir_at(w->s->dirfd, BLOBS_DIR);
	writer_free(w, false);
	return 0;
fail:
	writer_free(w, true);
	return r;
}

void msb_blob_writer_abort(struct msb_blob_writer *w)
{
	if (w)
		writer_free(w, true);
}

int msb_store_put(const struct msb_store *s, const char *digest, const void *buf, size_t len,
		  struct msb_error *err)
{
	if (!digest || !msb_digest_valid(digest))
		return msb_error_set(err, -EINVAL, "image store: invalid digest '%.80s'",
				     digest ? digest : "(null)");
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[65];
	if (!EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return msb_error_set(err, -ENOMEM, "image store: sha256 failed");
	hex_of(md, 32, hex);
	if (strcmp(hex, digest + 7) != 0)
		return msb_error_set(err, -EBADMSG,
				     "blob %s: content digest sha256:%s does not match", digest,
				     hex);
	if (msb_store_has(s, digest))
		return 0; /* the same bytes, verified when they were published */
	struct msb_blob_writer *w;
	int r = msb_blob_writer_open(s, digest, (int64_t)len, &w, err);
	if (r < 0)
		return r;
	if ((r = msb_blob_writer_write(w, buf, len, err)) < 0) {
		msb_blob_writer_abort(w);
		return r;
	}
	return msb_blob_writer_commit(w, err);
}

/* ---- small files: pins and diff_ids -------------------------------------------------------- */

/* Replace store-relative `rel` with data, atomically (temp in images/tmp, fsync, rename). */
static int replace_file(const struct msb_store *s, const char *rel, const char *data, size_t len,
			struct msb_error *err)
{
	char tmp[64];
	int fd = tmp_create(s, "file", tmp, err);
	if (fd < 0)
		return fd;
	int r = write_all(fd, data, len, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && fchmod(fd, 0644) < 0)
		r = -errno;
	if (r == 0 && renameat(s->dirfd, tmp, s->dirfd, rel) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(s->dirfd, tmp, 0);
		close(fd);
		return msb_error_errno(err, r, "image store: writing '%s/%s'", s->dir, rel);
	}
	close(fd);
	const char *slash = strrchr(rel, '/');
	if (slash) {
		char parent[96];
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - rel), rel);
		fsync_dir_at(s->dirfd, parent);
	} else {
		fsync(s->dirfd);
	}
	return 0;
}

/* Read refs.json (caller holds the refs lock): an object ref -> digest, all validated. */
static int refs_load(const struct msb_store *s, json_t **out, struct msb_error *err)
{
	*out = NULL;
	cleanup_fd int fd = openat(s->dirfd, REFS_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		*out = json_object();
		return *out ? 0 : msb_error_set(err, -ENOMEM, "out of memory");
	}
	if (fd < 0)
		return msb_error_errno(err, -errno, "image store: '%s/" REFS_FILE "'", s->dir);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return msb_error_errno(err, -errno, "image store: '%s/" REFS_FILE "'", s->dir);
	if (st.st_size > REFS_MAX)
		return msb_error_set(err, -E2BIG,
				     "image store: '%s/" REFS_FILE "' is over %u bytes", s->dir,
				     REFS_MAX);
	json_error_t je;
	FILE *f = fdopen(fd, "r");
	if (!f)
		return msb_error_errno(err, -errno, "image store: '%s/" REFS_FILE "'", s->dir);
	fd = -1;
	json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
	fclose(f);
	if (!root)
		return msb_error_set(err, -EINVAL, "image store: '%s/" REFS_FILE "': %s (line %d)",
				     s->dir, je.text, je.line);
	json_t *refs = json_object_get(root, "refs");
	if (!json_is_object(root) || !json_is_object(refs)) {
		json_decref(root);
		return msb_error_set(err, -EINVAL,
				     "image store: '%s/" REFS_FILE "': expected {\"refs\": {...}}",
				     s->dir);
	}
	const char *k;
	json_t *v;
	json_object_foreach(refs, k, v)
	{
		if (!json_is_string(v) || !msb_digest_valid(json_string_value(v)) ||
		    strlen(k) > MSB_IMAGE_REF_MAX) {
			int r = msb_error_set(err, -EINVAL,
					      "image store: '%s/" REFS_FILE
					      "': refs[\"%.80s\"]: expected a sha256 digest",
					      s->dir, k);
			json_decref(root); /* after the message: k points into it */
			return r;
		}
	}
	*out = json_incref(refs);
	json_decref(root);
	return 0;
}

static int refs_save(const struct msb_store *s, json_t *refs, struct msb_error *err)
{
	json_t *root = json_pack("{sO}", "refs", refs);
	if (!root)
		return msb_error_set(err, -ENOMEM, "out of memory");
	char *text = json_dumps(root, JSON_SORT_KEYS | JSON_INDENT(2));
	json_decref(root);
	if (!text)
		return msb_error_set(err, -ENOMEM, "out of memory");
	size_t n = strlen(text);
	char *t = realloc(text, n + 2);
	if (!t) {
		free(text);
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	t[n++] = '\n';
	t[n] = '\0';
	int r = replace_file(s, REFS_FILE, t, n, err);
	free(t);
	return r;
}

static int refs_lock(const struct msb_store *s, int op, struct msb_error *err)
{
	int fd = openat(s->dirfd, "locks/" REFS_LOCK ".lock",
			O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return msb_error_errno(err, -errno,
				       "image store: open '%s/locks/" REFS_LOCK ".lock'", s->dir);
	int r = flock_retry(fd, op);
	if (r < 0) {
		close(fd);
		return msb_error_errno(err, r, "image store: lock '%s/locks/" REFS_LOCK ".lock'",
				       s->dir);
	}
	return fd;
}

static int check_pin_ref(const char *ref, struct msb_error *err)
{
	size_t n = ref ? strlen(ref) : 0;
	if (n == 0 || n > MSB_IMAGE_REF_MAX)
		return msb_error_set(err, -EINVAL, "image store: invalid pin reference");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)ref[i] < 0x20 || ref[i] == 0x7f)
			return msb_error_set(err, -EINVAL,
					     "image store: pin reference with a control character");
	return 0;
}

int msb_store_pin_get(const struct msb_store *s, const char *ref, char digest[72],
		      struct msb_error *err)
{
	int r = check_pin_ref(ref, err);
	if (r < 0)
		return r;
	cleanup_fd int lk = refs_lock(s, LOCK_SH, err);
	if (lk < 0)
		return lk;
	json_t *refs;
	if ((r = refs_load(s, &refs, err)) < 0)
		return r;
	json_t *v = json_object_get(refs, ref);
	if (!v) {
		json_decref(refs);
		return msb_error_set(err, -ENOENT, "image store: %s is not pinned", ref);
	}
	snprintf(digest, 72, "%s", json_string_value(v));
	json_decref(refs);
	return 0;
}

/* Read-modify-write refs.json under the exclusive lock; digest NULL removes. */
static int pin_update(const struct msb_store *s, const char *ref, const char *digest,
		      struct msb_error *err)
{
	int r = check_pin_ref(ref, err);
	if (r < 0)
		return r;
	if (digest && !msb_digest_valid(digest))
		return msb_error_set(err, -EINVAL, "image store: invalid digest '%.80s'", digest);
	cleanup_fd int lk = refs_lock(s, LOCK_EX, err);
	if (lk < 0)
		return lk;
	json_t *refs;
	if ((r = refs_load(s, &refs, err)) < 0)
		return r;
	if (digest) {
		json_t *old = json_object_get(refs, ref);
		if (old && !strcmp(json_string_value(old), digest)) {
			json_decref(refs);
			return 0;
		}
		if (json_object_set_new(refs, ref, json_string(digest)) < 0) {
			json_decref(refs);
			return msb_error_set(err, -ENOMEM, "out of memory");
		}
	} else if (json_object_del(refs, ref) < 0) {
		json_decref(refs);
		return msb_error_set(err, -ENOENT, "image store: %s is not pinned", ref);
	}
	r = refs_save(s, refs, err);
	json_decref(refs);
	return r;
}

int msb_store_pin_set(const struct msb_store *s, const char *ref, const char *digest,
		      struct msb_error *err)
{
	if (!digest)
		return msb_error_set(err, -EINVAL, "image store: no digest to pin");
	return pin_update(s, ref, digest, err);
}

int msb_store_pin_remove(const struct msb_store *s, const char *ref, struct msb_error *err)
{
	return pin_update(s, ref, NULL, err);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int msb_store_pins(const struct msb_store *s, char ***refs_out, char ***digests_out, size_t *n,
		   struct msb_error *err)
{
	*refs_out = *digests_out = NULL;
	*n = 0;
	cleanup_fd int lk = refs_lock(s, LOCK_SH, err);
	if (lk < 0)
		return lk;
	json_t *refs;
	int r = refs_load(s, &refs, err);
	if (r < 0)
		return r;
	size_t count = json_object_size(refs);
	char **keys = calloc(count + 1, sizeof(char *));
	char **rs = calloc(count + 1, sizeof(char *));
	char **ds = calloc(count + 1, sizeof(char *));
	size_t i = 0;
	const char *k;
	json_t *v;
	if (!keys || !rs || !ds)
		goto oom;
	json_object_foreach(refs, k, v)
	{
		keys[i++] = (char *)k;
	}
	qsort(keys, count, sizeof(char *), cmp_str);
	for (i = 0; i < count; i++) {
		rs[i] = strdup(keys[i]);
		ds[i] = strdup(json_string_value(json_object_get(refs, keys[i])));
		if (!rs[i] || !ds[i])
			goto oom;
	}
	free(keys);
	json_decref(refs);
	*refs_out = rs;
	*digests_out = ds;
	*n = count;
	return 0;
oom:
	for (i = 0; rs && ds && i < count; i++) {
		free(rs[i]);
		free(ds[i]);
	}
	free(keys);
	free(rs);
	free(ds);
	json_decref(refs);
	return msb_error_set(err, -ENOMEM, "out of memory");
}

int msb_store_diffid_get(const struct msb_store *s, const char *digest, char diff_id[72])
{
	char rel[96];
	if (!digest || !msb_digest_valid(digest))
		return -EINVAL;
	snprintf(rel, sizeof(rel), "diffids/%s", digest + 7);
	cleanup_fd int fd = openat(s->dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	char buf[80];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (!msb_digest_valid(buf))
		return -ENOENT;	  /* unreadable: computed again and rewritten */
	memcpy(diff_id, buf, 72); /* a valid digest is 71 bytes and its NUL */
	return 0;
}

int msb_store_diffid_set(const struct msb_store *s, const char *digest, const char *diff_id,
			 struct msb_error *err)
{
	char rel[96], text[80];
	if (!digest || !msb_digest_valid(digest) || !diff_id || !msb_digest_valid(diff_id))
		return msb_error_set(err, -EINVAL, "image store: invalid digest for a diff_id");
	snprintf(rel, sizeof(rel), "diffids/%s", digest + 7);
	int n = snprintf(text, sizeof(text), "%s\n", diff_id);
	return replace_file(s, rel, text, (size_t)n, err);
}

/* ---- temp directories ----------------------------------------------------------------------- */

int msb_store_tmpdir(const struct msb_store *s, char *buf, size_t len, struct msb_error *err)
{
	for (int tries = 0; tries < 16; tries++) {
		unsigned char rnd[8];
		char hex[17], rel[64];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return msb_error_errno(err, -EIO, "image store: getrandom");
		hex_of(rnd, sizeof(rnd), hex);
		snprintf(rel, sizeof(rel), "tmp/dir.%ld.%s", (long)getpid(), hex);
		if (mkdirat(s->dirfd, rel, 0700) < 0) {
			if (errno == EEXIST)
				continue;
			return msb_error_errno(err, -errno, "image store: mkdir '%s/%s'", s->dir,
					       rel);
		}
		int fd = openat(s->dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || flock_retry(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = -errno;
			if (fd >= 0)
				close(fd);
			unlinkat(s->dirfd, rel, AT_REMOVEDIR);
			return msb_error_errno(err, e, "image store: lock '%s/%s'", s->dir, rel);
		}
		/*
		 * The fd is kept open on purpose: its lock says "live" to every sweep
		 * until this process exits (O_CLOEXEC: no child inherits it).
		 */
		int n = snprintf(buf, len, "%s/%s", s->dir, rel);
		if (n < 0 || (size_t)n >= len) {
			close(fd);
			unlinkat(s->dirfd, rel, AT_REMOVEDIR);
			return msb_error_set(err, -ENAMETOOLONG, "image store: path too long");
		}
		return 0;
	}
	return msb_error_set(err, -EEXIST, "image store: no free temp name in '%s/tmp'", s->dir);
}
