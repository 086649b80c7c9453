/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent protocol: how the host talks to msb's guest agent (PID 1 in the
 * VM) over one byte stream (a virtio-console port).  Compiled into both the
 * host (core) and the static agent.  docs/agent-protocol.md describes it.
 *
 * Every frame is a 12-byte header followed by `length` payload bytes, all
 * integers little-endian:
 *
 *   u8  version   MSB_AGENT_PROTO_VERSION
 *   u8  type      enum msb_agent_type
 *   u16 flags     0 (reserved; a receiver rejects unknown bits)
 *   u32 session   exec session id (0: the connection itself)
 *   u32 length    payload bytes, <= MSB_AGENT_FRAME_MAX
 *
 * Strings in payloads are u32 length + bytes (no NUL inside, no terminator).
 *
 * THE HOST TREATS EVERY FRAME FROM THE GUEST AS HOSTILE: a guest controls
 * the agent.  The decoders below are bounded, never trust a length they have
 * not checked against the bytes actually present, and are fuzzed
 * (tests/fuzz/fuzz_agent_proto.c).
 */
#ifndef MSB_AGENT_PROTO_H
#define MSB_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define MSB_AGENT_PROTO_VERSION 1
#define MSB_AGENT_HEADER_SIZE	12
/* Largest payload either side sends or accepts. */
#define MSB_AGENT_FRAME_MAX (64 * 1024)
/* Output bytes the agent may send on a session before the host grants more. */
#define MSB_AGENT_WINDOW_INITIAL (256 * 1024)
/* Limits on an exec request. */
#define MSB_AGENT_ARGS_MAX   4096
#define MSB_AGENT_ENV_MAX    4096
#define MSB_AGENT_STRING_MAX 4096
/* Most sessions open at once. */
#define MSB_AGENT_SESSIONS_MAX 256
/* Largest PING (and so PONG) payload. */
#define MSB_AGENT_PING_MAX 64

enum msb_agent_type {
	/* agent -> host */
	MSB_AGENT_HELLO = 1,   /* payload: u32 proto version, string agent version */
	MSB_AGENT_STDOUT = 2,  /* payload: bytes (never empty) */
	MSB_AGENT_STDERR = 3,  /* payload: bytes (never empty) */
	MSB_AGENT_EXIT = 4,    /* payload: i32 exit code (-1 if signalled), i32 signal (0 if not) */
	MSB_AGENT_ERROR = 5,   /* payload: i32 errno, string message; the exec did not start */
	MSB_AGENT_STARTED = 6, /* payload: u32 guest pid */
	MSB_AGENT_PONG = 7,    /* payload: as PING's */
	MSB_AGENT_SHUTDOWN_ACK = 8, /* payload: none; disks are synced, power-off follows */
	MSB_AGENT_MOUNTED = 9,	    /* payload: i32 errno (0: mounted), string message */
	MSB_AGENT_TRUSTED = 10,	    /* payload: i32 errno (0: installed), string message */

	/* host -> agent */
	MSB_AGENT_EXEC = 32,	 /* payload: struct msb_agent_exec, encoded */
	MSB_AGENT_STDIN = 33,	 /* payload: bytes; an empty payload is EOF */
	MSB_AGENT_SIGNAL = 34,	 /* payload: u32 signal number */
	MSB_AGENT_RESIZE = 35,	 /* payload: u16 rows, u16 cols (tty sessions) */
	MSB_AGENT_PING = 36,	 /* payload: up to 64 bytes, echoed */
	MSB_AGENT_SHUTDOWN = 37, /* payload: u32 enum msb_agent_shutdown */
	MSB_AGENT_MOUNT = 38,	 /* payload: struct msb_agent_mount, encoded */
	MSB_AGENT_TRUST = 39,	 /* payload: u32 enum msb_agent_trust, PEM text */

	/* both ways */
	MSB_AGENT_WINDOW = 64, /* payload: u32 bytes of credit granted to the peer */
};

/*
 * TRUST: certificates for the guest's trust stores (docs/agent-protocol.md).
 * The sandbox's CA replaces /etc/msb/ca.pem; both kinds are appended (once)
 * to every system bundle the guest has and to /etc/msb/ca-bundle.pem.
 */
enum msb_agent_trust {
	MSB_AGENT_TRUST_CA = 1,	   /* the sandbox's CA (the secrets proxy's) */
	MSB_AGENT_TRUST_ROOTS = 2, /* more roots (the host's, --trust-host-cas), in pieces */
};

enum msb_agent_shutdown {
	MSB_AGENT_POWEROFF = 1,
	MSB_AGENT_REBOOT = 2,
};

/* EXEC flags. */
#define MSB_AGENT_EXEC_TTY   0x1u /* run on a pty: stdout carries the terminal */
#define MSB_AGENT_EXEC_STDIN 0x2u /* the host will send STDIN frames (else /dev/null) */

/* MOUNT flags. */
#define MSB_AGENT_MOUNT_RO     0x1u /* MS_RDONLY (a courtesy: the host enforces read-only) */
#define MSB_AGENT_MOUNT_NOEXEC 0x2u /* MS_NOEXEC */
/* A virtio-fs tag: 1 to 35 bytes of [A-Za-z0-9_.-]; the buffer for one. */
#define MSB_AGENT_TAG_MAX 36

struct msb_agent_header {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t session;
	uint32_t length;
};

/*
 * An exec request.  Encoded as: u32 flags, u16 rows, u16 cols, string user,
 * string cwd, u32 argc, argc strings, u32 envc, envc strings.  Decoded
 * strings point into a caller-provided arena (NUL-terminated there).
 */
struct msb_agent_exec {
	uint32_t flags;
	uint16_t rows, cols;
	/*
	 * "" (root), "name", "uid", "name:group", "uid:gid" — resolved by the
	 * agent against the guest's own /etc/passwd and /etc/group.
	 */
	const char *user;
	const char *cwd; /* "" = the user's home, else "/" */
	uint32_t argc;	 /* >= 1 */
	const char **argv;
	uint32_t envc;
	const char **envp;
};

/*
 * A mount request: mount the virtio-fs share `tag` on the guest directory
 * `path` (absolute), with MS_NOSUID|MS_NODEV and the flags' MS_RDONLY and
 * MS_NOEXEC.  Encoded as: u32 flags, string tag, string path.  The agent
 * answers each MOUNT, in order, with one MOUNTED.
 */
struct msb_agent_mount {
	uint32_t flags;
	const char *tag;
	const char *path;
};

/* Is t a type the host may receive from the agent? */
int msb_agent_type_from_guest(uint8_t t);
/* Is t a type the agent may receive from the host? */
int msb_agent_type_from_host(uint8_t t);

/* Write a header into out[MSB_AGENT_HEADER_SIZE]. */
void msb_agent_header_encode(uint8_t *out, uint8_t type, uint32_t session, uint32_t length);

/*
 * Decode and validate a header: version, known type, no unknown flags,
 * length <= MSB_AGENT_FRAME_MAX.  Returns 0 or -EPROTO / -EMSGSIZE.
 * (-EPROTO also when len < MSB_AGENT_HEADER_SIZE.)  Whenever len is enough,
 * *h is filled even on error, for logging; only a 0 return makes it
 * trustworthy.
 */
int msb_agent_header_decode(const uint8_t *in, size_t len, struct msb_agent_header *h);

/*
 * Check a payload against its type's shape, for frames from the guest:
 * fixed sizes exact (EXIT 8, STARTED 4, WINDOW 4), data frames non-empty,
 * HELLO/ERROR strings within the payload.  0 or -EPROTO.
 */
int msb_agent_validate_from_guest(const struct msb_agent_header *h, const uint8_t *payload);
/*
 * Also enforced by msb_agent_validate_from_guest (and its host-side twin):
 * connection frames (HELLO, PONG, SHUTDOWN_ACK, MOUNTED; PING, SHUTDOWN,
 * MOUNT) carry
 * session 0, every other frame a non-zero session; PONG at most
 * MSB_AGENT_PING_MAX bytes, SHUTDOWN_ACK empty, HELLO/ERROR strings shorter
 * than MSB_AGENT_STRING_MAX with nothing after them (MOUNTED likewise: i32,
 * string).
 */

/*
 * The agent's check of a frame from the host (added for the agent):
 * the type is one the host sends, session rules as above, fixed sizes exact
 * (SIGNAL, RESIZE, SHUTDOWN, WINDOW 4), PING at most MSB_AGENT_PING_MAX,
 * EXEC non-empty (its shape is checked by msb_agent_exec_decode).  0 or -EPROTO.
 */
int msb_agent_validate_from_host(const struct msb_agent_header *h, const uint8_t *payload);

/* Decoders for fixed payloads (the length was validated). */
uint32_t msb_agent_get_u32(const uint8_t *p);
int32_t msb_agent_get_i32(const uint8_t *p);
void msb_agent_put_u32(uint8_t *p, uint32_t v);
/* (Added: RESIZE and the exec request carry u16s.) */
uint16_t msb_agent_get_u16(const uint8_t *p);
void msb_agent_put_u16(uint8_t *p, uint16_t v);

/*
 * Decode a string at *off within payload[0..len): copies it NUL-terminated
 * into buf (size cap), advances *off.  -EPROTO if it overruns the payload,
 * is longer than cap - 1, or contains a NUL byte.
 */
int msb_agent_get_string(const uint8_t *payload, size_t len, size_t *off, char *buf, size_t cap);

/*
 * Encode an exec request into out (capacity cap).  Returns the payload
 * length, or -EMSGSIZE if it does not fit in one frame / the limits.
 * Every string (user, cwd, each argument and environment entry) must be
 * shorter than MSB_AGENT_STRING_MAX.  -EINVAL for a request that is not one:
 * argc 0, a NULL argument, unknown flags.
 */
int msb_agent_exec_encode(const struct msb_agent_exec *req, uint8_t *out, size_t cap);

/*
 * Encode a mount request into out (capacity cap): the payload length, -EINVAL
 * for a request that is not one (unknown flags, a tag that is not 1-35 bytes
 * of [A-Za-z0-9_.-], a path that is not absolute), -EMSGSIZE if it does not
 * fit.
 */
int msb_agent_mount_encode(const struct msb_agent_mount *m, uint8_t *out, size_t cap);
/*
 * Decode a mount request (the agent side; fuzzed).  The strings are copied
 * NUL-terminated into tag (tag_cap >= MSB_AGENT_TAG_MAX) and path (path_cap
 * >= MSB_AGENT_STRING_MAX suffices).  0, -EPROTO for anything encode would
 * refuse or trailing bytes, -E2BIG when a buffer is too small.  On error *m
 * is zeroed.
 */
int msb_agent_mount_decode(const uint8_t *payload, size_t len, struct msb_agent_mount *m, char *tag,
			   size_t tag_cap, char *path, size_t path_cap);

/*
 * Decode an exec request (the agent side; the host never decodes one, but
 * the agent is fuzzed too).  Strings are copied into arena (size
 * arena_cap), argv/envp into the arrays given (capacities argv_cap and
 * env_cap, each at least 1 more than the count for a NULL terminator).
 * 0 or -EPROTO / -E2BIG.  -EPROTO: malformed (overruns, a NUL inside a
 * string, argc 0, counts over the limits, unknown flags, trailing bytes);
 * -E2BIG: well-formed but larger than the caller's arrays.  An arena of
 * `len` bytes always suffices (each string costs its 4-byte length on the
 * wire and one NUL in the arena).  On error *req is zeroed.
 */
int msb_agent_exec_decode(const uint8_t *payload, size_t len, struct msb_agent_exec *req,
			  char *arena, size_t arena_cap, const char **argv, size_t argv_cap,
			  const char **envp, size_t env_cap);

#endif
