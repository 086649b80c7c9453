/* SPDX-License-Identifier: Apache-2.0 */
/* Core-internal error helpers (the public ones are in msb.h). */
#ifndef MSB_CORE_ERROR_H
#define MSB_CORE_ERROR_H

#include <stdarg.h>

#include <msb/msb-error.h>

int msb_error_vset(struct msb_error *err, int code, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
/* Like msb_error_set, with ": strerror(code)" appended. */
int msb_error_errno(struct msb_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#include <sys/types.h>

/* mkdir -p: parents 0755, the last component `mode`; 0 if it exists. */
int msb_mkdir_p(const char *path, mode_t mode);

/*
 * rm -r of dirfd/name (AT_FDCWD and a path work too): never follows a
 * symlink, at most MSB_REMOVE_DEPTH_MAX levels (-ELOOP beyond); 0 if it
 * does not exist.  Goes on past errors, returning the first.
 */
#define MSB_REMOVE_DEPTH_MAX 256
int msb_remove_tree_at(int dirfd, const char *name);

/* cleanup attributes, as in bubblewrap: no ladders of frees. */
void msb_cleanup_freep(void *p);
void msb_cleanup_closep(int *fd);
#define cleanup_free __attribute__((cleanup(msb_cleanup_freep)))
#define cleanup_fd   __attribute__((cleanup(msb_cleanup_closep)))

#endif
