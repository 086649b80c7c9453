/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for msb_net_rules_parse and msb_net_rule_format.
 *
 * Besides memory safety (run under ASan/UBSan) it checks the contract:
 *  - an error leaves the caller's array and count as they were, and comes
 *    with a non-empty one-line message and the same code;
 *  - every parsed rule formats, and its canonical text parses back to the
 *    very same rule (byte for byte) and formats to the same text again.
 *
 * Seeds: tests/fuzz/corpus/netrule/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void check_round_trip(const struct msb_net_rule *rule)
{
	char text[512], again[512];
	int n = msb_net_rule_format(rule, text, sizeof(text));
	if (n < 0)
		fprintf(stderr, "format failed: %d\n", n);
	CHECK(n > 0 && (size_t)n == strlen(text));

	struct msb_net_rule *back = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	int ret = msb_net_rules_parse(text, &back, &count, &err);
	if (ret != 0)
		fprintf(stderr, "reparse of '%s' failed: %s\n", text, err.msg);
	CHECK(ret == 0 && count == 1);
	if (memcmp(back, rule, sizeof(*rule)) != 0)
		fprintf(stderr, "'%s' reparsed to a different rule\n", text);
	CHECK(memcmp(back, rule, sizeof(*rule)) == 0);
	CHECK(msb_net_rule_format(back, again, sizeof(again)) == n);
	CHECK(strcmp(text, again) == 0);
	free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > MSB_NET_RULES_TEXT_MAX + 16)
		return 0;
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	/* Start from one rule, so that appending and "unchanged" are exercised. */
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	CHECK(msb_net_rules_parse("deny@meta", &rules, &count, &err) == 0 && count == 1);
	struct msb_net_rule first, *before = rules;
	memcpy(&first, rules, sizeof(first)); /* memcpy keeps the padding for memcmp */

	int ret = msb_net_rules_parse(text, &rules, &count, &err);
	if (ret < 0) {
		CHECK(err.code == ret);
		CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));
		CHECK(count == 1 && rules == before);
	} else {
		CHECK(ret == 0 && count > 1 && count <= MSB_NET_RULES_MAX);
		for (size_t i = 1; i < count; i++)
			check_round_trip(&rules[i]);
	}
	CHECK(memcmp(&rules[0], &first, sizeof(first)) == 0);
	free(rules);
	free(text);
	return 0;
}
