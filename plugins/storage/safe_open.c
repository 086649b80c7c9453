/* SPDX-License-Identifier: Apache-2.0 */
/*
 * safe_open.c — every way the server reaches a host file.
 *
 * The guest never hands us a path, only (directory nodeid, one name).  So a
 * lookup is one step: from the directory's pinned O_PATH fd, open the name
 * with O_PATH | O_NOFOLLOW.  With openat2 the kernel also enforces
 *   RESOLVE_IN_ROOT      the directory fd is the root: no escape by ".." or
 *                        an absolute path, even if a bad name got through
 *   RESOLVE_NO_SYMLINKS  no symlink is followed (a trailing one is returned
 *                        as itself, because of O_PATH | O_NOFOLLOW)
 *   RESOLVE_NO_MAGICLINKS  no /proc-style link is followed
 *   RESOLVE_NO_XDEV      a mount point under the share is not crossed
 *
 * Fallback (kernels before 5.6, or a seccomp filter refusing openat2 with
 * ENOSYS): openat(dirfd, name, O_NOFOLLOW).  Containment then rests on the
 * name check in wire.c (one component, never "." or "..") and on O_NOFOLLOW;
 * mount points (bind mounts of the same file system included) are detected
 * after the fact by comparing the new fd's mount id with the share root's
 * (statx STATX_MNT_ID, or /proc/self/fdinfo on kernels before 5.8).  Weaker
 * (a check after the open, not a refusal during resolution), so it is logged.
 *
 * Opening an inode for I/O: only directories and regular files, decided from
 * the type recorded at lookup (an inode's type never changes, and the O_PATH
 * fd pins the inode).  A directory is reopened with openat(fd, ".").  A
 * regular file is reopened through /proc/self/fd/N, the only way to turn an
 * O_PATH fd into an open file without a name: the magic link names exactly
 * the inode we hold (no path string of the guest's is involved), and because
 * the inode is known to be a regular file it cannot be a device, a FIFO or a
 * symlink.  The result is checked to be that same inode.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fs.h"

#define RESOLVE_FLAGS                                                                              \
	(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)

static int sys_openat2(int dirfd, const char *name, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(unsigned)flags,
		.mode = flags & O_CREAT ? mode : 0,
		.resolve = RESOLVE_FLAGS,
	};
	return (int)syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
}

/* 1: openat2 works; 0: ENOSYS (the fallback); negative errno otherwise. */
int fsrv_probe_openat2(int dirfd)
{
	int fd = sys_openat2(dirfd, ".", O_PATH | O_CLOEXEC, 0);
	if (fd >= 0) {
		close(fd);
		return 1;
	}
	return errno == ENOSYS ? 0 : -errno;
}

int fsrv_mount_id(int fd, uint64_t *id)
{
	struct statx stx;
	if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &stx) == 0 &&
	    (stx.stx_mask & STATX_MNT_ID)) {
		*id = stx.stx_mnt_id;
		return 0;
	}
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return -errno;
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	close(f);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	const char *m = strstr(buf, "mnt_id:");
	if (!m)
		return -EIO;
	char *end;
	unsigned long long v = strtoull(m + 7, &end, 10);
	if (end == m + 7)
		return -EIO;
	*id = v;
	return 0;
}

int fsrv_openat(struct fsrv *fs, int dirfd, const char *name, int flags, mode_t mode)
{
	flags |= O_NOFOLLOW | O_CLOEXEC;
	if (fs->openat2) {
		for (int tries = 0; tries < 8; tries++) {
			int fd = sys_openat2(dirfd, name, flags, mode);
			if (fd >= 0)
				return fd;
			/* EAGAIN: a rename raced the resolution; try again. */
			if (errno != EAGAIN)
				return -errno;
		}
		return -EAGAIN;
	}
	int fd = openat(dirfd, name, flags, mode);
	return fd < 0 ? -errno : fd;
}

int fsrv_stat(struct fsrv_inode *ino, struct stat *st)
{
	return fstatat(ino->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

int fsrv_lookup(struct fsrv *fs, struct fsrv_inode *dir, const char *name, struct fsrv_inode **out,
		struct stat *st)
{
	if (dir->type != S_IFDIR)
		return -ENOTDIR;
	int fd = fsrv_openat(fs, dir->fd, name, O_PATH, 0);
	if (fd < 0)
		return fd == -EXDEV ? -EACCES : fd;
	if (fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	/*
	 * The fallback's mount point check (openat2's RESOLVE_NO_XDEV refused
	 * crossing already).  By mount id, not st_dev: on overlayfs (the KVM
	 * test host's root, container hosts) non-directories report their
	 * layer's st_dev, which differs from the directory's on the same mount.
	 */
	uint64_t mnt = fs->root_mnt_id;
	if (!fs->openat2 && (fsrv_mount_id(fd, &mnt) < 0 || mnt != fs->root_mnt_id)) {
		close(fd);
		return -EACCES;
	}
	return fsrv_inode_insert(fs, fd, st, out);
}

/* "/proc/self/fd/N" for an inode, for the calls that only take a path (xattrs). */
int fsrv_proc_path(const struct fsrv_inode *ino, char *buf, size_t len)
{
	int n = snprintf(buf, len, "/proc/self/fd/%d", ino->fd);
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

int fsrv_reopen(struct fsrv *fs, struct fsrv_inode *ino, int flags)
{
	int fd;
	flags |= O_CLOEXEC;
	flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_PATH | O_TMPFILE);
	if (ino->type == S_IFDIR) {
		fd = openat(ino->fd, ".", flags | O_DIRECTORY);
	} else if (ino->type == S_IFREG) {
		char n[16];
		snprintf(n, sizeof(n), "%d", ino->fd);
		/* No O_NOFOLLOW: the magic link must be followed (see above). */
		fd = openat(fs->proc_fd, n, flags & ~(O_NOFOLLOW | O_DIRECTORY));
	} else {
		return ino->type == S_IFLNK ? -ELOOP : -EACCES;
	}
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_dev != ino->dev || st.st_ino != ino->ino) {
		close(fd);
		return -EIO;
	}
	return fd;
}
