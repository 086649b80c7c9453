/* SPDX-License-Identifier: Apache-2.0 */
/* The image store (core/image/store.c): verified publish, pins, locks, sweeps. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"

struct fx {
	char home[256];
	struct msb_store s;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->home, sizeof(f->home), "/tmp/msb-test-store-XXXXXX");
	if (!mkdtemp(f->home))
		return -1;
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_store_open(f->home, &f->s, &err) < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	msb_store_close(&f->s);
	nftw(f->home, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void digest_of(const void *buf, size_t len, char out[72])
{
	unsigned char md[32];
	unsigned n = 0;
	EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL);
	strcpy(out, "sha256:");
	for (int i = 0; i < 32; i++)
		sprintf(out + 7 + 2 * i, "%02x", md[i]);
}

/* Entries in images/<sub> (not . and ..). */
static int count_in(struct fx *f, const char *sub)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/images/%s", f->home, sub);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void assert_clean(struct fx *f)
{
	assert_int_equal(count_in(f, "tmp"), 0);
	assert_int_equal(count_in(f, "blobs/sha256"), 0);
}

static const char data[] = "layer bytes: the quick brown fox jumps over the lazy dog";

static void test_publish_verified(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char dg[72];
	digest_of(data, sizeof(data), dg);
	assert_false(msb_store_has(&f->s, dg));

	struct msb_blob_writer *w;
	assert_int_equal(msb_blob_writer_open(&f->s, dg, sizeof(data), &w, &err), 0);
	assert_int_equal(count_in(f, "tmp"), 1); /* in progress: in tmp, not in blobs */
	assert_int_equal(count_in(f, "blobs/sha256"), 0);
	assert_int_equal(msb_blob_writer_write(w, data, 10, &err), 0);
	assert_int_equal(msb_blob_writer_write(w, data + 10, sizeof(data) - 10, &err), 0);
	assert_int_equal(msb_blob_writer_written(w), sizeof(data));
	assert_int_equal(msb_blob_writer_commit(w, &err), 0);

	assert_true(msb_store_has(&f->s, dg));
	assert_int_equal(count_in(f, "tmp"), 0);
	char path[PATH_MAX];
	assert_int_equal(msb_store_blob_path(&f->s, dg, path, sizeof(path)), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0444);
	assert_int_equal(st.st_size, sizeof(data));

	uint8_t *buf;
	size_t len;
	assert_int_equal(msb_store_blob_read(&f->s, dg, 1024, &buf, &len, &err), 0);
	assert_int_equal(len, sizeof(data));
	assert_memory_equal(buf, data, len);
	free(buf);
	/* Over the caller's limit. */
	assert_int_equal(msb_store_blob_read(&f->s, dg, 8, &buf, &len, &err), -E2BIG);
	assert_null(buf);

	int fd = msb_store_blob_open(&f->s, dg, &err);
	assert_true(fd >= 0);
	close(fd);

	/* put of the same bytes: fine; of other bytes under this digest: refused. */
	assert_int_equal(msb_store_put(&f->s, dg, data, sizeof(data), &err), 0);
	assert_int_equal(msb_store_put(&f->s, dg, "other", 5, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, dg));
}

static void test_size_overflow(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char dg[72];
	digest_of(data, 10, dg);
	struct msb_blob_writer *w;
	assert_int_equal(msb_blob_writer_open(&f->s, dg, 10, &w, &err), 0);
	assert_int_equal(msb_blob_writer_write(w, data, 8, &err), 0);
	/* Past the descriptor's size: refused at once, not at the end. */
	assert_int_equal(msb_blob_writer_write(w, data + 8, 3, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "10 bytes"));
	msb_blob_writer_abort(w);
	assert_clean(f);

	/* Short: refused at commit, naming the blob and both sizes. */
	assert_int_equal(msb_blob_writer_open(&f->s, dg, 10, &w, &err), 0);
	assert_int_equal(msb_blob_writer_write(w, data, 7, &err), 0);
	assert_int_equal(msb_blob_writer_commit(w, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, dg));
	assert_non_null(strstr(err.msg, "got 7 bytes, expected 10"));
	assert_clean(f);
}

static void test_digest_mismatch(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char dg[72], other[72];
	digest_of(data, sizeof(data), dg);
	char bad[sizeof(data)];
	memcpy(bad, data, sizeof(data));
	bad[5] ^= 0xff; /* same size, one byte flipped */
	digest_of(bad, sizeof(bad), other);
	struct msb_blob_writer *w;
	assert_int_equal(msb_blob_writer_open(&f->s, dg, sizeof(data), &w, &err), 0);
	msb_blob_writer_label(w, "layer X from r/x");
	assert_int_equal(msb_blob_writer_write(w, bad, sizeof(bad), &err), 0);
	assert_int_equal(msb_blob_writer_commit(w, &err), -EBADMSG);
	assert_int_equal(err.code, -EBADMSG);
	assert_non_null(strstr(err.msg, "layer X from r/x: content digest"));
	assert_non_null(strstr(err.msg, other)); /* the actual digest */
	assert_false(msb_store_has(&f->s, dg));
	assert_clean(f);

	/* Unknown size: only the digest is checked, and still refused. */
	assert_int_equal(msb_blob_writer_open(&f->s, dg, -1, &w, &err), 0);
	assert_int_equal(msb_blob_writer_write(w, bad, sizeof(bad), &err), 0);
	assert_int_equal(msb_blob_writer_commit(w, &err), -EBADMSG);
	assert_clean(f);

	/* An invalid digest never gets a writer. */
	assert_int_equal(msb_blob_writer_open(&f->s, "sha256:../../etc", 1, &w, &err), -EINVAL);
	assert_null(w);
	assert_int_equal(msb_store_put(&f->s, "md5:abc", "x", 1, &err), -EINVAL);
	assert_clean(f);
}

static void test_reset(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char dg[72];
	digest_of(data, sizeof(data), dg);
	struct msb_blob_writer *w;
	assert_int_equal(msb_blob_writer_open(&f->s, dg, sizeof(data), &w, &err), 0);
	/* A first try that broke off halfway, with other bytes. */
	assert_int_equal(msb_blob_writer_write(w, "garbage garbage", 15, &err), 0);
	assert_int_equal(msb_blob_writer_reset(w, &err), 0);
	assert_int_equal(msb_blob_writer_written(w), 0);
	assert_int_equal(msb_blob_writer_write(w, data, sizeof(data), &err), 0);
	assert_int_equal(msb_blob_writer_commit(w, &err), 0);
	uint8_t *buf;
	size_t len;
	assert_int_equal(msb_store_blob_read(&f->s, dg, 1024, &buf, &len, &err), 0);
	assert_memory_equal(buf, data, sizeof(data));
	free(buf);
	assert_int_equal(count_in(f, "tmp"), 0);
}

static void test_corrupt_on_disk(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char dg[72], path[PATH_MAX];
	digest_of(data, sizeof(data), dg);
	assert_int_equal(msb_store_put(&f->s, dg, data, sizeof(data), &err), 0);
	msb_store_blob_path(&f->s, dg, path, sizeof(path));
	chmod(path, 0644);
	FILE *fp = fopen(path, "r+");
	assert_non_null(fp);
	fputc('X', fp);
	fclose(fp);
	uint8_t *buf;
	size_t len;
	/* Detected on read, and dropped so that a pull fetches it again. */
	assert_int_equal(msb_store_blob_read(&f->s, dg, 1024, &buf, &len, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "corrupt"));
	assert_false(msb_store_has(&f->s, dg));
}

static void test_pins(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char d1[72], d2[72], got[72];
	digest_of("one", 3, d1);
	digest_of("two", 3, d2);
	const char *r1 = "docker.io/library/busybox:latest", *r2 = "127.0.0.1:5000/a/b:v1";
	assert_int_equal(msb_store_pin_get(&f->s, r1, got, &err), -ENOENT);
	assert_int_equal(msb_store_pin_set(&f->s, r1, d1, &err), 0);
	assert_int_equal(msb_store_pin_set(&f->s, r2, d2, &err), 0);
	assert_int_equal(msb_store_pin_get(&f->s, r1, got, &err), 0);
	assert_string_equal(got, d1);
	/* Moving a pin. */
	assert_int_equal(msb_store_pin_set(&f->s, r1, d2, &err), 0);
	assert_int_equal(msb_store_pin_get(&f->s, r1, got, &err), 0);
	assert_string_equal(got, d2);

	char **refs, **digests;
	size_t n;
	assert_int_equal(msb_store_pins(&f->s, &refs, &digests, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(refs[0], r2); /* sorted */
	assert_string_equal(refs[1], r1);
	assert_string_equal(digests[0], d2);
	for (size_t i = 0; i < n; i++) {
		free(refs[i]);
		free(digests[i]);
	}
	free(refs);
	free(digests);

	assert_int_equal(msb_store_pin_remove(&f->s, r2, &err), 0);
	assert_int_equal(msb_store_pin_remove(&f->s, r2, &err), -ENOENT);
	assert_int_equal(msb_store_pin_get(&f->s, r2, got, &err), -ENOENT);
	assert_int_equal(msb_store_pin_set(&f->s, r2, "sha256:nothex", &err), -EINVAL);
	assert_int_equal(count_in(f, "tmp"), 0);

	/* A damaged refs.json is an error, never silently an empty set of pins. */
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/images/refs.json", f->home);
	FILE *fp = fopen(path, "w");
	fputs("{\"refs\": {\"x\": \"not a digest\"}}", fp);
	fclose(fp);
	assert_int_equal(msb_store_pin_get(&f->s, r1, got, &err), -EINVAL);
	assert_int_equal(msb_store_pin_set(&f->s, r1, d1, &err), -EINVAL);
}

static void test_diffids(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char d1[72], d2[72], got[72];
	digest_of("compressed", 10, d1);
	digest_of("plain", 5, d2);
	assert_int_equal(msb_store_diffid_get(&f->s, d1, got), -ENOENT);
	assert_int_equal(msb_store_diffid_set(&f->s, d1, d2, &err), 0);
	assert_int_equal(msb_store_diffid_get(&f->s, d1, got), 0);
	assert_string_equal(got, d2);
	assert_int_equal(msb_store_diffid_set(&f->s, d1, "x", &err), -EINVAL);
}

static void test_lock_names(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char dg[72];
	digest_of("x", 1, dg);
	int fd = msb_store_lock(&f->s, dg, &err);
	assert_true(fd >= 0);
	msb_store_unlock(fd);
	fd = msb_store_lock(&f->s, "root-image.1", &err);
	assert_true(fd >= 0);
	msb_store_unlock(fd);
	/* Nothing that could name a file outside locks/. */
	assert_int_equal(msb_store_lock(&f->s, "../escape", &err), -EINVAL);
	assert_int_equal(msb_store_lock(&f->s, "a/b", &err), -EINVAL);
	assert_int_equal(msb_store_lock(&f->s, "", &err), -EINVAL);
	assert_int_equal(msb_store_lock(&f->s, ".hidden", &err), -EINVAL);
}

/* Writers of one digest in several processes: one downloads, the others find it present. */
static void test_concurrent_writers(void **state)
{
	struct fx *f = *state;
	enum { N = 6 };
	static uint8_t big[256 * 1024];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + 3);
	char dg[72];
	digest_of(big, sizeof(big), dg);
	pid_t pids[N];
	for (int i = 0; i < N; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			struct msb_store s;
			struct msb_error err = MSB_ERROR_INIT;
			if (msb_store_open(f->home, &s, &err) < 0)
				_exit(1);
			int lk = msb_store_lock(&s, dg, &err);
			if (lk < 0)
				_exit(2);
			if (msb_store_has(&s, dg))
				_exit(10); /* saw it present: no download */
			struct msb_blob_writer *w;
			if (msb_blob_writer_open(&s, dg, sizeof(big), &w, &err) < 0)
				_exit(3);
			/* Slowly, so the others really wait on the lock. */
			for (size_t off = 0; off < sizeof(big); off += 16384) {
				if (msb_blob_writer_write(w, big + off, 16384, &err) < 0)
					_exit(4);
				usleep(2000);
			}
			if (msb_blob_writer_commit(w, &err) < 0)
				_exit(5);
			msb_store_unlock(lk);
			_exit(20); /* published it */
		}
	}
	int published = 0, present = 0;
	for (int i = 0; i < N; i++) {
		int st;
		assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
		assert_true(WIFEXITED(st));
		if (WEXITSTATUS(st) == 20)
			published++;
		else if (WEXITSTATUS(st) == 10)
			present++;
		else
			fail_msg("child exited %d", WEXITSTATUS(st));
	}
	assert_int_equal(published, 1);
	assert_int_equal(present, N - 1);
	struct msb_error err = MSB_ERROR_INIT;
	uint8_t *buf;
	size_t len;
	assert_int_equal(msb_store_blob_read(&f->s, dg, sizeof(big), &buf, &len, &err), 0);
	free(buf);
	assert_int_equal(count_in(f, "tmp"), 0);
}

static void make_old(struct fx *f, const char *name)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/images/tmp/%s", f->home, name);
	struct timespec ts[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
	assert_int_equal(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void test_sweep(void **state)
{
	struct fx *f = *state;
	struct msb_error err = MSB_ERROR_INIT;
	char path[PATH_MAX];
	/* What a killed process left: a temp blob and a temp directory with files in it. */
	snprintf(path, sizeof(path), "%s/images/tmp/blob.99999.dead", f->home);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	make_old(f, "blob.99999.dead");
	snprintf(path, sizeof(path), "%s/images/tmp/dir.99999.dead", f->home);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/images/tmp/dir.99999.dead/f", f->home);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	make_old(f, "dir.99999.dead");
	/* Recent and unowned: may be a file whose owner is about to lock it. */
	snprintf(path, sizeof(path), "%s/images/tmp/blob.99999.fresh", f->home);
	close(open(path, O_CREAT | O_WRONLY, 0600));

	/* Live work of this process: an open writer (even an old-looking one) and a tmpdir. */
	char dg[72];
	digest_of(data, sizeof(data), dg);
	struct msb_blob_writer *w;
	assert_int_equal(msb_blob_writer_open(&f->s, dg, sizeof(data), &w, &err), 0);
	char tmpdir[PATH_MAX];
	assert_int_equal(msb_store_tmpdir(&f->s, tmpdir, sizeof(tmpdir), &err), 0);
	struct stat st;
	assert_int_equal(stat(tmpdir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(count_in(f, "tmp"), 5);

	assert_int_equal(msb_store_sweep(&f->s, 60), 2);
	assert_int_equal(count_in(f, "tmp"), 3);
	assert_int_equal(stat(tmpdir, &st), 0);
	/* With no age limit the fresh orphan goes too, the live ones stay. */
	assert_int_equal(msb_store_sweep(&f->s, 0), 1);
	assert_int_equal(count_in(f, "tmp"), 2);

	assert_int_equal(msb_blob_writer_write(w, data, sizeof(data), &err), 0);
	assert_int_equal(msb_blob_writer_commit(w, &err), 0);
	assert_true(msb_store_has(&f->s, dg));
	rmdir(tmpdir);
	assert_int_equal(count_in(f, "tmp"), 0);

	/* A new process's msb_store_open sweeps what is old and unowned. */
	snprintf(path, sizeof(path), "%s/images/tmp/blob.99999.dead2", f->home);
	close(open(path, O_CREAT | O_WRONLY, 0600));
	make_old(f, "blob.99999.dead2");
	struct msb_store s2;
	assert_int_equal(msb_store_open(f->home, &s2, &err), 0);
	assert_int_equal(count_in(f, "tmp"), 0);
	msb_store_close(&s2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_publish_verified, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_digest_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_on_disk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pins, setup, teardown),
		cmocka_unit_test_setup_teardown(test_diffids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
