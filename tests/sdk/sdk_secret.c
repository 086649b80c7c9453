/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-sdk-secret: makes a sandbox through the C SDK with a secret whose
 * value is given directly, as an application would (tests/e2e/secrets.sh,
 * tests/integration/test_sdk.py).
 *
 *   msb-sdk-secret [OPTION=VALUE | FLAG]... value=ENV [-- COMMAND...]
 *
 * OPTION=VALUE pairs go to msb_spec_set as written ("image=python",
 * "secret=K@api.example.com"; a FLAG without '=' is set without a value).
 * value=ENV reads ENV's value from stdin (one trailing newline dropped) and
 * gives it with msb_spec_set_secret_value: never in argv or the
 * environment.  Then msb_create; with a COMMAND, msb_exec runs it on this
 * process's stdio and "status N" goes to stderr; then msb_rm (forced).
 * Prints "created NAME".  Exit 0, or 1 with "sdk: MESSAGE".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msb/msb.h>

static int fail(const struct msb_error *err)
{
	fprintf(stderr, "sdk: %s\n", err->msg);
	return 1;
}

int main(int argc, char **argv)
{
	struct msb_spec *spec = msb_spec_new();
	struct msb_error err = MSB_ERROR_INIT;
	const char *value_env = NULL;
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--"); i++) {
		char *eq = strchr(argv[i], '=');
		if (eq)
			*eq = '\0';
		if (!strcmp(argv[i], "value")) {
			value_env = eq ? eq + 1 : NULL;
			continue;
		}
		if (msb_spec_set(spec, argv[i], eq ? eq + 1 : NULL, &err) < 0)
			return fail(&err);
	}
	if (value_env) {
		static char buf[16384];
		size_t n = fread(buf, 1, sizeof(buf), stdin);
		if (n && buf[n - 1] == '\n')
			n--;
		if (msb_spec_set_secret_value(spec, value_env, buf, n, &err) < 0)
			return fail(&err);
		explicit_bzero(buf, sizeof(buf));
	}
	char *name = NULL;
	if (msb_create(spec, &name, &err) < 0)
		return fail(&err);
	msb_spec_free(spec);
	printf("created %s\n", name);
	fflush(stdout);
	int rc = 0;
	if (i < argc - 1) {
		int status = -1;
		if (msb_exec(name, (const char *const *)argv + i + 1, -1, 1, 2, &status, &err) < 0)
			rc = fail(&err);
		else
			fprintf(stderr, "status %d\n", status);
	}
	if (msb_rm(name, 1, &err) < 0)
		rc = fail(&err);
	msb_free(name);
	return rc;
}
