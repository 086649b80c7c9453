/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"

void msb_cleanup_freep(void *p)
{
	free(*(void **)p);
}

void msb_cleanup_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

/* Remove dirfd/name and everything below it, never following symlinks. */
static int remove_tree_at(int dirfd, const char *name, int depth)
{
	if (depth > MSB_REMOVE_DEPTH_MAX)
		return -ELOOP;
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int rr = remove_tree_at(fd, de->d_name, depth + 1);
		if (rr < 0 && !r)
			r = rr;
	}
	closedir(d);
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && !r)
		r = -errno;
	return r;
}

int msb_remove_tree_at(int dirfd, const char *name)
{
	return remove_tree_at(dirfd, name, 0);
}

void msb_free(void *p)
{
	free(p);
}

const char *msb_version(void)
{
	return MSB_VERSION_STRING;
}

int msb_mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}
