/* SPDX-License-Identifier: Apache-2.0 */
/* The error convention: negative errno + caller-owned struct msb_error. */
#include <msb/msb.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

int msb_error_vset(struct msb_error *err, int code, const char *fmt, va_list ap)
{
	if (code >= 0)
		code = -EINVAL; /* a caller bug; never report success as an error */
	if (err) {
		err->code = code;
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		/* One line: a message never carries a newline to the terminal. */
		for (char *p = err->msg; *p; p++)
			if (*p == '\n' || *p == '\r')
				*p = ' ';
	}
	return code;
}

int msb_error_set(struct msb_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = msb_error_vset(err, code, fmt, ap);
	va_end(ap);
	return r;
}

int msb_error_errno(struct msb_error *err, int code, const char *fmt, ...)
{
	char head[MSB_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	return msb_error_set(err, code, "%s: %s", head, strerror(code < 0 ? -code : code));
}

int msb_error_prefix(struct msb_error *err, const char *fmt, ...)
{
	if (!err)
		return -EINVAL;
	char head[MSB_ERROR_MSG_MAX], old[MSB_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	size_t hl = strnlen(head, sizeof(err->msg) - 1);
	for (size_t i = 0; i < hl; i++) /* one line, as msb_error_set keeps it */
		if (head[i] == '\n' || head[i] == '\r')
			head[i] = ' ';
	memcpy(err->msg, head, hl);
	size_t ol = strnlen(old, sizeof(err->msg) - 1 - hl);
	memcpy(err->msg + hl, old, ol);
	err->msg[hl + ol] = '\0';
	return err->code;
}

void msb_error_clear(struct msb_error *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}
