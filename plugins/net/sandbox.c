/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One sandbox's network, built and torn down (the layout is in net.h).
 *
 * Slots: a sandbox takes the first free slot N, a file RUNDIR/slot-N that it
 * holds an exclusive flock on for as long as its network exists.  The lock
 * dies with its holder, however it dies, so a free lock with leftovers
 * (after a SIGKILL: the host's msbhN link, while the namespace is being
 * reclaimed, and the host table msb_hN) means "clean me": the next sandbox
 * to take the slot, and snet_reap, remove them.  Everything inside the
 * namespace goes with it: it is anonymous, held by the supervisor's fds.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <netlink/netlink.h>
#include <nftables/libnftables.h>

#include "dnsproxy.h"
#include "net.h"

#define POOL_DEFAULT "10.200.0.0/16"
/* fd6d:7362:6e00::/48 — "msbn" in a ULA: link 2N is the TAP's, 2N+1 the uplink's. */
#define ULA_FMT "fd6d:7362:6e00:%x::%u"

static int mkdir_p(const char *path)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(buf, 0755) < 0 && errno != EEXIST)
				return -errno;
			*p = '/';
		}
	return mkdir(buf, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

/* The pool: a.b.c.d/p with p 8..29; its base and how many slots (one /29 each) it has. */
static int pool_parse(const char *pool, uint32_t *base, unsigned *slots)
{
	char buf[32];
	if (strlen(pool) >= sizeof(buf))
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", pool);
	char *slash = strchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	char *end;
	long p = strtol(slash + 1, &end, 10);
	struct in_addr a;
	if (*end || end == slash + 1 || p < 8 || p > 29 || inet_pton(AF_INET, buf, &a) != 1)
		return -EINVAL;
	uint32_t mask = p ? ~0u << (32 - p) : 0;
	*base = ntohl(a.s_addr);
	if (*base & ~mask)
		return -EINVAL; /* host bits set */
	uint64_t n = (1ull << (32 - p)) / 8;
	*slots = n > NET_SLOTS_MAX ? NET_SLOTS_MAX : (unsigned)n;
	return 0;
}

static void v4(uint32_t a, char *out)
{
	struct in_addr x = {.s_addr = htonl(a)};
	inet_ntop(AF_INET, &x, out, INET6_ADDRSTRLEN);
}

static void addrs_for(unsigned slot, uint32_t base, struct net_addrs *a)
{
	uint32_t b = base + 8 * slot;
	v4(b + 1, a->gw4);
	v4(b + 2, a->guest4);
	v4(b + 5, a->hostend4);
	v4(b + 6, a->up4);
	snprintf(a->gw6, sizeof(a->gw6), ULA_FMT, 2 * slot, 1u);
	snprintf(a->guest6, sizeof(a->guest6), ULA_FMT, 2 * slot, 2u);
	snprintf(a->hostend6, sizeof(a->hostend6), ULA_FMT, 2 * slot + 1, 1u);
	snprintf(a->up6, sizeof(a->up6), ULA_FMT, 2 * slot + 1, 2u);
}

/* Host-side leftovers of slot n: its uplink link and its table.  1 if any was found. */
static int clean_slot(unsigned n)
{
	int found = 0;
	char dev[IFNAMSIZ], t[64], why[128];
	snprintf(dev, sizeof(dev), NET_HOST_FMT, n);
	struct nl_sock *s = link_sock();
	if (s) {
		if (link_del(s, dev) == 0)
			found = 1;
		nl_socket_free(s);
	}
	snprintf(t, sizeof(t), "delete table inet " NET_HTABLE "\n", n);
	if (nft_apply(t, why, sizeof(why)) == 0)
		found = 1;
	return found;
}

static int slot_take(const char *rundir, unsigned slots, unsigned *slot)
{
	int r = mkdir_p(rundir);
	if (r < 0)
		return r;
	for (unsigned n = 0; n < slots; n++) {
		char f[300];
		snprintf(f, sizeof(f), "%s/slot-%u", rundir, n);
		int fd = open(f, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return -errno;
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			clean_slot(n);
			*slot = n;
			return fd;
		}
		close(fd);
	}
	return -EADDRNOTAVAIL;
}

int snet_reap(const char *rundir)
{
	if (!rundir)
		rundir = NET_RUNDIR;
	int cleaned = 0;
	for (unsigned n = 0; n < NET_SLOTS_MAX; n++) {
		char f[300];
		snprintf(f, sizeof(f), "%s/slot-%u", rundir, n);
		int fd = open(f, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			if (errno == ENOENT)
				break; /* slots are taken lowest first: none beyond */
			continue;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			cleaned += clean_slot(n);
		close(fd);
	}
	return cleaned;
}

/* ---- inside the namespace ---------------------------------------------------- */

struct inside {
	struct snet *sn;
	int guest_nsfd;
	int step; /* 0: the guest link; 1: the uplink, routes and policy */
	char *ruleset;
	char *why;
	size_t wl;
};

static int inside_fn(void *arg)
{
	struct inside *in = arg;
	struct snet *sn = in->sn;
	struct nl_sock *s = link_sock();
	if (!s) {
		snprintf(in->why, in->wl, "netlink: no socket");
		return -ENOMEM;
	}
	int r;
	char cidr[128];
	const char *what = "";
	if (in->step == 0) {
		what = "the guest's link";
		if (in->guest_nsfd >= 0) {
			r = link_veth(s, NET_TAP_NAME, "eth0", in->guest_nsfd);
		} else {
			r = link_tap(NET_TAP_NAME);
			if (r >= 0)
				sn->tap_fd = r;
		}
		if (r < 0)
			goto out;
		what = "the gateway's addresses";
		snprintf(cidr, sizeof(cidr), "%s/%u", sn->a.gw4, sn->prefix4);
		if ((r = link_addr(s, NET_TAP_NAME, cidr)) < 0)
			goto out;
		snprintf(cidr, sizeof(cidr), "%s/64", sn->a.gw6);
		if ((r = link_addr(s, NET_TAP_NAME, cidr)) < 0)
			goto out;
		if ((r = link_up(s, NET_TAP_NAME, NET_MTU)) < 0)
			goto out;
		what = "forwarding";
		if ((r = ns_sysctl("net/ipv4/ip_forward", "1")) < 0 ||
		    (r = ns_sysctl("net/ipv6/conf/all/forwarding", "1")) < 0)
			goto out;
	} else {
		what = "the uplink";
		snprintf(cidr, sizeof(cidr), "%s/30", sn->a.up4);
		if ((r = link_addr(s, NET_UP_NAME, cidr)) < 0)
			goto out;
		snprintf(cidr, sizeof(cidr), "%s/64", sn->a.up6);
		if ((r = link_addr(s, NET_UP_NAME, cidr)) < 0 ||
		    (r = link_up(s, NET_UP_NAME, 0)) < 0)
			goto out;
		what = "the default routes";
		if ((r = link_default_route(s, sn->a.hostend4)) < 0 ||
		    (r = link_default_route(s, sn->a.hostend6)) < 0)
			goto out;
		what = "the policy";
		if ((r = nft_apply(in->ruleset, in->why, in->wl)) < 0) {
			nl_socket_free(s);
			return r;
		}
		/* A context that stays in here, for the DNS interceptor's pins. */
		sn->nft = nft_ctx_new(NFT_CTX_DEFAULT);
		if (!sn->nft) {
			r = -ENOMEM;
			goto out;
		}
		nft_ctx_buffer_error(sn->nft);
		nft_ctx_buffer_output(sn->nft);
	}
	r = 0;
out:
	nl_socket_free(s);
	if (r < 0)
		snprintf(in->why, in->wl, "network: %s: %s", what, strerror(-r));
	return r;
}

static int apply_fn(void *arg)
{
	struct inside *in = arg;
	return nft_apply(in->ruleset, in->why, in->wl);
}

/* ---- the DNS interceptor ------------------------------------------------------ */

/* One upstream "A", "A:PORT", "[A6]", "[A6]:PORT" or "A6" into ss; 0 or -EINVAL. */
static int upstream_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char buf[80];
	if (strlen(text) >= sizeof(buf))
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", text);
	char *host = buf, *port = NULL;
	if (buf[0] == '[') {
		char *close = strchr(buf, ']');
		if (!close || (close[1] && close[1] != ':'))
			return -EINVAL;
		*close = '\0';
		host = buf + 1;
		port = close[1] ? close + 2 : NULL;
	} else if (strchr(buf, ':') == strrchr(buf, ':') && strchr(buf, ':')) {
		port = strchr(buf, ':');
		*port++ = '\0';
	}
	long p = 53;
	if (port) {
		char *end;
		p = strtol(port, &end, 10);
		if (!*port || *end || p < 1 || p > 65535)
			return -EINVAL;
	}
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)p);
		*len = sizeof(*a4);
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)p);
		*len = sizeof(*a6);
	} else {
		return -EINVAL;
	}
	return 0;
}

/* The upstreams from text (comma or space separated), or the host's resolv.conf. */
static int upstreams(const char *text, struct dnsproxy_cfg *c, char *why, size_t wl)
{
	char buf[512] = "";
	if (text) {
		snprintf(buf, sizeof(buf), "%s", text);
	} else {
		FILE *f = fopen("/etc/resolv.conf", "r");
		char line[256];
		size_t len = 0;
		while (f && fgets(line, sizeof(line), f)) {
			char ns[80];
			if (sscanf(line, " nameserver %79s", ns) == 1 &&
			    len + strlen(ns) + 2 < sizeof(buf))
				len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s ", ns);
		}
		if (f)
			fclose(f);
	}
	char *save = NULL;
	for (char *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
		if (c->nupstream == DNSPROXY_UPSTREAMS_MAX)
			break;
		if (upstream_parse(t, &c->upstream[c->nupstream], &c->upstream_len[c->nupstream]) <
		    0) {
			if (!text)
				continue; /* resolv.conf: skip what we cannot use (a zone id, say)
					   */
			snprintf(why, wl,
				 "DNS upstream '%s' is not an address (expected A, A:PORT, [A6] or "
				 "[A6]:PORT)",
				 t);
			return -EINVAL;
		}
		c->nupstream++;
	}
	return 0;
}

/* The address bytes of an AF_INET or AF_INET6 sockaddr. */
static const uint8_t *sa_bytes(const struct sockaddr *a)
{
	return a->sa_family == AF_INET
		       ? (const uint8_t *)&((const struct sockaddr_in *)a)->sin_addr
		       : (const uint8_t *)&((const struct sockaddr_in6 *)a)->sin6_addr;
}

static int dns_query(void *ctx, const char *qname, uint16_t qtype)
{
	struct snet *sn = ctx;
	(void)qtype;
	pthread_mutex_lock(&sn->nft_mu);
	bool blocked = sn->pol && policy_name_blocked(sn->pol, qname);
	pthread_mutex_unlock(&sn->nft_mu);
	return blocked ? DNSPROXY_BLOCK : DNSPROXY_ALLOW;
}

static bool dns_address_allowed(void *ctx, const struct sockaddr *addr)
{
	struct snet *sn = ctx;
	pthread_mutex_lock(&sn->nft_mu);
	bool ok = sn->pol && policy_address_allowed(sn->pol, addr->sa_family, sa_bytes(addr));
	pthread_mutex_unlock(&sn->nft_mu);
	return ok;
}

static void dns_pin(void *ctx, const char *qname, const struct sockaddr *addr, uint32_t ttl)
{
	snet_pin(ctx, qname, addr->sa_family, sa_bytes(addr), ttl);
}

static const struct dnsproxy_policy dns_policy = {
	.query = dns_query,
	.address_allowed = dns_address_allowed,
	.pin = dns_pin,
};

/* A UDP and a listening TCP socket on [addr]:53. */
static int dns_pair(const struct sockaddr *a, socklen_t alen, int *udp, int *tcp)
{
	int one = 1;
	*udp = socket(a->sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	*tcp = socket(a->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*udp < 0 || *tcp < 0)
		return -errno;
	setsockopt(*tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (a->sa_family == AF_INET6) {
		setsockopt(*udp, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		setsockopt(*tcp, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	if (bind(*udp, a, alen) < 0 || bind(*tcp, a, alen) < 0 || listen(*tcp, 64) < 0)
		return -errno;
	return 0;
}

/* Inside the namespace: UDP and TCP port 53 on both of the gateway's addresses. */
static int dns_sockets_fn(void *arg)
{
	struct snet *sn = arg;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(53)};
	inet_pton(AF_INET, sn->a.gw4, &a.sin_addr);
	inet_pton(AF_INET6, sn->a.gw6, &a6.sin6_addr);
	int r = dns_pair((struct sockaddr *)&a, sizeof(a), &sn->dns_udp, &sn->dns_tcp);
	return r < 0 ? r
		     : dns_pair((struct sockaddr *)&a6, sizeof(a6), &sn->dns_udp6, &sn->dns_tcp6);
}

static int dns_start(struct snet *sn, const struct snet_opts *o, char *why, size_t wl)
{
	struct dnsproxy_cfg c = {
		.policy = &dns_policy,
		.ctx = sn,
		.thread_create = o->thread_create,
		.thread_ctx = o->thread_ctx,
	};
	int r = upstreams(o->dns, &c, why, wl);
	if (r < 0)
		return r;
	if ((r = ns_run(sn->nsfd, dns_sockets_fn, sn)) < 0) {
		snprintf(why, wl, "network: the DNS interceptor's sockets on %s and %s port 53: %s",
			 sn->a.gw4, sn->a.gw6, strerror(-r));
		return r;
	}
	c.udp_fd = sn->dns_udp;
	c.tcp_listen_fd = sn->dns_tcp;
	c.udp6_fd = sn->dns_udp6;
	c.tcp6_listen_fd = sn->dns_tcp6;
	/* Started here, in the host's namespace: the upstreams are the host's. */
	if ((r = dnsproxy_start(&c, &sn->dns)) < 0) {
		snprintf(why, wl, "network: the DNS interceptor: %s", strerror(-r));
		return r;
	}
	return 0;
}

/* The forwarder's question, under the policy's lock (snet_apply replaces it). */
static bool ingress_allowed(void *ctx, const struct sockaddr *peer, bool udp, unsigned port)
{
	struct snet *sn = ctx;
	uint8_t a[16];
	int family = peer->sa_family;
	if (family == AF_INET) {
		memcpy(a, &((const struct sockaddr_in *)peer)->sin_addr, 4);
	} else {
		const struct in6_addr *x = &((const struct sockaddr_in6 *)peer)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(x)) {
			family = AF_INET;
			memcpy(a, x->s6_addr + 12, 4);
		} else {
			memcpy(a, x->s6_addr, 16);
		}
	}
	pthread_mutex_lock(&sn->nft_mu);
	bool ok = sn->pol && policy_ingress_allowed(sn->pol, family, a, udp, port);
	pthread_mutex_unlock(&sn->nft_mu);
	return ok;
}

int snet_create(struct snet *sn, const struct snet_opts *o, char *why, size_t wl)
{
	memset(sn, 0, sizeof(*sn));
	sn->lock_fd = sn->nsfd = sn->tap_fd = sn->dns_udp = sn->dns_tcp = sn->dns_udp6 =
		sn->dns_tcp6 = -1;
	sn->prefix4 = 30;
	pthread_mutex_init(&sn->nft_mu, NULL);
	pthread_mutex_init(&sn->answers_mu, NULL);
	uint32_t base;
	unsigned slots;
	const char *pool = o->pool ? o->pool : POOL_DEFAULT;
	if (pool_parse(pool, &base, &slots) < 0) {
		snprintf(why, wl,
			 "network pool '%s' is not an IPv4 network a.b.c.d/8..29 (like %s)", pool,
			 POOL_DEFAULT);
		return -EINVAL;
	}
	int r = policy_parse(o->network_json, &sn->pol, why, wl);
	if (r < 0)
		return r;
	r = slot_take(o->rundir ? o->rundir : NET_RUNDIR, slots, &sn->slot);
	if (r < 0) {
		snprintf(why, wl, "network: %s",
			 r == -EADDRNOTAVAIL ? "every address slot of the pool is in use"
					     : strerror(-r));
		snet_destroy(sn);
		return r;
	}
	sn->lock_fd = r;
	addrs_for(sn->slot, base, &sn->a);
	uint8_t mac[6] = {0x02, 0x6d, 0x73, 0x62, (uint8_t)(sn->slot >> 8), (uint8_t)sn->slot};
	memcpy(sn->mac, mac, 6);
	snprintf(sn->hostdev, sizeof(sn->hostdev), NET_HOST_FMT, sn->slot);

	struct inside in = {.sn = sn, .guest_nsfd = o->guest_nsfd, .why = why, .wl = wl};
	if ((r = ns_new(&sn->nsfd)) < 0) {
		snprintf(why, wl, "network: a namespace: %s", strerror(-r));
		goto fail;
	}
	if ((r = ns_run(sn->nsfd, inside_fn, &in)) < 0)
		goto fail;

	/* The uplink: msbhN here, up0 in there. */
	struct nl_sock *s = link_sock();
	if (!s) {
		r = -ENOMEM;
		snprintf(why, wl, "netlink: no socket");
		goto fail;
	}
	char cidr[64];
	const char *what = "the uplink";
	if ((r = link_veth(s, sn->hostdev, NET_UP_NAME, sn->nsfd)) == 0) {
		sn->host_link = true;
		snprintf(cidr, sizeof(cidr), "%s/30", sn->a.hostend4);
		if ((r = link_addr(s, sn->hostdev, cidr)) == 0) {
			snprintf(cidr, sizeof(cidr), "%s/64", sn->a.hostend6);
			if ((r = link_addr(s, sn->hostdev, cidr)) == 0)
				r = link_up(s, sn->hostdev, 0);
		}
	}
	nl_socket_free(s);
	if (r == 0) {
		what = "host forwarding";
		if ((r = ns_sysctl("net/ipv4/ip_forward", "1")) == 0)
			r = ns_sysctl("net/ipv6/conf/all/forwarding", "1");
	}
	if (r < 0) {
		snprintf(why, wl, "network: %s (%s): %s", what, sn->hostdev, strerror(-r));
		goto fail;
	}
	char *host = policy_host_ruleset(sn->slot, &sn->a);
	if (!host) {
		r = -ENOMEM;
		snprintf(why, wl, "out of memory");
		goto fail;
	}
	sn->host_table = true;
	r = nft_apply(host, why, wl);
	free(host);
	if (r < 0)
		goto fail;

	in.step = 1;
	in.ruleset = policy_ruleset(sn->pol, &sn->a, sn->steered ? &sn->steer : NULL);
	if (!in.ruleset) {
		r = -ENOMEM;
		snprintf(why, wl, "out of memory");
		goto fail;
	}
	r = ns_run(sn->nsfd, inside_fn, &in);
	free(in.ruleset);
	if (r < 0 || (r = dns_start(sn, o, why, wl)) < 0)
		goto fail;
	/* Published ports last: from here on, the host can reach the guest. */
	struct pubfwd_cfg pc = {.network_json = o->network_json,
				.nsfd = sn->nsfd,
				.guest4 = sn->a.guest4,
				.thread_create = o->thread_create,
				.thread_ctx = o->thread_ctx,
				.allowed = ingress_allowed,
				.ctx = sn};
	if ((r = pubfwd_start(&pc, &sn->pub, why, wl)) < 0)
		goto fail;
	return 0;
fail:
	snet_destroy(sn);
	return r;
}

int snet_apply(struct snet *sn, const char *network_json, char *why, size_t wl)
{
	struct net_policy *p = NULL;
	int r = policy_parse(network_json, &p, why, wl);
	if (r < 0)
		return r;
	pthread_mutex_lock(&sn->nft_mu);
	struct inside in = {.sn = sn,
			    .why = why,
			    .wl = wl,
			    .ruleset = policy_ruleset(p, &sn->a, sn->steered ? &sn->steer : NULL)};
	if (!in.ruleset) {
		pthread_mutex_unlock(&sn->nft_mu);
		policy_free(p);
		return -ENOMEM;
	}
	r = ns_run(sn->nsfd, apply_fn, &in);
	if (r == 0) {
		policy_free(sn->pol);
		sn->pol = p;
		p = NULL;
	}
	pthread_mutex_unlock(&sn->nft_mu);
	free(in.ruleset);
	policy_free(p);
	return r;
}

struct pin_job {
	struct snet *sn;
	int family;
	char addr[INET6_ADDRSTRLEN];
	uint32_t ttl;
	int added;
};

static void pin_one(void *arg, unsigned k)
{
	struct pin_job *j = arg;
	char cmd[256];
	const char *v = j->family == AF_INET ? "4" : "6";
	/* Refresh: an existing entry keeps its old timeout under `add`. */
	snprintf(cmd, sizeof(cmd), "delete element inet " NET_TABLE " pin%u_%s { %s }", k, v,
		 j->addr);
	nft_run_cmd_from_buffer(j->sn->nft, cmd);
	snprintf(cmd, sizeof(cmd), "add element inet " NET_TABLE " pin%u_%s { %s timeout %us }", k,
		 v, j->addr, j->ttl);
	if (nft_run_cmd_from_buffer(j->sn->nft, cmd) == 0)
		j->added++;
}

int snet_steer(struct snet *sn, const struct net_steer *steer, char *why, size_t wl)
{
	if (!steer->nports || steer->nports > 8 || !steer->proxy_port) {
		snprintf(why, wl, "network: TLS steering: no ports or no proxy port");
		return -EINVAL;
	}
	for (unsigned i = 0; i < steer->nports; i++)
		if (!steer->ports[i] || steer->ports[i] == 53 || steer->ports[i] == 853) {
			snprintf(why, wl,
				 "network: TLS steering: port %u cannot be steered (expected "
				 "1-65535, not DNS's 53 or 853)",
				 steer->ports[i]);
			return -EINVAL;
		}
	pthread_mutex_lock(&sn->nft_mu);
	struct inside in = {
		.sn = sn, .why = why, .wl = wl, .ruleset = policy_ruleset(sn->pol, &sn->a, steer)};
	int r = in.ruleset ? ns_run(sn->nsfd, apply_fn, &in) : -ENOMEM;
	if (r == 0) {
		sn->steer = *steer;
		sn->steered = true;
	}
	pthread_mutex_unlock(&sn->nft_mu);
	free(in.ruleset);
	return r;
}

/* Slot i of the answer record: name, address, until when (CLOCK_MONOTONIC s). */
static uint64_t mono_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec;
}

static bool same_name(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/*
 * Remember that the guest was told name -> addr until `until`: one entry per
 * (name, address), refreshed in place; when full, the entry that expires
 * first makes room.
 */
static void answers_add(struct snet *sn, const char *name, int family, const uint8_t *addr,
			uint64_t until)
{
	size_t alen = family == AF_INET ? 4 : 16, victim = 0;
	if (strlen(name) >= sizeof(sn->answers[0].name))
		return;
	pthread_mutex_lock(&sn->answers_mu);
	for (size_t i = 0; i < NET_ANSWERS_MAX; i++) {
		struct net_answer *e = &sn->answers[i];
		if (e->until && e->family == family && !memcmp(e->addr, addr, alen) &&
		    same_name(e->name, name)) {
			victim = i;
			break;
		}
		if (e->until < sn->answers[victim].until)
			victim = i;
	}
	struct net_answer *e = &sn->answers[victim];
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->family = family;
	memcpy(e->addr, addr, alen);
	e->until = until;
	pthread_mutex_unlock(&sn->answers_mu);
}

int snet_pin_check(struct snet *sn, const char *name, int family, const uint8_t *addr)
{
	size_t alen = family == AF_INET ? 4 : 16;
	uint64_t now = mono_s();
	int found = 0;
	pthread_mutex_lock(&sn->answers_mu);
	for (size_t i = 0; i < NET_ANSWERS_MAX && !found; i++) {
		const struct net_answer *e = &sn->answers[i];
		found = e->until > now && e->family == family && !memcmp(e->addr, addr, alen) &&
			same_name(e->name, name);
	}
	pthread_mutex_unlock(&sn->answers_mu);
	return found;
}

int snet_pin(struct snet *sn, const char *name, int family, const uint8_t *addr, uint32_t ttl)
{
	struct pin_job j = {.sn = sn, .family = family};
	inet_ntop(family, addr, j.addr, sizeof(j.addr));
	/* At least a minute, at most a day: a guest may keep an answer a little past its TTL. */
	j.ttl = ttl < 60 ? 60 : ttl > 86400 ? 86400 : ttl;
	j.ttl += 30;
	answers_add(sn, name, family, addr, mono_s() + j.ttl);
	pthread_mutex_lock(&sn->nft_mu);
	if (sn->nft && sn->pol)
		policy_domain_rules(sn->pol, name, pin_one, &j);
	pthread_mutex_unlock(&sn->nft_mu);
	return j.added;
}

void snet_destroy(struct snet *sn)
{
	char why[256];
	/* The forwarders first: their threads use everything below. */
	pubfwd_stop(sn->pub);
	sn->pub = NULL;
	dnsproxy_stop(sn->dns);
	sn->dns = NULL;
	int *dfds[] = {&sn->dns_udp, &sn->dns_tcp, &sn->dns_udp6, &sn->dns_tcp6};
	for (size_t i = 0; i < sizeof(dfds) / sizeof(dfds[0]); i++) {
		if (*dfds[i] >= 0)
			close(*dfds[i]);
		*dfds[i] = -1;
	}
	if (sn->nft) {
		nft_ctx_free(sn->nft);
		sn->nft = NULL;
	}
	if (sn->host_table) {
		char t[64];
		snprintf(t, sizeof(t), "delete table inet " NET_HTABLE "\n", sn->slot);
		nft_apply(t, why, sizeof(why));
		sn->host_table = false;
	}
	if (sn->host_link) {
		/* Deleting one end of a veth deletes both. */
		struct nl_sock *s = link_sock();
		if (s) {
			link_del(s, sn->hostdev);
			nl_socket_free(s);
		}
		sn->host_link = false;
	}
	if (sn->tap_fd >= 0)
		close(sn->tap_fd);
	if (sn->nsfd >= 0)
		close(sn->nsfd);
	sn->tap_fd = sn->nsfd = -1;
	if (sn->lock_fd >= 0)
		close(sn->lock_fd); /* the slot is free again */
	sn->lock_fd = -1;
	policy_free(sn->pol);
	sn->pol = NULL;
}
