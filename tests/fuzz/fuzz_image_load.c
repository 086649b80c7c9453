/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for msb_image_load: the input is a file a user was handed
 * ("msb image load hostile.tar"): an OCI archive or a docker-archive, plain or
 * compressed.  It is written to a file beside a store opened once under a
 * temp MSB_HOME (on /dev/shm when it can, so the store's fsyncs cost nothing)
 * and loaded with --tag localhost/fuzz:1.
 *
 * Besides memory safety (run under ASan/UBSan) it checks the contract:
 *  - an error comes with its code and a non-empty one-line message, no refs
 *    and nothing pinned;
 *  - success returns at least one name, the --tag among them, each pinned to
 *    an image that is whole in the store, whose config and layers are the
 *    sizes its manifest says (a docker-archive's manifest is msb's own);
 *  - either way images/tmp is empty afterwards (no writer left behind) and
 *    every file under images/blobs/sha256 hashes to its name (nothing
 *    unverified was published).
 * The store is then emptied (blobs, pins, diff_ids, lock files), so each
 * input starts from an empty store and only its own blobs are hashed.
 *
 * Seeds: tests/fuzz/corpus/image_load/: tiny OCI archives and docker-archives
 * (plain, gzip, xz, bzip2, zstd; links, nested indexes) written with Python's
 * tarfile; the plain *-min.tar ones have no end blocks, to fit -max_len=4096.
 * docker-dup-digest.tar is the regression input for want_add's size check.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msb/msb.h>

#include "image-archive.h"
#include "image-root.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define TAG "localhost/fuzz:1"

static char base[64];  /* the temp MSB_HOME */
static char input[96]; /* the file each input is written to */
static struct msb_store store;

/* Remove base and everything under it (files and directories only: what the store makes). */
static void rm_tree(int dfd, const char *name)
{
	if (unlinkat(dfd, name, 0) == 0)
		return;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			rm_tree(fd, de->d_name);
	closedir(d);
	unlinkat(dfd, name, AT_REMOVEDIR);
}

static void cleanup(void)
{
	msb_store_close(&store);
	if (base[0])
		rm_tree(AT_FDCWD, base);
}

static void setup(void)
{
	const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(base, sizeof(base), "%s/msb-fuzz-load.XXXXXX", dir);
	CHECK(mkdtemp(base));
	snprintf(input, sizeof(input), "%s/input", base);
	struct msb_error err = MSB_ERROR_INIT;
	CHECK(msb_store_open(base, &store, &err) == 0);
	atexit(cleanup);
}

/* The open directory images/<rel>, as a DIR the caller closes. */
static DIR *open_dir(const char *rel)
{
	int fd = openat(store.dirfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	CHECK(fd >= 0);
	DIR *d = fdopendir(fd);
	CHECK(d);
	return d;
}

static int is_dot(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..");
}

/* The blob `digest` is in the store and `size` bytes long. */
static void check_blob_size(const char *digest, int64_t size)
{
	char path[4096];
	struct stat st;
	CHECK(msb_store_blob_path(&store, digest, path, sizeof(path)) == 0);
	CHECK(stat(path, &st) == 0);
	if (st.st_size != size) {
		fprintf(stderr, "blob %s is %lld bytes, its descriptor says %lld\n", digest,
			(long long)st.st_size, (long long)size);
		CHECK(!"a loaded image's descriptors match its blobs");
	}
}

/* Unlink every entry of images/<rel> (all plain files); with check, each must hash to its name. */
static void empty_dir(const char *rel, int check)
{
	DIR *d = open_dir(rel);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (is_dot(de->d_name))
			continue;
		if (check) {
			int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			CHECK(fd >= 0);
			EVP_MD_CTX *md = EVP_MD_CTX_new();
			CHECK(md && EVP_DigestInit_ex(md, EVP_sha256(), NULL));
			uint8_t buf[16384];
			ssize_t k;
			while ((k = read(fd, buf, sizeof(buf))) > 0)
				CHECK(EVP_DigestUpdate(md, buf, (size_t)k));
			CHECK(k == 0);
			close(fd);
			unsigned char out[EVP_MAX_MD_SIZE];
			unsigned len = 0;
			CHECK(EVP_DigestFinal_ex(md, out, &len) && len == 32);
			EVP_MD_CTX_free(md);
			char hex[65];
			for (unsigned i = 0; i < 32; i++)
				snprintf(hex + 2 * i, 3, "%02x", out[i]);
			if (strcmp(hex, de->d_name)) {
				fprintf(stderr, "blob %s hashes to %s\n", de->d_name, hex);
				CHECK(!"a published blob matches its digest");
			}
		}
		CHECK(unlinkat(dirfd(d), de->d_name, 0) == 0);
	}
	closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!base[0])
		setup();
	int fd = open(input, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, data, size) == (ssize_t)size);
	close(fd);

	char **refs = (char **)1;
	size_t n = 1;
	struct msb_error err = MSB_ERROR_INIT;
	int r = msb_image_load(&store, input, TAG, &refs, &n, &err);
	if (r < 0) {
		if (err.code != r || !err.msg[0] || strchr(err.msg, '\n'))
			fprintf(stderr, "r=%d code=%d msg=%s\n", r, err.code, err.msg);
		CHECK(err.code == r);
		CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));
		CHECK(!refs && n == 0);
	} else {
		CHECK(r == 0 && refs && n > 0);
		int tagged = 0;
		for (size_t i = 0; i < n; i++) {
			char digest[72];
			struct msb_error e = MSB_ERROR_INIT;
			CHECK(msb_store_pin_get(&store, refs[i], digest, &e) == 0);
			struct msb_image img;
			CHECK(msb_image_open(&store, digest, &img, &e) == 0);
			const struct msb_manifest *m = &img.manifest;
			check_blob_size(m->config.digest, m->config.size);
			for (size_t j = 0; j < m->nlayers; j++)
				check_blob_size(m->layers[j].digest, m->layers[j].size);
			msb_image_close(&img);
			tagged |= !strcmp(refs[i], TAG);
		}
		CHECK(tagged);
	}
	msb_image_load_free(refs, n);

	/* No pins after a failure. */
	char **prefs, **pdigests;
	size_t pn;
	struct msb_error e = MSB_ERROR_INIT;
	CHECK(msb_store_pins(&store, &prefs, &pdigests, &pn, &e) == 0);
	CHECK(r == 0 || pn == 0);
	for (size_t i = 0; i < pn; i++) {
		free(prefs[i]);
		free(pdigests[i]);
	}
	free(prefs);
	free(pdigests);

	/* Nothing left in progress. */
	DIR *d = open_dir("tmp");
	struct dirent *de;
	while ((de = readdir(d)))
		if (!is_dot(de->d_name)) {
			fprintf(stderr, "left in images/tmp: %s\n", de->d_name);
			CHECK(!"images/tmp is empty");
		}
	closedir(d);

	empty_dir("blobs/sha256", 1);
	empty_dir("diffids", 0);
	empty_dir("locks", 0);
	if (unlinkat(store.dirfd, "refs.json", 0) < 0)
		CHECK(errno == ENOENT);
	return 0;
}
