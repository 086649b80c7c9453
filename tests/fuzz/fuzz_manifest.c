/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the registry documents: msb_manifest_detect,
 * msb_index_parse + msb_index_select, msb_manifest_parse and
 * msb_image_config_parse, all on the same bytes.  An input that starts with
 * "CT:<type>\n" hands <type> to detect as the Content-Type.
 *
 * Besides memory safety and leaks (run under ASan/UBSan) it checks the
 * contract: an error has the same code, a one-line message and leaves the
 * output zeroed; a success holds only validated digests, sizes and counts
 * within their limits, and detect agrees with the parser that accepted it.
 *
 * Seeds: tests/fuzz/corpus/manifest/.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

#include "manifest.h"
#include "ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static int zeroed(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

static void check_error(int ret, const struct msb_error *err)
{
	CHECK(ret < 0 && err->code == ret);
	CHECK(err->msg[0] != '\0' && !strchr(err->msg, '\n'));
}

static void check_descriptor(const struct msb_descriptor *d, int platform)
{
	CHECK(d->media_type && d->media_type[0]);
	CHECK(msb_digest_valid(d->digest));
	CHECK(d->size >= 0 && d->size <= (1ll << 53));
	CHECK(d->nurls <= MSB_URLS_MAX && (d->nurls == 0) == (d->urls == NULL));
	if (!platform)
		CHECK(!d->os && !d->arch && !d->variant);
	CHECK(!d->os == !d->arch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char ct[256];
	const char *content_type = NULL;
	if (size >= 3 && memcmp(data, "CT:", 3) == 0) {
		const uint8_t *nl = memchr(data, '\n', size);
		size_t n = nl ? (size_t)(nl - data) - 3 : 0;
		if (nl && n < sizeof(ct)) {
			memcpy(ct, data + 3, n);
			ct[n] = '\0';
			content_type = ct;
			size -= (size_t)(nl + 1 - data);
			data = nl + 1;
		}
	}

	struct msb_error err = MSB_ERROR_INIT;
	enum msb_media_kind kind = MSB_MEDIA_UNKNOWN, plain = MSB_MEDIA_UNKNOWN;
	int dret = msb_manifest_detect(content_type, data, size, &kind, &err);
	if (dret < 0) {
		check_error(dret, &err);
		CHECK(kind == MSB_MEDIA_UNKNOWN);
	}
	int pret = msb_manifest_detect(NULL, data, size, &plain, &err);

	struct msb_index idx;
	int r = msb_index_parse(data, size, &idx, &err);
	if (r < 0) {
		check_error(r, &err);
		CHECK(zeroed(&idx, sizeof(idx)));
	} else {
		CHECK(pret == 0 && plain == idx.kind);
		CHECK(idx.kind == MSB_MEDIA_OCI_INDEX || idx.kind == MSB_MEDIA_DOCKER_LIST);
		CHECK(idx.n <= MSB_INDEX_MAX);
		for (size_t i = 0; i < idx.n; i++)
			check_descriptor(&idx.manifests[i], 1);
		static const char *const plats[][3] = {
			{"linux", "amd64", NULL},     {"linux", "arm64", "v8"},
			{"linux", "arm", "v7"},	      {"linux", "arm", NULL},
			{"unknown", "unknown", NULL},
		};
		for (size_t p = 0; p < sizeof(plats) / sizeof(plats[0]); p++) {
			int s = msb_index_select(&idx, plats[p][0], plats[p][1], plats[p][2], &err);
			if (s < 0) {
				check_error(s, &err);
				CHECK(s == -ENOENT);
			} else {
				const struct msb_descriptor *e = &idx.manifests[s];
				CHECK((size_t)s < idx.n);
				CHECK(e->os && strcmp(e->os, plats[p][0]) == 0);
				CHECK(strcmp(e->arch, plats[p][1]) == 0);
				CHECK(strcmp(e->os, "unknown") != 0);
			}
		}
		msb_index_free(&idx);
		CHECK(zeroed(&idx, sizeof(idx)));
	}

	struct msb_manifest m;
	r = msb_manifest_parse(data, size, &m, &err);
	if (r < 0) {
		check_error(r, &err);
		CHECK(zeroed(&m, sizeof(m)));
	} else {
		CHECK(pret == 0 && plain == m.kind);
		CHECK(m.kind == MSB_MEDIA_OCI_MANIFEST || m.kind == MSB_MEDIA_DOCKER_MANIFEST);
		check_descriptor(&m.config, 0);
		enum msb_media_kind ck = msb_media_kind(m.config.media_type);
		CHECK(ck == (m.kind == MSB_MEDIA_OCI_MANIFEST ? MSB_MEDIA_OCI_CONFIG
							      : MSB_MEDIA_DOCKER_CONFIG));
		CHECK(m.nlayers >= 1 && m.nlayers <= MSB_LAYERS_MAX);
		for (size_t i = 0; i < m.nlayers; i++) {
			check_descriptor(&m.layers[i], 0);
			enum msb_media_kind lk = msb_media_kind(m.layers[i].media_type);
			CHECK(lk >= MSB_MEDIA_LAYER_TAR && lk <= MSB_MEDIA_LAYER_FOREIGN);
		}
		msb_manifest_free(&m);
		CHECK(zeroed(&m, sizeof(m)));
	}

	struct msb_image_config c;
	r = msb_image_config_parse(data, size, &c, &err);
	if (r < 0) {
		check_error(r, &err);
		CHECK(zeroed(&c, sizeof(c)));
	} else {
		CHECK(c.os && c.os[0] && c.arch && c.arch[0]);
		CHECK(c.ndiff_ids >= 1 && c.ndiff_ids <= MSB_LAYERS_MAX);
		for (size_t i = 0; i < c.ndiff_ids; i++)
			CHECK(msb_digest_valid(c.diff_ids[i]));
		CHECK(c.nenv <= MSB_ENV_MAX && c.ncmd <= MSB_ARGS_MAX &&
		      c.nentrypoint <= MSB_ARGS_MAX && c.nexposed <= MSB_PORTS_MAX);
		for (size_t i = 0; i < c.nenv; i++)
			CHECK(strchr(c.env[i], '=') > c.env[i]);
		CHECK(!c.has_cmd == !c.cmd && (!c.has_cmd ? c.ncmd == 0 : !c.cmd[c.ncmd]));
		CHECK(!c.has_entrypoint == !c.entrypoint);
		CHECK(!c.workdir || c.workdir[0]);
		CHECK(!c.user || c.user[0]);
		for (size_t i = 0; i < c.nexposed; i++) {
			char *slash = strchr(c.exposed_ports[i], '/');
			long port = strtol(c.exposed_ports[i], NULL, 10);
			CHECK(slash && port >= 1 && port <= 65535);
			CHECK(!strcmp(slash, "/tcp") || !strcmp(slash, "/udp") ||
			      !strcmp(slash, "/sctp"));
		}
		msb_image_config_free(&c);
		CHECK(zeroed(&c, sizeof(c)));
	}
	return 0;
}
