/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One command in a guest, attached to this terminal: our stdin goes to it
 * (when stdin is not a terminal), its stdout and stderr come back separately,
 * SIGINT/SIGTERM/SIGHUP are forwarded to it, and its exit status becomes
 * ours (128+N when a signal ended it).
 */
#include "session.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <msb/msb.h>

struct attach {
	int out_closed[3];
};

static void on_output(void *opaque, uint32_t session, void *data, int stream, const uint8_t *buf,
		      size_t len)
{
	(void)session;
	(void)opaque;
	struct attach *a = data;
	int fd = stream == MSB_AGENT_CLIENT_STDERR ? 2 : 1;
	while (len && !a->out_closed[fd]) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			a->out_closed[fd] = 1; /* a closed pipe: keep draining, drop output */
			break;
		}
		buf += n;
		len -= (size_t)n;
	}
}

const struct msb_agent_client_ops cli_session_ops = {
	.output = on_output,
};

int cli_session_run(struct msb_agent_client *c, const struct msb_agent_exec *req, const char *what,
		    int vm_exit_fd, struct msb_error *err)
{
	struct attach a = {{0}};
	struct msb_agent_exec r = *req;
	int forward_stdin = !isatty(0);
	if (forward_stdin)
		r.flags |= MSB_AGENT_EXEC_STDIN;
	uint32_t session;
	int rc = msb_agent_client_exec(c, &r, 0, &a, &session, err);
	if (rc < 0)
		return msb_error_prefix(err, "%s: ", what), -1;

	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);

	struct msb_agent_status st;
	int stdin_open = forward_stdin, vm_ended = 0;
	for (;;) {
		int ended = msb_agent_client_ended(c, session, &st);
		if (ended == 1)
			break;
		if (ended < 0) {
			msb_error_set(err, ended, "%s: the session vanished", what);
			return -1;
		}
		struct pollfd extra[3];
		size_t n = 0;
		int in_idx = -1, sig_idx = -1, vm_idx = -1;
		if (vm_exit_fd >= 0) {
			vm_idx = (int)n;
			extra[n++] = (struct pollfd){.fd = vm_exit_fd, .events = POLLIN};
		}
		if (stdin_open && msb_agent_client_stdin_room(c, session) > 0) {
			in_idx = (int)n;
			extra[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
		}
		if (sfd >= 0) {
			sig_idx = (int)n;
			extra[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		}
		rc = msb_agent_client_pump(c, -1, extra, n, err);
		if (rc < 0)
			return msb_error_prefix(err, "%s: ", what), -1;
		if (vm_idx >= 0 && extra[vm_idx].revents) {
			/* The guest powered off, rebooted or died under the command. */
			msb_error_set(err, -ECHILD, "%s: the VM ended before the command did",
				      what);
			vm_ended = 1;
			break;
		}
		if (in_idx >= 0 && extra[in_idx].revents) {
			char buf[65536];
			size_t room = msb_agent_client_stdin_room(c, session);
			ssize_t got = read(0, buf, room < sizeof(buf) ? room : sizeof(buf));
			if (got > 0) {
				if (msb_agent_client_write_stdin(c, session, buf, (size_t)got,
								 err) != got)
					return msb_error_prefix(err, "%s: stdin: ", what), -1;
			} else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
				msb_agent_client_close_stdin(c, session, NULL);
				stdin_open = 0;
			}
		}
		if (sig_idx >= 0 && (extra[sig_idx].revents & POLLIN)) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				msb_agent_client_signal(c, session, (int)si.ssi_signo, NULL);
		}
	}
	msb_agent_client_release(c, session);
	if (sfd >= 0)
		close(sfd);
	sigprocmask(SIG_UNBLOCK, &sigs, NULL);
	if (vm_ended)
		return -1;
	if (st.failed) {
		msb_error_set(err, -st.errnum, "%s: cannot run %s: %s", what, req->argv[0],
			      st.message[0] ? st.message : strerror(st.errnum));
		/* As a shell would: not found 127, not executable 126. */
		return st.errnum == ENOENT ? 127 : 126;
	}
	return st.signal ? 128 + st.signal : st.exit_code;
}
