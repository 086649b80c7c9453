/* SPDX-License-Identifier: Apache-2.0 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define LOOP_FDS_MAX 4096

struct watch {
	int fd;
	msb_fd_cb cb;
	void *arg;
};

struct msb_loop {
	int epfd;
	struct watch *watches; /* indexed by fd: bounded, no hashing needed */
	size_t nwatches;
};

int msb_loop_new(struct msb_loop **out)
{
	struct msb_loop *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		int e = -errno;
		free(l);
		return e;
	}
	*out = l;
	return 0;
}

void msb_loop_free(struct msb_loop *l)
{
	if (!l)
		return;
	close(l->epfd);
	free(l->watches);
	free(l);
}

static uint32_t to_epoll(uint32_t ev)
{
	return (ev & MSB_FD_READ ? EPOLLIN : 0u) | (ev & MSB_FD_WRITE ? EPOLLOUT : 0u);
}

int msb_loop_add(struct msb_loop *l, int fd, uint32_t events, msb_fd_cb cb, void *arg)
{
	if (fd < 0 || fd >= LOOP_FDS_MAX || !cb)
		return -EINVAL;
	if ((size_t)fd >= l->nwatches) {
		size_t n = (size_t)fd + 16 < LOOP_FDS_MAX ? (size_t)fd + 16 : LOOP_FDS_MAX;
		struct watch *w = realloc(l->watches, n * sizeof(*w));
		if (!w)
			return -ENOMEM;
		for (size_t i = l->nwatches; i < n; i++)
			w[i].fd = -1;
		l->watches = w;
		l->nwatches = n;
	}
	if (l->watches[fd].fd >= 0)
		return -EEXIST;
	struct epoll_event ev = {.events = to_epoll(events), .data.fd = fd};
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	l->watches[fd] = (struct watch){fd, cb, arg};
	return 0;
}

int msb_loop_mod(struct msb_loop *l, int fd, uint32_t events)
{
	if (fd < 0 || (size_t)fd >= l->nwatches || l->watches[fd].fd < 0)
		return -ENOENT;
	struct epoll_event ev = {.events = to_epoll(events), .data.fd = fd};
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

int msb_loop_del(struct msb_loop *l, int fd)
{
	if (fd < 0 || (size_t)fd >= l->nwatches || l->watches[fd].fd < 0)
		return -ENOENT;
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	l->watches[fd].fd = -1;
	return 0;
}

int msb_loop_run_once(struct msb_loop *l, int timeout_ms)
{
	struct epoll_event evs[64];
	int n = epoll_wait(l->epfd, evs, 64, timeout_ms);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		int fd = evs[i].data.fd;
		/* A callback may have removed a later fd of this batch. */
		if (fd < 0 || (size_t)fd >= l->nwatches || l->watches[fd].fd < 0)
			continue;
		uint32_t e = (evs[i].events & EPOLLIN ? MSB_FD_READ : 0u) |
			     (evs[i].events & EPOLLOUT ? MSB_FD_WRITE : 0u) |
			     (evs[i].events & (EPOLLHUP | EPOLLERR) ? MSB_FD_HUP : 0u);
		l->watches[fd].cb(fd, e, l->watches[fd].arg);
	}
	return n;
}
