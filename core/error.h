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

/* cleanup attributes, as in bubblewrap: no ladders of frees. */
void msb_cleanup_freep(void *p);
void msb_cleanup_closep(int *fd);
#define cleanup_free __attribute__((cleanup(msb_cleanup_freep)))
#define cleanup_fd   __attribute__((cleanup(msb_cleanup_closep)))

#endif
