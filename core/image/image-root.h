/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Images in the store as sandboxes use them: a platform manifest and its
 * config read back (and re-verified) from the store, the read-only root
 * image built from its layers, and the config's defaults merged into a
 * sandbox's spec.
 */
#ifndef MSB_IMAGE_IMAGE_ROOT_H
#define MSB_IMAGE_IMAGE_ROOT_H

#include <msb/msb-error.h>

#include "manifest.h"
#include "store.h"

struct msb_spec;
struct msb_state;
struct msb_pull_opts;

struct msb_image {
	char digest[72]; /* the platform manifest's */
	struct msb_manifest manifest;
	struct msb_image_config config;
	char chain_id[72]; /* OCI ChainID of the layers: the root image's key */
};

/*
 * Read and parse the manifest `digest` and its config from the store; every
 * layer must be there too, and the config's diff_ids must pair with the
 * layers.  -ENOENT (one line) when something is missing.
 */
int msb_image_open(const struct msb_store *s, const char *digest, struct msb_image *img,
		   struct msb_error *err);
void msb_image_close(struct msb_image *img);

/*
 * The erofs root image of img (images/roots/<chain id hex>.erofs), built on
 * first use under its lock: the layers applied in order into a fresh tree in
 * images/tmp (each one's diff_id checked against the config), mkfs.erofs,
 * published by rename; the tree is removed either way.  *path is malloc'd.
 */
int msb_image_root(const struct msb_store *s, const struct msb_image *img, char **path,
		   struct msb_error *err);

/*
 * Docker's rules for a sandbox made from img: the command is Entrypoint +
 * (the spec's command, else Cmd); Env comes first and the spec's -e
 * override it; WorkingDir and User apply unless the spec sets them.
 */
int msb_image_apply_config(const struct msb_image *img, struct msb_spec *spec,
			   struct msb_error *err);

/*
 * Make sandbox `name`'s disks when its spec names an image: pull it as
 * `o` says, build its root, record it, merge its config into the spec
 * (rewritten to the state), create the upper.
 */
int msb_image_prepare(struct msb_state *st, const char *name, struct msb_spec *spec,
		      const struct msb_pull_opts *o, struct msb_error *err);

#endif
