/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry client's parsers of untrusted input (core/image/pull.c),
 * apart from the network so that tests/fuzz/fuzz_registry_auth.c can reach
 * them.  Internal to core/image; not installed.
 *
 * Each is a pure function of (bytes, length): no I/O, no globals, no logging.
 * What it returns is malloc'd and released by its _free (or plain free()).
 * Who chooses the bytes:
 *  - response header lines, the WWW-Authenticate challenge, the Location of
 *    a redirect and a registry's error body: the registry, a redirect target
 *    or anything on the path to them;
 *  - the token response: the token realm, which the registry names;
 *  - the credentials files (MSB_HOME/auth.json, Docker's config.json): the
 *    user, but written by other tools too, so their shape is not trusted.
 *
 * Bounds, all checked by the parser itself rather than left to its caller:
 * a header value under MSB_PULL_HEADER_MAX bytes, at most
 * MSB_PULL_CHALLENGE_PARAMS_MAX challenge parameters, a token response of
 * MSB_PULL_TOKEN_RESP_MAX bytes holding a token of MSB_PULL_TOKEN_MAX, a
 * credentials file of MSB_PULL_AUTH_FILE_MAX.  Every string a parser returns
 * is NUL-terminated, holds no NUL and is no longer than its input.
 */
#ifndef MSB_IMAGE_PULL_PARSE_H
#define MSB_IMAGE_PULL_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define MSB_PULL_HEADER_MAX	      8192 /* a header value this long or longer is ignored */
#define MSB_PULL_CHALLENGE_PARAMS_MAX 32   /* auth-params of one challenge (real ones: 3-5) */
#define MSB_PULL_TOKEN_RESP_MAX	      (1u << 20)
#define MSB_PULL_TOKEN_MAX	      (64u << 10)
#define MSB_PULL_AUTH_FILE_MAX	      (1u << 20)
#define MSB_PULL_ORIGIN_MAX	      300  /* "scheme://host:port" and its NUL */
#define MSB_PULL_ERRBODY_MAX	      2048 /* bytes of an error response kept for a message */

/* ---- one response header line (as libcurl hands it over, CRLF included) ---- */

enum msb_pull_header_kind {
	MSB_PULL_HEADER_OTHER,	/* not one the client uses, or a value too long to use */
	MSB_PULL_HEADER_STATUS, /* "HTTP/..." status line: a new response begins */
	MSB_PULL_HEADER_CONTENT_TYPE,
	MSB_PULL_HEADER_DIGEST, /* Docker-Content-Digest */
	MSB_PULL_HEADER_WWW_AUTHENTICATE,
	MSB_PULL_HEADER_LOCATION,
	MSB_PULL_HEADER_RETRY_AFTER,
};

struct msb_pull_header {
	enum msb_pull_header_kind kind;
	long status;	    /* STATUS: 0-999 (0: the line had no three-digit code) */
	const char *value;  /* points into the line: blanks around it trimmed */
	size_t len;	    /* < MSB_PULL_HEADER_MAX; the value holds no NUL */
	double retry_after; /* RETRY_AFTER: seconds, finite and >= 0 (0: none usable) */
};

/* Classify line[0..n) into *h; never fails (an unusable line is OTHER). */
void msb_pull_header_parse(const char *line, size_t n, struct msb_pull_header *h);

/* ---- WWW-Authenticate ---------------------------------------------------------------------- */

enum msb_pull_auth_scheme {
	MSB_PULL_AUTH_OTHER,
	MSB_PULL_AUTH_BASIC,
	MSB_PULL_AUTH_BEARER,
};

struct msb_pull_challenge {
	char scheme[16]; /* as sent: non-empty, no space */
	enum msb_pull_auth_scheme kind;
	char *realm, *service, *scope; /* NULL when absent; the first of each wins */
};

/*
 * The first challenge of h[0..n) (RFC 7235: `Bearer realm="https://...",
 * service="...",scope="..."`); parsing stops at a NUL.  0, or -EPROTO (no
 * scheme or one of 16 bytes or more), -E2BIG (n >= MSB_PULL_HEADER_MAX or
 * more than MSB_PULL_CHALLENGE_PARAMS_MAX parameters) or -ENOMEM, with *ch
 * then all zero.
 */
int msb_pull_challenge_parse(const char *h, size_t n, struct msb_pull_challenge *ch);
void msb_pull_challenge_free(struct msb_pull_challenge *ch);

/* ---- URLs: a token realm, a redirect's Location ---------------------------------------------- */

/*
 * "scheme://host:port" of the absolute http(s) URL url (host lowercased, the
 * default port filled in) into origin[len], and its scheme ("http" or
 * "https").  -EINVAL for anything else, -ENAMETOOLONG if the origin does not
 * fit (never a truncated one: two origins must not compare equal because
 * they were cut), -ENOMEM.
 */
int msb_pull_url_origin(const char *url, char *origin, size_t len, char scheme[8]);

/* ---- the token realm's answer --------------------------------------------------------------- */

/*
 * The token of a token response body[0..n) (`{"token": "..."}` or, as
 * OAuth2, `{"access_token": "..."}`) into *token (malloc'd).  0, or -E2BIG
 * (n > MSB_PULL_TOKEN_RESP_MAX), -EPROTO (no usable token: missing, empty,
 * longer than MSB_PULL_TOKEN_MAX, or a byte outside [A-Za-z0-9-._~+/=],
 * which is what keeps it from ending the Authorization header), -ENOMEM;
 * *token is NULL on failure.
 */
int msb_pull_token_parse(const void *body, size_t n, char **token);

/* ---- a registry's error body ---------------------------------------------------------------- */

/*
 * A registry error body body[0..n) (its first MSB_PULL_ERRBODY_MAX bytes) for a message: " (CODE:
 * message)" from its
 * {"errors": [{"code", "message"}]}, or " (<first line>)" if it is not JSON,
 * or "" (for n == 0, or JSON without them).  out holds printable ASCII only.
 */
void msb_pull_error_detail(const char *body, size_t n, char *out, size_t len);

/* ---- credentials files ---------------------------------------------------------------------- */

/* Things in a credentials file worth a debug line; msb_pull_creds.notes. */
enum {
	MSB_PULL_CREDS_HELPERS = 1u << 0,	 /* credsStore/credHelpers: not run by msb */
	MSB_PULL_CREDS_BAD_AUTH = 1u << 1,	 /* an "auth" not base64 of user:password */
	MSB_PULL_CREDS_IDENTITY_TOKEN = 1u << 2, /* an identitytoken, which msb does not use */
};

struct msb_pull_creds {
	char *user, *pass; /* both set, or both NULL */
	bool from_auth;	   /* decoded from "auth": user then holds no ':' */
	unsigned notes;	   /* MSB_PULL_CREDS_* */
};

/*
 * The credentials for host ("docker.io", "host:port") in a Docker-style
 * credentials file text[0..n): {"auths": {"<key>": {"auth": base64
 * "user:password"} or {"username", "password"}}}, a key naming its host as
 * "host", "https://host/..." or, for Docker Hub, "https://index.docker.io/v1/".
 * 1 (found), 0 (none for host), -E2BIG (n > MSB_PULL_AUTH_FILE_MAX), -EINVAL
 * (not JSON, or a key twice); *c is filled in every case (notes), its strings
 * only on 1.  The caller frees with msb_pull_creds_free.
 */
int msb_pull_creds_parse(const void *text, size_t n, const char *host, struct msb_pull_creds *c);
/* Free c's strings, wiping the password. */
void msb_pull_creds_free(struct msb_pull_creds *c);

#endif
