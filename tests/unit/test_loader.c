/* SPDX-License-Identifier: Apache-2.0 */
/* The loader: every refusal rule of DESIGN.md, with a fixture module each. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "host.h"
#include "registry.h"

static const struct msb_module *load_one(struct msb_registry *reg, const char *file)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", FIXTURE_DIR, file);
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_registry_load_file(reg, path, &err), 0);
	assert_true(reg->count > 0);
	return &reg->modules[reg->count - 1];
}

static void expect_refused(const char *file, const char *const *needles)
{
	struct msb_registry reg = {0};
	const struct msb_module *m = load_one(&reg, file);
	if (m->loaded)
		fail_msg("%s was loaded", file);
	assert_non_null(m->reason);
	assert_null(strchr(m->reason, '\n'));
	/* Every refusal names the file. */
	assert_non_null(strstr(m->reason, file));
	for (size_t i = 0; needles[i]; i++)
		if (!strstr(m->reason, needles[i]))
			fail_msg("%s: reason '%s' lacks '%s'", file, m->reason, needles[i]);
	msb_registry_free(&reg);
}

#define REFUSED(file, ...)                                                                         \
	do {                                                                                       \
		static const char *const n_[] = {__VA_ARGS__, NULL};                               \
		expect_refused(file, n_);                                                          \
	} while (0)

static void test_good_loads(void **state)
{
	(void)state;
	struct msb_registry reg = {0};
	const struct msb_module *m = load_one(&reg, "fx-good.so");
	assert_true(m->loaded);
	assert_string_equal(m->name, "fx-good");
	assert_string_equal(m->version, "9.9.9");
	assert_int_equal(m->desc.kind, MSB_PLUGIN_HV);
	assert_non_null(m->ops.hv.start);
	/* The host copy's ops pointer is the host's own, not the module's. */
	assert_ptr_equal(m->desc.ops, &m->ops);
	assert_ptr_equal(msb_registry_find(&reg, MSB_PLUGIN_HV, "fx-good"), m);
	assert_null(msb_registry_find(&reg, MSB_PLUGIN_NET, "fx-good"));
	msb_registry_free(&reg);
}

static void test_refusals(void **state)
{
	(void)state;
	/* Version errors name the module and both versions. */
	REFUSED("fx-bad-major.so", "\"fx-major\"", "ABI 2.0", "ABI 1.4", "major");
	REFUSED("fx-newer-minor.so", "\"fx-minor\"", "ABI 1.7", "ABI 1.4", "newer");
	REFUSED("fx-size-small.so", "\"fx-small\"", "too small");
	REFUSED("fx-size-big.so", "\"fx-big\"", "larger than");
	REFUSED("fx-no-create.so", "\"fx-nocreate\"", "'create'");
	REFUSED("fx-no-symbol.so", "no msb_plugin_entry_v1 symbol");
	REFUSED("fx-null-desc.so", "no descriptor");
	REFUSED("fx-bad-kind.so", "\"fx-kind\"", "unknown module kind 9");
	REFUSED("fx-bad-name.so", "invalid module name");
	REFUSED("fx-ops-small.so", "\"fx-opssmall\"", "ops table size 4 is too small");
	REFUSED("fx-missing-op.so", "\"fx-missingop\"", "'start'");
	REFUSED("fx-unresolved.so", "not a loadable module",
		"msb_fixture_symbol_that_does_not_exist");
	REFUSED("fx-garbage.so", "not a loadable module");
}

static void test_scan_and_duplicates(void **state)
{
	(void)state;
	struct msb_registry reg = {0};
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_registry_add_dir(&reg, FIXTURE_DIR, &err), 0);
	assert_int_equal(msb_registry_add_dir(&reg, FIXTURE_DIR, &err), 0); /* deduplicated */
	assert_int_equal(reg.nsearch, 1);
	assert_int_equal(msb_registry_scan(&reg, &err), 0);
	size_t loaded = 0, refused = 0;
	const struct msb_module *dup = NULL;
	for (size_t i = 0; i < reg.count; i++) {
		if (reg.modules[i].loaded)
			loaded++;
		else
			refused++;
		if (strstr(reg.modules[i].file, "fx-zz-duplicate.so"))
			dup = &reg.modules[i];
	}
	/* fx-good loads; everything else is refused, and the scan goes on. */
	assert_int_equal(loaded, 1);
	assert_int_equal(refused, 14);
	assert_non_null(dup);
	assert_false(dup->loaded);
	assert_non_null(strstr(dup->reason, "duplicate"));
	assert_non_null(strstr(dup->reason, "fx-good.so"));
	/* Rescanning finds the same files and does not add them twice. */
	size_t before = reg.count;
	assert_int_equal(msb_registry_scan(&reg, &err), 0);
	assert_int_equal(reg.count, before);
	msb_registry_free(&reg);
}

/* A resolve loads files in scan order only until the module is found. */
static void test_resolve_loads_only_what_it_needs(void **state)
{
	(void)state;
	struct msb_registry full = {0}, lazy = {0};
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_registry_add_dir(&full, FIXTURE_DIR, &err), 0);
	assert_int_equal(msb_registry_add_dir(&lazy, FIXTURE_DIR, &err), 0);
	assert_int_equal(msb_registry_scan(&full, &err), 0);
	assert_int_equal(msb_registry_resolve(&lazy, MSB_PLUGIN_HV, "fx-good", &err), 0);
	const struct msb_module *a = msb_registry_find(&full, MSB_PLUGIN_HV, "fx-good");
	const struct msb_module *b = msb_registry_find(&lazy, MSB_PLUGIN_HV, "fx-good");
	assert_non_null(a);
	assert_non_null(b);
	assert_string_equal(a->file, b->file); /* the one a full scan picks */
	/* Files after it (fx-garbage ... fx-zz-duplicate) were never opened. */
	assert_true(lazy.count < full.count);
	for (size_t i = 0; i < lazy.count; i++)
		assert_null(strstr(lazy.modules[i].file, "fx-zz-duplicate.so"));
	/* Found already: nothing more is loaded. */
	size_t before = lazy.count;
	assert_int_equal(msb_registry_resolve(&lazy, MSB_PLUGIN_HV, "fx-good", &err), 0);
	assert_int_equal(lazy.count, before);
	/* Not there: every file is tried, none twice, and it is no error. */
	assert_int_equal(msb_registry_resolve(&lazy, MSB_PLUGIN_NET, "nope", &err), 0);
	assert_null(msb_registry_find(&lazy, MSB_PLUGIN_NET, "nope"));
	assert_int_equal(lazy.count, full.count);
	msb_registry_free(&full);
	msb_registry_free(&lazy);
}

static void test_missing_dir_is_not_an_error(void **state)
{
	(void)state;
	struct msb_registry reg = {0};
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_registry_add_dir(&reg, "/nonexistent/msb/plugins", &err), 0);
	assert_int_equal(msb_registry_scan(&reg, &err), 0);
	assert_int_equal(reg.count, 0);
	msb_registry_free(&reg);
}

static void test_plugin_path_env(void **state)
{
	(void)state;
	struct msb_registry reg = {0};
	struct msb_error err = MSB_ERROR_INIT;
	setenv("MSB_PLUGIN_PATH", "/a::/b:" FIXTURE_DIR, 1);
	assert_int_equal(msb_registry_default_path(&reg, NULL, &err), 0);
	unsetenv("MSB_PLUGIN_PATH");
	/* Order kept, empty entries skipped, the installed dir last. */
	assert_true(reg.nsearch >= 4);
	assert_string_equal(reg.search_path[0], "/a");
	assert_string_equal(reg.search_path[1], "/b");
	assert_string_equal(reg.search_path[2], FIXTURE_DIR);
	assert_string_equal(reg.search_path[reg.nsearch - 1], MSB_PLUGIN_DIR);
	msb_registry_free(&reg);
}

static void test_instance_lifecycle(void **state)
{
	(void)state;
	struct msb_registry reg = {0};
	const struct msb_module *m = load_one(&reg, "fx-good.so");
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_instance *in = NULL;
	const char *spec = "{\"name\":\"box\",\"resources\":{\"cpus\":2,\"memory\":1024},"
			   "\"network\":{\"enabled\":true}}";
	assert_int_equal(msb_instance_create(m, "box", "/tmp/x", spec, NULL, &in, &err), 0);
	const struct msb_host *h = &in->host;
	assert_int_equal(h->abi, MSB_PLUGIN_ABI);
	assert_int_equal(h->size, sizeof(struct msb_host));
	assert_true(MSB_HOST_HAS(h, thread_create));
	assert_string_equal(h->sandbox_name, "box");
	assert_string_equal(h->config_get(h, "resources.cpus"), "2");
	assert_string_equal(h->config_get(h, "network.enabled"), "true");
	assert_null(h->config_get(h, "resources.nope"));
	assert_null(h->config_get(h, "name.deeper"));
	assert_int_equal(h->fd_add(h, 0, MSB_FD_READ, NULL, NULL), -ENOSYS); /* no loop */
	assert_int_equal(msb_instance_phase(in, MSB_PHASE_PREPARE, &err), 0);
	msb_instance_destroy(in);

	/* A module's create failure comes back as one line naming the module. */
	in = NULL;
	assert_int_equal(
		msb_instance_create(m, "x", "", "{\"name\":\"fail-create\"}", NULL, &in, &err),
		-EPERM);
	assert_null(in);
	assert_non_null(strstr(err.msg, "fx-good"));
	assert_non_null(strstr(err.msg, "told to fail"));
	msb_registry_free(&reg);
}

static void *thread_fn(void *arg)
{
	*(int *)arg = 42;
	return NULL;
}

static void test_thread_create(void **state)
{
	(void)state;
	struct msb_registry reg = {0};
	const struct msb_module *m = load_one(&reg, "fx-good.so");
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_instance *in = NULL;
	assert_int_equal(msb_instance_create(m, "box", "", "{}", NULL, &in, &err), 0);
	int v = 0;
	unsigned long tid = 0;
	assert_int_equal(
		in->host.thread_create(&in->host, MSB_THREAD_IO, "fx-io", thread_fn, &v, &tid), 0);
	assert_int_equal(pthread_join((pthread_t)tid, NULL), 0);
	assert_int_equal(v, 42);
	assert_int_equal(in->host.thread_create(&in->host, 99, "bad", thread_fn, &v, &tid),
			 -EINVAL);
	msb_instance_destroy(in);
	msb_registry_free(&reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_loads),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_scan_and_duplicates),
		cmocka_unit_test(test_resolve_loads_only_what_it_needs),
		cmocka_unit_test(test_missing_dir_is_not_an_error),
		cmocka_unit_test(test_plugin_path_env),
		cmocka_unit_test(test_instance_lifecycle),
		cmocka_unit_test(test_thread_create),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
