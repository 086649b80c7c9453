/* SPDX-License-Identifier: Apache-2.0 */
/* The virtio devices hv-kvm offers, one file each. */
#ifndef MSB_HV_DEVICES_H
#define MSB_HV_DEVICES_H

#include <stdbool.h>

#include <msb/msb-error.h>
#include <msb/msb-plugin.h>

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

/*
 * virtio-fs serving one share through the storage module's server (copied:
 * srv->ctx must stay valid until the device is freed).  Worker threads of
 * class MSB_THREAD_IO call srv->handle.
 */
int fs_new(struct vm *vm, const struct msb_fs_server *srv, struct vdev **out,
	   struct msb_error *err);

/*
 * virtio-net over the network module's TAP (att->tap_fd: IFF_TAP|IFF_NO_PI|
 * IFF_VNET_HDR).  The device keeps its own dup of the fd; the caller keeps
 * and closes att->tap_fd.  One worker thread of class MSB_THREAD_IO moves
 * the frames.
 */
int net_new(struct vm *vm, const struct msb_net_attach *att, struct vdev **out,
	    struct msb_error *err);

#endif
