/* SPDX-License-Identifier: Apache-2.0 */
#include "rootfs.h"

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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"
#include "sandbox.h"
#include "spec.h"
#include "state.h"

struct walk {
	EVP_MD_CTX *md;
	bool stat_only; /* a fingerprint: identities and times instead of contents */
	bool racy; /* an entry changed in the last seconds: its times may not show the next change
		    */
	time_t now;
	size_t entries;
	char path[PATH_MAX];
	struct msb_error *err;
};

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void feed(struct walk *w, const void *p, size_t n)
{
	EVP_DigestUpdate(w->md, p, n);
}

/* Hash one directory's entries, sorted, recursing with fds (no path joins for access). */
static int walk_dir(struct walk *w, int dfd, size_t plen, int depth)
{
	if (depth > MSB_TREE_DEPTH_MAX)
		return msb_error_set(w->err, -ELOOP, "rootfs: '%s' is nested too deeply", w->path);
	int fd = dup(dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return msb_error_errno(w->err, -errno, "rootfs: '%s'", w->path);
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (++w->entries > MSB_TREE_ENTRIES_MAX) {
			r = msb_error_set(w->err, -E2BIG, "rootfs: more than %u entries",
					  MSB_TREE_ENTRIES_MAX);
			break;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			char **nv = realloc(names, cap * sizeof(char *));
			if (!nv) {
				r = msb_error_set(w->err, -ENOMEM, "out of memory");
				break;
			}
			names = nv;
		}
		if (!(names[n] = strdup(de->d_name))) {
			r = msb_error_set(w->err, -ENOMEM, "out of memory");
			break;
		}
		n++;
	}
	closedir(d);
	if (r == 0 && n)
		qsort(names, n, sizeof(char *), cmp_names);
	for (size_t i = 0; i < n && r == 0; i++) {
		size_t nl = strlen(names[i]);
		if (plen + 1 + nl >= sizeof(w->path)) {
			r = msb_error_set(w->err, -ENAMETOOLONG, "rootfs: path too long under '%s'",
					  w->path);
			break;
		}
		w->path[plen] = '/';
		memcpy(w->path + plen + 1, names[i], nl + 1);
		struct stat st;
		if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = msb_error_errno(w->err, -errno, "rootfs: '%s'", w->path);
			break;
		}
		uint64_t meta[6] = {st.st_mode,		  st.st_uid,  st.st_gid,
				    (uint64_t)st.st_size, st.st_rdev, nl};
		feed(w, meta, sizeof(meta));
		feed(w, names[i], nl);
		if (w->stat_only) {
			/* What changes whenever the content does (ctime cannot be set back). */
			uint64_t id[6] = {st.st_dev,
					  st.st_ino,
					  (uint64_t)st.st_mtim.tv_sec,
					  (uint64_t)st.st_mtim.tv_nsec,
					  (uint64_t)st.st_ctim.tv_sec,
					  (uint64_t)st.st_ctim.tv_nsec};
			feed(w, id, sizeof(id));
			if (st.st_mtim.tv_sec >= w->now - 2 || st.st_ctim.tv_sec >= w->now - 2)
				w->racy = true;
		}
		if (S_ISLNK(st.st_mode) && !w->stat_only) {
			/* (A fingerprint skips it: a link's target never changes in place.) */
			char target[PATH_MAX];
			ssize_t tl = readlinkat(dfd, names[i], target, sizeof(target));
			if (tl < 0) {
				r = msb_error_errno(w->err, -errno, "rootfs: '%s'", w->path);
				break;
			}
			feed(w, target, (size_t)tl);
		} else if (S_ISREG(st.st_mode) && !w->stat_only) {
			int ffd = openat(dfd, names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (ffd < 0) {
				r = msb_error_errno(w->err, -errno, "rootfs: '%s'", w->path);
				break;
			}
			static __thread uint8_t buf[1 << 16];
			ssize_t got;
			while ((got = read(ffd, buf, sizeof(buf))) > 0)
				feed(w, buf, (size_t)got);
			if (got < 0)
				r = msb_error_errno(w->err, -errno, "rootfs: '%s'", w->path);
			close(ffd);
		} else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dfd, names[i],
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				r = msb_error_errno(w->err, -errno, "rootfs: '%s'", w->path);
				break;
			}
			r = walk_dir(w, sub, plen + 1 + nl, depth + 1);
			close(sub);
			static const char end[] = "\0end-of-dir";
			feed(w, end, sizeof(end));
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	w->path[plen] = '\0';
	return r;
}

static int tree_walk(const char *dir, bool stat_only, char hex[65], bool *racy,
		     struct msb_error *err)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return msb_error_errno(err, -errno, "rootfs '%s'", dir);
	struct walk w = {
		.md = EVP_MD_CTX_new(), .err = err, .stat_only = stat_only, .now = time(NULL)};
	if (!w.md || !EVP_DigestInit_ex(w.md, EVP_sha256(), NULL)) {
		close(dfd);
		EVP_MD_CTX_free(w.md);
		return msb_error_set(err, -ENOMEM, "sha256 unavailable");
	}
	static const char version[] = "msb-tree-hash-1", fp_version[] = "msb-tree-stat-1";
	if (stat_only) {
		struct stat st;
		if (fstat(dfd, &st) == 0) {
			uint64_t id[4] = {st.st_dev, st.st_ino, (uint64_t)st.st_ctim.tv_sec,
					  (uint64_t)st.st_ctim.tv_nsec};
			feed(&w, fp_version, sizeof(fp_version));
			feed(&w, id, sizeof(id));
		}
	} else {
		feed(&w, version, sizeof(version));
	}
	int r = walk_dir(&w, dfd, 0, 0);
	close(dfd);
	unsigned char md[32];
	unsigned len = 0;
	if (r == 0)
		EVP_DigestFinal_ex(w.md, md, &len);
	EVP_MD_CTX_free(w.md);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (racy)
		*racy = w.racy;
	return 0;
}

int msb_tree_hash(const char *dir, char hex[65], struct msb_error *err)
{
	return tree_walk(dir, false, hex, NULL, err);
}

/*
 * The tree hash, from images/trees/<sha256 of the tree's path> when the
 * tree's fingerprint (every entry's metadata, inode and times, no contents)
 * is the one recorded with it; else hashed whole and recorded — unless an
 * entry changed in the last seconds, when times may not show the next
 * change yet (git's "racy" case).
 */
static int tree_hash_cached(const char *dir, const char *images_dir, char hex[65],
			    struct msb_error *err)
{
	char real[PATH_MAX], fp[65], key[65], cache[PATH_MAX + 100], line[160];
	bool racy = true;
	if (!realpath(dir, real) || tree_walk(real, true, fp, &racy, err) < 0)
		return msb_tree_hash(dir, hex, err);
	unsigned char md[32];
	unsigned len = 0;
	EVP_Digest(real, strlen(real), md, &len, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		snprintf(key + 2 * i, 3, "%02x", md[i]);
	snprintf(cache, sizeof(cache), "%s/trees/%s", images_dir, key);
	FILE *f = fopen(cache, "re");
	if (f) {
		int hit = fgets(line, sizeof(line), f) && strlen(line) == 130 &&
			  !strncmp(line, fp, 64) && line[64] == ' ';
		fclose(f);
		if (hit) {
			memcpy(hex, line + 65, 64);
			hex[64] = '\0';
			return 0;
		}
	}
	int r = msb_tree_hash(dir, hex, err);
	if (r < 0 || racy)
		return r;
	char tdir[PATH_MAX + 8], tmp[PATH_MAX + 120];
	snprintf(tdir, sizeof(tdir), "%s/trees", images_dir);
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", cache, (long)getpid());
	if (msb_mkdir_p(tdir, 0700) < 0 || !(f = fopen(tmp, "we")))
		return 0; /* only a cache */
	fprintf(f, "%s %s\n", fp, hex);
	if (fclose(f) != 0 || rename(tmp, cache) < 0)
		unlink(tmp);
	return 0;
}

int msb_run_tool(char *const argv[], struct msb_error *err)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return msb_error_errno(err, -errno, "pipe");
	pid_t pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return msb_error_errno(err, -errno, "fork");
	}
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		execvp(argv[0], argv);
		fprintf(stderr, "%s: %s", argv[0], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	char out[1024];
	size_t n = 0;
	ssize_t got;
	char sink[4096];
	while ((got = read(pipefd[0], sink, sizeof(sink))) > 0) {
		size_t c = (size_t)got < sizeof(out) - 1 - n ? (size_t)got : sizeof(out) - 1 - n;
		memcpy(out + n, sink, c);
		n += c;
	}
	out[n] = '\0';
	close(pipefd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	/* The tool's last line is usually the reason. */
	while (n && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	char *last = strrchr(out, '\n');
	return msb_error_set(err, -EIO, "%s failed%s%s", argv[0], n ? ": " : "",
			     last ? last + 1 : out);
}

int msb_rootfs_image(const char *dir, const char *images_dir, char **path, struct msb_error *err)
{
	char hex[65];
	int r = msb_mkdir_p(images_dir, 0700);
	if (r < 0)
		return msb_error_errno(err, r, "images directory '%s'", images_dir);
	if ((r = tree_hash_cached(dir, images_dir, hex, err)) < 0)
		return r;
	if ((r = msb_mkdir_p(images_dir, 0700)) < 0)
		return msb_error_errno(err, r, "images directory '%s'", images_dir);
	char *img = NULL, *tmp = NULL, *lock = NULL;
	if (asprintf(&img, "%s/%s.erofs", images_dir, hex) < 0 ||
	    asprintf(&tmp, "%s/.%s.erofs.tmp", images_dir, hex) < 0 ||
	    asprintf(&lock, "%s/.%s.lock", images_dir, hex) < 0) {
		free(img);
		free(tmp);
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	/* One builder per image: others wait here, then find it published. */
	int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0 || flock(lfd, LOCK_EX) < 0) {
		r = msb_error_errno(err, -errno, "lock '%s'", lock);
		goto out;
	}
	if (access(img, R_OK) == 0)
		goto out; /* cached */
	unlink(tmp);
	/*
	 * Uncompressed: the guest reads it without spending CPU on it.  -T0:
	 * the same tree gives the same image.  Not root: the files we could read
	 * become root's in the image, as an unprivileged user cannot own others'.
	 */
	char *argv[] = {"mkfs.erofs", "--quiet", "-T0", "-x-1", tmp, (char *)dir, NULL, NULL};
	if (geteuid() != 0) {
		argv[4] = "--all-root";
		argv[5] = tmp;
		argv[6] = (char *)dir;
	}
	r = msb_run_tool(argv, err);
	if (r < 0) {
		unlink(tmp);
		msb_error_prefix(err, "building the root image of '%s': ", dir);
		goto out;
	}
	if (rename(tmp, img) < 0) {
		r = msb_error_errno(err, -errno, "publishing '%s'", img);
		unlink(tmp);
	}
out:
	if (lfd >= 0)
		close(lfd);
	free(tmp);
	free(lock);
	if (r < 0) {
		free(img);
		return r;
	}
	*path = img;
	return 0;
}

static int format_upper(const char *path, uint64_t bytes, struct msb_error *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return msb_error_errno(err, -errno, "upper disk '%s'", path);
	int r = ftruncate(fd, (off_t)bytes) < 0 ? -errno : 0;
	close(fd);
	if (r < 0) {
		unlink(path);
		return msb_error_errno(err, r, "upper disk '%s'", path);
	}
	/*
	 * Lazy init: formatting a sparse 8 GiB file writes only metadata.  No
	 * resize inode: its reserved group descriptor blocks (4 MiB at the
	 * start of an 8 GiB disk) would be the bulk of what every sandbox
	 * copies, for online growth msb never does (resize2fs offline still
	 * works without them).
	 */
	char *argv[] = {"mkfs.ext4",
			"-q",
			"-F",
			"-m",
			"0",
			"-O",
			"^resize_inode",
			"-E",
			"lazy_itable_init=1,lazy_journal_init=1,nodiscard",
			(char *)path,
			NULL};
	r = msb_run_tool(argv, err);
	if (r < 0)
		unlink(path);
	return r;
}

/* Copy a sparse file's data extents only (SEEK_DATA/SEEK_HOLE, copy_file_range). */
static int copy_sparse(int in, int out, uint64_t size)
{
	off_t pos = 0;
	for (;;) {
		off_t data = lseek(in, pos, SEEK_DATA);
		if (data < 0)
			return errno == ENXIO ? 0 : -errno; /* ENXIO: no data after pos */
		off_t hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		off_t src = data, dst = data;
		while (src < hole) {
			ssize_t n = copy_file_range(in, &src, out, &dst, (size_t)(hole - src), 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? -errno : -EIO;
		}
		pos = hole;
		if ((uint64_t)pos >= size)
			return 0;
	}
}

int msb_rootfs_upper(const char *path, uint64_t bytes, const char *images_dir,
		     struct msb_error *err)
{
	/*
	 * Every upper starts as the same empty filesystem: format it once per
	 * size (images/upper-<bytes>.v2.ext4; v2: no resize inode) and copy its
	 * ~128 KiB of metadata, instead of running mkfs.ext4 for each sandbox.
	 */
	if (!images_dir)
		return format_upper(path, bytes, err);
	char tmpl[PATH_MAX + 64], tmp[PATH_MAX + 80];
	snprintf(tmpl, sizeof(tmpl), "%s/upper-%llu.v2.ext4", images_dir,
		 (unsigned long long)bytes);
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", tmpl, (long)getpid());
	int r;
	if (access(tmpl, R_OK) != 0) {
		if ((r = msb_mkdir_p(images_dir, 0700)) < 0)
			return msb_error_errno(err, r, "images directory '%s'", images_dir);
		unlink(tmp);
		if ((r = format_upper(tmp, bytes, err)) < 0)
			return r;
		if (rename(tmp, tmpl) < 0) {
			r = msb_error_errno(err, -errno, "publishing '%s'", tmpl);
			unlink(tmp);
			return r;
		}
	}
	int in = open(tmpl, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return msb_error_errno(err, -errno, "upper template '%s'", tmpl);
	int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0) {
		r = msb_error_errno(err, -errno, "upper disk '%s'", path);
		close(in);
		return r;
	}
	r = ftruncate(out, (off_t)bytes) < 0 ? -errno : copy_sparse(in, out, bytes);
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	close(in);
	close(out);
	if (r < 0) {
		unlink(path);
		return msb_error_errno(err, r, "upper disk '%s' from '%s'", path, tmpl);
	}
	return 0;
}

int msb_rootfs_record(struct msb_state *st, const char *name, const char *root_image,
		      struct msb_error *err)
{
	char images[PATH_MAX], upper[PATH_MAX + 100], line[PATH_MAX + 2];
	snprintf(images, sizeof(images), "%s/images", st->home);
	snprintf(upper, sizeof(upper), "%s/sandboxes/%s/%s", st->home, name, MSB_UPPER_FILE);
	int n = snprintf(line, sizeof(line), "%s\n", root_image);
	if (n < 0 || (size_t)n >= sizeof(line))
		return msb_error_set(err, -ENAMETOOLONG, "root image path too long");
	int r = msb_state_write(st, name, MSB_ROOT_IMAGE_FILE, line, (size_t)n, err);
	if (r == 0 && access(upper, F_OK) != 0)
		r = msb_rootfs_upper(upper, MSB_UPPER_SIZE, images, err);
	return r;
}

int msb_rootfs_prepare(struct msb_state *st, const char *name, const struct msb_spec *spec,
		       struct msb_error *err)
{
	int r = msb_sandbox_check_supported(spec, err);
	if (r < 0)
		return r;
	char images[PATH_MAX];
	snprintf(images, sizeof(images), "%s/images", st->home);
	char *img = NULL;
	if ((r = msb_rootfs_image(spec->rootfs, images, &img, err)) < 0)
		return r;
	r = msb_rootfs_record(st, name, img, err);
	free(img);
	return r;
}
