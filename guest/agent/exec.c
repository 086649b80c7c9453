/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Spawning a session's process: pipes or a pty, the user's identity, the
 * working directory and the environment, then execvp.
 *
 * A failure in the child after fork (chdir, setuid, execve) is reported back
 * through a close-on-exec pipe as {errno, step}: a successful execve closes
 * the pipe (EOF), a failure writes to it.  So "command not found" is an
 * ERROR frame with ENOENT, not a process that exits 127.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

extern char **environ;

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* The steps a child can fail at, named in the ERROR message. */
enum step {
	STEP_SETSID,
	STEP_TTY,
	STEP_STDIO,
	STEP_SETGROUPS,
	STEP_SETGID,
	STEP_SETUID,
	STEP_CHDIR,
	STEP_EXEC,
};

struct child_report {
	int err;
	int step;
};

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/* dup2 that also works when from == to (then dup2 would keep O_CLOEXEC). */
static int move_fd(int from, int to)
{
	if (from == to)
		return fcntl(to, F_SETFD, 0);
	return dup2(from, to) < 0 ? -1 : 0;
}

__attribute__((noreturn)) static void child_fail(int report_fd, enum step step)
{
	struct child_report rep = {.err = errno ? errno : EIO, .step = step};
	ssize_t n;
	do {
		n = write(report_fd, &rep, sizeof(rep));
	} while (n < 0 && errno == EINTR);
	_exit(127);
}

/* Does envp already hold NAME=...? */
static int env_has(const char **envp, uint32_t envc, const char *name)
{
	size_t n = strlen(name);
	for (uint32_t i = 0; i < envc; i++)
		if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
			return 1;
	return 0;
}

/*
 * The child, between fork and execve.  Runs in a copy of the agent: only
 * async-signal-safe calls from here on (the agent is single-threaded, so in
 * practice any call would do, but keep it honest).
 */
__attribute__((noreturn)) static void child(const struct msb_agent_exec *req,
					    const struct msb_guest_user *u, char **envp,
					    const char *pts, int in_fd, int out_fd, int err_fd,
					    int report_fd)
{
	/* The agent blocks SIGCHLD (for its signalfd) and ignores SIGPIPE;
	 * a blocked mask and ignored signals survive execve. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);

	/* Its own session and process group: SIGNAL frames go to the group,
	 * and a pty becomes its controlling terminal. */
	if (setsid() < 0)
		child_fail(report_fd, STEP_SETSID);

	if (pts) {
		int tty = open(pts, O_RDWR);
		if (tty < 0 || ioctl(tty, TIOCSCTTY, 0) < 0)
			child_fail(report_fd, STEP_TTY);
		in_fd = out_fd = err_fd = tty;
	} else if (in_fd < 0) {
		in_fd = open("/dev/null", O_RDONLY);
		if (in_fd < 0)
			child_fail(report_fd, STEP_STDIO);
	}
	if (move_fd(in_fd, 0) < 0 || move_fd(out_fd, 1) < 0 || move_fd(err_fd, 2) < 0)
		child_fail(report_fd, STEP_STDIO);
	/* Nothing else of the agent's leaks into the workload (fds the agent
	 * inherited in test mode included); the report pipe stays open until
	 * execve. */
	if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) < 0)
		for (int fd = 3; fd < 1024; fd++)
			if (fd != report_fd)
				fcntl(fd, F_SETFD, FD_CLOEXEC);

	/* Groups and gid before uid: after setuid they can no longer be set. */
	if (getuid() == 0 || u->uid != geteuid() || u->gid != getegid()) {
		if (setgroups(u->ngroups, u->groups) < 0)
			child_fail(report_fd, STEP_SETGROUPS);
		if (setgid(u->gid) < 0)
			child_fail(report_fd, STEP_SETGID);
		if (setuid(u->uid) < 0)
			child_fail(report_fd, STEP_SETUID);
	}

	/* After setuid, so the directory is checked with the user's rights. */
	if (req->cwd[0]) {
		if (chdir(req->cwd) < 0)
			child_fail(report_fd, STEP_CHDIR);
	} else if (!u->home[0] || chdir(u->home) < 0) {
		if (chdir("/") < 0)
			child_fail(report_fd, STEP_CHDIR);
	}

	/* execvp searches the PATH of environ: the session's own. */
	environ = envp;
	execvp(req->argv[0], (char *const *)req->argv);
	child_fail(report_fd, STEP_EXEC);
}

static void describe(char *msg, size_t len, const struct msb_agent_exec *req, int step, int err)
{
	const char *what;
	switch (step) {
	case STEP_SETSID:
		what = "setsid";
		break;
	case STEP_TTY:
		what = "opening the terminal";
		break;
	case STEP_STDIO:
		what = "setting up stdio";
		break;
	case STEP_SETGROUPS:
		what = "setgroups";
		break;
	case STEP_SETGID:
		what = "setgid";
		break;
	case STEP_SETUID:
		what = "setuid";
		break;
	case STEP_CHDIR:
		snprintf(msg, len, "chdir %.200s: %s", req->cwd[0] ? req->cwd : "/", strerror(err));
		return;
	case STEP_EXEC:
		snprintf(msg, len, "exec %.200s: %s", req->argv[0], strerror(err));
		return;
	default:
		what = "starting the process";
		break;
	}
	snprintf(msg, len, "%s: %s", what, strerror(err));
}

/* Open a pty master; its slave's path in pts. */
static int open_pty(const struct msb_agent_exec *req, char *pts, size_t pts_len)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return -errno;
	if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, pts, pts_len) != 0) {
		int e = errno;
		close(m);
		return -e;
	}
	if (req->rows && req->cols) {
		struct winsize ws = {.ws_row = req->rows, .ws_col = req->cols};
		ioctl(m, TIOCSWINSZ, &ws);
	}
	return m;
}

int msb_guest_spawn(const struct msb_agent_exec *req, const struct msb_guest_user *u,
		    struct msb_guest_child *out, char *msg, size_t msg_len)
{
	int in[2] = {-1, -1}, o[2] = {-1, -1}, e[2] = {-1, -1}, rep[2] = {-1, -1};
	int master = -1, ret;
	char pts[64], home_env[MSB_GUEST_HOME_MAX + 8];
	int tty = !!(req->flags & MSB_AGENT_EXEC_TTY);

	/* The environment: exactly as given, plus defaults for what is missing. */
	static const char *envp[MSB_AGENT_ENV_MAX + 4];
	size_t n = 0;
	for (uint32_t i = 0; i < req->envc; i++)
		envp[n++] = req->envp[i];
	if (!env_has(req->envp, req->envc, "PATH"))
		envp[n++] = "PATH=" DEFAULT_PATH;
	if (!env_has(req->envp, req->envc, "HOME")) {
		snprintf(home_env, sizeof(home_env), "HOME=%s", u->home[0] ? u->home : "/");
		envp[n++] = home_env;
	}
	if (!env_has(req->envp, req->envc, "TERM"))
		envp[n++] = tty ? "TERM=xterm" : "TERM=dumb";
	envp[n] = NULL;

	if (tty) {
		master = open_pty(req, pts, sizeof(pts));
		if (master < 0) {
			snprintf(msg, msg_len, "allocating a pty: %s", strerror(-master));
			return master;
		}
	} else if (((req->flags & MSB_AGENT_EXEC_STDIN) && pipe2(in, O_CLOEXEC) < 0) ||
		   pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0) {
		ret = -errno;
		snprintf(msg, msg_len, "creating pipes: %s", strerror(errno));
		goto fail;
	}
	if (pipe2(rep, O_CLOEXEC) < 0) {
		ret = -errno;
		snprintf(msg, msg_len, "creating a pipe: %s", strerror(errno));
		goto fail;
	}

	pid_t pid = fork();
	if (pid < 0) {
		ret = -errno;
		snprintf(msg, msg_len, "fork: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0) {
		close(rep[0]);
		child(req, u, (char **)envp, tty ? pts : NULL, in[0], o[1], e[1], rep[1]);
	}

	/* The parent: wait for execve (EOF) or the child's report. */
	close_fd(&rep[1]);
	close_fd(&in[0]);
	close_fd(&o[1]);
	close_fd(&e[1]);
	struct child_report r;
	ssize_t got;
	do {
		got = read(rep[0], &r, sizeof(r));
	} while (got < 0 && errno == EINTR);
	close_fd(&rep[0]);
	if (got != 0) {
		/* It exits at once; reap it here so it is never taken for an orphan
		 * or a session. */
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		if (got != (ssize_t)sizeof(r) || r.err <= 0 || r.err > 4095)
			r = (struct child_report){.err = EIO, .step = -1};
		ret = -r.err;
		describe(msg, msg_len, req, r.step, r.err);
		goto fail;
	}

	out->pid = pid;
	if (tty) {
		out->out_fd = master;
		out->in_fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
		out->err_fd = -1;
		set_nonblock(master);
		/* Without a second fd the host cannot write while output waits. */
		if (out->in_fd < 0)
			msb_guest_log("pty dup: %s", strerror(errno));
	} else {
		out->in_fd = in[1];
		out->out_fd = o[0];
		out->err_fd = e[0];
		if (in[1] >= 0)
			set_nonblock(in[1]);
		set_nonblock(o[0]);
		set_nonblock(e[0]);
	}
	return 0;

fail:
	close_fd(&master);
	close_fd(&in[0]);
	close_fd(&in[1]);
	close_fd(&o[0]);
	close_fd(&o[1]);
	close_fd(&e[0]);
	close_fd(&e[1]);
	close_fd(&rep[0]);
	close_fd(&rep[1]);
	return ret;
}
