/* SPDX-License-Identifier: Apache-2.0 */
/*
 * OCI / Docker schema 2 indexes, manifests and image configs (manifest.h).
 *
 * Everything parsed here came from a registry, possibly a hostile one, so:
 *  - a document over its size limit is refused before jansson sees it;
 *  - nesting depth is bounded by jansson's own parser limit
 *    (JSON_PARSER_MAX_DEPTH, 2048), which also bounds its recursion; these
 *    documents need five levels;
 *  - duplicate keys are refused (JSON_REJECT_DUPLICATES): two parsers that
 *    kept different copies of "digest" would see two different images;
 *  - NUL in strings is refused (jansson without JSON_ALLOW_NUL; checked
 *    again here), so no string is shorter in C than in JSON;
 *  - a document's kind comes from its mediaType and the Content-Type, which
 *    must agree, and a document that carries both an index's and a
 *    manifest's fields is refused: one set of bytes must not be read as an
 *    index by one component and as a manifest by another;
 *  - every list has a bound and every digest and size is checked;
 *  - untrusted text is quoted into error messages only as printable ASCII.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include <msb/msb.h>

#include "error.h"
#include "manifest.h"
#include "ref.h"

#define MT_OCI_INDEX	  "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST	  "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG	  "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST	  "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFES "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG  "application/vnd.docker.container.image.v1+json"

/* Longest media type (RFC 6838: 127 + "/" + 127) and platform strings kept. */
#define MEDIA_TYPE_MAX 255
#define PLATFORM_MAX   128
#define URL_MAX	       2048
#define SIZE_LIMIT     (1ll << 53) /* descriptor sizes: what a JSON double holds exactly */
#define QUOTE_MAX      64

static const struct {
	const char *type;
	enum msb_media_kind kind;
} media_types[] = {
	{MT_OCI_INDEX, MSB_MEDIA_OCI_INDEX},
	{MT_DOCKER_LIST, MSB_MEDIA_DOCKER_LIST},
	{MT_OCI_MANIFEST, MSB_MEDIA_OCI_MANIFEST},
	{MT_DOCKER_MANIFES, MSB_MEDIA_DOCKER_MANIFEST},
	{MT_OCI_CONFIG, MSB_MEDIA_OCI_CONFIG},
	{MT_DOCKER_CONFIG, MSB_MEDIA_DOCKER_CONFIG},
	{"application/vnd.oci.image.layer.v1.tar", MSB_MEDIA_LAYER_TAR},
	{"application/vnd.oci.image.layer.v1.tar+gzip", MSB_MEDIA_LAYER_GZIP},
	{"application/vnd.oci.image.layer.v1.tar+zstd", MSB_MEDIA_LAYER_ZSTD},
	{"application/vnd.docker.image.rootfs.diff.tar", MSB_MEDIA_LAYER_TAR},
	{"application/vnd.docker.image.rootfs.diff.tar.gzip", MSB_MEDIA_LAYER_GZIP},
	{"application/vnd.docker.image.rootfs.diff.tar.zstd", MSB_MEDIA_LAYER_ZSTD},
	{"application/vnd.oci.image.layer.nondistributable.v1.tar", MSB_MEDIA_LAYER_FOREIGN},
	{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", MSB_MEDIA_LAYER_FOREIGN},
	{"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", MSB_MEDIA_LAYER_FOREIGN},
	{"application/vnd.docker.image.rootfs.foreign.diff.tar", MSB_MEDIA_LAYER_FOREIGN},
	{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", MSB_MEDIA_LAYER_FOREIGN},
};

/* Docker schema 1 (signed and unsigned): recognised only to refuse them clearly. */
static bool is_schema1_type(const char *t)
{
	return t &&
	       (strcasecmp(t, "application/vnd.docker.distribution.manifest.v1+json") == 0 ||
		strcasecmp(t, "application/vnd.docker.distribution.manifest.v1+prettyjws") == 0);
}

enum msb_media_kind msb_media_kind(const char *media_type)
{
	if (!media_type)
		return MSB_MEDIA_UNKNOWN;
	for (size_t i = 0; i < sizeof(media_types) / sizeof(media_types[0]); i++)
		if (strcasecmp(media_type, media_types[i].type) == 0)
			return media_types[i].kind;
	return MSB_MEDIA_UNKNOWN;
}

const char *msb_media_accept_header(void)
{
	return MT_OCI_INDEX ", " MT_DOCKER_LIST ", " MT_OCI_MANIFEST ", " MT_DOCKER_MANIFES;
}

static bool is_index_kind(enum msb_media_kind k)
{
	return k == MSB_MEDIA_OCI_INDEX || k == MSB_MEDIA_DOCKER_LIST;
}

static bool is_manifest_kind(enum msb_media_kind k)
{
	return k == MSB_MEDIA_OCI_MANIFEST || k == MSB_MEDIA_DOCKER_MANIFEST;
}

static bool is_layer_kind(enum msb_media_kind k)
{
	return k == MSB_MEDIA_LAYER_TAR || k == MSB_MEDIA_LAYER_GZIP || k == MSB_MEDIA_LAYER_ZSTD ||
	       k == MSB_MEDIA_LAYER_FOREIGN;
}

static const char *kind_name(enum msb_media_kind k)
{
	switch (k) {
	case MSB_MEDIA_OCI_INDEX:
		return "OCI index";
	case MSB_MEDIA_DOCKER_LIST:
		return "Docker manifest list";
	case MSB_MEDIA_OCI_MANIFEST:
		return "OCI manifest";
	case MSB_MEDIA_DOCKER_MANIFEST:
		return "Docker manifest";
	case MSB_MEDIA_OCI_CONFIG:
	case MSB_MEDIA_DOCKER_CONFIG:
		return "image config";
	case MSB_MEDIA_LAYER_TAR:
	case MSB_MEDIA_LAYER_GZIP:
	case MSB_MEDIA_LAYER_ZSTD:
	case MSB_MEDIA_LAYER_FOREIGN:
		return "layer";
	case MSB_MEDIA_UNKNOWN:
	default:
		return "document";
	}
}

/* "an OCI index", "a Docker manifest": for messages. */
static const char *article(enum msb_media_kind k)
{
	return kind_name(k)[0] == 'O' ? "an" : "a";
}

/* ---- errors ---------------------------------------------------------------- */

/* The document being parsed, for error messages: "OCI manifest: layers[3].digest: ...". */
struct doc {
	const char *name;
	struct msb_error *err;
};

__attribute__((format(printf, 4, 5))) static int bad(const struct doc *d, int code,
						     const char *field, const char *fmt, ...)
{
	char what[MSB_ERROR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (field)
		return msb_error_set(d->err, code, "%s: %s: %s", d->name, field, what);
	return msb_error_set(d->err, code, "%s: %s", d->name, what);
}

/* Untrusted text for a message: printable ASCII only, at most QUOTE_MAX bytes. */
static const char *quoted(const char *s, char out[QUOTE_MAX + 4])
{
	size_t i;
	for (i = 0; s[i] && i < QUOTE_MAX; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (s[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
	return out;
}

/* "where.key", or "key" at the top level. */
static const char *field_name(char *buf, size_t n, const char *where, const char *key)
{
	if (where)
		snprintf(buf, n, "%s.%s", where, key);
	else
		snprintf(buf, n, "%s", key);
	return buf;
}

/* ---- JSON helpers ------------------------------------------------------------ */

static int load(const struct doc *d, const uint8_t *buf, size_t len, size_t max, json_t **out)
{
	*out = NULL;
	if (len > max)
		return bad(d, -E2BIG, NULL, "%zu bytes (expected at most %zu)", len, max);
	if (!buf)
		return bad(d, -EINVAL, NULL, "empty (expected a JSON object)");
	json_error_t jerr;
	json_t *root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char q[QUOTE_MAX + 4];
		return bad(d, -EINVAL, NULL, "not valid JSON: %s (line %d, column %d)",
			   quoted(jerr.text, q), jerr.line, jerr.column);
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return bad(d, -EINVAL, NULL, "expected a JSON object at the top level");
	}
	*out = root;
	return 0;
}

/*
 * obj[key] as a string of at most max bytes, borrowed from obj, into *out.
 * Absent or null: *out = NULL, an error if required.
 */
static int get_string(const struct doc *d, json_t *obj, const char *where, const char *key,
		      bool required, size_t max, const char **out)
{
	char f[128];
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return bad(d, -EINVAL, field_name(f, sizeof(f), where, key),
				   "missing (expected a string)");
		return 0;
	}
	if (!json_is_string(v))
		return bad(d, -EINVAL, field_name(f, sizeof(f), where, key), "expected a string");
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (strlen(s) != n)
		return bad(d, -EINVAL, field_name(f, sizeof(f), where, key),
			   "contains a NUL byte (expected text)");
	if (n > max)
		return bad(d, -EINVAL, field_name(f, sizeof(f), where, key),
			   "%zu bytes long (expected at most %zu)", n, max);
	*out = s;
	return 0;
}

/* get_string, then strdup; *out stays NULL when absent (or "" if empty_is_absent). */
static int dup_string(const struct doc *d, json_t *obj, const char *where, const char *key,
		      bool required, size_t max, bool empty_is_absent, char **out)
{
	const char *s;
	char f[128];
	int r = get_string(d, obj, where, key, required, max, &s);
	if (r < 0)
		return r;
	if (s && required && !*s)
		return bad(d, -EINVAL, field_name(f, sizeof(f), where, key),
			   "empty (expected a non-empty string)");
	if (!s || (empty_is_absent && !*s))
		return 0;
	if (!(*out = strdup(s)))
		return bad(d, -ENOMEM, NULL, "out of memory");
	return 0;
}

static void strv_free(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/*
 * obj[key] as an array of at most max strings: *v (NULL-terminated, so it
 * can go to exec as it is) and *n.  Absent or null: *has = 0 and no array.
 */
static int get_strv(const struct doc *d, json_t *obj, const char *where, const char *key,
		    size_t max, char ***v, size_t *n, int *has)
{
	char f[128], fi[160];
	json_t *a = json_object_get(obj, key);
	*v = NULL;
	*n = 0;
	if (has)
		*has = 0;
	if (!a || json_is_null(a))
		return 0;
	field_name(f, sizeof(f), where, key);
	if (!json_is_array(a))
		return bad(d, -EINVAL, f, "expected an array of strings");
	size_t count = json_array_size(a);
	if (count > max)
		return bad(d, -E2BIG, f, "%zu entries (expected at most %zu)", count, max);
	char **out = calloc(count + 1, sizeof(*out));
	if (!out)
		return bad(d, -ENOMEM, NULL, "out of memory");
	for (size_t i = 0; i < count; i++) {
		json_t *e = json_array_get(a, i);
		snprintf(fi, sizeof(fi), "%s[%zu]", f, i);
		if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e)) {
			strv_free(out, i);
			return bad(d, -EINVAL, fi,
				   json_is_string(e) ? "contains a NUL byte (expected text)"
						     : "expected a string");
		}
		if (!(out[i] = strdup(json_string_value(e)))) {
			strv_free(out, i);
			return bad(d, -ENOMEM, NULL, "out of memory");
		}
	}
	*v = out;
	*n = count;
	if (has)
		*has = 1;
	return 0;
}

/* ---- descriptors ------------------------------------------------------------- */

static void descriptor_free(struct msb_descriptor *d)
{
	free(d->media_type);
	free(d->os);
	free(d->arch);
	free(d->variant);
	strv_free(d->urls, d->nurls);
	memset(d, 0, sizeof(*d));
}

static int check_digest(const struct doc *d, const char *field, const char *s)
{
	char q[QUOTE_MAX + 4];
	if (msb_digest_valid(s))
		return 0;
	const char *colon = strchr(s, ':');
	if (colon && (colon - s != 6 || strncmp(s, "sha256", 6) != 0))
		return bad(d, -EINVAL, field,
			   "digest '%s' uses an unsupported algorithm (expected \"sha256:\" and 64 "
			   "lowercase hex digits)",
			   quoted(s, q));
	return bad(d, -EINVAL, field, "expected \"sha256:\" and 64 lowercase hex digits");
}

/* The descriptor at v ("where" names it: "layers[3]"); platform only for index entries. */
static int parse_descriptor(const struct doc *d, json_t *v, const char *where, bool platform,
			    struct msb_descriptor *out)
{
	char f[128];
	const char *s;
	int r;
	memset(out, 0, sizeof(*out));
	if (!json_is_object(v))
		return bad(d, -EINVAL, where, "expected an object (a content descriptor)");
	if ((r = dup_string(d, v, where, "mediaType", true, MEDIA_TYPE_MAX, false,
			    &out->media_type)) < 0)
		goto fail;
	if ((r = get_string(d, v, where, "digest", true, 512, &s)) < 0 ||
	    (r = check_digest(d, field_name(f, sizeof(f), where, "digest"), s)) < 0)
		goto fail;
	memcpy(out->digest, s, 72); /* "sha256:" + 64 + NUL = 72, checked above */

	json_t *size = json_object_get(v, "size");
	field_name(f, sizeof(f), where, "size");
	if (!size) {
		r = bad(d, -EINVAL, f, "missing (expected a non-negative integer)");
		goto fail;
	}
	if (!json_is_integer(size) || json_integer_value(size) < 0 ||
	    json_integer_value(size) > SIZE_LIMIT) {
		r = bad(d, -EINVAL, f, "expected an integer from 0 to 2^53");
		goto fail;
	}
	out->size = (int64_t)json_integer_value(size);

	/* urls: only foreign layers have them; kept so callers can say why they refuse. */
	if ((r = get_strv(d, v, where, "urls", MSB_URLS_MAX, &out->urls, &out->nurls, NULL)) < 0)
		goto fail;
	for (size_t i = 0; i < out->nurls; i++) {
		if (!*out->urls[i] || strlen(out->urls[i]) > URL_MAX) {
			snprintf(f, sizeof(f), "%s.urls[%zu]", where, i);
			r = bad(d, -EINVAL, f, "expected a URL of 1 to %d bytes", URL_MAX);
			goto fail;
		}
	}

	json_t *p = json_object_get(v, "platform");
	if (platform && p && !json_is_null(p)) {
		char pw[96];
		snprintf(pw, sizeof(pw), "%s.platform", where);
		if (!json_is_object(p)) {
			r = bad(d, -EINVAL, pw, "expected an object");
			goto fail;
		}
		if ((r = dup_string(d, p, pw, "os", true, PLATFORM_MAX, false, &out->os)) < 0 ||
		    (r = dup_string(d, p, pw, "architecture", true, PLATFORM_MAX, false,
				    &out->arch)) < 0 ||
		    (r = dup_string(d, p, pw, "variant", false, PLATFORM_MAX, true,
				    &out->variant)) < 0)
			goto fail;
	}
	return 0;
fail:
	descriptor_free(out);
	return r;
}

/* ---- detection --------------------------------------------------------------- */

/* The media type part of a Content-Type ("type/subtype; charset=..."), trimmed. */
static void content_type_base(const char *ct, char out[MEDIA_TYPE_MAX + 1])
{
	out[0] = '\0';
	if (!ct)
		return;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	size_t n = strcspn(ct, ";");
	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	if (n > MEDIA_TYPE_MAX)
		n = MEDIA_TYPE_MAX; /* longer than any type we know: stays unknown */
	memcpy(out, ct, n);
	out[n] = '\0';
}

static int detect(const struct doc *d, const char *content_type, json_t *root,
		  enum msb_media_kind *kind)
{
	char q[QUOTE_MAX + 4], q2[QUOTE_MAX + 4];
	char ct[MEDIA_TYPE_MAX + 1];
	content_type_base(content_type, ct);
	if (is_schema1_type(ct))
		return bad(d, -ENOTSUP, NULL,
			   "Docker schema 1 manifests are not supported (expected an OCI or Docker "
			   "schema 2 manifest; re-push the image with a current tool)");

	json_t *sv = json_object_get(root, "schemaVersion");
	if (!sv)
		return bad(d, -EINVAL, "schemaVersion", "missing (expected 2)");
	if (!json_is_integer(sv))
		return bad(d, -EINVAL, "schemaVersion", "expected the integer 2");
	if (json_integer_value(sv) == 1)
		return bad(d, -ENOTSUP, "schemaVersion",
			   "1 is Docker schema 1, which is not supported (expected 2: an OCI or "
			   "Docker schema 2 manifest; re-push the image with a current tool)");
	if (json_integer_value(sv) != 2)
		return bad(d, -EINVAL, "schemaVersion", "%lld is not supported (expected 2)",
			   (long long)json_integer_value(sv));

	const char *mt;
	int r = get_string(d, root, NULL, "mediaType", false, MEDIA_TYPE_MAX, &mt);
	if (r < 0)
		return r;
	enum msb_media_kind mk = msb_media_kind(mt), ck = msb_media_kind(ct);
	if (mt && !is_index_kind(mk) && !is_manifest_kind(mk))
		return bad(d, is_schema1_type(mt) ? -ENOTSUP : -EINVAL, "mediaType",
			   "'%s' is not a manifest or index type (expected %s)", quoted(mt, q),
			   msb_media_accept_header());
	/* Unknown Content-Types (application/json, octet-stream) say nothing; known
	 * non-manifest ones (a config, a layer) mean the registry sent the wrong blob. */
	if (ck != MSB_MEDIA_UNKNOWN && !is_index_kind(ck) && !is_manifest_kind(ck))
		return bad(d, -EINVAL, NULL,
			   "Content-Type '%s' is not a manifest or index type (expected %s)",
			   quoted(ct, q), msb_media_accept_header());
	if (mk && ck && mk != ck)
		return bad(d, -EINVAL, NULL,
			   "Content-Type '%s' but mediaType '%s' (expected them to agree)",
			   quoted(ct, q), quoted(mt, q2));

	bool has_manifests = json_object_get(root, "manifests") != NULL;
	bool has_image = json_object_get(root, "config") || json_object_get(root, "layers");
	enum msb_media_kind k = mk ? mk : ck;
	if (has_manifests && has_image)
		return bad(d, -EINVAL, NULL,
			   "has both \"manifests\" and \"config\"/\"layers\" (expected an index or "
			   "a manifest, not both)");
	if (!k && has_manifests)
		k = MSB_MEDIA_OCI_INDEX;
	else if (!k && has_image)
		k = MSB_MEDIA_OCI_MANIFEST;
	if (!k)
		return bad(d, -EINVAL, NULL,
			   "no mediaType, no manifest Content-Type and neither \"manifests\" nor "
			   "\"config\" (expected an image index or manifest)");
	if ((is_index_kind(k) && has_image) || (is_manifest_kind(k) && has_manifests))
		return bad(d, -EINVAL, NULL,
			   "is %s %s but has %s (expected an index or a manifest)", article(k),
			   kind_name(k), has_image ? "\"config\"/\"layers\"" : "\"manifests\"");
	*kind = k;
	return 0;
}

int msb_manifest_detect(const char *content_type, const uint8_t *buf, size_t len,
			enum msb_media_kind *kind, struct msb_error *err)
{
	struct doc d = {"manifest", err};
	json_t *root;
	*kind = MSB_MEDIA_UNKNOWN;
	int r = load(&d, buf, len, MSB_MANIFEST_MAX, &root);
	if (r < 0)
		return r;
	r = detect(&d, content_type, root, kind);
	json_decref(root);
	return r;
}

/* ---- index ------------------------------------------------------------------- */

void msb_index_free(struct msb_index *idx)
{
	if (!idx)
		return;
	for (size_t i = 0; i < idx->n; i++)
		descriptor_free(&idx->manifests[i]);
	free(idx->manifests);
	memset(idx, 0, sizeof(*idx));
}

static int index_fill(struct doc *d, json_t *root, struct msb_index *out)
{
	enum msb_media_kind k;
	int r = detect(d, NULL, root, &k);
	if (r < 0)
		return r;
	if (!is_index_kind(k))
		return bad(d, -EINVAL, NULL, "is %s %s (expected an image index)", article(k),
			   kind_name(k));
	d->name = kind_name(k);
	out->kind = k;
	json_t *a = json_object_get(root, "manifests");
	if (!json_is_array(a))
		return bad(d, -EINVAL, "manifests",
			   a ? "expected an array of descriptors" : "missing (expected an array)");
	size_t n = json_array_size(a);
	if (n > MSB_INDEX_MAX)
		return bad(d, -E2BIG, "manifests", "%zu entries (expected at most %d)", n,
			   MSB_INDEX_MAX);
	if (n && !(out->manifests = calloc(n, sizeof(*out->manifests))))
		return bad(d, -ENOMEM, NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		char where[32];
		snprintf(where, sizeof(where), "manifests[%zu]", i);
		if ((r = parse_descriptor(d, json_array_get(a, i), where, true,
					  &out->manifests[i])) < 0)
			return r;
		out->n = i + 1;
	}
	return 0;
}

int msb_index_parse(const uint8_t *buf, size_t len, struct msb_index *out, struct msb_error *err)
{
	struct doc d = {"index", err};
	json_t *root;
	memset(out, 0, sizeof(*out));
	int r = load(&d, buf, len, MSB_MANIFEST_MAX, &root);
	if (r < 0)
		return r;
	r = index_fill(&d, root, out);
	json_decref(root);
	if (r < 0)
		msb_index_free(out);
	return r;
}

/* The variant an entry without one has (as containerd reads them), or NULL. */
static const char *default_variant(const char *arch)
{
	if (strcmp(arch, "arm64") == 0)
		return "v8";
	if (strcmp(arch, "arm") == 0)
		return "v7";
	return NULL;
}

/* Buildx attestations and other non-images sit in indexes as "unknown/unknown". */
static bool is_unknown_platform(const struct msb_descriptor *e)
{
	return strcmp(e->os, "unknown") == 0 && strcmp(e->arch, "unknown") == 0;
}

/* How well entry e fits: 0 not at all, higher is better. */
static int platform_score(const struct msb_descriptor *e, const char *os, const char *arch,
			  const char *variant)
{
	if (!is_manifest_kind(msb_media_kind(e->media_type)) || !e->os || !e->arch ||
	    is_unknown_platform(e))
		return 0;
	if (strcmp(e->os, os) != 0 || strcmp(e->arch, arch) != 0)
		return 0;
	/* Any variant will do: one without (the baseline, which runs on every CPU) first. */
	if (!variant || !*variant || strcmp(arch, "amd64") == 0)
		return e->variant ? 1 : 2;
	const char *ev = e->variant ? e->variant : default_variant(arch);
	return ev && strcmp(ev, variant) == 0 ? 2 : 0;
}

int msb_index_select(const struct msb_index *idx, const char *os, const char *arch,
		     const char *variant, struct msb_error *err)
{
	struct doc d = {idx ? kind_name(idx->kind) : "index", err};
	if (!idx || !os || !arch)
		return bad(&d, -EINVAL, NULL, "no index or platform to select");
	int best = -1, best_score = 0;
	for (size_t i = 0; i < idx->n; i++) {
		int s = platform_score(&idx->manifests[i], os, arch, variant);
		if (s > best_score) {
			best = (int)i;
			best_score = s;
		}
	}
	if (best >= 0)
		return best;

	/* None: list what there is (attestations and other artifacts left out). */
	char list[MSB_ERROR_MSG_MAX] = "", q[3][QUOTE_MAX + 4];
	size_t used = 0;
	for (size_t i = 0; i < idx->n && used < sizeof(list); i++) {
		const struct msb_descriptor *e = &idx->manifests[i];
		if (!e->os || !e->arch || !is_manifest_kind(msb_media_kind(e->media_type)) ||
		    is_unknown_platform(e))
			continue;
		int n = snprintf(list + used, sizeof(list) - used, "%s%s/%s%s%s", used ? ", " : "",
				 quoted(e->os, q[0]), quoted(e->arch, q[1]), e->variant ? "/" : "",
				 e->variant ? quoted(e->variant, q[2]) : "");
		if (n > 0)
			used += (size_t)n;
	}
	return bad(&d, -ENOENT, NULL, "no image for %s/%s%s%s (there are: %s)", quoted(os, q[0]),
		   quoted(arch, q[1]), variant ? "/" : "", variant ? quoted(variant, q[2]) : "",
		   used ? list : "no platform-specific images");
}

/* ---- manifest ---------------------------------------------------------------- */

void msb_manifest_free(struct msb_manifest *m)
{
	if (!m)
		return;
	descriptor_free(&m->config);
	for (size_t i = 0; i < m->nlayers; i++)
		descriptor_free(&m->layers[i]);
	free(m->layers);
	memset(m, 0, sizeof(*m));
}

static int manifest_fill(struct doc *d, json_t *root, struct msb_manifest *out)
{
	char q[QUOTE_MAX + 4];
	enum msb_media_kind k;
	int r = detect(d, NULL, root, &k);
	if (r < 0)
		return r;
	if (!is_manifest_kind(k))
		return bad(d, -EINVAL, NULL, "is %s %s (expected an image manifest)", article(k),
			   kind_name(k));
	d->name = kind_name(k);
	out->kind = k;

	json_t *c = json_object_get(root, "config");
	if (!c)
		return bad(d, -EINVAL, "config",
			   "missing (expected the image config's descriptor)");
	if ((r = parse_descriptor(d, c, "config", false, &out->config)) < 0)
		return r;
	enum msb_media_kind want =
		k == MSB_MEDIA_OCI_MANIFEST ? MSB_MEDIA_OCI_CONFIG : MSB_MEDIA_DOCKER_CONFIG;
	if (msb_media_kind(out->config.media_type) != want)
		return bad(d, -EINVAL, "config.mediaType",
			   "'%s' is not an image config (expected %s)",
			   quoted(out->config.media_type, q),
			   want == MSB_MEDIA_OCI_CONFIG ? MT_OCI_CONFIG : MT_DOCKER_CONFIG);

	json_t *a = json_object_get(root, "layers");
	if (!json_is_array(a))
		return bad(d, -EINVAL, "layers",
			   a ? "expected an array of descriptors" : "missing (expected an array)");
	size_t n = json_array_size(a);
	if (n == 0)
		return bad(d, -EINVAL, "layers", "empty (expected at least one layer)");
	if (n > MSB_LAYERS_MAX)
		return bad(d, -E2BIG, "layers", "%zu layers (expected at most %d)", n,
			   MSB_LAYERS_MAX);
	if (!(out->layers = calloc(n, sizeof(*out->layers))))
		return bad(d, -ENOMEM, NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		char where[32], f[48];
		snprintf(where, sizeof(where), "layers[%zu]", i);
		if ((r = parse_descriptor(d, json_array_get(a, i), where, false, &out->layers[i])) <
		    0)
			return r;
		out->nlayers = i + 1;
		/* Foreign layers parse (callers refuse them, naming the kind); unknown ones do not.
		 */
		if (!is_layer_kind(msb_media_kind(out->layers[i].media_type))) {
			snprintf(f, sizeof(f), "%s.mediaType", where);
			return bad(d, -EINVAL, f,
				   "unknown layer type '%s' (expected a tar, tar+gzip or tar+zstd "
				   "layer)",
				   quoted(out->layers[i].media_type, q));
		}
	}
	return 0;
}

int msb_manifest_parse(const uint8_t *buf, size_t len, struct msb_manifest *out,
		       struct msb_error *err)
{
	struct doc d = {"manifest", err};
	json_t *root;
	memset(out, 0, sizeof(*out));
	int r = load(&d, buf, len, MSB_MANIFEST_MAX, &root);
	if (r < 0)
		return r;
	r = manifest_fill(&d, root, out);
	json_decref(root);
	if (r < 0)
		msb_manifest_free(out);
	return r;
}

/* ---- image config ------------------------------------------------------------ */

void msb_image_config_free(struct msb_image_config *c)
{
	if (!c)
		return;
	free(c->os);
	free(c->arch);
	free(c->variant);
	strv_free(c->entrypoint, c->nentrypoint);
	strv_free(c->cmd, c->ncmd);
	strv_free(c->env, c->nenv);
	free(c->workdir);
	free(c->user);
	strv_free(c->exposed_ports, c->nexposed);
	free(c->diff_ids);
	memset(c, 0, sizeof(*c));
}

/* "<1-65535>[/tcp|/udp|/sctp]" into "port/proto"; false if it is not that. */
static bool port_key(const char *k, char out[16])
{
	unsigned long v = 0;
	size_t i = 0;
	if (k[0] < '1' || k[0] > '9')
		return false;
	for (; k[i] >= '0' && k[i] <= '9' && i < 5; i++)
		v = v * 10 + (unsigned long)(k[i] - '0');
	if (v > 65535)
		return false;
	const char *proto = k[i] == '\0' ? "tcp" : NULL;
	if (k[i] == '/' && (strcmp(k + i + 1, "tcp") == 0 || strcmp(k + i + 1, "udp") == 0 ||
			    strcmp(k + i + 1, "sctp") == 0))
		proto = k + i + 1;
	if (!proto)
		return false;
	snprintf(out, 16, "%lu/%s", v, proto);
	return true;
}

static int config_section(const struct doc *d, json_t *c, struct msb_image_config *out)
{
	char f[64], q[QUOTE_MAX + 4];
	int r;
	if ((r = dup_string(d, c, "config", "User", false, 256, true, &out->user)) < 0 ||
	    (r = dup_string(d, c, "config", "WorkingDir", false, 4096, true, &out->workdir)) < 0 ||
	    (r = get_strv(d, c, "config", "Entrypoint", MSB_ARGS_MAX, &out->entrypoint,
			  &out->nentrypoint, &out->has_entrypoint)) < 0 ||
	    (r = get_strv(d, c, "config", "Cmd", MSB_ARGS_MAX, &out->cmd, &out->ncmd,
			  &out->has_cmd)) < 0 ||
	    (r = get_strv(d, c, "config", "Env", MSB_ENV_MAX, &out->env, &out->nenv, NULL)) < 0)
		return r;
	for (size_t i = 0; i < out->nenv; i++) {
		const char *eq = strchr(out->env[i], '=');
		if (!eq || eq == out->env[i]) {
			snprintf(f, sizeof(f), "config.Env[%zu]", i);
			return bad(d, -EINVAL, f, "'%s' (expected NAME=value)",
				   quoted(out->env[i], q));
		}
	}

	json_t *ports = json_object_get(c, "ExposedPorts");
	if (!ports || json_is_null(ports))
		return 0;
	if (!json_is_object(ports))
		return bad(d, -EINVAL, "config.ExposedPorts",
			   "expected an object with \"port/proto\" keys");
	size_t n = json_object_size(ports);
	if (n > MSB_PORTS_MAX)
		return bad(d, -E2BIG, "config.ExposedPorts", "%zu ports (expected at most %d)", n,
			   MSB_PORTS_MAX);
	if (!(out->exposed_ports = calloc(n + 1, sizeof(*out->exposed_ports))))
		return bad(d, -ENOMEM, NULL, "out of memory");
	const char *key;
	json_t *val;
	json_object_foreach(ports, key, val)
	{
		char port[16];
		/* jansson keys are NUL-terminated and refused with a NUL inside. */
		if (!port_key(key, port))
			return bad(d, -EINVAL, "config.ExposedPorts",
				   "key '%s' (expected <1-65535>[/tcp|/udp|/sctp])",
				   quoted(key, q));
		bool seen = false; /* "80" and "80/tcp" are one port */
		for (size_t i = 0; i < out->nexposed && !seen; i++)
			seen = strcmp(out->exposed_ports[i], port) == 0;
		if (seen)
			continue;
		if (!(out->exposed_ports[out->nexposed] = strdup(port)))
			return bad(d, -ENOMEM, NULL, "out of memory");
		out->nexposed++;
	}
	return 0;
}

static int config_fill(const struct doc *d, json_t *root, struct msb_image_config *out)
{
	int r;
	if ((r = dup_string(d, root, NULL, "os", true, PLATFORM_MAX, false, &out->os)) < 0 ||
	    (r = dup_string(d, root, NULL, "architecture", true, PLATFORM_MAX, false, &out->arch)) <
		    0 ||
	    (r = dup_string(d, root, NULL, "variant", false, PLATFORM_MAX, true, &out->variant)) <
		    0)
		return r;

	json_t *c = json_object_get(root, "config");
	if (c && !json_is_null(c)) {
		if (!json_is_object(c))
			return bad(d, -EINVAL, "config", "expected an object");
		if ((r = config_section(d, c, out)) < 0)
			return r;
	}

	json_t *rootfs = json_object_get(root, "rootfs");
	if (!json_is_object(rootfs))
		return bad(d, -EINVAL, "rootfs",
			   rootfs ? "expected an object"
				  : "missing (expected the layers' diff_ids)");
	const char *type;
	if ((r = get_string(d, rootfs, "rootfs", "type", true, 64, &type)) < 0)
		return r;
	if (strcmp(type, "layers") != 0) {
		char q[QUOTE_MAX + 4];
		return bad(d, -EINVAL, "rootfs.type", "'%s' (expected \"layers\")",
			   quoted(type, q));
	}
	json_t *ids = json_object_get(rootfs, "diff_ids");
	if (!json_is_array(ids))
		return bad(d, -EINVAL, "rootfs.diff_ids",
			   ids ? "expected an array of digests" : "missing (expected an array)");
	size_t n = json_array_size(ids);
	if (n == 0)
		return bad(d, -EINVAL, "rootfs.diff_ids", "empty (expected one digest per layer)");
	if (n > MSB_LAYERS_MAX)
		return bad(d, -E2BIG, "rootfs.diff_ids", "%zu entries (expected at most %d)", n,
			   MSB_LAYERS_MAX);
	if (!(out->diff_ids = calloc(n, sizeof(*out->diff_ids))))
		return bad(d, -ENOMEM, NULL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		char f[40];
		json_t *e = json_array_get(ids, i);
		snprintf(f, sizeof(f), "rootfs.diff_ids[%zu]", i);
		if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e))
			return bad(d, -EINVAL, f, "expected a string \"sha256:<64 hex digits>\"");
		if ((r = check_digest(d, f, json_string_value(e))) < 0)
			return r;
		memcpy(out->diff_ids[i], json_string_value(e), 72);
		out->ndiff_ids = i + 1;
	}
	return 0;
}

int msb_image_config_parse(const uint8_t *buf, size_t len, struct msb_image_config *out,
			   struct msb_error *err)
{
	struct doc d = {"image config", err};
	json_t *root;
	memset(out, 0, sizeof(*out));
	int r = load(&d, buf, len, MSB_CONFIG_MAX, &root);
	if (r < 0)
		return r;
	r = config_fill(&d, root, out);
	json_decref(root);
	if (r < 0)
		msb_image_config_free(out);
	return r;
}
