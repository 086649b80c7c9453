/* SPDX-License-Identifier: Apache-2.0 */
#include "image-root.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "layer.h"
#include "pull.h"
#include "ref.h"
#include "rootfs.h"
#include "sandbox.h"
#include "spec.h"
#include "state.h"

/* The largest file an image's root may hold (its apparent size). */
#define MSB_IMAGE_FILE_MAX (64ull << 30)

void msb_image_close(struct msb_image *img)
{
	msb_manifest_free(&img->manifest);
	msb_image_config_free(&img->config);
	memset(img, 0, sizeof(*img));
}

int msb_image_open(const struct msb_store *s, const char *digest, struct msb_image *img,
		   struct msb_error *err)
{
	memset(img, 0, sizeof(*img));
	uint8_t *buf = NULL;
	size_t len = 0;
	int r = msb_store_blob_read(s, digest, MSB_MANIFEST_MAX, &buf, &len, err);
	if (r < 0)
		return msb_error_prefix(err, "image manifest %s: ", digest), r;
	r = msb_manifest_parse(buf, len, &img->manifest, err);
	free(buf);
	if (r < 0)
		return r;
	snprintf(img->digest, sizeof(img->digest), "%s", digest);
	const struct msb_manifest *m = &img->manifest;
	if ((r = msb_store_blob_read(s, m->config.digest, MSB_CONFIG_MAX, &buf, &len, err)) < 0) {
		msb_error_prefix(err, "image %s: config: ", digest);
		goto fail;
	}
	r = msb_image_config_parse(buf, len, &img->config, err);
	free(buf);
	if (r < 0)
		goto fail;
	if (img->config.ndiff_ids != m->nlayers) {
		r = msb_error_set(
			err, -EINVAL,
			"image %s: %zu layers but the config lists %zu diff_ids (expected "
			"one per layer)",
			digest, m->nlayers, img->config.ndiff_ids);
		goto fail;
	}
	/* ChainID (OCI image spec, config.md): the root's key, shared by images
	 * with the same layers. */
	char chain[72];
	snprintf(chain, sizeof(chain), "%s", img->config.diff_ids[0]);
	for (size_t i = 0; i < m->nlayers; i++) {
		if (msb_media_kind(m->layers[i].media_type) == MSB_MEDIA_LAYER_FOREIGN) {
			r = msb_error_set(err, -ENOTSUP,
					  "image %s: layer %s is a foreign layer (not supported)",
					  digest, m->layers[i].digest);
			goto fail;
		}
		if (!msb_store_has(s, m->layers[i].digest)) {
			r = msb_error_set(err, -ENOENT, "image %s: layer %s is not in the store",
					  digest, m->layers[i].digest);
			goto fail;
		}
		if (i > 0) {
			char cat[160];
			snprintf(cat, sizeof(cat), "%s %s", chain, img->config.diff_ids[i]);
			msb_digest_of(cat, strlen(cat), chain);
		}
	}
	snprintf(img->chain_id, sizeof(img->chain_id), "%s", chain);
	return 0;
fail:
	msb_image_close(img);
	return r;
}

static int build_root(const struct msb_store *s, const struct msb_image *img, const char *out,
		      struct msb_error *err)
{
	char work[PATH_MAX], tree[PATH_MAX + 8], erofs[PATH_MAX + 16];
	int r = msb_store_tmpdir(s, work, sizeof(work), err);
	if (r < 0)
		return r;
	snprintf(tree, sizeof(tree), "%s/root", work);
	snprintf(erofs, sizeof(erofs), "%s/root.erofs", work);
	int root_fd = -1;
	if (mkdir(tree, 0755) < 0 || (root_fd = open(tree, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		r = msb_error_errno(err, -errno, "image root tree '%s'", tree);
		goto out;
	}
	const struct msb_manifest *m = &img->manifest;
	for (size_t i = 0; i < m->nlayers; i++) {
		const char *d = m->layers[i].digest;
		int fd = msb_store_blob_open(s, d, err);
		if (fd < 0) {
			r = fd;
			goto out;
		}
		struct msb_layer_stats st;
		/* mkfs.erofs reads every file whole, holes too: bound them. */
		const struct msb_layer_limits lim = {.max_file_size = MSB_IMAGE_FILE_MAX};
		r = msb_layer_apply(root_fd, fd, &lim, &st, err);
		close(fd);
		if (r < 0) {
			msb_error_prefix(err, "layer %s: ", d);
			goto out;
		}
		if (strcmp(st.diff_id, img->config.diff_ids[i]) != 0) {
			r = msb_error_set(err, -EBADMSG,
					  "layer %s: its content has diff_id %s, the image config "
					  "says %s",
					  d, st.diff_id, img->config.diff_ids[i]);
			goto out;
		}
	}
	/* As msb_rootfs_image: uncompressed, reproducible. */
	char *argv[] = {"mkfs.erofs", "--quiet", "-T0", "-x-1", erofs, tree, NULL};
	if ((r = msb_run_tool(argv, err)) < 0) {
		msb_error_prefix(err, "building the root image of %s: ", img->digest);
		goto out;
	}
	if (rename(erofs, out) < 0)
		r = msb_error_errno(err, -errno, "publishing '%s'", out);
out:
	if (root_fd >= 0)
		close(root_fd);
	msb_remove_tree_at(AT_FDCWD, work);
	return r;
}

int msb_image_root(const struct msb_store *s, const struct msb_image *img, char **path,
		   struct msb_error *err)
{
	char dir[PATH_MAX], out[PATH_MAX + 80];
	snprintf(dir, sizeof(dir), "%s/roots", s->dir);
	int r = msb_mkdir_p(dir, 0700);
	if (r < 0)
		return msb_error_errno(err, r, "images directory '%s'", dir);
	const char *hex = img->chain_id + 7;
	snprintf(out, sizeof(out), "%s/%s.erofs", dir, hex);
	if (access(out, R_OK) != 0) {
		char key[80];
		snprintf(key, sizeof(key), "root-%s", hex);
		int lk = msb_store_lock(s, key, err);
		if (lk < 0)
			return lk;
		r = access(out, R_OK) == 0 ? 0 : build_root(s, img, out, err);
		msb_store_unlock(lk);
		if (r < 0)
			return r;
	}
	*path = strdup(out);
	return *path ? 0 : msb_error_set(err, -ENOMEM, "out of memory");
}

static char *env_key_dup(const char *kv)
{
	return strndup(kv, strcspn(kv, "="));
}

static int strv_append(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 2) * sizeof(char *));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -ENOMEM;
	nv[++*n] = NULL;
	return 0;
}

int msb_image_apply_config(const struct msb_image *img, struct msb_spec *spec,
			   struct msb_error *err)
{
	const struct msb_image_config *c = &img->config;
	char **cmd = NULL, **env = NULL;
	size_t ncmd = 0, nenv = 0;
	int r = 0;
	for (size_t i = 0; r == 0 && c->has_entrypoint && i < c->nentrypoint; i++)
		r = strv_append(&cmd, &ncmd, c->entrypoint[i]);
	if (spec->ncommand)
		for (size_t i = 0; r == 0 && i < spec->ncommand; i++)
			r = strv_append(&cmd, &ncmd, spec->command[i]);
	else
		for (size_t i = 0; r == 0 && c->has_cmd && i < c->ncmd; i++)
			r = strv_append(&cmd, &ncmd, c->cmd[i]);
	/* The image's Env, unless the spec sets the same variable; then the spec's. */
	for (size_t i = 0; r == 0 && i < c->nenv; i++) {
		char *k = env_key_dup(c->env[i]);
		if (!k) {
			r = -ENOMEM;
			break;
		}
		size_t kl = strlen(k);
		int overridden = 0;
		for (size_t j = 0; j < spec->nenv && !overridden; j++)
			overridden = !strncmp(spec->env[j], k, kl) && spec->env[j][kl] == '=';
		free(k);
		if (!overridden)
			r = strv_append(&env, &nenv, c->env[i]);
	}
	for (size_t i = 0; r == 0 && i < spec->nenv; i++)
		r = strv_append(&env, &nenv, spec->env[i]);
	char *workdir = NULL, *user = NULL;
	if (r == 0 && !spec->workdir && c->workdir) {
		if (c->workdir[0] != '/') {
			r = msb_error_set(err, -EINVAL,
					  "image %s: WorkingDir '%.100s' is not absolute (expected "
					  "/PATH)",
					  img->digest, c->workdir);
			goto fail;
		}
		if (!(workdir = strdup(c->workdir)))
			r = -ENOMEM;
	}
	if (r == 0 && !spec->user && c->user && !(user = strdup(c->user)))
		r = -ENOMEM;
	if (r < 0) {
		r = msb_error_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < spec->ncommand; i++)
		free(spec->command[i]);
	free(spec->command);
	spec->command = cmd;
	spec->ncommand = ncmd;
	for (size_t i = 0; i < spec->nenv; i++)
		free(spec->env[i]);
	free(spec->env);
	spec->env = env;
	spec->nenv = nenv;
	if (workdir)
		spec->workdir = workdir;
	if (user)
		spec->user = user;
	return 0;
fail:
	for (size_t i = 0; i < ncmd; i++)
		free(cmd[i]);
	free(cmd);
	for (size_t i = 0; i < nenv; i++)
		free(env[i]);
	free(env);
	free(workdir);
	free(user);
	return r;
}

int msb_image_prepare(struct msb_state *st, const char *name, struct msb_spec *spec,
		      const struct msb_pull_opts *o, struct msb_error *err)
{
	struct msb_image_ref ref;
	int r = msb_sandbox_check_supported(spec, err);
	if (r < 0 || (r = msb_image_ref_parse(spec->image, &ref, err)) < 0)
		return r;
	struct msb_store s;
	if ((r = msb_store_open(st->home, &s, err)) < 0) {
		msb_image_ref_free(&ref);
		return r;
	}
	char digest[72];
	struct msb_image img;
	char *root = NULL;
	r = msb_image_pull(&s, &ref, o, digest, err);
	msb_image_ref_free(&ref);
	if (r == 0)
		r = msb_image_open(&s, digest, &img, err);
	if (r < 0)
		goto out;
	if ((r = msb_image_root(&s, &img, &root, err)) == 0 &&
	    (r = msb_image_apply_config(&img, spec, err)) == 0 && spec->ncommand == 0)
		r = msb_error_set(err, -EINVAL,
				  "image '%s' has no Entrypoint or Cmd (expected a command after "
				  "--)",
				  spec->image);
	if (r == 0) {
		/* What the sandbox runs, now that the image filled it in. */
		char *json = msb_spec_to_json(spec, 1);
		char line[80];
		int n = snprintf(line, sizeof(line), "%s\n", img.digest);
		if (!json)
			r = msb_error_set(err, -ENOMEM, "out of memory");
		else if ((r = msb_state_write(st, name, "spec.json", json, strlen(json), err)) ==
				 0 &&
			 (r = msb_state_write(st, name, "image.digest", line, (size_t)n, err)) == 0)
			r = msb_rootfs_record(st, name, root, err);
		msb_free(json);
	}
	msb_image_close(&img);
out:
	free(root);
	msb_store_close(&s);
	return r;
}
