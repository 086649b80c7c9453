/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The images of a store as people see them (msb image ls / inspect / rm /
 * prune): names resolved to manifest digests, which sandboxes use which
 * image, and removing what nothing uses.
 *
 * What keeps an image alive: a pin (refs.json), or a sandbox of the same
 * MSB_HOME (the store's parent directory) whose image.digest names its
 * manifest or whose root.image names a root image.  Removing a pin never
 * breaks a sandbox: its blobs and root image stay until prune finds nothing
 * that uses them.
 *
 * Prune and the writers of the store: prune holds the store lock "prune"
 * for its whole run.  An import that publishes blobs before it pins them
 * (load, pull) holds msb_image_prune_guard meanwhile, so prune waits for it;
 * and prune keeps what is younger than min_age seconds or locked by a
 * writer (locks/<hex>.lock, locks/root-<hex>.lock, images/.<hex>.lock), so a
 * writer that takes no guard is safe for a minute after each blob.
 */
#ifndef MSB_IMAGE_CATALOG_H
#define MSB_IMAGE_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include <msb/msb-error.h>

#include "store.h"

/*
 * What `name` names: a reference pinned in the store (its pin key as
 * msb_image_pin_key gives it for linux/amd64, or a pin's exact key, such as
 * "...:tag#linux/arm64"), a digest "sha256:<hex>" of a manifest in the store
 * (also as "name@sha256:<hex>"), or an unambiguous prefix of at least 4 hex
 * digits ("sha256:" optional) of a pinned digest.  digest receives the
 * manifest digest; *key (if key is not NULL) the pin key when name was a
 * pinned reference, else NULL (malloc'd).  -ENOENT: nothing matches,
 * -ENOTUNIQ: an ambiguous prefix, -EINVAL: not a reference or digest.
 */
int msb_image_resolve(const struct msb_store *s, const char *name, char digest[72], char **key,
		      struct msb_error *err);

struct msb_image_user {
	char *sandbox;	  /* its name */
	char digest[72];  /* its image.digest, "" when it has none (a --rootfs sandbox) */
	char *root_image; /* its root.image, NULL when it has none */
};

/* Every sandbox of the store's MSB_HOME, sorted by name, with what it records. */
int msb_image_users(const struct msb_store *s, struct msb_image_user **users, size_t *n,
		    struct msb_error *err);
void msb_image_users_free(struct msb_image_user *users, size_t n);

/* Sum of the sizes of an image's manifest, config and layers, as recorded in
 * the store; -ENOENT when one of them is missing. */
int msb_image_size(const struct msb_store *s, const char *digest, uint64_t *bytes,
		   struct msb_error *err);

/*
 * Hold off prune (a shared flock on the store's "prune" lock, which prune
 * takes exclusively): for an import between its first published blob and
 * its pins.  Returns an fd for msb_store_unlock.
 */
int msb_image_prune_guard(const struct msb_store *s, struct msb_error *err);

enum msb_prune_kind { MSB_PRUNE_BLOB, MSB_PRUNE_DIFFID, MSB_PRUNE_ROOT };

struct msb_prune_item {
	enum msb_prune_kind kind;
	char *name; /* a blob's or diff_id entry's digest; a root image's path */
	uint64_t bytes;
};

struct msb_prune_result {
	struct msb_prune_item *items;
	size_t n;
	uint64_t bytes; /* freed, in all */
	size_t kept;	/* unused entries kept for being younger than min_age or locked */
};

/*
 * Remove blobs, diff_id records and root images (images/roots/<hex>.erofs,
 * images/<treehash>.erofs) that no pin and no sandbox uses (see above), except
 * those younger than min_age seconds (msb uses 60) or locked by a writer.
 * res lists what was removed (free with msb_prune_result_free); it is filled
 * as far as prune got even when it fails.
 */
int msb_image_prune(const struct msb_store *s, int min_age, struct msb_prune_result *res,
		    struct msb_error *err);
void msb_prune_result_free(struct msb_prune_result *res);

#endif /* MSB_IMAGE_CATALOG_H */
