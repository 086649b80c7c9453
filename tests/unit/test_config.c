/* SPDX-License-Identifier: Apache-2.0 */
/* The config file parser and the event loop. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "loop.h"

static void test_config_ok(void **state)
{
	(void)state;
	const char *text = "# msb config\n"
			   "plugin_path = /opt/a:/opt/b\n"
			   "\n"
			   "  [network.netfilter]  \n"
			   "pool = 10.201.0.0/16\n"
			   "pool = 10.202.0.0/16\n";
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_config_parse(text, strlen(text), "test", &err), 0);
	assert_string_equal(msb_config_get(NULL, "plugin_path"), "/opt/a:/opt/b");
	assert_string_equal(msb_config_get("network.netfilter", "pool"), "10.202.0.0/16");
	assert_null(msb_config_get(NULL, "pool"));
	msb_config_reset();
}

static void test_config_bad(void **state)
{
	(void)state;
	static const struct {
		const char *text, *token;
	} cases[] = {
		{"novalue\n", "test:1: expected key = value"},
		{"a = 1\n[unclosed\n", "test:2: bad section header"},
		{"[bad name]\n", "bad section name"},
		{"bad key = 1\n", "bad key"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct msb_error err = MSB_ERROR_INIT;
		assert_true(msb_config_parse(cases[i].text, strlen(cases[i].text), "test", &err) <
			    0);
		if (!strstr(err.msg, cases[i].token))
			fail_msg("'%s': '%s' lacks '%s'", cases[i].text, err.msg, cases[i].token);
		assert_null(msb_config_get(NULL, "a"));
	}
	char line[5000];
	memset(line, 'a', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	assert_int_equal(msb_config_parse(line, strlen(line), "t", NULL), -EINVAL);
	assert_int_equal(msb_config_parse(line, MSB_CONFIG_MAX_BYTES + 1, "t", NULL), -E2BIG);
}

static void test_config_file_env(void **state)
{
	(void)state;
	char path[] = "/tmp/msb-test-config.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "plugin_path = /from/file\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	setenv("MSB_CONFIG", path, 1);
	msb_config_reset();
	assert_int_equal(msb_config_load(NULL), 0);
	assert_string_equal(msb_config_get(NULL, "plugin_path"), "/from/file");
	assert_string_equal(msb_config_path(), path);
	unlink(path);
	msb_config_reset();
	/* A named config file that is missing is an error, not silently nothing. */
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_config_load(&err), -ENOENT);
	assert_non_null(strstr(err.msg, path));
	unsetenv("MSB_CONFIG");
	msb_config_reset();
}

static int fired;

static void on_read(int fd, uint32_t events, void *arg)
{
	char c;
	assert_true(events & MSB_FD_READ);
	assert_int_equal(read(fd, &c, 1), 1);
	fired += *(int *)arg;
}

static void test_loop(void **state)
{
	(void)state;
	struct msb_loop *l = NULL;
	assert_int_equal(msb_loop_new(&l), 0);
	int p[2];
	assert_int_equal(pipe(p), 0);
	int inc = 5;
	assert_int_equal(msb_loop_add(l, p[0], MSB_FD_READ, on_read, &inc), 0);
	assert_int_equal(msb_loop_add(l, p[0], MSB_FD_READ, on_read, &inc), -EEXIST);
	assert_int_equal(msb_loop_add(l, -1, MSB_FD_READ, on_read, &inc), -EINVAL);
	assert_int_equal(msb_loop_run_once(l, 0), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(msb_loop_run_once(l, 1000), 1);
	assert_int_equal(fired, 5);
	assert_int_equal(msb_loop_del(l, p[0]), 0);
	assert_int_equal(msb_loop_del(l, p[0]), -ENOENT);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(msb_loop_run_once(l, 0), 0);
	assert_int_equal(fired, 5);
	close(p[0]);
	close(p[1]);
	msb_loop_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_ok),
		cmocka_unit_test(test_config_bad),
		cmocka_unit_test(test_config_file_env),
		cmocka_unit_test(test_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
