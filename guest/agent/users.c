/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Users and groups for exec requests, from /etc/passwd and /etc/group.
 *
 * The agent is static and has no NSS: it parses the two files itself.  They
 * belong to the workload (which may be root and may have rewritten them), so
 * the parser is bounded: lines longer than LINE_MAX_LEN are skipped whole,
 * at most FILE_MAX_BYTES are read, at most MSB_GUEST_GROUPS_MAX groups are
 * collected, and a malformed line is skipped, never trusted.  The worst a
 * hostile file can do is make a lookup fail or resolve a user the workload
 * could have chosen anyway.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

#define LINE_MAX_LEN   4096
#define FILE_MAX_BYTES (16u << 20)
#define NAME_MAX_LEN   256

/* Called for each line (NUL-terminated, no newline); nonzero stops. */
typedef int (*line_cb)(char *line, void *ctx);

/*
 * Read root/etc/<name> line by line.  A missing file is no lines.  Returns 0,
 * or a negative errno on a read error.
 */
static int for_each_line(const char *root, const char *name, line_cb cb, void *ctx)
{
	char path[PATH_MAX];
	const char *sep = root[0] && root[strlen(root) - 1] != '/' ? "/" : "";
	if ((size_t)snprintf(path, sizeof(path), "%s%setc/%s", root[0] ? root : "/", sep, name) >=
	    sizeof(path))
		return -ENAMETOOLONG;
	/* O_NONBLOCK and a regular file only: the workload owns /etc and could
	 * make passwd a FIFO or a device, which would hang the whole agent. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}

	static char buf[LINE_MAX_LEN + 1];
	size_t len = 0, total = 0;
	int skipping = 0, stop = 0, ret = 0;
	while (!stop) {
		ssize_t n = read(fd, buf + len, LINE_MAX_LEN - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			break;
		}
		total += (size_t)n;
		if (total > FILE_MAX_BYTES)
			break; /* a partial line is not parsed: it could be cut anywhere */
		int eof = n == 0;
		len += (size_t)n;
		size_t start = 0;
		for (;;) {
			char *nl = memchr(buf + start, '\n', len - start);
			if (!nl)
				break;
			*nl = '\0';
			if (!skipping && cb(buf + start, ctx)) {
				stop = 1;
				break;
			}
			skipping = 0;
			start = (size_t)(nl - buf) + 1;
		}
		if (stop)
			break;
		memmove(buf, buf + start, len - start);
		len -= start;
		if (eof) {
			/* A last line without a newline still counts. */
			if (len > 0 && !skipping) {
				buf[len] = '\0';
				cb(buf, ctx);
			}
			break;
		}
		if (len == LINE_MAX_LEN) {
			/* Too long to be a real entry: drop it up to its newline. */
			skipping = 1;
			len = 0;
		}
	}
	close(fd);
	return ret;
}

/* Split line at ':' into at most max fields; returns the count. */
static size_t split_fields(char *line, char **f, size_t max)
{
	size_t n = 0;
	f[n++] = line;
	for (char *p = line; *p && n < max + 1; p++) {
		if (*p == ':') {
			*p = '\0';
			if (n == max)
				return max + 1; /* too many fields: malformed */
			f[n++] = p + 1;
		}
	}
	return n;
}

/* A decimal id: digits only, below (uint32_t)-1 (which means "no id"). */
static int parse_id(const char *s, uint32_t *out)
{
	if (!*s || strlen(s) > 10)
		return -EINVAL;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v >= UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* ---- passwd ---------------------------------------------------------------- */

struct pw_query {
	const char *name; /* match by name, or */
	int by_uid;	  /* by uid */
	uint32_t uid;
	int found;
	char found_name[NAME_MAX_LEN];
	uint32_t found_uid, found_gid;
	char home[MSB_GUEST_HOME_MAX];
};

static int pw_line(char *line, void *ctx)
{
	struct pw_query *q = ctx;
	char *f[7];
	uint32_t uid, gid;
	if (line[0] == '#' || split_fields(line, f, 7) != 7)
		return 0;
	if (parse_id(f[2], &uid) || parse_id(f[3], &gid))
		return 0;
	if (q->by_uid ? uid != q->uid : strcmp(f[0], q->name) != 0)
		return 0;
	if (strlen(f[0]) >= sizeof(q->found_name) || strlen(f[5]) >= sizeof(q->home))
		return 0;
	q->found = 1;
	strcpy(q->found_name, f[0]);
	q->found_uid = uid;
	q->found_gid = gid;
	/* Only an absolute home is usable as a working directory. */
	strcpy(q->home, f[5][0] == '/' ? f[5] : "");
	return 1; /* the first match wins, as in getpwnam */
}

/* ---- group ----------------------------------------------------------------- */

struct gr_query {
	const char *name; /* a group to find by name (or NULL) */
	int found;
	uint32_t gid;
	const char *member; /* collect groups listing this user (or NULL) */
	struct msb_guest_user *u;
};

static void add_group(struct msb_guest_user *u, gid_t gid)
{
	for (size_t i = 0; i < u->ngroups; i++)
		if (u->groups[i] == gid)
			return;
	if (u->ngroups < MSB_GUEST_GROUPS_MAX)
		u->groups[u->ngroups++] = gid;
}

static int gr_line(char *line, void *ctx)
{
	struct gr_query *q = ctx;
	char *f[4];
	uint32_t gid;
	if (line[0] == '#' || split_fields(line, f, 4) != 4 || parse_id(f[2], &gid))
		return 0;
	if (q->name && !q->found && strcmp(f[0], q->name) == 0) {
		q->found = 1;
		q->gid = gid;
	}
	if (q->member) {
		for (char *save = NULL, *m = strtok_r(f[3], ",", &save); m;
		     m = strtok_r(NULL, ",", &save))
			if (strcmp(m, q->member) == 0)
				add_group(q->u, gid);
	}
	return 0;
}

/* ---- resolve ---------------------------------------------------------------- */

int msb_guest_user_resolve(const char *root, const char *spec, struct msb_guest_user *u, char *why,
			   size_t why_len)
{
	char user[NAME_MAX_LEN], group[NAME_MAX_LEN];
	const char *colon = strchr(spec, ':');
	size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
	int r;

	memset(u, 0, sizeof(*u));
	if (ulen >= sizeof(user) || (colon && strlen(colon + 1) >= sizeof(group))) {
		snprintf(why, why_len, "user specification too long");
		return -EINVAL;
	}
	memcpy(user, spec, ulen);
	user[ulen] = '\0';
	snprintf(group, sizeof(group), "%s", colon ? colon + 1 : "");
	if (colon && (!user[0] || !group[0] || strchr(group, ':'))) {
		snprintf(why, why_len, "bad user specification '%s'", spec);
		return -EINVAL;
	}

	/* The user: "" is the agent's own (root in a sandbox; in test mode,
	 * whoever runs the tests); digits are a uid, which needs no passwd
	 * entry. */
	struct pw_query pq = {.name = user};
	uint32_t id;
	if (!user[0]) {
		pq.by_uid = 1;
		pq.uid = (uint32_t)geteuid();
	} else if (parse_id(user, &id) == 0) {
		pq.by_uid = 1;
		pq.uid = id;
	}
	r = for_each_line(root, "passwd", pw_line, &pq);
	if (r < 0) {
		snprintf(why, why_len, "reading /etc/passwd: %s", strerror(-r));
		return r;
	}
	if (pq.found) {
		u->uid = pq.found_uid;
		u->gid = pq.found_gid;
		snprintf(u->home, sizeof(u->home), "%s", pq.home);
	} else if (pq.by_uid) {
		/* As runc and Docker do: a bare uid runs with gid 0. */
		u->uid = pq.uid;
		u->gid = user[0] ? 0 : getegid();
		if (pq.uid == 0)
			snprintf(u->home, sizeof(u->home), "/root");
	} else {
		snprintf(why, why_len, "no such user: %s", user);
		return -ENOENT;
	}

	/* The group, and the supplementary groups listing the user by name. */
	struct gr_query gq = {.u = u, .member = pq.found ? pq.found_name : NULL};
	if (group[0] && parse_id(group, &id) == 0)
		u->gid = id;
	else if (group[0])
		gq.name = group;
	if (gq.name || gq.member) {
		r = for_each_line(root, "group", gr_line, &gq);
		if (r < 0) {
			snprintf(why, why_len, "reading /etc/group: %s", strerror(-r));
			return r;
		}
	}
	if (gq.name) {
		if (!gq.found) {
			snprintf(why, why_len, "no such group: %s", group);
			return -ENOENT;
		}
		u->gid = gq.gid;
	}
	return 0;
}
