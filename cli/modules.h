/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CLI_MODULES_H
#define MSB_CLI_MODULES_H

#include "registry.h"
#include "spec.h"

/* Build the search path and scan it; dies on a fatal error. */
void cli_load_registry(struct msb_registry *reg, int warn_refused);
/* Resolve every module the spec names; -EINVAL for a bad name the user gave. */
int cli_check_modules(const struct msb_registry *reg, const struct msb_spec *spec,
		      const struct msb_module *out[MSB_SLOT_COUNT], struct msb_error *err);

#endif
