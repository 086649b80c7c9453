/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host side of the agent protocol: see agent-client.h for the API and
 * the guarantees, docs/agent-protocol.md for the protocol.
 *
 * Defends against a hostile guest: every byte read from the connection is
 * parsed here and nowhere else (on_frame), after the shared codec's checks;
 * the session state machine rejects frames out of order or for sessions the
 * host never started; output is accepted only within the window granted;
 * guest strings are bounded and sanitized.  A violation kills the connection
 * (-EPROTO) rather than being skipped: after one lie nothing else the guest
 * says can be believed, and a resynchronising parser is attack surface.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb.h>

#include "agent-client.h"
#include "error.h"

#define RBUF_CAP (MSB_AGENT_HEADER_SIZE + MSB_AGENT_FRAME_MAX)
/* Room beyond MSB_AGENT_CLIENT_SENDQ_MAX for small control frames, so a
 * signal or a grant still goes out when data filled the queue. */
#define SENDQ_RESERVE (64 * 1024)
#define SENDQ_CAP     (MSB_AGENT_CLIENT_SENDQ_MAX + SENDQ_RESERVE)
/* Output credit is returned in batches (a quarter window: the agent never
 * stalls for want of a grant unless the caller holds output back). */
#define GRANT_BATCH (MSB_AGENT_WINDOW_INITIAL / 4)
#define CREDIT_MAX  (UINT64_C(1) << 40)
/* Reads per handle call: a guest flooding the connection cannot keep the
 * caller's loop from running its other work. */
#define READS_PER_CALL 16
#define VERSION_MAX    128
/* Session ids: generation * MSB_AGENT_SESSIONS_MAX + slot, generation >= 1. */
#define GEN_MAX (UINT32_MAX / MSB_AGENT_SESSIONS_MAX - 1)

enum state { S_FREE, S_PENDING, S_RUNNING, S_ENDED };

struct csession {
	uint32_t id;
	enum state state;
	int detached;
	unsigned cflags;
	uint32_t flags; /* the EXEC flags */
	void *data;
	uint64_t out_credit; /* output bytes the guest may still send */
	uint64_t unconsumed; /* MANUAL_CREDIT: delivered, not consumed */
	uint64_t grant;	     /* consumed, not granted yet */
	uint64_t in_credit;  /* stdin bytes we may still send */
	int stdin_closed;
	struct msb_agent_status st;
};

struct msb_agent_client {
	int fd;
	struct msb_agent_client_ops ops;
	void *opaque;
	int dead; /* < 0 once the connection is unusable */
	char dead_msg[MSB_ERROR_MSG_MAX];
	int hello;
	char version[VERSION_MAX];
	uint8_t rbuf[RBUF_CAP];
	size_t rlen;
	uint8_t *sq; /* [sq_start, sq_end) waits for the fd */
	size_t sq_start, sq_end;
	struct csession s[MSB_AGENT_SESSIONS_MAX];
	uint32_t gen[MSB_AGENT_SESSIONS_MAX];
	int grants_dirty;
	uint64_t ping_sent, ping_acked;
	uint32_t pings_outstanding;
	int shutdown_sent, shutdown_acked;
	/* One MOUNT at a time: sent, answered, and the answer. */
	int mount_sent, mount_done, mount_errno;
	char mount_msg[MSB_AGENT_CLIENT_MSG_MAX];
	/* One TRUST at a time, the same way. */
	int trust_sent, trust_done, trust_errno;
	char trust_msg[MSB_AGENT_CLIENT_MSG_MAX];
	uint8_t ebuf[MSB_AGENT_FRAME_MAX]; /* one encoded exec request */
};

/* ---- helpers ------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left until deadline (-1: none), 0 when passed. */
static int remaining(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - now_ms();
	if (left <= 0)
		return 0;
	return left > 1000000 ? 1000000 : (int)left;
}

/* Copy a guest string for display: bounded, printable ASCII only, so it
 * cannot carry terminal escape sequences into a log or a user's terminal. */
static void sanitize(char *dst, size_t cap, const uint8_t *src, size_t len)
{
	if (len > cap - 1)
		len = cap - 1;
	for (size_t i = 0; i < len; i++)
		dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? (char)src[i] : '?';
	dst[len] = '\0';
}

/* Mark the connection dead (the first reason wins) and report it. */
static int die(struct msb_agent_client *c, struct msb_error *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int die(struct msb_agent_client *c, struct msb_error *err, int code, const char *fmt, ...)
{
	if (!c->dead) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->dead_msg, sizeof(c->dead_msg), fmt, ap);
		va_end(ap);
		c->dead = code;
	}
	return msb_error_set(err, c->dead, "agent connection: %s", c->dead_msg);
}

static int check_alive(struct msb_agent_client *c, struct msb_error *err)
{
	return c->dead ? msb_error_set(err, c->dead, "agent connection: %s", c->dead_msg) : 0;
}

static struct csession *lookup(struct msb_agent_client *c, uint32_t id)
{
	if (id == 0)
		return NULL;
	struct csession *s = &c->s[id % MSB_AGENT_SESSIONS_MAX];
	return s->state != S_FREE && s->id == id ? s : NULL;
}

static const struct csession *lookup_const(const struct msb_agent_client *c, uint32_t id)
{
	return lookup((struct msb_agent_client *)c, id);
}

static void session_free(struct csession *s)
{
	memset(s, 0, sizeof(*s));
}

/* ---- the send queue --------------------------------------------------------- */

static size_t sq_used(const struct msb_agent_client *c)
{
	return c->sq_end - c->sq_start;
}

/* Queue a frame; control frames may use the reserve.  0 or -EAGAIN. */
static int sq_frame(struct msb_agent_client *c, uint8_t type, uint32_t session, const void *payload,
		    size_t len, int control)
{
	size_t limit = control ? SENDQ_CAP : MSB_AGENT_CLIENT_SENDQ_MAX;
	size_t need = MSB_AGENT_HEADER_SIZE + len;
	if (sq_used(c) + need > limit)
		return -EAGAIN;
	if (c->sq_end + need > SENDQ_CAP) {
		memmove(c->sq, c->sq + c->sq_start, sq_used(c));
		c->sq_end -= c->sq_start;
		c->sq_start = 0;
	}
	msb_agent_header_encode(c->sq + c->sq_end, type, session, (uint32_t)len);
	if (len)
		memcpy(c->sq + c->sq_end + MSB_AGENT_HEADER_SIZE, payload, len);
	c->sq_end += need;
	return 0;
}

static int sq_u32(struct msb_agent_client *c, uint8_t type, uint32_t session, uint32_t v)
{
	uint8_t p[4];
	msb_agent_put_u32(p, v);
	return sq_frame(c, type, session, p, sizeof(p), 1);
}

/* Queue WINDOW frames for output the caller consumed. */
static void queue_grants(struct msb_agent_client *c)
{
	if (!c->grants_dirty)
		return;
	c->grants_dirty = 0;
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++) {
		struct csession *s = &c->s[i];
		if (s->state != S_RUNNING || s->grant < GRANT_BATCH)
			continue;
		uint32_t n = s->grant > UINT32_MAX ? UINT32_MAX : (uint32_t)s->grant;
		if (sq_u32(c, MSB_AGENT_WINDOW, s->id, n) < 0) {
			c->grants_dirty = 1; /* retried when the queue drains */
			return;
		}
		s->grant -= n;
		s->out_credit += n;
	}
}

/* Write what the fd takes now. */
static int sq_flush(struct msb_agent_client *c, struct msb_error *err)
{
	queue_grants(c);
	if (c->fd < 0) {
		c->sq_start = c->sq_end = 0; /* no transport: sent into the void */
		return 0;
	}
	while (sq_used(c) > 0) {
		/* MSG_NOSIGNAL: a closed peer is an error to report, not a SIGPIPE
		 * that kills the caller; plain write for non-sockets. */
		ssize_t n = send(c->fd, c->sq + c->sq_start, sq_used(c), MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK)
			n = write(c->fd, c->sq + c->sq_start, sq_used(c));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0)
			return die(c, err, n < 0 && errno != EPIPE ? -errno : -EPIPE, "write: %s",
				   n < 0 ? strerror(errno) : "short write");
		c->sq_start += (size_t)n;
		if (sq_used(c) == 0 || c->grants_dirty)
			queue_grants(c);
	}
	if (sq_used(c) == 0)
		c->sq_start = c->sq_end = 0;
	return 0;
}

/* ---- frames from the guest ---------------------------------------------------- */

/* Output credit consumed by the caller (auto, or msb_agent_client_consumed). */
static void add_grant(struct msb_agent_client *c, struct csession *s, uint64_t n)
{
	s->grant += n;
	if (s->grant >= GRANT_BATCH)
		c->grants_dirty = 1;
}

static void end_session(struct msb_agent_client *c, struct csession *s)
{
	s->state = S_ENDED;
	if (!s->detached && c->ops.ended)
		c->ops.ended(c->opaque, s->id, s->data, &s->st);
	if (s->detached)
		session_free(s);
}

static int on_frame(struct msb_agent_client *c, const struct msb_agent_header *h, const uint8_t *p,
		    struct msb_error *err)
{
	struct csession *s = NULL;
	uint32_t v;

	if (!c->hello && h->type != MSB_AGENT_HELLO)
		return die(c, err, -EPROTO, "frame type %u before HELLO", h->type);
	/* validate_from_guest guarantees session != 0 for these. */
	if (h->session != 0) {
		s = lookup(c, h->session);
		if (!s)
			return die(c, err, -EPROTO, "frame type %u for unknown session %u", h->type,
				   h->session);
	}

	switch (h->type) {
	case MSB_AGENT_HELLO:
		if (c->hello)
			return die(c, err, -EPROTO, "second HELLO");
		v = msb_agent_get_u32(p);
		if (v != MSB_AGENT_PROTO_VERSION)
			return die(c, err, -EPROTONOSUPPORT, "agent speaks protocol %u, not %u", v,
				   MSB_AGENT_PROTO_VERSION);
		sanitize(c->version, sizeof(c->version), p + 8, msb_agent_get_u32(p + 4));
		c->hello = 1;
		return 0;

	case MSB_AGENT_STARTED:
		if (s->state != S_PENDING)
			return die(c, err, -EPROTO, "STARTED for session %u twice", s->id);
		s->state = S_RUNNING;
		if (!s->detached && c->ops.started)
			c->ops.started(c->opaque, s->id, s->data, msb_agent_get_u32(p));
		return 0;

	case MSB_AGENT_STDOUT:
	case MSB_AGENT_STDERR:
		if (s->state != S_RUNNING)
			return die(c, err, -EPROTO, "output for session %u, not running", s->id);
		if (h->type == MSB_AGENT_STDERR && (s->flags & MSB_AGENT_EXEC_TTY))
			return die(c, err, -EPROTO, "STDERR on pty session %u", s->id);
		/* Flow control is what bounds the caller's memory (a consumer that
		 * buffers output): a guest overrunning its window is lying. */
		if (h->length > s->out_credit)
			return die(c, err, -EPROTO, "session %u sent %u bytes beyond its window",
				   s->id, h->length);
		s->out_credit -= h->length;
		if (s->detached || !c->ops.output) {
			add_grant(c, s, h->length);
		} else if (s->cflags & MSB_AGENT_CLIENT_MANUAL_CREDIT) {
			s->unconsumed += h->length;
			c->ops.output(c->opaque, s->id, s->data,
				      h->type == MSB_AGENT_STDOUT ? MSB_AGENT_CLIENT_STDOUT
								  : MSB_AGENT_CLIENT_STDERR,
				      p, h->length);
		} else {
			c->ops.output(c->opaque, s->id, s->data,
				      h->type == MSB_AGENT_STDOUT ? MSB_AGENT_CLIENT_STDOUT
								  : MSB_AGENT_CLIENT_STDERR,
				      p, h->length);
			/* The callback may have released the session. */
			if (lookup(c, h->session) == s && s->state == S_RUNNING)
				add_grant(c, s, h->length);
		}
		return 0;

	case MSB_AGENT_EXIT: {
		int32_t code = msb_agent_get_i32(p), sig = msb_agent_get_i32(p + 4);
		if (s->state != S_RUNNING)
			return die(c, err, -EPROTO, "EXIT for session %u, not running", s->id);
		if (!((sig == 0 && code >= 0 && code <= 255) ||
		      (code == -1 && sig >= 1 && sig <= 64)))
			return die(c, err, -EPROTO, "session %u: impossible exit (%d, signal %d)",
				   s->id, code, sig);
		s->st.exit_code = code;
		s->st.signal = sig;
		end_session(c, s);
		return 0;
	}

	case MSB_AGENT_ERROR: {
		int32_t e = msb_agent_get_i32(p);
		if (s->state != S_PENDING)
			return die(c, err, -EPROTO, "ERROR for session %u, already started", s->id);
		if (e <= 0 || e > 4095)
			return die(c, err, -EPROTO, "session %u: ERROR with errno %d", s->id, e);
		s->st.failed = 1;
		s->st.errnum = e;
		s->st.exit_code = -1;
		sanitize(s->st.message, sizeof(s->st.message), p + 8, msb_agent_get_u32(p + 4));
		end_session(c, s);
		return 0;
	}

	case MSB_AGENT_PONG:
		if (c->pings_outstanding == 0)
			return die(c, err, -EPROTO, "PONG without PING");
		c->pings_outstanding--;
		if (h->length == 8) {
			uint64_t n = msb_agent_get_u32(p) | (uint64_t)msb_agent_get_u32(p + 4)
								    << 32;
			if (n > c->ping_sent)
				return die(c, err, -EPROTO, "PONG for a PING never sent");
			if (n > c->ping_acked)
				c->ping_acked = n;
		}
		return 0;

	case MSB_AGENT_SHUTDOWN_ACK:
		if (!c->shutdown_sent || c->shutdown_acked)
			return die(c, err, -EPROTO, "unexpected SHUTDOWN_ACK");
		c->shutdown_acked = 1;
		return 0;

	case MSB_AGENT_MOUNTED: {
		int32_t e = msb_agent_get_i32(p);
		if (!c->mount_sent || c->mount_done)
			return die(c, err, -EPROTO, "MOUNTED without a MOUNT");
		if (e < 0 || e > 4095)
			return die(c, err, -EPROTO, "MOUNTED with errno %d", e);
		c->mount_done = 1;
		c->mount_errno = e;
		sanitize(c->mount_msg, sizeof(c->mount_msg), p + 8, msb_agent_get_u32(p + 4));
		return 0;
	}

	case MSB_AGENT_TRUSTED: {
		int32_t e = msb_agent_get_i32(p);
		if (!c->trust_sent || c->trust_done)
			return die(c, err, -EPROTO, "TRUSTED without a TRUST");
		if (e < 0 || e > 4095)
			return die(c, err, -EPROTO, "TRUSTED with errno %d", e);
		c->trust_done = 1;
		c->trust_errno = e;
		sanitize(c->trust_msg, sizeof(c->trust_msg), p + 8, msb_agent_get_u32(p + 4));
		return 0;
	}

	case MSB_AGENT_WINDOW:
		if (s->state != S_RUNNING || !(s->flags & MSB_AGENT_EXEC_STDIN))
			return die(c, err, -EPROTO, "stdin WINDOW for session %u", s->id);
		s->in_credit += msb_agent_get_u32(p);
		if (s->in_credit > CREDIT_MAX)
			s->in_credit = CREDIT_MAX;
		return 0;

	default:
		/* validate_from_guest let through only the types above. */
		return die(c, err, -EPROTO, "frame type %u", h->type);
	}
}

/* Dispatch every complete frame in the receive buffer. */
static int process(struct msb_agent_client *c, struct msb_error *err)
{
	size_t off = 0;
	int r = 0;
	while (!c->dead && c->rlen - off >= MSB_AGENT_HEADER_SIZE) {
		struct msb_agent_header h;
		r = msb_agent_header_decode(c->rbuf + off, c->rlen - off, &h);
		if (r < 0 || !msb_agent_type_from_guest(h.type)) {
			r = die(c, err, -EPROTO,
				"bad frame header (version %u, type %u, flags %#x, length %u)",
				h.version, h.type, h.flags, h.length);
			break;
		}
		if (c->rlen - off - MSB_AGENT_HEADER_SIZE < h.length)
			break; /* wait for the rest (it fits: length <= FRAME_MAX) */
		const uint8_t *p = c->rbuf + off + MSB_AGENT_HEADER_SIZE;
		if (msb_agent_validate_from_guest(&h, p) < 0) {
			r = die(c, err, -EPROTO, "malformed frame (type %u, session %u, length %u)",
				h.type, h.session, h.length);
			break;
		}
		r = on_frame(c, &h, p, err);
		if (r < 0)
			break;
		off += MSB_AGENT_HEADER_SIZE + h.length;
	}
	if (c->dead) {
		c->rlen = 0;
		return r < 0 ? r : check_alive(c, err);
	}
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
	return 0;
}

static int do_read(struct msb_agent_client *c, struct msb_error *err)
{
	for (int i = 0; i < READS_PER_CALL && !c->dead; i++) {
		ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF_CAP - c->rlen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return die(c, err, -errno, "read: %s", strerror(errno));
		if (n == 0)
			return die(c, err, -EPIPE, "the agent closed the connection");
		c->rlen += (size_t)n;
		int r = process(c, err);
		if (r < 0)
			return r;
	}
	return check_alive(c, err);
}

/* ---- lifecycle --------------------------------------------------------------- */

int msb_agent_client_new(int fd, const struct msb_agent_client_ops *ops, void *opaque,
			 struct msb_agent_client **out, struct msb_error *err)
{
	if (fd >= 0) {
		int fl = fcntl(fd, F_GETFL);
		if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
			return msb_error_errno(err, -errno, "agent connection fd %d", fd);
	}
	struct msb_agent_client *c = calloc(1, sizeof(*c));
	uint8_t *sq = malloc(SENDQ_CAP);
	if (!c || !sq) {
		free(c);
		free(sq);
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	c->fd = fd;
	c->sq = sq;
	if (ops)
		c->ops = *ops;
	c->opaque = opaque;
	*out = c;
	return 0;
}

void msb_agent_client_free(struct msb_agent_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c->sq);
	free(c);
}

const char *msb_agent_client_agent_version(const struct msb_agent_client *c)
{
	return c->version;
}

int msb_agent_client_fd(const struct msb_agent_client *c)
{
	return c->fd;
}

short msb_agent_client_poll_events(const struct msb_agent_client *c)
{
	if (c->dead)
		return 0;
	return (short)(POLLIN | (sq_used(c) > 0 || c->grants_dirty ? POLLOUT : 0));
}

int msb_agent_client_handle(struct msb_agent_client *c, short revents, struct msb_error *err)
{
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	if (c->fd >= 0 && (revents & (POLLIN | POLLHUP | POLLERR))) {
		r = do_read(c, err);
		if (r < 0)
			return r;
	}
	/* Whatever the events: callbacks may have queued frames. */
	return sq_flush(c, err);
}

int msb_agent_client_feed(struct msb_agent_client *c, const void *buf, size_t len,
			  struct msb_error *err)
{
	const uint8_t *b = buf;
	int r = check_alive(c, err);
	while (r == 0 && len > 0) {
		size_t n = RBUF_CAP - c->rlen;
		if (n > len)
			n = len;
		memcpy(c->rbuf + c->rlen, b, n);
		c->rlen += n;
		b += n;
		len -= n;
		r = process(c, err);
	}
	return r < 0 ? r : sq_flush(c, err);
}

int msb_agent_client_pump(struct msb_agent_client *c, int timeout_ms, struct pollfd *extra,
			  size_t n_extra, struct msb_error *err)
{
	struct pollfd small[8], *pfd = small;
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	r = sq_flush(c, err);
	if (r < 0)
		return r;
	if (n_extra + 1 > sizeof(small) / sizeof(small[0])) {
		pfd = calloc(n_extra + 1, sizeof(*pfd));
		if (!pfd)
			return msb_error_set(err, -ENOMEM, "out of memory");
	}
	pfd[0] = (struct pollfd){.fd = c->fd, .events = msb_agent_client_poll_events(c)};
	for (size_t i = 0; i < n_extra; i++) {
		pfd[i + 1] = extra[i];
		pfd[i + 1].revents = 0;
	}
	int n = poll(pfd, n_extra + 1, timeout_ms);
	if (n < 0) {
		r = errno == EINTR ? 0 : msb_error_errno(err, -errno, "poll");
		n = 0;
		for (size_t i = 0; i < n_extra + 1; i++)
			pfd[i].revents = 0;
	}
	int ready = 0;
	for (size_t i = 0; i < n_extra; i++) {
		extra[i].revents = pfd[i + 1].revents;
		ready += extra[i].revents != 0;
	}
	short re = pfd[0].revents;
	if (pfd != small)
		free(pfd);
	if (r < 0)
		return r;
	if (c->fd >= 0) {
		r = msb_agent_client_handle(c, re, err);
		if (r < 0)
			return r;
	}
	return ready;
}

int msb_agent_client_flush(struct msb_agent_client *c, int timeout_ms, struct msb_error *err)
{
	int64_t deadline = deadline_of(timeout_ms);
	for (;;) {
		int r = sq_flush(c, err);
		if (r < 0)
			return r;
		if (sq_used(c) == 0 && !c->grants_dirty)
			return 0;
		int left = remaining(deadline);
		if (left == 0)
			return msb_error_set(err, -ETIMEDOUT, "agent connection: send timed out");
		r = msb_agent_client_pump(c, left, NULL, 0, err);
		if (r < 0)
			return r;
	}
}

/* Pump until done(c, arg) or the deadline. */
static int pump_until(struct msb_agent_client *c, int (*done)(struct msb_agent_client *, void *),
		      void *arg, int timeout_ms, const char *what, struct msb_error *err)
{
	int64_t deadline = deadline_of(timeout_ms);
	for (;;) {
		if (done(c, arg))
			return 0;
		int r = check_alive(c, err);
		if (r < 0)
			return r;
		int left = remaining(deadline);
		if (left == 0)
			return msb_error_set(err, -ETIMEDOUT, "timed out waiting for %s", what);
		if (c->fd < 0)
			return msb_error_set(err, -ENOTCONN, "no connection to wait on");
		r = msb_agent_client_pump(c, left, NULL, 0, err);
		if (r < 0)
			return done(c, arg) ? 0 : r;
	}
}

static int hello_done(struct msb_agent_client *c, void *arg)
{
	(void)arg;
	return c->hello;
}

int msb_agent_client_wait_hello(struct msb_agent_client *c, int timeout_ms, struct msb_error *err)
{
	return pump_until(c, hello_done, NULL, timeout_ms, "the agent's HELLO", err);
}

/* ---- sessions ------------------------------------------------------------------ */

static int find_session(struct msb_agent_client *c, uint32_t id, struct csession **out,
			struct msb_error *err)
{
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	*out = lookup(c, id);
	if (!*out || (*out)->detached)
		return msb_error_set(err, -ENOENT, "no agent session %u", id);
	return 0;
}

int msb_agent_client_exec(struct msb_agent_client *c, const struct msb_agent_exec *req,
			  unsigned cflags, void *data, uint32_t *session, struct msb_error *err)
{
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	if (cflags & ~MSB_AGENT_CLIENT_MANUAL_CREDIT)
		return msb_error_set(err, -EINVAL, "exec: unknown client flags %#x", cflags);
	size_t slot = MSB_AGENT_SESSIONS_MAX;
	for (size_t i = 0; i < MSB_AGENT_SESSIONS_MAX; i++) {
		if (c->s[i].state == S_FREE) {
			slot = i;
			break;
		}
	}
	if (slot == MSB_AGENT_SESSIONS_MAX)
		return msb_error_set(err, -EAGAIN, "exec: %d sessions unreleased",
				     MSB_AGENT_SESSIONS_MAX);
	int len = msb_agent_exec_encode(req, c->ebuf, sizeof(c->ebuf));
	if (len < 0)
		return msb_error_set(err, len, "exec: %s",
				     len == -EMSGSIZE ? "request too large for the protocol"
						      : "invalid request");
	uint32_t gen = c->gen[slot] >= GEN_MAX ? 1 : c->gen[slot] + 1;
	uint32_t id = gen * MSB_AGENT_SESSIONS_MAX + (uint32_t)slot;
	r = sq_frame(c, MSB_AGENT_EXEC, id, c->ebuf, (size_t)len, 0);
	if (r < 0)
		return msb_error_set(err, r, "exec: send queue full");
	c->gen[slot] = gen;
	struct csession *s = &c->s[slot];
	session_free(s);
	s->id = id;
	s->state = S_PENDING;
	s->cflags = cflags;
	s->flags = req->flags;
	s->data = data;
	s->out_credit = MSB_AGENT_WINDOW_INITIAL;
	s->in_credit = (req->flags & MSB_AGENT_EXEC_STDIN) ? MSB_AGENT_WINDOW_INITIAL : 0;
	*session = id;
	return sq_flush(c, err);
}

/* Is stdin writable on s?  0 or an error. */
static int stdin_usable(struct csession *s, struct msb_error *err)
{
	if (!(s->flags & MSB_AGENT_EXEC_STDIN))
		return msb_error_set(err, -EINVAL, "session %u has no stdin", s->id);
	if (s->stdin_closed || s->state == S_ENDED)
		return msb_error_set(err, -EPIPE, "session %u: stdin is closed", s->id);
	return 0;
}

size_t msb_agent_client_stdin_room(const struct msb_agent_client *c, uint32_t session)
{
	const struct csession *s = lookup_const(c, session);
	if (c->dead || !s || s->detached || s->stdin_closed || s->state == S_ENDED ||
	    !(s->flags & MSB_AGENT_EXEC_STDIN))
		return 0;
	size_t used = sq_used(c);
	if (used + MSB_AGENT_HEADER_SIZE >= MSB_AGENT_CLIENT_SENDQ_MAX)
		return 0;
	size_t room = MSB_AGENT_CLIENT_SENDQ_MAX - used - MSB_AGENT_HEADER_SIZE;
	return s->in_credit < room ? (size_t)s->in_credit : room;
}

ssize_t msb_agent_client_write_stdin(struct msb_agent_client *c, uint32_t session, const void *buf,
				     size_t len, struct msb_error *err)
{
	struct csession *s;
	int r = find_session(c, session, &s, err);
	if (r == 0)
		r = stdin_usable(s, err);
	if (r < 0)
		return r;
	const uint8_t *b = buf;
	size_t done = 0;
	while (done < len) {
		size_t n = len - done, room = msb_agent_client_stdin_room(c, session);
		if (n > room)
			n = room;
		if (n > MSB_AGENT_FRAME_MAX)
			n = MSB_AGENT_FRAME_MAX;
		if (n == 0 || sq_frame(c, MSB_AGENT_STDIN, session, b + done, n, 0) < 0)
			break;
		s->in_credit -= n;
		done += n;
	}
	r = sq_flush(c, err);
	return r < 0 ? r : (ssize_t)done;
}

int msb_agent_client_write_stdin_all(struct msb_agent_client *c, uint32_t session, const void *buf,
				     size_t len, int timeout_ms, struct msb_error *err)
{
	int64_t deadline = deadline_of(timeout_ms);
	const uint8_t *b = buf;
	while (len > 0) {
		ssize_t n = msb_agent_client_write_stdin(c, session, b, len, err);
		if (n < 0)
			return (int)n;
		b += n;
		len -= (size_t)n;
		if (len == 0)
			break;
		int left = remaining(deadline);
		if (left == 0)
			return msb_error_set(err, -ETIMEDOUT, "session %u: stdin timed out",
					     session);
		int r = msb_agent_client_pump(c, left, NULL, 0, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int msb_agent_client_close_stdin(struct msb_agent_client *c, uint32_t session,
				 struct msb_error *err)
{
	struct csession *s;
	int r = find_session(c, session, &s, err);
	if (r == 0)
		r = stdin_usable(s, err);
	if (r < 0)
		return r;
	r = sq_frame(c, MSB_AGENT_STDIN, session, NULL, 0, 1);
	if (r < 0)
		return msb_error_set(err, r, "session %u: send queue full", session);
	s->stdin_closed = 1;
	return sq_flush(c, err);
}

int msb_agent_client_signal(struct msb_agent_client *c, uint32_t session, int sig,
			    struct msb_error *err)
{
	struct csession *s;
	int r = find_session(c, session, &s, err);
	if (r < 0)
		return r;
	if (sig < 1 || sig > 64)
		return msb_error_set(err, -EINVAL, "bad signal %d", sig);
	if (s->state == S_ENDED)
		return msb_error_set(err, -ESRCH, "session %u has ended", session);
	r = sq_u32(c, MSB_AGENT_SIGNAL, session, (uint32_t)sig);
	if (r < 0)
		return msb_error_set(err, r, "session %u: send queue full", session);
	return sq_flush(c, err);
}

int msb_agent_client_resize(struct msb_agent_client *c, uint32_t session, uint16_t rows,
			    uint16_t cols, struct msb_error *err)
{
	struct csession *s;
	int r = find_session(c, session, &s, err);
	if (r < 0)
		return r;
	if (!(s->flags & MSB_AGENT_EXEC_TTY))
		return msb_error_set(err, -EINVAL, "session %u has no terminal", session);
	if (s->state == S_ENDED)
		return msb_error_set(err, -ESRCH, "session %u has ended", session);
	uint8_t p[4];
	msb_agent_put_u16(p, rows);
	msb_agent_put_u16(p + 2, cols);
	r = sq_frame(c, MSB_AGENT_RESIZE, session, p, sizeof(p), 1);
	if (r < 0)
		return msb_error_set(err, r, "session %u: send queue full", session);
	return sq_flush(c, err);
}

int msb_agent_client_consumed(struct msb_agent_client *c, uint32_t session, size_t bytes,
			      struct msb_error *err)
{
	struct csession *s;
	int r = find_session(c, session, &s, err);
	if (r < 0)
		return r;
	if (bytes > s->unconsumed)
		return msb_error_set(err, -EINVAL,
				     "session %u: consumed %zu of %llu bytes delivered", session,
				     bytes, (unsigned long long)s->unconsumed);
	s->unconsumed -= bytes;
	if (s->state == S_RUNNING)
		add_grant(c, s, bytes);
	return sq_flush(c, err);
}

int msb_agent_client_ended(const struct msb_agent_client *c, uint32_t session,
			   struct msb_agent_status *st)
{
	const struct csession *s = lookup_const(c, session);
	if (!s || s->detached)
		return -ENOENT;
	if (s->state != S_ENDED)
		return 0;
	if (st)
		*st = s->st;
	return 1;
}

static int session_done(struct msb_agent_client *c, void *arg)
{
	const struct csession *s = lookup(c, *(uint32_t *)arg);
	return !s || s->state == S_ENDED;
}

int msb_agent_client_wait(struct msb_agent_client *c, uint32_t session, struct msb_agent_status *st,
			  int timeout_ms, struct msb_error *err)
{
	struct csession *s;
	if (!lookup(c, session) || lookup(c, session)->detached)
		return msb_error_set(err, -ENOENT, "no agent session %u", session);
	int r = pump_until(c, session_done, &session, timeout_ms, "the session to end", err);
	s = lookup(c, session);
	if (s && s->state == S_ENDED) {
		if (st)
			*st = s->st;
		session_free(s);
		return 0;
	}
	if (r == 0)
		r = msb_error_set(err, -ENOENT, "session %u was released", session);
	return r;
}

int msb_agent_client_release(struct msb_agent_client *c, uint32_t session)
{
	struct csession *s = lookup(c, session);
	if (!s || s->detached)
		return -ENOENT;
	if (s->state == S_ENDED) {
		session_free(s);
		return 0;
	}
	/* Output still arrives until EXIT; it is granted back unseen. */
	s->detached = 1;
	add_grant(c, s, s->unconsumed);
	s->unconsumed = 0;
	return 0;
}

/* ---- connection-level requests ------------------------------------------------- */

static int ping_done(struct msb_agent_client *c, void *arg)
{
	return c->ping_acked >= *(uint64_t *)arg;
}

int msb_agent_client_ping(struct msb_agent_client *c, int timeout_ms, struct msb_error *err)
{
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	uint64_t nonce = c->ping_sent + 1;
	uint8_t p[8];
	msb_agent_put_u32(p, (uint32_t)nonce);
	msb_agent_put_u32(p + 4, (uint32_t)(nonce >> 32));
	r = sq_frame(c, MSB_AGENT_PING, 0, p, sizeof(p), 1);
	if (r < 0)
		return msb_error_set(err, r, "ping: send queue full");
	c->ping_sent = nonce;
	c->pings_outstanding++;
	return pump_until(c, ping_done, &nonce, timeout_ms, "PONG", err);
}

static int mount_answered(struct msb_agent_client *c, void *arg)
{
	(void)arg;
	return c->mount_done;
}

int msb_agent_client_mount(struct msb_agent_client *c, const struct msb_agent_mount *m,
			   int timeout_ms, struct msb_error *err)
{
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	if (c->mount_sent && !c->mount_done)
		return msb_error_set(err, -EBUSY, "mount: another MOUNT is unanswered");
	int len = msb_agent_mount_encode(m, c->ebuf, sizeof(c->ebuf));
	if (len < 0)
		return msb_error_set(err, len, "mount %s on %s: %s", m->tag ? m->tag : "?",
				     m->path ? m->path : "?",
				     len == -EMSGSIZE ? "request too large for the protocol"
						      : "invalid request");
	r = sq_frame(c, MSB_AGENT_MOUNT, 0, c->ebuf, (size_t)len, 1);
	if (r < 0)
		return msb_error_set(err, r, "mount: send queue full");
	c->mount_sent = 1;
	c->mount_done = 0;
	r = pump_until(c, mount_answered, NULL, timeout_ms, "the agent's answer to MOUNT", err);
	if (r < 0)
		return r;
	if (c->mount_errno)
		return msb_error_set(err, -c->mount_errno, "%s", c->mount_msg);
	return 0;
}

static int trust_answered(struct msb_agent_client *c, void *arg)
{
	(void)arg;
	return c->trust_done;
}

int msb_agent_client_trust(struct msb_agent_client *c, uint32_t kind, const char *pem, size_t len,
			   int timeout_ms, struct msb_error *err)
{
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	if (c->trust_sent && !c->trust_done)
		return msb_error_set(err, -EBUSY, "trust: another TRUST is unanswered");
	if (!len || len > MSB_AGENT_FRAME_MAX - 4)
		return msb_error_set(err, -EMSGSIZE, "trust: %zu bytes of PEM (expected 1 to %d)",
				     len, MSB_AGENT_FRAME_MAX - 4);
	msb_agent_put_u32(c->ebuf, kind);
	memcpy(c->ebuf + 4, pem, len);
	r = sq_frame(c, MSB_AGENT_TRUST, 0, c->ebuf, len + 4, 1);
	if (r < 0)
		return msb_error_set(err, r, "trust: send queue full");
	c->trust_sent = 1;
	c->trust_done = 0;
	r = pump_until(c, trust_answered, NULL, timeout_ms, "the agent's answer to TRUST", err);
	if (r < 0)
		return r;
	if (c->trust_errno)
		return msb_error_set(err, -c->trust_errno, "%s", c->trust_msg);
	return 0;
}

static int shutdown_done(struct msb_agent_client *c, void *arg)
{
	(void)arg;
	return c->shutdown_acked;
}

int msb_agent_client_shutdown(struct msb_agent_client *c, uint32_t mode, int timeout_ms,
			      struct msb_error *err)
{
	int r = check_alive(c, err);
	if (r < 0)
		return r;
	if (mode != MSB_AGENT_POWEROFF && mode != MSB_AGENT_REBOOT)
		return msb_error_set(err, -EINVAL, "bad shutdown mode %u", mode);
	if (!c->shutdown_sent) {
		r = sq_u32(c, MSB_AGENT_SHUTDOWN, 0, mode);
		if (r < 0)
			return msb_error_set(err, r, "shutdown: send queue full");
		c->shutdown_sent = 1;
	}
	return pump_until(c, shutdown_done, NULL, timeout_ms, "SHUTDOWN_ACK", err);
}
