/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the agent protocol, from the host's side: the input
 * is a byte stream from a hostile guest.
 *
 *  1. The stream goes into a transport-less agent client that started a few
 *     sessions (ids 0x100, 0x101, 0x102: one plain, one with stdin and a
 *     pty, one with manual credit), fed in chunks whose sizes come from the
 *     first byte, so frames split at arbitrary points.  Checked: no memory
 *     error (ASan/UBSan), output never beyond the window, callbacks only for
 *     the sessions started, a session ends at most once, an error always
 *     comes with its code and a one-line message, and a dead client stays
 *     dead.
 *     When the first byte is odd, a MOUNT is outstanding too, so a MOUNTED
 *     in the stream is legal once (and checked: errno 0..4095, message
 *     bounded).
 *  2. The same bytes go through msb_agent_exec_decode and
 *     msb_agent_mount_decode (the agent's decoders: a buggy host must not
 *     crash the guest either); a request that decodes re-encodes to exactly
 *     the same bytes.
 *  3. Each 12-byte window is a header for header_decode, and a valid one
 *     with the rest as payload goes through validate_from_guest/from_host.
 *
 * Seeds: tests/fuzz/corpus/agent_proto/.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

#include "agent-client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define NSESS 3

struct track {
	uint32_t id;
	int started, ended;
	uint64_t out; /* bytes delivered */
	uint64_t consumed;
};

static struct track tracks[NSESS];

static struct track *track_of(uint32_t session, void *data)
{
	struct track *t = data;
	CHECK(t >= tracks && t < tracks + NSESS);
	CHECK(t->id == session);
	return t;
}

static void on_started(void *opaque, uint32_t session, void *data, uint32_t pid)
{
	(void)opaque, (void)pid;
	struct track *t = track_of(session, data);
	CHECK(!t->started && !t->ended);
	t->started = 1;
}

static void on_output(void *opaque, uint32_t session, void *data, int stream, const uint8_t *buf,
		      size_t len)
{
	(void)opaque;
	struct track *t = track_of(session, data);
	CHECK(t->started && !t->ended);
	CHECK(stream == MSB_AGENT_CLIENT_STDOUT || stream == MSB_AGENT_CLIENT_STDERR);
	CHECK(len > 0 && len <= MSB_AGENT_FRAME_MAX && buf);
	volatile uint8_t sink = buf[0] ^ buf[len - 1]; /* ASan: the whole range is valid */
	(void)sink;
	t->out += len;
	/* The manual session never grants: its window is the initial one. */
	if (t == &tracks[2])
		CHECK(t->out <= MSB_AGENT_WINDOW_INITIAL);
}

static void on_ended(void *opaque, uint32_t session, void *data, const struct msb_agent_status *st)
{
	(void)opaque;
	struct track *t = track_of(session, data);
	CHECK(!t->ended);
	CHECK(st->message[MSB_AGENT_CLIENT_MSG_MAX - 1] == '\0');
	for (const char *p = st->message; *p; p++)
		CHECK(*p >= 0x20 && *p < 0x7f);
	if (st->failed)
		CHECK(!t->started && st->errnum > 0 && st->errnum <= 4095);
	else
		CHECK(t->started &&
		      ((st->signal == 0 && st->exit_code >= 0 && st->exit_code <= 255) ||
		       (st->exit_code == -1 && st->signal >= 1 && st->signal <= 64)));
	t->ended = 1;
}

static const struct msb_agent_client_ops ops = {
	.started = on_started, .output = on_output, .ended = on_ended};

static void fuzz_client(const uint8_t *data, size_t size)
{
	struct msb_agent_client *c = NULL;
	struct msb_error err = MSB_ERROR_INIT;
	static const char *argv[] = {"sh", "-c", "true"};
	static const uint32_t flags[NSESS] = {0, MSB_AGENT_EXEC_STDIN | MSB_AGENT_EXEC_TTY, 0};

	memset(tracks, 0, sizeof(tracks));
	CHECK(msb_agent_client_new(-1, &ops, NULL, &c, &err) == 0);
	for (int i = 0; i < NSESS; i++) {
		struct msb_agent_exec req = {
			.flags = flags[i], .user = "", .cwd = "", .argc = 3, .argv = argv};
		CHECK(msb_agent_client_exec(c, &req, i == 2 ? MSB_AGENT_CLIENT_MANUAL_CREDIT : 0,
					    &tracks[i], &tracks[i].id, &err) == 0);
		CHECK(tracks[i].id == 0x100u + (uint32_t)i);
	}

	/* Odd first byte: a MOUNT waits for its answer (a zero timeout returns at once). */
	if (size && (data[0] & 1)) {
		struct msb_agent_mount m = {.tag = "msbfs0", .path = "/data"};
		CHECK(msb_agent_client_mount(c, &m, 0, &err) == -ETIMEDOUT);
	}

	/* Chunk sizes: 1..256 from the first byte, so frames are split. */
	size_t chunk = size ? (size_t)data[0] + 1 : 1;
	size_t off = size ? 1 : 0;
	int dead = 0;
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;
		int r = msb_agent_client_feed(c, data + off, n, &err);
		off += n;
		if (r < 0) {
			CHECK(err.code == r);
			CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));
			dead = r;
			break;
		}
		/* Exercise the send side between chunks, as a caller would. */
		(void)msb_agent_client_write_stdin(c, tracks[1].id, "x", 1, NULL);
		(void)msb_agent_client_signal(c, tracks[0].id, 15, NULL);
		(void)msb_agent_client_consumed(c, tracks[2].id, 0, NULL);
	}
	if (dead) {
		/* Dead for good, and silent. */
		struct track before[NSESS];
		memcpy(before, tracks, sizeof(before));
		CHECK(msb_agent_client_feed(c, data, size, &err) == dead);
		CHECK(msb_agent_client_ping(c, 0, &err) == dead);
		CHECK(memcmp(before, tracks, sizeof(before)) == 0);
	}
	for (int i = 0; i < NSESS; i++) {
		struct msb_agent_status st;
		int e = msb_agent_client_ended(c, tracks[i].id, &st);
		CHECK(e == tracks[i].ended);
		msb_agent_client_release(c, tracks[i].id);
	}
	msb_agent_client_free(c);
}

static void fuzz_exec_decode(const uint8_t *data, size_t size)
{
	static char arena[MSB_AGENT_FRAME_MAX];
	static const char *argv[MSB_AGENT_ARGS_MAX + 1], *envp[MSB_AGENT_ENV_MAX + 1];
	static uint8_t again[MSB_AGENT_FRAME_MAX];
	struct msb_agent_exec req;

	if (size > MSB_AGENT_FRAME_MAX)
		return;
	/* An arena of `size` bytes must always be enough. */
	int r = msb_agent_exec_decode(data, size, &req, arena, size, argv, MSB_AGENT_ARGS_MAX + 1,
				      envp, MSB_AGENT_ENV_MAX + 1);
	if (r < 0) {
		CHECK(r == -EPROTO);
		return;
	}
	CHECK(req.argc >= 1 && req.argc <= MSB_AGENT_ARGS_MAX && req.envc <= MSB_AGENT_ENV_MAX);
	CHECK(req.argv[req.argc] == NULL && req.envp[req.envc] == NULL);
	int n = msb_agent_exec_encode(&req, again, sizeof(again));
	CHECK(n == (int)size);
	CHECK(memcmp(again, data, size) == 0);
}

static void fuzz_mount_decode(const uint8_t *data, size_t size)
{
	static char path[MSB_AGENT_STRING_MAX];
	static uint8_t again[MSB_AGENT_FRAME_MAX];
	char tag[MSB_AGENT_TAG_MAX];
	struct msb_agent_mount m;

	if (size > MSB_AGENT_FRAME_MAX)
		return;
	int r = msb_agent_mount_decode(data, size, &m, tag, sizeof(tag), path, sizeof(path));
	if (r < 0) {
		CHECK(r == -EPROTO && !m.tag && !m.path);
		return;
	}
	CHECK(m.tag == tag && m.path == path && m.path[0] == '/');
	CHECK(strlen(m.tag) >= 1 && strlen(m.tag) < MSB_AGENT_TAG_MAX);
	int n = msb_agent_mount_encode(&m, again, sizeof(again));
	CHECK(n == (int)size);
	CHECK(memcmp(again, data, size) == 0);
}

static void fuzz_headers(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i + MSB_AGENT_HEADER_SIZE <= size && i < 64; i++) {
		struct msb_agent_header h;
		if (msb_agent_header_decode(data + i, size - i, &h) != 0)
			continue;
		CHECK(h.version == MSB_AGENT_PROTO_VERSION && h.flags == 0);
		CHECK(h.length <= MSB_AGENT_FRAME_MAX);
		size_t avail = size - i - MSB_AGENT_HEADER_SIZE;
		if (h.length > avail)
			continue;
		/* A copy of exactly `length` bytes, so ASan sees any overread. */
		uint8_t *p = malloc(h.length ? h.length : 1);
		if (!p)
			return;
		memcpy(p, data + i + MSB_AGENT_HEADER_SIZE, h.length);
		if (msb_agent_validate_from_guest(&h, p) == 0)
			CHECK(msb_agent_type_from_guest(h.type));
		if (msb_agent_validate_from_host(&h, p) == 0)
			CHECK(msb_agent_type_from_host(h.type));
		size_t off = 0;
		char buf[64];
		while (msb_agent_get_string(p, h.length, &off, buf, sizeof(buf)) == 0)
			CHECK(strlen(buf) < sizeof(buf) && off <= h.length);
		free(p);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4 * MSB_AGENT_FRAME_MAX)
		return 0;
	fuzz_client(data, size);
	fuzz_exec_decode(data, size);
	fuzz_mount_decode(data, size);
	fuzz_headers(data, size);
	return 0;
}
