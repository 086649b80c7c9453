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
 * EOF tears everything down and exits 0.  Errors: one line, exit 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nftables/libnftables.h>

#include "net.h"

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
	printf("ready %u %s/%u %s %s/64 %s\n", sn.slot, sn.a.guest4, sn.prefix4, sn.a.gw4,
	       sn.a.guest6, sn.a.gw6);
	fflush(stdout);
	char line[1024];
	while (fgets(line, sizeof(line), stdin)) {
		char a[512], b[128];
		unsigned ttl;
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
		} else if (sscanf(line, "pin %511s %127s %u", a, b, &ttl) == 3) {
			uint8_t bin[16];
			int fam = strchr(b, ':') ? AF_INET6 : AF_INET;
			if (inet_pton(fam, b, bin) != 1)
				printf("error: bad address\n");
			else
				printf("%d\n", snet_pin(&sn, a, fam, bin, ttl));
		} else {
			printf("error: unknown command\n");
		}
		fflush(stdout);
	}
	snet_destroy(&sn);
	free(spec);
	return 0;
}
