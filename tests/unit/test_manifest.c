/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for core/image/manifest.c: OCI/Docker indexes, manifests and
 * image configs, as registries send them, and every way they can be wrong.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

#include "manifest.h"

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"
#define H3 "3333333333333333333333333333333333333333333333333333333333333333"
#define H4 "4444444444444444444444444444444444444444444444444444444444444444"
#define H5 "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
#define D1 "sha256:" H1
#define D2 "sha256:" H2
#define D3 "sha256:" H3
#define D4 "sha256:" H4
#define D5 "sha256:" H5

#define MT_OCI_INDEX	 "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST	 "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG	 "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST	 "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIF	 "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define MT_DOCKER_LAYER	 "application/vnd.docker.image.rootfs.diff.tar.gzip"

/* ---- documents, shaped like what registries serve ----------------------------- */

/* docker buildx: two platforms plus an attestation manifest. */
static const char oci_index[] =
	"{\n"
	"  \"schemaVersion\": 2,\n"
	"  \"mediaType\": \"" MT_OCI_INDEX "\",\n"
	"  \"manifests\": [\n"
	"    {\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D1 "\", \"size\": 1613,\n"
	"     \"platform\": {\"architecture\": \"amd64\", \"os\": \"linux\"}},\n"
	"    {\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D2 "\", \"size\": 1613,\n"
	"     \"platform\": {\"architecture\": \"arm64\", \"os\": \"linux\", \"variant\": "
	"\"v8\"}},\n"
	"    {\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D3 "\", \"size\": 566,\n"
	"     \"annotations\": {\"vnd.docker.reference.digest\": \"" D1 "\",\n"
	"                     \"vnd.docker.reference.type\": \"attestation-manifest\"},\n"
	"     \"platform\": {\"architecture\": \"unknown\", \"os\": \"unknown\"}}\n"
	"  ]\n"
	"}\n";

static const char docker_list[] =
	"{\"schemaVersion\":2,\"mediaType\":\"" MT_DOCKER_LIST "\",\"manifests\":["
	"{\"mediaType\":\"" MT_DOCKER_MANIF "\",\"size\":529,\"digest\":\"" D1 "\","
	"\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
	"{\"mediaType\":\"" MT_DOCKER_MANIF "\",\"size\":529,\"digest\":\"" D2 "\","
	"\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v5\"}},"
	"{\"mediaType\":\"" MT_DOCKER_MANIF "\",\"size\":529,\"digest\":\"" D3 "\","
	"\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"}},"
	"{\"mediaType\":\"" MT_DOCKER_MANIF "\",\"size\":529,\"digest\":\"" D4 "\","
	"\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\"}},"
	"{\"mediaType\":\"" MT_DOCKER_MANIF "\",\"size\":529,\"digest\":\"" D5 "\","
	"\"platform\":{\"architecture\":\"amd64\",\"os\":\"windows\",\"os.version\":\"10.0.17763."
	"5329\"}}"
	"]}";

static const char docker_manifest[] =
	"{\n"
	"   \"schemaVersion\": 2,\n"
	"   \"mediaType\": \"" MT_DOCKER_MANIF "\",\n"
	"   \"config\": {\n"
	"      \"mediaType\": \"" MT_DOCKER_CONFIG "\",\n"
	"      \"size\": 1463,\n"
	"      \"digest\": \"" D1 "\"\n"
	"   },\n"
	"   \"layers\": [\n"
	"      {\"mediaType\": \"" MT_DOCKER_LAYER "\", \"size\": 29124181, \"digest\": \"" D2
	"\"},\n"
	"      {\"mediaType\": \"" MT_DOCKER_LAYER "\", \"size\": 0, \"digest\": \"" D3 "\"}\n"
	"   ]\n"
	"}";

/* OCI manifests may leave mediaType out; annotations and artifactType are ignored. */
static const char oci_manifest[] =
	"{\"schemaVersion\":2,"
	"\"config\":{\"mediaType\":\"" MT_OCI_CONFIG "\",\"digest\":\"" D1 "\",\"size\":2240},"
	"\"layers\":["
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" D2
	"\",\"size\":3623807},"
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"" D3
	"\",\"size\":9007199254740992},"
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"" D4
	"\",\"size\":10240,\"annotations\":{\"org.opencontainers.image.title\":\"x.tar\"}}"
	"],"
	"\"annotations\":{\"org.opencontainers.image.created\":\"2024-01-01T00:00:00Z\"}}";

static const char debian_config[] =
	"{\"architecture\":\"amd64\",\"config\":{\"Hostname\":\"\",\"Domainname\":\"\",\"User\":"
	"\"1000:1000\",\"AttachStdin\":false,\"ExposedPorts\":{\"80/tcp\":{},\"53/udp\":{},"
	"\"8080\":{},\"80\":{},\"9/sctp\":{}},\"Tty\":false,\"Env\":[\"PATH=/usr/local/sbin:/usr/"
	"local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"LANG=C.UTF-8\",\"EMPTY=\"],\"Cmd\":[\"bash\","
	"\"-c\",\"\"],\"Image\":\"sha256:" H5 "\",\"Volumes\":null,\"WorkingDir\":\"/srv\","
	"\"Entrypoint\":null,\"OnBuild\":null,\"Labels\":{\"a\":\"b\"}},\"created\":\"2024-01-"
	"11T00:"
	"00:00Z\",\"history\":[{\"created\":\"2024-01-11T00:00:00Z\",\"created_by\":\"/bin/sh -c "
	"#(nop) ADD file:x in / \"},{\"created\":\"2024-01-11T00:00:00Z\",\"created_by\":\"/bin/"
	"sh -c #(nop)  CMD [\\\"bash\\\"]\",\"empty_layer\":true}],\"os\":\"linux\",\"rootfs\":{"
	"\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]}}";

static const char minimal_config[] =
	"{\"architecture\":\"arm64\",\"variant\":\"v8\",\"os\":\"linux\",\"config\":{\"Cmd\":[],"
	"\"WorkingDir\":\"\",\"Entrypoint\":[\"/init\"]},"
	"\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D3 "\"]}}";

/* ---- helpers -------------------------------------------------------------------- */

static const uint8_t *U(const char *s)
{
	return (const uint8_t *)s;
}

/* base with the first occurrence of from replaced by to (which must exist). */
static char *subst(const char *base, const char *from, const char *to)
{
	const char *at = strstr(base, from);
	if (!at)
		print_error("'%s' is not in the document\n", from);
	assert_non_null(at);
	size_t head = (size_t)(at - base), fl = strlen(from), tl = strlen(to);
	char *out = malloc(strlen(base) - fl + tl + 1);
	assert_non_null(out);
	memcpy(out, base, head);
	memcpy(out + head, to, tl);
	strcpy(out + head + tl, at + fl);
	return out;
}

static void check_err(const char *what, int got, const struct msb_error *err, int code,
		      const char *needle)
{
	if (got != code || !strstr(err->msg, needle))
		print_error("%s: got %d '%s', expected %d and '%s'\n", what, got, err->msg, code,
			    needle);
	assert_int_equal(got, code);
	assert_int_equal(err->code, code);
	assert_non_null(strstr(err->msg, needle));
	assert_null(strchr(err->msg, '\n'));
}

enum which { DETECT, INDEX, MANIFEST, CONFIG };

/* Run one parser on len bytes and check it fails as expected, leaving *out zeroed. */
static void expect_fail(enum which w, const char *doc, size_t len, int code, const char *needle)
{
	struct msb_error err = MSB_ERROR_INIT;
	int r;
	switch (w) {
	case DETECT: {
		enum msb_media_kind k = MSB_MEDIA_OCI_INDEX;
		r = msb_manifest_detect(NULL, U(doc), len, &k, &err);
		if (r < 0)
			assert_int_equal(k, MSB_MEDIA_UNKNOWN);
		break;
	}
	case INDEX: {
		struct msb_index idx;
		r = msb_index_parse(U(doc), len, &idx, &err);
		assert_int_equal(idx.n, 0);
		assert_null(idx.manifests);
		msb_index_free(&idx);
		break;
	}
	case MANIFEST: {
		struct msb_manifest m;
		r = msb_manifest_parse(U(doc), len, &m, &err);
		assert_int_equal(m.nlayers, 0);
		assert_null(m.layers);
		assert_null(m.config.media_type);
		msb_manifest_free(&m);
		break;
	}
	case CONFIG:
	default: {
		struct msb_image_config c;
		r = msb_image_config_parse(U(doc), len, &c, &err);
		assert_null(c.os);
		assert_null(c.env);
		assert_null(c.diff_ids);
		msb_image_config_free(&c);
		break;
	}
	}
	check_err(doc, r, &err, code, needle);
}

/* ---- media types --------------------------------------------------------------- */

static void test_media_kinds(void **state)
{
	(void)state;
	static const struct {
		const char *type;
		enum msb_media_kind kind;
	} cases[] = {
		{MT_OCI_INDEX, MSB_MEDIA_OCI_INDEX},
		{MT_DOCKER_LIST, MSB_MEDIA_DOCKER_LIST},
		{MT_OCI_MANIFEST, MSB_MEDIA_OCI_MANIFEST},
		{MT_DOCKER_MANIF, MSB_MEDIA_DOCKER_MANIFEST},
		{MT_OCI_CONFIG, MSB_MEDIA_OCI_CONFIG},
		{MT_DOCKER_CONFIG, MSB_MEDIA_DOCKER_CONFIG},
		{"application/vnd.oci.image.layer.v1.tar", MSB_MEDIA_LAYER_TAR},
		{"application/vnd.oci.image.layer.v1.tar+gzip", MSB_MEDIA_LAYER_GZIP},
		{"application/vnd.oci.image.layer.v1.tar+zstd", MSB_MEDIA_LAYER_ZSTD},
		{MT_DOCKER_LAYER, MSB_MEDIA_LAYER_GZIP},
		{"Application/VND.Docker.Image.Rootfs.Diff.Tar.Gzip", MSB_MEDIA_LAYER_GZIP},
		{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		 MSB_MEDIA_LAYER_FOREIGN},
		{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		 MSB_MEDIA_LAYER_FOREIGN},
		{"application/vnd.docker.distribution.manifest.v1+prettyjws", MSB_MEDIA_UNKNOWN},
		{"application/json", MSB_MEDIA_UNKNOWN},
		{MT_OCI_INDEX "; charset=utf-8", MSB_MEDIA_UNKNOWN},
		{"", MSB_MEDIA_UNKNOWN},
		{NULL, MSB_MEDIA_UNKNOWN},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(msb_media_kind(cases[i].type), cases[i].kind);

	const char *accept = msb_media_accept_header();
	assert_non_null(strstr(accept, MT_OCI_INDEX));
	assert_non_null(strstr(accept, MT_DOCKER_LIST));
	assert_non_null(strstr(accept, MT_OCI_MANIFEST));
	assert_non_null(strstr(accept, MT_DOCKER_MANIF));
	assert_null(strstr(accept, "v1+prettyjws"));
	assert_null(strchr(accept, '\n'));
}

/* ---- detection ------------------------------------------------------------------ */

static void test_detect(void **state)
{
	(void)state;
	static const struct {
		const char *ct;
		const char *doc;
		enum msb_media_kind kind;
	} ok[] = {
		{NULL, oci_index, MSB_MEDIA_OCI_INDEX},
		{MT_OCI_INDEX, oci_index, MSB_MEDIA_OCI_INDEX},
		{" " MT_OCI_INDEX " ; charset=utf-8", oci_index, MSB_MEDIA_OCI_INDEX},
		{"application/json", oci_index, MSB_MEDIA_OCI_INDEX},
		{"", oci_index, MSB_MEDIA_OCI_INDEX},
		{MT_DOCKER_LIST, docker_list, MSB_MEDIA_DOCKER_LIST},
		{NULL, docker_manifest, MSB_MEDIA_DOCKER_MANIFEST},
		{MT_DOCKER_MANIF, docker_manifest, MSB_MEDIA_DOCKER_MANIFEST},
		/* No mediaType: the Content-Type decides, else the structure. */
		{NULL, oci_manifest, MSB_MEDIA_OCI_MANIFEST},
		{MT_OCI_MANIFEST, oci_manifest, MSB_MEDIA_OCI_MANIFEST},
		{MT_DOCKER_MANIF, oci_manifest, MSB_MEDIA_DOCKER_MANIFEST},
		{NULL, "{\"schemaVersion\":2,\"manifests\":[]}", MSB_MEDIA_OCI_INDEX},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		enum msb_media_kind k = MSB_MEDIA_UNKNOWN;
		struct msb_error err = MSB_ERROR_INIT;
		int r = msb_manifest_detect(ok[i].ct, U(ok[i].doc), strlen(ok[i].doc), &k, &err);
		if (r != 0)
			print_error("case %zu: %s\n", i, err.msg);
		assert_int_equal(r, 0);
		assert_int_equal(k, ok[i].kind);
	}

	static const struct {
		const char *ct;
		const char *doc;
		int code;
		const char *needle;
	} bad[] = {
		{MT_DOCKER_LIST, oci_index, -EINVAL, "(expected them to agree)"},
		{MT_OCI_MANIFEST, oci_index, -EINVAL,
		 "Content-Type '" MT_OCI_MANIFEST "' but mediaType '" MT_OCI_INDEX "'"},
		{MT_OCI_INDEX, docker_manifest, -EINVAL, "agree"},
		{MT_OCI_CONFIG, oci_manifest, -EINVAL, "is not a manifest or index type"},
		{MT_DOCKER_LAYER, docker_manifest, -EINVAL, "is not a manifest or index type"},
		{"application/vnd.docker.distribution.manifest.v1+prettyjws", docker_manifest,
		 -ENOTSUP, "Docker schema 1 manifests are not supported"},
		{"application/vnd.docker.distribution.manifest.v1+json; charset=x", oci_index,
		 -ENOTSUP, "schema 1"},
		/* A document must not be readable as both an index and a manifest. */
		{MT_OCI_INDEX, "{\"schemaVersion\":2,\"manifests\":[],\"layers\":[]}", -EINVAL,
		 "has both \"manifests\" and \"config\"/\"layers\""},
		{NULL,
		 "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST
		 "\",\"manifests\":[],\"config\":{}}",
		 -EINVAL, "has both \"manifests\" and \"config\"/\"layers\""},
		{NULL,
		 "{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_MANIFEST "\",\"manifests\":[]}",
		 -EINVAL, "is an OCI manifest but has \"manifests\""},
		{NULL, "{\"schemaVersion\":2}", -EINVAL, "no mediaType, no manifest Content-Type"},
		{"application/json", "{\"schemaVersion\":2}", -EINVAL, "no mediaType"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum msb_media_kind k = MSB_MEDIA_OCI_INDEX;
		struct msb_error err = MSB_ERROR_INIT;
		int r = msb_manifest_detect(bad[i].ct, U(bad[i].doc), strlen(bad[i].doc), &k, &err);
		check_err(bad[i].doc, r, &err, bad[i].code, bad[i].needle);
		assert_int_equal(k, MSB_MEDIA_UNKNOWN);
		assert_int_equal(strncmp(err.msg, "manifest: ", 10), 0);
	}
}

/* Malformed versions of every document, for every parser that reads it. */
static void test_document_level_errors(void **state)
{
	(void)state;
	static const struct {
		const char *doc;
		int code;
		const char *needle;
	} cases[] = {
		{"", -EINVAL, "not valid JSON"},
		{"{", -EINVAL, "not valid JSON"},
		{"[]", -EINVAL, "expected a JSON object at the top level"},
		{"\"x\"", -EINVAL, "not valid JSON"},
		{"{\"schemaVersion\":2} trailing", -EINVAL, "not valid JSON"},
		{"{\"schemaVersion\":2,\"schemaVersion\":2,\"manifests\":[]}", -EINVAL,
		 "duplicate"},
		{"{\"mediaType\":\"" MT_OCI_INDEX "\",\"manifests\":[]}", -EINVAL,
		 "schemaVersion: missing (expected 2)"},
		{"{\"schemaVersion\":3,\"manifests\":[]}", -EINVAL,
		 "schemaVersion: 3 is not supported (expected 2)"},
		{"{\"schemaVersion\":\"2\",\"manifests\":[]}", -EINVAL,
		 "schemaVersion: expected the integer 2"},
		{"{\"schemaVersion\":2.0,\"manifests\":[]}", -EINVAL, "expected the integer 2"},
		{"{\"schemaVersion\":-2,\"manifests\":[]}", -EINVAL, "-2 is not supported"},
		{"{\"schemaVersion\":1,\"name\":\"library/x\",\"tag\":\"latest\",\"architecture\":"
		 "\"amd64\",\"fsLayers\":[{\"blobSum\":\"" D1
		 "\"}],\"history\":[],\"signatures\":[]}",
		 -ENOTSUP, "schemaVersion: 1 is Docker schema 1, which is not supported"},
		{"{\"schemaVersion\":2,\"mediaType\":\"application/"
		 "vnd.docker.distribution.manifest."
		 "v1+prettyjws\"}",
		 -ENOTSUP, "is not a manifest or index type"},
		{"{\"schemaVersion\":2,\"mediaType\":\"" MT_OCI_CONFIG "\",\"manifests\":[]}",
		 -EINVAL, "mediaType: '" MT_OCI_CONFIG "' is not a manifest or index type"},
		{"{\"schemaVersion\":2,\"mediaType\":7,\"manifests\":[]}", -EINVAL,
		 "mediaType: expected a string"},
		/* NUL: escaped, and jansson refuses it (no JSON_ALLOW_NUL). */
		{"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json"
		 "\\u0000x\",\"manifests\":[]}",
		 -EINVAL, "not valid JSON"},
		/* Control characters in a quoted message are neutralised. */
		{"{\"schemaVersion\":2,\"mediaType\":\"a\\u001b[2Jb\\nc\",\"manifests\":[]}",
		 -EINVAL, "'a?[2Jb?c' is not a manifest"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].doc);
		expect_fail(DETECT, cases[i].doc, len, cases[i].code, cases[i].needle);
		expect_fail(INDEX, cases[i].doc, len, cases[i].code, cases[i].needle);
		expect_fail(MANIFEST, cases[i].doc, len, cases[i].code, cases[i].needle);
	}

	/* A raw NUL byte inside a string (the length says there is more). */
	static const char raw[] = "{\"schemaVersion\":2,\"mediaType\":\"a\0b\",\"manifests\":[]}";
	expect_fail(DETECT, raw, sizeof(raw) - 1, -EINVAL, "not valid JSON");
	expect_fail(INDEX, raw, sizeof(raw) - 1, -EINVAL, "not valid JSON");

	/* NULL buffer. */
	expect_fail(INDEX, NULL, 0, -EINVAL, "empty");
}

static void test_limits_and_depth(void **state)
{
	(void)state;
	/* Oversized: refused on the length alone, before any parsing. */
	size_t big = MSB_CONFIG_MAX + 1;
	char *buf = malloc(big + 1);
	assert_non_null(buf);
	memset(buf, ' ', big);
	buf[big] = '\0';
	expect_fail(DETECT, buf, MSB_MANIFEST_MAX + 1, -E2BIG, "bytes (expected at most 4194304)");
	expect_fail(INDEX, buf, MSB_MANIFEST_MAX + 1, -E2BIG, "index: 4194305 bytes");
	expect_fail(MANIFEST, buf, MSB_MANIFEST_MAX + 1, -E2BIG, "manifest: 4194305 bytes");
	expect_fail(CONFIG, buf, MSB_CONFIG_MAX + 1, -E2BIG, "image config: 8388609 bytes");
	/* At the limit, it is parsed (and is not JSON). */
	expect_fail(INDEX, buf, MSB_MANIFEST_MAX, -EINVAL, "not valid JSON");
	expect_fail(CONFIG, buf, MSB_CONFIG_MAX, -EINVAL, "not valid JSON");

	/* Nesting deeper than jansson's limit. */
	size_t depth = 5000, n = 0;
	n += (size_t)sprintf(buf, "{\"schemaVersion\":2,\"manifests\":[],\"x\":");
	memset(buf + n, '[', depth);
	n += depth;
	memset(buf + n, ']', depth);
	n += depth;
	buf[n++] = '}';
	expect_fail(INDEX, buf, n, -EINVAL, "not valid JSON");
	free(buf);
}

/* ---- index ------------------------------------------------------------------------ */

static void test_oci_index(void **state)
{
	(void)state;
	struct msb_index idx;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_index_parse(U(oci_index), strlen(oci_index), &idx, &err), 0);
	assert_int_equal(idx.kind, MSB_MEDIA_OCI_INDEX);
	assert_int_equal(idx.n, 3);
	assert_string_equal(idx.manifests[0].media_type, MT_OCI_MANIFEST);
	assert_string_equal(idx.manifests[0].digest, D1);
	assert_int_equal(idx.manifests[0].size, 1613);
	assert_string_equal(idx.manifests[0].os, "linux");
	assert_string_equal(idx.manifests[0].arch, "amd64");
	assert_null(idx.manifests[0].variant);
	assert_string_equal(idx.manifests[1].digest, D2);
	assert_string_equal(idx.manifests[1].arch, "arm64");
	assert_string_equal(idx.manifests[1].variant, "v8");
	assert_string_equal(idx.manifests[2].os, "unknown");
	assert_int_equal(idx.manifests[2].size, 566);
	assert_null(idx.manifests[2].urls);

	assert_int_equal(msb_index_select(&idx, "linux", "amd64", NULL, &err), 0);
	assert_int_equal(msb_index_select(&idx, "linux", "amd64", "v3", &err), 0);
	assert_int_equal(msb_index_select(&idx, "linux", "arm64", NULL, &err), 1);
	assert_int_equal(msb_index_select(&idx, "linux", "arm64", "v8", &err), 1);

	/* Not there: the message lists what is, without the attestation. */
	int r = msb_index_select(&idx, "linux", "arm", "v7", &err);
	check_err("arm/v7", r, &err, -ENOENT,
		  "OCI index: no image for linux/arm/v7 (there are: linux/amd64, linux/arm64/v8)");
	r = msb_index_select(&idx, "linux", "riscv64", NULL, &err);
	check_err("riscv64", r, &err, -ENOENT, "no image for linux/riscv64 (there are:");
	assert_null(strstr(err.msg, "unknown"));
	/* The attestation entry is never picked, even when asked for. */
	r = msb_index_select(&idx, "unknown", "unknown", NULL, &err);
	check_err("unknown", r, &err, -ENOENT, "no image for unknown/unknown");
	r = msb_index_select(&idx, "windows", "amd64", NULL, &err);
	check_err("windows", r, &err, -ENOENT, "no image for windows/amd64");
	msb_index_free(&idx);
	assert_int_equal(idx.n, 0);
	assert_null(idx.manifests);
	msb_index_free(&idx); /* twice is fine */
}

static void test_docker_list(void **state)
{
	(void)state;
	struct msb_index idx;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_index_parse(U(docker_list), strlen(docker_list), &idx, &err), 0);
	assert_int_equal(idx.kind, MSB_MEDIA_DOCKER_LIST);
	assert_int_equal(idx.n, 5);
	assert_string_equal(idx.manifests[4].os, "windows");
	assert_string_equal(idx.manifests[4].digest, D5);

	assert_int_equal(msb_index_select(&idx, "linux", "amd64", NULL, &err), 0);
	assert_int_equal(msb_index_select(&idx, "windows", "amd64", NULL, &err), 4);
	assert_int_equal(msb_index_select(&idx, "linux", "arm", "v7", &err), 2);
	assert_int_equal(msb_index_select(&idx, "linux", "arm", "v5", &err), 1);
	assert_int_equal(msb_index_select(&idx, "linux", "arm", NULL, &err), 1); /* the first */
	/* arm64 with no variant is arm64/v8. */
	assert_int_equal(msb_index_select(&idx, "linux", "arm64", "v8", &err), 3);
	assert_int_equal(msb_index_select(&idx, "linux", "arm64", NULL, &err), 3);
	int r = msb_index_select(&idx, "linux", "arm", "v6", &err);
	check_err("arm/v6", r, &err, -ENOENT,
		  "Docker manifest list: no image for linux/arm/v6 (there are: linux/amd64, "
		  "linux/arm/v5, linux/arm/v7, linux/arm64, windows/amd64)");
	/* Exact names: no case folding, no aliases. */
	r = msb_index_select(&idx, "Linux", "amd64", NULL, &err);
	assert_int_equal(r, -ENOENT);
	r = msb_index_select(&idx, "linux", "x86_64", NULL, &err);
	assert_int_equal(r, -ENOENT);
	assert_int_equal(msb_index_select(NULL, "linux", "amd64", NULL, &err), -EINVAL);
	assert_int_equal(msb_index_select(&idx, NULL, "amd64", NULL, &err), -EINVAL);
	msb_index_free(&idx);
}

static void test_index_select_preferences(void **state)
{
	(void)state;
	/* amd64/v3 first and plain amd64 second: plain wins (it runs on every CPU).
	 * A nested index and an entry without a platform are never candidates. */
	static const char doc[] =
		"{\"schemaVersion\":2,\"manifests\":["
		"{\"mediaType\":\"" MT_OCI_INDEX "\",\"digest\":\"" D4 "\",\"size\":1,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
		"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D5 "\",\"size\":1},"
		"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D1 "\",\"size\":1,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\",\"variant\":\"v3\"}},"
		"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":1,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\",\"variant\":\"\"}},"
		"{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D3 "\",\"size\":1,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v9\"}}"
		"]}";
	struct msb_index idx;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_index_parse(U(doc), strlen(doc), &idx, &err), 0);
	assert_int_equal(idx.kind, MSB_MEDIA_OCI_INDEX);
	assert_null(idx.manifests[1].os);
	assert_null(idx.manifests[3].variant); /* "" is no variant */
	assert_int_equal(msb_index_select(&idx, "linux", "amd64", NULL, &err), 3);
	assert_int_equal(msb_index_select(&idx, "linux", "amd64", "v3", &err), 3);
	assert_int_equal(msb_index_select(&idx, "linux", "arm64", "v9", &err), 4);
	assert_int_equal(msb_index_select(&idx, "linux", "arm64", NULL, &err), 4);
	assert_int_equal(msb_index_select(&idx, "linux", "arm64", "v8", &err), -ENOENT);
	msb_index_free(&idx);

	/* An empty index parses, and selecting from it says so. */
	static const char empty[] = "{\"schemaVersion\":2,\"manifests\":[]}";
	assert_int_equal(msb_index_parse(U(empty), strlen(empty), &idx, &err), 0);
	assert_int_equal(idx.n, 0);
	int r = msb_index_select(&idx, "linux", "amd64", NULL, &err);
	check_err("empty", r, &err, -ENOENT, "(there are: no platform-specific images)");
	msb_index_free(&idx);
}

static const struct {
	const char *from, *to;
	int code;
	const char *needle;
} index_mutations[] = {
	{"\"digest\": \"" D2 "\"", "\"digest\": \"sha256:abc\"", -EINVAL,
	 "OCI index: manifests[1].digest: expected \"sha256:\" and 64 lowercase hex digits"},
	{"\"digest\": \"" D1 "\"", "\"digest\": \"sha512:" H1 H1 "\"", -EINVAL,
	 "manifests[0].digest: digest 'sha512:1111"},
	{"\"digest\": \"" D1 "\"", "\"digest\": 5", -EINVAL,
	 "manifests[0].digest: expected a string"},
	{"\"digest\": \"" D1 "\", ", "", -EINVAL, "manifests[0].digest: missing"},
	{"\"size\": 566", "\"size\": -1", -EINVAL, "manifests[2].size: expected an integer"},
	{"\"size\": 566", "\"size\": 5.5", -EINVAL, "manifests[2].size"},
	{"\"size\": 566", "\"size\": \"566\"", -EINVAL, "manifests[2].size"},
	{"\"size\": 566", "\"size\": 99999999999999999999999", -EINVAL, "not valid JSON"},
	{"\"size\": 566,", "", -EINVAL, "manifests[2].size: missing"},
	{"\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D2 "\"", "\"digest\": \"" D2 "\"",
	 -EINVAL, "manifests[1].mediaType: missing"},
	{"\"mediaType\": \"" MT_OCI_MANIFEST "\", \"digest\": \"" D2 "\"",
	 "\"mediaType\": \"\", \"digest\": \"" D2 "\"", -EINVAL, "manifests[1].mediaType: empty"},
	{"{\"architecture\": \"amd64\", \"os\": \"linux\"}", "[]", -EINVAL,
	 "manifests[0].platform: expected an object"},
	{"{\"architecture\": \"amd64\", \"os\": \"linux\"}", "{\"architecture\": \"amd64\"}",
	 -EINVAL, "manifests[0].platform.os: missing"},
	{"\"variant\": \"v8\"", "\"variant\": 8", -EINVAL,
	 "manifests[1].platform.variant: expected a string"},
	{"\"variant\": \"v8\"", "\"variant\": \"v8\", \"variant\": \"v7\"", -EINVAL, "duplicate"},
	{"\"size\": 1613,\n     \"platform\": {\"architecture\": \"amd64\"",
	 "\"size\": 1613, \"digest\": \"" D2 "\",\n     \"platform\": {\"architecture\": \"amd64\"",
	 -EINVAL, "duplicate"},
	{"\"manifests\": [", "\"manifests\": {\"a\": [", -EINVAL, "not valid JSON"},
	{"\"manifests\": [\n    {", "\"manifests\": [\n 7, {", -EINVAL,
	 "manifests[0]: expected an object"},
	{"\"schemaVersion\": 2", "\"schemaVersion\": 2, \"config\": {}", -EINVAL, "has both"},
	{"\"mediaType\": \"" MT_OCI_INDEX "\"", "\"mediaType\": \"" MT_OCI_MANIFEST "\"", -EINVAL,
	 "is an OCI manifest but has \"manifests\""},
};

static void test_index_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(index_mutations) / sizeof(index_mutations[0]); i++) {
		char *doc = subst(oci_index, index_mutations[i].from, index_mutations[i].to);
		expect_fail(INDEX, doc, strlen(doc), index_mutations[i].code,
			    index_mutations[i].needle);
		free(doc);
	}
	/* A Docker list is the same format under another name. */
	char *doc = subst(oci_index, "\"mediaType\": \"" MT_OCI_INDEX "\"",
			  "\"mediaType\": \"" MT_DOCKER_LIST "\"");
	struct msb_index idx;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_index_parse(U(doc), strlen(doc), &idx, &err), 0);
	assert_int_equal(idx.kind, MSB_MEDIA_DOCKER_LIST);
	msb_index_free(&idx);
	free(doc);

	/* A manifest is not an index, and the other way round. */
	expect_fail(INDEX, docker_manifest, strlen(docker_manifest), -EINVAL,
		    "index: is a Docker manifest (expected an image index)");
	expect_fail(MANIFEST, oci_index, strlen(oci_index), -EINVAL,
		    "manifest: is an OCI index (expected an image manifest)");

	/* More than MSB_INDEX_MAX entries. */
	size_t n = MSB_INDEX_MAX + 1, cap = 64 + n * 200;
	char *big = malloc(cap), *p = big;
	p += sprintf(p, "{\"schemaVersion\":2,\"manifests\":[");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p,
			     "%s{\"mediaType\":\"" MT_OCI_MANIFEST "\",\"digest\":\"" D1
			     "\",\"size\":1}",
			     i ? "," : "");
	p += sprintf(p, "]}");
	expect_fail(INDEX, big, (size_t)(p - big), -E2BIG, "manifests: 1025 entries");
	free(big);
}

/* ---- manifests ------------------------------------------------------------------- */

static void test_docker_manifest(void **state)
{
	(void)state;
	struct msb_manifest m;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_manifest_parse(U(docker_manifest), strlen(docker_manifest), &m, &err),
			 0);
	assert_int_equal(m.kind, MSB_MEDIA_DOCKER_MANIFEST);
	assert_string_equal(m.config.media_type, MT_DOCKER_CONFIG);
	assert_string_equal(m.config.digest, D1);
	assert_int_equal(m.config.size, 1463);
	assert_null(m.config.os);
	assert_int_equal(m.nlayers, 2);
	assert_string_equal(m.layers[0].digest, D2);
	assert_int_equal(m.layers[0].size, 29124181);
	assert_int_equal(msb_media_kind(m.layers[0].media_type), MSB_MEDIA_LAYER_GZIP);
	assert_int_equal(m.layers[1].size, 0);
	msb_manifest_free(&m);
	assert_int_equal(m.nlayers, 0);
	assert_null(m.layers);
	assert_null(m.config.media_type);
	msb_manifest_free(&m);
	msb_manifest_free(NULL);
}

static void test_oci_manifest(void **state)
{
	(void)state;
	struct msb_manifest m;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_manifest_parse(U(oci_manifest), strlen(oci_manifest), &m, &err), 0);
	assert_int_equal(m.kind, MSB_MEDIA_OCI_MANIFEST);
	assert_string_equal(m.config.digest, D1);
	assert_int_equal(m.nlayers, 3);
	assert_int_equal(msb_media_kind(m.layers[0].media_type), MSB_MEDIA_LAYER_GZIP);
	assert_int_equal(msb_media_kind(m.layers[1].media_type), MSB_MEDIA_LAYER_ZSTD);
	assert_int_equal(m.layers[1].size, 9007199254740992ll); /* 2^53: the largest allowed */
	assert_int_equal(msb_media_kind(m.layers[2].media_type), MSB_MEDIA_LAYER_TAR);
	assert_string_equal(m.layers[2].digest, D4);
	msb_manifest_free(&m);
}

/* Foreign layers parse, so callers can refuse them by name; their urls are kept. */
static void test_foreign_layers(void **state)
{
	(void)state;
	char *doc = subst(
		docker_manifest,
		"{\"mediaType\": \"" MT_DOCKER_LAYER "\", \"size\": 0, \"digest\": \"" D3 "\"}",
		"{\"mediaType\": "
		"\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\", \"size\": "
		"1, \"digest\": \"" D3 "\", \"urls\": [\"https://example.com/a\", "
		"\"https://example.com/b\"]}");
	struct msb_manifest m;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_manifest_parse(U(doc), strlen(doc), &m, &err), 0);
	assert_int_equal(msb_media_kind(m.layers[1].media_type), MSB_MEDIA_LAYER_FOREIGN);
	assert_int_equal(m.layers[1].nurls, 2);
	assert_string_equal(m.layers[1].urls[0], "https://example.com/a");
	assert_string_equal(m.layers[1].urls[1], "https://example.com/b");
	assert_null(m.layers[1].urls[2]);
	assert_int_equal(m.layers[0].nurls, 0);
	msb_manifest_free(&m);
	free(doc);

	doc = subst(oci_manifest, "application/vnd.oci.image.layer.v1.tar\"",
		    "application/vnd.oci.image.layer.nondistributable.v1.tar\"");
	assert_int_equal(msb_manifest_parse(U(doc), strlen(doc), &m, &err), 0);
	assert_int_equal(msb_media_kind(m.layers[2].media_type), MSB_MEDIA_LAYER_FOREIGN);
	msb_manifest_free(&m);
	free(doc);
}

static const struct {
	const char *from, *to;
	int code;
	const char *needle;
} manifest_mutations[] = {
	{"\"digest\": \"" D3 "\"", "\"digest\": \"sha256:" H3 "0\"", -EINVAL,
	 "Docker manifest: layers[1].digest: expected \"sha256:\" and 64 lowercase hex digits"},
	{"\"digest\": \"" D3 "\"",
	 "\"digest\": \"sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"",
	 -EINVAL, "layers[1].digest: expected \"sha256:\""},
	{"\"digest\": \"" D1 "\"", "\"digest\": \"" H1 "\"", -EINVAL,
	 "config.digest: expected \"sha256:\""},
	{"\"digest\": \"" D1 "\"", "\"digest\": \"md5:" H1 "\"", -EINVAL,
	 "config.digest: digest 'md5:1111"},
	/* Quoted values are cut at 64 bytes. */
	{"\"digest\": \"" D1 "\"", "\"digest\": \"md5:" H1 "\"", -EINVAL,
	 "11...' uses an unsupported algorithm"},
	{"\"size\": 0,", "\"size\": -5,", -EINVAL,
	 "layers[1].size: expected an integer from 0 to 2^53"},
	{"\"size\": 0,", "\"size\": 1.5,", -EINVAL, "layers[1].size"},
	{"\"size\": 0,", "\"size\": 1.0,", -EINVAL, "layers[1].size"},
	{"\"size\": 0,", "\"size\": 1e3,", -EINVAL, "layers[1].size"},
	{"\"size\": 0,", "\"size\": 9007199254740993,", -EINVAL, "layers[1].size"},
	{"\"size\": 0,", "\"size\": 9223372036854775807,", -EINVAL, "layers[1].size"},
	{"\"size\": 0,", "\"size\": null,", -EINVAL, "layers[1].size"},
	{"\"size\": 0,", "\"size\": true,", -EINVAL, "layers[1].size"},
	{"\"schemaVersion\": 2", "\"schemaVersion\": 1", -ENOTSUP, "Docker schema 1"},
	{"\"schemaVersion\": 2", "\"schemaVersion\": 22", -EINVAL, "22 is not supported"},
	{"\"config\": {\n      \"mediaType\": \"" MT_DOCKER_CONFIG "\",\n      \"size\": 1463,\n"
	 "      \"digest\": \"" D1 "\"\n   },",
	 "", -EINVAL, "Docker manifest: config: missing"},
	{"\"config\": {", "\"config\": 5, \"x\": {", -EINVAL,
	 "config: expected an object (a content descriptor)"},
	{"\"mediaType\": \"" MT_DOCKER_CONFIG "\"", "\"mediaType\": \"" MT_OCI_CONFIG "\"", -EINVAL,
	 "config.mediaType: '" MT_OCI_CONFIG
	 "' is not an image config (expected " MT_DOCKER_CONFIG},
	{"\"mediaType\": \"" MT_DOCKER_CONFIG "\"",
	 "\"mediaType\": \"application/vnd.oci.empty.v1+json\"", -EINVAL,
	 "config.mediaType: 'application/vnd.oci.empty.v1+json' is not an image config"},
	{"\"layers\": [", "\"layers\": [], \"x\": [", -EINVAL,
	 "layers: empty (expected at least one layer)"},
	{"\"layers\": [", "\"layers\": {\"a\": 1}, \"x\": [", -EINVAL,
	 "layers: expected an array of descriptors"},
	{"\"layers\": [", "\"x\": [", -EINVAL, "layers: missing"},
	{"{\"mediaType\": \"" MT_DOCKER_LAYER "\", \"size\": 0",
	 "{\"mediaType\": \"application/vnd.example.thing\", \"size\": 0", -EINVAL,
	 "layers[1].mediaType: unknown layer type 'application/vnd.example.thing' (expected a "
	 "tar, tar+gzip or tar+zstd layer)"},
	{"{\"mediaType\": \"" MT_DOCKER_LAYER "\", \"size\": 0",
	 "{\"mediaType\": \"" MT_DOCKER_MANIF "\", \"size\": 0", -EINVAL,
	 "layers[1].mediaType: unknown layer type"},
	{"{\"mediaType\": \"" MT_DOCKER_LAYER "\", \"size\": 0", "{\"size\": 0", -EINVAL,
	 "layers[1].mediaType: missing"},
	{"\"size\": 0,", "\"size\": 0, \"urls\": \"https://x\",", -EINVAL,
	 "layers[1].urls: expected an array of strings"},
	{"\"size\": 0,", "\"size\": 0, \"urls\": [\"\"],", -EINVAL,
	 "layers[1].urls[0]: expected a URL"},
	{"\"size\": 0,", "\"size\": 0, \"urls\": [1],", -EINVAL,
	 "layers[1].urls[0]: expected a string"},
	{"\"size\": 0,",
	 "\"size\": 0, \"urls\": [\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
	 "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"],",
	 -E2BIG, "layers[1].urls: 17 entries"},
	{"\"size\": 0,", "\"size\": 0, \"size\": 0,", -EINVAL, "duplicate"},
	{"\"size\": 1463,", "\"size\": 1463, \"digest\": \"" D2 "\",", -EINVAL, "duplicate"},
	{"\"mediaType\": \"" MT_DOCKER_MANIF "\"", "\"mediaType\": \"" MT_DOCKER_LIST "\"", -EINVAL,
	 "manifest: is a Docker manifest list but has \"config\"/\"layers\""},
	{"\"mediaType\": \"" MT_DOCKER_LAYER "\"", "\"mediaType\": \"a\\u0000b\"", -EINVAL,
	 "not valid JSON"},
};

static void test_manifest_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(manifest_mutations) / sizeof(manifest_mutations[0]); i++) {
		char *doc = subst(docker_manifest, manifest_mutations[i].from,
				  manifest_mutations[i].to);
		expect_fail(MANIFEST, doc, strlen(doc), manifest_mutations[i].code,
			    manifest_mutations[i].needle);
		free(doc);
	}

	/* OCI manifests want the OCI config type. */
	char *doc = subst(oci_manifest, MT_OCI_CONFIG, MT_DOCKER_CONFIG);
	expect_fail(MANIFEST, doc, strlen(doc), -EINVAL,
		    "OCI manifest: config.mediaType: '" MT_DOCKER_CONFIG
		    "' is not an image config (expected " MT_OCI_CONFIG ")");
	free(doc);

	/* Up to MSB_LAYERS_MAX layers, and not one more. */
	for (size_t n = MSB_LAYERS_MAX; n <= MSB_LAYERS_MAX + 1; n++) {
		size_t cap = 256 + n * 200;
		char *big = malloc(cap), *p = big;
		p += sprintf(p, "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" MT_OCI_CONFIG
				"\",\"digest\":\"" D1 "\",\"size\":1},\"layers\":[");
		for (size_t i = 0; i < n; i++)
			p += sprintf(p,
				     "%s{\"mediaType\":\"" MT_DOCKER_LAYER "\",\"digest\":\"" D2
				     "\",\"size\":%zu}",
				     i ? "," : "", i);
		p += sprintf(p, "]}");
		if (n == MSB_LAYERS_MAX) {
			struct msb_manifest m;
			struct msb_error err = MSB_ERROR_INIT;
			assert_int_equal(msb_manifest_parse(U(big), (size_t)(p - big), &m, &err),
					 0);
			assert_int_equal(m.nlayers, MSB_LAYERS_MAX);
			assert_int_equal(m.layers[MSB_LAYERS_MAX - 1].size, MSB_LAYERS_MAX - 1);
			msb_manifest_free(&m);
		} else {
			expect_fail(MANIFEST, big, (size_t)(p - big), -E2BIG,
				    "OCI manifest: layers: 1025 layers (expected at most 1024)");
		}
		free(big);
	}
}

/* ---- image config ----------------------------------------------------------------- */

static void test_debian_config(void **state)
{
	(void)state;
	struct msb_image_config c;
	struct msb_error err = MSB_ERROR_INIT;
	int r = msb_image_config_parse(U(debian_config), strlen(debian_config), &c, &err);
	if (r)
		print_error("%s\n", err.msg);
	assert_int_equal(r, 0);
	assert_string_equal(c.os, "linux");
	assert_string_equal(c.arch, "amd64");
	assert_null(c.variant);
	assert_int_equal(c.has_entrypoint, 0);
	assert_int_equal(c.nentrypoint, 0);
	assert_null(c.entrypoint);
	assert_int_equal(c.has_cmd, 1);
	assert_int_equal(c.ncmd, 3);
	assert_string_equal(c.cmd[0], "bash");
	assert_string_equal(c.cmd[1], "-c");
	assert_string_equal(c.cmd[2], "");
	assert_null(c.cmd[3]);
	assert_int_equal(c.nenv, 3);
	assert_string_equal(c.env[0],
			    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	assert_string_equal(c.env[1], "LANG=C.UTF-8");
	assert_string_equal(c.env[2], "EMPTY=");
	assert_string_equal(c.workdir, "/srv");
	assert_string_equal(c.user, "1000:1000");
	/* Normalised, in document order, "80" and "80/tcp" counted once. */
	assert_int_equal(c.nexposed, 4);
	assert_string_equal(c.exposed_ports[0], "80/tcp");
	assert_string_equal(c.exposed_ports[1], "53/udp");
	assert_string_equal(c.exposed_ports[2], "8080/tcp");
	assert_string_equal(c.exposed_ports[3], "9/sctp");
	assert_int_equal(c.ndiff_ids, 2);
	assert_string_equal(c.diff_ids[0], D1);
	assert_string_equal(c.diff_ids[1], D2);
	msb_image_config_free(&c);
	assert_null(c.os);
	assert_int_equal(c.nenv, 0);
	msb_image_config_free(&c);
	msb_image_config_free(NULL);
}

static void test_minimal_config(void **state)
{
	(void)state;
	struct msb_image_config c;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(
		msb_image_config_parse(U(minimal_config), strlen(minimal_config), &c, &err), 0);
	assert_string_equal(c.arch, "arm64");
	assert_string_equal(c.variant, "v8");
	assert_int_equal(c.has_cmd, 1); /* [] is an explicit empty command */
	assert_int_equal(c.ncmd, 0);
	assert_non_null(c.cmd);
	assert_null(c.cmd[0]);
	assert_int_equal(c.has_entrypoint, 1);
	assert_int_equal(c.nentrypoint, 1);
	assert_string_equal(c.entrypoint[0], "/init");
	assert_null(c.workdir); /* "" is no working directory */
	assert_null(c.user);
	assert_int_equal(c.nenv, 0);
	assert_int_equal(c.nexposed, 0);
	assert_int_equal(c.ndiff_ids, 1);
	msb_image_config_free(&c);

	/* No "config" section at all (or null) is an image without defaults. */
	static const char bare[] = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":null,"
				   "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\"]}}";
	assert_int_equal(msb_image_config_parse(U(bare), strlen(bare), &c, &err), 0);
	assert_int_equal(c.has_cmd, 0);
	assert_int_equal(c.has_entrypoint, 0);
	msb_image_config_free(&c);
}

static const struct {
	const char *from, *to;
	int code;
	const char *needle;
} config_mutations[] = {
	{"\"LANG=C.UTF-8\"", "\"LANG\"", -EINVAL,
	 "image config: config.Env[1]: 'LANG' (expected NAME=value)"},
	{"\"LANG=C.UTF-8\"", "\"=C.UTF-8\"", -EINVAL, "config.Env[1]: '=C.UTF-8'"},
	{"\"LANG=C.UTF-8\"", "7", -EINVAL, "config.Env[1]: expected a string"},
	{"\"LANG=C.UTF-8\"", "\"LANG=C\\u0000x\"", -EINVAL, "not valid JSON"},
	{"\"Env\":[", "\"Env\":{\"a\":[", -EINVAL, "not valid JSON"},
	{"\"Env\":[\"PATH", "\"Env\":\"PATH=x\",\"X\":[\"PATH", -EINVAL,
	 "config.Env: expected an array of strings"},
	{"\"Cmd\":[\"bash\",", "\"Cmd\":\"bash\",\"X\":[", -EINVAL,
	 "config.Cmd: expected an array of strings"},
	{"\"Cmd\":[\"bash\",", "\"Cmd\":[1,", -EINVAL, "config.Cmd[0]: expected a string"},
	{"\"Entrypoint\":null", "\"Entrypoint\":[null]", -EINVAL,
	 "config.Entrypoint[0]: expected a string"},
	{"\"Entrypoint\":null", "\"Entrypoint\":{}", -EINVAL,
	 "config.Entrypoint: expected an array"},
	{"\"WorkingDir\":\"/srv\"", "\"WorkingDir\":[]", -EINVAL,
	 "config.WorkingDir: expected a string"},
	{"\"User\":\"1000:1000\"", "\"User\":1000", -EINVAL, "config.User: expected a string"},
	{"\"80/tcp\":{}", "\"0/tcp\":{}", -EINVAL,
	 "config.ExposedPorts: key '0/tcp' (expected <1-65535>[/tcp|/udp|/sctp])"},
	{"\"80/tcp\":{}", "\"65536/tcp\":{}", -EINVAL, "key '65536/tcp'"},
	{"\"80/tcp\":{}", "\"123456\":{}", -EINVAL, "key '123456'"},
	{"\"80/tcp\":{}", "\"080/tcp\":{}", -EINVAL, "key '080/tcp'"},
	{"\"80/tcp\":{}", "\"80/icmp\":{}", -EINVAL, "key '80/icmp'"},
	{"\"80/tcp\":{}", "\"80/TCP\":{}", -EINVAL, "key '80/TCP'"},
	{"\"80/tcp\":{}", "\"80/\":{}", -EINVAL, "key '80/'"},
	{"\"80/tcp\":{}", "\"8000-8010/tcp\":{}", -EINVAL, "key '8000-8010/tcp'"},
	{"\"80/tcp\":{}", "\"http\":{}", -EINVAL, "key 'http'"},
	{"\"80/tcp\":{}", "\"\":{}", -EINVAL, "key ''"},
	{"\"80/tcp\":{}", "\"80/tcp\":{},\"80/tcp\":{}", -EINVAL, "duplicate"},
	{"\"ExposedPorts\":{", "\"ExposedPorts\":[],\"X\":{", -EINVAL,
	 "config.ExposedPorts: expected an object"},
	{"\"config\":{\"Hostname\"", "\"config\":[],\"X\":{\"Hostname\"", -EINVAL,
	 "image config: config: expected an object"},
	{"\"type\":\"layers\"", "\"type\":\"tarball\"", -EINVAL,
	 "rootfs.type: 'tarball' (expected \"layers\")"},
	{"\"type\":\"layers\",", "", -EINVAL, "rootfs.type: missing"},
	{"\"diff_ids\":[\"" D1 "\",", "\"diff_ids\":[\"sha256:123\",", -EINVAL,
	 "rootfs.diff_ids[0]: expected \"sha256:\" and 64 lowercase hex digits"},
	{"\"diff_ids\":[\"" D1 "\",", "\"diff_ids\":[\"" D1 "\",5,", -EINVAL,
	 "rootfs.diff_ids[1]: expected a string"},
	{"\"diff_ids\":[\"" D1 "\",\"" D2 "\"]", "\"diff_ids\":[]", -EINVAL,
	 "rootfs.diff_ids: empty"},
	{"\"diff_ids\":[\"" D1 "\",\"" D2 "\"]", "\"diff_ids\":\"" D1 "\"", -EINVAL,
	 "rootfs.diff_ids: expected an array"},
	{",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]", "", -EINVAL, "rootfs.diff_ids: missing"},
	{"\"rootfs\":{", "\"x\":{", -EINVAL, "rootfs: missing"},
	{"\"rootfs\":{", "\"rootfs\":7,\"x\":{", -EINVAL, "rootfs: expected an object"},
	{"\"os\":\"linux\",", "", -EINVAL, "image config: os: missing (expected a string)"},
	{"\"os\":\"linux\",", "\"os\":\"\",", -EINVAL, "os: empty"},
	{"\"architecture\":\"amd64\",", "\"architecture\":[],", -EINVAL,
	 "architecture: expected a string"},
	{"\"os\":\"linux\",", "\"os\":\"linux\",\"os\":\"windows\",", -EINVAL, "duplicate"},
	{"\"Cmd\":[\"bash\",", "\"Cmd\":[\"ba\\u0000sh\",", -EINVAL, "not valid JSON"},
};

static void test_config_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(config_mutations) / sizeof(config_mutations[0]); i++) {
		char *doc = subst(debian_config, config_mutations[i].from, config_mutations[i].to);
		expect_fail(CONFIG, doc, strlen(doc), config_mutations[i].code,
			    config_mutations[i].needle);
		free(doc);
	}
	expect_fail(CONFIG, "[]", 2, -EINVAL, "image config: expected a JSON object");
}

/* Lists at their bounds: Env, Cmd, Entrypoint, diff_ids. */
static void test_config_bounds(void **state)
{
	(void)state;
	static const struct {
		const char *field;
		const char *item;
		size_t max;
		int code;
		const char *needle;
	} lists[] = {
		{"Env", "\"A=b\"", MSB_ENV_MAX, -E2BIG, "config.Env: 4097 entries"},
		{"Cmd", "\"x\"", MSB_ARGS_MAX, -E2BIG, "config.Cmd: 4097 entries"},
		{"Entrypoint", "\"x\"", MSB_ARGS_MAX, -E2BIG, "config.Entrypoint: 4097 entries"},
	};
	for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
		for (size_t n = lists[l].max; n <= lists[l].max + 1; n++) {
			char *buf = malloc(512 + n * 8), *p = buf;
			p += sprintf(
				p,
				"{\"os\":\"linux\",\"architecture\":\"amd64\",\"config\":{\"%s\":[",
				lists[l].field);
			for (size_t i = 0; i < n; i++)
				p += sprintf(p, "%s%s", i ? "," : "", lists[l].item);
			p += sprintf(p, "]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1
					"\"]}}");
			if (n == lists[l].max) {
				struct msb_image_config c;
				struct msb_error err = MSB_ERROR_INIT;
				assert_int_equal(
					msb_image_config_parse(U(buf), (size_t)(p - buf), &c, &err),
					0);
				msb_image_config_free(&c);
			} else {
				expect_fail(CONFIG, buf, (size_t)(p - buf), lists[l].code,
					    lists[l].needle);
			}
			free(buf);
		}
	}

	size_t n = MSB_LAYERS_MAX + 1;
	char *buf = malloc(256 + n * 80), *p = buf;
	p += sprintf(p, "{\"os\":\"linux\",\"architecture\":\"amd64\",\"rootfs\":{\"type\":"
			"\"layers\",\"diff_ids\":[");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s\"" D1 "\"", i ? "," : "");
	p += sprintf(p, "]}}");
	expect_fail(CONFIG, buf, (size_t)(p - buf), -E2BIG, "rootfs.diff_ids: 1025 entries");
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_media_kinds),
		cmocka_unit_test(test_detect),
		cmocka_unit_test(test_document_level_errors),
		cmocka_unit_test(test_limits_and_depth),
		cmocka_unit_test(test_oci_index),
		cmocka_unit_test(test_docker_list),
		cmocka_unit_test(test_index_select_preferences),
		cmocka_unit_test(test_index_errors),
		cmocka_unit_test(test_docker_manifest),
		cmocka_unit_test(test_oci_manifest),
		cmocka_unit_test(test_foreign_layers),
		cmocka_unit_test(test_manifest_errors),
		cmocka_unit_test(test_debian_config),
		cmocka_unit_test(test_minimal_config),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_config_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
