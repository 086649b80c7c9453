/* SPDX-License-Identifier: Apache-2.0 */
#include "volume.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "supervisor.h"

#define VOLUMES_DIR  "volumes"
#define RECORD	     "volume.json"
#define DATA	     "data"
#define TMP_PREFIX   ".new-"
#define TRASH_PREFIX ".trash-"

int msb_volume_name_valid(const char *name)
{
	return msb_name_valid(name);
}

static int home_of(const char *home, char *buf, size_t len, struct msb_error *err)
{
	if (home) {
		int n = snprintf(buf, len, "%s", home);
		return n < 0 || (size_t)n >= len
			       ? msb_error_set(err, -ENAMETOOLONG, "path too long")
			       : 0;
	}
	return msb_state_default_home(buf, len, err);
}

static int check_name(const char *name, struct msb_error *err)
{
	if (!msb_volume_name_valid(name))
		return msb_error_set(err, -EINVAL,
				     "invalid volume name '%.60s' (expected "
				     "[A-Za-z0-9][A-Za-z0-9_.-]*, at most %d characters)",
				     name, MSB_NAME_MAX);
	return 0;
}

int msb_volume_path(const char *home, const char *name, char *buf, size_t len,
		    struct msb_error *err)
{
	char h[PATH_MAX];
	int r = check_name(name, err);
	if (r == 0)
		r = home_of(home, h, sizeof(h), err);
	if (r < 0)
		return r;
	int n = snprintf(buf, len, "%s/" VOLUMES_DIR "/%s/" DATA, h, name);
	if (n < 0 || (size_t)n >= len)
		return msb_error_set(err, -ENAMETOOLONG, "volume path too long");
	return 0;
}

/* MSB_HOME/volumes, created (0700) when `create`; -ENOENT otherwise if absent. */
static int open_volumes(const char *home, int create, struct msb_error *err)
{
	char h[PATH_MAX], dir[PATH_MAX + 16];
	int r = home_of(home, h, sizeof(h), err);
	if (r < 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/" VOLUMES_DIR, h);
	if (create && (r = msb_mkdir_p(dir, 0700)) < 0)
		return msb_error_errno(err, r, "volumes directory '%s'", dir);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT
			       ? -ENOENT
			       : msb_error_errno(err, -errno, "volumes directory '%s'", dir);
	return fd;
}

static int lock_volumes(int dfd, struct msb_error *err)
{
	int fd = openat(dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return msb_error_errno(err, -errno, "volumes: lock");
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		int e = -errno;
		close(fd);
		return msb_error_errno(err, e, "volumes: lock");
	}
	return fd;
}

static void random_suffix(char *buf, size_t len, const char *prefix, const char *name)
{
	unsigned char r[4] = {0};
	if (getrandom(r, sizeof(r), 0) != sizeof(r))
		memset(r, 0, sizeof(r));
	snprintf(buf, len, "%s%s-%02x%02x%02x%02x", prefix, name, r[0], r[1], r[2], r[3]);
}

static int write_record(int dirfd, const char *name, struct msb_error *err)
{
	char created[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_t *rec = json_pack("{s:s,s:s}", "name", name, "created", created);
	char *text = rec ? json_dumps(rec, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(rec);
	if (!text)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int fd = openat(dirfd, RECORD, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	size_t len = strlen(text);
	int ok = fd >= 0 && write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 &&
		 fsync(fd) == 0;
	int e = ok ? 0 : errno ? -errno : -EIO;
	if (fd >= 0)
		close(fd);
	free(text);
	return ok ? 0 : msb_error_errno(err, e, "volume record");
}

int msb_volume_create(const char *home, const char *name, struct msb_error *err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	cleanup_fd int dfd = open_volumes(home, 1, err);
	if (dfd < 0)
		return dfd;
	cleanup_fd int lk = lock_volumes(dfd, err);
	if (lk < 0)
		return lk;
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return msb_error_set(err, -EEXIST, "a volume named '%s' already exists", name);
	char tmp[MSB_NAME_MAX + 32];
	random_suffix(tmp, sizeof(tmp), TMP_PREFIX, name);
	if (mkdirat(dfd, tmp, 0700) < 0)
		return msb_error_errno(err, -errno, "volume '%s'", name);
	cleanup_fd int tfd = openat(dfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (tfd < 0 || mkdirat(tfd, DATA, 0755) < 0) {
		r = msb_error_errno(err, -errno, "volume '%s'", name);
	} else if ((r = write_record(tfd, name, err)) == 0 &&
		   (fsync(tfd) < 0 || renameat(dfd, tmp, dfd, name) < 0)) {
		r = msb_error_errno(err, -errno, "volume '%s'", name);
	}
	if (r < 0)
		msb_remove_tree_at(dfd, tmp);
	else
		fsync(dfd);
	return r;
}

void msb_volume_info_free(struct msb_volume_info *info)
{
	free(info->path);
	info->path = NULL;
}

int msb_volume_inspect(const char *home, const char *name, struct msb_volume_info *info,
		       struct msb_error *err)
{
	memset(info, 0, sizeof(*info));
	int r = check_name(name, err);
	if (r < 0)
		return r;
	cleanup_fd int dfd = open_volumes(home, 0, err);
	cleanup_fd int vfd =
		dfd >= 0 ? openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	struct stat st;
	if (vfd < 0 || fstatat(vfd, DATA, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return msb_error_set(err, -ENOENT,
				     "no volume named '%s' (msb volume ls lists them; msb volume "
				     "create %s makes it)",
				     name, name);
	snprintf(info->name, sizeof(info->name), "%s", name);
	/* The record is informational: a missing or odd one leaves `created` empty. */
	int rfd = openat(vfd, RECORD, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (rfd >= 0) {
		char buf[4096];
		ssize_t n = read(rfd, buf, sizeof(buf) - 1);
		close(rfd);
		json_t *rec = n > 0 ? json_loadb(buf, (size_t)n, 0, NULL) : NULL;
		const char *c = json_string_value(json_object_get(rec, "created"));
		if (c)
			snprintf(info->created, sizeof(info->created), "%s", c);
		json_decref(rec);
	}
	char path[PATH_MAX];
	if ((r = msb_volume_path(home, name, path, sizeof(path), err)) < 0)
		return r;
	info->path = strdup(path);
	return info->path ? 0 : msb_error_set(err, -ENOMEM, "out of memory");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int msb_volume_list(const char *home, char ***names, size_t *count, struct msb_error *err)
{
	*names = NULL;
	*count = 0;
	int dfd = open_volumes(home, 0, err);
	if (dfd == -ENOENT)
		return 0;
	if (dfd < 0)
		return dfd;
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return msb_error_errno(err, -errno, "volumes directory");
	}
	char **v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d))) {
		if (!msb_volume_name_valid(de->d_name) || de->d_type != DT_DIR)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **g = realloc(v, cap * sizeof(*v));
			if (!g) {
				r = -ENOMEM;
				break;
			}
			v = g;
		}
		if (!(v[n] = strdup(de->d_name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return msb_error_set(err, r, "out of memory");
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_str);
	*names = v;
	*count = n;
	return 0;
}

/* ---- sandboxes' volumes, from their specs --------------------------------- */

/* One mount of a sandbox's spec: the host directory it serves, resolved. */
struct mount_ref {
	char path[PATH_MAX];
	char name[MSB_NAME_MAX + 1]; /* the named volume, "" for a bind */
	int read_only;
};

/*
 * The volumes of sandbox `sb`'s spec, read straight from its JSON (not
 * through msb_spec_from_json, which would re-validate bind paths that may
 * have gone since): at most MSB_VOLUMES_MAX.
 */
static size_t sandbox_mounts(struct msb_state *st, const char *sb, struct mount_ref *out)
{
	char *json = NULL;
	size_t len = 0, n = 0;
	if (msb_state_read(st, sb, "spec.json", &json, &len, NULL) < 0)
		return 0;
	json_t *root = json_loadb(json, len, 0, NULL);
	free(json);
	json_t *vols = json_object_get(root, "volumes"), *v;
	size_t i;
	json_array_foreach(vols, i, v)
	{
		if (n >= MSB_VOLUMES_MAX)
			break;
		const char *type = json_string_value(json_object_get(v, "type"));
		const char *src = json_string_value(json_object_get(v, "source"));
		if (!type || !src)
			continue;
		struct mount_ref *m = &out[n];
		memset(m, 0, sizeof(*m));
		m->read_only = json_is_true(json_object_get(v, "read_only"));
		if (strcmp(type, "volume") == 0) {
			if (msb_volume_path(st->home, src, m->path, sizeof(m->path), NULL) < 0)
				continue;
			snprintf(m->name, sizeof(m->name), "%s", src);
		} else {
			snprintf(m->path, sizeof(m->path), "%s", src);
		}
		n++;
	}
	json_decref(root);
	return n;
}

int msb_volume_users(struct msb_state *st, const char *name, struct msb_volume_user **users,
		     size_t *count, struct msb_error *err)
{
	*users = NULL;
	*count = 0;
	char **names = NULL;
	size_t n = 0;
	int r = msb_state_list(st, &names, &n, err);
	if (r < 0)
		return r;
	struct msb_volume_user *u = n ? calloc(n, sizeof(*u)) : NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct mount_ref m[MSB_VOLUMES_MAX];
		size_t nm = sandbox_mounts(st, names[i], m);
		int ro = 1, uses = 0;
		for (size_t j = 0; j < nm; j++)
			if (strcmp(m[j].name, name) == 0) {
				uses = 1;
				ro = ro && m[j].read_only;
			}
		if (uses && u) {
			u[k].sandbox = names[i];
			names[i] = NULL;
			u[k].pid = msb_sandbox_running_pid(st, u[k].sandbox);
			u[k].read_only = ro;
			k++;
		}
		free(names[i]);
	}
	free(names);
	if (n && !u)
		return msb_error_set(err, -ENOMEM, "out of memory");
	*users = u;
	*count = k;
	return 0;
}

void msb_volume_users_free(struct msb_volume_user *users, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(users[i].sandbox);
	free(users);
}

int msb_volume_remove(struct msb_state *st, const char *name, int force, struct msb_error *err)
{
	int r = check_name(name, err);
	if (r < 0)
		return r;
	cleanup_fd int dfd = open_volumes(st->home, 0, err);
	if (dfd == -ENOENT)
		return msb_error_set(err, -ENOENT,
				     "no volume named '%s' (expected one msb volume ls lists)",
				     name);
	if (dfd < 0)
		return dfd;
	cleanup_fd int lk = lock_volumes(dfd, err);
	if (lk < 0)
		return lk;
	struct stat sst;
	if (fstatat(dfd, name, &sst, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(sst.st_mode))
		return msb_error_set(err, -ENOENT,
				     "no volume named '%s' (expected one msb volume ls lists)",
				     name);
	if (!force) {
		struct msb_volume_user *u;
		size_t n;
		if ((r = msb_volume_users(st, name, &u, &n, err)) < 0)
			return r;
		if (n) {
			char list[256] = "";
			size_t off = 0;
			for (size_t i = 0; i < n && off < sizeof(list); i++)
				off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s (%s)",
							i ? ", " : "", u[i].sandbox,
							u[i].pid ? "running" : "stopped");
			msb_volume_users_free(u, n);
			return msb_error_set(
				err, -EBUSY,
				"volume '%s' is used by sandbox%s %s (remove %s first, "
				"or msb volume rm -f)",
				name, n > 1 ? "es" : "", list, n > 1 ? "them" : "it");
		}
	}
	/* Renamed away first: from here on no one finds it by name, even if removal stops halfway.
	 */
	char trash[MSB_NAME_MAX + 32];
	random_suffix(trash, sizeof(trash), TRASH_PREFIX, name);
	if (renameat(dfd, name, dfd, trash) < 0)
		return msb_error_errno(err, -errno, "removing volume '%s'", name);
	r = msb_remove_tree_at(dfd, trash);
	if (r < 0)
		return msb_error_errno(err, r, "removing volume '%s' (its remains are in %s/%s/%s)",
				       name, st->home, VOLUMES_DIR, trash);
	return 0;
}

int msb_volumes_resolve(const char *home, struct msb_spec *spec, struct msb_error *err)
{
	for (size_t i = 0; i < spec->nvolumes; i++) {
		struct msb_volume *v = &spec->volumes[i];
		char path[PATH_MAX];
		if (v->named) {
			int r = msb_volume_path(home, v->source, path, sizeof(path), err);
			if (r < 0)
				return r;
			struct stat st;
			if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
				return msb_error_set(err, -ENOENT,
						     "--volume '%s:%s': volume '%s' does not exist "
						     "(expected a volume msb volume ls lists; msb "
						     "volume create %s makes it)",
						     v->source, v->target, v->source, v->source);
		} else {
			snprintf(path, sizeof(path), "%s", v->source);
		}
		char *c = strdup(path);
		if (!c)
			return msb_error_set(err, -ENOMEM, "out of memory");
		free(v->host_path);
		v->host_path = c;
	}
	return 0;
}

/* Same directory, or one inside the other: writes through one reach the other. */
static int overlaps(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), l = la < lb ? la : lb;
	if (strncmp(a, b, l) != 0)
		return 0;
	const char *longer = la > lb ? a : b;
	return la == lb || longer[l] == '/' || (l == 1 && a[0] == '/');
}

size_t msb_volumes_shared_check(struct msb_state *st, const char *self, const struct msb_spec *spec,
				void (*warn)(const char *line, void *arg), void *arg)
{
	if (!spec->nvolumes)
		return 0;
	char **names = NULL;
	size_t n = 0, warned = 0;
	if (msb_state_list(st, &names, &n, NULL) < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		const char *other = names[i];
		if ((self && strcmp(other, self) == 0) || !msb_sandbox_running_pid(st, other)) {
			free(names[i]);
			continue;
		}
		struct mount_ref m[MSB_VOLUMES_MAX];
		size_t nm = sandbox_mounts(st, other, m);
		for (size_t v = 0; v < spec->nvolumes; v++) {
			const struct msb_volume *mine = &spec->volumes[v];
			const char *p = mine->host_path ? mine->host_path : mine->source;
			for (size_t j = 0; j < nm; j++) {
				if (mine->read_only && m[j].read_only)
					continue; /* both read-only: nothing flows */
				if (!overlaps(p, m[j].path))
					continue;
				char line[PATH_MAX + 256];
				if (mine->named)
					snprintf(line, sizeof(line),
						 "volume '%s' is also mounted into running sandbox "
						 "'%s'%s: the two sandboxes can affect each other "
						 "through it",
						 mine->source, other,
						 m[j].read_only ? " (read-only there)"
								: ", writable");
				else
					snprintf(
						line, sizeof(line),
						"host directory %s is also shared with running "
						"sandbox '%s'%s: the two sandboxes can affect each "
						"other through it",
						p, other,
						m[j].read_only ? " (read-only there)"
							       : ", writable");
				warn(line, arg);
				warned++;
				break;
			}
		}
		free(names[i]);
	}
	free(names);
	return warned;
}
