/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-supervisor: the monitor process of one sandbox (DESIGN.md "Process
 * model"), installed in libexec and started only by msb.  It hosts the VM,
 * so it links only what that needs: the core, not the image code (libcurl,
 * libarchive, OpenSSL), which the CLI ran before starting it.
 *
 *   msb-supervisor serve NAME READY_FD [VALUES_FD]
 *                                        a created sandbox: boot, serve its
 *                                        control socket (msb create, start)
 *   msb-supervisor run NAME [VALUES_FD]  msb run, exec'd by it after it made
 *                                        the sandbox's state: boot, run the
 *                                        spec's command on this process's
 *                                        stdio, stop; an ephemeral sandbox's
 *                                        state goes too
 *
 * VALUES_FD: a memfd of secret values given directly (core/secretval.h),
 * read into this process's vault and closed before anything else.
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

#include "secretval.h"
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
		/* From here on this thread reads the guest agent's frames: under a filter. */
		status = msb_sandbox_confine(&err) < 0
				 ? -1
				 : cli_session_run(sb.agent, &req, "run", exit_fd, &err);
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

/*
 * Read the values' memfd into the vault.  False if it is bad, with the
 * message on stderr and on ready_fd (>= 0: msb create waits there).
 */
static int take_values(const char *fdstr, int ready_fd)
{
	char *end;
	long fd = strtol(fdstr, &end, 10);
	struct msb_error err = MSB_ERROR_INIT;
	int r = *end || fd < 3 || fd > 65535
			? msb_error_set(&err, -EBADF, "secret values: bad fd '%.16s'", fdstr)
			: msb_secret_vault_read_fd((int)fd, &err);
	if (!*end && fd >= 3 && fd <= 65535)
		close((int)fd);
	if (r < 0) {
		fprintf(stderr, "msb-supervisor: %s\n", err.msg);
		if (ready_fd >= 0)
			dprintf(ready_fd, "%s\n", err.msg);
	}
	return r == 0;
}

int main(int argc, char **argv)
{
	if ((argc == 3 || argc == 4) && !strcmp(argv[1], "run")) {
		if (argc == 4 && !take_values(argv[3], -1))
			return EXIT_RUN_FAILED;
		return run(argv[2]);
	}
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "serve")) {
		if (argc == 5 && !take_values(argv[4], atoi(argv[3])))
			return 1;
		char home[PATH_MAX];
		struct msb_error err = MSB_ERROR_INIT;
		if (msb_state_default_home(home, sizeof(home), &err) < 0) {
			fprintf(stderr, "msb-supervisor: %s\n", err.msg);
			return 1;
		}
		return msb_supervise(home, argv[2], atoi(argv[3]), MSB_BUILD_ROOT);
	}
	fprintf(stderr, "msb-supervisor: internal to msb (expected: serve NAME FD [VFD] | run NAME "
			"[VFD])\n");
	return 2;
}
