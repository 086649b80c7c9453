/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-console (5.3) with a single port, no multiport: the guest sees it as
 * /dev/hvc0, the agent's channel.  The host end is a stream socket.  Flow
 * control is natural on both sides: the monitor reads the socket only while
 * the guest has posted receive buffers, and holds a transmit chain until the
 * socket accepted all of it — so its memory stays bounded whatever either
 * side does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../virtio/mmio.h"
#include "../vm.h"
#include "devices.h"

#define CONSOLE_QUEUE_SIZE 128
#define RXQ		   0
#define TXQ		   1

struct console {
	struct vdev dev;
	int sock;
	bool sock_eof;
	bool rx_pending; /* rx_elem holds a popped chain waiting for data */
	bool tx_pending; /* tx_elem holds a chain partly written to the socket */
	size_t tx_off;
	uint32_t events;
	struct vq_elem rx_elem, tx_elem;
};

static void set_events(struct console *c, uint32_t ev)
{
	if (ev == c->events || c->sock_eof)
		return;
	c->events = ev;
	vm_watch_mod(c->dev.vm, c->sock, ev);
}

/* Host -> guest: fill posted receive buffers from the socket. */
static void console_rx(struct console *c)
{
	struct vdev *d = &c->dev;
	bool any = false;
	while (!c->sock_eof) {
		if (!c->rx_pending) {
			int r = vdev_pop(d, RXQ, &c->rx_elem);
			if (r < 0)
				break;
			if (r == 0) {
				/* No buffers: stop reading until the guest posts some. */
				set_events(c, c->events & ~(uint32_t)EPOLLIN);
				break;
			}
			c->rx_pending = true;
		}
		ssize_t n = readv(c->sock, c->rx_elem.write, (int)c->rx_elem.nwrite);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			set_events(c, c->events | EPOLLIN);
			break;
		}
		if (n == 0) {
			c->sock_eof = true; /* the host closed its end */
			break;
		}
		vdev_push(d, RXQ, c->rx_elem.head, (uint32_t)n);
		c->rx_pending = false;
		any = true;
	}
	if (any)
		vdev_signal_used(d);
}

/* Guest -> host: write transmit chains to the socket, in order. */
static void console_tx(struct console *c)
{
	struct vdev *d = &c->dev;
	bool any = false;
	for (;;) {
		if (!c->tx_pending) {
			if (vdev_pop(d, TXQ, &c->tx_elem) <= 0)
				break;
			c->tx_pending = true;
			c->tx_off = 0;
		}
		bool blocked = false;
		while (c->tx_off < c->tx_elem.read_bytes) {
			uint8_t buf[16384];
			size_t n = vq_read(&c->tx_elem, c->tx_off, buf, sizeof(buf));
			ssize_t w = c->sock_eof ? (ssize_t)n : send(c->sock, buf, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0 && errno == EAGAIN) {
				blocked = true;
				break;
			}
			if (w < 0) {
				/* Nobody listens: drop what the guest sends. */
				w = (ssize_t)n;
			}
			c->tx_off += (size_t)w;
		}
		if (blocked) {
			set_events(c, c->events | EPOLLOUT);
			break;
		}
		vdev_push(d, TXQ, c->tx_elem.head, 0);
		c->tx_pending = false;
		any = true;
	}
	if (!c->tx_pending)
		set_events(c, c->events & ~(uint32_t)EPOLLOUT);
	if (any)
		vdev_signal_used(d);
}

static void console_notify(struct vdev *d, unsigned q)
{
	struct console *c = (struct console *)d;
	if (q == RXQ) {
		set_events(c, c->events | EPOLLIN);
		console_rx(c);
	} else {
		console_tx(c);
	}
}

static void on_sock(struct vm *vm, int fd, uint32_t events, void *arg)
{
	(void)vm;
	(void)fd;
	struct console *c = arg;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		console_rx(c);
	if (events & EPOLLOUT)
		console_tx(c);
}

static void console_reset(struct vdev *d)
{
	struct console *c = (struct console *)d;
	c->rx_pending = c->tx_pending = false;
}

static void console_free(struct vdev *d)
{
	struct console *c = (struct console *)d;
	close(c->sock);
	free(c);
}

static const struct vdev_ops console_ops = {
	.name = "virtio-console",
	.device_id = 3,
	.nqueues = 2,
	.queue_size = CONSOLE_QUEUE_SIZE,
	.notify = console_notify,
	.reset = console_reset,
	.free = console_free,
};

int console_new(struct vm *vm, int *host_fd, struct vdev **out, struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return h->error_set(h, err, -errno, "socketpair: %s", strerror(errno));
	struct console *c = calloc(1, sizeof(*c));
	if (!c) {
		close(sv[0]);
		close(sv[1]);
		return h->error_set(h, err, -ENOMEM, "out of memory");
	}
	c->sock = sv[0];
	c->events = EPOLLIN;
	vdev_init(&c->dev, &console_ops, c);
	int r = vm_watch(vm, c->sock, c->events, on_sock, c);
	if (r < 0) {
		close(sv[0]);
		close(sv[1]);
		free(c);
		return h->error_set(h, err, r, "watching the console socket: %s", strerror(-r));
	}
	*host_fd = sv[1];
	*out = &c->dev;
	return 0;
}
