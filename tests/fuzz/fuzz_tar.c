/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for msb_layer_apply: the input is a layer from a hostile
 * registry (tar, or gzip/zstd/bzip2/xz of one), put in a memfd and applied
 * onto a fresh tree <base>/root with small limits (64 entries, 1 MiB).
 *
 * Besides memory safety (run under ASan/UBSan) it checks the contract:
 *  - an error comes with its code and a non-empty one-line message, and no
 *    diff_id; success comes with "sha256:" and 64 hex digits, which for an
 *    uncompressed input is the sha256 of the input itself;
 *  - the limits hold (entries, bytes);
 *  - nothing appears beside the root (no escape), and the tree holds no
 *    device node and nothing named ".wh.*".
 * The tree is then removed (by fds, never following a symlink).
 *
 * Seeds: tests/fuzz/corpus/tar/.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msb/msb.h>

#include "layer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define MAX_ENTRIES 64
#define MAX_BYTES   (1u << 20)

static int base_fd = -1;
static char base[64];

static void remove_base(void)
{
	if (base[0])
		rmdir(base);
}

/* Remove dfd/name and below; abort on what no layer may leave in the tree. */
static void rm_tree(int dfd, const char *name, int depth)
{
	struct stat sb;
	CHECK(fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0);
	CHECK(!S_ISCHR(sb.st_mode) && !S_ISBLK(sb.st_mode));
	CHECK(strncmp(name, ".wh.", 4) != 0);
	if (!S_ISDIR(sb.st_mode)) {
		CHECK(unlinkat(dfd, name, 0) == 0);
		return;
	}
	CHECK(depth < 4096);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	CHECK(fd >= 0);
	for (;;) {
		/* Read one name at a time: removing while iterating is then harmless. */
		int dup_fd = dup(fd);
		CHECK(dup_fd >= 0);
		DIR *d = fdopendir(dup_fd);
		CHECK(d);
		rewinddir(d);
		struct dirent *de;
		char child[256] = "";
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				snprintf(child, sizeof(child), "%s", de->d_name);
				break;
			}
		closedir(d);
		if (!child[0])
			break;
		rm_tree(fd, child, depth + 1);
	}
	close(fd);
	CHECK(unlinkat(dfd, name, AT_REMOVEDIR) == 0);
}

static int compressed(const uint8_t *data, size_t size)
{
	static const struct {
		const char *magic;
		size_t len;
	} magics[] = {
		{"\x1f\x8b", 2},
		{"\x28\xb5\x2f\xfd", 4},
		{"BZh", 3},
		{"\xfd"
		 "7zXZ",
		 6},
	};
	for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++)
		if (size >= magics[i].len && !memcmp(data, magics[i].magic, magics[i].len))
			return 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (base_fd < 0) {
		const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(base, sizeof(base), "%s/msb-fuzz-tar.XXXXXX", dir);
		CHECK(mkdtemp(base));
		base_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		CHECK(base_fd >= 0);
		atexit(remove_base);
	}
	CHECK(mkdirat(base_fd, "root", 0755) == 0);
	int root_fd = openat(base_fd, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
	CHECK(root_fd >= 0);
	int fd = memfd_create("layer", MFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(write(fd, data, size) == (ssize_t)size);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);

	struct msb_layer_limits lim = {.max_entries = MAX_ENTRIES, .max_bytes = MAX_BYTES};
	struct msb_layer_stats st;
	struct msb_error err = MSB_ERROR_INIT;
	int r = msb_layer_apply(root_fd, fd, &lim, &st, &err);
	close(fd);
	close(root_fd);

	if (r < 0) {
		CHECK(err.code == r);
		CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));
		CHECK(st.diff_id[0] == '\0');
	} else {
		CHECK(r == 0);
		CHECK(strlen(st.diff_id) == 71 && !strncmp(st.diff_id, "sha256:", 7));
		if (!compressed(data, size)) {
			unsigned char md[32];
			unsigned len = 0;
			char want[72];
			CHECK(EVP_Digest(data, size, md, &len, EVP_sha256(), NULL) == 1);
			char *p = want + sprintf(want, "sha256:");
			for (unsigned i = 0; i < len; i++)
				p += sprintf(p, "%02x", md[i]);
			CHECK(strcmp(want, st.diff_id) == 0);
		}
	}
	CHECK(st.entries <= MAX_ENTRIES && st.bytes <= MAX_BYTES);

	/* Nothing beside the root. */
	int dup_fd = dup(base_fd);
	CHECK(dup_fd >= 0);
	DIR *d = fdopendir(dup_fd);
	CHECK(d);
	rewinddir(d);
	struct dirent *de;
	while ((de = readdir(d)))
		CHECK(!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		      !strcmp(de->d_name, "root"));
	closedir(d);
	rm_tree(base_fd, "root", 0);
	return 0;
}
