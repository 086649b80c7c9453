/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host side of the agent protocol (docs/agent-protocol.md): a client
 * for one connection to the guest agent, multiplexing exec sessions.
 *
 * THE GUEST IS HOSTILE.  Every frame read from the agent goes through
 * msb_agent_header_decode and msb_agent_validate_from_guest, then through a
 * per-session state machine (HELLO first; STARTED or ERROR once; output only
 * while running and only within the window the client granted; EXIT last).
 * Any violation is -EPROTO for the whole connection: from then on every call
 * returns it, nothing more is read, and no callback runs.  Memory is bounded
 * whatever the guest sends: one receive buffer of one frame, a session
 * table of MSB_AGENT_SESSIONS_MAX entries, a send queue of
 * MSB_AGENT_CLIENT_SENDQ_MAX bytes.  Output is handed to callbacks straight
 * from the receive buffer, never accumulated.  Strings from the guest (its
 * version, ERROR messages) are cut to a bounded length and stripped of
 * control characters before anyone prints them.
 *
 * Use
 *   Single-threaded.  The client never blocks except in the functions whose
 *   name says they wait (wait_*, ping, shutdown, flush, write_stdin_all) and
 *   in msb_agent_client_pump, each bounded by its timeout.  Send functions
 *   only queue: data goes out as the fd accepts it, from any later call.
 *
 *   - blocking: create, wait_hello, exec, write_stdin_all / close_stdin,
 *     wait (output arrives through the callbacks while waiting);
 *   - event loop: register msb_agent_client_fd for
 *     msb_agent_client_poll_events, call msb_agent_client_handle with the
 *     revents, and re-read the events after each call (POLLOUT comes and
 *     goes with the send queue); or call msb_agent_client_pump, which polls
 *     the connection plus caller fds once.
 *
 *   Callbacks run from handle/pump/feed and the waiting functions.  They
 *   may call the send functions (exec, stdin, signal, resize, consumed,
 *   release), never pump, wait or free.
 *
 * Flow control
 *   The agent may send MSB_AGENT_WINDOW_INITIAL output bytes per session,
 *   plus what the client grants.  By default the client grants bytes back
 *   as soon as the output callback returns (the caller consumed them).  With
 *   MSB_AGENT_CLIENT_MANUAL_CREDIT the caller grants with
 *   msb_agent_client_consumed when it really consumed them (e.g. wrote them
 *   to a slow socket), which back-pressures the guest process.  Stdin is the
 *   reverse: msb_agent_client_write_stdin takes at most the credit the agent
 *   granted.
 *
 * Errors: negative errno plus struct msb_error (may be NULL), as everywhere
 * in msb.  -EPROTO: the agent broke the protocol.  -EPIPE: the agent closed
 * the connection.  -ETIMEDOUT: a wait ran out.  -EAGAIN: the send queue is
 * full (pump, then retry).
 */
#ifndef MSB_CORE_AGENT_CLIENT_H
#define MSB_CORE_AGENT_CLIENT_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <msb/msb-error.h>

#include "../guest/proto/agent-proto.h"

/* The send queue's bound (data beyond it is refused with -EAGAIN). */
#define MSB_AGENT_CLIENT_SENDQ_MAX (512 * 1024)
/* Kept of an ERROR message from the guest, NUL included. */
#define MSB_AGENT_CLIENT_MSG_MAX 256

/* Client-side session flags (msb_agent_client_exec's cflags). */
#define MSB_AGENT_CLIENT_MANUAL_CREDIT 0x1u

/* Output streams. */
#define MSB_AGENT_CLIENT_STDOUT 1
#define MSB_AGENT_CLIENT_STDERR 2

struct msb_agent_client;

/* How a session ended. */
struct msb_agent_status {
	/* Nonzero: the exec never started (ERROR frame); errnum is the guest's
	 * positive errno and message says why. */
	int failed;
	int errnum;
	char message[MSB_AGENT_CLIENT_MSG_MAX];
	/* Started and ended: exit code 0-255 and signal 0, or code -1 and the
	 * terminating signal. */
	int exit_code;
	int signal;
};

/* Callbacks; each may be NULL.  opaque is msb_agent_client_new's; data is
 * the one given to msb_agent_client_exec. */
struct msb_agent_client_ops {
	/* The process started; pid is the guest's (informational only). */
	void (*started)(void *opaque, uint32_t session, void *data, uint32_t pid);
	/* Output on stream MSB_AGENT_CLIENT_STDOUT/STDERR (a pty session's
	 * terminal is STDOUT); buf is valid during the call only. */
	void (*output)(void *opaque, uint32_t session, void *data, int stream, const uint8_t *buf,
		       size_t len);
	/* The session ended (after all its output).  The record stays until
	 * msb_agent_client_wait or msb_agent_client_release. */
	void (*ended)(void *opaque, uint32_t session, void *data,
		      const struct msb_agent_status *st);
};

/*
 * A client on fd, a connected stream to the agent (a virtio-console port's
 * host end, a socket).  The client owns fd (closed by msb_agent_client_free)
 * and makes it non-blocking.  fd -1 gives a client without transport: what
 * it sends is discarded and input comes only from msb_agent_client_feed (for
 * fuzzing and tests).  ops may be NULL.
 */
int msb_agent_client_new(int fd, const struct msb_agent_client_ops *ops, void *opaque,
			 struct msb_agent_client **out, struct msb_error *err);
void msb_agent_client_free(struct msb_agent_client *c);

/* Wait (up to timeout_ms; -1 forever) for the agent's HELLO.  -EPROTONOSUPPORT
 * if it speaks another protocol version. */
int msb_agent_client_wait_hello(struct msb_agent_client *c, int timeout_ms, struct msb_error *err);
/* The agent's version string from HELLO (sanitized), "" before it. */
const char *msb_agent_client_agent_version(const struct msb_agent_client *c);

/*
 * Start req (argv, env, cwd, user, MSB_AGENT_EXEC_TTY/STDIN flags, window
 * size) as a new session; *session gets its id (never 0).  Completion comes
 * as started + ... + ended, or ended with st->failed.  cflags:
 * MSB_AGENT_CLIENT_MANUAL_CREDIT.  data is passed to the callbacks.
 * -EINVAL/-EMSGSIZE for a request the protocol cannot carry, -EAGAIN when
 * MSB_AGENT_SESSIONS_MAX sessions are unreleased or the queue is full.
 */
int msb_agent_client_exec(struct msb_agent_client *c, const struct msb_agent_exec *req,
			  unsigned cflags, void *data, uint32_t *session, struct msb_error *err);

/*
 * Queue up to len bytes of stdin; returns how many were taken (0: no credit
 * or queue room now; pump and retry).  -EINVAL: the session was not started
 * with MSB_AGENT_EXEC_STDIN; -EPIPE: stdin was closed or the session ended;
 * -ENOENT: no such session.
 */
ssize_t msb_agent_client_write_stdin(struct msb_agent_client *c, uint32_t session, const void *buf,
				     size_t len, struct msb_error *err);
/* Blocking: queue all of buf, pumping as needed (timeout_ms for the whole). */
int msb_agent_client_write_stdin_all(struct msb_agent_client *c, uint32_t session, const void *buf,
				     size_t len, int timeout_ms, struct msb_error *err);
/* Send EOF on stdin (after everything queued before it). */
int msb_agent_client_close_stdin(struct msb_agent_client *c, uint32_t session,
				 struct msb_error *err);
/* Stdin bytes msb_agent_client_write_stdin would take now. */
size_t msb_agent_client_stdin_room(const struct msb_agent_client *c, uint32_t session);

/* Deliver signal sig (1..64) to the session's process group. */
int msb_agent_client_signal(struct msb_agent_client *c, uint32_t session, int sig,
			    struct msb_error *err);
/* Set a pty session's window size. */
int msb_agent_client_resize(struct msb_agent_client *c, uint32_t session, uint16_t rows,
			    uint16_t cols, struct msb_error *err);
/* MANUAL_CREDIT sessions: bytes of output the caller consumed, to grant back.
 * -EINVAL if more than was delivered and not yet consumed. */
int msb_agent_client_consumed(struct msb_agent_client *c, uint32_t session, size_t bytes,
			      struct msb_error *err);

/*
 * Wait up to timeout_ms for the session to end, copy its status to *st and
 * release it.  -ETIMEDOUT (the session lives on), -ENOENT.
 */
int msb_agent_client_wait(struct msb_agent_client *c, uint32_t session, struct msb_agent_status *st,
			  int timeout_ms, struct msb_error *err);
/* Has the session ended?  1 (and *st filled if st), 0, or -ENOENT. */
int msb_agent_client_ended(const struct msb_agent_client *c, uint32_t session,
			   struct msb_agent_status *st);
/*
 * Forget a session.  An ended one is freed; a live one is detached: its
 * output is discarded (and granted back) and it is freed when it ends.
 */
int msb_agent_client_release(struct msb_agent_client *c, uint32_t session);

/* Round trip a PING (blocking, timeout_ms). */
int msb_agent_client_ping(struct msb_agent_client *c, int timeout_ms, struct msb_error *err);
/*
 * Ask the agent to end every session, sync and power off (mode
 * MSB_AGENT_POWEROFF) or reboot; waits for SHUTDOWN_ACK (the disks are
 * synced, the VM may be torn down from then on).
 */
int msb_agent_client_shutdown(struct msb_agent_client *c, uint32_t mode, int timeout_ms,
			      struct msb_error *err);

/*
 * Ask the agent to mount virtio-fs share m->tag on m->path (blocking, up to
 * timeout_ms) and wait for its MOUNTED.  0, or -errno with the guest's
 * (sanitized) message in err when the agent could not; -ETIMEDOUT, -EPROTO
 * as usual.  One mount at a time; call in the order the mounts must happen.
 */
int msb_agent_client_mount(struct msb_agent_client *c, const struct msb_agent_mount *m,
			   int timeout_ms, struct msb_error *err);

/*
 * Install PEM certificates in the guest's trust stores (kind
 * MSB_AGENT_TRUST_CA or _ROOTS; at most MSB_AGENT_FRAME_MAX - 4 bytes a
 * call) and wait for the agent's answer.  0, or -errno with its message.
 */
int msb_agent_client_trust(struct msb_agent_client *c, uint32_t kind, const char *pem, size_t len,
			   int timeout_ms, struct msb_error *err);

/* ---- driving the connection ---------------------------------------------- */

int msb_agent_client_fd(const struct msb_agent_client *c);
/* POLLIN, plus POLLOUT while the send queue holds data. */
short msb_agent_client_poll_events(const struct msb_agent_client *c);
/* Act on revents for the fd: read and dispatch, write what is queued. */
int msb_agent_client_handle(struct msb_agent_client *c, short revents, struct msb_error *err);
/*
 * One poll iteration over the connection and the caller's fds (extra[0..n),
 * their revents filled for the caller to act on), waiting up to timeout_ms
 * (-1: forever).  Returns the number of ready caller fds, or an error.
 */
int msb_agent_client_pump(struct msb_agent_client *c, int timeout_ms, struct pollfd *extra,
			  size_t n_extra, struct msb_error *err);
/* Write the send queue out, waiting up to timeout_ms (pumping meanwhile). */
int msb_agent_client_flush(struct msb_agent_client *c, int timeout_ms, struct msb_error *err);
/*
 * Consume len bytes from the guest as if read from the connection: the same
 * checks and callbacks.  For tests and fuzzing (and any other transport).
 */
int msb_agent_client_feed(struct msb_agent_client *c, const void *buf, size_t len,
			  struct msb_error *err);

#endif
