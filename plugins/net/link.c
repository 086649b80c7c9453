/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Links, addresses and routes over rtnetlink, with libnl-route.  Every
 * function works in the namespace of the calling thread (the socket's).
 * Results are 0 or a negative errno.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>

#include "net.h"

/* libnl's error numbers, as errno values. */
static int nl_errno(int e)
{
	switch (-e) {
	case NLE_EXIST:
		return -EEXIST;
	case NLE_OBJ_NOTFOUND:
	case NLE_NODEV:
		return -ENODEV;
	case NLE_PERM:
		return -EPERM;
	case NLE_NOMEM:
		return -ENOMEM;
	case NLE_INVAL:
		return -EINVAL;
	case NLE_BUSY:
		return -EBUSY;
	case NLE_NOADDR:
		return -EADDRNOTAVAIL;
	default:
		return e < 0 ? -EIO : 0;
	}
}

struct nl_sock *link_sock(void)
{
	struct nl_sock *s = nl_socket_alloc();
	if (!s)
		return NULL;
	if (nl_connect(s, NETLINK_ROUTE) < 0) {
		nl_socket_free(s);
		return NULL;
	}
	return s;
}

int link_index(struct nl_sock *s, const char *name)
{
	struct rtnl_link *l = NULL;
	int r = rtnl_link_get_kernel(s, 0, name, &l);
	if (r < 0)
		return nl_errno(r);
	int i = rtnl_link_get_ifindex(l);
	rtnl_link_put(l);
	return i;
}

int link_up(struct nl_sock *s, const char *name, unsigned mtu)
{
	struct rtnl_link *cur = NULL;
	int r = rtnl_link_get_kernel(s, 0, name, &cur);
	if (r < 0)
		return nl_errno(r);
	struct rtnl_link *ch = rtnl_link_alloc();
	if (!ch) {
		rtnl_link_put(cur);
		return -ENOMEM;
	}
	rtnl_link_set_flags(ch, IFF_UP);
	if (mtu)
		rtnl_link_set_mtu(ch, mtu);
	r = rtnl_link_change(s, cur, ch, 0);
	rtnl_link_put(ch);
	rtnl_link_put(cur);
	return nl_errno(r);
}

int link_del(struct nl_sock *s, const char *name)
{
	struct rtnl_link *l = rtnl_link_alloc();
	if (!l)
		return -ENOMEM;
	rtnl_link_set_name(l, name);
	int r = rtnl_link_delete(s, l);
	rtnl_link_put(l);
	return nl_errno(r);
}

int link_veth(struct nl_sock *s, const char *name, const char *peer, int peer_nsfd)
{
	struct rtnl_link *l = rtnl_link_veth_alloc();
	if (!l)
		return -ENOMEM;
	struct rtnl_link *p = rtnl_link_veth_get_peer(l);
	rtnl_link_set_name(l, name);
	rtnl_link_set_name(p, peer);
	rtnl_link_set_ns_fd(p, peer_nsfd);
	rtnl_link_put(p);
	int r = rtnl_link_add(s, l, NLM_F_CREATE | NLM_F_EXCL);
	rtnl_link_veth_release(l);
	return nl_errno(r);
}

int link_addr(struct nl_sock *s, const char *name, const char *cidr)
{
	int idx = link_index(s, name);
	if (idx < 0)
		return idx;
	struct nl_addr *local = NULL;
	int fam = strchr(cidr, ':') ? AF_INET6 : AF_INET;
	int r = nl_addr_parse(cidr, fam, &local);
	if (r < 0)
		return -EINVAL;
	struct rtnl_addr *a = rtnl_addr_alloc();
	if (!a) {
		nl_addr_put(local);
		return -ENOMEM;
	}
	rtnl_addr_set_ifindex(a, idx);
	rtnl_addr_set_family(a, fam);
	rtnl_addr_set_local(a, local);
	rtnl_addr_set_prefixlen(a, nl_addr_get_prefixlen(local));
	/* Ours alone: no duplicate address detection to wait for. */
	if (fam == AF_INET6)
		rtnl_addr_set_flags(a, IFA_F_NODAD);
	r = rtnl_addr_add(s, a, NLM_F_CREATE | NLM_F_REPLACE);
	rtnl_addr_put(a);
	nl_addr_put(local);
	return nl_errno(r);
}

int link_default_route(struct nl_sock *s, const char *gw)
{
	int fam = strchr(gw, ':') ? AF_INET6 : AF_INET;
	struct nl_addr *via = NULL, *dst = NULL;
	if (nl_addr_parse(gw, fam, &via) < 0)
		return -EINVAL;
	if (nl_addr_parse("default", fam, &dst) < 0) {
		nl_addr_put(via);
		return -EINVAL;
	}
	struct rtnl_route *rt = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	int r = -ENOMEM;
	if (rt && nh) {
		rtnl_route_set_family(rt, (uint8_t)fam);
		rtnl_route_set_dst(rt, dst);
		rtnl_route_set_table(rt, RT_TABLE_MAIN);
		rtnl_route_set_protocol(rt, RTPROT_STATIC);
		rtnl_route_nh_set_gateway(nh, via);
		rtnl_route_add_nexthop(rt, nh);
		nh = NULL; /* the route owns it */
		r = nl_errno(rtnl_route_add(s, rt, NLM_F_CREATE | NLM_F_REPLACE));
	}
	if (nh)
		rtnl_route_nh_free(nh);
	if (rt)
		rtnl_route_put(rt);
	nl_addr_put(via);
	nl_addr_put(dst);
	return r;
}

int link_tap(const char *name)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}
