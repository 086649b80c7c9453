/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest agent: PID 1 of every msb sandbox (see docs/agent-protocol.md).
 *
 *   main.c   arguments, the two modes (PID 1, --serve-fd for tests)
 *   init.c   PID-1 setup: mounts, kernel command line, root switch, shutdown
 *   serve.c  the protocol loop: sessions, flow control, reaping
 *   exec.c   spawning one session's process (pipes or a pty)
 *   users.c  /etc/passwd and /etc/group, parsed without NSS
 *   mounts.c the host's virtio-fs shares, mounted on MOUNT
 *   trust.c  certificates into the guest's trust stores, on TRUST
 *
 * Trust: the host is trusted, the workload is not (it may be root in the
 * guest and may rewrite /etc/passwd); the agent's job towards the host is to
 * stay up and keep its memory bounded whatever the workload does.
 */
#ifndef MSB_GUEST_AGENT_H
#define MSB_GUEST_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent-proto.h"

#ifndef MSB_VERSION_STRING
#define MSB_VERSION_STRING "unknown"
#endif

/* ---- log (main.c) --------------------------------------------------------- */

/* Log one line to /dev/kmsg (PID 1) or stderr (test mode). */
void msb_guest_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Send the log to fd (owned by the log from now on) with kmsg's "<4>" prefix if kmsg. */
void msb_guest_log_set(int fd, int kmsg);

/* ---- users.c ---------------------------------------------------------------- */

/* Most supplementary groups a session gets (NGROUPS_MAX is far larger). */
#define MSB_GUEST_GROUPS_MAX 256
#define MSB_GUEST_HOME_MAX   512

struct msb_guest_user {
	uid_t uid;
	gid_t gid;
	size_t ngroups;
	gid_t groups[MSB_GUEST_GROUPS_MAX];
	/* "" when the user has no passwd entry. */
	char home[MSB_GUEST_HOME_MAX];
};

/*
 * Resolve an exec request's user ("", "name", "uid", "name:group",
 * "uid:gid") against ROOT/etc/passwd and ROOT/etc/group (root: "" or "/"
 * for the real root).  "" is the agent's own uid: root in a sandbox.
 * 0, or -ENOENT (no such user or group) / -EINVAL (not a user
 * specification) with a message in why.
 */
int msb_guest_user_resolve(const char *root, const char *spec, struct msb_guest_user *u, char *why,
			   size_t why_len);

/* ---- exec.c ----------------------------------------------------------------- */

/* One spawned session process, seen from the agent. */
struct msb_guest_child {
	pid_t pid;
	/* Non-blocking, close-on-exec parent ends; -1 when absent.  On a pty,
	 * out_fd is the master, in_fd a duplicate of it and err_fd -1. */
	int in_fd, out_fd, err_fd;
};

/*
 * Fork and exec req as user u, with the environment as given plus PATH,
 * HOME and TERM defaults where missing, in its own session and process
 * group.  0 and *child filled, or a negative errno with a message (the
 * failing step and strerror) in msg: nothing is left running then.
 */
int msb_guest_spawn(const struct msb_agent_exec *req, const struct msb_guest_user *u,
		    struct msb_guest_child *child, char *msg, size_t msg_len);

/* ---- init.c ----------------------------------------------------------------- */

#define MSB_GUEST_DEV_MAX      64
#define MSB_GUEST_HOSTNAME_MAX 64
#define MSB_GUEST_NET_MAX      200

/* Boot parameters from the kernel command line ("" when absent). */
struct msb_guest_boot {
	char root[MSB_GUEST_DEV_MAX];		   /* msb.root=: the read-only erofs image */
	char upper[MSB_GUEST_DEV_MAX];		   /* msb.upper=: the writable ext4 */
	char hostname[MSB_GUEST_HOSTNAME_MAX + 1]; /* msb.hostname= */
	char channel[MSB_GUEST_DEV_MAX];	   /* msb.channel=, default /dev/hvc0 */
	char net[MSB_GUEST_NET_MAX];		   /* msb.net=ADDR4/P,GW4[,ADDR6/P,GW6] */
	char dns[64];				   /* msb.dns=: the resolver */
	char mtu[8];				   /* msb.mtu= */
};

/* Parse a kernel command line; malformed msb.* values are logged and ignored. */
void msb_guest_cmdline_parse(const char *cmdline, struct msb_guest_boot *b);

/*
 * PID-1 setup: the API filesystems, then (with msb.root) the overlay root
 * and the switch into it, hostname, loopback.  0 or a negative errno (the
 * caller powers off: a sandbox without its root is of no use).
 */
int msb_guest_init(struct msb_guest_boot *b);

/* Before power-off: sync and make the writable disk read-only (best effort). */
void msb_guest_init_finish(void);

/* Power off or reboot (enum msb_agent_shutdown); never returns. */
__attribute__((noreturn)) void msb_guest_power(uint32_t mode);

/* ---- net.c ------------------------------------------------------------------ */

/* The guest's network, from msb.net, msb.dns and msb.mtu. */
struct msb_guest_net {
	int enabled; /* msb.net was given */
	uint8_t addr4[4], gw4[4];
	unsigned prefix4;
	int has6;
	uint8_t addr6[16], gw6[16];
	unsigned prefix6;
	int dns_family; /* 0: no msb.dns */
	uint8_t dns[16];
	unsigned mtu; /* 0: the device's */
};

/* Parse the three values (each may be NULL or ""); 0, or -EINVAL for a malformed one. */
int msb_guest_net_parse(const char *net, const char *dns, const char *mtu,
			struct msb_guest_net *cfg);
/*
 * Configure eth0 (up, MTU, addresses, default routes) and write
 * /etc/resolv.conf and host.msb.internal into /etc/hosts.  0 or -errno.
 */
int msb_guest_net_setup(const struct msb_guest_net *cfg);
/* Tests: write resolv.conf and hosts under dir instead of /etc. */
void msb_guest_net_set_etc(const char *dir);

/* ---- mounts.c --------------------------------------------------------------- */

/*
 * Mount virtio-fs share `tag` on the guest directory `path` (created as
 * needed), flags MSB_AGENT_MOUNT_*.  0, or a negative errno with a one-line
 * message in msg: a path that leads through a symlink onto /proc, /sys,
 * /dev, /run, /.msb, another filesystem, or the root itself is refused.
 */
int msb_guest_mount_share(const char *tag, const char *path, uint32_t flags, char *msg,
			  size_t msg_len);

/*
 * Install PEM certificates under root (the guest's "/"): kind
 * MSB_AGENT_TRUST_CA writes etc/msb/ca.pem; both kinds are appended, once,
 * to each system bundle (one is made when there is none), and
 * etc/msb/ca-bundle.pem becomes a copy of the bundle.  0, or a negative
 * errno with one line in msg.
 */
int msb_guest_trust(const char *root, uint32_t kind, const uint8_t *pem, size_t len, char *msg,
		    size_t msg_len);

/* ---- serve.c ---------------------------------------------------------------- */

struct msb_guest_serve_opts {
	int fd;		     /* the channel, already open */
	const char *channel; /* its path, to reopen it (PID 1); NULL in test mode */
	const char *root;    /* where etc/passwd is looked up */
	int pid1;	     /* kill every process on shutdown, finish the disks */
};

/*
 * Serve the protocol until SHUTDOWN (returns its mode, after SHUTDOWN_ACK
 * was written) or, in test mode, until the host closes the channel
 * (returns -EPIPE).  Other negative errnos: setup failures.
 */
int msb_guest_serve(const struct msb_guest_serve_opts *o);

#endif
