/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI layer applier against real tar streams written here with
 * libarchive's writer (pax; gzip/zstd applied as a separate raw pass, so the
 * uncompressed bytes are known and their sha256 can be checked against the
 * diff_id) and, for GNU sparse files, by hand.  Each test applies layers onto
 * <tmp>/root, with files beside the root and in /tmp that no layer may touch.
 * Needs root (chown, security.capability).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <msb/msb.h>

#include "layer.h"

#define MTIME 1000000000 /* 2001-09-09 */

static char tmp[64];
static char root[128];
static char abs_marker[128]; /* a /tmp path a layer names absolutely */
static char rel_marker[128]; /* a /tmp path a layer reaches with ".." */
static int root_fd = -1;

/* ---- buffers and tar writing ---- */

struct buf {
	unsigned char *p;
	size_t n, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 4096;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static la_ssize_t buf_write(struct archive *a, void *data, const void *p, size_t n)
{
	(void)a;
	buf_add(data, p, n);
	return (la_ssize_t)n;
}

struct tb {
	struct archive *a;
	struct buf out;
};

static void tb_open(struct tb *t)
{
	memset(t, 0, sizeof(*t));
	t->a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax(t->a), ARCHIVE_OK);
	assert_int_equal(archive_write_open(t->a, &t->out, NULL, buf_write, NULL), ARCHIVE_OK);
}

static struct archive_entry *tb_entry(const char *name, mode_t type, mode_t perm)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_mtime(e, MTIME, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	return e;
}

static void tb_put(struct tb *t, struct archive_entry *e, const void *data, size_t n)
{
	if (archive_entry_filetype(e) == AE_IFREG && !archive_entry_hardlink(e))
		archive_entry_set_size(e, (la_int64_t)n);
	/* ARCHIVE_WARN: a name not in the locale's charset, written as bytes (hdrcharset=BINARY).
	 */
	assert_true(archive_write_header(t->a, e) >= ARCHIVE_WARN);
	if (n)
		assert_int_equal(archive_write_data(t->a, data, n), (la_ssize_t)n);
	archive_entry_free(e);
}

static void tb_file(struct tb *t, const char *name, const char *data)
{
	tb_put(t, tb_entry(name, AE_IFREG, 0644), data, strlen(data));
}

static void tb_dir(struct tb *t, const char *name, mode_t perm)
{
	tb_put(t, tb_entry(name, AE_IFDIR, perm), NULL, 0);
}

static void tb_symlink(struct tb *t, const char *name, const char *target)
{
	struct archive_entry *e = tb_entry(name, AE_IFLNK, 0777);
	archive_entry_set_symlink(e, target);
	tb_put(t, e, NULL, 0);
}

static void tb_hardlink(struct tb *t, const char *name, const char *target)
{
	struct archive_entry *e = tb_entry(name, AE_IFREG, 0644);
	archive_entry_set_hardlink(e, target);
	archive_entry_set_size(e, 0);
	tb_put(t, e, NULL, 0);
}

static struct buf tb_close(struct tb *t)
{
	assert_int_equal(archive_write_close(t->a), ARCHIVE_OK);
	archive_write_free(t->a);
	return t->out;
}

enum filter { PLAIN, GZIP, ZSTD };

/* b compressed as a whole (libarchive's raw format: no tar framing added). */
static struct buf compress(const struct buf *b, enum filter f)
{
	struct buf out = {0};
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_raw(a), ARCHIVE_OK);
	assert_int_equal(f == GZIP ? archive_write_add_filter_gzip(a)
				   : archive_write_add_filter_zstd(a),
			 ARCHIVE_OK);
	/* No zero padding after the compressed stream (zstd would read it as a bad frame). */
	assert_int_equal(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
	assert_int_equal(archive_write_open(a, &out, NULL, buf_write, NULL), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, "layer");
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_size(e, (la_int64_t)b->n);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, b->p, b->n), (la_ssize_t)b->n);
	archive_entry_free(e);
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	return out;
}

static void sha256_id(const void *p, size_t n, char out[72])
{
	unsigned char md[32];
	unsigned len = 0;
	assert_int_equal(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
	char *o = out + sprintf(out, "sha256:");
	for (unsigned i = 0; i < len; i++)
		o += sprintf(o, "%02x", md[i]);
}

/* Apply the bytes as a layer (from a memfd, read sequentially). */
static int apply_limits(const void *p, size_t n, uint64_t max_entries, uint64_t max_bytes,
			struct msb_layer_stats *st, struct msb_error *err)
{
	int fd = memfd_create("layer", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct msb_layer_limits lim = {.max_entries = max_entries, .max_bytes = max_bytes};
	msb_error_clear(err);
	int r = msb_layer_apply(root_fd, fd, &lim, st, err);
	close(fd);
	if (r < 0) {
		assert_int_equal(err->code, r);
		assert_true(err->msg[0] != '\0');
		assert_null(strchr(err->msg, '\n'));
	}
	return r;
}

static int apply_buf(const struct buf *b, struct msb_layer_stats *st, struct msb_error *err)
{
	return apply_limits(b->p, b->n, 0, 0, st, err);
}

/* Apply a layer that must succeed, freeing it. */
static void apply_ok(struct buf b, struct msb_layer_stats *st)
{
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_layer_stats local;
	int r = apply_buf(&b, st ? st : &local, &err);
	if (r != 0)
		fail_msg("apply: %d %s", r, err.msg);
	free(b.p);
}

/* ---- looking at the tree ---- */

static const char *at(const char *rel)
{
	static char path[2][PATH_MAX];
	static int which;
	which ^= 1;
	snprintf(path[which], sizeof(path[which]), "%s/%s", root, rel);
	return path[which];
}

static int lstat_at(const char *rel, struct stat *sb)
{
	return lstat(at(rel), sb);
}

static bool exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

static char *slurp(const char *path)
{
	static char data[4096];
	int fd = open(path, O_RDONLY | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, data, sizeof(data) - 1);
	close(fd);
	if (n < 0)
		return NULL;
	data[n] = '\0';
	return data;
}

static void write_file(const char *path, const char *data, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmp, sizeof(tmp), "/tmp/msb-test-layer.XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(root, sizeof(root), "%s/root", tmp);
	snprintf(abs_marker, sizeof(abs_marker), "/tmp/msb-test-layer-abs.%d", (int)getpid());
	snprintf(rel_marker, sizeof(rel_marker), "/tmp/msb-test-layer-rel.%d", (int)getpid());
	char path[256];
	if (mkdir(root, 0755) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/victim", tmp);
	write_file(path, "victim", 0644);
	snprintf(path, sizeof(path), "%s/secret", tmp);
	write_file(path, "secret", 0600);
	snprintf(path, sizeof(path), "%s/outdir", tmp);
	if (mkdir(path, 0700) < 0)
		return -1;
	/* O_PATH: msb_layer_apply must cope with it. */
	root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return root_fd >= 0 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	close(root_fd);
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s' '%s'", tmp, abs_marker, rel_marker);
	return system(cmd) == 0 ? 0 : -1;
}

/* Nothing beside the root changed, and nothing appeared in /tmp. */
static void assert_outside_untouched(void)
{
	DIR *d = opendir(tmp);
	assert_non_null(d);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (strcmp(de->d_name, "root") && strcmp(de->d_name, "victim") &&
		    strcmp(de->d_name, "secret") && strcmp(de->d_name, "outdir"))
			fail_msg("'%s' appeared beside the root", de->d_name);
		n++;
	}
	closedir(d);
	assert_int_equal(n, 4);
	char path[256];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/victim", tmp);
	assert_string_equal(slurp(path), "victim");
	assert_int_equal(lstat(path, &sb), 0);
	assert_int_equal(sb.st_nlink, 1);
	assert_int_equal(sb.st_mode & 07777, 0644);
	snprintf(path, sizeof(path), "%s/secret", tmp);
	assert_string_equal(slurp(path), "secret");
	assert_int_equal(lstat(path, &sb), 0);
	assert_int_equal(sb.st_nlink, 1);
	snprintf(path, sizeof(path), "%s/outdir", tmp);
	assert_int_equal(lstat(path, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_int_equal(sb.st_uid, 0);
	snprintf(path, sizeof(path), "%s/outdir", tmp);
	d = opendir(path);
	assert_non_null(d);
	n = 0;
	while ((de = readdir(d)))
		n++;
	closedir(d);
	assert_int_equal(n, 2); /* still empty */
	assert_false(exists(abs_marker));
	assert_false(exists(rel_marker));
}

/* ---- tests ---- */

static const unsigned char caps_v2[20] = {
	/* VFS_CAP_REVISION_2, no effective bit; permitted = CAP_NET_RAW (13) */
	0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

static void test_ordinary_layer(void **state)
{
	(void)state;
	struct tb t;
	tb_open(&t);
	tb_dir(&t, "./", 0751);
	struct archive_entry *e = tb_entry("./etc/", AE_IFDIR, 0750);
	archive_entry_set_mtime(e, MTIME + 5, 0);
	archive_entry_set_uid(e, 42);
	tb_put(&t, e, NULL, 0);
	tb_file(&t, "./etc/hostname", "box\n");
	e = tb_entry("/usr/bin/ping", AE_IFREG, 04755); /* a leading "/" is stripped */
	archive_entry_set_uid(e, 1234);
	archive_entry_set_gid(e, 5678);
	archive_entry_set_mtime(e, MTIME + 7, 123456789);
	archive_entry_xattr_add_entry(e, "security.capability", caps_v2, sizeof(caps_v2));
	archive_entry_xattr_add_entry(e, "user.ignored", "x", 1);
	tb_put(&t, e, "PING", 4);
	e = tb_entry("usr/bin/sh", AE_IFLNK, 0777);
	archive_entry_set_symlink(e, "/bin/dash");
	archive_entry_set_uid(e, 7);
	archive_entry_set_gid(e, 8);
	archive_entry_set_mtime(e, MTIME + 9, 0);
	tb_put(&t, e, NULL, 0);
	tb_hardlink(&t, "usr/bin/ping6", "/usr/bin/ping");
	tb_put(&t, tb_entry("run/fifo", AE_IFIFO, 0640), NULL, 0);
	e = tb_entry("dev/null", AE_IFCHR, 0666);
	archive_entry_set_rdev(e, makedev(1, 3));
	tb_put(&t, e, NULL, 0);
	e = tb_entry("dev/sda", AE_IFBLK, 0660);
	archive_entry_set_rdev(e, makedev(8, 0));
	tb_put(&t, e, NULL, 0);
	tb_file(&t, "names/caf\xc3\xa9", "utf-8");
	tb_file(&t, "names/raw\xe9\xff", "not utf-8");
	tb_file(&t, "empty", "");
	struct buf tar = tb_close(&t);
	char want[72];
	sha256_id(tar.p, tar.n, want);
	struct msb_layer_stats st;
	apply_ok(tar, &st);

	assert_int_equal(st.entries, 12);
	assert_int_equal(st.skipped_devices, 2);
	assert_int_equal(st.neutralised, 0);
	assert_int_equal(st.bytes, 4 + 4 + 5 + 9);
	assert_string_equal(st.diff_id, want);

	struct stat sb;
	assert_int_equal(stat(root, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0751); /* "./" sets the root's metadata */
	assert_int_equal(lstat_at("etc", &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0750);
	assert_int_equal(sb.st_uid, 42);
	/* The directory keeps its own mtime although etc/hostname came after it. */
	assert_int_equal(sb.st_mtim.tv_sec, MTIME + 5);
	assert_string_equal(slurp(at("etc/hostname")), "box\n");

	assert_int_equal(lstat_at("usr/bin/ping", &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 04755); /* setuid survives the chown */
	assert_int_equal(sb.st_uid, 1234);
	assert_int_equal(sb.st_gid, 5678);
	assert_int_equal(sb.st_mtim.tv_sec, MTIME + 7);
	assert_int_equal(sb.st_mtim.tv_nsec, 123456789);
	assert_int_equal(sb.st_nlink, 2);
	unsigned char caps[64];
	assert_int_equal(getxattr(at("usr/bin/ping"), "security.capability", caps, sizeof(caps)),
			 sizeof(caps_v2));
	assert_memory_equal(caps, caps_v2, sizeof(caps_v2));
	assert_int_equal(getxattr(at("usr/bin/ping"), "user.ignored", caps, sizeof(caps)), -1);
	struct stat sb2;
	assert_int_equal(lstat_at("usr/bin/ping6", &sb2), 0);
	assert_int_equal(sb2.st_ino, sb.st_ino);
	/* Implied parents: root's, 0755. */
	assert_int_equal(lstat_at("usr", &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0755);

	assert_int_equal(lstat_at("usr/bin/sh", &sb), 0);
	assert_true(S_ISLNK(sb.st_mode));
	assert_int_equal(sb.st_uid, 7);
	assert_int_equal(sb.st_gid, 8);
	assert_int_equal(sb.st_mtim.tv_sec, MTIME + 9);
	char target[64] = {0};
	assert_int_equal(readlink(at("usr/bin/sh"), target, sizeof(target)), 9);
	assert_string_equal(target, "/bin/dash");

	assert_int_equal(lstat_at("run/fifo", &sb), 0);
	assert_true(S_ISFIFO(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0640);
	assert_false(exists(at("dev/null")));
	assert_false(exists(at("dev/sda")));

	assert_string_equal(slurp(at("names/caf\xc3\xa9")), "utf-8");
	assert_string_equal(slurp(at("names/raw\xe9\xff")), "not utf-8");
	assert_int_equal(lstat_at("empty", &sb), 0);
	assert_int_equal(sb.st_size, 0);
	assert_outside_untouched();
}

static struct buf small_layer(void)
{
	struct tb t;
	tb_open(&t);
	tb_dir(&t, "app", 0755);
	tb_file(&t, "app/data", "payload");
	return tb_close(&t);
}

static void test_compression(void **state)
{
	(void)state;
	struct buf tar = small_layer();
	char want[72];
	sha256_id(tar.p, tar.n, want);
	const enum filter filters[] = {PLAIN, GZIP, ZSTD};
	for (size_t i = 0; i < 3; i++) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s/app'", root);
		assert_int_equal(system(cmd), 0);
		struct buf b = filters[i] == PLAIN ? tar : compress(&tar, filters[i]);
		if (filters[i] != PLAIN)
			assert_true(b.n != tar.n || memcmp(b.p, tar.p, b.n));
		struct msb_layer_stats st;
		struct msb_error err = MSB_ERROR_INIT;
		int r = apply_buf(&b, &st, &err);
		if (r)
			fail_msg("filter %zu: %s", i, err.msg);
		assert_string_equal(st.diff_id, want);
		assert_string_equal(slurp(at("app/data")), "payload");
		if (filters[i] != PLAIN)
			free(b.p);
	}

	/*
	 * Bytes after the end-of-archive blocks are part of the diff_id, not of
	 * the tree: more than the tar reader would read ahead.
	 */
	struct buf more = {0};
	buf_add(&more, tar.p, tar.n);
	for (int i = 0; i < 40000; i++)
		buf_add(&more, "trailing bytes", 14);
	sha256_id(more.p, more.n, want);
	struct buf gz = compress(&more, GZIP);
	struct msb_layer_stats st;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(apply_buf(&gz, &st, &err), 0);
	assert_string_equal(st.diff_id, want);
	assert_int_equal(st.entries, 2);

	/* A gzip of a gzip is refused. */
	struct buf twice = compress(&gz, GZIP);
	assert_int_equal(apply_buf(&twice, &st, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "compressed more than once"));
	assert_string_equal(st.diff_id, "");
	free(twice.p);
	free(gz.p);
	free(more.p);
	free(tar.p);
}

static void test_bad_input(void **state)
{
	(void)state;
	struct msb_layer_stats st;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(apply_limits("", 0, 0, 0, &st, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "empty"));
	static const char garbage[] = "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. "
				      "this is not a tar archive, not even close to one. ";
	assert_int_equal(apply_limits(garbage, sizeof(garbage), 0, 0, &st, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a tar"));

	/* gzip of garbage, and a gzip of nothing. */
	struct buf g = {0};
	buf_add(&g, garbage, sizeof(garbage));
	struct buf gz = compress(&g, GZIP);
	assert_true(apply_buf(&gz, &st, &err) < 0);
	free(gz.p);
	g.n = 0;
	gz = compress(&g, ZSTD);
	assert_int_equal(apply_buf(&gz, &st, &err), -EINVAL);
	if (!strstr(err.msg, "empty"))
		fail_msg("%s", err.msg);
	free(gz.p);
	free(g.p);

	/* Truncated: mid-data in a plain tar; mid-stream in a gzip. */
	struct tb t;
	tb_open(&t);
	char big[8192];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	tb_file(&t, "big", big);
	struct buf tar = tb_close(&t);
	assert_true(apply_limits(tar.p, 3000, 0, 0, &st, &err) < 0);
	assert_string_equal(st.diff_id, "");
	gz = compress(&tar, GZIP);
	assert_true(apply_limits(gz.p, gz.n - 12, 0, 0, &st, &err) < 0);
	free(gz.p);
	free(tar.p);

	/* The OCI empty layer (two zero blocks) is a valid layer with no entries. */
	static const unsigned char zeros[1024];
	char want[72];
	sha256_id(zeros, sizeof(zeros), want);
	assert_int_equal(apply_limits(zeros, sizeof(zeros), 0, 0, &st, &err), 0);
	assert_int_equal(st.entries, 0);
	assert_string_equal(st.diff_id, want);
	assert_string_equal(
		want, "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef");
}

static void test_whiteouts_and_opaque_before(void **state)
{
	(void)state;
	struct tb t;
	tb_open(&t);
	tb_file(&t, "etc/a", "a1");
	tb_file(&t, "etc/b", "b1");
	tb_file(&t, "tree/x/y/z", "deep");
	tb_file(&t, "d/old", "old");
	tb_file(&t, "d/sub/old2", "old2");
	apply_ok(tb_close(&t), NULL);

	tb_open(&t);
	tb_file(&t, "etc/a", "a2");
	tb_file(&t, "etc/.wh.b", "");
	tb_file(&t, ".wh.tree", "");
	tb_file(&t, ".wh.nothing-there", "");
	tb_file(&t, "d/.wh..wh..opq", ""); /* the marker first, as the spec recommends */
	tb_file(&t, "d/new", "new");
	tb_file(&t, "d/.wh..wh.plnk", ""); /* aufs metadata: ignored */
	tb_file(&t, ".wh.dir/file", "");   /* below a whiteout name: refused */
	struct msb_layer_stats st;
	apply_ok(tb_close(&t), &st);
	assert_int_equal(st.neutralised, 1);
	assert_false(exists(at(".wh.dir")));

	assert_string_equal(slurp(at("etc/a")), "a2");
	assert_false(exists(at("etc/b")));
	assert_false(exists(at("etc/.wh.b")));
	assert_false(exists(at("tree")));
	assert_false(exists(at(".wh.tree")));
	assert_false(exists(at(".wh.nothing-there")));
	assert_false(exists(at("d/old")));
	assert_false(exists(at("d/sub")));
	assert_false(exists(at("d/.wh..wh..opq")));
	assert_false(exists(at("d/.wh..wh.plnk")));
	assert_string_equal(slurp(at("d/new")), "new");
	assert_true(exists(at("d")));
}

static void test_opaque_after_entries(void **state)
{
	(void)state;
	struct tb t;
	tb_open(&t);
	tb_file(&t, "d/old", "old");
	tb_file(&t, "d/sub/old2", "old2");
	tb_file(&t, "d/keep/old3", "old3");
	tb_file(&t, "d/gone/deeper/old4", "old4");
	tb_file(&t, "e/lower", "lower");
	apply_ok(tb_close(&t), NULL);

	tb_open(&t);
	tb_file(&t, "d/new", "new");
	tb_file(&t, "d/sub/new2", "new2"); /* d/sub is a lower directory, not listed here */
	tb_dir(&t, "d/keep", 0700);	   /* listed in this layer: stays, its lower files go */
	tb_file(&t, "d/.wh..wh..opq", "");
	tb_file(&t, "d/after", "after");
	/* A whiteout spares its own layer's entries, before or after it. */
	tb_file(&t, "e/mine", "mine");
	tb_file(&t, "e/.wh.mine", "");
	tb_file(&t, "e/.wh.lower", "");
	apply_ok(tb_close(&t), NULL);

	assert_false(exists(at("d/old")));
	assert_false(exists(at("d/sub/old2")));
	assert_false(exists(at("d/keep/old3")));
	assert_false(exists(at("d/gone")));
	assert_string_equal(slurp(at("d/new")), "new");
	assert_string_equal(slurp(at("d/sub/new2")), "new2");
	assert_string_equal(slurp(at("d/after")), "after");
	struct stat sb;
	assert_int_equal(lstat_at("d/keep", &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_string_equal(slurp(at("e/mine")), "mine");
	assert_false(exists(at("e/lower")));
}

static void test_replacement(void **state)
{
	(void)state;
	struct tb t;
	tb_open(&t);
	tb_file(&t, "x/child", "c");
	tb_file(&t, "y", "file");
	tb_file(&t, "z/keep", "kept");
	tb_symlink(&t, "s", "z");
	tb_file(&t, "f", "plain");
	tb_file(&t, "h", "hard");
	tb_hardlink(&t, "h2", "h");
	apply_ok(tb_close(&t), NULL);

	tb_open(&t);
	tb_file(&t, "x", "now a file");
	tb_dir(&t, "y", 0700);
	tb_file(&t, "y/child", "under y");
	struct archive_entry *e = tb_entry("z", AE_IFDIR, 0711);
	archive_entry_set_uid(e, 99);
	tb_put(&t, e, NULL, 0);
	tb_dir(&t, "s", 0755);
	tb_symlink(&t, "f", "x");
	tb_file(&t, "h", "new content"); /* a new inode: the old link keeps the old data */
	apply_ok(tb_close(&t), NULL);

	struct stat sb;
	assert_string_equal(slurp(at("x")), "now a file");
	assert_int_equal(lstat_at("y", &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_string_equal(slurp(at("y/child")), "under y");
	assert_int_equal(lstat_at("z", &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0711);
	assert_int_equal(sb.st_uid, 99);
	assert_string_equal(slurp(at("z/keep")), "kept"); /* dir over dir keeps its contents */
	assert_int_equal(lstat_at("s", &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(lstat_at("f", &sb), 0);
	assert_true(S_ISLNK(sb.st_mode));
	assert_string_equal(slurp(at("h")), "new content");
	assert_string_equal(slurp(at("h2")), "hard");
}

static void test_escapes(void **state)
{
	(void)state;
	char abs_tmp[256], abs_victim[256], abs_outdir[256], rel_tmp_marker[256];
	snprintf(abs_tmp, sizeof(abs_tmp), "%s/", tmp);
	snprintf(abs_victim, sizeof(abs_victim), "%s/victim", tmp);
	snprintf(abs_outdir, sizeof(abs_outdir), "%s/outdir", tmp);
	snprintf(rel_tmp_marker, sizeof(rel_tmp_marker), "../../../../../../../..%s", rel_marker);

	struct tb t;
	tb_open(&t);
	tb_file(&t, "../escaped", "x");	     /* refused */
	tb_file(&t, "a/../../escaped", "x"); /* refused */
	tb_file(&t, rel_tmp_marker, "x");    /* refused */
	tb_file(&t, abs_marker, "x");	     /* absolute: lands inside */
	tb_symlink(&t, "up", "../..");
	tb_file(&t, "up/escaped", "in root"); /* ".." symlink: resolves inside */
	tb_symlink(&t, "abs", abs_tmp);
	tb_dir(&t, abs_tmp, 0755);
	tb_file(&t, "abs/escaped", "in root too"); /* absolute symlink: inside */
	tb_symlink(&t, "outfile", abs_victim);
	tb_symlink(&t, "outfile2", "../victim");
	tb_symlink(&t, "outd", abs_outdir);
	tb_hardlink(&t, "hl-dotdot", "../secret");	    /* refused */
	tb_hardlink(&t, "hl-sym", "outfile2");		    /* links the symlink itself */
	tb_hardlink(&t, "hl-dir", "abs");		    /* a symlink, linked as such */
	tb_hardlink(&t, "hl-realdir", "up/up/etc-none/.."); /* ".." target: refused */
	tb_dir(&t, "realdir", 0755);
	tb_hardlink(&t, "hl-realdir2", "realdir"); /* a directory: refused */
	tb_file(&t, "../.wh.victim", "");	   /* refused */
	tb_file(&t, "up/.wh.victim", "");	   /* whiteout through a symlink: inside */
	tb_file(&t, "abs/.wh.victim", "");
	tb_file(&t, "sub/.wh.", "");   /* names the directory itself: refused */
	tb_file(&t, "sub/.wh..", "");  /* refused */
	tb_file(&t, "sub/.wh...", ""); /* refused */
	struct archive_entry *e = tb_entry("dev/kmem", AE_IFCHR, 0666);
	archive_entry_set_rdev(e, makedev(1, 2));
	tb_put(&t, e, NULL, 0);
	struct msb_layer_stats st;
	apply_ok(tb_close(&t), &st);
	assert_int_equal(st.neutralised, 10);
	assert_int_equal(st.skipped_devices, 1);
	assert_outside_untouched();

	assert_string_equal(slurp(at(abs_marker + 1)), "x");
	assert_string_equal(slurp(at("escaped")), "in root");
	char rel[300];
	snprintf(rel, sizeof(rel), "%sescaped", abs_tmp + 1);
	assert_string_equal(slurp(at(rel)), "in root too");
	struct stat sb;
	assert_int_equal(lstat_at("hl-sym", &sb), 0);
	assert_true(S_ISLNK(sb.st_mode));
	assert_int_equal(lstat_at("hl-dir", &sb), 0);
	assert_true(S_ISLNK(sb.st_mode));
	assert_false(exists(at("hl-dotdot")));
	assert_false(exists(at("hl-realdir")));
	assert_false(exists(at("hl-realdir2")));
	assert_false(exists(at("dev/kmem")));

	/* Second layer: write through the final symlinks; each is replaced instead. */
	tb_open(&t);
	tb_file(&t, "outfile", "overwritten?");
	tb_file(&t, "outfile2", "overwritten?");
	tb_dir(&t, "outd", 0777);
	tb_file(&t, "outd/planted", "planted");
	tb_file(&t, "hl-sym", "through a link?");
	e = tb_entry("abs", AE_IFDIR, 0777);
	tb_put(&t, e, NULL, 0);
	apply_ok(tb_close(&t), &st);
	assert_int_equal(lstat_at("outfile", &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(lstat_at("outd", &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_string_equal(slurp(at("outd/planted")), "planted");
	assert_outside_untouched();

	/* Hard links to the outside resolve inside the root, where there is nothing: errors. */
	char abs_secret[256];
	snprintf(abs_secret, sizeof(abs_secret), "%s/secret", tmp);
	const char *targets[] = {abs_secret, "up/secret", "outd/../../secret"};
	for (size_t i = 0; i < 3; i++) {
		struct msb_error err = MSB_ERROR_INIT;
		tb_open(&t);
		tb_hardlink(&t, "stolen", targets[i]);
		struct buf b = tb_close(&t);
		int r = apply_buf(&b, &st, &err);
		free(b.p);
		if (i < 2) {
			assert_int_equal(r, -ENOENT);
			assert_non_null(strstr(err.msg, "stolen"));
		} else {
			assert_int_equal(r, 0);
			assert_int_equal(st.neutralised, 1);
		}
		assert_false(exists(at("stolen")));
		assert_outside_untouched();
	}

	/* A symlink loop in the parent path is an error, not a hang. */
	tb_open(&t);
	tb_symlink(&t, "loop", "loop");
	tb_file(&t, "loop/x", "x");
	struct buf b = tb_close(&t);
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(apply_buf(&b, &st, &err), -ELOOP);
	free(b.p);
	/*
	 * A parent that is a file, a symlink to nothing, or a symlink to a real
	 * directory outside (which inside the root is nothing) is an error.
	 */
	const char *blocked[] = {"x/under-a-file", "dangling/x", "outd2/x", "outd2/.wh..wh..opq"};
	for (size_t i = 0; i < 4; i++) {
		tb_open(&t);
		tb_file(&t, "x", "x");
		tb_symlink(&t, "dangling", "/nowhere");
		tb_symlink(&t, "outd2", abs_outdir);
		tb_file(&t, blocked[i], "x");
		b = tb_close(&t);
		if (i < 3) {
			assert_int_equal(apply_buf(&b, &st, &err), -ENOTDIR);
			assert_non_null(strstr(err.msg, blocked[i]));
		} else {
			assert_int_equal(apply_buf(&b, &st, &err), 0); /* nothing there to hide */
		}
		free(b.p);
	}
	assert_false(exists("/nowhere"));
	assert_outside_untouched();
}

static void test_long_names(void **state)
{
	(void)state;
	char comp[NAME_MAX + 2];
	memset(comp, 'c', sizeof(comp) - 1);
	comp[sizeof(comp) - 1] = '\0';
	struct msb_layer_stats st;
	struct msb_error err = MSB_ERROR_INIT;
	struct tb t;
	tb_open(&t);
	tb_file(&t, comp, "x");
	struct buf b = tb_close(&t);
	assert_int_equal(apply_buf(&b, &st, &err), -ENAMETOOLONG);
	free(b.p);
	comp[NAME_MAX] = '\0'; /* exactly NAME_MAX: fine */
	tb_open(&t);
	tb_file(&t, comp, "x");
	apply_ok(tb_close(&t), NULL);
	assert_string_equal(slurp(at(comp)), "x");

	static char path[PATH_MAX + 16];
	memset(path, 0, sizeof(path));
	for (size_t i = 0; i + 2 < sizeof(path); i += 2)
		memcpy(path + i, "p/", 2);
	tb_open(&t);
	tb_file(&t, path, "x");
	b = tb_close(&t);
	assert_int_equal(apply_buf(&b, &st, &err), -ENAMETOOLONG);
	free(b.p);
	assert_false(exists(at("p")));
}

static void test_limits(void **state)
{
	(void)state;
	struct tb t;
	tb_open(&t);
	char name[32];
	for (int i = 0; i < 51; i++) {
		snprintf(name, sizeof(name), "bomb/f%d", i);
		tb_file(&t, name, "");
	}
	struct buf b = tb_close(&t);
	struct msb_layer_stats st;
	struct msb_error err = MSB_ERROR_INIT;
	/* 51 entries plus the implied "bomb/" */
	assert_int_equal(apply_limits(b.p, b.n, 51, 0, &st, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "max_entries"));
	assert_non_null(strstr(err.msg, "bomb/f50"));
	assert_int_equal(st.entries, 50);
	assert_int_equal(apply_limits(b.p, b.n, 52, 0, &st, &err), 0);
	assert_int_equal(st.entries, 51);
	free(b.p);

	/* Implied parents count: one entry, three directories. */
	tb_open(&t);
	tb_file(&t, "i/j/k/leaf", "");
	b = tb_close(&t);
	assert_int_equal(apply_limits(b.p, b.n, 3, 0, &st, &err), -E2BIG);
	assert_int_equal(apply_limits(b.p, b.n, 4, 0, &st, &err), 0);
	free(b.p);

	tb_open(&t);
	tb_file(&t, "f1", "0123456789");
	tb_file(&t, "f2", "0123456789");
	b = tb_close(&t);
	assert_int_equal(apply_limits(b.p, b.n, 0, 19, &st, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "max_bytes"));
	assert_non_null(strstr(err.msg, "f2"));
	assert_int_equal(apply_limits(b.p, b.n, 0, 20, &st, &err), 0);
	assert_int_equal(st.bytes, 20);
	free(b.p);
}

/* ---- a GNU sparse (pax 1.0) member, written by hand ---- */

static void tar_header(struct buf *b, const char *name, char type, uint64_t size)
{
	unsigned char h[512] = {0};
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", 0644);
	snprintf((char *)h + 108, 8, "%07o", 0);
	snprintf((char *)h + 116, 8, "%07o", 0);
	snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
	snprintf((char *)h + 136, 12, "%011llo", (unsigned long long)MTIME);
	h[156] = (unsigned char)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	buf_add(b, h, 512);
}

static void pad(struct buf *b)
{
	static const unsigned char zero[512];
	if (b->n % 512)
		buf_add(b, zero, 512 - b->n % 512);
}

static void pax_record(struct buf *b, const char *kv)
{
	size_t len = strlen(kv) + 3; /* " " "\n" and at least one digit */
	char rec[512];
	for (;;) {
		int n = snprintf(rec, sizeof(rec), "%zu %s\n", len, kv);
		if ((size_t)n == len)
			break;
		len = (size_t)n;
	}
	buf_add(b, rec, len);
}

static void test_sparse(void **state)
{
	(void)state;
	const uint64_t tib = 1ull << 40, far = 1ull << 39;
	struct buf pax = {0}, tar = {0}, map = {0};
	pax_record(&pax, "GNU.sparse.major=1");
	pax_record(&pax, "GNU.sparse.minor=0");
	pax_record(&pax, "GNU.sparse.name=sparse/big");
	char kv[128];
	snprintf(kv, sizeof(kv), "GNU.sparse.realsize=%llu", (unsigned long long)tib);
	pax_record(&pax, kv);
	snprintf(kv, sizeof(kv), "2\n0\n100\n%llu\n4096\n", (unsigned long long)far);
	buf_add(&map, kv, strlen(kv));
	pad(&map);
	tar_header(&tar, "PaxHeaders/big", 'x', pax.n);
	buf_add(&tar, pax.p, pax.n);
	pad(&tar);
	tar_header(&tar, "GNUSparseFile.0/big", '0', map.n + 100 + 4096);
	buf_add(&tar, map.p, map.n);
	char data[4096];
	memset(data, 'A', 100);
	buf_add(&tar, data, 100);
	memset(data, 'B', sizeof(data));
	buf_add(&tar, data, sizeof(data));
	pad(&tar);
	static const unsigned char end[1024];
	buf_add(&tar, end, sizeof(end));

	struct msb_layer_stats st;
	struct msb_error err = MSB_ERROR_INIT;
	char want[72];
	sha256_id(tar.p, tar.n, want);
	/* 1 MiB of max_bytes is plenty: the terabyte is holes. */
	int r = apply_limits(tar.p, tar.n, 0, 1 << 20, &st, &err);
	if (r)
		fail_msg("%s", err.msg);
	assert_int_equal(st.bytes, 4196);
	assert_string_equal(st.diff_id, want);
	struct stat sb;
	assert_int_equal(lstat_at("sparse/big", &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal((uint64_t)sb.st_size, tib);
	assert_true(sb.st_blocks * 512 < (1 << 20)); /* written sparse */
	int fd = open(at("sparse/big"), O_RDONLY);
	assert_true(fd >= 0);
	char got[4096];
	assert_int_equal(pread(fd, got, 101, 0), 101);
	assert_int_equal(got[0], 'A');
	assert_int_equal(got[99], 'A');
	assert_int_equal(got[100], 0);
	assert_int_equal(pread(fd, got, 4096, (off_t)far), 4096);
	assert_int_equal(got[0], 'B');
	assert_int_equal(got[4095], 'B');
	assert_int_equal(pread(fd, got, 1, (off_t)(tib - 1)), 1);
	assert_int_equal(got[0], 0);
	close(fd);
	/* Below 4196 bytes of data the same layer is over max_bytes. */
	assert_int_equal(apply_limits(tar.p, tar.n, 0, 4195, &st, &err), -E2BIG);
	free(pax.p);
	free(tar.p);
	free(map.p);
}

/*
 * Only the compressions linked in (gzip, zstd, bzip2, xz) are read: data
 * from a registry never starts an external decompressor, which libarchive
 * would run for formats it has no library for (lrzip, grzip, lzop, lz4...).
 * Fake ones on PATH leave a marker if anything runs them.
 */
static void test_no_external_decompressor(void **state)
{
	(void)state;
	char bin[256], marker[256], path[512], script[600];
	snprintf(bin, sizeof(bin), "%s/bin", tmp);
	snprintf(marker, sizeof(marker), "%s/ran-a-decompressor", tmp);
	assert_int_equal(mkdir(bin, 0755), 0);
	const char *tools[] = {"lrzip", "grzip", "lzop", "lz4", "lzip", "lzma", "unzstd", "zstd"};
	snprintf(script, sizeof(script), "#!/bin/sh\ntouch '%s'\ncat >/dev/null\n", marker);
	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", bin, tools[i]);
		write_file(path, script, 0755);
	}
	const char *old = getenv("PATH");
	char *saved = old ? strdup(old) : NULL;
	snprintf(path, sizeof(path), "%s:%s", bin, old ? old : "/usr/bin:/bin");
	setenv("PATH", path, 1);
	static const unsigned char lrzip[] = "LRZI\x00\x06\x00\x00\x00\x00\x00\x00\x00\x00";
	static const unsigned char grzip[] = "GRZipII\x00\x02\x04:)\x00\x00\x00\x00";
	static const unsigned char lzop[] = "\x89LZO\x00\r\n\x1a\n\x10\x30\x20\xa0\x09\x40";
	static const unsigned char lz4[] = "\x04\x22\x4d\x18\x64\x40\xa7\x00\x00\x00\x00";
	const struct {
		const unsigned char *p;
		size_t n;
	} inputs[] = {{lrzip, sizeof(lrzip)},
		      {grzip, sizeof(grzip)},
		      {lzop, sizeof(lzop)},
		      {lz4, sizeof(lz4)}};
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		struct msb_error err = MSB_ERROR_INIT;
		struct msb_layer_stats st;
		assert_true(apply_limits(inputs[i].p, inputs[i].n, 0, 0, &st, &err) < 0);
		assert_false(exists(marker));
	}
	if (saved)
		setenv("PATH", saved, 1);
	else
		unsetenv("PATH");
	free(saved);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ordinary_layer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compression, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_whiteouts_and_opaque_before, setup, teardown),
		cmocka_unit_test_setup_teardown(test_opaque_after_entries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replacement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_escapes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sparse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_external_decompressor, setup, teardown),
	};
	if (geteuid() != 0) {
		fprintf(stderr, "test_layer needs root (chown, security.capability)\n");
		return 77; /* meson: skipped */
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
