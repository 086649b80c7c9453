/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Images in and out of the store as files (msb image load / save).
 *
 * Formats read:
 *   - an OCI image layout directory (oci-layout, index.json, blobs/sha256/<hex>);
 *   - an OCI archive: a tar of such a layout, plain, gzip, zstd, xz or bzip2;
 *   - a docker-archive (`docker save`): manifest.json [{Config, RepoTags,
 *     Layers}], the config JSON and uncompressed layer tars (symlinked
 *     duplicates included), as a tar or unpacked into a directory.  Docker 25+
 *     writes an OCI layout with a manifest.json beside it; it is read as OCI.
 * Format written: an OCI image layout, as a directory or an uncompressed tar.
 *
 * (Named image-archive.h, not archive.h: core/image is on the include path
 * of every file that includes libarchive's <archive.h>.)
 *
 * The input is hostile, as a registry's answers are:
 *   - Tar entries are only ever names in a table, never extracted: a name
 *     that is absolute or has a ".." component refuses the whole archive, a
 *     symlink or hard link is an alias resolved inside the archive's names
 *     (at most 8 hops; an escaping target is refused), duplicates are
 *     refused, and there are at most MSB_ARCHIVE_ENTRIES_MAX entries.
 *   - Only JSON documents are held in memory, each within manifest.h's
 *     limits and all together within MSB_ARCHIVE_JSON_MAX; layers stream
 *     straight from the archive into the store's verifying writers.  A tar is
 *     read twice (once for its JSON, once for the layers it turned out to
 *     need), so it must be a regular file, not a pipe.
 *   - Directory entries are opened with openat2(RESOLVE_BENEATH |
 *     RESOLVE_NO_MAGICLINKS): no name or symlink in the layout reaches a
 *     file outside it.
 *   - Every blob is checked against its digest and size before it is
 *     published (the store's writers); each document is checked before it is
 *     parsed.  A docker-archive has no layer digests: each layer's is its
 *     config's diff_id (its tar is uncompressed), and the writer refuses a
 *     layer whose bytes do not hash to it.
 */
#ifndef MSB_IMAGE_ARCHIVE_H
#define MSB_IMAGE_ARCHIVE_H

#include <stddef.h>

#include <msb/msb-error.h>

#include "store.h"

#define MSB_ARCHIVE_ENTRIES_MAX 100000u	    /* entries of one tar */
#define MSB_ARCHIVE_JSON_MAX	(64u << 20) /* bytes of JSON held from one tar */

/*
 * Import every image of the layout or archive at `path` into the store:
 * nested indexes resolved to linux/amd64 (other platforms' entries are
 * skipped), the chosen manifest, its config and its layers imported, and
 * each image pinned under its names.
 *
 * Names (canonical pin keys, as msb_image_pin_key gives for linux/amd64):
 * an index entry's "io.containerd.image.name" annotation, else its
 * "org.opencontainers.image.ref.name" when that is a full reference (has a
 * "/", ":" or "@"; a bare tag like "latest" is not), else a docker-archive's
 * RepoTags.  Entries of one manifest digest are one image with all their
 * names.  `tag` (may be NULL) names the one image without a name, or is added
 * to the names of the only image.  An image left without a name is an error
 * asking for --tag.
 *
 * On success *refs (malloc'd, each string too; free with
 * msb_image_load_free) holds the names pinned, in order.  On failure nothing
 * is pinned; blobs already verified and published may stay (prune removes
 * them).  Codes: -EBADMSG a blob whose digest or size is wrong (the message
 * names it), -EINVAL a malformed input or hostile tar entry, -E2BIG over a
 * limit, -ENOENT a missing blob or no linux/amd64 image, -ENOTSUP a format
 * msb does not read, or the errno of a failed system call.
 */
int msb_image_load(const struct msb_store *s, const char *path, const char *tag, char ***refs,
		   size_t *nrefs, struct msb_error *err);
void msb_image_load_free(char **refs, size_t n);

/*
 * Write the images `refs` names (references or digests, as
 * msb_image_resolve takes them) as an OCI image layout: a directory when
 * `out` does not end in ".tar" (it must not exist, or be empty), else an
 * uncompressed tar of one (replaced if it exists).  index.json gets one entry
 * per name, annotated with "org.opencontainers.image.ref.name" (the tag) and
 * "io.containerd.image.name" (the canonical name); a digest gets an entry
 * without names.  Written beside `out` under a temporary name and renamed
 * into place: `out` is whole or untouched.
 */
int msb_image_save(const struct msb_store *s, const char *const *refs, size_t n, const char *out,
		   struct msb_error *err);

#endif /* MSB_IMAGE_ARCHIVE_H */
