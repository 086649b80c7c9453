/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The egress policy as nftables text (docs/network.md, "The ruleset").
 *
 * One `table inet msb` inside the sandbox's namespace holds everything:
 * address sets for the groups, a pin set per domain rule (filled by the DNS
 * interceptor, entries expiring with the answer's TTL), NAT (the gateway's
 * non-DNS ports to the host, masquerade out of the uplink), and the filter.
 * The guest's new connections — forwarded, or to the gateway itself — go
 * through chain `rules`: the spec's rules in order, first match wins, then
 * the default.  Replies (conntrack established/related) pass before it.
 * The whole table is deleted and recreated in one transaction, so a policy
 * change is atomic: no packet ever sees half a ruleset.
 *
 * Denied traffic is rejected (ICMP administratively prohibited, a TCP
 * connect fails at once) rather than silently dropped: a sandbox learns
 * quickly that a destination is closed to it, never waits on a timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <nftables/libnftables.h>

#include "net.h"

enum { T_ANY, T_DNS, T_GROUP, T_V4, T_V6, T_DOMAIN, T_SUFFIX };
enum { G_PUBLIC, G_PRIVATE, G_LOOPBACK, G_LINKLOCAL, G_META, G_MULTICAST, G_HOST };
enum { P_ANY, P_TCP, P_UDP, P_ICMP };

struct prule {
	bool allow;
	bool egress;  /* egress or any */
	bool ingress; /* ingress or any: checked for published ports (publish.c) */
	int target, group;
	char addr[INET6_ADDRSTRLEN];
	unsigned prefix;
	uint8_t bin[16];
	char name[256];
	int proto;
	unsigned port_lo, port_hi;
	unsigned block; /* see blocks_compute */
};

struct net_policy {
	bool default_allow;
	size_t n;
	struct prule *r;
};

static const char *const targets[] = {"any", "dns", "group", "ipv4", "ipv6", "domain", "suffix"};
static const char *const groups[] = {"public", "private",   "loopback", "link-local",
				     "meta",   "multicast", "host"};
static const char *const protos[] = {"any", "tcp", "udp", "icmp"};

static int lookup(const char *const *tab, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (!strcmp(tab[i], s))
			return (int)i;
	return -1;
}
#define LOOKUP(tab, s) lookup(tab, sizeof(tab) / sizeof(tab[0]), s)

static int parse_rule(json_t *j, struct prule *r, char *why, size_t wl, size_t idx)
{
	const char *action = json_string_value(json_object_get(j, "action"));
	const char *dir = json_string_value(json_object_get(j, "direction"));
	const char *proto = json_string_value(json_object_get(j, "proto"));
	json_t *t = json_object_get(j, "target");
	const char *kind = json_string_value(json_object_get(t, "kind"));
	memset(r, 0, sizeof(*r));
	if (!action || (strcmp(action, "allow") && strcmp(action, "deny")))
		goto bad;
	r->allow = !strcmp(action, "allow");
	r->egress = !dir || strcmp(dir, "ingress") != 0;
	r->ingress = dir && (!strcmp(dir, "ingress") || !strcmp(dir, "any"));
	if ((r->target = LOOKUP(targets, kind)) < 0 || (r->proto = LOOKUP(protos, proto)) < 0)
		goto bad;
	json_t *ports = json_object_get(j, "ports");
	if (json_is_array(ports)) {
		json_int_t lo = json_integer_value(json_array_get(ports, 0));
		json_int_t hi = json_integer_value(json_array_get(ports, 1));
		if (lo < 1 || hi < lo || hi > 65535 || (r->proto != P_TCP && r->proto != P_UDP))
			goto bad;
		r->port_lo = (unsigned)lo, r->port_hi = (unsigned)hi;
	}
	const char *s;
	switch (r->target) {
	case T_GROUP:
		if ((r->group = LOOKUP(groups, json_string_value(json_object_get(t, "group")))) < 0)
			goto bad;
		break;
	case T_V4:
	case T_V6: {
		s = json_string_value(json_object_get(t, "address"));
		json_int_t p = json_integer_value(json_object_get(t, "prefix"));
		int fam = r->target == T_V4 ? AF_INET : AF_INET6;
		if (!s || strlen(s) >= sizeof(r->addr) || inet_pton(fam, s, r->bin) != 1 || p < 0 ||
		    p > (fam == AF_INET ? 32 : 128))
			goto bad;
		snprintf(r->addr, sizeof(r->addr), "%s", s);
		r->prefix = (unsigned)p;
		break;
	}
	case T_DOMAIN:
	case T_SUFFIX:
		s = json_string_value(json_object_get(t, "name"));
		if (!s || !*s || strlen(s) >= sizeof(r->name))
			goto bad;
		for (const char *c = s; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
			      *c == '.'))
				goto bad;
		snprintf(r->name, sizeof(r->name), "%s", s);
		break;
	default:
		break;
	}
	return 0;
bad:
	snprintf(why, wl, "network rule %zu is malformed (expected the spec's rule object)",
		 idx + 1);
	return -EINVAL;
}

/*
 * Rules that can share one set lookup: consecutive egress rules with the
 * same action, protocol and ports whose targets are both addresses, or both
 * names.  Within such a run order cannot matter (they all say the same
 * thing), so the run becomes one nftables rule over one set, and 1000
 * address rules cost one lookup, not 1000 comparisons.  A name run shares
 * one pin set.
 */
static int target_class(const struct prule *r)
{
	if (r->target == T_V4 || r->target == T_V6)
		return 1;
	if (r->target == T_DOMAIN || r->target == T_SUFFIX)
		return 2;
	return 0;
}

static void blocks_compute(struct net_policy *p)
{
	unsigned id = 0;
	for (size_t i = 0; i < p->n; i++) {
		const struct prule *a = i ? &p->r[i - 1] : NULL, *b = &p->r[i];
		bool same = a && a->egress && b->egress && target_class(a) &&
			    target_class(a) == target_class(b) && a->allow == b->allow &&
			    a->proto == b->proto && a->port_lo == b->port_lo &&
			    a->port_hi == b->port_hi;
		if (i && !same)
			id++;
		p->r[i].block = id;
	}
}

int policy_parse(const char *network_json, struct net_policy **out, char *why, size_t wl)
{
	json_error_t je;
	json_t *root = json_loads(network_json, 0, &je);
	if (!root) {
		snprintf(why, wl, "network policy: bad JSON: %s", je.text);
		return -EINVAL;
	}
	/* The whole spec or just its "network" object. */
	json_t *net = json_object_get(root, "network");
	if (!net)
		net = root;
	const char *def = json_string_value(json_object_get(net, "default_egress"));
	json_t *rules = json_object_get(net, "rules");
	int r = -EINVAL;
	struct net_policy *p = calloc(1, sizeof(*p));
	if (!p) {
		json_decref(root);
		return -ENOMEM;
	}
	if (!def || (strcmp(def, "allow") && strcmp(def, "deny"))) {
		snprintf(why, wl, "network policy: default_egress is '%s' (expected allow or deny)",
			 def ? def : "(missing)");
		goto out;
	}
	p->default_allow = !strcmp(def, "allow");
	size_t n = json_is_array(rules) ? json_array_size(rules) : 0;
	if (n > 4096) {
		snprintf(why, wl, "network policy: %zu rules (expected at most 4096)", n);
		goto out;
	}
	p->r = calloc(n ? n : 1, sizeof(*p->r));
	if (!p->r) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if ((r = parse_rule(json_array_get(rules, i), &p->r[i], why, wl, i)) < 0)
			goto out;
	p->n = n;
	blocks_compute(p);
	r = 0;
out:
	json_decref(root);
	if (r < 0)
		policy_free(p);
	else
		*out = p;
	return r;
}

void policy_free(struct net_policy *p)
{
	if (!p)
		return;
	free(p->r);
	free(p);
}

bool policy_has_domains(const struct net_policy *p)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->r[i].target == T_DOMAIN || p->r[i].target == T_SUFFIX)
			return true;
	return false;
}

static bool name_matches(const struct prule *r, const char *name)
{
	if (r->target == T_DOMAIN)
		return !strcmp(r->name, name);
	if (r->target != T_SUFFIX)
		return false;
	size_t nl = strlen(name), sl = strlen(r->name);
	return nl > sl + 1 && name[nl - sl - 1] == '.' && !strcmp(name + nl - sl, r->name);
}

int policy_domain_rules(const struct net_policy *p, const char *name, void (*cb)(void *, unsigned),
			void *arg)
{
	int n = 0;
	for (size_t i = 0; i < p->n; i++)
		if (name_matches(&p->r[i], name) && (!n || p->r[i].block != p->r[i - 1].block)) {
			/* One call per pin set, even when several rules of its run match. */
			cb(arg, p->r[i].block);
			n++;
		}
	return n;
}

bool policy_name_blocked(const struct net_policy *p, const char *name)
{
	bool address_allow = false;
	for (size_t i = 0; i < p->n; i++) {
		const struct prule *r = &p->r[i];
		if (!r->egress)
			continue;
		if (target_class(r) == 2) {
			if (name_matches(r, name))
				return !r->allow; /* first match wins */
		} else if (r->allow && r->target != T_DNS) {
			address_allow = true;
		}
	}
	return !p->default_allow && !address_allow;
}

/* ---- groups ----------------------------------------------------------------- */

struct range {
	int family;
	uint8_t a[16];
	unsigned prefix;
};

static bool in_prefix(int family, const uint8_t *addr, const uint8_t *net, unsigned prefix)
{
	(void)family;
	unsigned full = prefix / 8, rest = prefix % 8;
	if (memcmp(addr, net, full))
		return false;
	if (!rest)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (addr[full] & mask) == (net[full] & mask);
}

static bool in_text(int family, const uint8_t *addr, const char *cidr)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", cidr);
	char *slash = strchr(buf, '/');
	unsigned prefix = family == AF_INET ? 32 : 128;
	if (slash) {
		*slash = '\0';
		prefix = (unsigned)atoi(slash + 1);
	}
	uint8_t net[16];
	if (inet_pton(family, buf, net) != 1)
		return false;
	return in_prefix(family, addr, net, prefix);
}

static const char *const g4[][5] = {
	[G_PRIVATE] = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"},
	[G_LOOPBACK] = {"127.0.0.0/8"},
	[G_LINKLOCAL] = {"169.254.0.0/16"},
	[G_META] = {"169.254.169.254"},
	[G_MULTICAST] = {"224.0.0.0/4"},
};
static const char *const g6[][5] = {
	[G_PRIVATE] = {"fc00::/7"},   [G_LOOPBACK] = {"::1"},	    [G_LINKLOCAL] = {"fe80::/10"},
	[G_META] = {"fd00:ec2::254"}, [G_MULTICAST] = {"ff00::/8"},
};

/* Whether addr is in group g, with meta winning over link-local and private. */
static bool in_group(int family, const uint8_t *addr, int g)
{
	const char *const(*tab)[5] = family == AF_INET ? g4 : g6;
	if (g == G_HOST)
		return false; /* only the gateway, never a DNS answer */
	if (g == G_PUBLIC) {
		for (int k = G_PRIVATE; k <= G_MULTICAST; k++)
			if (in_group(family, addr, k))
				return false;
		return true;
	}
	if ((g == G_LINKLOCAL || g == G_PRIVATE) && in_group(family, addr, G_META))
		return false;
	for (int i = 0; i < 5 && tab[g][i]; i++)
		if (in_text(family, addr, tab[g][i]))
			return true;
	return false;
}

bool policy_address_allowed(const struct net_policy *p, int family, const uint8_t *addr)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct prule *r = &p->r[i];
		if (!r->egress)
			continue;
		bool m = false;
		if (r->target == T_V4 && family == AF_INET)
			m = in_prefix(family, addr, r->bin, r->prefix);
		else if (r->target == T_V6 && family == AF_INET6)
			m = in_prefix(family, addr, r->bin, r->prefix);
		else if (r->target == T_GROUP && r->group != G_PUBLIC)
			m = in_group(family, addr, r->group);
		if (m)
			return r->allow; /* first match wins, as in the ruleset */
	}
	return false;
}

bool policy_ingress_allowed(const struct net_policy *p, int family, const uint8_t *addr, bool udp,
			    unsigned port)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct prule *r = &p->r[i];
		if (!r->ingress)
			continue;
		if ((r->proto == P_TCP && udp) || (r->proto == P_UDP && !udp) || r->proto == P_ICMP)
			continue;
		if (r->port_lo && (port < r->port_lo || port > r->port_hi))
			continue;
		bool m = false;
		if (r->target == T_ANY)
			m = true;
		else if (r->target == T_V4 && family == AF_INET)
			m = in_prefix(family, addr, r->bin, r->prefix);
		else if (r->target == T_V6 && family == AF_INET6)
			m = in_prefix(family, addr, r->bin, r->prefix);
		else if (r->target == T_GROUP)
			m = in_group(family, addr, r->group);
		/* dns, domain and suffix targets name destinations: never a peer. */
		if (m)
			return r->allow;
	}
	return true; /* a published port is open to whoever reaches its address */
}

/* ---- text ------------------------------------------------------------------- */

struct buf {
	char *s;
	size_t len, cap;
	bool oom;
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b, const char *fmt, ...)
{
	if (b->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->s && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap <= b->len + (size_t)n)
			cap *= 2;
		char *s = realloc(b->s, cap);
		if (!s) {
			b->oom = true;
			return;
		}
		b->s = s, b->cap = cap;
	}
}

static char *done(struct buf *b)
{
	if (b->oom) {
		free(b->s);
		return NULL;
	}
	return b->s;
}

static void put_set(struct buf *b, const char *name, int family, const char *const *elems, size_t n,
		    const char *extra)
{
	put(b, "\tset %s { type %s; flags interval; auto-merge; elements = { ", name,
	    family == AF_INET ? "ipv4_addr" : "ipv6_addr");
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (elems[i])
			put(b, "%s%s", k++ ? ", " : "", elems[i]);
	if (extra && *extra)
		put(b, "%s%s", k++ ? ", " : "", extra);
	put(b, " } }\n");
}

/* The match of rule r for one family: "" (matches all), text, or NULL (never). */
static const char *rule_match(const struct prule *r, unsigned k, int family, char *m, size_t ml)
{
	const char *ip = family == AF_INET ? "ip" : "ip6";
	const char *sfx = family == AF_INET ? "4" : "6";
	switch (r->target) {
	case T_ANY:
		snprintf(m, ml, "meta nfproto %s", family == AF_INET ? "ipv4" : "ipv6");
		return m;
	case T_DNS:
		snprintf(m, ml, "%s daddr @gw%s meta l4proto { tcp, udp } th dport 53", ip, sfx);
		return m;
	case T_V4:
	case T_V6:
		if ((r->target == T_V4) != (family == AF_INET))
			return NULL;
		snprintf(m, ml, "%s daddr @blk%u_%s", ip, k, sfx);
		return m;
	case T_DOMAIN:
	case T_SUFFIX:
		snprintf(m, ml, "%s daddr @pin%u_%s", ip, k, sfx);
		return m;
	case T_GROUP:
		switch (r->group) {
		case G_PUBLIC:
			snprintf(m, ml, "%s daddr != @nonpublic%s", ip, sfx);
			break;
		case G_PRIVATE:
			snprintf(m, ml,
				 "%s daddr @private%s %s daddr != @meta%s %s daddr != @host%s", ip,
				 sfx, ip, sfx, ip, sfx);
			break;
		case G_LOOPBACK:
			snprintf(m, ml, "%s daddr @loopback%s", ip, sfx);
			break;
		case G_LINKLOCAL:
			snprintf(m, ml, "%s daddr @linklocal%s %s daddr != @meta%s", ip, sfx, ip,
				 sfx);
			break;
		case G_META:
			snprintf(m, ml, "%s daddr @meta%s", ip, sfx);
			break;
		case G_MULTICAST:
			snprintf(m, ml, "%s daddr @multicast%s", ip, sfx);
			break;
		case G_HOST:
			snprintf(m, ml, "%s daddr @host%s", ip, sfx);
			break;
		default:
			return NULL;
		}
		return m;
	default:
		return NULL;
	}
}

#define REJECT "reject with icmpx type admin-prohibited"

/* What a rule's action becomes in the chain being written. */
struct verdicts {
	const char *allow, *block;
};
static const struct verdicts filter_verdicts = {"accept", REJECT};
/*
 * The steering check (prerouting, where reject cannot be used): a connection
 * the policy allows is marked for the TLS proxy; one it blocks goes on
 * unmarked, to be rejected by filter_fwd as ever.
 */
static const struct verdicts steer_verdicts = {"ct mark set " NET_STEER_MARK " accept", "accept"};

static void put_rule(struct buf *b, const struct prule *r, unsigned k, const struct verdicts *v)
{
	char proto[96] = "";
	if (r->proto == P_TCP || r->proto == P_UDP) {
		const char *pn = r->proto == P_TCP ? "tcp" : "udp";
		if (r->port_lo && r->port_lo == r->port_hi)
			snprintf(proto, sizeof(proto), " %s dport %u", pn, r->port_lo);
		else if (r->port_lo)
			snprintf(proto, sizeof(proto), " %s dport %u-%u", pn, r->port_lo,
				 r->port_hi);
		else
			snprintf(proto, sizeof(proto), " meta l4proto %s", pn);
	}
	for (int f = 0; f < 2; f++) {
		int family = f ? AF_INET6 : AF_INET;
		char m[256];
		const char *match = rule_match(r, k, family, m, sizeof(m));
		if (!match)
			continue;
		const char *icmp = "";
		if (r->proto == P_ICMP)
			icmp = family == AF_INET ? " meta l4proto icmp" : " meta l4proto ipv6-icmp";
		put(b, "\t\t%s%s%s %s\n", match, proto, icmp, r->allow ? v->allow : v->block);
	}
}

/* The egress rules in order, then the default, with the given verdicts. */
static void put_egress(struct buf *b, const struct net_policy *p, const struct verdicts *v)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct prule *r = &p->r[i];
		if (!r->egress || (i && r->block == p->r[i - 1].block))
			continue;
		if (target_class(r) != 1) {
			put_rule(b, r, r->block, v);
			continue;
		}
		/* An address run: one line per family that has members. */
		bool done4 = false, done6 = false;
		for (size_t j = i; j < p->n && p->r[j].block == r->block; j++) {
			bool *d = p->r[j].target == T_V4 ? &done4 : &done6;
			if (!*d)
				put_rule(b, &p->r[j], r->block, v);
			*d = true;
		}
	}
	put(b, "\t\t%s\n\t}\n", p->default_allow ? v->allow : v->block);
}

/* "443, 8443": the steered ports as an nft set body. */
static void steer_ports(const struct net_steer *st, char *out, size_t len)
{
	size_t n = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < st->nports && n < len; i++)
		n += (size_t)snprintf(out + n, len - n, "%s%u", i ? ", " : "", st->ports[i]);
}

/*
 * TLS steering for the secrets proxy (docs/secrets.md): a new TCP connection
 * from the guest to a steered port, that the egress policy allows, is
 * redirected to the proxy's port inside this namespace.  The policy is
 * checked first on the real destination (steer_check, the same rules with
 * marking verdicts), so steering never opens what the policy closes; a
 * connection it blocks is not redirected and filter_fwd rejects it.  The
 * gateway itself is never steered (the proxy would only reach itself).
 */
static void put_steer(struct buf *b, const struct net_policy *p, const struct net_steer *st)
{
	char ports[128];
	steer_ports(st, ports, sizeof(ports));
	put(b,
	    "\tchain steer_pre {\n\t\ttype filter hook prerouting priority dstnat - 50; "
	    "policy accept;\n"
	    "\t\tiifname \"" NET_TAP_NAME "\" ct state new tcp dport { %s } ip daddr != @gw4 "
	    "jump steer_check\n"
	    "\t\tiifname \"" NET_TAP_NAME "\" ct state new tcp dport { %s } ip6 daddr != @gw6 "
	    "jump steer_check\n\t}\n",
	    ports, ports);
	put(b, "\tchain steer_check {\n");
	put_egress(b, p, &steer_verdicts);
}

char *policy_ruleset(const struct net_policy *p, const struct net_addrs *a,
		     const struct net_steer *st)
{
	struct buf b = {0};
	char host4[128], host6[256], np4[256], np6[512];
	snprintf(host4, sizeof(host4), "%s, %s", a->gw4, a->hostend4);
	snprintf(host6, sizeof(host6), "%s, %s", a->gw6, a->hostend6);
	/* Not public: every group, the host, and what is never routable. */
	snprintf(np4, sizeof(np4), "%s, 0.0.0.0/8, 240.0.0.0/4", host4);
	snprintf(np6, sizeof(np6), "%s, ::/128, ::ffff:0:0/96, 64:ff9b::/96", host6);
	put(&b, "table inet " NET_TABLE "\ndelete table inet " NET_TABLE "\n");
	put(&b, "table inet " NET_TABLE " {\n");
	static const char *const names[] = {[G_PRIVATE] = "private",
					    [G_LOOPBACK] = "loopback",
					    [G_LINKLOCAL] = "linklocal",
					    [G_META] = "meta",
					    [G_MULTICAST] = "multicast"};
	for (int g = G_PRIVATE; g <= G_MULTICAST; g++) {
		char n[32];
		snprintf(n, sizeof(n), "%s4", names[g]);
		put_set(&b, n, AF_INET, g4[g], 5, NULL);
		snprintf(n, sizeof(n), "%s6", names[g]);
		put_set(&b, n, AF_INET6, g6[g], 5, NULL);
	}
	put_set(&b, "host4", AF_INET, NULL, 0, host4);
	put_set(&b, "host6", AF_INET6, NULL, 0, host6);
	put_set(&b, "gw4", AF_INET, NULL, 0, a->gw4);
	put_set(&b, "gw6", AF_INET6, NULL, 0, a->gw6);
	const char *all4[5 * 5], *all6[5 * 5];
	size_t n4 = 0, n6 = 0;
	for (int g = G_PRIVATE; g <= G_MULTICAST; g++)
		for (int i = 0; i < 5; i++) {
			if (g4[g][i])
				all4[n4++] = g4[g][i];
			if (g6[g][i])
				all6[n6++] = g6[g][i];
		}
	put_set(&b, "nonpublic4", AF_INET, all4, n4, np4);
	put_set(&b, "nonpublic6", AF_INET6, all6, n6, np6);
	/* One set per run of address rules and per run of name rules (blocks_compute). */
	for (size_t i = 0; i < p->n; i++) {
		const struct prule *r = &p->r[i];
		if (i && r->block == p->r[i - 1].block)
			continue;
		size_t end = i;
		while (end < p->n && p->r[end].block == r->block)
			end++;
		if (target_class(r) == 2) {
			put(&b, "\tset pin%u_4 { type ipv4_addr; flags timeout; }\n", r->block);
			put(&b, "\tset pin%u_6 { type ipv6_addr; flags timeout; }\n", r->block);
		} else if (target_class(r) == 1) {
			for (int t = T_V4; t <= T_V6; t++) {
				size_t k = 0;
				for (size_t j = i; j < end; j++) {
					if (p->r[j].target != t)
						continue;
					if (!k++)
						put(&b,
						    "\tset blk%u_%c { type %s; flags interval; "
						    "auto-merge; elements = { ",
						    r->block, t == T_V4 ? '4' : '6',
						    t == T_V4 ? "ipv4_addr" : "ipv6_addr");
					put(&b, "%s%s/%u", k > 1 ? ", " : "", p->r[j].addr,
					    p->r[j].prefix);
				}
				if (k)
					put(&b, " } }\n");
			}
		}
	}

	/* NAT: the gateway's other ports are the host's; out of the uplink as its address. */
	put(&b,
	    "\tchain nat_pre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
	if (st)
		put(&b,
		    "\t\tiifname \"" NET_TAP_NAME "\" ct mark " NET_STEER_MARK
		    " meta l4proto tcp redirect to :%u\n",
		    st->proxy_port);
	put(&b,
	    "\t\tiifname \"" NET_TAP_NAME "\" ip daddr %s meta l4proto { tcp, udp } th dport != 53 "
	    "dnat ip to %s\n",
	    a->gw4, a->hostend4);
	put(&b,
	    "\t\tiifname \"" NET_TAP_NAME "\" ip6 daddr %s meta l4proto { tcp, udp } th dport != "
	    "53 dnat ip6 to %s\n\t}\n",
	    a->gw6, a->hostend6);
	put(&b,
	    "\tchain nat_post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
	    "\t\toifname \"" NET_UP_NAME "\" masquerade\n\t}\n");

	/* Filter: replies first, then the guest's new traffic through `rules`. */
	put(&b, "\tchain filter_fwd {\n\t\ttype filter hook forward priority filter; policy drop;\n"
		"\t\tct state established,related accept\n\t\tct state invalid drop\n");
	if (st && st->block_quic) {
		/* QUIC to a steered port: refused at once, so clients fall back to TCP. */
		char ports[128];
		steer_ports(st, ports, sizeof(ports));
		put(&b, "\t\tiifname \"" NET_TAP_NAME "\" udp dport { %s } " REJECT "\n", ports);
	}
	put(&b, "\t\tiifname \"" NET_TAP_NAME "\" oifname \"" NET_UP_NAME
		"\" jump guest_egress\n\t}\n");
	put(&b, "\tchain filter_in {\n\t\ttype filter hook input priority filter; policy drop;\n"
		"\t\tiifname \"lo\" accept\n\t\tct state established,related accept\n"
		"\t\tct state invalid drop\n");
	if (st) /* steered by nat_pre, after steer_check allowed it */
		put(&b,
		    "\t\tiifname \"" NET_TAP_NAME "\" ct mark " NET_STEER_MARK
		    " ct status dnat tcp dport %u accept\n",
		    st->proxy_port);
	put(&b, "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } "
		"accept\n"
		"\t\tiifname \"" NET_TAP_NAME "\" ip daddr @gw4 jump guest_egress\n"
		"\t\tiifname \"" NET_TAP_NAME "\" ip6 daddr @gw6 jump guest_egress\n\t}\n");

	put(&b, "\tchain guest_egress {\n");
	if (policy_has_domains(p) || st)
		/*
		 * Domain rules and the secrets proxy's DNS pins hold only if every
		 * lookup goes through the interceptor.
		 */
		put(&b,
		    "\t\tip daddr != @gw4 meta l4proto { tcp, udp } th dport { 53, 853 } " REJECT
		    "\n"
		    "\t\tip6 daddr != @gw6 meta l4proto { tcp, udp } th dport { 53, 853 } " REJECT
		    "\n");
	put_egress(&b, p, &filter_verdicts);
	if (st)
		put_steer(&b, p, st);
	put(&b, "}\n");
	return done(&b);
}

char *policy_host_ruleset(unsigned slot, const struct net_addrs *a)
{
	struct buf b = {0};
	char t[32], dev[IFNAMSIZ];
	snprintf(t, sizeof(t), NET_HTABLE, slot);
	snprintf(dev, sizeof(dev), NET_HOST_FMT, slot);
	put(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", t, t, t);
	put(&b,
	    "\tchain nat_post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
	    "\t\tiifname \"%s\" oifname != \"%s\" masquerade\n\t}\n",
	    dev, dev);
	/* Sandboxes never reach each other; nothing new enters one from outside. */
	put(&b,
	    "\tchain filter_fwd {\n\t\ttype filter hook forward priority filter - 1; policy "
	    "accept;\n"
	    "\t\tiifname \"%s\" oifname \"msbh*\" drop\n"
	    "\t\toifname \"%s\" ct state established,related accept\n"
	    "\t\toifname \"%s\" drop\n\t}\n",
	    dev, dev, dev);
	/* The host itself only as the `host` group: at the uplink's own address. */
	put(&b,
	    "\tchain filter_in {\n\t\ttype filter hook input priority filter - 1; policy accept;\n"
	    "\t\tiifname \"%s\" ct state established,related accept\n"
	    "\t\tiifname \"%s\" ip daddr != %s drop\n"
	    "\t\tiifname \"%s\" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n"
	    "\t\tiifname \"%s\" ip6 daddr != %s drop\n\t}\n}\n",
	    dev, dev, a->hostend4, dev, dev, a->hostend6);
	return done(&b);
}

int nft_apply(const char *text, char *why, size_t wl)
{
	struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!ctx) {
		snprintf(why, wl, "nftables: no context");
		return -ENOMEM;
	}
	nft_ctx_buffer_error(ctx);
	nft_ctx_buffer_output(ctx);
	int r = nft_run_cmd_from_buffer(ctx, text);
	if (r != 0) {
		const char *e = nft_ctx_get_error_buffer(ctx);
		/* The first line of nft's message says what. */
		size_t l = e ? strcspn(e, "\n") : 0;
		snprintf(why, wl, "nftables: %.*s", (int)(l > 300 ? 300 : l), e ? e : "failed");
		r = -EINVAL;
	}
	nft_ctx_free(ctx);
	return r;
}
