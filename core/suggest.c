/* SPDX-License-Identifier: Apache-2.0 */
/* "Did you mean ...?" for misspelled words on the command line. */
#include "suggest.h"

#include <ctype.h>
#include <string.h>

/* Words longer than this are never "misspellings" of a keyword. */
#define WORD_MAX 64

size_t msb_edit_distance(const char *a, const char *b, size_t cap)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > WORD_MAX || lb > WORD_MAX)
		return cap + 1;
	if ((la > lb ? la - lb : lb - la) > cap)
		return cap + 1;

	/* Optimal string alignment distance: three rows are enough. */
	size_t rows[3][WORD_MAX + 1];
	size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		size_t row_min = cur[0];
		for (size_t j = 1; j <= lb; j++) {
			int ca = tolower((unsigned char)a[i - 1]);
			int cb = tolower((unsigned char)b[j - 1]);
			size_t cost = ca == cb ? 0 : 1;
			size_t v = prev[j] + 1;
			if (cur[j - 1] + 1 < v)
				v = cur[j - 1] + 1;
			if (prev[j - 1] + cost < v)
				v = prev[j - 1] + cost;
			if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
			    tolower((unsigned char)a[i - 2]) == cb && prev2[j - 2] + 1 < v)
				v = prev2[j - 2] + 1;
			cur[j] = v;
			if (v < row_min)
				row_min = v;
		}
		if (row_min > cap)
			return cap + 1;
		size_t *t = prev2;
		prev2 = prev;
		prev = cur;
		cur = t;
	}
	return prev[lb] > cap ? cap + 1 : prev[lb];
}

const char *msb_suggest(const char *word, const char *const *candidates)
{
	size_t len = strlen(word);
	/* Short words need a closer match: "tc" is not a misspelling of "any". */
	size_t cap = len <= 3 ? 1 : 2;
	const char *best = NULL;
	size_t best_d = cap + 1;
	for (size_t i = 0; candidates[i]; i++) {
		size_t d = msb_edit_distance(word, candidates[i], cap);
		if (d < best_d) {
			best = candidates[i];
			best_d = d;
		}
	}
	return best;
}
