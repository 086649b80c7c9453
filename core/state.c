/* SPDX-License-Identifier: Apache-2.0 */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"
#include "spec.h"

#define TMP_PREFIX   ".new-"
#define TRASH_PREFIX ".trash-"

int msb_state_default_home(char *buf, size_t len, struct msb_error *err)
{
	const char *h = getenv("MSB_HOME");
	int n;
	if (h && *h) {
		n = snprintf(buf, len, "%s", h);
	} else if (geteuid() == 0) {
		n = snprintf(buf, len, "/var/lib/msb");
	} else {
		const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
		if (xdg && *xdg)
			n = snprintf(buf, len, "%s/msb", xdg);
		else if (home && *home)
			n = snprintf(buf, len, "%s/.local/share/msb", home);
		else
			return msb_error_set(err, -ENOENT,
					     "no state directory: set MSB_HOME or HOME");
	}
	if (n < 0 || (size_t)n >= len)
		return msb_error_set(err, -ENAMETOOLONG, "state directory path too long");
	return 0;
}

/* Lock a file relative to dirfd; returns the locked fd. */
static int lock_at(int dirfd, const char *file, int op, struct msb_error *err)
{
	int fd = openat(dirfd, file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return msb_error_errno(err, -errno, "state: open lock '%s'", file);
	while (flock(fd, op) < 0) {
		if (errno == EINTR)
			continue;
		int e = -errno;
		close(fd);
		return msb_error_errno(err, e, "state: lock '%s'", file);
	}
	return fd;
}

/* Remove what a crashed create or remove left (caller holds the home lock). */
static void reap_leftovers(struct msb_state *st)
{
	int fd = dup(st->sandboxes_fd);
	if (fd < 0)
		return;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	char *stale[64];
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < 64)
		if (!strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) ||
		    !strncmp(de->d_name, TRASH_PREFIX, strlen(TRASH_PREFIX)))
			stale[n++] = strdup(de->d_name);
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		if (stale[i])
			msb_remove_tree_at(st->sandboxes_fd, stale[i]);
		free(stale[i]);
	}
}

int msb_state_open(const char *home, struct msb_state *st, struct msb_error *err)
{
	char buf[PATH_MAX];
	int r;
	memset(st, 0, sizeof(*st));
	st->home_fd = st->sandboxes_fd = -1;
	if (!home) {
		if ((r = msb_state_default_home(buf, sizeof(buf), err)) < 0)
			return r;
		home = buf;
	}
	if ((r = msb_mkdir_p(home, 0700)) < 0)
		return msb_error_errno(err, r, "state directory '%s'", home);
	st->home_fd = open(home, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->home_fd < 0)
		return msb_error_errno(err, -errno, "state directory '%s'", home);
	if (mkdirat(st->home_fd, "sandboxes", 0700) < 0 && errno != EEXIST) {
		r = msb_error_errno(err, -errno, "state directory '%s/sandboxes'", home);
		msb_state_close(st);
		return r;
	}
	st->sandboxes_fd =
		openat(st->home_fd, "sandboxes", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	st->home = strdup(home);
	if (st->sandboxes_fd < 0 || !st->home) {
		r = st->home ? msb_error_errno(err, -errno, "state directory '%s/sandboxes'", home)
			     : msb_error_set(err, -ENOMEM, "out of memory");
		msb_state_close(st);
		return r;
	}
	int lk = lock_at(st->home_fd, "lock", LOCK_EX, err);
	if (lk < 0) {
		msb_state_close(st);
		return lk;
	}
	reap_leftovers(st);
	close(lk);
	return 0;
}

void msb_state_close(struct msb_state *st)
{
	if (st->home_fd >= 0)
		close(st->home_fd);
	if (st->sandboxes_fd >= 0)
		close(st->sandboxes_fd);
	free(st->home);
	memset(st, 0, sizeof(*st));
	st->home_fd = st->sandboxes_fd = -1;
}

static int check_name(const char *name, struct msb_error *err)
{
	if (!msb_name_valid(name))
		return msb_error_set(err, -EINVAL, "invalid sandbox name '%.60s'", name);
	return 0;
}

static int file_name_valid(const char *f)
{
	return *f && *f != '.' && !strchr(f, '/') && strlen(f) < 128;
}

/* Write data to dirfd/file via a temp file + fsync + rename. */
static int write_atomic_at(int dirfd, const char *file, const char *data, size_t len,
			   struct msb_error *err)
{
	char tmp[192];
	uint32_t rnd;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)getpid();
	snprintf(tmp, sizeof(tmp), ".%s.tmp.%08x", file, rnd);
	int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return msb_error_errno(err, -errno, "state: write '%s'", file);
	size_t off = 0;
	int r = 0;
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		off += (size_t)n;
	}
	if (!r && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && !r)
		r = -errno;
	if (!r && renameat(dirfd, tmp, dirfd, file) < 0)
		r = -errno;
	if (r) {
		unlinkat(dirfd, tmp, 0);
		return msb_error_errno(err, r, "state: write '%s'", file);
	}
	fsync(dirfd);
	return 0;
}

static int read_at(int dirfd, const char *file, char **data, size_t *len, struct msb_error *err)
{
	int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return msb_error_errno(err, -errno, "state: read '%s'", file);
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	int r = buf ? 0 : -ENOMEM;
	while (!r) {
		if (n == cap) {
			if (cap >= MSB_STATE_FILE_MAX) {
				r = -EFBIG;
				break;
			}
			cap *= 2;
			char *nb = realloc(buf, cap + 1);
			if (!nb) {
				r = -ENOMEM;
				break;
			}
			buf = nb;
		}
		ssize_t got = read(fd, buf + n, cap - n);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
		} else if (got == 0) {
			break;
		} else {
			n += (size_t)got;
		}
	}
	close(fd);
	if (r) {
		free(buf);
		return msb_error_errno(err, r, "state: read '%s'", file);
	}
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return 0;
}

static int open_sandbox(struct msb_state *st, const char *name, struct msb_error *err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	int fd = openat(st->sandboxes_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return msb_error_set(err, -ENOENT, "no sandbox named '%s'", name);
		return msb_error_errno(err, -errno, "sandbox '%s'", name);
	}
	return fd;
}

int msb_state_sandbox_exists(struct msb_state *st, const char *name)
{
	struct stat sb;
	return msb_name_valid(name) &&
	       fstatat(st->sandboxes_fd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

int msb_state_sandbox_create(struct msb_state *st, const char *name, const char *file,
			     const char *data, size_t len, struct msb_error *err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	if (!file_name_valid(file))
		return msb_error_set(err, -EINVAL, "invalid state file name '%s'", file);
	cleanup_fd int lk = lock_at(st->home_fd, "lock", LOCK_EX, err);
	if (lk < 0)
		return lk;
	if (msb_state_sandbox_exists(st, name))
		return msb_error_set(err, -EEXIST, "a sandbox named '%s' already exists", name);
	char tmp[128];
	uint32_t rnd;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)getpid();
	snprintf(tmp, sizeof(tmp), TMP_PREFIX "%s.%08x", name, rnd);
	if (mkdirat(st->sandboxes_fd, tmp, 0700) < 0)
		return msb_error_errno(err, -errno, "state: create sandbox '%s'", name);
	int dfd = openat(st->sandboxes_fd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		r = msb_error_errno(err, -errno, "state: create sandbox '%s'", name);
		goto fail;
	}
	r = write_atomic_at(dfd, file, data, len, err);
	close(dfd);
	if (r < 0)
		goto fail;
	/* The directory appears under its name complete, or not at all. */
	if (renameat2(st->sandboxes_fd, tmp, st->sandboxes_fd, name, RENAME_NOREPLACE) < 0) {
		r = errno == EEXIST
			    ? msb_error_set(err, -EEXIST, "a sandbox named '%s' already exists",
					    name)
			    : msb_error_errno(err, -errno, "state: create sandbox '%s'", name);
		goto fail;
	}
	fsync(st->sandboxes_fd);
	return 0;
fail:
	msb_remove_tree_at(st->sandboxes_fd, tmp);
	return r;
}

int msb_state_sandbox_remove(struct msb_state *st, const char *name, struct msb_error *err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	cleanup_fd int lk = lock_at(st->home_fd, "lock", LOCK_EX, err);
	if (lk < 0)
		return lk;
	if (!msb_state_sandbox_exists(st, name))
		return msb_error_set(err, -ENOENT, "no sandbox named '%s'", name);
	/* Rename first: a half-removed sandbox is never visible under its name. */
	char trash[128];
	uint32_t rnd;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)getpid();
	snprintf(trash, sizeof(trash), TRASH_PREFIX "%s.%08x", name, rnd);
	if (renameat(st->sandboxes_fd, name, st->sandboxes_fd, trash) < 0)
		return msb_error_errno(err, -errno, "state: remove sandbox '%s'", name);
	r = msb_remove_tree_at(st->sandboxes_fd, trash);
	if (r < 0)
		return msb_error_errno(err, r, "state: remove sandbox '%s'", name);
	fsync(st->sandboxes_fd);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int msb_state_list(struct msb_state *st, char ***names, size_t *count, struct msb_error *err)
{
	cleanup_fd int lk = lock_at(st->home_fd, "lock", LOCK_SH, err);
	if (lk < 0)
		return lk;
	int fd = dup(st->sandboxes_fd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return msb_error_errno(err, -errno, "state: list sandboxes");
	}
	rewinddir(d);
	char **v = NULL;
	size_t n = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!msb_name_valid(de->d_name))
			continue;
		char **nv = realloc(v, (n + 1) * sizeof(char *));
		if (!nv || !(nv[n] = strdup(de->d_name))) {
			v = nv ? nv : v;
			r = msb_error_set(err, -ENOMEM, "out of memory");
			break;
		}
		v = nv;
		n++;
	}
	closedir(d);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return r;
	}
	if (n)
		qsort(v, n, sizeof(char *), cmp_str);
	*names = v;
	*count = n;
	return 0;
}

int msb_state_write(struct msb_state *st, const char *name, const char *file, const char *data,
		    size_t len, struct msb_error *err)
{
	if (!file_name_valid(file))
		return msb_error_set(err, -EINVAL, "invalid state file name '%s'", file);
	cleanup_fd int dfd = open_sandbox(st, name, err);
	if (dfd < 0)
		return dfd;
	cleanup_fd int lk = lock_at(dfd, "lock", LOCK_EX, err);
	if (lk < 0)
		return lk;
	return write_atomic_at(dfd, file, data, len, err);
}

int msb_state_read(struct msb_state *st, const char *name, const char *file, char **data,
		   size_t *len, struct msb_error *err)
{
	if (!file_name_valid(file))
		return msb_error_set(err, -EINVAL, "invalid state file name '%s'", file);
	cleanup_fd int dfd = open_sandbox(st, name, err);
	if (dfd < 0)
		return dfd;
	return read_at(dfd, file, data, len, err);
}

int msb_state_update(struct msb_state *st, const char *name, const char *file,
		     msb_state_update_fn fn, void *arg, struct msb_error *err)
{
	if (!file_name_valid(file))
		return msb_error_set(err, -EINVAL, "invalid state file name '%s'", file);
	cleanup_fd int dfd = open_sandbox(st, name, err);
	if (dfd < 0)
		return dfd;
	cleanup_fd int lk = lock_at(dfd, "lock", LOCK_EX, err);
	if (lk < 0)
		return lk;
	cleanup_free char *old = NULL;
	size_t old_len = 0;
	int r = read_at(dfd, file, &old, &old_len, err);
	if (r < 0 && r != -ENOENT)
		return r;
	msb_error_clear(err);
	char *out = NULL;
	size_t out_len = 0;
	r = fn(old, old_len, &out, &out_len, arg);
	if (r < 0) {
		free(out);
		return msb_error_set(err, r, "state: update of '%s' refused", file);
	}
	r = write_atomic_at(dfd, file, out, out_len, err);
	free(out);
	return r;
}
