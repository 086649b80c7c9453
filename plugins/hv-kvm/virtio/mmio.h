/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The virtio-mmio transport (virtio 1.x, section 4.2, version 2 registers).
 * The transport owns a device's lifecycle — feature negotiation, queue setup,
 * status, reset — and its notifications: the guest's queue kicks arrive on
 * ioeventfds (no exit to the monitor), and interrupts go out on an irqfd.
 * A device is an ops table; it only sees ready queues.
 */
#ifndef MSB_HV_MMIO_H
#define MSB_HV_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <msb/msb-error.h>

#include "queue.h"

struct vm;
struct vdev;

#define VDEV_QUEUES_MAX	   4
#define VIRTIO_F_VERSION_1 32

struct vdev_ops {
	const char *name;
	uint32_t device_id;
	unsigned nqueues;
	uint16_t queue_size;
	/* Device feature bits (VIRTIO_F_VERSION_1 is added by the transport). */
	uint64_t features;
	/* Read len bytes of config space at offset off (bounds already checked). */
	void (*config_read)(struct vdev *d, uint32_t off, uint8_t *data, unsigned len);
	uint32_t config_size;
	/* The guest kicked queue q (VMM thread). */
	void (*notify)(struct vdev *d, unsigned q);
	/* The driver set DRIVER_OK: queues are ready (VMM thread or vCPU thread). */
	void (*activate)(struct vdev *d);
	/* The driver reset the device. */
	void (*reset)(struct vdev *d);
	void (*free)(struct vdev *d);
};

struct vdev {
	const struct vdev_ops *ops;
	void *priv;
	struct vm *vm;
	uint64_t base;
	unsigned irq;
	int irqfd;
	int kickfd[VDEV_QUEUES_MAX];
	pthread_mutex_t lock; /* registers and queues */
	uint32_t status;
	uint32_t dev_features_sel, drv_features_sel, queue_sel;
	uint64_t driver_features;
	uint32_t isr;
	uint32_t config_generation;
	struct vq vqs[VDEV_QUEUES_MAX];
};

/* Initialise a device around its ops (before vm_add_vdev). */
void vdev_init(struct vdev *d, const struct vdev_ops *ops, void *priv);
/* Wire it to the VM: MMIO window, IRQ, ioeventfds, irqfd. */
int vdev_attach(struct vdev *d, struct vm *vm, uint64_t base, unsigned irq, struct msb_error *err);
void vdev_mmio(struct vdev *d, uint64_t off, uint8_t *data, unsigned size, bool is_write);
/*
 * Take the next chain of queue q under the device lock: 1 (got one), 0 (none),
 * or -EINVAL after a malformed chain, which also marks the device
 * NEEDS_RESET.  vdev_push returns a chain with `written` bytes.
 */
int vdev_pop(struct vdev *d, unsigned q, struct vq_elem *e);
/* vq_pending under the device lock: a chain of queue q is waiting (a hint). */
bool vdev_pending(struct vdev *d, unsigned q);
void vdev_push(struct vdev *d, unsigned q, uint16_t head, uint32_t written);
/* vq_set_notify under the device lock (a reset in between leaves the new rings alone). */
void vdev_set_notify(struct vdev *d, unsigned q, bool on);
/* Tell the driver that used buffers are ready (raises the interrupt). */
void vdev_signal_used(struct vdev *d);
/* Mark the device broken (a malformed chain): it stops until the driver resets it. */
void vdev_set_needs_reset(struct vdev *d);
void vdev_free(struct vdev *d);
/* The command-line declaration for the guest: "virtio_mmio.device=4K@0x...:IRQ". */
int vdev_cmdline(const struct vdev *d, char *buf, size_t len);

#endif
