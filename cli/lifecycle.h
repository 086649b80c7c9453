/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CLI_LIFECYCLE_H
#define MSB_CLI_LIFECYCLE_H

#include "state.h"

/* Start sandbox name's supervisor and wait until its agent answered. */
int cli_spawn_supervisor(const struct msb_state *st, const char *name, struct msb_error *err);

#endif
