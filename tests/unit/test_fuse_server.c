/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The storage module's FUSE-protocol file server (plugins/storage), driven
 * by hand-built requests through the module's own share_open / handle, over
 * a scratch share in a temp directory.  Every request is what a hostile
 * guest could send: escapes by name, by symlink, by node type, forged ids,
 * malformed framing; read-only and identity rules are checked against the
 * host tree itself.  Some checks run again in a forked child where a seccomp
 * filter makes openat2 fail with ENOSYS, so the fallback resolver runs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/capability.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include <msb/msb-plugin.h>

#include "fs.h"

const struct msb_plugin_desc *msb_plugin_entry_v1(void);

/* In a forked child a failed check exits; in the test process it fails the test. */
static int in_child;
#define EXPECT(c)                                                                                  \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			if (in_child) {                                                            \
				fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c);            \
				_exit(10);                                                         \
			}                                                                          \
			fail_msg("%s:%d: %s", __FILE__, __LINE__, #c);                             \
		}                                                                                  \
	} while (0)
#define EXPECT_EQ(a, b)                                                                            \
	do {                                                                                       \
		long long _a = (long long)(a), _b = (long long)(b);                                \
		if (_a != _b) {                                                                    \
			if (in_child) {                                                            \
				fprintf(stderr, "%s:%d: %s == %lld, want %lld\n", __FILE__,        \
					__LINE__, #a, _a, _b);                                     \
				_exit(10);                                                         \
			}                                                                          \
			fail_msg("%s:%d: %s == %lld, want %lld", __FILE__, __LINE__, #a, _a, _b);  \
		}                                                                                  \
	} while (0)

/* ---- a host for the module ---- */

static int warnings;

static __attribute__((format(printf, 3, 4))) void h_log(const struct msb_host *h, int level,
							const char *fmt, ...)
{
	(void)h;
	(void)fmt;
	if (level <= MSB_LOG_WARN)
		warnings++;
}

static __attribute__((format(printf, 4, 5))) int
h_error_set(const struct msb_host *h, struct msb_error *err, int code, const char *fmt, ...)
{
	(void)h;
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

static struct msb_host host = {
	.abi = MSB_PLUGIN_ABI,
	.size = sizeof(struct msb_host),
	.log = h_log,
	.error_set = h_error_set,
};

/* ---- the fixture: one share over a temp tree ---- */

struct fx {
	char top[64];	/* temp parent */
	char root[128]; /* the share: top/share */
	void *inst;
	const struct msb_storage_ops *ops;
	struct msb_fs_server srv;
	uint64_t unique;
	int rc; /* what handle returned */
	uint32_t uid, gid;
	uint32_t locks; /* enum msb_share_locks for open_share (0: guest) */
	uint8_t *reply;
	size_t reply_len;
};

#define BUFSZ (FSRV_MAX_WRITE + 8192)
static uint8_t reqbuf[BUFSZ], outbuf[BUFSZ];
#define NOREPLY 100000

static void path_of(struct fx *f, char *buf, size_t len, const char *rel)
{
	snprintf(buf, len, "%s/%s", f->root, rel);
}

static void put_file(struct fx *f, const char *rel, const char *text)
{
	char p[512];
	path_of(f, p, sizeof(p), rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	EXPECT(fd >= 0);
	EXPECT_EQ(write(fd, text, strlen(text)), (long long)strlen(text));
	close(fd);
}

static void make_tree(struct fx *f)
{
	char p[512], q[512];
	snprintf(f->top, sizeof(f->top), "/tmp/msb-fsrv.XXXXXX");
	EXPECT(mkdtemp(f->top) != NULL);
	snprintf(f->root, sizeof(f->root), "%s/share", f->top);
	EXPECT_EQ(mkdir(f->root, 0755), 0);
	/* What must never be reached from inside the share. */
	snprintf(p, sizeof(p), "%s/secret", f->top);
	int fd = open(p, O_WRONLY | O_CREAT, 0600);
	EXPECT(fd >= 0);
	EXPECT_EQ(write(fd, "TOPSECRET", 9), 9);
	close(fd);
	put_file(f, "hello.txt", "hello, world\n");
	path_of(f, p, sizeof(p), "sub");
	EXPECT_EQ(mkdir(p, 0755), 0);
	put_file(f, "sub/inner.txt", "inner\n");
	path_of(f, p, sizeof(p), "out-abs");
	EXPECT_EQ(symlink("/etc/passwd", p), 0);
	path_of(f, p, sizeof(p), "out-rel");
	EXPECT_EQ(symlink("../secret", p), 0);
	path_of(f, p, sizeof(p), "out-dir");
	EXPECT_EQ(symlink("..", p), 0);
	snprintf(q, sizeof(q), "%s/secret", f->top);
	path_of(f, p, sizeof(p), "in-link");
	EXPECT_EQ(symlink("hello.txt", p), 0);
	path_of(f, p, sizeof(p), "fifo");
	EXPECT_EQ(mkfifo(p, 0666), 0);
	path_of(f, p, sizeof(p), "null");
	EXPECT_EQ(mknod(p, S_IFCHR | 0666, makedev(1, 3)), 0);
}

static void open_share(struct fx *f, int read_only, uint32_t identity)
{
	const struct msb_plugin_desc *d = msb_plugin_entry_v1();
	EXPECT(d != NULL);
	EXPECT_EQ(d->kind, MSB_PLUGIN_STORAGE);
	EXPECT(strcmp(d->name, "virtiofs") == 0);
	f->ops = d->ops;
	struct msb_error err = MSB_ERROR_INIT;
	if (!f->inst)
		EXPECT_EQ(d->create(&host, &f->inst, &err), 0);
	struct msb_share share = {
		.size = sizeof(share),
		.host_path = f->root,
		.guest_path = "/mnt",
		.read_only = read_only,
		.tag = "msbfs0",
		.identity = identity,
		.locks = f->locks,
	};
	memset(&f->srv, 0, sizeof(f->srv));
	f->srv.size = sizeof(f->srv);
	int rc = f->ops->share_open(f->inst, &share, &f->srv, &err);
	if (rc != 0 && in_child)
		fprintf(stderr, "share_open: %s\n", err.msg);
	EXPECT_EQ(rc, 0);
	EXPECT(strcmp(f->srv.tag, "msbfs0") == 0);
	EXPECT(f->srv.handle != NULL);
}

static void close_share(struct fx *f)
{
	f->ops->share_close(f->inst, &f->srv);
}

static void rm_tree(struct fx *f)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->top);
	EXPECT_EQ(system(cmd), 0);
}

static struct fsrv *fsrv_of(struct fx *f)
{
	return f->srv.ctx;
}

/* ---- requests ---- */

/* Hand `in` to the server; the reply's error (< 0), its payload length, or NOREPLY. */
static int send_iov(struct fx *f, const struct iovec *in, unsigned n, size_t outcap)
{
	struct iovec out = {outbuf, outcap};
	memset(outbuf, 0xa5, 64);
	f->rc = f->srv.handle(f->srv.ctx, in, n, &out, 1);
	f->reply = NULL;
	f->reply_len = 0;
	if (f->rc == 0)
		return NOREPLY;
	if (f->rc < 0)
		return f->rc;
	struct fuse_out_header oh;
	memcpy(&oh, outbuf, sizeof(oh));
	EXPECT_EQ(oh.len, f->rc);
	EXPECT(oh.len >= sizeof(oh) && oh.len <= outcap);
	if (oh.error) {
		EXPECT_EQ(oh.len, sizeof(oh));
		EXPECT(oh.error < 0 && oh.error > -4096);
		return oh.error;
	}
	f->reply = outbuf + sizeof(oh);
	f->reply_len = oh.len - sizeof(oh);
	return (int)f->reply_len;
}

static size_t build(struct fx *f, uint32_t opcode, uint64_t nodeid, const void *a, size_t an,
		    const void *b, size_t bn, const void *c, size_t cn)
{
	struct fuse_in_header h;
	memset(&h, 0, sizeof(h));
	h.len = (uint32_t)(sizeof(h) + an + bn + cn);
	h.opcode = opcode;
	h.unique = ++f->unique;
	h.nodeid = nodeid;
	h.uid = f->uid;
	h.gid = f->gid;
	h.pid = 1;
	memcpy(reqbuf, &h, sizeof(h));
	if (an)
		memcpy(reqbuf + sizeof(h), a, an);
	if (bn)
		memcpy(reqbuf + sizeof(h) + an, b, bn);
	if (cn)
		memcpy(reqbuf + sizeof(h) + an + bn, c, cn);
	return h.len;
}

static int call3(struct fx *f, uint32_t opcode, uint64_t nodeid, const void *a, size_t an,
		 const void *b, size_t bn, const void *c, size_t cn)
{
	struct iovec in = {reqbuf, build(f, opcode, nodeid, a, an, b, bn, c, cn)};
	int r = send_iov(f, &in, 1, sizeof(outbuf));
	if (f->rc > 0) {
		struct fuse_out_header oh;
		memcpy(&oh, outbuf, sizeof(oh));
		EXPECT_EQ(oh.unique, f->unique);
	}
	return r;
}

static int call(struct fx *f, uint32_t opcode, uint64_t nodeid, const void *a, size_t an,
		const void *b, size_t bn)
{
	return call3(f, opcode, nodeid, a, an, b, bn, NULL, 0);
}

#define S(s) (s), strlen(s) + 1

static void do_init(struct fx *f)
{
	struct fuse_init_in in;
	memset(&in, 0, sizeof(in));
	in.major = 7;
	in.minor = 38;
	in.max_readahead = 1 << 17;
	in.flags = 0xffffffffu;
	EXPECT_EQ(call(f, FUSE_INIT, 0, &in, sizeof(in), NULL, 0), sizeof(struct fuse_init_out));
}

static int lookup(struct fx *f, uint64_t parent, const char *name, struct fuse_entry_out *e)
{
	int r = call(f, FUSE_LOOKUP, parent, S(name), NULL, 0);
	if (r < 0)
		return r;
	EXPECT_EQ(r, sizeof(*e));
	memcpy(e, f->reply, sizeof(*e));
	EXPECT(e->nodeid != 0);
	return 0;
}

static uint64_t node(struct fx *f, uint64_t parent, const char *name)
{
	struct fuse_entry_out e;
	EXPECT_EQ(lookup(f, parent, name, &e), 0);
	return e.nodeid;
}

static int getattr(struct fx *f, uint64_t nodeid, struct fuse_attr *a)
{
	struct fuse_getattr_in in;
	memset(&in, 0, sizeof(in));
	int r = call(f, FUSE_GETATTR, nodeid, &in, sizeof(in), NULL, 0);
	if (r < 0)
		return r;
	EXPECT_EQ(r, sizeof(struct fuse_attr_out));
	struct fuse_attr_out o;
	memcpy(&o, f->reply, sizeof(o));
	*a = o.attr;
	return 0;
}

static int fopen_(struct fx *f, uint64_t nodeid, uint32_t flags, uint64_t *fh)
{
	struct fuse_open_in in = {.flags = flags};
	int r = call(f, FUSE_OPEN, nodeid, &in, sizeof(in), NULL, 0);
	if (r < 0)
		return r;
	EXPECT_EQ(r, sizeof(struct fuse_open_out));
	struct fuse_open_out o;
	memcpy(&o, f->reply, sizeof(o));
	*fh = o.fh;
	return 0;
}

static int opendir_(struct fx *f, uint64_t nodeid, uint64_t *fh)
{
	struct fuse_open_in in = {.flags = O_RDONLY};
	int r = call(f, FUSE_OPENDIR, nodeid, &in, sizeof(in), NULL, 0);
	if (r < 0)
		return r;
	struct fuse_open_out o;
	memcpy(&o, f->reply, sizeof(o));
	*fh = o.fh;
	return 0;
}

static int release(struct fx *f, uint32_t op, uint64_t fh)
{
	struct fuse_release_in in = {.fh = fh};
	return call(f, op, 1, &in, sizeof(in), NULL, 0);
}

static int fread_(struct fx *f, uint64_t fh, uint64_t off, uint32_t size)
{
	struct fuse_read_in in = {.fh = fh, .offset = off, .size = size};
	return call(f, FUSE_READ, 1, &in, sizeof(in), NULL, 0);
}

static int fwrite_(struct fx *f, uint64_t fh, uint64_t off, const void *data, uint32_t size,
		   uint32_t wflags)
{
	struct fuse_write_in in = {.fh = fh, .offset = off, .size = size, .write_flags = wflags};
	int r = call(f, FUSE_WRITE, 1, &in, sizeof(in), data, size);
	if (r < 0)
		return r;
	EXPECT_EQ(r, sizeof(struct fuse_write_out));
	struct fuse_write_out o;
	memcpy(&o, f->reply, sizeof(o));
	return (int)o.size;
}

static int create_(struct fx *f, uint64_t parent, const char *name, uint32_t flags, uint32_t mode,
		   struct fuse_entry_out *e, uint64_t *fh)
{
	struct fuse_create_in in = {.flags = flags, .mode = S_IFREG | mode};
	int r = call(f, FUSE_CREATE, parent, &in, sizeof(in), S(name));
	if (r < 0)
		return r;
	EXPECT_EQ(r, sizeof(struct fuse_entry_out) + sizeof(struct fuse_open_out));
	memcpy(e, f->reply, sizeof(*e));
	struct fuse_open_out o;
	memcpy(&o, f->reply + sizeof(*e), sizeof(o));
	*fh = o.fh;
	return 0;
}

static int mkdir_(struct fx *f, uint64_t parent, const char *name, uint32_t mode,
		  struct fuse_entry_out *e)
{
	struct fuse_mkdir_in in = {.mode = mode};
	int r = call(f, FUSE_MKDIR, parent, &in, sizeof(in), S(name));
	if (r >= 0 && e)
		memcpy(e, f->reply, sizeof(*e));
	return r < 0 ? r : 0;
}

static int setattr_(struct fx *f, uint64_t nodeid, struct fuse_setattr_in *in, struct fuse_attr *a)
{
	int r = call(f, FUSE_SETATTR, nodeid, in, sizeof(*in), NULL, 0);
	if (r < 0)
		return r;
	struct fuse_attr_out o;
	memcpy(&o, f->reply, sizeof(o));
	if (a)
		*a = o.attr;
	return 0;
}

static void forget(struct fx *f, uint64_t nodeid, uint64_t n)
{
	struct fuse_forget_in in = {.nlookup = n};
	EXPECT_EQ(call(f, FUSE_FORGET, nodeid, &in, sizeof(in), NULL, 0), NOREPLY);
}

static void host_stat(struct fx *f, const char *rel, struct stat *st)
{
	char p[512];
	path_of(f, p, sizeof(p), rel);
	EXPECT_EQ(lstat(p, st), 0);
}

static int host_exists(struct fx *f, const char *rel)
{
	struct stat st;
	char p[512];
	path_of(f, p, sizeof(p), rel);
	return lstat(p, &st) == 0;
}

static void host_read(struct fx *f, const char *rel, char *buf, size_t len)
{
	char p[512];
	path_of(f, p, sizeof(p), rel);
	int fd = open(p, O_RDONLY);
	EXPECT(fd >= 0);
	ssize_t n = read(fd, buf, len - 1);
	EXPECT(n >= 0);
	buf[n] = 0;
	close(fd);
}

/* Does the last reply contain `needle` anywhere? */
static int reply_has(struct fx *f, const char *needle)
{
	size_t n = strlen(needle);
	for (size_t i = 0; f->reply && i + n <= f->reply_len; i++)
		if (memcmp(f->reply + i, needle, n) == 0)
			return 1;
	return 0;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* ---- INIT ---- */

static void test_init(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	struct fuse_attr a;
	/* Nothing before INIT. */
	EXPECT_EQ(getattr(&f, 1, &a), -EIO);
	struct fuse_init_in in;
	memset(&in, 0, sizeof(in));
	in.major = 7;
	in.minor = 20; /* too old */
	EXPECT_EQ(call(&f, FUSE_INIT, 0, &in, sizeof(in), NULL, 0), -EPROTO);
	in.major = 6;
	EXPECT_EQ(call(&f, FUSE_INIT, 0, &in, sizeof(in), NULL, 0), -EPROTO);
	/* A newer major: we answer ours and wait. */
	in.major = 8;
	EXPECT_EQ(call(&f, FUSE_INIT, 0, &in, sizeof(in), NULL, 0), sizeof(struct fuse_init_out));
	EXPECT_EQ(getattr(&f, 1, &a), -EIO);
	in.major = 7;
	in.minor = 38;
	in.max_readahead = 1 << 17;
	in.flags = 0xffffffffu;
	EXPECT_EQ(call(&f, FUSE_INIT, 0, &in, sizeof(in), NULL, 0), sizeof(struct fuse_init_out));
	struct fuse_init_out o;
	memcpy(&o, f.reply, sizeof(o));
	EXPECT_EQ(o.major, 7);
	EXPECT_EQ(o.minor, FUSE_KERNEL_MINOR_VERSION);
	EXPECT_EQ(o.max_write, 1u << 20);
	EXPECT_EQ(o.max_pages, 256);
	EXPECT(!(o.flags & FUSE_POSIX_LOCKS)); /* locks=guest, the default: see test_lock_modes */
	EXPECT(o.flags & FUSE_DO_READDIRPLUS);
	/* Never DAX, never writeback caching, never kernel-side KILLPRIV. */
	EXPECT(!(o.flags & (FUSE_MAP_ALIGNMENT | FUSE_WRITEBACK_CACHE | FUSE_HANDLE_KILLPRIV |
			    FUSE_HANDLE_KILLPRIV_V2 | FUSE_EXPORT_SUPPORT)));
	EXPECT_EQ(getattr(&f, 1, &a), 0);
	EXPECT(S_ISDIR(a.mode));
	/* DESTROY, then the guest must INIT again. */
	EXPECT_EQ(call(&f, FUSE_DESTROY, 0, NULL, 0, NULL, 0), 0);
	EXPECT_EQ(getattr(&f, 1, &a), -EIO);
	do_init(&f);
	EXPECT_EQ(getattr(&f, 1, &a), 0);
	/* Unknown opcodes. */
	EXPECT_EQ(call(&f, FUSE_BMAP, 1, "12345678abcdefgh", 16, NULL, 0), -ENOSYS);
	EXPECT_EQ(call(&f, 9999, 1, NULL, 0, NULL, 0), -ENOSYS);
	EXPECT_EQ(call(&f, 0xffffffffu, 1, NULL, 0, NULL, 0), -ENOSYS);
	EXPECT_EQ(call(&f, FUSE_SETUPMAPPING, 1, NULL, 0, NULL, 0), -ENOSYS);
	/* INTERRUPT takes no reply. */
	struct fuse_interrupt_in ii = {.unique = 1};
	EXPECT_EQ(call(&f, FUSE_INTERRUPT, 0, &ii, sizeof(ii), NULL, 0), NOREPLY);
	EXPECT_EQ(call(&f, FUSE_NOTIFY_REPLY, 0, NULL, 0, NULL, 0), NOREPLY);
	/* A second INIT (a guest rebooted without DESTROY) forgets the old nodeids. */
	uint64_t sub = node(&f, 1, "sub");
	EXPECT_EQ(getattr(&f, sub, &a), 0);
	do_init(&f);
	EXPECT_EQ(getattr(&f, sub, &a), -ENOENT);
	EXPECT_EQ(getattr(&f, 1, &a), 0);
	close_share(&f);
	f.ops->share_close(f.inst, &f.srv); /* twice is harmless */
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/*
 * locks=guest (the default): no FUSE_POSIX_LOCKS, so the guest kernel keeps
 * its locks; opens say FOPEN_NOFLUSH (a close has nothing to flush); lock
 * requests a guest sends anyway are ENOSYS.  locks=host: FUSE_POSIX_LOCKS,
 * no FOPEN_NOFLUSH (the FLUSH drops the closer's locks, test_operations).
 * A core from before ABI 1.3 (a shorter msb_share) gets guest.
 */
static uint32_t init_flags(struct fx *f)
{
	do_init(f);
	struct fuse_init_out o;
	memcpy(&o, f->reply, sizeof(o));
	return o.flags;
}

static uint32_t open_flags_of(struct fx *f, uint64_t nodeid, uint64_t *fh)
{
	struct fuse_open_in in = {.flags = O_RDWR};
	EXPECT_EQ(call(f, FUSE_OPEN, nodeid, &in, sizeof(in), NULL, 0),
		  sizeof(struct fuse_open_out));
	struct fuse_open_out o;
	memcpy(&o, f->reply, sizeof(o));
	*fh = o.fh;
	return o.open_flags;
}

static void test_lock_modes(void **state)
{
	(void)state;
	for (int mode = 0; mode < 3; mode++) {
		struct fx f = {0};
		make_tree(&f);
		int host_locks = mode == 1;
		f.locks = host_locks ? MSB_SHARE_LOCKS_HOST : MSB_SHARE_LOCKS_GUEST;
		if (mode == 2) { /* an ABI 1.2 core: msb_share ends before `locks` */
			const struct msb_plugin_desc *d = msb_plugin_entry_v1();
			struct msb_error err = MSB_ERROR_INIT;
			f.ops = d->ops;
			EXPECT_EQ(d->create(&host, &f.inst, &err), 0);
			struct msb_share old = {.size = offsetof(struct msb_share, locks),
						.host_path = f.root,
						.guest_path = "/mnt",
						.tag = "msbfs0",
						.locks = MSB_SHARE_LOCKS_HOST /* not read */};
			memset(&f.srv, 0, sizeof(f.srv));
			EXPECT_EQ(f.ops->share_open(f.inst, &old, &f.srv, &err), 0);
		} else {
			open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
		}
		EXPECT_EQ(!!(init_flags(&f) & FUSE_POSIX_LOCKS), host_locks);
		uint64_t hello = node(&f, 1, "hello.txt"), fh = 0;
		uint32_t of = open_flags_of(&f, hello, &fh);
		EXPECT_EQ(!!(of & FOPEN_NOFLUSH), !host_locks);
		/* CREATE's open part says the same. */
		struct fuse_entry_out ce;
		uint64_t cfh = 0;
		EXPECT_EQ(create_(&f, 1, "made.txt", O_RDWR, 0644, &ce, &cfh), 0);
		struct {
			struct fuse_entry_out e;
			struct fuse_open_out o;
		} co;
		memcpy(&co, f.reply, sizeof(co));
		EXPECT_EQ(!!(co.o.open_flags & FOPEN_NOFLUSH), !host_locks);
		struct fuse_lk_in lk;
		memset(&lk, 0, sizeof(lk));
		lk.fh = fh;
		lk.lk.type = F_WRLCK;
		lk.lk.end = INT64_MAX;
		int want = host_locks ? 0 : -ENOSYS;
		EXPECT_EQ(call(&f, FUSE_SETLK, hello, &lk, sizeof(lk), NULL, 0), want);
		EXPECT_EQ(call(&f, FUSE_SETLKW, hello, &lk, sizeof(lk), NULL, 0), want);
		if (!host_locks)
			EXPECT_EQ(call(&f, FUSE_GETLK, hello, &lk, sizeof(lk), NULL, 0), -ENOSYS);
		struct fuse_flush_in fl = {.fh = fh};
		EXPECT_EQ(call(&f, FUSE_FLUSH, hello, &fl, sizeof(fl), NULL, 0), 0);
		EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
		EXPECT_EQ(release(&f, FUSE_RELEASE, cfh), 0);
		close_share(&f);
		msb_plugin_entry_v1()->destroy(f.inst);
		rm_tree(&f);
	}
	/* An unknown mode is refused. */
	struct fx f = {0};
	make_tree(&f);
	f.locks = 7;
	const struct msb_plugin_desc *d = msb_plugin_entry_v1();
	struct msb_error err = MSB_ERROR_INIT;
	f.ops = d->ops;
	EXPECT_EQ(d->create(&host, &f.inst, &err), 0);
	struct msb_share bad = {.size = sizeof(bad),
				.host_path = f.root,
				.guest_path = "/mnt",
				.tag = "msbfs0",
				.locks = 7};
	EXPECT_EQ(f.ops->share_open(f.inst, &bad, &f.srv, &err), -EINVAL);
	EXPECT(strstr(err.msg, "lock mode") != NULL);
	d->destroy(f.inst);
	rm_tree(&f);
}

/* ---- READ replies by reference (ABI 1.4 handle_ref) ---- */

/* A READ through handle_ref; returns handle_ref's result, the reply head in outbuf. */
static int read_ref(struct fx *f, uint64_t fh, uint64_t off, uint32_t size, struct msb_fs_ref *ref)
{
	struct fuse_read_in in = {.fh = fh, .offset = off, .size = size};
	struct iovec iv = {reqbuf, build(f, FUSE_READ, 1, &in, sizeof(in), NULL, 0, NULL, 0)};
	struct iovec out = {outbuf, sizeof(outbuf)};
	memset(outbuf, 0xa5, 64);
	return f->srv.handle_ref(f->srv.ctx, &iv, 1, &out, 1, ref);
}

static void test_read_by_ref(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	EXPECT(f.srv.handle_ref != NULL && f.srv.ref_done != NULL);
	EXPECT_EQ(f.srv.size, sizeof(f.srv));
	do_init(&f);
	uint64_t hello = node(&f, 1, "hello.txt"), fh = 0;
	EXPECT_EQ(fopen_(&f, hello, O_RDONLY, &fh), 0);

	/* The head names the payload's length; the payload is the file's range. */
	struct msb_fs_ref ref = {.size = sizeof(ref), .max = 4096};
	EXPECT_EQ(read_ref(&f, fh, 7, 5, &ref), sizeof(struct fuse_out_header));
	struct fuse_out_header oh;
	memcpy(&oh, outbuf, sizeof(oh));
	EXPECT_EQ(oh.len, sizeof(oh) + 5);
	EXPECT_EQ(oh.error, 0);
	EXPECT_EQ(oh.unique, f.unique);
	EXPECT(ref.fd >= 0);
	EXPECT_EQ(ref.offset, 7);
	EXPECT_EQ(ref.len, 5);
	char buf[16] = {0};
	EXPECT_EQ(pread(ref.fd, buf, 5, (off_t)ref.offset), 5);
	EXPECT(memcmp(buf, "world", 5) == 0);
	/* A RELEASE meanwhile: the fd stays the transport's to use until ref_done. */
	int fd = ref.fd;
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	EXPECT_EQ(fread_(&f, fh, 0, 10), -EBADF);
	EXPECT_EQ(pread(fd, buf, 5, 0), 5);
	f.srv.ref_done(f.srv.ctx, &ref);
	EXPECT_EQ(ref.fd, -1);
	EXPECT_EQ(fcntl(fd, F_GETFD), -1); /* closed with the handle */

	/* What goes by value: more than max, max 0, a short ref, other requests, errors. */
	EXPECT_EQ(fopen_(&f, hello, O_RDONLY, &fh), 0);
	struct msb_fs_ref small = {.size = sizeof(small), .max = 4};
	int r = read_ref(&f, fh, 0, 13, &small);
	EXPECT_EQ(small.fd, -1);
	EXPECT_EQ(r, sizeof(oh) + 13);
	EXPECT(memcmp(outbuf + sizeof(oh), "hello, world\n", 13) == 0);
	struct msb_fs_ref zero = {.size = sizeof(zero), .max = 0};
	EXPECT_EQ(read_ref(&f, fh, 0, 5, &zero), sizeof(oh) + 5);
	EXPECT_EQ(zero.fd, -1);
	struct msb_fs_ref shortref = {.size = offsetof(struct msb_fs_ref, token), .max = 4096};
	EXPECT_EQ(read_ref(&f, fh, 0, 5, &shortref), sizeof(oh) + 5);
	EXPECT_EQ(shortref.fd, 0); /* not even written */
	struct msb_fs_ref other = {.size = sizeof(other), .max = 4096, .fd = 77};
	struct fuse_getattr_in gin;
	memset(&gin, 0, sizeof(gin));
	struct iovec iv = {reqbuf,
			   build(&f, FUSE_GETATTR, hello, &gin, sizeof(gin), NULL, 0, NULL, 0)};
	struct iovec out = {outbuf, sizeof(outbuf)};
	EXPECT_EQ(f.srv.handle_ref(f.srv.ctx, &iv, 1, &out, 1, &other),
		  sizeof(oh) + sizeof(struct fuse_attr_out));
	EXPECT_EQ(other.fd, -1);
	struct msb_fs_ref bad = {.size = sizeof(bad), .max = 4096};
	EXPECT_EQ(read_ref(&f, fh + 1000, 0, 5, &bad), sizeof(oh));
	memcpy(&oh, outbuf, sizeof(oh));
	EXPECT_EQ(oh.error, -EBADF);
	EXPECT_EQ(bad.fd, -1);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	close_share(&f);
	EXPECT(f.srv.handle_ref == NULL);

	/* On a read-only share the file behind a reference is read-only too. */
	open_share(&f, 1, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	hello = node(&f, 1, "hello.txt");
	EXPECT_EQ(fopen_(&f, hello, O_RDWR, &fh), -EROFS);
	EXPECT_EQ(fopen_(&f, hello, O_RDONLY, &fh), 0);
	struct msb_fs_ref ro = {.size = sizeof(ro), .max = 4096};
	EXPECT_EQ(read_ref(&f, fh, 0, 5, &ro), sizeof(oh));
	EXPECT(ro.fd >= 0);
	EXPECT_EQ(fcntl(ro.fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	EXPECT_EQ(pwrite(ro.fd, "x", 1, 0), -1);
	f.srv.ref_done(f.srv.ctx, &ro);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	close_share(&f);

	/* A caller from before ABI 1.4 (a struct that ends at tag) gets no handle_ref. */
	struct msb_share share = {
		.size = sizeof(share), .host_path = f.root, .guest_path = "/mnt", .tag = "msbfs0"};
	struct msb_fs_server old;
	memset(&old, 0, sizeof(old));
	old.size = offsetof(struct msb_fs_server, handle_ref);
	old.handle_ref = (void *)1; /* past the caller's end: must stay untouched */
	struct msb_error err = MSB_ERROR_INIT;
	EXPECT_EQ(f.ops->share_open(f.inst, &share, &old, &err), 0);
	EXPECT(old.handle != NULL);
	EXPECT_EQ(old.size, offsetof(struct msb_fs_server, handle_ref));
	EXPECT(old.handle_ref == (void *)1);
	old.handle_ref = NULL;
	f.ops->share_close(f.inst, &old);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* ---- the operation set ---- */

static void test_operations(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	f.locks = MSB_SHARE_LOCKS_HOST; /* (the lock requests below) */
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	char buf[4096];

	/* LOOKUP, GETATTR, the same nodeid for the same inode. */
	struct fuse_entry_out e, e2;
	EXPECT_EQ(lookup(&f, 1, "hello.txt", &e), 0);
	EXPECT(S_ISREG(e.attr.mode));
	EXPECT_EQ(e.attr.size, 13);
	EXPECT_EQ(lookup(&f, 1, "hello.txt", &e2), 0);
	EXPECT_EQ(e2.nodeid, e.nodeid);
	EXPECT_EQ(lookup(&f, 1, "missing", &e2), -ENOENT);
	uint64_t hello = e.nodeid;
	struct fuse_attr a;
	EXPECT_EQ(getattr(&f, hello, &a), 0);
	EXPECT_EQ(a.size, 13);

	/* OPEN / READ. */
	uint64_t fh = 0;
	EXPECT_EQ(fopen_(&f, hello, O_RDONLY, &fh), 0);
	EXPECT_EQ(fread_(&f, fh, 0, 4096), 13);
	EXPECT(memcmp(f.reply, "hello, world\n", 13) == 0);
	EXPECT_EQ(fread_(&f, fh, 7, 5), 5);
	EXPECT(memcmp(f.reply, "world", 5) == 0);
	EXPECT_EQ(fread_(&f, fh, 100, 10), 0);
	struct fuse_flush_in fl = {.fh = fh};
	EXPECT_EQ(call(&f, FUSE_FLUSH, hello, &fl, sizeof(fl), NULL, 0), 0);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), -EBADF);
	EXPECT_EQ(fread_(&f, fh, 0, 10), -EBADF);

	/* CREATE / WRITE / FSYNC, then the host sees it. */
	uint64_t nfh = 0;
	EXPECT_EQ(create_(&f, 1, "new.txt", O_RDWR | O_CREAT, 0644, &e, &nfh), 0);
	EXPECT_EQ(fwrite_(&f, nfh, 0, "abcdef", 6, 0), 6);
	EXPECT_EQ(fwrite_(&f, nfh, 6, "XYZ", 3, 0), 3);
	struct fuse_fsync_in fs_in = {.fh = nfh};
	EXPECT_EQ(call(&f, FUSE_FSYNC, e.nodeid, &fs_in, sizeof(fs_in), NULL, 0), 0);
	fs_in.fsync_flags = FUSE_FSYNC_FDATASYNC;
	EXPECT_EQ(call(&f, FUSE_FSYNC, e.nodeid, &fs_in, sizeof(fs_in), NULL, 0), 0);
	host_read(&f, "new.txt", buf, sizeof(buf));
	EXPECT(strcmp(buf, "abcdefXYZ") == 0);
	/* O_EXCL on an existing name; without it the file is opened. */
	uint64_t fh2 = 0;
	EXPECT_EQ(create_(&f, 1, "new.txt", O_RDWR | O_CREAT | O_EXCL, 0644, &e2, &fh2), -EEXIST);
	EXPECT_EQ(create_(&f, 1, "new.txt", O_RDONLY | O_CREAT, 0644, &e2, &fh2), 0);
	EXPECT_EQ(e2.nodeid, e.nodeid);
	EXPECT_EQ(fread_(&f, fh2, 0, 100), 9);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh2), 0);

	/* FALLOCATE, LSEEK (SEEK_DATA/SEEK_HOLE), SETATTR size. */
	struct fuse_fallocate_in fa = {.fh = nfh, .offset = 0, .length = 1 << 20};
	EXPECT_EQ(call(&f, FUSE_FALLOCATE, e.nodeid, &fa, sizeof(fa), NULL, 0), 0);
	struct stat st;
	host_stat(&f, "new.txt", &st);
	EXPECT_EQ(st.st_size, 1 << 20);
	fa.mode = FALLOC_FL_COLLAPSE_RANGE;
	EXPECT_EQ(call(&f, FUSE_FALLOCATE, e.nodeid, &fa, sizeof(fa), NULL, 0), -EOPNOTSUPP);
	struct fuse_lseek_in ls = {.fh = nfh, .offset = 0, .whence = SEEK_DATA};
	EXPECT_EQ(call(&f, FUSE_LSEEK, e.nodeid, &ls, sizeof(ls), NULL, 0),
		  sizeof(struct fuse_lseek_out));
	ls.whence = SEEK_HOLE;
	EXPECT_EQ(call(&f, FUSE_LSEEK, e.nodeid, &ls, sizeof(ls), NULL, 0),
		  sizeof(struct fuse_lseek_out));
	struct fuse_lseek_out lo;
	memcpy(&lo, f.reply, sizeof(lo));
	EXPECT(lo.offset <= 1 << 20);
	/* Punch a hole after the first block: the data there stays, a hole follows it. */
	fa.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
	fa.offset = 4096;
	fa.length = 4096;
	EXPECT_EQ(call(&f, FUSE_FALLOCATE, e.nodeid, &fa, sizeof(fa), NULL, 0), 0);
	ls.whence = SEEK_HOLE;
	EXPECT_EQ(call(&f, FUSE_LSEEK, e.nodeid, &ls, sizeof(ls), NULL, 0), sizeof(lo));
	memcpy(&lo, f.reply, sizeof(lo));
	EXPECT(lo.offset > 0 && lo.offset <= 4096);
	ls.whence = 42;
	EXPECT_EQ(call(&f, FUSE_LSEEK, e.nodeid, &ls, sizeof(ls), NULL, 0), -EINVAL);
	struct fuse_setattr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.valid = FATTR_SIZE | FATTR_FH;
	sa.fh = nfh;
	sa.size = 4;
	EXPECT_EQ(setattr_(&f, e.nodeid, &sa, &a), 0);
	EXPECT_EQ(a.size, 4);
	sa.valid = FATTR_SIZE; /* without a handle: reopened for writing */
	sa.size = 2;
	EXPECT_EQ(setattr_(&f, e.nodeid, &sa, &a), 0);
	host_read(&f, "new.txt", buf, sizeof(buf));
	EXPECT(strcmp(buf, "ab") == 0);
	sa.valid = FATTR_MTIME | FATTR_ATIME;
	sa.mtime = 1000000000;
	sa.atime = 1000000001;
	EXPECT_EQ(setattr_(&f, e.nodeid, &sa, &a), 0);
	host_stat(&f, "new.txt", &st);
	EXPECT_EQ(st.st_mtime, 1000000000);
	EXPECT_EQ(st.st_atime, 1000000001);
	sa.mtimensec = 2000000000u;
	EXPECT_EQ(setattr_(&f, e.nodeid, &sa, &a), -EINVAL);

	/* COPY_FILE_RANGE from hello.txt into new.txt. */
	EXPECT_EQ(fopen_(&f, hello, O_RDONLY, &fh), 0);
	struct fuse_copy_file_range_in cf = {.fh_in = fh,
					     .off_in = 0,
					     .nodeid_out = e.nodeid,
					     .fh_out = nfh,
					     .off_out = 0,
					     .len = 5};
	EXPECT_EQ(call(&f, FUSE_COPY_FILE_RANGE, hello, &cf, sizeof(cf), NULL, 0),
		  sizeof(struct fuse_write_out));
	host_read(&f, "new.txt", buf, sizeof(buf));
	EXPECT(strcmp(buf, "hello") == 0);
	cf.flags = 1;
	EXPECT_EQ(call(&f, FUSE_COPY_FILE_RANGE, hello, &cf, sizeof(cf), NULL, 0), -EINVAL);

	/* Locks: POSIX locks between two handles of the same file. */
	struct fuse_lk_in lk;
	memset(&lk, 0, sizeof(lk));
	lk.fh = nfh;
	lk.lk.type = F_WRLCK;
	lk.lk.start = 0;
	lk.lk.end = INT64_MAX;
	EXPECT_EQ(call(&f, FUSE_SETLK, e.nodeid, &lk, sizeof(lk), NULL, 0), 0);
	uint64_t ofh = 0;
	EXPECT_EQ(fopen_(&f, e.nodeid, O_RDWR, &ofh), 0);
	lk.fh = ofh;
	EXPECT_EQ(call(&f, FUSE_SETLK, e.nodeid, &lk, sizeof(lk), NULL, 0), -EAGAIN);
	EXPECT_EQ(call(&f, FUSE_GETLK, e.nodeid, &lk, sizeof(lk), NULL, 0),
		  sizeof(struct fuse_lk_out));
	struct fuse_lk_out lko;
	memcpy(&lko, f.reply, sizeof(lko));
	EXPECT_EQ(lko.lk.type, F_WRLCK);
	/* FLUSH from another owner (a forked child closing the descriptor it
	 * inherited) keeps them; the owner's own close drops them. */
	fl.fh = nfh;
	fl.lock_owner = 9;
	EXPECT_EQ(call(&f, FUSE_FLUSH, e.nodeid, &fl, sizeof(fl), NULL, 0), 0);
	EXPECT_EQ(call(&f, FUSE_SETLK, e.nodeid, &lk, sizeof(lk), NULL, 0), -EAGAIN);
	fl.lock_owner = 0;
	EXPECT_EQ(call(&f, FUSE_FLUSH, e.nodeid, &fl, sizeof(fl), NULL, 0), 0);
	EXPECT_EQ(call(&f, FUSE_SETLK, e.nodeid, &lk, sizeof(lk), NULL, 0), 0);
	lk.lk.end = 0;
	lk.lk.start = 10; /* end before start */
	EXPECT_EQ(call(&f, FUSE_SETLK, e.nodeid, &lk, sizeof(lk), NULL, 0), -EINVAL);
	EXPECT_EQ(release(&f, FUSE_RELEASE, ofh), 0);
	EXPECT_EQ(release(&f, FUSE_RELEASE, nfh), 0);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);

	/* MKDIR, MKNOD (regular, FIFO; never a device), RENAME, RENAME2, UNLINK, RMDIR. */
	struct fuse_entry_out d;
	EXPECT_EQ(mkdir_(&f, 1, "dir", 0755, &d), 0);
	EXPECT(S_ISDIR(d.attr.mode));
	EXPECT_EQ(mkdir_(&f, 1, "dir", 0755, NULL), -EEXIST);
	struct fuse_mknod_in mk = {.mode = S_IFREG | 0600};
	EXPECT_EQ(call(&f, FUSE_MKNOD, d.nodeid, &mk, sizeof(mk), S("plain")),
		  sizeof(struct fuse_entry_out));
	mk.mode = S_IFIFO | 0600;
	EXPECT_EQ(call(&f, FUSE_MKNOD, d.nodeid, &mk, sizeof(mk), S("pipe")),
		  sizeof(struct fuse_entry_out));
	host_stat(&f, "dir/pipe", &st);
	EXPECT(S_ISFIFO(st.st_mode));
	mk.mode = S_IFSOCK | 0600;
	EXPECT_EQ(call(&f, FUSE_MKNOD, d.nodeid, &mk, sizeof(mk), S("sock")),
		  sizeof(struct fuse_entry_out));
	host_stat(&f, "dir/sock", &st);
	EXPECT(S_ISSOCK(st.st_mode));
	EXPECT_EQ(call(&f, FUSE_UNLINK, d.nodeid, S("sock"), NULL, 0), 0);
	mk.mode = S_IFCHR | 0666;
	mk.rdev = makedev(1, 3);
	EXPECT_EQ(call(&f, FUSE_MKNOD, d.nodeid, &mk, sizeof(mk), S("dev")), -EPERM);
	mk.mode = S_IFBLK | 0666;
	EXPECT_EQ(call(&f, FUSE_MKNOD, d.nodeid, &mk, sizeof(mk), S("dev")), -EPERM);
	EXPECT(!host_exists(&f, "dir/dev"));
	struct fuse_rename_in rn = {.newdir = 1};
	EXPECT_EQ(call3(&f, FUSE_RENAME, d.nodeid, &rn, sizeof(rn), S("plain"), S("moved")), 0);
	EXPECT(host_exists(&f, "moved") && !host_exists(&f, "dir/plain"));
	struct fuse_rename2_in rn2 = {.newdir = 1, .flags = RENAME_NOREPLACE};
	EXPECT_EQ(call3(&f, FUSE_RENAME2, 1, &rn2, sizeof(rn2), S("moved"), S("hello.txt")),
		  -EEXIST);
	rn2.flags = RENAME_EXCHANGE;
	EXPECT_EQ(call3(&f, FUSE_RENAME2, 1, &rn2, sizeof(rn2), S("moved"), S("new.txt")), 0);
	rn2.flags = RENAME_EXCHANGE;
	EXPECT_EQ(call3(&f, FUSE_RENAME2, 1, &rn2, sizeof(rn2), S("moved"), S("new.txt")), 0);
	rn2.flags = RENAME_WHITEOUT;
	EXPECT_EQ(call3(&f, FUSE_RENAME2, 1, &rn2, sizeof(rn2), S("moved"), S("x")), -EINVAL);
	EXPECT_EQ(call(&f, FUSE_UNLINK, 1, S("moved"), NULL, 0), 0);
	EXPECT(!host_exists(&f, "moved"));
	EXPECT_EQ(call(&f, FUSE_RMDIR, 1, S("dir"), NULL, 0), -ENOTEMPTY);
	EXPECT_EQ(call(&f, FUSE_UNLINK, d.nodeid, S("pipe"), NULL, 0), 0);
	EXPECT_EQ(call(&f, FUSE_RMDIR, 1, S("dir"), NULL, 0), 0);
	EXPECT(!host_exists(&f, "dir"));
	/* The removed directory's nodeid is still valid; lookups in it fail. */
	EXPECT_EQ(lookup(&f, d.nodeid, "pipe", &e2), -ENOENT);

	/* SYMLINK / READLINK. */
	EXPECT_EQ(call(&f, FUSE_SYMLINK, 1, S("sl"), S("../../etc/shadow")),
		  sizeof(struct fuse_entry_out));
	memcpy(&e2, f.reply, sizeof(e2));
	EXPECT(S_ISLNK(e2.attr.mode));
	EXPECT_EQ(call(&f, FUSE_READLINK, e2.nodeid, NULL, 0, NULL, 0), 16);
	EXPECT(memcmp(f.reply, "../../etc/shadow", 16) == 0);
	EXPECT_EQ(readlink(strcat(strcpy(buf, f.root), "/sl"), buf + 1024, 100), 16);
	EXPECT_EQ(call(&f, FUSE_READLINK, hello, NULL, 0, NULL, 0), -EINVAL);

	/* LINK: a second name, the same nodeid. */
	struct fuse_link_in li = {.oldnodeid = hello};
	EXPECT_EQ(call(&f, FUSE_LINK, 1, &li, sizeof(li), S("hello2")),
		  sizeof(struct fuse_entry_out));
	memcpy(&e2, f.reply, sizeof(e2));
	EXPECT_EQ(e2.nodeid, hello);
	EXPECT_EQ(e2.attr.nlink, 2);
	li.oldnodeid = node(&f, 1, "sub");
	EXPECT_EQ(call(&f, FUSE_LINK, 1, &li, sizeof(li), S("sub2")), -EPERM);

	/* STATFS, ACCESS. */
	EXPECT_EQ(call(&f, FUSE_STATFS, 1, NULL, 0, NULL, 0), sizeof(struct fuse_statfs_out));
	struct fuse_statfs_out so;
	memcpy(&so, f.reply, sizeof(so));
	EXPECT(so.st.bsize > 0 && so.st.namelen == 255);
	struct fuse_access_in ac = {.mask = R_OK | W_OK};
	EXPECT_EQ(call(&f, FUSE_ACCESS, hello, &ac, sizeof(ac), NULL, 0), 0);
	f.uid = f.gid = 4321;
	EXPECT_EQ(call(&f, FUSE_ACCESS, hello, &ac, sizeof(ac), NULL, 0), -EACCES);
	f.uid = f.gid = 0;

	/* SYNCFS. */
	uint64_t pad = 0;
	EXPECT_EQ(call(&f, FUSE_SYNCFS, 1, &pad, sizeof(pad), NULL, 0), 0);

	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* ---- xattrs ---- */

static void test_xattrs(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	uint64_t n = node(&f, 1, "hello.txt");
	struct {
		uint32_t size, flags;
	} sx = {5, 0};
	EXPECT_EQ(call3(&f, FUSE_SETXATTR, n, &sx, sizeof(sx), S("user.color"), "green", 5), 0);
	char p[512], v[64];
	path_of(&f, p, sizeof(p), "hello.txt");
	EXPECT_EQ(getxattr(p, "user.color", v, sizeof(v)), 5);
	struct fuse_getxattr_in gx = {.size = 0};
	EXPECT_EQ(call(&f, FUSE_GETXATTR, n, &gx, sizeof(gx), S("user.color")),
		  sizeof(struct fuse_getxattr_out));
	struct fuse_getxattr_out go;
	memcpy(&go, f.reply, sizeof(go));
	EXPECT_EQ(go.size, 5);
	gx.size = 64;
	EXPECT_EQ(call(&f, FUSE_GETXATTR, n, &gx, sizeof(gx), S("user.color")), 5);
	EXPECT(memcmp(f.reply, "green", 5) == 0);
	gx.size = 2;
	EXPECT_EQ(call(&f, FUSE_GETXATTR, n, &gx, sizeof(gx), S("user.color")), -ERANGE);
	sx.flags = XATTR_CREATE;
	EXPECT_EQ(call3(&f, FUSE_SETXATTR, n, &sx, sizeof(sx), S("user.color"), "green", 5),
		  -EEXIST);
	sx.flags = 0;
	/* The guest can neither see nor touch the server's own attribute, nor other namespaces. */
	EXPECT_EQ(setxattr(p, "user.msb.owner", "xxxx", 4, 0), 0);
	EXPECT_EQ(setxattr(p, "trusted.msb.owner", "xxxx", 4, 0), 0);
	EXPECT_EQ(setxattr(p, "trusted.other", "t", 1, 0), 0);
	const char *hidden[] = {"user.msb.owner", "trusted.msb.owner", "trusted.other",
				"security.capability"};
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++) {
		gx.size = 64;
		EXPECT_EQ(call(&f, FUSE_GETXATTR, n, &gx, sizeof(gx), S(hidden[i])), -ENODATA);
		EXPECT_EQ(call3(&f, FUSE_SETXATTR, n, &sx, sizeof(sx), S(hidden[i]), "ZZZZZ", 5),
			  -EOPNOTSUPP);
		EXPECT_EQ(call(&f, FUSE_REMOVEXATTR, n, S(hidden[i]), NULL, 0), -EOPNOTSUPP);
	}
	EXPECT_EQ(getxattr(p, "trusted.msb.owner", v, sizeof(v)), 4);
	EXPECT_EQ(getxattr(p, "security.capability", v, sizeof(v)), -1);
	gx.size = 0;
	EXPECT_EQ(call(&f, FUSE_LISTXATTR, n, &gx, sizeof(gx), NULL, 0),
		  sizeof(struct fuse_getxattr_out));
	memcpy(&go, f.reply, sizeof(go));
	EXPECT_EQ(go.size, sizeof("user.color"));
	gx.size = 4096;
	EXPECT_EQ(call(&f, FUSE_LISTXATTR, n, &gx, sizeof(gx), NULL, 0), sizeof("user.color"));
	EXPECT(memcmp(f.reply, "user.color", sizeof("user.color")) == 0);
	EXPECT(!reply_has(&f, "msb"));
	gx.size = 3;
	EXPECT_EQ(call(&f, FUSE_LISTXATTR, n, &gx, sizeof(gx), NULL, 0), -ERANGE);
	EXPECT_EQ(call(&f, FUSE_REMOVEXATTR, n, S("user.color"), NULL, 0), 0);
	EXPECT_EQ(getxattr(p, "user.color", v, sizeof(v)), -1);
	/* A value larger than the limit, and one longer than the request. */
	sx.size = FSRV_XATTR_MAX + 1;
	EXPECT_EQ(call3(&f, FUSE_SETXATTR, n, &sx, sizeof(sx), S("user.big"), "x", 1), -E2BIG);
	sx.size = 100;
	EXPECT_EQ(call3(&f, FUSE_SETXATTR, n, &sx, sizeof(sx), S("user.big"), "x", 1), -EINVAL);
	/* A large value (copied off the stack) round-trips. */
	static char big[60000];
	memset(big, 'q', sizeof(big));
	sx.size = sizeof(big);
	int r = call3(&f, FUSE_SETXATTR, n, &sx, sizeof(sx), S("user.big"), big, sizeof(big));
	/* ext4 without ea_inode keeps values to a block: then the host's own error. */
	EXPECT(r == 0 || r == -ENOSPC || r == -E2BIG);
	gx.size = sizeof(big);
	if (r == 0)
		EXPECT_EQ(call(&f, FUSE_GETXATTR, n, &gx, sizeof(gx), S("user.big")),
			  (int)sizeof(big));
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* ---- READDIR / READDIRPLUS ---- */

/* Read a whole directory in replies of `size` bytes; returns the names seen. */
static int read_dir(struct fx *f, uint64_t dir, int plus, uint32_t size, int unlink_during,
		    int *dots, uint64_t *nodeids)
{
	uint64_t fh = 0;
	EXPECT_EQ(opendir_(f, dir, &fh), 0);
	uint64_t off = 0;
	int names = 0, calls = 0;
	for (;;) {
		struct fuse_read_in in = {.fh = fh, .offset = off, .size = size};
		int r = call(f, plus ? FUSE_READDIRPLUS : FUSE_READDIR, dir, &in, sizeof(in), NULL,
			     0);
		EXPECT(r >= 0);
		EXPECT(r <= (int)size);
		if (r == 0)
			break;
		EXPECT(++calls < 10000);
		static uint8_t copy[1 << 16];
		memcpy(copy, f->reply, (size_t)r);
		for (size_t p = 0; p < (size_t)r;) {
			struct fuse_dirent de;
			struct fuse_entry_out eo;
			memset(&eo, 0, sizeof(eo));
			if (plus) {
				memcpy(&eo, copy + p, sizeof(eo));
				p += sizeof(eo);
			}
			memcpy(&de, copy + p, sizeof(de));
			const char *name = (const char *)copy + p + FUSE_NAME_OFFSET;
			EXPECT(de.namelen > 0 && de.namelen <= 255);
			int dot = (de.namelen == 1 && name[0] == '.') ||
				  (de.namelen == 2 && name[0] == '.' && name[1] == '.');
			if (dot) {
				(*dots)++;
				EXPECT_EQ(eo.nodeid, 0);
			} else {
				if (plus && nodeids)
					nodeids[names] = eo.nodeid;
				names++;
			}
			p += FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + de.namelen);
			off = de.off;
			EXPECT(off != 0);
		}
		if (unlink_during && calls == 1) {
			char q[512];
			for (int i = 0; i < 150; i += 2) {
				snprintf(q, sizeof(q), "%s/many/f%03d", f->root, i);
				unlink(q);
			}
		}
	}
	EXPECT_EQ(release(f, FUSE_RELEASEDIR, fh), 0);
	return names;
}

static void test_readdir(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	char p[512];
	path_of(&f, p, sizeof(p), "many");
	EXPECT_EQ(mkdir(p, 0755), 0);
	for (int i = 0; i < 150; i++) {
		snprintf(p, sizeof(p), "many/f%03d", i);
		put_file(&f, p, "x");
	}
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	uint64_t many = node(&f, 1, "many");
	int dots = 0;
	/* Small replies: each holds a few entries, and none is lost or repeated. */
	EXPECT_EQ(read_dir(&f, many, 0, 200, 0, &dots, NULL), 150);
	EXPECT_EQ(dots, 2);
	static uint64_t ids[200];
	dots = 0;
	EXPECT_EQ(read_dir(&f, many, 1, 1000, 0, &dots, ids), 150);
	EXPECT_EQ(dots, 2);
	/* READDIRPLUS entries are lookups: real nodeids the guest can use and forget. */
	struct fuse_attr a;
	EXPECT(ids[0] != 0);
	EXPECT_EQ(getattr(&f, ids[0], &a), 0);
	EXPECT(S_ISREG(a.mode));
	for (int i = 0; i < 150; i++)
		forget(&f, ids[i], 1);
	EXPECT_EQ(getattr(&f, ids[0], &a), -ENOENT);
	/* A reply too small for one entry is empty, not an overflow. */
	uint64_t fh = 0;
	EXPECT_EQ(opendir_(&f, many, &fh), 0);
	struct fuse_read_in in = {.fh = fh, .offset = 0, .size = 8};
	EXPECT_EQ(call(&f, FUSE_READDIRPLUS, many, &in, sizeof(in), NULL, 0), 0);
	EXPECT_EQ(call(&f, FUSE_READDIR, many, &in, sizeof(in), NULL, 0), 0);
	/* READ on a directory handle, READDIR on a file handle. */
	EXPECT_EQ(fread_(&f, fh, 0, 10), -EISDIR);
	EXPECT_EQ(release(&f, FUSE_RELEASEDIR, fh), 0);
	uint64_t hfh = 0;
	EXPECT_EQ(fopen_(&f, node(&f, 1, "hello.txt"), O_RDONLY, &hfh), 0);
	in.fh = hfh;
	in.size = 4096;
	EXPECT_EQ(call(&f, FUSE_READDIR, 1, &in, sizeof(in), NULL, 0), -ENOTDIR);
	EXPECT_EQ(release(&f, FUSE_RELEASE, hfh), 0);
	/* OPENDIR on a file. */
	EXPECT_EQ(opendir_(&f, node(&f, 1, "hello.txt"), &fh), -ENOTDIR);
	/* The directory changing between calls: the listing still ends. */
	dots = 0;
	int seen = read_dir(&f, many, 0, 200, 1, &dots, NULL);
	EXPECT(seen >= 75 && seen <= 150);
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* ---- escapes: run with openat2 and again in the fallback ---- */

static void escape_checks(struct fx *f)
{
	struct fuse_entry_out e;
	/* Names that are not one component. */
	const char *bad[] = {"..", ".", "../../etc", "a/b", "/etc/passwd", "../secret", "sub/"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_EQ(lookup(f, 1, bad[i], &e), -EINVAL);
		EXPECT_EQ(mkdir_(f, 1, bad[i], 0755, NULL), -EINVAL);
		uint64_t fh = 0;
		EXPECT_EQ(create_(f, 1, bad[i], O_RDWR | O_CREAT, 0644, &e, &fh), -EINVAL);
		EXPECT_EQ(call(f, FUSE_SYMLINK, 1, S(bad[i]), S("x")), -EINVAL);
		EXPECT_EQ(call(f, FUSE_UNLINK, 1, S(bad[i]), NULL, 0), -EINVAL);
		EXPECT_EQ(call(f, FUSE_RMDIR, 1, S(bad[i]), NULL, 0), -EINVAL);
		struct fuse_rename_in rn = {.newdir = 1};
		EXPECT_EQ(call3(f, FUSE_RENAME, 1, &rn, sizeof(rn), S("hello.txt"), S(bad[i])),
			  -EINVAL);
		EXPECT_EQ(call3(f, FUSE_RENAME, 1, &rn, sizeof(rn), S(bad[i]), S("x")), -EINVAL);
		struct fuse_link_in li = {.oldnodeid = node(f, 1, "hello.txt")};
		EXPECT_EQ(call(f, FUSE_LINK, 1, &li, sizeof(li), S(bad[i])), -EINVAL);
		forget(f, li.oldnodeid, 1);
	}
	/* Empty, unterminated, and too long. */
	EXPECT_EQ(call(f, FUSE_LOOKUP, 1, "", 1, NULL, 0), -EINVAL);
	EXPECT_EQ(call(f, FUSE_LOOKUP, 1, "hello.txt", 9, NULL, 0), -EINVAL);
	EXPECT_EQ(call(f, FUSE_LOOKUP, 1, NULL, 0, NULL, 0), -EINVAL);
	char longname[301];
	memset(longname, 'a', 300);
	longname[300] = 0;
	EXPECT_EQ(call(f, FUSE_LOOKUP, 1, S(longname), NULL, 0), -ENAMETOOLONG);
	EXPECT_EQ(mkdir_(f, 1, longname, 0755, NULL), -ENAMETOOLONG);
	longname[255] = 0; /* NAME_MAX itself is fine */
	EXPECT_EQ(lookup(f, 1, longname, &e), -ENOENT);
	/* A NUL inside the name ends it: "hello.txt\0/../x" is hello.txt. */
	EXPECT_EQ(call(f, FUSE_LOOKUP, 1, "hello.txt\0/../x", 16, NULL, 0),
		  sizeof(struct fuse_entry_out));

	/* Symlinks out of the share are symlinks, never their targets. */
	const char *links[] = {"out-abs", "out-rel", "out-dir", "in-link"};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		EXPECT_EQ(lookup(f, 1, links[i], &e), 0);
		EXPECT(S_ISLNK(e.attr.mode));
		uint64_t fh = 0;
		EXPECT_EQ(fopen_(f, e.nodeid, O_RDONLY, &fh), -ELOOP);
		EXPECT_EQ(opendir_(f, e.nodeid, &fh), -ENOTDIR);
		struct fuse_entry_out e2;
		EXPECT_EQ(lookup(f, e.nodeid, "passwd", &e2), -ENOTDIR);
		EXPECT_EQ(lookup(f, e.nodeid, "secret", &e2), -ENOTDIR);
		EXPECT_EQ(lookup(f, e.nodeid, "hello.txt", &e2), -ENOTDIR);
		struct fuse_getxattr_in gx = {.size = 64};
		(void)call(f, FUSE_GETXATTR, e.nodeid, &gx, sizeof(gx), S("user.x"));
		EXPECT(!reply_has(f, "root:") && !reply_has(f, "TOPSECRET"));
		/* CREATE over a symlink without O_EXCL opens nothing. */
		EXPECT(create_(f, 1, links[i], O_RDWR | O_CREAT, 0644, &e2, &fh) < 0);
		struct fuse_setattr_in sa;
		memset(&sa, 0, sizeof(sa));
		sa.valid = FATTR_SIZE;
		EXPECT(setattr_(f, e.nodeid, &sa, NULL) < 0);
	}
	char buf[128];
	snprintf(buf, sizeof(buf), "%s/secret", f->top);
	struct stat st;
	EXPECT_EQ(stat(buf, &st), 0);
	EXPECT_EQ(st.st_size, 9); /* never truncated through a link */
	EXPECT_EQ(stat("/etc/passwd", &st), 0);
	EXPECT(st.st_size > 0);

	/* Lookups below a regular file. */
	uint64_t hello = node(f, 1, "hello.txt");
	EXPECT_EQ(lookup(f, hello, "x", &e), -ENOTDIR);
	EXPECT_EQ(mkdir_(f, hello, "x", 0755, NULL), -ENOTDIR);

	/* FIFOs and device nodes are never opened (a FIFO would block us). */
	uint64_t fh = 0;
	EXPECT_EQ(lookup(f, 1, "fifo", &e), 0);
	EXPECT(S_ISFIFO(e.attr.mode));
	EXPECT_EQ(fopen_(f, e.nodeid, O_RDONLY, &fh), -EACCES);
	EXPECT_EQ(fopen_(f, e.nodeid, O_WRONLY, &fh), -EACCES);
	EXPECT_EQ(lookup(f, 1, "null", &e), 0);
	EXPECT(S_ISCHR(e.attr.mode));
	EXPECT_EQ(fopen_(f, e.nodeid, O_RDWR, &fh), -EACCES);
	EXPECT(create_(f, 1, "null", O_RDWR | O_CREAT, 0644, &e, &fh) < 0);
	EXPECT(create_(f, 1, "fifo", O_RDWR | O_CREAT, 0644, &e, &fh) < 0);
	EXPECT_EQ(fopen_(f, 1, O_RDONLY, &fh), -EISDIR);

	/* Forged and forgotten nodeids, forged handles. */
	struct fuse_attr a;
	EXPECT_EQ(getattr(f, 0, &a), -ENOENT);
	EXPECT_EQ(getattr(f, 0xdeadbeefcafeull, &a), -ENOENT);
	EXPECT_EQ(getattr(f, (7ull << 32) | 2, &a), -ENOENT);
	EXPECT_EQ(getattr(f, UINT64_MAX, &a), -ENOENT);
	EXPECT_EQ(lookup(f, 12345, "hello.txt", &e), -ENOENT);
	uint64_t sub = node(f, 1, "sub");
	EXPECT_EQ(getattr(f, sub, &a), 0);
	forget(f, sub, 1000); /* more than it has */
	EXPECT_EQ(getattr(f, sub, &a), -ENOENT);
	EXPECT_EQ(lookup(f, sub, "inner.txt", &e), -ENOENT);
	forget(f, sub, 1);
	forget(f, 0, 1);
	forget(f, UINT64_MAX, 1);
	forget(f, 1, 1000); /* the root stays */
	EXPECT_EQ(getattr(f, 1, &a), 0);
	uint64_t sub2 = node(f, 1, "sub");
	EXPECT(sub2 != sub); /* a new generation */
	EXPECT_EQ(getattr(f, sub, &a), -ENOENT);
	EXPECT_EQ(fread_(f, 0, 0, 10), -EBADF);
	EXPECT_EQ(fread_(f, 0x100000001ull, 0, 10), -EBADF);
	EXPECT_EQ(fwrite_(f, 0x700000003ull, 0, "x", 1, 0), -EBADF);
	EXPECT_EQ(release(f, FUSE_RELEASE, 99), -EBADF);
	/* BATCH_FORGET whose count runs past its payload. */
	struct {
		struct fuse_batch_forget_in h;
		struct fuse_forget_one one;
	} bf = {{1000, 0}, {sub2, 1}};
	EXPECT_EQ(call(f, FUSE_BATCH_FORGET, 0, &bf, sizeof(bf), NULL, 0), NOREPLY);
	EXPECT_EQ(getattr(f, sub2, &a), -ENOENT);
	/* The host tree outside is untouched. */
	EXPECT_EQ(stat(buf, &st), 0);
	EXPECT_EQ(st.st_size, 9);
}

static void test_escapes(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	EXPECT_EQ(fsrv_of(&f)->openat2, 1);
	EXPECT(msb_plugin_entry_v1()->features & MSB_STORAGE_F_OPENAT2);
	do_init(&f);
	escape_checks(&f);
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

static void deny_openat2(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	EXPECT(ctx != NULL);
	EXPECT_EQ(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(openat2), 0), 0);
	EXPECT_EQ(seccomp_load(ctx), 0);
	seccomp_release(ctx);
}

static void wait_child(pid_t pid)
{
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_fallback(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		in_child = 1;
		deny_openat2();
		struct fx f = {0};
		make_tree(&f);
		warnings = 0;
		open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
		EXPECT_EQ(fsrv_of(&f)->openat2, 0);
		EXPECT_EQ(warnings, 1);
		do_init(&f);
		escape_checks(&f);
		/* The fallback still serves the ordinary operations. */
		uint64_t fh = 0;
		struct fuse_entry_out e;
		EXPECT_EQ(create_(&f, 1, "fb.txt", O_RDWR | O_CREAT, 0644, &e, &fh), 0);
		EXPECT_EQ(fwrite_(&f, fh, 0, "fallback", 8, 0), 8);
		EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
		close_share(&f);
		/* Logged once per instance, not per share. */
		open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
		EXPECT_EQ(warnings, 1);
		close_share(&f);
		msb_plugin_entry_v1()->destroy(f.inst);
		rm_tree(&f);
		_exit(0);
	}
	wait_child(pid);
}

/* A mount point under the share is not crossed, with openat2 or without. */
static void test_mount_point(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		in_child = 1;
		if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
			_exit(77);
		struct fx f = {0};
		make_tree(&f);
		char p[512];
		path_of(&f, p, sizeof(p), "mnt");
		EXPECT_EQ(mkdir(p, 0755), 0);
		EXPECT_EQ(mount("none", p, "tmpfs", 0, NULL), 0);
		put_file(&f, "mnt/other-fs", "other\n");
		for (int round = 0; round < 2; round++) {
			if (round == 1)
				deny_openat2();
			open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
			EXPECT_EQ(fsrv_of(&f)->openat2, round == 0);
			do_init(&f);
			struct fuse_entry_out e;
			EXPECT_EQ(lookup(&f, 1, "mnt", &e), -EACCES);
			EXPECT_EQ(lookup(&f, 1, "sub", &e), 0);
			/* Listed, but with no nodeid: the guest cannot enter it. */
			int dots = 0;
			static uint64_t ids[16];
			memset(ids, 0xff, sizeof(ids));
			int n = read_dir(&f, 1, 1, 4096, 0, &dots, ids);
			int zero = 0;
			for (int i = 0; i < n && i < 16; i++)
				zero += ids[i] == 0;
			EXPECT_EQ(zero, 1);
			close_share(&f);
		}
		umount(p);
		msb_plugin_entry_v1()->destroy(f.inst);
		rm_tree(&f);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- read-only shares ---- */

/* Everything a mutation could change, for every entry of the tree, as text. */
static FILE *snap_out;

static int snap_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)type;
	(void)ftw;
	char link[256] = "", names[4096], val[1024];
	if (S_ISLNK(st->st_mode))
		EXPECT(readlink(path, link, sizeof(link) - 1) >= 0);
	fprintf(snap_out, "%s %o %u %u %lld %lld.%09ld %s\n", path, st->st_mode, st->st_uid,
		st->st_gid, (long long)st->st_size, (long long)st->st_mtim.tv_sec,
		st->st_mtim.tv_nsec, link);
	ssize_t n = llistxattr(path, names, sizeof(names));
	for (ssize_t p = 0; p < n; p += (ssize_t)strlen(names + p) + 1) {
		ssize_t v = lgetxattr(path, names + p, val, sizeof(val));
		fprintf(snap_out, "  %s=%.*s\n", names + p, (int)(v > 0 ? v : 0), val);
	}
	return 0;
}

static char *snapshot(struct fx *f)
{
	char *buf = NULL;
	size_t len = 0;
	snap_out = open_memstream(&buf, &len);
	EXPECT(snap_out != NULL);
	EXPECT_EQ(nftw(f->root, snap_one, 16, FTW_PHYS), 0);
	fclose(snap_out);
	return buf;
}

static void test_read_only(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	char p[512];
	path_of(&f, p, sizeof(p), "hello.txt");
	EXPECT_EQ(setxattr(p, "user.keep", "v", 1, 0), 0);
	char *before = snapshot(&f);
	EXPECT(strstr(before, "user.keep=v") != NULL);
	open_share(&f, 1, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	struct fuse_entry_out e;
	uint64_t hello = node(&f, 1, "hello.txt"), sub = node(&f, 1, "sub"), fh = 0;
	/* Reading works. */
	EXPECT_EQ(fopen_(&f, hello, O_RDONLY, &fh), 0);
	EXPECT_EQ(fread_(&f, fh, 0, 100), 13);
	/* A handle opened read-only cannot write, whatever the request says. */
	EXPECT_EQ(fwrite_(&f, fh, 0, "XX", 2, 0), -EROFS);
	struct fuse_fallocate_in fa = {.fh = fh, .length = 4096};
	EXPECT_EQ(call(&f, FUSE_FALLOCATE, hello, &fa, sizeof(fa), NULL, 0), -EROFS);
	struct fuse_copy_file_range_in cf = {.fh_in = fh, .fh_out = fh, .off_out = 5, .len = 5};
	EXPECT_EQ(call(&f, FUSE_COPY_FILE_RANGE, hello, &cf, sizeof(cf), NULL, 0), -EROFS);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	const uint32_t wflags[] = {O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC, O_WRONLY | O_APPEND,
				   O_RDWR | O_CREAT};
	for (size_t i = 0; i < sizeof(wflags) / sizeof(wflags[0]); i++)
		EXPECT_EQ(fopen_(&f, hello, wflags[i], &fh), -EROFS);
	EXPECT_EQ(create_(&f, 1, "c.txt", O_RDONLY | O_CREAT, 0644, &e, &fh), -EROFS);
	EXPECT_EQ(create_(&f, 1, "hello.txt", O_RDONLY | O_CREAT, 0644, &e, &fh), -EROFS);
	EXPECT_EQ(mkdir_(&f, 1, "d", 0755, NULL), -EROFS);
	struct fuse_mknod_in mk = {.mode = S_IFREG | 0644};
	EXPECT_EQ(call(&f, FUSE_MKNOD, 1, &mk, sizeof(mk), S("n")), -EROFS);
	EXPECT_EQ(call(&f, FUSE_SYMLINK, 1, S("l"), S("hello.txt")), -EROFS);
	struct fuse_link_in li = {.oldnodeid = hello};
	EXPECT_EQ(call(&f, FUSE_LINK, 1, &li, sizeof(li), S("h2")), -EROFS);
	EXPECT_EQ(call(&f, FUSE_UNLINK, 1, S("hello.txt"), NULL, 0), -EROFS);
	EXPECT_EQ(call(&f, FUSE_RMDIR, 1, S("sub"), NULL, 0), -EROFS);
	struct fuse_rename_in rn = {.newdir = sub};
	EXPECT_EQ(call3(&f, FUSE_RENAME, 1, &rn, sizeof(rn), S("hello.txt"), S("x")), -EROFS);
	struct fuse_rename2_in rn2 = {.newdir = 1, .flags = RENAME_EXCHANGE};
	EXPECT_EQ(call3(&f, FUSE_RENAME2, 1, &rn2, sizeof(rn2), S("hello.txt"), S("sub")), -EROFS);
	struct fuse_setattr_in sa;
	const uint32_t valid[] = {FATTR_MODE, FATTR_UID,   FATTR_GID,
				  FATTR_SIZE, FATTR_ATIME, FATTR_MTIME | FATTR_MTIME_NOW};
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		memset(&sa, 0, sizeof(sa));
		sa.valid = valid[i];
		sa.mode = 04777;
		sa.uid = sa.gid = 1234;
		EXPECT_EQ(setattr_(&f, hello, &sa, NULL), -EROFS);
	}
	struct {
		uint32_t size, flags;
	} sx = {1, 0};
	EXPECT_EQ(call3(&f, FUSE_SETXATTR, hello, &sx, sizeof(sx), S("user.x"), "y", 1), -EROFS);
	EXPECT_EQ(call(&f, FUSE_REMOVEXATTR, hello, S("user.keep"), NULL, 0), -EROFS);
	struct fuse_access_in ac = {.mask = W_OK};
	EXPECT_EQ(call(&f, FUSE_ACCESS, hello, &ac, sizeof(ac), NULL, 0), -EROFS);
	/* Raw WRITE with a forged handle number: EROFS before anything. */
	EXPECT_EQ(fwrite_(&f, 0x100000001ull, 0, "x", 1, 0), -EROFS);
	close_share(&f);
	char *after = snapshot(&f);
	EXPECT(strcmp(before, after) == 0);
	free(before);
	free(after);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* ---- identity ---- */

/*
 * Identity records outlive FORGET only while the host inode's ctime is
 * the one they were known at: a record changed on the host (which moves
 * ctime) is read again on the next LOOKUP, never served from memory.
 */
static void test_identity_cache(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	/* Made by the guest as the server's own user: no record written, known at creation. */
	f.uid = getuid();
	f.gid = getgid();
	struct fuse_entry_out e;
	uint64_t fh = 0;
	EXPECT_EQ(create_(&f, 1, "c", O_RDWR | O_CREAT, 0644, &e, &fh), 0);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	EXPECT_EQ(e.attr.uid, getuid());
	forget(&f, e.nodeid, 1); /* remembered: ctime unchanged since creation */
	struct fuse_entry_out e2;
	EXPECT_EQ(lookup(&f, 1, "c", &e2), 0);
	EXPECT_EQ(e2.attr.uid, getuid());
	EXPECT_EQ(e2.attr.mode & 07777, 0644);
	forget(&f, e2.nodeid, 1);
	/* The host writes a record itself: ctime moves, the remembered one is stale. */
	char p[512];
	path_of(&f, p, sizeof(p), "c");
	uint32_t rec[4] = {htole32(1), htole32(4321), htole32(4322), htole32(0600)};
	EXPECT_EQ(setxattr(p, fsrv_of(&f)->id_xattr, rec, sizeof(rec), 0), 0);
	EXPECT_EQ(lookup(&f, 1, "c", &e2), 0);
	EXPECT_EQ(e2.attr.uid, 4321);
	EXPECT_EQ(e2.attr.gid, 4322);
	EXPECT_EQ(e2.attr.mode & 07777, 0600);
	forget(&f, e2.nodeid, 1);
	/* And removed again. */
	EXPECT_EQ(removexattr(p, fsrv_of(&f)->id_xattr), 0);
	EXPECT_EQ(lookup(&f, 1, "c", &e2), 0);
	EXPECT_EQ(e2.attr.uid, getuid());
	EXPECT_EQ(e2.attr.mode & 07777, 0644);
	forget(&f, e2.nodeid, 1);
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

static void test_identity_strict(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	/* A guest user creates a setuid file: the host file is the server's, 0755. */
	f.uid = f.gid = 1000;
	struct fuse_entry_out e;
	uint64_t fh = 0;
	EXPECT_EQ(create_(&f, 1, "suid", O_RDWR | O_CREAT, 04755, &e, &fh), 0);
	EXPECT_EQ(e.attr.uid, 1000);
	EXPECT_EQ(e.attr.gid, 1000);
	EXPECT_EQ(e.attr.mode, S_IFREG | 04755);
	struct stat st;
	host_stat(&f, "suid", &st);
	EXPECT_EQ(st.st_uid, getuid());
	EXPECT_EQ(st.st_mode & 07000, 0);
	EXPECT_EQ(st.st_mode & 0777, 0755);
	char p[512], v[64];
	path_of(&f, p, sizeof(p), "suid");
	EXPECT_EQ(getxattr(p, FSRV_ID_XATTR_TRUSTED, v, sizeof(v)), 16);
	/* A write that kills suid/sgid clears them in the guest's view. */
	EXPECT_EQ(fwrite_(&f, fh, 0, "x", 1, FUSE_WRITE_KILL_SUIDGID), 1);
	struct fuse_attr a;
	EXPECT_EQ(getattr(&f, e.nodeid, &a), 0);
	EXPECT_EQ(a.mode, S_IFREG | 0755);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	/* mkdir with 0700 still gives the server rwx; the guest sees 0700 and its owner. */
	struct fuse_entry_out d;
	EXPECT_EQ(mkdir_(&f, 1, "private", 0500, &d), 0);
	EXPECT_EQ(d.attr.mode, S_IFDIR | 0500);
	EXPECT_EQ(d.attr.uid, 1000);
	host_stat(&f, "private", &st);
	EXPECT_EQ(st.st_mode & 0700, 0700);
	EXPECT_EQ(st.st_uid, getuid());
	/* A setgid directory (in the view) passes on its group, and setgid to directories. */
	struct fuse_setattr_in sg;
	memset(&sg, 0, sizeof(sg));
	sg.valid = FATTR_MODE | FATTR_GID;
	sg.mode = S_IFDIR | 02775;
	sg.gid = 77;
	EXPECT_EQ(setattr_(&f, d.nodeid, &sg, NULL), 0);
	struct fuse_entry_out ge;
	EXPECT_EQ(create_(&f, d.nodeid, "g", O_RDWR | O_CREAT, 0644, &ge, &fh), 0);
	EXPECT_EQ(ge.attr.gid, 77);
	EXPECT_EQ(ge.attr.uid, 1000);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	EXPECT_EQ(mkdir_(&f, d.nodeid, "gd", 0755, &ge), 0);
	EXPECT_EQ(ge.attr.gid, 77);
	EXPECT_EQ(ge.attr.mode, S_IFDIR | 02755);
	host_stat(&f, "private/gd", &st);
	EXPECT_EQ(st.st_mode & 07000, 0);
	/* Symlinks get the overlay too (trusted.* works on them). */
	EXPECT_EQ(call(&f, FUSE_SYMLINK, 1, S("mylink"), S("suid")), sizeof(e));
	memcpy(&e, f.reply, sizeof(e));
	EXPECT_EQ(e.attr.uid, 1000);
	/* chmod/chown of a host file: only the view changes. */
	f.uid = f.gid = 0;
	uint64_t hello = node(&f, 1, "hello.txt");
	struct stat hst0, hst1;
	host_stat(&f, "hello.txt", &hst0);
	struct fuse_setattr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.valid = FATTR_UID | FATTR_GID;
	sa.uid = 2000;
	sa.gid = 3000;
	EXPECT_EQ(setattr_(&f, hello, &sa, &a), 0);
	EXPECT_EQ(a.uid, 2000);
	EXPECT_EQ(a.gid, 3000);
	EXPECT_EQ(a.mode, S_IFREG | 0644);
	sa.valid = FATTR_MODE;
	sa.mode = S_IFREG | 06777;
	EXPECT_EQ(setattr_(&f, hello, &sa, &a), 0);
	EXPECT_EQ(a.mode, S_IFREG | 06777);
	EXPECT_EQ(a.uid, 2000);
	sa.valid = FATTR_GID;
	sa.gid = 5;
	EXPECT_EQ(setattr_(&f, hello, &sa, &a), 0);
	EXPECT_EQ(a.uid, 2000);
	EXPECT_EQ(a.gid, 5);
	EXPECT_EQ(a.mode, S_IFREG | 06777);
	host_stat(&f, "hello.txt", &hst1);
	EXPECT_EQ(hst1.st_uid, hst0.st_uid);
	EXPECT_EQ(hst1.st_gid, hst0.st_gid);
	EXPECT_EQ(hst1.st_mode, hst0.st_mode);
	/* The view survives forgetting the inode and a new share (it is on disk). */
	forget(&f, hello, 100);
	close_share(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	EXPECT_EQ(lookup(&f, 1, "hello.txt", &e), 0);
	EXPECT_EQ(e.attr.uid, 2000);
	EXPECT_EQ(e.attr.mode, S_IFREG | 06777);
	/* READDIRPLUS reports the view as well. */
	int dots = 0;
	static uint64_t ids[32];
	(void)read_dir(&f, 1, 1, 65536, 0, &dots, ids);
	/* The guest cannot read or forge the record. */
	struct fuse_getxattr_in gx = {.size = 64};
	EXPECT_EQ(call(&f, FUSE_GETXATTR, e.nodeid, &gx, sizeof(gx), S(FSRV_ID_XATTR_TRUSTED)),
		  -ENODATA);
	close_share(&f);
	/* Identity off on the same tree: host values show. */
	open_share(&f, 0, MSB_SHARE_IDENTITY_OFF);
	do_init(&f);
	EXPECT_EQ(lookup(&f, 1, "hello.txt", &e), 0);
	EXPECT_EQ(e.attr.uid, hst0.st_uid);
	EXPECT_EQ(e.attr.mode, hst0.st_mode);
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* Without CAP_SYS_ADMIN the overlay lives in user.msb.owner, as hidden as the other. */
static void test_identity_unprivileged(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		in_child = 1;
		struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
		struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
		EXPECT_EQ(syscall(SYS_capget, &hdr, data), 0);
		data[CAP_SYS_ADMIN / 32].effective &= ~(1u << (CAP_SYS_ADMIN % 32));
		EXPECT_EQ(syscall(SYS_capset, &hdr, data), 0);
		struct fx f = {0};
		make_tree(&f);
		open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
		EXPECT(strcmp(fsrv_of(&f)->id_xattr, FSRV_ID_XATTR_USER) == 0);
		do_init(&f);
		f.uid = f.gid = 1000;
		struct fuse_entry_out e;
		uint64_t fh = 0;
		EXPECT_EQ(create_(&f, 1, "u", O_RDWR | O_CREAT, 0640, &e, &fh), 0);
		EXPECT_EQ(e.attr.uid, 1000);
		char p[512], v[64];
		path_of(&f, p, sizeof(p), "u");
		EXPECT_EQ(getxattr(p, FSRV_ID_XATTR_USER, v, sizeof(v)), 16);
		struct fuse_getxattr_in gx = {.size = 64};
		EXPECT_EQ(call(&f, FUSE_GETXATTR, e.nodeid, &gx, sizeof(gx), S(FSRV_ID_XATTR_USER)),
			  -ENODATA);
		gx.size = 4096;
		EXPECT(call(&f, FUSE_LISTXATTR, e.nodeid, &gx, sizeof(gx), NULL, 0) >= 0);
		EXPECT(!reply_has(&f, "msb"));
		close_share(&f);
		msb_plugin_entry_v1()->destroy(f.inst);
		rm_tree(&f);
		_exit(0);
	}
	wait_child(pid);
}

static void test_identity_off(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_OFF);
	do_init(&f);
	f.uid = f.gid = 1000;
	struct fuse_entry_out e;
	uint64_t fh = 0;
	EXPECT_EQ(create_(&f, 1, "mine", O_RDWR | O_CREAT, 06755, &e, &fh), 0);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	struct stat st;
	host_stat(&f, "mine", &st);
	EXPECT_EQ(st.st_uid, 1000);
	EXPECT_EQ(st.st_gid, 1000);
	EXPECT_EQ(st.st_mode & 07777, 0755);
	EXPECT_EQ(e.attr.mode, S_IFREG | 0755);
	struct fuse_entry_out d;
	EXPECT_EQ(mkdir_(&f, 1, "dd", 07777, &d), 0);
	host_stat(&f, "dd", &st);
	EXPECT_EQ(st.st_mode & 06000, 0);
	EXPECT_EQ(st.st_uid, 1000);
	struct fuse_mknod_in mk = {.mode = S_IFREG | 06750};
	EXPECT_EQ(call(&f, FUSE_MKNOD, 1, &mk, sizeof(mk), S("nod")), sizeof(e));
	host_stat(&f, "nod", &st);
	EXPECT_EQ(st.st_mode & 07777, 0750);
	EXPECT_EQ(st.st_gid, 1000);
	f.uid = f.gid = 0;
	uint64_t hello = node(&f, 1, "hello.txt");
	struct fuse_setattr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.valid = FATTR_MODE;
	sa.mode = S_IFREG | 04711;
	struct fuse_attr a;
	EXPECT_EQ(setattr_(&f, hello, &sa, &a), 0);
	host_stat(&f, "hello.txt", &st);
	EXPECT_EQ(st.st_mode & 07777, 0711);
	EXPECT_EQ(a.mode, S_IFREG | 0711);
	sa.valid = FATTR_UID | FATTR_GID;
	sa.uid = 4242;
	sa.gid = 4343;
	EXPECT_EQ(setattr_(&f, hello, &sa, &a), 0);
	host_stat(&f, "hello.txt", &st);
	EXPECT_EQ(st.st_uid, 4242);
	EXPECT_EQ(st.st_gid, 4343);
	/* A host-placed setuid file: a killing write strips it on the host. */
	char p[512];
	path_of(&f, p, sizeof(p), "hello.txt");
	EXPECT_EQ(chmod(p, 04755), 0);
	EXPECT_EQ(fopen_(&f, hello, O_WRONLY, &fh), 0);
	EXPECT_EQ(fwrite_(&f, fh, 0, "H", 1, FUSE_WRITE_KILL_SUIDGID), 1);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	host_stat(&f, "hello.txt", &st);
	EXPECT_EQ(st.st_mode & 07777, 0755);
	/* Nothing of the overlay is written in this mode. */
	char v[64];
	path_of(&f, p, sizeof(p), "mine");
	EXPECT_EQ(getxattr(p, FSRV_ID_XATTR_TRUSTED, v, sizeof(v)), -1);
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* ---- malformed requests ---- */

static void test_malformed(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	struct iovec in[8];
	struct fuse_entry_out e;
	/* Less than a header: no reply can be formed. */
	size_t len = build(&f, FUSE_LOOKUP, 1, S("hello.txt"), NULL, 0, NULL, 0);
	in[0] = (struct iovec){reqbuf, 39};
	EXPECT(send_iov(&f, in, 1, sizeof(outbuf)) < 0 && f.rc < 0);
	EXPECT(send_iov(&f, in, 0, sizeof(outbuf)) < 0 && f.rc < 0);
	/* An out buffer too small for a header. */
	in[0] = (struct iovec){reqbuf, len};
	EXPECT(send_iov(&f, in, 1, 15) < 0 && f.rc < 0);
	/* A reply that does not fit: an error, and no nodeid is leaked. */
	EXPECT_EQ(send_iov(&f, in, 1, 40), -EOVERFLOW);
	/* len larger than what is there, smaller than a header. */
	struct fuse_in_header h;
	memcpy(&h, reqbuf, sizeof(h));
	h.len = (uint32_t)len + 1;
	memcpy(reqbuf, &h, sizeof(h));
	EXPECT_EQ(send_iov(&f, in, 1, sizeof(outbuf)), -EINVAL);
	h.len = 20;
	memcpy(reqbuf, &h, sizeof(h));
	EXPECT_EQ(send_iov(&f, in, 1, sizeof(outbuf)), -EINVAL);
	h.len = 0xffffffffu;
	memcpy(reqbuf, &h, sizeof(h));
	EXPECT_EQ(send_iov(&f, in, 1, sizeof(outbuf)), -EINVAL);
	/* Extension length past the end. */
	h.len = (uint32_t)len;
	h.total_extlen = 100;
	memcpy(reqbuf, &h, sizeof(h));
	EXPECT_EQ(send_iov(&f, in, 1, sizeof(outbuf)), -EINVAL);
	/* Header and name split across many iovecs, at odd places. */
	len = build(&f, FUSE_LOOKUP, 1, S("hello.txt"), NULL, 0, NULL, 0);
	size_t cuts[] = {0, 3, 17, 39, 41, 45, len};
	for (int i = 0; i < 6; i++)
		in[i] = (struct iovec){reqbuf + cuts[i], cuts[i + 1] - cuts[i]};
	EXPECT_EQ(send_iov(&f, in, 6, sizeof(outbuf)), sizeof(e));
	/* A reply split across several out buffers. */
	struct iovec outs[3] = {{outbuf, 7}, {outbuf + 100, 50}, {outbuf + 200, 4096}};
	in[0] = (struct iovec){reqbuf, len};
	f.rc = f.srv.handle(f.srv.ctx, in, 1, outs, 3);
	EXPECT_EQ(f.rc, 16 + sizeof(e));
	/* A WRITE whose size is larger than its payload, or than max_write. */
	uint64_t fh = 0;
	EXPECT_EQ(create_(&f, 1, "w.txt", O_RDWR | O_CREAT, 0644, &e, &fh), 0);
	struct fuse_write_in wi = {.fh = fh, .size = 100};
	EXPECT_EQ(call(&f, FUSE_WRITE, 1, &wi, sizeof(wi), "short", 5), -EINVAL);
	wi.size = FSRV_MAX_WRITE + 1;
	EXPECT_EQ(call(&f, FUSE_WRITE, 1, &wi, sizeof(wi), "short", 5), -EINVAL);
	EXPECT_EQ(call(&f, FUSE_WRITE, 1, &wi, 10, NULL, 0), -EINVAL);
	/* A WRITE whose payload is scattered: written in order. */
	wi.size = 12;
	len = build(&f, FUSE_WRITE, 1, &wi, sizeof(wi), "0123456789ab", 12, NULL, 0);
	in[0] = (struct iovec){reqbuf, 50};
	in[1] = (struct iovec){reqbuf + 50, 75};
	in[2] = (struct iovec){reqbuf + 125, 1};
	in[3] = (struct iovec){reqbuf + 126, len - 126};
	EXPECT_EQ(send_iov(&f, in, 4, sizeof(outbuf)), sizeof(struct fuse_write_out));
	char buf[64];
	host_read(&f, "w.txt", buf, sizeof(buf));
	EXPECT(strcmp(buf, "0123456789ab") == 0);
	/* A READ into scattered out buffers. */
	struct fuse_read_in ri = {.fh = fh, .size = 12};
	len = build(&f, FUSE_READ, 1, &ri, sizeof(ri), NULL, 0, NULL, 0);
	in[0] = (struct iovec){reqbuf, len};
	memset(outbuf, 0, 4096);
	struct iovec routs[4] = {
		{outbuf, 10}, {outbuf + 100, 10}, {outbuf + 200, 3}, {outbuf + 300, 100}};
	EXPECT_EQ(f.srv.handle(f.srv.ctx, in, 1, routs, 4), 28);
	EXPECT(memcmp(outbuf + 106, "0123", 4) == 0 && memcmp(outbuf + 200, "456", 3) == 0);
	EXPECT(memcmp(outbuf + 300, "789ab", 5) == 0);
	/* Short fixed arguments for every opcode: EINVAL, never a crash. */
	for (uint32_t op = 1; op < 60; op++) {
		if (op == FUSE_INIT || op == FUSE_DESTROY)
			continue;
		int r = call(&f, op, 1, "abc", 3, NULL, 0);
		EXPECT(r < 0 || r == NOREPLY || op == FUSE_GETATTR || op == FUSE_STATFS ||
		       op == FUSE_READLINK || op == FUSE_SYNCFS || op == FUSE_LOOKUP);
	}
	/* Oversized argument blocks. */
	static uint8_t huge[FSRV_ARGS_MAX + 100];
	memset(huge, 'a', sizeof(huge));
	EXPECT_EQ(call(&f, FUSE_LOOKUP, 1, huge, sizeof(huge), NULL, 0), -E2BIG);
	/* Random garbage, random splits: replies are well formed or refusals. */
	srand(1234);
	for (int i = 0; i < 20000; i++) {
		size_t n = (size_t)(rand() % 200);
		for (size_t k = 0; k < n; k++)
			reqbuf[k] = (uint8_t)rand();
		if (n >= 40 && rand() % 2) {
			memcpy(&h, reqbuf, sizeof(h));
			h.len = (uint32_t)n;
			h.total_extlen = 0;
			h.opcode = (uint32_t)(rand() % 52);
			if (h.opcode == FUSE_INIT || h.opcode == FUSE_DESTROY ||
			    h.opcode == FUSE_SETLKW)
				h.opcode = FUSE_GETATTR;
			if (rand() % 2)
				h.nodeid = 1;
			memcpy(reqbuf, &h, sizeof(h));
		}
		unsigned cnt = 0;
		for (size_t off = 0; off < n && cnt < 8; cnt++) {
			size_t l = cnt == 7 ? n - off : (size_t)(rand() % 60);
			if (l > n - off)
				l = n - off;
			in[cnt] = (struct iovec){reqbuf + off, l};
			off += l;
		}
		(void)send_iov(&f, in, cnt, 1 + (size_t)(rand() % 8192));
	}
	struct fuse_attr a;
	EXPECT_EQ(getattr(&f, 1, &a), 0);
	EXPECT_EQ(release(&f, FUSE_RELEASE, fh), 0);
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* ---- fds, threads ---- */

static void test_no_fd_leak(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	int before = count_fds();
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	/* Leave inodes looked up and handles open, as a guest killed mid-run would. */
	uint64_t fh = 0;
	struct fuse_entry_out e;
	EXPECT_EQ(create_(&f, 1, "open1", O_RDWR | O_CREAT, 0644, &e, &fh), 0);
	EXPECT_EQ(fopen_(&f, node(&f, 1, "hello.txt"), O_RDONLY, &fh), 0);
	EXPECT_EQ(opendir_(&f, node(&f, 1, "sub"), &fh), 0);
	(void)node(&f, node(&f, 1, "sub"), "inner.txt");
	EXPECT(count_fds() > before + 4);
	close_share(&f);
	EXPECT_EQ(count_fds(), before);
	/* A failed share_open leaves nothing either. */
	struct msb_share bad = {.size = sizeof(bad), .host_path = "/nonexistent/x", .tag = "t"};
	struct msb_error err = MSB_ERROR_INIT;
	EXPECT_EQ(f.ops->share_open(f.inst, &bad, &f.srv, &err), -ENOENT);
	EXPECT(strstr(err.msg, "/nonexistent/x") != NULL);
	bad.host_path = f.root;
	bad.tag = "a-tag-that-is-much-longer-than-thirty-five-bytes";
	EXPECT_EQ(f.ops->share_open(f.inst, &bad, &f.srv, &err), -EINVAL);
	bad.tag = "t";
	bad.identity = 7;
	EXPECT_EQ(f.ops->share_open(f.inst, &bad, &f.srv, &err), -EINVAL);
	EXPECT_EQ(count_fds(), before);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

/* Out of fds: lookups fail with EMFILE, the server goes on, nothing leaks. */
static void test_fd_exhaustion(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		in_child = 1;
		struct fx f = {0};
		make_tree(&f);
		char p[64];
		for (int i = 0; i < 40; i++) {
			snprintf(p, sizeof(p), "f%02d", i);
			put_file(&f, p, "x");
		}
		int base = count_fds();
		struct rlimit rl = {(rlim_t)base + 24, (rlim_t)base + 24};
		EXPECT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
		open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
		do_init(&f);
		uint64_t ids[40];
		int ok = 0, emfile = 0;
		for (int i = 0; i < 40; i++) {
			struct fuse_entry_out e;
			snprintf(p, sizeof(p), "f%02d", i);
			int r = lookup(&f, 1, p, &e);
			ids[i] = r == 0 ? e.nodeid : 0;
			ok += r == 0;
			emfile += r == -EMFILE;
		}
		EXPECT(ok > 0 && emfile > 0 && ok + emfile == 40);
		for (int i = 0; i < 40; i++)
			if (ids[i])
				forget(&f, ids[i], 1);
		EXPECT_EQ(lookup(&f, 1, "f39", &(struct fuse_entry_out){0}), 0);
		close_share(&f);
		EXPECT_EQ(count_fds(), base);
		msb_plugin_entry_v1()->destroy(f.inst);
		rm_tree(&f);
		_exit(0);
	}
	wait_child(pid);
}

struct worker {
	struct fx *f;
	int id;
	int errors;
};

static void *worker_fn(void *arg)
{
	struct worker *w = arg;
	static __thread uint8_t rq[4096], rp[8192];
	uint64_t unique = (uint64_t)w->id << 40;
	for (int i = 0; i < 3000; i++) {
		struct fuse_in_header h;
		memset(&h, 0, sizeof(h));
		h.unique = ++unique;
		size_t len = sizeof(h);
		const char *name = (i % 3) ? "hello.txt" : "sub";
		if (i % 4 == 3) {
			/* Forget what an earlier lookup returned. */
			struct fuse_forget_in fi = {1};
			uint64_t nid;
			memcpy(&nid, rp + 16, sizeof(nid));
			h.opcode = FUSE_FORGET;
			h.nodeid = nid;
			memcpy(rq + len, &fi, sizeof(fi));
			len += sizeof(fi);
		} else if (i % 4 == 2) {
			uint64_t nid;
			memcpy(&nid, rp + 16, sizeof(nid));
			h.opcode = FUSE_GETATTR;
			h.nodeid = nid;
			memset(rq + len, 0, 16);
			len += 16;
		} else {
			h.opcode = FUSE_LOOKUP;
			h.nodeid = 1;
			memcpy(rq + len, name, strlen(name) + 1);
			len += strlen(name) + 1;
		}
		h.len = (uint32_t)len;
		memcpy(rq, &h, sizeof(h));
		struct iovec in = {rq, len},
			     out = {rp + (h.opcode == FUSE_GETATTR ? 4096 : 0), 4096};
		int r = w->f->srv.handle(w->f->srv.ctx, &in, 1, &out, 1);
		if (r < 0 || (h.opcode == FUSE_FORGET && r != 0))
			w->errors++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	struct fx f = {0};
	make_tree(&f);
	open_share(&f, 0, MSB_SHARE_IDENTITY_STRICT);
	do_init(&f);
	pthread_t t[4];
	struct worker w[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){&f, i + 1, 0};
		assert_int_equal(pthread_create(&t[i], NULL, worker_fn, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		EXPECT_EQ(w[i].errors, 0);
	}
	struct fuse_attr a;
	EXPECT_EQ(getattr(&f, 1, &a), 0);
	close_share(&f);
	msb_plugin_entry_v1()->destroy(f.inst);
	rm_tree(&f);
}

int main(void)
{
	if (geteuid() != 0) {
		printf("# skipping: the storage server tests need root (device nodes, "
		       "trusted.*)\n");
		return 77;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init),	       cmocka_unit_test(test_lock_modes),
		cmocka_unit_test(test_operations),     cmocka_unit_test(test_xattrs),
		cmocka_unit_test(test_readdir),	       cmocka_unit_test(test_escapes),
		cmocka_unit_test(test_fallback),       cmocka_unit_test(test_mount_point),
		cmocka_unit_test(test_read_only),      cmocka_unit_test(test_identity_strict),
		cmocka_unit_test(test_identity_cache), cmocka_unit_test(test_identity_unprivileged),
		cmocka_unit_test(test_identity_off),   cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_no_fd_leak),     cmocka_unit_test(test_fd_exhaustion),
		cmocka_unit_test(test_threads),	       cmocka_unit_test(test_read_by_ref),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
