/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtqueue walker against fake guest memory: good chains are followed,
 * and hostile ones — loops, out-of-range addresses and indexes, readable after
 * writable, indirect descriptors we never offered, oversized chains, a driver
 * claiming more chains than the queue holds — are rejected, never followed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "memory.h"
#include "virtio/queue.h"

#define MEM   (1u << 20)
#define QSIZE 8
#define DESC  0x1000
#define AVAIL 0x2000
#define USED  0x3000
#define DATA  0x10000

static uint8_t *ram;
static struct gmem mem;
static struct vq q;

static int setup(void **state)
{
	(void)state;
	ram = calloc(1, MEM);
	gmem_layout(&mem, ram, MEM);
	vq_reset(&q);
	q.size = QSIZE;
	q.desc_gpa = DESC;
	q.avail_gpa = AVAIL;
	q.used_gpa = USED;
	return vq_activate(&q, &mem);
}

static int teardown(void **state)
{
	(void)state;
	free(ram);
	return 0;
}

static void desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint8_t *d = ram + DESC + 16 * i;
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

/* Offer chain heads to the device. */
static void offer(const uint16_t *heads, unsigned n)
{
	uint16_t idx;
	memcpy(&idx, ram + AVAIL + 2, 2);
	for (unsigned i = 0; i < n; i++) {
		memcpy(ram + AVAIL + 4 + 2 * ((idx + i) % QSIZE), &heads[i], 2);
	}
	idx = (uint16_t)(idx + n);
	memcpy(ram + AVAIL + 2, &idx, 2);
}

#define NEXT	 1
#define WRITE	 2
#define INDIRECT 4

static struct vq_elem e;

static void test_good_chain(void **state)
{
	(void)state;
	desc(0, DATA, 16, NEXT, 1);
	desc(1, DATA + 16, 100, NEXT, 2);
	desc(2, DATA + 200, 1, WRITE, 0);
	memcpy(ram + DATA, "header-bytes-16!", 16);
	uint16_t h = 0;
	offer(&h, 1);
	assert_int_equal(vq_pop(&q, &e), 1);
	assert_int_equal(e.head, 0);
	assert_int_equal(e.nread, 2);
	assert_int_equal(e.nwrite, 1);
	assert_true(e.read_bytes == 116 && e.write_bytes == 1);
	char hdr[16];
	assert_int_equal(vq_read(&e, 0, hdr, 16), 16);
	assert_memory_equal(hdr, "header-bytes-16!", 16);
	uint8_t status = 7;
	assert_int_equal(vq_write(&e, 0, &status, 1), 1);
	assert_int_equal(ram[DATA + 200], 7);
	vq_push(&q, e.head, 1);
	uint16_t used_idx;
	uint32_t id, len;
	memcpy(&used_idx, ram + USED + 2, 2);
	memcpy(&id, ram + USED + 4, 4);
	memcpy(&len, ram + USED + 8, 4);
	assert_int_equal(used_idx, 1);
	assert_int_equal(id, 0);
	assert_int_equal(len, 1);
	/* Nothing more to pop. */
	assert_int_equal(vq_pop(&q, &e), 0);
	assert_false(q.broken);
}

/* vq_pending: a chain offered and not yet popped, and never on a broken queue. */
static void test_pending(void **state)
{
	(void)state;
	assert_false(vq_pending(&q));
	desc(0, DATA, 16, 0, 0);
	desc(1, DATA + 16, 16, 0, 0);
	uint16_t h[2] = {0, 1};
	offer(h, 2);
	assert_true(vq_pending(&q));
	assert_int_equal(vq_pop(&q, &e), 1);
	assert_true(vq_pending(&q));
	assert_int_equal(vq_pop(&q, &e), 1);
	assert_false(vq_pending(&q));
	uint16_t bad = QSIZE; /* a head outside the table breaks the queue */
	offer(&bad, 1);
	assert_true(vq_pending(&q));
	assert_int_equal(vq_pop(&q, &e), -22);
	assert_false(vq_pending(&q));
}

/* vq_set_notify: VIRTQ_USED_F_NO_NOTIFY in the used ring's flags, and only on a ready queue. */
static void test_set_notify(void **state)
{
	(void)state;
	uint16_t flags;
	memcpy(ram + USED, "\xff\xff", 2); /* whatever the driver left there */
	vq_set_notify(&q, false);
	memcpy(&flags, ram + USED, 2);
	assert_int_equal(flags, 1);
	vq_set_notify(&q, true);
	memcpy(&flags, ram + USED, 2);
	assert_int_equal(flags, 0);
	/* The used index next to it is the device's too, and untouched. */
	vq_push(&q, 0, 0);
	vq_set_notify(&q, false);
	uint16_t idx;
	memcpy(&idx, ram + USED + 2, 2);
	assert_int_equal(idx, 1);
	vq_reset(&q);
	memset(ram + USED, 0, 2);
	vq_set_notify(&q, false); /* not ready: guest memory is left alone */
	memcpy(&flags, ram + USED, 2);
	assert_int_equal(flags, 0);
}

static void expect_broken(void)
{
	assert_int_equal(vq_pop(&q, &e), -22);
	assert_true(q.broken);
	/* A broken queue yields nothing more until the driver resets it. */
	assert_int_equal(vq_pop(&q, &e), 0);
}

static void test_loop(void **state)
{
	(void)state;
	desc(0, DATA, 8, NEXT, 1);
	desc(1, DATA, 8, NEXT, 0); /* 0 -> 1 -> 0 -> ... */
	uint16_t h = 0;
	offer(&h, 1);
	expect_broken();
}

static void test_self_loop(void **state)
{
	(void)state;
	desc(3, DATA, 8, NEXT, 3);
	uint16_t h = 3;
	offer(&h, 1);
	expect_broken();
}

static void test_address_out_of_range(void **state)
{
	(void)state;
	desc(0, MEM - 8, 16, 0, 0); /* runs past the end of RAM */
	uint16_t h = 0;
	offer(&h, 1);
	expect_broken();
}

static void test_address_wraps(void **state)
{
	(void)state;
	desc(0, UINT64_MAX - 4, 16, 0, 0); /* addr + len overflows */
	uint16_t h = 0;
	offer(&h, 1);
	expect_broken();
}

static void test_head_out_of_range(void **state)
{
	(void)state;
	uint16_t h = QSIZE; /* one past the table */
	offer(&h, 1);
	expect_broken();
}

static void test_next_out_of_range(void **state)
{
	(void)state;
	desc(0, DATA, 8, NEXT, 999);
	uint16_t h = 0;
	offer(&h, 1);
	expect_broken();
}

static void test_readable_after_writable(void **state)
{
	(void)state;
	desc(0, DATA, 8, WRITE | NEXT, 1);
	desc(1, DATA + 8, 8, 0, 0); /* wrong direction order */
	uint16_t h = 0;
	offer(&h, 1);
	expect_broken();
}

static void test_indirect_not_offered(void **state)
{
	(void)state;
	desc(0, DATA, 16, INDIRECT, 0);
	uint16_t h = 0;
	offer(&h, 1);
	expect_broken();
}

static void test_oversized(void **state)
{
	(void)state;
	/* The total length limit holds even when each buffer is in range. */
	teardown(state);
	size_t big = (size_t)VQ_CHAIN_BYTES_MAX + (2u << 20);
	ram = calloc(1, big);
	gmem_layout(&mem, ram, big);
	vq_reset(&q);
	q.size = QSIZE;
	q.desc_gpa = DESC;
	q.avail_gpa = AVAIL;
	q.used_gpa = USED;
	assert_int_equal(vq_activate(&q, &mem), 0);
	desc(0, DATA, VQ_CHAIN_BYTES_MAX / 2 + 1, NEXT, 1);
	desc(1, DATA, VQ_CHAIN_BYTES_MAX / 2 + 1, WRITE, 0);
	uint16_t h = 0;
	offer(&h, 1);
	expect_broken();
}

static void test_too_many_pending(void **state)
{
	(void)state;
	/* The driver claims more new chains than the ring has slots. */
	uint16_t idx = QSIZE + 1;
	memcpy(ram + AVAIL + 2, &idx, 2);
	expect_broken();
}

static void test_bad_ring_setup(void **state)
{
	(void)state;
	struct vq b;
	vq_reset(&b);
	b.size = 6; /* not a power of two */
	b.desc_gpa = DESC;
	b.avail_gpa = AVAIL;
	b.used_gpa = USED;
	assert_true(vq_activate(&b, &mem) < 0);
	b.size = 8;
	b.used_gpa = MEM - 16; /* ring beyond RAM */
	assert_true(vq_activate(&b, &mem) < 0);
	b.used_gpa = USED + 2; /* misaligned */
	assert_true(vq_activate(&b, &mem) < 0);
	b.size = 512; /* larger than we offer */
	b.used_gpa = USED;
	assert_true(vq_activate(&b, &mem) < 0);
}

static void test_memory_regions(void **state)
{
	(void)state;
	/* Above the MMIO hole RAM continues at 4 GiB; the hole itself is not RAM. */
	struct gmem m;
	static uint8_t fake[1];
	gmem_layout(&m, fake, GMEM_MMIO_START + 0x1000);
	assert_int_equal(m.nregions, 2);
	assert_non_null(gmem_ptr(&m, GMEM_MMIO_START - 8, 8));
	assert_null(gmem_ptr(&m, GMEM_MMIO_START - 8, 9));
	assert_null(gmem_ptr(&m, GMEM_MMIO_START, 1));
	assert_non_null(gmem_ptr(&m, GMEM_4G, 0x1000));
	assert_null(gmem_ptr(&m, GMEM_4G, 0x1001));
	assert_null(gmem_ptr(&m, UINT64_MAX, 2));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_good_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_notify, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_self_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_address_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_address_wraps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_head_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_next_out_of_range, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readable_after_writable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_indirect_not_offered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_many_pending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_ring_setup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_regions, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
