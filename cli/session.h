/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CLI_SESSION_H
#define MSB_CLI_SESSION_H

#include "agent-client.h"

/* The callbacks a client needs for cli_session_run (pass them to msb_agent_client_new). */
extern const struct msb_agent_client_ops cli_session_ops;

/*
 * Run req in the guest attached to this process's stdio and signals.
 * Returns the command's exit status (128+N for signal N; 127/126 when it
 * could not be started, with err set), or -1 with err set when the session
 * itself failed — or the VM ended: vm_exit_fd (or -1) is the hypervisor
 * module's exit_fd, readable once the VM is gone.
 */
int cli_session_run(struct msb_agent_client *c, const struct msb_agent_exec *req, const char *what,
		    int vm_exit_fd, struct msb_error *err);

#endif
