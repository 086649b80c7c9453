/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-net device (plugins/hv-kvm/devices/net.c) against fake guest
 * memory and a real TAP.  The test plays the guest's driver through the
 * virtio-mmio registers (vdev_mmio) and the queue kicks (ops->notify, as the
 * VMM thread does), and the host's side with sockets in a private network
 * namespace: TAP 10.99.0.1/24, the "guest" 10.99.0.2 with a static
 * neighbour entry.  Frames really cross the kernel both ways.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define VD_NAME "net"
#include "devices/devices.h"
#include "vdriver.h"

/* virtio-net (5.1). */
#define F_CSUM	     (1ull << 0)
#define F_GUEST_CSUM (1ull << 1)
#define F_MTU	     (1ull << 3)
#define F_MAC	     (1ull << 5)
#define F_GUEST_TSO4 (1ull << 7)
#define F_GUEST_TSO6 (1ull << 8)
#define F_HOST_TSO4  (1ull << 11)
#define F_HOST_TSO6  (1ull << 12)
#define F_MRG_RXBUF  (1ull << 15)
#define F_STATUS     (1ull << 16)
#define F_CTRL_VQ    (1ull << 17)
#define F_MQ	     (1ull << 22)
#define F_VERSION_1  (1ull << 32)
#define F_BASIC	     (F_MAC | F_MTU | F_STATUS)
#define HDR	     12
#define RXQ	     0
#define TXQ	     1

#define TAP_IP	 "10.99.0.1"
#define GUEST_IP "10.99.0.2"

static const uint8_t guest_mac[6] = {0x02, 0x4d, 0x53, 0x42, 0x00, 0x02};

/* The host side, made once. */
static bool have_tun;
static int tap_fd = -1;
static char tap_name[IFNAMSIZ];
static uint8_t tap_mac[6];

/* ---- the namespace and the TAP ---- */

static void write_sysctl(const char *path, const char *v)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return; /* no IPv6 in this kernel: nothing to quiet */
	(void)!write(fd, v, strlen(v));
	close(fd);
}

static void set_addr(struct sockaddr *sa, const char *ip)
{
	struct sockaddr_in *in = (struct sockaddr_in *)sa;
	memset(in, 0, sizeof(*in));
	in->sin_family = AF_INET;
	inet_pton(AF_INET, ip, &in->sin_addr);
}

static int group_setup(void **state)
{
	(void)state;
	if (access("/dev/net/tun", F_OK) != 0)
		return 0; /* every test skips */
	have_tun = true;
	/* Everything below happens in a namespace of our own: no traffic leaves it. */
	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return -1;
	}
	/* No IPv6 router solicitations or MLD reports on the TAP: only our frames. */
	write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
	write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
	tap_fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (tap_fd < 0)
		return -1;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "msbtap0");
	if (ioctl(tap_fd, TUNSETIFF, &ifr) < 0)
		return -1;
	memcpy(tap_name, ifr.ifr_name, IFNAMSIZ);
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	set_addr(&ifr.ifr_addr, TAP_IP);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
		return -1;
	set_addr(&ifr.ifr_netmask, "255.255.255.0");
	if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
		return -1;
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		return -1;
	if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
		return -1;
	memcpy(tap_mac, ifr.ifr_hwaddr.sa_data, 6);
	/* The guest's neighbour entry: frames to 10.99.0.2 go out at once, no ARP. */
	struct arpreq arp;
	memset(&arp, 0, sizeof(arp));
	set_addr(&arp.arp_pa, GUEST_IP);
	arp.arp_ha.sa_family = ARPHRD_ETHER;
	memcpy(arp.arp_ha.sa_data, guest_mac, 6);
	arp.arp_flags = ATF_PERM | ATF_COM;
	snprintf(arp.arp_dev, sizeof(arp.arp_dev), "%s", tap_name);
	if (ioctl(s, SIOCSARP, &arp) < 0) {
		fprintf(stderr, "SIOCSARP: %s\n", strerror(errno));
		return -1;
	}
	close(s);
	int fl = fcntl(tap_fd, F_GETFL);
	fcntl(tap_fd, F_SETFL, fl | O_NONBLOCK);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (tap_fd >= 0)
		close(tap_fd);
	return 0;
}

/* ---- the device ---- */

static int setup_mtu(uint16_t mtu)
{
	if (!have_tun)
		return 0;
	/* Frames a previous test left in the TAP are not this test's. */
	static uint8_t junk[70000];
	while (read(tap_fd, junk, sizeof(junk)) >= 0)
		;
	if (vd_ram_new() < 0)
		return -1;
	struct msb_net_attach att = {.size = sizeof(att), .tap_fd = tap_fd, .mtu = mtu};
	memcpy(att.mac, guest_mac, 6);
	struct msb_error err = MSB_ERROR_INIT;
	if (net_new(&vm, &att, &dev, &err) < 0) {
		fprintf(stderr, "net_new: %s\n", err.msg);
		return -1;
	}
	return vd_attach();
}

static int setup(void **state)
{
	(void)state;
	return setup_mtu(0); /* 0: the default, 1500 */
}

static int teardown(void **state)
{
	(void)state;
	return vd_free(); /* joins the worker, closes its TAP dup and the irqfd */
}

static void driver_init(uint64_t features)
{
	driver_init_queues(features, 2);
}

/* One writable buffer of len bytes as a receive chain; returns its guest address. */
static uint64_t add_rx_buf(uint32_t len, uint16_t *head)
{
	struct seg s = {galloc(len), len, true};
	memset(ram + s.gpa, 0xee, len);
	uint16_t h = add_chain(RXQ, &s, 1);
	if (head)
		*head = h;
	return s.gpa;
}

/* ---- frames and sockets ---- */

static uint16_t ip_csum(const uint8_t *p, size_t len)
{
	uint32_t sum = 0;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* An Ethernet/IPv4/UDP frame from the guest to the TAP; returns its length. */
static size_t build_udp(uint8_t *f, uint16_t sport, uint16_t dport, const void *payload,
			size_t plen, uint16_t udp_csum)
{
	memcpy(f, tap_mac, 6);
	memcpy(f + 6, guest_mac, 6);
	put16(f + 12, 0x0800);
	uint8_t *ip = f + 14;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + 8 + plen));
	ip[8] = 64;
	ip[9] = 17;
	inet_pton(AF_INET, GUEST_IP, ip + 12);
	inet_pton(AF_INET, TAP_IP, ip + 16);
	put16(ip + 10, ip_csum(ip, 20));
	uint8_t *udp = ip + 20;
	put16(udp, sport);
	put16(udp + 2, dport);
	put16(udp + 4, (uint16_t)(8 + plen));
	put16(udp + 6, udp_csum); /* 0: no checksum (IPv4 allows it) */
	memcpy(udp + 8, payload, plen);
	return 14 + 20 + 8 + plen;
}

static int udp_socket(uint16_t port)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, TAP_IP, &a.sin_addr);
	assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	return s;
}

/* A datagram on s within timeout_ms: its length, or -1. */
static ssize_t udp_recv(int s, void *buf, size_t len, int timeout_ms)
{
	struct pollfd p = {.fd = s, .events = POLLIN};
	if (poll(&p, 1, timeout_ms) <= 0)
		return -1;
	return recv(s, buf, len, MSG_DONTWAIT);
}

/* Send a datagram from the host side to the guest's port 6000. */
static void send_to_guest(const void *payload, size_t len)
{
	int s = udp_socket(0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(6000)};
	inet_pton(AF_INET, GUEST_IP, &a.sin_addr);
	assert_int_equal(sendto(s, payload, len, 0, (struct sockaddr *)&a, sizeof(a)),
			 (ssize_t)len);
	close(s);
}

/* Put a guest frame (header + frame) in one transmit chain of three descriptors. */
static uint16_t add_tx_frame(const uint8_t *hdr, const uint8_t *frame, size_t len)
{
	uint64_t h = galloc(HDR), f = galloc(len);
	memcpy(ram + h, hdr, HDR);
	memcpy(ram + f, frame, len);
	/* The frame split at an odd place: the device must follow the chain, not the first buffer.
	 */
	struct seg segs[3] = {{h, HDR, false}, {f, 21, false}, {f + 21, (uint32_t)len - 21, false}};
	return add_chain(TXQ, segs, 3);
}

static void fill_payload(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(i * 7 + seed);
}

/* Check a received frame (after the header): our datagram to 10.99.0.2:6000. */
static void check_rx_frame(const uint8_t *f, size_t len, const uint8_t *payload, size_t plen)
{
	assert_int_equal(len, 14 + 20 + 8 + plen);
	assert_memory_equal(f, guest_mac, 6);
	assert_memory_equal(f + 6, tap_mac, 6);
	assert_int_equal(f[12] << 8 | f[13], 0x0800);
	const uint8_t *ip = f + 14;
	assert_int_equal(ip[9], 17);
	uint8_t dst[4];
	inet_pton(AF_INET, GUEST_IP, dst);
	assert_memory_equal(ip + 16, dst, 4);
	assert_int_equal(ip[22] << 8 | ip[23], 6000);
	assert_memory_equal(ip + 28, payload, plen);
}

/* ---- tests ---- */

#define NEED_TUN()                                                                                 \
	do {                                                                                       \
		if (!have_tun)                                                                     \
			skip();                                                                    \
	} while (0)

/* (6) Config space and identity: what the guest driver reads before anything else. */
static void test_config(void **state)
{
	(void)state;
	NEED_TUN();
	assert_int_equal(mmio_r(R_DEVICE_ID), 1);
	mmio_w(R_DEVICE_FEATURES_SEL, 0);
	uint64_t f = mmio_r(R_DEVICE_FEATURES);
	mmio_w(R_DEVICE_FEATURES_SEL, 1);
	f |= (uint64_t)mmio_r(R_DEVICE_FEATURES) << 32;
	uint64_t want = F_BASIC | F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 |
			F_HOST_TSO4 | F_HOST_TSO6 | F_MRG_RXBUF | F_VERSION_1;
	assert_true((f & want) == want);
	assert_true((f & (F_CTRL_VQ | F_MQ)) == 0); /* no control queue, one pair */
	uint8_t cfg[12];
	for (unsigned i = 0; i < sizeof(cfg); i++)
		vdev_mmio(dev, R_CONFIG + i, &cfg[i], 1, false);
	assert_memory_equal(cfg, guest_mac, 6);
	assert_int_equal(cfg[6] | cfg[7] << 8, 1);	/* status: LINK_UP */
	assert_int_equal(cfg[8] | cfg[9] << 8, 1);	/* max_virtqueue_pairs */
	assert_int_equal(cfg[10] | cfg[11] << 8, 1500); /* mtu 0 in the attachment: 1500 */
	uint16_t mtu;
	vdev_mmio(dev, R_CONFIG + 10, (uint8_t *)&mtu, 2, false);
	assert_int_equal(mtu, 1500);
	uint32_t beyond = 0xffffffff;
	vdev_mmio(dev, R_CONFIG + 12, (uint8_t *)&beyond, 4, false);
	assert_int_equal(beyond, 0);
}

static int setup_mtu9000(void **state)
{
	(void)state;
	return setup_mtu(9000);
}

static void test_config_mtu(void **state)
{
	(void)state;
	NEED_TUN();
	uint16_t mtu;
	vdev_mmio(dev, R_CONFIG + 10, (uint8_t *)&mtu, 2, false);
	assert_int_equal(mtu, 9000);
}

/* The attachment is checked: no TAP, or an fd that is not a vnet-header TAP, is refused. */
static void test_bad_attach(void **state)
{
	(void)state;
	NEED_TUN();
	struct vdev *d = NULL;
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_net_attach att = {.size = sizeof(att), .tap_fd = -1};
	assert_int_equal(net_new(&vm, &att, &d, &err), -EINVAL);
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	att.tap_fd = s;
	assert_true(net_new(&vm, &att, &d, &err) < 0);
	assert_non_null(strstr(err.msg, "TAP"));
	close(s);
	assert_null(d);
}

/* (1) A frame the guest sends arrives at a socket on the host side. */
static void test_tx(void **state)
{
	(void)state;
	NEED_TUN();
	int s = udp_socket(5001);
	driver_init(F_BASIC);
	uint8_t hdr[HDR] = {0}, frame[256], payload[100];
	fill_payload(payload, sizeof(payload), 1);
	size_t len = build_udp(frame, 4000, 5001, payload, sizeof(payload), 0);
	uint16_t head = add_tx_frame(hdr, frame, len);
	kick(TXQ);
	assert_true(wait_used(TXQ, 1, 5000));
	uint32_t id, used;
	used_elem(TXQ, 0, &id, &used);
	assert_int_equal(id, head);
	assert_int_equal(used, 0); /* nothing written into a transmit chain */
	uint8_t got[200];
	struct sockaddr_in from;
	socklen_t fl = sizeof(from);
	struct pollfd p = {.fd = s, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	ssize_t n = recvfrom(s, got, sizeof(got), 0, (struct sockaddr *)&from, &fl);
	assert_int_equal(n, sizeof(payload));
	assert_memory_equal(got, payload, sizeof(payload));
	assert_int_equal(ntohs(from.sin_port), 4000);
	char ip[16];
	inet_ntop(AF_INET, &from.sin_addr, ip, sizeof(ip));
	assert_string_equal(ip, GUEST_IP);
	close(s);
}

/*
 * Checksum offload is checked against what was negotiated: a frame asking
 * the host to finish its checksum crosses with VIRTIO_NET_F_CSUM and is
 * dropped without it (the chain still completes).
 */
static void tx_partial_csum(uint64_t features, bool delivered)
{
	int s = udp_socket(5002);
	driver_init(features);
	uint8_t hdr[HDR] = {0}, frame[256], payload[64];
	fill_payload(payload, sizeof(payload), 2);
	/* A checksum field that is not the checksum: only NEEDS_CSUM makes it right. */
	size_t len = build_udp(frame, 4001, 5002, payload, sizeof(payload), 0x1234);
	hdr[0] = 1;	  /* VIRTIO_NET_HDR_F_NEEDS_CSUM */
	hdr[6] = 14 + 20; /* csum_start: the UDP header */
	hdr[8] = 6;	  /* csum_offset: its checksum field */
	add_tx_frame(hdr, frame, len);
	kick(TXQ);
	assert_true(wait_used(TXQ, 1, 5000));
	uint8_t got[128];
	ssize_t n = udp_recv(s, got, sizeof(got), delivered ? 5000 : 300);
	if (delivered) {
		assert_int_equal(n, sizeof(payload));
		assert_memory_equal(got, payload, sizeof(payload));
	} else {
		assert_int_equal(n, -1);
	}
	close(s);
}

static void test_tx_csum_offload(void **state)
{
	(void)state;
	NEED_TUN();
	tx_partial_csum(F_BASIC | F_CSUM, true);
}

static void test_tx_csum_not_negotiated(void **state)
{
	(void)state;
	NEED_TUN();
	tx_partial_csum(F_BASIC, false);
}

/* (5) Oversize and undersize transmit chains are dropped; the device carries on. */
static void test_tx_oversize(void **state)
{
	(void)state;
	NEED_TUN();
	int s = udp_socket(5003);
	driver_init(F_BASIC);
	/*
	 * 70000 bytes of frame that begin as a valid datagram to our socket: if
	 * the device let it through, the kernel would trim it to the IP length
	 * and deliver it.
	 */
	size_t big = 70000;
	uint64_t h = galloc(HDR), f = galloc(big);
	memset(ram + h, 0, HDR);
	uint8_t payload[32];
	fill_payload(payload, sizeof(payload), 3);
	build_udp(ram + f, 4002, 5003, payload, sizeof(payload), 0);
	struct seg segs[2] = {{h, HDR, false}, {f, (uint32_t)big, false}};
	uint16_t h1 = add_chain(TXQ, segs, 2);
	/* Too short to hold a header and an Ethernet header. */
	struct seg tiny = {galloc(8), 8, false};
	uint16_t h2 = add_chain(TXQ, &tiny, 1);
	/* No readable bytes at all. */
	struct seg wonly = {galloc(64), 64, true};
	uint16_t h3 = add_chain(TXQ, &wonly, 1);
	kick(TXQ);
	assert_true(wait_used(TXQ, 3, 5000));
	uint32_t id, len;
	used_elem(TXQ, 0, &id, &len);
	assert_true(id == h1 && len == 0);
	used_elem(TXQ, 1, &id, &len);
	assert_true(id == h2 && len == 0);
	used_elem(TXQ, 2, &id, &len);
	assert_true(id == h3 && len == 0);
	uint8_t got[128];
	assert_int_equal(udp_recv(s, got, sizeof(got), 300), -1);
	/* Still working: the same datagram in a frame of the right size arrives. */
	uint8_t hdr[HDR] = {0}, frame[128];
	size_t flen = build_udp(frame, 4002, 5003, payload, sizeof(payload), 0);
	add_tx_frame(hdr, frame, flen);
	kick(TXQ);
	assert_true(wait_used(TXQ, 4, 5000));
	assert_int_equal(udp_recv(s, got, sizeof(got), 5000), sizeof(payload));
	assert_memory_equal(got, payload, sizeof(payload));
	assert_false(mmio_r(R_STATUS) & S_NEEDS_RESET);
	close(s);
}

/* A malformed chain goes through the queue's error path: NEEDS_RESET, nothing sent. */
static void test_tx_malformed(void **state)
{
	(void)state;
	NEED_TUN();
	int s = udp_socket(5004);
	driver_init(F_BASIC);
	uint8_t frame[128], payload[16];
	fill_payload(payload, sizeof(payload), 4);
	size_t flen = build_udp(frame, 4003, 5004, payload, sizeof(payload), 0);
	uint64_t w = galloc(64), r = galloc(HDR + flen);
	memset(ram + r, 0, HDR);
	memcpy(ram + r + HDR, frame, flen);
	/* A readable buffer after a writable one (2.7.4.2). */
	struct seg segs[2] = {{w, 64, true}, {r, (uint32_t)(HDR + flen), false}};
	add_chain(TXQ, segs, 2);
	kick(TXQ);
	long end = now_ms() + 5000;
	while (!(mmio_r(R_STATUS) & S_NEEDS_RESET) && now_ms() < end)
		usleep(1000);
	assert_true(mmio_r(R_STATUS) & S_NEEDS_RESET);
	assert_int_equal(used_idx(TXQ), 0);
	uint8_t got[64];
	assert_int_equal(udp_recv(s, got, sizeof(got), 200), -1);
	close(s);
}

/* (2) A datagram to the guest lands in its receive chain with a correct header. */
static void test_rx(void **state)
{
	(void)state;
	NEED_TUN();
	driver_init(F_BASIC); /* no offloads, no merged buffers */
	uint64_t h = galloc(HDR), b = galloc(1600);
	memset(ram + h, 0xee, HDR);
	struct seg segs[2] = {{h, HDR, true}, {b, 1600, true}};
	uint16_t head = add_chain(RXQ, segs, 2);
	kick(RXQ);
	uint8_t payload[200];
	fill_payload(payload, sizeof(payload), 5);
	send_to_guest(payload, sizeof(payload));
	assert_true(wait_used(RXQ, 1, 5000));
	uint32_t id, len;
	used_elem(RXQ, 0, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(len, HDR + 14 + 20 + 8 + sizeof(payload));
	const uint8_t *hd = ram + h;
	assert_int_equal(hd[0], 0);		   /* flags: nothing promised without GUEST_CSUM */
	assert_int_equal(hd[1], 0);		   /* gso_type NONE */
	assert_int_equal(hd[10] | hd[11] << 8, 1); /* num_buffers: 1 without MRG_RXBUF too */
	check_rx_frame(ram + b, len - HDR, payload, sizeof(payload));
	assert_int_equal(used_idx(RXQ), 1);
}

/* Collect a merged frame: check num_buffers and the chains, return header+frame bytes. */
static size_t collect_merged(unsigned first, const uint64_t *bufs, const uint16_t *heads,
			     unsigned nbufs, uint32_t buflen, uint8_t *out)
{
	size_t total = 0;
	uint16_t nb = 0;
	for (unsigned i = 0; i < nbufs; i++) {
		uint32_t id, len;
		used_elem(RXQ, first + i, &id, &len);
		assert_int_equal(id, heads[i]); /* chains used in the order they were given */
		assert_true(len > 0 && len <= buflen);
		if (i == 0)
			nb = (uint16_t)(ram[bufs[0] + 10] | ram[bufs[0] + 11] << 8);
		if (i + 1 < nb)
			assert_int_equal(len, buflen); /* only the last one is partly filled */
		memcpy(out + total, ram + bufs[i], len);
		total += len;
		if (i + 1 == nb)
			break;
	}
	return total;
}

/* (3) A frame larger than one receive buffer is spread over several, num_buffers right. */
static void test_rx_mergeable(void **state)
{
	(void)state;
	NEED_TUN();
	driver_init(F_BASIC | F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6);
	uint64_t bufs[8];
	uint16_t heads[8];
	for (unsigned i = 0; i < 8; i++)
		bufs[i] = add_rx_buf(256, &heads[i]);
	kick(RXQ);
	uint8_t payload[1000];
	fill_payload(payload, sizeof(payload), 6);
	send_to_guest(payload, sizeof(payload));
	/* 12 + 1042 bytes: four full 256-byte buffers and 30 bytes of a fifth. */
	assert_true(wait_used(RXQ, 5, 5000));
	usleep(50000);
	assert_int_equal(used_idx(RXQ), 5); /* one frame, nothing else */
	static uint8_t all[8 * 256];
	size_t total = collect_merged(0, bufs, heads, 8, 256, all);
	assert_int_equal(total, HDR + 1042);
	assert_int_equal(all[10] | all[11] << 8, 5);
	uint32_t id, len;
	used_elem(RXQ, 4, &id, &len);
	assert_int_equal(len, 30);
	assert_true((all[0] & ~3) == 0); /* NEEDS_CSUM or DATA_VALID at most */
	assert_int_equal(all[1], 0);	 /* not a GSO frame */
	check_rx_frame(all + HDR, total - HDR, payload, sizeof(payload));
}

/* (4a) A frame that comes with no receive buffers waits for them. */
static void test_rx_waits_for_buffers(void **state)
{
	(void)state;
	NEED_TUN();
	driver_init(F_BASIC | F_MRG_RXBUF);
	uint8_t payload[300];
	fill_payload(payload, sizeof(payload), 7);
	send_to_guest(payload, sizeof(payload));
	usleep(200000);
	assert_int_equal(used_idx(RXQ), 0);
	uint64_t bufs[4];
	uint16_t heads[4];
	for (unsigned i = 0; i < 4; i++)
		bufs[i] = add_rx_buf(2048, &heads[i]);
	kick(RXQ);
	assert_true(wait_used(RXQ, 1, 5000));
	uint32_t id, len;
	used_elem(RXQ, 0, &id, &len);
	assert_int_equal(id, heads[0]);
	assert_int_equal(len, HDR + 14 + 20 + 8 + sizeof(payload));
	assert_int_equal(ram[bufs[0] + 10] | ram[bufs[0] + 11] << 8, 1);
	check_rx_frame(ram + bufs[0] + HDR, len - HDR, payload, sizeof(payload));
}

/* (4b) A frame that runs out of buffers midway waits whole, then arrives whole. */
static void test_rx_waits_midway(void **state)
{
	(void)state;
	NEED_TUN();
	driver_init(F_BASIC | F_MRG_RXBUF);
	uint64_t bufs[5];
	uint16_t heads[5];
	for (unsigned i = 0; i < 2; i++)
		bufs[i] = add_rx_buf(256, &heads[i]);
	kick(RXQ);
	uint8_t payload[1000];
	fill_payload(payload, sizeof(payload), 8);
	send_to_guest(payload, sizeof(payload));
	usleep(200000);
	/* Two buffers hold 512 of 1054 bytes: none of it may be shown to the driver yet. */
	assert_int_equal(used_idx(RXQ), 0);
	for (unsigned i = 2; i < 5; i++)
		bufs[i] = add_rx_buf(256, &heads[i]);
	kick(RXQ);
	assert_true(wait_used(RXQ, 5, 5000));
	static uint8_t all[5 * 256];
	size_t total = collect_merged(0, bufs, heads, 5, 256, all);
	assert_int_equal(total, HDR + 1042);
	assert_int_equal(all[10] | all[11] << 8, 5);
	check_rx_frame(all + HDR, total - HDR, payload, sizeof(payload));
}

/*
 * A reset forgets a half-delivered frame: nothing from before it is
 * completed into the new rings, and the device works after the driver sets
 * it up again.
 */
static void test_rx_reset(void **state)
{
	(void)state;
	NEED_TUN();
	driver_init(F_BASIC | F_MRG_RXBUF);
	add_rx_buf(256, NULL);
	add_rx_buf(256, NULL);
	kick(RXQ);
	uint8_t payload[1000];
	fill_payload(payload, sizeof(payload), 9);
	send_to_guest(payload, sizeof(payload));
	usleep(200000);
	assert_int_equal(used_idx(RXQ), 0);
	driver_init(F_BASIC | F_MRG_RXBUF); /* resets, then new rings */
	uint64_t b;
	uint16_t head;
	b = add_rx_buf(2048, &head);
	kick(RXQ);
	usleep(200000);
	assert_int_equal(used_idx(RXQ), 0); /* the old frame was forgotten, not delivered */
	uint8_t p2[40];
	fill_payload(p2, sizeof(p2), 10);
	send_to_guest(p2, sizeof(p2));
	assert_true(wait_used(RXQ, 1, 5000));
	uint32_t id, len;
	used_elem(RXQ, 0, &id, &len);
	assert_int_equal(id, head);
	assert_int_equal(ram[b + 10] | ram[b + 11] << 8, 1);
	check_rx_frame(ram + b + HDR, len - HDR, p2, sizeof(p2));
}

/* Both ways at once for a while: nothing lost, nothing stuck. */
static void test_ping_pong(void **state)
{
	(void)state;
	NEED_TUN();
	int s = udp_socket(5005);
	driver_init(F_BASIC | F_MRG_RXBUF | F_CSUM | F_GUEST_CSUM);
	for (unsigned round = 0; round < 20; round++) {
		uint8_t payload[64];
		fill_payload(payload, sizeof(payload), round);
		uint64_t b;
		uint16_t head;
		b = add_rx_buf(1600, &head);
		kick(RXQ);
		send_to_guest(payload, sizeof(payload));
		assert_true(wait_used(RXQ, (uint16_t)(round + 1), 5000));
		uint32_t id, len;
		used_elem(RXQ, round, &id, &len);
		assert_int_equal(id, head);
		check_rx_frame(ram + b + HDR, len - HDR, payload, sizeof(payload));
		uint8_t hdr[HDR] = {0}, frame[128];
		size_t flen = build_udp(frame, 4004, 5005, payload, sizeof(payload), 0);
		add_tx_frame(hdr, frame, flen);
		kick(TXQ);
		uint8_t got[128];
		assert_int_equal(udp_recv(s, got, sizeof(got), 5000), sizeof(payload));
		assert_memory_equal(got, payload, sizeof(payload));
	}
	close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_mtu, setup_mtu9000, teardown),
		cmocka_unit_test_setup_teardown(test_bad_attach, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_csum_offload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_csum_not_negotiated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_oversize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_mergeable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_waits_for_buffers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_waits_midway, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rx_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_pong, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
