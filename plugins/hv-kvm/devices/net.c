/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net (virtio 1.2, 5.1) over a TAP device made by the network module.
 *
 * Queues: 0 receiveq, 1 transmitq; no control queue, one queue pair.  Every
 * frame crosses with a 12-byte virtio_net_hdr (VIRTIO_F_VERSION_1), which is
 * also the TAP's vnet header (IFF_VNET_HDR, TUNSETVNETHDRSZ 12), so frames
 * move between guest buffers and the TAP without being reformatted.
 *
 * Offloads: the guest may hand us partially checksummed and TSO frames
 * (CSUM, HOST_TSO4/6, HOST_ECN) and the kernel's TAP code finishes them.  What
 * the guest accepts (GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN) is told to the TAP
 * with TUNSETOFFLOAD when the driver sets DRIVER_OK; the kernel then segments
 * and checksums everything else before it reaches us.  Each header is also
 * checked here against the negotiated features, both ways: a frame the
 * receiver did not agree to take is dropped, never passed on.
 *
 * Hostile input: the guest's frames and headers.  Chains are walked and
 * bounded by virtio/queue.c; here a transmit chain must hold a header and an
 * Ethernet header and at most NET_FRAME_MAX bytes of frame, its header is
 * copied out once, checked and rewritten before the TAP sees it, and the
 * kernel parses the rest (as it does for any TAP user).
 *
 * Threads: a queue kick arrives on the VMM thread, which only records it and
 * wakes the device's worker (class MSB_THREAD_IO).  The worker poll()s an
 * eventfd (kicks, activate, reset, stop) and the TAP (readable: frames for the
 * guest).  While the receive queue has no buffers the TAP is not polled, so
 * frames wait in the TAP's queue (and the kernel drops the excess) until the
 * driver adds buffers and kicks.
 *
 * Receive with MRG_RXBUF: a frame is read straight into the first chain's
 * buffers, and what does not fit into a bounce buffer behind them; the rest
 * is then copied into as many further chains as it needs.  The used ring gets
 * all of a frame's chains at once, num_buffers in the first header, so a
 * driver never sees part of a frame.  When the ring runs dry in the middle,
 * the frame is kept until buffers come; a frame that needs more chains than
 * the ring holds can never fit and is dropped (its chains come back empty).
 *
 * Reset: like virtio-fs, a reset bumps a generation under the device lock;
 * chains taken before it are never completed into the new rings, and a
 * half-delivered frame is forgotten.  The TAP stays.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../virtio/mmio.h"
#include "../vm.h"
#include "devices.h"

#define NET_DEVICE_ID  1
#define NET_QUEUE_SIZE VQ_SIZE_MAX
#define NET_RXQ	       0
#define NET_TXQ	       1
#define NET_NQUEUES    2

_Static_assert(NET_NQUEUES <= VDEV_QUEUES_MAX, "virtio-net needs more queues than a vdev has");

/* Feature bits (5.1.3). */
#define NET_F_CSUM	 0
#define NET_F_GUEST_CSUM 1
#define NET_F_MTU	 3
#define NET_F_MAC	 5
#define NET_F_GUEST_TSO4 7
#define NET_F_GUEST_TSO6 8
#define NET_F_GUEST_ECN	 9
#define NET_F_HOST_TSO4	 11
#define NET_F_HOST_TSO6	 12
#define NET_F_HOST_ECN	 13
#define NET_F_MRG_RXBUF	 15
#define NET_F_STATUS	 16
#define NET_BIT(f)	 (1ull << (f))

#define NET_FEATURES                                                                               \
	(NET_BIT(NET_F_CSUM) | NET_BIT(NET_F_GUEST_CSUM) | NET_BIT(NET_F_MTU) |                    \
	 NET_BIT(NET_F_MAC) | NET_BIT(NET_F_GUEST_TSO4) | NET_BIT(NET_F_GUEST_TSO6) |              \
	 NET_BIT(NET_F_GUEST_ECN) | NET_BIT(NET_F_HOST_TSO4) | NET_BIT(NET_F_HOST_TSO6) |          \
	 NET_BIT(NET_F_HOST_ECN) | NET_BIT(NET_F_MRG_RXBUF) | NET_BIT(NET_F_STATUS))

#define NET_S_LINK_UP	     1
#define NET_STATUS_DRIVER_OK 4 /* device status bit (2.1) */

/* struct virtio_net_hdr (5.1.6): 12 bytes with VIRTIO_F_VERSION_1, num_buffers included. */
#define NET_HDR_LEN	     12
#define NET_HDR_F_NEEDS_CSUM 1
#define NET_HDR_GSO_NONE     0
#define NET_HDR_GSO_TCPV4    1
#define NET_HDR_GSO_TCPV6    4
#define NET_HDR_GSO_ECN	     0x80

struct net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
	uint16_t num_buffers;
} __attribute__((packed));
_Static_assert(sizeof(struct net_hdr) == NET_HDR_LEN, "virtio_net_hdr is 12 bytes");

#define NET_ETH_HLEN  14
#define NET_VLAN_HLEN 4
/* The longest frame either way: 64 KiB (what TSO builds at most) plus Ethernet and VLAN headers. */
#define NET_FRAME_MAX (65536u + NET_ETH_HLEN + NET_VLAN_HLEN)
/* Chains (transmit) or frames (receive) per round, so one direction cannot starve the other. */
#define NET_TX_BATCH NET_QUEUE_SIZE
#define NET_RX_BATCH 64

/* Config space (5.1.4); little-endian hosts only, as KVM on x86. */
struct net_config {
	uint8_t mac[6];
	uint16_t status;
	uint16_t max_virtqueue_pairs;
	uint16_t mtu;
} __attribute__((packed));

/* What wakes the worker, besides the TAP (bits of net.kicks). */
#define NET_KICK_RX 1u /* receive buffers added, or the device changed state */
#define NET_KICK_TX 2u /* frames to send */

/* The frame being delivered to the guest (worker only). */
struct net_rx {
	bool have_first;      /* `first` is taken from the ring and not yet completed */
	struct vq_elem first; /* holds the header and the frame's start */
	size_t len;	      /* header + frame bytes read from the TAP; 0: none yet */
	size_t in_first;      /* of which in `first` */
	size_t copied;	      /* of the rest (in `bounce`), copied into further chains */
	unsigned nchains;     /* chains of this frame: heads[0] is first's */
	uint16_t heads[NET_QUEUE_SIZE];
	uint32_t lens[NET_QUEUE_SIZE];
	struct vq_elem more;
	struct iovec iov[VQ_SIZE_MAX + 1];
	uint8_t bounce[NET_HDR_LEN + NET_FRAME_MAX];
};

struct net {
	struct vdev dev; /* first: the vdev is the net */
	const struct msb_host *host;
	int tap; /* our own dup of the network module's TAP fd */
	int efd; /* wakes the worker */
	uint16_t mtu;
	struct net_config cfg;
	atomic_uint kicks; /* NET_KICK_* */
	atomic_bool stop;
	unsigned long tid;
	bool started;

	/* Guarded by dev.lock (reset runs under it, from the transport). */
	unsigned generation; /* bumped by each reset */
	bool active;	     /* DRIVER_OK seen since the last reset */
	unsigned activations;
	uint64_t features; /* negotiated, as of the last activation */

	/* The worker's own state: its view of the above, and its buffers. */
	unsigned w_gen, w_activations;
	bool w_active;
	uint64_t w_features;
	bool w_rx_blocked; /* waiting for receive buffers: the TAP is not polled */
	bool w_tap_dead;
	bool w_signal; /* used buffers were pushed this round */
	uint64_t tx_dropped, rx_dropped;
	struct vq_elem tx_elem;
	struct iovec tx_iov[VQ_SIZE_MAX + 1];
	struct net_rx rx;
};

/* Which offloads one direction accepts. */
struct net_offload {
	bool csum, tso4, tso6, ecn;
};

static struct net_offload net_guest_accepts(uint64_t f)
{
	bool csum = f & NET_BIT(NET_F_GUEST_CSUM);
	/* TSO needs checksum offload, ECN needs TSO (5.1.3.1): ignore a driver that skips them. */
	bool tso4 = csum && (f & NET_BIT(NET_F_GUEST_TSO4));
	bool tso6 = csum && (f & NET_BIT(NET_F_GUEST_TSO6));
	return (struct net_offload){csum, tso4, tso6,
				    (tso4 || tso6) && (f & NET_BIT(NET_F_GUEST_ECN))};
}

static struct net_offload net_host_accepts(uint64_t f)
{
	bool csum = f & NET_BIT(NET_F_CSUM);
	bool tso4 = csum && (f & NET_BIT(NET_F_HOST_TSO4));
	bool tso6 = csum && (f & NET_BIT(NET_F_HOST_TSO6));
	return (struct net_offload){csum, tso4, tso6,
				    (tso4 || tso6) && (f & NET_BIT(NET_F_HOST_ECN))};
}

/* May a frame with this header go to a side that accepts `o`? */
static bool net_hdr_ok(const struct net_hdr *h, struct net_offload o)
{
	if ((h->flags & NET_HDR_F_NEEDS_CSUM) && !o.csum)
		return false;
	bool ecn = h->gso_type & NET_HDR_GSO_ECN;
	switch (h->gso_type & ~NET_HDR_GSO_ECN) {
	case NET_HDR_GSO_NONE:
		return !ecn;
	case NET_HDR_GSO_TCPV4:
		return o.tso4 && (!ecn || o.ecn);
	case NET_HDR_GSO_TCPV6:
		return o.tso6 && (!ecn || o.ecn);
	default:
		return false; /* UFO, USO: never offered */
	}
}

/*
 * Take the next chain of queue q, unless the device was reset or is not
 * running since the worker last looked: a chain of new rings must never be
 * taken under an old generation (it could then never be completed).
 */
static int net_pop(struct net *n, unsigned q, struct vq_elem *e)
{
	pthread_mutex_lock(&n->dev.lock);
	int r = n->generation == n->w_gen && n->active ? vq_pop(&n->dev.vqs[q], e) : 0;
	pthread_mutex_unlock(&n->dev.lock);
	if (r < 0)
		vdev_set_needs_reset(&n->dev);
	return r;
}

/* Complete chains in order, unless a reset came since they were taken. */
static void net_complete(struct net *n, unsigned q, const uint16_t *heads, const uint32_t *lens,
			 unsigned count)
{
	pthread_mutex_lock(&n->dev.lock);
	bool same = n->generation == n->w_gen;
	for (unsigned i = 0; same && i < count; i++)
		vq_push(&n->dev.vqs[q], heads[i], lens[i]);
	pthread_mutex_unlock(&n->dev.lock);
	if (same && count)
		n->w_signal = true;
}

static void net_complete_one(struct net *n, unsigned q, uint16_t head, uint32_t len)
{
	net_complete(n, q, &head, &len, 1);
}

/* Send one chain's frame to the TAP; false when it was dropped. */
static bool net_tx_one(struct net *n, const struct vq_elem *e)
{
	if (e->read_bytes < NET_HDR_LEN + NET_ETH_HLEN ||
	    e->read_bytes > NET_HDR_LEN + NET_FRAME_MAX)
		return false;
	/* One copy of the header, checked and rewritten: the guest may change its own as we go. */
	struct net_hdr h;
	vq_read(e, 0, &h, sizeof(h));
	if (!net_hdr_ok(&h, net_host_accepts(n->w_features)))
		return false;
	h.flags &= NET_HDR_F_NEEDS_CSUM; /* a guest never vouches for a checksum to the host */
	h.num_buffers = 0;
	unsigned cnt = 0;
	n->tx_iov[cnt++] = (struct iovec){&h, sizeof(h)};
	size_t skip = NET_HDR_LEN;
	for (unsigned i = 0; i < e->nread; i++) {
		size_t l = e->read[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		n->tx_iov[cnt++] = (struct iovec){(uint8_t *)e->read[i].iov_base + skip, l - skip};
		skip = 0;
	}
	/* One writev is one frame; the TAP never takes part of one. */
	ssize_t r;
	do
		r = writev(n->tap, n->tx_iov, (int)cnt);
	while (r < 0 && errno == EINTR);
	return r >= 0;
}

/* Send what the guest queued; true when a batch ended with more maybe left. */
static bool net_tx(struct net *n)
{
	static const uint32_t zero[NET_TX_BATCH];
	uint16_t heads[NET_TX_BATCH];
	unsigned count = 0;
	while (count < NET_TX_BATCH && net_pop(n, NET_TXQ, &n->tx_elem) > 0) {
		if (!net_tx_one(n, &n->tx_elem))
			n->tx_dropped++;
		heads[count++] = n->tx_elem.head;
	}
	net_complete(n, NET_TXQ, heads, zero, count);
	return count == NET_TX_BATCH;
}

static void net_rx_forget(struct net *n)
{
	n->rx.have_first = false;
	n->rx.len = 0;
	n->rx.nchains = 0;
}

/* The header the TAP wrote at the start of a chain's writable buffers. */
static void net_read_written(const struct vq_elem *e, struct net_hdr *h)
{
	uint8_t *dst = (uint8_t *)h;
	size_t done = 0;
	for (unsigned i = 0; i < e->nwrite && done < sizeof(*h); i++) {
		size_t want = sizeof(*h) - done;
		size_t n = e->write[i].iov_len < want ? e->write[i].iov_len : want;
		memcpy(dst + done, e->write[i].iov_base, n);
		done += n;
	}
}

/*
 * Read one frame from the TAP into the first chain (and the bounce buffer):
 * 1 read, 0 nothing to read, -1 a frame was dropped.
 */
static int net_rx_read(struct net *n)
{
	struct net_rx *rx = &n->rx;
	bool mrg = n->w_features & NET_BIT(NET_F_MRG_RXBUF);
	unsigned cnt = rx->first.nwrite;
	memcpy(rx->iov, rx->first.write, cnt * sizeof(rx->iov[0]));
	size_t cap = rx->first.write_bytes;
	if (mrg) {
		rx->iov[cnt++] = (struct iovec){rx->bounce, sizeof(rx->bounce)};
		cap += sizeof(rx->bounce);
	}
	ssize_t got;
	do
		got = readv(n->tap, rx->iov, (int)cnt);
	while (got < 0 && errno == EINTR);
	if (got < 0) {
		if (errno == EAGAIN)
			return 0;
		/* EBADFD: the interface is gone.  Stop polling it rather than spin. */
		n->host->log(n->host, MSB_LOG_WARN, "virtio-net: reading the TAP: %s",
			     strerror(errno));
		n->w_tap_dead = true;
		return 0;
	}
	/* The kernel reports a frame's full length even when it did not fit. */
	if ((size_t)got > cap || (size_t)got < NET_HDR_LEN + NET_ETH_HLEN)
		return -1;
	struct net_hdr h;
	net_read_written(&rx->first, &h);
	struct net_offload o = net_guest_accepts(n->w_features);
	/*
	 * The TAP only builds what TUNSETOFFLOAD allowed, but frames queued
	 * before a change of offloads (a driver reset) were built for the old
	 * ones: check, as the guest was promised (5.1.6.4).
	 */
	if (!net_hdr_ok(&h, o))
		return -1;
	size_t mtu_frame = (size_t)n->mtu + NET_ETH_HLEN + NET_VLAN_HLEN;
	if (h.gso_type == NET_HDR_GSO_NONE && (size_t)got - NET_HDR_LEN > mtu_frame)
		return -1; /* over the MTU we announced (5.1.6.3.2) */
	if (!o.csum && h.flags) {
		/* DATA_VALID without GUEST_CSUM is not ours to set (5.1.6.4.1). */
		h.flags = 0;
		vq_write(&rx->first, 0, &h.flags, 1);
	}
	rx->len = (size_t)got;
	rx->in_first = rx->len < rx->first.write_bytes ? rx->len : rx->first.write_bytes;
	rx->copied = 0;
	rx->heads[0] = rx->first.head;
	rx->lens[0] = (uint32_t)rx->in_first;
	rx->nchains = 1;
	return 1;
}

enum net_spread { NET_SPREAD_DONE, NET_SPREAD_WAIT, NET_SPREAD_DROPPED };

/* Copy the part of the frame beyond the first chain into further chains. */
static enum net_spread net_rx_spread(struct net *n)
{
	struct net_rx *rx = &n->rx;
	size_t rest = rx->len - rx->in_first;
	while (rx->copied < rest) {
		pthread_mutex_lock(&n->dev.lock);
		unsigned ring = n->dev.vqs[NET_RXQ].size;
		pthread_mutex_unlock(&n->dev.lock);
		if (rx->nchains >= ring || rx->nchains >= NET_QUEUE_SIZE) {
			/* Every buffer the ring can hold and still short: it never fits. */
			static const uint32_t zero[NET_QUEUE_SIZE];
			net_complete(n, NET_RXQ, rx->heads, zero, rx->nchains);
			net_rx_forget(n);
			return NET_SPREAD_DROPPED;
		}
		if (net_pop(n, NET_RXQ, &rx->more) <= 0)
			return NET_SPREAD_WAIT;
		size_t w = vq_write(&rx->more, 0, rx->bounce + rx->copied, rest - rx->copied);
		if (w == 0) {
			/* No room at all: give it back empty now, before this frame's chains. */
			net_complete_one(n, NET_RXQ, rx->more.head, 0);
			continue;
		}
		rx->heads[rx->nchains] = rx->more.head;
		rx->lens[rx->nchains++] = (uint32_t)w;
		rx->copied += w;
	}
	return NET_SPREAD_DONE;
}

/* Deliver frames from the TAP; true when a batch ended with more maybe left. */
static bool net_rx(struct net *n)
{
	struct net_rx *rx = &n->rx;
	for (unsigned frames = 0; frames < NET_RX_BATCH;) {
		if (!rx->have_first) {
			if (net_pop(n, NET_RXQ, &rx->first) <= 0) {
				n->w_rx_blocked = true;
				return false;
			}
			if (rx->first.write_bytes < NET_HDR_LEN) {
				/* Too small for a header (5.1.6.3.1): unusable. */
				net_complete_one(n, NET_RXQ, rx->first.head, 0);
				frames++;
				continue;
			}
			rx->have_first = true;
		}
		if (rx->len == 0) {
			int r = net_rx_read(n);
			if (r == 0)
				return false;
			frames++;
			if (r < 0) {
				n->rx_dropped++; /* keep the first chain for the next frame */
				continue;
			}
		}
		enum net_spread s = net_rx_spread(n);
		if (s == NET_SPREAD_WAIT) {
			n->w_rx_blocked = true;
			return false;
		}
		if (s == NET_SPREAD_DROPPED) {
			n->rx_dropped++;
			continue;
		}
		uint16_t nb = (uint16_t)rx->nchains;
		vq_write(&rx->first, offsetof(struct net_hdr, num_buffers), &nb, sizeof(nb));
		net_complete(n, NET_RXQ, rx->heads, rx->lens, rx->nchains);
		net_rx_forget(n);
	}
	return true;
}

/* Tell the TAP which offloads the guest takes; it does the rest in software. */
static void net_set_offload(struct net *n, uint64_t f)
{
	struct net_offload o = net_guest_accepts(f);
	unsigned tun = (o.csum ? TUN_F_CSUM : 0) | (o.tso4 ? TUN_F_TSO4 : 0) |
		       (o.tso6 ? TUN_F_TSO6 : 0) | (o.ecn ? TUN_F_TSO_ECN : 0);
	if (ioctl(n->tap, TUNSETOFFLOAD, tun) == 0)
		return;
	n->host->log(n->host, MSB_LOG_WARN, "virtio-net: TUNSETOFFLOAD %#x: %s", tun,
		     strerror(errno));
	/* Receive checks drop what the guest cannot take; no offloads is always safe. */
	(void)ioctl(n->tap, TUNSETOFFLOAD, 0u);
}

/* Catch up with resets and activations (worker). */
static void net_sync(struct net *n)
{
	pthread_mutex_lock(&n->dev.lock);
	unsigned gen = n->generation, activations = n->activations;
	bool active = n->active;
	uint64_t f = n->features;
	pthread_mutex_unlock(&n->dev.lock);
	if (gen != n->w_gen) {
		net_rx_forget(n); /* its chains belonged to the old rings */
		n->w_gen = gen;
		n->w_rx_blocked = false;
	}
	n->w_active = active;
	n->w_features = f;
	if (active && activations != n->w_activations) {
		net_set_offload(n, f);
		n->w_activations = activations;
	}
}

static void *net_worker(void *arg)
{
	struct net *n = arg;
	bool more_tx = false, more_rx = false;
	for (;;) {
		bool rx_ready = n->w_active && !n->w_rx_blocked && !n->w_tap_dead;
		struct pollfd p[2] = {
			{.fd = n->efd, .events = POLLIN},
			{.fd = n->w_tap_dead ? -1 : n->tap, .events = rx_ready ? POLLIN : 0},
		};
		if (poll(p, 2, more_tx || more_rx ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			n->host->log(n->host, MSB_LOG_ERROR, "virtio-net: poll: %s",
				     strerror(errno));
			break;
		}
		unsigned kicks = 0;
		if (p[0].revents & POLLIN) {
			uint64_t v;
			(void)!read(n->efd, &v, sizeof(v));
			kicks = atomic_exchange(&n->kicks, 0);
		}
		if (atomic_load(&n->stop))
			break;
		if (p[1].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			n->host->log(n->host, MSB_LOG_WARN,
				     "virtio-net: the TAP device is gone; receive stops");
			n->w_tap_dead = true;
		}
		net_sync(n);
		if (kicks & NET_KICK_RX)
			n->w_rx_blocked = false;
		if (!n->w_active) {
			more_tx = more_rx = false;
			continue;
		}
		if ((kicks & NET_KICK_TX) || more_tx)
			more_tx = net_tx(n);
		if (!n->w_rx_blocked && !n->w_tap_dead &&
		    ((p[1].revents & POLLIN) || (kicks & NET_KICK_RX) || more_rx))
			more_rx = net_rx(n);
		else
			more_rx = false;
		if (n->w_signal) {
			n->w_signal = false;
			vdev_signal_used(&n->dev);
		}
	}
	return NULL;
}

static void net_wake(struct net *n, unsigned kicks)
{
	atomic_fetch_or(&n->kicks, kicks);
	uint64_t one = 1;
	(void)!write(n->efd, &one, sizeof(one));
}

/* VMM thread: only wake the worker. */
static void net_notify(struct vdev *d, unsigned q)
{
	net_wake((struct net *)d, q == NET_RXQ ? NET_KICK_RX : NET_KICK_TX);
}

static void net_activate(struct vdev *d)
{
	struct net *n = (struct net *)d;
	pthread_mutex_lock(&d->lock);
	/* A reset may have come between DRIVER_OK and this call: then there is nothing to start. */
	if (d->status & NET_STATUS_DRIVER_OK) {
		n->features = d->driver_features;
		n->active = true;
		n->activations++;
	}
	pthread_mutex_unlock(&d->lock);
	net_wake(n, NET_KICK_RX | NET_KICK_TX);
}

/* Called by the transport with d->lock held. */
static void net_reset(struct vdev *d)
{
	struct net *n = (struct net *)d;
	n->generation++;
	n->active = false;
	n->features = 0;
	net_wake(n, NET_KICK_RX | NET_KICK_TX);
}

static void net_config_read(struct vdev *d, uint32_t off, uint8_t *data, unsigned len)
{
	struct net *n = (struct net *)d;
	memcpy(data, (const uint8_t *)&n->cfg + off, len);
}

/* Join the worker before the VM's RAM goes (vm_destroy frees it after the devices). */
static void net_free(struct vdev *d)
{
	struct net *n = (struct net *)d;
	if (n->started) {
		atomic_store(&n->stop, true);
		net_wake(n, 0);
		pthread_join((pthread_t)n->tid, NULL);
	}
	if (n->tx_dropped || n->rx_dropped)
		n->host->log(n->host, MSB_LOG_DEBUG,
			     "virtio-net: dropped %llu frames from the guest, %llu to it",
			     (unsigned long long)n->tx_dropped, (unsigned long long)n->rx_dropped);
	if (n->efd >= 0)
		close(n->efd);
	if (n->tap >= 0)
		close(n->tap);
	free(n);
}

static const struct vdev_ops net_ops = {
	.name = "virtio-net",
	.device_id = NET_DEVICE_ID,
	.nqueues = NET_NQUEUES,
	.queue_size = NET_QUEUE_SIZE,
	.features = NET_FEATURES,
	.config_read = net_config_read,
	.config_size = sizeof(struct net_config),
	.notify = net_notify,
	.activate = net_activate,
	.reset = net_reset,
	.free = net_free,
};

/* Check the TAP is what the ABI promises and set it up for this device. */
static int net_tap_setup(struct net *n, struct msb_error *err)
{
	const struct msb_host *h = n->host;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(n->tap, TUNGETIFF, &ifr) < 0)
		return h->error_set(h, err, -errno, "virtio-net: not a TAP device (TUNGETIFF: %s)",
				    strerror(errno));
	unsigned want = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (((unsigned)ifr.ifr_flags & (want | IFF_TUN)) != want)
		return h->error_set(h, err, -EINVAL,
				    "virtio-net: %.*s is not an IFF_TAP|IFF_NO_PI|IFF_VNET_HDR "
				    "device (flags %#x)",
				    IFNAMSIZ, ifr.ifr_name, (unsigned)ifr.ifr_flags);
	int sz = NET_HDR_LEN;
	if (ioctl(n->tap, TUNSETVNETHDRSZ, &sz) < 0)
		return h->error_set(h, err, -errno, "virtio-net: TUNSETVNETHDRSZ: %s",
				    strerror(errno));
	/* Nothing offloaded to the guest until it negotiates (DRIVER_OK). */
	if (ioctl(n->tap, TUNSETOFFLOAD, 0u) < 0)
		return h->error_set(h, err, -errno, "virtio-net: TUNSETOFFLOAD: %s",
				    strerror(errno));
	/*
	 * Non-blocking, so a read with nothing queued returns at once.  The flag
	 * is on the open file the network module shares with us; it only ever
	 * hands the fd over, never reads it.
	 */
	int fl = fcntl(n->tap, F_GETFL);
	if (fl < 0 || fcntl(n->tap, F_SETFL, fl | O_NONBLOCK) < 0)
		return h->error_set(h, err, -errno, "virtio-net: O_NONBLOCK: %s", strerror(errno));
	return 0;
}

int net_new(struct vm *vm, const struct msb_net_attach *att, struct vdev **out,
	    struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	if (!att || att->size < offsetof(struct msb_net_attach, mtu) + sizeof(att->mtu))
		return h->error_set(h, err, -EINVAL, "virtio-net: no network attachment");
	if (att->tap_fd < 0)
		return h->error_set(h, err, -EINVAL, "virtio-net: no TAP device");
	uint16_t mtu = att->mtu ? att->mtu : 1500;
	if (mtu < 68)
		return h->error_set(h, err, -EINVAL, "virtio-net: MTU %u is below 68", mtu);
	struct net *n = calloc(1, sizeof(*n));
	if (!n)
		return h->error_set(h, err, -ENOMEM, "out of memory");
	vdev_init(&n->dev, &net_ops, n);
	n->host = h;
	n->efd = -1;
	n->mtu = mtu;
	memcpy(n->cfg.mac, att->mac, sizeof(n->cfg.mac));
	n->cfg.status = NET_S_LINK_UP;
	n->cfg.max_virtqueue_pairs = 1;
	n->cfg.mtu = mtu;
	int r;
	n->tap = fcntl(att->tap_fd, F_DUPFD_CLOEXEC, 0);
	if (n->tap < 0) {
		r = h->error_set(h, err, -errno, "virtio-net: dup of the TAP fd: %s",
				 strerror(errno));
		goto fail;
	}
	if ((r = net_tap_setup(n, err)) < 0)
		goto fail;
	n->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->efd < 0) {
		r = h->error_set(h, err, -errno, "eventfd: %s", strerror(errno));
		goto fail;
	}
	r = h->thread_create(h, MSB_THREAD_IO, "msb-net", net_worker, n, &n->tid);
	if (r < 0) {
		r = h->error_set(h, err, r, "virtio-net: starting the worker: %s", strerror(-r));
		goto fail;
	}
	n->started = true;
	*out = &n->dev;
	return 0;
fail:
	net_free(&n->dev);
	return r;
}
