/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer: the storage module's FUSE server (plugins/storage) — request
 * copy-in, name parsing and every operation — over a scratch share in a temp
 * directory.  The first input bytes choose the share (read-write or
 * read-only), the out buffer's size, how the request is cut into iovecs and
 * whether it goes through handle_ref (a READ's payload by reference, then
 * checked and released); the rest is the request.  Every reply must be well
 * formed: its length what handle returned, within the out buffer, for the
 * request's unique.
 *
 * SETLKW is turned into SETLK: every handle belongs to this one process, and
 * a blocking lock against another of its own handles would wait forever.
 * Shares are rebuilt every few thousand inputs so what the inputs create
 * (files, open handles, looked-up inodes) stays small.
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RESET_EVERY 4000
#define OUT_MAX	    (64u * 1024)

static char top[64];
static struct fsrv *shares[2];
static unsigned runs;
static uint8_t req[8192], out[OUT_MAX + 16];

static void put(const char *rel, const char *text)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/rw/%s", top, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		abort();
	if (write(fd, text, strlen(text)) < 0)
		abort();
	close(fd);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void cleanup(void)
{
	for (int i = 0; i < 2; i++)
		fsrv_close(shares[i]);
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void send_init(struct fsrv *fs)
{
	struct {
		struct fuse_in_header h;
		struct fuse_init_in i;
	} r;
	memset(&r, 0, sizeof(r));
	r.h.len = sizeof(r);
	r.h.opcode = FUSE_INIT;
	r.h.unique = 1;
	r.i.major = 7;
	r.i.minor = 38;
	r.i.flags = 0xffffffffu;
	struct iovec in = {&r, sizeof(r)}, o = {out, sizeof(out)};
	if (fsrv_handle(fs, &in, 1, &o, 1) <= 0)
		abort();
}

static void setup(void)
{
	char p[256];
	if (!top[0]) {
		snprintf(top, sizeof(top), "/tmp/msb-fuzz-fuse.XXXXXX");
		if (!mkdtemp(top))
			abort();
		atexit(cleanup);
	}
	for (int i = 0; i < 2; i++)
		fsrv_close(shares[i]);
	snprintf(p, sizeof(p), "%s/rw", top);
	nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	if (mkdir(p, 0755) < 0)
		abort();
	put("file", "some data\n");
	snprintf(p, sizeof(p), "%s/rw/dir", top);
	mkdir(p, 0755);
	put("dir/inner", "inner\n");
	snprintf(p, sizeof(p), "%s/rw/link", top);
	if (symlink("../outside", p) < 0)
		abort();
	snprintf(p, sizeof(p), "%s/rw/fifo", top);
	mkfifo(p, 0644);
	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/rw", top);
		struct msb_share share = {
			.size = sizeof(share),
			.host_path = p,
			.guest_path = "/mnt",
			.read_only = i,
			.tag = "fuzz",
			.identity = MSB_SHARE_IDENTITY_STRICT,
		};
		if (fsrv_open(NULL, &share, &shares[i], NULL) < 0)
			abort();
		send_init(shares[i]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!shares[0] || ++runs % RESET_EVERY == 0)
		setup();
	if (size < 4)
		return 0;
	/* byte 0: share, segment count, fix len, by ref; bytes 1-2: out size; byte 3: out split. */
	struct fsrv *fs = shares[data[0] & 1];
	unsigned nseg = 1 + ((data[0] >> 1) & 7);
	size_t outcap = ((size_t)data[1] | (size_t)data[2] << 8) % OUT_MAX;
	size_t outcut = data[3] % (outcap + 1);
	int fix_len = data[0] & 0x10;
	int by_ref = data[0] & 0x20;
	data += 4;
	size -= 4;
	/* The next nseg - 1 bytes are segment lengths; the rest is the request. */
	uint8_t cuts[8] = {0};
	for (unsigned i = 0; i + 1 < nseg && size; i++, data++, size--)
		cuts[i] = *data;
	if (size > sizeof(req))
		size = sizeof(req);
	memcpy(req, data, size);
	if (size >= sizeof(struct fuse_in_header)) {
		struct fuse_in_header h;
		memcpy(&h, req, sizeof(h));
		if (h.opcode == FUSE_SETLKW)
			h.opcode = FUSE_SETLK;
		/* Half the time the length is made right, to get past the framing checks. */
		if (fix_len) {
			h.len = (uint32_t)size;
			h.total_extlen = 0;
		}
		memcpy(req, &h, sizeof(h));
	}
	struct iovec in[8];
	size_t off = 0;
	unsigned n = 0;
	for (; n < nseg && off <= size; n++) {
		size_t l = n + 1 == nseg ? size - off : cuts[n];
		if (l > size - off)
			l = size - off;
		in[n] = (struct iovec){req + off, l};
		off += l;
	}
	/* Two out buffers with a gap between them. */
	struct iovec o[2] = {{out, outcut}, {out + outcut + 16, outcap - outcut}};
	size_t cap = o[0].iov_len + o[1].iov_len;
	/* Bit 5: through handle_ref (ABI 1.4), which may name a READ's payload. */
	struct msb_fs_ref ref = {.size = sizeof(ref), .max = (uint32_t)outcap, .fd = -1};
	int rc = by_ref ? fsrv_handle_ref(fs, in, n, o, 2, &ref) : fsrv_handle(fs, in, n, o, 2);
	if (ref.fd >= 0) {
		struct fuse_out_header oh;
		if (rc != (int)sizeof(oh) || ref.len > ref.max || !ref.token ||
		    fsrv_iov_read(o, 2, 0, &oh, sizeof(oh)) != sizeof(oh) || oh.error ||
		    oh.len != sizeof(oh) + ref.len || fcntl(ref.fd, F_GETFD) < 0)
			abort();
		fsrv_ref_done(fs, &ref);
		if (ref.fd != -1 || ref.token)
			abort();
		rc = 0;
	}
	if (rc > 0) {
		struct fuse_out_header oh;
		struct fuse_in_header h;
		if ((size_t)rc > cap || fsrv_iov_read(o, 2, 0, &oh, sizeof(oh)) != sizeof(oh))
			abort();
		memcpy(&h, req, sizeof(h));
		if (oh.len != (uint32_t)rc || oh.unique != h.unique)
			abort();
		if (oh.error > 0 || oh.error < -4095 || (oh.error && oh.len != sizeof(oh)))
			abort();
	}
	if (!__atomic_load_n(&fs->inited, __ATOMIC_ACQUIRE))
		send_init(fs);
	return 0;
}
