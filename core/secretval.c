/* SPDX-License-Identifier: Apache-2.0 */
#include "secretval.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <msb/msb.h>

#include "config.h"
#include "error.h"

struct slot {
	char name[MSB_SECRET_NAME_MAX + 1];
	size_t len;
	char value[MSB_SECRET_VALUE_MAX];
};

#define VAULT_BYTES (MSB_SECRET_VALUES_MAX * sizeof(struct slot))
/* The fd's largest possible content: every entry at its longest. */
#define WIRE_MAX (MSB_SECRET_VALUES_MAX * (MSB_SECRET_NAME_MAX + 1 + MSB_SECRET_VALUE_MAX + 1))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot *vault;
static size_t nslots;

const char *msb_secret_source_name(int source)
{
	switch (source) {
	case MSB_SECRET_FROM_FILE:
		return "file";
	case MSB_SECRET_FROM_VALUE:
		return "value";
	case MSB_SECRET_FROM_CONFIG:
		return "config";
	default:
		return "env";
	}
}

/* Memory for values: private, undumpable, not inherited, locked if we may. */
static void *guarded_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
	madvise(p, len, MADV_WIPEONFORK);
#endif
	(void)mlock(p, len); /* best effort: RLIMIT_MEMLOCK may be small */
	return p;
}

static void guarded_unmap(void *p, size_t len)
{
	if (!p)
		return;
	explicit_bzero(p, len);
	munlock(p, len);
	munmap(p, len);
}

void *msb_secret_mem_alloc(size_t len)
{
	return guarded_map(len);
}

void msb_secret_mem_free(void *p, size_t len)
{
	guarded_unmap(p, len);
}

static int name_ok(const char *s, size_t n)
{
	if (!n || n > MSB_SECRET_NAME_MAX || (!isalpha((unsigned char)s[0]) && s[0] != '_'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_')
			return 0;
	return 1;
}

static int add_locked(const char *env, size_t nl, const char *value, size_t len,
		      struct msb_error *err)
{
	if (!name_ok(env, nl))
		return msb_error_set(err, -EINVAL,
				     "secret value: '%.*s' is not an environment variable name "
				     "(expected [A-Za-z_][A-Za-z0-9_]*)",
				     (int)(nl > 64 ? 64 : nl), env);
	if (!len || memchr(value, '\0', len))
		return msb_error_set(err, -EINVAL,
				     "secret value for %.*s: %s (expected 1 to %d bytes, no NUL)",
				     (int)nl, env, len ? "it holds a NUL byte" : "it is empty",
				     MSB_SECRET_VALUE_MAX);
	if (len > MSB_SECRET_VALUE_MAX)
		return msb_error_set(err, -EFBIG,
				     "secret value for %.*s: %zu bytes (expected at most %d)",
				     (int)nl, env, len, MSB_SECRET_VALUE_MAX);
	if (!vault && !(vault = guarded_map(VAULT_BYTES)))
		return msb_error_set(err, -ENOMEM, "secret values: out of memory");
	struct slot *s = NULL;
	for (size_t i = 0; i < nslots; i++)
		if (strlen(vault[i].name) == nl && !memcmp(vault[i].name, env, nl))
			s = &vault[i];
	if (!s) {
		if (nslots >= MSB_SECRET_VALUES_MAX)
			return msb_error_set(err, -E2BIG,
					     "secret values: more than %d (expected at most one "
					     "per --secret)",
					     MSB_SECRET_VALUES_MAX);
		s = &vault[nslots++];
		memcpy(s->name, env, nl);
		s->name[nl] = '\0';
	}
	explicit_bzero(s->value, sizeof(s->value));
	memcpy(s->value, value, len);
	s->len = len;
	return 0;
}

int msb_secret_vault_add(const char *env, const char *value, size_t len, struct msb_error *err)
{
	if (!env || !value)
		return msb_error_set(err, -EINVAL, "secret value: no name or value");
	pthread_mutex_lock(&lock);
	int r = add_locked(env, strlen(env), value, len, err);
	pthread_mutex_unlock(&lock);
	return r;
}

const char *msb_secret_vault_get(const char *env, size_t *len)
{
	const char *v = NULL;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; vault && i < nslots; i++)
		if (!strcmp(vault[i].name, env)) {
			v = vault[i].value;
			*len = vault[i].len;
		}
	pthread_mutex_unlock(&lock);
	return v;
}

int msb_secret_vault_read_fd(int fd, struct msb_error *err)
{
	char *buf = guarded_map(WIRE_MAX + 1);
	if (!buf)
		return msb_error_set(err, -ENOMEM, "secret values: out of memory");
	size_t n = 0;
	ssize_t got;
	int r = 0;
	while (n <= WIRE_MAX && (got = read(fd, buf + n, WIRE_MAX + 1 - n)) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = msb_error_errno(err, -errno, "secret values: reading fd %d", fd);
			goto out;
		}
		n += (size_t)got;
	}
	if (n > WIRE_MAX) {
		r = msb_error_set(err, -EFBIG, "secret values: more than %d bytes on fd %d",
				  WIRE_MAX, fd);
		goto out;
	}
	if (n && buf[n - 1] != '\0') {
		r = msb_error_set(err, -EINVAL,
				  "secret values: the last entry on fd %d is not ended by a NUL "
				  "(expected NAME=VALUE entries, each ended by a NUL byte)",
				  fd);
		goto out;
	}
	pthread_mutex_lock(&lock);
	for (size_t at = 0; at < n && r == 0;) {
		size_t el = strlen(buf + at);
		const char *e = buf + at, *eq = memchr(e, '=', el);
		if (!eq)
			r = msb_error_set(err, -EINVAL,
					  "secret values: an entry on fd %d has no '=' (expected "
					  "NAME=VALUE, NUL-ended)",
					  fd);
		else
			r = add_locked(e, (size_t)(eq - e), eq + 1, el - (size_t)(eq - e) - 1, err);
		at += el + 1;
	}
	pthread_mutex_unlock(&lock);
out:
	guarded_unmap(buf, WIRE_MAX + 1);
	return r;
}

void msb_secret_vault_wipe(void)
{
	pthread_mutex_lock(&lock);
	guarded_unmap(vault, VAULT_BYTES);
	vault = NULL;
	nslots = 0;
	pthread_mutex_unlock(&lock);
}

int msb_secret_lookup(const char *env, const char **value, size_t *len)
{
	const char *v = msb_secret_vault_get(env, len);
	if (v) {
		*value = v;
		return MSB_SECRET_FROM_VALUE;
	}
	v = getenv(env);
	if (v && *v) {
		*value = v;
		*len = strlen(v);
		return MSB_SECRET_FROM_ENV;
	}
	v = msb_config_get("secrets", env);
	if (v && *v) {
		*value = v;
		*len = strlen(v);
		return MSB_SECRET_FROM_CONFIG;
	}
	return -ENOENT;
}

int msb_secret_values_memfd(const char *const *names, const char *const *values, const size_t *lens,
			    size_t n, int keep_open, struct msb_error *err)
{
	int fd = memfd_create("msb-secret-values", keep_open ? 0 : MFD_CLOEXEC);
	if (fd < 0)
		return msb_error_errno(err, -errno, "secret values: memfd_create");
	for (size_t i = 0; i < n; i++) {
		struct iovec v[4] = {{(void *)names[i], strlen(names[i])},
				     {(void *)"=", 1},
				     {(void *)values[i], lens[i]},
				     {(void *)"", 1}};
		size_t want = v[0].iov_len + 1 + lens[i] + 1;
		ssize_t w = writev(fd, v, 4);
		if (w != (ssize_t)want) {
			int e = w < 0 ? -errno : -EIO;
			close(fd);
			return msb_error_set(err, e, "secret values: writing the memfd: %s",
					     strerror(-e));
		}
	}
	if (lseek(fd, 0, SEEK_SET) < 0) {
		int e = -errno;
		close(fd);
		return msb_error_set(err, e, "secret values: lseek: %s", strerror(-e));
	}
	return fd;
}
