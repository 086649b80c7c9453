/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for the agent protocol: the codec (guest/proto/agent-proto.c), the
 * host client (core/agent-client.c) against hostile input fed to it
 * directly, and the real agent binary (AGENT_PATH) in --serve-fd mode over a
 * socketpair, driven by the client.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msb/msb.h>

#include "agent-client.h"

#ifndef AGENT_PATH
#error "AGENT_PATH must name the msb-agent binary"
#endif

#define TIMEOUT_MS 20000

/* ==== the codec ============================================================ */

static void frame(uint8_t *out, uint8_t type, uint32_t session, uint32_t len)
{
	msb_agent_header_encode(out, type, session, len);
}

static void test_header_round_trip(void **state)
{
	(void)state;
	uint8_t b[MSB_AGENT_HEADER_SIZE];
	struct msb_agent_header h;
	frame(b, MSB_AGENT_STDOUT, 0xdeadbeef, 1234);
	assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), 0);
	assert_int_equal(h.version, MSB_AGENT_PROTO_VERSION);
	assert_int_equal(h.type, MSB_AGENT_STDOUT);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.session, 0xdeadbeef);
	assert_int_equal(h.length, 1234);
	/* Little-endian on the wire, whatever the host. */
	assert_int_equal(b[4], 0xef);
	assert_int_equal(b[8], 1234 & 0xff);
}

static void test_header_hostile(void **state)
{
	(void)state;
	uint8_t b[MSB_AGENT_HEADER_SIZE];
	struct msb_agent_header h;

	frame(b, MSB_AGENT_STDOUT, 1, 1);
	assert_int_equal(msb_agent_header_decode(b, MSB_AGENT_HEADER_SIZE - 1, &h), -EPROTO);
	b[0] = 2; /* version */
	assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), -EPROTO);
	b[0] = 0;
	assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), -EPROTO);

	static const uint8_t unknown[] = {0, 11, 31, 40, 63, 65, 255};
	for (size_t i = 0; i < sizeof(unknown); i++) {
		frame(b, unknown[i], 1, 0);
		assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), -EPROTO);
	}
	for (int bit = 0; bit < 16; bit++) {
		frame(b, MSB_AGENT_STDOUT, 1, 1);
		msb_agent_put_u16(b + 2, (uint16_t)(1u << bit));
		assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), -EPROTO);
	}
	frame(b, MSB_AGENT_STDOUT, 1, MSB_AGENT_FRAME_MAX);
	assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), 0);
	frame(b, MSB_AGENT_STDOUT, 1, MSB_AGENT_FRAME_MAX + 1);
	assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), -EMSGSIZE);
	frame(b, MSB_AGENT_STDOUT, 1, UINT32_MAX);
	assert_int_equal(msb_agent_header_decode(b, sizeof(b), &h), -EMSGSIZE);
}

static int validate(uint8_t type, uint32_t session, const void *payload, uint32_t len)
{
	struct msb_agent_header h = {.version = MSB_AGENT_PROTO_VERSION,
				     .type = type,
				     .session = session,
				     .length = len};
	return msb_agent_validate_from_guest(&h, payload);
}

/* u32 + string(s) + extra bytes, for HELLO and ERROR payloads. */
static size_t u32_string(uint8_t *out, uint32_t v, const char *s, uint32_t claimed, size_t extra)
{
	size_t n = strlen(s);
	msb_agent_put_u32(out, v);
	msb_agent_put_u32(out + 4, claimed);
	memcpy(out + 8, s, n);
	memset(out + 8 + n, 'x', extra);
	return 8 + n + extra;
}

static void test_validate_from_guest(void **state)
{
	(void)state;
	uint8_t p[MSB_AGENT_STRING_MAX + 64] = {0};

	/* Fixed sizes are exact. */
	assert_int_equal(validate(MSB_AGENT_EXIT, 1, p, 8), 0);
	assert_int_equal(validate(MSB_AGENT_EXIT, 1, p, 7), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_EXIT, 1, p, 9), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_STARTED, 1, p, 4), 0);
	assert_int_equal(validate(MSB_AGENT_STARTED, 1, p, 0), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_WINDOW, 1, p, 4), 0);
	assert_int_equal(validate(MSB_AGENT_WINDOW, 1, p, 5), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_SHUTDOWN_ACK, 0, p, 0), 0);
	assert_int_equal(validate(MSB_AGENT_SHUTDOWN_ACK, 0, p, 1), -EPROTO);
	/* Data frames are never empty. */
	assert_int_equal(validate(MSB_AGENT_STDOUT, 1, p, 1), 0);
	assert_int_equal(validate(MSB_AGENT_STDOUT, 1, p, 0), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_STDERR, 1, p, 0), -EPROTO);
	/* PONG at most 64 bytes. */
	assert_int_equal(validate(MSB_AGENT_PONG, 0, p, 64), 0);
	assert_int_equal(validate(MSB_AGENT_PONG, 0, p, 65), -EPROTO);
	/* Session rules: control frames on 0, session frames never on 0. */
	assert_int_equal(validate(MSB_AGENT_STDOUT, 0, p, 1), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_EXIT, 0, p, 8), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_WINDOW, 0, p, 4), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_PONG, 7, p, 0), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_SHUTDOWN_ACK, 7, p, 0), -EPROTO);
	/* Host-to-agent types never come from the guest. */
	static const uint8_t host_types[] = {MSB_AGENT_EXEC,   MSB_AGENT_STDIN, MSB_AGENT_SIGNAL,
					     MSB_AGENT_RESIZE, MSB_AGENT_PING,	MSB_AGENT_SHUTDOWN,
					     MSB_AGENT_MOUNT};
	for (size_t i = 0; i < sizeof(host_types); i++) {
		assert_int_equal(validate(host_types[i], 1, p, 4), -EPROTO);
		assert_int_equal(validate(host_types[i], 0, p, 4), -EPROTO);
	}
	/* HELLO: u32 then a string that fits exactly. */
	size_t n = u32_string(p, 1, "0.1.0", 5, 0);
	assert_int_equal(validate(MSB_AGENT_HELLO, 0, p, (uint32_t)n), 0);
	assert_int_equal(validate(MSB_AGENT_HELLO, 1, p, (uint32_t)n), -EPROTO);
	n = u32_string(p, 1, "0.1.0", 6, 0); /* overruns by one */
	assert_int_equal(validate(MSB_AGENT_HELLO, 0, p, (uint32_t)n), -EPROTO);
	n = u32_string(p, 1, "0.1.0", UINT32_MAX, 0);
	assert_int_equal(validate(MSB_AGENT_HELLO, 0, p, (uint32_t)n), -EPROTO);
	n = u32_string(p, 1, "0.1.0", 5, 1); /* trailing byte */
	assert_int_equal(validate(MSB_AGENT_HELLO, 0, p, (uint32_t)n), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_HELLO, 0, p, 6), -EPROTO); /* no string length */
	/* ERROR: a NUL inside the string, a string at the limit. */
	n = u32_string(p, 2, "no such file", 12, 0);
	assert_int_equal(validate(MSB_AGENT_ERROR, 3, p, (uint32_t)n), 0);
	p[10] = '\0';
	assert_int_equal(validate(MSB_AGENT_ERROR, 3, p, (uint32_t)n), -EPROTO);
	msb_agent_put_u32(p + 4, MSB_AGENT_STRING_MAX - 1);
	memset(p + 8, 'a', MSB_AGENT_STRING_MAX - 1);
	assert_int_equal(validate(MSB_AGENT_ERROR, 3, p, 8 + MSB_AGENT_STRING_MAX - 1), 0);
	msb_agent_put_u32(p + 4, MSB_AGENT_STRING_MAX);
	memset(p + 8, 'a', MSB_AGENT_STRING_MAX);
	assert_int_equal(validate(MSB_AGENT_ERROR, 3, p, 8 + MSB_AGENT_STRING_MAX), -EPROTO);
	/* MOUNTED: a connection frame, i32 then a string (empty is fine). */
	n = u32_string(p, 0, "", 0, 0);
	assert_int_equal(validate(MSB_AGENT_MOUNTED, 0, p, (uint32_t)n), 0);
	assert_int_equal(validate(MSB_AGENT_MOUNTED, 1, p, (uint32_t)n), -EPROTO);
	assert_int_equal(validate(MSB_AGENT_MOUNTED, 0, p, 4), -EPROTO);
	n = u32_string(p, 13, "denied", 6, 1); /* trailing byte */
	assert_int_equal(validate(MSB_AGENT_MOUNTED, 0, p, (uint32_t)n), -EPROTO);
	/* Bad header fields are caught here too. */
	struct msb_agent_header h = {
		.version = 1, .type = MSB_AGENT_STDOUT, .session = 1, .length = 1, .flags = 1};
	assert_int_equal(msb_agent_validate_from_guest(&h, p), -EPROTO);
}

static void test_mount_codec(void **state)
{
	(void)state;
	uint8_t p[MSB_AGENT_FRAME_MAX];
	char tag[MSB_AGENT_TAG_MAX], path[MSB_AGENT_STRING_MAX];
	struct msb_agent_mount m = {.flags = MSB_AGENT_MOUNT_RO | MSB_AGENT_MOUNT_NOEXEC,
				    .tag = "msbfs0",
				    .path = "/data/with space/ü"};
	int n = msb_agent_mount_encode(&m, p, sizeof(p));
	assert_true(n > 0);
	struct msb_agent_mount d;
	assert_int_equal(
		msb_agent_mount_decode(p, (size_t)n, &d, tag, sizeof(tag), path, sizeof(path)), 0);
	assert_int_equal(d.flags, m.flags);
	assert_string_equal(d.tag, "msbfs0");
	assert_string_equal(d.path, m.path);
	/* The host side validates it as a connection frame. */
	struct msb_agent_header h = {
		.version = MSB_AGENT_PROTO_VERSION, .type = MSB_AGENT_MOUNT, .length = (uint32_t)n};
	assert_int_equal(msb_agent_validate_from_host(&h, p), 0);
	h.session = 1;
	assert_int_equal(msb_agent_validate_from_host(&h, p), -EPROTO);
	/* Buffers too small for a well-formed request: -E2BIG, not -EPROTO. */
	assert_int_equal(msb_agent_mount_decode(p, (size_t)n, &d, tag, 3, path, sizeof(path)),
			 -E2BIG);
	assert_int_equal(msb_agent_mount_decode(p, (size_t)n, &d, tag, sizeof(tag), path, 4),
			 -E2BIG);
	/* Trailing bytes, truncation, unknown flags. */
	assert_int_equal(
		msb_agent_mount_decode(p, (size_t)n + 1, &d, tag, sizeof(tag), path, sizeof(path)),
		-EPROTO);
	for (int cut = 0; cut < n; cut++)
		assert_int_equal(msb_agent_mount_decode(p, (size_t)cut, &d, tag, sizeof(tag), path,
							sizeof(path)),
				 -EPROTO);
	msb_agent_put_u32(p, 4);
	assert_int_equal(
		msb_agent_mount_decode(p, (size_t)n, &d, tag, sizeof(tag), path, sizeof(path)),
		-EPROTO);
	assert_null(d.tag);
	/* What encode refuses, decode refuses too (hand-built payloads). */
	static const struct {
		const char *tag, *path;
	} bad[] = {{"", "/data"},
		   {"msbfs0!", "/data"},
		   {"a/b", "/data"},
		   {"0123456789012345678901234567890123456", "/data"}, /* 37 bytes */
		   {"msbfs0", "relative"},
		   {"msbfs0", ""}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct msb_agent_mount b = {.tag = bad[i].tag, .path = bad[i].path};
		assert_int_equal(msb_agent_mount_encode(&b, p, sizeof(p)), -EINVAL);
		size_t tl = strlen(bad[i].tag), pl = strlen(bad[i].path), off = 4;
		msb_agent_put_u32(p, 0);
		msb_agent_put_u32(p + off, (uint32_t)tl);
		memcpy(p + off + 4, bad[i].tag, tl);
		off += 4 + tl;
		msb_agent_put_u32(p + off, (uint32_t)pl);
		memcpy(p + off + 4, bad[i].path, pl);
		off += 4 + pl;
		assert_int_equal(
			msb_agent_mount_decode(p, off, &d, tag, sizeof(tag), path, sizeof(path)),
			-EPROTO);
	}
	/* 35 bytes is the longest tag. */
	struct msb_agent_mount b = {.tag = "01234567890123456789012345678901234", .path = "/x"};
	n = msb_agent_mount_encode(&b, p, sizeof(p));
	assert_true(n > 0);
	assert_int_equal(
		msb_agent_mount_decode(p, (size_t)n, &d, tag, sizeof(tag), path, sizeof(path)), 0);
	b.flags = 8;
	assert_int_equal(msb_agent_mount_encode(&b, p, sizeof(p)), -EINVAL);
}

static void test_get_string(void **state)
{
	(void)state;
	uint8_t p[32];
	char buf[8];
	size_t off;

	msb_agent_put_u32(p, 3);
	memcpy(p + 4, "abc", 3);
	msb_agent_put_u32(p + 7, 2);
	memcpy(p + 11, "de", 2);
	off = 0;
	assert_int_equal(msb_agent_get_string(p, 13, &off, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "abc");
	assert_int_equal(off, 7);
	assert_int_equal(msb_agent_get_string(p, 13, &off, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "de");
	assert_int_equal(off, 13);
	/* At the end, past the end, overruns: -EPROTO and *off unchanged. */
	assert_int_equal(msb_agent_get_string(p, 13, &off, buf, sizeof(buf)), -EPROTO);
	off = 20;
	assert_int_equal(msb_agent_get_string(p, 13, &off, buf, sizeof(buf)), -EPROTO);
	assert_int_equal(off, 20);
	off = 0;
	assert_int_equal(msb_agent_get_string(p, 6, &off, buf, sizeof(buf)), -EPROTO);
	assert_int_equal(off, 0);
	assert_int_equal(msb_agent_get_string(p, 3, &off, buf, sizeof(buf)), -EPROTO);
	msb_agent_put_u32(p, 0xfffffffc); /* would wrap a 32-bit sum */
	assert_int_equal(msb_agent_get_string(p, 13, &off, buf, sizeof(buf)), -EPROTO);
	/* Longer than cap - 1. */
	msb_agent_put_u32(p, 8);
	memcpy(p + 4, "12345678", 8);
	assert_int_equal(msb_agent_get_string(p, 12, &off, buf, sizeof(buf)), -EPROTO);
	msb_agent_put_u32(p, 7);
	assert_int_equal(msb_agent_get_string(p, 11, &off, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1234567");
	/* A NUL inside. */
	off = 0;
	msb_agent_put_u32(p, 3);
	memcpy(p + 4, "a\0c", 3);
	assert_int_equal(msb_agent_get_string(p, 7, &off, buf, sizeof(buf)), -EPROTO);
	assert_int_equal(msb_agent_get_string(p, 7, &off, buf, 0), -EPROTO);
	/* Empty is fine. */
	msb_agent_put_u32(p, 0);
	assert_int_equal(msb_agent_get_string(p, 4, &off, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
}

struct exec_scratch {
	char arena[MSB_AGENT_FRAME_MAX];
	const char *argv[MSB_AGENT_ARGS_MAX + 1];
	const char *envp[MSB_AGENT_ENV_MAX + 1];
	uint8_t buf[MSB_AGENT_FRAME_MAX + 16];
};

static int decode(struct exec_scratch *x, const uint8_t *p, size_t len, struct msb_agent_exec *req)
{
	return msb_agent_exec_decode(p, len, req, x->arena, sizeof(x->arena), x->argv,
				     MSB_AGENT_ARGS_MAX + 1, x->envp, MSB_AGENT_ENV_MAX + 1);
}

static void test_exec_round_trip(void **state)
{
	(void)state;
	struct exec_scratch *x = calloc(1, sizeof(*x));
	const char *argv[] = {"/bin/sh", "-c", "echo 'a b'", ""};
	const char *envp[] = {"A=1", "B=with spaces=and equals"};
	struct msb_agent_exec req = {.flags = MSB_AGENT_EXEC_TTY | MSB_AGENT_EXEC_STDIN,
				     .rows = 24,
				     .cols = 80,
				     .user = "alice:devs",
				     .cwd = "/home/alice",
				     .argc = 4,
				     .argv = argv,
				     .envc = 2,
				     .envp = envp},
			      out;
	int len = msb_agent_exec_encode(&req, x->buf, sizeof(x->buf));
	assert_true(len > 0);
	assert_int_equal(decode(x, x->buf, (size_t)len, &out), 0);
	assert_int_equal(out.flags, req.flags);
	assert_int_equal(out.rows, 24);
	assert_int_equal(out.cols, 80);
	assert_string_equal(out.user, "alice:devs");
	assert_string_equal(out.cwd, "/home/alice");
	assert_int_equal(out.argc, 4);
	for (int i = 0; i < 4; i++)
		assert_string_equal(out.argv[i], argv[i]);
	assert_null(out.argv[4]);
	assert_int_equal(out.envc, 2);
	assert_string_equal(out.envp[0], envp[0]);
	assert_string_equal(out.envp[1], envp[1]);
	assert_null(out.envp[2]);

	/* Every truncation is malformed, as is a trailing byte. */
	for (int cut = 0; cut < len; cut++)
		assert_int_equal(decode(x, x->buf, (size_t)cut, &out), -EPROTO);
	x->buf[len] = 0;
	assert_int_equal(decode(x, x->buf, (size_t)len + 1, &out), -EPROTO);
	/* Small caller arrays: -E2BIG, not an overrun. */
	assert_int_equal(msb_agent_exec_decode(x->buf, (size_t)len, &out, x->arena, 10, x->argv, 5,
					       x->envp, 3),
			 -E2BIG);
	assert_int_equal(msb_agent_exec_decode(x->buf, (size_t)len, &out, x->arena,
					       sizeof(x->arena), x->argv, 4, x->envp, 3),
			 -E2BIG);
	assert_int_equal(msb_agent_exec_decode(x->buf, (size_t)len, &out, x->arena,
					       sizeof(x->arena), x->argv, 5, x->envp, 2),
			 -E2BIG);
	/* An arena of len bytes is always enough. */
	assert_int_equal(msb_agent_exec_decode(x->buf, (size_t)len, &out, x->arena, (size_t)len,
					       x->argv, 5, x->envp, 3),
			 0);
	/* Unknown exec flags. */
	msb_agent_put_u32(x->buf, 0x4);
	assert_int_equal(decode(x, x->buf, (size_t)len, &out), -EPROTO);
	free(x);
}

static void test_exec_limits(void **state)
{
	(void)state;
	struct exec_scratch *x = calloc(1, sizeof(*x));
	static const char *many[MSB_AGENT_ARGS_MAX + 2];
	static char big[MSB_AGENT_STRING_MAX + 1];
	struct msb_agent_exec req = {.user = "", .cwd = "", .argc = 1, .argv = many}, out;

	for (size_t i = 0; i < MSB_AGENT_ARGS_MAX + 1; i++)
		many[i] = "";
	many[0] = "true";
	/* argc 0, a NULL argument, unknown flags: not a request. */
	req.argc = 0;
	assert_int_equal(msb_agent_exec_encode(&req, x->buf, sizeof(x->buf)), -EINVAL);
	req.argc = 1;
	req.flags = 0x8;
	assert_int_equal(msb_agent_exec_encode(&req, x->buf, sizeof(x->buf)), -EINVAL);
	req.flags = 0;
	/* The most arguments fit; one more does not. */
	req.argc = MSB_AGENT_ARGS_MAX;
	int len = msb_agent_exec_encode(&req, x->buf, sizeof(x->buf));
	assert_true(len > 0);
	assert_int_equal(decode(x, x->buf, (size_t)len, &out), 0);
	assert_int_equal(out.argc, MSB_AGENT_ARGS_MAX);
	req.argc = MSB_AGENT_ARGS_MAX + 1;
	assert_int_equal(msb_agent_exec_encode(&req, x->buf, sizeof(x->buf)), -EMSGSIZE);
	req.argc = 1;
	/* Strings must be shorter than MSB_AGENT_STRING_MAX. */
	memset(big, 'a', MSB_AGENT_STRING_MAX - 1);
	req.cwd = big;
	assert_true(msb_agent_exec_encode(&req, x->buf, sizeof(x->buf)) > 0);
	big[MSB_AGENT_STRING_MAX - 1] = 'a';
	assert_int_equal(msb_agent_exec_encode(&req, x->buf, sizeof(x->buf)), -EMSGSIZE);
	big[MSB_AGENT_STRING_MAX - 1] = '\0';
	req.cwd = "";
	/* More than one frame in total. */
	static const char *bigs[32];
	for (size_t i = 0; i < 32; i++)
		bigs[i] = big;
	req.argv = bigs;
	req.argc = 16;
	assert_int_equal(msb_agent_exec_encode(&req, x->buf, sizeof(x->buf)), -EMSGSIZE);
	req.argc = 15;
	assert_true(msb_agent_exec_encode(&req, x->buf, sizeof(x->buf)) > 0);
	/* A small output buffer. */
	assert_int_equal(msb_agent_exec_encode(&req, x->buf, 100), -EMSGSIZE);

	/* Decoding hostile counts: argc 0, argc beyond the limit or the payload. */
	uint8_t p[64] = {0};
	size_t off = 8;
	msb_agent_put_u32(p + off, 0), off += 4; /* user "" */
	msb_agent_put_u32(p + off, 0), off += 4; /* cwd "" */
	size_t at_argc = off;
	msb_agent_put_u32(p + off, 0), off += 4;
	msb_agent_put_u32(p + off, 0), off += 4; /* envc 0 */
	assert_int_equal(decode(x, p, off, &out), -EPROTO);
	msb_agent_put_u32(p + at_argc, MSB_AGENT_ARGS_MAX + 1);
	assert_int_equal(decode(x, p, off, &out), -EPROTO);
	msb_agent_put_u32(p + at_argc, UINT32_MAX);
	assert_int_equal(decode(x, p, off, &out), -EPROTO);
	msb_agent_put_u32(p + at_argc, 1000); /* 4000 bytes of lengths in a 24-byte payload */
	assert_int_equal(decode(x, p, off, &out), -EPROTO);
	free(x);
}

/* ==== the client against hostile input ======================================= */

struct record {
	int started, ended, outputs;
	size_t out_bytes;
	struct msb_agent_status st;
};

static void rec_started(void *opaque, uint32_t session, void *data, uint32_t pid)
{
	(void)opaque, (void)session, (void)pid;
	((struct record *)data)->started++;
}

static void rec_output(void *opaque, uint32_t session, void *data, int stream, const uint8_t *buf,
		       size_t len)
{
	(void)opaque, (void)session, (void)stream, (void)buf;
	((struct record *)data)->outputs++;
	((struct record *)data)->out_bytes += len;
}

static void rec_ended(void *opaque, uint32_t session, void *data, const struct msb_agent_status *st)
{
	(void)opaque, (void)session;
	((struct record *)data)->ended++;
	((struct record *)data)->st = *st;
}

static const struct msb_agent_client_ops rec_ops = {
	.started = rec_started, .output = rec_output, .ended = rec_ended};

/* A stream of guest frames being built. */
struct stream {
	uint8_t b[8 * MSB_AGENT_FRAME_MAX];
	size_t len;
};

static void put(struct stream *s, uint8_t type, uint32_t session, const void *p, size_t len)
{
	assert_true(s->len + MSB_AGENT_HEADER_SIZE + len <= sizeof(s->b));
	msb_agent_header_encode(s->b + s->len, type, session, (uint32_t)len);
	if (len)
		memcpy(s->b + s->len + MSB_AGENT_HEADER_SIZE, p, len);
	s->len += MSB_AGENT_HEADER_SIZE + len;
}

static void put_hello(struct stream *s, uint32_t version, const char *v)
{
	uint8_t p[128];
	size_t n = u32_string(p, version, v, (uint32_t)strlen(v), 0);
	put(s, MSB_AGENT_HELLO, 0, p, n);
}

static void put_pair(struct stream *s, uint8_t type, uint32_t session, int32_t a, int32_t b)
{
	uint8_t p[8];
	msb_agent_put_u32(p, (uint32_t)a);
	msb_agent_put_u32(p + 4, (uint32_t)b);
	put(s, type, session, p, 8);
}

static void put_u32f(struct stream *s, uint8_t type, uint32_t session, uint32_t v)
{
	uint8_t p[4];
	msb_agent_put_u32(p, v);
	put(s, type, session, p, 4);
}

/* A transport-less client with one session started. */
static struct msb_agent_client *fake_client(struct record *rec, uint32_t *id, uint32_t flags)
{
	struct msb_agent_client *c = NULL;
	struct msb_error err = MSB_ERROR_INIT;
	const char *argv[] = {"true"};
	struct msb_agent_exec req = {
		.flags = flags, .user = "", .cwd = "", .argc = 1, .argv = argv};
	assert_int_equal(msb_agent_client_new(-1, &rec_ops, NULL, &c, &err), 0);
	assert_int_equal(msb_agent_client_exec(c, &req, 0, rec, id, &err), 0);
	assert_int_not_equal(*id, 0);
	return c;
}

static void test_client_valid_stream_bytewise(void **state)
{
	(void)state;
	static struct stream s;
	struct record rec = {0};
	struct msb_error err = MSB_ERROR_INIT;
	uint32_t id;
	struct msb_agent_client *c = fake_client(&rec, &id, 0);

	s.len = 0;
	put_hello(&s, MSB_AGENT_PROTO_VERSION, "1.2.3\x1b[31m");
	put_u32f(&s, MSB_AGENT_STARTED, id, 42);
	put(&s, MSB_AGENT_STDOUT, id, "hello\n", 6);
	put(&s, MSB_AGENT_STDERR, id, "oops\n", 5);
	put_pair(&s, MSB_AGENT_EXIT, id, 3, 0);
	/* Frames split at every byte boundary are reassembled. */
	for (size_t i = 0; i < s.len; i++)
		assert_int_equal(msb_agent_client_feed(c, s.b + i, 1, &err), 0);
	/* The escape sequence did not survive. */
	assert_string_equal(msb_agent_client_agent_version(c), "1.2.3?[31m");
	assert_int_equal(rec.started, 1);
	assert_int_equal(rec.outputs, 2);
	assert_int_equal(rec.out_bytes, 11);
	assert_int_equal(rec.ended, 1);
	struct msb_agent_status st;
	assert_int_equal(msb_agent_client_wait(c, id, &st, 0, &err), 0);
	assert_int_equal(st.exit_code, 3);
	assert_int_equal(st.signal, 0);
	assert_int_equal(st.failed, 0);
	/* Released: any further frame for it is a violation. */
	s.len = 0;
	put(&s, MSB_AGENT_STDOUT, id, "x", 1);
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), -EPROTO);
	msb_agent_client_free(c);
}

/* Feed stream s after HELLO and STARTED; expect code. */
static void expect_violation(const struct stream *s, uint32_t flags, int started, int code)
{
	static struct stream pre;
	struct record rec = {0};
	struct msb_error err = MSB_ERROR_INIT;
	uint32_t id;
	struct msb_agent_client *c = fake_client(&rec, &id, flags);
	pre.len = 0;
	put_hello(&pre, MSB_AGENT_PROTO_VERSION, "t");
	if (started)
		put_u32f(&pre, MSB_AGENT_STARTED, id, 1);
	assert_int_equal(msb_agent_client_feed(c, pre.b, pre.len, &err), 0);
	/* The stream refers to the session as 0x100 (the first id). */
	assert_int_equal(id, 0x100);
	assert_int_equal(msb_agent_client_feed(c, s->b, s->len, &err), code);
	assert_int_equal(err.code, code);
	assert_true(strlen(err.msg) > 0);
	/* Dead for good: every call reports it, no callback runs. */
	int ended = rec.ended;
	assert_int_equal(msb_agent_client_ping(c, 0, &err), code);
	assert_int_equal(msb_agent_client_signal(c, id, 9, &err), code);
	assert_int_equal(msb_agent_client_feed(c, pre.b, pre.len, &err), code);
	assert_int_equal(rec.ended, ended);
	msb_agent_client_free(c);
}

static void test_client_hostile(void **state)
{
	(void)state;
	static struct stream s;
	static uint8_t big[MSB_AGENT_FRAME_MAX];
	const uint32_t id = 0x100;

#define CASE(started, code, ...)                                                                   \
	do {                                                                                       \
		s.len = 0;                                                                         \
		__VA_ARGS__;                                                                       \
		expect_violation(&s, 0, started, code);                                            \
	} while (0)

	/* Output beyond the window the client granted. */
	CASE(1, -EPROTO, {
		for (size_t n = 0; n < MSB_AGENT_WINDOW_INITIAL / sizeof(big); n++)
			put(&s, MSB_AGENT_STDOUT, id, big, sizeof(big));
		put(&s, MSB_AGENT_STDOUT, id, big, 1);
	});
	/* Frames for sessions the host never started. */
	CASE(1, -EPROTO, put(&s, MSB_AGENT_STDOUT, id + 1, "x", 1));
	CASE(1, -EPROTO, put_u32f(&s, MSB_AGENT_STARTED, 0x200, 1));
	/* Out of order: output before STARTED, STARTED twice, ERROR after it. */
	CASE(0, -EPROTO, put(&s, MSB_AGENT_STDOUT, id, "x", 1));
	CASE(1, -EPROTO, put_u32f(&s, MSB_AGENT_STARTED, id, 1));
	CASE(1, -EPROTO, put_pair(&s, MSB_AGENT_ERROR, id, 2, 0));
	/* A second HELLO; PONG without PING; ACK without SHUTDOWN. */
	CASE(1, -EPROTO, put_hello(&s, MSB_AGENT_PROTO_VERSION, "again"));
	CASE(1, -EPROTO, put(&s, MSB_AGENT_PONG, 0, NULL, 0));
	CASE(1, -EPROTO, put(&s, MSB_AGENT_SHUTDOWN_ACK, 0, NULL, 0));
	/* Impossible exits and errors. */
	CASE(1, -EPROTO, put_pair(&s, MSB_AGENT_EXIT, id, 256, 0));
	CASE(1, -EPROTO, put_pair(&s, MSB_AGENT_EXIT, id, 1, 9));
	CASE(1, -EPROTO, put_pair(&s, MSB_AGENT_EXIT, id, -1, 0));
	CASE(1, -EPROTO, put_pair(&s, MSB_AGENT_EXIT, id, -1, 65));
	CASE(0, -EPROTO, put_pair(&s, MSB_AGENT_ERROR, id, 0, 0));
	CASE(0, -EPROTO, put_pair(&s, MSB_AGENT_ERROR, id, -5, 0));
	/* stdin credit for a session without stdin; a malformed frame. */
	CASE(1, -EPROTO, put_u32f(&s, MSB_AGENT_WINDOW, id, 100));
	CASE(1, -EPROTO, put(&s, MSB_AGENT_EXIT, id, "1234567", 7));
	/* Bad headers: host types, unknown types, oversize. */
	CASE(1, -EPROTO, put_u32f(&s, MSB_AGENT_SIGNAL, id, 9));
	CASE(1, -EPROTO, {
		put(&s, MSB_AGENT_STDOUT, id, "x", 1);
		s.b[1] = 99;
	});
	CASE(1, -EPROTO, {
		put(&s, MSB_AGENT_STDOUT, id, "x", 1);
		msb_agent_put_u32(s.b + 8, MSB_AGENT_FRAME_MAX + 1);
	});
#undef CASE

	/* A frame before HELLO; a HELLO of another protocol version. */
	struct record rec = {0};
	struct msb_error err = MSB_ERROR_INIT;
	uint32_t sid;
	struct msb_agent_client *c = fake_client(&rec, &sid, 0);
	s.len = 0;
	put_u32f(&s, MSB_AGENT_STARTED, sid, 1);
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), -EPROTO);
	msb_agent_client_free(c);
	c = fake_client(&rec, &sid, 0);
	s.len = 0;
	put_hello(&s, 2, "future");
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), -EPROTONOSUPPORT);
	msb_agent_client_free(c);
}

static void test_client_mount(void **state)
{
	(void)state;
	static struct stream s;
	struct record rec = {0};
	struct msb_error err = MSB_ERROR_INIT;
	uint32_t id;
	uint8_t p[64];

	/* MOUNTED with no MOUNT outstanding: the guest is lying. */
	s.len = 0;
	size_t n = u32_string(p, 0, "", 0, 0);
	put(&s, MSB_AGENT_MOUNTED, 0, p, n);
	expect_violation(&s, 0, 0, -EPROTO);

	/* A refusal comes back as its errno and message, sanitized; then one succeeds. */
	struct msb_agent_client *c = fake_client(&rec, &id, 0);
	s.len = 0;
	put_hello(&s, MSB_AGENT_PROTO_VERSION, "t");
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), 0);
	struct msb_agent_mount m = {.tag = "msbfs0", .path = "/data"};
	/* Without a transport the wait runs out at once; the MOUNT stays outstanding. */
	assert_int_equal(msb_agent_client_mount(c, &m, 0, &err), -ETIMEDOUT);
	s.len = 0;
	n = u32_string(p, EPERM, "no \x1b[31mway", (uint32_t)strlen("no \x1b[31mway"), 0);
	put(&s, MSB_AGENT_MOUNTED, 0, p, n);
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), 0);
	msb_agent_client_free(c);

	/* An impossible errno is a violation. */
	c = fake_client(&rec, &id, 0);
	s.len = 0;
	put_hello(&s, MSB_AGENT_PROTO_VERSION, "t");
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), 0);
	assert_int_equal(msb_agent_client_mount(c, &m, 0, &err), -ETIMEDOUT);
	s.len = 0;
	n = u32_string(p, (uint32_t)-5, "", 0, 0);
	put(&s, MSB_AGENT_MOUNTED, 0, p, n);
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), -EPROTO);
	msb_agent_client_free(c);

	/* Requests the protocol cannot carry are refused before anything is sent. */
	c = fake_client(&rec, &id, 0);
	struct msb_agent_mount bad = {.tag = "bad tag", .path = "/data"};
	assert_int_equal(msb_agent_client_mount(c, &bad, 0, &err), -EINVAL);
	msb_agent_client_free(c);
}

static void test_client_error_and_manual_credit(void **state)
{
	(void)state;
	static struct stream s;
	static uint8_t big[MSB_AGENT_FRAME_MAX];
	struct record rec = {0};
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_agent_client *c = NULL;
	const char *argv[] = {"x"};
	struct msb_agent_exec req = {.user = "", .cwd = "", .argc = 1, .argv = argv};
	uint32_t a, b;

	assert_int_equal(msb_agent_client_new(-1, &rec_ops, NULL, &c, &err), 0);
	assert_int_equal(msb_agent_client_exec(c, &req, 0, &rec, &a, &err), 0);
	assert_int_equal(
		msb_agent_client_exec(c, &req, MSB_AGENT_CLIENT_MANUAL_CREDIT, &rec, &b, &err), 0);
	assert_int_not_equal(a, b);

	/* ERROR: the message is sanitized and bounded. */
	s.len = 0;
	put_hello(&s, MSB_AGENT_PROTO_VERSION, "t");
	uint8_t p[8 + 600];
	memset(p + 8, 'm', 600);
	p[8] = '\r';
	msb_agent_put_u32(p, ENOENT);
	msb_agent_put_u32(p + 4, 600);
	put(&s, MSB_AGENT_ERROR, a, p, sizeof(p));
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), 0);
	struct msb_agent_status st;
	assert_int_equal(msb_agent_client_ended(c, a, &st), 1);
	assert_int_equal(st.failed, 1);
	assert_int_equal(st.errnum, ENOENT);
	assert_int_equal(strlen(st.message), MSB_AGENT_CLIENT_MSG_MAX - 1);
	assert_int_equal(st.message[0], '?');

	/* Manual credit: the window is the initial one until consumed. */
	s.len = 0;
	put_u32f(&s, MSB_AGENT_STARTED, b, 7);
	for (size_t n = 0; n < MSB_AGENT_WINDOW_INITIAL / sizeof(big); n++)
		put(&s, MSB_AGENT_STDOUT, b, big, sizeof(big));
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), 0);
	assert_int_equal(msb_agent_client_consumed(c, b, MSB_AGENT_WINDOW_INITIAL + 1, &err),
			 -EINVAL);
	assert_int_equal(msb_agent_client_consumed(c, b, MSB_AGENT_WINDOW_INITIAL, &err), 0);
	/* Now granted again: another window's worth is accepted. */
	s.len = 0;
	for (size_t n = 0; n < MSB_AGENT_WINDOW_INITIAL / sizeof(big); n++)
		put(&s, MSB_AGENT_STDOUT, b, big, sizeof(big));
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), 0);
	s.len = 0;
	put(&s, MSB_AGENT_STDOUT, b, big, 1);
	assert_int_equal(msb_agent_client_feed(c, s.b, s.len, &err), -EPROTO);
	msb_agent_client_free(c);
}

/* ==== the real agent ========================================================== */

struct agent {
	pid_t pid;
	struct msb_agent_client *c;
	char root[64];
};

/* What one session produced. */
struct out {
	char *out, *err;
	size_t out_len, err_len, out_cap, err_cap;
	int started, ended;
	uint32_t pid;
	struct msb_agent_status st;
	uint32_t id;
	struct msb_agent_client *c;
	int manual; /* do not consume (grant) output */
};

static void grow_append(char **buf, size_t *len, size_t *cap, const uint8_t *data, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t nc = *cap ? *cap : 4096;
		while (nc < *len + n + 1)
			nc *= 2;
		*buf = realloc(*buf, nc);
		assert_non_null(*buf);
		*cap = nc;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
}

static void on_started(void *opaque, uint32_t session, void *data, uint32_t pid)
{
	(void)opaque, (void)session;
	struct out *o = data;
	o->started++;
	o->pid = pid;
}

static void on_output(void *opaque, uint32_t session, void *data, int stream, const uint8_t *buf,
		      size_t len)
{
	(void)opaque, (void)session;
	struct out *o = data;
	assert_true(o->started);
	assert_false(o->ended);
	if (stream == MSB_AGENT_CLIENT_STDOUT)
		grow_append(&o->out, &o->out_len, &o->out_cap, buf, len);
	else
		grow_append(&o->err, &o->err_len, &o->err_cap, buf, len);
}

static void on_ended(void *opaque, uint32_t session, void *data, const struct msb_agent_status *st)
{
	(void)opaque, (void)session;
	struct out *o = data;
	o->ended++;
	o->st = *st;
}

static const struct msb_agent_client_ops ops = {
	.started = on_started, .output = on_output, .ended = on_ended};

static void out_free(struct out *o)
{
	free(o->out);
	free(o->err);
	memset(o, 0, sizeof(*o));
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int agent_setup(void **state)
{
	struct agent *a = calloc(1, sizeof(*a));
	struct msb_error err = MSB_ERROR_INIT;
	int sv[2];
	char path[256], passwd[8192], longline[6000];

	snprintf(a->root, sizeof(a->root), "/tmp/msb-agent-test.XXXXXX");
	assert_non_null(mkdtemp(a->root));
	chmod(a->root, 0755); /* alice must reach her home below it */
	snprintf(path, sizeof(path), "%s/etc", a->root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/home", a->root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/home/alice", a->root);
	mkdir(path, 0755);
	if (getuid() == 0) /* test_user runs only as root */
		assert_int_equal(chown(path, 1234, 1234), 0);
	/* A line too long to be an entry (the agent reads lines of at most 4096
	 * bytes), with what would be an entry for alice as uid 0 right after
	 * the first 4096 bytes: it must be skipped whole. */
	memset(longline, 'x', 4096);
	snprintf(longline + 4096, sizeof(longline) - 4096, "alice:x:0:0::/:/bin/sh");
	snprintf(passwd, sizeof(passwd),
		 "root:x:0:0:root:/root:/bin/sh\n"
		 "# a comment, then hostile lines that must be skipped\n"
		 "broken:x:notanumber:1::/:/bin/sh\n"
		 "short:x:5\n"
		 "toomany:x:7:7::/:/bin/sh:extra\n"
		 "%s\n"
		 "alice:x:1234:1234:Alice:%s/home/alice:/bin/sh\n"
		 "bob:x:1235:1235::relative/home:/bin/sh\n",
		 longline, a->root);
	write_file(a->root, "etc/passwd", passwd);
	write_file(a->root, "etc/group",
		   "root:x:0:\n"
		   "alice:x:1234:\n"
		   "devs:x:2000:bob,alice\n"
		   "ops:x:2001:alice\n"
		   "others:x:2002:bob\n");

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	a->pid = fork();
	assert_true(a->pid >= 0);
	if (a->pid == 0) {
		/* dup2 onto itself keeps FD_CLOEXEC (sv[1] is 3 when stdio is closed). */
		if (sv[1] == 3)
			fcntl(3, F_SETFD, 0);
		else
			dup2(sv[1], 3);
		execl(AGENT_PATH, AGENT_PATH, "--serve-fd", "3", "--root", a->root, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	assert_int_equal(msb_agent_client_new(sv[0], &ops, NULL, &a->c, &err), 0);
	if (msb_agent_client_wait_hello(a->c, TIMEOUT_MS, &err) < 0)
		fail_msg("no HELLO from %s: %s", AGENT_PATH, err.msg);
	*state = a;
	return 0;
}

static int agent_teardown(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	int st;
	if (msb_agent_client_shutdown(a->c, MSB_AGENT_POWEROFF, TIMEOUT_MS, &err) < 0)
		print_error("shutdown: %s\n", err.msg);
	msb_agent_client_free(a->c);
	assert_int_equal(waitpid(a->pid, &st, 0), a->pid);
	/* In test mode the agent exits 0 after SHUTDOWN_ACK. */
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", a->root);
	assert_int_equal(system(cmd), 0);
	free(a);
	return 0;
}

struct run_opts {
	const char *const *env; /* NULL-terminated; NULL: {"PATH=/usr/bin:/bin"} */
	const char *cwd, *user;
	uint32_t flags;
	uint16_t rows, cols;
	const void *in; /* stdin, then EOF (flags gets MSB_AGENT_EXEC_STDIN) */
	size_t in_len;
};

static uint32_t start(struct agent *a, const char *const *argv, const struct run_opts *ro,
		      struct out *o, unsigned cflags)
{
	static const char *const default_env[] = {"PATH=/usr/bin:/bin", NULL};
	const char *const *env = ro && ro->env ? ro->env : default_env;
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_agent_exec req = {
		.flags = ro ? ro->flags : 0,
		.rows = ro ? ro->rows : 0,
		.cols = ro ? ro->cols : 0,
		.user = ro && ro->user ? ro->user : "",
		.cwd = ro && ro->cwd ? ro->cwd : "",
		.argv = (const char **)argv,
		.envp = (const char **)env,
	};
	while (argv[req.argc])
		req.argc++;
	while (env[req.envc])
		req.envc++;
	if (ro && ro->in)
		req.flags |= MSB_AGENT_EXEC_STDIN;
	memset(o, 0, sizeof(*o));
	o->c = a->c;
	if (msb_agent_client_exec(a->c, &req, cflags, o, &o->id, &err) < 0)
		fail_msg("exec: %s", err.msg);
	return o->id;
}

/* Run argv to the end; stdin as given. */
static void run(struct agent *a, const char *const *argv, const struct run_opts *ro, struct out *o)
{
	struct msb_error err = MSB_ERROR_INIT;
	uint32_t id = start(a, argv, ro, o, 0);
	if (ro && ro->in) {
		if (msb_agent_client_write_stdin_all(a->c, id, ro->in, ro->in_len, TIMEOUT_MS,
						     &err) < 0)
			fail_msg("stdin: %s", err.msg);
		assert_int_equal(msb_agent_client_close_stdin(a->c, id, &err), 0);
	}
	if (msb_agent_client_wait(a->c, id, &o->st, TIMEOUT_MS, &err) < 0)
		fail_msg("wait: %s", err.msg);
	assert_int_equal(o->ended, 1);
}

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_echo_exit_codes(void **state)
{
	struct agent *a = *state;
	struct out o;
	static const int codes[] = {0, 3, 255};
	for (size_t i = 0; i < 3; i++) {
		char script[64];
		snprintf(script, sizeof(script), "echo hello; exit %d", codes[i]);
		run(a, ARGV("sh", "-c", script), NULL, &o);
		assert_int_equal(o.started, 1);
		assert_true(o.pid > 1);
		assert_int_equal(o.st.failed, 0);
		assert_int_equal(o.st.exit_code, codes[i]);
		assert_int_equal(o.st.signal, 0);
		assert_string_equal(o.out, "hello\n");
		assert_int_equal(o.err_len, 0);
		out_free(&o);
	}
}

static void test_signal_death(void **state)
{
	struct agent *a = *state;
	struct out o;
	run(a, ARGV("sh", "-c", "echo before; kill -9 $$; echo after"), NULL, &o);
	assert_int_equal(o.st.exit_code, -1);
	assert_int_equal(o.st.signal, 9);
	assert_string_equal(o.out, "before\n");
	out_free(&o);
}

static void test_stdin(void **state)
{
	struct agent *a = *state;
	struct out o;
	struct run_opts ro = {.in = "abc\x00\xff def", .in_len = 9};
	run(a, ARGV("cat"), &ro, &o);
	assert_int_equal(o.st.exit_code, 0);
	assert_int_equal(o.out_len, 9);
	assert_memory_equal(o.out, "abc\x00\xff def", 9);
	out_free(&o);

	/* Several windows' worth: stdin credit must be granted back. */
	size_t n = 3 * 1000 * 1000 + 7;
	char *big = malloc(n);
	for (size_t i = 0; i < n; i++)
		big[i] = (char)('a' + i % 26);
	ro = (struct run_opts){.in = big, .in_len = n};
	run(a, ARGV("wc", "-c"), &ro, &o);
	assert_int_equal(o.st.exit_code, 0);
	assert_int_equal(strtoul(o.out, NULL, 10), n);
	out_free(&o);

	/* Empty stdin: EOF at once. */
	ro = (struct run_opts){.in = "", .in_len = 0};
	run(a, ARGV("wc", "-c"), &ro, &o);
	assert_int_equal(strtoul(o.out, NULL, 10), 0);
	out_free(&o);

	/* The child closes its stdin early: the rest is discarded, and the
	 * agent keeps granting, so the host's writes never hang. */
	ro = (struct run_opts){.in = big, .in_len = n};
	run(a, ARGV("sh", "-c", "head -c 10; exec 0<&-; sleep 1"), &ro, &o);
	assert_int_equal(o.st.exit_code, 0);
	assert_int_equal(o.out_len, 10);
	assert_memory_equal(o.out, big, 10);
	out_free(&o);

	/* Without MSB_AGENT_EXEC_STDIN, stdin is /dev/null. */
	run(a, ARGV("wc", "-c"), NULL, &o);
	assert_int_equal(strtoul(o.out, NULL, 10), 0);
	out_free(&o);
	free(big);
}

/* Peak resident memory of a process, in KiB. */
static long vm_hwm_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void test_large_output(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	struct out o;
	const size_t total = 10 * 1000 * 1000;

	long hwm0 = vm_hwm_kib(a->pid);
	/* The host withholds credit: the agent sends exactly one window and
	 * stops reading (the child blocks on its full pipe). */
	uint32_t id = start(a, ARGV("head", "-c", "10000000", "/dev/zero"), NULL, &o,
			    MSB_AGENT_CLIENT_MANUAL_CREDIT);
	/* One window arrives (however loaded the machine), then nothing more
	 * for a while. */
	for (int i = 0; i < 400 && o.out_len < MSB_AGENT_WINDOW_INITIAL; i++)
		assert_true(msb_agent_client_pump(a->c, 50, NULL, 0, &err) >= 0);
	for (int i = 0; i < 10; i++)
		assert_true(msb_agent_client_pump(a->c, 30, NULL, 0, &err) >= 0);
	assert_int_equal(o.out_len, MSB_AGENT_WINDOW_INITIAL);
	assert_int_equal(o.ended, 0);
	long hwm = vm_hwm_kib(a->pid);

	/* Now consume as it comes. */
	size_t granted = 0;
	while (!o.ended) {
		assert_true(msb_agent_client_pump(a->c, 1000, NULL, 0, &err) >= 0);
		if (o.out_len > granted) {
			assert_int_equal(
				msb_agent_client_consumed(a->c, id, o.out_len - granted, &err), 0);
			granted = o.out_len;
		}
	}
	assert_int_equal(msb_agent_client_wait(a->c, id, &o.st, 0, &err), 0);
	assert_int_equal(o.st.exit_code, 0);
	assert_int_equal(o.out_len, total);
	for (size_t i = 0; i < total; i++)
		if (o.out[i] != 0)
			fail_msg("byte %zu is %d", i, o.out[i]);
	long hwm2 = vm_hwm_kib(a->pid);
	print_message(
		"agent peak RSS: %ld KiB before, %ld KiB while blocked, %ld KiB after 10 MB\n",
		hwm0, hwm, hwm2);
	/* Bounded: its queues (well under 1 MiB) and nowhere near the 10 MB
	 * that went by. */
	assert_true(hwm0 > 0 && hwm2 - hwm0 < 2 * 1024);
	out_free(&o);

	/* Automatic credit, and content in order: seq's 6.9 MB. */
	run(a, ARGV("seq", "1", "1000000"), NULL, &o);
	assert_int_equal(o.st.exit_code, 0);
	char *p = o.out;
	for (unsigned i = 1; i <= 1000000; i++) {
		char *end;
		unsigned long v = strtoul(p, &end, 10);
		if (v != i || *end != '\n')
			fail_msg("line %u reads %lu", i, v);
		p = end + 1;
	}
	assert_int_equal((size_t)(p - o.out), o.out_len);
	out_free(&o);
}

static void test_concurrent(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	struct out o[8];
	char scripts[8][160];
	for (int i = 0; i < 8; i++) {
		snprintf(scripts[i], sizeof(scripts[i]),
			 "for j in 1 2 3 4 5; do echo s%d-$j; echo e%d-$j >&2; sleep 0.0%d; done; "
			 "exit %d",
			 i, i, 8 - i, 10 + i);
		start(a, ARGV("sh", "-c", scripts[i]), NULL, &o[i], 0);
	}
	for (int i = 0; i < 8; i++) {
		assert_int_equal(msb_agent_client_wait(a->c, o[i].id, &o[i].st, TIMEOUT_MS, &err),
				 0);
	}
	for (int i = 0; i < 8; i++) {
		char want[128], want_err[128];
		snprintf(want, sizeof(want), "s%d-1\ns%d-2\ns%d-3\ns%d-4\ns%d-5\n", i, i, i, i, i);
		snprintf(want_err, sizeof(want_err), "e%d-1\ne%d-2\ne%d-3\ne%d-4\ne%d-5\n", i, i, i,
			 i, i);
		assert_string_equal(o[i].out, want);
		assert_string_equal(o[i].err, want_err);
		assert_int_equal(o[i].st.exit_code, 10 + i);
		out_free(&o[i]);
	}
}

static void test_stdout_stderr(void **state)
{
	struct agent *a = *state;
	struct out o;
	run(a, ARGV("sh", "-c", "echo out; echo err >&2; echo out2; echo err2 >&2"), NULL, &o);
	assert_string_equal(o.out, "out\nout2\n");
	assert_string_equal(o.err, "err\nerr2\n");
	out_free(&o);
}

static void test_exec_errors(void **state)
{
	struct agent *a = *state;
	struct out o;
	run(a, ARGV("no-such-command-msb"), NULL, &o);
	assert_int_equal(o.started, 0);
	assert_int_equal(o.st.failed, 1);
	assert_int_equal(o.st.errnum, ENOENT);
	assert_non_null(strstr(o.st.message, "no-such-command-msb"));
	out_free(&o);

	run(a, ARGV("/nonexistent/bin/x"), NULL, &o);
	assert_int_equal(o.st.failed, 1);
	assert_int_equal(o.st.errnum, ENOENT);
	out_free(&o);

	/* Not executable. */
	char path[128];
	snprintf(path, sizeof(path), "%s/etc/passwd", a->root);
	run(a, ARGV(path), NULL, &o);
	assert_int_equal(o.st.failed, 1);
	assert_int_equal(o.st.errnum, EACCES);
	out_free(&o);

	struct run_opts ro = {.cwd = "/nonexistent-dir"};
	run(a, ARGV("true"), &ro, &o);
	assert_int_equal(o.st.failed, 1);
	assert_int_equal(o.st.errnum, ENOENT);
	assert_non_null(strstr(o.st.message, "chdir"));
	out_free(&o);

	ro = (struct run_opts){.user = "nobody-here"};
	run(a, ARGV("true"), &ro, &o);
	assert_int_equal(o.st.failed, 1);
	assert_int_equal(o.st.errnum, ENOENT);
	assert_non_null(strstr(o.st.message, "nobody-here"));
	out_free(&o);

	ro = (struct run_opts){.user = "alice:nogroup"};
	run(a, ARGV("true"), &ro, &o);
	assert_int_equal(o.st.errnum, ENOENT);
	out_free(&o);

	/* /etc/group is the workload's: a FIFO there must not hang the agent. */
	snprintf(path, sizeof(path), "%s/etc/group", a->root);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0644), 0);
	ro = (struct run_opts){.user = "alice"};
	run(a, ARGV("true"), &ro, &o);
	assert_int_equal(o.st.failed, 1);
	assert_int_equal(o.st.errnum, EINVAL);
	assert_non_null(strstr(o.st.message, "/etc/group"));
	out_free(&o);
	assert_int_equal(unlink(path), 0);

	/* The connection is fine after failures. */
	run(a, ARGV("true"), NULL, &o);
	assert_int_equal(o.st.failed, 0);
	assert_int_equal(o.st.exit_code, 0);
	out_free(&o);
}

static void test_user(void **state)
{
	struct agent *a = *state;
	struct out o;
	char want[256];
	if (getuid() != 0)
		skip();

	struct run_opts ro = {.user = "alice"};
	run(a, ARGV("sh", "-c", "id -u; id -g; id -G; echo $HOME; pwd"), &ro, &o);
	snprintf(want, sizeof(want), "1234\n1234\n1234 2000 2001\n%s/home/alice\n%s/home/alice\n",
		 a->root, a->root);
	assert_int_equal(o.st.exit_code, 0);
	assert_string_equal(o.out, want);
	out_free(&o);

	ro.user = "alice:ops";
	run(a, ARGV("sh", "-c", "id -u; id -g"), &ro, &o);
	assert_string_equal(o.out, "1234\n2001\n");
	out_free(&o);

	/* Numeric, without a passwd entry: gid 0 unless given, HOME and cwd /. */
	ro.user = "4321";
	run(a, ARGV("sh", "-c", "id -u; id -g; id -G; echo $HOME; pwd"), &ro, &o);
	assert_string_equal(o.out, "4321\n0\n0\n/\n/\n");
	out_free(&o);

	ro.user = "4321:765";
	run(a, ARGV("sh", "-c", "id -u; id -g"), &ro, &o);
	assert_string_equal(o.out, "4321\n765\n");
	out_free(&o);

	/* A relative home is not used as the working directory. */
	ro.user = "bob";
	run(a, ARGV("sh", "-c", "id -G; pwd"), &ro, &o);
	assert_string_equal(o.out, "1235 2000 2002\n/\n");
	out_free(&o);

	/* The default is root. */
	run(a, ARGV("id", "-u"), NULL, &o);
	assert_string_equal(o.out, "0\n");
	out_free(&o);

	/* The user's rights apply to chdir: /root is 0700. */
	ro = (struct run_opts){.user = "alice", .cwd = "/root"};
	struct stat sb;
	if (stat("/root", &sb) == 0 && (sb.st_mode & 0007) == 0) {
		run(a, ARGV("true"), &ro, &o);
		assert_int_equal(o.st.errnum, EACCES);
		out_free(&o);
	}
}

static void test_cwd_env(void **state)
{
	struct agent *a = *state;
	struct out o;
	struct run_opts ro = {.cwd = "/tmp"};
	run(a, ARGV("pwd"), &ro, &o);
	assert_string_equal(o.out, "/tmp\n");
	out_free(&o);

	/* Exactly as given, in order, nothing added when all three are there. */
	static const char *const env[] = {
		"A=1", "B=two words", "PATH=/usr/bin:/bin", "HOME=/x", "TERM=t", "EMPTY=", NULL};
	ro = (struct run_opts){.env = env};
	run(a, ARGV("env"), &ro, &o);
	assert_string_equal(o.out,
			    "A=1\nB=two words\nPATH=/usr/bin:/bin\nHOME=/x\nTERM=t\nEMPTY=\n");
	out_free(&o);

	/* Defaults for what is missing (and PATH is searched from them). */
	static const char *const env2[] = {"X=y", NULL};
	ro = (struct run_opts){.env = env2};
	run(a, ARGV("env"), &ro, &o);
	/* HOME: root's, from passwd; a non-root test user has no entry there. */
	char want[256];
	snprintf(want, sizeof(want),
		 "X=y\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
		 "HOME=%s\nTERM=dumb\n",
		 getuid() == 0 ? "/root" : "/");
	assert_string_equal(o.out, want);
	out_free(&o);

	/* Nothing of the agent's leaks: only fds 0-2 are open. */
	run(a, ARGV("sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"), NULL, &o);
	assert_string_equal(o.out, "0 1 2 3 "); /* 3: ls's own directory fd */
	out_free(&o);
}

static void test_signal(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	struct out o;

	uint32_t id = start(a, ARGV("sleep", "30"), NULL, &o, 0);
	while (!o.started)
		assert_true(msb_agent_client_pump(a->c, 1000, NULL, 0, &err) >= 0);
	assert_int_equal(msb_agent_client_signal(a->c, id, SIGTERM, &err), 0);
	assert_int_equal(msb_agent_client_wait(a->c, id, &o.st, 5000, &err), 0);
	assert_int_equal(o.st.exit_code, -1);
	assert_int_equal(o.st.signal, SIGTERM);
	out_free(&o);

	/* The whole process group: the shell and its sleeping child. */
	id = start(a, ARGV("sh", "-c", "sleep 30; echo never"), NULL, &o, 0);
	while (!o.started)
		assert_true(msb_agent_client_pump(a->c, 1000, NULL, 0, &err) >= 0);
	usleep(100000);
	assert_int_equal(msb_agent_client_signal(a->c, id, SIGINT, &err), 0);
	assert_int_equal(msb_agent_client_wait(a->c, id, &o.st, 5000, &err), 0);
	assert_int_equal(o.st.signal, SIGINT);
	assert_int_equal(o.out_len, 0);
	out_free(&o);

	assert_int_equal(msb_agent_client_signal(a->c, id, SIGTERM, &err), -ENOENT);
}

static void test_orphans(void **state)
{
	struct agent *a = *state;
	struct out o;
	/* The orphan is reaped by the agent, not taken for the session. */
	run(a, ARGV("sh", "-c", "(sleep 0.3; exit 7) >/dev/null 2>&1 & exit 5"), NULL, &o);
	assert_int_equal(o.st.exit_code, 5);
	out_free(&o);
	/* A background child holding stdout: EXIT waits for its output. */
	run(a, ARGV("sh", "-c", "(sleep 0.3; echo late) & echo early; exit 4"), NULL, &o);
	assert_int_equal(o.st.exit_code, 4);
	assert_string_equal(o.out, "early\nlate\n");
	out_free(&o);
	usleep(400000);
	run(a, ARGV("true"), NULL, &o);
	assert_int_equal(o.st.exit_code, 0);
	out_free(&o);
}

static void test_tty(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	struct out o;
	struct run_opts ro = {.flags = MSB_AGENT_EXEC_TTY, .rows = 24, .cols = 80};
	run(a, ARGV("sh", "-c", "tty; stty size; echo err >&2; exit 2"), &ro, &o);
	assert_int_equal(o.st.exit_code, 2);
	assert_non_null(strstr(o.out, "/dev/pts/"));
	assert_non_null(strstr(o.out, "24 80"));
	assert_non_null(strstr(o.out, "err")); /* one terminal for both */
	assert_int_equal(o.err_len, 0);
	out_free(&o);

	/* Resize, then input through the terminal. */
	ro.flags |= MSB_AGENT_EXEC_STDIN;
	uint32_t id = start(a, ARGV("sh", "-c", "read x; stty size; echo got=$x"), &ro, &o, 0);
	while (!o.started)
		assert_true(msb_agent_client_pump(a->c, 1000, NULL, 0, &err) >= 0);
	assert_int_equal(msb_agent_client_resize(a->c, id, 30, 100, &err), 0);
	assert_int_equal(msb_agent_client_write_stdin_all(a->c, id, "go\n", 3, 5000, &err), 0);
	assert_int_equal(msb_agent_client_wait(a->c, id, &o.st, 5000, &err), 0);
	assert_non_null(strstr(o.out, "30 100"));
	assert_non_null(strstr(o.out, "got=go"));
	out_free(&o);

	/* EOF on a terminal is ^D. */
	id = start(a, ARGV("cat"), &ro, &o, 0);
	assert_int_equal(msb_agent_client_write_stdin_all(a->c, id, "abc\n", 4, 5000, &err), 0);
	assert_int_equal(msb_agent_client_close_stdin(a->c, id, &err), 0);
	assert_int_equal(msb_agent_client_wait(a->c, id, &o.st, 5000, &err), 0);
	assert_int_equal(o.st.exit_code, 0);
	out_free(&o);
}

static void test_ping_release(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	struct out o;
	for (int i = 0; i < 3; i++)
		assert_int_equal(msb_agent_client_ping(a->c, 5000, &err), 0);

	/* A released running session is drained and forgotten. */
	uint32_t id = start(a, ARGV("head", "-c", "2000000", "/dev/zero"), NULL, &o, 0);
	assert_int_equal(msb_agent_client_release(a->c, id), 0);
	assert_int_equal(msb_agent_client_wait(a->c, id, NULL, 0, &err), -ENOENT);
	run(a, ARGV("sh", "-c", "sleep 0.5; echo ok"), NULL, &o);
	assert_string_equal(o.out, "ok\n");
	out_free(&o);
	assert_int_equal(msb_agent_client_ping(a->c, 5000, &err), 0);
}

static char *read_text(const char *dir, const char *name)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	static char buf[65536];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strdup(buf);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/*
 * TRUST under --root: the CA alone in etc/msb/ca.pem, appended once to the
 * image's bundle (again: still once), the bundle copied to
 * etc/msb/ca-bundle.pem, more roots appended; junk refused.
 */
static void test_trust_installs_once(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/etc/ssl", a->root);
	assert_int_equal(mkdir(dir, 0755), 0);
	snprintf(dir, sizeof(dir), "%s/etc/ssl/certs", a->root);
	assert_int_equal(mkdir(dir, 0755), 0);
	write_file(a->root, "etc/ssl/certs/ca-certificates.crt",
		   "-----BEGIN CERTIFICATE-----\nSYSTEMROOT\n-----END CERTIFICATE-----\n");
	static const char ca[] =
		"-----BEGIN CERTIFICATE-----\nSANDBOXCA\n-----END CERTIFICATE-----\n";
	static const char roots[] =
		"-----BEGIN CERTIFICATE-----\nHOSTROOT\n-----END CERTIFICATE-----\n";
	for (int i = 0; i < 2; i++)
		assert_int_equal(msb_agent_client_trust(a->c, MSB_AGENT_TRUST_CA, ca, strlen(ca),
							5000, &err),
				 0);
	assert_int_equal(msb_agent_client_trust(a->c, MSB_AGENT_TRUST_ROOTS, roots, strlen(roots),
						5000, &err),
			 0);
	char *only = read_text(a->root, "etc/msb/ca.pem");
	char *sys = read_text(a->root, "etc/ssl/certs/ca-certificates.crt");
	char *bundle = read_text(a->root, "etc/msb/ca-bundle.pem");
	assert_non_null(only);
	assert_non_null(sys);
	assert_non_null(bundle);
	assert_string_equal(only, ca);
	assert_int_equal(count(sys, "SYSTEMROOT"), 1);
	assert_int_equal(count(sys, "SANDBOXCA"), 1);
	assert_int_equal(count(sys, "HOSTROOT"), 1);
	assert_string_equal(bundle, sys);
	free(only);
	free(sys);
	free(bundle);
	/* Not PEM: refused with a message, and the agent lives on. */
	assert_int_equal(
		msb_agent_client_trust(a->c, MSB_AGENT_TRUST_CA, "\x01\x02", 2, 5000, &err),
		-EINVAL);
	assert_non_null(strstr(err.msg, "not PEM"));
	assert_int_equal(msb_agent_client_trust(a->c, 77, ca, strlen(ca), 5000, &err), -EINVAL);
	assert_int_equal(msb_agent_client_ping(a->c, 5000, &err), 0);
}

/* MOUNT in test mode: answered (never performed on the host), in order. */
static void test_mount_refused_off_pid1(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_agent_mount m = {.tag = "msbfs0", .path = "/data"};
	for (int i = 0; i < 2; i++) {
		assert_int_equal(msb_agent_client_mount(a->c, &m, 5000, &err), -EPERM);
		assert_non_null(strstr(err.msg, "PID 1"));
	}
	char path[300];
	snprintf(path, sizeof(path), "%s/data", a->root);
	assert_int_equal(access(path, F_OK), -1); /* nothing was created */
	/* A malformed one is answered too (EPROTO; read raw: the client sent no MOUNT), and
	 * the agent lives on. */
	int fd = msb_agent_client_fd(a->c);
	uint8_t b[MSB_AGENT_HEADER_SIZE + 8] = {0};
	msb_agent_header_encode(b, MSB_AGENT_MOUNT, 0, 8); /* flags, then a bad length */
	msb_agent_put_u32(b + MSB_AGENT_HEADER_SIZE + 4, 100);
	assert_int_equal(write(fd, b, sizeof(b)), (ssize_t)sizeof(b));
	uint8_t r[MSB_AGENT_HEADER_SIZE + 8 + 1024];
	size_t got = 0;
	struct msb_agent_header h;
	while (got < MSB_AGENT_HEADER_SIZE + 8) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		assert_int_equal(poll(&pfd, 1, 5000), 1);
		ssize_t k = read(fd, r + got, sizeof(r) - got);
		assert_true(k > 0);
		got += (size_t)k;
	}
	assert_int_equal(msb_agent_header_decode(r, got, &h), 0);
	assert_int_equal(h.type, MSB_AGENT_MOUNTED);
	assert_int_equal(msb_agent_get_u32(r + MSB_AGENT_HEADER_SIZE), EPROTO);
	assert_int_equal(got, MSB_AGENT_HEADER_SIZE + h.length);
	assert_int_equal(msb_agent_client_ping(a->c, 5000, &err), 0);
}

/* A hostile host (well, a buggy one): the agent drops bad frames and lives. */
static void test_agent_survives_bad_frames(void **state)
{
	struct agent *a = *state;
	struct msb_error err = MSB_ERROR_INIT;
	struct out o;
	int fd = msb_agent_client_fd(a->c);
	uint8_t b[64] = {0};

	/* An unknown type, STDIN for a session that does not exist, a PING
	 * with flags, a SIGNAL on session 0: each dropped, none answered. */
	msb_agent_header_encode(b, 50, 1, 4);
	msb_agent_header_encode(b + 16, MSB_AGENT_STDIN, 77, 4);
	msb_agent_header_encode(b + 32, MSB_AGENT_PING, 0, 0);
	b[34] = 1;						 /* flags on the PING: dropped */
	msb_agent_header_encode(b + 44, MSB_AGENT_SIGNAL, 0, 4); /* session 0 */
	assert_int_equal(write(fd, b, 60), 60);
	assert_int_equal(msb_agent_client_ping(a->c, 5000, &err), 0);
	run(a, ARGV("echo", "alive"), NULL, &o);
	assert_string_equal(o.out, "alive\n");
	out_free(&o);
}

int main(void)
{
	/* The agent's children and shutdown must not take the test with them. */
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest codec[] = {
		cmocka_unit_test(test_header_round_trip),
		cmocka_unit_test(test_header_hostile),
		cmocka_unit_test(test_validate_from_guest),
		cmocka_unit_test(test_get_string),
		cmocka_unit_test(test_mount_codec),
		cmocka_unit_test(test_client_mount),
		cmocka_unit_test(test_exec_round_trip),
		cmocka_unit_test(test_exec_limits),
		cmocka_unit_test(test_client_valid_stream_bytewise),
		cmocka_unit_test(test_client_hostile),
		cmocka_unit_test(test_client_error_and_manual_credit),
	};
#define AGENT_TEST(f) cmocka_unit_test_setup_teardown(f, agent_setup, agent_teardown)
	const struct CMUnitTest agent[] = {
		AGENT_TEST(test_echo_exit_codes),
		AGENT_TEST(test_signal_death),
		AGENT_TEST(test_stdin),
		AGENT_TEST(test_large_output),
		AGENT_TEST(test_concurrent),
		AGENT_TEST(test_stdout_stderr),
		AGENT_TEST(test_exec_errors),
		AGENT_TEST(test_user),
		AGENT_TEST(test_cwd_env),
		AGENT_TEST(test_signal),
		AGENT_TEST(test_orphans),
		AGENT_TEST(test_tty),
		AGENT_TEST(test_ping_release),
		AGENT_TEST(test_agent_survives_bad_frames),
		AGENT_TEST(test_mount_refused_off_pid1),
		AGENT_TEST(test_trust_installs_once),
	};
	int failed = cmocka_run_group_tests_name("agent codec and client", codec, NULL, NULL);
	failed += cmocka_run_group_tests_name("agent", agent, NULL, NULL);
	return failed;
}
