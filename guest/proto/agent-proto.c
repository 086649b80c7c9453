/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent protocol codec (agent-proto.h), shared by the host and the guest
 * agent.
 *
 * Defends against: a hostile guest (the host decodes every frame it sends)
 * and, on the agent side, a buggy host.  Every length is checked against the
 * bytes actually present before anything is read or copied, all arithmetic is
 * done in size_t on values already bounded by MSB_AGENT_FRAME_MAX, and no
 * function allocates: the caller provides every buffer, so hostile input can
 * never make the decoder grow memory.
 */
#include <errno.h>
#include <string.h>

#include "agent-proto.h"

int msb_agent_type_from_guest(uint8_t t)
{
	switch (t) {
	case MSB_AGENT_HELLO:
	case MSB_AGENT_STDOUT:
	case MSB_AGENT_STDERR:
	case MSB_AGENT_EXIT:
	case MSB_AGENT_ERROR:
	case MSB_AGENT_STARTED:
	case MSB_AGENT_PONG:
	case MSB_AGENT_SHUTDOWN_ACK:
	case MSB_AGENT_MOUNTED:
	case MSB_AGENT_TRUSTED:
	case MSB_AGENT_WINDOW:
		return 1;
	default:
		return 0;
	}
}

int msb_agent_type_from_host(uint8_t t)
{
	switch (t) {
	case MSB_AGENT_EXEC:
	case MSB_AGENT_STDIN:
	case MSB_AGENT_SIGNAL:
	case MSB_AGENT_RESIZE:
	case MSB_AGENT_PING:
	case MSB_AGENT_SHUTDOWN:
	case MSB_AGENT_MOUNT:
	case MSB_AGENT_TRUST:
	case MSB_AGENT_WINDOW:
		return 1;
	default:
		return 0;
	}
}

uint32_t msb_agent_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int32_t msb_agent_get_i32(const uint8_t *p)
{
	/* Two's complement by definition on every platform msb runs on. */
	return (int32_t)msb_agent_get_u32(p);
}

uint16_t msb_agent_get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

void msb_agent_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

void msb_agent_put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void msb_agent_header_encode(uint8_t *out, uint8_t type, uint32_t session, uint32_t length)
{
	out[0] = MSB_AGENT_PROTO_VERSION;
	out[1] = type;
	msb_agent_put_u16(out + 2, 0);
	msb_agent_put_u32(out + 4, session);
	msb_agent_put_u32(out + 8, length);
}

int msb_agent_header_decode(const uint8_t *in, size_t len, struct msb_agent_header *h)
{
	if (len < MSB_AGENT_HEADER_SIZE)
		return -EPROTO;
	/* Filled before validation so a receiver can log the frame (and, for
	 * an unknown type or flags, skip it; see the header). */
	h->version = in[0];
	h->type = in[1];
	h->flags = msb_agent_get_u16(in + 2);
	h->session = msb_agent_get_u32(in + 4);
	h->length = msb_agent_get_u32(in + 8);
	if (h->version != MSB_AGENT_PROTO_VERSION)
		return -EPROTO;
	if (h->length > MSB_AGENT_FRAME_MAX)
		return -EMSGSIZE;
	if (!msb_agent_type_from_guest(h->type) && !msb_agent_type_from_host(h->type))
		return -EPROTO;
	if (h->flags != 0)
		return -EPROTO;
	return 0;
}

/*
 * Skip a string at *off without copying it: the same checks as
 * msb_agent_get_string, used to validate payloads in place.
 */
static int skip_string(const uint8_t *payload, size_t len, size_t *off, size_t max)
{
	if (*off > len || len - *off < 4)
		return -EPROTO;
	size_t n = msb_agent_get_u32(payload + *off);
	if (n > max || n > len - *off - 4)
		return -EPROTO;
	if (memchr(payload + *off + 4, '\0', n))
		return -EPROTO;
	*off += 4 + n;
	return 0;
}

int msb_agent_validate_from_guest(const struct msb_agent_header *h, const uint8_t *payload)
{
	size_t len = h->length, off;
	/* The connection-level frames carry session 0 and the per-session ones
	 * never do, so a guest cannot aim a control frame at a session or a
	 * session frame at the connection. */
	int conn = h->session == 0;

	if (h->version != MSB_AGENT_PROTO_VERSION || h->flags != 0 || len > MSB_AGENT_FRAME_MAX)
		return -EPROTO;
	if (len > 0 && !payload)
		return -EPROTO;
	switch (h->type) {
	case MSB_AGENT_HELLO:
		off = 4;
		if (!conn || len < 4 || skip_string(payload, len, &off, MSB_AGENT_STRING_MAX - 1))
			return -EPROTO;
		return off == len ? 0 : -EPROTO;
	case MSB_AGENT_STDOUT:
	case MSB_AGENT_STDERR:
		return !conn && len > 0 ? 0 : -EPROTO;
	case MSB_AGENT_EXIT:
		return !conn && len == 8 ? 0 : -EPROTO;
	case MSB_AGENT_ERROR:
		off = 4;
		if (conn || len < 4 || skip_string(payload, len, &off, MSB_AGENT_STRING_MAX - 1))
			return -EPROTO;
		return off == len ? 0 : -EPROTO;
	case MSB_AGENT_STARTED:
		return !conn && len == 4 ? 0 : -EPROTO;
	case MSB_AGENT_PONG:
		return conn && len <= MSB_AGENT_PING_MAX ? 0 : -EPROTO;
	case MSB_AGENT_SHUTDOWN_ACK:
		return conn && len == 0 ? 0 : -EPROTO;
	case MSB_AGENT_MOUNTED:
	case MSB_AGENT_TRUSTED:
		off = 4;
		if (!conn || len < 4 || skip_string(payload, len, &off, MSB_AGENT_STRING_MAX - 1))
			return -EPROTO;
		return off == len ? 0 : -EPROTO;
	case MSB_AGENT_WINDOW:
		return !conn && len == 4 ? 0 : -EPROTO;
	default:
		/* Including every host-to-agent type: the guest never sends those. */
		return -EPROTO;
	}
}

int msb_agent_validate_from_host(const struct msb_agent_header *h, const uint8_t *payload)
{
	size_t len = h->length;
	int conn = h->session == 0;

	if (h->version != MSB_AGENT_PROTO_VERSION || h->flags != 0 || len > MSB_AGENT_FRAME_MAX)
		return -EPROTO;
	if (len > 0 && !payload)
		return -EPROTO;
	switch (h->type) {
	case MSB_AGENT_EXEC:
		/* The shape is checked by msb_agent_exec_decode. */
		return !conn && len > 0 ? 0 : -EPROTO;
	case MSB_AGENT_STDIN:
		return !conn ? 0 : -EPROTO;
	case MSB_AGENT_SIGNAL:
		return !conn && len == 4 ? 0 : -EPROTO;
	case MSB_AGENT_RESIZE:
		return !conn && len == 4 ? 0 : -EPROTO;
	case MSB_AGENT_PING:
		return conn && len <= MSB_AGENT_PING_MAX ? 0 : -EPROTO;
	case MSB_AGENT_SHUTDOWN:
		return conn && len == 4 ? 0 : -EPROTO;
	case MSB_AGENT_MOUNT:
		/* The shape is checked by msb_agent_mount_decode. */
		return conn && len > 0 ? 0 : -EPROTO;
	case MSB_AGENT_TRUST:
		/* A kind and at least one byte of PEM; the text is checked by the agent. */
		return conn && len > 4 ? 0 : -EPROTO;
	case MSB_AGENT_WINDOW:
		return !conn && len == 4 ? 0 : -EPROTO;
	default:
		return -EPROTO;
	}
}

int msb_agent_get_string(const uint8_t *payload, size_t len, size_t *off, char *buf, size_t cap)
{
	if (cap == 0)
		return -EPROTO;
	size_t start = *off;
	if (skip_string(payload, len, &start, cap - 1))
		return -EPROTO;
	size_t n = start - *off - 4;
	memcpy(buf, payload + *off + 4, n);
	buf[n] = '\0';
	*off = start;
	return 0;
}

/* ---- exec requests ------------------------------------------------------- */

/* The fixed part: u32 flags, u16 rows, u16 cols. */
#define EXEC_FIXED 8

static int put_string(uint8_t *out, size_t cap, size_t *off, const char *s)
{
	if (!s)
		s = "";
	size_t n = strnlen(s, MSB_AGENT_STRING_MAX);
	if (n >= MSB_AGENT_STRING_MAX)
		return -EMSGSIZE;
	if (*off > cap || cap - *off < 4 || cap - *off - 4 < n)
		return -EMSGSIZE;
	msb_agent_put_u32(out + *off, (uint32_t)n);
	memcpy(out + *off + 4, s, n);
	*off += 4 + n;
	return 0;
}

int msb_agent_exec_encode(const struct msb_agent_exec *req, uint8_t *out, size_t cap)
{
	if (cap > MSB_AGENT_FRAME_MAX)
		cap = MSB_AGENT_FRAME_MAX;
	if (req->flags & ~(MSB_AGENT_EXEC_TTY | MSB_AGENT_EXEC_STDIN))
		return -EINVAL;
	if (req->argc < 1 || !req->argv || !req->argv[0])
		return -EINVAL;
	if (req->argc > MSB_AGENT_ARGS_MAX || req->envc > MSB_AGENT_ENV_MAX)
		return -EMSGSIZE;
	if (req->envc > 0 && !req->envp)
		return -EINVAL;
	if (cap < EXEC_FIXED)
		return -EMSGSIZE;
	msb_agent_put_u32(out, req->flags);
	msb_agent_put_u16(out + 4, req->rows);
	msb_agent_put_u16(out + 6, req->cols);
	size_t off = EXEC_FIXED;
	if (put_string(out, cap, &off, req->user) || put_string(out, cap, &off, req->cwd))
		return -EMSGSIZE;
	if (cap - off < 4)
		return -EMSGSIZE;
	msb_agent_put_u32(out + off, req->argc);
	off += 4;
	for (uint32_t i = 0; i < req->argc; i++) {
		if (!req->argv[i])
			return -EINVAL;
		if (put_string(out, cap, &off, req->argv[i]))
			return -EMSGSIZE;
	}
	if (cap - off < 4)
		return -EMSGSIZE;
	msb_agent_put_u32(out + off, req->envc);
	off += 4;
	for (uint32_t i = 0; i < req->envc; i++) {
		if (!req->envp[i])
			return -EINVAL;
		if (put_string(out, cap, &off, req->envp[i]))
			return -EMSGSIZE;
	}
	return (int)off;
}

/* Copy the string at *off into the arena; *s points at the copy. */
static int arena_string(const uint8_t *payload, size_t len, size_t *off, char *arena,
			size_t arena_cap, size_t *used, const char **s)
{
	size_t end = *off;
	if (skip_string(payload, len, &end, MSB_AGENT_STRING_MAX - 1))
		return -EPROTO;
	size_t n = end - *off - 4;
	if (arena_cap - *used < n + 1)
		return -E2BIG;
	char *dst = arena + *used;
	memcpy(dst, payload + *off + 4, n);
	dst[n] = '\0';
	*used += n + 1;
	*off = end;
	*s = dst;
	return 0;
}

/* Decode "u32 count, count strings" into vec (capacity vec_cap incl. NULL). */
static int string_vector(const uint8_t *payload, size_t len, size_t *off, uint32_t max, char *arena,
			 size_t arena_cap, size_t *used, const char **vec, size_t vec_cap,
			 uint32_t *count)
{
	if (*off > len || len - *off < 4)
		return -EPROTO;
	uint32_t n = msb_agent_get_u32(payload + *off);
	*off += 4;
	if (n > max)
		return -EPROTO;
	/* Each string takes at least 4 bytes: a count the payload cannot hold
	 * is malformed, whatever the caller's capacity. */
	if (n > (len - *off) / 4)
		return -EPROTO;
	if (!vec || vec_cap < (size_t)n + 1)
		return -E2BIG;
	for (uint32_t i = 0; i < n; i++) {
		int r = arena_string(payload, len, off, arena, arena_cap, used, &vec[i]);
		if (r)
			return r;
	}
	vec[n] = NULL;
	*count = n;
	return 0;
}

int msb_agent_exec_decode(const uint8_t *payload, size_t len, struct msb_agent_exec *req,
			  char *arena, size_t arena_cap, const char **argv, size_t argv_cap,
			  const char **envp, size_t env_cap)
{
	size_t off = EXEC_FIXED, used = 0;
	int r;

	memset(req, 0, sizeof(*req));
	if (len > MSB_AGENT_FRAME_MAX || len < EXEC_FIXED || (len > 0 && !payload))
		return -EPROTO;
	req->flags = msb_agent_get_u32(payload);
	if (req->flags & ~(MSB_AGENT_EXEC_TTY | MSB_AGENT_EXEC_STDIN))
		return -EPROTO;
	req->rows = msb_agent_get_u16(payload + 4);
	req->cols = msb_agent_get_u16(payload + 6);
	if (!arena)
		return -E2BIG;
	r = arena_string(payload, len, &off, arena, arena_cap, &used, &req->user);
	if (r == 0)
		r = arena_string(payload, len, &off, arena, arena_cap, &used, &req->cwd);
	if (r == 0)
		r = string_vector(payload, len, &off, MSB_AGENT_ARGS_MAX, arena, arena_cap, &used,
				  argv, argv_cap, &req->argc);
	if (r == 0 && req->argc == 0)
		r = -EPROTO;
	if (r == 0)
		r = string_vector(payload, len, &off, MSB_AGENT_ENV_MAX, arena, arena_cap, &used,
				  envp, env_cap, &req->envc);
	/* Strict: trailing bytes mean the peer and we disagree on the format. */
	if (r == 0 && off != len)
		r = -EPROTO;
	if (r) {
		memset(req, 0, sizeof(*req));
		return r;
	}
	req->argv = argv;
	req->envp = envp;
	return 0;
}

/* ---- mount requests ----------------------------------------------------- */

#define MOUNT_FLAGS (MSB_AGENT_MOUNT_RO | MSB_AGENT_MOUNT_NOEXEC)

/* 1-35 bytes of [A-Za-z0-9_.-]: what a tag may be (msb picks "msbfsN"). */
static int tag_valid(const char *t, size_t n)
{
	if (n == 0 || n >= MSB_AGENT_TAG_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return 0;
	}
	return 1;
}

int msb_agent_mount_encode(const struct msb_agent_mount *m, uint8_t *out, size_t cap)
{
	if (cap > MSB_AGENT_FRAME_MAX)
		cap = MSB_AGENT_FRAME_MAX;
	if ((m->flags & ~MOUNT_FLAGS) || !m->tag || !m->path ||
	    !tag_valid(m->tag, strnlen(m->tag, MSB_AGENT_TAG_MAX)) || m->path[0] != '/')
		return -EINVAL;
	if (cap < 4)
		return -EMSGSIZE;
	msb_agent_put_u32(out, m->flags);
	size_t off = 4;
	if (put_string(out, cap, &off, m->tag) || put_string(out, cap, &off, m->path))
		return -EMSGSIZE;
	return (int)off;
}

int msb_agent_mount_decode(const uint8_t *payload, size_t len, struct msb_agent_mount *m, char *tag,
			   size_t tag_cap, char *path, size_t path_cap)
{
	memset(m, 0, sizeof(*m));
	if (len > MSB_AGENT_FRAME_MAX || len < 4 || !payload)
		return -EPROTO;
	uint32_t flags = msb_agent_get_u32(payload);
	if (flags & ~MOUNT_FLAGS)
		return -EPROTO;
	size_t off = 4, t_end = 4, p_end;
	/* Shape first, so a malformed request is -EPROTO whatever the buffers. */
	if (skip_string(payload, len, &t_end, MSB_AGENT_TAG_MAX - 1))
		return -EPROTO;
	p_end = t_end;
	if (skip_string(payload, len, &p_end, MSB_AGENT_STRING_MAX - 1) || p_end != len)
		return -EPROTO;
	size_t tn = t_end - off - 4, pn = p_end - t_end - 4;
	if (!tag_valid((const char *)payload + off + 4, tn) || pn == 0 || payload[t_end + 4] != '/')
		return -EPROTO;
	if (!tag || !path || tag_cap < tn + 1 || path_cap < pn + 1)
		return -E2BIG;
	memcpy(tag, payload + off + 4, tn);
	tag[tn] = '\0';
	memcpy(path, payload + t_end + 4, pn);
	path[pn] = '\0';
	m->flags = flags;
	m->tag = tag;
	m->path = path;
	return 0;
}
