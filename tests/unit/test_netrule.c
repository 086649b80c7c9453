/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for core/netrule.c: msb_net_rules_parse and msb_net_rule_format. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

/* ---- helpers ------------------------------------------------------------- */

/* Parse text that must hold exactly one valid rule. */
static struct msb_net_rule parse_one(const char *text)
{
	struct msb_net_rule *rules = NULL, r;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	int ret = msb_net_rules_parse(text, &rules, &count, &err);
	if (ret != 0)
		print_error("parsing '%s': %s\n", text, err.msg);
	assert_int_equal(ret, 0);
	assert_int_equal(err.code, 0);
	assert_int_equal(count, 1);
	memcpy(&r, rules, sizeof(r));
	free(rules);
	return r;
}

/* The canonical text of a rule. */
static const char *format(const struct msb_net_rule *r, char *buf, size_t len)
{
	int n = msb_net_rule_format(r, buf, len);
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(buf));
	return buf;
}

static void assert_ipv4(const struct msb_net_rule *r, const char *addr, unsigned prefix)
{
	uint8_t want[16] = {0};
	assert_int_equal(inet_pton(AF_INET, addr, want), 1);
	assert_int_equal(r->target, MSB_TARGET_IPV4);
	assert_memory_equal(r->addr, want, sizeof(want));
	assert_int_equal(r->prefix, prefix);
}

static void assert_ipv6(const struct msb_net_rule *r, const char *addr, unsigned prefix)
{
	uint8_t want[16];
	assert_int_equal(inet_pton(AF_INET6, addr, want), 1);
	assert_int_equal(r->target, MSB_TARGET_IPV6);
	assert_memory_equal(r->addr, want, sizeof(want));
	assert_int_equal(r->prefix, prefix);
}

/*
 * Parse bad text onto an array that already holds one rule, and check the
 * error: the code, the array untouched, and a one-line message that names
 * the rule and contains every string in `needles` (NULL-terminated).
 */
static void expect_error_code(const char *text, int code, const char *const *needles)
{
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_net_rules_parse("deny@meta", &rules, &count, &err), 0);
	struct msb_net_rule *before = rules, saved;
	memcpy(&saved, rules, sizeof(saved));

	int ret = msb_net_rules_parse(text, &rules, &count, &err);
	if (ret != code)
		print_error("'%s': got %d '%s', expected %d\n", text, ret, err.msg, code);
	assert_int_equal(ret, code);
	assert_int_equal(err.code, code);
	assert_int_equal(count, 1);
	assert_ptr_equal(rules, before);
	assert_memory_equal(rules, &saved, sizeof(saved));

	assert_true(strlen(err.msg) > 0);
	assert_null(strchr(err.msg, '\n'));
	assert_non_null(strstr(err.msg, "net rule"));
	for (size_t i = 0; needles[i]; i++) {
		if (!strstr(err.msg, needles[i]))
			print_error("'%s': message '%s' lacks '%s'\n", text, err.msg, needles[i]);
		assert_non_null(strstr(err.msg, needles[i]));
	}
	free(rules);
}

#define NEEDLES(...)		((const char *const[]){__VA_ARGS__, NULL})
#define expect_error(text, ...) expect_error_code(text, -EINVAL, NEEDLES(__VA_ARGS__))

/* ---- valid rules --------------------------------------------------------- */

static void test_actions_and_directions(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("allow@public");
	assert_int_equal(r.action, MSB_RULE_ALLOW);
	assert_int_equal(r.direction, MSB_RULE_EGRESS);
	assert_int_equal(r.proto, MSB_PROTO_ANY);
	assert_int_equal(r.port_lo, 0);
	assert_int_equal(r.port_hi, 0);

	r = parse_one("deny@public");
	assert_int_equal(r.action, MSB_RULE_DENY);
	assert_int_equal(r.direction, MSB_RULE_EGRESS);

	assert_int_equal(parse_one("allow:egress@public").direction, MSB_RULE_EGRESS);
	assert_int_equal(parse_one("allow:ingress@public").direction, MSB_RULE_INGRESS);
	assert_int_equal(parse_one("deny:any@public").direction, MSB_RULE_ANY_DIRECTION);
}

static void test_target_keywords(void **state)
{
	(void)state;
	static const uint8_t zero[16];
	struct msb_net_rule r = parse_one("allow@any");
	assert_int_equal(r.target, MSB_TARGET_ANY);
	assert_memory_equal(r.addr, zero, sizeof(zero));
	assert_string_equal(r.domain, "");

	r = parse_one("allow@dns");
	assert_int_equal(r.target, MSB_TARGET_DNS);
}

static void test_groups(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int group;
	} cases[] = {
		{"allow@public", MSB_GROUP_PUBLIC},	{"allow@private", MSB_GROUP_PRIVATE},
		{"allow@loopback", MSB_GROUP_LOOPBACK}, {"allow@link-local", MSB_GROUP_LINK_LOCAL},
		{"allow@meta", MSB_GROUP_META},		{"allow@multicast", MSB_GROUP_MULTICAST},
		{"allow@host", MSB_GROUP_HOST},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct msb_net_rule r = parse_one(cases[i].text);
		assert_int_equal(r.target, MSB_TARGET_GROUP);
		assert_int_equal(r.group, cases[i].group);
	}
}

static void test_ipv4(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("allow@203.0.113.7");
	assert_ipv4(&r, "203.0.113.7", 32);
	r = parse_one("allow@203.0.113.7/32");
	assert_ipv4(&r, "203.0.113.7", 32);
	r = parse_one("allow@10.0.0.0/8");
	assert_ipv4(&r, "10.0.0.0", 8);
	r = parse_one("allow@172.16.0.0/12");
	assert_ipv4(&r, "172.16.0.0", 12);
	r = parse_one("deny@0.0.0.0/0");
	assert_ipv4(&r, "0.0.0.0", 0);
	r = parse_one("allow@192.168.1.128/25");
	assert_ipv4(&r, "192.168.1.128", 25);
	r = parse_one("allow@255.255.255.255");
	assert_ipv4(&r, "255.255.255.255", 32);
}

static void test_ipv6(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("allow@[2001:db8::1]");
	assert_ipv6(&r, "2001:db8::1", 128);
	r = parse_one("allow@[2001:db8::/32]");
	assert_ipv6(&r, "2001:db8::", 32);
	r = parse_one("allow@[2001:DB8::/32]");
	assert_ipv6(&r, "2001:db8::", 32);
	r = parse_one("allow@[::1/128]");
	assert_ipv6(&r, "::1", 128);
	r = parse_one("deny@[::/0]");
	assert_ipv6(&r, "::", 0);
	r = parse_one("allow@[fe80::/10]:udp:546");
	assert_ipv6(&r, "fe80::", 10);
	assert_int_equal(r.proto, MSB_PROTO_UDP);
	assert_int_equal(r.port_lo, 546);
	r = parse_one("allow@[::ffff:192.0.2.1]");
	assert_ipv6(&r, "::ffff:192.0.2.1", 128);
}

static void test_domains(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("allow@example.com");
	assert_int_equal(r.target, MSB_TARGET_DOMAIN);
	assert_string_equal(r.domain, "example.com");

	/* Case is folded and one trailing dot dropped. */
	r = parse_one("allow@API.Example.COM.");
	assert_int_equal(r.target, MSB_TARGET_DOMAIN);
	assert_string_equal(r.domain, "api.example.com");

	r = parse_one("allow@xn--bcher-kva.example:tcp:443");
	assert_string_equal(r.domain, "xn--bcher-kva.example");
	r = parse_one("allow@123.example.com");
	assert_string_equal(r.domain, "123.example.com");
	r = parse_one("allow@a-b.c1");
	assert_string_equal(r.domain, "a-b.c1");

	/* 63-character labels and 253 characters in all are the limits. */
	char name[300];
	snprintf(name, sizeof(name), "allow@%.63s.%.63s.%.63s.%.61s.",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		 "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
		 "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
	r = parse_one(name);
	assert_int_equal(r.target, MSB_TARGET_DOMAIN);
	assert_int_equal(strlen(r.domain), MSB_DOMAIN_MAX);
	assert_int_equal(strncmp(r.domain, name + 6, MSB_DOMAIN_MAX), 0);
}

static void test_suffixes(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("allow@*.example.com");
	assert_int_equal(r.target, MSB_TARGET_SUFFIX);
	assert_string_equal(r.domain, "example.com");

	r = parse_one("allow@*.internal");
	assert_int_equal(r.target, MSB_TARGET_SUFFIX);
	assert_string_equal(r.domain, "internal");

	r = parse_one("allow@*.Example.COM.:tcp:443");
	assert_int_equal(r.target, MSB_TARGET_SUFFIX);
	assert_string_equal(r.domain, "example.com");
	assert_int_equal(r.proto, MSB_PROTO_TCP);
	assert_int_equal(r.port_lo, 443);
}

static void test_protos_and_ports(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("allow@public:any");
	assert_int_equal(r.proto, MSB_PROTO_ANY);
	r = parse_one("allow@public:tcp");
	assert_int_equal(r.proto, MSB_PROTO_TCP);
	assert_int_equal(r.port_lo, 0);
	assert_int_equal(r.port_hi, 0);
	r = parse_one("allow@public:udp");
	assert_int_equal(r.proto, MSB_PROTO_UDP);
	r = parse_one("allow@public:icmp");
	assert_int_equal(r.proto, MSB_PROTO_ICMP);

	r = parse_one("allow@public:tcp:443");
	assert_int_equal(r.port_lo, 443);
	assert_int_equal(r.port_hi, 443);
	r = parse_one("allow@public:udp:8000-8080");
	assert_int_equal(r.proto, MSB_PROTO_UDP);
	assert_int_equal(r.port_lo, 8000);
	assert_int_equal(r.port_hi, 8080);
	r = parse_one("allow@public:tcp:1-65535");
	assert_int_equal(r.port_lo, 1);
	assert_int_equal(r.port_hi, 65535);
	r = parse_one("allow@public:tcp:65535");
	assert_int_equal(r.port_lo, 65535);
	r = parse_one("allow@public:tcp:80-80");
	assert_int_equal(r.port_lo, 80);
	assert_int_equal(r.port_hi, 80);

	/* "any" ports is no restriction, so it goes with any protocol. */
	r = parse_one("allow@public:tcp:any");
	assert_int_equal(r.port_lo, 0);
	assert_int_equal(r.port_hi, 0);
	r = parse_one("allow@public:icmp:any");
	assert_int_equal(r.proto, MSB_PROTO_ICMP);
	r = parse_one("allow@any:any:any");
	assert_int_equal(r.target, MSB_TARGET_ANY);
	assert_int_equal(r.proto, MSB_PROTO_ANY);
}

static void test_case_folding(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("ALLOW:Ingress@PUBLIC:TCP:ANY");
	assert_int_equal(r.action, MSB_RULE_ALLOW);
	assert_int_equal(r.direction, MSB_RULE_INGRESS);
	assert_int_equal(r.target, MSB_TARGET_GROUP);
	assert_int_equal(r.group, MSB_GROUP_PUBLIC);
	assert_int_equal(r.proto, MSB_PROTO_TCP);
	assert_int_equal(parse_one("Deny@Link-Local").group, MSB_GROUP_LINK_LOCAL);
	assert_int_equal(parse_one("deny@DNS").target, MSB_TARGET_DNS);
}

static void test_whitespace(void **state)
{
	(void)state;
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_net_rules_parse("  allow@public ,\tdeny@meta\n,\r\n allow@dns  ",
					     &rules, &count, &err),
			 0);
	assert_int_equal(count, 3);
	assert_int_equal(rules[0].group, MSB_GROUP_PUBLIC);
	assert_int_equal(rules[1].group, MSB_GROUP_META);
	assert_int_equal(rules[2].target, MSB_TARGET_DNS);
	free(rules);

	assert_int_equal(parse_one(" allow@host:udp:53 ").port_lo, 53);
}

static void test_order_kept(void **state)
{
	(void)state;
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(
		msb_net_rules_parse("deny@meta,allow@10.0.0.0/8:tcp:22,allow@*.example.com,"
				    "deny:ingress@any",
				    &rules, &count, &err),
		0);
	assert_int_equal(count, 4);
	assert_int_equal(rules[0].action, MSB_RULE_DENY);
	assert_int_equal(rules[0].group, MSB_GROUP_META);
	assert_ipv4(&rules[1], "10.0.0.0", 8);
	assert_int_equal(rules[1].port_lo, 22);
	assert_int_equal(rules[2].target, MSB_TARGET_SUFFIX);
	assert_int_equal(rules[3].direction, MSB_RULE_INGRESS);
	assert_int_equal(rules[3].target, MSB_TARGET_ANY);
	free(rules);
}

static void test_append(void **state)
{
	(void)state;
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_net_rules_parse("allow@public,allow@dns", &rules, &count, &err), 0);
	assert_int_equal(count, 2);
	assert_int_equal(msb_net_rules_parse("deny@meta", &rules, &count, &err), 0);
	assert_int_equal(msb_net_rules_parse("allow@host:udp:53,deny@any", &rules, &count, &err),
			 0);
	assert_int_equal(count, 5);
	assert_int_equal(rules[0].group, MSB_GROUP_PUBLIC);
	assert_int_equal(rules[1].target, MSB_TARGET_DNS);
	assert_int_equal(rules[2].group, MSB_GROUP_META);
	assert_int_equal(rules[3].group, MSB_GROUP_HOST);
	assert_int_equal(rules[3].port_lo, 53);
	assert_int_equal(rules[4].action, MSB_RULE_DENY);
	assert_int_equal(rules[4].target, MSB_TARGET_ANY);
	free(rules);

	/* A NULL err is fine on success and on failure. */
	rules = NULL;
	count = 0;
	assert_int_equal(msb_net_rules_parse("allow@public", &rules, &count, NULL), 0);
	assert_int_equal(msb_net_rules_parse("alow@public", &rules, &count, NULL), -EINVAL);
	assert_int_equal(count, 1);
	free(rules);
}

/* ---- formatting ---------------------------------------------------------- */

static void test_format_canonical(void **state)
{
	(void)state;
	static const struct {
		const char *text, *canonical;
	} cases[] = {
		{"allow@public", "allow@public"},
		{"allow:egress@public:any:any", "allow@public"},
		{"allow@any:any:any", "allow@any"},
		{"deny:ingress@[2001:db8::/32]:tcp:80-90",
		 "deny:ingress@[2001:db8::/32]:tcp:80-90"},
		{"allow@*.example.com:tcp:443", "allow@*.example.com:tcp:443"},
		{"allow@*.EXAMPLE.com.:TCP:443", "allow@*.example.com:tcp:443"},
		{"allow@203.0.113.7", "allow@203.0.113.7"},
		{"allow@203.0.113.7/32", "allow@203.0.113.7"},
		{"allow@[2001:db8::1/128]", "allow@[2001:db8::1]"},
		{"allow@[2001:0DB8:0000::0001]", "allow@[2001:db8::1]"},
		{"allow@10.0.0.0/8", "allow@10.0.0.0/8"},
		{"allow@host:udp:53", "allow@host:udp:53"},
		{"allow@public:tcp:any", "allow@public:tcp"},
		{"allow@public:tcp:443-443", "allow@public:tcp:443"},
		{"deny:any@meta:icmp", "deny:any@meta:icmp"},
		{"deny:any@link-local:icmp:any", "deny:any@link-local:icmp"},
		{"allow@Example.COM.", "allow@example.com"},
		{"allow@dns:udp:53", "allow@dns:udp:53"},
		{"deny@0.0.0.0/0", "deny@0.0.0.0/0"},
		{"deny@[::/0]", "deny@[::/0]"}, /* the prefix stays inside the brackets */
	};
	char buf[512];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct msb_net_rule r = parse_one(cases[i].text);
		assert_string_equal(format(&r, buf, sizeof(buf)), cases[i].canonical);
	}
}

/* parse(format(parse(x))) == parse(x), and the canonical text is a fixed point. */
static void test_round_trip(void **state)
{
	(void)state;
	static const char *const texts[] = {
		"allow@public",
		"deny:ingress@private:tcp:22",
		"allow:any@loopback:udp:1-65535",
		"deny@link-local",
		"deny@meta",
		"allow:ingress@multicast:udp:5353",
		"allow@host:udp:53",
		"allow@dns",
		"deny:any@any:icmp",
		"allow@198.51.100.0/24:tcp:443",
		"allow@192.0.2.1",
		"allow@0.0.0.0/0",
		"allow@[2001:db8::/32]:udp:8000-9000",
		"allow@[::1]",
		"allow@[::ffff:192.0.2.1]",
		"allow@[fd00:ec2::254]",
		"allow@[::/0]",
		"allow@Api.Example.com.:tcp:8443",
		"allow@*.Internal",
		"allow@*.svc.cluster.local:tcp:80-90",
		"ALLOW:INGRESS@PUBLIC:UDP:ANY",
	};
	char buf[512];
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct msb_net_rule a = parse_one(texts[i]);
		char canonical[512];
		format(&a, canonical, sizeof(canonical));
		struct msb_net_rule b = parse_one(canonical);
		assert_memory_equal(&a, &b, sizeof(a));
		assert_string_equal(format(&b, buf, sizeof(buf)), canonical);
	}
}

static void test_format_space(void **state)
{
	(void)state;
	struct msb_net_rule r = parse_one("allow@public:tcp:443");
	const char *want = "allow@public:tcp:443";
	size_t n = strlen(want);
	char buf[64];
	assert_int_equal(msb_net_rule_format(&r, buf, n + 1), (int)n);
	assert_string_equal(buf, want);
	assert_int_equal(msb_net_rule_format(&r, buf, n), -ENOSPC);
	assert_int_equal(msb_net_rule_format(&r, buf, 1), -ENOSPC);
	assert_int_equal(msb_net_rule_format(&r, NULL, 0), -ENOSPC);
	assert_int_equal(msb_net_rule_format(&r, NULL, 10), -EINVAL);
	assert_int_equal(msb_net_rule_format(NULL, buf, sizeof(buf)), -EINVAL);

	/* The longest rule fits in a few hundred bytes. */
	char text[400], out[400];
	memset(text, 0, sizeof(text));
	strcpy(text, "allow:ingress@*.");
	for (size_t i = 0; i < 4; i++)
		strcat(text,
		       i < 3 ? "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
			     : "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	strcat(text, ":tcp:65534-65535");
	r = parse_one(text);
	assert_int_equal(msb_net_rule_format(&r, out, sizeof(out)), (int)strlen(text));
	assert_string_equal(out, text);
}

static void test_format_invalid_rules(void **state)
{
	(void)state;
	char buf[512];
	struct msb_net_rule good = parse_one("allow@public:tcp:443"), r;

	r = good;
	r.action = 0;
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = good;
	r.direction = 9;
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = good;
	r.target = 42;
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = good;
	r.group = 0;
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = good;
	r.proto = MSB_PROTO_ICMP; /* ports without tcp or udp */
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = good;
	r.port_lo = 500; /* lo > hi */
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);

	r = parse_one("allow@10.0.0.0/8");
	r.prefix = 33;
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = parse_one("allow@10.0.0.0/8");
	r.addr[3] = 1; /* host bits */
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = parse_one("allow@[2001:db8::/32]");
	r.prefix = 129;
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	r = parse_one("allow@example.com");
	r.domain[0] = '\0';
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
	memset(r.domain, 'a', sizeof(r.domain)); /* not terminated */
	assert_int_equal(msb_net_rule_format(&r, buf, sizeof(buf)), -EINVAL);
}

/* ---- errors -------------------------------------------------------------- */

static void test_error_action(void **state)
{
	(void)state;
	expect_error("alow@public", "'alow@public'", "unknown action 'alow'", "allow or deny",
		     "did you mean 'allow'?");
	expect_error("dney@public", "'dney'", "did you mean 'deny'?");
	expect_error("permit@public", "unknown action 'permit'", "allow or deny");
	expect_error("@public", "missing action", "allow or deny");
	expect_error("allow:egress:tcp@public", "too many ':'", "'allow:egress:tcp'");
	/* Longer than any keyword: reported, quoted in part, no suggestion. */
	expect_error("allowallowallowallowallowallowallowallowallowallowallowallowallow@public",
		     "unknown action 'allowallow", "...'");
}

static void test_error_direction(void **state)
{
	(void)state;
	expect_error("allow:out@public", "'allow:out@public'", "unknown direction 'out'",
		     "egress, ingress or any");
	expect_error("allow:egres@public", "'egres'", "did you mean 'egress'?");
	expect_error("allow:ingres@public", "did you mean 'ingress'?");
	expect_error("allow:@public", "missing direction", "egress, ingress or any");
}

static void test_error_target_words(void **state)
{
	(void)state;
	expect_error("allow@publc", "unknown target 'publc'", "did you mean 'public'?",
		     "link-local");
	expect_error("allow@linklocal", "unknown target 'linklocal'", "did you mean 'link-local'?");
	expect_error("allow@privat", "did you mean 'private'?");
	expect_error("allow@hots", "did you mean 'host'?");
	expect_error("allow@foo", "unknown target 'foo'", "a domain name");
	expect_error("allow@", "missing target");
	expect_error("allow@*", "wildcard in '*'", "*.example.com");
	expect_error("allow@a*.com", "wildcard in 'a*.com'");
	expect_error("allow@*.*.com", "wildcard");
	expect_error("allow@a@b", "more than one '@'");
	expect_error("allow", "missing '@'", "'allow'");
	expect_error("public", "missing '@'");
}

static void test_error_ipv4(void **state)
{
	(void)state;
	expect_error("allow@1.2.3.999", "bad IPv4 address '1.2.3.999'");
	expect_error("allow@1.2.3", "bad IPv4 address '1.2.3'");
	expect_error("allow@1.2.3.4.5", "bad IPv4 address");
	expect_error("allow@01.2.3.4", "bad IPv4 address '01.2.3.4'");
	expect_error("allow@256.0.0.0", "bad IPv4 address");
	expect_error("allow@1.2.3.4.", "bad IPv4 address");
	expect_error("allow@10.0.0.1/8", "host bits set in '10.0.0.1/8'", "network address",
		     "did you mean 10.0.0.0/8?");
	expect_error("allow@192.168.1.1/24", "did you mean 192.168.1.0/24?");
	expect_error("allow@10.0.0.0/33", "bad prefix '/33'", "0-32");
	expect_error("allow@10.0.0.0/08", "bad prefix '/08'");
	expect_error("allow@10.0.0.0/+8", "bad prefix '/+8'");
	expect_error("allow@10.0.0.0/-1", "bad prefix '/-1'");
	expect_error("allow@10.0.0.0/", "bad prefix '/'");
	expect_error("allow@10.0.0.0/8/8", "bad prefix '/8/8'");
	expect_error("allow@10.0.0.0/1000", "bad prefix '/1000'");
	expect_error("allow@example.com/24", "bad IPv4 address 'example.com'");
}

static void test_error_ipv6(void **state)
{
	(void)state;
	expect_error("allow@[2001:db8::1/32]", "host bits set in '[2001:db8::1/32]'",
		     "did you mean [2001:db8::/32]?");
	expect_error("allow@[2001:db8::/129]", "bad prefix '/129'", "0-128");
	expect_error("allow@[2001:db8::/032]", "bad prefix '/032'");
	expect_error("allow@[fe80::1%eth0]", "zone id", "'[fe80::1%eth0]'");
	expect_error("allow@[2001:db8::g]", "bad IPv6 address '2001:db8::g'");
	expect_error("allow@[1.2.3.4]", "bad IPv6 address '1.2.3.4'");
	expect_error("allow@[]", "bad IPv6 address ''");
	expect_error("allow@[2001:db8::1", "unterminated '['");
	expect_error("allow@[::1]x", "unexpected 'x' after '[::1]'");
	expect_error("allow@[2001:db8::]/32", "outside the brackets",
		     "did you mean [2001:db8::/32]?");
	/* Without brackets the address would be cut at its colons. */
	expect_error("allow@2001:db8::1", "needs brackets", "did you mean [2001:db8::1]?");
	expect_error("allow@::1", "did you mean [::1]?");
	expect_error("allow@2001:db8::/32:tcp:443", "did you mean [2001:db8::/32]?");
}

static void test_error_domains(void **state)
{
	(void)state;
	expect_error("allow@a.123", "'a.123'", "all-digit label '123'");
	expect_error("allow@*.10", "all-digit label '10'");
	expect_error("allow@foo.", "single label", "'foo.'");
	expect_error("allow@a..com", "empty label", "'a..com'");
	expect_error("allow@.example.com", "empty label");
	expect_error("allow@example.com..", "empty label");
	expect_error("allow@-a.com", "label '-a'", "'-'");
	expect_error("allow@a-.com", "label 'a-'");
	expect_error("allow@a_b.com", "bad character '_'", "'a_b.com'");
	expect_error("allow@*.", "missing domain name", "'*.'");
	expect_error("allow@*..", "missing domain name");
	expect_error("allow@*.a..b", "empty label");

	char label[64 + 1];
	memset(label, 'x', 64);
	label[64] = '\0';
	char text[128];
	snprintf(text, sizeof(text), "allow@%s.com", label);
	expect_error(text, "label of 64 characters");

	/* 254 characters, one too many; the quotes in the message are cut. */
	char name[300];
	snprintf(name, sizeof(name), "allow@%.63s.%.63s.%.63s.%.62s",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
		 "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
		 "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
	assert_int_equal(strlen(name + 6), 254);
	expect_error(name, "too long", "at most 253", "...'");

	/* A target longer than any domain is refused before it is looked at. */
	char huge[1200];
	strcpy(huge, "allow@");
	memset(huge + 6, 'a', 1000);
	strcpy(huge + 1006, ".com");
	expect_error(huge, "target", "too long");
}

static void test_error_protos(void **state)
{
	(void)state;
	expect_error("allow@public:tpc", "unknown protocol 'tpc'", "any, tcp, udp or icmp",
		     "did you mean 'tcp'?");
	expect_error("allow@public:upd", "did you mean 'udp'?");
	expect_error("allow@public:icpm", "did you mean 'icmp'?");
	expect_error("allow@public:sctp", "unknown protocol 'sctp'");
	expect_error("allow@public:443", "unknown protocol '443'", "like tcp:443");
	expect_error("allow@public:", "missing protocol");
}

static void test_error_ports(void **state)
{
	(void)state;
	expect_error("allow@public:tcp:70000", "'allow@public:tcp:70000'",
		     "port '70000' out of range", "1-65535, lo-hi or any");
	expect_error("allow@public:tcp:0", "port '0' out of range");
	expect_error("allow@public:tcp:65536", "port '65536' out of range");
	expect_error("allow@public:tcp:99999999999999999999", "out of range");
	expect_error("allow@public:tcp:080", "port '080'", "leading zero");
	expect_error("allow@public:tcp:90-80", "'90-80'", "backwards", "did you mean 80-90?");
	expect_error("allow@public:tcp:80-", "bad port range '80-'");
	expect_error("allow@public:tcp:-80", "bad port range '-80'");
	expect_error("allow@public:tcp:1-2-3", "bad port range '1-2-3'");
	expect_error("allow@public:tcp:80-70000", "port '70000' out of range");
	expect_error("allow@public:tcp:http", "bad port 'http'", "1-65535");
	expect_error("allow@public:tcp:ayn", "bad port 'ayn'", "did you mean 'any'?");
	expect_error("allow@public:tcp:+80", "bad port '+80'");
	expect_error("allow@public:tcp:", "missing ports");
	expect_error("allow@public:tcp:80:90", "too many ':'");
	expect_error("allow@public:icmp:80", "ports need tcp or udp, not icmp");
	expect_error("allow@public:any:80", "ports need tcp or udp, not any");
	expect_error("allow@any:any:80-90", "ports need tcp or udp");
}

static void test_error_structure(void **state)
{
	(void)state;
	expect_error("allow@public,,deny@meta", "'allow@public,,deny@meta'", "rule 2 is empty");
	expect_error("allow@public,", "rule 2 is empty");
	expect_error(",allow@public", "rule 1 is empty");
	expect_error("allow@public, ,deny@meta", "rule 2 is empty");
	expect_error("", "none given");
	expect_error(" \t\n", "none given");
	expect_error("allow @public", "whitespace");
	expect_error("allow@public:tcp: 443", "whitespace");
	expect_error("allow@pub\x01lic", "byte 0x01", "'allow@pub?lic'");
	expect_error("allow@caf\xc3\xa9.com", "byte 0xc3");
	expect_error("allow@public\x7f", "byte 0x7f");

	/* The second rule is bad: nothing at all is appended. */
	expect_error("allow@public,deny@publix", "'deny@publix'", "did you mean 'public'?");

	/* A long bad rule is quoted in part. */
	char text[400];
	strcpy(text, "alow@");
	memset(text + 5, 'x', 300);
	strcpy(text + 305, ".com");
	expect_error(text, "unknown action 'alow'", "...'");
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_net_rules_parse(text, &rules, &count, &err), -EINVAL);
	assert_true(strlen(err.msg) < 300);
	assert_null(rules);
	assert_int_equal(count, 0);
}

static void test_error_arguments(void **state)
{
	(void)state;
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_net_rules_parse(NULL, &rules, &count, &err), -EINVAL);
	assert_int_equal(err.code, -EINVAL);
	assert_int_equal(msb_net_rules_parse("allow@public", NULL, &count, &err), -EINVAL);
	assert_int_equal(msb_net_rules_parse("allow@public", &rules, NULL, &err), -EINVAL);
	count = 3; /* a count without an array */
	assert_int_equal(msb_net_rules_parse("allow@public", &rules, &count, &err), -EINVAL);
	assert_int_equal(count, 3);
	assert_null(rules);
}

static void test_limits(void **state)
{
	(void)state;
	const char *one = "deny@any,";
	size_t per = strlen(one);
	char *text = malloc(per * (MSB_NET_RULES_MAX + 1) + 1);
	assert_non_null(text);
	for (size_t i = 0; i <= MSB_NET_RULES_MAX; i++)
		memcpy(text + i * per, one, per);

	/* MSB_NET_RULES_MAX rules are fine... */
	text[per * MSB_NET_RULES_MAX - 1] = '\0';
	struct msb_net_rule *rules = NULL;
	size_t count = 0;
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_net_rules_parse(text, &rules, &count, &err), 0);
	assert_int_equal(count, MSB_NET_RULES_MAX);

	/* ...one more is not, neither appended nor in one text. */
	struct msb_net_rule *before = rules;
	assert_int_equal(msb_net_rules_parse("allow@public", &rules, &count, &err), -E2BIG);
	assert_int_equal(err.code, -E2BIG);
	assert_non_null(strstr(err.msg, "too many"));
	assert_int_equal(count, MSB_NET_RULES_MAX);
	assert_ptr_equal(rules, before);
	free(rules);

	text[per * (MSB_NET_RULES_MAX + 1) - 1] = '\0';
	expect_error_code(text, -E2BIG, NEEDLES("too many", "4096"));
	free(text);

	/* The text itself: MSB_NET_RULES_TEXT_MAX bytes are fine, one more is not. */
	text = malloc(MSB_NET_RULES_TEXT_MAX + 2);
	assert_non_null(text);
	memset(text, ' ', MSB_NET_RULES_TEXT_MAX + 1);
	memcpy(text, "allow@any", 9);
	text[MSB_NET_RULES_TEXT_MAX] = '\0';
	struct msb_net_rule r = parse_one(text);
	assert_int_equal(r.target, MSB_TARGET_ANY);
	text[MSB_NET_RULES_TEXT_MAX] = ' ';
	text[MSB_NET_RULES_TEXT_MAX + 1] = '\0';
	expect_error_code(text, -E2BIG, NEEDLES("too long"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_actions_and_directions),
		cmocka_unit_test(test_target_keywords),
		cmocka_unit_test(test_groups),
		cmocka_unit_test(test_ipv4),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_suffixes),
		cmocka_unit_test(test_protos_and_ports),
		cmocka_unit_test(test_case_folding),
		cmocka_unit_test(test_whitespace),
		cmocka_unit_test(test_order_kept),
		cmocka_unit_test(test_append),
		cmocka_unit_test(test_format_canonical),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_format_space),
		cmocka_unit_test(test_format_invalid_rules),
		cmocka_unit_test(test_error_action),
		cmocka_unit_test(test_error_direction),
		cmocka_unit_test(test_error_target_words),
		cmocka_unit_test(test_error_ipv4),
		cmocka_unit_test(test_error_ipv6),
		cmocka_unit_test(test_error_domains),
		cmocka_unit_test(test_error_protos),
		cmocka_unit_test(test_error_ports),
		cmocka_unit_test(test_error_structure),
		cmocka_unit_test(test_error_arguments),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
