/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CLI_LIFECYCLE_H
#define MSB_CLI_LIFECYCLE_H

#include "state.h"

#include <stddef.h>

/*
 * One of msb's private files (msb-supervisor, msb-image-io.so): next to msb
 * (the build tree), else in MSB_LIBEXEC_DIR.  0 when it is there with
 * `mode` (access(2)); else -errno, with the MSB_LIBEXEC_DIR path in buf.
 */
int cli_private_file(const char *name, int mode, char *buf, size_t len);
/* Where msb-supervisor is (cli_private_file); the error names the path. */
int cli_supervisor_path(char *buf, size_t len, struct msb_error *err);
/* Start sandbox name's supervisor and wait until its agent answered. */
/* values_fd: a memfd of secret values given directly (secretval.h), or -1. */
int cli_spawn_supervisor(const struct msb_state *st, const char *name, int values_fd,
			 struct msb_error *err);

#endif
