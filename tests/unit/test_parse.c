/* SPDX-License-Identifier: Apache-2.0 */
/* Sizes and durations: strict, whole-string, overflow-checked. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include <msb/msb.h>

#include "suggest.h"

static void test_size_ok(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		uint64_t out;
	} cases[] = {
		{"0", 0},
		{"512", 512},
		{"1B", 1},
		{"1K", 1024},
		{"1k", 1024},
		{"512M", 512ull << 20},
		{"512MiB", 512ull << 20},
		{"1G", 1ull << 30},
		{"1GB", 1ull << 30},
		{"2T", 2ull << 40},
		{"16777215T", 16777215ull << 40},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 1;
		struct msb_error err = MSB_ERROR_INIT;
		assert_int_equal(msb_parse_size(cases[i].in, &v, &err), 0);
		assert_true(v == cases[i].out);
	}
}

static void test_size_bad(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		const char *token;
	} cases[] = {
		{"", "empty"},
		{"12X", "'X'"},
		{"1.5G", "fraction"},
		{"-1G", "'-1G'"},
		{"+1G", "'+1G'"},
		{" 1G", "' 1G'"},
		{"1G ", "'G '"},
		{"1 G", "' G'"},
		{"G", "'G'"},
		{"1GiBs", "'GiBs'"},
		{"99999999999999999999", "too large"},
		{"16777216T", "too large"},
		{"1KK", "'KK'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 77;
		struct msb_error err = MSB_ERROR_INIT;
		int r = msb_parse_size(cases[i].in, &v, &err);
		assert_true(r < 0);
		assert_int_equal(err.code, r);
		assert_true(v == 77);
		if (!strstr(err.msg, cases[i].token))
			fail_msg("size '%s': message '%s' lacks '%s'", cases[i].in, err.msg,
				 cases[i].token);
		assert_null(strchr(err.msg, '\n'));
	}
}

static void test_duration_ok(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		uint64_t ms;
	} cases[] = {
		{"0", 0},
		{"30s", 30000},
		{"5m", 300000},
		{"1h", 3600000},
		{"1h30m", 5400000},
		{"250ms", 250},
		{"1d2h3m4s5ms", 93784005},
		{"0s", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 1;
		assert_int_equal(msb_parse_duration(cases[i].in, &v, NULL), 0);
		assert_true(v == cases[i].ms);
	}
}

static void test_duration_bad(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		const char *token;
	} cases[] = {
		{"", "empty"},
		{"5", "no unit"},
		{"5x", "'x'"},
		{"m", "'m'"},
		{"1m1h", "largest"},
		{"1s1s", "largest"},
		{"-5s", "'-5s'"},
		{"5 s", "' s'"},
		{"1.5h", "fraction"},
		{"5sec", "'sec'"},
		{"99999999999999999999d", "too long"},
		{"999999999999999d", "too long"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 77;
		struct msb_error err = MSB_ERROR_INIT;
		int r = msb_parse_duration(cases[i].in, &v, &err);
		if (r >= 0)
			fail_msg("duration '%s' accepted", cases[i].in);
		assert_true(v == 77);
		if (!strstr(err.msg, cases[i].token))
			fail_msg("duration '%s': message '%s' lacks '%s'", cases[i].in, err.msg,
				 cases[i].token);
	}
}

static void test_suggest(void **state)
{
	(void)state;
	static const char *const words[] = {"allow",   "deny",	     "public",
					    "private", "link-local", NULL};
	assert_string_equal(msb_suggest("alow", words), "allow");
	assert_string_equal(msb_suggest("allwo", words), "allow"); /* transposition */
	assert_string_equal(msb_suggest("publc", words), "public");
	assert_string_equal(msb_suggest("linklocal", words), "link-local");
	assert_string_equal(msb_suggest("DENY", words), "deny");
	assert_null(msb_suggest("zzzzzz", words));
	assert_null(msb_suggest("x", words));
	char longword[200];
	memset(longword, 'a', sizeof(longword) - 1);
	longword[sizeof(longword) - 1] = '\0';
	assert_null(msb_suggest(longword, words));
}

static void test_error_helpers(void **state)
{
	(void)state;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_error_set(&err, -ENOENT, "file %s\nmissing", "x"), -ENOENT);
	assert_string_equal(err.msg, "file x missing"); /* one line, always */
	assert_int_equal(msb_error_prefix(&err, "loading %d: ", 3), -ENOENT);
	assert_string_equal(err.msg, "loading 3: file x missing");
	/* A positive code is a caller bug and is never reported as success. */
	assert_int_equal(msb_error_set(&err, 5, "x"), -EINVAL);
	char big[2000];
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	msb_error_set(&err, -E2BIG, "%s", big);
	assert_int_equal(strlen(err.msg), MSB_ERROR_MSG_MAX - 1);
	msb_error_prefix(&err, "ctx: ");
	assert_int_equal(strlen(err.msg), MSB_ERROR_MSG_MAX - 1);
	assert_memory_equal(err.msg, "ctx: bbb", 8);
	msb_error_clear(&err);
	assert_int_equal(err.code, 0);
	assert_string_equal(err.msg, "");
	assert_int_equal(msb_error_set(NULL, -EIO, "ignored"), -EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size_ok),	    cmocka_unit_test(test_size_bad),
		cmocka_unit_test(test_duration_ok), cmocka_unit_test(test_duration_bad),
		cmocka_unit_test(test_suggest),	    cmocka_unit_test(test_error_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
