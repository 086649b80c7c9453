/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
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
