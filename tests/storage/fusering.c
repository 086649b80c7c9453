/* SPDX-License-Identifier: Apache-2.0 */
/*
 * FUSE over io_uring for msb-fusemount.
 *
 * With /dev/fuse, a request is read by whichever server thread the kernel
 * wakes, usually on another CPU than the client that sent it; the client
 * sleeps, the server is woken by an inter-processor interrupt, answers, and
 * wakes the client with another.  On a virtual machine those wakeups are
 * most of a metadata request's cost.  Since Linux 6.14 (fuse module
 * parameter enable_uring) a FUSE server can instead register io_uring
 * commands on the connection: the kernel keeps one queue per possible CPU
 * and hands a request to the queue of the CPU its client runs on.  Here
 * each queue has its own thread pinned to that CPU, so the request is
 * copied in, served and answered on the CPU where the client waits.
 *
 * The protocol (kernel ABI 7.42, Documentation/filesystems/fuse/
 * fuse-io-uring.rst): after INIT, where the server accepted
 * FUSE_OVER_IO_URING, each entry is an IORING_OP_URING_CMD (128-byte SQE)
 * on the /dev/fuse fd with two buffers: a header (the fuse_in_header, the
 * opcode's fixed argument, and the entry's commit id and payload size) and a
 * payload (the rest of the request).  REGISTER hands an entry to a queue;
 * its completion carries a request; COMMIT_AND_FETCH returns the answer
 * (fuse_out_header in the header, the rest in the payload) and waits for
 * the next.  FORGET and INTERRUPT still come through /dev/fuse.
 *
 * The server is handed the request as three iovecs (header, fixed
 * argument, payload) and answers into two (the header, the payload): the
 * in and out payload are the same buffer.  That is safe with the storage
 * module's handle(), which copies every argument out of the request before
 * it writes a reply, except WRITE's data, which it has written to the file
 * before the (small) reply is written.
 *
 * No liburing: Debian 12's is older than these commands, and the three
 * system calls below are all this needs.
 */
#include <errno.h>
#include <linux/fuse.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fusering.h"

/* Kernel ABI 7.42 (not in Debian 12's <linux/fuse.h>). */
#define FM_URING_IN_OUT_SZ	      128
#define FM_URING_OP_SZ		      128
#define FM_URING_CMD_REGISTER	      1u
#define FM_URING_CMD_COMMIT_AND_FETCH 2u

struct fm_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct fm_uring_req_header {
	uint8_t in_out[FM_URING_IN_OUT_SZ];
	uint8_t op_in[FM_URING_OP_SZ];
	struct fm_uring_ent_in_out ent;
};

struct fm_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

_Static_assert(sizeof(struct fm_uring_req_header) == 288, "fuse_uring_req_header is 288 bytes");
_Static_assert(sizeof(struct fm_uring_cmd_req) == 24, "fuse_uring_cmd_req is 24 bytes");

/*
 * The kernel wants each payload buffer to hold its largest request or
 * reply: max(max_write, max_pages pages), 1 MiB with the storage module.
 * mmap'd, so pages a queue never uses cost nothing.
 */
#define FM_RING_PAYLOAD	   ((size_t)1 << 20)
#define FM_RING_DEPTH	   2  /* entries per queue */
#define FM_RING_MAX_QUEUES 64 /* more possible CPUs: /dev/fuse only */
#define FM_SQE_SIZE	   128

struct fm_ring_ent {
	struct fm_uring_req_header *hdr;
	uint8_t *payload;
	struct iovec iov[2]; /* what REGISTER hands the kernel */
};

enum fm_ring_state { FMR_STARTING, FMR_PREPARED, FMR_REGISTERED, FMR_FAILED };

struct fm_ring {
	struct fm_rings *set;
	unsigned qid;
	pthread_t thread;
	int started;
	int fd;
	/* the mapped rings */
	void *sq_map, *cq_map, *sqe_map;
	size_t sq_len, cq_len, sqe_len;
	_Atomic unsigned *sq_head, *sq_tail, *cq_head, *cq_tail;
	unsigned sq_mask, cq_mask, sq_entries;
	unsigned *sq_array;
	struct io_uring_cqe *cqes;
	unsigned sq_local_tail; /* what we have written, published at submit */
	struct fm_ring_ent ent[FM_RING_DEPTH];
	/* under set->lock */
	enum fm_ring_state state;
	int error; /* negative errno for FMR_FAILED */
	char why[160];
};

struct fm_rings {
	int fuse_fd;
	const struct msb_fs_server *srv;
	struct fm_ring_hooks hooks;
	atomic_int stop;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int go; /* under lock: 1 register, -1 give up */
	unsigned count;
	struct fm_ring q[FM_RING_MAX_QUEUES];
};

static void fmr_say(struct fm_ring *q, void (*to)(void *, const char *), const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fmr_say(struct fm_ring *q, void (*to)(void *, const char *), const char *fmt, ...)
{
	if (!to)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	to(q->set->hooks.ctx, line);
}

static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

/* Possible CPUs: the kernel's queue count (num_possible_cpus). */
static unsigned fmr_possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	unsigned n = 0;
	if (f) {
		unsigned a, b;
		int c;
		while (fscanf(f, "%u", &a) == 1) {
			b = a;
			c = fgetc(f);
			if (c == '-') {
				if (fscanf(f, "%u", &b) != 1)
					break;
				c = fgetc(f);
			}
			if (b >= a)
				n += b - a + 1;
			if (c != ',')
				break;
		}
		fclose(f);
	}
	if (n == 0) {
		long c = sysconf(_SC_NPROCESSORS_CONF);
		n = c > 0 ? (unsigned)c : 1;
	}
	return n;
}

static void fmr_fail(struct fm_ring *q, int error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fmr_fail(struct fm_ring *q, int error, const char *fmt, ...)
{
	struct fm_rings *s = q->set;
	pthread_mutex_lock(&s->lock);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q->why, sizeof(q->why), fmt, ap);
	va_end(ap);
	q->error = error < 0 ? error : -EIO;
	q->state = FMR_FAILED;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void fmr_set_state(struct fm_ring *q, enum fm_ring_state st)
{
	pthread_mutex_lock(&q->set->lock);
	q->state = st;
	pthread_cond_broadcast(&q->set->cond);
	pthread_mutex_unlock(&q->set->lock);
}

static int fmr_map(struct fm_ring *q)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	/*
	 * SINGLE_ISSUER + DEFER_TASKRUN: completions (the kernel copying a
	 * request in, which runs as task work of this thread) happen while
	 * this thread waits in io_uring_enter, never by interrupting it.
	 */
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	int fd = sys_io_uring_setup(FM_RING_DEPTH * 2, &p);
	if (fd < 0 && errno == EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_SQE128;
		fd = sys_io_uring_setup(FM_RING_DEPTH * 2, &p);
	}
	if (fd < 0)
		return -errno;
	q->fd = fd;
	q->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	q->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	q->sqe_len = (size_t)p.sq_entries * FM_SQE_SIZE;
	q->sq_map = mmap(NULL, q->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			 IORING_OFF_SQ_RING);
	if (q->sq_map == MAP_FAILED) {
		q->sq_map = NULL;
		return -errno;
	}
	q->cq_map = mmap(NULL, q->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			 IORING_OFF_CQ_RING);
	if (q->cq_map == MAP_FAILED) {
		q->cq_map = NULL;
		return -errno;
	}
	q->sqe_map = mmap(NULL, q->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			  IORING_OFF_SQES);
	if (q->sqe_map == MAP_FAILED) {
		q->sqe_map = NULL;
		return -errno;
	}
	char *sq = q->sq_map, *cq = q->cq_map;
	q->sq_head = (_Atomic unsigned *)(sq + p.sq_off.head);
	q->sq_tail = (_Atomic unsigned *)(sq + p.sq_off.tail);
	q->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
	q->sq_entries = p.sq_entries;
	q->sq_array = (unsigned *)(sq + p.sq_off.array);
	q->cq_head = (_Atomic unsigned *)(cq + p.cq_off.head);
	q->cq_tail = (_Atomic unsigned *)(cq + p.cq_off.tail);
	q->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
	q->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	q->sq_local_tail = atomic_load_explicit(q->sq_tail, memory_order_relaxed);
	for (unsigned i = 0; i < FM_RING_DEPTH; i++) {
		struct fm_ring_ent *e = &q->ent[i];
		void *h = mmap(NULL, sizeof(*e->hdr), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		void *pl = mmap(NULL, FM_RING_PAYLOAD, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (h == MAP_FAILED || pl == MAP_FAILED) {
			if (h != MAP_FAILED)
				munmap(h, sizeof(*e->hdr));
			if (pl != MAP_FAILED)
				munmap(pl, FM_RING_PAYLOAD);
			return -ENOMEM;
		}
		e->hdr = h;
		e->payload = pl;
		e->iov[0] = (struct iovec){.iov_base = h, .iov_len = sizeof(*e->hdr)};
		e->iov[1] = (struct iovec){.iov_base = pl, .iov_len = FM_RING_PAYLOAD};
	}
	return 0;
}

static void fmr_unmap(struct fm_ring *q)
{
	for (unsigned i = 0; i < FM_RING_DEPTH; i++) {
		if (q->ent[i].hdr)
			munmap(q->ent[i].hdr, sizeof(*q->ent[i].hdr));
		if (q->ent[i].payload)
			munmap(q->ent[i].payload, FM_RING_PAYLOAD);
		q->ent[i].hdr = NULL;
		q->ent[i].payload = NULL;
	}
	if (q->sqe_map)
		munmap(q->sqe_map, q->sqe_len);
	if (q->cq_map)
		munmap(q->cq_map, q->cq_len);
	if (q->sq_map)
		munmap(q->sq_map, q->sq_len);
	q->sqe_map = q->cq_map = q->sq_map = NULL;
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
}

/* One URING_CMD for entry i: REGISTER, or COMMIT_AND_FETCH of commit_id. */
static void fmr_queue_cmd(struct fm_ring *q, unsigned i, uint32_t op, uint64_t commit_id)
{
	unsigned idx = q->sq_local_tail & q->sq_mask;
	struct io_uring_sqe *sqe = (void *)((char *)q->sqe_map + (size_t)idx * FM_SQE_SIZE);
	memset(sqe, 0, FM_SQE_SIZE);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->set->fuse_fd;
	sqe->cmd_op = op;
	sqe->addr = (uint64_t)(uintptr_t)q->ent[i].iov;
	sqe->len = 2;
	sqe->user_data = i;
	struct fm_uring_cmd_req req = {.commit_id = commit_id, .qid = (uint16_t)q->qid};
	memcpy(sqe->cmd, &req, sizeof(req));
	q->sq_array[idx] = idx;
	q->sq_local_tail++;
}

/* Publish the queued SQEs; submit them and, with wait, sleep for one completion. */
static int fmr_enter(struct fm_ring *q, int wait)
{
	atomic_store_explicit(q->sq_tail, q->sq_local_tail, memory_order_release);
	unsigned pending =
		q->sq_local_tail - atomic_load_explicit(q->sq_head, memory_order_acquire);
	int r = sys_io_uring_enter(q->fd, pending, wait ? 1 : 0, wait ? IORING_ENTER_GETEVENTS : 0);
	return r < 0 ? -errno : r;
}

/* The answer in the entry's header and payload, from handle()'s reply; the commit queued. */
static void fmr_serve(struct fm_ring *q, unsigned i)
{
	struct fm_rings *s = q->set;
	struct fm_ring_ent *e = &q->ent[i];
	struct fm_uring_req_header *h = e->hdr;
	struct fuse_in_header ih;
	memcpy(&ih, h->in_out, sizeof(ih));
	uint32_t psz = h->ent.payload_sz;
	uint64_t commit_id = h->ent.commit_id;
	int error = 0;
	size_t reply = 0;
	if (psz > FM_RING_PAYLOAD || ih.len < sizeof(ih) || ih.len - sizeof(ih) < psz ||
	    ih.len - sizeof(ih) - psz > FM_URING_OP_SZ) {
		fmr_say(q, s->hooks.anomaly,
			"io_uring queue %u: request (opcode %u, unique %llu) of %u bytes with a "
			"%u-byte payload does not fit its entry",
			q->qid, ih.opcode, (unsigned long long)ih.unique, ih.len, psz);
		error = -EIO;
	} else {
		size_t op_len = ih.len - sizeof(ih) - psz;
		struct iovec in[3] = {
			{.iov_base = h->in_out, .iov_len = sizeof(ih)},
			{.iov_base = h->op_in, .iov_len = op_len},
			{.iov_base = e->payload, .iov_len = psz},
		};
		struct iovec out[2] = {
			{.iov_base = h->in_out, .iov_len = sizeof(struct fuse_out_header)},
			{.iov_base = e->payload, .iov_len = FM_RING_PAYLOAD},
		};
		int r = s->srv->handle(s->srv->ctx, in, 3, out, 2);
		fmr_say(q, s->hooks.verbose, "ring %u: op %u nodeid %llu unique %llu -> %d", q->qid,
			ih.opcode, (unsigned long long)ih.nodeid, (unsigned long long)ih.unique, r);
		struct fuse_out_header oh;
		memcpy(&oh, h->in_out, sizeof(oh));
		if (r <= 0) {
			fmr_say(q, s->hooks.anomaly,
				"io_uring queue %u: handle() returned %d for opcode %u (unique "
				"%llu), "
				"which wants a reply",
				q->qid, r, ih.opcode, (unsigned long long)ih.unique);
			error = r < 0 && r >= -4095 ? r : -EIO;
		} else if ((size_t)r < sizeof(oh) || (size_t)r > sizeof(oh) + FM_RING_PAYLOAD ||
			   oh.len != (uint32_t)r || oh.unique != ih.unique) {
			fmr_say(q, s->hooks.anomaly,
				"io_uring queue %u: reply header (len %u, unique %llu) does not "
				"match "
				"the reply (%d bytes) or the request (opcode %u, unique %llu)",
				q->qid, oh.len, (unsigned long long)oh.unique, r, ih.opcode,
				(unsigned long long)ih.unique);
			error = -EIO;
		} else {
			reply = (size_t)r - sizeof(oh);
		}
	}
	if (error) {
		struct fuse_out_header oh = {
			.len = sizeof(oh), .error = error, .unique = ih.unique};
		memcpy(h->in_out, &oh, sizeof(oh));
		reply = 0;
	}
	h->ent.payload_sz = (uint32_t)reply;
	fmr_queue_cmd(q, i, FM_URING_CMD_COMMIT_AND_FETCH, commit_id);
}

static void *fmr_thread(void *arg)
{
	struct fm_ring *q = arg;
	struct fm_rings *s = q->set;
	/* On the queue's CPU, where its requests come from (offline: anywhere). */
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(q->qid, &set);
	(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	int r = fmr_map(q);
	if (r < 0) {
		fmr_fail(q, r, "io_uring for queue %u: %s", q->qid, strerror(-r));
		return NULL;
	}
	pthread_mutex_lock(&s->lock);
	q->state = FMR_PREPARED;
	pthread_cond_broadcast(&s->cond);
	while (s->go == 0)
		pthread_cond_wait(&s->cond, &s->lock);
	int go = s->go;
	pthread_mutex_unlock(&s->lock);
	if (go < 0) {
		return NULL;
	}

	for (unsigned i = 0; i < FM_RING_DEPTH; i++)
		fmr_queue_cmd(q, i, FM_URING_CMD_REGISTER, 0);
	r = fmr_enter(q, 0);
	if (r >= 0 && (unsigned)r < FM_RING_DEPTH)
		r = -EAGAIN;
	/*
	 * A REGISTER the kernel refuses completes at once, with the error.
	 * (A completion with a request in it may be there too: the last
	 * queue to register makes the ring ready.  The loop below takes it.)
	 */
	unsigned head = atomic_load_explicit(q->cq_head, memory_order_relaxed);
	unsigned tail = atomic_load_explicit(q->cq_tail, memory_order_acquire);
	for (unsigned h = head; r >= 0 && h != tail; h++)
		if (q->cqes[h & q->cq_mask].res < 0)
			r = q->cqes[h & q->cq_mask].res;
	if (r < 0) {
		fmr_fail(q, r, "registering io_uring queue %u: %s", q->qid, strerror(-r));
		return NULL;
	}
	fmr_set_state(q, FMR_REGISTERED);

	unsigned live = FM_RING_DEPTH;
	while (live > 0 && !atomic_load(&s->stop)) {
		r = fmr_enter(q, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			fmr_say(q, s->hooks.anomaly, "io_uring_enter on queue %u: %s", q->qid,
				strerror(-r));
			break;
		}
		head = atomic_load_explicit(q->cq_head, memory_order_relaxed);
		tail = atomic_load_explicit(q->cq_tail, memory_order_acquire);
		for (; head != tail; head++) {
			struct io_uring_cqe *c = &q->cqes[head & q->cq_mask];
			unsigned i = (unsigned)c->user_data;
			if (i >= FM_RING_DEPTH)
				continue;
			if (c->res < 0) {
				/* The connection is gone (ENOTCONN) or the entry cancelled. */
				live--;
				continue;
			}
			fmr_serve(q, i);
		}
		atomic_store_explicit(q->cq_head, head, memory_order_release);
	}
	return NULL;
}

void fm_join_poking(pthread_t thread, void (*nudge)(void *), void *arg)
{
	/* A signal can land just before the blocking call: keep poking until it is gone. */
	for (;;) {
		if (nudge)
			nudge(arg);
		pthread_kill(thread, SIGUSR1);
		struct timespec t;
		clock_gettime(CLOCK_REALTIME, &t);
		t.tv_nsec += 50 * 1000 * 1000;
		if (t.tv_nsec >= 1000000000L) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(thread, NULL, &t) == 0)
			break;
	}
}

int fm_rings_prepare(int fuse_fd, const struct msb_fs_server *srv,
		     const struct fm_ring_hooks *hooks, struct fm_rings **out, char *why,
		     size_t whylen)
{
	*out = NULL;
	unsigned n = fmr_possible_cpus();
	if (n > FM_RING_MAX_QUEUES) {
		snprintf(why, whylen, "%u possible CPUs (this harness serves at most %d queues)", n,
			 FM_RING_MAX_QUEUES);
		return -E2BIG;
	}
	struct fm_rings *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	s->fuse_fd = fuse_fd;
	s->srv = srv;
	s->hooks = *hooks;
	s->count = n;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	for (unsigned i = 0; i < n; i++) {
		s->q[i].set = s;
		s->q[i].qid = i;
		s->q[i].fd = -1;
		s->q[i].state = FMR_STARTING;
	}
	int rc = 0;
	for (unsigned i = 0; i < n; i++) {
		struct fm_ring *q = &s->q[i];
		int e = pthread_create(&q->thread, NULL, fmr_thread, q);
		if (e) {
			snprintf(why, whylen, "pthread_create: %s", strerror(e));
			rc = -e;
			break;
		}
		q->started = 1;
	}
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < n && rc == 0; i++) {
		while (s->q[i].started && s->q[i].state == FMR_STARTING)
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->q[i].state == FMR_FAILED) {
			snprintf(why, whylen, "%s", s->q[i].why);
			rc = s->q[i].error;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (rc < 0) {
		fm_rings_stop(s);
		return rc;
	}
	*out = s;
	return 0;
}

int fm_rings_go(struct fm_rings *s, char *why, size_t whylen)
{
	pthread_mutex_lock(&s->lock);
	s->go = 1;
	pthread_cond_broadcast(&s->cond);
	int rc = 0;
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	for (unsigned i = 0; i < s->count && rc == 0; i++) {
		while (s->q[i].state == FMR_PREPARED &&
		       pthread_cond_timedwait(&s->cond, &s->lock, &deadline) == 0)
			;
		if (s->q[i].state == FMR_FAILED) {
			snprintf(why, whylen, "%s", s->q[i].why);
			rc = s->q[i].error;
		} else if (s->q[i].state != FMR_REGISTERED) {
			snprintf(why, whylen, "io_uring queue %u: no registration within 10 s", i);
			rc = -ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

unsigned fm_rings_count(const struct fm_rings *s)
{
	return s->count;
}

void fm_rings_stop(struct fm_rings *s)
{
	if (!s)
		return;
	atomic_store(&s->stop, 1);
	pthread_mutex_lock(&s->lock);
	if (s->go == 0)
		s->go = -1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->count; i++) {
		struct fm_ring *q = &s->q[i];
		if (!q->started)
			continue;
		fm_join_poking(q->thread, NULL, NULL);
	}
	/*
	 * Only now, with every thread gone: a queue whose REGISTER failed may
	 * still have an entry the kernel holds, until its ring is closed here.
	 */
	for (unsigned i = 0; i < s->count; i++)
		fmr_unmap(&s->q[i]);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
