/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DNS messages: the parser and builders of dns.h.
 *
 * Bounds: every read is checked against the message length before it is
 * made (rd16/rd32 are only called after a check); a name is at most 255
 * wire bytes however it is compressed; a compression pointer must point at
 * or after the question (offset 12) and strictly before the previous jump's
 * target (before the name's own start for the first jump: a compressor only
 * ever points at names it wrote earlier), so targets strictly decrease
 * and a loop cannot be written, and at most DNS_PTR_HOPS are followed; each
 * record consumes at least 11 bytes, so walking the counts of a message of
 * length L costs O(L) whatever the counts say.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "dns.h"

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

int dns_parse_header(const uint8_t *msg, size_t len, struct dns_header *h)
{
	if (len < DNS_HDR_LEN)
		return -EBADMSG;
	h->id = rd16(msg);
	h->flags = rd16(msg + 2);
	h->qdcount = rd16(msg + 4);
	h->ancount = rd16(msg + 6);
	h->nscount = rd16(msg + 8);
	h->arcount = rd16(msg + 10);
	return 0;
}

/*
 * Printable ASCII except '.': loose on purpose ("_dmarc", "*"), but nothing
 * that would not survive the trip through dotted text or into a log line.
 */
static bool label_byte_ok(uint8_t c)
{
	return c > 0x20 && c < 0x7f && c != '.';
}

int dns_name_read(const uint8_t *msg, size_t len, size_t *off, char *text, uint8_t *wire,
		  uint8_t *wire_len)
{
	size_t pos = *off, end = 0, limit = *off, wlen = 0, tlen = 0;
	unsigned hops = 0;
	bool jumped = false;

	for (;;) {
		if (pos >= len)
			return -EBADMSG;
		uint8_t c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			if (len - pos < 2)
				return -EBADMSG;
			size_t target = (size_t)(c & 0x3f) << 8 | msg[pos + 1];
			/* Strictly decreasing targets: no loops (see the top of the file). */
			if (target < DNS_HDR_LEN || target >= limit || ++hops > DNS_PTR_HOPS)
				return -EBADMSG;
			if (!jumped)
				end = pos + 2;
			jumped = true;
			limit = target;
			pos = target;
			continue;
		}
		if (c & 0xc0) /* 0x40 and 0x80: extended and reserved label types */
			return -EBADMSG;
		if (c == 0) {
			pos++;
			break;
		}
		/* Room for this label and the root byte within 255. */
		if (len - pos - 1 < c || wlen + 1 + c + 1 > DNS_NAME_WIRE_MAX)
			return -EBADMSG;
		const uint8_t *label = msg + pos + 1;
		if (text) {
			if (tlen)
				text[tlen++] = '.';
			for (unsigned i = 0; i < c; i++) {
				uint8_t b = label[i];
				if (!label_byte_ok(b))
					return -EBADMSG;
				text[tlen++] = (char)(b >= 'A' && b <= 'Z' ? b - 'A' + 'a' : b);
			}
		}
		if (wire) {
			wire[wlen] = c;
			memcpy(wire + wlen + 1, label, c);
		}
		wlen += 1u + c;
		pos += 1u + c;
	}
	if (text)
		text[tlen] = '\0';
	if (wire) {
		wire[wlen] = 0;
		*wire_len = (uint8_t)(wlen + 1);
	}
	*off = jumped ? end : pos;
	return 0;
}

static int parse_question(const uint8_t *msg, size_t len, struct dns_msg *m)
{
	size_t off = DNS_HDR_LEN;
	if (m->h.qdcount != 1)
		return -EBADMSG;
	int r = dns_name_read(msg, len, &off, m->q.name, m->q.wire, &m->q.wire_len);
	if (r < 0)
		return r;
	if (len - off < 4)
		return -EBADMSG;
	m->q.type = rd16(msg + off);
	m->q.klass = rd16(msg + off + 2);
	m->q_end = off + 4;
	return 0;
}

/* Which section the i-th record after the question is in. */
static uint8_t section_of(const struct dns_header *h, unsigned i)
{
	if (i < h->ancount)
		return DNS_S_ANSWER;
	if (i < (unsigned)h->ancount + h->nscount)
		return DNS_S_AUTHORITY;
	return DNS_S_ADDITIONAL;
}

/*
 * Walk every record after the question.  keep: store A/AAAA/CNAME of class
 * IN in m->rr (replies); otherwise only look for the OPT record (queries).
 */
static int walk_records(const uint8_t *msg, size_t len, struct dns_msg *m, bool keep)
{
	unsigned total = (unsigned)m->h.ancount + m->h.nscount + m->h.arcount;
	size_t off = m->q_end;
	bool seen_opt = false;

	for (unsigned i = 0; i < total; i++) {
		size_t name_off = off;
		int r = dns_name_read(msg, len, &off, NULL, NULL, NULL);
		if (r < 0)
			return r;
		if (len - off < 10)
			return -EBADMSG;
		uint16_t type = rd16(msg + off), klass = rd16(msg + off + 2);
		uint32_t ttl = rd32(msg + off + 4);
		uint16_t rdlen = rd16(msg + off + 8);
		off += 10;
		if (len - off < rdlen)
			return -EBADMSG;
		size_t rdata = off;
		off += rdlen;
		uint8_t section = section_of(&m->h, i);

		if (!keep) {
			if (type != DNS_T_OPT)
				continue;
			/* RFC 6891 6.1.1: one OPT, owned by the root, in the additional section. */
			if (seen_opt || section != DNS_S_ADDITIONAL || msg[name_off] != 0)
				return -EBADMSG;
			seen_opt = true;
			m->edns_udp = klass < DNS_UDP_MIN ? DNS_UDP_MIN : klass;
			m->edns_do = (ttl & 0x8000u) != 0;
			continue;
		}
		/*
		 * Of any class: not every stub checks the class of an address
		 * record (musl does not), so rebind protection must see them all.
		 */
		if (type != DNS_T_A && type != DNS_T_AAAA && type != DNS_T_CNAME)
			continue;
		if (m->nrr == DNS_RR_MAX)
			return -E2BIG;
		struct dns_rr *rr = &m->rr[m->nrr];
		size_t o = name_off;
		r = dns_name_read(msg, len, &o, rr->name, NULL, NULL);
		if (r < 0)
			return r;
		rr->section = section;
		rr->type = type;
		rr->klass = klass;
		rr->ttl = ttl & 0x80000000u ? 0 : ttl;
		if (type == DNS_T_A) {
			if (rdlen != 4)
				return -EBADMSG;
			memcpy(rr->data.a, msg + rdata, 4);
		} else if (type == DNS_T_AAAA) {
			if (rdlen != 16)
				return -EBADMSG;
			memcpy(rr->data.aaaa, msg + rdata, 16);
		} else {
			/* The target must fill the RDATA exactly; it may point back. */
			o = rdata;
			r = dns_name_read(msg, rdata + rdlen, &o, rr->data.cname, NULL, NULL);
			if (r < 0)
				return r;
			if (o != rdata + rdlen)
				return -EBADMSG;
		}
		m->nrr++;
	}
	return 0;
}

static int parse_common(const uint8_t *msg, size_t len, struct dns_msg *m)
{
	m->nrr = 0;
	m->edns_udp = 0;
	m->edns_do = false;
	m->q_end = 0;
	if (len > DNS_MSG_MAX)
		return -EBADMSG;
	int r = dns_parse_header(msg, len, &m->h);
	if (r < 0)
		return r;
	return parse_question(msg, len, m);
}

int dns_parse_query(const uint8_t *msg, size_t len, struct dns_msg *m)
{
	int r = parse_common(msg, len, m);
	if (r < 0)
		return r;
	if (m->h.flags & DNS_F_QR)
		return -EBADMSG;
	return walk_records(msg, len, m, false);
}

int dns_parse_reply(const uint8_t *msg, size_t len, struct dns_msg *m)
{
	int r = parse_common(msg, len, m);
	if (r < 0)
		return r;
	if (!(m->h.flags & DNS_F_QR))
		return -EBADMSG;
	return walk_records(msg, len, m, true);
}

static void put_header(uint8_t *out, uint16_t id, uint16_t flags, uint16_t qd, uint16_t ar)
{
	wr16(out, id);
	wr16(out + 2, flags);
	wr16(out + 4, qd);
	wr16(out + 6, 0);
	wr16(out + 8, 0);
	wr16(out + 10, ar);
}

/* The question at out[12]; the offset after it. */
static size_t put_question(uint8_t *out, const struct dns_question *q)
{
	size_t off = DNS_HDR_LEN;
	memcpy(out + off, q->wire, q->wire_len);
	off += q->wire_len;
	wr16(out + off, q->type);
	wr16(out + off + 2, q->klass);
	return off + 4;
}

int dns_build_reply(const struct dns_msg *query, unsigned rcode, uint8_t *out, size_t cap)
{
	if (cap < DNS_HDR_LEN + (size_t)query->q.wire_len + 4)
		return -ENOSPC;
	uint16_t flags =
		(uint16_t)(DNS_F_QR | (query->h.flags & (0xfu << 11)) |
			   (query->h.flags & (DNS_F_RD | DNS_F_CD)) | DNS_F_RA | (rcode & 0xfu));
	put_header(out, query->h.id, flags, 1, 0);
	return (int)put_question(out, &query->q);
}

int dns_build_nxdomain(const struct dns_msg *query, uint8_t *out, size_t cap)
{
	return dns_build_reply(query, DNS_R_NXDOMAIN, out, cap);
}

int dns_build_servfail(const struct dns_msg *query, uint8_t *out, size_t cap)
{
	return dns_build_reply(query, DNS_R_SERVFAIL, out, cap);
}

int dns_build_refused(const struct dns_msg *query, uint8_t *out, size_t cap)
{
	return dns_build_reply(query, DNS_R_REFUSED, out, cap);
}

int dns_build_formerr(const uint8_t *msg, size_t len, uint8_t *out, size_t cap)
{
	struct dns_header h;
	if (dns_parse_header(msg, len, &h) < 0 || (h.flags & DNS_F_QR))
		return -EBADMSG;
	if (cap < DNS_HDR_LEN)
		return -ENOSPC;
	uint16_t flags = (uint16_t)(DNS_F_QR | (h.flags & (0xfu << 11)) |
				    (h.flags & (DNS_F_RD | DNS_F_CD)) | DNS_F_RA | DNS_R_FORMERR);
	put_header(out, h.id, flags, 0, 0);
	return DNS_HDR_LEN;
}

int dns_build_forward(const struct dns_msg *query, uint16_t id, uint8_t *out, size_t cap)
{
	bool opt = query->edns_udp != 0;
	size_t need = DNS_HDR_LEN + (size_t)query->q.wire_len + 4 + (opt ? 11 : 0);
	if (cap < need)
		return -ENOSPC;
	uint16_t flags = (uint16_t)(query->h.flags & (DNS_F_RD | DNS_F_CD | DNS_F_AD));
	put_header(out, id, flags, 1, opt ? 1 : 0);
	size_t off = put_question(out, &query->q);
	if (opt) {
		uint16_t udp = query->edns_udp > DNS_UDP_MAX ? DNS_UDP_MAX : query->edns_udp;
		out[off] = 0; /* the root owns it */
		wr16(out + off + 1, DNS_T_OPT);
		wr16(out + off + 3, udp);
		wr16(out + off + 5, 0); /* extended rcode, version 0 */
		wr16(out + off + 7, query->edns_do ? 0x8000u : 0);
		wr16(out + off + 9, 0); /* no options */
		off += 11;
	}
	return (int)off;
}

int dns_rewrite_nxdomain(uint8_t *msg, size_t len, size_t *new_len)
{
	struct dns_header h;
	size_t end = DNS_HDR_LEN;
	if (dns_parse_header(msg, len, &h) < 0 || h.qdcount > 1)
		return -EBADMSG;
	if (h.qdcount == 1) {
		/* The question at 12 cannot be compressed (no pointer may go below 12). */
		if (dns_name_read(msg, len, &end, NULL, NULL, NULL) < 0 || len - end < 4)
			return -EBADMSG;
		end += 4;
	}
	uint16_t flags =
		(uint16_t)((h.flags & ~(DNS_F_AA | DNS_F_TC | DNS_F_AD | 0xfu)) | DNS_R_NXDOMAIN);
	put_header(msg, h.id, flags, h.qdcount, 0);
	*new_len = end;
	return 0;
}

static bool v4_internal(const uint8_t *a)
{
	return a[0] == 0 ||			       /* "this network" */
	       a[0] == 10 ||			       /* private */
	       a[0] == 127 ||			       /* loopback */
	       (a[0] == 100 && (a[1] & 0xc0) == 64) || /* shared, CGNAT */
	       (a[0] == 169 && a[1] == 254) ||	       /* link-local, metadata */
	       (a[0] == 172 && (a[1] & 0xf0) == 16) || /* private */
	       (a[0] == 192 && a[1] == 168);	       /* private */
}

bool dns_addr_internal(int family, const uint8_t *addr)
{
	static const uint8_t zero[16], mapped[12] = {[10] = 0xff, [11] = 0xff};
	if (family == AF_INET)
		return v4_internal(addr);
	if (family != AF_INET6)
		return false;
	if (memcmp(addr, zero, 15) == 0 && (addr[15] == 0 || addr[15] == 1))
		return true; /* :: and ::1 */
	if ((addr[0] & 0xfe) == 0xfc)
		return true; /* unique-local, fd00:ec2::254 among them */
	if (addr[0] == 0xfe && (addr[1] & 0xc0) == 0x80)
		return true; /* link-local */
	if (memcmp(addr, mapped, 12) == 0)
		return v4_internal(addr + 12);
	return false;
}

socklen_t dns_rr_sockaddr(const struct dns_rr *rr, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (rr->type == DNS_T_A) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, rr->data.a, 4);
		return sizeof(*sin);
	}
	if (rr->type == DNS_T_AAAA) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, rr->data.aaaa, 16);
		return sizeof(*sin6);
	}
	return 0;
}

static const struct dns_rr *find_cname(const struct dns_msg *m, const char *owner)
{
	for (unsigned i = 0; i < m->nrr; i++) {
		const struct dns_rr *rr = &m->rr[i];
		if (rr->section == DNS_S_ANSWER && rr->type == DNS_T_CNAME &&
		    strcmp(rr->name, owner) == 0)
			return rr;
	}
	return NULL;
}

unsigned dns_reply_addresses(const struct dns_msg *m, const char *qname,
			     void (*cb)(void *arg, const struct dns_rr *rr), void *arg)
{
	const char *chain[DNS_CHAIN_MAX + 1];
	unsigned n = 0, count = 0;

	chain[n++] = qname;
	while (n < DNS_CHAIN_MAX + 1) {
		const struct dns_rr *c = find_cname(m, chain[n - 1]);
		if (!c)
			break;
		bool seen = false;
		for (unsigned k = 0; k < n; k++)
			seen = seen || strcmp(chain[k], c->data.cname) == 0;
		if (seen)
			break;
		chain[n++] = c->data.cname;
	}
	for (unsigned i = 0; i < m->nrr; i++) {
		const struct dns_rr *rr = &m->rr[i];
		if (rr->section != DNS_S_ANSWER || (rr->type != DNS_T_A && rr->type != DNS_T_AAAA))
			continue;
		for (unsigned k = 0; k < n; k++) {
			if (strcmp(rr->name, chain[k]) == 0) {
				if (cb)
					cb(arg, rr);
				count++;
				break;
			}
		}
	}
	return count;
}
