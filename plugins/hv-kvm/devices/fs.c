/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-fs (virtio 1.2, 5.11): a FUSE transport.  The file server itself is
 * the storage module's (struct msb_fs_server); this device only moves
 * requests between the guest's queues and server->handle.
 *
 * Queues: 0 is the high-priority queue (FORGET and friends, no reply), 1..N
 * are request queues.  Each request is one descriptor chain: the readable
 * buffers (fuse_in_header, arguments, write data) and then the writable ones
 * (fuse_out_header, reply).  The chain is walked and checked by the queue
 * code (virtio/queue.c) before this file sees it: a writable descriptor
 * before a readable one, a descriptor outside guest RAM, a loop, a chain
 * longer than the queue or over VQ_CHAIN_BYTES_MAX is rejected and never
 * followed.  What reaches the server is a set of iovecs inside guest RAM;
 * their contents are hostile and the server parses them.
 *
 * Threads: a queue kick arrives on the VMM thread, which only wakes one of
 * the device's idle worker threads (class MSB_THREAD_IO); they pop chains
 * under the device lock and call server->handle without any lock held, so a
 * slow request (a large read, a blocking host file system) never stalls the
 * VMM thread, other devices, or the vCPUs.  A worker that takes a chain and
 * sees another one waiting wakes one more idle worker before it serves its
 * own, so several requests of one queue run at once (the server may be
 * called from several threads, per the ABI) while a lone request wakes one
 * thread, not all of them.  Completions go back in whatever order they
 * finish, as virtio allows.
 *
 * Adaptive polling: a worker completing a chain may take the device's one
 * poll role (fs_poll_claim), turning the guest's kicks off
 * (VIRTQ_USED_F_NO_NOTIFY) before the reply goes out, and then, out of
 * chains, watch the queues for a short window, yielding its CPU between
 * looks (fs_poll).  A request that follows closely is taken without a kick
 * (a VM exit), a wakeup of the VMM thread and a wakeup of a worker.  Kicks
 * go back on before the worker serves what it found or sleeps
 * (fs_poll_release).  The window follows the guest: a kick that comes at
 * most FS_POLL_MAX_NS after the last completion doubles it (from
 * FS_POLL_STEP_NS, up to FS_POLL_MAX_NS), a later one closes it, so an idle
 * guest costs one window and then nothing (fs_adapt).  QEMU's and vhost's
 * virtqueue polling work the same way.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../virtio/mmio.h"
#include "../vm.h"
#include "devices.h"

#define FS_DEVICE_ID  26
#define FS_QUEUE_SIZE 256
/*
 * One request queue: Linux's driver (6.1) sends every request on the first
 * one, so more would only cost memory.  Concurrency comes from the workers.
 */
#define FS_REQUEST_QUEUES 1
#define FS_NQUEUES	  (1 + FS_REQUEST_QUEUES)
#define FS_WORKERS	  4
#define FS_POLL_MAX_NS	  50000u /* the default; MSB_FS_POLL_US overrides it */
#define FS_POLL_LIMIT_US  100000u
#define FS_POLL_STEP_NS	  4000u

/* The FUSE headers this device reads or writes itself (fuse(4) wire format). */
#define FUSE_IN_HEADER_SIZE  40
#define FUSE_OUT_HEADER_SIZE 16

_Static_assert(FS_NQUEUES <= VDEV_QUEUES_MAX, "virtio-fs needs more queues than a vdev has");

/* Config space (5.11.4): notify_buf_size is only meaningful with VIRTIO_FS_F_NOTIFICATION. */
struct fs_config {
	uint8_t tag[36];
	uint32_t num_request_queues;
	uint32_t notify_buf_size;
} __attribute__((packed));

struct fs;

struct fs_worker {
	struct fs *fs;
	unsigned long tid;
	bool polling;	     /* this worker holds the device's poll role (fs_poll_claim) */
	struct vq_elem elem; /* 8 KiB of iovecs: on the heap, not the thread's stack */
};

struct fs {
	struct vdev dev; /* first: the vdev is the fs */
	struct msb_fs_server srv;
	struct fs_config cfg;
	/*
	 * Wakes the workers: `kicks` counts queue notifications (and chains a
	 * worker saw waiting), `idle` the workers asleep in cond, `stop` ends
	 * them.
	 */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	uint64_t kicks;
	unsigned idle;
	bool stop;
	/*
	 * Bumped by a device reset: a request that was in flight across a reset
	 * is not completed into the new rings (its head means nothing there).
	 */
	atomic_uint generation;
	/*
	 * Adaptive polling: the window now (0: closed), whether a worker is
	 * polling, and when a chain was last completed (CLOCK_MONOTONIC ns).
	 */
	_Atomic uint64_t poll_ns;
	atomic_bool polling;
	_Atomic uint64_t last_done;
	uint64_t poll_max_ns; /* the window's limit; 0: never poll */
	/* Counted for the log line at the end (fs_free). */
	atomic_ulong n_served, n_polled, n_kicks;
	const struct msb_host *host;
	unsigned nworkers;
	struct fs_worker *workers[FS_WORKERS];
};

/*
 * The request could not be served (the server returned -errno): answer it
 * with a FUSE error so the guest sees an I/O error instead of waiting
 * forever.  Returns the bytes written, 0 when the chain has no room for a
 * reply header or no readable request header to take `unique` from.
 */
static uint32_t fs_error_reply(const struct vq_elem *e, int code)
{
	uint8_t in[FUSE_IN_HEADER_SIZE];
	if (e->write_bytes < FUSE_OUT_HEADER_SIZE || vq_read(e, 0, in, sizeof(in)) != sizeof(in))
		return 0;
	if (code >= 0 || code < -4095)
		code = -EIO;
	uint8_t out[FUSE_OUT_HEADER_SIZE];
	uint32_t len = FUSE_OUT_HEADER_SIZE;
	int32_t error = code;
	memcpy(out, &len, 4);
	memcpy(out + 4, &error, 4);
	memcpy(out + 8, in + 8, 8); /* unique: fuse_in_header bytes 8-15 */
	return (uint32_t)vq_write(e, 0, out, sizeof(out));
}

/* Count a kick and wake one idle worker, if any, to look at the queues. */
static void fs_wake_one(struct fs *f)
{
	pthread_mutex_lock(&f->mu);
	f->kicks++;
	if (f->idle)
		pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->mu);
}

/*
 * A chain is still waiting after ours: hand it to an idle worker rather than
 * leave it until we are done.  `idle` is read without the lock as a hint; a
 * worker going to sleep rechecks `kicks` under it, and a chain made
 * available after this look comes with its own kick.
 */
static void fs_pass_on(struct fs *f)
{
	if (!__atomic_load_n(&f->idle, __ATOMIC_RELAXED))
		return;
	for (unsigned q = 0; q < FS_NQUEUES; q++)
		if (vdev_pending(&f->dev, q)) {
			fs_wake_one(f);
			return;
		}
}

static uint64_t fs_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static bool fs_any_pending(struct fs *f)
{
	for (unsigned q = 0; q < FS_NQUEUES; q++)
		if (vdev_pending(&f->dev, q))
			return true;
	return false;
}

static void fs_set_notify(struct fs *f, bool on)
{
	for (unsigned q = 0; q < FS_NQUEUES; q++)
		vdev_set_notify(&f->dev, q, on);
}

/*
 * About to complete a chain: where the window is open and no worker polls,
 * take the poll role and turn kicks off *before* the reply goes out, so the
 * guest's next request, which may follow the reply at once, finds them off.
 */
static void fs_poll_claim(struct fs *f, struct fs_worker *w)
{
	if (w->polling || !atomic_load_explicit(&f->poll_ns, memory_order_relaxed) ||
	    atomic_exchange(&f->polling, true))
		return;
	w->polling = true;
	fs_set_notify(f, false);
}

/*
 * Give the role back: kicks on (the write fenced before any later look at
 * the queues), so from here on a chain comes with its kick or is seen by
 * the caller's next look (fs_pass_on, fs_poll).  Chains may have come
 * without a kick meanwhile, so count one: a worker about to sleep on the
 * old count looks at the queues again instead (fs_worker_main).
 */
static void fs_poll_release(struct fs *f, struct fs_worker *w)
{
	if (!w->polling)
		return;
	fs_set_notify(f, true);
	w->polling = false;
	atomic_store(&f->polling, false);
	pthread_mutex_lock(&f->mu);
	f->kicks++;
	pthread_mutex_unlock(&f->mu);
}

/*
 * Out of chains, holding the poll role: watch the queues for up to the
 * window, yielding the CPU between looks, then give the role back; true
 * when a chain is waiting.
 */
static bool fs_poll(struct fs *f, struct fs_worker *w)
{
	if (!w->polling)
		return false;
	uint64_t start = fs_now_ns(),
		 window = atomic_load_explicit(&f->poll_ns, memory_order_relaxed);
	bool found = fs_any_pending(f);
	while (!found && !__atomic_load_n(&f->stop, __ATOMIC_RELAXED) &&
	       fs_now_ns() - start < window) {
		sched_yield();
		found = fs_any_pending(f);
	}
	fs_poll_release(f, w);
	if (found)
		atomic_fetch_add_explicit(&f->n_polled, 1, memory_order_relaxed);
	return found || fs_any_pending(f);
}

/* Serve one chain of queue q; false when the queue had none. */
static bool fs_serve_one(struct fs *f, struct fs_worker *w, unsigned q)
{
	struct vq_elem *e = &w->elem;
	if (vdev_pop(&f->dev, q, e) <= 0)
		return false;
	/* Serving: kicks back on, so chains that come meanwhile wake other workers. */
	fs_poll_release(f, w);
	fs_pass_on(f);
	unsigned gen = atomic_load(&f->generation);
	int n = f->srv.handle(f->srv.ctx, e->read, e->nread, e->write, e->nwrite);
	uint32_t used;
	if (n >= 0)
		/* A server cannot have written more than the chain holds; never claim it did. */
		used = (uint64_t)n > e->write_bytes ? (uint32_t)e->write_bytes : (uint32_t)n;
	else
		used = fs_error_reply(e, n);
	atomic_fetch_add_explicit(&f->n_served, 1, memory_order_relaxed);
	/* Before the reply is out: the guest's next kick may come at once (fs_adapt). */
	atomic_store_explicit(&f->last_done, fs_now_ns(), memory_order_relaxed);
	if (atomic_load(&f->generation) == gen) {
		fs_poll_claim(f, w);
		vdev_push(&f->dev, q, e->head, used);
		vdev_signal_used(&f->dev);
	}
	return true;
}

/*
 * A kick came: nobody was polling, or the window ran out first.  Widen the
 * window when the guest asked again soon after the last completion, close
 * it when it did not (VMM thread).
 */
static void fs_adapt(struct fs *f)
{
	uint64_t now = fs_now_ns(),
		 last = atomic_load_explicit(&f->last_done, memory_order_relaxed);
	uint64_t gap = UINT64_MAX; /* nothing completed yet */
	if (last)
		gap = now > last ? now - last : 0;
	uint64_t w = atomic_load_explicit(&f->poll_ns, memory_order_relaxed), grown = w * 2;
	if (grown < FS_POLL_STEP_NS)
		grown = FS_POLL_STEP_NS;
	if (gap > f->poll_max_ns)
		w = 0;
	else if (gap > w)
		w = grown < f->poll_max_ns ? grown : f->poll_max_ns;
	atomic_store_explicit(&f->poll_ns, w, memory_order_relaxed);
}

static void *fs_worker_main(void *arg)
{
	struct fs_worker *w = arg;
	struct fs *f = w->fs;
	pthread_mutex_lock(&f->mu);
	while (!f->stop) {
		uint64_t seen = f->kicks;
		pthread_mutex_unlock(&f->mu);
		bool did = false;
		for (unsigned q = 0; q < FS_NQUEUES; q++)
			while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED) &&
			       fs_serve_one(f, w, q))
				did = true;
		if (fs_poll(f, w))
			did = true;
		pthread_mutex_lock(&f->mu);
		/* A kick that came while we were serving means: look again before sleeping. */
		if (!did && f->kicks == seen && !f->stop) {
			__atomic_store_n(&f->idle, f->idle + 1, __ATOMIC_RELAXED);
			pthread_cond_wait(&f->cond, &f->mu);
			__atomic_store_n(&f->idle, f->idle - 1, __ATOMIC_RELAXED);
		}
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

/* VMM thread: only wake a worker (it wakes more if more chains wait). */
static void fs_notify(struct vdev *d, unsigned q)
{
	(void)q;
	struct fs *f = (struct fs *)d;
	atomic_fetch_add_explicit(&f->n_kicks, 1, memory_order_relaxed);
	fs_adapt(f);
	fs_wake_one(f);
}

static void fs_reset(struct vdev *d)
{
	struct fs *f = (struct fs *)d;
	atomic_fetch_add(&f->generation, 1);
}

static void fs_config_read(struct vdev *d, uint32_t off, uint8_t *data, unsigned len)
{
	struct fs *f = (struct fs *)d;
	memcpy(data, (const uint8_t *)&f->cfg + off, len);
}

/* Stop and join the workers; the VM's RAM must still be mapped (vm_destroy frees it after). */
static void fs_stop_workers(struct fs *f)
{
	pthread_mutex_lock(&f->mu);
	__atomic_store_n(&f->stop, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	for (unsigned i = 0; i < f->nworkers; i++) {
		pthread_join((pthread_t)f->workers[i]->tid, NULL);
		free(f->workers[i]);
		f->workers[i] = NULL;
	}
	f->nworkers = 0;
}

static void fs_free(struct vdev *d)
{
	struct fs *f = (struct fs *)d;
	fs_stop_workers(f);
	if (f->host)
		f->host->log(f->host, MSB_LOG_INFO,
			     "virtio-fs %.36s: %lu requests, %lu kicks, %lu found while polling",
			     (const char *)f->cfg.tag, atomic_load(&f->n_served),
			     atomic_load(&f->n_kicks), atomic_load(&f->n_polled));
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

static const struct vdev_ops fs_ops = {
	.name = "virtio-fs",
	.device_id = FS_DEVICE_ID,
	.nqueues = FS_NQUEUES,
	.queue_size = FS_QUEUE_SIZE,
	.features = 0, /* no notification queue, no DAX window */
	.config_read = fs_config_read,
	.config_size = sizeof(struct fs_config),
	.notify = fs_notify,
	.reset = fs_reset,
	.free = fs_free,
};

int fs_new(struct vm *vm, const struct msb_fs_server *srv, struct vdev **out, struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	if (!srv || srv->size < offsetof(struct msb_fs_server, tag) + sizeof(srv->tag) ||
	    !srv->handle)
		return h->error_set(h, err, -EINVAL, "virtio-fs: no file server (no handle)");
	size_t tl = strnlen(srv->tag, sizeof(srv->tag));
	if (tl == 0 || tl >= sizeof(srv->tag))
		return h->error_set(h, err, -EINVAL,
				    "virtio-fs: bad tag (expected 1 to 35 bytes, NUL-terminated)");
	uint64_t poll_max_ns = FS_POLL_MAX_NS;
	const char *env = getenv("MSB_FS_POLL_US");
	if (env && *env) {
		char *end;
		errno = 0;
		unsigned long us = strtoul(env, &end, 10);
		if (errno || *end || end == env || *env == '-' || us > FS_POLL_LIMIT_US)
			return h->error_set(
				h, err, -EINVAL,
				"MSB_FS_POLL_US: expected 0 to %u microseconds, not '%.32s'",
				FS_POLL_LIMIT_US, env);
		poll_max_ns = (uint64_t)us * 1000u;
	}
	struct fs *f = calloc(1, sizeof(*f));
	if (!f)
		return h->error_set(h, err, -ENOMEM, "out of memory");
	f->poll_max_ns = poll_max_ns;
	f->srv = *srv;
	memcpy(f->cfg.tag, srv->tag, tl); /* NUL-padded, not necessarily terminated (5.11.4) */
	f->cfg.num_request_queues = FS_REQUEST_QUEUES; /* little-endian hosts only, as KVM on x86 */
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cond, NULL);
	vdev_init(&f->dev, &fs_ops, f);
	for (unsigned i = 0; i < FS_WORKERS; i++) {
		struct fs_worker *w = calloc(1, sizeof(*w));
		if (!w) {
			fs_free(&f->dev);
			return h->error_set(h, err, -ENOMEM, "out of memory");
		}
		w->fs = f;
		char name[16];
		snprintf(name, sizeof(name), "msb-fs-%.4s%u", srv->tag + (tl > 4 ? tl - 4 : 0), i);
		int r = h->thread_create(h, MSB_THREAD_IO, name, fs_worker_main, w, &w->tid);
		if (r < 0) {
			free(w);
			fs_free(&f->dev);
			return h->error_set(h, err, r, "virtio-fs: starting a worker: %s",
					    strerror(-r));
		}
		f->workers[f->nworkers++] = w;
	}
	f->host = h; /* the closing log line, for a device that ran */
	*out = &f->dev;
	return 0;
}
