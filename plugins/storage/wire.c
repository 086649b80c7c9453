/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wire.c — reading requests and writing replies.
 *
 * A request's in-buffers are guest memory: the guest can rewrite them while
 * we read.  So the header and the argument block are copied once, here, into
 * a private buffer, and every decision is taken on that copy (no double
 * fetch).  Only WRITE's payload is read in place, by pwritev, where a change
 * under us changes the data written and nothing else.  Segmentation is
 * arbitrary: any field may straddle two iovecs.
 */
#include <errno.h>
#include <string.h>

#include "fs.h"

size_t fsrv_iov_total(const struct iovec *iov, unsigned n)
{
	size_t t = 0;
	for (unsigned i = 0; i < n; i++) {
		if (iov[i].iov_len > SIZE_MAX - t)
			return SIZE_MAX;
		t += iov[i].iov_len;
	}
	return t;
}

size_t fsrv_iov_read(const struct iovec *iov, unsigned n, size_t off, void *dst, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		size_t l = iov[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		size_t c = l - off < len - done ? l - off : len - done;
		memcpy((char *)dst + done, (const char *)iov[i].iov_base + off, c);
		done += c;
		off = 0;
	}
	return done;
}

size_t fsrv_iov_write(const struct iovec *iov, unsigned n, size_t off, const void *src, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		size_t l = iov[i].iov_len;
		if (off >= l) {
			off -= l;
			continue;
		}
		size_t c = l - off < len - done ? l - off : len - done;
		memcpy((char *)iov[i].iov_base + off, (const char *)src + done, c);
		done += c;
		off = 0;
	}
	return done;
}

unsigned fsrv_iov_slice(const struct iovec *iov, unsigned n, size_t *off, size_t len,
			struct iovec *dst, unsigned max)
{
	unsigned k = 0;
	size_t o = *off, taken = 0;
	for (unsigned i = 0; i < n && k < max && taken < len; i++) {
		size_t l = iov[i].iov_len;
		if (o >= l) {
			o -= l;
			continue;
		}
		size_t c = l - o < len - taken ? l - o : len - taken;
		dst[k].iov_base = (char *)iov[i].iov_base + o;
		dst[k].iov_len = c;
		k++;
		taken += c;
		o = 0;
	}
	*off += taken;
	return k;
}

int fsrv_arg(const struct fsrv_req *r, size_t *pos, void *dst, size_t len)
{
	if (*pos > r->arglen || r->arglen - *pos < len)
		return -EINVAL;
	memcpy(dst, r->arg + *pos, len);
	*pos += len;
	return 0;
}

/*
 * A NUL-terminated string of at most `max` bytes (not counting the NUL) at
 * *pos.  The terminator must lie inside the argument block.
 */
int fsrv_arg_string(const struct fsrv_req *r, size_t *pos, size_t max, const char **s)
{
	if (*pos >= r->arglen)
		return -EINVAL;
	size_t avail = r->arglen - *pos;
	const char *p = (const char *)r->arg + *pos;
	const char *nul = memchr(p, 0, avail < max + 1 ? avail : max + 1);
	if (!nul)
		return avail > max ? -ENAMETOOLONG : -EINVAL;
	*s = p;
	*pos += (size_t)(nul - p) + 1;
	return 0;
}

/*
 * One path component from the guest.  This is what keeps every resolution
 * a single step from a directory fd: no '/', never "." or "..", never empty,
 * at most NAME_MAX bytes.  openat2(RESOLVE_IN_ROOT) would contain a bad name
 * anyway; the fallback relies on this check alone.
 */
int fsrv_arg_name(const struct fsrv_req *r, size_t *pos, const char **name)
{
	const char *s;
	int rc = fsrv_arg_string(r, pos, FSRV_NAME_MAX, &s);
	if (rc < 0)
		return rc;
	size_t n = strlen(s);
	if (n == 0 || memchr(s, '/', n) || (s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.'))))
		return -EINVAL;
	*name = s;
	return 0;
}

int fsrv_reply2(struct fsrv_req *r, const void *a, size_t alen, const void *b, size_t blen)
{
	struct fuse_out_header oh;
	size_t total = sizeof(oh) + alen + blen;
	if (total > r->out_cap)
		return fsrv_reply_err(r, -EOVERFLOW);
	oh.len = (uint32_t)total;
	oh.error = 0;
	oh.unique = r->h.unique;
	fsrv_iov_write(r->out, r->out_count, 0, &oh, sizeof(oh));
	if (alen)
		fsrv_iov_write(r->out, r->out_count, sizeof(oh), a, alen);
	if (blen)
		fsrv_iov_write(r->out, r->out_count, sizeof(oh) + alen, b, blen);
	return (int)total;
}

int fsrv_reply(struct fsrv_req *r, const void *data, size_t len)
{
	return fsrv_reply2(r, data, len, NULL, 0);
}

int fsrv_reply_err(struct fsrv_req *r, int negerr)
{
	struct fuse_out_header oh = {
		.len = sizeof(oh),
		.error = negerr,
		.unique = r->h.unique,
	};
	/* The caller checked out_cap >= sizeof(oh) before parsing anything. */
	fsrv_iov_write(r->out, r->out_count, 0, &oh, sizeof(oh));
	return sizeof(oh);
}
