/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Names, users and prune of the image store (catalog.h).
 *
 * Prune decides from what the store and the sandboxes record, never from
 * names it is given: every file it removes is one it found by listing a
 * store directory, whose name is a digest's hex (or "<hex>.erofs"), opened
 * relative to the store's directory fd.  Anything else there is left alone.
 */
#include "catalog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"
#include "manifest.h"
#include "pull.h"
#include "ref.h"
#include "state.h"

#define PRUNE_LOCK	"prune"
#define INDEX_DEPTH_MAX 4

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* MSB_HOME: the store's parent ("<home>/images"). */
static char *home_of(const struct msb_store *s)
{
	const char *slash = strrchr(s->dir, '/');
	if (!slash)
		return strdup(".");
	if (slash == s->dir)
		return strdup("/");
	return strndup(s->dir, (size_t)(slash - s->dir));
}

/* ---- resolve ------------------------------------------------------------------------------ */

static void free_pins(char **refs, char **digests, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(refs[i]);
		free(digests[i]);
	}
	free(refs);
	free(digests);
}

int msb_image_resolve(const struct msb_store *s, const char *name, char digest[72], char **key,
		      struct msb_error *err)
{
	if (key)
		*key = NULL;
	digest[0] = '\0';
	if (!name || !*name || strlen(name) > MSB_IMAGE_REF_MAX)
		return msb_error_set(err, -EINVAL,
				     "no image named (expected a reference or digest)");
	struct msb_error e = MSB_ERROR_INIT;
	/* A pin's exact key first: "...:tag#linux/arm64" parses as no reference. */
	if (msb_store_pin_get(s, name, digest, &e) == 0) {
		if (key && !(*key = strdup(name)))
			return msb_error_set(err, -ENOMEM, "out of memory");
		return 0;
	}
	if (msb_digest_valid(name)) {
		if (!msb_store_has(s, name))
			return msb_error_set(err, -ENOENT, "no image %s in the store", name);
		snprintf(digest, 72, "%s", name);
		return 0;
	}
	struct msb_image_ref ref;
	int pr = msb_image_ref_parse(name, &ref, &e);
	if (pr == 0 && ref.digest) {
		int r = 0;
		if (!msb_store_has(s, ref.digest))
			r = msb_error_set(err, -ENOENT, "no image %s in the store", ref.digest);
		else
			snprintf(digest, 72, "%s", ref.digest);
		msb_image_ref_free(&ref);
		return r;
	}
	if (pr == 0) {
		char *k = msb_image_pin_key(&ref, NULL);
		msb_image_ref_free(&ref);
		if (!k)
			return msb_error_set(err, -ENOMEM, "out of memory");
		if (msb_store_pin_get(s, k, digest, &e) == 0) {
			if (key)
				*key = k;
			else
				free(k);
			return 0;
		}
		free(k);
	}
	/* A short digest, as `msb image ls` shows them. */
	const char *hex = strncmp(name, "sha256:", 7) ? name : name + 7;
	size_t hl = strlen(hex);
	if (hl >= 4 && hl <= 64 && is_hex(hex, hl)) {
		char **refs, **digests;
		size_t n;
		int r = msb_store_pins(s, &refs, &digests, &n, err);
		if (r < 0)
			return r;
		const char *match = NULL;
		for (size_t i = 0; i < n; i++) {
			if (strncmp(digests[i] + 7, hex, hl))
				continue;
			if (match && strcmp(match, digests[i])) {
				r = msb_error_set(
					err, -ENOTUNIQ,
					"'%s' is the start of more than one image's digest "
					"(expected more digits)",
					name);
				break;
			}
			match = digests[i];
		}
		if (r == 0 && match)
			snprintf(digest, 72, "%s", match);
		free_pins(refs, digests, n);
		if (r < 0 || match)
			return r;
	}
	if (pr < 0) {
		*err = e;
		return pr;
	}
	return msb_error_set(err, -ENOENT, "no image '%s' in the store (see msb image ls)", name);
}

/* ---- users -------------------------------------------------------------------------------- */

void msb_image_users_free(struct msb_image_user *users, size_t n)
{
	for (size_t i = 0; users && i < n; i++) {
		free(users[i].sandbox);
		free(users[i].root_image);
	}
	free(users);
}

/* The first line of a sandbox's small file, or NULL. */
static char *first_line(struct msb_state *st, const char *name, const char *file)
{
	char *data = NULL;
	size_t len = 0;
	struct msb_error e = MSB_ERROR_INIT;
	if (msb_state_read(st, name, file, &data, &len, &e) < 0)
		return NULL;
	data[strcspn(data, "\n")] = '\0';
	if (!data[0]) {
		free(data);
		return NULL;
	}
	return data;
}

int msb_image_users(const struct msb_store *s, struct msb_image_user **users, size_t *n,
		    struct msb_error *err)
{
	*users = NULL;
	*n = 0;
	char *home = home_of(s);
	if (!home)
		return msb_error_set(err, -ENOMEM, "out of memory");
	struct msb_state st;
	int r = msb_state_open(home, &st, err);
	free(home);
	if (r < 0)
		return r;
	char **names = NULL;
	size_t count = 0;
	if ((r = msb_state_list(&st, &names, &count, err)) < 0) {
		msb_state_close(&st);
		return r;
	}
	struct msb_image_user *u = calloc(count ? count : 1, sizeof(*u));
	if (!u)
		r = msb_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < count; i++) {
		u[i].sandbox = names[i];
		names[i] = NULL;
		char *d = first_line(&st, u[i].sandbox, "image.digest");
		if (d && msb_digest_valid(d))
			snprintf(u[i].digest, sizeof(u[i].digest), "%s", d);
		free(d);
		u[i].root_image = first_line(&st, u[i].sandbox, "root.image");
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	msb_state_close(&st);
	if (r < 0) {
		msb_image_users_free(u, count);
		return r;
	}
	*users = u;
	*n = count;
	return 0;
}

int msb_image_size(const struct msb_store *s, const char *digest, uint64_t *bytes,
		   struct msb_error *err)
{
	*bytes = 0;
	uint8_t *buf;
	size_t len;
	int r = msb_store_blob_read(s, digest, MSB_MANIFEST_MAX, &buf, &len, err);
	if (r < 0)
		return r;
	struct msb_manifest m;
	r = msb_manifest_parse(buf, len, &m, err);
	free(buf);
	if (r < 0)
		return r;
	uint64_t total = len + (uint64_t)m.config.size;
	if (!msb_store_has(s, m.config.digest))
		r = msb_error_set(err, -ENOENT, "config %s is not in the store", m.config.digest);
	for (size_t i = 0; r == 0 && i < m.nlayers; i++) {
		if (!msb_store_has(s, m.layers[i].digest))
			r = msb_error_set(err, -ENOENT, "layer %s is not in the store",
					  m.layers[i].digest);
		total += (uint64_t)m.layers[i].size;
	}
	msb_manifest_free(&m);
	if (r == 0)
		*bytes = total;
	return r;
}

/* ---- prune -------------------------------------------------------------------------------- */

int msb_image_prune_guard(const struct msb_store *s, struct msb_error *err)
{
	int fd = openat(s->dirfd, "locks/" PRUNE_LOCK ".lock",
			O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return msb_error_errno(err, -errno,
				       "image store: open '%s/locks/" PRUNE_LOCK ".lock'", s->dir);
	while (flock(fd, LOCK_SH) < 0) {
		if (errno != EINTR) {
			int r = msb_error_errno(err, -errno,
						"image store: lock '%s/locks/" PRUNE_LOCK ".lock'",
						s->dir);
			close(fd);
			return r;
		}
	}
	return fd;
}

void msb_prune_result_free(struct msb_prune_result *res)
{
	for (size_t i = 0; res && i < res->n; i++)
		free(res->items[i].name);
	if (res)
		free(res->items);
	if (res)
		memset(res, 0, sizeof(*res));
}

/* A sorted set of 64-hex names. */
struct hexset {
	char (*v)[65];
	size_t n, cap;
};

static int hexset_add(struct hexset *h, const char *hex)
{
	if (h->n == h->cap) {
		size_t nc = h->cap ? h->cap * 2 : 64;
		char(*nv)[65] = realloc(h->v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		h->v = nv;
		h->cap = nc;
	}
	snprintf(h->v[h->n++], 65, "%.64s", hex);
	return 0;
}

static int hex_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void hexset_sort(struct hexset *h)
{
	if (h->n)
		qsort(h->v, h->n, sizeof(*h->v), hex_cmp);
}

static bool hexset_has(const struct hexset *h, const char *hex)
{
	return h->n && bsearch(hex, h->v, h->n, sizeof(*h->v), hex_cmp) != NULL;
}

/* The OCI ChainID of a config's diff_ids (as image-root.c keys roots). */
static void chain_id(const struct msb_image_config *c, char out[65])
{
	static const char hexd[] = "0123456789abcdef";
	char chain[72];
	snprintf(chain, sizeof(chain), "%s", c->diff_ids[0]);
	for (size_t i = 1; i < c->ndiff_ids; i++) {
		char cat[160];
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned n = 0;
		int len = snprintf(cat, sizeof(cat), "%s %s", chain, c->diff_ids[i]);
		EVP_Digest(cat, (size_t)len, md, &n, EVP_sha256(), NULL);
		for (unsigned j = 0; j < 32; j++) {
			chain[7 + 2 * j] = hexd[md[j] >> 4];
			chain[8 + 2 * j] = hexd[md[j] & 15];
		}
		chain[71] = '\0';
	}
	snprintf(out, 65, "%s", chain + 7);
}

/* Mark a manifest (or index) and what it refers to as used. */
static int mark(const struct msb_store *s, const char *digest, int depth, struct hexset *blobs,
		struct hexset *roots)
{
	if (hexset_add(blobs, digest + 7) < 0)
		return -ENOMEM;
	if (depth > INDEX_DEPTH_MAX)
		return 0;
	uint8_t *buf;
	size_t len;
	struct msb_error e = MSB_ERROR_INIT;
	enum msb_media_kind kind;
	if (msb_store_blob_read(s, digest, MSB_MANIFEST_MAX, &buf, &len, &e) < 0)
		return 0; /* absent or unreadable: nothing more it can keep */
	int r = 0;
	if (msb_manifest_detect(NULL, buf, len, &kind, &e) < 0) {
		free(buf);
		return 0;
	}
	if (kind == MSB_MEDIA_OCI_INDEX || kind == MSB_MEDIA_DOCKER_LIST) {
		struct msb_index idx;
		if (msb_index_parse(buf, len, &idx, &e) == 0) {
			for (size_t i = 0; r == 0 && i < idx.n; i++)
				r = mark(s, idx.manifests[i].digest, depth + 1, blobs, roots);
			msb_index_free(&idx);
		}
		free(buf);
		return r;
	}
	struct msb_manifest m;
	if (msb_manifest_parse(buf, len, &m, &e) < 0) {
		free(buf);
		return 0;
	}
	free(buf);
	r = hexset_add(blobs, m.config.digest + 7);
	for (size_t i = 0; r == 0 && i < m.nlayers; i++)
		r = hexset_add(blobs, m.layers[i].digest + 7);
	uint8_t *cbuf;
	size_t clen;
	struct msb_image_config c;
	if (r == 0 &&
	    msb_store_blob_read(s, m.config.digest, MSB_CONFIG_MAX, &cbuf, &clen, &e) == 0) {
		if (msb_image_config_parse(cbuf, clen, &c, &e) == 0) {
			char hex[65];
			chain_id(&c, hex);
			r = hexset_add(roots, hex);
			msb_image_config_free(&c);
		}
		free(cbuf);
	}
	msb_manifest_free(&m);
	return r;
}

/* Whether a writer holds store-relative lock file `rel` (a missing file: no). */
static bool locked(const struct msb_store *s, const char *rel)
{
	int fd = openat(s->dirfd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	bool held = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
	close(fd);
	return held;
}

static int add_item(struct msb_prune_result *res, enum msb_prune_kind kind, char *name,
		    uint64_t bytes)
{
	if (!name)
		return -ENOMEM;
	struct msb_prune_item *nv = realloc(res->items, (res->n + 1) * sizeof(*nv));
	if (!nv) {
		free(name);
		return -ENOMEM;
	}
	res->items = nv;
	nv[res->n++] = (struct msb_prune_item){kind, name, bytes};
	res->bytes += bytes;
	return 0;
}

/*
 * Remove the unused entries of store directory `rel` whose names are
 * "<hex><suffix>": not in keep, older than min_age, and not locked
 * (its lock file: the store-relative lock_pre + hex + lock_suf).
 */
static int sweep(const struct msb_store *s, const char *rel, const char *suffix,
		 const struct hexset *keep, const char *lock_pre, const char *lock_suf,
		 enum msb_prune_kind kind, int min_age, struct msb_prune_result *res,
		 struct msb_error *err)
{
	int dfd = openat(s->dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0)
		return errno == ENOENT ? 0 : msb_error_errno(err, -errno, "'%s/%s'", s->dir, rel);
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return msb_error_errno(err, -errno, "'%s/%s'", s->dir, rel);
	}
	time_t now = time(NULL);
	size_t sl = strlen(suffix);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		const char *n = de->d_name;
		if (strlen(n) != 64 + sl || !is_hex(n, 64) || strcmp(n + 64, suffix))
			continue;
		char hex[65];
		snprintf(hex, sizeof(hex), "%.64s", n);
		if (hexset_has(keep, hex))
			continue;
		struct stat st;
		if (fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		char lock[160];
		snprintf(lock, sizeof(lock), "%s%s%s", lock_pre, hex, lock_suf);
		if (now - st.st_mtime < min_age || locked(s, lock)) {
			res->kept++;
			continue;
		}
		if (unlinkat(dfd, n, 0) < 0) {
			if (errno != ENOENT)
				r = msb_error_errno(err, -errno, "removing '%s/%s/%s'", s->dir, rel,
						    n);
			continue;
		}
		char *name = NULL;
		if (kind == MSB_PRUNE_ROOT) {
			if (asprintf(&name, "%s/%s%s%s", s->dir, strcmp(rel, ".") ? rel : "",
				     strcmp(rel, ".") ? "/" : "", n) < 0)
				name = NULL;
		} else if (asprintf(&name, "sha256:%s", hex) < 0) {
			name = NULL;
		}
		if (add_item(res, kind, name, kind == MSB_PRUNE_DIFFID ? 0 : (uint64_t)st.st_size) <
		    0)
			r = msb_error_set(err, -ENOMEM, "out of memory");
	}
	closedir(d);
	return r;
}

/* Keep a sandbox's root image: "<dir>/roots/<hex>.erofs" or "<dir>/<hex>.erofs". */
static int keep_root(const struct msb_store *s, const char *path, struct hexset *roots,
		     struct hexset *trees)
{
	size_t dl = strlen(s->dir);
	if (strncmp(path, s->dir, dl) || path[dl] != '/')
		return 0;
	const char *rest = path + dl + 1;
	struct hexset *set = trees;
	if (!strncmp(rest, "roots/", 6)) {
		rest += 6;
		set = roots;
	}
	if (strlen(rest) == 64 + 6 && is_hex(rest, 64) && !strcmp(rest + 64, ".erofs"))
		return hexset_add(set, rest);
	return 0;
}

int msb_image_prune(const struct msb_store *s, int min_age, struct msb_prune_result *res,
		    struct msb_error *err)
{
	memset(res, 0, sizeof(*res));
	int lk = msb_store_lock(s, PRUNE_LOCK, err);
	if (lk < 0)
		return lk;
	struct hexset blobs = {0}, roots = {0}, trees = {0}, present = {0};
	char **refs = NULL, **digests = NULL;
	size_t npins = 0, nusers = 0;
	struct msb_image_user *users = NULL;
	int r = msb_store_pins(s, &refs, &digests, &npins, err);
	if (r == 0)
		r = msb_image_users(s, &users, &nusers, err);
	for (size_t i = 0; r == 0 && i < npins; i++)
		if (mark(s, digests[i], 0, &blobs, &roots) < 0)
			r = msb_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < nusers; i++) {
		if (users[i].digest[0] && mark(s, users[i].digest, 0, &blobs, &roots) < 0)
			r = msb_error_set(err, -ENOMEM, "out of memory");
		if (r == 0 && users[i].root_image &&
		    keep_root(s, users[i].root_image, &roots, &trees) < 0)
			r = msb_error_set(err, -ENOMEM, "out of memory");
	}
	if (r < 0)
		goto out;
	hexset_sort(&blobs);
	hexset_sort(&roots);
	hexset_sort(&trees);
	if ((r = sweep(s, "blobs/sha256", "", &blobs, "locks/", ".lock", MSB_PRUNE_BLOB, min_age,
		       res, err)) < 0)
		goto out;
	/* diff_id records of blobs that are gone (just now, or earlier). */
	DIR *d = NULL;
	int bfd = openat(s->dirfd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd >= 0 && !(d = fdopendir(bfd)))
		close(bfd);
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strlen(de->d_name) == 64 && is_hex(de->d_name, 64) &&
		    hexset_add(&present, de->d_name) < 0)
			r = msb_error_set(err, -ENOMEM, "out of memory");
	if (d)
		closedir(d);
	hexset_sort(&present);
	if (r == 0)
		r = sweep(s, "diffids", "", &present, "locks/", ".lock", MSB_PRUNE_DIFFID, 0, res,
			  err);
	if (r == 0)
		r = sweep(s, "roots", ".erofs", &roots, "locks/root-", ".lock", MSB_PRUNE_ROOT,
			  min_age, res, err);
	if (r == 0)
		r = sweep(s, ".", ".erofs", &trees, ".", ".lock", MSB_PRUNE_ROOT, min_age, res,
			  err);
out:
	free_pins(refs, digests, npins);
	msb_image_users_free(users, nusers);
	free(blobs.v);
	free(roots.v);
	free(trees.v);
	free(present.v);
	msb_store_unlock(lk);
	return r;
}
