/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DNS message code (plugins/net/dns.c) and the interceptor
 * (plugins/net/dnsproxy.c).
 *
 * The parser gets hand-made messages: compression (good and hostile),
 * truncation at every byte, overlong labels and names, bad label bytes,
 * CNAME chains, AAAA, and too many records; the builders are checked field
 * by field.  The interceptor runs for real on 127.0.0.1 against a fake
 * upstream resolver (a thread in this test answering fixed records over UDP
 * and TCP), and the test plays the guest.  No packet leaves 127.0.0.0/8;
 * the "public" answers are documentation addresses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dns.h"
#include "dnsproxy.h"

/* ---- a message writer ---------------------------------------------------------- */

struct wbuf {
	uint8_t b[DNS_MSG_MAX + 2];
	size_t n;
};

static void w8(struct wbuf *w, uint8_t v)
{
	w->b[w->n++] = v;
}

static void w16(struct wbuf *w, uint16_t v)
{
	w8(w, (uint8_t)(v >> 8));
	w8(w, (uint8_t)v);
}

static void w32(struct wbuf *w, uint32_t v)
{
	w16(w, (uint16_t)(v >> 16));
	w16(w, (uint16_t)v);
}

static void wbytes(struct wbuf *w, const void *p, size_t n)
{
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

/* A name in wire form, uncompressed ("" is the root). */
static void wname(struct wbuf *w, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		w8(w, (uint8_t)l);
		wbytes(w, name, l);
		name += l + (dot ? 1 : 0);
	}
	w8(w, 0);
}

static void whdr(struct wbuf *w, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns,
		 uint16_t ar)
{
	w->n = 0;
	w16(w, id);
	w16(w, flags);
	w16(w, qd);
	w16(w, an);
	w16(w, ns);
	w16(w, ar);
}

static void wquestion(struct wbuf *w, const char *name, uint16_t type)
{
	wname(w, name);
	w16(w, type);
	w16(w, DNS_C_IN);
}

static void wrr_head(struct wbuf *w, const char *owner, uint16_t type, uint32_t ttl)
{
	wname(w, owner);
	w16(w, type);
	w16(w, DNS_C_IN);
	w32(w, ttl);
}

static void wrr_a(struct wbuf *w, const char *owner, uint32_t ttl, const char *addr)
{
	uint8_t a[4];
	assert_int_equal(inet_pton(AF_INET, addr, a), 1);
	wrr_head(w, owner, DNS_T_A, ttl);
	w16(w, 4);
	wbytes(w, a, 4);
}

static void wrr_aaaa(struct wbuf *w, const char *owner, uint32_t ttl, const char *addr)
{
	uint8_t a[16];
	assert_int_equal(inet_pton(AF_INET6, addr, a), 1);
	wrr_head(w, owner, DNS_T_AAAA, ttl);
	w16(w, 16);
	wbytes(w, a, 16);
}

static void wrr_cname(struct wbuf *w, const char *owner, uint32_t ttl, const char *target)
{
	wrr_head(w, owner, DNS_T_CNAME, ttl);
	size_t at = w->n;
	w16(w, 0);
	wname(w, target);
	w->b[at] = (uint8_t)((w->n - at - 2) >> 8);
	w->b[at + 1] = (uint8_t)(w->n - at - 2);
}

static void wopt(struct wbuf *w, uint16_t udp, bool dnssec_ok)
{
	w8(w, 0);
	w16(w, DNS_T_OPT);
	w16(w, udp);
	w32(w, dnssec_ok ? 0x8000u : 0);
	w16(w, 0);
}

static size_t mkquery(struct wbuf *w, uint16_t id, const char *name, uint16_t type)
{
	whdr(w, id, DNS_F_RD, 1, 0, 0, 0);
	wquestion(w, name, type);
	return w->n;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* A struct dns_msg is ~70 KiB: one on the heap, shared by the tests. */
static struct dns_msg *M;

static const char *a4(const struct dns_rr *rr, char *buf)
{
	return inet_ntop(AF_INET, rr->data.a, buf, INET6_ADDRSTRLEN);
}

/* ---- the parser ---------------------------------------------------------------- */

static void t_query_basic(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	whdr(w, 0xbeef, DNS_F_RD | DNS_F_CD, 1, 0, 0, 1);
	wquestion(w, "WWW.Example.COM", DNS_T_AAAA);
	wopt(w, 4096, true);
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);
	assert_int_equal(M->h.id, 0xbeef);
	assert_string_equal(M->q.name, "www.example.com");
	assert_int_equal(M->q.type, DNS_T_AAAA);
	assert_int_equal(M->q.klass, DNS_C_IN);
	assert_int_equal(M->q.wire_len, 17);
	assert_memory_equal(M->q.wire, "\3WWW\7Example\3COM", 17);
	assert_int_equal(M->q_end, w->n - 11);
	assert_int_equal(M->edns_udp, 4096);
	assert_true(M->edns_do);
	assert_int_equal(M->nrr, 0);

	/* A response is not a query; nor is one with two questions or two OPTs. */
	w->b[2] |= 0x80;
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);
	w->b[2] &= 0x7f;
	w->b[5] = 2;
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);
	w->b[5] = 1;
	w->b[11] = 2;
	wopt(w, 512, false);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);

	/* The root: "" (an NS query for "."). */
	whdr(w, 1, 0, 1, 0, 0, 0);
	wquestion(w, "", 2);
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);
	assert_string_equal(M->q.name, "");
	assert_int_equal(M->edns_udp, 0);
	free(w);
}

/*
 * www.example.com A, answered with compression:
 *   www.example.com CNAME cdn.example.com (owner a pointer to the question,
 *   target "cdn" + a pointer into the question), then the target's A with
 *   an owner that is a pointer to a pointer-terminated name.
 */
static size_t compressed_reply(struct wbuf *w)
{
	whdr(w, 7, DNS_F_QR | DNS_F_RD | DNS_F_RA, 1, 3, 0, 0);
	wquestion(w, "www.example.com", DNS_T_A); /* name at 12, "example" at 16 */
	w16(w, 0xc00c);				  /* owner: www.example.com */
	w16(w, DNS_T_CNAME);
	w16(w, DNS_C_IN);
	w32(w, 60);
	w16(w, 6);
	size_t cdn = w->n;
	w8(w, 3);
	wbytes(w, "CDN", 3);
	w16(w, 0xc010);			  /* example.com */
	w16(w, (uint16_t)(0xc000 | cdn)); /* owner: cdn.example.com */
	w16(w, DNS_T_A);
	w16(w, DNS_C_IN);
	w32(w, 0x80000005u); /* top bit set: reads as 0 */
	w16(w, 4);
	wbytes(w, "\xcb\x00\x71\x07", 4); /* 203.0.113.7 */
	/* An AAAA owned by "cdn" + pointer, itself reached through a pointer. */
	w16(w, (uint16_t)(0xc000 | cdn));
	w16(w, DNS_T_AAAA);
	w16(w, DNS_C_IN);
	w32(w, 90);
	w16(w, 16);
	wbytes(w, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	return w->n;
}

static void t_compression(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	char buf[INET6_ADDRSTRLEN];
	compressed_reply(w);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), 0);
	assert_string_equal(M->q.name, "www.example.com");
	assert_int_equal(M->nrr, 3);
	assert_int_equal(M->rr[0].type, DNS_T_CNAME);
	assert_string_equal(M->rr[0].name, "www.example.com");
	assert_string_equal(M->rr[0].data.cname, "cdn.example.com");
	assert_int_equal(M->rr[0].ttl, 60);
	assert_int_equal(M->rr[1].type, DNS_T_A);
	assert_string_equal(M->rr[1].name, "cdn.example.com");
	assert_string_equal(a4(&M->rr[1], buf), "203.0.113.7");
	assert_int_equal(M->rr[1].ttl, 0);
	assert_int_equal(M->rr[2].type, DNS_T_AAAA);
	assert_int_equal(M->rr[2].section, DNS_S_ANSWER);
	inet_ntop(AF_INET6, M->rr[2].data.aaaa, buf, sizeof(buf));
	assert_string_equal(buf, "2001:db8::1");

	/* A pointer to a pointer, each further back: "example.com" by two hops. */
	whdr(w, 1, DNS_F_QR, 1, 1, 0, 0);
	wquestion(w, "example.com", DNS_T_A);
	size_t p1 = w->n;
	w16(w, 0xc00c);
	w16(w, 99); /* an unknown type: skipped */
	w16(w, DNS_C_IN);
	w32(w, 1);
	w16(w, 0);
	w->b[7] = 2;
	w16(w, (uint16_t)(0xc000 | p1));
	w16(w, DNS_T_A);
	w16(w, DNS_C_IN);
	w32(w, 1);
	w16(w, 4);
	wbytes(w, "\xc6\x33\x64\x01", 4);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), 0);
	assert_int_equal(M->nrr, 1);
	assert_string_equal(M->rr[0].name, "example.com");
	free(w);
}

static void t_pointer_loops(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));

	/* The question is a pointer to itself. */
	whdr(w, 1, 0, 1, 0, 0, 0);
	w16(w, 0xc00c);
	w16(w, DNS_T_A);
	w16(w, DNS_C_IN);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);

	/* A label, then a pointer back to that label: a loop with progress. */
	whdr(w, 1, 0, 1, 0, 0, 0);
	w8(w, 1);
	w8(w, 'a');
	w16(w, 0xc00c);
	w16(w, DNS_T_A);
	w16(w, DNS_C_IN);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);

	/* A pointer forward, and one into the header. */
	whdr(w, 1, 0, 1, 0, 0, 0);
	w16(w, 0xc00e);
	wquestion(w, "a", DNS_T_A);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);
	whdr(w, 1, 0, 1, 0, 0, 0);
	w16(w, 0xc002);
	w16(w, DNS_T_A);
	w16(w, DNS_C_IN);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);

	/* A loop between two owners needs one pointer forward: refused. */
	whdr(w, 1, DNS_F_QR, 1, 2, 0, 0);
	wquestion(w, "x", DNS_T_A);
	size_t a = w->n;
	w8(w, 1);
	w8(w, 'a');
	w16(w, (uint16_t)(0xc000 | (a + 15)));
	w16(w, DNS_T_A);
	w16(w, DNS_C_IN);
	w32(w, 1);
	w16(w, 0);
	assert_int_equal(w->n, a + 14);
	w8(w, 0); /* pad so that a + 15 is the second owner */
	w8(w, 1);
	w8(w, 'b');
	w16(w, (uint16_t)(0xc000 | a));
	assert_int_equal(dns_parse_reply(w->b, w->n, M), -EBADMSG);

	/*
	 * A chain of pointers, each to the one before, hidden in an unknown
	 * record's RDATA (skipped unread), then an owner that enters it at the
	 * far end: DNS_PTR_HOPS jumps in all is fine, one more is not.
	 */
	for (unsigned hops = DNS_PTR_HOPS; hops <= DNS_PTR_HOPS + 1; hops++) {
		whdr(w, 1, DNS_F_QR, 1, 2, 0, 0);
		wquestion(w, "example.com", DNS_T_A);
		w8(w, 0);
		w16(w, 99);
		w16(w, DNS_C_IN);
		w32(w, 0);
		w16(w, (uint16_t)(2 * (hops - 1)));
		size_t prev = 12;
		for (unsigned i = 0; i + 1 < hops; i++) {
			size_t here = w->n;
			w16(w, (uint16_t)(0xc000 | prev));
			prev = here;
		}
		w16(w, (uint16_t)(0xc000 | prev));
		w16(w, DNS_T_A);
		w16(w, DNS_C_IN);
		w32(w, 1);
		w16(w, 4);
		wbytes(w, "\1\2\3\4", 4);
		int r = dns_parse_reply(w->b, w->n, M);
		if (hops <= DNS_PTR_HOPS) {
			assert_int_equal(r, 0);
			assert_int_equal(M->nrr, 1);
			assert_string_equal(M->rr[0].name, "example.com");
		} else {
			assert_int_equal(r, -EBADMSG);
		}
	}
	free(w);
}

static void t_truncation(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	size_t full = compressed_reply(w);
	assert_int_equal(dns_parse_reply(w->b, full, M), 0);
	/* Every prefix fails, and none reads past its end (an exact-size copy each). */
	for (size_t len = 0; len < full; len++) {
		uint8_t *copy = malloc(len ? len : 1);
		memcpy(copy, w->b, len);
		assert_int_equal(dns_parse_reply(copy, len, M), -EBADMSG);
		free(copy);
	}
	/* Bytes after the last record are ignored. */
	w->b[full] = 0xff;
	assert_int_equal(dns_parse_reply(w->b, full + 1, M), 0);
	free(w);
}

static void t_name_limits(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	char l63[64], l64[65], l61[62], name[400];
	memset(l63, 'a', 63);
	l63[63] = '\0';
	memset(l64, 'b', 64);
	l64[64] = '\0';
	memset(l61, 'c', 61);
	l61[61] = '\0';

	mkquery(w, 1, l63, DNS_T_A);
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);
	assert_string_equal(M->q.name, l63);
	/* 64 is 0x40 as a length byte: a reserved label type, refused either way. */
	mkquery(w, 1, l64, DNS_T_A);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);

	/* 255 bytes of wire name (253 of text) pass, 257 do not. */
	snprintf(name, sizeof(name), "%s.%s.%s.%s", l63, l63, l63, l61);
	mkquery(w, 1, name, DNS_T_A);
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);
	assert_int_equal(strlen(M->q.name), 253);
	assert_int_equal(M->q.wire_len, 255);
	snprintf(name, sizeof(name), "%s.%s.%s.%s", l63, l63, l63, l63);
	mkquery(w, 1, name, DNS_T_A);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);

	/* Too long only through compression: 192 + 64 + 1 bytes. */
	whdr(w, 1, DNS_F_QR, 1, 1, 0, 0);
	snprintf(name, sizeof(name), "%s.%s.%s", l63, l63, l63);
	wquestion(w, name, DNS_T_A);
	w8(w, 63);
	wbytes(w, l63, 63);
	w16(w, 0xc00c);
	w16(w, DNS_T_A);
	w16(w, DNS_C_IN);
	w32(w, 1);
	w16(w, 4);
	wbytes(w, "\1\2\3\4", 4);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), -EBADMSG);

	/* Label bytes: '_' and '*' pass, uppercase is folded; '.', NUL, space, 0x80 do not. */
	mkquery(w, 1, "_Dmarc.*.Example", DNS_T_A);
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);
	assert_string_equal(M->q.name, "_dmarc.*.example");
	static const char bad[] = {'.', '\0', ' ', '\x80', '\x1f', '\x7f'};
	for (size_t i = 0; i < sizeof(bad); i++) {
		mkquery(w, 1, "abc.example", DNS_T_A);
		w->b[13 + 1] = (uint8_t)bad[i]; /* the 'b' of "abc" */
		assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);
	}
	/* An extended label type (0x40). */
	mkquery(w, 1, "abc.example", DNS_T_A);
	w->b[12] = 0x41;
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);
	free(w);
}

static void t_records(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));

	/* An A must have 4 bytes of RDATA, an AAAA 16, a CNAME exactly its name. */
	whdr(w, 1, DNS_F_QR, 1, 1, 0, 0);
	wquestion(w, "a.example", DNS_T_A);
	wrr_head(w, "a.example", DNS_T_A, 1);
	w16(w, 16);
	wbytes(w, "0123456789abcdef", 16);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), -EBADMSG);
	whdr(w, 1, DNS_F_QR, 1, 1, 0, 0);
	wquestion(w, "a.example", DNS_T_AAAA);
	wrr_head(w, "a.example", DNS_T_AAAA, 1);
	w16(w, 4);
	wbytes(w, "0123", 4);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), -EBADMSG);
	whdr(w, 1, DNS_F_QR, 1, 1, 0, 0);
	wquestion(w, "a.example", DNS_T_A);
	wrr_head(w, "a.example", DNS_T_CNAME, 1);
	w16(w, 4);
	wbytes(w, "\1b\0\0", 4); /* "b" and a stray byte */
	assert_int_equal(dns_parse_reply(w->b, w->n, M), -EBADMSG);
	/* Not a response. */
	whdr(w, 1, 0, 1, 0, 0, 0);
	wquestion(w, "a.example", DNS_T_A);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), -EBADMSG);

	/* Sections are told apart; other types and classes are skipped. */
	whdr(w, 1, DNS_F_QR, 1, 2, 1, 2);
	wquestion(w, "a.example", DNS_T_AAAA);
	wrr_aaaa(w, "a.example", 5, "2001:db8::5");
	wrr_head(w, "a.example", 16, 5); /* TXT */
	w16(w, 3);
	wbytes(w, "\2hi", 3);
	wrr_head(w, "example", 6, 5); /* SOA, as garbage: skipped unread */
	w16(w, 2);
	w16(w, 0);
	wopt(w, 1232, false);
	wrr_a(w, "ns.example", 5, "10.0.0.1");
	assert_int_equal(dns_parse_reply(w->b, w->n, M), 0);
	assert_int_equal(M->nrr, 2);
	assert_int_equal(M->rr[0].type, DNS_T_AAAA);
	assert_int_equal(M->rr[0].section, DNS_S_ANSWER);
	assert_int_equal(M->rr[1].section, DNS_S_ADDITIONAL);
	assert_string_equal(M->rr[1].name, "ns.example");

	/* Address records of another class are kept too: not every stub checks the class. */
	whdr(w, 1, DNS_F_QR, 1, 1, 0, 0);
	wquestion(w, "a.example", DNS_T_A);
	wname(w, "a.example");
	w16(w, DNS_T_A);
	w16(w, 3); /* CH */
	w32(w, 5);
	w16(w, 4);
	wbytes(w, "\x0a\0\0\1", 4);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), 0);
	assert_int_equal(M->nrr, 1);
	assert_int_equal(M->rr[0].klass, 3);

	/* DNS_RR_MAX records are kept, one more is an error. */
	for (unsigned n = DNS_RR_MAX; n <= DNS_RR_MAX + 1; n++) {
		whdr(w, 1, DNS_F_QR, 1, (uint16_t)n, 0, 0);
		wquestion(w, "many.example", DNS_T_A);
		for (unsigned i = 0; i < n; i++) {
			w16(w, 0xc00c);
			w16(w, DNS_T_A);
			w16(w, DNS_C_IN);
			w32(w, 1);
			w16(w, 4);
			w32(w, 0xcb007100u + (i & 0xff));
		}
		assert_int_equal(dns_parse_reply(w->b, w->n, M), n <= DNS_RR_MAX ? 0 : -E2BIG);
	}

	/* Counts larger than the message: an error, quickly. */
	whdr(w, 1, DNS_F_QR, 1, 0xffff, 0xffff, 0xffff);
	wquestion(w, "a.example", DNS_T_A);
	assert_int_equal(dns_parse_reply(w->b, w->n, M), -EBADMSG);
	free(w);
}

struct seen {
	unsigned n;
	char addr[8][INET6_ADDRSTRLEN];
	uint32_t ttl[8];
};

static void collect(void *arg, const struct dns_rr *rr)
{
	struct seen *s = arg;
	inet_ntop(rr->type == DNS_T_A ? AF_INET : AF_INET6, rr->data.aaaa, s->addr[s->n],
		  INET6_ADDRSTRLEN);
	s->ttl[s->n++] = rr->ttl;
}

static void t_cname_chain(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	struct seen s = {0};

	whdr(w, 1, DNS_F_QR, 1, 6, 0, 1);
	wquestion(w, "chain.example", DNS_T_A);
	wrr_a(w, "end.example", 120, "198.51.100.1"); /* before its CNAME: order does not matter */
	wrr_cname(w, "chain.example", 30, "mid.example");
	wrr_cname(w, "mid.example", 40, "end.example");
	wrr_a(w, "end.example", 100, "198.51.100.2");
	wrr_a(w, "other.example", 50, "198.51.100.99"); /* not on the chain */
	wrr_a(w, "mid.example", 70, "198.51.100.3");	/* on the chain */
	wrr_a(w, "end.example", 80, "198.51.100.4");	/* additional: not the answer */
	assert_int_equal(dns_parse_reply(w->b, w->n, M), 0);
	assert_int_equal(dns_reply_addresses(M, "chain.example", collect, &s), 3);
	assert_string_equal(s.addr[0], "198.51.100.1");
	assert_int_equal(s.ttl[0], 120);
	assert_string_equal(s.addr[1], "198.51.100.2");
	assert_int_equal(s.ttl[1], 100);
	assert_string_equal(s.addr[2], "198.51.100.3");
	/* Another question's name reaches less. */
	assert_int_equal(dns_reply_addresses(M, "end.example", NULL, NULL), 2);
	assert_int_equal(dns_reply_addresses(M, "nobody.example", NULL, NULL), 0);

	/* A CNAME loop ends the chain. */
	whdr(w, 1, DNS_F_QR, 1, 3, 0, 0);
	wquestion(w, "a.example", DNS_T_AAAA);
	wrr_cname(w, "a.example", 1, "b.example");
	wrr_cname(w, "b.example", 1, "a.example");
	wrr_aaaa(w, "b.example", 9, "2001:db8::b");
	assert_int_equal(dns_parse_reply(w->b, w->n, M), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(dns_reply_addresses(M, "a.example", collect, &s), 1);
	assert_string_equal(s.addr[0], "2001:db8::b");

	/* A chain longer than DNS_CHAIN_MAX is cut there. */
	whdr(w, 1, DNS_F_QR, 1, DNS_CHAIN_MAX + 2, 0, 0);
	wquestion(w, "c0.example", DNS_T_A);
	char from[32], to[32];
	for (unsigned i = 0; i <= DNS_CHAIN_MAX; i++) {
		snprintf(from, sizeof(from), "c%u.example", i);
		snprintf(to, sizeof(to), "c%u.example", i + 1);
		wrr_cname(w, from, 1, to);
	}
	wrr_a(w, to, 1, "198.51.100.7");
	assert_int_equal(dns_parse_reply(w->b, w->n, M), 0);
	assert_int_equal(dns_reply_addresses(M, "c0.example", NULL, NULL), 0);
	assert_int_equal(dns_reply_addresses(M, "c1.example", NULL, NULL), 1);
	free(w);
}

static void t_builders(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	uint8_t out[600];

	whdr(w, 0x1234, DNS_F_RD | DNS_F_CD, 1, 0, 0, 2);
	wquestion(w, "Blocked.Example", DNS_T_A);
	wrr_head(w, "junk.example", 16, 0); /* the guest's extra record: never forwarded */
	w16(w, 2);
	w16(w, 0x0141);
	wopt(w, 65000, true);
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);

	static const struct {
		int (*fn)(const struct dns_msg *, uint8_t *, size_t);
		unsigned rcode;
	} b[] = {{dns_build_nxdomain, 3}, {dns_build_servfail, 2}, {dns_build_refused, 5}};
	for (size_t i = 0; i < 3; i++) {
		int n = b[i].fn(M, out, sizeof(out));
		assert_int_equal(n, 12 + 17 + 4);
		assert_int_equal(get16(out), 0x1234);
		uint16_t f = get16(out + 2);
		assert_true(f & DNS_F_QR);
		assert_true(f & DNS_F_RA);
		assert_true(f & DNS_F_RD);
		assert_true(f & DNS_F_CD);
		assert_false(f & DNS_F_AA);
		assert_int_equal(DNS_F_OPCODE(f), 0);
		assert_int_equal(DNS_F_RCODE(f), b[i].rcode);
		assert_int_equal(get16(out + 4), 1);
		assert_int_equal(get16(out + 6) | get16(out + 8) | get16(out + 10), 0);
		assert_memory_equal(out + 12, "\7Blocked\7Example\0\0\1\0\1", 21);
		assert_int_equal(b[i].fn(M, out, 20), -ENOSPC);
	}
	/* RD is copied, not invented. */
	w->b[2] = 0;
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);
	assert_int_equal(dns_build_nxdomain(M, out, sizeof(out)), 33);
	assert_false(get16(out + 2) & DNS_F_RD);

	/* The forwarded query: our id, the question, a clean OPT, nothing else. */
	int n = dns_build_forward(M, 0x5555, out, sizeof(out));
	assert_int_equal(n, 12 + 21 + 11);
	assert_int_equal(get16(out), 0x5555);
	assert_int_equal(get16(out + 2), DNS_F_CD);
	assert_int_equal(get16(out + 10), 1);
	assert_int_equal(get16(out + 33 + 3), DNS_UDP_MAX); /* 65000 clamped */
	assert_int_equal(get16(out + 33 + 7), 0x8000);	    /* DO */
	assert_int_equal(get16(out + 33 + 9), 0);	    /* no options */
	assert_int_equal(dns_parse_query(out, (size_t)n, M), 0);
	assert_int_equal(M->edns_udp, DNS_UDP_MAX);
	mkquery(w, 9, "plain.example", DNS_T_A);
	assert_int_equal(dns_parse_query(w->b, w->n, M), 0);
	n = dns_build_forward(M, 1, out, sizeof(out));
	assert_int_equal(n, (int)w->n);
	assert_int_equal(get16(out + 10), 0);
	assert_int_equal(dns_build_forward(M, 1, out, 10), -ENOSPC);

	/* FORMERR: the header only, for a query whose question is broken. */
	whdr(w, 0x4242, DNS_F_RD, 1, 0, 0, 0);
	w8(w, 5);
	wbytes(w, "ab", 2);
	assert_int_equal(dns_parse_query(w->b, w->n, M), -EBADMSG);
	assert_int_equal(dns_build_formerr(w->b, w->n, out, sizeof(out)), 12);
	assert_int_equal(get16(out), 0x4242);
	assert_int_equal(get16(out + 2), DNS_F_QR | DNS_F_RD | DNS_F_RA | DNS_R_FORMERR);
	assert_int_equal(get16(out + 4), 0);
	w->b[2] |= 0x80; /* never answer a response */
	assert_int_equal(dns_build_formerr(w->b, w->n, out, sizeof(out)), -EBADMSG);
	assert_int_equal(dns_build_formerr(w->b, 11, out, sizeof(out)), -EBADMSG);
	free(w);
}

static void t_rewrite_nxdomain(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	whdr(w, 0x77, DNS_F_QR | DNS_F_AA | DNS_F_TC | DNS_F_RD | DNS_F_RA, 1, 2, 0, 1);
	wquestion(w, "rebind.example", DNS_T_A);
	size_t q_end = w->n;
	wrr_a(w, "rebind.example", 60, "192.168.1.5");
	wrr_a(w, "rebind.example", 60, "203.0.113.9");
	wopt(w, 1232, false);
	size_t len = 0;
	assert_int_equal(dns_rewrite_nxdomain(w->b, w->n, &len), 0);
	assert_int_equal(len, q_end);
	assert_int_equal(dns_parse_reply(w->b, len, M), 0);
	assert_int_equal(M->h.id, 0x77);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	assert_int_equal(M->h.flags & (DNS_F_AA | DNS_F_TC), 0);
	assert_true(M->h.flags & DNS_F_RD);
	assert_int_equal(M->h.ancount + M->h.nscount + M->h.arcount, 0);
	assert_int_equal(M->nrr, 0);
	assert_string_equal(M->q.name, "rebind.example");

	/* Unparseable: left alone. */
	uint8_t junk[14] = {1, 2, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 9, 'x'};
	uint8_t copy[14];
	memcpy(copy, junk, sizeof(junk));
	assert_int_equal(dns_rewrite_nxdomain(junk, sizeof(junk), &len), -EBADMSG);
	assert_memory_equal(junk, copy, sizeof(junk));
	free(w);
}

static void t_addr_internal(void **state)
{
	(void)state;
	static const struct {
		const char *addr;
		bool internal;
	} cases[] = {
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"10.200.0.1", true},
		{"127.0.0.1", true},
		{"127.255.0.9", true},
		{"100.64.0.1", true},
		{"100.127.255.255", true},
		{"100.63.0.1", false},
		{"100.128.0.1", false},
		{"169.254.169.254", true},
		{"169.254.0.1", true},
		{"172.16.0.1", true},
		{"172.31.255.1", true},
		{"172.15.0.1", false},
		{"172.32.0.1", false},
		{"192.168.1.5", true},
		{"192.169.0.1", false},
		{"203.0.113.7", false},
		{"198.51.100.1", false},
		{"8.8.8.8", false},
		{"::", true},
		{"::1", true},
		{"::2", false},
		{"fc00::1", true},
		{"fd00:ec2::254", true},
		{"fe80::1", true},
		{"febf::1", true},
		{"fec0::1", false},
		{"2001:db8::1", false},
		{"::ffff:192.168.1.1", true},
		{"::ffff:169.254.169.254", true},
		{"::ffff:203.0.113.1", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t a[16];
		int family = strchr(cases[i].addr, ':') ? AF_INET6 : AF_INET;
		assert_int_equal(inet_pton(family, cases[i].addr, a), 1);
		if (dns_addr_internal(family, a) != cases[i].internal)
			fail_msg("%s: expected %s", cases[i].addr,
				 cases[i].internal ? "internal" : "public");
	}
}

/* ---- a fake upstream resolver --------------------------------------------------- */

struct upstream {
	int udp, tcp, stop[2];
	struct sockaddr_in addr; /* UDP and TCP on the same port */
	pthread_t tid;
	pthread_mutex_t mu;
	unsigned queries;
	uint16_t last_ids[2];
	struct wbuf last; /* the last query received */
	struct wbuf reply;
};

static struct upstream UP;

/* The question of a query (uncompressed, as the interceptor sends it). */
static bool read_question(const uint8_t *m, size_t len, char *name, uint16_t *type, size_t *end)
{
	size_t off = 12, t = 0;
	if (len < 12)
		return false;
	while (off < len && m[off]) {
		size_t l = m[off];
		if (l > 63 || off + 1 + l >= len || t + l + 2 > 256)
			return false;
		if (t)
			name[t++] = '.';
		for (size_t i = 0; i < l; i++) {
			char c = (char)m[off + 1 + i];
			name[t++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
		}
		off += 1 + l;
	}
	name[t] = '\0';
	if (off + 5 > len)
		return false;
	*type = get16(m + off + 1);
	*end = off + 5;
	return true;
}

/*
 * The fixed world:
 *   allowed.example   A 203.0.113.7 (300)   AAAA 2001:db8::7 (301)
 *   rebind.example    A 192.168.1.5 (60)
 *   chain.example     CNAME mid.example (30), mid CNAME end.example (40),
 *                     end A 198.51.100.1 (120), A 198.51.100.2 (100),
 *                     plus other.example A 198.51.100.99 (not the answer);
 *                     AAAA: CNAME end.example, end AAAA 2001:db8::1 (90)
 *   chclass.example   A 203.0.113.8, and an A 10.0.0.1 of class CH
 *   big.example       UDP: TC and nothing; TCP: 40 A records
 *   servfail.example  SERVFAIL
 *   wrongq.example    a reply to another question
 *   silent.example    no reply at all
 *   anything else     NXDOMAIN
 */
static size_t fake_answer(struct upstream *u, const uint8_t *q, size_t len, bool tcp)
{
	char name[256];
	uint16_t type;
	size_t end;
	struct wbuf *w = &u->reply;

	if (!read_question(q, len, name, &type, &end))
		return 0;
	pthread_mutex_lock(&u->mu);
	u->queries++;
	u->last_ids[0] = u->last_ids[1];
	u->last_ids[1] = get16(q);
	memcpy(u->last.b, q, len);
	u->last.n = len;
	pthread_mutex_unlock(&u->mu);

	if (strcmp(name, "silent.example") == 0)
		return 0;
	uint16_t flags = DNS_F_QR | DNS_F_RA | (get16(q + 2) & DNS_F_RD);
	whdr(w, get16(q), flags, 1, 0, 0, 0);
	wbytes(w, q + 12, end - 12);
	uint16_t an = 0;
	if (strcmp(name, "allowed.example") == 0) {
		if (type == DNS_T_A)
			wrr_a(w, "allowed.example", 300, "203.0.113.7");
		else
			wrr_aaaa(w, "allowed.example", 301, "2001:db8::7");
		an = 1;
	} else if (strcmp(name, "rebind.example") == 0) {
		wrr_a(w, "rebind.example", 60, "192.168.1.5");
		an = 1;
	} else if (strcmp(name, "chain.example") == 0 && type == DNS_T_A) {
		wrr_cname(w, "chain.example", 30, "mid.example");
		wrr_cname(w, "mid.example", 40, "end.example");
		wrr_a(w, "end.example", 120, "198.51.100.1");
		wrr_a(w, "end.example", 100, "198.51.100.2");
		wrr_a(w, "other.example", 50, "198.51.100.99");
		an = 5;
	} else if (strcmp(name, "chain.example") == 0) {
		wrr_cname(w, "chain.example", 30, "end.example");
		wrr_aaaa(w, "end.example", 90, "2001:db8::1");
		an = 2;
	} else if (strcmp(name, "big.example") == 0) {
		if (tcp) {
			for (unsigned i = 0; i < 40; i++) {
				char a[32];
				snprintf(a, sizeof(a), "203.0.113.%u", i + 1);
				wrr_a(w, "big.example", 30, a);
			}
			an = 40;
		} else {
			w->b[2] |= DNS_F_TC >> 8;
		}
	} else if (strcmp(name, "chclass.example") == 0) {
		/* Public in IN, and a private address in class CH. */
		wrr_a(w, "chclass.example", 60, "203.0.113.8");
		wname(w, "chclass.example");
		w16(w, DNS_T_A);
		w16(w, 3);
		w32(w, 60);
		w16(w, 4);
		wbytes(w, "\x0a\0\0\1", 4);
		an = 2;
	} else if (strcmp(name, "servfail.example") == 0) {
		w->b[3] |= DNS_R_SERVFAIL;
	} else if (strcmp(name, "wrongq.example") == 0) {
		w->n = 12;
		wquestion(w, "other.example", type);
	} else {
		w->b[3] |= DNS_R_NXDOMAIN;
	}
	w->b[6] = (uint8_t)(an >> 8);
	w->b[7] = (uint8_t)an;
	return w->n;
}

static bool read_full(int fd, uint8_t *b, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, b + got, n - got);
		if (r <= 0)
			return false;
		got += (size_t)r;
	}
	return true;
}

static void fake_tcp(struct upstream *u, int fd)
{
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	uint8_t *q = malloc(DNS_MSG_MAX);
	uint8_t len[2];
	while (read_full(fd, len, 2)) {
		size_t l = get16(len);
		if (!read_full(fd, q, l))
			break;
		size_t n = fake_answer(u, q, l, true);
		if (n == 0)
			continue;
		len[0] = (uint8_t)(n >> 8);
		len[1] = (uint8_t)n;
		if (write(fd, len, 2) != 2 || write(fd, u->reply.b, n) != (ssize_t)n)
			break;
	}
	free(q);
	close(fd);
}

static void *fake_main(void *arg)
{
	struct upstream *u = arg;
	uint8_t *q = malloc(DNS_MSG_MAX);
	for (;;) {
		struct pollfd pf[3] = {
			{u->udp, POLLIN, 0}, {u->tcp, POLLIN, 0}, {u->stop[0], POLLIN, 0}};
		if (poll(pf, 3, -1) < 0)
			continue;
		if (pf[2].revents)
			break;
		if (pf[0].revents & POLLIN) {
			struct sockaddr_storage from;
			socklen_t fl = sizeof(from);
			ssize_t n =
				recvfrom(u->udp, q, DNS_MSG_MAX, 0, (struct sockaddr *)&from, &fl);
			if (n > 0) {
				size_t r = fake_answer(u, q, (size_t)n, false);
				if (r)
					sendto(u->udp, u->reply.b, r, 0, (struct sockaddr *)&from,
					       fl);
			}
		}
		if (pf[1].revents & POLLIN) {
			int fd = accept(u->tcp, NULL, NULL);
			if (fd >= 0)
				fake_tcp(u, fd);
		}
	}
	free(q);
	return NULL;
}

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sin;
}

/* A socket of the given type bound to 127.0.0.1 (port 0: any); *port is its port. */
static int bound(int type, uint16_t want, uint16_t *port)
{
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sin = loopback(want);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	if (type == SOCK_STREAM)
		assert_int_equal(listen(fd, 16), 0);
	socklen_t l = sizeof(sin);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &l), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

static unsigned up_queries(void)
{
	pthread_mutex_lock(&UP.mu);
	unsigned n = UP.queries;
	pthread_mutex_unlock(&UP.mu);
	return n;
}

/* ---- the policy the tests give the interceptor -------------------------------- */

struct pinrec {
	char name[DNS_NAME_TEXT_MAX];
	char addr[INET6_ADDRSTRLEN];
	uint32_t ttl;
};

static pthread_mutex_t pol_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pinrec pins[64];
static unsigned npins;
static bool allow_internal;
static char asked_internal[INET6_ADDRSTRLEN];

static int pol_query(void *ctx, const char *qname, uint16_t qtype)
{
	(void)ctx;
	(void)qtype;
	size_t l = strlen(qname), s = strlen("blocked.example");
	return l >= s && strcmp(qname + l - s, "blocked.example") == 0 ? DNSPROXY_BLOCK
								       : DNSPROXY_ALLOW;
}

static void sa_text(const struct sockaddr *sa, char *buf)
{
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf,
			  INET6_ADDRSTRLEN);
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf,
			  INET6_ADDRSTRLEN);
}

static bool pol_address_allowed(void *ctx, const struct sockaddr *addr)
{
	(void)ctx;
	pthread_mutex_lock(&pol_mu);
	sa_text(addr, asked_internal);
	bool ok = allow_internal;
	pthread_mutex_unlock(&pol_mu);
	return ok;
}

static void pol_pin(void *ctx, const char *qname, const struct sockaddr *addr, uint32_t ttl)
{
	(void)ctx;
	pthread_mutex_lock(&pol_mu);
	if (npins < 64) {
		snprintf(pins[npins].name, sizeof(pins[npins].name), "%s", qname);
		sa_text(addr, pins[npins].addr);
		pins[npins].ttl = ttl;
		npins++;
	}
	pthread_mutex_unlock(&pol_mu);
}

static const struct dnsproxy_policy POLICY = {
	.query = pol_query,
	.address_allowed = pol_address_allowed,
	.pin = pol_pin,
};

static void pins_reset(void)
{
	pthread_mutex_lock(&pol_mu);
	npins = 0;
	allow_internal = false;
	asked_internal[0] = '\0';
	pthread_mutex_unlock(&pol_mu);
}

/* ---- the interceptor under test ---------------------------------------------------- */

struct px {
	int udp, tcp;
	uint16_t udp_port, tcp_port;
	struct dnsproxy *p;
};

#define TIMEOUT_MS 300

static struct px PX; /* the default one: one upstream, the fake */

static int thread_calls;

static int counting_thread(void *ctx, void *(*fn)(void *), void *arg, pthread_t *tid)
{
	(*(int *)ctx)++;
	return -pthread_create(tid, NULL, fn, arg);
}

/* Start an interceptor; cfg's fds and policy are filled in here. */
static void px_start(struct px *x, struct dnsproxy_cfg *cfg)
{
	x->udp = bound(SOCK_DGRAM, 0, &x->udp_port);
	x->tcp = bound(SOCK_STREAM, 0, &x->tcp_port);
	cfg->udp_fd = x->udp;
	cfg->tcp_listen_fd = x->tcp;
	cfg->udp6_fd = cfg->tcp6_listen_fd = -1;
	if (!cfg->policy)
		cfg->policy = &POLICY;
	if (!cfg->timeout_ms)
		cfg->timeout_ms = TIMEOUT_MS;
	cfg->thread_create = counting_thread;
	cfg->thread_ctx = &thread_calls;
	assert_int_equal(dnsproxy_start(cfg, &x->p), 0);
}

static void px_stop(struct px *x)
{
	dnsproxy_stop(x->p);
	/* The caller's sockets are still the caller's. */
	assert_true(fcntl(x->udp, F_GETFD) >= 0);
	assert_true(fcntl(x->tcp, F_GETFD) >= 0);
	close(x->udp);
	close(x->tcp);
}

static void cfg_upstream(struct dnsproxy_cfg *cfg, unsigned i, uint16_t port)
{
	struct sockaddr_in sin = loopback(port);
	memcpy(&cfg->upstream[i], &sin, sizeof(sin));
	cfg->upstream_len[i] = sizeof(sin);
	if (cfg->nupstream < i + 1)
		cfg->nupstream = i + 1;
}

static uint64_t ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int udp_client(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sin = loopback(port);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* Wait up to wait_ms for a datagram; its length, or -1. */
static ssize_t recv_wait(int fd, uint8_t *buf, size_t cap, int wait_ms)
{
	struct pollfd pf = {fd, POLLIN, 0};
	if (poll(&pf, 1, wait_ms) != 1)
		return -1;
	return recv(fd, buf, cap, 0);
}

/* Ask over UDP and parse the reply into M; its length, or -1 on no reply. */
static ssize_t ask(uint16_t port, uint16_t id, const char *name, uint16_t type, int wait_ms)
{
	struct wbuf *w = malloc(sizeof(*w));
	int fd = udp_client(port);
	mkquery(w, id, name, type);
	assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	ssize_t n = recv_wait(fd, w->b, sizeof(w->b), wait_ms);
	if (n >= 0) {
		assert_int_equal(dns_parse_reply(w->b, (size_t)n, M), 0);
		assert_int_equal(M->h.id, id);
		assert_string_equal(M->q.name, name);
	}
	close(fd);
	free(w);
	return n;
}

static int tcp_client(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sin = loopback(port);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	struct timeval tv = {.tv_sec = 3};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void tcp_send_query(int fd, uint16_t id, const char *name, uint16_t type)
{
	struct wbuf *w = malloc(sizeof(*w));
	mkquery(w, id, name, type);
	uint8_t len[2] = {(uint8_t)(w->n >> 8), (uint8_t)w->n};
	assert_int_equal(write(fd, len, 2), 2);
	assert_int_equal(write(fd, w->b, w->n), (ssize_t)w->n);
	free(w);
}

/* Read one framed reply into M (checking id and name); its length. */
static size_t tcp_read_reply(int fd, uint16_t id, const char *name)
{
	uint8_t len[2];
	uint8_t *b = malloc(DNS_MSG_MAX);
	assert_true(read_full(fd, len, 2));
	size_t n = get16(len);
	assert_true(read_full(fd, b, n));
	assert_int_equal(dns_parse_reply(b, n, M), 0);
	assert_int_equal(M->h.id, id);
	assert_string_equal(M->q.name, name);
	free(b);
	return n;
}

/* ---- the interceptor's tests ------------------------------------------------------- */

static void t_px_allowed(void **state)
{
	(void)state;
	char buf[INET6_ADDRSTRLEN];
	pins_reset();
	assert_true(ask(PX.udp_port, 0x1111, "allowed.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NOERROR);
	assert_int_equal(M->nrr, 1);
	assert_string_equal(a4(&M->rr[0], buf), "203.0.113.7");
	assert_int_equal(M->rr[0].ttl, 300);
	pthread_mutex_lock(&pol_mu);
	assert_int_equal(npins, 1);
	assert_string_equal(pins[0].name, "allowed.example");
	assert_string_equal(pins[0].addr, "203.0.113.7");
	assert_int_equal(pins[0].ttl, 300);
	pthread_mutex_unlock(&pol_mu);

	/* Upstream saw our query, not the guest's: another id. */
	pthread_mutex_lock(&UP.mu);
	uint16_t up_id = UP.last_ids[1];
	pthread_mutex_unlock(&UP.mu);
	assert_int_not_equal(up_id, 0x1111);

	/* A name the fake does not know: its NXDOMAIN passes through. */
	assert_true(ask(PX.udp_port, 2, "nothing.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
}

static void t_px_blocked(void **state)
{
	(void)state;
	pins_reset();
	unsigned before = up_queries();
	uint64_t t0 = ms();
	assert_true(ask(PX.udp_port, 0x2222, "ads.blocked.example", DNS_T_A, 2000) > 0);
	uint64_t took = ms() - t0;
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	assert_true(M->h.flags & DNS_F_RA);
	assert_int_equal(M->nrr, 0);
	/* Answered on the spot: nothing went upstream, and far below one timeout. */
	assert_int_equal(up_queries(), before);
	if (took >= TIMEOUT_MS / 3)
		fail_msg("blocked name took %llu ms", (unsigned long long)took);
	assert_int_equal(npins, 0);
}

static void t_px_silent(void **state)
{
	(void)state;
	struct px x;
	struct dnsproxy_cfg cfg = {0};
	cfg_upstream(&cfg, 0, ntohs(UP.addr.sin_port));
	cfg_upstream(&cfg, 1, ntohs(UP.addr.sin_port));
	px_start(&x, &cfg);
	unsigned before = up_queries();
	uint64_t t0 = ms();
	assert_true(ask(x.udp_port, 0x3333, "silent.example", DNS_T_A, 3000) > 0);
	uint64_t took = ms() - t0;
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_SERVFAIL);
	/* Both upstreams tried in turn, each with its own fresh id. */
	assert_int_equal(up_queries(), before + 2);
	pthread_mutex_lock(&UP.mu);
	assert_int_not_equal(UP.last_ids[0], UP.last_ids[1]);
	pthread_mutex_unlock(&UP.mu);
	if (took < 2 * TIMEOUT_MS - 20 || took > 2 * TIMEOUT_MS + 700)
		fail_msg("SERVFAIL after %llu ms, budget %u", (unsigned long long)took,
			 2 * TIMEOUT_MS);
	struct dnsproxy_stats st;
	dnsproxy_stats(x.p, &st);
	assert_int_equal(st.servfail, 1);
	assert_int_equal(st.forwarded, 2);
	px_stop(&x);
}

static void t_px_failover(void **state)
{
	(void)state;
	struct px x;
	struct dnsproxy_cfg cfg = {0};
	/* First a socket that never answers, then one where nothing listens, then the fake. */
	uint16_t deaf_port, closed_port;
	int deaf = bound(SOCK_DGRAM, 0, &deaf_port);
	int closed = bound(SOCK_DGRAM, 0, &closed_port);
	close(closed);
	cfg_upstream(&cfg, 0, deaf_port);
	cfg_upstream(&cfg, 1, closed_port);
	cfg_upstream(&cfg, 2, ntohs(UP.addr.sin_port));
	px_start(&x, &cfg);
	uint64_t t0 = ms();
	assert_true(ask(x.udp_port, 0x4444, "allowed.example", DNS_T_AAAA, 3000) > 0);
	uint64_t took = ms() - t0;
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NOERROR);
	assert_int_equal(M->nrr, 1);
	assert_int_equal(M->rr[0].type, DNS_T_AAAA);
	/* One timeout for the deaf one; the refused port fails over without waiting. */
	if (took < TIMEOUT_MS - 20 || took > 2 * TIMEOUT_MS - 50)
		fail_msg("failover took %llu ms", (unsigned long long)took);

	/* An upstream SERVFAIL moves on too; with none left the guest gets ours, at once. */
	t0 = ms();
	assert_true(ask(PX.udp_port, 0x4445, "servfail.example", DNS_T_A, 3000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_SERVFAIL);
	assert_true(ms() - t0 < TIMEOUT_MS);
	/*
	 * A reply that answers another question is not an answer: that
	 * upstream failed (and the guest never sees the stray records).
	 */
	t0 = ms();
	assert_true(ask(PX.udp_port, 0x4446, "wrongq.example", DNS_T_A, 3000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_SERVFAIL);
	assert_int_equal(M->nrr, 0);
	assert_true(ms() - t0 < TIMEOUT_MS);
	px_stop(&x);
	close(deaf);
}

static void t_px_rebind(void **state)
{
	(void)state;
	char buf[INET6_ADDRSTRLEN];
	pins_reset();
	assert_true(ask(PX.udp_port, 0x5555, "rebind.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	assert_int_equal(M->nrr, 0);
	pthread_mutex_lock(&pol_mu);
	assert_string_equal(asked_internal, "192.168.1.5");
	assert_int_equal(npins, 0);
	allow_internal = true;
	pthread_mutex_unlock(&pol_mu);

	assert_true(ask(PX.udp_port, 0x5556, "rebind.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NOERROR);
	assert_int_equal(M->nrr, 1);
	assert_string_equal(a4(&M->rr[0], buf), "192.168.1.5");
	pthread_mutex_lock(&pol_mu);
	assert_int_equal(npins, 1);
	assert_string_equal(pins[0].addr, "192.168.1.5");
	pthread_mutex_unlock(&pol_mu);

	/* An internal address hidden in another class is seen too. */
	pthread_mutex_lock(&pol_mu);
	allow_internal = false;
	pthread_mutex_unlock(&pol_mu);
	assert_true(ask(PX.udp_port, 0x5558, "chclass.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	assert_string_equal(asked_internal, "10.0.0.1");

	/* Without an address_allowed callback, internal answers never pass. */
	struct px x;
	struct dnsproxy_policy nocb = {.query = pol_query};
	struct dnsproxy_cfg cfg = {.policy = &nocb};
	cfg_upstream(&cfg, 0, ntohs(UP.addr.sin_port));
	px_start(&x, &cfg);
	assert_true(ask(x.udp_port, 0x5557, "rebind.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	struct dnsproxy_stats st;
	dnsproxy_stats(x.p, &st);
	assert_int_equal(st.rebind, 1);
	px_stop(&x);
	pins_reset();
}

static int pin_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pinrec *)a)->addr, ((const struct pinrec *)b)->addr);
}

static void t_px_chain_pins(void **state)
{
	(void)state;
	pins_reset();
	assert_true(ask(PX.udp_port, 0x6666, "chain.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NOERROR);
	assert_int_equal(M->nrr, 5); /* the guest gets the reply as it was */
	assert_true(ask(PX.udp_port, 0x6667, "chain.example", DNS_T_AAAA, 2000) > 0);
	pthread_mutex_lock(&pol_mu);
	assert_int_equal(npins, 3);
	qsort(pins, npins, sizeof(pins[0]), pin_cmp);
	static const struct {
		const char *addr;
		uint32_t ttl;
	} want[] = {{"198.51.100.1", 120}, {"198.51.100.2", 100}, {"2001:db8::1", 90}};
	for (unsigned i = 0; i < 3; i++) {
		assert_string_equal(pins[i].name, "chain.example");
		assert_string_equal(pins[i].addr, want[i].addr);
		assert_int_equal(pins[i].ttl, want[i].ttl);
	}
	pthread_mutex_unlock(&pol_mu);
}

static void t_px_tcp(void **state)
{
	(void)state;
	char buf[INET6_ADDRSTRLEN];
	pins_reset();

	/* Too big for UDP: the guest sees TC, then asks over TCP and gets it all. */
	assert_true(ask(PX.udp_port, 0x7777, "big.example", DNS_T_A, 2000) > 0);
	assert_true(M->h.flags & DNS_F_TC);
	int fd = tcp_client(PX.tcp_port);
	tcp_send_query(fd, 0x7778, "big.example", DNS_T_A);
	assert_true(tcp_read_reply(fd, 0x7778, "big.example") > 512);
	assert_int_equal(M->nrr, 40);
	assert_string_equal(a4(&M->rr[39], buf), "203.0.113.40");

	/* Two queries pipelined on the same connection, then a blocked one. */
	tcp_send_query(fd, 0x7779, "allowed.example", DNS_T_A);
	tcp_send_query(fd, 0x777a, "chain.example", DNS_T_AAAA);
	tcp_read_reply(fd, 0x7779, "allowed.example");
	assert_string_equal(a4(&M->rr[0], buf), "203.0.113.7");
	tcp_read_reply(fd, 0x777a, "chain.example");
	assert_int_equal(M->nrr, 2);
	tcp_send_query(fd, 0x777b, "x.blocked.example", DNS_T_A);
	tcp_read_reply(fd, 0x777b, "x.blocked.example");
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	/* Rebind protection over TCP too. */
	tcp_send_query(fd, 0x777c, "rebind.example", DNS_T_A);
	tcp_read_reply(fd, 0x777c, "rebind.example");
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	close(fd);

	pthread_mutex_lock(&pol_mu);
	assert_int_equal(npins, 40 + 1 + 1);
	assert_string_equal(pins[41].name, "chain.example");
	assert_string_equal(pins[41].addr, "2001:db8::1");
	pthread_mutex_unlock(&pol_mu);

	/* A length that cannot be a query closes the connection. */
	fd = tcp_client(PX.tcp_port);
	assert_int_equal(write(fd, "\0\5hello", 7), 7);
	uint8_t b[4];
	assert_true(read(fd, b, sizeof(b)) <= 0); /* EOF, or a reset for the unread byte */
	close(fd);
}

static void t_px_tcp_limits(void **state)
{
	(void)state;
	struct px x;
	struct dnsproxy_cfg cfg = {.max_tcp = 2, .tcp_idle_ms = 200};
	cfg_upstream(&cfg, 0, ntohs(UP.addr.sin_port));
	px_start(&x, &cfg);
	uint8_t b[4];

	int a = tcp_client(x.tcp_port), c = tcp_client(x.tcp_port);
	usleep(50 * 1000);
	/* A third connection is closed at once, not left hanging. */
	uint64_t t0 = ms();
	int d = tcp_client(x.tcp_port);
	assert_int_equal(read(d, b, sizeof(b)), 0);
	assert_true(ms() - t0 < 150);
	close(d);
	/* The idle ones are closed after tcp_idle_ms. */
	t0 = ms();
	assert_int_equal(read(a, b, sizeof(b)), 0);
	uint64_t took = ms() - t0;
	if (took < 100 || took > 1000)
		fail_msg("idle connection closed after %llu ms", (unsigned long long)took);
	assert_int_equal(read(c, b, sizeof(b)), 0);
	close(a);
	close(c);
	/* A slow client that sends half a query gets no more time than the idle limit. */
	a = tcp_client(x.tcp_port);
	assert_int_equal(write(a, "\0\40\1", 3), 3);
	t0 = ms();
	assert_int_equal(read(a, b, sizeof(b)), 0);
	assert_true(ms() - t0 < 1000);
	close(a);
	/* And there is room again. */
	a = tcp_client(x.tcp_port);
	tcp_send_query(a, 1, "allowed.example", DNS_T_A);
	tcp_read_reply(a, 1, "allowed.example");
	close(a);
	struct dnsproxy_stats st;
	dnsproxy_stats(x.p, &st);
	assert_int_equal(st.tcp_refused, 1);
	px_stop(&x);
}

static void t_px_concurrent(void **state)
{
	(void)state;
	enum { N = 300 };
	struct wbuf *w = malloc(sizeof(*w));
	static const char *names[] = {"allowed.example", "chain.example", "nothing.example",
				      "q.blocked.example"};
	static bool got[N];
	memset(got, 0, sizeof(got));
	int fd = udp_client(PX.udp_port);
	int rcv = 1 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	/* In bursts of 50 so that the loopback socket buffers never drop any. */
	unsigned answered = 0;
	for (unsigned base = 0; base < N; base += 50) {
		for (unsigned i = base; i < base + 50; i++) {
			mkquery(w, (uint16_t)(0x8000 + i), names[i % 4], DNS_T_A);
			assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
		}
		for (unsigned k = 0; k < 50; k++) {
			ssize_t n = recv_wait(fd, w->b, sizeof(w->b), 2000);
			assert_true(n > 0);
			assert_int_equal(dns_parse_reply(w->b, (size_t)n, M), 0);
			unsigned i = M->h.id - 0x8000u;
			assert_true(i < N);
			assert_false(got[i]);
			got[i] = true;
			assert_string_equal(M->q.name, names[i % 4]);
			unsigned want_rcode = i % 4 < 2 ? DNS_R_NOERROR : DNS_R_NXDOMAIN;
			assert_int_equal(DNS_F_RCODE(M->h.flags), want_rcode);
			answered++;
		}
	}
	assert_int_equal(answered, N);
	close(fd);
	free(w);
}

static void t_px_pending_full(void **state)
{
	(void)state;
	struct px x;
	struct dnsproxy_cfg cfg = {.max_pending = 2, .timeout_ms = 500};
	cfg_upstream(&cfg, 0, ntohs(UP.addr.sin_port));
	px_start(&x, &cfg);
	struct wbuf *w = malloc(sizeof(*w));
	int fd = udp_client(x.udp_port);
	uint64_t t0 = ms();
	for (uint16_t id = 1; id <= 3; id++) {
		mkquery(w, id, "silent.example", DNS_T_A);
		assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	}
	/* The third finds the table full: SERVFAIL at once, not after the timeout. */
	ssize_t n = recv_wait(fd, w->b, sizeof(w->b), 2000);
	assert_true(n > 0);
	assert_true(ms() - t0 < 250);
	assert_int_equal(get16(w->b), 3);
	assert_int_equal(DNS_F_RCODE(get16(w->b + 2)), DNS_R_SERVFAIL);
	for (int k = 0; k < 2; k++) {
		n = recv_wait(fd, w->b, sizeof(w->b), 2000);
		assert_true(n > 0);
		assert_int_equal(DNS_F_RCODE(get16(w->b + 2)), DNS_R_SERVFAIL);
	}
	assert_true(ms() - t0 >= 480);
	close(fd);
	free(w);
	px_stop(&x);
}

static void t_px_malformed(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	int fd = udp_client(PX.udp_port);
	struct dnsproxy_stats before, after;
	dnsproxy_stats(PX.p, &before);

	/* Shorter than a header, and a response: dropped, no reply. */
	assert_int_equal(send(fd, "\1\2\3\4\5", 5, 0), 5);
	whdr(w, 9, DNS_F_QR, 1, 0, 0, 0);
	wquestion(w, "allowed.example", DNS_T_A);
	assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	assert_int_equal(recv_wait(fd, w->b, sizeof(w->b), 200), -1);

	/* A broken question, and a pointer loop: FORMERR with the guest's id. */
	whdr(w, 0xf00d, DNS_F_RD, 1, 0, 0, 0);
	w8(w, 9);
	wbytes(w, "abc", 3);
	assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	assert_int_equal(recv_wait(fd, w->b, sizeof(w->b), 1000), 12);
	assert_int_equal(get16(w->b), 0xf00d);
	assert_int_equal(DNS_F_RCODE(get16(w->b + 2)), DNS_R_FORMERR);
	whdr(w, 0xf00e, 0, 1, 0, 0, 0);
	w8(w, 1);
	w8(w, 'a');
	w16(w, 0xc00c);
	w16(w, 1);
	w16(w, 1);
	assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	assert_int_equal(recv_wait(fd, w->b, sizeof(w->b), 1000), 12);
	assert_int_equal(get16(w->b), 0xf00e);
	assert_int_equal(DNS_F_RCODE(get16(w->b + 2)), DNS_R_FORMERR);

	/* Another opcode: NOTIMP.  ANY and CHAOS: REFUSED. */
	mkquery(w, 0xf00f, "allowed.example", DNS_T_A);
	w->b[2] |= 2 << 3; /* STATUS */
	assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	assert_true(recv_wait(fd, w->b, sizeof(w->b), 1000) > 12);
	assert_int_equal(DNS_F_RCODE(get16(w->b + 2)), DNS_R_NOTIMP);
	assert_true(ask(PX.udp_port, 0xf010, "allowed.example", DNS_T_ANY, 1000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_REFUSED);
	mkquery(w, 0xf011, "version.bind", 16);
	w->b[w->n - 1] = 3; /* class CH */
	assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	assert_true(recv_wait(fd, w->b, sizeof(w->b), 1000) > 12);
	assert_int_equal(DNS_F_RCODE(get16(w->b + 2)), DNS_R_REFUSED);

	/* Random junk by the hundred, then the interceptor still answers. */
	srand(42);
	for (int i = 0; i < 500; i++) {
		size_t n = 12 + (size_t)(rand() % 60);
		for (size_t k = 0; k < n; k++)
			w->b[k] = (uint8_t)rand();
		w->b[2] &= 0x7f;
		(void)send(fd, w->b, n, 0);
	}
	close(fd);
	/*
	 * The burst may have filled the socket buffer, which drops datagrams as
	 * a network would: ask as a stub resolver does, again after a second.
	 */
	ssize_t got = -1;
	for (int tries = 0; tries < 3 && got < 0; tries++)
		got = ask(PX.udp_port, 0xf012, "allowed.example", DNS_T_A, 1000);
	assert_true(got > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NOERROR);
	dnsproxy_stats(PX.p, &after);
	assert_int_equal(after.dropped - before.dropped, 2);
	assert_true(after.formerr - before.formerr >= 2);
	free(w);
}

static void t_px_forwarded_query(void **state)
{
	(void)state;
	struct wbuf *w = malloc(sizeof(*w));
	int fd = udp_client(PX.udp_port);
	/* The guest's extra records and EDNS options do not reach the upstream. */
	whdr(w, 0xabcd, DNS_F_RD, 1, 0, 1, 1);
	wquestion(w, "Allowed.Example", DNS_T_A);
	wrr_a(w, "junk.example", 1, "10.0.0.1");
	w8(w, 0);
	w16(w, DNS_T_OPT);
	w16(w, 9000);
	w32(w, 0);
	w16(w, 4);
	w32(w, 0x000a0000); /* an empty COOKIE option */
	assert_int_equal(send(fd, w->b, w->n, 0), (ssize_t)w->n);
	ssize_t n = recv_wait(fd, w->b, sizeof(w->b), 2000);
	assert_true(n > 0);
	assert_int_equal(dns_parse_reply(w->b, (size_t)n, M), 0);
	assert_int_equal(M->h.id, 0xabcd);
	/* The case the guest used comes back (0x20 randomization survives). */
	assert_memory_equal(w->b + 12, "\7Allowed\7Example", 16);
	close(fd);

	pthread_mutex_lock(&UP.mu);
	const uint8_t *q = UP.last.b;
	size_t qn = UP.last.n;
	assert_int_not_equal(get16(q), 0xabcd);
	assert_int_equal(get16(q + 4), 1);
	assert_int_equal(get16(q + 6), 0);
	assert_int_equal(get16(q + 8), 0);
	assert_int_equal(get16(q + 10), 1);
	assert_int_equal(qn, 12 + 17 + 4 + 11);
	assert_int_equal(get16(q + 33 + 3), DNS_UDP_MAX);
	assert_int_equal(get16(q + 33 + 9), 0);
	pthread_mutex_unlock(&UP.mu);
	free(w);
}

/* No upstream at all (a host without a resolver): SERVFAIL at once, never a wait. */
static void t_px_no_upstream(void **state)
{
	(void)state;
	struct px x;
	struct dnsproxy_cfg cfg = {.timeout_ms = 1000};
	px_start(&x, &cfg);
	uint64_t t0 = ms();
	assert_true(ask(x.udp_port, 1, "allowed.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_SERVFAIL);
	assert_true(ask(x.udp_port, 2, "x.blocked.example", DNS_T_A, 2000) > 0);
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_NXDOMAIN);
	int fd = tcp_client(x.tcp_port);
	tcp_send_query(fd, 3, "allowed.example", DNS_T_AAAA);
	tcp_read_reply(fd, 3, "allowed.example");
	assert_int_equal(DNS_F_RCODE(M->h.flags), DNS_R_SERVFAIL);
	close(fd);
	assert_true(ms() - t0 < 500);
	px_stop(&x);
}

static int failing_thread(void *ctx, void *(*fn)(void *), void *arg, pthread_t *tid)
{
	(void)ctx;
	(void)fn;
	(void)arg;
	(void)tid;
	return -EAGAIN;
}

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void t_px_bad_cfg(void **state)
{
	(void)state;
	struct dnsproxy *p = NULL;
	struct dnsproxy_cfg cfg = {
		.udp_fd = -1, .tcp_listen_fd = -1, .udp6_fd = -1, .tcp6_listen_fd = -1};
	cfg_upstream(&cfg, 0, 53);
	assert_int_equal(dnsproxy_start(&cfg, &p), -EINVAL); /* no sockets */
	cfg.udp_fd = PX.udp;
	cfg.nupstream = DNSPROXY_UPSTREAMS_MAX + 1;
	assert_int_equal(dnsproxy_start(&cfg, &p), -EINVAL); /* too many upstreams */
	cfg.nupstream = 1;
	cfg.upstream_len[0] = 3;
	assert_int_equal(dnsproxy_start(&cfg, &p), -EINVAL); /* a bad address */
	/* A thread that cannot be made: its error, and nothing left open. */
	cfg.upstream_len[0] = sizeof(struct sockaddr_in);
	cfg.thread_create = failing_thread;
	int fds = count_fds();
	assert_int_equal(dnsproxy_start(&cfg, &p), -EAGAIN);
	assert_null(p);
	assert_int_equal(count_fds(), fds);
	assert_true(fcntl(PX.udp, F_GETFD) >= 0);
	/* The proxies above were all started through the caller's thread function. */
	assert_true(thread_calls >= 5);
	dnsproxy_stop(NULL);
}

static int group_setup(void **state)
{
	(void)state;
	M = malloc(sizeof(*M));
	pthread_mutex_init(&UP.mu, NULL);
	uint16_t port;
	UP.udp = bound(SOCK_DGRAM, 0, &port);
	/* TCP on the same port number, so one sockaddr names both. */
	UP.tcp = bound(SOCK_STREAM, port, &port);
	UP.addr = loopback(port);
	if (pipe2(UP.stop, O_CLOEXEC) < 0)
		return -1;
	if (pthread_create(&UP.tid, NULL, fake_main, &UP) != 0)
		return -1;
	struct dnsproxy_cfg cfg = {0};
	cfg_upstream(&cfg, 0, port);
	px_start(&PX, &cfg);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	px_stop(&PX);
	assert_int_equal(write(UP.stop[1], "x", 1), 1);
	pthread_join(UP.tid, NULL);
	close(UP.udp);
	close(UP.tcp);
	free(M);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_query_basic),      cmocka_unit_test(t_compression),
		cmocka_unit_test(t_pointer_loops),    cmocka_unit_test(t_truncation),
		cmocka_unit_test(t_name_limits),      cmocka_unit_test(t_records),
		cmocka_unit_test(t_cname_chain),      cmocka_unit_test(t_builders),
		cmocka_unit_test(t_rewrite_nxdomain), cmocka_unit_test(t_addr_internal),
		cmocka_unit_test(t_px_allowed),	      cmocka_unit_test(t_px_blocked),
		cmocka_unit_test(t_px_silent),	      cmocka_unit_test(t_px_failover),
		cmocka_unit_test(t_px_rebind),	      cmocka_unit_test(t_px_chain_pins),
		cmocka_unit_test(t_px_tcp),	      cmocka_unit_test(t_px_tcp_limits),
		cmocka_unit_test(t_px_concurrent),    cmocka_unit_test(t_px_pending_full),
		cmocka_unit_test(t_px_malformed),     cmocka_unit_test(t_px_forwarded_query),
		cmocka_unit_test(t_px_no_upstream),   cmocka_unit_test(t_px_bad_cfg),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
