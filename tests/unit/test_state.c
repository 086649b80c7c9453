/* SPDX-License-Identifier: Apache-2.0 */
/* The state store: atomic creation and writes, locking under real concurrency. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "state.h"

static char home[256];

static int setup(void **state)
{
	(void)state;
	snprintf(home, sizeof(home), "/tmp/msb-test-state.XXXXXX");
	return mkdtemp(home) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_create_read_remove(void **state)
{
	(void)state;
	struct msb_state st;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_state_open(home, &st, &err), 0);
	assert_int_equal(msb_state_sandbox_create(&st, "box1", "spec.json", "{}", 2, &err), 0);
	assert_true(msb_state_sandbox_exists(&st, "box1"));
	/* The sandbox directory is private to its owner. */
	char path[512];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/sandboxes/box1", home);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/sandboxes/box1/spec.json", home);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	assert_int_equal(msb_state_sandbox_create(&st, "box1", "spec.json", "{}", 2, &err),
			 -EEXIST);
	assert_non_null(strstr(err.msg, "box1"));
	assert_int_equal(msb_state_sandbox_create(&st, "../evil", "spec.json", "{}", 2, &err),
			 -EINVAL);
	assert_int_equal(msb_state_write(&st, "box1", "../x", "a", 1, &err), -EINVAL);
	assert_int_equal(msb_state_write(&st, "box1", ".hidden", "a", 1, &err), -EINVAL);

	assert_int_equal(msb_state_write(&st, "box1", "state", "running", 7, &err), 0);
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(msb_state_read(&st, "box1", "state", &data, &len, &err), 0);
	assert_int_equal(len, 7);
	assert_string_equal(data, "running");
	free(data);
	assert_int_equal(msb_state_read(&st, "nope", "state", &data, &len, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "nope"));

	char **names = NULL;
	size_t n = 0;
	assert_int_equal(msb_state_sandbox_create(&st, "abox", "spec.json", "{}", 2, &err), 0);
	assert_int_equal(msb_state_list(&st, &names, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "abox");
	assert_string_equal(names[1], "box1");
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);

	assert_int_equal(msb_state_sandbox_remove(&st, "box1", &err), 0);
	assert_false(msb_state_sandbox_exists(&st, "box1"));
	assert_int_equal(msb_state_sandbox_remove(&st, "box1", &err), -ENOENT);
	assert_int_equal(msb_state_sandbox_remove(&st, "abox", &err), 0);
	msb_state_close(&st);
}

static void test_leftovers_reaped(void **state)
{
	(void)state;
	/* A create or remove that crashed half-way leaves .new-* / .trash-*. */
	char path[512];
	snprintf(path, sizeof(path), "%s/sandboxes/.new-crashed.1234", home);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/sandboxes/.new-crashed.1234/spec.json", home);
	int fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/sandboxes/.trash-gone.99", home);
	assert_int_equal(mkdir(path, 0700), 0);
	struct msb_state st;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_state_open(home, &st, &err), 0);
	struct stat sb;
	assert_int_equal(stat(path, &sb), -1);
	snprintf(path, sizeof(path), "%s/sandboxes/.new-crashed.1234", home);
	assert_int_equal(stat(path, &sb), -1);
	char **names = NULL;
	size_t n = 9;
	assert_int_equal(msb_state_list(&st, &names, &n, &err), 0);
	assert_int_equal(n, 0);
	free(names);
	msb_state_close(&st);
}

static int incr(const char *old, size_t old_len, char **out, size_t *out_len, void *arg)
{
	(void)arg;
	(void)old_len;
	long v = old ? strtol(old, NULL, 10) : 0;
	/* Widen the race window: read, yield, then write. */
	usleep(50);
	*out_len = (size_t)asprintf(out, "%ld", v + 1);
	return *out ? 0 : -ENOMEM;
}

#define WRITERS 8
#define ROUNDS	60

static void test_concurrent_writers(void **state)
{
	(void)state;
	struct msb_state st;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_state_open(home, &st, &err), 0);
	assert_int_equal(msb_state_sandbox_create(&st, "shared", "spec.json", "{}", 2, &err), 0);
	msb_state_close(&st);
	pid_t pids[WRITERS];
	for (int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0) {
			/* Each process opens the store itself, as separate msb commands would. */
			struct msb_state cs;
			if (msb_state_open(home, &cs, NULL) < 0)
				_exit(1);
			for (int i = 0; i < ROUNDS; i++) {
				if (msb_state_update(&cs, "shared", "counter", incr, NULL, NULL) <
				    0)
					_exit(2);
				/* Readers never see a torn file. */
				char *d = NULL;
				size_t l = 0;
				if (msb_state_read(&cs, "shared", "counter", &d, &l, NULL) < 0 ||
				    l == 0 || strtol(d, NULL, 10) <= 0)
					_exit(3);
				free(d);
			}
			msb_state_close(&cs);
			_exit(0);
		}
	}
	for (int w = 0; w < WRITERS; w++) {
		int status = 0;
		assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(msb_state_open(home, &st, &err), 0);
	char *data = NULL;
	size_t len;
	assert_int_equal(msb_state_read(&st, "shared", "counter", &data, &len, &err), 0);
	/* No update was lost. */
	assert_int_equal(strtol(data, NULL, 10), WRITERS * ROUNDS);
	free(data);
	assert_int_equal(msb_state_sandbox_remove(&st, "shared", &err), 0);
	msb_state_close(&st);
}

static void test_concurrent_create_one_wins(void **state)
{
	(void)state;
	for (int round = 0; round < 5; round++) {
		pid_t pids[WRITERS];
		for (int w = 0; w < WRITERS; w++) {
			pids[w] = fork();
			assert_true(pids[w] >= 0);
			if (pids[w] == 0) {
				struct msb_state cs;
				if (msb_state_open(home, &cs, NULL) < 0)
					_exit(10);
				char spec[32];
				int l = snprintf(spec, sizeof(spec), "{\"writer\":%d}", w);
				int r = msb_state_sandbox_create(&cs, "race", "spec.json", spec,
								 (size_t)l, NULL);
				msb_state_close(&cs);
				_exit(r == 0 ? 0 : r == -EEXIST ? 1 : 11);
			}
		}
		int winners = 0;
		for (int w = 0; w < WRITERS; w++) {
			int status = 0;
			assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
			assert_true(WIFEXITED(status));
			int code = WEXITSTATUS(status);
			assert_true(code == 0 || code == 1);
			winners += code == 0;
		}
		assert_int_equal(winners, 1);
		struct msb_state st;
		struct msb_error err = MSB_ERROR_INIT;
		assert_int_equal(msb_state_open(home, &st, &err), 0);
		char *data = NULL;
		size_t len;
		assert_int_equal(msb_state_read(&st, "race", "spec.json", &data, &len, &err), 0);
		assert_non_null(strstr(data, "\"writer\":"));
		free(data);
		assert_int_equal(msb_state_sandbox_remove(&st, "race", &err), 0);
		msb_state_close(&st);
	}
}

static void test_default_home(void **state)
{
	(void)state;
	char buf[256];
	setenv("MSB_HOME", "/x/y", 1);
	assert_int_equal(msb_state_default_home(buf, sizeof(buf), NULL), 0);
	assert_string_equal(buf, "/x/y");
	unsetenv("MSB_HOME");
	assert_int_equal(msb_state_default_home(buf, sizeof(buf), NULL), 0);
	if (geteuid() == 0)
		assert_string_equal(buf, "/var/lib/msb");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_read_remove),
		cmocka_unit_test(test_leftovers_reaped),
		cmocka_unit_test(test_concurrent_writers),
		cmocka_unit_test(test_concurrent_create_one_wins),
		cmocka_unit_test(test_default_home),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
