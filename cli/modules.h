/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CLI_MODULES_H
#define MSB_CLI_MODULES_H

#include "registry.h"
#include "spec.h"

/* Build the search path (no module loaded yet); dies on a fatal error. */
void cli_open_registry(struct msb_registry *reg);
/* Build the search path and scan it; dies on a fatal error. */
void cli_load_registry(struct msb_registry *reg, int warn_refused);
/* One warning line for each refused file the registry loaded. */
void cli_warn_refused(const struct msb_registry *reg);
/*
 * Resolve the modules the spec uses (a network, volumes, secrets; the
 * hypervisor always; any the user named), or all four with `all`, loading
 * only as far as needed (msb_registry_resolve).  out[slot] is NULL for a
 * slot not checked.  -EINVAL for a bad name the user gave.
 */
int cli_check_modules(struct msb_registry *reg, const struct msb_spec *spec, int all,
		      const struct msb_module *out[MSB_SLOT_COUNT], struct msb_error *err);

#endif
