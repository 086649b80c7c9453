/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The secrets proxy (docs/secrets.md): guest TCP to the steered ports lands
 * here, inside the sandbox's network namespace, with its real destination
 * kept by conntrack (SO_ORIGINAL_DST).  A connection whose TLS ClientHello
 * names a host that some secret is bound to is intercepted: TLS with the
 * guest under a leaf from the sandbox's CA, TLS to the real destination
 * verified against the host's CAs, and HTTP/1.1 in between, where
 * placeholders become values only when every gate holds.  Every other
 * connection is spliced through untouched.
 *
 * This is the module's engine without the ABI around it (plugin.c), so that
 * tests drive it as a real sandbox gets it, without a VM.
 */
#ifndef MSB_SECRETS_PROXY_H
#define MSB_SECRETS_PROXY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_SECRETS_MAX 64
#define PROXY_CONNS_MAX	  256	       /* connections at once; more are closed at once */
#define PROXY_BODY_MAX	  (256 * 1024) /* Content-Length bodies substituted in place */
#define PROXY_VALUE_MAX	  8192	       /* a secret's value */

/* What to do with a placeholder that cannot be substituted safely. */
enum proxy_violation {
	PROXY_BLOCK = 0,	 /* answer 403 and close the connection */
	PROXY_BLOCK_AND_LOG = 1, /* the same, and a log line naming secret and host */
	PROXY_PASSTHROUGH = 2,	 /* send the request as it is (the placeholder, no value) */
};

struct proxy_secret {
	const char *env;	  /* "OPENAI_API_KEY": the placeholder is "$MSB_OPENAI_API_KEY" */
	const char *const *hosts; /* exact names and "*.suffix" */
	size_t nhosts;
	const char *value; /* copied into the proxy's locked, undumpable memory */
	size_t value_len;
};

struct proxy_stats {
	uint64_t accepted;    /* connections taken */
	uint64_t spliced;     /* passed through untouched (no secret's host, bypass, not TLS) */
	uint64_t intercepted; /* TLS terminated with a leaf from the sandbox's CA */
	uint64_t requests;    /* HTTP requests forwarded from intercepted connections */
	uint64_t injected;    /* requests that had at least one value substituted */
	uint64_t blocked;     /* requests refused: a placeholder that could not be substituted */
	uint64_t malformed;   /* connections closed for malformed HTTP from the guest */
	uint64_t upstream_failed; /* upstream connect or verification failed */
	uint64_t refused;	  /* closed at once: PROXY_CONNS_MAX reached */
};

typedef int (*proxy_thread_fn)(void *ctx, void *(*fn)(void *), void *arg, pthread_t *tid);

struct proxy_cfg {
	int netns_fd; /* listen and connect inside this namespace; -1: the caller's */
	const struct proxy_secret *secrets;
	size_t nsecrets;
	const char *const *bypass; /* names never intercepted (exact or "*.suffix") */
	size_t nbypass;
	unsigned where; /* SUBST_HEADERS | SUBST_QUERY | SUBST_BODY */
	enum proxy_violation on_violation;
	const char *ca_dir;	      /* the sandbox's CA lives here (ca.pem, ca.key 0600) */
	const char *ca_label;	      /* in the CA's name */
	const char *upstream_ca_file; /* NULL: the host's default trust store */
	uint16_t port;		      /* 0: any free port */
	/* Was addr given to this sandbox's guest for name?  1, 0, or -errno. */
	int (*pin_check)(void *ctx, const char *name, const struct sockaddr *addr, socklen_t len);
	void *pin_ctx;
	void (*log)(void *ctx, int level, const char *line); /* levels as msb_log_level */
	void *log_ctx;
	proxy_thread_fn thread_create; /* NULL: pthread_create */
	void *thread_ctx;
};

struct proxy;

/*
 * Load or make the CA, copy the secrets, bind the listeners (IPv4 and IPv6,
 * inside cfg->netns_fd) and start serving.  0 and *out, or -errno with one
 * line in why; nothing is left on failure.
 */
int proxy_start(const struct proxy_cfg *cfg, struct proxy **out, char *why, size_t why_len);
uint16_t proxy_port(const struct proxy *p);
const char *proxy_ca_path(const struct proxy *p);
void proxy_get_stats(const struct proxy *p, struct proxy_stats *out);
/* Close every connection, stop the threads, wipe the values.  NULL is fine. */
void proxy_stop(struct proxy *p);

#endif
