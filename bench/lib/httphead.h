/* SPDX-License-Identifier: Apache-2.0 */
/* bench/lib/tlsecho.c and tlsload.c: one HTTP header from a head, for the benchmark only. */
#ifndef MSB_BENCH_HTTPHEAD_H
#define MSB_BENCH_HTTPHEAD_H

#include <string.h>
#include <strings.h>

// The value of header NAME (case-insensitive) in the head [h, end), or NULL.
static inline const char *header(const char *h, const char *end, const char *name, size_t *len)
{
	size_t nl = strlen(name);
	const char *p = memchr(h, '\n', (size_t)(end - h)); // skip the request/status line
	while (p && p + 1 < end) {
		const char *line = p + 1;
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (!eol)
			break;
		if ((size_t)(eol - line) > nl && line[nl] == ':' && !strncasecmp(line, name, nl)) {
			const char *v = line + nl + 1;
			const char *ve = eol;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			*len = (size_t)(ve - v);
			return v;
		}
		p = eol;
	}
	return NULL;
}

#endif
