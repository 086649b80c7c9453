/* SPDX-License-Identifier: Apache-2.0 */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int msb_log_level(void)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	const char *e = getenv("MSB_LOG");
	for (int i = 0; e && i < 4; i++)
		if (strcmp(e, names[i]) == 0)
			return i;
	return MSB_LOG_WARN;
}

void msb_log_v(int level, const char *who, const char *fmt, va_list ap)
{
	static const char *const tags[] = {"error", "warning", "info", "debug"};
	if (level > msb_log_level() || level < 0 || level > MSB_LOG_DEBUG)
		return;
	char line[1024];
	vsnprintf(line, sizeof(line), fmt, ap);
	for (char *p = line; *p; p++)
		if (*p == '\n')
			*p = ' ';
	fprintf(stderr, "msb: %s: %s: %s\n", who, tags[level], line);
}

void msb_log(int level, const char *who, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	msb_log_v(level, who, fmt, ap);
	va_end(ap);
}
