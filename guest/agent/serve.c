/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The protocol loop: one poll() over the channel, a signalfd for SIGCHLD and
 * every session's pipes.  No threads.
 *
 * Memory is bounded whatever the host or the workload do:
 *  - one receive buffer of one frame; a frame is handled only when the
 *    queue towards the host has room for its reply, else the channel is not
 *    read (back-pressure on the host);
 *  - one queue towards the host (OUT_CAP); a child's pipe is read only when
 *    the session has credit (the host's WINDOW grants) and the queue is below
 *    OUT_DATA_LIMIT, else the pipe is not polled and the child blocks when
 *    its pipe fills;
 *  - per session at most MSB_AGENT_WINDOW_INITIAL bytes of stdin, the credit
 *    the host was granted; a STDIN frame beyond its credit is dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define RBUF_CAP (MSB_AGENT_HEADER_SIZE + MSB_AGENT_FRAME_MAX)
/* The queue towards the host: hard cap, and the level below which child
 * output is read and host frames (each needing at most a small reply) are
 * handled.  OUT_DATA_LIMIT + one full frame stays below OUT_CTRL_LIMIT. */
#define OUT_CAP	       (512 * 1024)
#define OUT_DATA_LIMIT (256 * 1024)
#define OUT_CTRL_LIMIT (OUT_CAP - 16 * 1024)
/* A session's stdin buffer: exactly the credit the host starts with. */
#define IN_CAP MSB_AGENT_WINDOW_INITIAL
/* Stdin credit is returned in batches, or when the buffer is empty. */
#define GRANT_BATCH (32 * 1024)
/* Credit beyond this is clamped: it only has to be "plenty", never overflow. */
#define CREDIT_MAX    (UINT64_C(1) << 40)
#define TERM_GRACE_MS 2000
#define KILL_GRACE_MS 1000
#define REOPEN_MS     1000
#define ERROR_MSG_MAX 1024

struct session {
	uint32_t id; /* 0: a free slot */
	uint32_t flags;
	pid_t pid; /* 0 once reaped: never signal a pid that may be reused */
	int reaped, wstatus;
	int in_fd, out_fd, err_fd;
	uint8_t *in_buf; /* [in_off, in_len) waits for the child */
	size_t in_off, in_len;
	int in_eof;    /* the host sent EOF */
	int in_eot;    /* pty: the EOF character is still to be written */
	int in_closed; /* the child's stdin is gone: discard, but keep granting */
	uint64_t in_credit, in_grant, out_credit;
};

static struct {
	const struct msb_guest_serve_opts *o;
	int fd, sigfd;
	uint8_t rbuf[RBUF_CAP];
	size_t rlen;
	uint8_t obuf[OUT_CAP]; /* [ostart, oend) waits for the channel */
	size_t ostart, oend;
	struct session s[MSB_AGENT_SESSIONS_MAX];
	size_t nsessions;
	uint32_t shutdown_mode;
	int shutdown_stage; /* 1: SIGTERM sent, 2: SIGKILL sent */
	uint64_t deadline;  /* of the shutdown stage, monotonic ms */
	uint64_t reopen_at; /* PID 1 lost its channel: reopen then (0: not lost) */
	/* Scratch for decoding one exec request. */
	char arena[MSB_AGENT_FRAME_MAX];
	const char *argv[MSB_AGENT_ARGS_MAX + 1];
	const char *envp[MSB_AGENT_ENV_MAX + 1];
} g;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* ---- the queue towards the host ------------------------------------------- */

static size_t out_used(void)
{
	return g.oend - g.ostart;
}

/* Make room for n more bytes at oend; 0 or -ENOBUFS. */
static int out_reserve(size_t n)
{
	if (out_used() + n > OUT_CAP)
		return -ENOBUFS;
	if (g.oend + n > OUT_CAP) {
		memmove(g.obuf, g.obuf + g.ostart, out_used());
		g.oend -= g.ostart;
		g.ostart = 0;
	}
	return 0;
}

static void out_frame(uint8_t type, uint32_t session, const void *payload, size_t len)
{
	if (g.fd < 0)
		return; /* no channel: nobody to tell */
	if (out_reserve(MSB_AGENT_HEADER_SIZE + len) < 0) {
		/* The callers check the level first; reaching this is a bug. */
		msb_guest_log("output queue full, frame type %u dropped", type);
		return;
	}
	msb_agent_header_encode(g.obuf + g.oend, type, session, (uint32_t)len);
	if (len)
		memcpy(g.obuf + g.oend + MSB_AGENT_HEADER_SIZE, payload, len);
	g.oend += MSB_AGENT_HEADER_SIZE + len;
}

static void send_error(uint32_t session, int err, const char *msg)
{
	uint8_t p[8 + ERROR_MSG_MAX];
	size_t n = strnlen(msg, ERROR_MSG_MAX);
	msb_agent_put_u32(p, (uint32_t)err);
	msb_agent_put_u32(p + 4, (uint32_t)n);
	memcpy(p + 8, msg, n);
	out_frame(MSB_AGENT_ERROR, session, p, 8 + n);
}

static void send_hello(void)
{
	static const char version[] = MSB_VERSION_STRING;
	uint8_t p[4 + 4 + 64];
	size_t n = strnlen(version, sizeof(version));
	if (n > 64)
		n = 64;
	msb_agent_put_u32(p, MSB_AGENT_PROTO_VERSION);
	msb_agent_put_u32(p + 4, (uint32_t)n);
	memcpy(p + 8, version, n);
	out_frame(MSB_AGENT_HELLO, 0, p, 8 + n);
}

static void send_u32(uint8_t type, uint32_t session, uint32_t v)
{
	uint8_t p[4];
	msb_agent_put_u32(p, v);
	out_frame(type, session, p, 4);
}

/* Lost the channel (write or read failure, hangup). */
static void channel_lost(const char *why);

/* Write what the channel takes without blocking. */
static void flush_out(void)
{
	while (g.fd >= 0 && out_used() > 0) {
		ssize_t n = write(g.fd, g.obuf + g.ostart, out_used());
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			channel_lost(n < 0 ? strerror(errno) : "short write");
			break;
		}
		g.ostart += (size_t)n;
	}
	if (out_used() == 0)
		g.ostart = g.oend = 0;
}

/* Write everything queued, waiting up to timeout_ms (before power-off). */
static void flush_blocking(int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	while (g.fd >= 0 && out_used() > 0) {
		flush_out();
		uint64_t now = now_ms();
		if (out_used() == 0 || now >= end || g.fd < 0)
			break;
		struct pollfd p = {.fd = g.fd, .events = POLLOUT};
		poll(&p, 1, (int)(end - now));
	}
}

/* ---- sessions --------------------------------------------------------------- */

static struct session *session_find(uint32_t id)
{
	if (id == 0)
		return NULL;
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++)
		if (g.s[i].id == id)
			return &g.s[i];
	return NULL;
}

static void session_signal(struct session *s, int sig)
{
	/* Only an unreaped child: its pid (and group) cannot have been reused. */
	if (s->pid > 0 && !s->reaped && kill(-s->pid, sig) < 0)
		kill(s->pid, sig);
}

static void session_free(struct session *s)
{
	close_fd(&s->in_fd);
	close_fd(&s->out_fd);
	close_fd(&s->err_fd);
	free(s->in_buf);
	memset(s, 0, sizeof(*s));
	s->in_fd = s->out_fd = s->err_fd = -1;
	g.nsessions--;
}

/* Forget every session (their children are killed; reaped later as orphans). */
static void drop_all_sessions(void)
{
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++) {
		if (!g.s[i].id)
			continue;
		session_signal(&g.s[i], SIGKILL);
		session_free(&g.s[i]);
	}
}

static void signal_all(int sig)
{
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++)
		if (g.s[i].id)
			session_signal(&g.s[i], sig);
	/* As PID 1, every process (orphans too) but ourselves.  Guarded twice:
	 * kill(-1) outside a VM would hit everything the user owns. */
	if (g.o->pid1 && getpid() == 1)
		kill(-1, sig);
}

static void reap(void)
{
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);
		if (p <= 0)
			break;
		for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++) {
			struct session *s = &g.s[i];
			if (s->id && !s->reaped && s->pid == p) {
				s->reaped = 1;
				s->wstatus = st;
				s->pid = 0;
				break;
			}
		}
		/* No session: an orphan re-parented to us (PID 1, or the
		 * subreaper in test mode).  Reaping it is all there is to do. */
	}
}

/* Read one chunk of a child's output into a STDOUT/STDERR frame. */
static void read_output(struct session *s, int *fd, uint8_t type)
{
	size_t chunk = MSB_AGENT_FRAME_MAX;
	if (chunk > s->out_credit)
		chunk = (size_t)s->out_credit;
	if (chunk == 0 || out_used() >= OUT_DATA_LIMIT ||
	    out_reserve(MSB_AGENT_HEADER_SIZE + chunk) < 0)
		return;
	ssize_t n = read(*fd, g.obuf + g.oend + MSB_AGENT_HEADER_SIZE, chunk);
	if (n > 0) {
		msb_agent_header_encode(g.obuf + g.oend, type, s->id, (uint32_t)n);
		g.oend += MSB_AGENT_HEADER_SIZE + (size_t)n;
		s->out_credit -= (uint64_t)n;
		return;
	}
	if (n < 0 && errno == EINTR)
		return;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		/* A pty whose child is gone: what was written is read; a
		 * background process holding the terminal does not keep the
		 * session open. */
		if ((s->flags & MSB_AGENT_EXEC_TTY) && s->reaped)
			close_fd(fd);
		return;
	}
	/* EOF, or EIO on a pty master once the last slave fd closed. */
	if (n < 0 && errno != EIO)
		msb_guest_log("session %u: read: %s", s->id, strerror(errno));
	close_fd(fd);
}

static void stdin_gone(struct session *s)
{
	s->in_grant += s->in_len - s->in_off;
	s->in_off = s->in_len = 0;
	s->in_closed = 1;
	s->in_eot = 0;
	close_fd(&s->in_fd);
}

/* Write buffered stdin to the child without blocking. */
static void write_stdin(struct session *s)
{
	while (s->in_fd >= 0 && s->in_off < s->in_len) {
		ssize_t n = write(s->in_fd, s->in_buf + s->in_off, s->in_len - s->in_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			/* EPIPE: the child closed its stdin; what the host still
			 * sends is discarded (and granted back, so it never waits). */
			stdin_gone(s);
			return;
		}
		s->in_off += (size_t)n;
		s->in_grant += (uint64_t)n;
	}
	if (s->in_off < s->in_len || s->in_fd < 0)
		return;
	s->in_off = s->in_len = 0;
	if (s->in_eot) {
		/* A pty has no half-close: EOF is the EOF character (^D). */
		const char eot = 0x04;
		ssize_t n = write(s->in_fd, &eot, 1);
		if (n == 1)
			s->in_eot = 0;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			stdin_gone(s);
	} else if (s->in_eof && !(s->flags & MSB_AGENT_EXEC_TTY)) {
		close_fd(&s->in_fd);
	}
}

static void send_grant(struct session *s)
{
	if (s->in_grant == 0 || out_used() > OUT_CTRL_LIMIT)
		return;
	if (s->in_grant < GRANT_BATCH && s->in_off < s->in_len)
		return;
	uint32_t n = s->in_grant > UINT32_MAX ? UINT32_MAX : (uint32_t)s->in_grant;
	send_u32(MSB_AGENT_WINDOW, s->id, n);
	s->in_grant -= n;
	s->in_credit += n;
}

/* Work that needs no poll event: pty drain after exit, grants, EXIT. */
static void progress(void)
{
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++) {
		struct session *s = &g.s[i];
		if (!s->id)
			continue;
		if ((s->flags & MSB_AGENT_EXEC_TTY) && s->reaped && s->out_fd >= 0)
			read_output(s, &s->out_fd, MSB_AGENT_STDOUT);
		send_grant(s);
		/* EXIT only once the output was read to EOF and sent (queued in
		 * order, ahead of it). */
		if (!s->reaped || s->out_fd >= 0 || s->err_fd >= 0 || out_used() > OUT_CTRL_LIMIT)
			continue;
		uint8_t p[8];
		int st = s->wstatus;
		msb_agent_put_u32(p, (uint32_t)(WIFSIGNALED(st) ? -1 : WEXITSTATUS(st)));
		msb_agent_put_u32(p + 4, (uint32_t)(WIFSIGNALED(st) ? WTERMSIG(st) : 0));
		out_frame(MSB_AGENT_EXIT, s->id, p, sizeof(p));
		session_free(s);
	}
}

/* ---- frames from the host ---------------------------------------------------- */

static void handle_exec(uint32_t id, const uint8_t *p, size_t len)
{
	struct msb_agent_exec req;
	struct msb_guest_user user;
	struct msb_guest_child child;
	char msg[ERROR_MSG_MAX];
	struct session *s = NULL;
	int r;

	if (session_find(id)) {
		/* An ERROR would be taken for the live session's: drop it. */
		msb_guest_log("exec: session %u already exists, dropped", id);
		return;
	}
	if (g.shutdown_mode) {
		send_error(id, ESHUTDOWN, "the sandbox is shutting down");
		return;
	}
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX && !s; i++)
		if (!g.s[i].id)
			s = &g.s[i];
	if (!s) {
		send_error(id, EAGAIN, "too many sessions");
		return;
	}
	r = msb_agent_exec_decode(p, len, &req, g.arena, sizeof(g.arena), g.argv,
				  MSB_AGENT_ARGS_MAX + 1, g.envp, MSB_AGENT_ENV_MAX + 1);
	if (r < 0) {
		msb_guest_log("exec: session %u: malformed request", id);
		send_error(id, -r, "malformed exec request");
		return;
	}
	r = msb_guest_user_resolve(g.o->root, req.user, &user, msg, sizeof(msg));
	if (r < 0) {
		send_error(id, -r, msg);
		return;
	}
	r = msb_guest_spawn(&req, &user, &child, msg, sizeof(msg));
	if (r < 0) {
		send_error(id, -r, msg);
		return;
	}
	memset(s, 0, sizeof(*s));
	s->id = id;
	s->flags = req.flags;
	s->pid = child.pid;
	s->in_fd = child.in_fd;
	s->out_fd = child.out_fd;
	s->err_fd = child.err_fd;
	s->in_credit = (req.flags & MSB_AGENT_EXEC_STDIN) ? MSB_AGENT_WINDOW_INITIAL : 0;
	s->out_credit = MSB_AGENT_WINDOW_INITIAL;
	if (!(req.flags & MSB_AGENT_EXEC_STDIN) && (req.flags & MSB_AGENT_EXEC_TTY))
		close_fd(&s->in_fd); /* nobody will write to the terminal */
	g.nsessions++;
	/* STARTED goes out before any of the session's output. */
	send_u32(MSB_AGENT_STARTED, id, (uint32_t)child.pid);
}

static void handle_stdin(struct session *s, const uint8_t *p, size_t len)
{
	if (!(s->flags & MSB_AGENT_EXEC_STDIN) || s->in_eof) {
		msb_guest_log("session %u: unexpected stdin, dropped", s->id);
		return;
	}
	if (len == 0) {
		s->in_eof = 1;
		s->in_eot = (s->flags & MSB_AGENT_EXEC_TTY) && !s->in_closed;
		write_stdin(s);
		return;
	}
	if (len > s->in_credit) {
		/* The host broke flow control; dropping keeps our buffer bounded. */
		msb_guest_log("session %u: stdin beyond its window, dropped", s->id);
		return;
	}
	s->in_credit -= len;
	if (s->in_fd < 0)
		s->in_closed = 1; /* no fd to write to (a pty whose dup failed) */
	if (s->in_closed) {
		s->in_grant += len;
		return;
	}
	if (!s->in_buf && !(s->in_buf = malloc(IN_CAP))) {
		msb_guest_log("session %u: out of memory for stdin", s->id);
		stdin_gone(s);
		s->in_grant += len;
		return;
	}
	if (s->in_len + len > IN_CAP) {
		memmove(s->in_buf, s->in_buf + s->in_off, s->in_len - s->in_off);
		s->in_len -= s->in_off;
		s->in_off = 0;
	}
	/* Cannot overflow: credit never exceeds what the buffer can hold. */
	if (s->in_len + len > IN_CAP) {
		msb_guest_log("session %u: stdin buffer full, dropped", s->id);
		s->in_grant += len;
		return;
	}
	memcpy(s->in_buf + s->in_len, p, len);
	s->in_len += len;
	write_stdin(s);
}

/* MOUNT: answered with one MOUNTED, whatever happens. */
static void handle_mount(const uint8_t *p, size_t len)
{
	static char path[MSB_AGENT_STRING_MAX];
	char tag[MSB_AGENT_TAG_MAX], msg[ERROR_MSG_MAX] = "";
	struct msb_agent_mount m;
	int r = msb_agent_mount_decode(p, len, &m, tag, sizeof(tag), path, sizeof(path));
	if (r < 0) {
		snprintf(msg, sizeof(msg), "malformed mount request");
	} else if (!g.o->pid1) {
		/* Test mode runs on a host: never mount anything there. */
		r = -EPERM;
		snprintf(msg, sizeof(msg), "mounts are made only as PID 1");
	} else {
		r = msb_guest_mount_share(m.tag, m.path, m.flags, msg, sizeof(msg));
	}
	if (r < 0)
		msb_guest_log("%s", msg);
	uint8_t out[8 + ERROR_MSG_MAX];
	size_t n = r < 0 ? strnlen(msg, ERROR_MSG_MAX) : 0;
	msb_agent_put_u32(out, (uint32_t)(r < 0 ? -r : 0));
	msb_agent_put_u32(out + 4, (uint32_t)n);
	memcpy(out + 8, msg, n);
	out_frame(MSB_AGENT_MOUNTED, 0, out, 8 + n);
}

/* TRUST: answered with one TRUSTED, whatever happens. */
static void handle_trust(const uint8_t *p, size_t len)
{
	char msg[ERROR_MSG_MAX] = "";
	int r = msb_guest_trust(g.o->root, msb_agent_get_u32(p), p + 4, len - 4, msg, sizeof(msg));
	if (r < 0)
		msb_guest_log("%s", msg);
	uint8_t out[8 + ERROR_MSG_MAX];
	size_t n = r < 0 ? strnlen(msg, ERROR_MSG_MAX) : 0;
	msb_agent_put_u32(out, (uint32_t)(r < 0 ? -r : 0));
	msb_agent_put_u32(out + 4, (uint32_t)n);
	memcpy(out + 8, msg, n);
	out_frame(MSB_AGENT_TRUSTED, 0, out, 8 + n);
}

static void start_shutdown(uint32_t mode)
{
	if (g.shutdown_mode)
		return;
	g.shutdown_mode = mode;
	g.shutdown_stage = 1;
	g.deadline = now_ms() + TERM_GRACE_MS;
	signal_all(SIGTERM);
}

static void handle_frame(const struct msb_agent_header *h, const uint8_t *p)
{
	struct session *s = NULL;
	uint32_t v;

	if (h->type != MSB_AGENT_EXEC && h->session != 0) {
		s = session_find(h->session);
		if (!s) {
			/* Normal: the session ended while this frame was in flight. */
			return;
		}
	}
	switch (h->type) {
	case MSB_AGENT_EXEC:
		handle_exec(h->session, p, h->length);
		break;
	case MSB_AGENT_STDIN:
		handle_stdin(s, p, h->length);
		break;
	case MSB_AGENT_SIGNAL:
		v = msb_agent_get_u32(p);
		if (v >= 1 && v < (uint32_t)_NSIG)
			session_signal(s, (int)v);
		else
			msb_guest_log("session %u: bad signal %u", s->id, v);
		break;
	case MSB_AGENT_RESIZE:
		if (s->flags & MSB_AGENT_EXEC_TTY) {
			struct winsize ws = {.ws_row = msb_agent_get_u16(p),
					     .ws_col = msb_agent_get_u16(p + 2)};
			int fd = s->out_fd >= 0 ? s->out_fd : s->in_fd;
			/* The kernel sends SIGWINCH to the foreground group. */
			if (fd >= 0)
				ioctl(fd, TIOCSWINSZ, &ws);
		}
		break;
	case MSB_AGENT_PING:
		out_frame(MSB_AGENT_PONG, 0, p, h->length);
		break;
	case MSB_AGENT_MOUNT:
		handle_mount(p, h->length);
		break;
	case MSB_AGENT_TRUST:
		handle_trust(p, h->length);
		break;
	case MSB_AGENT_SHUTDOWN:
		v = msb_agent_get_u32(p);
		if (v == MSB_AGENT_POWEROFF || v == MSB_AGENT_REBOOT)
			start_shutdown(v);
		else
			msb_guest_log("bad shutdown mode %u", v);
		break;
	case MSB_AGENT_WINDOW:
		s->out_credit += msb_agent_get_u32(p);
		if (s->out_credit > CREDIT_MAX)
			s->out_credit = CREDIT_MAX;
		break;
	default:
		break;
	}
}

/* Handle the complete frames in the receive buffer, while replies fit. */
static void process_frames(void)
{
	size_t off = 0;
	while (g.fd >= 0 && g.rlen - off >= MSB_AGENT_HEADER_SIZE) {
		struct msb_agent_header h;
		int r = msb_agent_header_decode(g.rbuf + off, g.rlen - off, &h);
		if (r < 0 &&
		    (h.version != MSB_AGENT_PROTO_VERSION || h.length > MSB_AGENT_FRAME_MAX)) {
			/* Framing is lost: nothing after this can be trusted. */
			msb_guest_log("bad frame header (version %u, length %u): input dropped",
				      h.version, h.length);
			off = g.rlen;
			break;
		}
		if (g.rlen - off - MSB_AGENT_HEADER_SIZE < h.length)
			break; /* incomplete */
		if (out_used() > OUT_CTRL_LIMIT)
			break; /* no room for a reply yet */
		const uint8_t *p = g.rbuf + off + MSB_AGENT_HEADER_SIZE;
		off += MSB_AGENT_HEADER_SIZE + h.length;
		if (r < 0 || msb_agent_validate_from_host(&h, p) < 0) {
			msb_guest_log(
				"bad frame (type %u, flags %#x, session %u, length %u): dropped",
				h.type, h.flags, h.session, h.length);
			continue;
		}
		handle_frame(&h, p);
	}
	if (g.fd < 0)
		return;
	memmove(g.rbuf, g.rbuf + off, g.rlen - off);
	g.rlen -= off;
}

static void read_channel(void)
{
	ssize_t n = read(g.fd, g.rbuf + g.rlen, RBUF_CAP - g.rlen);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		channel_lost(n < 0 ? strerror(errno) : "end of file");
		return;
	}
	g.rlen += (size_t)n;
	process_frames();
}

/* ---- the channel ------------------------------------------------------------- */

static int channel_setup(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (isatty(fd)) {
		/* A virtio console is a tty: no echo, no line editing, no
		 * translation; the protocol is binary. */
		struct termios t;
		if (tcgetattr(fd, &t) < 0)
			return -errno;
		cfmakeraw(&t);
		if (tcsetattr(fd, TCSANOW, &t) < 0)
			return -errno;
	}
	return 0;
}

static void channel_lost(const char *why)
{
	if (g.fd < 0)
		return;
	msb_guest_log("channel lost: %s", why);
	/* The host's view of every session is gone with the connection. */
	drop_all_sessions();
	close_fd(&g.fd);
	g.rlen = 0;
	g.ostart = g.oend = 0;
	g.reopen_at = now_ms() + REOPEN_MS;
}

/* PID 1 only: a new connection gets a new HELLO. */
static void channel_reopen(void)
{
	int fd = open(g.o->channel, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || channel_setup(fd) < 0) {
		if (fd >= 0)
			close(fd);
		g.reopen_at = now_ms() + REOPEN_MS;
		return;
	}
	g.fd = fd;
	g.reopen_at = 0;
	send_hello();
}

/* ---- shutdown ---------------------------------------------------------------- */

/* Advance a shutdown; returns 1 when it is complete (ACK queued). */
static int shutdown_step(void)
{
	uint64_t now = now_ms();
	if (g.shutdown_stage == 1 && (g.nsessions == 0 || now >= g.deadline)) {
		if (g.nsessions > 0) {
			signal_all(SIGKILL);
			g.shutdown_stage = 2;
			g.deadline = now + KILL_GRACE_MS;
			return 0;
		}
		g.shutdown_stage = 2;
	}
	if (g.shutdown_stage != 2 || (g.nsessions > 0 && now < g.deadline))
		return 0;

	/* Sessions whose output never drained (no credit, a grandchild
	 * holding a pipe) end without an EXIT. */
	drop_all_sessions();
	if (g.o->pid1 && getpid() == 1) {
		kill(-1, SIGKILL);
		uint64_t end = now_ms() + 1000;
		while (waitpid(-1, NULL, WNOHANG) >= 0 && now_ms() < end)
			usleep(10000);
		sync();
		msb_guest_init_finish();
	}
	sync();
	out_frame(MSB_AGENT_SHUTDOWN_ACK, 0, NULL, 0);
	return 1;
}

/* ---- the loop ---------------------------------------------------------------- */

enum role { ROLE_CHANNEL, ROLE_SIGNAL, ROLE_IN, ROLE_OUT, ROLE_ERR };

int msb_guest_serve(const struct msb_guest_serve_opts *o)
{
	static struct pollfd pfd[2 + 3 * MSB_AGENT_SESSIONS_MAX];
	static struct {
		enum role role;
		struct session *s;
	} what[2 + 3 * MSB_AGENT_SESSIONS_MAX];
	sigset_t chld;
	int r;

	memset(&g, 0, sizeof(g));
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++)
		g.s[i].in_fd = g.s[i].out_fd = g.s[i].err_fd = -1;
	g.o = o;
	g.fd = o->fd;
	r = channel_setup(g.fd);
	if (r < 0) {
		msb_guest_log("channel setup: %s", strerror(-r));
		return r;
	}

	/* SIGCHLD through a signalfd, so reaping is one more poll event;
	 * SIGPIPE ignored, so a closed pipe is an EPIPE, not our death. */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (o->pid1) {
		/* What busybox's (and sysvinit's) reboot, halt and poweroff send
		 * init: a guest user's own shutdown goes the orderly way. */
		sigaddset(&chld, SIGTERM);
		sigaddset(&chld, SIGUSR1);
		sigaddset(&chld, SIGUSR2);
	}
	sigprocmask(SIG_BLOCK, &chld, NULL);
	signal(SIGPIPE, SIG_IGN);
	g.sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (g.sigfd < 0) {
		r = -errno;
		msb_guest_log("signalfd: %s", strerror(errno));
		return r;
	}
	/* In test mode, orphans of our sessions come to us as they would to
	 * PID 1, so the reaping path is the same. */
	if (!o->pid1)
		prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

	send_hello();
	for (;;) {
		reap();
		process_frames();
		progress();
		if (g.shutdown_mode && shutdown_step()) {
			flush_blocking(2000);
			close_fd(&g.sigfd);
			return (int)g.shutdown_mode;
		}
		flush_out();
		if (g.fd < 0 && !o->channel) {
			close_fd(&g.sigfd);
			return -EPIPE;
		}
		if (g.fd < 0 && now_ms() >= g.reopen_at)
			channel_reopen();

		size_t n = 0;
		pfd[n] = (struct pollfd){.fd = g.sigfd, .events = POLLIN};
		what[n++].role = ROLE_SIGNAL;
		if (g.fd >= 0) {
			short ev = 0;
			if (g.rlen < RBUF_CAP && out_used() <= OUT_CTRL_LIMIT)
				ev |= POLLIN;
			if (out_used() > 0)
				ev |= POLLOUT;
			pfd[n] = (struct pollfd){.fd = ev ? g.fd : -1, .events = ev};
			what[n++].role = ROLE_CHANNEL;
		}
		for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++) {
			struct session *s = &g.s[i];
			if (!s->id)
				continue;
			/* Only what can make progress is polled: a pipe without
			 * credit would report POLLHUP forever. */
			int readable = s->out_credit > 0 && out_used() < OUT_DATA_LIMIT;
			if (s->in_fd >= 0 && (s->in_off < s->in_len || s->in_eot)) {
				pfd[n] = (struct pollfd){.fd = s->in_fd, .events = POLLOUT};
				what[n].role = ROLE_IN;
				what[n++].s = s;
			}
			if (s->out_fd >= 0 && readable) {
				pfd[n] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
				what[n].role = ROLE_OUT;
				what[n++].s = s;
			}
			if (s->err_fd >= 0 && readable) {
				pfd[n] = (struct pollfd){.fd = s->err_fd, .events = POLLIN};
				what[n].role = ROLE_ERR;
				what[n++].s = s;
			}
		}

		int timeout = -1;
		uint64_t now = now_ms();
		if (g.shutdown_mode)
			timeout = g.deadline > now ? (int)(g.deadline - now) : 0;
		if (g.fd < 0)
			timeout = g.reopen_at > now ? (int)(g.reopen_at - now) : 0;
		if (poll(pfd, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			msb_guest_log("poll: %s", strerror(errno));
			close_fd(&g.sigfd);
			return r;
		}

		for (size_t i = 0; i < n; i++) {
			short re = pfd[i].revents;
			struct session *s = what[i].s;
			if (!re || pfd[i].fd < 0)
				continue;
			switch (what[i].role) {
			case ROLE_SIGNAL: {
				struct signalfd_siginfo si;
				while (read(g.sigfd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGTERM)
						start_shutdown(MSB_AGENT_REBOOT);
					else if (si.ssi_signo == SIGUSR1 || si.ssi_signo == SIGUSR2)
						start_shutdown(MSB_AGENT_POWEROFF);
				}
				reap();
				break;
			}
			case ROLE_CHANNEL:
				if (pfd[i].fd != g.fd)
					break;
				if (re & POLLOUT)
					flush_out();
				if (g.fd >= 0 && (pfd[i].events & POLLIN) &&
				    (re & (POLLIN | POLLHUP | POLLERR)))
					read_channel();
				else if (g.fd >= 0 && (re & (POLLHUP | POLLERR)) && out_used() == 0)
					channel_lost("hangup");
				break;
			case ROLE_IN:
				if (s->id && pfd[i].fd == s->in_fd)
					write_stdin(s);
				break;
			case ROLE_OUT:
				if (s->id && pfd[i].fd == s->out_fd)
					read_output(s, &s->out_fd, MSB_AGENT_STDOUT);
				break;
			case ROLE_ERR:
				if (s->id && pfd[i].fd == s->err_fd)
					read_output(s, &s->err_fd, MSB_AGENT_STDERR);
				break;
			default:
				break;
			}
		}
	}
}
