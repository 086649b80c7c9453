/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CORE_LOG_H
#define MSB_CORE_LOG_H

#include <stdarg.h>

#include <msb/msb-plugin.h>

/* Lines at or below this level are written (MSB_LOG=error|warn|info|debug). */
int msb_log_level(void);
void msb_log_v(int level, const char *who, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
void msb_log(int level, const char *who, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
