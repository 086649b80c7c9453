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
	char dir[256], a[300], b[300], tmpl[300], images[300], cmd[700];
	snprintf(dir, sizeof(dir), "%s/sandboxes/one", home);
	assert_int_equal(msb_mkdir_p(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/sandboxes/two", home);
	assert_int_equal(msb_mkdir_p(dir, 0700), 0);
	snprintf(a, sizeof(a), "%s/sandboxes/one/upper.ext4", home);
	snprintf(b, sizeof(b), "%s/sandboxes/two/upper.ext4", home);
	snprintf(tmpl, sizeof(tmpl), "%s/images/upper-%llu.v2.ext4", home, 1ull << 30);
	snprintf(images, sizeof(images), "%s/images", home);
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_rootfs_upper(a, 1ull << 30, images, &err), 0);
	assert_int_equal(access(tmpl, R_OK), 0); /* made once ... */
	assert_int_equal(msb_rootfs_upper(b, 1ull << 30, images, &err), 0);
	struct stat st;
	assert_int_equal(stat(b, &st), 0);
	assert_int_equal(st.st_size, 1ll << 30);
	/* ... and copied sparse: a few hundred KiB of metadata (no resize inode) */
	assert_true(st.st_blocks * 512 < (384ll << 10)); /* (with one: ~660 KiB at 1 GiB) */
	/* A copy is a whole, clean filesystem. */
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >/dev/null 2>&1", b);
	assert_int_equal(system(cmd), 0);
	/* An existing file is never overwritten. */
	assert_int_equal(msb_rootfs_upper(b, 1ull << 30, images, &err), -EEXIST);
	/* Without an images directory it is formatted directly. */
	char c[300];
	snprintf(c, sizeof(c), "%s/plain.ext4", home);
	assert_int_equal(msb_rootfs_upper(c, 64ull << 20, NULL, &err), 0);
	snprintf(cmd, sizeof(cmd), "e2fsck -fn '%s' >/dev/null 2>&1 && rm -rf '%s'", c, home);
	assert_int_equal(system(cmd), 0);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* --rootfs trees: the content hash is recorded with a stat fingerprint and
 * reused while the tree is unchanged; any change is seen. */
static void test_tree_hash_cache(void **state)
{
	(void)state;
	char dir[] = "/tmp/msb-test-tree.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char tree[300], images[300], f1[340], trees[340], cmd[700];
	snprintf(tree, sizeof(tree), "%s/tree", dir);
	snprintf(images, sizeof(images), "%s/images", dir);
	snprintf(trees, sizeof(trees), "%s/trees", images);
	snprintf(f1, sizeof(f1), "%s/file", tree);
	assert_int_equal(mkdir(tree, 0755), 0);
	write_file(f1, "one\n");
	struct msb_error err = MSB_ERROR_INIT;
	char *img1 = NULL, *img2 = NULL, *img3 = NULL, *img4 = NULL, full[65];
	/* Just written: "racy", so nothing is recorded yet. */
	assert_int_equal(msb_rootfs_image(tree, images, &img1, &err), 0);
	assert_int_not_equal(access(trees, F_OK), 0);
	sleep(3);
	assert_int_equal(msb_rootfs_image(tree, images, &img2, &err), 0);
	assert_string_equal(img1, img2);
	snprintf(cmd, sizeof(cmd), "test \"$(ls '%s' | wc -l)\" = 1", trees);
	assert_int_equal(system(cmd), 0); /* recorded now */
	assert_int_equal(msb_rootfs_image(tree, images, &img3, &err), 0);
	assert_string_equal(img1, img3); /* from the record */
	/* Same size, new content: the fingerprint (times) differs, the hash follows. */
	write_file(f1, "two\n");
	assert_int_equal(msb_rootfs_image(tree, images, &img4, &err), 0);
	assert_string_not_equal(img1, img4);
	assert_int_equal(msb_tree_hash(tree, full, &err), 0);
	assert_non_null(strstr(img4, full));
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(img1);
	free(img2);
	free(img3);
	free(img4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_upper_from_template),
		cmocka_unit_test(test_tree_hash_cache),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
