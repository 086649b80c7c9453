/* SPDX-License-Identifier: Apache-2.0 */
/* The virtio devices hv-kvm offers, one file each. */
#ifndef MSB_HV_DEVICES_H
#define MSB_HV_DEVICES_H

#include <stdbool.h>

#include <msb/msb-error.h>

struct vdev;
struct vm;

/* virtio-blk over a file; read_only disks refuse writes on the host. */
int blk_new(struct vm *vm, const char *path, bool read_only, const char *serial, struct vdev **out,
	    struct msb_error *err);
/* virtio-rng from getrandom(). */
int rng_new(struct vm *vm, struct vdev **out, struct msb_error *err);
/*
 * virtio-console with one port, bridged to a stream socket: *host_fd is the
 * host's end (owned by the caller).
 */
int console_new(struct vm *vm, int *host_fd, struct vdev **out, struct msb_error *err);

#endif
