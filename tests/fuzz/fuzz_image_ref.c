/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for msb_image_ref_parse / _format / _api_host.
 *
 * Besides memory safety (run under ASan/UBSan) it checks the contract:
 *  - an error comes with the same code and a non-empty one-line message,
 *    and leaves every field NULL;
 *  - a parsed reference has a lowercase registry, a repository of
 *    [a-z0-9._/-] only, a tag or a digest, a valid digest when there is one;
 *  - its canonical form parses back to the very same reference and formats
 *    to the same text again.
 *
 * Seeds: tests/fuzz/corpus/image_ref/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

#include "ref.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > MSB_IMAGE_REF_MAX + 16)
		return 0;
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	struct msb_image_ref ref;
	struct msb_error err = MSB_ERROR_INIT;
	int ret = msb_image_ref_parse(text, &ref, &err);
	if (ret < 0) {
		CHECK(err.code == ret);
		CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));
		CHECK(!ref.registry && !ref.repository && !ref.tag && !ref.digest);
		free(text);
		return 0;
	}
	CHECK(ret == 0 && ref.registry && ref.repository);
	CHECK(ref.tag || ref.digest);
	CHECK(!ref.digest || msb_digest_valid(ref.digest));
	CHECK(strspn(ref.repository, "abcdefghijklmnopqrstuvwxyz0123456789._/-") ==
	      strlen(ref.repository));
	for (const char *p = ref.registry; *p; p++)
		CHECK(!(*p >= 'A' && *p <= 'Z'));
	CHECK(strlen(ref.registry) + 1 + strlen(ref.repository) <= MSB_IMAGE_NAME_MAX);
	CHECK(strcmp(ref.registry, "index.docker.io") != 0);
	CHECK(msb_image_ref_api_host(&ref) != NULL);

	char *canon = msb_image_ref_format(&ref);
	CHECK(canon);
	struct msb_image_ref back;
	ret = msb_image_ref_parse(canon, &back, &err);
	if (ret != 0)
		fprintf(stderr, "canonical '%s' of '%s' does not parse: %s\n", canon, text,
			err.msg);
	CHECK(ret == 0);
	CHECK(same(ref.registry, back.registry) && same(ref.repository, back.repository) &&
	      same(ref.tag, back.tag) && same(ref.digest, back.digest));
	char *again = msb_image_ref_format(&back);
	CHECK(again && strcmp(canon, again) == 0);

	free(again);
	free(canon);
	msb_image_ref_free(&back);
	msb_image_ref_free(&ref);
	free(text);
	return 0;
}
