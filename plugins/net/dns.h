/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DNS messages (RFC 1035, RFC 3596 AAAA, RFC 6891 EDNS): a bounded parser of
 * untrusted messages and the few builders the interceptor needs
 * (docs/network-dns.md).
 *
 * Every message here is hostile input: queries come from the guest, replies
 * from an upstream the guest may steer (it picks the names).  The parser
 * never reads outside [msg, msg + len), follows at most DNS_PTR_HOPS
 * compression pointers per name and only ever backwards (so there are no
 * loops), enforces the 63-byte label and 255-byte name limits, and keeps at
 * most DNS_RR_MAX records.  Nothing allocates; a struct dns_msg is big
 * (about 70 KiB): keep it off small thread stacks.
 *
 * Names come out as lowercase dotted text without the trailing dot (the root
 * is ""), at most DNS_NAME_TEXT_MAX - 1 characters.  Label bytes are checked
 * loosely: anything printable in ASCII but '.', so "_srv" and "*" pass, while
 * NUL, '.', spaces, control bytes and bytes >= 0x80 make the name invalid
 * (such a name could not round-trip through dotted text, or would reach
 * policy matching and logs as something other than what it is).
 *
 * Errors: -EBADMSG for a malformed message, -E2BIG for one with more records
 * than DNS_RR_MAX, -ENOSPC when an output buffer is too small.
 */
#ifndef MSB_NET_DNS_H
#define MSB_NET_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNS_HDR_LEN	  12
#define DNS_LABEL_MAX	  63
#define DNS_NAME_WIRE_MAX 255 /* a name in wire form, length bytes and root included */
#define DNS_NAME_TEXT_MAX 254 /* dotted text: 253 characters and the NUL */
#define DNS_PTR_HOPS	  16  /* compression pointers followed per name */
#define DNS_RR_MAX	  128 /* A/AAAA/CNAME records kept from one reply */
#define DNS_CHAIN_MAX	  16  /* CNAMEs followed from the question's name */
#define DNS_MSG_MAX	  65535
#define DNS_UDP_MIN	  512  /* the classic UDP payload limit */
#define DNS_UDP_MAX	  4096 /* the most EDNS payload size passed upstream */

/* Header flags (the second 16-bit word). */
#define DNS_F_QR	0x8000u
#define DNS_F_OPCODE(f) (((f) >> 11) & 0xfu)
#define DNS_F_AA	0x0400u
#define DNS_F_TC	0x0200u
#define DNS_F_RD	0x0100u
#define DNS_F_RA	0x0080u
#define DNS_F_AD	0x0020u
#define DNS_F_CD	0x0010u
#define DNS_F_RCODE(f)	((f)&0xfu)

enum dns_opcode { DNS_OP_QUERY = 0 };

enum dns_rcode {
	DNS_R_NOERROR = 0,
	DNS_R_FORMERR = 1,
	DNS_R_SERVFAIL = 2,
	DNS_R_NXDOMAIN = 3,
	DNS_R_NOTIMP = 4,
	DNS_R_REFUSED = 5,
};

enum dns_type {
	DNS_T_A = 1,
	DNS_T_CNAME = 5,
	DNS_T_AAAA = 28,
	DNS_T_OPT = 41,
	DNS_T_IXFR = 251,
	DNS_T_AXFR = 252,
	DNS_T_MAILB = 253,
	DNS_T_MAILA = 254,
	DNS_T_ANY = 255,
};

#define DNS_C_IN 1

enum dns_section { DNS_S_ANSWER = 1, DNS_S_AUTHORITY = 2, DNS_S_ADDITIONAL = 3 };

struct dns_header {
	uint16_t id, flags, qdcount, ancount, nscount, arcount;
};

struct dns_question {
	char name[DNS_NAME_TEXT_MAX];	 /* lowercase dotted, no trailing dot */
	uint8_t wire[DNS_NAME_WIRE_MAX]; /* the name uncompressed, its case kept */
	uint8_t wire_len;
	uint16_t type, klass;
};

/* One A, AAAA or CNAME record, of any class (other records are skipped). */
struct dns_rr {
	uint8_t section; /* enum dns_section */
	uint16_t type, klass;
	uint32_t ttl; /* a TTL with the top bit set reads as 0 (RFC 2181 8) */
	char name[DNS_NAME_TEXT_MAX];
	union {
		uint8_t a[4];
		uint8_t aaaa[16];
		char cname[DNS_NAME_TEXT_MAX];
	} data;
};

struct dns_msg {
	struct dns_header h;
	struct dns_question q; /* valid when h.qdcount == 1 */
	size_t q_end;	       /* offset just past the question */
	/* Queries: the EDNS OPT record's payload size (0: none) and DO bit. */
	uint16_t edns_udp;
	bool edns_do;
	unsigned nrr;
	struct dns_rr rr[DNS_RR_MAX];
};

/* The 12-byte header.  0 or -EBADMSG (too short). */
int dns_parse_header(const uint8_t *msg, size_t len, struct dns_header *h);

/*
 * Read the name at *off into text (lowercase dotted; text may be NULL to
 * only skip it) and, if wire is not NULL, its uncompressed wire form (case
 * kept; *wire_len its length).  *off moves past the name where it sits (a
 * pointer counts two bytes).  0 or -EBADMSG.
 */
int dns_name_read(const uint8_t *msg, size_t len, size_t *off, char *text, uint8_t *wire,
		  uint8_t *wire_len);

/*
 * A query: the header, exactly one question (qdcount must be 1, QR clear),
 * and the records after it walked only to find an EDNS OPT record.  Leaves
 * m->nrr at 0.  0 or -EBADMSG.
 */
int dns_parse_query(const uint8_t *msg, size_t len, struct dns_msg *m);

/*
 * A reply: the header, its one question, and every record of every section
 * walked; the A, AAAA and CNAME records (of any class) are kept in m->rr in
 * message order.  Bytes after the last record are ignored.  0, -EBADMSG or
 * -E2BIG (more than DNS_RR_MAX of them).
 */
int dns_parse_reply(const uint8_t *msg, size_t len, struct dns_msg *m);

/*
 * An answerless reply to the query in `query` (as dns_parse_query left it):
 * its id and opcode, QR and RA set, RD and CD copied, the given rcode, the
 * question echoed in its original case.  The length written, or -ENOSPC.
 */
int dns_build_reply(const struct dns_msg *query, unsigned rcode, uint8_t *out, size_t cap);
int dns_build_nxdomain(const struct dns_msg *query, uint8_t *out, size_t cap);
int dns_build_servfail(const struct dns_msg *query, uint8_t *out, size_t cap);
int dns_build_refused(const struct dns_msg *query, uint8_t *out, size_t cap);
/*
 * FORMERR for a query whose question could not be parsed: the header alone
 * (qdcount 0), id and opcode copied from the first 12 bytes of msg.  The
 * length written, -EBADMSG when msg is shorter than a header or is itself a
 * response (never answer those), or -ENOSPC.
 */
int dns_build_formerr(const uint8_t *msg, size_t len, uint8_t *out, size_t cap);

/*
 * The query the interceptor sends upstream for the one in `query`: a fresh
 * header (the given id, RD/CD/AD copied), the question in its original case,
 * and an OPT record only if the guest sent one (its payload size clamped to
 * [DNS_UDP_MIN, DNS_UDP_MAX], DO copied, options dropped).  Nothing else of
 * the guest's bytes goes upstream.  The length written, or -ENOSPC.
 */
int dns_build_forward(const struct dns_msg *query, uint16_t id, uint8_t *out, size_t cap);

/*
 * Turn the reply msg[0..len) into an answerless NXDOMAIN in place: rcode 3,
 * AA and TC cleared, no records, cut after the question.  *new_len is the
 * new length.  0, or -EBADMSG if the header or question does not parse
 * (then msg is unchanged).
 */
int dns_rewrite_nxdomain(uint8_t *msg, size_t len, size_t *new_len);

/*
 * Whether an address (AF_INET: 4 bytes, AF_INET6: 16) is one a public name
 * should never resolve to (rebind protection): unspecified or "this network"
 * (0/8, ::), loopback (127/8, ::1), private (10/8, 172.16/12, 192.168/16),
 * shared (100.64/10), link-local (169.254/16 with the 169.254.169.254
 * metadata service, fe80::/10), unique-local (fc00::/7, with the metadata
 * address fd00:ec2::254), and IPv4-mapped IPv6 (::ffff:0:0/96) of any of
 * those.
 */
bool dns_addr_internal(int family, const uint8_t *addr);

/* The address of an A or AAAA record as a sockaddr (port 0).  Its length. */
socklen_t dns_rr_sockaddr(const struct dns_rr *rr, struct sockaddr_storage *ss);

/*
 * The addresses the asker of `qname` gets from a parsed reply: the A and
 * AAAA records of the answer section owned by qname or by a name reached
 * from it through the answer section's CNAMEs (at most DNS_CHAIN_MAX of
 * them; a loop ends the chain).  Records for other names are not the
 * answer to this question and are left out.  Calls cb for each; returns
 * how many.
 */
unsigned dns_reply_addresses(const struct dns_msg *m, const char *qname,
			     void (*cb)(void *arg, const struct dns_rr *rr), void *arg);

#endif
