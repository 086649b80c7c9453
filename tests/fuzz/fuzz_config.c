/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer: the config file parser. */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_config_parse((const char *)data, size, "fuzz", &err) == 0) {
		(void)msb_config_get(NULL, "plugin_path");
		(void)msb_config_get("network.netfilter", "pool");
	}
	msb_config_reset();
	return 0;
}
