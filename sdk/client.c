/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SDK's sandbox calls (msb.h, "sandboxes"): each runs the msb program.
 * The spec travels as JSON in a memfd on msb's stdin (`msb create --spec
 * -`), the values given directly in a second memfd (`--secret-values-fd
 * 3`); msb's stdout and stderr come back through memfds too, so nothing can
 * fill a pipe and block either side.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msb/msb.h>

#include "spec.h"

#define OUT_MAX 4096 /* what is kept of msb's stdout and stderr */

static int program(char *buf, size_t len, struct msb_error *err)
{
	const char *p = getenv("MSB_PROGRAM");
	if (p && *p)
		snprintf(buf, len, "%s", p);
	else
		snprintf(buf, len, "%s/msb", MSB_BIN_DIR);
	if (access(buf, X_OK) < 0)
		return msb_error_set(err, -errno,
				     "the msb program '%s': %s (expected msb installed, or "
				     "MSB_PROGRAM naming it)",
				     buf, strerror(errno));
	return 0;
}

static int memfd_text(const char *name, const char *text, size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, text + off, len - off);
		if (w < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
		off += (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* The first OUT_MAX - 1 bytes of a memfd, NUL-terminated. */
static void memfd_read(int fd, char *buf)
{
	buf[0] = '\0';
	if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return;
	ssize_t n = read(fd, buf, OUT_MAX - 1);
	buf[n > 0 ? n : 0] = '\0';
}

/*
 * Run msb with argv.  fds[0..2] become its stdin, stdout, stderr (-1:
 * /dev/null), fds[3] its fd 3 (-1: none).  Returns its exit status (128+N
 * for a signal), or a negative errno with err filled.
 */
static int run_msb(char *const argv[], const int fds[4], struct msb_error *err)
{
	char prog[PATH_MAX];
	if (program(prog, sizeof(prog), err) < 0)
		return err ? err->code : -ENOENT;
	pid_t pid = fork();
	if (pid < 0)
		return msb_error_set(err, -errno, "fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		/* Above 3 first, so no dup2 below overwrites a source still needed. */
		int src[4];
		for (int i = 0; i < 4; i++)
			src[i] = fds[i] >= 0 ? fcntl(fds[i], F_DUPFD_CLOEXEC, 10) : -1;
		for (int i = 0; i < 3; i++)
			if (dup2(src[i] >= 0 ? src[i] : null, i) < 0)
				_exit(127);
		if (src[3] >= 0) {
			if (dup2(src[3], 3) < 0)
				_exit(127);
		} else {
			close(3);
		}
		execv(prog, argv);
		dprintf(2, "msb: cannot run '%s': %s\n", prog, strerror(errno));
		_exit(127);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return msb_error_set(err, -errno, "waitpid: %s", strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Run msb capturing stdout (into out, if given) and stderr (into err on failure). */
static int run_captured(char *const argv[], int in_fd, int fd3, char *out, struct msb_error *err)
{
	int o = memfd_create("msb-stdout", MFD_CLOEXEC),
	    e = memfd_create("msb-stderr", MFD_CLOEXEC);
	if (o < 0 || e < 0) {
		int r = -errno;
		if (o >= 0)
			close(o);
		if (e >= 0)
			close(e);
		return msb_error_set(err, r, "memfd_create: %s", strerror(-r));
	}
	int fds[4] = {in_fd, o, e, fd3};
	int st = run_msb(argv, fds, err);
	if (st > 0) {
		char msg[OUT_MAX];
		memfd_read(e, msg);
		char *line = msg;
		/* msb's last line is its error; without its "msb: " prefix. */
		size_t len = strlen(line);
		while (len && line[len - 1] == '\n')
			line[--len] = '\0';
		char *nl = strrchr(line, '\n');
		if (nl)
			line = nl + 1;
		if (!strncmp(line, "msb: ", 5))
			line += 5;
		msb_error_set(err, st == 2 ? -EINVAL : -EIO, "%s",
			      *line ? line : "msb failed without a message");
		st = err ? err->code : -EIO;
	} else if (st == 0 && out) {
		memfd_read(o, out);
	}
	close(o);
	close(e);
	return st;
}

int msb_create(struct msb_spec *spec, char **name, struct msb_error *err)
{
	if (name)
		*name = NULL;
	if (!spec)
		return msb_error_set(err, -EINVAL, "no spec");
	int r = msb_spec_validate(spec, err);
	if (r < 0)
		return r;
	char *json = msb_spec_to_json(spec, 0);
	if (!json)
		return msb_error_set(err, -ENOMEM, "out of memory");
	int in = memfd_text("msb-spec", json, strlen(json));
	msb_free(json);
	if (in < 0)
		return msb_error_set(err, in, "memfd: %s", strerror(-in));
	/* The values given directly: on fd 3, never in argv or the environment. */
	int vfd = msb_spec_values_memfd(spec, 0, err);
	if (vfd < 0 && vfd != -ENOENT) {
		close(in);
		return vfd;
	}
	char *argv[] = {"msb", "create", "--spec", "-", vfd >= 0 ? "--secret-values-fd" : NULL,
			"3",   NULL};
	char out[OUT_MAX];
	r = run_captured(argv, in, vfd, out, err);
	close(in);
	if (vfd >= 0)
		close(vfd);
	if (r < 0)
		return r;
	out[strcspn(out, "\n")] = '\0';
	if (!*out)
		return msb_error_set(err, -EIO, "msb create printed no sandbox name");
	if (name && !(*name = strdup(out)))
		return msb_error_set(err, -ENOMEM, "out of memory");
	return 0;
}

int msb_exec(const char *name, const char *const argv[], int stdin_fd, int stdout_fd, int stderr_fd,
	     int *status, struct msb_error *err)
{
	if (!name || !argv || !argv[0] || !status)
		return msb_error_set(err, -EINVAL,
				     "msb_exec: expected a name, a command and a status");
	size_t n = 0;
	while (argv[n])
		n++;
	if (n > 4096)
		return msb_error_set(err, -E2BIG, "msb_exec: more than 4096 arguments");
	char **av = calloc(n + 5, sizeof(char *));
	if (!av)
		return msb_error_set(err, -ENOMEM, "out of memory");
	av[0] = "msb";
	av[1] = "exec";
	av[2] = (char *)name;
	av[3] = "--";
	for (size_t i = 0; i < n; i++)
		av[4 + i] = (char *)argv[i];
	int fds[4] = {stdin_fd, stdout_fd, stderr_fd, -1};
	int st = run_msb(av, fds, err);
	free(av);
	if (st < 0)
		return st;
	*status = st;
	return 0;
}

int msb_stop(const char *name, struct msb_error *err)
{
	if (!name)
		return msb_error_set(err, -EINVAL, "msb_stop: no name");
	char *argv[] = {"msb", "stop", (char *)name, NULL};
	int r = run_captured(argv, -1, -1, NULL, err);
	return r < 0 ? r : 0;
}

int msb_rm(const char *name, int force, struct msb_error *err)
{
	if (!name)
		return msb_error_set(err, -EINVAL, "msb_rm: no name");
	char *argv[] = {"msb", "rm", force ? "-f" : (char *)name, force ? (char *)name : NULL,
			NULL};
	int r = run_captured(argv, -1, -1, NULL, err);
	return r < 0 ? r : 0;
}
