/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-fs device (plugins/hv-kvm/devices/fs.c) against fake guest
 * memory and a fake file server.  The test plays the guest's driver through
 * the virtio-mmio registers and the queue kicks (ops->notify, as the VMM
 * thread delivers them), as Linux's driver does: publish a chain, then kick
 * unless the device's used ring says VIRTQ_USED_F_NO_NOTIFY.
 *
 * What it checks: requests are served and answered; a serial guest's
 * requests are taken without kicks while a worker polls (adaptive polling);
 * kicks are back on once the device is idle, and the device then really
 * waits for one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>

#define VD_NAME "fs"
#include "devices/devices.h"
#include "vdriver.h"

#define FS_HIPRIO	 0
#define FS_REQUEST	 1
#define USED_F_NO_NOTIFY 1
#define IN_HDR		 40   /* fuse_in_header */
#define OUT_HDR		 16   /* fuse_out_header */
#define OP_SLOW		 9999 /* the fake server takes SLOW_MS over this one */
#define SLOW_MS		 500

/* The fake server: answers every request with an empty success reply. */
static atomic_uint served;

static int fake_handle(void *ctx, const struct iovec *in, unsigned nin, const struct iovec *out,
		       unsigned nout)
{
	(void)ctx;
	if (nin < 1 || nout < 1 || in[0].iov_len < IN_HDR || out[0].iov_len < OUT_HDR)
		return -EINVAL;
	uint8_t hdr[OUT_HDR];
	uint32_t len = OUT_HDR;
	int32_t error = 0;
	memcpy(hdr, &len, 4);
	memcpy(hdr + 4, &error, 4);
	memcpy(hdr + 8, (const uint8_t *)in[0].iov_base + 8, 8); /* unique */
	memcpy(out[0].iov_base, hdr, OUT_HDR);
	uint32_t opcode;
	memcpy(&opcode, (const uint8_t *)in[0].iov_base + 4, 4);
	if (opcode == OP_SLOW)
		usleep(SLOW_MS * 1000);
	atomic_fetch_add(&served, 1);
	return OUT_HDR;
}

static int setup(void **state)
{
	(void)state;
	if (vd_ram_new() < 0)
		return -1;
	atomic_store(&served, 0);
	struct msb_fs_server srv = {.size = sizeof(srv), .handle = fake_handle, .tag = "msbfs0"};
	struct msb_error err = MSB_ERROR_INIT;
	if (fs_new(&vm, &srv, &dev, &err) < 0) {
		fprintf(stderr, "fs_new: %s\n", err.msg);
		return -1;
	}
	if (vd_attach() < 0)
		return -1;
	driver_init_queues(0, 2);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return vd_free(); /* stops and joins the workers, closes the irqfd */
}

static uint16_t used_flags(unsigned q)
{
	uint16_t v;
	__atomic_load((uint16_t *)(ram + RING(q) + 0x2000), &v, __ATOMIC_ACQUIRE);
	return v;
}

/* Publish one request (header in, reply header out) on queue q; its reply's guest address. */
static uint64_t publish_op(unsigned q, uint64_t unique, uint32_t opcode)
{
	uint64_t in = galloc(IN_HDR), out = galloc(OUT_HDR);
	uint32_t len = IN_HDR;
	memset(ram + in, 0, IN_HDR);
	memcpy(ram + in, &len, 4);
	memcpy(ram + in + 4, &opcode, 4);
	memcpy(ram + in + 8, &unique, 8);
	memset(ram + out, 0xee, OUT_HDR);
	struct seg segs[2] = {{in, IN_HDR, false}, {out, OUT_HDR, true}};
	add_chain(q, segs, 2);
	return out;
}

static uint64_t publish(unsigned q, uint64_t unique)
{
	return publish_op(q, unique, 3); /* GETATTR: any opcode; the fake answers all */
}

/*
 * Wait for queue q's used index to reach `want` without sleeping, as a vCPU
 * under KVM's halt polling does for a reply that comes quickly: a guest that
 * sleeps through each reply comes back too late for any polling window.
 */
static bool spin_used(unsigned q, uint16_t want, int timeout_ms)
{
	long end = now_ms() + timeout_ms;
	while ((uint16_t)(used_idx(q) - want) >= 0x8000)
		if (now_ms() > end)
			return false;
	return true;
}

static void spin_us(long us)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000 < us);
}

/* The driver's rule (2.7.10): after publishing, kick unless the device said not to. */
static bool kick_if_asked(unsigned q)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (used_flags(q) & USED_F_NO_NOTIFY)
		return false;
	kick(q);
	return true;
}

static void check_reply(uint64_t out, uint64_t unique)
{
	uint32_t len;
	int32_t error;
	uint64_t u;
	memcpy(&len, ram + out, 4);
	memcpy(&error, ram + out + 4, 4);
	memcpy(&u, ram + out + 8, 8);
	assert_int_equal(len, OUT_HDR);
	assert_int_equal(error, 0);
	assert_int_equal(u, unique);
}

static void test_config(void **state)
{
	(void)state;
	assert_int_equal(mmio_r(R_DEVICE_ID), 26);
	char tag[37] = {0};
	for (unsigned i = 0; i < 36; i += 4) {
		uint32_t v = mmio_r(R_CONFIG + i);
		memcpy(tag + i, &v, 4);
	}
	assert_string_equal(tag, "msbfs0");
	assert_int_equal(mmio_r(R_CONFIG + 36), 1); /* num_request_queues */
}

/* Requests on both queues are served and answered, in order of their kicks. */
static void test_serves(void **state)
{
	(void)state;
	for (unsigned q = 0; q < 2; q++) {
		uint64_t out = publish(q, 100 + q);
		kick(q);
		assert_true(wait_used(q, 1, 5000));
		uint32_t id, len;
		used_elem(q, 0, &id, &len);
		assert_int_equal(len, OUT_HDR);
		check_reply(out, 100 + q);
	}
	assert_int_equal(atomic_load(&served), 2);
}

/*
 * A serial guest: each request published right after the last reply.  Once
 * the window has opened, a worker is polling when the next one comes, so
 * the device has asked for no kick and takes it anyway.  Then idle: kicks
 * are back on, and a chain published without one waits until it comes.
 */
static void test_polling(void **state)
{
	(void)state;
	enum { N = 200 };
	unsigned kicked = 0;
	for (unsigned i = 0; i < N; i++) {
		uint64_t out = publish(FS_REQUEST, 1000 + i);
		kicked += kick_if_asked(FS_REQUEST);
		assert_true(spin_used(FS_REQUEST, (uint16_t)(i + 1), 5000));
		check_reply(out, 1000 + i);
	}
	assert_int_equal(atomic_load(&served), N);
	print_message("virtio-fs: %u of %d serial requests needed a kick\n", kicked, N);
	/*
	 * The first ones open the window; after that, on an idle machine, few
	 * need one (5-10 of 200 here).  A busy machine takes the poller's CPU
	 * away (it yields), so only "some went without" is certain.
	 */
	assert_true(kicked < N);

	/* Idle: the poller gives up within a window and turns kicks back on. */
	usleep(20000);
	assert_int_equal(used_flags(FS_HIPRIO), 0);
	assert_int_equal(used_flags(FS_REQUEST), 0);
	/* So a chain published without a kick is not seen ... */
	uint64_t out = publish(FS_REQUEST, 7);
	usleep(50000);
	assert_int_equal(used_idx(FS_REQUEST), N);
	/* ... until the kick, which (after so long) also closes the window. */
	kick(FS_REQUEST);
	assert_true(spin_used(FS_REQUEST, N + 1, 5000));
	check_reply(out, 7);
	/*
	 * So a request right after that one, well inside what the window was,
	 * needs its kick: nobody polls.  (A window left open would have a
	 * worker polling by then, kicks off.)  A few rounds of: idle, a
	 * request (its kick closes the window), then the probe.
	 */
	uint16_t done = N + 1;
	for (unsigned round = 0; round < 5; round++) {
		if (round) {
			usleep(5000);
			publish(FS_REQUEST, 8);
			kick(FS_REQUEST);
			assert_true(spin_used(FS_REQUEST, ++done, 5000));
		}
		spin_us(20); /* not nanosleep: its timer slack alone is 50 us */
		out = publish(FS_REQUEST, 9);
		assert_true(kick_if_asked(FS_REQUEST));
		assert_true(spin_used(FS_REQUEST, ++done, 5000));
		check_reply(out, 9);
	}
}

/*
 * A slow request does not hold kicks off: a worker serving one has given
 * the poll role back, so a request published meanwhile is kicked and
 * another worker serves it first.
 */
static void test_slow_request_leaves_kicks_on(void **state)
{
	(void)state;
	uint16_t done = 0;
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 50; i++) { /* the window opens; a worker polls */
			publish(FS_REQUEST, i);
			kick_if_asked(FS_REQUEST);
			assert_true(spin_used(FS_REQUEST, ++done, 5000));
		}
		publish_op(FS_REQUEST, 500, OP_SLOW);
		kick_if_asked(FS_REQUEST);
		spin_us(2000);
		uint64_t out = publish(FS_REQUEST, 501);
		kick_if_asked(FS_REQUEST);
		assert_true(spin_used(FS_REQUEST, ++done, SLOW_MS / 2));
		check_reply(out, 501); /* back while the slow one (SLOW_MS) is still being served */
		assert_true(wait_used(FS_REQUEST, ++done, 5000));
	}
}

/* MSB_FS_POLL_US: bad values refused in one line; 0 never polls. */
static void test_poll_env(void **state)
{
	(void)state;
	assert_int_equal(vd_free(), 0);
	static const char *const bad[] = {"x", "-1", "100001", "5us", "99999999999999999999"};
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(vd_ram_new(), 0);
		setenv("MSB_FS_POLL_US", bad[i], 1);
		struct msb_fs_server srv = {.size = sizeof(srv), .handle = fake_handle, .tag = "t"};
		struct msb_error err = MSB_ERROR_INIT;
		assert_int_equal(fs_new(&vm, &srv, &dev, &err), -EINVAL);
		assert_non_null(
			strstr(err.msg, "MSB_FS_POLL_US: expected 0 to 100000 microseconds"));
		assert_non_null(strstr(err.msg, bad[i]));
		dev = NULL;
		assert_int_equal(vd_free(), 0);
	}
	setenv("MSB_FS_POLL_US", "0", 1);
	int r = setup(NULL);
	unsetenv("MSB_FS_POLL_US");
	assert_int_equal(r, 0);
	unsigned kicked = 0;
	for (unsigned i = 0; i < 100; i++) {
		publish(FS_REQUEST, i);
		kicked += kick_if_asked(FS_REQUEST);
		assert_true(spin_used(FS_REQUEST, (uint16_t)(i + 1), 5000));
	}
	assert_int_equal(kicked, 100);
}

/* A reset while a worker may be polling: the new rings start with kicks on and work. */
static void test_reset_while_polling(void **state)
{
	(void)state;
	for (unsigned i = 0; i < 50; i++) {
		publish(FS_REQUEST, i);
		kick_if_asked(FS_REQUEST);
		assert_true(wait_used(FS_REQUEST, (uint16_t)(i + 1), 5000));
	}
	driver_init_queues(0, 2); /* reset, then new (zeroed) rings */
	next_data = DATA_START;
	uint64_t out = publish(FS_REQUEST, 99);
	kick_if_asked(FS_REQUEST);
	assert_true(wait_used(FS_REQUEST, 1, 5000));
	check_reply(out, 99);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_polling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_request_leaves_kicks_on, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_while_polling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_poll_env, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
