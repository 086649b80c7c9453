/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
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
