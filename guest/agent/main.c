/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-agent: /init of the sandbox's initramfs.
 *
 *   (PID 1, any args)          set the system up, serve msb.channel
 *   --serve-fd N [--root DIR]  test mode: serve the socket N, resolve users
 *                              against DIR/etc/{passwd,group}; no setup
 *   --version
 *
 * As PID 1 the kernel passes unknown command-line words as arguments, so
 * they are ignored there.  Anywhere else, no arguments is a usage error:
 * the PID-1 path mounts and switches roots, which must never happen on a
 * host by accident.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

static int log_fd = 2;
static int log_kmsg;

void msb_guest_log_set(int fd, int kmsg)
{
	log_fd = fd;
	log_kmsg = kmsg;
}

void msb_guest_log(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	/* One write per line: /dev/kmsg takes one record per write, "<4>" is
	 * its warning level. */
	int n = snprintf(line, sizeof(line), "%smsb-agent: ", log_kmsg ? "<4>" : "");
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = strlen(line);
	line[len++] = '\n';
	ssize_t w = write(log_fd, line, len);
	(void)w; /* nowhere to report a failing log */
}

static void usage(FILE *f)
{
	fprintf(f, "usage: msb-agent --serve-fd N [--root DIR]\n"
		   "       msb-agent --version\n"
		   "As PID 1 (the sandbox's /init) it takes no arguments.\n");
}

static int pid1_main(void)
{
	struct msb_guest_boot boot;
	int r = msb_guest_init(&boot);
	if (r < 0) {
		msb_guest_log("setup failed (%s): powering off", strerror(-r));
		msb_guest_power(MSB_AGENT_POWEROFF);
	}
	for (;;) {
		int fd = open(boot.channel, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
		if (fd < 0) {
			msb_guest_log("opening %s: %s", boot.channel, strerror(errno));
			sleep(1);
			continue;
		}
		struct msb_guest_serve_opts o = {
			.fd = fd, .channel = boot.channel, .root = "/", .pid1 = 1};
		r = msb_guest_serve(&o);
		if (r > 0)
			msb_guest_power((uint32_t)r);
		msb_guest_log("serving failed (%s), restarting", strerror(-r));
		close(fd);
		sleep(1);
	}
}

int main(int argc, char **argv)
{
	int serve_fd = -1;
	const char *root = "/";

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--version") == 0) {
			printf("msb-agent %s (protocol %d)\n", MSB_VERSION_STRING,
			       MSB_AGENT_PROTO_VERSION);
			return 0;
		} else if (strcmp(argv[i], "--serve-fd") == 0 && i + 1 < argc) {
			char *end;
			errno = 0;
			long v = strtol(argv[++i], &end, 10);
			if (errno || *end || v < 0 || v > 65535) {
				fprintf(stderr, "msb-agent: bad fd '%s'\n", argv[i]);
				return 2;
			}
			serve_fd = (int)v;
		} else if (strcmp(argv[i], "--root") == 0 && i + 1 < argc) {
			root = argv[++i];
		} else if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (getpid() != 1) {
			usage(stderr);
			return 2;
		}
	}

	if (serve_fd >= 0) {
		if (fcntl(serve_fd, F_GETFD) < 0) {
			fprintf(stderr, "msb-agent: fd %d: %s\n", serve_fd, strerror(errno));
			return 2;
		}
		struct msb_guest_serve_opts o = {.fd = serve_fd, .root = root};
		int r = msb_guest_serve(&o);
		return r > 0 || r == -EPIPE ? 0 : 1;
	}
	if (getpid() != 1) {
		usage(stderr);
		return 2;
	}
	return pid1_main();
}
