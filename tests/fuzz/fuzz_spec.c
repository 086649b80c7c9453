/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer: a JSON spec from the SDK or the state store.  Whatever parses
 * must serialise and parse back to the same spec.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct msb_spec *s = NULL;
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_spec_from_json((const char *)data, size, &s, &err) < 0) {
		if (!err.msg[0])
			abort();
		return 0;
	}
	char *a = msb_spec_to_json(s, 0);
	struct msb_spec *t = NULL;
	if (!a || msb_spec_from_json(a, strlen(a), &t, &err) < 0)
		abort();
	char *b = msb_spec_to_json(t, 0);
	if (!b || strcmp(a, b) != 0)
		abort();
	msb_free(a);
	msb_free(b);
	msb_spec_free(s);
	msb_spec_free(t);
	return 0;
}
