/* SPDX-License-Identifier: Apache-2.0 */
#include "mmio.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../vm.h"

/* Register offsets (4.2.2). */
enum {
	R_MAGIC = 0x000,
	R_VERSION = 0x004,
	R_DEVICE_ID = 0x008,
	R_VENDOR_ID = 0x00c,
	R_DEVICE_FEATURES = 0x010,
	R_DEVICE_FEATURES_SEL = 0x014,
	R_DRIVER_FEATURES = 0x020,
	R_DRIVER_FEATURES_SEL = 0x024,
	R_QUEUE_SEL = 0x030,
	R_QUEUE_NUM_MAX = 0x034,
	R_QUEUE_NUM = 0x038,
	R_QUEUE_READY = 0x044,
	R_QUEUE_NOTIFY = 0x050,
	R_INTERRUPT_STATUS = 0x060,
	R_INTERRUPT_ACK = 0x064,
	R_STATUS = 0x070,
	R_QUEUE_DESC_LOW = 0x080,
	R_QUEUE_DESC_HIGH = 0x084,
	R_QUEUE_DRIVER_LOW = 0x090,
	R_QUEUE_DRIVER_HIGH = 0x094,
	R_QUEUE_DEVICE_LOW = 0x0a0,
	R_QUEUE_DEVICE_HIGH = 0x0a4,
	R_CONFIG_GENERATION = 0x0fc,
	R_CONFIG = 0x100,
};
#define MAGIC		   0x74726976 /* "virt" */
#define VENDOR		   0x0042534d /* "MSB\0" */
#define STATUS_DRIVER_OK   4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64
#define STATUS_FAILED	   128
#define INT_USED_RING	   1
#define INT_CONFIG	   2

void vdev_init(struct vdev *d, const struct vdev_ops *ops, void *priv)
{
	memset(d, 0, sizeof(*d));
	d->ops = ops;
	d->priv = priv;
	d->irqfd = -1;
	for (unsigned i = 0; i < VDEV_QUEUES_MAX; i++)
		d->kickfd[i] = -1;
	pthread_mutex_init(&d->lock, NULL);
}

static void on_kick(struct vm *vm, int fd, uint32_t events, void *arg)
{
	(void)vm;
	(void)events;
	struct vdev *d = arg;
	uint64_t n;
	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return;
	for (unsigned q = 0; q < d->ops->nqueues; q++)
		if (d->kickfd[q] == fd)
			d->ops->notify(d, q);
}

int vdev_attach(struct vdev *d, struct vm *vm, uint64_t base, unsigned irq, struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	d->vm = vm;
	d->base = base;
	d->irq = irq;
	d->irqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->irqfd < 0)
		return h->error_set(h, err, -errno, "eventfd: %s", strerror(errno));
	struct kvm_irqfd irqfd = {.fd = (uint32_t)d->irqfd, .gsi = irq};
	if (ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0)
		return h->error_set(h, err, -errno, "KVM_IRQFD: %s", strerror(errno));
	for (unsigned q = 0; q < d->ops->nqueues; q++) {
		d->kickfd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (d->kickfd[q] < 0)
			return h->error_set(h, err, -errno, "eventfd: %s", strerror(errno));
		/* A 4-byte write of q to QueueNotify signals the eventfd in the kernel. */
		struct kvm_ioeventfd io = {
			.datamatch = q,
			.addr = base + R_QUEUE_NOTIFY,
			.len = 4,
			.fd = d->kickfd[q],
			.flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
		};
		if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &io) < 0)
			return h->error_set(h, err, -errno, "KVM_IOEVENTFD: %s", strerror(errno));
		int r = vm_watch(vm, d->kickfd[q], EPOLLIN, on_kick, d);
		if (r < 0)
			return h->error_set(h, err, r, "watching queue kicks: %s", strerror(-r));
	}
	return 0;
}

int vdev_cmdline(const struct vdev *d, char *buf, size_t len)
{
	return snprintf(buf, len, " virtio_mmio.device=4K@0x%llx:%u", (unsigned long long)d->base,
			d->irq);
}

int vdev_pop(struct vdev *d, unsigned q, struct vq_elem *e)
{
	pthread_mutex_lock(&d->lock);
	int r = vq_pop(&d->vqs[q], e);
	pthread_mutex_unlock(&d->lock);
	if (r < 0)
		vdev_set_needs_reset(d);
	return r;
}

bool vdev_pending(struct vdev *d, unsigned q)
{
	pthread_mutex_lock(&d->lock);
	bool r = vq_pending(&d->vqs[q]);
	pthread_mutex_unlock(&d->lock);
	return r;
}

void vdev_set_notify(struct vdev *d, unsigned q, bool on)
{
	pthread_mutex_lock(&d->lock);
	vq_set_notify(&d->vqs[q], on);
	pthread_mutex_unlock(&d->lock);
}

void vdev_push(struct vdev *d, unsigned q, uint16_t head, uint32_t written)
{
	pthread_mutex_lock(&d->lock);
	vq_push(&d->vqs[q], head, written);
	pthread_mutex_unlock(&d->lock);
}

void vdev_signal_used(struct vdev *d)
{
	pthread_mutex_lock(&d->lock);
	d->isr |= INT_USED_RING;
	pthread_mutex_unlock(&d->lock);
	uint64_t one = 1;
	(void)!write(d->irqfd, &one, sizeof(one));
}

void vdev_set_needs_reset(struct vdev *d)
{
	pthread_mutex_lock(&d->lock);
	d->status |= STATUS_NEEDS_RESET;
	d->isr |= INT_CONFIG;
	pthread_mutex_unlock(&d->lock);
	uint64_t one = 1;
	(void)!write(d->irqfd, &one, sizeof(one));
}

static void device_reset(struct vdev *d)
{
	d->status = 0;
	d->driver_features = 0;
	d->dev_features_sel = d->drv_features_sel = d->queue_sel = 0;
	d->isr = 0;
	for (unsigned q = 0; q < VDEV_QUEUES_MAX; q++)
		vq_reset(&d->vqs[q]);
	if (d->ops->reset)
		d->ops->reset(d);
}

static uint64_t offered(const struct vdev *d)
{
	return d->ops->features | (1ull << VIRTIO_F_VERSION_1);
}

static uint32_t reg_read(struct vdev *d, uint64_t off)
{
	struct vq *q = d->queue_sel < d->ops->nqueues ? &d->vqs[d->queue_sel] : NULL;
	switch (off) {
	case R_MAGIC:
		return MAGIC;
	case R_VERSION:
		return 2;
	case R_DEVICE_ID:
		return d->ops->device_id;
	case R_VENDOR_ID:
		return VENDOR;
	case R_DEVICE_FEATURES:
		return d->dev_features_sel < 2
			       ? (uint32_t)(offered(d) >> (32 * d->dev_features_sel))
			       : 0;
	case R_QUEUE_NUM_MAX:
		return q ? d->ops->queue_size : 0;
	case R_QUEUE_READY:
		return q ? q->ready : 0;
	case R_INTERRUPT_STATUS:
		return d->isr;
	case R_STATUS:
		return d->status;
	case R_CONFIG_GENERATION:
		return d->config_generation;
	default:
		return 0;
	}
}

static void set_addr(uint64_t *a, uint32_t v, bool high)
{
	*a = high ? (*a & 0xffffffffull) | ((uint64_t)v << 32) : (*a & ~0xffffffffull) | v;
}

/* Returns true when the device was activated by this write. */
static bool reg_write(struct vdev *d, uint64_t off, uint32_t v)
{
	struct vq *q = d->queue_sel < d->ops->nqueues ? &d->vqs[d->queue_sel] : NULL;
	/* Queue registers may only change while the queue is not ready (4.2.2.3). */
	bool qw = q && !q->ready && !(d->status & STATUS_DRIVER_OK);
	switch (off) {
	case R_DEVICE_FEATURES_SEL:
		d->dev_features_sel = v;
		break;
	case R_DRIVER_FEATURES:
		if (d->drv_features_sel < 2 && !(d->status & STATUS_FEATURES_OK)) {
			unsigned shift = 32 * d->drv_features_sel;
			d->driver_features = (d->driver_features & ~(0xffffffffull << shift)) |
					     ((uint64_t)v << shift);
		}
		break;
	case R_DRIVER_FEATURES_SEL:
		d->drv_features_sel = v;
		break;
	case R_QUEUE_SEL:
		d->queue_sel = v;
		break;
	case R_QUEUE_NUM:
		if (qw)
			q->size = (uint16_t)(v <= d->ops->queue_size ? v : 0);
		break;
	case R_QUEUE_READY:
		if (!q)
			break;
		if (v == 1 && !q->ready) {
			if (vq_activate(q, &d->vm->mem) < 0)
				d->status |= STATUS_FAILED; /* bad ring: the driver sees FAILED */
		} else if (v == 0) {
			q->ready = false;
		}
		break;
	case R_QUEUE_DESC_LOW:
	case R_QUEUE_DESC_HIGH:
		if (qw)
			set_addr(&q->desc_gpa, v, off == R_QUEUE_DESC_HIGH);
		break;
	case R_QUEUE_DRIVER_LOW:
	case R_QUEUE_DRIVER_HIGH:
		if (qw)
			set_addr(&q->avail_gpa, v, off == R_QUEUE_DRIVER_HIGH);
		break;
	case R_QUEUE_DEVICE_LOW:
	case R_QUEUE_DEVICE_HIGH:
		if (qw)
			set_addr(&q->used_gpa, v, off == R_QUEUE_DEVICE_HIGH);
		break;
	case R_INTERRUPT_ACK:
		d->isr &= ~v;
		break;
	case R_STATUS:
		if (v == 0) {
			device_reset(d);
			break;
		}
		if ((v & STATUS_FEATURES_OK) && !(d->status & STATUS_FEATURES_OK)) {
			/* Only what we offered, and VERSION_1 is mandatory: no legacy. */
			uint64_t f = d->driver_features;
			if ((f & ~offered(d)) || !(f & (1ull << VIRTIO_F_VERSION_1)))
				v &= ~(uint32_t)STATUS_FEATURES_OK;
		}
		bool activate = (v & STATUS_DRIVER_OK) && !(d->status & STATUS_DRIVER_OK);
		d->status = v;
		return activate;
	default:
		break;
	}
	return false;
}

void vdev_mmio(struct vdev *d, uint64_t off, uint8_t *data, unsigned size, bool is_write)
{
	if (off >= R_CONFIG) {
		uint64_t c = off - R_CONFIG;
		if (is_write)
			return; /* no device here has writable config */
		memset(data, 0, size);
		if (d->ops->config_read && c < d->ops->config_size &&
		    size <= d->ops->config_size - c) {
			pthread_mutex_lock(&d->lock);
			d->ops->config_read(d, (uint32_t)c, data, size);
			pthread_mutex_unlock(&d->lock);
		}
		return;
	}
	/* Registers are 32-bit and aligned; anything else is ignored (reads as 0). */
	if (size != 4 || (off & 3)) {
		if (!is_write)
			memset(data, 0, size);
		return;
	}
	if (!is_write) {
		pthread_mutex_lock(&d->lock);
		uint32_t v = reg_read(d, off);
		pthread_mutex_unlock(&d->lock);
		memcpy(data, &v, 4);
		return;
	}
	uint32_t v;
	memcpy(&v, data, 4);
	if (off == R_QUEUE_NOTIFY) {
		/* Normally caught by the ioeventfd; if it reaches us, do the same. */
		if (v < d->ops->nqueues && d->kickfd[v] >= 0) {
			uint64_t one = 1;
			(void)!write(d->kickfd[v], &one, sizeof(one));
		}
		return;
	}
	pthread_mutex_lock(&d->lock);
	bool activate = reg_write(d, off, v);
	pthread_mutex_unlock(&d->lock);
	if (activate && d->ops->activate)
		d->ops->activate(d);
}

void vdev_free(struct vdev *d)
{
	if (!d)
		return;
	for (unsigned q = 0; q < VDEV_QUEUES_MAX; q++)
		if (d->kickfd[q] >= 0)
			close(d->kickfd[q]);
	if (d->irqfd >= 0)
		close(d->irqfd);
	if (d->ops->free)
		d->ops->free(d);
}
