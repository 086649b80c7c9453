/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shares: mounting the host's virtio-fs shares where the spec put them, on
 * the host's MOUNT requests, before any workload runs.
 *
 * The guest path is walked from the root one component at a time with
 * openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), creating what is
 * missing.  Defends against a root image (untrusted content) that steers a
 * share somewhere else with symlinks: every directory on the way must be on
 * the root filesystem or on a share mounted before (never on /proc, /sys,
 * /dev, /run or the agent's /.msb — the API filesystems this agent mounts —
 * nor the root directory itself), checked on the opened directory, not on
 * the text.  The mount is made on the opened directory (/proc/self/fd/N), so
 * what was checked is what gets covered.  The options are MS_NOSUID|MS_NODEV
 * always, plus MS_RDONLY and MS_NOEXEC as asked; read-only is really
 * enforced by the host's file server (a root workload can remount).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"

#define SHARES_MAX 32

/* Filesystems of the shares mounted so far: a later share may nest in one. */
static dev_t share_devs[SHARES_MAX];
static size_t nshare_devs;

/* What this agent mounts itself, and its own directory: never covered. */
static const char *const reserved[] = {"/.msb", "/proc", "/sys", "/dev", "/run"};

static int is_under(const char *path, const char *top)
{
	size_t n = strlen(top);
	return strncmp(path, top, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static const char *reserved_prefix(const char *path)
{
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (is_under(path, reserved[i]))
			return reserved[i];
	return NULL;
}

static int open_in_root(int root, const char *path)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, root, path, &how, sizeof(how));
}

/*
 * Is the directory fd a place a share may be, or lead through?  0, or an
 * errno with a message.  `where` is its path as the kernel resolved it.
 */
static int check_dir(int fd, const struct stat *root, char *where, size_t where_len, char *msg,
		     size_t msg_len)
{
	char proc[64];
	struct stat st;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(proc, where, where_len - 1);
	if (n < 0 || fstat(fd, &st) < 0) {
		snprintf(msg, msg_len, "%s", strerror(errno));
		return errno;
	}
	where[n] = '\0';
	const char *r = reserved_prefix(where);
	if (r) {
		snprintf(msg, msg_len, "it resolves to %.200s, under %s, which the agent owns",
			 where, r);
		return EPERM;
	}
	int ok = st.st_dev == root->st_dev;
	for (size_t i = 0; i < nshare_devs && !ok; i++)
		ok = st.st_dev == share_devs[i];
	if (!ok) {
		snprintf(msg, msg_len,
			 "it resolves to %.200s, on another filesystem than the root or a share",
			 where);
		return EPERM;
	}
	return 0;
}

int msb_guest_mount_share(const char *tag, const char *path, uint32_t flags, char *msg,
			  size_t msg_len)
{
	char why[400] = "", where[PATH_MAX] = "", prefix[PATH_MAX] = "";
	int e = 0, dir = -1;
	struct stat root_st;
	int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0 || fstat(root, &root_st) < 0) {
		e = errno;
		snprintf(why, sizeof(why), "the root: %s", strerror(e));
		goto out;
	}
	if (strlen(path) >= sizeof(prefix) || path[0] != '/') {
		e = EINVAL;
		snprintf(why, sizeof(why), "not an absolute path");
		goto out;
	}
	dir = fcntl(root, F_DUPFD_CLOEXEC, 0);
	if (dir < 0) {
		e = errno;
		snprintf(why, sizeof(why), "%s", strerror(e));
		goto out;
	}
	size_t plen = 0;
	for (const char *c = path; *c;) {
		while (*c == '/')
			c++;
		size_t l = strcspn(c, "/");
		if (l == 0)
			break;
		if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.')) {
			e = EINVAL;
			snprintf(why, sizeof(why), "a '.' or '..' part");
			goto out;
		}
		char name[NAME_MAX + 1];
		if (l > NAME_MAX) {
			e = ENAMETOOLONG;
			snprintf(why, sizeof(why), "a part longer than %d bytes", NAME_MAX);
			goto out;
		}
		memcpy(name, c, l);
		name[l] = '\0';
		prefix[plen++] = '/';
		memcpy(prefix + plen, c, l);
		plen += l;
		prefix[plen] = '\0';
		c += l;
		int fd = open_in_root(root, prefix);
		if (fd < 0 && errno == ENOENT) {
			/* dir, its parent, was checked: creating here stays on an allowed fs. */
			if (mkdirat(dir, name, 0755) < 0 && errno != EEXIST) {
				e = errno;
				snprintf(why, sizeof(why), "creating %.200s: %s", prefix,
					 strerror(e));
				goto out;
			}
			fd = open_in_root(root, prefix);
		}
		if (fd < 0) {
			e = errno;
			snprintf(why, sizeof(why), "%.200s: %s", prefix, strerror(e));
			goto out;
		}
		close(dir);
		dir = fd;
		if ((e = check_dir(dir, &root_st, where, sizeof(where), why, sizeof(why))) != 0)
			goto out;
	}
	struct stat st;
	if (fstat(dir, &st) < 0 || (st.st_dev == root_st.st_dev && st.st_ino == root_st.st_ino)) {
		e = EPERM;
		snprintf(why, sizeof(why), "it resolves to the root directory");
		goto out;
	}
	if (nshare_devs >= SHARES_MAX) {
		e = ENOSPC;
		snprintf(why, sizeof(why), "more than %d shares", SHARES_MAX);
		goto out;
	}
	unsigned long mflags = MS_NOSUID | MS_NODEV;
	if (flags & MSB_AGENT_MOUNT_RO)
		mflags |= MS_RDONLY;
	if (flags & MSB_AGENT_MOUNT_NOEXEC)
		mflags |= MS_NOEXEC;
	char target[64];
	snprintf(target, sizeof(target), "/proc/self/fd/%d", dir);
	if (mount(tag, target, "virtiofs", mflags, NULL) < 0) {
		e = errno;
		snprintf(why, sizeof(why), "mount: %s", strerror(e));
		goto out;
	}
	/* The share's own filesystem, for shares nested in it. */
	if (stat(where, &st) == 0)
		share_devs[nshare_devs++] = st.st_dev;
out:
	if (dir >= 0)
		close(dir);
	if (root >= 0)
		close(root);
	if (e)
		snprintf(msg, msg_len, "mounting share %s on %.200s in the guest: %s", tag, path,
			 why);
	return -e;
}
