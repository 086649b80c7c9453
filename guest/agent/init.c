/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PID-1 setup, in order:
 *   1. devtmpfs on /dev, then stdio (before any other fd: a log or the
 *      channel must never land on fd 0-2, where children's output goes);
 *   2. proc, sysfs, devpts, tmpfs on /run and /dev/shm, cgroup2;
 *   3. the kernel command line (msb.root, msb.upper, msb.hostname,
 *      msb.channel);
 *   4. with msb.root: erofs at /.msb/lower (read-only), the writable ext4
 *      at /.msb/upper (a tmpfs without msb.upper), overlayfs at /.msb/root,
 *      then /proc /sys /dev /run moved into it and the root switched the way
 *      busybox's switch_root does (MS_MOVE onto /, chroot);
 *   5. hostname, loopback up;
 *   6. with msb.net: the network (net.c).
 *
 * After the switch the initramfs (and the mounts under /.msb in it) is shadowed by
 * the new root: the workload cannot reach the lower and upper mounts by
 * path.  The agent keeps an O_PATH fd of the upper, to remount it read-only
 * at shutdown.  (A root workload could still mount the disks itself: the
 * guest is not a trust boundary, the host is.)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define NEWROOT	       "/.msb/root"
#define CMDLINE_MAX    4096
#define DEVICE_WAIT_MS 5000

/* The upper's root, kept across the root switch for the read-only remount. */
static int upper_fd = -1;
static int switched;

static int mount_one(const char *src, const char *target, const char *type, unsigned long flags,
		     const char *data, int optional)
{
	mkdir(target, 0755);
	if (mount(src, target, type, flags, data) == 0)
		return 0;
	int e = errno;
	if (e == EBUSY && strcmp(type, "devtmpfs") == 0)
		return 0; /* CONFIG_DEVTMPFS_MOUNT got there first */
	if (!optional)
		msb_guest_log("mount %s on %s: %s", type, target, strerror(e));
	return -e;
}

/* fds 0-2 open on the console (or /dev/null), whatever the kernel gave us. */
static void stdio_setup(void)
{
	int fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd < 0)
		fd = open("/dev/null", O_RDWR);
	if (fd < 0)
		return;
	for (int i = 0; i < 3; i++)
		if (fcntl(i, F_GETFD) < 0)
			dup2(fd, i);
	if (fd > 2)
		close(fd);
}

/* ---- the kernel command line ---------------------------------------------- */

/* A device path: /dev/..., no "..", a conservative alphabet. */
static int valid_device(const char *v)
{
	if (strncmp(v, "/dev/", 5) != 0 || strstr(v, "..") || strlen(v) >= MSB_GUEST_DEV_MAX)
		return 0;
	for (const char *p = v; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("/_.-:", *p))
			return 0;
	return 1;
}

/* RFC 1123 labels: letters, digits, '-' and '.', at most 64 bytes. */
static int valid_hostname(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > MSB_GUEST_HOSTNAME_MAX || v[0] == '-' || v[0] == '.')
		return 0;
	for (const char *p = v; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
			return 0;
	return 1;
}

void msb_guest_cmdline_parse(const char *cmdline, struct msb_guest_boot *b)
{
	char tok[CMDLINE_MAX];
	memset(b, 0, sizeof(*b));
	snprintf(b->channel, sizeof(b->channel), "/dev/hvc0");
	for (const char *p = cmdline; *p;) {
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		size_t n = strcspn(p, " \t\n");
		if (n == 0)
			break;
		if (n < sizeof(tok)) {
			memcpy(tok, p, n);
			tok[n] = '\0';
			char *eq = strchr(tok, '=');
			const char *val = eq ? eq + 1 : "";
			if (eq)
				*eq = '\0';
			char *dst = NULL;
			size_t cap = 0;
			int ok = 0;
			if (strcmp(tok, "msb.root") == 0) {
				dst = b->root, cap = sizeof(b->root), ok = valid_device(val);
			} else if (strcmp(tok, "msb.upper") == 0) {
				dst = b->upper, cap = sizeof(b->upper), ok = valid_device(val);
			} else if (strcmp(tok, "msb.channel") == 0) {
				dst = b->channel, cap = sizeof(b->channel), ok = valid_device(val);
			} else if (strcmp(tok, "msb.net") == 0) {
				dst = b->net, cap = sizeof(b->net), ok = strlen(val) < cap;
			} else if (strcmp(tok, "msb.dns") == 0) {
				dst = b->dns, cap = sizeof(b->dns), ok = strlen(val) < cap;
			} else if (strcmp(tok, "msb.mtu") == 0) {
				dst = b->mtu, cap = sizeof(b->mtu), ok = strlen(val) < cap;
			} else if (strcmp(tok, "msb.hostname") == 0) {
				dst = b->hostname, cap = sizeof(b->hostname);
				ok = valid_hostname(val);
			}
			if (dst && ok)
				snprintf(dst, cap, "%s", val);
			else if (dst)
				msb_guest_log("ignoring bad %s=%.64s", tok, val);
		}
		p += n;
	}
}

static int read_cmdline(char *buf, size_t cap)
{
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, cap - 1);
	int e = errno;
	close(fd);
	if (n < 0)
		return -e;
	buf[n] = '\0';
	return 0;
}

/* Block devices may still be probing when init starts: wait a little. */
static int wait_device(const char *dev)
{
	struct stat st;
	for (int waited = 0; waited < DEVICE_WAIT_MS; waited += 10) {
		if (stat(dev, &st) == 0)
			return 0;
		usleep(10000);
	}
	msb_guest_log("device %s did not appear", dev);
	return -ENODEV;
}

/* ---- the root ----------------------------------------------------------------- */

static int setup_root(const struct msb_guest_boot *b)
{
	int r;
	mkdir("/.msb", 0700);
	if ((r = wait_device(b->root)) < 0)
		return r;
	r = mount_one(b->root, "/.msb/lower", "erofs", MS_RDONLY | MS_NODEV, NULL, 0);
	if (r < 0)
		return r;
	if (b->upper[0]) {
		if ((r = wait_device(b->upper)) < 0)
			return r;
		r = mount_one(b->upper, "/.msb/upper", "ext4", MS_NODEV | MS_NOATIME, NULL, 0);
	} else {
		/* No writable disk: writes live in memory and die with the VM. */
		r = mount_one("tmpfs", "/.msb/upper", "tmpfs", MS_NODEV, "mode=0755", 0);
	}
	if (r < 0)
		return r;
	upper_fd = open("/.msb/upper", O_PATH | O_DIRECTORY | O_CLOEXEC);
	mkdir("/.msb/upper/upper", 0755);
	mkdir("/.msb/upper/work", 0700);
	r = mount_one("overlay", NEWROOT, "overlay", 0,
		      "lowerdir=/.msb/lower,upperdir=/.msb/upper/upper,workdir=/.msb/upper/work",
		      0);
	if (r < 0)
		return r;

	/* Carry the API filesystems over (their sub-mounts move with them). */
	static const char *const moved[] = {"/proc", "/sys", "/dev", "/run"};
	for (size_t i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
		char target[64];
		snprintf(target, sizeof(target), NEWROOT "%s", moved[i]);
		mkdir(target, 0755);
		if (mount(moved[i], target, NULL, MS_MOVE, NULL) < 0) {
			r = -errno;
			msb_guest_log("moving %s: %s", moved[i], strerror(errno));
			return r;
		}
	}
	/* The initramfs is rootfs, which cannot be pivot_root'ed away:
	 * move the new root over it and chroot, as switch_root does. */
	if (chdir(NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
	    chdir("/") < 0) {
		r = -errno;
		msb_guest_log("switching root: %s", strerror(errno));
		return r;
	}
	switched = 1;
	return 0;
}

static void loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	/* Up is enough: the kernel adds 127.0.0.1/8 and ::1 itself. */
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			msb_guest_log("lo up: %s", strerror(errno));
	}
	close(s);
}

int msb_guest_init(struct msb_guest_boot *b)
{
	static char cmdline[CMDLINE_MAX];
	const unsigned long nosuid = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	int r;

	umask(022);
	mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0);
	stdio_setup();
	int kmsg = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
	if (kmsg >= 0)
		msb_guest_log_set(kmsg, 1);

	if (mount_one("proc", "/proc", "proc", nosuid, NULL, 0) < 0)
		return -ENODEV;
	mount_one("sysfs", "/sys", "sysfs", nosuid, NULL, 0);
	mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		  "ptmxmode=0666,gid=5,mode=620", 0);
	mount_one("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 0);
	mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0);
	mount_one("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, NULL, 1);
	/* What programs expect of /dev beyond the device nodes. */
	static const char *const links[][2] = {{"/proc/self/fd", "/dev/fd"},
					       {"/proc/self/fd/0", "/dev/stdin"},
					       {"/proc/self/fd/1", "/dev/stdout"},
					       {"/proc/self/fd/2", "/dev/stderr"}};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
			msb_guest_log("symlink %s: %s", links[i][1], strerror(errno));

	r = read_cmdline(cmdline, sizeof(cmdline));
	if (r < 0)
		msb_guest_log("reading /proc/cmdline: %s", strerror(-r));
	msb_guest_cmdline_parse(r < 0 ? "" : cmdline, b);

	if (b->root[0] && (r = setup_root(b)) < 0)
		return r;

	const char *host = b->hostname[0] ? b->hostname : "msb";
	if (sethostname(host, strlen(host)) < 0)
		msb_guest_log("sethostname: %s", strerror(errno));
	loopback_up();
	/* After the root switch: /etc is the sandbox's. */
	struct msb_guest_net net;
	if (msb_guest_net_parse(b->net, b->dns, b->mtu, &net) < 0)
		msb_guest_log("ignoring bad msb.net=%.64s msb.dns=%.64s msb.mtu=%.8s", b->net,
			      b->dns, b->mtu);
	else if ((r = msb_guest_net_setup(&net)) < 0)
		return r; /* a sandbox promised a network must not run without it */
	return 0;
}

void msb_guest_init_finish(void)
{
	sync();
	if (!switched)
		return;
	/* The overlay first: while it is writable the upper is busy. */
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
		msb_guest_log("remount / read-only: %s", strerror(errno));
	if (upper_fd >= 0) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", upper_fd);
		if (mount(NULL, path, NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
			msb_guest_log("remount the upper read-only: %s", strerror(errno));
	}
	sync();
}

void msb_guest_power(uint32_t mode)
{
	sync();
	reboot(mode == MSB_AGENT_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF);
	/* PID 1 must never exit (the kernel would panic): wait to be stopped. */
	for (;;)
		pause();
}
