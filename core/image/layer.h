/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI layer applier: one image layer (a tar stream, plain or compressed)
 * unpacked onto the directory tree that becomes an image's root filesystem.
 *
 * Layers come from registries we do not trust, so this is a security
 * boundary.  What it defends against, and how:
 *
 *  - Escaping the root.  Every parent path is resolved by the kernel with
 *    openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
 *    relative to the root, so a symlink in the path (absolute or "..") is
 *    resolved inside the root; the final component is never followed (an
 *    existing entry is removed first and the new one is made with
 *    O_EXCL | O_NOFOLLOW, mkdirat, symlinkat, linkat without
 *    AT_SYMLINK_FOLLOW).  Names are never joined or looked up as strings
 *    against the host.  There is no fallback without openat2 (Linux 5.6+).
 *  - Hostile names.  A leading "/" and "." components are dropped (normal in
 *    some tars); a name with a ".." component is refused (the entry is
 *    skipped and counted in `neutralised`); a name longer than PATH_MAX or a
 *    component longer than NAME_MAX fails the layer.  Names are bytes: they
 *    need not be UTF-8 (msb runs in the C locale, where libarchive keeps
 *    them as they are).
 *  - Hard links.  The target is resolved like any other path (inside the
 *    root), the exact inode is linked and a final symlink is linked as the
 *    symlink itself, never followed; a target with ".." or one that is a
 *    directory is refused (skipped, `neutralised`); a missing target fails
 *    the layer.
 *  - Device nodes.  Character and block devices are never created: skipped
 *    and counted in `skipped_devices`.  Other types tar can carry (sockets,
 *    GNU volume headers, ...) are skipped and counted in `neutralised`.
 *  - Bombs.  At most `max_entries` entries (parent directories the layer
 *    implies but does not list count too) and `max_bytes` of file data; a
 *    sparse file is written sparse (pwrite at each data block's offset, then
 *    ftruncate to its size) and its holes do not count.  More than one layer
 *    of compression (a gzip of a gzip) is refused.  Memory is bounded: the
 *    stream is read in fixed buffers; the only structure that grows is one
 *    16-byte record per entry of the layer (see opaque directories below).
 *  - Decompression runs in-process with native libraries only (gzip, zstd,
 *    bzip2, xz, chosen by the stream's content, not its media type); no
 *    external decompressor is ever started.
 *
 * Semantics (OCI image-spec layer.md, and Docker's behaviour where the spec
 * is silent):
 *
 *  - Regular files, directories, symlinks, hard links and FIFOs, with mode
 *    (setuid, setgid and sticky included), owner (so the caller needs
 *    CAP_CHOWN, CAP_FOWNER and CAP_SETFCAP: it runs as root), mtime and
 *    atime (atime = mtime when the tar has none).  Of the extended
 *    attributes only security.capability is applied (to regular files);
 *    every other xattr, ACLs and file flags are ignored.  A directory keeps
 *    the times it was given even when entries are later added to it or
 *    removed from it.
 *  - An existing entry is replaced, except that a directory over an
 *    existing directory keeps its contents and takes the new metadata.  A
 *    "./" entry sets the root directory's metadata.
 *  - Whiteouts: "dir/.wh.NAME" removes dir/NAME, recursively, as lower
 *    layers left it; "dir/.wh..wh..opq" removes everything lower layers put
 *    in dir.  Both apply only to lower layers, so the marker may come before
 *    or after entries of the same layer (which survive).  Other ".wh..wh."
 *    names (aufs metadata) are ignored; a whiteout naming "", "." or ".."
 *    is refused, and so is an entry below a ".wh." name.  Nothing named
 *    ".wh.*" is ever created.  Which entries came from
 *    this layer is known from a set of (directory inode, name) records kept
 *    while the layer is applied.
 *  - The tar stream ends at its end-of-archive blocks; whatever follows
 *    them is read (and hashed) but not applied.
 *
 * On failure the tree is left partly applied; the caller discards it.
 */
#ifndef MSB_IMAGE_LAYER_H
#define MSB_IMAGE_LAYER_H

#include <stdint.h>

#include <msb/msb-error.h>

/* The limits used when `lim` is NULL, or for a field left 0. */
#define MSB_LAYER_MAX_ENTRIES_DEFAULT 1000000ull
#define MSB_LAYER_MAX_BYTES_DEFAULT   (64ull << 30)

struct msb_layer_limits {
	uint64_t max_entries; /* entries in one layer (tar bomb), e.g. 1,000,000 */
	uint64_t max_bytes;   /* total bytes of file data written (apparent sizes of regular files,
				 holes of sparse files excluded), e.g. 64 GiB */
	uint64_t max_file_size; /* apparent size of one file, holes included (0: no limit): a
				   huge sparse file costs nothing here but a full read later */
};

struct msb_layer_stats {
	/* entries: tar entries read; bytes: file data written; skipped_devices:
	 * device nodes not created; neutralised: entries changed or refused for
	 * safety. */
	uint64_t entries, bytes, skipped_devices, neutralised;
	/* "sha256:<hex>" of the UNCOMPRESSED tar stream, the whole stream
	 * including anything after the end-of-archive blocks; "" unless the
	 * layer was applied. */
	char diff_id[72];
};

/*
 * Apply the layer read from layer_fd (read sequentially from its current
 * offset to EOF, never seeked) onto the tree at root_fd (an O_PATH or
 * O_DIRECTORY fd).  lim may be NULL for the defaults; st is always filled as
 * far as the layer got.
 *
 * Returns 0, or a negative errno with err set to one line naming the entry
 * and the reason: -E2BIG past max_entries or max_bytes (the message names the
 * limit), -EINVAL for input that is empty, not a tar, corrupt or compressed
 * twice, -ENAMETOOLONG for an over-long name, -ENOENT for a hard link to a
 * missing target, -ENOTDIR where a parent is not a directory, -ELOOP for a
 * tree nested too deeply to remove, or the errno of a failed system call.
 */
int msb_layer_apply(int root_fd, int layer_fd, const struct msb_layer_limits *lim,
		    struct msb_layer_stats *st, struct msb_error *err);

#endif
