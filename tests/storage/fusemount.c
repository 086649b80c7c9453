/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-fusemount — serve one share of the storage module through the host
 * kernel's FUSE client, so the storage suites can drive the real server with
 * ordinary system calls (DESIGN.md "Testing layers", 2: host integration).
 *
 *   msb-fusemount [--ro] [--identity strict|off] [--locks guest|host]
 *                 [--no-openat2] [--threads N] [--transport auto|uring|dev]
 *                 [--poll-us N] [--no-splice] [--verbose] HOSTDIR MOUNTPOINT
 *
 * The module is loaded the way the supervisor loads it (registry, instance,
 * share_open), and each FUSE request read from /dev/fuse is handed to
 * srv->handle exactly as the virtio-fs device hands it a descriptor chain:
 * one readable buffer, one writable buffer.
 *
 * This program is also the suites' referee for the protocol: a request the
 * kernel sent that gets no reply, a reply the kernel refuses, or a reply whose
 * header does not match its request is an "anomaly".  The harness answers the
 * kernel with EIO so nothing hangs, names the anomaly on stderr, and exits 4.
 * After share_close it checks that nothing is left open (exit 3 otherwise).
 *
 * --threads N is the most workers that serve at once (default 4); one starts
 * with the mount and more as requests queue up (see struct fm).
 *
 * --transport: how requests travel.  "dev" reads and writes /dev/fuse (the
 * workers above).  "uring" is FUSE over io_uring (Linux 6.14+, with the fuse
 * module's enable_uring parameter on): one queue per CPU, each served on
 * its own CPU (fusering.c); the workers then only see FORGET and INTERRUPT.
 * "auto" (the default) is uring where the kernel offers it and the share
 * keeps locks in the guest (a host SETLKW may wait, and a queue is served
 * by one thread), else dev.
 *
 * --poll-us N (0..1000, default 50): over /dev/fuse, the longest the reader
 * polls for the next request before it sleeps (fm_read_request); 0 never.
 *
 * READ replies over /dev/fuse take the server's payload by reference (ABI
 * 1.4 handle_ref) and splice(2) it from the host file into the device
 * through two pipes, so file bytes are copied once (into the client's page
 * cache) instead of twice (into our buffer, then out of it): as a sandbox's
 * virtio-fs device, whose server reads straight into guest memory
 * (fm_send_ref).  --no-splice answers every READ by value.  With --verbose,
 * a by-reference reply's log line ends in " ref N" (the reference's length).
 *
 * Exit: 0 after SIGTERM/SIGINT or an unmount from outside; 1 for a setup
 * failure (one line on stderr); 2 for bad arguments; 3 fd leak; 4 anomalies.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <msb/msb-plugin.h>
#include <msb/msb.h>

#include "error.h"
#include "fusering.h"
#include "host.h"
#include "registry.h"

/*
 * The kernel refuses a read from /dev/fuse shorter than the largest request
 * it may send: a WRITE of max_write bytes plus its headers.  The server may
 * negotiate max_write up to 1 MiB; a READ reply is at most max_read (the
 * mount option below) plus its header.
 */
#define FM_MAX_IO  (1u << 20)
#define FM_IN_BUF  (FM_MAX_IO + 4096u)
#define FM_OUT_BUF (FM_MAX_IO + 4096u)

#define FM_MAX_THREADS	   64
#define FM_POLL_MAX_US	   1000
#define FM_POLL_DEFAULT_US 50
#define FM_POLL_STEP_NS	   4000u
#define FM_INIT_WAIT_S	   10

enum fm_exit {
	FM_EXIT_OK = 0,
	FM_EXIT_SETUP = 1,
	FM_EXIT_USAGE = 2,
	FM_EXIT_FD_LEAK = 3,
	FM_EXIT_ANOMALY = 4,
};

enum fm_transport { FM_TRANSPORT_AUTO, FM_TRANSPORT_URING, FM_TRANSPORT_DEV };

#define FM_ENABLE_URING "/sys/module/fuse/parameters/enable_uring"

struct fm_opts {
	int transport;
	int read_only;
	uint32_t identity;
	uint32_t locks;
	int no_openat2;
	int no_splice;
	int threads;
	int verbose;
	uint32_t poll_us; /* --poll-us: the longest a /dev/fuse reader polls */
	const char *host_dir;
	const char *mount_point;
};

struct fm {
	struct fm_opts opt;
	int fuse_fd;
	struct msb_fs_server srv;
	atomic_int stop;
	atomic_int anomalies;
	atomic_int fatal; /* a worker could not go on */
	/*
	 * Workers.  Only one at a time waits in read(2) on /dev/fuse (the
	 * "reader"); the others park on pool_cond.  The worker that served the
	 * last request becomes the reader again when none is, so a serial client
	 * is served by one warm thread: with several threads waiting in read(2),
	 * the kernel hands each request to the one that has waited longest, and
	 * on a machine with fewer cores than workers every request then paid
	 * for a cold thread on another CPU.  The reader hands over (waking a
	 * parked worker, or starting one, up to --threads) only where that
	 * pays (fm_more_wanted).
	 */
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_cond;
	int nthreads;	  /* under pool_lock, as are the two below */
	int reading;	  /* a worker is the reader */
	int parked;	  /* workers waiting on pool_cond */
	uint64_t poll_ns; /* the reader's polling window now (fm_read_request) */
	pthread_t threads[FM_MAX_THREADS];
	/* FUSE_INIT: 0 not yet answered, 1 answered, <0 failed (negative errno). */
	int init_state;
	pthread_mutex_t init_lock;
	pthread_cond_t init_cond;
	/* FUSE over io_uring: prepared before the mount, started after INIT. */
	struct fm_rings *rings;
	int uring_accepted; /* INIT's reply took FUSE_OVER_IO_URING */
};

static void fm_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fm_err(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per line, so lines from several workers never interleave. */
	dprintf(STDERR_FILENO, "msb-fusemount: %s\n", line);
}

static void fm_anomaly(struct fm *fm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fm_anomaly(struct fm *fm, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	atomic_fetch_add(&fm->anomalies, 1);
	fm_err("anomaly: %s", line);
}

static void fm_usage(FILE *to)
{
	fprintf(to, "usage: msb-fusemount [--ro] [--identity strict|off] [--locks guest|host] "
		    "[--no-openat2] [--threads N] [--transport auto|uring|dev] [--poll-us N] "
		    "[--no-splice] [--verbose] "
		    "HOSTDIR MOUNTPOINT\n");
}

/* A whole decimal number in lo..hi. */
static bool fm_parse_range(const char *arg, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long n = strtol(arg, &end, 10);
	if (errno || *end || end == arg || n < lo || n > hi)
		return false;
	*out = n;
	return true;
}

/* Arguments: on error one line on stderr and FM_EXIT_USAGE. */
static int fm_parse_args(int argc, char **argv, struct fm_opts *o)
{
	static const struct option longopts[] = {
		{"ro", no_argument, NULL, 'r'},
		{"identity", required_argument, NULL, 'i'},
		{"locks", required_argument, NULL, 'l'},
		{"no-openat2", no_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 't'},
		{"transport", required_argument, NULL, 'T'},
		{"poll-us", required_argument, NULL, 'p'},
		{"no-splice", no_argument, NULL, 'S'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	*o = (struct fm_opts){.identity = MSB_SHARE_IDENTITY_STRICT,
			      .locks = MSB_SHARE_LOCKS_GUEST,
			      .threads = 4,
			      .poll_us = FM_POLL_DEFAULT_US};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, "+:v", longopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			o->read_only = 1;
			break;
		case 'i':
			if (strcmp(optarg, "strict") == 0) {
				o->identity = MSB_SHARE_IDENTITY_STRICT;
			} else if (strcmp(optarg, "off") == 0) {
				o->identity = MSB_SHARE_IDENTITY_OFF;
			} else {
				fm_err("--identity: expected strict or off, not '%s'", optarg);
				return -1;
			}
			break;
		case 'l':
			if (strcmp(optarg, "guest") == 0) {
				o->locks = MSB_SHARE_LOCKS_GUEST;
			} else if (strcmp(optarg, "host") == 0) {
				o->locks = MSB_SHARE_LOCKS_HOST;
			} else {
				fm_err("--locks: expected guest or host, not '%s'", optarg);
				return -1;
			}
			break;
		case 'n':
			o->no_openat2 = 1;
			break;
		case 'T':
			if (strcmp(optarg, "auto") == 0) {
				o->transport = FM_TRANSPORT_AUTO;
			} else if (strcmp(optarg, "uring") == 0) {
				o->transport = FM_TRANSPORT_URING;
			} else if (strcmp(optarg, "dev") == 0) {
				o->transport = FM_TRANSPORT_DEV;
			} else {
				fm_err("--transport: expected auto, uring or dev, not '%s'",
				       optarg);
				return -1;
			}
			break;
		case 't': {
			long n;
			if (!fm_parse_range(optarg, 1, FM_MAX_THREADS, &n)) {
				fm_err("--threads: expected 1..%d, not '%s'", FM_MAX_THREADS,
				       optarg);
				return -1;
			}
			o->threads = (int)n;
			break;
		}
		case 'p': {
			long n;
			if (!fm_parse_range(optarg, 0, FM_POLL_MAX_US, &n)) {
				fm_err("--poll-us: expected 0..%d microseconds, not '%s'",
				       FM_POLL_MAX_US, optarg);
				return -1;
			}
			o->poll_us = (uint32_t)n;
			break;
		}
		case 'S':
			o->no_splice = 1;
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'h':
			fm_usage(stdout);
			exit(FM_EXIT_OK);
		case '?':
			if (optopt)
				fm_err("unknown option '-%c' (try --help)", optopt);
			else
				fm_err("unknown option '%s' (try --help)", argv[optind - 1]);
			return -1;
		case ':':
			fm_err("option '%s' needs an argument", argv[optind - 1]);
			return -1;
		default:
			fm_err("bad arguments (try --help)");
			return -1;
		}
	}
	if (argc - optind != 2) {
		fm_err("expected HOSTDIR and MOUNTPOINT, got %d argument(s) (try --help)",
		       argc - optind);
		return -1;
	}
	if (o->transport == FM_TRANSPORT_URING && o->locks == MSB_SHARE_LOCKS_HOST) {
		fm_err("--transport uring: not with --locks host (a SETLKW may wait, and each "
		       "io_uring queue is served by one thread); use --transport dev");
		return -1;
	}
	o->host_dir = argv[optind];
	o->mount_point = argv[optind + 1];
	return 0;
}

/*
 * Load the storage module: from MSB_PLUGIN_PATH when it is set (the same
 * variable the supervisor honours), otherwise from the build tree this
 * executable lives in (BUILD/tests/storage/msb-fusemount ->
 * BUILD/plugins/storage/storage.so).
 */
static int fm_load_module(struct msb_registry *reg, const struct msb_module **out,
			  struct msb_error *err)
{
	int r;
	const char *env = getenv("MSB_PLUGIN_PATH");
	if (env && *env) {
		cleanup_free char *list = strdup(env);
		if (!list)
			return msb_error_set(err, -ENOMEM, "out of memory");
		char *save = NULL;
		for (char *d = strtok_r(list, ":", &save); d; d = strtok_r(NULL, ":", &save))
			if ((r = msb_registry_add_dir(reg, d, err)) < 0)
				return r;
		if ((r = msb_registry_scan(reg, err)) < 0)
			return r;
	} else {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (n < 0)
			return msb_error_errno(err, -errno, "readlink /proc/self/exe");
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		char so[PATH_MAX + 64];
		snprintf(so, sizeof(so), "%s/../../plugins/storage/storage.so", exe);
		if ((r = msb_registry_load_file(reg, so, err)) < 0)
			return r;
	}
	const struct msb_module *m = msb_registry_find(reg, MSB_PLUGIN_STORAGE, "virtiofs");
	if (!m) {
		for (size_t i = 0; i < reg->count; i++)
			if (!reg->modules[i].loaded)
				return msb_error_set(err, -ENOENT, "refused: %s",
						     reg->modules[i].reason);
		return msb_error_set(err, -ENOENT, "no storage module 'virtiofs' found%s",
				     env && *env ? " on MSB_PLUGIN_PATH" : " in the build tree");
	}
	*out = m;
	return 0;
}

/*
 * --no-openat2: make openat2 fail with ENOSYS in this whole process, as on a
 * kernel older than 5.6 or under a container runtime's filter, so the
 * server's fallback resolution is what the suites exercise.  Installed
 * before share_open and before any thread exists, so every thread inherits
 * it.
 */
static int fm_deny_openat2(struct msb_error *err)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return msb_error_set(err, -ENOMEM, "seccomp_init failed");
	int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(openat2), 0);
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	if (r < 0)
		return msb_error_errno(err, r, "seccomp filter denying openat2");
	return 0;
}

static void fm_init_done(struct fm *fm, int state)
{
	pthread_mutex_lock(&fm->init_lock);
	if (fm->init_state == 0)
		fm->init_state = state;
	pthread_cond_broadcast(&fm->init_cond);
	pthread_mutex_unlock(&fm->init_lock);
}

/* An error reply the kernel always accepts, so a request never hangs. */
static void fm_reply_error(struct fm *fm, uint64_t unique, int error)
{
	struct fuse_out_header oh = {.len = sizeof(oh), .error = error, .unique = unique};
	if (write(fm->fuse_fd, &oh, sizeof(oh)) < 0 && errno != ENOENT)
		fm_err("writing an error reply for request %llu: %s", (unsigned long long)unique,
		       strerror(errno));
}

static int fm_needs_reply(uint32_t opcode)
{
	return opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET && opcode != FUSE_INTERRUPT;
}

/*
 * FUSE over io_uring is the transport's business, not the server's: where
 * the kernel offers it in INIT and our rings are ready, the harness accepts
 * it in the server's reply.
 */
static void fm_offer_uring(struct fm *fm, const uint8_t *in, size_t n, uint8_t *out, int r)
{
	if (!fm->rings ||
	    r < (int)(sizeof(struct fuse_out_header) + sizeof(struct fuse_init_out)) ||
	    n < sizeof(struct fuse_in_header) + offsetof(struct fuse_init_in, flags2) + 4)
		return;
	struct fuse_init_in ii = {0};
	size_t body = n - sizeof(struct fuse_in_header);
	memcpy(&ii, in + sizeof(struct fuse_in_header), body < sizeof(ii) ? body : sizeof(ii));
	struct fuse_out_header oh;
	memcpy(&oh, out, sizeof(oh));
	if (oh.error || !(ii.flags & FUSE_INIT_EXT) || !(ii.flags2 & FM_FUSE_OVER_IO_URING_FLAGS2))
		return;
	struct fuse_init_out io;
	memcpy(&io, out + sizeof(oh), sizeof(io));
	io.flags |= FUSE_INIT_EXT;
	io.flags2 |= FM_FUSE_OVER_IO_URING_FLAGS2;
	memcpy(out + sizeof(oh), &io, sizeof(io));
	fm->uring_accepted = 1;
}

/* After INIT is answered: check the server asked for what the buffers hold. */
static void fm_check_init(struct fm *fm, const uint8_t *out, size_t len)
{
	const struct fuse_out_header *oh = (const void *)out;
	if (oh->error) {
		fm_err("the server refused FUSE_INIT: %s", strerror(-oh->error));
		fm_init_done(fm, oh->error);
		return;
	}
	struct fuse_init_out io = {0};
	size_t body = len - sizeof(*oh);
	memcpy(&io, out + sizeof(*oh), body < sizeof(io) ? body : sizeof(io));
	if (fm->opt.verbose)
		fm_err("INIT: protocol %u.%u, max_write %u, max_pages %u, flags 0x%x flags2 0x%x",
		       io.major, io.minor, io.max_write, io.max_pages, io.flags, io.flags2);
	if (io.max_write > FM_IN_BUF - sizeof(struct fuse_in_header) - sizeof(struct fuse_write_in))
		fm_anomaly(fm,
			   "INIT: max_write %u is more than the 1 MiB this harness (and the "
			   "virtio-fs device) reads",
			   io.max_write);
	fm_init_done(fm, 1);
}

/*
 * A worker's two pipes for READ replies by reference: `data` takes the
 * payload from the host file, `msg` the whole reply (header, then the
 * payload moved over from `data`), which goes to /dev/fuse in one splice.
 * Both are non-blocking, sized for the largest reply, and empty between
 * requests.  fd -1: this worker answers by value.
 */
struct fm_pipes {
	int data[2], msg[2];
	uint32_t max; /* the largest payload they hold, at any file offset */
};

/*
 * Room for a header and FM_MAX_IO bytes at any offset: 2 MiB once rounded.
 * Without CAP_SYS_RESOURCE a pipe grows only to fs.pipe-max-size (1 MiB by
 * default); its largest READs then go by value.
 */
#define FM_PIPE_SIZE (FM_MAX_IO + 2 * 4096)

static void fm_pipes_close(struct fm_pipes *p)
{
	for (int i = 0; i < 2; i++) {
		if (p->data[i] >= 0)
			close(p->data[i]);
		if (p->msg[i] >= 0)
			close(p->msg[i]);
		p->data[i] = p->msg[i] = -1;
	}
}

/* fs.pipe-max-size: as large as a pipe grows without CAP_SYS_RESOURCE. */
static int fm_pipe_max_size(void)
{
	int n = 0;
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
	if (f) {
		if (fscanf(f, "%d", &n) != 1)
			n = 0;
		fclose(f);
	}
	return n;
}

static void fm_pipes_open(struct fm *fm, struct fm_pipes *p)
{
	p->data[0] = p->data[1] = p->msg[0] = p->msg[1] = -1;
	if (fm->opt.no_splice || !fm->srv.handle_ref || !fm->srv.ref_done)
		return;
	int size = -1;
	if (pipe2(p->data, O_NONBLOCK | O_CLOEXEC) == 0 &&
	    pipe2(p->msg, O_NONBLOCK | O_CLOEXEC) == 0) {
		size = fcntl(p->data[1], F_SETPIPE_SZ, FM_PIPE_SIZE);
		if (size < 0 && errno == EPERM)
			size = fcntl(p->data[1], F_SETPIPE_SZ, fm_pipe_max_size());
		if (size > 0 && fcntl(p->msg[1], F_SETPIPE_SZ, size) != size)
			size = -1;
	}
	/* One page for the header, one for a payload that starts mid-page. */
	if (size <= 2 * 4096) {
		fm_err("pipes for READ replies by reference: %s (answering by value)",
		       size < 0 ? strerror(errno) : "too small");
		fm_pipes_close(p);
		return;
	}
	p->max = (uint32_t)size - 2 * 4096;
}

/* Empty a pipe after a reply that did not go out whole. */
static void fm_pipe_drain(int fd, uint8_t *scratch)
{
	while (read(fd, scratch, FM_OUT_BUF) > 0)
		;
}

/*
 * A READ answered by reference: the payload goes from the server's file
 * into `data` (page references, no copy), the header into `msg`, the
 * payload after it, and `msg` into /dev/fuse, where the kernel copies it
 * once into the reader's pages.  Returns 1 when the request is answered
 * (or gone), 0 when the bytes could not be moved and the caller should ask
 * for the reply by value; nothing is left in either pipe.
 */
static int fm_send_ref(struct fm *fm, struct fm_pipes *p, const struct fuse_in_header *ih,
		       uint8_t *out, int r, const struct msb_fs_ref *ref)
{
	struct fuse_out_header oh;
	if (r != (int)sizeof(oh) || ref->len > p->max) {
		fm_anomaly(fm, "handle_ref() returned a %d-byte head and %u bytes by reference", r,
			   ref->len);
		fm_reply_error(fm, ih->unique, -EIO);
		return 1;
	}
	memcpy(&oh, out, sizeof(oh));
	if (oh.len != sizeof(oh) + ref->len || oh.unique != ih->unique || oh.error != 0) {
		fm_anomaly(fm,
			   "a reply by reference (len %u, error %d, unique %llu) does not "
			   "match its %u bytes or its request (unique %llu)",
			   oh.len, oh.error, (unsigned long long)oh.unique, ref->len,
			   (unsigned long long)ih->unique);
		fm_reply_error(fm, ih->unique, -EIO);
		return 1;
	}
	loff_t off = (loff_t)ref->offset;
	size_t got = 0;
	while (got < ref->len) {
		ssize_t k =
			splice(ref->fd, &off, p->data[1], NULL, ref->len - got, SPLICE_F_NONBLOCK);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			/* A file splice cannot read, or a full pipe: by value. */
			fm_pipe_drain(p->data[0], out);
			return 0;
		}
		if (k == 0)
			break; /* end of file: a short reply */
		got += (size_t)k;
	}
	oh.len = (uint32_t)(sizeof(oh) + got);
	size_t moved = 0;
	ssize_t k = write(p->msg[1], &oh, sizeof(oh));
	while (k == (ssize_t)sizeof(oh) && moved < got) {
		ssize_t m =
			splice(p->data[0], NULL, p->msg[1], NULL, got - moved, SPLICE_F_NONBLOCK);
		if (m < 0 && errno == EINTR)
			continue;
		if (m <= 0)
			break;
		moved += (size_t)m;
	}
	if (k != (ssize_t)sizeof(oh) || moved < got) {
		fm_pipe_drain(p->data[0], out);
		fm_pipe_drain(p->msg[0], out);
		return 0;
	}
	do
		k = splice(p->msg[0], NULL, fm->fuse_fd, NULL, oh.len, 0);
	while (k < 0 && errno == EINTR);
	if (k == (ssize_t)oh.len)
		return 1;
	fm_pipe_drain(p->msg[0], out);
	/* ENOENT: the request was interrupted and is gone; not an error. */
	if (k < 0 && errno == ENOENT)
		return 1;
	fm_anomaly(fm, "the kernel refused a READ reply by reference (%u bytes): %s", oh.len,
		   k < 0 ? strerror(errno) : "a short splice");
	fm_reply_error(fm, ih->unique, -EIO);
	return 1;
}

/* One request: hand it to the server, write what it answers. */
static void fm_serve_one(struct fm *fm, uint8_t *in, size_t n, uint8_t *out, struct fm_pipes *p)
{
	if (n < sizeof(struct fuse_in_header)) {
		fm_anomaly(fm, "a %zu-byte read from /dev/fuse", n);
		return;
	}
	struct fuse_in_header ih;
	memcpy(&ih, in, sizeof(ih));
	struct iovec iv_in = {.iov_base = in, .iov_len = n};
	struct iovec iv_out = {.iov_base = out, .iov_len = FM_OUT_BUF};
	int r;
	if (ih.opcode == FUSE_READ && p->data[0] >= 0) {
		struct msb_fs_ref ref = {.size = sizeof(ref), .max = p->max, .fd = -1};
		r = fm->srv.handle_ref(fm->srv.ctx, &iv_in, 1, &iv_out, 1, &ref);
		if (ref.fd >= 0) {
			int sent = fm_send_ref(fm, p, &ih, out, r, &ref);
			fm->srv.ref_done(fm->srv.ctx, &ref);
			if (fm->opt.verbose && sent)
				fm_err("op %u nodeid %llu unique %llu -> %d ref %u", ih.opcode,
				       (unsigned long long)ih.nodeid, (unsigned long long)ih.unique,
				       r, ref.len);
			if (sent)
				return;
			r = fm->srv.handle(fm->srv.ctx, &iv_in, 1, &iv_out, 1);
		}
	} else {
		r = fm->srv.handle(fm->srv.ctx, &iv_in, 1, &iv_out, 1);
	}
	if (fm->opt.verbose)
		fm_err("op %u nodeid %llu unique %llu -> %d", ih.opcode,
		       (unsigned long long)ih.nodeid, (unsigned long long)ih.unique, r);

	if (r == 0) {
		if (fm_needs_reply(ih.opcode)) {
			fm_anomaly(fm, "no reply to opcode %u (unique %llu)", ih.opcode,
				   (unsigned long long)ih.unique);
			fm_reply_error(fm, ih.unique, -EIO);
		}
		return;
	}
	if (r < 0) {
		/*
		 * Everything the kernel sends is well formed, so "cannot parse"
		 * is a server bug here (an unknown opcode wants an ENOSYS reply).
		 */
		fm_anomaly(fm, "handle() returned %d (%s) for opcode %u (unique %llu)", r,
			   strerror(-r), ih.opcode, (unsigned long long)ih.unique);
		if (ih.opcode == FUSE_INIT)
			fm_init_done(fm, r);
		if (fm_needs_reply(ih.opcode))
			fm_reply_error(fm, ih.unique, r >= -4095 ? r : -EIO);
		return;
	}
	if (ih.opcode == FUSE_INIT && r > 0)
		fm_offer_uring(fm, in, n, out, r);
	if ((size_t)r > FM_OUT_BUF || (size_t)r < sizeof(struct fuse_out_header)) {
		fm_anomaly(fm, "handle() returned %d bytes for opcode %u (buffer %u)", r, ih.opcode,
			   FM_OUT_BUF);
		fm_reply_error(fm, ih.unique, -EIO);
		return;
	}
	struct fuse_out_header oh;
	memcpy(&oh, out, sizeof(oh));
	if (oh.len != (uint32_t)r || oh.unique != ih.unique) {
		fm_anomaly(fm,
			   "reply header (len %u, unique %llu) does not match the reply (%d bytes) "
			   "or the request (opcode %u, unique %llu)",
			   oh.len, (unsigned long long)oh.unique, r, ih.opcode,
			   (unsigned long long)ih.unique);
		fm_reply_error(fm, ih.unique, -EIO);
		return;
	}
	if (!fm_needs_reply(ih.opcode) && ih.opcode != FUSE_INTERRUPT) {
		fm_anomaly(fm, "a reply to opcode %u, which takes none", ih.opcode);
		return;
	}
	if (write(fm->fuse_fd, out, (size_t)r) < 0) {
		/* ENOENT: the request was interrupted and is gone; not an error. */
		if (errno == ENOENT)
			return;
		fm_anomaly(fm, "the kernel refused the reply to opcode %u (%d bytes, error %d): %s",
			   ih.opcode, r, oh.error, strerror(errno));
		if (ih.opcode == FUSE_INIT)
			fm_init_done(fm, -errno);
		fm_reply_error(fm, ih.unique, -EIO);
		return;
	}
	if (ih.opcode == FUSE_INIT)
		fm_check_init(fm, out, (size_t)r);
}

static void *fm_worker(void *arg);

/* One more worker, unless --threads are running or we are stopping.  Under pool_lock. */
static int fm_spawn_locked(struct fm *fm)
{
	if (atomic_load(&fm->stop) || fm->nthreads >= fm->opt.threads)
		return 0;
	int e = pthread_create(&fm->threads[fm->nthreads], NULL, fm_worker, fm);
	if (e == 0)
		fm->nthreads++;
	return e;
}

/*
 * The reader took this request: should another worker read meanwhile?  For a
 * SETLKW, always (it may wait for another client's unlock).  For data
 * requests (READ, WRITE, FSYNC), when more requests are already queued: the
 * kernel's readahead and writeback send several at once, and the disk work
 * of one can overlap the next.  Metadata requests are served inline: handing
 * over costs a wakeup and a context switch, more than most of them take.
 */
static int fm_more_wanted(struct fm *fm, const uint8_t *in, size_t n)
{
	struct fuse_in_header ih;
	if (n < sizeof(ih))
		return 0;
	memcpy(&ih, in, sizeof(ih));
	switch (ih.opcode) {
	case FUSE_SETLKW:
		return 1;
	case FUSE_READ:
	case FUSE_WRITE:
	case FUSE_FSYNC: {
		struct pollfd p = {.fd = fm->fuse_fd, .events = POLLIN};
		return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
	}
	default:
		return 0;
	}
}

/* Become the reader, or park until there is none; 0 once stopping.  Under pool_lock. */
static int fm_take_reader(struct fm *fm)
{
	while (!atomic_load(&fm->stop) && fm->reading) {
		fm->parked++;
		pthread_cond_wait(&fm->pool_cond, &fm->pool_lock);
		fm->parked--;
	}
	if (atomic_load(&fm->stop))
		return 0;
	fm->reading = 1;
	return 1;
}

static uint64_t fm_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * The reader's wait for the next request (--poll-us).  With a window, it
 * first polls /dev/fuse without sleeping, yielding its CPU between polls
 * (a client waiting to run there goes first), and sleeps in read(2) only
 * once the window has passed.  A request that comes while it polls is
 * taken without the wakeup that would otherwise put the reader back on a
 * CPU.  The window adapts to the gaps between requests, as QEMU's
 * adaptive polling of its event loops does: a gap longer than the window
 * but at most --poll-us doubles it (from 4 us), a longer one closes it, so
 * an idle mount costs one window of polling and then nothing.  Only the
 * reader calls this, and readers take turns under pool_lock.
 */
static ssize_t fm_read_request(struct fm *fm, uint8_t *in)
{
	/* Over io_uring, /dev/fuse carries only FORGET and INTERRUPT: no polling. */
	uint64_t max = fm->uring_accepted ? 0 : (uint64_t)fm->opt.poll_us * 1000u;
	uint64_t start = max ? fm_now_ns() : 0;
	struct pollfd p = {.fd = fm->fuse_fd, .events = POLLIN};
	while (fm->poll_ns && !atomic_load(&fm->stop) && poll(&p, 1, 0) == 0 &&
	       fm_now_ns() - start < fm->poll_ns)
		sched_yield();
	ssize_t n;
	/* ENOENT: a request interrupted before we read it. */
	do
		n = read(fm->fuse_fd, in, FM_IN_BUF);
	while (n < 0 && (errno == EINTR || errno == ENOENT || errno == EAGAIN) &&
	       !atomic_load(&fm->stop));
	if (max && n >= 0) {
		uint64_t gap = fm_now_ns() - start, w = fm->poll_ns * 2;
		if (w < FM_POLL_STEP_NS)
			w = FM_POLL_STEP_NS;
		if (gap > max)
			fm->poll_ns = 0; /* idle: sleep at once next time */
		else if (gap > fm->poll_ns)
			fm->poll_ns = w < max ? w : max;
	}
	return n;
}

static void *fm_worker(void *arg)
{
	struct fm *fm = arg;
	uint8_t *in = malloc(FM_IN_BUF), *out = malloc(FM_OUT_BUF);
	if (!in || !out) {
		fm_err("out of memory for request buffers");
		atomic_store(&fm->fatal, 1);
		free(in);
		free(out);
		kill(getpid(), SIGUSR2);
		return NULL;
	}
	struct fm_pipes pipes;
	fm_pipes_open(fm, &pipes);
	pthread_mutex_lock(&fm->pool_lock);
	while (fm_take_reader(fm)) {
		pthread_mutex_unlock(&fm->pool_lock);
		ssize_t n = fm_read_request(fm, in);
		if (n < 0) {
			if (!atomic_load(&fm->stop)) {
				if (errno != ENODEV) {
					fm_err("read /dev/fuse: %s", strerror(errno));
					atomic_store(&fm->fatal, 1);
				}
				/* ENODEV: unmounted (from outside, or by us): main thread exits. */
				kill(getpid(), SIGUSR2);
			}
			pthread_mutex_lock(&fm->pool_lock);
			break; /* still the reader: none of the others reads again */
		}
		int more = fm_more_wanted(fm, in, (size_t)n), e = 0;
		pthread_mutex_lock(&fm->pool_lock);
		fm->reading = 0;
		if (more && fm->parked)
			pthread_cond_signal(&fm->pool_cond);
		else if (more)
			e = fm_spawn_locked(fm);
		pthread_mutex_unlock(&fm->pool_lock);
		if (e)
			fm_err("pthread_create: %s (serving with fewer workers)", strerror(e));
		fm_serve_one(fm, in, (size_t)n, out, &pipes);
		pthread_mutex_lock(&fm->pool_lock);
	}
	pthread_mutex_unlock(&fm->pool_lock);
	fm_pipes_close(&pipes);
	free(in);
	free(out);
	return NULL;
}

static void fm_ring_anomaly(void *ctx, const char *msg)
{
	fm_anomaly(ctx, "%s", msg);
}

static void fm_ring_verbose(void *ctx, const char *msg)
{
	(void)ctx;
	fm_err("%s", msg);
}

/* The fuse module's enable_uring parameter: 1 on, 0 off or absent (before 6.14). */
static int fm_uring_enabled(void)
{
	char c = 0;
	FILE *f = fopen(FM_ENABLE_URING, "re");
	if (!f)
		return 0;
	if (fread(&c, 1, 1, f) != 1)
		c = 0;
	fclose(f);
	return c == 'Y' || c == 'y' || c == '1';
}

/*
 * Before the mount: the io_uring queues, where the transport allows them.
 * 0 (with or without rings: auto falls back to /dev/fuse), -1 for a failure
 * that --transport uring cannot do without.
 */
static int fm_rings_setup(struct fm *fm)
{
	if (fm->opt.transport == FM_TRANSPORT_DEV ||
	    (fm->opt.transport == FM_TRANSPORT_AUTO && fm->opt.locks == MSB_SHARE_LOCKS_HOST))
		return 0;
	const char *why_not = NULL;
	char why[256] = "";
	if (!fm_uring_enabled()) {
		why_not = "the fuse module's enable_uring is off or absent (Linux 6.14+: echo Y "
			  "> " FM_ENABLE_URING ")";
	} else {
		struct fm_ring_hooks hooks = {
			.ctx = fm,
			.anomaly = fm_ring_anomaly,
			.verbose = fm->opt.verbose ? fm_ring_verbose : NULL,
		};
		if (fm_rings_prepare(fm->fuse_fd, &fm->srv, &hooks, &fm->rings, why, sizeof(why)) <
		    0)
			why_not = why;
	}
	if (!why_not)
		return 0;
	if (fm->opt.transport == FM_TRANSPORT_URING) {
		fm_err("--transport uring: %s", why_not);
		return -1;
	}
	if (fm->opt.verbose)
		fm_err("transport: /dev/fuse (io_uring: %s)", why_not);
	return 0;
}

/* After INIT: start the queues the kernel accepted, or let them go. */
static int fm_rings_start(struct fm *fm)
{
	if (!fm->rings)
		return 0;
	if (!fm->uring_accepted) {
		fm_rings_stop(fm->rings);
		fm->rings = NULL;
		if (fm->opt.transport == FM_TRANSPORT_URING) {
			fm_err("--transport uring: the kernel did not offer FUSE_OVER_IO_URING");
			return -1;
		}
		if (fm->opt.verbose)
			fm_err("transport: /dev/fuse (the kernel did not offer io_uring)");
		return 0;
	}
	char why[256] = "";
	if (fm_rings_go(fm->rings, why, sizeof(why)) < 0) {
		/*
		 * A setup failure either way: a refused REGISTER turns io_uring
		 * off for the connection, but a queue that never answered would
		 * leave requests waiting for a ring that will not come, and the
		 * harness does not go on half set up.
		 */
		fm_err("FUSE over io_uring: %s", why);
		return -1;
	}
	if (fm->opt.verbose)
		fm_err("transport: io_uring, %u queues", fm_rings_count(fm->rings));
	return 0;
}

/* Parked workers wait on pool_cond, not in a system call. */
static void fm_wake_parked(void *arg)
{
	struct fm *fm = arg;
	pthread_mutex_lock(&fm->pool_lock);
	pthread_cond_broadcast(&fm->pool_cond);
	pthread_mutex_unlock(&fm->pool_lock);
}

static void fm_wake(int sig)
{
	(void)sig; /* only interrupts a blocking read(2) */
}

/*
 * fds open when main() began (inherited from whoever started us); anything
 * else still open at the end was leaked by the module.
 */
#define FM_FD_TRACK 1024
static unsigned char fm_fds_at_start[FM_FD_TRACK];

static void fm_note_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);
		if (de->d_name[0] != '.' && fd != dirfd(d) && fd >= 0 && fd < FM_FD_TRACK)
			fm_fds_at_start[fd] = 1;
	}
	closedir(d);
}

/* Every fd opened since main() began and still open: share_close leaked it. */
static int fm_check_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return 0;
	int leaks = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);
		if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d) ||
		    (fd < FM_FD_TRACK && fm_fds_at_start[fd]))
			continue;
		char link[64], target[PATH_MAX];
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		target[n < 0 ? 0 : n] = '\0';
		fm_err("fd leak: fd %d -> %s still open after share_close", fd, target);
		leaks++;
	}
	closedir(d);
	return leaks;
}

int main(int argc, char **argv)
{
	struct fm fm = {.fuse_fd = -1};
	fm_note_fds();
	/*
	 * Signals: TERM/INT (stop) and USR2 (a worker saw the end of the
	 * connection) are taken by sigwait below, so they are blocked in every
	 * thread, the module's included: hence before anything is loaded.
	 * USR1 only ever interrupts one of our workers' read(2).
	 */
	sigset_t wait_set;
	sigemptyset(&wait_set);
	sigaddset(&wait_set, SIGTERM);
	sigaddset(&wait_set, SIGINT);
	sigaddset(&wait_set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &wait_set, NULL);
	struct sigaction sa = {.sa_handler = fm_wake}; /* no SA_RESTART */
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (fm_parse_args(argc, argv, &fm.opt) < 0)
		return FM_EXIT_USAGE;
	pthread_mutex_init(&fm.init_lock, NULL);
	pthread_mutex_init(&fm.pool_lock, NULL);
	pthread_cond_init(&fm.pool_cond, NULL);
	pthread_cond_init(&fm.init_cond, NULL);

	char host_dir[PATH_MAX], mnt[PATH_MAX];
	if (!realpath(fm.opt.host_dir, host_dir)) {
		fm_err("%s: %s", fm.opt.host_dir, strerror(errno));
		return FM_EXIT_SETUP;
	}
	struct stat st;
	if (!realpath(fm.opt.mount_point, mnt) || stat(mnt, &st) < 0) {
		fm_err("%s: %s", fm.opt.mount_point, strerror(errno));
		return FM_EXIT_SETUP;
	}
	if (!S_ISDIR(st.st_mode)) {
		fm_err("%s: not a directory", fm.opt.mount_point);
		return FM_EXIT_SETUP;
	}

	struct msb_error err = MSB_ERROR_INIT;
	struct msb_registry reg = {0};
	const struct msb_module *m = NULL;
	if (fm_load_module(&reg, &m, &err) < 0) {
		fm_err("loading the storage module: %s", err.msg);
		msb_registry_free(&reg);
		return FM_EXIT_SETUP;
	}

	/* The instance's private state directory; removed on the way out. */
	char state_dir[64];
	snprintf(state_dir, sizeof(state_dir), "/tmp/msb-fusemount.%d.XXXXXX", (int)getpid());
	if (!mkdtemp(state_dir)) {
		fm_err("mkdtemp %s: %s", state_dir, strerror(errno));
		msb_registry_free(&reg);
		return FM_EXIT_SETUP;
	}
	int status = FM_EXIT_SETUP;
	int opened = 0, mounted = 0;
	struct msb_instance *inst = NULL;
	if (msb_instance_create(m, "fusemount", state_dir, "{}", NULL, &inst, &err) < 0) {
		fm_err("creating the storage instance: %s", err.msg);
		goto out;
	}
	if (fm.opt.no_openat2 && fm_deny_openat2(&err) < 0) {
		fm_err("--no-openat2: %s", err.msg);
		goto out;
	}

	struct msb_share share = {
		.size = sizeof(share),
		.host_path = host_dir,
		.guest_path = "/mnt",
		.read_only = fm.opt.read_only,
		.noexec = 0,
		.tag = "msbfs0",
		.identity = fm.opt.identity,
		.locks = fm.opt.locks,
	};
	fm.srv.size = sizeof(fm.srv);
	int r = m->ops.storage.share_open(inst->inst, &share, &fm.srv, &err);
	if (r < 0) {
		fm_err("share_open: %s", err.msg[0] ? err.msg : strerror(-r));
		goto out;
	}
	opened = 1;
	if (!fm.srv.handle) {
		fm_err("share_open: succeeded but filled no handle");
		goto out;
	}

	fm.fuse_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fm.fuse_fd < 0) {
		fm_err("/dev/fuse: %s", strerror(errno));
		goto out;
	}
	/*
	 * default_permissions: the kernel checks modes itself, as a guest's
	 * virtio-fs mount does; allow_other: the suites may drop privileges.
	 * nosuid/nodev: nothing on the share is ever run or opened as a device
	 * from here.
	 */
	char opts[256];
	snprintf(opts, sizeof(opts),
		 "fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other,"
		 "max_read=%u",
		 fm.fuse_fd, FM_MAX_IO);
	if (fm_rings_setup(&fm) < 0)
		goto out;
	if (mount("msbfs", mnt, "fuse.msbfs", MS_NOSUID | MS_NODEV, opts) < 0) {
		fm_err("mount %s: %s", mnt, strerror(errno));
		goto out;
	}
	mounted = 1;

	pthread_mutex_lock(&fm.pool_lock);
	int e = fm_spawn_locked(&fm);
	pthread_mutex_unlock(&fm.pool_lock);
	if (e) {
		fm_err("pthread_create: %s", strerror(e));
		goto out;
	}

	/* The kernel sends INIT as the first request once mount(2) returns. */
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += FM_INIT_WAIT_S;
	pthread_mutex_lock(&fm.init_lock);
	while (fm.init_state == 0 &&
	       pthread_cond_timedwait(&fm.init_cond, &fm.init_lock, &deadline) == 0)
		;
	int init_state = fm.init_state;
	pthread_mutex_unlock(&fm.init_lock);
	if (init_state != 1) {
		if (init_state == 0)
			fm_err("no FUSE_INIT answered within %d s", FM_INIT_WAIT_S);
		else
			fm_err("FUSE_INIT failed: %s", strerror(-init_state));
		goto out;
	}
	if (fm_rings_start(&fm) < 0)
		goto out;

	printf("ready\n");
	fflush(stdout);
	int sig = 0;
	sigwait(&wait_set, &sig);
	status = atomic_load(&fm.fatal) ? FM_EXIT_SETUP : FM_EXIT_OK;

out:
	if (mounted && umount2(mnt, MNT_DETACH) < 0 && errno != EINVAL)
		fm_err("umount %s: %s", mnt, strerror(errno));
	/*
	 * Stop the workers before share_close: a worker may be inside handle().
	 * A signal can land between the stop check and read(2), so keep poking
	 * until each one has gone.
	 */
	atomic_store(&fm.stop, 1);
	pthread_mutex_lock(&fm.pool_lock); /* no worker starts another after this */
	int nthreads = fm.nthreads;
	pthread_mutex_unlock(&fm.pool_lock);
	for (int i = 0; i < nthreads; i++)
		fm_join_poking(fm.threads[i], fm_wake_parked, &fm);
	fm_rings_stop(fm.rings);
	fm.rings = NULL;
	/* The last reference to the device: the kernel aborts the connection. */
	if (fm.fuse_fd >= 0)
		close(fm.fuse_fd);
	if (opened)
		m->ops.storage.share_close(inst->inst, &fm.srv);
	msb_instance_destroy(inst);
	msb_registry_free(&reg);
	int rr = msb_remove_tree_at(AT_FDCWD, state_dir);
	if (rr < 0)
		fm_err("removing %s: %s", state_dir, strerror(-rr));
	if (status == FM_EXIT_OK) {
		int a = atomic_load(&fm.anomalies);
		if (fm_check_fds() > 0)
			status = FM_EXIT_FD_LEAK;
		else if (a > 0) {
			fm_err("%d protocol anomal%s (see above)", a, a == 1 ? "y" : "ies");
			status = FM_EXIT_ANOMALY;
		}
	}
	return status;
}
