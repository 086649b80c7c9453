/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CORE_SUGGEST_H
#define MSB_CORE_SUGGEST_H

#include <stddef.h>

/*
 * The candidate closest to `word` (case-insensitive Damerau-Levenshtein
 * distance, at most 2 and less than half of the word's length rounded up),
 * or NULL when none is close enough.  `candidates` ends with NULL.
 */
const char *msb_suggest(const char *word, const char *const *candidates);

/* Edit distance between a and b, capped at cap + 1 (cheap early exit). */
size_t msb_edit_distance(const char *a, const char *b, size_t cap);

#endif
