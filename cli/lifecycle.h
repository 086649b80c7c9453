/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CLI_LIFECYCLE_H
#define MSB_CLI_LIFECYCLE_H

#include "state.h"

#include <stddef.h>

/* Where msb-supervisor is: next to msb (the build tree), else MSB_LIBEXEC_DIR. */
int cli_supervisor_path(char *buf, size_t len, struct msb_error *err);
/* Start sandbox name's supervisor and wait until its agent answered. */
/* values_fd: a memfd of secret values given directly (secretval.h), or -1. */
int cli_spawn_supervisor(const struct msb_state *st, const char *name, int values_fd,
			 struct msb_error *err);

#endif
