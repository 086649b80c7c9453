/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pulling images from OCI registries (the distribution spec) into the store.
 *
 * Everything a registry sends is hostile until checked: manifests and
 * indexes are bounded and parsed by manifest.h, the digest of their exact
 * bytes is checked against what asked for them (the digest reference, the
 * index entry, Docker-Content-Digest); configs and layers stream into the
 * store, which publishes them only when size and sha256 match the
 * descriptor; every layer's uncompressed digest is checked against the
 * config's diff_ids.  A tag is pinned to the platform manifest it resolved
 * to; a digest reference is never resolved again.
 *
 * Transport: libcurl, HTTPS with the system CAs (plus --ca-certs), plain
 * HTTP only with `insecure`; anonymous, Bearer (the WWW-Authenticate
 * challenge and a token from its realm) or Basic auth; redirects followed
 * by hand so that the registry's Authorization never goes to another origin
 * and no scheme other than http(s) is used; connection errors, 5xx, 429 and
 * short bodies retried (4 tries, 0.5 s, 1 s, 2 s and jitter).
 */
#ifndef MSB_IMAGE_PULL_H
#define MSB_IMAGE_PULL_H

#include <msb/msb-error.h>

#include "ref.h"
#include "store.h"

/* The platform a pull wants unless told otherwise. */
#define MSB_PULL_DEFAULT_OS   "linux"
#define MSB_PULL_DEFAULT_ARCH "amd64"

enum msb_pull_policy { MSB_PULL_MISSING = 0, MSB_PULL_ALWAYS, MSB_PULL_NEVER };

struct msb_pull_opts {
	enum msb_pull_policy policy;
	const char *ca_certs; /* a PEM file or a directory of them, added to the system CAs; NULL */
	int insecure;	      /* allow plain HTTP (and only then) */
	int quiet;	      /* no progress even on a terminal */
	const char *os, *arch, *variant; /* NULL: linux/amd64 */
	int parallel;			 /* layers at once; 0: 4 */
};

/*
 * Make sure the image `ref` names is in the store (per policy) and give its
 * platform manifest's digest (the pin for tags; a digest ref's own digest,
 * or the platform manifest's if that digest is an index).
 *
 * MISSING: a pinned tag, or a digest, whose manifest, config and layers are
 * all in the store costs no network at all.  ALWAYS: a tag is resolved again
 * (and re-pinned; a moved pin is said on stderr unless quiet).  NEVER: -ENOENT
 * unless the image is in the store.  Pins are kept under the canonical
 * reference ("docker.io/library/busybox:latest"); for a platform other than
 * linux/amd64 under "<canonical>#<os>/<arch>[/<variant>]", so pulling another
 * platform never moves the default one's pin.
 *
 * Progress goes to stderr, one line per layer, only when stderr is a
 * terminal and !quiet.  Errors (one line, naming the blob or request):
 * -EBADMSG a digest or size mismatch, -EACCES refused credentials, -ENOENT
 * no such image or platform, -ENOSPC the store's disk is full, -EPROTO a
 * registry answer msb cannot use, -EIO transport failures after retries,
 * -EINVAL/-E2BIG/-ENOTSUP from the manifest parsers.  The store never holds
 * a half-written or unverified blob, whatever failed.
 */
int msb_image_pull(const struct msb_store *s, const struct msb_image_ref *ref,
		   const struct msb_pull_opts *o, char manifest_digest[72], struct msb_error *err);

/* The pin key msb_image_pull uses for a tag reference (malloc'd), NULL on ENOMEM. */
char *msb_image_pin_key(const struct msb_image_ref *ref, const struct msb_pull_opts *o);

/*
 * Registry credentials.  msb's own file is MSB_HOME/auth.json (mode 0600,
 * replaced atomically under a lock), in the format of Docker's config.json:
 * {"auths": {"<registry>": {"auth": "<base64 user:password>"}}}.  Lookups
 * try it first, then $DOCKER_CONFIG/config.json or ~/.docker/config.json
 * ("auths" with "auth", or "username" and "password"; credential helpers are
 * not run).  Docker Hub's key is "https://index.docker.io/v1/".
 */

/* "host[:port]" of a registry as a user writes it ("https://h:5000/", "index.docker.io",
 * "docker.io"): lowercase, Docker Hub as "docker.io".  -EINVAL if it is not one. */
int msb_registry_normalize(const char *in, char *out, size_t len, struct msb_error *err);

/*
 * Check user/password against the registry (GET /v2/ through the challenge:
 * Basic, or a token from the Bearer realm) and then store them.  home: the
 * state home (NULL: the default).  o: ca_certs and insecure are used.
 * -EACCES when the registry refuses them; nothing is stored then.
 */
int msb_registry_login(const char *home, const char *registry, const char *user,
		       const char *password, const struct msb_pull_opts *o, struct msb_error *err);

/* Forget msb's stored credentials for the registry; -ENOENT if there were none. */
int msb_registry_logout(const char *home, const char *registry, struct msb_error *err);

#endif /* MSB_IMAGE_PULL_H */
