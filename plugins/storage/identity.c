/* SPDX-License-Identifier: Apache-2.0 */
/*
 * identity.c — what the guest sees as owner and mode.
 *
 * STRICT (the default): the guest's chown/chmod, and the owner and mode of
 * what it creates, live in one xattr on the host file:
 *   trusted.msb.owner  when the server has CAP_SYS_ADMIN (as root): only a
 *                      privileged host process can read or forge it, and it
 *                      works on symlinks and special files too;
 *   user.msb.owner     otherwise (then symlinks and FIFOs keep host ownership).
 * The value is 16 bytes, little-endian: version (1), uid, gid, mode (07777).
 * The host inode's own uid/gid/mode are never changed by the guest; a file
 * without the xattr shows its host owner and mode.  The file type always
 * comes from the host.  The overlay is read once per inode (on first use) and
 * cached; a host-side edit of the xattr shows once the guest forgets the inode.
 *
 * OFF: chmod/chown go to the host file.
 *
 * Either way the guest never sees, sets or removes the owner xattr (only the
 * user.* namespace minus user.msb.* is the guest's), and setuid/setgid bits
 * from the guest never land on a host inode: stripped on create, mkdir and
 * chmod in OFF mode, never written at all in STRICT mode (where they may
 * stand in the overlay, visible only to the guest).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"

struct id_rec {
	uint32_t version, uid, gid, mode;
};

/*
 * Identity records outlive the guest's FORGET here: a direct-mapped table
 * keyed by (dev, ino) and the host inode's ctime.  An inode's record is
 * "known at" a ctime (id_csec/id_cnsec) when the server made the file
 * without a record, or read the record while that ctime was more than 2 s
 * old (a change in the same clock tick would not move ctime: git's "racy"
 * rule).  When the inode is forgotten, the record is remembered if the host
 * inode still shows that ctime (fsrv_idc_remember); every xattr change
 * moves ctime, so a record changed on the host never matches, and our own
 * writes drop the entry.  This spares a getxattr through /proc/self/fd/N
 * on the LOOKUP that follows a guest's cache drop.
 */
static struct fsrv_idc *idc_slot(struct fsrv *fs, uint64_t dev, uint64_t ino)
{
	return &fs->idc[fsrv_hash_of((dev_t)dev, (ino_t)ino) % FSRV_IDC];
}

static int idc_get(struct fsrv *fs, const struct stat *st, struct fsrv_inode *ino)
{
	if (!fs->idc || !st || (st->st_ctim.tv_sec == 0 && st->st_ctim.tv_nsec == 0))
		return 0;
	int hit = 0;
	pthread_mutex_lock(&fs->idc_lock);
	struct fsrv_idc *e = idc_slot(fs, (uint64_t)st->st_dev, (uint64_t)st->st_ino);
	if (e->dev == (uint64_t)st->st_dev && e->ino == (uint64_t)st->st_ino &&
	    e->ctime_sec == (int64_t)st->st_ctim.tv_sec &&
	    e->ctime_nsec == (int64_t)st->st_ctim.tv_nsec) {
		hit = 1;
		ino->id_set = (int)e->set;
		ino->id_uid = e->uid;
		ino->id_gid = e->gid;
		ino->id_mode = e->mode;
	}
	pthread_mutex_unlock(&fs->idc_lock);
	return hit;
}

static void idc_store(struct fsrv *fs, const struct fsrv_idc *rec)
{
	pthread_mutex_lock(&fs->idc_lock);
	*idc_slot(fs, rec->dev, rec->ino) = *rec;
	pthread_mutex_unlock(&fs->idc_lock);
}

/* The record in ino is the one at st's ctime (read just now, or made by us). */
static void id_known_at(struct fsrv_inode *ino, const struct stat *st)
{
	ino->id_csec = st ? (int64_t)st->st_ctim.tv_sec : 0;
	ino->id_cnsec = st ? (int64_t)st->st_ctim.tv_nsec : 0;
}

void fsrv_idc_remember(struct fsrv *fs, int fd, const struct fsrv_idc *rec)
{
	struct stat st;
	if (!fs->idc || (!rec->ctime_sec && !rec->ctime_nsec) || fstat(fd, &st) < 0)
		return;
	if ((uint64_t)st.st_dev == rec->dev && (uint64_t)st.st_ino == rec->ino &&
	    (int64_t)st.st_ctim.tv_sec == rec->ctime_sec &&
	    (int64_t)st.st_ctim.tv_nsec == rec->ctime_nsec)
		idc_store(fs, rec);
}

static void idc_drop(struct fsrv *fs, const struct fsrv_inode *ino)
{
	if (!fs->idc)
		return;
	pthread_mutex_lock(&fs->idc_lock);
	struct fsrv_idc *e = idc_slot(fs, (uint64_t)ino->dev, (uint64_t)ino->ino);
	if (e->dev == (uint64_t)ino->dev && e->ino == (uint64_t)ino->ino)
		memset(e, 0, sizeof(*e));
	pthread_mutex_unlock(&fs->idc_lock);
}

/* Under ino->id_lock.  st: the inode's current attributes (for idc), or NULL. */
static void id_load(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st)
{
	struct id_rec rec;
	char path[40];
	ino->id_loaded = 1;
	ino->id_set = 0;
	id_known_at(ino, NULL);
	if (idc_get(fs, st, ino)) {
		id_known_at(ino, st);
		return;
	}
	if (fsrv_proc_path(ino, path, sizeof(path)) < 0)
		return;
	/* Following the magic link lands on the inode itself, symlinks included. */
	ssize_t n = getxattr(path, fs->id_xattr, &rec, sizeof(rec));
	if (n == (ssize_t)sizeof(rec) && le32toh(rec.version) == 1) {
		ino->id_set = 1;
		ino->id_uid = le32toh(rec.uid);
		ino->id_gid = le32toh(rec.gid);
		ino->id_mode = le32toh(rec.mode) & 07777;
	} else if (n < 0 && errno != ENODATA) {
		return; /* not known: nothing remembered */
	}
	/* Read, not made: only a ctime from before the last clock ticks proves it. */
	if (st && st->st_ctim.tv_sec < time(NULL) - 2)
		id_known_at(ino, st);
}

/* Under ino->id_lock. */
static int id_write(struct fsrv *fs, struct fsrv_inode *ino, uint32_t uid, uint32_t gid,
		    uint32_t mode)
{
	struct id_rec rec = {
		.version = htole32(1),
		.uid = htole32(uid),
		.gid = htole32(gid),
		.mode = htole32(mode & 07777),
	};
	char path[40];
	int rc = fsrv_proc_path(ino, path, sizeof(path));
	if (rc < 0)
		return rc;
	idc_drop(fs, ino);
	id_known_at(ino, NULL); /* (the write moves ctime) */
	if (setxattr(path, fs->id_xattr, &rec, sizeof(rec), 0) < 0)
		return errno == ENOTSUP ? -EPERM : -errno;
	ino->id_loaded = ino->id_set = 1;
	ino->id_uid = uid;
	ino->id_gid = gid;
	ino->id_mode = mode & 07777;
	return 0;
}

void fsrv_attr(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = st->st_ino;
	a->size = (uint64_t)st->st_size;
	a->blocks = (uint64_t)st->st_blocks;
	a->atime = (uint64_t)st->st_atim.tv_sec;
	a->mtime = (uint64_t)st->st_mtim.tv_sec;
	a->ctime = (uint64_t)st->st_ctim.tv_sec;
	a->atimensec = (uint32_t)st->st_atim.tv_nsec;
	a->mtimensec = (uint32_t)st->st_mtim.tv_nsec;
	a->ctimensec = (uint32_t)st->st_ctim.tv_nsec;
	a->mode = st->st_mode;
	a->nlink = (uint32_t)st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->rdev = (uint32_t)st->st_rdev;
	a->blksize = (uint32_t)st->st_blksize;
	if (fs->identity != MSB_SHARE_IDENTITY_STRICT)
		return;
	pthread_mutex_lock(&ino->id_lock);
	if (!ino->id_loaded)
		id_load(fs, ino, st);
	if (ino->id_set) {
		a->uid = ino->id_uid;
		a->gid = ino->id_gid;
		a->mode = (st->st_mode & S_IFMT) | ino->id_mode;
	}
	pthread_mutex_unlock(&ino->id_lock);
}

/*
 * A new inode's identity.  Nothing is written when it is what the host inode
 * shows anyway (a file without the xattr shows its host owner and mode): the
 * common case of a guest creating as the server's own user, where it saves an
 * xattr write per create.
 */
int fsrv_id_store(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, uint32_t uid,
		  uint32_t gid, uint32_t mode)
{
	int rc = 0;
	pthread_mutex_lock(&ino->id_lock);
	if (st->st_uid == uid && st->st_gid == gid && (st->st_mode & 07777) == (mode & 07777)) {
		ino->id_loaded = 1;
		ino->id_set = 0;
		id_known_at(ino, st); /* ours: we made it without a record */
	} else {
		rc = id_write(fs, ino, uid, gid, mode);
	}
	pthread_mutex_unlock(&ino->id_lock);
	return rc;
}

/* STRICT: the overlay as it stands (the host's values where it has none). */
static void id_current(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st,
		       uint32_t *uid, uint32_t *gid, uint32_t *mode)
{
	if (!ino->id_loaded)
		id_load(fs, ino, st);
	*uid = ino->id_set ? ino->id_uid : st->st_uid;
	*gid = ino->id_set ? ino->id_gid : st->st_gid;
	*mode = ino->id_set ? ino->id_mode : st->st_mode & 07777;
}

int fsrv_id_chmod(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, uint32_t mode)
{
	uint32_t uid, gid, old;
	pthread_mutex_lock(&ino->id_lock);
	id_current(fs, ino, st, &uid, &gid, &old);
	int rc = id_write(fs, ino, uid, gid, mode & 07777);
	pthread_mutex_unlock(&ino->id_lock);
	return rc;
}

int fsrv_id_chown(struct fsrv *fs, struct fsrv_inode *ino, const struct stat *st, uint32_t uid,
		  uint32_t gid, int set_uid, int set_gid)
{
	uint32_t u, g, mode;
	pthread_mutex_lock(&ino->id_lock);
	id_current(fs, ino, st, &u, &g, &mode);
	int rc = id_write(fs, ino, set_uid ? uid : u, set_gid ? gid : g, mode);
	pthread_mutex_unlock(&ino->id_lock);
	return rc;
}

/* FUSE_WRITE_KILL_SUIDGID and friends: clear setuid/setgid where the guest sees them. */
int fsrv_id_kill_suid(struct fsrv *fs, struct fsrv_inode *ino)
{
	struct stat st;
	int rc = fsrv_stat(ino, &st);
	if (rc < 0)
		return rc;
	if (fs->identity == MSB_SHARE_IDENTITY_STRICT) {
		uint32_t uid, gid, mode;
		pthread_mutex_lock(&ino->id_lock);
		id_current(fs, ino, &st, &uid, &gid, &mode);
		if (mode & (S_ISUID | S_ISGID))
			rc = id_write(fs, ino, uid, gid, mode & ~(uint32_t)(S_ISUID | S_ISGID));
		pthread_mutex_unlock(&ino->id_lock);
		return rc;
	}
	if (!(st.st_mode & (S_ISUID | S_ISGID)) || ino->type != S_IFREG)
		return 0;
	char n[16];
	snprintf(n, sizeof(n), "%d", ino->fd);
	return fchmodat(fs->proc_fd, n, st.st_mode & 01777, 0) < 0 ? -errno : 0;
}

/* The xattr names the guest may use: user.*, except the server's own user.msb.*. */
int fsrv_xattr_guest_name(const char *name)
{
	return strncmp(name, "user.", 5) == 0 && strncmp(name, "user.msb.", 9) != 0;
}
