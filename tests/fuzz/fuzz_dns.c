/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target for the network module's DNS messages (plugins/net/dns.c):
 * arbitrary bytes as a query and as a reply, the builders on whatever
 * parsed, the NXDOMAIN rewrite, and the name reader at every offset.
 *
 * Besides memory safety (run under ASan/UBSan) it checks the contract:
 *  - every name that comes out is lowercase dotted text of printable ASCII
 *    with no empty label, at most 253 characters;
 *  - what a builder writes for a parsed query parses back as a reply to the
 *    same question with the rcode asked for, and a forwarded query parses
 *    back as the same question;
 *  - a reply that parses can always be rewritten, and the rewrite parses as
 *    an answerless NXDOMAIN to the same question, no longer than the input;
 *  - the addresses handed out for a question are answer-section A/AAAA
 *    records, never more than the records kept.
 *
 * Seeds: tests/fuzz/corpus/dns/.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static struct dns_msg *m, *back;

static void check_name(const char *name)
{
	size_t len = strlen(name);
	CHECK(len < DNS_NAME_TEXT_MAX);
	if (len == 0)
		return;
	CHECK(name[0] != '.' && name[len - 1] != '.');
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		CHECK(c > 0x20 && c < 0x7f && !(c >= 'A' && c <= 'Z'));
		CHECK(!(c == '.' && name[i + 1] == '.'));
	}
}

static void count_rr(void *arg, const struct dns_rr *rr)
{
	CHECK(rr->section == DNS_S_ANSWER);
	CHECK(rr->type == DNS_T_A || rr->type == DNS_T_AAAA);
	struct sockaddr_storage ss;
	CHECK(dns_rr_sockaddr(rr, &ss) > 0);
	(*(unsigned *)arg)++;
}

static void check_query(const uint8_t *data, size_t size)
{
	uint8_t out[DNS_HDR_LEN + DNS_NAME_WIRE_MAX + 4 + 11];
	if (dns_parse_query(data, size, m) < 0) {
		int n = dns_build_formerr(data, size, out, sizeof(out));
		CHECK(n == DNS_HDR_LEN || n == -EBADMSG);
		return;
	}
	check_name(m->q.name);
	CHECK(m->q.wire_len >= 1 && m->q.wire_len <= DNS_NAME_WIRE_MAX);
	CHECK(m->q_end <= size && m->nrr == 0);
	CHECK(m->edns_udp == 0 || m->edns_udp >= DNS_UDP_MIN);

	static const unsigned rcodes[] = {DNS_R_NXDOMAIN, DNS_R_SERVFAIL, DNS_R_REFUSED};
	for (size_t i = 0; i < 3; i++) {
		int n = dns_build_reply(m, rcodes[i], out, sizeof(out));
		CHECK(n > DNS_HDR_LEN);
		CHECK(dns_parse_reply(out, (size_t)n, back) == 0);
		CHECK(back->h.id == m->h.id);
		CHECK(DNS_F_RCODE(back->h.flags) == rcodes[i]);
		CHECK(strcmp(back->q.name, m->q.name) == 0 && back->q.type == m->q.type);
		CHECK(back->nrr == 0);
	}
	int n = dns_build_forward(m, 0x5a5a, out, sizeof(out));
	CHECK(n > DNS_HDR_LEN);
	CHECK(dns_parse_query(out, (size_t)n, back) == 0);
	CHECK(back->h.id == 0x5a5a);
	CHECK(strcmp(back->q.name, m->q.name) == 0);
	CHECK(back->q.type == m->q.type && back->q.klass == m->q.klass);
	CHECK(back->q.wire_len == m->q.wire_len &&
	      memcmp(back->q.wire, m->q.wire, m->q.wire_len) == 0);
	CHECK((back->edns_udp != 0) == (m->edns_udp != 0));
	CHECK(back->edns_udp <= DNS_UDP_MAX && back->edns_do == m->edns_do);
}

static void check_reply(const uint8_t *data, size_t size)
{
	int r = dns_parse_reply(data, size, m);
	CHECK(r == 0 || r == -EBADMSG || r == -E2BIG);
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return;
	memcpy(copy, data, size);
	size_t len = 0;
	int w = dns_rewrite_nxdomain(copy, size, &len);
	if (r == 0 || r == -E2BIG)
		CHECK(w == 0); /* the header and question parsed */
	if (w == 0) {
		CHECK(len >= DNS_HDR_LEN && len <= size);
		struct dns_header h;
		CHECK(dns_parse_header(copy, len, &h) == 0);
		CHECK(DNS_F_RCODE(h.flags) == DNS_R_NXDOMAIN);
		CHECK(h.ancount == 0 && h.nscount == 0 && h.arcount == 0);
		CHECK(!(h.flags & (DNS_F_TC | DNS_F_AA)));
		if (r == 0) {
			CHECK(dns_parse_reply(copy, len, back) == 0);
			CHECK(back->nrr == 0 && strcmp(back->q.name, m->q.name) == 0);
		}
	} else {
		CHECK(memcmp(copy, data, size) == 0); /* left alone */
	}
	free(copy);
	if (r != 0)
		return;

	check_name(m->q.name);
	CHECK(m->nrr <= DNS_RR_MAX);
	for (unsigned i = 0; i < m->nrr; i++) {
		const struct dns_rr *rr = &m->rr[i];
		check_name(rr->name);
		CHECK(rr->ttl <= 0x7fffffffu);
		CHECK(rr->section >= DNS_S_ANSWER && rr->section <= DNS_S_ADDITIONAL);
		if (rr->type == DNS_T_CNAME)
			check_name(rr->data.cname);
		else
			(void)dns_addr_internal(rr->type == DNS_T_A ? AF_INET : AF_INET6,
						rr->data.aaaa);
	}
	unsigned n = 0;
	CHECK(dns_reply_addresses(m, m->q.name, count_rr, &n) == n);
	CHECK(n <= m->nrr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!m) {
		m = malloc(sizeof(*m));
		back = malloc(sizeof(*back));
		if (!m || !back)
			abort();
	}
	if (size > DNS_MSG_MAX)
		return 0;
	check_query(data, size);
	check_reply(data, size);

	/* The name reader from any offset: bounded, and text when it succeeds. */
	for (size_t off = 0; off < size && off < 64; off++) {
		char text[DNS_NAME_TEXT_MAX];
		uint8_t wire[DNS_NAME_WIRE_MAX];
		uint8_t wire_len = 0;
		size_t o = off;
		if (dns_name_read(data, size, &o, text, wire, &wire_len) == 0) {
			check_name(text);
			CHECK(o > off && o <= size);
			CHECK(wire_len >= 1 && wire[wire_len - 1] == 0);
		}
	}
	return 0;
}
