/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb image load / save (image-archive.h says what is read, what is written
 * and what the reader defends against).
 *
 * Load is three steps, whatever the input:
 *  1. Find the images: read the input's JSON (index.json and the documents
 *     it leads to, or manifest.json and its configs), each checked against
 *     its digest before it is parsed; put manifests and configs in the store
 *     and list the layers that are missing from it ("wants").
 *  2. Stream the wanted layers into the store's verifying writers: from the
 *     directory file by file, or in a second pass over the tar.
 *  3. Check every image is whole in the store (msb_image_open), then pin.
 * A tar's first pass keeps every entry's name, type and size and holds the
 * entries that look like JSON (first byte '{' or '['), so a docker-archive
 * whose manifest.json comes after its layers needs no staging copy.
 */
#include "image-archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <msb/msb.h>

#include "catalog.h"
#include "error.h"
#include "image-root.h"
#include "manifest.h"
#include "pull.h"
#include "ref.h"

#define CHUNK		(256u << 10)
#define LINK_HOPS	8
#define INDEX_DEPTH_MAX 4
#define SMALL_MAX	4096 /* oci-layout */
#define NAMES_MAX	1024 /* RepoTags of one docker-archive image; names in one archive */

#define MT_OCI_INDEX	   "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST	   "application/vnd.oci.image.manifest.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_OCI_CONFIG	   "application/vnd.oci.image.config.v1+json"
#define MT_OCI_LAYER	   "application/vnd.oci.image.layer.v1.tar"
#define ANN_REF_NAME	   "org.opencontainers.image.ref.name"
#define ANN_IMAGE_NAME	   "io.containerd.image.name"

/* ---- small helpers -------------------------------------------------------------------------- */

struct strv {
	char **v;
	size_t n;
};

static void strv_free(struct strv *sv)
{
	for (size_t i = 0; i < sv->n; i++)
		free(sv->v[i]);
	free(sv->v);
	sv->v = NULL;
	sv->n = 0;
}

/* Append s (taken over; freed on failure) unless it is there already. */
static int strv_take(struct strv *sv, char *s)
{
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < sv->n; i++)
		if (!strcmp(sv->v[i], s)) {
			free(s);
			return 0;
		}
	char **nv = realloc(sv->v, (sv->n + 1) * sizeof(char *));
	if (!nv) {
		free(s);
		return -ENOMEM;
	}
	sv->v = nv;
	sv->v[sv->n++] = s;
	return 0;
}

/* The pin key of a reference with a tag ("latest" when it had neither); NULL key for one
 * that names only a digest (it is reachable by that digest). */
static int pin_key_of(const char *text, const char *what, char **key, struct msb_error *err)
{
	struct msb_image_ref ref;
	*key = NULL;
	int r = msb_image_ref_parse(text, &ref, err);
	if (r < 0)
		return msb_error_prefix(err, "%s: ", what), r;
	if (ref.tag && !(*key = msb_image_pin_key(&ref, NULL)))
		r = msb_error_set(err, -ENOMEM, "out of memory");
	msb_image_ref_free(&ref);
	return r;
}

/*
 * A path inside an archive as a list of components joined by "/": no
 * leading "/", no "." or empty components.  With resolve, ".." removes the
 * component before it (a link target; going above the top is refused);
 * without, a ".." component is refused.  An absolute path is refused.
 */
static int norm_path(const char *in, bool resolve, char **out)
{
	*out = NULL;
	size_t len = strlen(in);
	if (len == 0 || len >= PATH_MAX)
		return -ENAMETOOLONG;
	if (in[0] == '/')
		return -EXDEV;
	char *o = malloc(len + 1);
	if (!o)
		return -ENOMEM;
	size_t n = 0;
	for (const char *p = in; *p;) {
		size_t c = strcspn(p, "/");
		if ((c == 1 && p[0] == '.') || c == 0) {
			/* nothing */
		} else if (c == 2 && p[0] == '.' && p[1] == '.') {
			if (!resolve || n == 0) {
				free(o);
				return -EXDEV;
			}
			while (n > 0 && o[n - 1] != '/')
				n--;
			if (n > 0)
				n--; /* the "/" before the removed component */
		} else {
			if (n)
				o[n++] = '/';
			memcpy(o + n, p, c);
			n += c;
		}
		p += c;
		if (*p == '/')
			p++;
	}
	o[n] = '\0';
	*out = o;
	return 0;
}

/* ---- the input: a directory or a tar -------------------------------------------------------- */

struct entry {
	char *name;   /* normalised */
	char *target; /* a link's normalised target, else NULL */
	int64_t size;
	uint8_t *json; /* held content (tar only), NUL-terminated */
};

struct source {
	const char *path;
	bool is_tar;
	int fd; /* the layout directory, or the tar file */
	struct entry *ents;
	size_t n;
	size_t json_bytes;
};

static void source_close(struct source *src)
{
	for (size_t i = 0; i < src->n; i++) {
		free(src->ents[i].name);
		free(src->ents[i].target);
		free(src->ents[i].json);
	}
	free(src->ents);
	if (src->fd >= 0)
		close(src->fd);
	memset(src, 0, sizeof(*src));
	src->fd = -1;
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static struct entry *tar_lookup(const struct source *src, const char *name)
{
	struct entry key = {.name = (char *)name};
	if (!src->n)
		return NULL;
	return bsearch(&key, src->ents, src->n, sizeof(struct entry), ent_cmp);
}

/*
 * The file entry `name` is, following the archive's links.  -ENOENT when
 * there is no such name, -ELOOP past LINK_HOPS.
 */
static int tar_resolve(const struct source *src, const char *name, const struct entry **out,
		       struct msb_error *err)
{
	/* Names from manifest.json are looked up as the archive's own are stored. */
	char *norm;
	int r = norm_path(name, false, &norm);
	if (r == -ENOMEM)
		return msb_error_set(err, -ENOMEM, "out of memory");
	if (r < 0)
		return msb_error_set(err, -EINVAL,
				     "'%.200s' in '%s': not a relative path inside the archive",
				     name, src->path);
	const char *cur = norm;
	for (int hop = 0; hop <= LINK_HOPS; hop++) {
		const struct entry *e = tar_lookup(src, cur);
		if (!e) {
			r = msb_error_set(err, -ENOENT, "'%.200s' is not in '%s'%s", cur, src->path,
					  hop ? " (a link's target)" : "");
			free(norm);
			return r;
		}
		if (!e->target) {
			free(norm);
			*out = e;
			return 0;
		}
		cur = e->target;
	}
	free(norm);
	return msb_error_set(err, -ELOOP, "'%.200s' in '%s': more than %d links in a row", name,
			     src->path, LINK_HOPS);
}

/* openat2 beneath the layout directory: no name or symlink leads out of it. */
static int dir_open(const struct source *src, const char *name, struct stat *st,
		    struct msb_error *err)
{
	char *norm;
	int r = norm_path(name, false, &norm);
	if (r == -ENOMEM)
		return msb_error_set(err, -ENOMEM, "out of memory");
	if (r < 0)
		return msb_error_set(err, -EINVAL,
				     "'%.200s' in '%s': not a relative path inside the layout",
				     name, src->path);
	struct open_how how = {
		.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, src->fd, norm, &how, sizeof(how));
	if (fd < 0) {
		r = -errno;
		if (r == -EXDEV)
			r = msb_error_set(err, -EINVAL, "'%.200s' in '%s' leads out of the layout",
					  norm, src->path);
		else
			r = msb_error_errno(err, r, "'%.200s' in '%s'", norm, src->path);
		free(norm);
		return r;
	}
	if (fstat((int)fd, st) < 0 || !S_ISREG(st->st_mode)) {
		r = msb_error_set(err, -EINVAL, "'%.200s' in '%s' is not a regular file", norm,
				  src->path);
		free(norm);
		close((int)fd);
		return r;
	}
	free(norm);
	return (int)fd;
}

static int read_full(int fd, uint8_t *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t k = read(fd, buf + got, len - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		got += (size_t)k;
	}
	return 0;
}

/* Whether `name` is in the input (following links). */
static bool src_has(const struct source *src, const char *name)
{
	struct msb_error e = MSB_ERROR_INIT;
	if (src->is_tar) {
		const struct entry *ent;
		return tar_resolve(src, name, &ent, &e) == 0;
	}
	struct stat st;
	int fd = dir_open(src, name, &st, &e);
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

/* A file's size (following links). */
static int src_size(const struct source *src, const char *name, int64_t *size,
		    struct msb_error *err)
{
	if (src->is_tar) {
		const struct entry *ent;
		int r = tar_resolve(src, name, &ent, err);
		if (r < 0)
			return r;
		*size = ent->size;
		return 0;
	}
	struct stat st;
	int fd = dir_open(src, name, &st, err);
	if (fd < 0)
		return fd;
	close(fd);
	*size = st.st_size;
	return 0;
}

/* A JSON document of at most max bytes: *buf malloc'd and NUL-terminated. */
static int src_read_json(struct source *src, const char *name, size_t max, uint8_t **buf,
			 size_t *len, struct msb_error *err)
{
	*buf = NULL;
	*len = 0;
	if (src->is_tar) {
		const struct entry *e;
		int r = tar_resolve(src, name, &e, err);
		if (r < 0)
			return r;
		if ((uint64_t)e->size > max)
			return msb_error_set(
				err, -E2BIG,
				"'%.200s' in '%s' is %lld bytes (expected at most %zu)", name,
				src->path, (long long)e->size, max);
		if (!e->json)
			return msb_error_set(err, -EINVAL,
					     "'%.200s' in '%s' is not a JSON document%s", name,
					     src->path,
					     src->json_bytes >= MSB_ARCHIVE_JSON_MAX / 2
						     ? " (or the archive holds too much JSON)"
						     : "");
		if (!(*buf = malloc((size_t)e->size + 1)))
			return msb_error_set(err, -ENOMEM, "out of memory");
		memcpy(*buf, e->json, (size_t)e->size + 1);
		*len = (size_t)e->size;
		return 0;
	}
	struct stat st;
	cleanup_fd int fd = dir_open(src, name, &st, err);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > max)
		return msb_error_set(err, -E2BIG,
				     "'%.200s' in '%s' is %lld bytes (expected at most %zu)", name,
				     src->path, (long long)st.st_size, max);
	uint8_t *b = malloc((size_t)st.st_size + 1);
	if (!b)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int r = read_full(fd, b, (size_t)st.st_size);
	if (r < 0) {
		free(b);
		return msb_error_errno(err, r, "reading '%.200s' in '%s'", name, src->path);
	}
	b[st.st_size] = '\0';
	*buf = b;
	*len = (size_t)st.st_size;
	return 0;
}

/* ---- reading tars ------------------------------------------------------------------------- */

struct tar_in {
	int fd;
	uint8_t *buf;
};

static la_ssize_t tar_read_cb(struct archive *a, void *p, const void **out)
{
	struct tar_in *in = p;
	for (;;) {
		ssize_t n = read(in->fd, in->buf, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			archive_set_error(a, errno, "read: %s", strerror(errno));
		*out = in->buf;
		return n;
	}
}

/* Skipping by seeking: a plain tar's layers cost nothing in the first pass. */
static la_int64_t tar_skip_cb(struct archive *a, void *p, la_int64_t n)
{
	(void)a;
	struct tar_in *in = p;
	off_t cur = lseek(in->fd, 0, SEEK_CUR);
	if (cur < 0 || lseek(in->fd, (off_t)n, SEEK_CUR) < 0)
		return 0; /* libarchive reads through instead */
	return n;
}

static void tar_close(struct archive *a, struct tar_in *in)
{
	if (a)
		archive_read_free(a);
	free(in->buf);
	in->buf = NULL;
}

/* Open the tar from its start: any of the compressions layers use, nothing external. */
static int tar_open(const struct source *src, struct archive **out, struct tar_in *in,
		    struct msb_error *err)
{
	*out = NULL;
	in->fd = src->fd;
	if (lseek(src->fd, 0, SEEK_SET) < 0)
		return msb_error_errno(err, -errno, "'%s'", src->path);
	if (!(in->buf = malloc(CHUNK)))
		return msb_error_set(err, -ENOMEM, "out of memory");
	struct archive *a = archive_read_new();
	if (!a || archive_read_support_filter_gzip(a) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(a) != ARCHIVE_OK ||
	    archive_read_support_filter_xz(a) != ARCHIVE_OK ||
	    archive_read_support_filter_bzip2(a) != ARCHIVE_OK ||
	    archive_read_support_format_tar(a) != ARCHIVE_OK) {
		tar_close(a, in);
		return msb_error_set(err, -ENOMEM, "libarchive: cannot set up a tar reader");
	}
	archive_read_set_read_callback(a, tar_read_cb);
	archive_read_set_skip_callback(a, tar_skip_cb);
	archive_read_set_callback_data(a, in);
	if (archive_read_open1(a) != ARCHIVE_OK) {
		int r = msb_error_set(err, -EINVAL, "'%s' is not a tar archive: %s", src->path,
				      archive_error_string(a) ? archive_error_string(a) : "?");
		tar_close(a, in);
		return r;
	}
	*out = a;
	return 0;
}

/*
 * The next entry and its normalised name (malloc'd; NULL for the top
 * directory).  1 at the end, 0 for an entry, < 0 for a bad archive or a
 * hostile name.
 */
static int tar_next(const struct source *src, struct archive *a, struct archive_entry **e,
		    char **name, struct msb_error *err)
{
	*name = NULL;
	int r = archive_read_next_header(a, e);
	if (r == ARCHIVE_EOF)
		return 1;
	if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
		return msb_error_set(err, -EINVAL, "'%s': %s", src->path,
				     archive_error_string(a) ? archive_error_string(a)
							     : "not a tar archive");
	/* Compression inside compression is a bomb, not an image. */
	if (archive_filter_count(a) > 2)
		return msb_error_set(err, -EINVAL, "'%s' is compressed more than once", src->path);
	const char *raw = archive_entry_pathname(*e);
	if (!raw)
		return msb_error_set(err, -EINVAL, "'%s': an entry without a name", src->path);
	/* Image archives never hold sparse files; one here could expand a small archive into
	 * terabytes of zeros written to the store. */
	if (archive_entry_sparse_count(*e) > 0)
		return msb_error_set(err, -EINVAL,
				     "'%s': entry '%.200s' is a sparse file (refused)", src->path,
				     raw);
	char *n = NULL;
	r = norm_path(raw, false, &n);
	if (r == -ENOMEM)
		return msb_error_set(err, -ENOMEM, "out of memory");
	if (r == -EXDEV)
		return msb_error_set(err, -EINVAL,
				     "'%s': entry '%.200s' %s (refused: archive names must stay "
				     "inside the archive)",
				     src->path, raw,
				     raw[0] == '/' ? "has an absolute name"
						   : "has a '..' component");
	if (r < 0)
		return msb_error_set(err, -EINVAL, "'%s': entry '%.200s...' has a name too long",
				     src->path, raw);
	if (n[0] == '\0') {
		free(n);
		n = NULL;
	}
	*name = n;
	return 0;
}

/* Read what is left of the current entry into buf[have..size). */
static int tar_read_rest(const struct source *src, struct archive *a, uint8_t *buf, size_t have,
			 size_t size, const char *name, struct msb_error *err)
{
	while (have < size) {
		la_ssize_t k = archive_read_data(a, buf + have, size - have);
		if (k < 0)
			return msb_error_set(err, -EINVAL, "'%s': reading '%.200s': %s", src->path,
					     name, archive_error_string(a));
		if (k == 0)
			return msb_error_set(err, -EINVAL, "'%s': '%.200s' is cut short", src->path,
					     name);
		have += (size_t)k;
	}
	return 0;
}

/* Pass 1: every entry's name, type and size; JSON-looking entries held. */
static int tar_scan(struct source *src, struct msb_error *err)
{
	struct tar_in in = {0};
	struct archive *a;
	int r = tar_open(src, &a, &in, err);
	if (r < 0)
		return r;
	size_t cap = 0, count = 0;
	for (;;) {
		struct archive_entry *e;
		char *name;
		if ((r = tar_next(src, a, &e, &name, err)) != 0) {
			r = r > 0 ? 0 : r;
			break;
		}
		if (++count > MSB_ARCHIVE_ENTRIES_MAX) {
			free(name);
			r = msb_error_set(err, -E2BIG, "'%s' has more than %u entries", src->path,
					  MSB_ARCHIVE_ENTRIES_MAX);
			break;
		}
		mode_t type = archive_entry_filetype(e);
		const char *hard = archive_entry_hardlink(e);
		struct entry ent = {.name = name};
		if (!name || (!hard && type != AE_IFREG && type != AE_IFLNK)) {
			free(name); /* directories and the rest: nothing an image needs */
			continue;
		}
		if (hard || type == AE_IFLNK) {
			/* A link is an alias among the archive's names, never followed on disk. */
			char *joined = NULL;
			const char *t = hard ? hard : archive_entry_symlink(e);
			if (!t)
				t = "";
			if (!hard && t[0] != '/') {
				const char *slash = strrchr(name, '/');
				if (asprintf(&joined, "%.*s%s%s", slash ? (int)(slash - name) : 0,
					     name, slash ? "/" : "", t) < 0)
					joined = NULL;
				if (!joined) {
					free(name);
					r = msb_error_set(err, -ENOMEM, "out of memory");
					break;
				}
				t = joined;
			}
			r = norm_path(t, !hard, &ent.target);
			free(joined);
			if (r < 0 || !ent.target[0]) {
				r = msb_error_set(err, -EINVAL,
						  "'%s': link '%.200s' points outside the archive",
						  src->path, name);
				free(name);
				free(ent.target);
				break;
			}
		} else {
			ent.size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
			if (ent.size < 0) {
				r = msb_error_set(err, -EINVAL, "'%s': '%.200s' has no size",
						  src->path, name);
				free(name);
				break;
			}
			uint8_t first[512];
			la_ssize_t k = ent.size ? archive_read_data(a, first, sizeof(first)) : 0;
			if (k < 0) {
				r = msb_error_set(err, -EINVAL, "'%s': reading '%.200s': %s",
						  src->path, name, archive_error_string(a));
				free(name);
				break;
			}
			size_t ws = 0;
			while (ws < (size_t)k && strchr(" \t\r\n", first[ws]))
				ws++;
			bool looks_json = ws < (size_t)k && (first[ws] == '{' || first[ws] == '[');
			/* Held only within the limits; one not held fails later if it is needed. */
			if (looks_json && (uint64_t)ent.size <= MSB_CONFIG_MAX &&
			    src->json_bytes + (size_t)ent.size <= MSB_ARCHIVE_JSON_MAX) {
				if (!(ent.json = malloc((size_t)ent.size + 1))) {
					free(name);
					r = msb_error_set(err, -ENOMEM, "out of memory");
					break;
				}
				memcpy(ent.json, first, (size_t)k);
				r = tar_read_rest(src, a, ent.json, (size_t)k, (size_t)ent.size,
						  name, err);
				if (r < 0) {
					free(name);
					free(ent.json);
					break;
				}
				ent.json[ent.size] = '\0';
				src->json_bytes += (size_t)ent.size;
			}
		}
		if (src->n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct entry *ne = realloc(src->ents, ncap * sizeof(*ne));
			if (!ne) {
				free(ent.name);
				free(ent.target);
				free(ent.json);
				r = msb_error_set(err, -ENOMEM, "out of memory");
				break;
			}
			src->ents = ne;
			cap = ncap;
		}
		src->ents[src->n++] = ent;
	}
	tar_close(a, &in);
	if (r < 0)
		return r;
	if (src->n > 1) /* an empty archive has no array at all */
		qsort(src->ents, src->n, sizeof(struct entry), ent_cmp);
	for (size_t i = 1; i < src->n; i++)
		if (!strcmp(src->ents[i].name, src->ents[i - 1].name))
			return msb_error_set(err, -EINVAL,
					     "'%s' holds '%.200s' twice (refused: which one counts "
					     "would be ambiguous)",
					     src->path, src->ents[i].name);
	return 0;
}

static int source_open(const char *path, struct source *src, struct msb_error *err)
{
	memset(src, 0, sizeof(*src));
	src->fd = -1;
	src->path = path;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return msb_error_errno(err, -errno, "'%s'", path);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int r = msb_error_errno(err, -errno, "'%s'", path);
		close(fd);
		return r;
	}
	src->fd = fd;
	if (S_ISDIR(st.st_mode))
		return 0;
	if (!S_ISREG(st.st_mode)) {
		source_close(src);
		return msb_error_set(
			err, -EINVAL,
			"'%s' is neither a directory nor a regular file (expected an "
			"OCI layout, an OCI archive or a docker-archive; a tar is read "
			"twice, so no pipes)",
			path);
	}
	src->is_tar = true;
	int r = tar_scan(src, err);
	if (r < 0)
		source_close(src);
	return r;
}

/* ---- wanted blobs, and streaming them into the store ---------------------------------------- */

struct want {
	char *name; /* the file in the input (a tar's: resolved past its links) */
	char digest[72];
	int64_t size;
	char label[320];
};

struct wants {
	struct want *v;
	size_t n;
};

static void wants_free(struct wants *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i].name);
	free(w->v);
	w->v = NULL;
	w->n = 0;
}

static int want_cmp(const void *a, const void *b)
{
	return strcmp(((const struct want *)a)->name, ((const struct want *)b)->name);
}

/* Want blob `digest` of `size` bytes from file `name`, unless the store has it already. */
static int want_add(const struct msb_store *s, const struct source *src, struct wants *w,
		    const char *name, const char *digest, int64_t size, const char *label,
		    struct msb_error *err)
{
	/*
	 * A blob already wanted or in the store is not read again, but its size is still
	 * checked: the manifest recorded (a docker-archive's is msb's own, sized from its
	 * files) must not claim a size its blob does not have.
	 */
	int64_t known = -1;
	for (size_t i = 0; i < w->n && known < 0; i++)
		if (!strcmp(w->v[i].digest, digest))
			known = w->v[i].size;
	char path[PATH_MAX];
	struct stat st;
	if (known < 0 && msb_store_has(s, digest) &&
	    msb_store_blob_path(s, digest, path, sizeof(path)) == 0 && stat(path, &st) == 0)
		known = st.st_size;
	if (known >= 0) {
		if (size >= 0 && size != known)
			return msb_error_set(err, -EBADMSG,
					     "%s: %lld bytes for '%.200s' in '%s', but the blob is "
					     "%lld bytes",
					     label, (long long)size, name, src->path,
					     (long long)known);
		return 0;
	}
	int64_t have;
	const char *file = name;
	if (src->is_tar) {
		const struct entry *e;
		int r = tar_resolve(src, name, &e, err);
		if (r < 0)
			return msb_error_prefix(err, "%s: ", label), r;
		file = e->name;
		have = e->size;
	} else {
		int r = src_size(src, name, &have, err);
		if (r < 0)
			return msb_error_prefix(err, "%s: ", label), r;
	}
	if (size >= 0 && have != size)
		return msb_error_set(err, -EBADMSG,
				     "%s: '%.200s' in '%s' is %lld bytes, expected %lld", label,
				     name, src->path, (long long)have, (long long)size);
	for (size_t i = 0; i < w->n; i++)
		if (!strcmp(w->v[i].name, file))
			return msb_error_set(err, -EBADMSG,
					     "%s: '%.200s' in '%s' is also %s (one file cannot "
					     "have two digests)",
					     label, name, src->path, w->v[i].digest);
	struct want *nv = realloc(w->v, (w->n + 1) * sizeof(*nv));
	if (!nv)
		return msb_error_set(err, -ENOMEM, "out of memory");
	w->v = nv;
	struct want *x = &w->v[w->n];
	memset(x, 0, sizeof(*x));
	if (!(x->name = strdup(file)))
		return msb_error_set(err, -ENOMEM, "out of memory");
	snprintf(x->digest, sizeof(x->digest), "%s", digest);
	x->size = have;
	/* The store's writer keeps 160 bytes of it: the digest first, then where it came from. */
	snprintf(x->label, sizeof(x->label), "%s ('%.60s')", label, name);
	w->n++;
	return 0;
}

/* The reader of one wanted blob: a file, or the tar's current entry. */
struct blob_in {
	int fd;
	struct archive *a;
};

/* Stream n bytes into the store as x->digest, under its lock (one writer per digest). */
static int store_stream(const struct msb_store *s, const struct want *x, struct blob_in *in,
			const char *path, uint8_t *buf, struct msb_error *err)
{
	int lk = msb_store_lock(s, x->digest, err);
	if (lk < 0)
		return lk;
	int r = 0;
	if (msb_store_has(s, x->digest))
		goto out; /* another process published it meanwhile */
	struct msb_blob_writer *w;
	if ((r = msb_blob_writer_open(s, x->digest, x->size, &w, err)) < 0)
		goto out;
	msb_blob_writer_label(w, x->label);
	for (;;) {
		ssize_t k;
		if (in->a) {
			k = archive_read_data(in->a, buf, CHUNK);
			if (k < 0) {
				r = msb_error_set(err, -EINVAL, "%s: reading '%s': %s", x->label,
						  path, archive_error_string(in->a));
				break;
			}
		} else {
			k = read(in->fd, buf, CHUNK);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				r = msb_error_errno(err, -errno, "%s: reading", x->label);
				break;
			}
		}
		if (k == 0)
			break;
		if ((r = msb_blob_writer_write(w, buf, (size_t)k, err)) < 0)
			break;
	}
	if (r < 0)
		msb_blob_writer_abort(w);
	else
		r = msb_blob_writer_commit(w, err);
out:
	msb_store_unlock(lk);
	return r;
}

static int stream_wants(const struct msb_store *s, struct source *src, struct wants *w,
			struct msb_error *err)
{
	if (!w->n)
		return 0;
	uint8_t *buf = malloc(CHUNK);
	if (!buf)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int r = 0;
	if (!src->is_tar) {
		for (size_t i = 0; r == 0 && i < w->n; i++) {
			struct stat st;
			struct blob_in in = {.fd = dir_open(src, w->v[i].name, &st, err)};
			if (in.fd < 0) {
				r = in.fd;
				msb_error_prefix(err, "%s: ", w->v[i].label);
				break;
			}
			r = store_stream(s, &w->v[i], &in, src->path, buf, err);
			close(in.fd);
		}
		free(buf);
		return r;
	}
	/* Pass 2 over the tar: each wanted entry as it comes. */
	if (w->n > 1)
		qsort(w->v, w->n, sizeof(struct want), want_cmp);
	bool *done = calloc(w->n, sizeof(bool));
	struct tar_in tin = {0};
	struct archive *a = NULL;
	if (!done)
		r = msb_error_set(err, -ENOMEM, "out of memory");
	else
		r = tar_open(src, &a, &tin, err);
	while (r == 0) {
		struct archive_entry *e;
		char *name;
		if ((r = tar_next(src, a, &e, &name, err)) != 0) {
			r = r > 0 ? 0 : r;
			break;
		}
		struct want key = {.name = name};
		struct want *x = w->n && name && archive_entry_filetype(e) == AE_IFREG &&
						 !archive_entry_hardlink(e)
					 ? bsearch(&key, w->v, w->n, sizeof(struct want), want_cmp)
					 : NULL;
		free(name);
		if (!x || done[x - w->v])
			continue;
		struct blob_in in = {.fd = -1, .a = a};
		r = store_stream(s, x, &in, src->path, buf, err);
		done[x - w->v] = true;
	}
	for (size_t i = 0; r == 0 && i < w->n; i++)
		if (!done[i])
			r = msb_error_set(err, -ENOENT, "%s: not found when '%s' was read again",
					  w->v[i].label, src->path);
	tar_close(a, &tin);
	free(done);
	free(buf);
	return r;
}

/* ---- finding the images --------------------------------------------------------------------- */

struct found {
	char digest[72]; /* its platform manifest */
	struct strv names;
};

struct load {
	const struct msb_store *s;
	struct source src;
	struct wants wants;
	struct found *imgs;
	size_t nimgs;
	char skipped[200]; /* the last platform that was not linux/amd64, for the message */
};

/* Check a document against its descriptor before anything parses it. */
static int verify_doc(const uint8_t *buf, size_t len, const char *digest, int64_t size,
		      const char *what, struct msb_error *err)
{
	char got[72];
	msb_digest_of(buf, len, got);
	if (size >= 0 && (uint64_t)size != len)
		return msb_error_set(err, -EBADMSG, "%s %s: %zu bytes, expected %lld", what, digest,
				     len, (long long)size);
	if (strcmp(got, digest) != 0)
		return msb_error_set(err, -EBADMSG,
				     "%s %s: content digest %s does not match (a corrupt blob)",
				     what, digest, got);
	return 0;
}

/* Read blob `digest` of the layout as a document, verified. */
static int layout_doc(struct load *l, const char *digest, int64_t size, size_t max,
		      const char *what, uint8_t **buf, size_t *len, struct msb_error *err)
{
	char name[96];
	snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
	int r = src_read_json(&l->src, name, max, buf, len, err);
	if (r < 0)
		return msb_error_prefix(err, "%s %s: ", what, digest), r;
	if ((r = verify_doc(*buf, *len, digest, size, what, err)) < 0) {
		free(*buf);
		*buf = NULL;
	}
	return r;
}

static bool is_amd64(const char *os, const char *arch)
{
	return (!os || !strcmp(os, "linux")) && (!arch || !strcmp(arch, "amd64"));
}

/*
 * A parsed config and its manifest's layers: linux/amd64, one diff_id per
 * layer, no foreign layers.  -ENOENT for another platform.
 */
static int check_image(struct load *l, const struct msb_image_config *c, size_t nlayers,
		       const char *what, struct msb_error *err)
{
	if (!is_amd64(c->os, c->arch)) {
		snprintf(l->skipped, sizeof(l->skipped), "%.40s/%.40s", c->os ? c->os : "?",
			 c->arch ? c->arch : "?");
		return msb_error_set(err, -ENOENT, "%s is an image for %s (expected linux/amd64)",
				     what, l->skipped);
	}
	if (c->ndiff_ids != nlayers)
		return msb_error_set(err, -EINVAL,
				     "%s: %zu layers but the config lists %zu diff_ids (expected "
				     "one per layer)",
				     what, nlayers, c->ndiff_ids);
	return 0;
}

/*
 * The platform manifest `d` leads to (an index: its linux/amd64 entry,
 * recursively), its manifest and config put in the store, its layers wanted.
 */
static int oci_resolve(struct load *l, const struct msb_descriptor *d, int depth, char out[72],
		       struct msb_error *err)
{
	if (depth > INDEX_DEPTH_MAX)
		return msb_error_set(err, -E2BIG, "'%s': indexes nested more than %d deep",
				     l->src.path, INDEX_DEPTH_MAX);
	if (d->os && d->arch && !is_amd64(d->os, d->arch)) {
		snprintf(l->skipped, sizeof(l->skipped), "%.40s/%.40s", d->os, d->arch);
		return msb_error_set(err, -ENOENT, "manifest %s is for %s (expected linux/amd64)",
				     d->digest, l->skipped);
	}
	uint8_t *buf;
	size_t len;
	int r = layout_doc(l, d->digest, d->size, MSB_MANIFEST_MAX, "manifest", &buf, &len, err);
	if (r < 0)
		return r;
	enum msb_media_kind kind;
	if ((r = msb_manifest_detect(d->media_type, buf, len, &kind, err)) < 0)
		goto out;
	if (kind == MSB_MEDIA_OCI_INDEX || kind == MSB_MEDIA_DOCKER_LIST) {
		struct msb_index idx;
		if ((r = msb_index_parse(buf, len, &idx, err)) < 0)
			goto out;
		int sel = msb_index_select(&idx, "linux", "amd64", NULL, err);
		if (sel < 0) {
			r = sel;
			msb_error_prefix(err, "index %s: ", d->digest);
			snprintf(l->skipped, sizeof(l->skipped), "an index without linux/amd64");
		} else {
			r = oci_resolve(l, &idx.manifests[sel], depth + 1, out, err);
		}
		msb_index_free(&idx);
		goto out;
	}
	struct msb_manifest m;
	if ((r = msb_manifest_parse(buf, len, &m, err)) < 0) {
		msb_error_prefix(err, "manifest %s: ", d->digest);
		goto out;
	}
	uint8_t *cbuf = NULL;
	size_t clen = 0;
	struct msb_image_config c = {0};
	char what[100];
	snprintf(what, sizeof(what), "image %s", d->digest);
	if ((r = layout_doc(l, m.config.digest, m.config.size, MSB_CONFIG_MAX, "config", &cbuf,
			    &clen, err)) == 0 &&
	    (r = msb_image_config_parse(cbuf, clen, &c, err)) == 0 &&
	    (r = check_image(l, &c, m.nlayers, what, err)) == 0 &&
	    (r = msb_store_put(l->s, d->digest, buf, len, err)) == 0)
		r = msb_store_put(l->s, m.config.digest, cbuf, clen, err);
	for (size_t i = 0; r == 0 && i < m.nlayers; i++) {
		const struct msb_descriptor *ld = &m.layers[i];
		char label[120], name[96];
		snprintf(label, sizeof(label), "layer %s", ld->digest);
		if (msb_media_kind(ld->media_type) == MSB_MEDIA_LAYER_FOREIGN) {
			r = msb_error_set(err, -ENOTSUP,
					  "%s: layer %s is a foreign layer (not supported)", what,
					  ld->digest);
			break;
		}
		snprintf(name, sizeof(name), "blobs/sha256/%s", ld->digest + 7);
		r = want_add(l->s, &l->src, &l->wants, name, ld->digest, ld->size, label, err);
	}
	if (r == 0)
		snprintf(out, 72, "%s", d->digest);
	free(cbuf);
	msb_image_config_free(&c);
	msb_manifest_free(&m);
out:
	free(buf);
	return r;
}

/* A string annotation of an index.json entry, or NULL. */
static const char *annotation(json_t *entry, const char *key)
{
	json_t *v = json_object_get(json_object_get(entry, "annotations"), key);
	return json_is_string(v) && json_string_length(v) <= MSB_IMAGE_REF_MAX
		       ? json_string_value(v)
		       : NULL;
}

/* The image with this manifest digest (entries naming one image twice are one image). */
static int found_add(struct load *l, const char *digest, struct found **out, struct msb_error *err)
{
	for (size_t i = 0; i < l->nimgs; i++)
		if (!strcmp(l->imgs[i].digest, digest)) {
			*out = &l->imgs[i];
			return 0;
		}
	struct found *nv = realloc(l->imgs, (l->nimgs + 1) * sizeof(*nv));
	if (!nv)
		return msb_error_set(err, -ENOMEM, "out of memory");
	l->imgs = nv;
	*out = &nv[l->nimgs++];
	memset(*out, 0, sizeof(**out));
	snprintf((*out)->digest, sizeof((*out)->digest), "%s", digest);
	return 0;
}

static int oci_load(struct load *l, struct msb_error *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int r;
	if (src_has(&l->src, "oci-layout")) {
		if ((r = src_read_json(&l->src, "oci-layout", SMALL_MAX, &buf, &len, err)) < 0)
			return r;
		json_t *v = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
		json_t *ver = json_object_get(v, "imageLayoutVersion");
		bool ok = json_is_string(ver) && !strncmp(json_string_value(ver), "1.", 2);
		json_decref(v);
		free(buf);
		if (!ok)
			return msb_error_set(err, -ENOTSUP,
					     "'%s': oci-layout: expected {\"imageLayoutVersion\": "
					     "\"1.0.0\"}",
					     l->src.path);
	}
	if ((r = src_read_json(&l->src, "index.json", MSB_MANIFEST_MAX, &buf, &len, err)) < 0)
		return r;
	struct msb_index idx;
	json_error_t je;
	json_t *root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
	r = msb_index_parse(buf, len, &idx, err);
	free(buf);
	if (r < 0) {
		json_decref(root);
		return msb_error_prefix(err, "'%s': index.json: ", l->src.path), r;
	}
	json_t *entries = json_object_get(root, "manifests");
	int last_skip = 0;
	struct msb_error skip_err = MSB_ERROR_INIT;
	for (size_t i = 0; r == 0 && i < idx.n; i++) {
		char digest[72];
		struct msb_error e2 = MSB_ERROR_INIT;
		r = oci_resolve(l, &idx.manifests[i], 0, digest, &e2);
		if (r == -ENOENT && l->skipped[0]) {
			/* Another platform's entry: not ours to load. */
			skip_err = e2;
			last_skip = r;
			l->skipped[0] = '\0';
			r = 0;
			continue;
		}
		if (r < 0) {
			*err = e2;
			break;
		}
		struct found *f;
		if ((r = found_add(l, digest, &f, err)) < 0)
			break;
		json_t *ent = json_array_get(entries, i);
		const char *cname = annotation(ent, ANN_IMAGE_NAME);
		const char *rname = annotation(ent, ANN_REF_NAME);
		char *key = NULL, what[80];
		snprintf(what, sizeof(what), "index.json manifests[%zu]: " ANN_IMAGE_NAME, i);
		if (cname) {
			r = pin_key_of(cname, what, &key, err);
		} else if (rname && strpbrk(rname, "/:@")) {
			/* A full reference; a bare tag ("latest") names nothing by itself. */
			struct msb_error ignored = MSB_ERROR_INIT;
			if (pin_key_of(rname, what, &key, &ignored) < 0)
				key = NULL;
		}
		if (r == 0 && key && strv_take(&f->names, key) < 0)
			r = msb_error_set(err, -ENOMEM, "out of memory");
	}
	json_decref(root);
	msb_index_free(&idx);
	if (r == 0 && l->nimgs == 0) {
		if (last_skip) {
			*err = skip_err;
			return msb_error_prefix(err,
						"'%s' has no linux/amd64 image: ", l->src.path),
			       -ENOENT;
		}
		return msb_error_set(err, -ENOENT, "'%s': index.json lists no image", l->src.path);
	}
	return r;
}

/* A string field of a manifest.json entry, bounded. */
static const char *dstring(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < PATH_MAX &&
			       !memchr(json_string_value(v), '\0', json_string_length(v))
		       ? json_string_value(v)
		       : NULL;
}

/* The OCI manifest msb records for a docker-archive image. */
static char *docker_manifest(const char *config_digest, size_t config_len,
			     const struct msb_image_config *c, const int64_t *sizes)
{
	json_t *layers = json_array();
	for (size_t i = 0; layers && i < c->ndiff_ids; i++)
		json_array_append_new(layers,
				      json_pack("{sssssI}", "mediaType", MT_OCI_LAYER, "digest",
						c->diff_ids[i], "size", (json_int_t)sizes[i]));
	json_t *m = json_pack("{sisss{sssssI}so}", "schemaVersion", 2, "mediaType", MT_OCI_MANIFEST,
			      "config", "mediaType", MT_OCI_CONFIG, "digest", config_digest, "size",
			      (json_int_t)config_len, "layers", layers);
	if (!m)
		return NULL;
	char *text = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(m);
	return text;
}

static int docker_image(struct load *l, json_t *item, size_t i, struct msb_error *err)
{
	char what[160];
	snprintf(what, sizeof(what), "'%.100s': manifest.json[%zu]", l->src.path, i);
	const char *cfg = dstring(item, "Config");
	json_t *layers = json_object_get(item, "Layers");
	json_t *tags = json_object_get(item, "RepoTags");
	if (!json_is_object(item) || !cfg)
		return msb_error_set(err, -EINVAL, "%s.Config: expected a file name", what);
	if (!json_is_array(layers) || json_array_size(layers) == 0 ||
	    json_array_size(layers) > MSB_LAYERS_MAX)
		return msb_error_set(err, -EINVAL, "%s.Layers: expected 1 to %d file names", what,
				     MSB_LAYERS_MAX);
	if (tags && !json_is_null(tags) &&
	    (!json_is_array(tags) || json_array_size(tags) > NAMES_MAX))
		return msb_error_set(err, -EINVAL, "%s.RepoTags: expected at most %d references",
				     what, NAMES_MAX);
	if (json_object_get(item, "LayerSources"))
		return msb_error_set(err, -ENOTSUP,
				     "%s: foreign layers (LayerSources) are not "
				     "supported",
				     what);
	uint8_t *cbuf;
	size_t clen;
	int r = src_read_json(&l->src, cfg, MSB_CONFIG_MAX, &cbuf, &clen, err);
	if (r < 0)
		return msb_error_prefix(err, "%s.Config: ", what), r;
	char cdigest[72], mdigest[72], image[100];
	msb_digest_of(cbuf, clen, cdigest);
	snprintf(image, sizeof(image), "docker-archive image %.50s", cdigest + 7);
	struct msb_image_config c;
	size_t nl = json_array_size(layers);
	int64_t *sizes = calloc(nl, sizeof(int64_t));
	char *mtext = NULL;
	if (!sizes) {
		free(cbuf);
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	if ((r = msb_image_config_parse(cbuf, clen, &c, err)) < 0) {
		msb_error_prefix(err, "%s: config: ", what);
		goto out_nocfg;
	}
	if ((r = check_image(l, &c, nl, image, err)) < 0)
		goto out;
	for (size_t j = 0; r == 0 && j < nl; j++) {
		json_t *lv = json_array_get(layers, j);
		const char *name = json_is_string(lv) && json_string_length(lv) < PATH_MAX
					   ? json_string_value(lv)
					   : NULL;
		if (!name) {
			r = msb_error_set(err, -EINVAL, "%s.Layers[%zu]: expected a file name",
					  what, j);
			break;
		}
		/* Uncompressed tars: a layer's digest is its diff_id, which the writer checks. */
		char label[200];
		snprintf(label, sizeof(label), "layer %zu %s", j, c.diff_ids[j]);
		if ((r = src_size(&l->src, name, &sizes[j], err)) < 0)
			msb_error_prefix(err, "%s: ", label);
		else
			r = want_add(l->s, &l->src, &l->wants, name, c.diff_ids[j], sizes[j], label,
				     err);
	}
	if (r < 0)
		goto out;
	if (!(mtext = docker_manifest(cdigest, clen, &c, sizes))) {
		r = msb_error_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	msb_digest_of(mtext, strlen(mtext), mdigest);
	if ((r = msb_store_put(l->s, cdigest, cbuf, clen, err)) < 0 ||
	    (r = msb_store_put(l->s, mdigest, mtext, strlen(mtext), err)) < 0)
		goto out;
	struct found *f;
	if ((r = found_add(l, mdigest, &f, err)) < 0)
		goto out;
	for (size_t j = 0; r == 0 && json_is_array(tags) && j < json_array_size(tags); j++) {
		json_t *t = json_array_get(tags, j);
		char tw[200], *key = NULL;
		snprintf(tw, sizeof(tw), "%s.RepoTags[%zu]", what, j);
		if (!json_is_string(t) || json_string_length(t) > MSB_IMAGE_REF_MAX) {
			r = msb_error_set(err, -EINVAL, "%s: expected a reference", tw);
			break;
		}
		if ((r = pin_key_of(json_string_value(t), tw, &key, err)) == 0 && key &&
		    strv_take(&f->names, key) < 0)
			r = msb_error_set(err, -ENOMEM, "out of memory");
	}
out:
	msb_image_config_free(&c);
out_nocfg:
	free(mtext);
	free(sizes);
	free(cbuf);
	return r;
}

static int docker_load(struct load *l, struct msb_error *err)
{
	uint8_t *buf;
	size_t len;
	int r = src_read_json(&l->src, "manifest.json", MSB_MANIFEST_MAX, &buf, &len, err);
	if (r < 0)
		return r;
	json_error_t je;
	json_t *root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
	free(buf);
	if (!root)
		return msb_error_set(err, -EINVAL, "'%s': manifest.json: %s (line %d)", l->src.path,
				     je.text, je.line);
	if (!json_is_array(root) || json_array_size(root) == 0 ||
	    json_array_size(root) > MSB_INDEX_MAX) {
		json_decref(root);
		return msb_error_set(err, -EINVAL,
				     "'%s': manifest.json: expected an array of 1 to %d images",
				     l->src.path, MSB_INDEX_MAX);
	}
	for (size_t i = 0; r == 0 && i < json_array_size(root); i++)
		r = docker_image(l, json_array_get(root, i), i, err);
	json_decref(root);
	return r;
}

void msb_image_load_free(char **refs, size_t n)
{
	for (size_t i = 0; refs && i < n; i++)
		free(refs[i]);
	free(refs);
}

int msb_image_load(const struct msb_store *s, const char *path, const char *tag, char ***refs,
		   size_t *nrefs, struct msb_error *err)
{
	*refs = NULL;
	*nrefs = 0;
	char *tag_key = NULL;
	int r;
	if (tag) {
		if ((r = pin_key_of(tag, "--tag", &tag_key, err)) < 0)
			return r;
		if (!tag_key)
			return msb_error_set(err, -EINVAL,
					     "--tag '%.200s': a digest names no image to pin "
					     "(expected NAME[:TAG])",
					     tag);
	}
	struct load l = {.s = s};
	int guard = -1;
	if ((r = source_open(path, &l.src, err)) < 0)
		goto out;
	/* Between the first published blob and the pins, prune must not run. */
	if ((r = guard = msb_image_prune_guard(s, err)) < 0)
		goto out;
	if (src_has(&l.src, "index.json"))
		r = oci_load(&l, err);
	else if (src_has(&l.src, "manifest.json"))
		r = docker_load(&l, err);
	else
		r = msb_error_set(err, -EINVAL,
				  "'%s' is not an OCI image layout, OCI archive or docker-archive "
				  "(expected index.json or manifest.json in it)",
				  path);
	if (r < 0)
		goto out;
	if (tag_key) {
		/* --tag names the one image without a name, or adds a name to the only image. */
		size_t unnamed = 0, which = 0;
		for (size_t i = 0; i < l.nimgs; i++)
			if (!l.imgs[i].names.n) {
				unnamed++;
				which = i;
			}
		if (unnamed != 1 && l.nimgs != 1) {
			r = msb_error_set(
				err, -EINVAL,
				"--tag: '%s' holds %zu images, %zu without a name (expected "
				"one image, or one without a name)",
				path, l.nimgs, unnamed);
			goto out;
		}
		r = strv_take(&l.imgs[which].names, tag_key);
		tag_key = NULL;
		if (r < 0) {
			r = msb_error_set(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	/* Every name is compared with the others and pinned: bound them all. */
	size_t total = 0;
	for (size_t i = 0; i < l.nimgs; i++)
		total += l.imgs[i].names.n;
	if (total > NAMES_MAX) {
		r = msb_error_set(err, -E2BIG, "'%s' names %zu images (expected at most %d names)",
				  path, total, NAMES_MAX);
		goto out;
	}
	for (size_t i = 0; i < l.nimgs; i++) {
		if (!l.imgs[i].names.n) {
			r = msb_error_set(
				err, -EINVAL,
				"image %s in '%s' has no name (expected --tag NAME[:TAG])",
				l.imgs[i].digest, path);
			goto out;
		}
		for (size_t j = 0; j < i; j++)
			for (size_t a = 0; a < l.imgs[i].names.n; a++)
				for (size_t b = 0; b < l.imgs[j].names.n; b++)
					if (!strcmp(l.imgs[i].names.v[a], l.imgs[j].names.v[b]) &&
					    strcmp(l.imgs[i].digest, l.imgs[j].digest)) {
						r = msb_error_set(err, -EINVAL,
								  "'%s' names two images %s", path,
								  l.imgs[i].names.v[a]);
						goto out;
					}
	}
	if ((r = stream_wants(s, &l.src, &l.wants, err)) < 0)
		goto out;
	/* Whole in the store (everything verified), before anything is named. */
	for (size_t i = 0; i < l.nimgs; i++) {
		struct msb_image img;
		if ((r = msb_image_open(s, l.imgs[i].digest, &img, err)) < 0)
			goto out;
		msb_image_close(&img);
	}
	struct strv all = {0};
	for (size_t i = 0; r == 0 && i < l.nimgs; i++)
		for (size_t j = 0; r == 0 && j < l.imgs[i].names.n; j++) {
			if ((r = msb_store_pin_set(s, l.imgs[i].names.v[j], l.imgs[i].digest,
						   err)) < 0)
				break;
			if (strv_take(&all, strdup(l.imgs[i].names.v[j])) < 0)
				r = msb_error_set(err, -ENOMEM, "out of memory");
		}
	if (r < 0) {
		strv_free(&all);
		goto out;
	}
	*refs = all.v;
	*nrefs = all.n;
out:
	msb_store_unlock(guard);
	free(tag_key);
	for (size_t i = 0; i < l.nimgs; i++)
		strv_free(&l.imgs[i].names);
	free(l.imgs);
	wants_free(&l.wants);
	source_close(&l.src);
	return r;
}

/* ---- save ----------------------------------------------------------------------------------- */

/* Where blobs and files go: a directory, or a tar being written. */
struct sink {
	int dirfd;
	struct archive *a;
	const char *out;
};

static int sink_begin(struct sink *k, const char *name, int64_t size, bool dir, int *fd,
		      struct msb_error *err)
{
	*fd = -1;
	if (k->a) {
		struct archive_entry *e = archive_entry_new();
		if (!e)
			return msb_error_set(err, -ENOMEM, "out of memory");
		archive_entry_set_pathname(e, name);
		archive_entry_set_filetype(e, dir ? AE_IFDIR : AE_IFREG);
		archive_entry_set_perm(e, dir ? 0755 : 0644);
		archive_entry_set_size(e, dir ? 0 : size);
		archive_entry_set_mtime(e, 0, 0);
		int r = archive_write_header(k->a, e);
		archive_entry_free(e);
		if (r != ARCHIVE_OK)
			return msb_error_set(err, -EIO, "writing '%s': %s", k->out,
					     archive_error_string(k->a));
		return 0;
	}
	if (dir) {
		if (mkdirat(k->dirfd, name, 0755) < 0)
			return msb_error_errno(err, -errno, "'%s/%s'", k->out, name);
		return 0;
	}
	*fd = openat(k->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (*fd < 0)
		return msb_error_errno(err, -errno, "'%s/%s'", k->out, name);
	return 0;
}

static int sink_write(struct sink *k, int fd, const void *buf, size_t len, struct msb_error *err)
{
	if (k->a) {
		la_ssize_t n = archive_write_data(k->a, buf, len);
		if (n < 0 || (size_t)n != len)
			return msb_error_set(err, -EIO, "writing '%s': %s", k->out,
					     archive_error_string(k->a));
		return 0;
	}
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return msb_error_errno(err, n < 0 ? -errno : -EIO, "writing into '%s'",
					       k->out);
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int sink_end(int fd, const char *out, struct msb_error *err)
{
	if (fd < 0)
		return 0;
	int r = fsync(fd) < 0 ? msb_error_errno(err, -errno, "writing into '%s'", out) : 0;
	close(fd);
	return r;
}

static int sink_file(struct sink *k, const char *name, const void *buf, size_t len,
		     struct msb_error *err)
{
	int fd;
	int r = sink_begin(k, name, (int64_t)len, false, &fd, err);
	if (r == 0)
		r = sink_write(k, fd, buf, len, err);
	int r2 = sink_end(fd, k->out, err);
	return r < 0 ? r : r2;
}

/* Copy a blob out of the store, checking its digest on the way (a disk can rot). */
static int sink_blob(const struct msb_store *s, struct sink *k, const char *digest, uint8_t *buf,
		     struct msb_error *err)
{
	cleanup_fd int in = msb_store_blob_open(s, digest, err);
	if (in < 0)
		return in;
	struct stat st;
	if (fstat(in, &st) < 0)
		return msb_error_errno(err, -errno, "blob %s", digest);
	char name[96];
	snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
	int fd;
	int r = sink_begin(k, name, st.st_size, false, &fd, err);
	if (r < 0)
		return r;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL))
		r = msb_error_set(err, -ENOMEM, "sha256 unavailable");
	uint64_t total = 0;
	while (r == 0) {
		ssize_t n = read(in, buf, CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = msb_error_errno(err, -errno, "reading blob %s", digest);
			break;
		}
		if (n == 0)
			break;
		total += (uint64_t)n;
		if (total > (uint64_t)st.st_size)
			r = msb_error_set(err, -EIO, "blob %s grew while it was read", digest);
		else if (!EVP_DigestUpdate(md, buf, (size_t)n))
			r = msb_error_set(err, -ENOMEM, "sha256 failed");
		else
			r = sink_write(k, fd, buf, (size_t)n, err);
	}
	if (r == 0) {
		unsigned char out[EVP_MAX_MD_SIZE];
		unsigned len = 0;
		char hex[65];
		static const char hexd[] = "0123456789abcdef";
		if (!EVP_DigestFinal_ex(md, out, &len) || len != 32)
			r = msb_error_set(err, -ENOMEM, "sha256 failed");
		for (unsigned i = 0; r == 0 && i < 32; i++) {
			hex[2 * i] = hexd[out[i] >> 4];
			hex[2 * i + 1] = hexd[out[i] & 15];
		}
		hex[64] = '\0';
		if (r == 0 && (total != (uint64_t)st.st_size || strcmp(hex, digest + 7)))
			r = msb_error_set(err, -EBADMSG,
					  "blob %s in the image store is corrupt (content digest "
					  "sha256:%s); pull or load the image again",
					  digest, hex);
	}
	EVP_MD_CTX_free(md);
	int r2 = sink_end(fd, k->out, err);
	return r < 0 ? r : r2;
}

struct saved {
	char digest[72];
	char *key; /* the pin key, or NULL for a digest */
	struct msb_image img;
	int64_t manifest_size;
};

/* index.json: one entry per name (or digest) asked for. */
static char *save_index(const struct saved *v, size_t n)
{
	json_t *ms = json_array();
	for (size_t i = 0; ms && i < n; i++) {
		const struct msb_image_config *c = &v[i].img.config;
		json_t *plat = json_pack("{ssss}", "architecture", c->arch ? c->arch : "amd64",
					 "os", c->os ? c->os : "linux");
		if (plat && c->variant)
			json_object_set_new(plat, "variant", json_string(c->variant));
		json_t *d = json_pack("{sssssIso}", "mediaType",
				      v[i].img.manifest.kind == MSB_MEDIA_DOCKER_MANIFEST
					      ? MT_DOCKER_MANIFEST
					      : MT_OCI_MANIFEST,
				      "digest", v[i].digest, "size", (json_int_t)v[i].manifest_size,
				      "platform", plat);
		if (d && v[i].key) {
			/* A pin of another platform ends in "#os/arch": not part of the name. */
			char *name = strndup(v[i].key, strcspn(v[i].key, "#"));
			struct msb_image_ref ref;
			struct msb_error e = MSB_ERROR_INIT;
			if (name && msb_image_ref_parse(name, &ref, &e) == 0) {
				json_t *ann = json_object();
				json_object_set_new(ann, ANN_IMAGE_NAME, json_string(name));
				if (ref.tag)
					json_object_set_new(ann, ANN_REF_NAME,
							    json_string(ref.tag));
				json_object_set_new(d, "annotations", ann);
				msb_image_ref_free(&ref);
			}
			free(name);
		}
		if (!d || json_array_append_new(ms, d) < 0) {
			json_decref(ms);
			return NULL;
		}
	}
	json_t *idx = json_pack("{sisssO}", "schemaVersion", 2, "mediaType", MT_OCI_INDEX,
				"manifests", ms);
	json_decref(ms);
	char *text = idx ? json_dumps(idx, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(idx);
	return text;
}

static int save_into(const struct msb_store *s, struct sink *k, const struct saved *v, size_t n,
		     struct msb_error *err)
{
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	int fd, r;
	if ((r = sink_file(k, "oci-layout", layout, strlen(layout), err)) < 0 ||
	    (r = sink_begin(k, "blobs", 0, true, &fd, err)) < 0 ||
	    (r = sink_begin(k, "blobs/sha256", 0, true, &fd, err)) < 0)
		return r;
	uint8_t *buf = malloc(CHUNK);
	struct strv done = {0};
	if (!buf)
		return msb_error_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < n; i++) {
		const struct msb_manifest *m = &v[i].img.manifest;
		for (size_t j = 0; r == 0 && j < m->nlayers + 2; j++) {
			const char *d = j == 0	 ? v[i].digest
					: j == 1 ? m->config.digest
						 : m->layers[j - 2].digest;
			bool seen = false;
			for (size_t x = 0; x < done.n && !seen; x++)
				seen = !strcmp(done.v[x], d);
			if (seen)
				continue;
			if ((r = sink_blob(s, k, d, buf, err)) == 0 &&
			    strv_take(&done, strdup(d)) < 0)
				r = msb_error_set(err, -ENOMEM, "out of memory");
		}
	}
	free(buf);
	strv_free(&done);
	if (r < 0)
		return r;
	char *idx = save_index(v, n);
	if (!idx)
		return msb_error_set(err, -ENOMEM, "out of memory");
	r = sink_file(k, "index.json", idx, strlen(idx), err);
	free(idx);
	return r;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

int msb_image_save(const struct msb_store *s, const char *const *refs, size_t n, const char *out,
		   struct msb_error *err)
{
	if (n == 0)
		return msb_error_set(err, -EINVAL, "save: no image named");
	if (!out || !*out || strlen(out) > PATH_MAX - 16)
		return msb_error_set(err, -EINVAL, "save: no output path");
	struct saved *v = calloc(n, sizeof(*v));
	if (!v)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int r = 0;
	for (size_t i = 0; r == 0 && i < n; i++) {
		if ((r = msb_image_resolve(s, refs[i], v[i].digest, &v[i].key, err)) < 0 ||
		    (r = msb_image_open(s, v[i].digest, &v[i].img, err)) < 0)
			break;
		struct stat st;
		char path[PATH_MAX];
		msb_store_blob_path(s, v[i].digest, path, sizeof(path));
		if (stat(path, &st) < 0)
			r = msb_error_errno(err, -errno, "blob %s", v[i].digest);
		else
			v[i].manifest_size = st.st_size;
	}
	char tmp[PATH_MAX];
	bool tar = ends_with(out, ".tar");
	if (r < 0)
		goto out;
	snprintf(tmp, sizeof(tmp), "%s.XXXXXX", out);
	struct sink k = {.dirfd = -1, .out = out};
	if (tar) {
		int fd = mkstemp(tmp);
		if (fd < 0) {
			r = msb_error_errno(err, -errno, "save: '%s'", out);
			goto out;
		}
		k.a = archive_write_new();
		if (!k.a || archive_write_set_format_pax_restricted(k.a) != ARCHIVE_OK ||
		    archive_write_add_filter_none(k.a) != ARCHIVE_OK ||
		    archive_write_open_fd(k.a, fd) != ARCHIVE_OK)
			r = msb_error_set(err, -EIO, "save: cannot write a tar to '%s'", out);
		else
			r = save_into(s, &k, v, n, err);
		if (k.a && archive_write_close(k.a) != ARCHIVE_OK && r == 0)
			r = msb_error_set(err, -EIO, "save: writing '%s': %s", out,
					  archive_error_string(k.a));
		if (k.a)
			archive_write_free(k.a);
		if (r == 0 && (fsync(fd) < 0 || fchmod(fd, 0644) < 0))
			r = msb_error_errno(err, -errno, "save: writing '%s'", out);
		close(fd);
		if (r == 0 && rename(tmp, out) < 0)
			r = msb_error_errno(err, -errno, "save: '%s'", out);
		if (r < 0)
			unlink(tmp);
		goto out;
	}
	/* A directory: new or empty, so nothing of the user's is ever overwritten. */
	struct stat st;
	if (lstat(out, &st) == 0) {
		DIR *d = S_ISDIR(st.st_mode) ? opendir(out) : NULL;
		bool empty = d != NULL;
		struct dirent *de;
		while (d && (de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				empty = false;
		if (d)
			closedir(d);
		if (!empty) {
			r = msb_error_set(
				err, -EEXIST,
				"save: '%s' exists and is not an empty directory (expected "
				"a new path, or a name ending in .tar for an archive)",
				out);
			goto out;
		}
	}
	if (!mkdtemp(tmp)) {
		r = msb_error_errno(err, -errno, "save: '%s'", out);
		goto out;
	}
	k.dirfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (k.dirfd < 0)
		r = msb_error_errno(err, -errno, "save: '%s'", tmp);
	else if ((r = save_into(s, &k, v, n, err)) == 0) {
		int bfd = openat(k.dirfd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (bfd >= 0) {
			fsync(bfd);
			close(bfd);
		}
		if (fchmod(k.dirfd, 0755) < 0 || fsync(k.dirfd) < 0 || rename(tmp, out) < 0)
			r = msb_error_errno(err, -errno, "save: '%s'", out);
	}
	if (k.dirfd >= 0)
		close(k.dirfd);
	if (r < 0)
		msb_remove_tree_at(AT_FDCWD, tmp);
out:
	for (size_t i = 0; i < n; i++) {
		free(v[i].key);
		msb_image_close(&v[i].img);
	}
	free(v);
	return r;
}
