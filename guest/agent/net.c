/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest's network, as the host's network module chose it: the kernel
 * command line carries `msb.net=ADDR4/P,GW4[,ADDR6/P,GW6]`, `msb.dns=ADDR`
 * and `msb.mtu=N` (docs/network.md).  The first virtio-net interface (eth0)
 * gets the addresses, the MTU and default routes through the gateways; the
 * resolver and the gateway's name (host.msb.internal) go into /etc.  No
 * msb.net: no network device was given, and nothing is done.
 *
 * Plain rtnetlink, one request at a time, each acknowledged: the agent is a
 * static binary without libnl.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

#define NET_IFNAME "eth0"

/* Where resolv.conf and hosts go: /etc, or a test's directory. */
static const char *etc_dir = "/etc";

void msb_guest_net_set_etc(const char *dir)
{
	etc_dir = dir;
}

/* "a.b.c.d/p" or "x::y/p" into family, bytes and prefix; 0 or -EINVAL. */
static int parse_cidr(const char *text, int *family, uint8_t addr[16], unsigned *prefix)
{
	char buf[64];
	if (strlen(text) >= sizeof(buf))
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", text);
	char *slash = strchr(buf, '/');
	unsigned max = strchr(buf, ':') ? 128 : 32;
	*prefix = max;
	if (slash) {
		*slash = '\0';
		char *end;
		unsigned long p = strtoul(slash + 1, &end, 10);
		if (end == slash + 1 || *end || p > max)
			return -EINVAL;
		*prefix = (unsigned)p;
	}
	*family = max == 128 ? AF_INET6 : AF_INET;
	return inet_pton(*family, buf, addr) == 1 ? 0 : -EINVAL;
}

/* Split "A,B,C,D" into at most four fields (the input is copied). */
static size_t split4(const char *text, char out[4][64])
{
	size_t n = 0;
	const char *p = text;
	while (n < 4) {
		size_t len = strcspn(p, ",");
		if (len >= 64)
			return 0;
		memcpy(out[n], p, len);
		out[n][len] = '\0';
		n++;
		if (!p[len])
			break;
		p += len + 1;
	}
	return n;
}

int msb_guest_net_parse(const char *net, const char *dns, const char *mtu,
			struct msb_guest_net *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	if (!net || !*net)
		return 0;
	char f[4][64];
	size_t n = split4(net, f);
	if (n != 2 && n != 4)
		return -EINVAL;
	int fam, fam2;
	uint8_t a[16], g[16];
	unsigned p;
	if (parse_cidr(f[0], &fam, a, &cfg->prefix4) < 0 || fam != AF_INET || cfg->prefix4 == 0 ||
	    cfg->prefix4 > 31 || parse_cidr(f[1], &fam2, g, &p) < 0 || fam2 != AF_INET || p != 32)
		return -EINVAL;
	memcpy(cfg->addr4, a, 4);
	memcpy(cfg->gw4, g, 4);
	if (n == 4) {
		if (parse_cidr(f[2], &fam, cfg->addr6, &cfg->prefix6) < 0 || fam != AF_INET6 ||
		    cfg->prefix6 == 0 || cfg->prefix6 > 127 ||
		    parse_cidr(f[3], &fam, cfg->gw6, &p) < 0 || fam != AF_INET6 || p != 128)
			return -EINVAL;
		cfg->has6 = 1;
	}
	if (dns && *dns) {
		if (parse_cidr(dns, &cfg->dns_family, a, &p) < 0 ||
		    p != (cfg->dns_family == AF_INET ? 32u : 128u))
			return -EINVAL;
		memcpy(cfg->dns, a, 16);
	}
	if (mtu && *mtu) {
		char *end;
		unsigned long m = strtoul(mtu, &end, 10);
		if (end == mtu || *end || m < 1280 || m > 65535)
			return -EINVAL;
		cfg->mtu = (unsigned)m;
	}
	cfg->enabled = 1;
	return 0;
}

/* ---- rtnetlink -------------------------------------------------------------- */

struct nlreq {
	struct nlmsghdr h;
	union {
		struct ifinfomsg ifi;
		struct ifaddrmsg ifa;
		struct rtmsg rt;
	} u;
	char attrs[256];
};

static void add_attr(struct nlreq *r, unsigned short type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
	a->rta_type = type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Send one request and read its acknowledgement: 0 or the kernel's -errno. */
static int nl_talk(int s, struct nlreq *r)
{
	static uint32_t seq;
	r->h.nlmsg_seq = ++seq;
	r->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	if (sendto(s, r, r->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	char buf[1024];
	for (;;) {
		ssize_t n = recv(s, buf, sizeof(buf), 0);
		if (n < 0)
			return -errno;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
		     h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
				continue;
			const struct nlmsgerr *e = NLMSG_DATA(h);
			return e->error;
		}
	}
}

static int link_set(int s, int ifindex, unsigned mtu)
{
	struct nlreq r;
	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	r.h.nlmsg_type = RTM_NEWLINK;
	r.u.ifi.ifi_family = AF_UNSPEC;
	r.u.ifi.ifi_index = ifindex;
	r.u.ifi.ifi_flags = IFF_UP;
	r.u.ifi.ifi_change = IFF_UP;
	if (mtu) {
		uint32_t m = mtu;
		add_attr(&r, IFLA_MTU, &m, sizeof(m));
	}
	return nl_talk(s, &r);
}

static int addr_add(int s, int ifindex, int family, const uint8_t *addr, unsigned prefix)
{
	struct nlreq r;
	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
	r.h.nlmsg_type = RTM_NEWADDR;
	r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	r.u.ifa.ifa_family = (unsigned char)family;
	r.u.ifa.ifa_prefixlen = (unsigned char)prefix;
	r.u.ifa.ifa_index = (unsigned)ifindex;
	/* The host gave this address to this sandbox alone: no duplicate detection to wait for. */
	r.u.ifa.ifa_flags = family == AF_INET6 ? IFA_F_NODAD : 0;
	size_t len = family == AF_INET ? 4 : 16;
	add_attr(&r, IFA_LOCAL, addr, len);
	add_attr(&r, IFA_ADDRESS, addr, len);
	return nl_talk(s, &r);
}

static int route_default(int s, int ifindex, int family, const uint8_t *gw)
{
	struct nlreq r;
	memset(&r, 0, sizeof(r));
	r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	r.h.nlmsg_type = RTM_NEWROUTE;
	r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
	r.u.rt.rtm_family = (unsigned char)family;
	r.u.rt.rtm_table = RT_TABLE_MAIN;
	r.u.rt.rtm_protocol = RTPROT_STATIC;
	r.u.rt.rtm_scope = RT_SCOPE_UNIVERSE;
	r.u.rt.rtm_type = RTN_UNICAST;
	uint32_t oif = (uint32_t)ifindex;
	add_attr(&r, RTA_GATEWAY, gw, family == AF_INET ? 4 : 16);
	add_attr(&r, RTA_OIF, &oif, sizeof(oif));
	return nl_talk(s, &r);
}

/* Replace etc_dir/name (a file or a symlink the image made) with text, atomically. */
static int write_etc(const char *name, const char *text)
{
	char path[256], tmp[300];
	snprintf(path, sizeof(path), "%s/%s", etc_dir, name);
	snprintf(tmp, sizeof(tmp), "%s.msb-tmp", path);
	mkdir(etc_dir, 0755);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	size_t len = strlen(text);
	int r = write(fd, text, len) == (ssize_t)len ? 0 : -EIO;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

int msb_guest_net_setup(const struct msb_guest_net *cfg)
{
	if (!cfg->enabled)
		return 0;
	unsigned ifindex = if_nametoindex(NET_IFNAME);
	if (!ifindex) {
		msb_guest_log("network: no %s (is the virtio-net driver built in?)", NET_IFNAME);
		return -ENODEV;
	}
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0)
		return -errno;
	int r;
	const char *step = "link up";
	if ((r = link_set(s, (int)ifindex, cfg->mtu)) < 0)
		goto out;
	step = "IPv4 address";
	if ((r = addr_add(s, (int)ifindex, AF_INET, cfg->addr4, cfg->prefix4)) < 0)
		goto out;
	step = "IPv4 default route";
	if ((r = route_default(s, (int)ifindex, AF_INET, cfg->gw4)) < 0)
		goto out;
	if (cfg->has6) {
		step = "IPv6 address";
		if ((r = addr_add(s, (int)ifindex, AF_INET6, cfg->addr6, cfg->prefix6)) < 0)
			goto out;
		step = "IPv6 default route";
		if ((r = route_default(s, (int)ifindex, AF_INET6, cfg->gw6)) < 0)
			goto out;
	}
out:
	close(s);
	if (r < 0) {
		msb_guest_log("network: %s: %s", step, strerror(-r));
		return r;
	}
	char a[INET6_ADDRSTRLEN], text[512];
	if (cfg->dns_family) {
		inet_ntop(cfg->dns_family, cfg->dns, a, sizeof(a));
		snprintf(text, sizeof(text),
			 "# written by msb: the sandbox's DNS interceptor\nnameserver %s\n", a);
		if ((r = write_etc("resolv.conf", text)) < 0)
			msb_guest_log("network: /etc/resolv.conf: %s", strerror(-r));
	}
	/* The gateway is the host, by name too. */
	char g4[INET_ADDRSTRLEN], g6[INET6_ADDRSTRLEN] = "";
	inet_ntop(AF_INET, cfg->gw4, g4, sizeof(g4));
	if (cfg->has6)
		inet_ntop(AF_INET6, cfg->gw6, g6, sizeof(g6));
	char host[16384] = "";
	char hosts[256];
	snprintf(hosts, sizeof(hosts), "%s/hosts", etc_dir);
	int fd = open(hosts, O_RDONLY | O_CLOEXEC);
	size_t have = 0;
	if (fd >= 0) {
		ssize_t n = read(fd, host, sizeof(host) - 1);
		close(fd);
		have = n > 0 ? (size_t)n : 0;
		host[have] = '\0';
	}
	if (!have)
		have = (size_t)snprintf(host, sizeof(host),
					"127.0.0.1\tlocalhost\n::1\tlocalhost\n");
	if (have && host[have - 1] != '\n' && have + 1 < sizeof(host))
		host[have++] = '\n', host[have] = '\0';
	if (!strstr(host, "host.msb.internal") && have + 256 < sizeof(host)) {
		snprintf(host + have, sizeof(host) - have, "%s\thost.msb.internal\n", g4);
		have = strlen(host);
		if (g6[0])
			snprintf(host + have, sizeof(host) - have, "%s\thost.msb.internal\n", g6);
		if ((r = write_etc("hosts", host)) < 0)
			msb_guest_log("network: /etc/hosts: %s", strerror(-r));
	}
	return 0;
}
