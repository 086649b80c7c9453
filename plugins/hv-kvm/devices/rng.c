/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-rng (5.4): the guest's entropy comes from the host's getrandom(). */
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "../virtio/mmio.h"
#include "../vm.h"
#include "devices.h"

struct rng {
	struct vdev dev;
};

static void rng_notify(struct vdev *d, unsigned qi)
{
	static __thread struct vq_elem e;
	bool any = false;
	while (vdev_pop(d, qi, &e) > 0) {
		uint32_t written = 0;
		for (unsigned i = 0; i < e.nwrite; i++) {
			/* getrandom returns at most 32 MiB a call; buffers here are far smaller. */
			ssize_t n = getrandom(e.write[i].iov_base, e.write[i].iov_len, 0);
			if (n <= 0)
				break;
			written += (uint32_t)n;
			if ((size_t)n < e.write[i].iov_len)
				break;
		}
		vdev_push(d, qi, e.head, written);
		any = true;
	}
	if (any)
		vdev_signal_used(d);
}

static void rng_free(struct vdev *d)
{
	free((struct rng *)d);
}

static const struct vdev_ops rng_ops = {
	.name = "virtio-rng",
	.device_id = 4,
	.nqueues = 1,
	.queue_size = 64,
	.notify = rng_notify,
	.free = rng_free,
};

int rng_new(struct vm *vm, struct vdev **out, struct msb_error *err)
{
	struct rng *r = calloc(1, sizeof(*r));
	if (!r)
		return vm->host->error_set(vm->host, err, -ENOMEM, "out of memory");
	vdev_init(&r->dev, &rng_ops, r);
	*out = &r->dev;
	return 0;
}
