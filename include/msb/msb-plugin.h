/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-plugin.h — the msb plugin ABI, version 1.
 *
 * This header is the whole contract between msb and a backend module
 * (hypervisor, network, storage, secrets).  A module is a shared object that
 * exports exactly one symbol, msb_plugin_entry_v1, which returns a pointer to
 * a constant struct msb_plugin_desc.  Use MSB_PLUGIN_DEFINE(desc) to emit it.
 *
 * Compatibility promise (docs/plugin-abi.md):
 *  - MSB_PLUGIN_ABI_MAJOR changes only when something already published
 *    changes meaning or layout.  msb refuses a module of another major.
 *  - MSB_PLUGIN_ABI_MINOR grows when fields or callbacks are appended at the
 *    END of a struct.  msb loads a module built against an older or equal
 *    minor, and refuses one built against a newer minor than it knows.
 *  - Every struct that can grow starts with (or carries) its own `size`,
 *    stamped with sizeof() at the module's build.  msb copies what the module
 *    provides into zeroed host-side structs, so a field the module does not
 *    know reads as 0 / NULL.
 *  - The host services table (struct msb_host) only ever grows at the end;
 *    a module must check host->size before using a field appended after the
 *    minor it was built for (MSB_HOST_HAS()).
 *  - Nothing allocated on one side is freed on the other.  Errors cross as a
 *    negative errno plus a caller-owned struct msb_error.
 *
 * Threading: every callback is called from the sandbox supervisor's main
 * thread unless its comment says otherwise.  Threads a module needs are made
 * through host->thread_create(), so the core can confine each thread class.
 */
#ifndef MSB_PLUGIN_H
#define MSB_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <msb/msb-error.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MSB_PLUGIN_ABI_MAJOR	     1
#define MSB_PLUGIN_ABI_MINOR	     4
#define MSB_PLUGIN_ABI		     ((uint32_t)((MSB_PLUGIN_ABI_MAJOR << 16) | MSB_PLUGIN_ABI_MINOR))
#define MSB_PLUGIN_ABI_MAJOR_OF(abi) ((uint32_t)(abi) >> 16)
#define MSB_PLUGIN_ABI_MINOR_OF(abi) ((uint32_t)(abi)&0xffffu)

/* Stack size of threads made with host->thread_create(). */
#define MSB_PLUGIN_THREAD_STACK (256u << 10)

/* The one symbol a module exports. */
#define MSB_PLUGIN_ENTRY_SYMBOL "msb_plugin_entry_v1"

#if defined(__GNUC__)
#define MSB_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define MSB_PLUGIN_EXPORT
#endif

/*
 * MSB_PLUGIN_DEFINE(desc) — emit the entry point for a module whose
 * descriptor is the static const struct msb_plugin_desc `desc`.
 */
#define MSB_PLUGIN_DEFINE(desc)                                                                    \
	MSB_PLUGIN_EXPORT const struct msb_plugin_desc *msb_plugin_entry_v1(void);                 \
	MSB_PLUGIN_EXPORT const struct msb_plugin_desc *msb_plugin_entry_v1(void)                  \
	{                                                                                          \
		return &(desc);                                                                    \
	}

/* Module kinds. */
enum msb_plugin_kind {
	MSB_PLUGIN_HV = 1,	/* hypervisor: builds and runs the VM */
	MSB_PLUGIN_NET = 2,	/* network: namespace, TAP, egress policy, DNS */
	MSB_PLUGIN_STORAGE = 3, /* storage: virtio-fs file servers for shares */
	MSB_PLUGIN_SECRETS = 4, /* secrets: TLS-intercepting credential injector */
};

/* Log levels for host->log(). */
enum msb_log_level {
	MSB_LOG_ERROR = 0,
	MSB_LOG_WARN = 1,
	MSB_LOG_INFO = 2,
	MSB_LOG_DEBUG = 3,
};

/*
 * Thread classes.  The core puts each class under its own seccomp filter; a
 * vCPU thread is treated as running hostile code from the moment it starts.
 */
enum msb_thread_class {
	MSB_THREAD_VMM = 1,   /* device emulation, event loops */
	MSB_THREAD_VCPU = 2,  /* one per virtual CPU */
	MSB_THREAD_IO = 3,    /* blocking file or network I/O for a device backend */
	MSB_THREAD_PROXY = 4, /* network proxies (DNS interceptor, TLS proxy) */
};

/* Events for host->fd_add(). */
#define MSB_FD_READ  0x1u
#define MSB_FD_WRITE 0x2u
#define MSB_FD_HUP   0x4u

typedef void (*msb_fd_cb)(int fd, uint32_t events, void *arg);

/*
 * Host services: what the core offers a module.  Append-only; check
 * MSB_HOST_HAS(host, field) before using a field newer than ABI 1.0.
 * Every function takes the table it came from as its first argument.
 */
struct msb_host {
	uint32_t abi;  /* MSB_PLUGIN_ABI of the core */
	uint32_t size; /* sizeof(struct msb_host) at the core's build */

	/* Write one log line, prefixed with the module's kind and name. */
	void (*log)(const struct msb_host *host, int level, const char *fmt, ...)
		__attribute__((format(printf, 3, 4)));

	/*
	 * Fill err (which may be NULL) with code and a formatted one-line
	 * message; return code, which must be a negative errno.
	 */
	int (*error_set)(const struct msb_host *host, struct msb_error *err, int code,
			 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

	/*
	 * Event loop: call cb(fd, events, arg) on the supervisor's loop thread
	 * whenever fd is ready for `events` (MSB_FD_*).  fd stays owned by the
	 * module; remove it with fd_del before closing it.
	 */
	int (*fd_add)(const struct msb_host *host, int fd, uint32_t events, msb_fd_cb cb,
		      void *arg);
	int (*fd_mod)(const struct msb_host *host, int fd, uint32_t events);
	int (*fd_del)(const struct msb_host *host, int fd);

	/*
	 * Configuration: the value at a dotted path of this sandbox's spec
	 * ("resources.memory", "network.default_egress"), or a module option
	 * "plugin.<key>" from the config file's [<kind>.<name>] section, as a
	 * string valid until the module's destroy callback; NULL if unset.
	 */
	const char *(*config_get)(const struct msb_host *host, const char *key);

	/* The whole validated sandbox spec as JSON (docs/spec.md). */
	const char *(*spec_json)(const struct msb_host *host);

	/*
	 * Start a thread of the given class running fn(arg).  The core names
	 * it, blocks signals the supervisor handles, and puts it under the
	 * class's seccomp filter before fn runs (docs/plugin-abi.md, "Threads
	 * and seccomp": a call the filter refuses kills the process); if the
	 * filter cannot be applied, fn never runs and a negative errno comes
	 * back.  *tid receives the pthread_t.  The thread's stack is
	 * MSB_PLUGIN_THREAD_STACK (256 KiB): keep big buffers off it.
	 */
	int (*thread_create)(const struct msb_host *host, int thread_class, const char *name,
			     void *(*fn)(void *), void *arg, unsigned long *tid);

	/* This sandbox's name and its private state directory (mode 0700). */
	const char *sandbox_name;
	const char *state_dir;

	/* Core-private; modules never touch it. */
	void *core;

	/*
	 * ABI 1.2: the value of secret `env` (a --secret of this sandbox
	 * without a --secret-file), from where msb keeps it: a value given
	 * directly (the SDK, --secret-values-fd), else the host environment,
	 * else the config file's [secrets].  Copies it into buf (not
	 * NUL-terminated) and sets *len.  0; -ENOENT when there is none;
	 * -EFBIG when it is longer than cap.  The core wipes its own copies once
	 * the secrets module's proxy_start returned.
	 */
	int (*secret_value)(const struct msb_host *host, const char *env, char *buf, size_t cap,
			    size_t *len);
};

#define MSB_HOST_HAS(host, field)                                                                  \
	((host)->size >= offsetof(struct msb_host, field) + sizeof((host)->field))

/*
 * Lifecycle phases, delivered in this order to every module of a sandbox
 * through desc->phase (optional).  A failure in PREPARE or BOOT aborts the
 * sandbox; the core then delivers STOPPED and destroys every instance, in
 * the reverse order of creation.
 */
enum msb_phase {
	MSB_PHASE_PREPARE = 1,	/* host-side resources (namespaces, shares, proxies) */
	MSB_PHASE_BOOT = 2,	/* devices attached, vCPUs about to run */
	MSB_PHASE_READY = 3,	/* the guest agent answered */
	MSB_PHASE_STOPPING = 4, /* orderly shutdown asked for */
	MSB_PHASE_STOPPED = 5,	/* VM gone; release what the guest used */
};

/* ---------------------------------------------------------------------- */
/* Objects the core passes between modules.                               */

/*
 * A file server for one virtio-fs share, made by a storage module and handed
 * by the core to the hypervisor module's virtio-fs device.  `handle` is called
 * on a device thread with one request: `in` holds the guest-readable buffers
 * (FUSE header and arguments — hostile input), `out` the guest-writable ones.
 * It writes the reply into `out` and returns the number of bytes written, or a
 * negative errno for a request it cannot parse (the device then fails the
 * request).  It may be called from several threads at once.
 */
struct msb_fs_ref;
struct msb_fs_server {
	uint32_t size;
	void *ctx;
	int (*handle)(void *ctx, const struct iovec *in, unsigned in_count, const struct iovec *out,
		      unsigned out_count);
	/* The share's mount tag, e.g. "msbfs0"; NUL-terminated, <= 35 bytes. */
	char tag[36];
	/*
	 * ABI 1.4, optional: a reply's payload by reference, for a transport
	 * that moves file bytes without copying them through its own memory
	 * (splice(2) into /dev/fuse; docs/storage.md "Replies by reference").
	 * A module fills these only where the caller's `size` holds them; NULL:
	 * not offered, use handle().
	 *
	 * handle_ref() is handle(), except that it may answer by reference:
	 * when it returns with ref->fd >= 0, `out` holds the reply's head (the
	 * returned length), whose fuse_out_header.len already counts ref->len
	 * more bytes, and the payload is ref->len bytes of ref->fd from
	 * ref->offset.  Where the file holds fewer (it ended, or shrank), the
	 * transport sends what it got and lowers the header's len to match (a
	 * short READ reply means end of file).  If the transport cannot move
	 * the bytes at all, it may call handle() for the same request instead
	 * (what takes a reference, READ, changes nothing on the host).  For every
	 * return with ref->fd >= 0 the transport calls ref_done() once, after
	 * the last use of ref->fd, which stays the module's (never closed by
	 * the transport), and before share_close.  Either may be called from
	 * several threads at once.
	 */
	int (*handle_ref)(void *ctx, const struct iovec *in, unsigned in_count,
			  const struct iovec *out, unsigned out_count, struct msb_fs_ref *ref);
	void (*ref_done)(void *ctx, struct msb_fs_ref *ref);
};

/* ABI 1.4: a reply's payload as a byte range of a host file (handle_ref). */
struct msb_fs_ref {
	uint32_t size;	 /* the caller's sizeof(); the caller zeroes the rest */
	uint32_t max;	 /* the caller's: the most payload it can move (more: by value) */
	int fd;		 /* the module's: the file, or -1 (the whole reply is in out) */
	uint32_t len;	 /* the module's: the payload's length, at most max */
	uint64_t offset; /* the module's: where the payload starts in fd */
	void *token;	 /* the module's own, for ref_done */
};

/* A network attachment made by a network module, for the hypervisor. */
struct msb_net_attach {
	uint32_t size;
	int tap_fd;	/* an IFF_TAP|IFF_NO_PI|IFF_VNET_HDR fd, or -1 */
	uint8_t mac[6]; /* the guest's MAC address */
	uint16_t mtu;
	int netns_fd; /* the sandbox's network namespace, or -1 */
	/* Guest addressing, as text (the agent configures it). */
	char guest_ipv4[48];   /* "10.201.0.2/30" */
	char gateway_ipv4[48]; /* "10.201.0.1" */
	char guest_ipv6[64];   /* "fd7a:...::2/64", or "" */
	char gateway_ipv6[64];
	char dns[64]; /* the resolver the guest should use */
};

/* Where a network module steers guest TLS for the secrets module. */
struct msb_tls_steer {
	uint32_t size;
	uint16_t ports[8];   /* guest destination ports to steer (0 = unused) */
	uint16_t proxy_port; /* where the proxy listens, inside the sandbox netns */
	/*
	 * Its address inside the namespace; "" (what tls-intercept reports):
	 * every address, IPv4 and IPv6, so the network module redirects to
	 * the address the connection arrived on.
	 */
	char proxy_addr[48];
	int block_quic; /* nonzero: refuse UDP to the steered ports (QUIC) */
};

/*
 * A question the secrets module asks about the DNS pin set: was `addr`
 * returned to this sandbox for `name`?  1 yes, 0 no, negative errno on error.
 * Supplied by the core (which asks the network module) in msb_proxy_config.
 */
struct msb_pin_query {
	void *ctx;
	int (*check)(void *ctx, const char *name, const struct sockaddr *addr, socklen_t addr_len);
};

/* ---------------------------------------------------------------------- */
/* Per-kind operations tables.  Each starts with its own size.             */

/* Guest machine shape, from the spec. */
struct msb_vm_config {
	uint32_t size;
	uint32_t cpus;
	uint64_t memory_bytes;
	const char *kernel_path; /* bzImage or vmlinux (PVH) */
	const char *initrd_path; /* may be NULL */
	const char *cmdline;	 /* extra kernel command line */
	const char *console_log; /* file that receives the serial console */
};

/* A virtio-blk disk. */
struct msb_disk {
	uint32_t size;
	const char *path;
	int read_only;
	const char *serial; /* reported to the guest as the disk's ID, <= 20 bytes */
};

struct msb_hv_ops {
	uint32_t size;
	/* Create the VM shape (memory, vCPUs, kernel, initramfs, command line). */
	int (*configure)(void *inst, const struct msb_vm_config *cfg, struct msb_error *err);
	/* Add devices before start; the order of calls is the order in the guest. */
	int (*add_disk)(void *inst, const struct msb_disk *disk, struct msb_error *err);
	int (*add_net)(void *inst, const struct msb_net_attach *net, struct msb_error *err);
	int (*add_fs)(void *inst, const struct msb_fs_server *fs, struct msb_error *err);
	/* Start the vCPUs.  Returns once the guest is running. */
	int (*start)(void *inst, struct msb_error *err);
	/*
	 * Connect to the guest agent's control channel: *fd receives a stream
	 * socket owned by the caller.  Every byte read from it is hostile.
	 */
	int (*agent_connect)(void *inst, int *fd, struct msb_error *err);
	/* Stop the VM now (the agent's orderly shutdown comes first, core-side). */
	int (*kill)(void *inst, struct msb_error *err);
	/*
	 * The VM's exit: 0 while it runs; otherwise 1 and *reason is one of
	 * "poweroff", "reboot", "panic", "killed", "error"; *detail a line.
	 */
	int (*exited)(void *inst, const char **reason, const char **detail);
	/*
	 * Optional: an fd that becomes readable once the VM has ended, for the
	 * supervisor's event loop (owned by the module; -1 if none).
	 */
	int (*exit_fd)(void *inst);
};

/* Network configuration handed to a network module's setup. */
struct msb_net_config {
	uint32_t size;
	int enabled; /* 0: the guest gets no network device */
};

struct msb_net_ops {
	uint32_t size;
	/*
	 * Build the sandbox's network: its namespace, TAP, uplink, addresses,
	 * and the egress policy from the spec (host->spec_json).  Must roll back
	 * everything it made on failure.  Fills *attach for the hypervisor.
	 */
	int (*setup)(void *inst, const struct msb_net_config *cfg, struct msb_net_attach *attach,
		     struct msb_error *err);
	/* Replace the egress policy atomically with the spec's rules (JSON). */
	int (*apply_policy)(void *inst, const char *network_json, struct msb_error *err);
	/* Steer guest TLS to the secrets proxy (called after its proxy_start). */
	int (*steer_tls)(void *inst, const struct msb_tls_steer *steer, struct msb_error *err);
	/* The DNS pin set check (see struct msb_pin_query); may run on any thread. */
	int (*pin_check)(void *inst, const char *name, const struct sockaddr *addr,
			 socklen_t addr_len);
	/* Undo setup.  Idempotent. */
	int (*teardown)(void *inst, struct msb_error *err);
	/*
	 * Clean up after a sandbox whose supervisor died (no instance exists):
	 * remove whatever setup left, found from the sandbox's name and state
	 * directory.  Idempotent; 0 when there was nothing to do.
	 */
	int (*reap)(const struct msb_host *host, struct msb_error *err);
};

/* A share the storage module serves. */
struct msb_share {
	uint32_t size;
	const char *host_path;	/* absolute, exists */
	const char *guest_path; /* absolute */
	int read_only;
	int noexec;
	const char *tag; /* virtio-fs tag chosen by the core */
	/* ABI 1.1: how guest ownership and modes map onto host files. */
	uint32_t identity; /* enum msb_share_identity */
	/* ABI 1.3: where the guest's POSIX locks live. */
	uint32_t locks; /* enum msb_share_locks */
};

enum msb_share_identity {
	/*
	 * The guest's chown/chmod and the owner/mode of files it creates are
	 * kept in an xattr on the host file; host inode ownership and modes are
	 * never rewritten by the guest.
	 */
	MSB_SHARE_IDENTITY_STRICT = 0,
	/* Passed through to the host file (setuid/setgid bits still never land). */
	MSB_SHARE_IDENTITY_OFF = 1,
};

enum msb_share_locks {
	/*
	 * The guest kernel keeps the guest's POSIX and flock locks itself:
	 * exact POSIX semantics inside the sandbox, invisible outside it (no
	 * host process or other sandbox sees them or is blocked by them).
	 * The default, and what a core before ABI 1.3 gets.
	 */
	MSB_SHARE_LOCKS_GUEST = 0,
	/*
	 * POSIX locks are taken on the host file too (flock stays the
	 * guest's): host processes and other sandboxes sharing the directory
	 * see them and are blocked by them, and a close costs one more round
	 * trip to the host (the guest kernel sends FLUSH to release them).
	 */
	MSB_SHARE_LOCKS_HOST = 1,
};

struct msb_storage_ops {
	uint32_t size;
	/* Open a share; fills *srv, valid until share_close. */
	int (*share_open)(void *inst, const struct msb_share *share, struct msb_fs_server *srv,
			  struct msb_error *err);
	void (*share_close)(void *inst, struct msb_fs_server *srv);
};

/* What the core gives the secrets module to start its proxy. */
struct msb_proxy_config {
	uint32_t size;
	int netns_fd;		   /* listen inside this namespace; -1: here */
	struct msb_pin_query pins; /* the network module's DNS pin set */
};

/* What the secrets module reports back. */
struct msb_proxy_info {
	uint32_t size;
	struct msb_tls_steer steer; /* handed to the network module */
	char ca_cert_path[256];	    /* PEM the agent installs in the guest */
};

struct msb_secrets_ops {
	uint32_t size;
	int (*proxy_start)(void *inst, const struct msb_proxy_config *cfg,
			   struct msb_proxy_info *info, struct msb_error *err);
	/*
	 * The guest environment entry for a secret ("OPENAI_API_KEY" ->
	 * "OPENAI_API_KEY=$MSB_OPENAI_API_KEY"), written into buf.
	 */
	int (*guest_env)(void *inst, const char *env_name, char *buf, size_t len,
			 struct msb_error *err);
	void (*proxy_stop)(void *inst);
};

/* ---------------------------------------------------------------------- */
/* The descriptor.                                                         */

struct msb_plugin_desc {
	uint32_t abi;	     /* MSB_PLUGIN_ABI at the module's build */
	uint32_t size;	     /* sizeof(struct msb_plugin_desc) at the module's build */
	uint32_t kind;	     /* enum msb_plugin_kind */
	const char *name;    /* [a-z0-9][a-z0-9_-]{0,31}, unique per kind */
	const char *version; /* the module's own version, free text */

	/* Kind-specific feature bits (MSB_HV_F_*, ...). */
	uint64_t features;

	/*
	 * Create one instance for one sandbox.  `host` stays valid until
	 * destroy.  Required.
	 */
	int (*create)(const struct msb_host *host, void **inst, struct msb_error *err);
	/* Optional: lifecycle phases (enum msb_phase). */
	int (*phase)(void *inst, int phase, struct msb_error *err);
	/* Release everything the instance holds.  Required.  Never fails. */
	void (*destroy)(void *inst);

	/* The kind's operations table: struct msb_hv_ops, ...  Required. */
	const void *ops;

	/* Fields appended by later minor versions go here. */
};

/* Feature bits. */
#define MSB_HV_F_SMP	      (1ull << 0)
#define MSB_HV_F_VIRTIO_FS    (1ull << 1)
#define MSB_HV_F_VIRTIO_NET   (1ull << 2)
#define MSB_NET_F_DNS_PINNING (1ull << 0)
#define MSB_NET_F_TLS_STEER   (1ull << 1)
#define MSB_STORAGE_F_OPENAT2 (1ull << 0)
#define MSB_SECRETS_F_HTTP1   (1ull << 0)

#ifdef __cplusplus
}
#endif

#endif /* MSB_PLUGIN_H */
