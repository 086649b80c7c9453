/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: sizes and durations from the command line or a spec. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	struct msb_error err = MSB_ERROR_INIT;
	uint64_t v;
	if (msb_parse_size(s, &v, &err) < 0 && (!err.msg[0] || strchr(err.msg, '\n')))
		abort(); /* every failure has a one-line message */
	if (msb_parse_duration(s, &v, &err) < 0 && (!err.msg[0] || strchr(err.msg, '\n')))
		abort();
	free(s);
	return 0;
}
