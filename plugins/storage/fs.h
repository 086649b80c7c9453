/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fs.h — the storage module's FUSE-protocol file server, inside the module.
 *
 * One struct fsrv serves one share.  Its pieces, one file each:
 *   wire.c      the only code that reads a request: copies the header and
 *               arguments out of guest memory into a private buffer once,
 *               parses names, and writes replies into the out buffers
 *   inode.c     the inode table (nodeid -> pinned O_PATH fd, nlookup counts)
 *               and the handle table (fh -> open fd)
 *   safe_open.c every open: single-component lookups under openat2
 *               (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS |
 *               RESOLVE_NO_XDEV) or the documented O_NOFOLLOW fallback, and
 *               reopening an inode for I/O
 *   identity.c  identity virtualization (the owner xattr) and the attributes
 *               the guest sees
 *   server.c    the operations, as a table, and fsrv_handle
 *   plugin.c    the module: descriptor, share_open/share_close
 * docs/storage.md explains the design.
 */
#ifndef MSB_STORAGE_FS_H
#define MSB_STORAGE_FS_H

#include <linux/fuse.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <msb/msb-plugin.h>

/* Every limit the guest can push against, in one place. */
#define FSRV_MAX_INODES	 (1u << 20)		/* nodeids alive at once (each an O_PATH fd) */
#define FSRV_MAX_HANDLES (1u << 16)		/* open files and directories at once */
#define FSRV_MAX_WRITE	 (1u << 20)		/* max_write negotiated at INIT */
#define FSRV_MAX_READ	 (1u << 20)		/* bytes one READ returns */
#define FSRV_MAX_PAGES	 256			/* FSRV_MAX_WRITE / 4096 */
#define FSRV_NAME_MAX	 255			/* one path component */
#define FSRV_LINK_MAX	 4095			/* a symlink target */
#define FSRV_XATTR_MAX	 65536			/* one xattr value, and a name list */
#define FSRV_ARGS_INLINE 4608			/* arguments copied onto the stack */
#define FSRV_ARGS_MAX	 (FSRV_XATTR_MAX + 512) /* the largest argument block accepted */
#define FSRV_COPY_MAX	 (64u << 20)		/* bytes one COPY_FILE_RANGE moves */
#define FSRV_CHUNK	 1024			/* table slots allocated together */
#define FSRV_MIN_MINOR	 31			/* oldest FUSE 7.x minor served */
#define FSRV_IDC	 4096			/* identity records remembered (identity.c) */

/* Attribute and entry cache lifetime handed to the guest, in seconds. */
#define FSRV_TTL 1

/* The identity overlay xattr (see identity.c). */
#define FSRV_ID_XATTR_TRUSTED "trusted.msb.owner"
#define FSRV_ID_XATTR_USER    "user.msb.owner"

struct fsrv_inode {
	uint64_t nodeid; /* 0: slot free */
	int fd;		 /* O_PATH | O_NOFOLLOW, pins the host inode */
	uint32_t type;	 /* S_IFMT bits; an inode's type never changes */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup; /* the guest's references (LOOKUP .. FORGET) */
	uint32_t refs;	  /* requests in flight holding this inode */
	uint32_t gen;	  /* bumped each time the slot is reused */
	uint32_t hnext;	  /* hash chain (slot index, 0 ends) */
	uint32_t fnext;	  /* free list (slot index, 0 ends) */
	/* Identity overlay, loaded on first use; guarded by id_lock. */
	pthread_mutex_t id_lock;
	int id_loaded, id_set;
	uint32_t id_uid, id_gid, id_mode; /* id_mode: permission bits (07777) */
	int64_t id_csec, id_cnsec;	  /* the inode's ctime the record is known at; 0: unknown */
};

struct fsrv_handle {
	uint64_t fh; /* 0: slot free */
	int fd;
	int dir, writable, locked, live;
	/*
	 * Who took the handle's locks (FUSE lock owner: one guest process's
	 * file table), under fs->lock: a FLUSH drops them only when that
	 * owner closes, or when more than one owner locked (owners_many).
	 */
	uint64_t lock_owner;
	int owners_many;
	uint32_t refs, gen, fnext;
	struct fsrv_inode *inode; /* holds one ref for the handle's life */
	pthread_mutex_t lock;	  /* directories: lseek + getdents as one step */
	/*
	 * Directories: the host stream's state between READDIRs (under lock).
	 * dnext is the cookie after the last entry sent; dbuf holds entries
	 * getdents64 returned that did not fit the reply (at most
	 * FSRV_DIRBUF bytes, allocated only while some are left).
	 */
	char *dbuf;
	uint32_t dpos, dlen;
	uint64_t dnext;
	int dvalid;
};

#define FSRV_DIRBUF 4096

/* One remembered identity record: valid while the inode's ctime is unchanged. */
struct fsrv_idc {
	uint64_t dev, ino;
	int64_t ctime_sec, ctime_nsec; /* 0, 0: empty */
	uint32_t set, uid, gid, mode;
};

struct fsrv {
	const struct msb_host *host; /* may be NULL (tests, fuzzer) */
	int root_fd;		     /* O_PATH, the share's pinned root */
	int proc_fd;		     /* O_PATH, /proc/self/fd (checked to be procfs) */
	dev_t root_dev;
	uint64_t root_mnt_id; /* the share root's mount id (the fallback's check) */
	int read_only;
	int identity;	/* enum msb_share_identity */
	int host_locks; /* MSB_SHARE_LOCKS_HOST: POSIX locks on the host file too */
	int openat2;	/* 1: openat2 works; 0: the fallback */
	const char *id_xattr;
	mode_t umask;
	int inited;	      /* INIT done (until DESTROY); guarded by lock */
	uint32_t minor;	      /* negotiated */
	pthread_mutex_t lock; /* both tables; never held across file system calls */

	/* Inodes: slot i lives in itab[i / FSRV_CHUNK][i % FSRV_CHUNK]. */
	struct fsrv_inode *itab[FSRV_MAX_INODES / FSRV_CHUNK];
	uint32_t islots, ifree, icount;
	uint32_t *hash; /* (dev, ino) -> slot chains */
	uint32_t hmask;

	struct fsrv_handle *htab[FSRV_MAX_HANDLES / FSRV_CHUNK];
	uint32_t hslots, hfree, hcount;

	/* Identity records of inodes the guest forgot (identity.c); own lock. */
	struct fsrv_idc *idc;
	pthread_mutex_t idc_lock;
};

/* One request, parsed: everything here is a private copy. */
struct fsrv_req {
	struct fuse_in_header h;
	const uint8_t *arg; /* the argument block (after the header) */
	size_t arglen;
	const struct iovec *in; /* for WRITE's payload only */
	unsigned in_count;
	size_t payload_off, payload_len;
	const struct iovec *out;
	unsigned out_count;
	size_t out_cap;
	/* handle_ref's: a READ may answer with a byte range of its file (op_read). */
	struct msb_fs_ref *ref;
};

/* server.c */
int fsrv_open(const struct msb_host *host, const struct msb_share *share, struct fsrv **out,
	      struct msb_error *err);
void fsrv_close(struct fsrv *fs);
int fsrv_handle(void *ctx, const struct iovec *in, unsigned in_count, const struct iovec *out,
		unsigned out_count);
int fsrv_handle_ref(void *ctx, const struct iovec *in, unsigned in_count, const struct iovec *out,
		    unsigned out_count, struct msb_fs_ref *ref);
void fsrv_ref_done(void *ctx, struct msb_fs_ref *ref);

/* wire.c */
size_t fsrv_iov_total(const struct iovec *iov, unsigned n);
size_t fsrv_iov_read(const struct iovec *iov, unsigned n, size_t off, void *dst, size_t len);
size_t fsrv_iov_write(const struct iovec *iov, unsigned n, size_t off, const void *src, size_t len);
/* A sub-range of an iovec array as at most `max` iovecs; returns the count. */
unsigned fsrv_iov_slice(const struct iovec *iov, unsigned n, size_t *off, size_t len,
			struct iovec *dst, unsigned max);
int fsrv_arg_name(const struct fsrv_req *r, size_t *pos, const char **name);
int fsrv_arg_string(const struct fsrv_req *r, size_t *pos, size_t max, const char **s);
int fsrv_arg(const struct fsrv_req *r, size_t *pos, void *dst, size_t len);
int fsrv_reply(struct fsrv_req *r, const void *data, size_t len);
int fsrv_reply2(struct fsrv_req *r, const void *a, size_t alen, const void *b, size_t blen);
int fsrv_reply_err(struct fsrv_req *r, int negerr);

/* inode.c */
int fsrv_tables_init(struct fsrv *fs);
/* The hash of a host inode's identity (dev, ino): the inode table's and the identity cache's. */
uint32_t fsrv_hash_of(dev_t dev, ino_t ino);
/* identity.c: remember a forgotten inode's record (rec from inode_reap) if fd still shows its
 * ctime. */
void fsrv_idc_remember(struct fsrv *fs, int fd, const struct fsrv_idc *rec);
void fsrv_tables_free(struct fsrv *fs);
struct fsrv_inode *fsrv_inode_get(struct fsrv *fs, uint64_t nodeid);
void fsrv_inode_ref(struct fsrv *fs, struct fsrv_inode *ino);
void fsrv_inode_put(struct fsrv *fs, struct fsrv_inode *ino);
int fsrv_inode_insert(struct fsrv *fs, int fd, const struct stat *st, struct fsrv_inode **out);
void fsrv_inode_forget(struct fsrv *fs, uint64_t nodeid, uint64_t n);
int fsrv_handle_new(struct fsrv *fs, int fd, struct fsrv_inode *ino, int dir, int writable,
		    uint64_t *fh);
struct fsrv_handle *fsrv_handle_get(struct fsrv *fs, uint64_t fh);
void fsrv_handle_put(struct fsrv *fs, struct fsrv_handle *h);
int fsrv_handle_release(struct fsrv *fs, uint64_t fh);
void fsrv_forget_all(struct fsrv *fs);

/* safe_open.c */
int fsrv_probe_openat2(int dirfd);
/* The mount id of the mount fd is on (statx, else /proc/self/fdinfo). */
int fsrv_mount_id(int fd, uint64_t *id);
int fsrv_openat(struct fsrv *fs, int dirfd, const char *name, int flags, mode_t mode);
int fsrv_lookup(struct fsrv *fs, struct fsrv_inode *dir, const char *name, struct fsrv_inode **out,
		struct stat *st);
int fsrv_reopen(struct fsrv *fs, struct fsrv_inode *ino, int flags);
int fsrv_proc_path(const struct fsrv_inode *ino, char *buf, size_t len);
int fsrv_stat(struct fsrv_inode *ino, struct stat *st);

/* identity.c */
void fsrv_attr(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, struct fuse_attr *a);
int fsrv_id_store(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, uint32_t uid,
		  uint32_t gid, uint32_t mode);
int fsrv_id_chmod(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, uint32_t mode);
int fsrv_id_chown(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, uint32_t uid,
		  uint32_t gid, int set_uid, int set_gid);
int fsrv_id_kill_suid(struct fsrv *fs, struct fsrv_inode *ino);
int fsrv_xattr_guest_name(const char *name);

#endif /* MSB_STORAGE_FS_H */
