/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image store under MSB_HOME/images: content-addressed, shared by every
 * sandbox, safe under concurrent msb processes.
 *
 *   images/blobs/sha256/<hex>     verified blobs (manifests, configs, layers), read-only
 *   images/tmp/                   downloads and builds in progress (removed on failure;
 *                                 leftovers of dead processes are swept)
 *   images/locks/<hex>.lock       flock: one writer per blob or per root image
 *                                 (msb_store_lock also takes a plain name: "<name>.lock")
 *   images/diffids/<hex>          a layer blob's diff_id, once computed
 *   images/refs.json              pins: canonical reference -> manifest digest
 *   images/roots/<hex>.erofs      root images built from an image's layers
 *   images/<treehash>.erofs       root images built from --rootfs trees
 *
 * A blob is written to images/tmp, its sha256 and size checked against the
 * descriptor while it streams, fsync'd, then renamed into place: the store
 * never holds a half-written or unverified blob.  Writers of one digest are
 * serialised by its lock, so concurrent pulls of one image download it once.
 */
#ifndef MSB_IMAGE_STORE_H
#define MSB_IMAGE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <msb/msb-error.h>

struct msb_store {
	char *dir; /* MSB_HOME/images */
	int dirfd;
};

/* Open (creating as needed) the store of the state home (NULL: default). */
int msb_store_open(const char *home, struct msb_store *s, struct msb_error *err);
void msb_store_close(struct msb_store *s);

/* 1 if a verified blob with this digest is present, else 0. */
int msb_store_has(const struct msb_store *s, const char *digest);
/* "<dir>/blobs/sha256/<hex>" into buf. */
int msb_store_blob_path(const struct msb_store *s, const char *digest, char *buf, size_t len);
/* Open a blob for reading (O_RDONLY|O_CLOEXEC fd), -ENOENT if absent. */
int msb_store_blob_open(const struct msb_store *s, const char *digest, struct msb_error *err);
/*
 * Read a whole blob of at most max bytes (manifests, configs), re-checking
 * its digest; *buf is malloc'd and NUL-terminated.  -E2BIG over max;
 * -EBADMSG if the bytes no longer match (the blob is then removed, so that
 * the next pull fetches it again).
 */
int msb_store_blob_read(const struct msb_store *s, const char *digest, size_t max, uint8_t **buf,
			size_t *len, struct msb_error *err);

/*
 * Lock a digest (blob or root image) for writing: blocks until no other
 * process holds it.  Returns an fd to pass to msb_store_unlock.
 */
int msb_store_lock(const struct msb_store *s, const char *digest, struct msb_error *err);
void msb_store_unlock(int lock_fd);

/* Streaming a blob in: checked as it comes, published only whole and verified. */
struct msb_blob_writer;
/* size < 0: unknown (then only the digest is checked). */
int msb_blob_writer_open(const struct msb_store *s, const char *digest, int64_t size,
			 struct msb_blob_writer **w, struct msb_error *err);
/* Bytes past the expected size are an error at once. */
int msb_blob_writer_write(struct msb_blob_writer *w, const void *buf, size_t len,
			  struct msb_error *err);
/* Restart from zero (a retried download without ranges). */
int msb_blob_writer_reset(struct msb_blob_writer *w, struct msb_error *err);
uint64_t msb_blob_writer_written(const struct msb_blob_writer *w);
/* Check size and digest, fsync, publish; frees w either way.  A mismatch is
 * -EBADMSG naming the blob, the expected and the actual digest or size. */
int msb_blob_writer_commit(struct msb_blob_writer *w, struct msb_error *err);
/* Discard what was written; frees w. */
void msb_blob_writer_abort(struct msb_blob_writer *w);
/* Store bytes in memory as a blob (verified like a stream). */
int msb_store_put(const struct msb_store *s, const char *digest, const void *buf, size_t len,
		  struct msb_error *err);

/* Pins: canonical reference -> manifest digest ("sha256:..."), under a lock. */
int msb_store_pin_get(const struct msb_store *s, const char *ref, char digest[72],
		      struct msb_error *err); /* -ENOENT when not pinned */
int msb_store_pin_set(const struct msb_store *s, const char *ref, const char *digest,
		      struct msb_error *err);
int msb_store_pin_remove(const struct msb_store *s, const char *ref, struct msb_error *err);
/* All pins: parallel arrays, each string and the arrays malloc'd. */
int msb_store_pins(const struct msb_store *s, char ***refs, char ***digests, size_t *n,
		   struct msb_error *err);

/* A fresh private directory under images/tmp for work in progress.  It stays
 * locked (so no sweep removes it) until this process exits; its owner
 * removes it when done. */
int msb_store_tmpdir(const struct msb_store *s, char *buf, size_t len, struct msb_error *err);

/*
 * Additions (not in the first draft of this header):
 */
/* Name the blob in the writer's error messages ("layer sha256:... from host/repo");
 * the default is "blob sha256:...". */
void msb_blob_writer_label(struct msb_blob_writer *w, const char *label);
/*
 * Remove what dead processes left in images/tmp: entries nobody holds a lock
 * on and not modified for min_age seconds (msb_store_open sweeps with 60).
 * Returns how many entries were removed.
 */
int msb_store_sweep(const struct msb_store *s, int min_age);
/*
 * A layer's diff_id (sha256 of its uncompressed tar), recorded once computed
 * from the verified blob (images/diffids/<hex>), so an image sharing the
 * layer need not decompress it again.  get: 0, or -ENOENT if not recorded.
 */
int msb_store_diffid_get(const struct msb_store *s, const char *digest, char diff_id[72]);
int msb_store_diffid_set(const struct msb_store *s, const char *digest, const char *diff_id,
			 struct msb_error *err);

#endif
