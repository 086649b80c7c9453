/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inode.c — the inode table and the handle table.
 *
 * A nodeid is (generation << 32 | slot): the slot indexes a chunked array
 * whose entries never move, the generation makes a forgotten nodeid stale
 * instead of naming whatever reuses its slot.  A nodeid the guest forges or
 * keeps after FORGET simply fails to match (ENOENT); it can only ever name an
 * inode this server looked up inside the share.  The root is slot 1,
 * generation 0: FUSE_ROOT_ID.  File handles (fh) work the same way.
 *
 * Each inode pins its host inode with an O_PATH fd, so (dev, ino) cannot be
 * reused while it is in the table: the (dev, ino) hash gives every host inode
 * one nodeid (hard links share it, as the guest expects).
 *
 * Lifetimes: nlookup counts the guest's references (each LOOKUP-like reply
 * adds one, FORGET takes them back); refs counts requests in flight.  An
 * inode goes when both are zero, so a FORGET racing a request on another
 * thread never frees what that request uses.  One mutex guards both tables;
 * it is held for a few loads and stores, never across a file system call
 * (fds are closed after it is dropped; the only allocations under it are a
 * new chunk of 1024 slots and the occasional doubling of the hash).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"

#define SLOT(id) ((uint32_t)((id)&0xffffffffu))
#define GEN(id)	 ((uint32_t)((id) >> 32))

static struct fsrv_inode *islot(struct fsrv *fs, uint32_t s)
{
	return &fs->itab[s / FSRV_CHUNK][s % FSRV_CHUNK];
}

static struct fsrv_handle *hslot(struct fsrv *fs, uint32_t s)
{
	return &fs->htab[s / FSRV_CHUNK][s % FSRV_CHUNK];
}

uint32_t fsrv_hash_of(dev_t dev, ino_t ino)
{
	uint64_t x = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4full;
	return (uint32_t)(x >> 29) ^ (uint32_t)x;
}

int fsrv_tables_init(struct fsrv *fs)
{
	fs->hmask = 1023;
	fs->hash = calloc(fs->hmask + 1, sizeof(*fs->hash));
	if (!fs->hash)
		return -ENOMEM;
	pthread_mutex_init(&fs->idc_lock, NULL);
	if (fs->identity == MSB_SHARE_IDENTITY_STRICT &&
	    !(fs->idc = calloc(FSRV_IDC, sizeof(*fs->idc))))
		return -ENOMEM;
	fs->islots = 1; /* slot 0 is never used: nodeid 0 is invalid */
	fs->hslots = 1;
	return 0;
}

void fsrv_tables_free(struct fsrv *fs)
{
	free(fs->idc);
	fs->idc = NULL;
	pthread_mutex_destroy(&fs->idc_lock);
	for (uint32_t s = 1; s < fs->hslots; s++) {
		struct fsrv_handle *h = hslot(fs, s);
		if (h->fh)
			close(h->fd);
		free(h->dbuf);
	}
	for (uint32_t s = 1; s < fs->islots; s++) {
		struct fsrv_inode *i = islot(fs, s);
		if (i->nodeid)
			close(i->fd);
	}
	for (size_t c = 0; c < FSRV_MAX_INODES / FSRV_CHUNK && fs->itab[c]; c++) {
		for (unsigned k = 0; k < FSRV_CHUNK; k++)
			pthread_mutex_destroy(&fs->itab[c][k].id_lock);
		free(fs->itab[c]);
	}
	for (size_t c = 0; c < FSRV_MAX_HANDLES / FSRV_CHUNK && fs->htab[c]; c++) {
		for (unsigned k = 0; k < FSRV_CHUNK; k++)
			pthread_mutex_destroy(&fs->htab[c][k].lock);
		free(fs->htab[c]);
	}
	free(fs->hash);
}

/* Under fs->lock.  Doubles the bucket array once it holds as many inodes. */
static void hash_grow(struct fsrv *fs)
{
	if (fs->icount <= fs->hmask || fs->hmask + 1 >= FSRV_MAX_INODES)
		return;
	uint32_t nmask = fs->hmask * 2 + 1;
	uint32_t *nh = calloc((size_t)nmask + 1, sizeof(*nh));
	if (!nh)
		return; /* longer chains, still correct */
	for (uint32_t b = 0; b <= fs->hmask; b++) {
		uint32_t s = fs->hash[b];
		while (s) {
			struct fsrv_inode *i = islot(fs, s);
			uint32_t next = i->hnext;
			uint32_t nb = fsrv_hash_of(i->dev, i->ino) & nmask;
			i->hnext = nh[nb];
			nh[nb] = s;
			s = next;
		}
	}
	free(fs->hash);
	fs->hash = nh;
	fs->hmask = nmask;
}

static void hash_remove(struct fsrv *fs, uint32_t slot)
{
	struct fsrv_inode *i = islot(fs, slot);
	uint32_t *p = &fs->hash[fsrv_hash_of(i->dev, i->ino) & fs->hmask];
	while (*p && *p != slot)
		p = &islot(fs, *p)->hnext;
	if (*p)
		*p = i->hnext;
	i->hnext = 0;
}

/* Under fs->lock: a free inode slot, or 0 when the table is full. */
static uint32_t islot_alloc(struct fsrv *fs)
{
	if (fs->ifree) {
		uint32_t s = fs->ifree;
		fs->ifree = islot(fs, s)->fnext;
		return s;
	}
	if (fs->islots >= FSRV_MAX_INODES)
		return 0;
	uint32_t c = fs->islots / FSRV_CHUNK;
	if (!fs->itab[c]) {
		struct fsrv_inode *chunk = calloc(FSRV_CHUNK, sizeof(*chunk));
		if (!chunk)
			return 0;
		for (unsigned k = 0; k < FSRV_CHUNK; k++)
			pthread_mutex_init(&chunk[k].id_lock, NULL);
		fs->itab[c] = chunk;
	}
	return fs->islots++;
}

/*
 * Under fs->lock: drop the inode if nothing refers to it; returns its fd to
 * close, and in *rec its identity record as known (for fsrv_idc_remember,
 * outside the lock; nobody else can hold id_lock of an unreferenced inode).
 */
static int inode_reap(struct fsrv *fs, struct fsrv_inode *ino, struct fsrv_idc *rec)
{
	uint32_t slot = SLOT(ino->nodeid);
	memset(rec, 0, sizeof(*rec));
	if (ino->refs || ino->nlookup || ino->nodeid == FUSE_ROOT_ID)
		return -1;
	int fd = ino->fd;
	if (ino->id_loaded && (ino->id_csec || ino->id_cnsec))
		*rec = (struct fsrv_idc){.dev = (uint64_t)ino->dev,
					 .ino = (uint64_t)ino->ino,
					 .ctime_sec = ino->id_csec,
					 .ctime_nsec = ino->id_cnsec,
					 .set = (uint32_t)ino->id_set,
					 .uid = ino->id_uid,
					 .gid = ino->id_gid,
					 .mode = ino->id_mode};
	ino->id_csec = ino->id_cnsec = 0;
	hash_remove(fs, slot);
	ino->nodeid = 0;
	ino->fd = -1;
	ino->id_loaded = ino->id_set = 0;
	ino->fnext = fs->ifree;
	fs->ifree = slot;
	fs->icount--;
	return fd;
}

/* Under fs->lock: the inode a nodeid names, or NULL. */
static struct fsrv_inode *inode_find(struct fsrv *fs, uint64_t nodeid)
{
	uint32_t s = SLOT(nodeid);
	if (s == 0 || s >= fs->islots)
		return NULL;
	struct fsrv_inode *i = islot(fs, s);
	return i->nodeid == nodeid ? i : NULL;
}

struct fsrv_inode *fsrv_inode_get(struct fsrv *fs, uint64_t nodeid)
{
	pthread_mutex_lock(&fs->lock);
	struct fsrv_inode *i = inode_find(fs, nodeid);
	/* A forgotten inode still held by a request in flight is gone to the guest. */
	if (i && (i->nlookup || nodeid == FUSE_ROOT_ID))
		i->refs++;
	else
		i = NULL;
	pthread_mutex_unlock(&fs->lock);
	return i;
}

void fsrv_inode_ref(struct fsrv *fs, struct fsrv_inode *ino)
{
	pthread_mutex_lock(&fs->lock);
	ino->refs++;
	pthread_mutex_unlock(&fs->lock);
}

void fsrv_inode_put(struct fsrv *fs, struct fsrv_inode *ino)
{
	if (!ino)
		return;
	pthread_mutex_lock(&fs->lock);
	ino->refs--;
	struct fsrv_idc rec;
	int fd = inode_reap(fs, ino, &rec);
	pthread_mutex_unlock(&fs->lock);
	if (fd >= 0) {
		fsrv_idc_remember(fs, fd, &rec);
		close(fd);
	}
}

/*
 * Enter a looked-up host inode: takes ownership of fd (an O_PATH fd for it),
 * adds one to nlookup and one ref (the caller puts it).  An inode already in
 * the table keeps its nodeid and the new fd is closed.
 */
int fsrv_inode_insert(struct fsrv *fs, int fd, const struct stat *st, struct fsrv_inode **out)
{
	pthread_mutex_lock(&fs->lock);
	uint32_t s = fs->hash[fsrv_hash_of(st->st_dev, st->st_ino) & fs->hmask];
	while (s) {
		struct fsrv_inode *i = islot(fs, s);
		if (i->dev == st->st_dev && i->ino == st->st_ino)
			break;
		s = i->hnext;
	}
	if (s) {
		struct fsrv_inode *i = islot(fs, s);
		i->nlookup++;
		i->refs++;
		pthread_mutex_unlock(&fs->lock);
		close(fd);
		*out = i;
		return 0;
	}
	uint32_t slot = islot_alloc(fs);
	if (!slot) {
		pthread_mutex_unlock(&fs->lock);
		close(fd);
		return -ENFILE;
	}
	struct fsrv_inode *i = islot(fs, slot);
	/* Root is created first, in slot 1, and keeps generation 0. */
	if (slot != FUSE_ROOT_ID && ++i->gen == 0)
		i->gen = 1;
	i->nodeid = (uint64_t)i->gen << 32 | slot;
	i->fd = fd;
	i->type = st->st_mode & S_IFMT;
	i->dev = st->st_dev;
	i->ino = st->st_ino;
	i->nlookup = 1;
	i->refs = 1;
	uint32_t b = fsrv_hash_of(st->st_dev, st->st_ino) & fs->hmask;
	i->hnext = fs->hash[b];
	fs->hash[b] = slot;
	fs->icount++;
	hash_grow(fs);
	pthread_mutex_unlock(&fs->lock);
	*out = i;
	return 0;
}

void fsrv_inode_forget(struct fsrv *fs, uint64_t nodeid, uint64_t n)
{
	pthread_mutex_lock(&fs->lock);
	struct fsrv_inode *i = inode_find(fs, nodeid);
	int fd = -1;
	struct fsrv_idc rec;
	if (i) {
		i->nlookup -= n < i->nlookup ? n : i->nlookup;
		fd = inode_reap(fs, i, &rec);
	}
	pthread_mutex_unlock(&fs->lock);
	if (fd >= 0) {
		fsrv_idc_remember(fs, fd, &rec);
		close(fd);
	}
}

/* ---- handles ---- */

static uint32_t hslot_alloc(struct fsrv *fs)
{
	if (fs->hfree) {
		uint32_t s = fs->hfree;
		fs->hfree = hslot(fs, s)->fnext;
		return s;
	}
	if (fs->hslots >= FSRV_MAX_HANDLES)
		return 0;
	uint32_t c = fs->hslots / FSRV_CHUNK;
	if (!fs->htab[c]) {
		struct fsrv_handle *chunk = calloc(FSRV_CHUNK, sizeof(*chunk));
		if (!chunk)
			return 0;
		for (unsigned k = 0; k < FSRV_CHUNK; k++)
			pthread_mutex_init(&chunk[k].lock, NULL);
		fs->htab[c] = chunk;
	}
	return fs->hslots++;
}

/* Takes ownership of fd; the handle takes its own ref on ino. */
int fsrv_handle_new(struct fsrv *fs, int fd, struct fsrv_inode *ino, int dir, int writable,
		    uint64_t *fh)
{
	pthread_mutex_lock(&fs->lock);
	uint32_t s = hslot_alloc(fs);
	if (!s) {
		pthread_mutex_unlock(&fs->lock);
		close(fd);
		return -ENFILE;
	}
	struct fsrv_handle *h = hslot(fs, s);
	if (++h->gen == 0)
		h->gen = 1;
	h->fh = (uint64_t)h->gen << 32 | s;
	h->fd = fd;
	h->dir = dir;
	h->writable = writable;
	h->locked = 0;
	h->lock_owner = 0;
	h->owners_many = 0;
	h->live = 1;
	h->refs = 0;
	h->inode = ino;
	ino->refs++;
	fs->hcount++;
	*fh = h->fh;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

struct fsrv_handle *fsrv_handle_get(struct fsrv *fs, uint64_t fh)
{
	uint32_t s = SLOT(fh);
	struct fsrv_handle *h = NULL;
	pthread_mutex_lock(&fs->lock);
	if (s && s < fs->hslots) {
		h = hslot(fs, s);
		if (h->fh == fh && h->live)
			h->refs++;
		else
			h = NULL;
	}
	pthread_mutex_unlock(&fs->lock);
	return h;
}

/* Under fs->lock: free a released handle nothing uses any more. */
static int handle_reap(struct fsrv *fs, struct fsrv_handle *h, struct fsrv_inode **ino)
{
	if (h->live || h->refs || !h->fh)
		return -1;
	int fd = h->fd;
	uint32_t s = SLOT(h->fh);
	*ino = h->inode;
	free(h->dbuf);
	h->dbuf = NULL;
	h->dpos = h->dlen = 0;
	h->dnext = 0;
	h->dvalid = 0;
	h->fh = 0;
	h->fd = -1;
	h->inode = NULL;
	h->fnext = fs->hfree;
	fs->hfree = s;
	fs->hcount--;
	return fd;
}

void fsrv_handle_put(struct fsrv *fs, struct fsrv_handle *h)
{
	struct fsrv_inode *ino = NULL;
	pthread_mutex_lock(&fs->lock);
	h->refs--;
	int fd = handle_reap(fs, h, &ino);
	pthread_mutex_unlock(&fs->lock);
	if (fd >= 0) {
		close(fd);
		fsrv_inode_put(fs, ino);
	}
}

int fsrv_handle_release(struct fsrv *fs, uint64_t fh)
{
	uint32_t s = SLOT(fh);
	struct fsrv_inode *ino = NULL;
	int fd = -1;
	pthread_mutex_lock(&fs->lock);
	struct fsrv_handle *h = s && s < fs->hslots ? hslot(fs, s) : NULL;
	if (!h || h->fh != fh || !h->live) {
		pthread_mutex_unlock(&fs->lock);
		return -EBADF;
	}
	h->live = 0;
	fd = handle_reap(fs, h, &ino);
	pthread_mutex_unlock(&fs->lock);
	if (fd >= 0) {
		close(fd);
		fsrv_inode_put(fs, ino);
	}
	return 0;
}

/* DESTROY: the guest let go of everything; in-flight requests finish first. */
void fsrv_forget_all(struct fsrv *fs)
{
	for (uint32_t s = 1;; s++) {
		struct fsrv_inode *ino = NULL;
		pthread_mutex_lock(&fs->lock);
		if (s >= fs->hslots) {
			pthread_mutex_unlock(&fs->lock);
			break;
		}
		struct fsrv_handle *h = hslot(fs, s);
		h->live = 0;
		int fd = handle_reap(fs, h, &ino);
		pthread_mutex_unlock(&fs->lock);
		if (fd >= 0) {
			close(fd);
			fsrv_inode_put(fs, ino);
		}
	}
	for (uint32_t s = 2;; s++) {
		pthread_mutex_lock(&fs->lock);
		if (s >= fs->islots) {
			pthread_mutex_unlock(&fs->lock);
			break;
		}
		struct fsrv_inode *i = islot(fs, s);
		int fd = -1;
		struct fsrv_idc rec;
		if (i->nodeid) {
			i->nlookup = 0;
			fd = inode_reap(fs, i, &rec);
		}
		pthread_mutex_unlock(&fs->lock);
		if (fd >= 0)
			close(fd);
	}
}
