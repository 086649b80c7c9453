/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The per-sandbox supervisor (DESIGN.md "Process model"): one process per
 * running sandbox that owns the VM and serves the sandbox's control socket
 * (sandboxes/NAME/control.sock, directory 0700, socket 0600).  `msb exec`,
 * `msb stop` and the SDK speak the agent protocol on it; the supervisor
 * multiplexes every connection's sessions onto the one guest agent.  When the
 * supervisor dies, the VM (its threads) dies with it.
 */
#ifndef MSB_CORE_SUPERVISOR_H
#define MSB_CORE_SUPERVISOR_H

#include <sys/types.h>

#include <limits.h>

#include <msb/msb-error.h>

#include "registry.h"
#include "sandbox.h"
#include "spec.h"

#define MSB_CONTROL_SOCKET "control.sock"
#define MSB_SUPERVISOR_PID "supervisor.pid"
#define MSB_SUPERVISOR_LOG "supervisor.log"
/* Control connections one supervisor serves at once. */
#define MSB_CONTROL_CONNS_MAX 64

/*
 * Run the supervisor of sandbox `name` in the store at `home`: boot it, then
 * serve until it is stopped, its lifetime runs out, or the guest ends.
 * ready_fd receives "ok\n" once the agent answered, or one line of error;
 * then it is closed.  build_root as for msb_assets_find.  Returns the exit
 * status for the process.
 */
int msb_supervise(const char *home, const char *name, int ready_fd, const char *build_root);

/* What a monitor process needs to boot sandbox `name`. */
struct msb_loaded {
	char dir[PATH_MAX]; /* its state directory */
	struct msb_spec *spec;
	struct msb_registry reg;
	const struct msb_module *hv;
	const struct msb_module *storage; /* NULL when the spec has no volumes */
	const struct msb_module *net;	  /* NULL with --no-net */
	const struct msb_module *secrets; /* NULL without secrets */
	struct msb_assets assets;
};
/*
 * Read the sandbox's spec, load the modules it names, resolve its volumes
 * (a named volume must still exist), find kernel and initramfs.
 */
int msb_sandbox_load(const char *home, const char *name, const char *build_root,
		     struct msb_loaded *l, struct msb_error *err);
void msb_sandbox_unload(struct msb_loaded *l);

/*
 * The supervisor's pid if sandbox `name` is running (its pid file names a
 * live supervisor of this sandbox), 0 if it is not; a stale pid file and
 * socket left by a supervisor that died are removed.
 */
pid_t msb_supervisor_pid(const char *home, const char *name);

/*
 * Like msb_supervisor_pid, and *died set to 1 when a pid file was left by a
 * supervisor that is gone (it crashed or was killed): what it held outside
 * its own process (its network's host side) may still be there to reap.
 */
pid_t msb_supervisor_pid_died(const char *home, const char *name, int *died);

/*
 * Is sandbox `name` running?  Its supervisor's pid (msb create/start), or
 * the pid of the msb run process hosting it; 0 when neither is alive.
 */
struct msb_state;
pid_t msb_sandbox_running_pid(struct msb_state *st, const char *name);

/* Connect to a running sandbox's control socket. */
int msb_control_connect(const char *home, const char *name, struct msb_error *err);

#endif
