/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk (virtio 1.x, 5.2) over a host file.  Each request is a 16-byte
 * header (readable), data, and a status byte (the last writable byte).  The
 * sector range is checked against the disk's size before any I/O, and a
 * read-only disk is opened O_RDONLY and refuses writes on the host, whatever
 * the guest negotiates.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_blk.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../virtio/mmio.h"
#include "../vm.h"
#include "devices.h"

#define BLK_QUEUE_SIZE 256
#define SECTOR	       512u

struct blk {
	struct vdev dev; /* first: the vdev is the blk */
	int fd;
	bool read_only;
	uint64_t sectors;
	char serial[VIRTIO_BLK_ID_BYTES];
};

struct blk_req_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

static int blk_io(struct blk *b, const struct vq_elem *e, uint32_t type, uint64_t sector,
		  uint32_t *written)
{
	/* Data: readable bytes after the header (OUT) or writable bytes before the status (IN). */
	uint64_t len = type == VIRTIO_BLK_T_IN ? e->write_bytes - 1 : e->read_bytes - 16;
	if (len % SECTOR)
		return VIRTIO_BLK_S_IOERR;
	if (sector > b->sectors || len / SECTOR > b->sectors - sector)
		return VIRTIO_BLK_S_IOERR; /* beyond the end of the disk */
	off_t pos = (off_t)(sector * SECTOR);
	if (type == VIRTIO_BLK_T_IN) {
		uint64_t left = len;
		for (unsigned i = 0; i < e->nwrite && left; i++) {
			size_t n = e->write[i].iov_len < left ? e->write[i].iov_len : left;
			size_t done = 0;
			while (done < n) {
				ssize_t r = pread(b->fd, (uint8_t *)e->write[i].iov_base + done,
						  n - done, pos);
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0)
					return VIRTIO_BLK_S_IOERR;
				if (r == 0) { /* a sparse tail past EOF reads as zeros */
					memset((uint8_t *)e->write[i].iov_base + done, 0, n - done);
					r = (ssize_t)(n - done);
				}
				done += (size_t)r;
				pos += r;
			}
			left -= n;
		}
		*written = (uint32_t)len;
		return VIRTIO_BLK_S_OK;
	}
	if (b->read_only)
		return VIRTIO_BLK_S_IOERR;
	uint64_t skip = 16, left = len;
	for (unsigned i = 0; i < e->nread && left; i++) {
		size_t l = e->read[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		const uint8_t *p = (const uint8_t *)e->read[i].iov_base + skip;
		size_t n = l - skip < left ? l - skip : left;
		skip = 0;
		size_t done = 0;
		while (done < n) {
			ssize_t r = pwrite(b->fd, p + done, n - done, pos);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return VIRTIO_BLK_S_IOERR;
			done += (size_t)r;
			pos += r;
		}
		left -= n;
	}
	return VIRTIO_BLK_S_OK;
}

static void blk_notify(struct vdev *d, unsigned qi)
{
	struct blk *b = (struct blk *)d;
	static __thread struct vq_elem e;
	bool any = false;
	while (vdev_pop(d, qi, &e) > 0) {
		uint32_t written = 0;
		uint8_t status = VIRTIO_BLK_S_IOERR;
		struct blk_req_hdr hdr;
		/* A request needs its header and a status byte; else it is malformed. */
		if (e.write_bytes < 1 || vq_read(&e, 0, &hdr, sizeof(hdr)) != sizeof(hdr)) {
			vdev_push(d, qi, e.head, 0);
			any = true;
			continue;
		}
		switch (hdr.type) {
		case VIRTIO_BLK_T_IN:
		case VIRTIO_BLK_T_OUT:
			status = (uint8_t)blk_io(b, &e, hdr.type, hdr.sector, &written);
			break;
		case VIRTIO_BLK_T_FLUSH:
			status = b->read_only || fdatasync(b->fd) == 0 ? VIRTIO_BLK_S_OK
								       : VIRTIO_BLK_S_IOERR;
			break;
		case VIRTIO_BLK_T_GET_ID:
			written = (uint32_t)vq_write(&e, 0, b->serial,
						     e.write_bytes - 1 < sizeof(b->serial)
							     ? e.write_bytes - 1
							     : sizeof(b->serial));
			status = VIRTIO_BLK_S_OK;
			break;
		default:
			status = VIRTIO_BLK_S_UNSUPP;
			break;
		}
		vq_write(&e, e.write_bytes - 1, &status, 1);
		vdev_push(d, qi, e.head, written + 1);
		any = true;
	}
	if (any)
		vdev_signal_used(d);
}

static void blk_config_read(struct vdev *d, uint32_t off, uint8_t *data, unsigned len)
{
	struct blk *b = (struct blk *)d;
	struct virtio_blk_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.capacity = b->sectors;
	cfg.seg_max = BLK_QUEUE_SIZE - 2;
	cfg.blk_size = SECTOR;
	memcpy(data, (uint8_t *)&cfg + off, len);
}

static void blk_free(struct vdev *d)
{
	struct blk *b = (struct blk *)d;
	close(b->fd);
	free(b);
}

static const struct vdev_ops blk_ops_rw = {
	.name = "virtio-blk",
	.device_id = 2,
	.nqueues = 1,
	.queue_size = BLK_QUEUE_SIZE,
	.features = (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
		    (1ull << VIRTIO_BLK_F_BLK_SIZE),
	.config_read = blk_config_read,
	.config_size = sizeof(struct virtio_blk_config),
	.notify = blk_notify,
	.free = blk_free,
};

static const struct vdev_ops blk_ops_ro = {
	.name = "virtio-blk",
	.device_id = 2,
	.nqueues = 1,
	.queue_size = BLK_QUEUE_SIZE,
	.features = (1ull << VIRTIO_BLK_F_RO) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
		    (1ull << VIRTIO_BLK_F_BLK_SIZE),
	.config_read = blk_config_read,
	.config_size = sizeof(struct virtio_blk_config),
	.notify = blk_notify,
	.free = blk_free,
};

int blk_new(struct vm *vm, const char *path, bool read_only, const char *serial, struct vdev **out,
	    struct msb_error *err)
{
	const struct msb_host *h = vm->host;
	int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return h->error_set(h, err, -errno, "disk '%s': %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return h->error_set(h, err, -EINVAL, "disk '%s' is not a regular file", path);
	}
	struct blk *b = calloc(1, sizeof(*b));
	if (!b) {
		close(fd);
		return h->error_set(h, err, -ENOMEM, "out of memory");
	}
	b->fd = fd;
	b->read_only = read_only;
	b->sectors = (uint64_t)st.st_size / SECTOR;
	/* The ID is a fixed 20-byte field, NUL-padded, not necessarily terminated. */
	if (serial)
		memcpy(b->serial, serial, strnlen(serial, sizeof(b->serial)));
	vdev_init(&b->dev, read_only ? &blk_ops_ro : &blk_ops_rw, b);
	*out = &b->dev;
	return 0;
}
