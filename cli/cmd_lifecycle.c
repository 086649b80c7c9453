/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named sandboxes: create (through sandbox_create from cmd_sandbox.c), exec,
 * ls, stop, start, rm, logs.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "error.h"
#include "host.h"
#include "registry.h"
#include "lifecycle.h"
#include "sandbox.h"
#include "session.h"
#include "spec.h"
#include "state.h"
#include "supervisor.h"
#include "volume.h"

#define EXIT_RUN_FAILED 125

static void open_state(struct msb_state *st, const char *what)
{
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_state_open(NULL, st, &err) < 0)
		die(1, "%s: %s", what, err.msg);
}

static void check_name(const char *cmd, const char *name)
{
	if (!msb_name_valid(name))
		die(EXIT_USAGE,
		    "%s: invalid sandbox name '%.60s' (expected [A-Za-z0-9][A-Za-z0-9_.-]*)", cmd,
		    name);
}

/*
 * Start the supervisor of `name`, detached (its own session, double fork so
 * it is nobody's zombie), and wait for it to say the agent answered.
 * Returns 0, or -1 with the supervisor's error in err.
 */
int cli_private_file(const char *name, int mode, char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(buf, len, "%s/%s", self, name);
			if (access(buf, mode) == 0)
				return 0;
		}
	}
	snprintf(buf, len, "%s/%s", MSB_LIBEXEC_DIR, name);
	return access(buf, mode) == 0 ? 0 : -errno;
}

int cli_supervisor_path(char *buf, size_t len, struct msb_error *err)
{
	int r = cli_private_file("msb-supervisor", X_OK, buf, len);
	if (r < 0)
		return msb_error_errno(err, r, "the monitor program '%s' (is msb installed whole?)",
				       buf);
	return 0;
}

int cli_spawn_supervisor(const struct msb_state *st, const char *name, int values_fd,
			 struct msb_error *err)
{
	char sup[PATH_MAX];
	if (cli_supervisor_path(sup, sizeof(sup), err) < 0)
		return -1;
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return msb_error_set(err, -errno, "pipe: %s", strerror(errno)), -1;
	char log[PATH_MAX];
	snprintf(log, sizeof(log), "%s/sandboxes/%s/%s", st->home, name, MSB_SUPERVISOR_LOG);
	pid_t pid = fork();
	if (pid < 0)
		return msb_error_set(err, -errno, "fork: %s", strerror(errno)), -1;
	if (pid == 0) {
		close(pfd[0]);
		setsid();
		if (fork() != 0)
			_exit(0);
		int null = open("/dev/null", O_RDWR);
		int lf = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (null >= 0)
			dup2(null, 0);
		if (lf >= 0) {
			dup2(lf, 1);
			dup2(lf, 2);
		}
		int w = fcntl(pfd[1], F_DUPFD, 3); /* without CLOEXEC: the supervisor writes it */
		char fdstr[16], vstr[16];
		snprintf(fdstr, sizeof(fdstr), "%d", w);
		/* The values' memfd, inherited once: the supervisor reads and closes it. */
		int v = values_fd >= 0 ? fcntl(values_fd, F_DUPFD, 3) : -1;
		snprintf(vstr, sizeof(vstr), "%d", v);
		setenv("MSB_HOME", st->home, 1);
		char *argv[] = {"msb-supervisor",     "serve", (char *)name, fdstr,
				v >= 0 ? vstr : NULL, NULL};
		execv(sup, argv);
		dprintf(w, "cannot start the supervisor: %s\n", strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	waitpid(pid, NULL, 0);
	char buf[MSB_ERROR_MSG_MAX];
	size_t n = 0;
	ssize_t got;
	while (n < sizeof(buf) - 1 && (got = read(pfd[0], buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)got;
	close(pfd[0]);
	buf[n] = '\0';
	if (strcmp(buf, "ok\n") == 0)
		return 0;
	buf[strcspn(buf, "\n")] = '\0';
	msb_error_set(err, -EIO, "%s",
		      n ? buf : "the supervisor died while booting (see msb logs)");
	return -1;
}

/* Parse "-e/-w/-u" and "--" for exec. */
int cmd_exec(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	const char *name = NULL, *user = "", *cwd = "";
	const char *env[256];
	size_t nenv = 0;
	int i = 0;
	for (; i < argc && strcmp(argv[i], "--"); i++) {
		const char *a = argv[i];
		if ((!strcmp(a, "-e") || !strcmp(a, "--env")) && i + 1 < argc) {
			if (!strchr(argv[i + 1], '=') || nenv >= 255)
				die(EXIT_USAGE, "exec: --env '%s': expected KEY=VALUE",
				    argv[i + 1]);
			env[nenv++] = argv[++i];
		} else if ((!strcmp(a, "-w") || !strcmp(a, "--workdir")) && i + 1 < argc) {
			cwd = argv[++i];
			if (cwd[0] != '/')
				die(EXIT_USAGE, "exec: --workdir '%s' is not absolute", cwd);
		} else if ((!strcmp(a, "-u") || !strcmp(a, "--user")) && i + 1 < argc) {
			user = argv[++i];
		} else if (a[0] == '-') {
			die(EXIT_USAGE, "exec: unknown option '%s' (expected -e, -w, -u or --)", a);
		} else if (!name) {
			name = a;
		} else {
			die(EXIT_USAGE, "exec: unexpected argument '%s' (put the command after --)",
			    a);
		}
	}
	if (!name)
		die(EXIT_USAGE, "exec: no sandbox named (expected msb exec NAME -- COMMAND...)");
	check_name("exec", name);
	if (i >= argc || i + 1 >= argc)
		die(EXIT_USAGE, "exec: no command (expected msb exec NAME -- COMMAND...)");
	struct msb_state st;
	open_state(&st, "exec");
	struct msb_error err = MSB_ERROR_INIT;
	if (!msb_supervisor_pid(st.home, name))
		die(EXIT_RUN_FAILED, "exec: %s",
		    msb_state_sandbox_exists(&st, name)
			    ? "the sandbox is not running (msb start it)"
			    : "no such sandbox");
	int fd = msb_control_connect(st.home, name, &err);
	msb_state_close(&st);
	struct msb_agent_client *c = NULL;
	if (fd < 0 || msb_agent_client_new(fd, &cli_session_ops, NULL, &c, &err) < 0 ||
	    msb_agent_client_wait_hello(c, 10000, &err) < 0)
		die(EXIT_RUN_FAILED, "exec: %s", err.msg);
	struct msb_agent_exec req = {
		.user = user,
		.cwd = cwd,
		.argc = (uint32_t)(argc - i - 1),
		.argv = (const char **)(argv + i + 1),
		.envc = (uint32_t)nenv,
		.envp = env,
	};
	int status = cli_session_run(c, &req, "exec", -1, &err);
	if (status < 0 || err.msg[0])
		fprintf(stderr, "msb: %s\n", err.msg);
	msb_agent_client_free(c);
	return status < 0 ? EXIT_RUN_FAILED : status;
}

static const char *spec_source(struct msb_state *st, const char *name, char *buf, size_t len)
{
	char *json = NULL;
	size_t jl = 0;
	snprintf(buf, len, "?");
	if (msb_state_read(st, name, "spec.json", &json, &jl, NULL) < 0)
		return buf;
	json_t *root = json_loadb(json, jl, 0, NULL);
	free(json);
	const char *img = root ? json_string_value(json_object_get(root, "image")) : NULL;
	const char *rfs = root ? json_string_value(json_object_get(root, "rootfs")) : NULL;
	snprintf(buf, len, "%s", img ? img : rfs ? rfs : "?");
	json_decref(root);
	return buf;
}

/*
 * Is sandbox `name` running?  Its supervisor's pid, or the pid of the
 * `msb run` hosting it.  An ephemeral sandbox whose `msb run` died is reaped
 * here: nothing of it is left.
 */
static pid_t sandbox_running(struct msb_state *st, const char *name)
{
	pid_t pid = msb_sandbox_running_pid(st, name);
	if (pid)
		return pid;
	char *data = NULL;
	size_t len = 0;
	if (msb_state_read(st, name, "ephemeral", &data, &len, NULL) == 0) {
		free(data);
		msb_state_sandbox_remove(st, name, NULL);
		return -1; /* gone */
	}
	return 0;
}

int cmd_ls(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	int json = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else
			die(EXIT_USAGE, "ls: unexpected argument '%s' (expected --json)", argv[i]);
	}
	struct msb_state st;
	open_state(&st, "ls");
	struct msb_error err = MSB_ERROR_INIT;
	char **names = NULL;
	size_t n = 0;
	if (msb_state_list(&st, &names, &n, &err) < 0)
		die(1, "ls: %s", err.msg);
	json_t *arr = json_array();
	if (!json)
		printf("%-24s %-8s %-8s %s\n", "NAME", "STATUS", "PID", "ROOT");
	for (size_t i = 0; i < n; i++) {
		pid_t pid = sandbox_running(&st, names[i]);
		if (pid < 0) {
			free(names[i]);
			continue;
		}
		char src[PATH_MAX];
		spec_source(&st, names[i], src, sizeof(src));
		if (json)
			json_array_append_new(
				arr, json_pack("{s:s,s:s,s:o,s:s}", "name", names[i], "status",
					       pid ? "running" : "stopped", "pid",
					       pid ? json_integer(pid) : json_null(), "root", src));
		else {
			char pids[16] = "-";
			if (pid)
				snprintf(pids, sizeof(pids), "%ld", (long)pid);
			printf("%-24s %-8s %-8s %s\n", names[i], pid ? "running" : "stopped", pids,
			       src);
		}
		free(names[i]);
	}
	free(names);
	if (json) {
		char *s = json_dumps(arr, JSON_INDENT(2));
		puts(s ? s : "[]");
		free(s);
	}
	json_decref(arr);
	msb_state_close(&st);
	return 0;
}

static int wait_pid_gone(pid_t pid, int timeout_ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pfd >= 0) {
		struct pollfd p = {.fd = pfd, .events = POLLIN};
		int r = poll(&p, 1, timeout_ms);
		close(pfd);
		return r > 0 ? 0 : -ETIMEDOUT;
	}
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		if (kill(pid, 0) < 0)
			return 0;
		usleep(50000);
	}
	return -ETIMEDOUT;
}

/*
 * After a supervisor was killed: what its network left on the host (its
 * uplink link and its nft table; everything else went with its namespace)
 * is removed now, by every network module's reap, not by the next sandbox.
 */
static void reap_networks(void)
{
	struct msb_registry reg = {0};
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_config_load(&err) < 0 ||
	    msb_registry_default_path(&reg, MSB_BUILD_ROOT, &err) < 0 ||
	    msb_registry_scan(&reg, &err) < 0) {
		msb_registry_free(&reg);
		return;
	}
	for (size_t i = 0; i < reg.count; i++) {
		const struct msb_module *m = &reg.modules[i];
		struct msb_instance *in = NULL;
		if (!m->loaded || m->desc.kind != MSB_PLUGIN_NET ||
		    msb_instance_create(m, "reap", "", "{}", NULL, &in, &err) < 0)
			continue;
		m->ops.net.reap(&in->host, NULL);
		msb_instance_destroy(in);
	}
	msb_registry_free(&reg);
}

/* Stop a running sandbox: the agent syncs and powers off; kill after timeout. */
static int stop_one(struct msb_state *st, const char *name, int timeout_ms, struct msb_error *err)
{
	int died = 0;
	pid_t pid = msb_supervisor_pid_died(st->home, name, &died);
	if (!pid) {
		if (died) /* it crashed or was killed: its network's host side is ours to reap */
			reap_networks();
		return 0;
	}
	int fd = msb_control_connect(st->home, name, err);
	struct msb_agent_client *c = NULL;
	if (fd >= 0 && msb_agent_client_new(fd, NULL, NULL, &c, err) == 0 &&
	    msb_agent_client_wait_hello(c, 5000, err) == 0)
		msb_agent_client_shutdown(c, MSB_AGENT_POWEROFF, timeout_ms, err);
	if (c)
		msb_agent_client_free(c);
	if (wait_pid_gone(pid, timeout_ms) < 0) {
		/* The supervisor holds the VM: killing it ends the VM too. */
		kill(pid, SIGKILL);
		wait_pid_gone(pid, 5000);
		reap_networks();
	}
	msb_supervisor_pid(st->home, name); /* reaps the pid file and socket */
	msb_error_clear(err);
	return 0;
}

static int parse_timeout(const char *cmd, int *argc, char **argv)
{
	int timeout = 10000;
	int out = 0;
	for (int i = 0; i < *argc; i++) {
		if (!strcmp(argv[i], "--timeout") || !strcmp(argv[i], "-t")) {
			uint64_t ms;
			struct msb_error err = MSB_ERROR_INIT;
			if (i + 1 >= *argc)
				die(EXIT_USAGE, "%s: --timeout needs a duration (e.g. 10s)", cmd);
			if (msb_parse_duration(argv[++i], &ms, &err) < 0 || ms > 3600000)
				die(EXIT_USAGE, "%s: --timeout: %s", cmd,
				    err.msg[0] ? err.msg : "at most 1h");
			timeout = (int)ms;
		} else {
			argv[out++] = argv[i];
		}
	}
	*argc = out;
	return timeout;
}

int cmd_stop(const struct cli_command *cmd, int argc, char **argv)
{
	int timeout = parse_timeout(cmd->name, &argc, argv);
	if (argc < 1)
		die(EXIT_USAGE, "stop: no sandbox named (expected msb stop NAME...)");
	struct msb_state st;
	open_state(&st, "stop");
	int rc = 0;
	for (int i = 0; i < argc; i++) {
		check_name("stop", argv[i]);
		struct msb_error err = MSB_ERROR_INIT;
		if (!msb_state_sandbox_exists(&st, argv[i])) {
			fprintf(stderr, "msb: stop: no sandbox named '%s'\n", argv[i]);
			rc = 1;
			continue;
		}
		stop_one(&st, argv[i], timeout, &err);
	}
	msb_state_close(&st);
	return rc;
}

int cmd_start(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	if (argc != 1)
		die(EXIT_USAGE, "start: expected one sandbox name");
	check_name("start", argv[0]);
	struct msb_state st;
	open_state(&st, "start");
	if (!msb_state_sandbox_exists(&st, argv[0]))
		die(1, "start: no sandbox named '%s'", argv[0]);
	if (msb_supervisor_pid(st.home, argv[0]))
		die(1, "start: sandbox '%s' is already running", argv[0]);
	struct msb_error err = MSB_ERROR_INIT;
	char *json = NULL;
	size_t jl = 0;
	struct msb_spec *spec = NULL;
	/* Best effort: a spec that no longer loads is the supervisor's to report. */
	if (msb_state_read(&st, argv[0], "spec.json", &json, &jl, NULL) == 0 &&
	    msb_spec_from_json(json, jl, &spec, NULL) == 0 &&
	    msb_volumes_resolve(st.home, spec, NULL) == 0)
		msb_volumes_shared_check(&st, argv[0], spec, cli_warn_line, NULL);
	free(json);
	msb_spec_free(spec);
	if (cli_spawn_supervisor(&st, argv[0], -1, &err) < 0)
		die(1, "start: %s", err.msg);
	msb_state_close(&st);
	return 0;
}

int cmd_rm(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	int force = 0, rc = 0;
	struct msb_state st;
	open_state(&st, "rm");
	int named = 0;
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--force"))
			force = 1;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--force"))
			continue;
		named++;
		check_name("rm", argv[i]);
		struct msb_error err = MSB_ERROR_INIT;
		if (!msb_state_sandbox_exists(&st, argv[i])) {
			fprintf(stderr, "msb: rm: no sandbox named '%s'\n", argv[i]);
			rc = 1;
			continue;
		}
		int died = 0;
		pid_t pid = msb_supervisor_pid_died(st.home, argv[i], &died);
		if (died)
			reap_networks(); /* what a supervisor that crashed left */
		if (pid && !force) {
			fprintf(stderr, "msb: rm: sandbox '%s' is running (stop it, or rm -f)\n",
				argv[i]);
			rc = 1;
			continue;
		}
		/* -f: an orderly stop first (the supervisor tears its network down),
		 * then a kill after 5 s, whose leftovers are reaped. */
		if (pid)
			stop_one(&st, argv[i], 5000, &err);
		if (msb_state_sandbox_remove(&st, argv[i], &err) < 0) {
			fprintf(stderr, "msb: rm: %s\n", err.msg);
			rc = 1;
		}
	}
	if (!named)
		die(EXIT_USAGE, "rm: no sandbox named (expected msb rm [-f] NAME...)");
	msb_state_close(&st);
	return rc;
}

int cmd_logs(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	if (argc != 1)
		die(EXIT_USAGE, "logs: expected one sandbox name");
	check_name("logs", argv[0]);
	struct msb_state st;
	open_state(&st, "logs");
	if (!msb_state_sandbox_exists(&st, argv[0]))
		die(1, "logs: no sandbox named '%s'", argv[0]);
	static const char *const files[] = {"console.log", MSB_SUPERVISOR_LOG};
	for (size_t f = 0; f < 2; f++) {
		char *data = NULL;
		size_t len = 0;
		if (msb_state_read(&st, argv[0], files[f], &data, &len, NULL) < 0)
			continue;
		printf("==> %s <==\n", files[f]);
		fwrite(data, 1, len, stdout);
		if (len && data[len - 1] != '\n')
			putchar('\n');
		free(data);
	}
	msb_state_close(&st);
	return 0;
}
