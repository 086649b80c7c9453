/* SPDX-License-Identifier: Apache-2.0 */
/*
 * server.c — the FUSE operations, as a table, and fsrv_handle.
 *
 * fsrv_handle copies one request out of guest memory (wire.c), checks it
 * against the opcode's row (minimum argument size, INIT done, read-only),
 * and runs the row's function, which returns the reply length it wrote, 0
 * for no reply, or a negative errno that becomes the reply's error.  Nothing
 * here joins path strings: every host file is reached from an inode's pinned
 * O_PATH fd and one checked name (safe_open.c).
 *
 * Hot paths (LOOKUP, GETATTR, READ, WRITE) allocate nothing and take the
 * table lock only to find and pin an inode or handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs.h"

#define OP_MUTATES 0x1 /* EROFS on a read-only share */
#define OP_NOREPLY 0x2 /* the kernel expects no reply */
#define OP_ANYTIME 0x4 /* allowed before INIT */

#define MAX_IOV 64 /* iovecs per preadv/pwritev call */

struct op {
	int (*fn)(struct fsrv *fs, struct fsrv_req *r);
	uint32_t argmin;
	uint32_t flags;
};

/* ---- helpers ---- */

static int is_inited(struct fsrv *fs)
{
	return __atomic_load_n(&fs->inited, __ATOMIC_ACQUIRE);
}

static int reply_entry(struct fsrv *fs, struct fsrv_req *r, struct fsrv_inode *ino,
		       const struct stat *st)
{
	struct fuse_entry_out e;
	memset(&e, 0, sizeof(e));
	if (r->out_cap < sizeof(struct fuse_out_header) + sizeof(e)) {
		/* The guest will never learn this nodeid: take the lookup back. */
		fsrv_inode_forget(fs, ino->nodeid, 1);
		return -EOVERFLOW;
	}
	e.nodeid = ino->nodeid;
	e.generation = ino->gen;
	e.entry_valid = FSRV_TTL;
	e.attr_valid = FSRV_TTL;
	fsrv_attr(fs, ino, st, &e.attr);
	return fsrv_reply(r, &e, sizeof(e));
}

static int reply_attr(struct fsrv *fs, struct fsrv_req *r, struct fsrv_inode *ino)
{
	struct stat st;
	int rc = fsrv_stat(ino, &st);
	if (rc < 0)
		return rc;
	struct fuse_attr_out a;
	memset(&a, 0, sizeof(a));
	a.attr_valid = FSRV_TTL;
	fsrv_attr(fs, ino, &st, &a.attr);
	return fsrv_reply(r, &a, sizeof(a));
}

static int reply_empty(struct fsrv_req *r)
{
	return fsrv_reply(r, NULL, 0);
}

/* The directory a request names; ENOTDIR for anything else. */
static int get_dir(struct fsrv *fs, uint64_t nodeid, struct fsrv_inode **dir)
{
	*dir = fsrv_inode_get(fs, nodeid);
	if (!*dir)
		return -ENOENT;
	if ((*dir)->type != S_IFDIR) {
		fsrv_inode_put(fs, *dir);
		*dir = NULL;
		return -ENOTDIR;
	}
	return 0;
}

static int get_file(struct fsrv *fs, uint64_t fh, struct fsrv_handle **h)
{
	*h = fsrv_handle_get(fs, fh);
	if (!*h)
		return -EBADF;
	if ((*h)->dir) {
		fsrv_handle_put(fs, *h);
		*h = NULL;
		return -EISDIR;
	}
	return 0;
}

/* The host mode a new inode gets: never setuid/setgid (see identity.c). */
static mode_t host_mode(struct fsrv *fs, mode_t type, uint32_t mode)
{
	if (fs->identity == MSB_SHARE_IDENTITY_STRICT) {
		/* The server must always be able to use what it made. */
		mode_t m = mode & 0777;
		return type == S_IFDIR ? m | 0700 : m | 0600;
	}
	return mode & 01777;
}

static int fdname(const struct fsrv_inode *ino, char *buf, size_t len)
{
	return snprintf(buf, len, "%d", ino->fd) > 0 ? 0 : -EIO;
}

/*
 * A new inode's guest identity (st: its host attributes).  STRICT: the
 * creator's uid/gid and the requested mode go into the overlay, unless they
 * are what the host inode shows anyway (a setgid directory's group is
 * inherited, as on Linux).  OFF: the host file is chowned to the creator,
 * unless the host directory is setgid (then the host kernel already chose).
 */
static void set_new_identity(struct fsrv *fs, struct fsrv_req *r, struct fsrv_inode *dir,
			     struct fsrv_inode *ino, const struct stat *st, uint32_t mode)
{
	struct stat dst;
	if (fsrv_stat(dir, &dst) < 0)
		return;
	if (fs->identity == MSB_SHARE_IDENTITY_STRICT) {
		struct fuse_attr da;
		fsrv_attr(fs, dir, &dst, &da);
		uint32_t gid = r->h.gid;
		if (da.mode & S_ISGID) {
			gid = da.gid;
			if (ino->type == S_IFDIR)
				mode |= S_ISGID;
		}
		/* Best effort: a file system without xattrs shows host identity. */
		(void)fsrv_id_store(fs, ino, st, r->h.uid, gid, mode);
		return;
	}
	gid_t gid = dst.st_mode & S_ISGID ? (gid_t)-1 : r->h.gid;
	if (fchownat(ino->fd, "", r->h.uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return; /* best effort: the file stays the server's */
}

/* After MKNOD/MKDIR/SYMLINK made `name` in dir: look it up and reply its entry. */
static int finish_new(struct fsrv *fs, struct fsrv_req *r, struct fsrv_inode *dir, const char *name,
		      uint32_t mode)
{
	struct fsrv_inode *ino;
	struct stat st;
	int rc = fsrv_lookup(fs, dir, name, &ino, &st);
	if (rc < 0)
		return rc;
	set_new_identity(fs, r, dir, ino, &st, mode);
	rc = fsrv_stat(ino, &st);
	if (rc == 0)
		rc = reply_entry(fs, r, ino, &st);
	fsrv_inode_put(fs, ino);
	return rc;
}

static int check_off(uint64_t off)
{
	return off > (uint64_t)INT64_MAX ? -EINVAL : 0;
}

/* ---- operations ---- */

static int op_init(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_init_in in;
	memset(&in, 0, sizeof(in));
	memcpy(&in, r->arg, r->arglen < sizeof(in) ? r->arglen : sizeof(in));
	struct fuse_init_out o;
	memset(&o, 0, sizeof(o));
	o.major = FUSE_KERNEL_VERSION;
	o.minor = FUSE_KERNEL_MINOR_VERSION;
	if (in.major < FUSE_KERNEL_VERSION)
		return -EPROTO;
	/* A newer major: say ours and wait for the kernel to try again. */
	if (in.major > FUSE_KERNEL_VERSION)
		return fsrv_reply(r, &o, sizeof(o));
	if (in.minor < FSRV_MIN_MINOR)
		return -EPROTO;
	/* A second INIT (the guest rebooted without DESTROY) starts afresh. */
	if (is_inited(fs))
		fsrv_forget_all(fs);
	/*
	 * No FUSE_POSIX_LOCKS unless the share keeps locks on the host: the
	 * guest kernel then keeps them itself (and flock always: there is no
	 * FUSE_FLOCK_LOCKS here).  Never FUSE_WRITEBACK_CACHE: writes go
	 * through, so a close has nothing to flush (FOPEN_NOFLUSH below).
	 */
	const uint32_t want = FUSE_ASYNC_READ | (fs->host_locks ? FUSE_POSIX_LOCKS : 0) |
			      FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS |
			      FUSE_READDIRPLUS_AUTO | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES |
			      FUSE_AUTO_INVAL_DATA | FUSE_CACHE_SYMLINKS | FUSE_ASYNC_DIO;
	o.flags = in.flags & want;
	o.max_readahead = in.max_readahead < FSRV_MAX_READ ? in.max_readahead : FSRV_MAX_READ;
	o.max_background = 64;
	o.congestion_threshold = 48;
	o.max_write = FSRV_MAX_WRITE;
	o.time_gran = 1;
	o.max_pages = FSRV_MAX_PAGES;
	pthread_mutex_lock(&fs->lock);
	fs->minor = in.minor < FUSE_KERNEL_MINOR_VERSION ? in.minor : FUSE_KERNEL_MINOR_VERSION;
	__atomic_store_n(&fs->inited, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&fs->lock);
	return fsrv_reply(r, &o, sizeof(o));
}

static int op_destroy(struct fsrv *fs, struct fsrv_req *r)
{
	__atomic_store_n(&fs->inited, 0, __ATOMIC_RELEASE);
	fsrv_forget_all(fs);
	return reply_empty(r);
}

static int op_lookup(struct fsrv *fs, struct fsrv_req *r)
{
	size_t pos = 0;
	const char *name;
	int rc = fsrv_arg_name(r, &pos, &name);
	if (rc < 0)
		return rc;
	struct fsrv_inode *dir = fsrv_inode_get(fs, r->h.nodeid), *ino;
	if (!dir)
		return -ENOENT;
	struct stat st;
	rc = fsrv_lookup(fs, dir, name, &ino, &st);
	fsrv_inode_put(fs, dir);
	if (rc < 0)
		return rc;
	rc = reply_entry(fs, r, ino, &st);
	fsrv_inode_put(fs, ino);
	return rc;
}

static int op_forget(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_forget_in in;
	memcpy(&in, r->arg, sizeof(in));
	fsrv_inode_forget(fs, r->h.nodeid, in.nlookup);
	return 0;
}

static int op_batch_forget(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_batch_forget_in in;
	size_t pos = 0;
	fsrv_arg(r, &pos, &in, sizeof(in));
	for (uint32_t i = 0; i < in.count; i++) {
		struct fuse_forget_one one;
		if (fsrv_arg(r, &pos, &one, sizeof(one)) < 0)
			break;
		fsrv_inode_forget(fs, one.nodeid, one.nlookup);
	}
	return 0;
}

static int op_getattr(struct fsrv *fs, struct fsrv_req *r)
{
	struct fsrv_inode *ino = fsrv_inode_get(fs, r->h.nodeid);
	if (!ino)
		return -ENOENT;
	int rc = reply_attr(fs, r, ino);
	fsrv_inode_put(fs, ino);
	return rc;
}

static int setattr_size(struct fsrv *fs, struct fsrv_inode *ino, struct fsrv_handle *h,
			uint64_t size)
{
	if (ino->type == S_IFDIR)
		return -EISDIR;
	if (ino->type != S_IFREG)
		return -EINVAL;
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	int fd = h && h->writable ? h->fd : fsrv_reopen(fs, ino, O_WRONLY);
	if (fd < 0)
		return fd;
	int rc = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
	if (!(h && h->writable))
		close(fd);
	return rc;
}

static int setattr_times(struct fsrv *fs, struct fsrv_inode *ino, const struct fuse_setattr_in *in)
{
	struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
	if (in->valid & FATTR_ATIME_NOW)
		ts[0].tv_nsec = UTIME_NOW;
	else if (in->valid & FATTR_ATIME) {
		if (in->atimensec >= 1000000000u || in->atime > (uint64_t)INT64_MAX)
			return -EINVAL;
		ts[0].tv_sec = (time_t)in->atime;
		ts[0].tv_nsec = in->atimensec;
	}
	if (in->valid & FATTR_MTIME_NOW)
		ts[1].tv_nsec = UTIME_NOW;
	else if (in->valid & FATTR_MTIME) {
		if (in->mtimensec >= 1000000000u || in->mtime > (uint64_t)INT64_MAX)
			return -EINVAL;
		ts[1].tv_sec = (time_t)in->mtime;
		ts[1].tv_nsec = in->mtimensec;
	}
	char n[16];
	int rc = fdname(ino, n, sizeof(n));
	if (rc < 0)
		return rc;
	/* Through the magic link: lands on the inode itself, never opens it. */
	return utimensat(fs->proc_fd, n, ts, 0) < 0 ? -errno : 0;
}

static int op_setattr(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_setattr_in in;
	memcpy(&in, r->arg, sizeof(in));
	struct fsrv_inode *ino = fsrv_inode_get(fs, r->h.nodeid);
	if (!ino)
		return -ENOENT;
	struct fsrv_handle *h = NULL;
	if (in.valid & FATTR_FH) {
		h = fsrv_handle_get(fs, in.fh);
		if (h && (h->dir || h->inode != ino)) {
			fsrv_handle_put(fs, h);
			h = NULL;
		}
	}
	struct stat st;
	int rc = fsrv_stat(ino, &st);
	if (rc == 0 && (in.valid & FATTR_MODE)) {
		if (fs->identity == MSB_SHARE_IDENTITY_STRICT) {
			rc = fsrv_id_chmod(fs, ino, &st, in.mode);
		} else if (ino->type == S_IFLNK) {
			rc = -EOPNOTSUPP;
		} else {
			char n[16];
			rc = fdname(ino, n, sizeof(n));
			/* Setuid/setgid never land on the host. */
			if (rc == 0 && fchmodat(fs->proc_fd, n, in.mode & 01777, 0) < 0)
				rc = -errno;
		}
	}
	if (rc == 0 && (in.valid & (FATTR_UID | FATTR_GID))) {
		int su = !!(in.valid & FATTR_UID), sg = !!(in.valid & FATTR_GID);
		if (fs->identity == MSB_SHARE_IDENTITY_STRICT)
			rc = fsrv_id_chown(fs, ino, &st, in.uid, in.gid, su, sg);
		else if (fchownat(ino->fd, "", su ? in.uid : (uid_t)-1, sg ? in.gid : (gid_t)-1,
				  AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			rc = -errno;
	}
	if (rc == 0 && (in.valid & FATTR_SIZE)) {
		rc = setattr_size(fs, ino, h, in.size);
		if (rc == 0 && (in.valid & FATTR_KILL_SUIDGID))
			rc = fsrv_id_kill_suid(fs, ino);
	}
	if (rc == 0 && (in.valid & (FATTR_ATIME | FATTR_MTIME | FATTR_ATIME_NOW | FATTR_MTIME_NOW)))
		rc = setattr_times(fs, ino, &in);
	if (h)
		fsrv_handle_put(fs, h);
	if (rc == 0)
		rc = reply_attr(fs, r, ino);
	fsrv_inode_put(fs, ino);
	return rc;
}

static int op_readlink(struct fsrv *fs, struct fsrv_req *r)
{
	struct fsrv_inode *ino = fsrv_inode_get(fs, r->h.nodeid);
	if (!ino)
		return -ENOENT;
	char buf[FSRV_LINK_MAX + 1];
	ssize_t n = -EINVAL;
	if (ino->type == S_IFLNK) {
		n = readlinkat(ino->fd, "", buf, sizeof(buf));
		if (n < 0)
			n = -errno;
		else if (n > FSRV_LINK_MAX)
			n = -ENAMETOOLONG;
	}
	fsrv_inode_put(fs, ino);
	return n < 0 ? (int)n : fsrv_reply(r, buf, (size_t)n);
}

static int op_symlink(struct fsrv *fs, struct fsrv_req *r)
{
	size_t pos = 0;
	const char *name, *target;
	int rc = fsrv_arg_name(r, &pos, &name);
	if (rc < 0)
		return rc;
	/* The target is stored verbatim and never resolved by the server. */
	rc = fsrv_arg_string(r, &pos, FSRV_LINK_MAX, &target);
	if (rc < 0)
		return rc;
	if (!*target)
		return -ENOENT;
	struct fsrv_inode *dir;
	rc = get_dir(fs, r->h.nodeid, &dir);
	if (rc < 0)
		return rc;
	if (symlinkat(target, dir->fd, name) < 0)
		rc = -errno;
	else
		rc = finish_new(fs, r, dir, name, 0777);
	fsrv_inode_put(fs, dir);
	return rc;
}

static int op_mknod(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_mknod_in in;
	size_t pos = 0;
	const char *name;
	fsrv_arg(r, &pos, &in, sizeof(in));
	int rc = fsrv_arg_name(r, &pos, &name);
	if (rc < 0)
		return rc;
	mode_t type = in.mode & S_IFMT;
	/*
	 * Regular files, FIFOs and sockets only, as plain inodes the server
	 * never opens.  No device node is ever made on the host.
	 */
	if (type != S_IFREG && type != S_IFIFO && type != S_IFSOCK)
		return -EPERM;
	struct fsrv_inode *dir;
	rc = get_dir(fs, r->h.nodeid, &dir);
	if (rc < 0)
		return rc;
	if (mknodat(dir->fd, name, type | host_mode(fs, type, in.mode), 0) < 0)
		rc = -errno;
	else
		rc = finish_new(fs, r, dir, name, in.mode & 07777);
	fsrv_inode_put(fs, dir);
	return rc;
}

static int op_mkdir(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_mkdir_in in;
	size_t pos = 0;
	const char *name;
	fsrv_arg(r, &pos, &in, sizeof(in));
	int rc = fsrv_arg_name(r, &pos, &name);
	if (rc < 0)
		return rc;
	struct fsrv_inode *dir;
	rc = get_dir(fs, r->h.nodeid, &dir);
	if (rc < 0)
		return rc;
	if (mkdirat(dir->fd, name, host_mode(fs, S_IFDIR, in.mode)) < 0)
		rc = -errno;
	else
		rc = finish_new(fs, r, dir, name, in.mode & 07777);
	fsrv_inode_put(fs, dir);
	return rc;
}

static int do_unlink(struct fsrv *fs, struct fsrv_req *r, int flags)
{
	size_t pos = 0;
	const char *name;
	int rc = fsrv_arg_name(r, &pos, &name);
	if (rc < 0)
		return rc;
	struct fsrv_inode *dir;
	rc = get_dir(fs, r->h.nodeid, &dir);
	if (rc < 0)
		return rc;
	rc = unlinkat(dir->fd, name, flags) < 0 ? -errno : reply_empty(r);
	fsrv_inode_put(fs, dir);
	return rc;
}

static int op_unlink(struct fsrv *fs, struct fsrv_req *r)
{
	return do_unlink(fs, r, 0);
}

static int op_rmdir(struct fsrv *fs, struct fsrv_req *r)
{
	return do_unlink(fs, r, AT_REMOVEDIR);
}

static int do_rename(struct fsrv *fs, struct fsrv_req *r, uint64_t newdir, uint32_t flags,
		     size_t pos)
{
	const char *oldname, *newname;
	int rc = fsrv_arg_name(r, &pos, &oldname);
	if (rc == 0)
		rc = fsrv_arg_name(r, &pos, &newname);
	if (rc < 0)
		return rc;
	if (flags & ~(uint32_t)(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE))
		return -EINVAL;
	struct fsrv_inode *od, *nd;
	rc = get_dir(fs, r->h.nodeid, &od);
	if (rc < 0)
		return rc;
	rc = get_dir(fs, newdir, &nd);
	if (rc < 0) {
		fsrv_inode_put(fs, od);
		return rc;
	}
	if (syscall(SYS_renameat2, od->fd, oldname, nd->fd, newname, flags) < 0)
		rc = -errno;
	else
		rc = reply_empty(r);
	fsrv_inode_put(fs, nd);
	fsrv_inode_put(fs, od);
	return rc;
}

static int op_rename(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_rename_in in;
	memcpy(&in, r->arg, sizeof(in));
	return do_rename(fs, r, in.newdir, 0, sizeof(in));
}

static int op_rename2(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_rename2_in in;
	memcpy(&in, r->arg, sizeof(in));
	return do_rename(fs, r, in.newdir, in.flags, sizeof(in));
}

static int op_link(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_link_in in;
	size_t pos = 0;
	const char *name;
	fsrv_arg(r, &pos, &in, sizeof(in));
	int rc = fsrv_arg_name(r, &pos, &name);
	if (rc < 0)
		return rc;
	struct fsrv_inode *src = fsrv_inode_get(fs, in.oldnodeid), *dir;
	if (!src)
		return -ENOENT;
	if (src->type == S_IFDIR) {
		fsrv_inode_put(fs, src);
		return -EPERM;
	}
	rc = get_dir(fs, r->h.nodeid, &dir);
	if (rc < 0) {
		fsrv_inode_put(fs, src);
		return rc;
	}
	/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; else through the magic link. */
	if (linkat(src->fd, "", dir->fd, name, AT_EMPTY_PATH) < 0) {
		char n[16];
		rc = -errno;
		if (rc == -ENOENT && fdname(src, n, sizeof(n)) == 0)
			rc = linkat(fs->proc_fd, n, dir->fd, name, AT_SYMLINK_FOLLOW) < 0 ? -errno
											  : 0;
	}
	if (rc == 0) {
		struct fsrv_inode *ino;
		struct stat st;
		rc = fsrv_lookup(fs, dir, name, &ino, &st);
		if (rc == 0) {
			rc = reply_entry(fs, r, ino, &st);
			fsrv_inode_put(fs, ino);
		}
	}
	fsrv_inode_put(fs, dir);
	fsrv_inode_put(fs, src);
	return rc;
}

/* The open(2) flags a guest may pass through; everything else is dropped. */
static int open_flags(struct fsrv *fs, uint32_t flags, int *rc)
{
	int acc = (int)(flags & O_ACCMODE);
	*rc = 0;
	if (acc == O_ACCMODE)
		*rc = -EINVAL;
	else if (fs->read_only && (acc != O_RDONLY || (flags & O_TRUNC)))
		*rc = -EROFS;
	return acc | (int)(flags & (O_APPEND | O_TRUNC | O_SYNC | O_DSYNC));
}

/*
 * With the guest keeping its own locks, a close has nothing for us to do
 * (writes go through; no lock of ours to drop): FOPEN_NOFLUSH spares the
 * guest a FLUSH round trip on every close.  With host locks the FLUSH is
 * what releases them (op_flush).
 */
static uint32_t open_reply_flags(const struct fsrv *fs)
{
	return fs->host_locks ? 0 : FOPEN_NOFLUSH;
}

static int reply_open(struct fsrv *fs, struct fsrv_req *r, uint64_t fh)
{
	struct fuse_open_out o;
	memset(&o, 0, sizeof(o));
	o.fh = fh;
	o.open_flags = open_reply_flags(fs);
	return fsrv_reply(r, &o, sizeof(o));
}

static int op_open(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_open_in in;
	memcpy(&in, r->arg, sizeof(in));
	int rc, flags = open_flags(fs, in.flags, &rc);
	if (rc < 0)
		return rc;
	struct fsrv_inode *ino = fsrv_inode_get(fs, r->h.nodeid);
	if (!ino)
		return -ENOENT;
	/* Directories are opened with OPENDIR only. */
	int fd = ino->type == S_IFDIR ? -EISDIR : fsrv_reopen(fs, ino, flags);
	uint64_t fh = 0;
	rc = fd;
	if (fd >= 0 && (flags & O_TRUNC) && (in.open_flags & FUSE_OPEN_KILL_SUIDGID))
		(void)fsrv_id_kill_suid(fs, ino);
	if (fd >= 0)
		rc = fsrv_handle_new(fs, fd, ino, 0, (flags & O_ACCMODE) != O_RDONLY, &fh);
	fsrv_inode_put(fs, ino);
	return rc < 0 ? rc : reply_open(fs, r, fh);
}

/*
 * CREATE: O_CREAT | O_EXCL first, so that what we open is a regular file we
 * made.  Without the guest's O_EXCL an existing name is then looked up and
 * opened like OPEN does: never a symlink, FIFO or device.
 */
static int op_create(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_create_in in;
	size_t pos = 0;
	const char *name;
	fsrv_arg(r, &pos, &in, sizeof(in));
	int rc = fsrv_arg_name(r, &pos, &name);
	if (rc < 0)
		return rc;
	int flags = open_flags(fs, in.flags, &rc);
	if (rc < 0)
		return rc;
	struct fsrv_inode *dir, *ino = NULL;
	rc = get_dir(fs, r->h.nodeid, &dir);
	if (rc < 0)
		return rc;
	struct stat st;
	int created = 1;
	int fd = fsrv_openat(fs, dir->fd, name, flags | O_CREAT | O_EXCL,
			     host_mode(fs, S_IFREG, in.mode));
	if (fd == -EEXIST && !(in.flags & O_EXCL)) {
		created = 0;
		rc = fsrv_lookup(fs, dir, name, &ino, &st);
		fd = rc < 0 ? rc : fsrv_reopen(fs, ino, flags);
	} else if (fd >= 0) {
		char n[16];
		snprintf(n, sizeof(n), "%d", fd);
		/* An O_PATH fd for the table, through the magic link of the file we made. */
		int pfd = openat(fs->proc_fd, n, O_PATH | O_CLOEXEC);
		if (pfd < 0 || fstat(pfd, &st) < 0 || !S_ISREG(st.st_mode)) {
			rc = -EIO;
			if (pfd >= 0)
				close(pfd);
		} else {
			rc = fsrv_inode_insert(fs, pfd, &st, &ino);
		}
		if (rc < 0) {
			close(fd);
			fd = rc;
		}
	}
	if (fd >= 0 && created)
		set_new_identity(fs, r, dir, ino, &st, in.mode & 07777);
	uint64_t fh = 0;
	rc = fd;
	if (fd >= 0)
		rc = fsrv_handle_new(fs, fd, ino, 0, (flags & O_ACCMODE) != O_RDONLY, &fh);
	if (rc == 0)
		rc = fsrv_stat(ino, &st);
	if (rc == 0) {
		struct {
			struct fuse_entry_out e;
			struct fuse_open_out o;
		} out;
		memset(&out, 0, sizeof(out));
		out.e.nodeid = ino->nodeid;
		out.e.generation = ino->gen;
		out.e.entry_valid = FSRV_TTL;
		out.e.attr_valid = FSRV_TTL;
		fsrv_attr(fs, ino, &st, &out.e.attr);
		out.o.fh = fh;
		out.o.open_flags = open_reply_flags(fs);
		rc = fsrv_reply(r, &out, sizeof(out));
	}
	if (rc < 0 && ino) {
		if (fh)
			fsrv_handle_release(fs, fh);
		fsrv_inode_forget(fs, ino->nodeid, 1);
	}
	fsrv_inode_put(fs, ino);
	fsrv_inode_put(fs, dir);
	return rc;
}

static int op_read(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_read_in in;
	memcpy(&in, r->arg, sizeof(in));
	if (check_off(in.offset) < 0)
		return -EINVAL;
	struct fsrv_handle *h;
	int rc = get_file(fs, in.fh, &h);
	if (rc < 0)
		return rc;
	size_t want = in.size < FSRV_MAX_READ ? in.size : FSRV_MAX_READ;
	if (r->ref && want <= r->ref->max) {
		/*
		 * By reference: the transport moves the bytes from the file
		 * itself; the handle (and so its fd) stays held until ref_done.
		 * Never fewer than asked (a short reply means end of file): a
		 * READ larger than the transport's max is answered by value.
		 */
		r->ref->fd = h->fd;
		r->ref->offset = in.offset;
		r->ref->len = (uint32_t)want;
		r->ref->token = h;
		struct fuse_out_header oh = {
			.len = (uint32_t)(sizeof(oh) + want),
			.error = 0,
			.unique = r->h.unique,
		};
		fsrv_iov_write(r->out, r->out_count, 0, &oh, sizeof(oh));
		return (int)sizeof(oh);
	}
	size_t room = r->out_cap - sizeof(struct fuse_out_header);
	if (want > room)
		want = room;
	size_t done = 0;
	while (done < want) {
		struct iovec iov[MAX_IOV];
		size_t off = sizeof(struct fuse_out_header) + done;
		unsigned k = fsrv_iov_slice(r->out, r->out_count, &off, want - done, iov, MAX_IOV);
		ssize_t n = preadv(h->fd, iov, (int)k, (off_t)(in.offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (!done)
				rc = -errno;
			break;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	fsrv_handle_put(fs, h);
	if (rc < 0)
		return rc;
	struct fuse_out_header oh = {
		.len = (uint32_t)(sizeof(oh) + done),
		.error = 0,
		.unique = r->h.unique,
	};
	fsrv_iov_write(r->out, r->out_count, 0, &oh, sizeof(oh));
	return (int)oh.len;
}

static int op_write(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_write_in in;
	memcpy(&in, r->arg, sizeof(in));
	if (check_off(in.offset) < 0 || in.size > FSRV_MAX_WRITE || in.size > r->payload_len)
		return -EINVAL;
	struct fsrv_handle *h;
	int rc = get_file(fs, in.fh, &h);
	if (rc < 0)
		return rc;
	size_t done = 0;
	/* Straight from guest memory: a change under us only changes the data. */
	while (done < in.size) {
		struct iovec iov[MAX_IOV];
		size_t off = r->payload_off + done;
		unsigned k = fsrv_iov_slice(r->in, r->in_count, &off, in.size - done, iov, MAX_IOV);
		ssize_t n = pwritev(h->fd, iov, (int)k, (off_t)(in.offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (!done)
				rc = n < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)n;
	}
	if (done && (in.write_flags & FUSE_WRITE_KILL_SUIDGID))
		(void)fsrv_id_kill_suid(fs, h->inode);
	fsrv_handle_put(fs, h);
	if (rc < 0)
		return rc;
	struct fuse_write_out o = {.size = (uint32_t)done};
	return fsrv_reply(r, &o, sizeof(o));
}

static int op_statfs(struct fsrv *fs, struct fsrv_req *r)
{
	struct fsrv_inode *ino = fsrv_inode_get(fs, r->h.nodeid);
	if (!ino)
		return -ENOENT;
	struct statfs s;
	int rc = fstatfs(ino->fd, &s) < 0 ? -errno : 0;
	fsrv_inode_put(fs, ino);
	if (rc < 0)
		return rc;
	struct fuse_statfs_out o;
	memset(&o, 0, sizeof(o));
	o.st.blocks = s.f_blocks;
	o.st.bfree = s.f_bfree;
	o.st.bavail = s.f_bavail;
	o.st.files = s.f_files;
	o.st.ffree = s.f_ffree;
	o.st.bsize = (uint32_t)s.f_bsize;
	o.st.namelen = s.f_namelen < FSRV_NAME_MAX ? (uint32_t)s.f_namelen : FSRV_NAME_MAX;
	o.st.frsize = (uint32_t)s.f_frsize;
	return fsrv_reply(r, &o, sizeof(o));
}

static int op_release(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_release_in in;
	memcpy(&in, r->arg, sizeof(in));
	int rc = fsrv_handle_release(fs, in.fh);
	return rc < 0 ? rc : reply_empty(r);
}

static int op_fsync(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_fsync_in in;
	memcpy(&in, r->arg, sizeof(in));
	struct fsrv_handle *h = fsrv_handle_get(fs, in.fh);
	if (!h)
		return -EBADF;
	int rc = (in.fsync_flags & FUSE_FSYNC_FDATASYNC ? fdatasync(h->fd) : fsync(h->fd)) < 0
			 ? -errno
			 : 0;
	fsrv_handle_put(fs, h);
	return rc < 0 ? rc : reply_empty(r);
}

static int op_flush(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_flush_in in;
	memcpy(&in, r->arg, sizeof(in));
	struct fsrv_handle *h = fsrv_handle_get(fs, in.fh);
	if (!h)
		return -EBADF;
	/*
	 * A close drops the closer's POSIX locks.  Ours are per handle (OFD),
	 * so: the handle's locks go when the process that took them closes
	 * any descriptor of it — not when another process that shares the
	 * handle (a forked child closing what it inherited) does.
	 */
	if (__atomic_load_n(&h->locked, __ATOMIC_RELAXED)) {
		pthread_mutex_lock(&fs->lock);
		int mine = h->owners_many || h->lock_owner == in.lock_owner;
		if (mine)
			h->locked = h->owners_many = 0;
		pthread_mutex_unlock(&fs->lock);
		struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
		if (mine)
			(void)fcntl(h->fd, F_OFD_SETLK, &fl);
	}
	fsrv_handle_put(fs, h);
	return reply_empty(r);
}

/* ---- xattrs: the guest's namespace is user.* minus user.msb.* ---- */

static int xattr_path(struct fsrv *fs, struct fsrv_req *r, char *path, size_t len,
		      struct fsrv_inode **ino)
{
	(void)fs;
	*ino = fsrv_inode_get(fs, r->h.nodeid);
	if (!*ino)
		return -ENOENT;
	int rc = fsrv_proc_path(*ino, path, len);
	if (rc < 0) {
		fsrv_inode_put(fs, *ino);
		*ino = NULL;
	}
	return rc;
}

static int op_setxattr(struct fsrv *fs, struct fsrv_req *r)
{
	/* FUSE_SETXATTR_EXT is not negotiated: the 8-byte compat header. */
	struct {
		uint32_t size, flags;
	} in;
	size_t pos = 0;
	const char *name;
	fsrv_arg(r, &pos, &in, sizeof(in));
	int rc = fsrv_arg_string(r, &pos, FSRV_NAME_MAX, &name);
	if (rc < 0)
		return rc;
	if (!*name)
		return -EINVAL;
	if (in.size > FSRV_XATTR_MAX)
		return -E2BIG;
	if (r->arglen - pos < in.size)
		return -EINVAL;
	if (!fsrv_xattr_guest_name(name))
		return -EOPNOTSUPP;
	if (in.flags & ~(uint32_t)(XATTR_CREATE | XATTR_REPLACE))
		return -EINVAL;
	struct fsrv_inode *ino;
	char path[40];
	rc = xattr_path(fs, r, path, sizeof(path), &ino);
	if (rc < 0)
		return rc;
	rc = setxattr(path, name, r->arg + pos, in.size, (int)in.flags) < 0 ? -errno : 0;
	fsrv_inode_put(fs, ino);
	return rc < 0 ? rc : reply_empty(r);
}

static int op_getxattr(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_getxattr_in in;
	size_t pos = 0;
	const char *name;
	fsrv_arg(r, &pos, &in, sizeof(in));
	int rc = fsrv_arg_string(r, &pos, FSRV_NAME_MAX, &name);
	if (rc < 0)
		return rc;
	if (!*name)
		return -EINVAL;
	if (!fsrv_xattr_guest_name(name))
		return -ENODATA;
	struct fsrv_inode *ino;
	char path[40];
	rc = xattr_path(fs, r, path, sizeof(path), &ino);
	if (rc < 0)
		return rc;
	size_t want = in.size < FSRV_XATTR_MAX ? in.size : FSRV_XATTR_MAX;
	void *buf = want ? malloc(want) : NULL;
	ssize_t n;
	if (want && !buf)
		n = -ENOMEM;
	else if ((n = getxattr(path, name, buf, want)) < 0)
		n = -errno;
	fsrv_inode_put(fs, ino);
	if (n >= 0 && !want) {
		struct fuse_getxattr_out o = {.size = (uint32_t)n};
		rc = fsrv_reply(r, &o, sizeof(o));
	} else {
		rc = n < 0 ? (int)n : fsrv_reply(r, buf, (size_t)n);
	}
	free(buf);
	return rc;
}

static int op_listxattr(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_getxattr_in in;
	memcpy(&in, r->arg, sizeof(in));
	struct fsrv_inode *ino;
	char path[40];
	int rc = xattr_path(fs, r, path, sizeof(path), &ino);
	if (rc < 0)
		return rc;
	char *buf = malloc(FSRV_XATTR_MAX);
	ssize_t n = -ENOMEM;
	if (buf && (n = listxattr(path, buf, FSRV_XATTR_MAX)) < 0)
		n = errno == ERANGE ? -E2BIG : -errno;
	fsrv_inode_put(fs, ino);
	/* Keep only the guest's names, in place. */
	size_t kept = 0;
	for (ssize_t p = 0; n > 0 && p < n;) {
		size_t l = strnlen(buf + p, (size_t)(n - p));
		if (p + (ssize_t)l >= n)
			break; /* unterminated tail: not from the kernel, drop it */
		if (fsrv_xattr_guest_name(buf + p)) {
			memmove(buf + kept, buf + p, l + 1);
			kept += l + 1;
		}
		p += (ssize_t)l + 1;
	}
	if (n < 0)
		rc = (int)n;
	else if (in.size == 0) {
		struct fuse_getxattr_out o = {.size = (uint32_t)kept};
		rc = fsrv_reply(r, &o, sizeof(o));
	} else if (kept > in.size)
		rc = -ERANGE;
	else
		rc = fsrv_reply(r, buf, kept);
	free(buf);
	return rc;
}

static int op_removexattr(struct fsrv *fs, struct fsrv_req *r)
{
	size_t pos = 0;
	const char *name;
	int rc = fsrv_arg_string(r, &pos, FSRV_NAME_MAX, &name);
	if (rc < 0)
		return rc;
	if (!*name)
		return -EINVAL;
	if (!fsrv_xattr_guest_name(name))
		return -EOPNOTSUPP;
	struct fsrv_inode *ino;
	char path[40];
	rc = xattr_path(fs, r, path, sizeof(path), &ino);
	if (rc < 0)
		return rc;
	rc = removexattr(path, name) < 0 ? -errno : 0;
	fsrv_inode_put(fs, ino);
	return rc < 0 ? rc : reply_empty(r);
}

/* ---- directories ---- */

static int op_opendir(struct fsrv *fs, struct fsrv_req *r)
{
	struct fsrv_inode *ino;
	int rc = get_dir(fs, r->h.nodeid, &ino);
	if (rc < 0)
		return rc;
	int fd = fsrv_reopen(fs, ino, O_RDONLY);
	uint64_t fh = 0;
	rc = fd < 0 ? fd : fsrv_handle_new(fs, fd, ino, 1, 0, &fh);
	fsrv_inode_put(fs, ino);
	return rc < 0 ? rc : reply_open(fs, r, fh);
}

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/*
 * One directory entry into the reply at *used, or 0 if it does not fit.
 * READDIRPLUS looks the entry up (one more nlookup the guest will FORGET)
 * only once it is sure to fit; "." and "..", and names it cannot look up
 * (a mount point, a race with unlink), go out with nodeid 0, which the
 * guest skips.
 */
static int put_dirent(struct fsrv *fs, struct fsrv_req *r, struct fsrv_inode *dir,
		      const struct linux_dirent64 *d, int plus, size_t cap, size_t *used)
{
	/* [struct fuse_entry_out] struct fuse_dirent, name, zero padding */
	_Alignas(8)
		uint8_t ent[sizeof(struct fuse_entry_out) + FUSE_NAME_OFFSET + FSRV_NAME_MAX + 8];
	size_t nl = strnlen(d->d_name, FSRV_NAME_MAX + 1);
	if (nl == 0 || nl > FSRV_NAME_MAX)
		return 1; /* nothing a guest could use: skip it */
	size_t hdr = plus ? sizeof(struct fuse_entry_out) : 0;
	size_t sz = FUSE_DIRENT_ALIGN(hdr + FUSE_NAME_OFFSET + nl);
	if (*used + sz > cap)
		return 0;
	memset(ent, 0, sz);
	int dot = d->d_name[0] == '.' && (nl == 1 || (nl == 2 && d->d_name[1] == '.'));
	if (plus && !dot) {
		struct fsrv_inode *ino;
		struct stat st;
		if (fsrv_lookup(fs, dir, d->d_name, &ino, &st) == 0) {
			struct fuse_entry_out e;
			memset(&e, 0, sizeof(e));
			e.nodeid = ino->nodeid;
			e.generation = ino->gen;
			e.entry_valid = FSRV_TTL;
			e.attr_valid = FSRV_TTL;
			fsrv_attr(fs, ino, &st, &e.attr);
			fsrv_inode_put(fs, ino);
			memcpy(ent, &e, sizeof(e));
		}
	}
	struct fuse_dirent de = {
		.ino = d->d_ino,
		.off = (uint64_t)d->d_off,
		.namelen = (uint32_t)nl,
		.type = d->d_type,
	};
	memcpy(ent + hdr, &de, FUSE_NAME_OFFSET);
	memcpy(ent + hdr + FUSE_NAME_OFFSET, d->d_name, nl);
	fsrv_iov_write(r->out, r->out_count, sizeof(struct fuse_out_header) + *used, ent, sz);
	*used += sz;
	return 1;
}

/*
 * Offsets are the host file system's own d_off cookies.  A READDIR that
 * continues where the last one ended (the guest passes back the cookie of
 * the last entry it received) reads on from the handle's open stream —
 * first the entries left over from the last getdents64 — without seeking:
 * on file systems whose cookies are positions (tmpfs, overlayfs over it) a
 * seek after entries were removed would skip others, and `rm -rf` would
 * find its directory not empty.  Any other offset (rewinddir, seekdir, a
 * reply the guest never got) seeks the host stream to that cookie.
 */
static int dir_emit(struct fsrv *fs, struct fsrv_req *r, struct fsrv_handle *h, const char *buf,
		    uint32_t *pos, uint32_t len, int plus, size_t cap, size_t *used)
{
	while (*pos < len) {
		const struct linux_dirent64 *d = (const void *)(buf + *pos);
		if (d->d_reclen == 0 || *pos + d->d_reclen > len) {
			*pos = len;
			break;
		}
		if (!put_dirent(fs, r, h->inode, d, plus, cap, used))
			return 1; /* full: *pos is the first entry not sent */
		h->dnext = (uint64_t)d->d_off;
		*pos += d->d_reclen;
	}
	return 0;
}

static int do_readdir(struct fsrv *fs, struct fsrv_req *r, int plus)
{
	struct fuse_read_in in;
	memcpy(&in, r->arg, sizeof(in));
	if (check_off(in.offset) < 0)
		return -EINVAL;
	struct fsrv_handle *h = fsrv_handle_get(fs, in.fh);
	if (!h)
		return -EBADF;
	if (!h->dir) {
		fsrv_handle_put(fs, h);
		return -ENOTDIR;
	}
	size_t cap = in.size < FSRV_MAX_READ ? in.size : FSRV_MAX_READ;
	if (cap > r->out_cap - sizeof(struct fuse_out_header))
		cap = r->out_cap - sizeof(struct fuse_out_header);
	size_t used = 0;
	int rc = 0;
	_Alignas(8) char buf[FSRV_DIRBUF];
	pthread_mutex_lock(&h->lock);
	if (!h->dvalid || in.offset != h->dnext) {
		free(h->dbuf);
		h->dbuf = NULL;
		h->dpos = h->dlen = 0;
		h->dvalid = 0;
		if (lseek(h->fd, (off_t)in.offset, SEEK_SET) < 0)
			rc = -errno;
		h->dnext = in.offset;
		h->dvalid = rc == 0;
	}
	int full = 0;
	if (rc == 0 && h->dbuf) {
		full = dir_emit(fs, r, h, h->dbuf, &h->dpos, h->dlen, plus, cap, &used);
		if (!full) {
			free(h->dbuf);
			h->dbuf = NULL;
			h->dpos = h->dlen = 0;
		}
	}
	while (rc == 0 && !full) {
		long n = syscall(SYS_getdents64, h->fd, buf, sizeof(buf));
		if (n < 0) {
			if (!used)
				rc = -errno;
			h->dvalid = 0; /* the stream's position is unknown: seek next time */
			break;
		}
		if (n == 0)
			break;
		uint32_t pos = 0;
		full = dir_emit(fs, r, h, buf, &pos, (uint32_t)n, plus, cap, &used);
		if (full) {
			/* Keep what did not fit for the next READDIR, in order. */
			h->dbuf = malloc((size_t)n - pos);
			if (h->dbuf) {
				memcpy(h->dbuf, buf + pos, (size_t)n - pos);
				h->dlen = (uint32_t)n - pos;
				h->dpos = 0;
			} else {
				h->dvalid = 0; /* no memory: re-read from the cookie */
			}
		}
	}
	pthread_mutex_unlock(&h->lock);
	fsrv_handle_put(fs, h);
	if (rc < 0)
		return rc;
	struct fuse_out_header oh = {
		.len = (uint32_t)(sizeof(oh) + used),
		.error = 0,
		.unique = r->h.unique,
	};
	fsrv_iov_write(r->out, r->out_count, 0, &oh, sizeof(oh));
	return (int)oh.len;
}

static int op_readdir(struct fsrv *fs, struct fsrv_req *r)
{
	return do_readdir(fs, r, 0);
}

static int op_readdirplus(struct fsrv *fs, struct fsrv_req *r)
{
	return do_readdir(fs, r, 1);
}

static int op_fsyncdir(struct fsrv *fs, struct fsrv_req *r)
{
	return op_fsync(fs, r);
}

/* ---- locks: POSIX locks as OFD locks on the handle's host fd ---- */

static int lk_to_flock(const struct fuse_file_lock *lk, struct flock *fl)
{
	memset(fl, 0, sizeof(*fl));
	if (lk->type != F_RDLCK && lk->type != F_WRLCK && lk->type != F_UNLCK)
		return -EINVAL;
	if (lk->start > (uint64_t)INT64_MAX || lk->end < lk->start)
		return -EINVAL;
	fl->l_type = (short)lk->type;
	fl->l_whence = SEEK_SET;
	fl->l_start = (off_t)lk->start;
	fl->l_len = lk->end >= (uint64_t)INT64_MAX ? 0 : (off_t)(lk->end - lk->start + 1);
	return 0;
}

static int do_lock(struct fsrv *fs, struct fsrv_req *r, int cmd)
{
	struct fuse_lk_in in;
	memcpy(&in, r->arg, sizeof(in));
	/* (A guest kernel that keeps its own locks never sends these.) */
	if (!fs->host_locks)
		return -ENOSYS;
	if (in.lk_flags & FUSE_LK_FLOCK)
		return -EOPNOTSUPP; /* FUSE_FLOCK_LOCKS is not negotiated */
	struct flock fl;
	int rc = lk_to_flock(&in.lk, &fl);
	if (rc < 0)
		return rc;
	struct fsrv_handle *h;
	rc = get_file(fs, in.fh, &h);
	if (rc < 0)
		return rc;
	/* SETLKW blocks this thread until the lock is granted (docs/storage.md). */
	while ((rc = fcntl(h->fd, cmd, &fl)) < 0 && errno == EINTR && cmd == F_OFD_SETLKW)
		;
	rc = rc < 0 ? -errno : 0;
	if (rc == 0 && cmd != F_OFD_GETLK && fl.l_type != F_UNLCK) {
		pthread_mutex_lock(&fs->lock);
		if (!h->locked)
			h->lock_owner = in.owner;
		else if (h->lock_owner != in.owner)
			h->owners_many = 1;
		__atomic_store_n(&h->locked, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&fs->lock);
	}
	fsrv_handle_put(fs, h);
	if (rc < 0)
		return rc;
	if (cmd != F_OFD_GETLK)
		return reply_empty(r);
	struct fuse_lk_out o;
	memset(&o, 0, sizeof(o));
	o.lk.type = (uint32_t)fl.l_type;
	if (fl.l_type != F_UNLCK) {
		o.lk.start = (uint64_t)fl.l_start;
		o.lk.end = fl.l_len == 0 ? (uint64_t)INT64_MAX
					 : (uint64_t)fl.l_start + (uint64_t)fl.l_len - 1;
	}
	return fsrv_reply(r, &o, sizeof(o));
}

static int op_getlk(struct fsrv *fs, struct fsrv_req *r)
{
	return do_lock(fs, r, F_OFD_GETLK);
}

static int op_setlk(struct fsrv *fs, struct fsrv_req *r)
{
	return do_lock(fs, r, F_OFD_SETLK);
}

static int op_setlkw(struct fsrv *fs, struct fsrv_req *r)
{
	return do_lock(fs, r, F_OFD_SETLKW);
}

/* ACCESS, for guests mounted without default_permissions: checked on the guest's view. */
static int op_access(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_access_in in;
	memcpy(&in, r->arg, sizeof(in));
	struct fsrv_inode *ino = fsrv_inode_get(fs, r->h.nodeid);
	if (!ino)
		return -ENOENT;
	struct stat st;
	int rc = fsrv_stat(ino, &st);
	struct fuse_attr a;
	if (rc == 0)
		fsrv_attr(fs, ino, &st, &a);
	fsrv_inode_put(fs, ino);
	if (rc < 0)
		return rc;
	uint32_t mask = in.mask & 7;
	if ((mask & W_OK) && fs->read_only)
		return -EROFS;
	if (r->h.uid == 0) {
		if ((mask & X_OK) && !S_ISDIR(a.mode) && !(a.mode & 0111))
			return -EACCES;
		return reply_empty(r);
	}
	uint32_t bits = a.mode & 7;
	if (r->h.uid == a.uid)
		bits = (a.mode >> 6) & 7;
	else if (r->h.gid == a.gid)
		bits = (a.mode >> 3) & 7;
	return mask & ~bits ? -EACCES : reply_empty(r);
}

static int op_interrupt(struct fsrv *fs, struct fsrv_req *r)
{
	(void)fs;
	(void)r;
	return 0; /* requests finish on their own; no reply */
}

static int op_fallocate(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_fallocate_in in;
	memcpy(&in, r->arg, sizeof(in));
	if (in.mode &
	    ~(uint32_t)(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	if (check_off(in.offset) < 0 || check_off(in.length) < 0)
		return -EINVAL;
	struct fsrv_handle *h;
	int rc = get_file(fs, in.fh, &h);
	if (rc < 0)
		return rc;
	rc = fallocate(h->fd, (int)in.mode, (off_t)in.offset, (off_t)in.length) < 0 ? -errno : 0;
	fsrv_handle_put(fs, h);
	return rc < 0 ? rc : reply_empty(r);
}

static int op_lseek(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_lseek_in in;
	memcpy(&in, r->arg, sizeof(in));
	if (check_off(in.offset) < 0)
		return -EINVAL;
	if (in.whence != SEEK_SET && in.whence != SEEK_END && in.whence != SEEK_DATA &&
	    in.whence != SEEK_HOLE)
		return -EINVAL;
	struct fsrv_handle *h;
	int rc = get_file(fs, in.fh, &h);
	if (rc < 0)
		return rc;
	off_t o = lseek(h->fd, (off_t)in.offset, (int)in.whence);
	rc = o < 0 ? -errno : 0;
	fsrv_handle_put(fs, h);
	if (rc < 0)
		return rc;
	struct fuse_lseek_out out = {.offset = (uint64_t)o};
	return fsrv_reply(r, &out, sizeof(out));
}

static int op_copy_file_range(struct fsrv *fs, struct fsrv_req *r)
{
	struct fuse_copy_file_range_in in;
	memcpy(&in, r->arg, sizeof(in));
	if (in.flags)
		return -EINVAL;
	if (check_off(in.off_in) < 0 || check_off(in.off_out) < 0)
		return -EINVAL;
	size_t len = in.len < FSRV_COPY_MAX ? in.len : FSRV_COPY_MAX;
	struct fsrv_handle *hi, *ho;
	int rc = get_file(fs, in.fh_in, &hi);
	if (rc < 0)
		return rc;
	rc = get_file(fs, in.fh_out, &ho);
	if (rc < 0) {
		fsrv_handle_put(fs, hi);
		return rc;
	}
	loff_t oi = (loff_t)in.off_in, oo = (loff_t)in.off_out;
	ssize_t n = copy_file_range(hi->fd, &oi, ho->fd, &oo, len, 0);
	rc = n < 0 ? -errno : 0;
	fsrv_handle_put(fs, ho);
	fsrv_handle_put(fs, hi);
	if (rc < 0)
		return rc;
	struct fuse_write_out o = {.size = (uint32_t)n};
	return fsrv_reply(r, &o, sizeof(o));
}

static int op_syncfs(struct fsrv *fs, struct fsrv_req *r)
{
	int fd = openat(fs->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = syncfs(fd) < 0 ? -errno : 0;
	close(fd);
	return rc < 0 ? rc : reply_empty(r);
}

#define NAME1 2 /* the shortest name: one byte and its NUL */

static const struct op ops[] = {
	[FUSE_LOOKUP] = {op_lookup, NAME1, 0},
	[FUSE_FORGET] = {op_forget, sizeof(struct fuse_forget_in), OP_NOREPLY},
	[FUSE_GETATTR] = {op_getattr, 0, 0},
	[FUSE_SETATTR] = {op_setattr, sizeof(struct fuse_setattr_in), OP_MUTATES},
	[FUSE_READLINK] = {op_readlink, 0, 0},
	[FUSE_SYMLINK] = {op_symlink, 2 * NAME1, OP_MUTATES},
	[FUSE_MKNOD] = {op_mknod, sizeof(struct fuse_mknod_in) + NAME1, OP_MUTATES},
	[FUSE_MKDIR] = {op_mkdir, sizeof(struct fuse_mkdir_in) + NAME1, OP_MUTATES},
	[FUSE_UNLINK] = {op_unlink, NAME1, OP_MUTATES},
	[FUSE_RMDIR] = {op_rmdir, NAME1, OP_MUTATES},
	[FUSE_RENAME] = {op_rename, sizeof(struct fuse_rename_in) + 2 * NAME1, OP_MUTATES},
	[FUSE_LINK] = {op_link, sizeof(struct fuse_link_in) + NAME1, OP_MUTATES},
	[FUSE_OPEN] = {op_open, sizeof(struct fuse_open_in), 0},
	[FUSE_READ] = {op_read, sizeof(struct fuse_read_in), 0},
	[FUSE_WRITE] = {op_write, sizeof(struct fuse_write_in), OP_MUTATES},
	[FUSE_STATFS] = {op_statfs, 0, 0},
	[FUSE_RELEASE] = {op_release, sizeof(struct fuse_release_in), 0},
	[FUSE_FSYNC] = {op_fsync, sizeof(struct fuse_fsync_in), 0},
	[FUSE_SETXATTR] = {op_setxattr, FUSE_COMPAT_SETXATTR_IN_SIZE + NAME1, OP_MUTATES},
	[FUSE_GETXATTR] = {op_getxattr, sizeof(struct fuse_getxattr_in) + NAME1, 0},
	[FUSE_LISTXATTR] = {op_listxattr, sizeof(struct fuse_getxattr_in), 0},
	[FUSE_REMOVEXATTR] = {op_removexattr, NAME1, OP_MUTATES},
	[FUSE_FLUSH] = {op_flush, sizeof(struct fuse_flush_in), 0},
	[FUSE_INIT] = {op_init, 16, OP_ANYTIME},
	[FUSE_OPENDIR] = {op_opendir, sizeof(struct fuse_open_in), 0},
	[FUSE_READDIR] = {op_readdir, sizeof(struct fuse_read_in), 0},
	[FUSE_RELEASEDIR] = {op_release, sizeof(struct fuse_release_in), 0},
	[FUSE_FSYNCDIR] = {op_fsyncdir, sizeof(struct fuse_fsync_in), 0},
	[FUSE_GETLK] = {op_getlk, sizeof(struct fuse_lk_in), 0},
	[FUSE_SETLK] = {op_setlk, sizeof(struct fuse_lk_in), 0},
	[FUSE_SETLKW] = {op_setlkw, sizeof(struct fuse_lk_in), 0},
	[FUSE_ACCESS] = {op_access, sizeof(struct fuse_access_in), 0},
	[FUSE_CREATE] = {op_create, sizeof(struct fuse_create_in) + NAME1, OP_MUTATES},
	[FUSE_INTERRUPT] = {op_interrupt, 0, OP_NOREPLY | OP_ANYTIME},
	[FUSE_DESTROY] = {op_destroy, 0, 0},
	[FUSE_BATCH_FORGET] = {op_batch_forget, sizeof(struct fuse_batch_forget_in), OP_NOREPLY},
	[FUSE_FALLOCATE] = {op_fallocate, sizeof(struct fuse_fallocate_in), OP_MUTATES},
	[FUSE_READDIRPLUS] = {op_readdirplus, sizeof(struct fuse_read_in), 0},
	[FUSE_RENAME2] = {op_rename2, sizeof(struct fuse_rename2_in) + 2 * NAME1, OP_MUTATES},
	[FUSE_LSEEK] = {op_lseek, sizeof(struct fuse_lseek_in), 0},
	[FUSE_COPY_FILE_RANGE] = {op_copy_file_range, sizeof(struct fuse_copy_file_range_in),
				  OP_MUTATES},
	[FUSE_SYNCFS] = {op_syncfs, 0, 0},
	/* A reply to a notification we never send: nothing to answer. */
	[FUSE_NOTIFY_REPLY] = {op_interrupt, 0, OP_NOREPLY | OP_ANYTIME},
};

/* ---- the entry point ---- */

static int serve(struct fsrv *fs, const struct iovec *in, unsigned in_count,
		 const struct iovec *out, unsigned out_count, struct msb_fs_ref *ref)
{
	struct fsrv_req r;
	memset(&r, 0, sizeof(r));
	r.ref = ref;
	r.in = in;
	r.in_count = in_count;
	r.out = out;
	r.out_count = out_count;
	r.out_cap = fsrv_iov_total(out, out_count);
	size_t in_total = fsrv_iov_total(in, in_count);
	if (in_total < sizeof(r.h))
		return -EINVAL; /* not even a header: nothing to reply to */
	fsrv_iov_read(in, in_count, 0, &r.h, sizeof(r.h));
	const struct op *op = NULL;
	if (r.h.opcode < sizeof(ops) / sizeof(ops[0]) && ops[r.h.opcode].fn)
		op = &ops[r.h.opcode];
	int noreply = op && (op->flags & OP_NOREPLY);
	if (!noreply && r.out_cap < sizeof(struct fuse_out_header))
		return -EINVAL;
	if (r.out_cap > (size_t)INT32_MAX)
		r.out_cap = INT32_MAX;

	int rc = 0;
	uint8_t *heap = NULL;
	_Alignas(8) uint8_t stack[FSRV_ARGS_INLINE];
	size_t ext = (size_t)r.h.total_extlen * 8;
	if (r.h.len < sizeof(r.h) || r.h.len > in_total || r.h.len - sizeof(r.h) < ext)
		rc = -EINVAL;
	else if (!op)
		rc = -ENOSYS;
	size_t body = rc ? 0 : r.h.len - sizeof(r.h) - ext;
	if (rc == 0 && r.h.opcode == FUSE_WRITE) {
		/* Only the fixed arguments are copied; the payload stays in place. */
		r.arglen =
			body < sizeof(struct fuse_write_in) ? body : sizeof(struct fuse_write_in);
		r.payload_off = sizeof(r.h) + r.arglen;
		r.payload_len = body - r.arglen;
	} else if (rc == 0) {
		r.arglen = body;
	}
	if (rc == 0 && r.arglen > FSRV_ARGS_MAX)
		rc = -E2BIG;
	if (rc == 0 && r.arglen > sizeof(stack)) {
		heap = malloc(r.arglen);
		if (!heap)
			rc = -ENOMEM;
	}
	if (rc == 0) {
		uint8_t *buf = heap ? heap : stack;
		fsrv_iov_read(in, in_count, sizeof(r.h), buf, r.arglen);
		r.arg = buf;
		if (r.arglen < op->argmin)
			rc = -EINVAL;
		else if (!(op->flags & OP_ANYTIME) && !is_inited(fs))
			rc = -EIO;
		else if ((op->flags & OP_MUTATES) && fs->read_only)
			rc = -EROFS;
		else
			rc = op->fn(fs, &r);
	}
	free(heap);
	if (noreply)
		return 0;
	return rc < 0 ? fsrv_reply_err(&r, rc) : rc;
}

int fsrv_handle(void *ctx, const struct iovec *in, unsigned in_count, const struct iovec *out,
		unsigned out_count)
{
	return serve(ctx, in, in_count, out, out_count, NULL);
}

/*
 * handle() for a transport that takes a READ's payload by reference (ABI
 * 1.4): every check is the same, and op_read names its file and range in
 * *ref instead of reading.  A ref too short to hold its fields, or with a
 * max of 0, gets every reply by value.
 */
int fsrv_handle_ref(void *ctx, const struct iovec *in, unsigned in_count, const struct iovec *out,
		    unsigned out_count, struct msb_fs_ref *ref)
{
	if (!ref || ref->size < offsetof(struct msb_fs_ref, token) + sizeof(ref->token))
		return serve(ctx, in, in_count, out, out_count, NULL);
	ref->fd = -1;
	ref->len = 0;
	ref->offset = 0;
	ref->token = NULL;
	return serve(ctx, in, in_count, out, out_count, ref->max ? ref : NULL);
}

void fsrv_ref_done(void *ctx, struct msb_fs_ref *ref)
{
	if (!ref || !ref->token)
		return;
	fsrv_handle_put(ctx, ref->token);
	ref->token = NULL;
	ref->fd = -1;
}

/* ---- share lifecycle ---- */

static int have_cap_sys_admin(void)
{
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return 0;
	return !!(data[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32)));
}

static int open_fail(const struct msb_host *host, struct msb_error *err, int code, const char *what,
		     const char *path)
{
	if (host)
		return host->error_set(host, err, code, "share %s: %s: %s", path, what,
				       strerror(-code));
	if (err) {
		err->code = code;
		snprintf(err->msg, sizeof(err->msg), "share %s: %s: %s", path, what,
			 strerror(-code));
	}
	return code;
}

int fsrv_open(const struct msb_host *host, const struct msb_share *share, struct fsrv **out,
	      struct msb_error *err)
{
	const char *path = share->host_path ? share->host_path : "(none)";
	uint32_t identity = MSB_SHARE_IDENTITY_STRICT;
	if (share->size >= offsetof(struct msb_share, identity) + sizeof(share->identity))
		identity = share->identity;
	uint32_t locks = MSB_SHARE_LOCKS_GUEST;
	if (share->size >= offsetof(struct msb_share, locks) + sizeof(share->locks))
		locks = share->locks;
	if (!share->host_path)
		return open_fail(host, err, -EINVAL, "no host path", path);
	if (identity != MSB_SHARE_IDENTITY_STRICT && identity != MSB_SHARE_IDENTITY_OFF)
		return open_fail(host, err, -EINVAL, "unknown identity mode", path);
	if (locks != MSB_SHARE_LOCKS_GUEST && locks != MSB_SHARE_LOCKS_HOST)
		return open_fail(host, err, -EINVAL, "unknown lock mode", path);
	struct fsrv *fs = calloc(1, sizeof(*fs));
	if (!fs)
		return open_fail(host, err, -ENOMEM, "server", path);
	pthread_mutex_init(&fs->lock, NULL);
	fs->host = host;
	fs->read_only = !!share->read_only;
	fs->identity = (int)identity;
	fs->host_locks = locks == MSB_SHARE_LOCKS_HOST;
	fs->root_fd = -1;
	fs->proc_fd = -1;
	fs->id_xattr = have_cap_sys_admin() ? FSRV_ID_XATTR_TRUSTED : FSRV_ID_XATTR_USER;
	int rc = fsrv_tables_init(fs);
	const char *what = "tables";
	/* The host path is the core's, trusted: it may contain symlinks. */
	int rfd = -1;
	if (rc == 0) {
		what = "open";
		rfd = open(share->host_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (rfd < 0)
			rc = -errno;
	}
	struct stat st;
	if (rc == 0 && fstat(rfd, &st) < 0)
		rc = -errno;
	struct fsrv_inode *root = NULL;
	if (rc == 0) {
		fs->root_dev = st.st_dev;
		what = "mount id";
		rc = fsrv_mount_id(rfd, &fs->root_mnt_id);
	}
	if (rc == 0) {
		rc = fsrv_inode_insert(fs, rfd, &st, &root);
		rfd = -1;
	}
	if (rc == 0) {
		fs->root_fd = root->fd;
		fsrv_inode_put(fs, root);
		what = "/proc/self/fd";
		fs->proc_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
		struct statfs sfs;
		if (fs->proc_fd < 0)
			rc = -errno;
		else if (fstatfs(fs->proc_fd, &sfs) < 0 || sfs.f_type != PROC_SUPER_MAGIC)
			rc = -ENOTSUP;
	}
	if (rc == 0) {
		what = "openat2";
		rc = fsrv_probe_openat2(fs->root_fd);
		fs->openat2 = rc == 1;
		if (rc > 0)
			rc = 0;
	}
	if (rc < 0) {
		if (rfd >= 0)
			close(rfd);
		fsrv_close(fs);
		return open_fail(host, err, rc, what, path);
	}
	*out = fs;
	return 0;
}

void fsrv_close(struct fsrv *fs)
{
	if (!fs)
		return;
	fsrv_tables_free(fs);
	if (fs->proc_fd >= 0)
		close(fs->proc_fd);
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}
