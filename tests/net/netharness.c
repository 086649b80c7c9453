/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb-netharness: one sandbox's network, built by the net module's own code
 * (plugins/net/sandbox.c) with a test namespace playing the guest: instead
 * of a TAP, the guest link is a veth whose "eth0" end goes into GUEST_NS.
 * Everything else — slot, namespace, uplink, NAT, the nftables policy — is
 * what a real sandbox gets.
 *
 *   msb-netharness RUNDIR SPEC_JSON_FILE GUEST_NS_PATH
 *
 * Prints "ready SLOT GUEST4/P GW4 GUEST6/64 GW6", then reads commands on stdin:
 *   apply FILE        replace the policy with FILE's spec (prints "ok" or "error: ...")
 *   pin NAME ADDR TTL pin ADDR for NAME (prints the number of sets it joined)
 *   list              the namespace's table (nft list), then a line "end"
 *   steer PORTS PROXY QUIC  steer TCP PORTS ("443,8443") to PROXY, a stand-in
 *                     for the secrets proxy that this harness listens on in the
 *                     sandbox's namespace: it answers each connection with
 *                     "orig ADDR PORT\n" (SO_ORIGINAL_DST) and closes; QUIC 1
 *                     blocks UDP to PORTS (prints "ok" or "error: ...")
 *   pincheck NAME ADDR  1 if the interceptor gave the guest ADDR for NAME, else 0
 *   secrets           "PORT CA_PEM" of the secrets proxy, or "none"
 *   stats             the secrets proxy's counters, as JSON
 *
 * When the spec has secrets, the secrets module's proxy (plugins/secrets)
 * runs too, as a real sandbox gets it: inside the sandbox's namespace, with
 * the pin check of this network, and guest TLS steered to it.  Values come
 * as in msb: a secret's file, else values given directly (read, as
 * msb-supervisor reads them, from the fd MSB_TEST_VALUES_FD names), the
 * environment, the config file's [secrets] (MSB_CONFIG); module options
 * from MSB_SECRETS_<KEY> (PORTS, BYPASS, SUBSTITUTE, CA_FILE), its CA from
 * MSB_SECRETS_CA_DIR and its violation mode from the spec.
 * EOF tears everything down and exits 0.  Errors: one line, exit 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nftables/libnftables.h>

#include "config.h"
#include "../../core/config.h" /* msb's config file (core) */
#include "secretval.h"
#include "net.h"
#include "proxy.h"

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST                                                                       \
	80 /* linux/netfilter_ipv6/ip6_tables.h, which clashes with net/if.h                       \
	    */
#endif

/* `nft list table inet msb` inside the sandbox's namespace, to stdout. */
static int list_fn(void *arg)
{
	(void)arg;
	struct nft_ctx *c = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!c)
		return -1;
	nft_ctx_buffer_output(c);
	int r = nft_run_cmd_from_buffer(c, "list table inet " NET_TABLE);
	if (r == 0)
		fputs(nft_ctx_get_output_buffer(c), stdout);
	nft_ctx_free(c);
	return r;
}

/* The proxy stand-in: listening sockets made inside the sandbox's namespace. */
struct standin {
	unsigned port;
	int fd4, fd6;
};

static int standin_fn(void *arg)
{
	struct standin *st = arg;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)st->port)};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6,
				  .sin6_port = htons((uint16_t)st->port),
				  .sin6_addr = IN6ADDR_ANY_INIT};
	int one = 1;
	st->fd4 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	st->fd6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (st->fd4 < 0 || st->fd6 < 0)
		return -errno;
	setsockopt(st->fd6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(st->fd4, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(st->fd4, 16) < 0 ||
	    bind(st->fd6, (struct sockaddr *)&a6, sizeof(a6)) < 0 || listen(st->fd6, 16) < 0)
		return -errno;
	return 0;
}

static void *standin_loop(void *arg)
{
	int lfd = (int)(long)arg;
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0)
			continue;
		struct sockaddr_storage o;
		socklen_t ol = sizeof(o);
		char addr[INET6_ADDRSTRLEN] = "?", line[128];
		unsigned port = 0;
		if (getsockopt(c, SOL_IP, SO_ORIGINAL_DST, &o, &ol) == 0) {
			struct sockaddr_in *o4 = (struct sockaddr_in *)&o;
			inet_ntop(AF_INET, &o4->sin_addr, addr, sizeof(addr));
			port = ntohs(o4->sin_port);
		} else if ((ol = sizeof(o)),
			   getsockopt(c, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &o, &ol) == 0) {
			struct sockaddr_in6 *o6 = (struct sockaddr_in6 *)&o;
			inet_ntop(AF_INET6, &o6->sin6_addr, addr, sizeof(addr));
			port = ntohs(o6->sin6_port);
		}
		int n = snprintf(line, sizeof(line), "orig %s %u\n", addr, port);
		if (write(c, line, (size_t)n) < 0) {
			/* the client went away: nothing to tell */
		}
		close(c);
	}
	return NULL;
}

static int pin_check(void *ctx, const char *name, const struct sockaddr *a, socklen_t len)
{
	(void)len;
	const uint8_t *b = a->sa_family == AF_INET
				   ? (const uint8_t *)&((const struct sockaddr_in *)a)->sin_addr
				   : (const uint8_t *)&((const struct sockaddr_in6 *)a)->sin6_addr;
	return snet_pin_check(ctx, name, a->sa_family, b);
}

static const char *secrets_opt(void *ctx, const char *key)
{
	(void)ctx;
	char k[64];
	snprintf(k, sizeof(k), "MSB_SECRETS_%s", key);
	for (char *c = k; *c; c++)
		if (*c >= 'a' && *c <= 'z')
			*c = (char)(*c - 'a' + 'A');
	return getenv(k);
}

static void secrets_log(void *ctx, int level, const char *line)
{
	(void)ctx;
	fprintf(stderr, "secrets[%d]: %s\n", level, line);
}

/* As msb's core answers the module: the vault, the environment, the config file. */
static int secrets_value(void *ctx, const char *env, char *buf, size_t cap, size_t *len)
{
	(void)ctx;
	const char *v;
	size_t vl;
	if (msb_secret_lookup(env, &v, &vl) < 0)
		return -ENOENT;
	if (vl > cap)
		return -EFBIG;
	memcpy(buf, v, vl);
	*len = vl;
	return 0;
}

/* The secrets proxy and its steering, when the spec has secrets. */
static int secrets_up(struct snet *sn, const char *spec, struct proxy **out, char *why, size_t wl)
{
	struct secrets_conf conf;
	/* Values given directly, as msb-supervisor takes them: MSB_TEST_VALUES_FD. */
	const char *vfd = getenv("MSB_TEST_VALUES_FD");
	struct msb_error err = MSB_ERROR_INIT;
	if ((vfd && msb_secret_vault_read_fd(atoi(vfd), &err) < 0) || msb_config_load(&err) < 0) {
		snprintf(why, wl, "%s", err.msg);
		return err.code;
	}
	int r = secrets_conf_load(&conf, spec, secrets_opt, secrets_value, NULL, why, wl);
	/* The proxy holds its own copies now, as in msb. */
	msb_secret_vault_wipe();
	msb_config_forget_secrets();
	if (r < 0 || !conf.nsecrets) {
		if (r == 0)
			secrets_conf_free(&conf);
		return r;
	}
	const char *dir = getenv("MSB_SECRETS_CA_DIR");
	struct proxy_cfg pc = {.netns_fd = sn->nsfd,
			       .secrets = conf.secrets,
			       .nsecrets = conf.nsecrets,
			       .bypass = conf.bypass,
			       .nbypass = conf.nbypass,
			       .where = conf.where,
			       .on_violation = conf.on_violation,
			       .ca_dir = dir ? dir : "/tmp",
			       .ca_label = "netharness",
			       .upstream_ca_file = conf.ca_file,
			       .pin_check = pin_check,
			       .pin_ctx = sn,
			       .log = secrets_log};
	r = proxy_start(&pc, out, why, wl);
	struct net_steer st = {.block_quic = true};
	for (unsigned i = 0; i < conf.nports; i++)
		st.ports[st.nports++] = conf.ports[i];
	secrets_conf_free(&conf);
	if (r < 0)
		return r;
	st.proxy_port = proxy_port(*out);
	if ((r = snet_steer(sn, &st, why, wl)) < 0) {
		proxy_stop(*out);
		*out = NULL;
	}
	return r;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	static char buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strdup(buf);
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "reap")) {
		printf("%d\n", snet_reap(getenv("MSB_NET_RUNDIR")));
		return 0;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: msb-netharness RUNDIR SPEC_JSON GUEST_NS | reap\n");
		return 2;
	}
	char *spec = slurp(argv[2]);
	int gfd = open(argv[3], O_RDONLY | O_CLOEXEC);
	if (!spec || gfd < 0) {
		fprintf(stderr, "msb-netharness: %s: %s\n", spec ? argv[3] : argv[2],
			strerror(errno));
		return 1;
	}
	struct snet sn;
	struct snet_opts o = {.rundir = argv[1],
			      .pool = getenv("MSB_NET_POOL"),
			      .network_json = spec,
			      .guest_nsfd = gfd,
			      .dns = getenv("MSB_NET_DNS")};
	char why[512];
	if (snet_create(&sn, &o, why, sizeof(why)) < 0) {
		fprintf(stderr, "msb-netharness: %s\n", why);
		return 1;
	}
	struct proxy *px = NULL;
	if (secrets_up(&sn, spec, &px, why, sizeof(why)) < 0) {
		fprintf(stderr, "msb-netharness: %s\n", why);
		snet_destroy(&sn);
		return 1;
	}
	printf("ready %u %s/%u %s %s/64 %s\n", sn.slot, sn.a.guest4, sn.prefix4, sn.a.gw4,
	       sn.a.guest6, sn.a.gw6);
	fflush(stdout);
	char line[1024];
	while (fgets(line, sizeof(line), stdin)) {
		char a[512], b[128];
		unsigned ttl, quic;
		if (sscanf(line, "apply %511s", a) == 1) {
			char *j = slurp(a);
			int r = j ? snet_apply(&sn, j, why, sizeof(why)) : -errno;
			if (r < 0)
				printf("error: %s\n", j ? why : strerror(-r));
			else
				printf("ok\n");
			free(j);
		} else if (!strcmp(line, "list\n")) {
			/* The table, then a line "end". */
			ns_run(sn.nsfd, list_fn, NULL);
			printf("end\n");
		} else if (!strcmp(line, "secrets\n")) {
			if (px)
				printf("%u %s\n", proxy_port(px), proxy_ca_path(px));
			else
				printf("none\n");
		} else if (!strcmp(line, "stats\n")) {
			struct proxy_stats ps = {0};
			if (px)
				proxy_get_stats(px, &ps);
			printf("{\"accepted\": %llu, \"spliced\": %llu, \"intercepted\": %llu, "
			       "\"requests\": %llu, \"injected\": %llu, \"blocked\": %llu, "
			       "\"malformed\": %llu, \"upstream_failed\": %llu, \"refused\": "
			       "%llu}\n",
			       (unsigned long long)ps.accepted, (unsigned long long)ps.spliced,
			       (unsigned long long)ps.intercepted, (unsigned long long)ps.requests,
			       (unsigned long long)ps.injected, (unsigned long long)ps.blocked,
			       (unsigned long long)ps.malformed,
			       (unsigned long long)ps.upstream_failed,
			       (unsigned long long)ps.refused);
		} else if (sscanf(line, "pincheck %511s %127s", a, b) == 2) {
			uint8_t bin[16];
			int fam = strchr(b, ':') ? AF_INET6 : AF_INET;
			if (inet_pton(fam, b, bin) != 1)
				printf("error: bad address\n");
			else
				printf("%d\n", snet_pin_check(&sn, a, fam, bin));
		} else if (sscanf(line, "pin %511s %127s %u", a, b, &ttl) == 3) {
			uint8_t bin[16];
			int fam = strchr(b, ':') ? AF_INET6 : AF_INET;
			if (inet_pton(fam, b, bin) != 1)
				printf("error: bad address\n");
			else
				printf("%d\n", snet_pin(&sn, a, fam, bin, ttl));
		} else if (sscanf(line, "steer %511s %u %u", a, &ttl, &quic) == 3) {
			struct net_steer st = {.proxy_port = (uint16_t)ttl,
					       .block_quic = quic != 0};
			for (char *t = strtok(a, ","); t && st.nports < 8; t = strtok(NULL, ","))
				st.ports[st.nports++] = (uint16_t)atoi(t);
			struct standin si = {.port = ttl, .fd4 = -1, .fd6 = -1};
			pthread_t t1, t2;
			int r = ns_run(sn.nsfd, standin_fn, &si);
			if (r < 0) {
				printf("error: the stand-in's sockets: %s\n", strerror(-r));
			} else if ((r = snet_steer(&sn, &st, why, sizeof(why))) < 0) {
				printf("error: %s\n", why);
			} else {
				pthread_create(&t1, NULL, standin_loop, (void *)(long)si.fd4);
				pthread_create(&t2, NULL, standin_loop, (void *)(long)si.fd6);
				printf("ok\n");
			}
		} else {
			printf("error: unknown command\n");
		}
		fflush(stdout);
	}
	proxy_stop(px);
	snet_destroy(&sn);
	free(spec);
	return 0;
}
