/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Network namespaces.  A namespace is entered per thread (setns on
 * CLONE_NEWNET changes only the caller), so every step inside a sandbox's
 * namespace runs on a short-lived thread of its own and the supervisor's
 * other threads never leave the host's.  Sockets keep the namespace they
 * were made in: a TAP fd or a listening socket made in there works from
 * any thread afterwards.
 *
 * The namespace is anonymous: nothing names it in /run/netns, so it lives
 * exactly as long as an fd to it (the supervisor's) or a socket in it does.
 * A supervisor killed with SIGKILL takes its namespace, the TAP, the veth
 * pair and the namespace's nft table with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

struct ns_job {
	int nsfd; /* -1: make a new namespace */
	int (*fn)(void *);
	void *arg;
	int result;
	int newfd;
};

static int lo_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	int r = 0;
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		r = -errno;
	else {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			r = -errno;
	}
	close(s);
	return r;
}

static void *ns_thread(void *p)
{
	struct ns_job *j = p;
	if (j->nsfd < 0) {
		if (unshare(CLONE_NEWNET) < 0) {
			j->result = -errno;
			return NULL;
		}
		j->newfd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (j->newfd < 0) {
			j->result = -errno;
			return NULL;
		}
		j->result = lo_up();
		return NULL;
	}
	if (setns(j->nsfd, CLONE_NEWNET) < 0) {
		j->result = -errno;
		return NULL;
	}
	j->result = j->fn(j->arg);
	return NULL;
}

static int ns_job_run(struct ns_job *j)
{
	pthread_t t;
	int e = pthread_create(&t, NULL, ns_thread, j);
	if (e)
		return -e;
	pthread_join(t, NULL);
	return j->result;
}

int ns_new(int *fd)
{
	struct ns_job j = {.nsfd = -1, .newfd = -1};
	int r = ns_job_run(&j);
	if (r < 0) {
		if (j.newfd >= 0)
			close(j.newfd);
		return r;
	}
	*fd = j.newfd;
	return 0;
}

int ns_run(int nsfd, int (*fn)(void *arg), void *arg)
{
	struct ns_job j = {.nsfd = nsfd, .fn = fn, .arg = arg, .newfd = -1};
	return ns_job_run(&j);
}

int ns_sysctl(const char *path, const char *value)
{
	char file[256];
	snprintf(file, sizeof(file), "/proc/sys/%s", path);
	int fd = open(file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = strlen(value);
	int r = write(fd, value, len) == (ssize_t)len ? 0 : -errno;
	close(fd);
	return r;
}
