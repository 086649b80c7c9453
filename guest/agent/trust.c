/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TRUST: certificates into the guest's trust stores, before any workload
 * runs (docs/agent-protocol.md, docs/secrets.md).
 *
 * The sandbox's CA (the secrets proxy's) is written to /etc/msb/ca.pem and
 * appended to every system bundle the image has (Debian's, Fedora's,
 * Alpine's ...), once: a restarted sandbox keeps its upper disk, and the
 * same certificate is not appended twice.  /etc/msb/ca-bundle.pem is then
 * the system bundle with it, for SSL_CERT_FILE and REQUESTS_CA_BUNDLE.  An
 * image without any bundle gets Debian's path, holding just the CA.
 *
 * Files are replaced by rename, so a reader never sees half a bundle.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

#define TRUST_FILE_MAX (8u << 20) /* a bundle we are willing to rewrite */

static const char *const bundles[] = {
	"etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine, Arch */
	"etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
	"etc/ssl/ca-bundle.pem",	     /* openSUSE */
	"etc/ssl/cert.pem",		     /* Alpine, macOS-style */
};

/* PEM text only: printable ASCII and line breaks, with at least one certificate. */
static int pem_ok(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!((p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\n' || p[i] == '\r' ||
		      p[i] == '\t'))
			return 0;
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	return memmem(p, len, begin, sizeof(begin) - 1) != NULL;
}

static char *slurp(int fd, size_t *len)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > TRUST_FILE_MAX)
		return NULL;
	char *b = malloc((size_t)st.st_size + 1);
	size_t n = 0;
	while (b && n < (size_t)st.st_size) {
		ssize_t r = pread(fd, b + n, (size_t)st.st_size - n, (off_t)n);
		if (r <= 0) {
			free(b);
			return NULL;
		}
		n += (size_t)r;
	}
	*len = n;
	return b;
}

/* Replace path with head + tail (tail may be NULL), by rename. */
static int write_file(const char *path, const char *head, size_t hl, const uint8_t *tail, size_t tl,
		      mode_t mode)
{
	char tmp[4200];
	if (snprintf(tmp, sizeof(tmp), "%s.msb-new", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	int r = 0;
	const char *parts[3] = {head, hl && head[hl - 1] != '\n' && tail ? "\n" : "",
				(const char *)tail};
	size_t lens[3] = {hl, strlen(parts[1]), tl};
	for (int i = 0; i < 3 && r == 0; i++)
		for (size_t off = 0; off < lens[i] && r == 0;) {
			ssize_t w = write(fd, parts[i] + off, lens[i] - off);
			if (w < 0 && errno != EINTR)
				r = -errno;
			else if (w > 0)
				off += (size_t)w;
		}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/* Append pem to the file at path unless it holds it already. 1 appended, 0 had it, -errno. */
static int append_once(const char *path, const uint8_t *pem, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t have = 0;
	char *old = slurp(fd, &have);
	close(fd);
	if (!old)
		return -EINVAL;
	int r = 0;
	if (!memmem(old, have, pem, len)) {
		int w = write_file(path, old, have, pem, len, 0644);
		r = w < 0 ? w : 1;
	}
	free(old);
	return r;
}

static int mkdirs(const char *root, const char *rel)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	for (char *s = p + strlen(root) + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return 0;
}

int msb_guest_trust(const char *root, uint32_t kind, const uint8_t *pem, size_t len, char *msg,
		    size_t ml)
{
	if (kind != MSB_AGENT_TRUST_CA && kind != MSB_AGENT_TRUST_ROOTS) {
		snprintf(msg, ml, "trust: unknown kind %u", kind);
		return -EINVAL;
	}
	if (!pem_ok(pem, len)) {
		snprintf(msg, ml, "trust: not PEM certificates");
		return -EINVAL;
	}
	char path[4200], msb_bundle[4200];
	int r;
	if ((r = mkdirs(root, "etc/msb/x")) < 0) {
		snprintf(msg, ml, "trust: /etc/msb: %s", strerror(-r));
		return r;
	}
	if (kind == MSB_AGENT_TRUST_CA) {
		snprintf(path, sizeof(path), "%s/etc/msb/ca.pem", root);
		if ((r = write_file(path, (const char *)pem, len, NULL, 0, 0644)) < 0) {
			snprintf(msg, ml, "trust: /etc/msb/ca.pem: %s", strerror(-r));
			return r;
		}
	}
	/* Every bundle the image has, each file once (links share an inode). */
	struct stat seen[4];
	int nseen = 0;
	const char *first = NULL;
	for (size_t i = 0; i < sizeof(bundles) / sizeof(bundles[0]); i++) {
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", root, bundles[i]);
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		int dup = 0;
		for (int k = 0; k < nseen; k++)
			dup |= seen[k].st_dev == st.st_dev && seen[k].st_ino == st.st_ino;
		if (dup)
			continue;
		seen[nseen++] = st;
		if (!first)
			first = bundles[i];
		/* Through a link, the file it names is rewritten (rename would replace the link).
		 */
		char real[4200];
		if (!realpath(path, real) || (r = append_once(real, pem, len)) < 0) {
			snprintf(msg, ml, "trust: /%s: %s", bundles[i],
				 strerror(r < 0 ? -r : errno));
			return r < 0 ? r : -errno;
		}
	}
	if (!first) {
		first = bundles[0];
		if ((r = mkdirs(root, first)) < 0 ||
		    (snprintf(path, sizeof(path), "%s/%s", root, first),
		     r = write_file(path, (const char *)pem, len, NULL, 0, 0644)) < 0) {
			snprintf(msg, ml, "trust: /%s: %s", first, strerror(-r));
			return r;
		}
	}
	/* /etc/msb/ca-bundle.pem: a copy of the (first) system bundle, CA included. */
	snprintf(path, sizeof(path), "%s/%s", root, first);
	snprintf(msb_bundle, sizeof(msb_bundle), "%s/etc/msb/ca-bundle.pem", root);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t bl = 0;
	char *b = fd >= 0 ? slurp(fd, &bl) : NULL;
	if (fd >= 0)
		close(fd);
	r = b ? write_file(msb_bundle, b, bl, NULL, 0, 0644) : -EIO;
	free(b);
	if (r < 0) {
		snprintf(msg, ml, "trust: /etc/msb/ca-bundle.pem: %s", strerror(-r));
		return r;
	}
	return 0;
}
