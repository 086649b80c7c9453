/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Strict parsers for sizes and durations given on the command line or in a
 * spec.  Strict means: the whole string is consumed, no sign, no spaces, no
 * fractions, no overflow — "1.5G" or "5 m" is an error, never a guess.
 */
#include <msb/msb.h>

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

/* Longest value text we quote back in a message. */
#define QUOTE_MAX 40

/* Read a run of decimal digits into *v; returns digits read, -1 on overflow. */
static int read_number(const char *s, uint64_t *v)
{
	uint64_t n = 0;
	int i = 0;
	while (isdigit((unsigned char)s[i])) {
		unsigned d = (unsigned)(s[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
		i++;
	}
	*v = n;
	return i;
}

int msb_parse_size(const char *text, uint64_t *bytes, struct msb_error *err)
{
	static const char expected[] = "expected a whole number with an optional unit K, M, G "
				       "or T, e.g. 512M or 1G";
	if (!text || !*text)
		return msb_error_set(err, -EINVAL, "empty size (%s)", expected);
	uint64_t n;
	int len = read_number(text, &n);
	if (len < 0)
		return msb_error_set(err, -ERANGE, "size '%.*s' is too large", QUOTE_MAX, text);
	if (len == 0)
		return msb_error_set(err, -EINVAL, "size '%.*s' does not start with a number (%s)",
				     QUOTE_MAX, text, expected);
	const char *unit = text + len;
	if (*unit == '.' || *unit == ',')
		return msb_error_set(err, -EINVAL,
				     "size '%.*s' has a fraction (%s; write 1536M for 1.5G)",
				     QUOTE_MAX, text, expected);
	unsigned shift = 0;
	switch (toupper((unsigned char)*unit)) {
	case '\0':
		break;
	case 'B':
		if (unit[1])
			goto bad_unit;
		unit++;
		break;
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	case 'T':
		shift = 40;
		break;
	default:
		goto bad_unit;
	}
	if (shift) {
		/* Accept K, KB, KiB (all binary: memory sizes are binary). */
		const char *rest = unit + 1;
		if (*rest && strcmp(rest, "B") && strcmp(rest, "b") && strcmp(rest, "iB") &&
		    strcmp(rest, "ib"))
			goto bad_unit;
		if (n > (UINT64_MAX >> shift))
			return msb_error_set(err, -ERANGE, "size '%.*s' is too large", QUOTE_MAX,
					     text);
		n <<= shift;
	}
	*bytes = n;
	return 0;
bad_unit:
	return msb_error_set(err, -EINVAL, "size '%.*s' has an unknown unit '%.*s' (%s)", QUOTE_MAX,
			     text, QUOTE_MAX, unit, expected);
}

struct duration_unit {
	const char *name;
	uint64_t ms;
};

/* Longest first where one is a prefix of another ("ms" before "m"). */
static const struct duration_unit duration_units[] = {
	{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}, {"d", 24 * 60 * 60 * 1000},
};

int msb_parse_duration(const char *text, uint64_t *ms, struct msb_error *err)
{
	static const char expected[] = "expected a number with a unit ms, s, m, h or d, "
				       "e.g. 30s, 5m, 1h30m, or 0 for none";
	if (!text || !*text)
		return msb_error_set(err, -EINVAL, "empty duration (%s)", expected);
	if (strcmp(text, "0") == 0) {
		*ms = 0;
		return 0;
	}
	uint64_t total = 0, last_unit = UINT64_MAX;
	const char *p = text;
	while (*p) {
		uint64_t n;
		int len = read_number(p, &n);
		if (len < 0)
			return msb_error_set(err, -ERANGE, "duration '%.*s' is too long", QUOTE_MAX,
					     text);
		if (len == 0)
			return msb_error_set(err, -EINVAL,
					     "duration '%.*s': expected a number at '%.*s' (%s)",
					     QUOTE_MAX, text, QUOTE_MAX, p, expected);
		p += len;
		if (*p == '.')
			return msb_error_set(
				err, -EINVAL,
				"duration '%.*s' has a fraction (%s; write 90m for 1.5h)",
				QUOTE_MAX, text, expected);
		if (*p == '\0')
			return msb_error_set(err, -EINVAL,
					     "duration '%.*s' has no unit after %.*s (%s)",
					     QUOTE_MAX, text, len, p - len, expected);
		const struct duration_unit *u = NULL;
		for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
			size_t ul = strlen(duration_units[i].name);
			if (strncmp(p, duration_units[i].name, ul) == 0 &&
			    !isalpha((unsigned char)p[ul])) {
				u = &duration_units[i];
				break;
			}
		}
		if (!u) {
			int ul = 0;
			while (p[ul] && !isdigit((unsigned char)p[ul]) && ul < QUOTE_MAX)
				ul++;
			return msb_error_set(err, -EINVAL,
					     "duration '%.*s' has an unknown unit '%.*s' (%s)",
					     QUOTE_MAX, text, ul, p, expected);
		}
		if (u->ms >= last_unit)
			return msb_error_set(err, -EINVAL,
					     "duration '%.*s': units must go from largest to "
					     "smallest, each once (%s)",
					     QUOTE_MAX, text, expected);
		last_unit = u->ms;
		if (n > (UINT64_MAX - total) / u->ms)
			return msb_error_set(err, -ERANGE, "duration '%.*s' is too long", QUOTE_MAX,
					     text);
		total += n * u->ms;
		p += strlen(u->name);
	}
	*ms = total;
	return 0;
}
