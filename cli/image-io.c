/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The msb program's side of the image I/O module (core/image/image-io.h):
 * the module's entry points, each loading it on first use.  Tests and fuzz
 * targets link the real functions instead (core/image's image_io_lib).
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"
#include "image-archive.h"
#include "image-io.h"
#include "layer.h"
#include "lifecycle.h"
#include "pull.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void *handle;
static char why[PATH_MAX + 320];

static void load(void)
{
	char path[PATH_MAX];
	/* Not found: dlopen of the installed path says so. */
	(void)cli_private_file(MSB_IMAGE_IO_MODULE, R_OK, path, sizeof(path));
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		snprintf(why, sizeof(why), "the image I/O module could not be loaded: %.300s",
			 e ? e : path);
		return;
	}
	const char *v = dlsym(h, "msb_image_io_version");
	if (!v || strcmp(v, MSB_VERSION_STRING) != 0) {
		snprintf(
			why, sizeof(why),
			"the image I/O module '%.200s' is from msb %.20s, not %s (is msb installed "
			"whole?)",
			path, v ? v : "(unknown)", MSB_VERSION_STRING);
		dlclose(h);
		return;
	}
	handle = h;
}

/* The module's function `name`, or NULL with the reason in err. */
static void *io_sym(const char *name, struct msb_error *err)
{
	pthread_once(&once, load);
	void *f = handle ? dlsym(handle, name) : NULL;
	if (!f)
		msb_error_set(err, -ENOENT, "%s",
			      handle ? "the image I/O module lacks a function msb needs" : why);
	return f;
}

#define CALL(name, err, ...)                                                                       \
	do {                                                                                       \
		__typeof__(name) *fn_ = (__typeof__(name) *)io_sym(#name, err);                    \
		return fn_ ? fn_(__VA_ARGS__) : (err)->code;                                       \
	} while (0)

int msb_image_pull(const struct msb_store *s, const struct msb_image_ref *ref,
		   const struct msb_pull_opts *o, char manifest_digest[72], struct msb_error *err)
{
	CALL(msb_image_pull, err, s, ref, o, manifest_digest, err);
}

int msb_registry_normalize(const char *in, char *out, size_t len, struct msb_error *err)
{
	CALL(msb_registry_normalize, err, in, out, len, err);
}

int msb_registry_login(const char *home, const char *registry, const char *user,
		       const char *password, const struct msb_pull_opts *o, struct msb_error *err)
{
	CALL(msb_registry_login, err, home, registry, user, password, o, err);
}

int msb_registry_logout(const char *home, const char *registry, struct msb_error *err)
{
	CALL(msb_registry_logout, err, home, registry, err);
}

int msb_layer_apply(int root_fd, int layer_fd, const struct msb_layer_limits *lim,
		    struct msb_layer_stats *st, struct msb_error *err)
{
	CALL(msb_layer_apply, err, root_fd, layer_fd, lim, st, err);
}

int msb_image_load(const struct msb_store *s, const char *path, const char *tag, char ***refs,
		   size_t *nrefs, struct msb_error *err)
{
	CALL(msb_image_load, err, s, path, tag, refs, nrefs, err);
}

int msb_image_save(const struct msb_store *s, const char *const *refs, size_t n, const char *out,
		   struct msb_error *err)
{
	CALL(msb_image_save, err, s, refs, n, out, err);
}

void msb_image_load_free(char **refs, size_t n)
{
	/* Only the module made them, so it is loaded when there is anything to free. */
	void (*fn)(char **, size_t) =
		handle ? (void (*)(char **, size_t))dlsym(handle, "msb_image_load_free") : NULL;
	if (fn)
		fn(refs, n);
}
