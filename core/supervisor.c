/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The supervisor: one VM, one agent connection, many control connections.
 *
 * Each control connection speaks the agent protocol as if it were the agent:
 * it gets a HELLO, sends EXEC/STDIN/SIGNAL/RESIZE/WINDOW/PING/SHUTDOWN, and
 * receives STARTED/STDOUT/STDERR/EXIT/ERROR.  Sessions are renumbered onto
 * the agent's.  Memory is bounded: one frame buffer and a bounded send queue
 * per connection, a stdin buffer no larger than the window granted per
 * session, and output flows only as fast as each client grants window (the
 * supervisor passes the client's WINDOW grants on to the agent).
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent-client.h"
#include "config.h"
#include "error.h"
#include "registry.h"
#include "sandbox.h"
#include "spec.h"
#include "state.h"
#include "volume.h"

#define FRAME_BUF (MSB_AGENT_HEADER_SIZE + MSB_AGENT_FRAME_MAX)
/* A client that lets this much output pile up is not reading: it is dropped. */
#define SENDQ_MAX (8u << 20)

struct ctl_conn;

struct ctl_session {
	bool used;
	struct ctl_conn *conn;
	uint32_t cli_sid;
	uint32_t agent_sid;
	uint8_t *stdin_buf; /* at most MSB_AGENT_WINDOW_INITIAL: what the client may send unacked */
	size_t stdin_len;
	bool stdin_eof;
	bool started;	      /* STARTED was passed on: the client accepts WINDOW now */
	uint32_t grant_later; /* stdin window to grant once started */
};

struct ctl_conn {
	bool used;
	int fd;
	uint8_t *rbuf;
	size_t rlen;
	uint8_t *sq;
	size_t sq_len, sq_cap;
};

struct sup {
	struct msb_sandbox sb;
	struct msb_spec *spec;
	int listen_fd;
	struct ctl_conn conns[MSB_CONTROL_CONNS_MAX];
	struct ctl_session sessions[MSB_AGENT_SESSIONS_MAX];
	bool stop;
	int stop_fd; /* the connection that asked for SHUTDOWN, to ACK */
	long long last_activity;
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "msb-supervisor: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- sending to a control connection ------------------------------------ */

static void conn_close(struct sup *s, struct ctl_conn *c);

static void conn_send(struct sup *s, struct ctl_conn *c, uint8_t type, uint32_t sid,
		      const void *payload, size_t len)
{
	if (!c || !c->used)
		return;
	size_t need = c->sq_len + MSB_AGENT_HEADER_SIZE + len;
	if (need > SENDQ_MAX) {
		log_line("dropping a control connection that does not read its output");
		conn_close(s, c);
		return;
	}
	if (need > c->sq_cap) {
		size_t cap = c->sq_cap ? c->sq_cap : 65536;
		while (cap < need)
			cap *= 2;
		uint8_t *n = realloc(c->sq, cap);
		if (!n) {
			conn_close(s, c);
			return;
		}
		c->sq = n;
		c->sq_cap = cap;
	}
	msb_agent_header_encode(c->sq + c->sq_len, type, sid, (uint32_t)len);
	if (len)
		memcpy(c->sq + c->sq_len + MSB_AGENT_HEADER_SIZE, payload, len);
	c->sq_len = need;
}

static void conn_flush(struct sup *s, struct ctl_conn *c)
{
	while (c->used && c->sq_len) {
		ssize_t n = send(c->fd, c->sq, c->sq_len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			conn_close(s, c);
			return;
		}
		memmove(c->sq, c->sq + n, c->sq_len - (size_t)n);
		c->sq_len -= (size_t)n;
	}
}

static void send_u32(struct sup *s, struct ctl_conn *c, uint8_t type, uint32_t sid, uint32_t v)
{
	uint8_t p[4];
	msb_agent_put_u32(p, v);
	conn_send(s, c, type, sid, p, 4);
}

static void send_error(struct sup *s, struct ctl_conn *c, uint32_t sid, int errnum, const char *msg)
{
	uint8_t p[4 + 4 + 256];
	size_t ml = strnlen(msg, 256);
	msb_agent_put_u32(p, (uint32_t)errnum);
	msb_agent_put_u32(p + 4, (uint32_t)ml);
	memcpy(p + 8, msg, ml);
	conn_send(s, c, MSB_AGENT_ERROR, sid, p, 8 + ml);
}

/* ---- sessions --------------------------------------------------------------- */

static struct ctl_session *session_by_cli(struct sup *s, struct ctl_conn *c, uint32_t sid)
{
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++)
		if (s->sessions[i].used && s->sessions[i].conn == c &&
		    s->sessions[i].cli_sid == sid)
			return &s->sessions[i];
	return NULL;
}

static void session_free(struct ctl_session *x)
{
	free(x->stdin_buf);
	memset(x, 0, sizeof(*x));
}

/* Pass buffered stdin to the agent as its credit allows; grant the client what went. */
static void session_push_stdin(struct sup *s, struct ctl_session *x)
{
	if (!x->used)
		return;
	if (x->stdin_len) {
		ssize_t n = msb_agent_client_write_stdin(s->sb.agent, x->agent_sid, x->stdin_buf,
							 x->stdin_len, NULL);
		if (n > 0) {
			memmove(x->stdin_buf, x->stdin_buf + n, x->stdin_len - (size_t)n);
			x->stdin_len -= (size_t)n;
			/* A client takes stdin credit only for a started session. */
			if (x->started)
				send_u32(s, x->conn, MSB_AGENT_WINDOW, x->cli_sid, (uint32_t)n);
			else
				x->grant_later += (uint32_t)n;
		} else if (n < 0) {
			x->stdin_len = 0; /* the guest closed its stdin: drop what is left */
		}
	}
	if (x->stdin_eof && x->stdin_len == 0) {
		msb_agent_client_close_stdin(s->sb.agent, x->agent_sid, NULL);
		x->stdin_eof = false;
	}
}

/* ---- agent callbacks: guest -> client ----------------------------------- */

static void on_started(void *opaque, uint32_t sid, void *data, uint32_t pid)
{
	(void)sid;
	struct ctl_session *x = data;
	send_u32(opaque, x->conn, MSB_AGENT_STARTED, x->cli_sid, pid);
	x->started = true;
	if (x->grant_later && x->stdin_buf)
		send_u32(opaque, x->conn, MSB_AGENT_WINDOW, x->cli_sid, x->grant_later);
	x->grant_later = 0;
}

static void on_output(void *opaque, uint32_t sid, void *data, int stream, const uint8_t *buf,
		      size_t len)
{
	struct sup *s = opaque;
	struct ctl_session *x = data;
	if (!x->conn || !x->conn->used) {
		msb_agent_client_consumed(s->sb.agent, sid, len, NULL);
		return;
	}
	conn_send(s, x->conn,
		  stream == MSB_AGENT_CLIENT_STDERR ? MSB_AGENT_STDERR : MSB_AGENT_STDOUT,
		  x->cli_sid, buf, len);
}

static void on_ended(void *opaque, uint32_t sid, void *data, const struct msb_agent_status *st)
{
	struct sup *s = opaque;
	struct ctl_session *x = data;
	if (st->failed) {
		send_error(s, x->conn, x->cli_sid, st->errnum, st->message);
	} else {
		uint8_t p[8];
		msb_agent_put_u32(p, (uint32_t)st->exit_code);
		msb_agent_put_u32(p + 4, (uint32_t)st->signal);
		conn_send(s, x->conn, MSB_AGENT_EXIT, x->cli_sid, p, 8);
	}
	msb_agent_client_release(s->sb.agent, sid);
	session_free(x);
	s->last_activity = now_ms();
}

static const struct msb_agent_client_ops sup_ops = {
	.started = on_started,
	.output = on_output,
	.ended = on_ended,
};

/* ---- frames from a client ------------------------------------------------- */

static void handle_exec(struct sup *s, struct ctl_conn *c, uint32_t sid, const uint8_t *p,
			size_t len)
{
	if (sid == 0 || session_by_cli(s, c, sid)) {
		send_error(s, c, sid, EINVAL, "bad or duplicate session id");
		return;
	}
	struct ctl_session *x = NULL;
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX && !x; i++)
		if (!s->sessions[i].used)
			x = &s->sessions[i];
	if (!x) {
		send_error(s, c, sid, EAGAIN, "too many sessions");
		return;
	}
	static char arena[MSB_AGENT_FRAME_MAX + 2 * (MSB_AGENT_ARGS_MAX + MSB_AGENT_ENV_MAX)];
	static const char *argv[MSB_AGENT_ARGS_MAX + 1], *envp[MSB_AGENT_ENV_MAX + 1];
	struct msb_agent_exec req;
	if (msb_agent_exec_decode(p, len, &req, arena, sizeof(arena), argv, MSB_AGENT_ARGS_MAX + 1,
				  envp, MSB_AGENT_ENV_MAX + 1) < 0) {
		send_error(s, c, sid, EPROTO, "malformed exec request");
		return;
	}
	/*
	 * The sandbox's defaults (its -e/-w/-u, or its image's Env, WorkingDir
	 * and User) apply to every exec that does not set its own.
	 */
	static const char *merged[MSB_AGENT_ENV_MAX + 1];
	uint32_t nm = 0;
	for (uint32_t i = 0; i < req.envc && nm < MSB_AGENT_ENV_MAX; i++)
		merged[nm++] = req.envp[i];
	for (size_t i = 0; i < s->sb.nenv && nm < MSB_AGENT_ENV_MAX; i++) {
		const char *kv = s->sb.env[i];
		size_t kl = strcspn(kv, "=");
		bool set = false;
		for (uint32_t j = 0; j < req.envc && !set; j++)
			set = !strncmp(req.envp[j], kv, kl) && req.envp[j][kl] == '=';
		if (!set)
			merged[nm++] = kv;
	}
	merged[nm] = NULL;
	req.envp = merged;
	req.envc = nm;
	if (!req.user[0] && s->spec->user)
		req.user = s->spec->user;
	if (!req.cwd[0] && s->spec->workdir)
		req.cwd = s->spec->workdir;
	*x = (struct ctl_session){.used = true, .conn = c, .cli_sid = sid};
	if (req.flags & MSB_AGENT_EXEC_STDIN) {
		x->stdin_buf = malloc(MSB_AGENT_WINDOW_INITIAL);
		if (!x->stdin_buf) {
			session_free(x);
			send_error(s, c, sid, ENOMEM, "out of memory");
			return;
		}
	}
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_agent_client_exec(s->sb.agent, &req, MSB_AGENT_CLIENT_MANUAL_CREDIT, x,
				  &x->agent_sid, &err) < 0) {
		session_free(x);
		send_error(s, c, sid, -err.code, err.msg);
		return;
	}
	s->last_activity = now_ms();
}

static void handle_frame(struct sup *s, struct ctl_conn *c, const struct msb_agent_header *h,
			 const uint8_t *p)
{
	struct ctl_session *x = h->session ? session_by_cli(s, c, h->session) : NULL;
	switch (h->type) {
	case MSB_AGENT_EXEC:
		handle_exec(s, c, h->session, p, h->length);
		break;
	case MSB_AGENT_STDIN:
		if (!x || !x->stdin_buf)
			break;
		if (h->length == 0) {
			x->stdin_eof = true;
		} else if (h->length > MSB_AGENT_WINDOW_INITIAL - x->stdin_len) {
			/* More than the window we granted: a broken client. */
			conn_close(s, c);
			return;
		} else {
			memcpy(x->stdin_buf + x->stdin_len, p, h->length);
			x->stdin_len += h->length;
		}
		session_push_stdin(s, x);
		break;
	case MSB_AGENT_SIGNAL:
		if (x)
			msb_agent_client_signal(s->sb.agent, x->agent_sid,
						(int)msb_agent_get_u32(p), NULL);
		break;
	case MSB_AGENT_RESIZE:
		if (x)
			msb_agent_client_resize(s->sb.agent, x->agent_sid, msb_agent_get_u16(p),
						msb_agent_get_u16(p + 2), NULL);
		break;
	case MSB_AGENT_WINDOW:
		if (x && msb_agent_client_consumed(s->sb.agent, x->agent_sid, msb_agent_get_u32(p),
						   NULL) < 0) {
			conn_close(s, c);
			return;
		}
		break;
	case MSB_AGENT_PING:
		conn_send(s, c, MSB_AGENT_PONG, 0, p, h->length);
		break;
	case MSB_AGENT_SHUTDOWN:
		s->stop = true;
		s->stop_fd = c->fd;
		break;
	default:
		break;
	}
}

static void conn_read(struct sup *s, struct ctl_conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->rbuf + c->rlen, FRAME_BUF - c->rlen, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			conn_close(s, c);
			return;
		}
		c->rlen += (size_t)n;
		while (c->used && c->rlen >= MSB_AGENT_HEADER_SIZE) {
			struct msb_agent_header h;
			if (msb_agent_header_decode(c->rbuf, c->rlen, &h) < 0 ||
			    !msb_agent_type_from_host(h.type)) {
				conn_close(s, c);
				return;
			}
			size_t total = MSB_AGENT_HEADER_SIZE + h.length;
			if (c->rlen < total)
				break;
			if (msb_agent_validate_from_host(&h, c->rbuf + MSB_AGENT_HEADER_SIZE) < 0) {
				conn_close(s, c);
				return;
			}
			handle_frame(s, c, &h, c->rbuf + MSB_AGENT_HEADER_SIZE);
			if (!c->used)
				return;
			memmove(c->rbuf, c->rbuf + total, c->rlen - total);
			c->rlen -= total;
		}
	}
}

static void conn_close(struct sup *s, struct ctl_conn *c)
{
	if (!c->used)
		return;
	/* Its sessions lose their terminal: hang them up, as a tty would. */
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++) {
		struct ctl_session *x = &s->sessions[i];
		if (!x->used || x->conn != c)
			continue;
		if (s->sb.agent) {
			msb_agent_client_signal(s->sb.agent, x->agent_sid, SIGHUP, NULL);
			msb_agent_client_release(s->sb.agent, x->agent_sid);
		}
		session_free(x);
	}
	close(c->fd);
	free(c->rbuf);
	free(c->sq);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	s->last_activity = now_ms();
}

static void accept_conn(struct sup *s)
{
	int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	struct ctl_conn *c = NULL;
	for (size_t i = 0; i < MSB_CONTROL_CONNS_MAX && !c; i++)
		if (!s->conns[i].used)
			c = &s->conns[i];
	if (!c) {
		close(fd);
		return;
	}
	*c = (struct ctl_conn){.used = true, .fd = fd, .rbuf = malloc(FRAME_BUF)};
	if (!c->rbuf) {
		close(fd);
		c->used = false;
		return;
	}
	/* HELLO: version, then the agent's version string as the supervisor saw it. */
	const char *v = msb_agent_client_agent_version(s->sb.agent);
	uint8_t p[4 + 4 + 64];
	size_t vl = strnlen(v, 64);
	msb_agent_put_u32(p, MSB_AGENT_PROTO_VERSION);
	msb_agent_put_u32(p + 4, (uint32_t)vl);
	memcpy(p + 8, v, vl);
	conn_send(s, c, MSB_AGENT_HELLO, 0, p, 8 + vl);
	s->last_activity = now_ms();
}

/* ---- paths ----------------------------------------------------------------- */

static int sandbox_dir(const char *home, const char *name, char *buf, size_t len)
{
	if (!msb_name_valid(name))
		return -EINVAL;
	int n = snprintf(buf, len, "%s/sandboxes/%s", home, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/*
 * Socket paths are limited to 108 bytes; reach ours through the sandbox
 * directory's fd instead, so a long MSB_HOME still works.
 */
static int socket_addr(int dirfd, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", dirfd,
		 MSB_CONTROL_SOCKET);
	return 0;
}

int msb_control_connect(const char *home, const char *name, struct msb_error *err)
{
	char dir[PATH_MAX];
	if (sandbox_dir(home, name, dir, sizeof(dir)) < 0)
		return msb_error_set(err, -EINVAL, "invalid sandbox name '%.60s'", name);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? msb_error_set(err, -ENOENT, "no sandbox named '%s'", name)
				       : msb_error_errno(err, -errno, "sandbox '%s'", name);
	struct sockaddr_un sa;
	socket_addr(dfd, &sa);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int r = fd < 0 ? -errno : 0;
	if (r == 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		r = -errno;
	close(dfd);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		if (r == -ENOENT || r == -ECONNREFUSED)
			return msb_error_set(err, -ENOTCONN,
					     "sandbox '%s' is not running (msb start %s)", name,
					     name);
		return msb_error_errno(err, r, "connecting to sandbox '%s'", name);
	}
	return fd;
}

/* The marker a stale pid file becomes, until stop or rm has reaped after it. */
#define SUPERVISOR_DIED "supervisor.died"

static pid_t supervisor_pid(const char *home, const char *name, int *died)
{
	char dir[PATH_MAX], path[PATH_MAX + 32];
	if (sandbox_dir(home, name, dir, sizeof(dir)) < 0)
		return 0;
	snprintf(path, sizeof(path), "%s/%s", dir, MSB_SUPERVISOR_PID);
	FILE *f = fopen(path, "r");
	if (!f) {
		if (died) { /* (an earlier look found it dead) */
			snprintf(path, sizeof(path), "%s/%s", dir, SUPERVISOR_DIED);
			*died = unlink(path) == 0;
		}
		return 0;
	}
	long pid = 0;
	int ok = fscanf(f, "%ld", &pid) == 1 && pid > 1;
	fclose(f);
	if (ok) {
		/* Alive, and really our supervisor of this sandbox (pids are reused). */
		char cmd[PATH_MAX], proc[64];
		snprintf(proc, sizeof(proc), "/proc/%ld/cmdline", pid);
		int fd = open(proc, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, cmd, sizeof(cmd) - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n > 0) {
			cmd[n] = '\0';
			for (ssize_t i = 0; i < n; i++)
				if (!cmd[i])
					cmd[i] = ' ';
			char want[128];
			snprintf(want, sizeof(want), "msb-supervisor serve %s ", name);
			if (strstr(cmd, want))
				return (pid_t)pid;
		}
	}
	/* Stale: the supervisor died.  Reap what it left here; mark it for the rest. */
	char marker[PATH_MAX + 32];
	snprintf(marker, sizeof(marker), "%s/%s", dir, SUPERVISOR_DIED);
	if (rename(path, marker) < 0)
		unlink(path);
	snprintf(path, sizeof(path), "%s/%s", dir, MSB_CONTROL_SOCKET);
	unlink(path);
	if (died) {
		*died = access(marker, F_OK) == 0;
		unlink(marker);
	}
	return 0;
}

pid_t msb_supervisor_pid(const char *home, const char *name)
{
	return supervisor_pid(home, name, NULL);
}

pid_t msb_supervisor_pid_died(const char *home, const char *name, int *died)
{
	*died = 0;
	return supervisor_pid(home, name, died);
}

pid_t msb_sandbox_running_pid(struct msb_state *st, const char *name)
{
	pid_t pid = msb_supervisor_pid(st->home, name);
	if (pid)
		return pid;
	/* msb run hosts its VM itself (after exec'ing msb-supervisor run): its owner.pid. */
	char *data = NULL;
	size_t len = 0;
	long owner = 0;
	if (msb_state_read(st, name, "owner.pid", &data, &len, NULL) == 0) {
		owner = strtol(data, NULL, 10);
		free(data);
	}
	char exe[64], target[PATH_MAX];
	snprintf(exe, sizeof(exe), "/proc/%ld/exe", owner);
	ssize_t n = owner > 1 ? readlink(exe, target, sizeof(target) - 1) : -1;
	if (n > 0) {
		target[n] = '\0';
		if (strstr(target, "msb"))
			return (pid_t)owner;
	}
	return 0;
}

/* ---- the supervisor ---------------------------------------------------------- */

static void ready(int fd, const char *msg)
{
	if (fd < 0)
		return;
	size_t len = strlen(msg);
	while (len) {
		ssize_t n = write(fd, msg, len);
		if (n <= 0)
			break;
		msg += n;
		len -= (size_t)n;
	}
	close(fd);
}

static int listen_on(int dirfd, struct msb_error *err)
{
	struct sockaddr_un sa;
	socket_addr(dirfd, &sa);
	unlinkat(dirfd, MSB_CONTROL_SOCKET, 0);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return msb_error_errno(err, -errno, "control socket");
	/* 0600 from the start: no window in which another user could connect. */
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 16) < 0) {
		r = -errno;
		close(fd);
		return msb_error_errno(err, r, "control socket");
	}
	return fd;
}

static int serve(struct sup *s)
{
	const struct msb_hv_ops *hv = &s->sb.hv_module->ops.hv;
	int exit_fd = hv->exit_fd ? hv->exit_fd(s->sb.hv->inst) : -1;
	long long started = now_ms();
	s->last_activity = started;
	for (;;) {
		struct pollfd p[3 + MSB_CONTROL_CONNS_MAX];
		struct ctl_conn *pc[3 + MSB_CONTROL_CONNS_MAX];
		size_t n = 0;
		p[n++] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
		p[n++] = (struct pollfd){.fd = msb_agent_client_fd(s->sb.agent),
					 .events = msb_agent_client_poll_events(s->sb.agent)};
		p[n++] = (struct pollfd){.fd = exit_fd, .events = POLLIN};
		bool busy = false;
		for (size_t i = 0; i < MSB_CONTROL_CONNS_MAX; i++) {
			struct ctl_conn *c = &s->conns[i];
			if (!c->used)
				continue;
			busy = true;
			pc[n] = c;
			p[n++] = (struct pollfd){
				.fd = c->fd, .events = (short)(POLLIN | (c->sq_len ? POLLOUT : 0))};
		}
		for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++)
			busy = busy || s->sessions[i].used;
		/* Lifetime limits. */
		long long t = now_ms(), wait = -1;
		if (s->spec->max_duration_ms) {
			long long left = started + (long long)s->spec->max_duration_ms - t;
			if (left <= 0) {
				log_line("max duration reached: stopping");
				return 0;
			}
			wait = left;
		}
		if (s->spec->idle_timeout_ms && !busy) {
			long long left = s->last_activity + (long long)s->spec->idle_timeout_ms - t;
			if (left <= 0) {
				log_line("idle timeout reached: stopping");
				return 0;
			}
			if (wait < 0 || left < wait)
				wait = left;
		}
		int r = poll(p, n, wait < 0 ? -1 : (int)(wait > 60000 ? 60000 : wait));
		if (r < 0 && errno != EINTR)
			return 1;
		if (r <= 0)
			continue;
		if (p[2].revents) {
			char why[300];
			log_line("the VM ended: %s",
				 msb_sandbox_exit_reason(&s->sb, why, sizeof(why)) ?: "unknown");
			return 0;
		}
		if (p[1].revents) {
			struct msb_error err = MSB_ERROR_INIT;
			if (msb_agent_client_handle(s->sb.agent, p[1].revents, &err) < 0) {
				log_line("agent connection: %s", err.msg);
				return 1;
			}
		}
		if (p[0].revents & POLLIN)
			accept_conn(s);
		for (size_t i = 3; i < n; i++) {
			if (!pc[i]->used)
				continue;
			if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
				conn_read(s, pc[i]);
		}
		for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++)
			if (s->sessions[i].used && s->sessions[i].stdin_buf)
				session_push_stdin(s, &s->sessions[i]);
		for (size_t i = 0; i < MSB_CONTROL_CONNS_MAX; i++)
			if (s->conns[i].used)
				conn_flush(s, &s->conns[i]);
		if (s->stop)
			return 0;
	}
}

int msb_sandbox_load(const char *home, const char *name, const char *build_root,
		     struct msb_loaded *l, struct msb_error *err)
{
	memset(l, 0, sizeof(*l));
	if (sandbox_dir(home, name, l->dir, sizeof(l->dir)) < 0)
		return msb_error_set(err, -EINVAL, "bad sandbox name '%s'", name);
	struct msb_state st;
	char *json = NULL;
	size_t jlen = 0;
	int r = msb_state_open(home, &st, err);
	if (r == 0) {
		r = msb_state_read(&st, name, "spec.json", &json, &jlen, err);
		msb_state_close(&st);
	}
	if (r == 0)
		r = msb_spec_from_json(json, jlen, &l->spec, err);
	free(json);
	/*
	 * Only the modules this sandbox uses are mapped (the VM's process loads
	 * no network or TLS library it does not need), each found as a full
	 * scan would find it.
	 */
	if (r == 0 && (r = msb_config_load(err)) == 0)
		r = msb_registry_default_path(&l->reg, build_root, err);
	const struct msb_spec *sp = l->spec;
	const int need[MSB_SLOT_COUNT] = {
		[MSB_SLOT_HV] = 1,
		[MSB_SLOT_STORAGE] = r == 0 && sp->nvolumes,
		[MSB_SLOT_NET] = r == 0 && !sp->no_net,
		[MSB_SLOT_SECRETS] = r == 0 && sp->nsecrets,
	};
	static const uint32_t kinds[MSB_SLOT_COUNT] = {
		[MSB_SLOT_HV] = MSB_PLUGIN_HV,
		[MSB_SLOT_STORAGE] = MSB_PLUGIN_STORAGE,
		[MSB_SLOT_NET] = MSB_PLUGIN_NET,
		[MSB_SLOT_SECRETS] = MSB_PLUGIN_SECRETS,
	};
	for (int slot = 0; r == 0 && slot < MSB_SLOT_COUNT; slot++)
		if (need[slot])
			r = msb_registry_resolve(&l->reg, kinds[slot], msb_spec_module(sp, slot),
						 err);
	/* Pointers last: a later load may have moved the records. */
	if (r == 0 && !(l->hv = msb_registry_find(&l->reg, MSB_PLUGIN_HV,
						  msb_spec_module(l->spec, MSB_SLOT_HV))))
		r = msb_error_set(err, -ENOENT, "hypervisor module '%s' not found",
				  msb_spec_module(l->spec, MSB_SLOT_HV));
	if (r == 0 && l->spec->nvolumes &&
	    !(l->storage = msb_registry_find(&l->reg, MSB_PLUGIN_STORAGE,
					     msb_spec_module(l->spec, MSB_SLOT_STORAGE))))
		r = msb_error_set(err, -ENOENT, "storage module '%s' not found (see msb plugins)",
				  msb_spec_module(l->spec, MSB_SLOT_STORAGE));
	if (r == 0 && !l->spec->no_net &&
	    !(l->net = msb_registry_find(&l->reg, MSB_PLUGIN_NET,
					 msb_spec_module(l->spec, MSB_SLOT_NET))))
		r = msb_error_set(err, -ENOENT,
				  "network module '%s' not found (see msb plugins); for a sandbox "
				  "without a network, use --no-net",
				  msb_spec_module(l->spec, MSB_SLOT_NET));
	if (r == 0 && l->spec->nsecrets &&
	    !(l->secrets = msb_registry_find(&l->reg, MSB_PLUGIN_SECRETS,
					     msb_spec_module(l->spec, MSB_SLOT_SECRETS))))
		r = msb_error_set(err, -ENOENT, "secrets module '%s' not found (see msb plugins)",
				  msb_spec_module(l->spec, MSB_SLOT_SECRETS));
	if (r == 0)
		r = msb_volumes_resolve(home, l->spec, err);
	if (r == 0)
		r = msb_assets_find(l->spec, build_root, &l->assets, err);
	if (r < 0)
		msb_sandbox_unload(l);
	return r;
}

void msb_sandbox_unload(struct msb_loaded *l)
{
	msb_assets_free(&l->assets);
	msb_registry_free(&l->reg);
	msb_spec_free(l->spec);
	l->spec = NULL;
	l->hv = NULL;
	l->storage = NULL;
	l->net = NULL;
	l->secrets = NULL;
}

int msb_supervise(const char *home, const char *name, int ready_fd, const char *build_root)
{
	struct msb_error err = MSB_ERROR_INIT;
	char msg[MSB_ERROR_MSG_MAX + 2];
	struct sup *s = calloc(1, sizeof(*s));
	int dfd = -1, status = 1;
	struct msb_loaded l;
	if (!s) {
		ready(ready_fd, "out of memory\n");
		return 1;
	}
	s->listen_fd = s->stop_fd = -1;
	for (size_t i = 0; i < MSB_CONTROL_CONNS_MAX; i++)
		s->conns[i].fd = -1;
	signal(SIGPIPE, SIG_IGN);
	int r = msb_sandbox_load(home, name, build_root, &l, &err);
	const char *dir = l.dir;
	if (r == 0) {
		s->spec = l.spec;
		r = msb_sandbox_boot(&s->sb, s->spec, l.hv, l.storage, l.net, l.secrets, &l.assets,
				     dir, &sup_ops, s,
				     s->spec->max_duration_ms && s->spec->max_duration_ms < 120000
					     ? (int)s->spec->max_duration_ms
					     : 120000,
				     &err);
	}
	if (r == 0) {
		dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = dfd < 0 ? msb_error_errno(&err, -errno, "sandbox directory") : 0;
	}
	if (r == 0 && (s->listen_fd = listen_on(dfd, &err)) < 0)
		r = s->listen_fd;
	if (r == 0) {
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
		struct msb_state st2;
		if ((r = msb_state_open(home, &st2, &err)) == 0) {
			r = msb_state_write(&st2, name, MSB_SUPERVISOR_PID, pid, (size_t)n, &err);
			msb_state_close(&st2);
		}
	}
	if (r < 0) {
		snprintf(msg, sizeof(msg), "%s\n", err.msg);
		log_line("%s", err.msg);
		ready(ready_fd, msg);
		goto out;
	}
	/* From here on this thread reads the guest agent's frames: under a filter. */
	if (msb_sandbox_confine(&err) < 0) {
		snprintf(msg, sizeof(msg), "%s\n", err.msg);
		log_line("%s", err.msg);
		ready(ready_fd, msg);
		goto out;
	}
	log_line("sandbox %s is ready (agent %s)", name,
		 msb_agent_client_agent_version(s->sb.agent));
	ready(ready_fd, "ok\n");
	status = serve(s);
	/* An orderly stop: the agent syncs the disks before the VM goes. */
	msb_sandbox_stop(&s->sb, 10000);
	if (s->stop_fd >= 0) {
		for (size_t i = 0; i < MSB_CONTROL_CONNS_MAX; i++)
			if (s->conns[i].used && s->conns[i].fd == s->stop_fd) {
				conn_send(s, &s->conns[i], MSB_AGENT_SHUTDOWN_ACK, 0, NULL, 0);
				int fl = fcntl(s->conns[i].fd, F_GETFL);
				fcntl(s->conns[i].fd, F_SETFL, fl & ~O_NONBLOCK);
				conn_flush(s, &s->conns[i]);
			}
	}
	log_line("sandbox %s stopped", name);
out:
	if (dfd >= 0) {
		unlinkat(dfd, MSB_CONTROL_SOCKET, 0);
		unlinkat(dfd, MSB_SUPERVISOR_PID, 0);
		close(dfd);
	}
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	for (size_t i = 0; i < MSB_CONTROL_CONNS_MAX; i++)
		if (s->conns[i].used) {
			close(s->conns[i].fd);
			free(s->conns[i].rbuf);
			free(s->conns[i].sq);
		}
	msb_sandbox_stop(&s->sb, 0);
	msb_sandbox_unload(&l);
	free(s);
	return status;
}
