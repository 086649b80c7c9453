/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI layer applier.  layer.h says what it does and what it defends
 * against; the comments here say how each step keeps to that.
 *
 * Two libarchive readers are stacked so that the diff_id comes out of the
 * same single pass that unpacks the layer: `outer` reads layer_fd and
 * decompresses it (format "raw": one entry, the whole decompressed stream);
 * `inner` parses tar from a callback that pulls from `outer` and feeds every
 * byte to sha256 on its way.  After the tar's end, the rest of the stream is
 * drained into the hash too.
 */
#include "layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"
#include "ref.h"

#define BUF_SIZE   (64u << 10)
#define CAPS_XATTR "security.capability"
#define WH_PREFIX  ".wh."
#define WH_META	   ".wh..wh."
#define WH_OPAQUE  ".wh..wh..opq"
/*
 * Removal recurses with one open directory per level; deeper trees are
 * refused rather than risking the stack or the fd table.  Matches the tree
 * walks of rootfs.c, which refuse such trees anyway.
 */
#define DEPTH_MAX 256

/*
 * What this layer made, as (directory device, directory inode, name)
 * records, so that whiteouts and opaque markers spare entries of their own
 * layer wherever the marker comes in the stream.  Keyed by the directory's
 * inode rather than by the tar name, so a parent reached through a symlink
 * is the same record.  A record is the first 16 bytes of a sha256: the
 * memory is 16 bytes per entry whatever the names, and no layer can forge a
 * collision to save a lower-layer file from a whiteout.
 */
struct seen {
	uint8_t (*slot)[16];
	size_t cap, used;
};

struct layer {
	int root;
	dev_t root_dev;
	int in_fd;
	int in_errno;	   /* errno of a failed read() of layer_fd */
	uint64_t in_bytes; /* compressed bytes read */
	uint64_t tar_bytes;
	uint64_t made; /* entries plus implied parents, against max_entries */
	uint64_t max_entries, max_bytes, max_file_size;
	struct archive *outer, *inner;
	EVP_MD_CTX *md, *key_md;
	struct seen seen;
	struct msb_layer_stats *st;
	struct msb_error *err;
	const char *entry; /* the entry's name as the tar gives it, for messages */
	char path[PATH_MAX];
	char target[PATH_MAX];
	unsigned char inbuf[BUF_SIZE];
	unsigned char tarbuf[BUF_SIZE];
};

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int fail(struct layer *l, int code, const char *what)
{
	return msb_error_errno(l->err, code, "layer entry '%s': %s", l->entry, what);
}

static int fail_archive(struct layer *l, struct archive *a)
{
	const char *why = archive_error_string(a);
	int code = l->in_errno ? -l->in_errno : -EINVAL;
	if (l->entry)
		return msb_error_set(l->err, code, "layer entry '%s': %s", l->entry,
				     why ? why : "corrupt tar");
	return msb_error_set(l->err, code, "layer: %s", why ? why : "corrupt tar");
}

static int too_many_entries(struct layer *l)
{
	return msb_error_set(l->err, -E2BIG,
			     "layer entry '%s': more than %llu entries (max_entries)",
			     l->entry ? l->entry : "", (unsigned long long)l->max_entries);
}

/* ---- the record of what this layer made ---- */

static int seen_key(struct layer *l, uint8_t key[16], const struct stat *dir, const char *name)
{
	uint64_t id[2] = {(uint64_t)dir->st_dev, (uint64_t)dir->st_ino};
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	if (!EVP_DigestInit_ex(l->key_md, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(l->key_md, id, sizeof(id)) ||
	    !EVP_DigestUpdate(l->key_md, name, strlen(name)) ||
	    !EVP_DigestFinal_ex(l->key_md, md, &len) || len < 16)
		return msb_error_set(l->err, -ENOMEM, "layer: sha256 failed");
	memcpy(key, md, 16);
	static const uint8_t zero[16];
	if (!memcmp(key, zero, 16))
		key[0] = 1; /* all zeros marks an empty slot */
	return 0;
}

static size_t seen_find(const struct seen *s, const uint8_t key[16])
{
	uint64_t h;
	memcpy(&h, key, sizeof(h));
	static const uint8_t zero[16];
	size_t i = h & (s->cap - 1);
	while (memcmp(s->slot[i], key, 16) && memcmp(s->slot[i], zero, 16))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int seen_add(struct layer *l, const struct stat *dir, const char *name)
{
	struct seen *s = &l->seen;
	if ((s->used + 1) * 2 > s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		struct seen bigger = {.slot = calloc(cap, 16), .cap = cap, .used = s->used};
		if (!bigger.slot)
			return msb_error_set(l->err, -ENOMEM, "layer: out of memory");
		static const uint8_t zero[16];
		for (size_t i = 0; i < s->cap; i++)
			if (memcmp(s->slot[i], zero, 16))
				memcpy(bigger.slot[seen_find(&bigger, s->slot[i])], s->slot[i], 16);
		free(s->slot);
		*s = bigger;
	}
	uint8_t key[16];
	int r = seen_key(l, key, dir, name);
	if (r < 0)
		return r;
	size_t i = seen_find(s, key);
	if (memcmp(s->slot[i], key, 16)) {
		memcpy(s->slot[i], key, 16);
		s->used++;
	}
	return 0;
}

static int seen_has(struct layer *l, const struct stat *dir, const char *name)
{
	if (!l->seen.cap)
		return 0;
	uint8_t key[16];
	int r = seen_key(l, key, dir, name);
	if (r < 0)
		return r;
	return memcmp(l->seen.slot[seen_find(&l->seen, key)], key, 16) == 0;
}

/* ---- paths ---- */

/*
 * The canonical relative form of a tar name: no leading "/", no empty or "."
 * components.  Returns 0, 1 for a name with a ".." component (refused, never
 * interpreted), or -ENAMETOOLONG.
 */
static int normalise(const char *raw, char out[PATH_MAX])
{
	if (strnlen(raw, PATH_MAX) >= PATH_MAX)
		return -ENAMETOOLONG;
	size_t o = 0;
	const char *p = raw;
	while (*p) {
		while (*p == '/')
			p++;
		const char *c = p;
		while (*p && *p != '/')
			p++;
		size_t cl = (size_t)(p - c);
		if (cl == 0 || (cl == 1 && c[0] == '.'))
			continue;
		if (cl == 2 && c[0] == '.' && c[1] == '.')
			return 1;
		if (cl > NAME_MAX)
			return -ENAMETOOLONG;
		if (o)
			out[o++] = '/';
		memcpy(out + o, c, cl);
		o += cl;
	}
	out[o] = '\0';
	return 0;
}

/* Whether a normalised path has a component that is a whiteout name. */
static bool has_whiteout_component(const char *path)
{
	for (const char *p = path; p; p = strchr(p, '/'), p = p ? p + 1 : NULL)
		if (has_prefix(p, WH_PREFIX))
			return true;
	return false;
}

/*
 * Split a normalised, non-empty path in place into its parent and last name.
 * The parent of a top-level name is "" (the path's own terminator, so it is
 * writable like any other parent).
 */
static char *split(char *path, char **parent)
{
	char *slash = strrchr(path, '/');
	if (!slash) {
		*parent = path + strlen(path);
		return path;
	}
	*slash = '\0';
	*parent = path;
	return slash + 1;
}

/*
 * The directory `path` (normalised, relative), resolved by the kernel with
 * the layer's root as "/": symlinks, absolute or with "..", land inside the
 * root; /proc-style magic links and other mounts are refused.  Returns an fd
 * or a negative errno (no message).
 */
static int open_in_root(struct layer *l, const char *path)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	for (int tries = 0;; tries++) {
		long fd = syscall(SYS_openat2, l->root, *path ? path : ".", &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		/* EAGAIN: a rename raced the lookup (RESOLVE_IN_ROOT is strict). */
		if (errno != EAGAIN || tries == 8)
			return -errno;
	}
}

static void keep_times(int fd, struct timespec t[2])
{
	struct stat sb;
	if (fstat(fd, &sb) == 0) {
		t[0] = sb.st_atim;
		t[1] = sb.st_mtim;
	} else {
		t[0].tv_nsec = t[1].tv_nsec = UTIME_OMIT;
	}
}

/* Failure only leaves a directory's time wrong, never the tree unsafe: ignored. */
static void restore_times(int fd, const struct timespec t[2])
{
	(void)futimens(fd, t);
}

/*
 * Make the missing directory cur/name (`path` names it, for messages), as
 * Docker does: 0755, root's, counted against max_entries.  Returns it open.
 */
static int make_implied_dir(struct layer *l, int cur, const char *name, const char *path)
{
	if (++l->made > l->max_entries)
		return too_many_entries(l);
	struct stat ds;
	if (fstat(cur, &ds) < 0)
		return fail(l, -errno, "stat parent");
	struct timespec t[2];
	keep_times(cur, t);
	int r = mkdirat(cur, name, 0755) < 0 ? -errno : 0;
	restore_times(cur, t);
	/* EEXIST: a non-directory, such as a symlink to nothing, is in the way. */
	if (r < 0)
		return msb_error_errno(l->err, r == -EEXIST ? -ENOTDIR : r,
				       "layer entry '%s': parent '%s'", l->entry, path);
	int fd = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return msb_error_errno(l->err, -errno, "layer entry '%s': parent '%s'", l->entry,
				       path);
	if (fchmod(fd, 0755) < 0)
		r = fail(l, -errno, "chmod parent");
	else
		r = seen_add(l, &ds, name);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/*
 * The parent directory `path` (normalised) of the current entry, resolved
 * inside the root, with missing directories made.  Each prefix is resolved
 * afresh from the root, so symlinks along the way mean what they would in
 * the image.  A component that exists but is not a directory fails the
 * entry.
 */
static int open_parent(struct layer *l, char *path)
{
	int fd = open_in_root(l, path);
	if (fd != -ENOENT) {
		if (fd < 0)
			return msb_error_errno(l->err, fd, "layer entry '%s': parent '%s'",
					       l->entry, path);
		return fd;
	}
	int cur = open_in_root(l, "");
	if (cur < 0)
		return msb_error_errno(l->err, cur, "layer: root");
	char *name = path;
	for (;;) {
		char *slash = strchr(name, '/');
		if (slash)
			*slash = '\0';
		int next = open_in_root(l, path);
		if (next == -ENOENT)
			next = make_implied_dir(l, cur, name, path);
		else if (next < 0)
			next = msb_error_errno(l->err, next, "layer entry '%s': parent '%s'",
					       l->entry, path);
		if (slash)
			*slash = '/';
		close(cur);
		if (next < 0)
			return next;
		cur = next;
		if (!slash)
			return cur;
		name = slash + 1;
	}
}

/* ---- removal ---- */

struct names {
	char **v;
	size_t n;
};

static void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
}

/* The names in directory fd (read whole first, so removing them cannot disturb readdir). */
static int list_names(int fd, struct names *ns)
{
	*ns = (struct names){0};
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		int r = -errno;
		if (dfd >= 0)
			close(dfd);
		return r;
	}
	size_t cap = 0;
	int r = 0;
	struct dirent *de;
	errno = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (ns->n == cap) {
			cap = cap ? cap * 2 : 16;
			char **v = realloc(ns->v, cap * sizeof(*v));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			ns->v = v;
		}
		if (!(ns->v[ns->n] = strdup(de->d_name))) {
			r = -ENOMEM;
			break;
		}
		ns->n++;
		errno = 0;
	}
	if (!r && errno)
		r = -errno;
	closedir(d);
	if (r < 0)
		names_free(ns);
	return r;
}

/* Open the directory dfd/name, never following a symlink and never leaving the root's filesystem.
 */
static int open_subdir(struct layer *l, int dfd, const char *name, const struct stat *sb)
{
	if (sb->st_dev != l->root_dev)
		return msb_error_set(l->err, -EXDEV,
				     "layer entry '%s': '%s' is on another filesystem", l->entry,
				     name);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return msb_error_errno(l->err, -errno, "layer entry '%s': open '%s'", l->entry,
				       name);
	return fd;
}

/* Remove dfd/name and everything below it (an entry being replaced). */
static int remove_tree(struct layer *l, int dfd, const char *name, int depth)
{
	struct stat sb;
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : fail(l, -errno, "stat of the entry it replaces");
	if (!S_ISDIR(sb.st_mode)) {
		if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
			return fail(l, -errno, "unlink");
		return 0;
	}
	if (depth >= DEPTH_MAX)
		return msb_error_set(l->err, -ELOOP, "layer entry '%s': tree nested over %d deep",
				     l->entry, DEPTH_MAX);
	int fd = open_subdir(l, dfd, name, &sb);
	if (fd < 0)
		return fd;
	struct names ns;
	int r = list_names(fd, &ns);
	if (r < 0) {
		close(fd);
		return fail(l, r, "read directory");
	}
	for (size_t i = 0; i < ns.n && r == 0; i++)
		r = remove_tree(l, fd, ns.v[i], depth + 1);
	names_free(&ns);
	close(fd);
	if (r == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0)
		r = fail(l, -errno, "rmdir");
	return r;
}

static int prune_children(struct layer *l, int fd, int depth);

/*
 * Remove what lower layers left at dfd/name (dir is dfd's stat), keeping
 * what this layer made.  A lower-layer directory that still holds entries of
 * this layer stays, as their parent.  Returns 1 if something survives, 0 if
 * dfd/name is gone, or a negative errno.
 */
static int prune(struct layer *l, int dfd, const struct stat *dir, const char *name, int depth)
{
	struct stat sb;
	if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : fail(l, -errno, "stat");
	int mine = seen_has(l, dir, name);
	if (mine < 0)
		return mine;
	if (!S_ISDIR(sb.st_mode)) {
		if (mine)
			return 1;
		if (unlinkat(dfd, name, 0) < 0)
			return fail(l, -errno, "unlink");
		return 0;
	}
	int fd = open_subdir(l, dfd, name, &sb);
	if (fd < 0)
		return fd;
	int r = prune_children(l, fd, depth + 1);
	close(fd);
	if (r != 0 || mine)
		return r < 0 ? r : 1;
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0)
		return fail(l, -errno, "rmdir");
	return 0;
}

/* prune() every entry of directory fd; its times are kept.  Returns 1 if any survives. */
static int prune_children(struct layer *l, int fd, int depth)
{
	if (depth >= DEPTH_MAX)
		return msb_error_set(l->err, -ELOOP, "layer entry '%s': tree nested over %d deep",
				     l->entry, DEPTH_MAX);
	struct stat dir;
	if (fstat(fd, &dir) < 0)
		return fail(l, -errno, "stat");
	struct timespec t[2] = {dir.st_atim, dir.st_mtim};
	struct names ns;
	int r = list_names(fd, &ns);
	if (r < 0)
		return fail(l, r, "read directory");
	int kept = 0;
	for (size_t i = 0; i < ns.n; i++) {
		r = prune(l, fd, &dir, ns.v[i], depth);
		if (r < 0)
			break;
		kept |= r;
	}
	names_free(&ns);
	restore_times(fd, t);
	return r < 0 ? r : kept;
}

/* ---- entries ---- */

static int whiteout(struct layer *l, const char *parent, const char *name)
{
	bool opaque = strcmp(name, WH_OPAQUE) == 0;
	const char *victim = name + strlen(WH_PREFIX);
	if (!opaque && has_prefix(name, WH_META))
		return 0; /* aufs bookkeeping (.wh..wh.plnk ...): nothing of the image */
	if (!opaque && (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))) {
		/* would name the directory itself or its parent */
		l->st->neutralised++;
		return 0;
	}
	int dfd = open_in_root(l, parent);
	if (dfd == -ENOENT || dfd == -ENOTDIR)
		return 0; /* nothing below to hide */
	if (dfd < 0)
		return msb_error_errno(l->err, dfd, "layer entry '%s': parent '%s'", l->entry,
				       parent);
	int r;
	if (opaque) {
		r = prune_children(l, dfd, 0);
	} else {
		struct stat dir;
		struct timespec t[2];
		keep_times(dfd, t);
		if (fstat(dfd, &dir) < 0)
			r = fail(l, -errno, "stat");
		else
			r = prune(l, dfd, &dir, victim, 0);
		restore_times(dfd, t);
	}
	close(dfd);
	return r < 0 ? r : 0;
}

static void entry_times(struct archive_entry *e, struct timespec t[2])
{
	t[1].tv_sec = archive_entry_mtime(e);
	t[1].tv_nsec = archive_entry_mtime_nsec(e);
	if (archive_entry_atime_is_set(e)) {
		t[0].tv_sec = archive_entry_atime(e);
		t[0].tv_nsec = archive_entry_atime_nsec(e);
	} else {
		t[0] = t[1];
	}
	for (int i = 0; i < 2; i++)
		if (t[i].tv_nsec < 0 || t[i].tv_nsec >= 1000000000)
			t[i].tv_nsec = 0;
}

static int entry_owner(struct layer *l, struct archive_entry *e, uid_t *uid, gid_t *gid)
{
	la_int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
	/* (uid_t)-1 would mean "leave unchanged" to chown. */
	if (u < 0 || u >= UINT32_MAX || g < 0 || g >= UINT32_MAX)
		return msb_error_set(l->err, -EINVAL,
				     "layer entry '%s': owner %lld:%lld out of range", l->entry,
				     (long long)u, (long long)g);
	*uid = (uid_t)u;
	*gid = (gid_t)g;
	return 0;
}

/*
 * Owner, mode, capabilities and times of the entry open at fd (a directory,
 * regular file or FIFO we just made, opened with O_NOFOLLOW).  In this order
 * because chown clears setuid/setgid and security.capability.
 */
static int set_meta(struct layer *l, int fd, struct archive_entry *e, bool regular)
{
	uid_t uid;
	gid_t gid;
	int r = entry_owner(l, e, &uid, &gid);
	if (r < 0)
		return r;
	if (fchown(fd, uid, gid) < 0)
		return fail(l, -errno, "chown");
	if (fchmod(fd, archive_entry_mode(e) & 07777) < 0)
		return fail(l, -errno, "chmod");
	if (regular) {
		const char *name;
		const void *value;
		size_t size;
		archive_entry_xattr_reset(e);
		while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
			/* The kernel checks the format (and a namespaced root id). */
			if (!strcmp(name, CAPS_XATTR) &&
			    fsetxattr(fd, CAPS_XATTR, value, size, 0) < 0)
				return fail(l, -errno, "set " CAPS_XATTR);
		}
	}
	struct timespec t[2];
	entry_times(e, t);
	if (futimens(fd, t) < 0)
		return fail(l, -errno, "set times");
	return 0;
}

/*
 * The file's data, block by block at the offsets libarchive reports: a
 * sparse file's holes are never written (nor counted against max_bytes),
 * and ftruncate gives the file its full size.
 */
static int write_data(struct layer *l, int fd, struct archive_entry *e)
{
	la_int64_t fsize = archive_entry_size(e);
	if (fsize > 0 && (uint64_t)fsize > l->max_file_size)
		return msb_error_set(l->err, -E2BIG,
				     "layer entry '%s': a file of %lld bytes (sparse or not) is "
				     "larger than %llu (max_file_size)",
				     l->entry, (long long)fsize,
				     (unsigned long long)l->max_file_size);
	for (;;) {
		const void *buf;
		size_t size;
		la_int64_t off;
		int r = archive_read_data_block(l->inner, &buf, &size, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r < ARCHIVE_WARN)
			return fail_archive(l, l->inner);
		if (off < 0 || size > (uint64_t)INT64_MAX - (uint64_t)off)
			return msb_error_set(l->err, -EINVAL, "layer entry '%s': bad data offset",
					     l->entry);
		if (size > l->max_bytes - l->st->bytes)
			return msb_error_set(l->err, -E2BIG,
					     "layer entry '%s': more than %llu bytes of file data "
					     "(max_bytes)",
					     l->entry, (unsigned long long)l->max_bytes);
		l->st->bytes += size;
		const unsigned char *p = buf;
		while (size) {
			ssize_t n = pwrite(fd, p, size, off);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return fail(l, n < 0 ? -errno : -EIO, "write");
			p += n;
			size -= (size_t)n;
			off += n;
		}
	}
	la_int64_t size = archive_entry_size(e);
	if (size < 0)
		return msb_error_set(l->err, -EINVAL, "layer entry '%s': negative size", l->entry);
	if (ftruncate(fd, size) < 0)
		return fail(l, -errno, "truncate");
	return 0;
}

/* A directory, regular file, FIFO or symlink named `name` in directory dfd. */
static int make_entry(struct layer *l, int dfd, const struct stat *dir, const char *name,
		      struct archive_entry *e)
{
	mode_t type = archive_entry_filetype(e);
	struct stat sb;
	bool exists = fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0;
	if (!exists && errno != ENOENT)
		return fail(l, -errno, "stat");
	bool keep_dir = exists && type == AE_IFDIR && S_ISDIR(sb.st_mode);
	/* Whatever was there goes first, so the new entry is made, never opened through a link. */
	if (exists && !keep_dir) {
		int r = remove_tree(l, dfd, name, 0);
		if (r < 0)
			return r;
	}
	int fd = -1, r = 0;
	switch (type) {
	case AE_IFDIR:
		if (!keep_dir && mkdirat(dfd, name, 0700) < 0)
			return fail(l, -errno, "mkdir");
		fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return fail(l, -errno, "open");
		r = set_meta(l, fd, e, false);
		break;
	case AE_IFREG:
		fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return fail(l, -errno, "create");
		r = write_data(l, fd, e);
		if (r == 0)
			r = set_meta(l, fd, e, true);
		break;
	case AE_IFIFO:
		if (mkfifoat(dfd, name, 0600) < 0)
			return fail(l, -errno, "mkfifo");
		/* Non-blocking read-only opens of a FIFO return at once, writer or not. */
		fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return fail(l, -errno, "open");
		r = set_meta(l, fd, e, false);
		break;
	case AE_IFLNK: {
		/* The target is data for the guest to resolve; it is never followed here. */
		const char *target = archive_entry_symlink(e);
		if (!target || !*target)
			return msb_error_set(l->err, -EINVAL,
					     "layer entry '%s': symlink has no target", l->entry);
		if (strnlen(target, PATH_MAX) >= PATH_MAX)
			return fail(l, -ENAMETOOLONG, "symlink target");
		uid_t uid;
		gid_t gid;
		struct timespec t[2];
		entry_times(e, t);
		if ((r = entry_owner(l, e, &uid, &gid)) < 0)
			return r;
		if (symlinkat(target, dfd, name) < 0)
			return fail(l, -errno, "symlink");
		if (fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			return fail(l, -errno, "chown");
		if (utimensat(dfd, name, t, AT_SYMLINK_NOFOLLOW) < 0)
			return fail(l, -errno, "set times");
		break;
	}
	default:
		return fail(l, -EINVAL, "unexpected type");
	}
	if (fd >= 0)
		close(fd);
	return r < 0 ? r : seen_add(l, dir, name);
}

/*
 * A hard link dfd/name to l->target (normalised, resolved inside the root).
 * linkat without AT_SYMLINK_FOLLOW links the very inode found, a symlink
 * included, so nothing outside the root can be reached through it.
 */
static int make_hardlink(struct layer *l, int dfd, const struct stat *dir, const char *name)
{
	char *tparent;
	const char *tname = split(l->target, &tparent);
	int tfd = open_in_root(l, tparent);
	if (tfd < 0)
		return msb_error_errno(l->err, tfd, "layer entry '%s': hard link target '%s/%s'",
				       l->entry, tparent, tname);
	struct stat ts, sb;
	int r = 0;
	if (fstatat(tfd, tname, &ts, AT_SYMLINK_NOFOLLOW) < 0) {
		r = msb_error_errno(l->err, -errno, "layer entry '%s': hard link target '%s%s%s'",
				    l->entry, tparent, *tparent ? "/" : "", tname);
	} else if (S_ISDIR(ts.st_mode)) {
		l->st->neutralised++; /* directories cannot be hard linked */
	} else if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && sb.st_dev == ts.st_dev &&
		   sb.st_ino == ts.st_ino) {
		r = seen_add(l, dir, name); /* already that inode (a link to itself) */
	} else if ((r = remove_tree(l, dfd, name, 0)) == 0) {
		if (linkat(tfd, tname, dfd, name, 0) < 0)
			r = fail(l, -errno, "link");
		else
			r = seen_add(l, dir, name);
	}
	close(tfd);
	return r;
}

static int apply_entry(struct layer *l, struct archive_entry *e)
{
	const char *raw = archive_entry_pathname(e);
	if (!raw || !*raw)
		return msb_error_set(l->err, -EINVAL, "layer entry %llu has no name",
				     (unsigned long long)l->st->entries);
	l->entry = raw;
	int r = normalise(raw, l->path);
	if (r < 0)
		return fail(l, r, "name");
	if (r > 0) {
		l->st->neutralised++; /* ".." */
		return 0;
	}
	const char *link = archive_entry_hardlink(e);
	mode_t type = archive_entry_filetype(e);
	if (!l->path[0]) {
		/* "./": the root's own metadata; nothing else may replace the root. */
		if (link || type != AE_IFDIR) {
			l->st->neutralised++;
			return 0;
		}
		return set_meta(l, l->root, e, false);
	}
	char *parent;
	const char *name = split(l->path, &parent);
	if (has_whiteout_component(parent)) {
		/* Under a whiteout name: no such directory can exist in an image. */
		l->st->neutralised++;
		return 0;
	}
	if (has_prefix(name, WH_PREFIX))
		return whiteout(l, parent, name);
	if (link) {
		r = normalise(link, l->target);
		if (r < 0)
			return fail(l, r, "hard link target name");
		if (r > 0 || !l->target[0]) {
			l->st->neutralised++; /* ".." or the root */
			return 0;
		}
	} else {
		switch (type) {
		case AE_IFCHR:
		case AE_IFBLK:
			l->st->skipped_devices++;
			return 0;
		case AE_IFREG:
		case AE_IFDIR:
		case AE_IFLNK:
		case AE_IFIFO:
			break;
		default:
			l->st->neutralised++;
			return 0;
		}
	}
	int dfd = open_parent(l, parent);
	if (dfd < 0)
		return dfd;
	struct stat dir;
	struct timespec t[2];
	keep_times(dfd, t);
	if (fstat(dfd, &dir) < 0)
		r = fail(l, -errno, "stat parent");
	else if (link)
		r = make_hardlink(l, dfd, &dir, name);
	else
		r = make_entry(l, dfd, &dir, name, e);
	/* A directory keeps the mtime its own entry gave it, as in Docker. */
	restore_times(dfd, t);
	close(dfd);
	return r;
}

/* ---- the stream ---- */

static la_ssize_t read_layer_fd(struct archive *a, void *data, const void **buf)
{
	struct layer *l = data;
	for (;;) {
		ssize_t n = read(l->in_fd, l->inbuf, sizeof(l->inbuf));
		if (n >= 0) {
			l->in_bytes += (uint64_t)n;
			*buf = l->inbuf;
			return n;
		}
		if (errno != EINTR) {
			l->in_errno = errno;
			archive_set_error(a, errno, "read: %s", strerror(errno));
			return ARCHIVE_FATAL;
		}
	}
}

/* The inner (tar) reader's input: the outer reader's decompressed bytes, hashed in passing. */
static la_ssize_t read_tar(struct archive *a, void *data, const void **buf)
{
	struct layer *l = data;
	la_ssize_t n = archive_read_data(l->outer, l->tarbuf, sizeof(l->tarbuf));
	if (n < 0) {
		const char *why = archive_error_string(l->outer);
		archive_set_error(a, EINVAL, "%s", why ? why : "decompression failed");
		return ARCHIVE_FATAL;
	}
	if (n > 0 && !EVP_DigestUpdate(l->md, l->tarbuf, (size_t)n)) {
		archive_set_error(a, ENOMEM, "sha256 failed");
		return ARCHIVE_FATAL;
	}
	l->tar_bytes += (uint64_t)n;
	*buf = l->tarbuf;
	return n;
}

static int open_stream(struct layer *l)
{
	l->outer = archive_read_new();
	l->inner = archive_read_new();
	if (!l->outer || !l->inner)
		return msb_error_set(l->err, -ENOMEM, "layer: out of memory");
	/*
	 * Native decompressors only: ARCHIVE_WARN from these means libarchive
	 * would run an external program on the untrusted stream instead.
	 */
	if (archive_read_support_filter_gzip(l->outer) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(l->outer) != ARCHIVE_OK ||
	    archive_read_support_filter_bzip2(l->outer) != ARCHIVE_OK ||
	    archive_read_support_filter_xz(l->outer) != ARCHIVE_OK ||
	    archive_read_support_format_raw(l->outer) != ARCHIVE_OK)
		return msb_error_set(l->err, -ENOTSUP,
				     "layer: libarchive lacks built-in gzip/zstd/bzip2/xz support");
	struct archive_entry *e;
	if (archive_read_open(l->outer, l, NULL, read_layer_fd, NULL) != ARCHIVE_OK ||
	    archive_read_next_header(l->outer, &e) != ARCHIVE_OK) {
		if (l->in_bytes == 0 && !l->in_errno)
			return msb_error_set(l->err, -EINVAL, "layer: empty input");
		/* The raw format refuses an empty stream, such as a gzip of nothing. */
		if (!l->in_errno && archive_filter_count(l->outer) > 1 &&
		    archive_filter_bytes(l->outer, 0) == 0)
			return msb_error_set(l->err, -EINVAL, "layer: empty tar stream");
		return fail_archive(l, l->outer);
	}
	/* Filters plus the "none" at the bottom: a layer is compressed once at most. */
	if (archive_filter_count(l->outer) > 2)
		return msb_error_set(l->err, -EINVAL, "layer: compressed more than once");
	if (archive_read_support_format_tar(l->inner) != ARCHIVE_OK)
		return msb_error_set(l->err, -ENOTSUP, "layer: libarchive lacks tar support");
	if (archive_read_open(l->inner, l, NULL, read_tar, NULL) != ARCHIVE_OK) {
		if (l->tar_bytes == 0 && !l->in_errno)
			return msb_error_set(l->err, -EINVAL, "layer: empty tar stream");
		if (l->in_errno)
			return fail_archive(l, l->inner);
		return msb_error_set(l->err, -EINVAL, "layer: not a tar stream (%s)",
				     archive_error_string(l->inner) ? archive_error_string(l->inner)
								    : "unknown format");
	}
	return 0;
}

static int apply_stream(struct layer *l)
{
	int r = open_stream(l);
	if (r < 0)
		return r;
	for (;;) {
		struct archive_entry *e;
		l->entry = NULL;
		r = archive_read_next_header(l->inner, &e);
		if (r == ARCHIVE_EOF)
			break;
		/* ARCHIVE_WARN: a name libarchive could not convert to the locale; kept as bytes.
		 */
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return fail_archive(l, l->inner);
		if (l->made >= l->max_entries) {
			l->entry = archive_entry_pathname(e);
			return too_many_entries(l);
		}
		l->made++;
		l->st->entries++;
		r = apply_entry(l, e);
		if (r < 0)
			return r;
	}
	/* The diff_id covers the whole stream, whatever follows the end of the tar. */
	l->entry = NULL;
	const void *buf;
	la_ssize_t n;
	while ((n = read_tar(l->inner, l, &buf)) > 0)
		;
	if (n < 0)
		return fail_archive(l, l->inner);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	if (!EVP_DigestFinal_ex(l->md, md, &len) || len != 32)
		return msb_error_set(l->err, -ENOMEM, "layer: sha256 failed");
	msb_digest_format(md, l->st->diff_id);
	return 0;
}

int msb_layer_apply(int root_fd, int layer_fd, const struct msb_layer_limits *lim,
		    struct msb_layer_stats *st, struct msb_error *err)
{
	struct msb_layer_stats unused;
	if (!st)
		st = &unused;
	memset(st, 0, sizeof(*st));
	struct layer *l = calloc(1, sizeof(*l));
	if (!l)
		return msb_error_set(err, -ENOMEM, "layer: out of memory");
	l->st = st;
	l->err = err;
	l->in_fd = layer_fd;
	l->max_entries = lim && lim->max_entries ? lim->max_entries : MSB_LAYER_MAX_ENTRIES_DEFAULT;
	l->max_bytes = lim && lim->max_bytes ? lim->max_bytes : MSB_LAYER_MAX_BYTES_DEFAULT;
	l->max_file_size = lim && lim->max_file_size ? lim->max_file_size : UINT64_MAX;
	int r = 0;
	struct stat rs;
	/* A real directory fd on the root: root_fd may be O_PATH, and "./" entries set its
	 * metadata. */
	l->root = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (l->root < 0 || fstat(l->root, &rs) < 0) {
		r = msb_error_errno(err, -errno, "layer: root directory");
		goto out;
	}
	l->root_dev = rs.st_dev;
	l->md = EVP_MD_CTX_new();
	l->key_md = EVP_MD_CTX_new();
	if (!l->md || !l->key_md || !EVP_DigestInit_ex(l->md, EVP_sha256(), NULL)) {
		r = msb_error_set(err, -ENOMEM, "layer: sha256 unavailable");
		goto out;
	}
	r = apply_stream(l);
out:
	if (r < 0)
		st->diff_id[0] = '\0';
	if (l->inner)
		archive_read_free(l->inner);
	if (l->outer)
		archive_read_free(l->outer);
	EVP_MD_CTX_free(l->md);
	EVP_MD_CTX_free(l->key_md);
	free(l->seen.slot);
	if (l->root >= 0)
		close(l->root);
	free(l);
	return r;
}
