/* SPDX-License-Identifier: Apache-2.0 */
/* Root filesystems: the per-sandbox upper disk, copied from its template. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "rootfs.h"

static void test_upper_from_template(void **state)
{
	(void)state;
	char home[] = "/tmp/msb-test-rootfs.XXXXXX";
	assert_non_null(mkdtemp(home));
	char dir[256], a[300], b[300], tmpl[300], cmd[700];
	snprintf(dir, sizeof(dir), "%s/sandboxes/one", home);
	assert_int_equal(msb_mkdir_p(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/sandboxes/two", home);
	assert_int_equal(msb_mkdir_p(dir, 0700), 0);
	snprintf(a, sizeof(a), "%s/sandboxes/one/upper.ext4", home);
	snprintf(b, sizeof(b), "%s/sandboxes/two/upper.ext4", home);
	snprintf(tmpl, sizeof(tmpl), "%s/images/upper-%llu.ext4", home, 1ull << 30);
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_rootfs_upper(a, 1ull << 30, &err), 0);
	assert_int_equal(access(tmpl, R_OK), 0); /* made once ... */
	assert_int_equal(msb_rootfs_upper(b, 1ull << 30, &err), 0);
	struct stat st;
	assert_int_equal(stat(b, &st), 0);
	assert_int_equal(st.st_size, 1ll << 30);
	assert_true(st.st_blocks * 512 < (16ll << 20)); /* ... and copied sparse */
	/* A copy is a whole, clean filesystem. */
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >/dev/null 2>&1", b);
	assert_int_equal(system(cmd), 0);
	/* An existing file is never overwritten. */
	assert_int_equal(msb_rootfs_upper(b, 1ull << 30, &err), -EEXIST);
	/* Outside a state home it is formatted directly. */
	char c[300];
	snprintf(c, sizeof(c), "%s/plain.ext4", home);
	assert_int_equal(msb_rootfs_upper(c, 64ull << 20, &err), 0);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >/dev/null 2>&1 && rm -rf '%s'", c, home);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_upper_from_template),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
