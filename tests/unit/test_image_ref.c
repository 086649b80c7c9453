/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for core/image/ref.c: image references, parsed as Docker parses them. */
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

#include "ref.h"

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define DGST  "sha256:" HEX64

/* ---- valid references ------------------------------------------------------ */

static const struct {
	const char *in;
	const char *registry, *repository, *tag, *digest; /* tag/digest NULL: none */
	const char *canonical, *api_host;
} valid[] = {
	{"python", "docker.io", "library/python", "latest", NULL, "docker.io/library/python:latest",
	 "registry-1.docker.io"},
	{"python:3.12", "docker.io", "library/python", "3.12", NULL,
	 "docker.io/library/python:3.12", "registry-1.docker.io"},
	{"library/python", "docker.io", "library/python", "latest", NULL,
	 "docker.io/library/python:latest", "registry-1.docker.io"},
	{"docker.io/python", "docker.io", "library/python", "latest", NULL,
	 "docker.io/library/python:latest", "registry-1.docker.io"},
	{"index.docker.io/library/python:3", "docker.io", "library/python", "3", NULL,
	 "docker.io/library/python:3", "registry-1.docker.io"},
	{"index.docker.io/python", "docker.io", "library/python", "latest", NULL,
	 "docker.io/library/python:latest", "registry-1.docker.io"},
	{"Docker.IO/python", "docker.io", "library/python", "latest", NULL,
	 "docker.io/library/python:latest", "registry-1.docker.io"},
	{"user/repo", "docker.io", "user/repo", "latest", NULL, "docker.io/user/repo:latest",
	 "registry-1.docker.io"},
	{"docker.io/user/repo:v1", "docker.io", "user/repo", "v1", NULL, "docker.io/user/repo:v1",
	 "registry-1.docker.io"},
	{"ghcr.io/owner/repo:tag", "ghcr.io", "owner/repo", "tag", NULL, "ghcr.io/owner/repo:tag",
	 "ghcr.io"},
	{"GHCR.io/owner/repo", "ghcr.io", "owner/repo", "latest", NULL, "ghcr.io/owner/repo:latest",
	 "ghcr.io"},
	{"registry-1.docker.io/library/x", "registry-1.docker.io", "library/x", "latest", NULL,
	 "registry-1.docker.io/library/x:latest", "registry-1.docker.io"},
	{"localhost:5000/x", "localhost:5000", "x", "latest", NULL, "localhost:5000/x:latest",
	 "localhost:5000"},
	{"localhost/x", "localhost", "x", "latest", NULL, "localhost/x:latest", "localhost"},
	/* No '/': "localhost:5000" is the repository "localhost" with tag "5000". */
	{"localhost:5000", "docker.io", "library/localhost", "5000", NULL,
	 "docker.io/library/localhost:5000", "registry-1.docker.io"},
	{"example.com", "docker.io", "library/example.com", "latest", NULL,
	 "docker.io/library/example.com:latest", "registry-1.docker.io"},
	{"127.0.0.1:5000/a/b:t@" DGST, "127.0.0.1:5000", "a/b", "t", DGST,
	 "127.0.0.1:5000/a/b:t@" DGST, "127.0.0.1:5000"},
	{"x@" DGST, "docker.io", "library/x", NULL, DGST, "docker.io/library/x@" DGST,
	 "registry-1.docker.io"},
	{"host:5000/a/b@" DGST, "host:5000", "a/b", NULL, DGST, "host:5000/a/b@" DGST, "host:5000"},
	{"[::1]:5000/a", "[::1]:5000", "a", "latest", NULL, "[::1]:5000/a:latest", "[::1]:5000"},
	{"[2001:DB8::1]/a", "[2001:db8::1]", "a", "latest", NULL, "[2001:db8::1]/a:latest",
	 "[2001:db8::1]"},
	{"quay.io:443/a/b/c/d:v1.2.3-rc_1", "quay.io:443", "a/b/c/d", "v1.2.3-rc_1", NULL,
	 "quay.io:443/a/b/c/d:v1.2.3-rc_1", "quay.io:443"},
	{"my-host.example.com:65535/a__b/c-d---e/f.g/h_i:_T", "my-host.example.com:65535",
	 "a__b/c-d---e/f.g/h_i", "_T", NULL, "my-host.example.com:65535/a__b/c-d---e/f.g/h_i:_T",
	 "my-host.example.com:65535"},
	{"r/x:t@" DGST, "docker.io", "r/x", "t", DGST, "docker.io/r/x:t@" DGST,
	 "registry-1.docker.io"},
	{"a:UPPER.case-Tag_9", "docker.io", "library/a", "UPPER.case-Tag_9", NULL,
	 "docker.io/library/a:UPPER.case-Tag_9", "registry-1.docker.io"},
	{"0/1", "docker.io", "0/1", "latest", NULL, "docker.io/0/1:latest", "registry-1.docker.io"},
	{"a.b:1/c", "a.b:1", "c", "latest", NULL, "a.b:1/c:latest", "a.b:1"},
	{"h/x", "docker.io", "h/x", "latest", NULL, "docker.io/h/x:latest", "registry-1.docker.io"},
};

static void test_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		struct msb_image_ref ref;
		struct msb_error err = MSB_ERROR_INIT;
		int r = msb_image_ref_parse(valid[i].in, &ref, &err);
		if (r != 0)
			print_error("'%s': %s\n", valid[i].in, err.msg);
		assert_int_equal(r, 0);
		assert_int_equal(err.code, 0);
		assert_string_equal(ref.registry, valid[i].registry);
		assert_string_equal(ref.repository, valid[i].repository);
		if (valid[i].tag)
			assert_string_equal(ref.tag, valid[i].tag);
		else
			assert_null(ref.tag);
		if (valid[i].digest)
			assert_string_equal(ref.digest, valid[i].digest);
		else
			assert_null(ref.digest);
		assert_string_equal(msb_image_ref_api_host(&ref), valid[i].api_host);

		/* The canonical form parses back to itself. */
		char *text = msb_image_ref_format(&ref);
		assert_non_null(text);
		assert_string_equal(text, valid[i].canonical);
		struct msb_image_ref back;
		assert_int_equal(msb_image_ref_parse(text, &back, &err), 0);
		char *again = msb_image_ref_format(&back);
		assert_string_equal(again, text);
		assert_string_equal(back.registry, ref.registry);
		assert_string_equal(back.repository, ref.repository);
		free(again);
		free(text);
		msb_image_ref_free(&back);
		msb_image_ref_free(&ref);
		assert_null(ref.registry);
		assert_null(ref.repository);
		assert_null(ref.tag);
		assert_null(ref.digest);
	}
}

/* ---- invalid references ---------------------------------------------------- */

static const struct {
	const char *in;
	int code;
	const char *needle; /* a part of the message */
} invalid[] = {
	{"", -EINVAL, "empty"},
	{":tag", -EINVAL, "no repository name"},
	{"@" DGST, -EINVAL, "no repository name"},
	{"a//b", -EINVAL, "empty path component"},
	{"/a", -EINVAL, "empty path component"},
	{"a/b/", -EINVAL, "empty path component"},
	{"a:", -EINVAL, "empty tag after ':'"},
	{"a@", -EINVAL, "empty digest after '@'"},
	{"-a", -EINVAL, "'-' is not allowed first"},
	{"a:b:c", -EINVAL, "tag 'b:c': ':' is not allowed"},
	{"a:-b", -EINVAL, "tag '-b': '-' is not allowed first"},
	{"a:.b", -EINVAL, "'.' is not allowed first"},
	{"a:b/c", -EINVAL, "registry port 'b'"},
	{"Foo/bar", -EINVAL, "repository names are lowercase"},
	{"Foo/bar", -EINVAL, "did you mean 'foo/bar'"},
	{"python:3.12/X", -EINVAL, "registry port '3.12'"},
	{"ghcr.io/Owner/repo", -EINVAL, "repository names are lowercase"},
	{"UBUNTU", -EINVAL, "repository names are lowercase"},
	{"a_/b", -EINVAL, "ends in a separator"},
	{"a-", -EINVAL, "ends in a separator"},
	{"a___b", -EINVAL, "'_' is not allowed there"},
	{"a..b", -EINVAL, "'.' is not allowed there"},
	{"a._b", -EINVAL, "'_' is not allowed there"},
	{"a/.b", -EINVAL, "'.' is not allowed first"},
	{"a b", -EINVAL, "' ' is not allowed there"},
	{"a\nb", -EINVAL, "'?' is not allowed there"},
	{"a\x1b[31mb", -EINVAL, "a?[31mb"},
	{"pyth\xc3\xb6n", -EINVAL, "'?' is not allowed there"},
	{"a%2e/b", -EINVAL, "'%' is not allowed there"},
	{"x@md5", -EINVAL, "has no algorithm"},
	{"x@sha512:" HEX64 HEX64, -EINVAL, "algorithm 'sha512' is not supported"},
	{"x@SHA256:" HEX64, -EINVAL, "algorithm 'SHA256' is not supported"},
	{"x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", -EINVAL,
	 "uppercase"},
	{"x@sha256:abc", -EINVAL, "3 hex digits"},
	{"x@sha256:" HEX64 "0", -EINVAL, "65 hex digits"},
	{"x@sha256:", -EINVAL, "0 hex digits"},
	{"x@sha256:" HEX64 "@" DGST, -EINVAL, "'@', not a hex digit"},
	{"x@sha256:g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", -EINVAL,
	 "'g', not a hex digit"},
	{"x@" HEX64, -EINVAL, "has no algorithm"},
	{"localhost:0/x", -EINVAL, "registry port '0'"},
	{"localhost:65536/x", -EINVAL, "registry port '65536'"},
	{"localhost:05000/x", -EINVAL, "registry port '05000'"},
	{"localhost:123456/x", -EINVAL, "registry port '123456'"},
	{"host.io:/x", -EINVAL, "registry port ''"},
	{"host.io:80a/x", -EINVAL, "registry port '80a'"},
	{"a.com:5000:6000/x", -EINVAL, "registry port '5000:6000'"},
	{"-host.com/x", -EINVAL, "registry host '-host.com'"},
	{"host-.com/x", -EINVAL, "registry host"},
	{"a..com/x", -EINVAL, "registry host"},
	{".a.com/x", -EINVAL, "registry host"},
	{"a.com./x", -EINVAL, "registry host"},
	{"a_b.com/x", -EINVAL, "registry host"},
	{"user@host.com/x", -EINVAL, "digest"},
	{"[::1/x", -EINVAL, "IPv6"},
	{"[]:5000/x", -EINVAL, "IPv6"},
	{"[::g]/x", -EINVAL, "IPv6"},
	{"[::1]x/y", -EINVAL, "expected host[:port]"},
	{"[::1]:0/y", -EINVAL, "registry port '0'"},
	{HEX64, -EINVAL, "image ID"},
};

static void test_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		struct msb_image_ref ref;
		struct msb_error err = MSB_ERROR_INIT;
		memset(&ref, 0xa5, sizeof(ref));
		int r = msb_image_ref_parse(invalid[i].in, &ref, &err);
		if (r != invalid[i].code || !strstr(err.msg, invalid[i].needle))
			print_error("case %zu: got %d '%s', expected %d and '%s'\n", i, r, err.msg,
				    invalid[i].code, invalid[i].needle);
		assert_int_equal(r, invalid[i].code);
		assert_int_equal(err.code, r);
		assert_non_null(strstr(err.msg, invalid[i].needle));
		/* One line, naming the reference; and nothing left to free. */
		assert_null(strchr(err.msg, '\n'));
		assert_null(strchr(err.msg, '\x1b'));
		assert_int_equal(strncmp(err.msg, "image reference '", 17), 0);
		assert_null(ref.registry);
		assert_null(ref.repository);
		assert_null(ref.tag);
		assert_null(ref.digest);
	}
}

static void test_lowercase_hint_whole_message(void **state)
{
	(void)state;
	struct msb_image_ref ref;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_image_ref_parse("Foo/bar", &ref, &err), -EINVAL);
	assert_string_equal(err.msg, "image reference 'Foo/bar': repository names are lowercase "
				     "(expected [a-z0-9] separated by . _ __ or -; did you mean "
				     "'foo/bar'?)");
}

/* ---- limits ------------------------------------------------------------------ */

static int parse_code(const char *s, char *msg, size_t msglen)
{
	struct msb_image_ref ref;
	struct msb_error err = MSB_ERROR_INIT;
	int r = msb_image_ref_parse(s, &ref, &err);
	snprintf(msg, msglen, "%s", err.msg);
	msb_image_ref_free(&ref);
	return r;
}

static void test_lengths(void **state)
{
	(void)state;
	char buf[MSB_IMAGE_REF_MAX + 64], msg[MSB_ERROR_MSG_MAX];

	/* A 128-character tag is the longest. */
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "x:", 2);
	memset(buf + 2, 't', 128);
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), 0);
	buf[2 + 128] = 't';
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), -EINVAL);
	assert_non_null(strstr(msg, "tag is 129 characters"));

	/* The name is counted normalised: "docker.io/library/" is 18 bytes. */
	memset(buf, 0, sizeof(buf));
	memset(buf, 'a', 255 - 18);
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), 0);
	buf[255 - 18] = 'a';
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), -EINVAL);
	assert_non_null(strstr(msg, "name is 256 characters"));
	/* The message quotes a bounded prefix of the input, no more. */
	assert_non_null(strstr(msg, "aaa...'"));

	/* With a registry: "a.io/" + 250 = 255. */
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "a.io/", 5);
	memset(buf + 5, 'b', 250);
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), 0);
	buf[5 + 250] = 'b';
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), -EINVAL);

	/* index.docker.io becomes docker.io before the name is measured. */
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "index.docker.io/u/", 18);
	memset(buf + 18, 'c', 255 - 12);
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), 0);

	/* The whole input: at most 4096 bytes, and never read past that. */
	memset(buf, 0, sizeof(buf));
	memset(buf, 'a', MSB_IMAGE_REF_MAX + 1);
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), -E2BIG);
	assert_non_null(strstr(msg, "longer than 4096 bytes"));
	/* 4096 bytes is not too long, but this one has a 4094-character tag. */
	buf[MSB_IMAGE_REF_MAX] = '\0';
	buf[1] = ':';
	assert_int_equal(parse_code(buf, msg, sizeof(msg)), -EINVAL);
	assert_non_null(strstr(msg, "tag is 4094 characters"));
}

static void test_null_and_free(void **state)
{
	(void)state;
	struct msb_image_ref ref;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_image_ref_parse(NULL, &ref, &err), -EINVAL);
	assert_null(ref.registry);
	msb_image_ref_free(NULL);
	msb_image_ref_free(&ref);
	assert_null(msb_image_ref_format(NULL));
	assert_null(msb_image_ref_format(&ref));
	assert_null(msb_image_ref_api_host(&ref));
	/* A NULL error pointer is allowed. */
	assert_int_equal(msb_image_ref_parse("a::", &ref, NULL), -EINVAL);
}

static void test_digest_valid(void **state)
{
	(void)state;
	assert_true(msb_digest_valid(DGST));
	assert_false(msb_digest_valid(NULL));
	assert_false(msb_digest_valid(""));
	assert_false(msb_digest_valid("sha256:"));
	assert_false(msb_digest_valid(HEX64));
	assert_false(msb_digest_valid(DGST "0"));
	assert_false(msb_digest_valid("sha256:" HEX64 "\n"));
	assert_false(msb_digest_valid(
		"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"));
	assert_false(msb_digest_valid(
		"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"));
	assert_false(msb_digest_valid(
		"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg"));
	assert_false(msb_digest_valid("sha512:" HEX64));
	assert_false(msb_digest_valid("SHA256:" HEX64));
	assert_false(msb_digest_valid(" sha256:" HEX64));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_lowercase_hint_whole_message),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_null_and_free),
		cmocka_unit_test(test_digest_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
