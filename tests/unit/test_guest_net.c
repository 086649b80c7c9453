/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's network setup (guest/agent/net.c): parsing msb.net/msb.dns/
 * msb.mtu, and configuring a real "eth0" (a veth) in a private network
 * namespace this test makes, then reading back what the kernel has.
 * resolv.conf and hosts go to a temporary directory, never the host's /etc.
 */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent.h"

void msb_guest_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void test_parse(void **state)
{
	(void)state;
	struct msb_guest_net n;
	assert_int_equal(msb_guest_net_parse(NULL, NULL, NULL, &n), 0);
	assert_int_equal(n.enabled, 0);
	assert_int_equal(msb_guest_net_parse("10.200.0.2/30,10.200.0.1,fd6d:7362:6e00::2/64,"
					     "fd6d:7362:6e00::1",
					     "10.200.0.1", "1500", &n),
			 0);
	assert_int_equal(n.enabled, 1);
	assert_int_equal(n.prefix4, 30);
	assert_int_equal(n.addr4[3], 2);
	assert_int_equal(n.gw4[3], 1);
	assert_int_equal(n.has6, 1);
	assert_int_equal(n.prefix6, 64);
	assert_int_equal(n.mtu, 1500);
	assert_int_equal(msb_guest_net_parse("10.0.0.2/24,10.0.0.1", "", "", &n), 0);
	assert_int_equal(n.has6, 0);
	static const char *const bad[][3] = {
		{"10.0.0.2/24", NULL, NULL},			 /* no gateway */
		{"10.0.0.2/33,10.0.0.1", NULL, NULL},		 /* prefix */
		{"10.0.0.2/0,10.0.0.1", NULL, NULL},		 /* prefix */
		{"10.0.0.2/24,10.0.0.1/24", NULL, NULL},	 /* gateway with a prefix */
		{"fd00::2/64,fd00::1", NULL, NULL},		 /* v6 where v4 belongs */
		{"10.0.0.2/24,10.0.0.1,fd00::2/64", NULL, NULL}, /* three fields */
		{"10.0.0.2/24,10.0.0.1,10.0.0.3/24,10.0.0.4", NULL, NULL},
		{"10.0.0.256/24,10.0.0.1", NULL, NULL},
		{"10.0.0.2/24,10.0.0.1", "nameserver", NULL},
		{"10.0.0.2/24,10.0.0.1", "10.0.0.1/8", NULL},
		{"10.0.0.2/24,10.0.0.1", NULL, "68"},
		{"10.0.0.2/24,10.0.0.1", NULL, "15x0"},
		{"10.0.0.2/24,10.0.0.1", NULL, "70000"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(msb_guest_net_parse(bad[i][0], bad[i][1], bad[i][2], &n), -22);
}

static char *run(const char *cmd)
{
	static char out[8192];
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	pclose(p);
	return out;
}

static void test_setup_in_a_namespace(void **state)
{
	(void)state;
	if (geteuid() != 0 || unshare(CLONE_NEWNET) < 0)
		skip();
	assert_int_equal(
		system("ip link add eth0 type veth peer name peer0 && ip link set peer0 up"), 0);
	char etc[] = "/tmp/msb-guest-net.XXXXXX";
	assert_non_null(mkdtemp(etc));
	msb_guest_net_set_etc(etc);
	char hosts[64];
	snprintf(hosts, sizeof(hosts), "%s/hosts", etc);
	FILE *f = fopen(hosts, "w");
	assert_non_null(f);
	fputs("127.0.0.1 localhost", f); /* no final newline: the agent adds one */
	fclose(f);

	struct msb_guest_net n;
	assert_int_equal(msb_guest_net_parse("10.200.0.2/30,10.200.0.1,fd6d:7362:6e00::2/64,"
					     "fd6d:7362:6e00::1",
					     "10.200.0.1", "1400", &n),
			 0);
	assert_int_equal(msb_guest_net_setup(&n), 0);
	assert_non_null(strstr(run("ip -o -4 addr show eth0"), "10.200.0.2/30"));
	assert_non_null(strstr(run("ip -o -6 addr show eth0"), "fd6d:7362:6e00::2/64"));
	assert_non_null(strstr(run("ip -o link show eth0"), "mtu 1400"));
	assert_non_null(strstr(run("ip -4 route show default"), "via 10.200.0.1 dev eth0"));
	assert_non_null(strstr(run("ip -6 route show default"), "via fd6d:7362:6e00::1 dev eth0"));
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "cat %s/resolv.conf", etc);
	assert_non_null(strstr(run(cmd), "nameserver 10.200.0.1\n"));
	snprintf(cmd, sizeof(cmd), "cat %s", hosts);
	const char *h = run(cmd);
	assert_non_null(strstr(h, "127.0.0.1 localhost\n10.200.0.1\thost.msb.internal\n"));
	assert_non_null(strstr(h, "fd6d:7362:6e00::1\thost.msb.internal\n"));
	/* Idempotent: a second run neither fails nor adds the name twice. */
	assert_int_equal(msb_guest_net_setup(&n), 0);
	h = run(cmd);
	assert_ptr_equal(strstr(strstr(h, "host.msb.internal") + 1, "10.200.0.1\thost"), NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", etc);
	assert_int_equal(system(cmd), 0);
}

static void test_no_eth0(void **state)
{
	(void)state;
	if (geteuid() != 0 || unshare(CLONE_NEWNET) < 0)
		skip();
	struct msb_guest_net n;
	assert_int_equal(msb_guest_net_parse("10.0.0.2/24,10.0.0.1", NULL, NULL, &n), 0);
	assert_int_equal(msb_guest_net_setup(&n), -19 /* ENODEV */);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_setup_in_a_namespace),
		cmocka_unit_test(test_no_eth0),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
