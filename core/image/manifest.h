/* SPDX-License-Identifier: Apache-2.0 */
/*
 * OCI and Docker (schema 2) image indexes, manifests and image configs.
 *
 * Every document comes from a registry and is hostile until parsed here: a
 * size cap before parsing, JSON with duplicate keys refused, every digest,
 * size, count and string checked, and nothing kept that was not validated.
 * A parser either fills *out completely and returns 0, or leaves *out zeroed
 * and returns a negative errno with err naming the document and the JSON
 * field ("OCI manifest: layers[3].digest: expected ...").  The digest of the
 * bytes themselves is the caller's to check (the blob store verifies it).
 *
 * Codes: -E2BIG a document or list over its limit, -ENOTSUP a format msb
 * does not pull (Docker schema 1), -ENOENT no manifest for the platform,
 * -ENOMEM, and -EINVAL for anything else malformed.
 */
#ifndef MSB_IMAGE_MANIFEST_H
#define MSB_IMAGE_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include <msb/msb-error.h>

enum msb_media_kind {
	MSB_MEDIA_UNKNOWN = 0,
	MSB_MEDIA_OCI_INDEX,
	MSB_MEDIA_DOCKER_LIST,
	MSB_MEDIA_OCI_MANIFEST,
	MSB_MEDIA_DOCKER_MANIFEST,
	MSB_MEDIA_OCI_CONFIG,
	MSB_MEDIA_DOCKER_CONFIG,
	MSB_MEDIA_LAYER_TAR, /* OCI and Docker layer types */
	MSB_MEDIA_LAYER_GZIP,
	MSB_MEDIA_LAYER_ZSTD,
	MSB_MEDIA_LAYER_FOREIGN, /* nondistributable / Docker foreign: refused by callers */
};

/* The kind of a media type (compared without case; no parameters). */
enum msb_media_kind msb_media_kind(const char *media_type);

/* An Accept: header value listing the 4 manifest and index types. */
const char *msb_media_accept_header(void);

#define MSB_MANIFEST_MAX (4u << 20) /* bytes of a manifest or index */
#define MSB_CONFIG_MAX	 (8u << 20) /* bytes of an image config */
#define MSB_LAYERS_MAX	 1024	    /* layers of a manifest, diff_ids of a config */
#define MSB_INDEX_MAX	 1024	    /* entries of an index */
#define MSB_ENV_MAX	 4096	    /* Env entries of a config */
#define MSB_ARGS_MAX	 4096	    /* Entrypoint and Cmd arguments each */
#define MSB_PORTS_MAX	 1024	    /* ExposedPorts of a config */
#define MSB_URLS_MAX	 16	    /* urls of one descriptor */

struct msb_descriptor {
	char *media_type;
	char digest[72];	   /* validated "sha256:<hex>" */
	int64_t size;		   /* >= 0, validated */
	char *os, *arch, *variant; /* platform, index entries only, else NULL */
	char **urls;		   /* kept for foreign-layer detection; may be ignored by callers */
	size_t nurls;
};

struct msb_index {
	enum msb_media_kind kind; /* MSB_MEDIA_OCI_INDEX or MSB_MEDIA_DOCKER_LIST */
	size_t n;
	struct msb_descriptor *manifests;
};

struct msb_manifest {
	enum msb_media_kind kind; /* MSB_MEDIA_OCI_MANIFEST or MSB_MEDIA_DOCKER_MANIFEST */
	struct msb_descriptor config;
	size_t nlayers; /* 1 .. MSB_LAYERS_MAX */
	struct msb_descriptor *layers;
};

struct msb_image_config {
	char *os, *arch, *variant; /* variant NULL when absent */
	/* has_* is 0 when the field is absent or null; an empty array is has_* = 1, n = 0. */
	char **entrypoint;
	size_t nentrypoint;
	int has_entrypoint;
	char **cmd;
	size_t ncmd;
	int has_cmd;
	char **env; /* "NAME=value" */
	size_t nenv;
	char *workdir, *user; /* NULL when absent or "" */
	char **exposed_ports; /* "80/tcp" (a bare "80" becomes "80/tcp") */
	size_t nexposed;
	char (*diff_ids)[72]; /* validated "sha256:<hex>", 1 .. MSB_LAYERS_MAX */
	size_t ndiff_ids;
};

/*
 * Which kind a document (len bytes of buf) is: from the Content-Type the
 * registry sent (may be NULL; parameters ignored; a type that is not a
 * manifest or index type, such as application/json, says nothing) and the
 * document's own mediaType field.  Both known and different: an error.
 * Neither: an OCI index if it has "manifests", an OCI manifest if it has
 * "config" (the OCI spec lets mediaType be absent).  schemaVersion must be
 * 2; Docker schema 1 is -ENOTSUP.  *kind is one of the four manifest and
 * index kinds on success.
 */
int msb_manifest_detect(const char *content_type, const uint8_t *buf, size_t len,
			enum msb_media_kind *kind, struct msb_error *err);

/* Parse an OCI index or Docker manifest list. */
int msb_index_parse(const uint8_t *buf, size_t len, struct msb_index *out, struct msb_error *err);

/*
 * Pick the manifest for os/arch[/variant] (variant NULL = any; ignored for
 * amd64, where an entry without a variant is preferred as the one that runs
 * on every amd64 CPU).  For arm64 no variant and "v8" are the same.  Only
 * entries that are image manifests and carry a platform are candidates (so
 * attestation entries, "unknown/unknown", are never picked).  Returns the
 * position in idx->manifests, or -ENOENT with err listing the platforms
 * there are.
 */
int msb_index_select(const struct msb_index *idx, const char *os, const char *arch,
		     const char *variant, struct msb_error *err);

/* Parse an OCI or Docker schema 2 image manifest. */
int msb_manifest_parse(const uint8_t *buf, size_t len, struct msb_manifest *out,
		       struct msb_error *err);

/* Parse an image config (OCI or Docker: the same JSON). */
int msb_image_config_parse(const uint8_t *buf, size_t len, struct msb_image_config *out,
			   struct msb_error *err);

/* Free what a parser filled in and zero the struct; NULL and zeroed structs are fine. */
void msb_index_free(struct msb_index *idx);
void msb_manifest_free(struct msb_manifest *m);
void msb_image_config_free(struct msb_image_config *c);

#endif /* MSB_IMAGE_MANIFEST_H */
