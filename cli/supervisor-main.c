/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-supervisor: the monitor process of one sandbox (DESIGN.md "Process
 * model"), installed in libexec and started only by msb.  It hosts the VM,
 * so it links only what that needs: the core, not the image code (libcurl,
 * libarchive, OpenSSL), which the CLI ran before starting it.
 *
 *   msb-supervisor serve NAME READY_FD   a created sandbox: boot, serve its
 *                                        control socket (msb create, start)
 *   msb-supervisor run NAME              msb run, exec'd by it after it made
 *                                        the sandbox's state: boot, run the
 *                                        spec's command on this process's
 *                                        stdio, stop; an ephemeral sandbox's
 *                                        state goes too
 *
 * MSB_HOME is inherited.  Exit statuses are msb run's: the command's own,
 * 128+N for a signal, 125 when msb failed.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msb/msb.h>

#include "session.h"
#include "state.h"
#include "supervisor.h"

#define EXIT_RUN_FAILED 125

static int boot_timeout_ms(void)
{
	const char *t = getenv("MSB_BOOT_TIMEOUT");
	uint64_t ms;
	if (t && msb_parse_duration(t, &ms, NULL) == 0 && ms > 0 && ms < 3600000)
		return (int)ms;
	return 120000;
}

static int run(const char *name)
{
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_state st;
	if (msb_state_open(NULL, &st, &err) < 0) {
		fprintf(stderr, "msb: run: %s\n", err.msg);
		return EXIT_RUN_FAILED;
	}
	int ephemeral = 0;
	char *flag = NULL;
	size_t flen;
	if (msb_state_read(&st, name, "ephemeral", &flag, &flen, &err) == 0)
		ephemeral = 1;
	free(flag);
	msb_error_clear(&err);

	int status = EXIT_RUN_FAILED;
	struct msb_loaded l;
	struct msb_sandbox sb;
	if (msb_sandbox_load(st.home, name, MSB_BUILD_ROOT, &l, &err) < 0) {
		fprintf(stderr, "msb: run: %s\n", err.msg);
	} else if (msb_sandbox_boot(&sb, l.spec, l.hv, l.storage, l.net, l.secrets, &l.assets,
				    l.dir, &cli_session_ops, NULL, boot_timeout_ms(), &err) < 0) {
		fprintf(stderr, "msb: run: %s\n", err.msg);
		msb_sandbox_unload(&l);
	} else {
		const struct msb_spec *spec = l.spec;
		struct msb_agent_exec req = {
			.user = spec->user ? spec->user : "",
			.cwd = spec->workdir ? spec->workdir : "",
			.argc = (uint32_t)spec->ncommand,
			.argv = (const char **)spec->command,
			.envc = (uint32_t)sb.nenv,
			.envp = (const char **)sb.env,
		};
		const struct msb_hv_ops *hv = &l.hv->ops.hv;
		int exit_fd = hv->exit_fd ? hv->exit_fd(sb.hv->inst) : -1;
		status = cli_session_run(sb.agent, &req, "run", exit_fd, &err);
		if (status < 0 || err.msg[0]) {
			char why[300];
			const char *vm = msb_sandbox_exit_reason(&sb, why, sizeof(why));
			fprintf(stderr, "msb: %s%s%s%s\n", err.msg, vm ? " (VM: " : "",
				vm ? vm : "", vm ? ")" : "");
			if (status < 0)
				status = EXIT_RUN_FAILED;
		}
		msb_sandbox_stop(&sb, 10000);
		msb_sandbox_unload(&l);
	}
	if (!ephemeral)
		msb_state_write(&st, name, "owner.pid", "", 0, &err);
	else if (msb_state_sandbox_remove(&st, name, &err) < 0)
		fprintf(stderr, "msb: run: cleaning up: %s\n", err.msg);
	msb_state_close(&st);
	return status;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "run"))
		return run(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "serve")) {
		char home[PATH_MAX];
		struct msb_error err = MSB_ERROR_INIT;
		if (msb_state_default_home(home, sizeof(home), &err) < 0) {
			fprintf(stderr, "msb-supervisor: %s\n", err.msg);
			return 1;
		}
		return msb_supervise(home, argv[2], atoi(argv[3]), MSB_BUILD_ROOT);
	}
	fprintf(stderr, "msb-supervisor: internal to msb (expected: serve NAME FD | run NAME)\n");
	return 2;
}
