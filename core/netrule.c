/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Network rules: "allow@public:tcp:443,deny@meta" into struct msb_net_rule,
 * and a rule back to its canonical text.
 *
 * The grammar is in docs/network-rules.md.  This file checks syntax and value
 * ranges only; what a group covers and how rules are enforced belong to the
 * network module (plugins/net).
 *
 * The text is untrusted (it comes from the command line and from specs, and
 * this parser is fuzzed), so: the caller's string is only read through
 * bounded spans and never written, a field is copied into a fixed-size local
 * buffer (or refused as too long) before it is parsed, nothing recurses, and
 * an error leaves the caller's array exactly as it was.
 */
#include <msb/msb.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "suggest.h"

/* How much of a rule or token an error message quotes before "...". */
#define QUOTE_MAX 60
#define QUOTE_BUF (QUOTE_MAX + sizeof("..."))

/* Longest keyword we look up; anything longer is simply unknown. */
#define WORD_MAX 32

/* Longest target: "*." + a domain name + its optional trailing dot. */
#define TARGET_MAX (MSB_DOMAIN_MAX + 3)

/* Longest candidate tried when guessing an unbracketed IPv6 address. */
#define BARE_IPV6_MAX 63

/* Longest canonical text of a valid rule is under 300 bytes. */
#define FORMAT_MAX 384

/* Longest "a, b or c" list of keywords. */
#define LIST_MAX 160

#define RULE_SYNTAX    "<action>[:<direction>]@<target>[:<proto>[:<ports>]]"
#define PORTS_EXPECTED "expected 1-65535, lo-hi or any"

/* A piece of the caller's text; not NUL-terminated. */
struct span {
	const char *p;
	size_t n;
};

static struct span span_of(const char *begin, const char *end)
{
	return (struct span){begin, (size_t)(end - begin)};
}

static const char *span_end(struct span s)
{
	return s.p + s.n;
}

static const char *span_chr(struct span s, char c)
{
	return s.n ? memchr(s.p, c, s.n) : NULL;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static struct span trim(struct span s)
{
	while (s.n && is_space(s.p[0])) {
		s.p++;
		s.n--;
	}
	while (s.n && is_space(s.p[s.n - 1]))
		s.n--;
	return s;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char to_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/*
 * Copy s into out for an error message: at most QUOTE_MAX bytes, "..." when
 * cut, and anything unprintable as '?' so the message stays one clean line.
 */
static const char *quote(char out[QUOTE_BUF], struct span s)
{
	size_t n = s.n > QUOTE_MAX ? QUOTE_MAX : s.n;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s.p[i];
		out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (n < s.n) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

static const char *quote_str(char out[QUOTE_BUF], const char *s)
{
	return quote(out, (struct span){s, strlen(s)});
}

/* Copy s into a NUL-terminated buffer; false when it does not fit. */
static bool copy_span(char *out, size_t size, struct span s)
{
	if (s.n >= size)
		return false;
	memcpy(out, s.p, s.n);
	out[s.n] = '\0';
	return true;
}

/* ---- keywords ------------------------------------------------------------ */

/*
 * One table per word class: the parser looks words up in it, msb_suggest
 * takes its names as candidates, the messages list it as what was expected,
 * and msb_net_rule_format takes names from it, so a word is spelled once.
 */
struct keyword {
	const char *name;
	int value; /* the enum value the word stands for */
	int group; /* targets only: the enum msb_rule_group of a group word */
};

#define KEYWORDS_MAX 16

static const struct keyword actions[] = {
	{"allow", MSB_RULE_ALLOW, 0},
	{"deny", MSB_RULE_DENY, 0},
	{NULL, 0, 0},
};

static const struct keyword directions[] = {
	{"egress", MSB_RULE_EGRESS, 0},
	{"ingress", MSB_RULE_INGRESS, 0},
	{"any", MSB_RULE_ANY_DIRECTION, 0},
	{NULL, 0, 0},
};

static const struct keyword targets[] = {
	{"any", MSB_TARGET_ANY, 0},
	{"dns", MSB_TARGET_DNS, 0},
	{"public", MSB_TARGET_GROUP, MSB_GROUP_PUBLIC},
	{"private", MSB_TARGET_GROUP, MSB_GROUP_PRIVATE},
	{"loopback", MSB_TARGET_GROUP, MSB_GROUP_LOOPBACK},
	{"link-local", MSB_TARGET_GROUP, MSB_GROUP_LINK_LOCAL},
	{"meta", MSB_TARGET_GROUP, MSB_GROUP_META},
	{"multicast", MSB_TARGET_GROUP, MSB_GROUP_MULTICAST},
	{"host", MSB_TARGET_GROUP, MSB_GROUP_HOST},
	{NULL, 0, 0},
};

static const struct keyword protos[] = {
	{"any", MSB_PROTO_ANY, 0},
	{"tcp", MSB_PROTO_TCP, 0},
	{"udp", MSB_PROTO_UDP, 0},
	{"icmp", MSB_PROTO_ICMP, 0},
	{NULL, 0, 0},
};

/* The one word a ports field may hold, so "ayn" gets a suggestion too. */
static const struct keyword port_words[] = {
	{"any", 0, 0},
	{NULL, 0, 0},
};

/* Keywords are case-insensitive: "ALLOW@Public" means allow@public. */
static const struct keyword *kw_find(const struct keyword *table, const char *word)
{
	for (const struct keyword *k = table; k->name; k++)
		if (!strcasecmp(k->name, word))
			return k;
	return NULL;
}

static const char *kw_name(const struct keyword *table, int value)
{
	for (const struct keyword *k = table; k->name; k++)
		if (k->value == value)
			return k->name;
	return NULL;
}

static const char *kw_suggest(const struct keyword *table, const char *word)
{
	const char *candidates[KEYWORDS_MAX + 1];
	size_t n = 0;
	for (const struct keyword *k = table; k->name && n < KEYWORDS_MAX; k++)
		candidates[n++] = k->name;
	candidates[n] = NULL;
	return msb_suggest(word, candidates);
}

/* "a, b or c": the table's words whose value is only_value (any when < 0). */
static const char *kw_list(const struct keyword *table, int only_value, char *out, size_t size)
{
	size_t total = 0, len = 0;
	for (const struct keyword *k = table; k->name; k++)
		total += only_value < 0 || k->value == only_value;
	size_t i = 0;
	out[0] = '\0';
	for (const struct keyword *k = table; k->name; k++) {
		if (only_value >= 0 && k->value != only_value)
			continue;
		const char *sep = i == 0 ? "" : i + 1 == total ? " or " : ", ";
		int w = snprintf(out + len, size - len, "%s%s", sep, k->name);
		if (w < 0 || (size_t)w >= size - len)
			break; /* cannot happen with these tables; keep what fits */
		len += (size_t)w;
		i++;
	}
	return out;
}

/* ---- errors -------------------------------------------------------------- */

/* What the field parsers need to report an error about the rule. */
struct ctx {
	struct span rule;
	struct msb_error *err;
};

/* Report "net rule '<rule>': <what>" and return code. */
static int fail(const struct ctx *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(const struct ctx *c, int code, const char *fmt, ...)
{
	char what[MSB_ERROR_MSG_MAX], q[QUOTE_BUF];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return msb_error_set(c->err, code, "net rule '%s': %s", quote(q, c->rule), what);
}

/*
 * A keyword field: look tok up in table, or report it as an unknown `what`
 * with the table's words as expected, a suggestion when one is close, and
 * `extra` (a further hint, may be "") after the expected list.
 */
static int parse_word(const struct ctx *c, struct span tok, const struct keyword *table,
		      const char *what, const char *extra, const struct keyword **found)
{
	char word[WORD_MAX + 1], q[QUOTE_BUF], list[LIST_MAX];
	if (copy_span(word, sizeof(word), tok) && (*found = kw_find(table, word)))
		return 0;
	kw_list(table, -1, list, sizeof(list));
	if (!tok.n)
		return fail(c, -EINVAL, "missing %s (expected %s)", what, list);
	const char *hint = tok.n < sizeof(word) ? kw_suggest(table, word) : NULL;
	return fail(c, -EINVAL, "unknown %s '%s' (expected %s%s)%s%s%s", what, quote(q, tok), list,
		    extra, hint ? "; did you mean '" : "", hint ? hint : "", hint ? "'?" : "");
}

/* ---- action, direction --------------------------------------------------- */

static int parse_action(const struct ctx *c, struct span tok, struct msb_net_rule *r)
{
	const struct keyword *k;
	int ret = parse_word(c, tok, actions, "action", "", &k);
	if (ret == 0)
		r->action = k->value;
	return ret;
}

static int parse_direction(const struct ctx *c, struct span tok, struct msb_net_rule *r)
{
	const struct keyword *k;
	int ret = parse_word(c, tok, directions, "direction", "", &k);
	if (ret == 0)
		r->direction = k->value;
	return ret;
}

/* ---- targets ------------------------------------------------------------- */

/*
 * A prefix length: decimal, no sign, no leading zero (so "/08" is not
 * quietly read as 8 where another tool might read octal), at most max.
 */
static bool parse_prefix(const char *s, unsigned max, uint8_t *prefix)
{
	size_t n = strlen(s);
	if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return false;
	*prefix = (uint8_t)v;
	return true;
}

/* The network of addr/prefix into net; true when addr had host bits set. */
static bool network_of(const uint8_t *addr, size_t bytes, unsigned prefix, uint8_t *net)
{
	bool host_bits = false;
	for (size_t i = 0; i < bytes; i++) {
		unsigned bits = prefix >= 8 * (i + 1) ? 8 : prefix > 8 * i ? prefix - 8 * i : 0;
		uint8_t mask = (uint8_t)(0xff00u >> bits);
		net[i] = addr[i] & mask;
		host_bits |= net[i] != addr[i];
	}
	return host_bits;
}

/* name: a lower-case copy of the target, digits, dots and maybe one '/'. */
static int parse_ipv4(const struct ctx *c, char *name, struct msb_net_rule *r)
{
	char q[QUOTE_BUF], qa[QUOTE_BUF];
	quote_str(q, name);
	char *slash = strchr(name, '/');
	r->prefix = 32;
	if (slash) {
		*slash = '\0';
		if (!parse_prefix(slash + 1, 32, &r->prefix))
			return fail(c, -EINVAL,
				    "bad prefix '/%s' in '%s' (expected a decimal 0-32 without "
				    "leading zeros, like 10.0.0.0/8)",
				    quote_str(qa, slash + 1), q);
	}
	/* glibc's inet_pton is strict: four decimal octets, no leading zeros. */
	if (inet_pton(AF_INET, name, r->addr) != 1) {
		if (!slash)
			return fail(c, -EINVAL,
				    "bad IPv4 address '%s' (expected four numbers 0-255 separated "
				    "by dots, like 203.0.113.7)",
				    q);
		return fail(c, -EINVAL,
			    "bad IPv4 address '%s' in '%s' (expected a CIDR like 10.0.0.0/8; an "
			    "IPv6 one goes in brackets, like [2001:db8::/32])",
			    quote_str(qa, name), q);
	}
	uint8_t net[4];
	if (network_of(r->addr, 4, r->prefix, net)) {
		char a[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, net, a, sizeof(a));
		return fail(
			c, -EINVAL,
			"host bits set in '%s' (expected a network address); did you mean %s/%u?",
			q, a, r->prefix);
	}
	r->target = MSB_TARGET_IPV4;
	return 0;
}

/* name: a lower-case copy of the target, "[...]". */
static int parse_ipv6(const struct ctx *c, char *name, size_t len, struct msb_net_rule *r)
{
	char q[QUOTE_BUF], qa[QUOTE_BUF];
	quote_str(q, name);
	/* The rule splitter only hands over a '[' target ending in ']'. */
	if (len < 2 || name[len - 1] != ']')
		return fail(c, -EINVAL,
			    "unterminated '[' in '%s' (expected [IPv6] or [IPv6/prefix])", q);
	name[len - 1] = '\0';
	char *addr = name + 1;
	if (strchr(addr, '%'))
		return fail(c, -EINVAL,
			    "zone id in '%s' (a rule names addresses, not interfaces; expected "
			    "[IPv6] or [IPv6/prefix] without %%zone)",
			    q);
	char *slash = strchr(addr, '/');
	r->prefix = 128;
	if (slash) {
		*slash = '\0';
		if (!parse_prefix(slash + 1, 128, &r->prefix))
			return fail(c, -EINVAL,
				    "bad prefix '/%s' in '%s' (expected a decimal 0-128 without "
				    "leading zeros, like [2001:db8::/32])",
				    quote_str(qa, slash + 1), q);
	}
	if (inet_pton(AF_INET6, addr, r->addr) != 1)
		return fail(c, -EINVAL,
			    "bad IPv6 address '%s' in '%s' (expected like [2001:db8::1] or "
			    "[2001:db8::/32])",
			    quote_str(qa, addr), q);
	uint8_t net[16];
	if (network_of(r->addr, 16, r->prefix, net)) {
		char a[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, net, a, sizeof(a));
		return fail(c, -EINVAL,
			    "host bits set in '%s' (expected a network address); did you mean "
			    "[%s/%u]?",
			    q, a, r->prefix);
	}
	r->target = MSB_TARGET_IPV6;
	return 0;
}

/*
 * A domain name, lower case, NUL-terminated, the trailing dot already
 * stripped: labels of 1-63 letters, digits and inner hyphens, 253 in all.
 * A suffix (after "*.") may be one label ("*.internal"); an exact name needs
 * a dot, since a bare word is a keyword or a typo of one.  `token` is the
 * quoted target as written, for messages.
 */
static int check_domain(const struct ctx *c, const char *token, const char *name, bool suffix)
{
	static const char expected[] = "expected letters, digits and '-' in dot-separated labels, "
				       "like example.com";
	size_t len = strlen(name);
	if (len == 0)
		return fail(c, -EINVAL, "missing domain name in '%s' (%s)", token, expected);
	if (len > MSB_DOMAIN_MAX)
		return fail(c, -EINVAL, "domain name '%s' is too long (at most %d characters)",
			    token, MSB_DOMAIN_MAX);
	const char *label = name;
	for (;;) {
		size_t n = strcspn(label, ".");
		bool digits = n > 0;
		if (n == 0)
			return fail(c, -EINVAL, "empty label in domain name '%s' (%s)", token,
				    expected);
		if (n > 63)
			return fail(c, -EINVAL,
				    "label of %zu characters in domain name '%s' (at most 63)", n,
				    token);
		for (size_t i = 0; i < n; i++) {
			char ch = label[i];
			digits &= is_digit(ch);
			if (!is_digit(ch) && !(ch >= 'a' && ch <= 'z') && ch != '-')
				return fail(c, -EINVAL,
					    "bad character '%c' in domain name '%s' (%s)", ch,
					    token, expected);
		}
		if (label[0] == '-' || label[n - 1] == '-')
			return fail(c, -EINVAL,
				    "label '%.*s' in domain name '%s' starts or ends with '-' (%s)",
				    (int)n, label, token, expected);
		if (!label[n]) {
			/*
			 * No top-level domain is numeric; a name ending in digits is
			 * a mistyped address, and resolving it would be a surprise.
			 */
			if (digits)
				return fail(c, -EINVAL,
					    "domain name '%s' ends in the all-digit label '%.*s' "
					    "(expected a name like example.com, or an IP address)",
					    token, (int)n, label);
			break;
		}
		label += n + 1;
	}
	if (!suffix && !strchr(name, '.')) {
		char qn[QUOTE_BUF];
		return fail(c, -EINVAL,
			    "domain name '%s' has a single label (expected a name with a dot, like "
			    "example.com, or *.%s for any name under it)",
			    token, quote_str(qn, name));
	}
	return 0;
}

/* name: a lower-case copy of the target; "*.suffix" or a name with a dot. */
static int parse_domain(const struct ctx *c, char *name, struct msb_net_rule *r)
{
	char q[QUOTE_BUF];
	quote_str(q, name);
	bool suffix = name[0] == '*' && name[1] == '.';
	char *d = suffix ? name + 2 : name;
	size_t len = strlen(d);
	/* A fully qualified "example.com." names the same host: drop one dot. */
	if (len && d[len - 1] == '.')
		d[--len] = '\0';
	int ret = check_domain(c, q, d, suffix);
	if (ret < 0)
		return ret;
	memcpy(r->domain, d, len + 1);
	r->target = suffix ? MSB_TARGET_SUFFIX : MSB_TARGET_DOMAIN;
	return 0;
}

/* What a target may be, for messages. */
static const char *target_expected(char *out, size_t size)
{
	char groups[LIST_MAX];
	snprintf(out, size,
		 "expected any, dns, a group (%s), an IP address or CIDR, or a domain name",
		 kw_list(targets, MSB_TARGET_GROUP, groups, sizeof(groups)));
	return out;
}

static int parse_target(const struct ctx *c, struct span tok, struct msb_net_rule *r)
{
	char name[TARGET_MAX + 1], q[QUOTE_BUF], expected[LIST_MAX + 128];
	if (!tok.n)
		return fail(c, -EINVAL, "missing target (%s)",
			    target_expected(expected, sizeof(expected)));
	if (tok.n > TARGET_MAX)
		return fail(c, -EINVAL,
			    "target '%s' is too long (a domain name has at most %d characters)",
			    quote(q, tok), MSB_DOMAIN_MAX);
	for (size_t i = 0; i < tok.n; i++)
		name[i] = to_lower(tok.p[i]);
	name[tok.n] = '\0';

	if (name[0] == '[')
		return parse_ipv6(c, name, tok.n, r);
	const struct keyword *k = kw_find(targets, name);
	if (k) {
		r->target = k->value;
		r->group = k->group;
		return 0;
	}
	bool suffix = name[0] == '*' && name[1] == '.';
	if (strchr(suffix ? name + 2 : name, '*'))
		return fail(
			c, -EINVAL,
			"wildcard in '%s' (expected '*.' only at the start, like *.example.com)",
			quote(q, tok));
	if (suffix)
		return parse_domain(c, name, r);
	/* Digits and dots is an address attempt, never a domain: 1.2.3.999 is a typo. */
	if (strchr(name, '/') || strspn(name, "0123456789.") == tok.n)
		return parse_ipv4(c, name, r);
	if (strchr(name, '.'))
		return parse_domain(c, name, r);
	const char *hint = tok.n <= WORD_MAX ? kw_suggest(targets, name) : NULL;
	return fail(c, -EINVAL, "unknown target '%s' (%s)%s%s%s", quote(q, tok),
		    target_expected(expected, sizeof(expected)), hint ? "; did you mean '" : "",
		    hint ? hint : "", hint ? "'?" : "");
}

/*
 * "allow@2001:db8::1:tcp" is split at the colons into nonsense; when what
 * follows '@' starts with an IPv6 address (and /prefix), say to bracket it.
 * Returns 0 when it does not look like one, so the ordinary errors apply.
 */
static int check_bare_ipv6(const struct ctx *c, struct span rest)
{
	size_t colons = 0;
	for (size_t i = 0; i < rest.n; i++)
		colons += rest.p[i] == ':';
	bool empty_field = false;
	for (size_t i = 1; i < rest.n; i++)
		empty_field |= rest.p[i - 1] == ':' && rest.p[i] == ':';
	if (!rest.n || rest.p[0] == '[' || (colons < 3 && !empty_field))
		return 0;
	/* Longest first: the candidates are rest and its prefixes before a ':'. */
	size_t n = rest.n;
	while (n > 0) {
		char cand[BARE_IPV6_MAX + 1];
		uint8_t addr[16], prefix;
		if (copy_span(cand, sizeof(cand), (struct span){rest.p, n})) {
			char *slash = strchr(cand, '/');
			if (slash)
				*slash = '\0';
			if (inet_pton(AF_INET6, cand, addr) == 1 &&
			    (!slash || parse_prefix(slash + 1, 128, &prefix))) {
				char q[QUOTE_BUF];
				struct span tok = {rest.p, n};
				quote(q, tok);
				return fail(c, -EINVAL,
					    "IPv6 address '%s' needs brackets (expected [IPv6] or "
					    "[IPv6/prefix]); did you mean [%s]?",
					    q, q);
			}
		}
		while (n > 0 && rest.p[n - 1] != ':')
			n--;
		if (n > 0)
			n--; /* drop the ':' itself */
	}
	return 0;
}

/* ---- protocol, ports ----------------------------------------------------- */

static int parse_proto(const struct ctx *c, struct span tok, struct msb_net_rule *r)
{
	/* "allow@public:443": the port came without its protocol. */
	bool number = tok.n > 0 && tok.n <= 5;
	for (size_t i = 0; i < tok.n && number; i++)
		number = is_digit(tok.p[i]);
	const struct keyword *k;
	int ret = parse_word(c, tok, protos, "protocol",
			     number ? "; ports follow the protocol, like tcp:443" : "", &k);
	if (ret == 0)
		r->proto = k->value;
	return ret;
}

enum port_result { PORT_OK, PORT_NOT_A_NUMBER, PORT_OUT_OF_RANGE, PORT_LEADING_ZERO };

/* One port: 1-65535, decimal, no leading zero (as with prefixes). */
static enum port_result parse_port(struct span s, uint16_t *port)
{
	if (!s.n)
		return PORT_NOT_A_NUMBER;
	unsigned long v = 0;
	for (size_t i = 0; i < s.n; i++) {
		if (!is_digit(s.p[i]))
			return PORT_NOT_A_NUMBER;
		if (v <= 65535) /* stop growing: "99999999999" is just out of range */
			v = v * 10 + (unsigned long)(s.p[i] - '0');
	}
	if (v < 1 || v > 65535)
		return PORT_OUT_OF_RANGE;
	if (s.p[0] == '0')
		return PORT_LEADING_ZERO;
	*port = (uint16_t)v;
	return PORT_OK;
}

static int parse_ports(const struct ctx *c, struct span tok, struct msb_net_rule *r)
{
	char q[QUOTE_BUF], word[WORD_MAX + 1];
	r->port_lo = r->port_hi = 0;
	if (copy_span(word, sizeof(word), tok) && kw_find(port_words, word))
		return 0;
	if (r->proto != MSB_PROTO_TCP && r->proto != MSB_PROTO_UDP)
		return fail(c, -EINVAL, "ports need tcp or udp, not %s (like tcp:%s)",
			    kw_name(protos, r->proto), quote(q, tok));
	const char *dash = span_chr(tok, '-');
	struct span lo = dash ? span_of(tok.p, dash) : tok;
	struct span hi = dash ? span_of(dash + 1, span_end(tok)) : tok;
	if (dash && (!lo.n || !hi.n || span_chr(hi, '-')))
		return fail(c, -EINVAL, "bad port range '%s' (expected lo-hi, like 8000-8080)",
			    quote(q, tok));
	struct span parts[2] = {lo, hi};
	uint16_t ports[2];
	for (int i = 0; i < 2; i++) {
		const char *hint;
		switch (parse_port(parts[i], &ports[i])) {
		case PORT_OK:
			break;
		case PORT_OUT_OF_RANGE:
			return fail(c, -EINVAL, "port '%s' out of range (%s)", quote(q, parts[i]),
				    PORTS_EXPECTED);
		case PORT_LEADING_ZERO:
			return fail(c, -EINVAL, "port '%s' has a leading zero (%s)",
				    quote(q, parts[i]), PORTS_EXPECTED);
		case PORT_NOT_A_NUMBER:
		default:
			hint = copy_span(word, sizeof(word), parts[i])
				       ? kw_suggest(port_words, word)
				       : NULL;
			return fail(c, -EINVAL, "bad port '%s' (%s)%s%s%s", quote(q, parts[i]),
				    PORTS_EXPECTED, hint ? "; did you mean '" : "",
				    hint ? hint : "", hint ? "'?" : "");
		}
	}
	if (ports[0] > ports[1])
		return fail(c, -EINVAL,
			    "port range '%s' is backwards (expected lo-hi with lo <= hi); did you "
			    "mean %u-%u?",
			    quote(q, tok), ports[1], ports[0]);
	r->port_lo = ports[0];
	r->port_hi = ports[1];
	return 0;
}

/* ---- one rule ------------------------------------------------------------ */

/* Rules are printable ASCII without spaces; say which byte is not. */
static int check_chars(const struct ctx *c)
{
	for (size_t i = 0; i < c->rule.n; i++) {
		unsigned char ch = (unsigned char)c->rule.p[i];
		if (is_space((char)ch))
			return fail(c, -EINVAL,
				    "unexpected whitespace at offset %zu (expected a rule without "
				    "spaces, like allow@public:tcp:443)",
				    i);
		if (ch < 0x20 || ch >= 0x7f)
			return fail(c, -EINVAL,
				    "unexpected byte 0x%02x at offset %zu (rules are plain ASCII)",
				    ch, i);
	}
	return 0;
}

/* rule: trimmed, non-empty.  r: zeroed. */
static int parse_rule(struct span rule, struct msb_net_rule *r, struct msb_error *err)
{
	const struct ctx ctx = {rule, err}, *c = &ctx;
	char q[QUOTE_BUF];
	int ret = check_chars(c);
	if (ret < 0)
		return ret;

	const char *at = span_chr(rule, '@');
	if (!at)
		return fail(c, -EINVAL, "missing '@' (expected %s, like allow@public:tcp:443)",
			    RULE_SYNTAX);

	/* <action>[:<direction>] */
	struct span head = span_of(rule.p, at);
	const char *colon = span_chr(head, ':');
	struct span dir = colon ? span_of(colon + 1, at) : (struct span){NULL, 0};
	if (colon && span_chr(dir, ':'))
		return fail(c, -EINVAL, "too many ':' in '%s' (expected <action>[:<direction>]@)",
			    quote(q, head));
	if ((ret = parse_action(c, colon ? span_of(rule.p, colon) : head, r)) < 0)
		return ret;
	r->direction = MSB_RULE_EGRESS;
	if (colon && (ret = parse_direction(c, dir, r)) < 0)
		return ret;

	/* <target>, which for IPv6 is bracketed because it holds colons */
	struct span rest = span_of(at + 1, span_end(rule));
	if (span_chr(rest, '@'))
		return fail(c, -EINVAL, "more than one '@' (expected %s)", RULE_SYNTAX);
	if ((ret = check_bare_ipv6(c, rest)) < 0)
		return ret;
	struct span target, tail;
	if (rest.n && rest.p[0] == '[') {
		const char *close = span_chr(rest, ']');
		if (!close)
			return fail(c, -EINVAL,
				    "unterminated '[' in '%s' (expected [IPv6] or [IPv6/prefix])",
				    quote(q, rest));
		target = span_of(rest.p, close + 1);
		tail = span_of(close + 1, span_end(rest));
		if (tail.n && tail.p[0] == '/') {
			const char *end = span_chr(tail, ':');
			struct span pfx = end ? span_of(tail.p, end) : tail;
			char qp[QUOTE_BUF];
			int inner = target.n - 2 > QUOTE_MAX ? QUOTE_MAX : (int)(target.n - 2);
			return fail(c, -EINVAL,
				    "prefix '%s' outside the brackets of '%s' (expected "
				    "[IPv6/prefix]); did you mean [%.*s%s]?",
				    quote(qp, pfx), quote(q, target), inner, target.p + 1, qp);
		}
		if (tail.n && tail.p[0] != ':')
			return fail(c, -EINVAL,
				    "unexpected '%c' after '%s' (expected ':' or the end)",
				    tail.p[0], quote(q, target));
	} else {
		const char *tcolon = span_chr(rest, ':');
		target = tcolon ? span_of(rest.p, tcolon) : rest;
		tail = span_of(span_end(target), span_end(rest));
	}
	if ((ret = parse_target(c, target, r)) < 0)
		return ret;

	/* [:<proto>[:<ports>]] */
	r->proto = MSB_PROTO_ANY;
	if (!tail.n)
		return 0;
	tail = span_of(tail.p + 1, span_end(tail)); /* past the ':' */
	const char *pcolon = span_chr(tail, ':');
	struct span proto = pcolon ? span_of(tail.p, pcolon) : tail;
	if ((ret = parse_proto(c, proto, r)) < 0)
		return ret;
	if (!pcolon)
		return 0;
	struct span ports = span_of(pcolon + 1, span_end(tail));
	if (span_chr(ports, ':'))
		return fail(c, -EINVAL, "too many ':' in '%s' (expected %s)", quote(q, rest),
			    "<target>[:<proto>[:<ports>]]");
	if (!ports.n)
		return fail(c, -EINVAL, "missing ports after '%.*s:' (%s)", (int)proto.n, proto.p,
			    PORTS_EXPECTED);
	return parse_ports(c, ports, r);
}

/* ---- the list ------------------------------------------------------------ */

int msb_net_rules_parse(const char *text, struct msb_net_rule **rules, size_t *count,
			struct msb_error *err)
{
	if (!text || !rules || !count || (*count && !*rules))
		return msb_error_set(err, -EINVAL, "net rules: no text or no rule array given");
	size_t len = strnlen(text, MSB_NET_RULES_TEXT_MAX + 1);
	if (len > MSB_NET_RULES_TEXT_MAX)
		return msb_error_set(err, -E2BIG,
				     "net rules: text is too long (more than %d bytes)",
				     MSB_NET_RULES_TEXT_MAX);
	struct span all = {text, len};
	if (!trim(all).n)
		return msb_error_set(err, -EINVAL,
				     "net rules: none given (expected comma-separated rules like "
				     "allow@public:tcp:443)");

	/* Count first, so a flood of rules is refused before anything is allocated. */
	size_t n = 1;
	for (const char *p = text; (p = memchr(p, ',', (size_t)(text + len - p))); p++)
		n++;
	if (*count > MSB_NET_RULES_MAX || n > MSB_NET_RULES_MAX - *count)
		return msb_error_set(
			err, -E2BIG,
			"net rules: too many (%zu given, %zu already; at most %d in all)", n,
			*count, MSB_NET_RULES_MAX);

	/* Parse into a scratch array: the caller's stays untouched on error. */
	struct msb_net_rule *tmp = calloc(n, sizeof(*tmp));
	if (!tmp)
		return msb_error_set(err, -ENOMEM, "net rules: out of memory");
	int ret = 0;
	const char *p = text;
	for (size_t i = 0; i < n; i++) {
		const char *comma = memchr(p, ',', (size_t)(text + len - p));
		const char *stop = comma ? comma : text + len;
		struct span rule = trim(span_of(p, stop));
		if (!rule.n) {
			char q[QUOTE_BUF];
			ret = msb_error_set(
				err, -EINVAL,
				"net rules '%s': rule %zu is empty (a doubled or trailing "
				"comma?)",
				quote(q, all), i + 1);
			goto out;
		}
		if ((ret = parse_rule(rule, &tmp[i], err)) < 0)
			goto out;
		if (comma)
			p = comma + 1;
	}

	struct msb_net_rule *grown = realloc(*rules, (*count + n) * sizeof(*grown));
	if (!grown) {
		ret = msb_error_set(err, -ENOMEM, "net rules: out of memory");
		goto out;
	}
	/* memcpy, not assignment: the padding stays zero, so rules compare with memcmp. */
	memcpy(grown + *count, tmp, n * sizeof(*tmp));
	*rules = grown;
	*count += n;
out:
	free(tmp);
	return ret;
}

/* ---- formatting ---------------------------------------------------------- */

/* Append to out (FORMAT_MAX bytes); false when it did not fit. */
static bool put(char *out, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static bool put(char *out, size_t *len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(out + *len, FORMAT_MAX - *len, fmt, ap);
	va_end(ap);
	if (w < 0 || (size_t)w >= FORMAT_MAX - *len)
		return false;
	*len += (size_t)w;
	return true;
}

/* The target part; false for a rule the parser could not have produced. */
static bool format_target(const struct msb_net_rule *rule, char *out, size_t *len)
{
	char a[INET6_ADDRSTRLEN];
	uint8_t net[16];
	size_t dlen;
	switch (rule->target) {
	case MSB_TARGET_ANY:
	case MSB_TARGET_DNS:
		return put(out, len, "%s", kw_name(targets, rule->target));
	case MSB_TARGET_GROUP:
		for (const struct keyword *k = targets; k->name; k++)
			if (k->value == MSB_TARGET_GROUP && k->group == rule->group)
				return put(out, len, "%s", k->name);
		return false;
	case MSB_TARGET_IPV4:
		if (rule->prefix > 32 || network_of(rule->addr, 4, rule->prefix, net))
			return false;
		inet_ntop(AF_INET, rule->addr, a, sizeof(a));
		/* A single address is written without its /32. */
		return rule->prefix == 32 ? put(out, len, "%s", a)
					  : put(out, len, "%s/%u", a, rule->prefix);
	case MSB_TARGET_IPV6:
		if (rule->prefix > 128 || network_of(rule->addr, 16, rule->prefix, net))
			return false;
		inet_ntop(AF_INET6, rule->addr, a, sizeof(a));
		return rule->prefix == 128 ? put(out, len, "[%s]", a)
					   : put(out, len, "[%s/%u]", a, rule->prefix);
	case MSB_TARGET_DOMAIN:
	case MSB_TARGET_SUFFIX:
		dlen = strnlen(rule->domain, sizeof(rule->domain));
		if (dlen == 0 || dlen == sizeof(rule->domain))
			return false;
		return put(out, len, "%s%.*s", rule->target == MSB_TARGET_SUFFIX ? "*." : "",
			   (int)dlen, rule->domain);
	default:
		return false;
	}
}

int msb_net_rule_format(const struct msb_net_rule *rule, char *buf, size_t len)
{
	if (!rule || (!buf && len))
		return -EINVAL;
	const char *action = kw_name(actions, rule->action);
	const char *direction = kw_name(directions, rule->direction);
	const char *proto = kw_name(protos, rule->proto);
	bool ported = rule->proto == MSB_PROTO_TCP || rule->proto == MSB_PROTO_UDP;
	bool ports = rule->port_lo || rule->port_hi;
	if (!action || !direction || !proto ||
	    (ports && (!ported || !rule->port_lo || rule->port_lo > rule->port_hi)))
		return -EINVAL;

	char out[FORMAT_MAX];
	size_t n = 0;
	/* Defaults are left out, so equal rules read the same: egress, :any, :any. */
	if (!put(out, &n, "%s", action) ||
	    (rule->direction != MSB_RULE_EGRESS && !put(out, &n, ":%s", direction)) ||
	    !put(out, &n, "@") || !format_target(rule, out, &n) ||
	    (rule->proto != MSB_PROTO_ANY && !put(out, &n, ":%s", proto)))
		return -EINVAL;
	if (ports && (rule->port_lo == rule->port_hi
			      ? !put(out, &n, ":%u", rule->port_lo)
			      : !put(out, &n, ":%u-%u", rule->port_lo, rule->port_hi)))
		return -EINVAL;
	if (n + 1 > len)
		return -ENOSPC;
	memcpy(buf, out, n + 1);
	return (int)n;
}
