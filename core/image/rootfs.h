/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Root filesystems: a directory tree becomes one read-only erofs image,
 * cached by the tree's content and shared by every sandbox made from it;
 * each sandbox gets its own sparse ext4 upper layer.  The guest agent joins
 * them with overlayfs, so writes never touch the shared image.
 */
#ifndef MSB_CORE_ROOTFS_H
#define MSB_CORE_ROOTFS_H

#include <stddef.h>
#include <stdint.h>

#include <msb/msb-error.h>

/* Size of a new sandbox's upper layer (sparse: it costs what is written). */
#define MSB_UPPER_SIZE (8ull << 30)
/* Tree walks refuse anything deeper or larger: a hostile tree cannot hang msb. */
#define MSB_TREE_DEPTH_MAX   256
#define MSB_TREE_ENTRIES_MAX (4u << 20)

/*
 * The sha256 of a directory tree: every entry's relative path, type, mode,
 * owner, size, device number, symlink target and file content, in sorted
 * order.  hex receives 64 hex digits and a NUL.
 */
int msb_tree_hash(const char *dir, char hex[65], struct msb_error *err);

/*
 * The erofs image of dir under images_dir ("<hash>.erofs"), built with
 * mkfs.erofs on first use (under a lock, published atomically).  *path is
 * malloc'd.
 */
int msb_rootfs_image(const char *dir, const char *images_dir, char **path, struct msb_error *err);

/*
 * Create a sparse, empty ext4 file of `bytes` at path: a copy of the data
 * extents of a template formatted once per size (images_dir/
 * upper-<bytes>.ext4), or with mkfs.ext4 directly when images_dir is NULL.
 */
int msb_rootfs_upper(const char *path, uint64_t bytes, const char *images_dir,
		     struct msb_error *err);

struct msb_spec;
struct msb_state;
/*
 * Make sandbox `name`'s disks before its first boot, in the CLI's process:
 * the shared root image (built from spec->rootfs on first use), recorded in
 * the sandbox's MSB_ROOT_IMAGE_FILE, and its empty upper disk.  The monitor
 * process only opens what this made, so it never links the image code.
 */
/* Record a sandbox's root image (MSB_ROOT_IMAGE_FILE) and create its upper if missing. */
int msb_rootfs_record(struct msb_state *st, const char *name, const char *root_image,
		      struct msb_error *err);
int msb_rootfs_prepare(struct msb_state *st, const char *name, const struct msb_spec *spec,
		       struct msb_error *err);

/* Run argv (no shell), capturing its output into err on failure. */
int msb_run_tool(char *const argv[], struct msb_error *err);

#endif
