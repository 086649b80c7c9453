/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msb/msb.h>

#include "error.h"

#define LINE_MAX_LEN 4096
#define ENTRIES_MAX  1024

struct entry {
	char *section;
	char *key;
	char *value;
};

static struct entry *entries;
static size_t nentries;
static int loaded;
static char *loaded_path;

void msb_config_reset(void)
{
	for (size_t i = 0; i < nentries; i++) {
		free(entries[i].section);
		free(entries[i].key);
		/* [secrets] holds values: every value is wiped before it is freed. */
		explicit_bzero(entries[i].value, strlen(entries[i].value));
		free(entries[i].value);
	}
	free(entries);
	entries = NULL;
	nentries = 0;
	free(loaded_path);
	loaded_path = NULL;
	loaded = 0;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int word_valid(const char *w)
{
	if (!*w)
		return 0;
	for (; *w; w++)
		if (!isalnum((unsigned char)*w) && !strchr("_-.", *w))
			return 0;
	return 1;
}

/* A [secrets] line: an environment variable name, a value. */
static int secret_entry_valid(const char *key, const char *value)
{
	if (!*value || (!isalpha((unsigned char)*key) && *key != '_'))
		return 0;
	for (const char *k = key; *k; k++)
		if (!isalnum((unsigned char)*k) && *k != '_')
			return 0;
	return 1;
}

static int has_secrets(void)
{
	for (size_t i = 0; i < nentries; i++)
		if (!strcmp(entries[i].section, "secrets"))
			return 1;
	return 0;
}

void msb_config_forget_secrets(void)
{
	for (size_t i = 0; i < nentries; i++)
		if (!strcmp(entries[i].section, "secrets"))
			explicit_bzero(entries[i].value, strlen(entries[i].value));
}

int msb_config_parse(const char *text, size_t len, const char *origin, struct msb_error *err)
{
	msb_config_reset();
	if (len > MSB_CONFIG_MAX_BYTES)
		return msb_error_set(err, -E2BIG, "%s: larger than %d bytes", origin,
				     MSB_CONFIG_MAX_BYTES);
	char section[LINE_MAX_LEN] = "";
	size_t pos = 0;
	int lineno = 0;
	while (pos < len) {
		lineno++;
		size_t end = pos;
		while (end < len && text[end] != '\n')
			end++;
		size_t ll = end - pos;
		if (ll >= LINE_MAX_LEN) {
			msb_config_reset();
			return msb_error_set(err, -EINVAL, "%s:%d: line longer than %d bytes",
					     origin, lineno, LINE_MAX_LEN);
		}
		char line[LINE_MAX_LEN];
		memcpy(line, text + pos, ll);
		line[ll] = '\0';
		pos = end + 1;
		if (memchr(line, '\0', ll)) {
			msb_config_reset();
			return msb_error_set(err, -EINVAL, "%s:%d: NUL byte", origin, lineno);
		}
		char *l = trim(line);
		if (!*l || *l == '#')
			continue;
		if (*l == '[') {
			char *close = strchr(l, ']');
			if (!close || close[1]) {
				msb_config_reset();
				return msb_error_set(err, -EINVAL,
						     "%s:%d: bad section header (expected [name])",
						     origin, lineno);
			}
			*close = '\0';
			char *name = trim(l + 1);
			if (!word_valid(name)) {
				msb_config_reset();
				return msb_error_set(err, -EINVAL, "%s:%d: bad section name '%s'",
						     origin, lineno, name);
			}
			snprintf(section, sizeof(section), "%s", name);
			continue;
		}
		char *eq = strchr(l, '=');
		if (!eq) {
			msb_config_reset();
			return msb_error_set(err, -EINVAL, "%s:%d: expected key = value", origin,
					     lineno);
		}
		*eq = '\0';
		char *key = trim(l), *value = trim(eq + 1);
		if (!word_valid(key)) {
			msb_config_reset();
			return msb_error_set(err, -EINVAL, "%s:%d: bad key '%s'", origin, lineno,
					     key);
		}
		if (!strcmp(section, "secrets") && !secret_entry_valid(key, value)) {
			/* Name the key only: the value is a secret. */
			msb_config_reset();
			return msb_error_set(err, -EINVAL,
					     "%s:%d: [secrets] %s: expected NAME = VALUE, NAME an "
					     "environment variable name and VALUE not empty",
					     origin, lineno, key);
		}
		if (nentries >= ENTRIES_MAX) {
			msb_config_reset();
			return msb_error_set(err, -E2BIG, "%s: more than %d entries", origin,
					     ENTRIES_MAX);
		}
		struct entry *v = realloc(entries, (nentries + 1) * sizeof(*v));
		if (!v) {
			msb_config_reset();
			return msb_error_set(err, -ENOMEM, "out of memory");
		}
		entries = v;
		v[nentries].section = strdup(section);
		v[nentries].key = strdup(key);
		v[nentries].value = strdup(value);
		nentries++;
		if (!v[nentries - 1].section || !v[nentries - 1].key || !v[nentries - 1].value) {
			msb_config_reset();
			return msb_error_set(err, -ENOMEM, "out of memory");
		}
	}
	loaded = 1;
	return 0;
}

static int config_file_path(char *buf, size_t len)
{
	const char *p = getenv("MSB_CONFIG");
	if (p)
		return snprintf(buf, len, "%s", p) < (int)len ? 0 : -1;
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	if (xdg && *xdg)
		snprintf(buf, len, "%s/msb/config", xdg);
	else if (home && *home)
		snprintf(buf, len, "%s/.config/msb/config", home);
	else
		buf[0] = '\0';
	if (buf[0] && access(buf, F_OK) == 0)
		return 0;
	snprintf(buf, len, "%s", MSB_SYSCONF_FILE);
	return 0;
}

int msb_config_load(struct msb_error *err)
{
	if (loaded)
		return 0;
	char path[4096];
	if (config_file_path(path, sizeof(path)) < 0)
		return msb_error_set(err, -ENAMETOOLONG, "MSB_CONFIG: path too long");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT && !getenv("MSB_CONFIG")) {
			loaded = 1; /* no config file: defaults */
			return 0;
		}
		return msb_error_errno(err, -errno, "config file '%s'", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return msb_error_errno(err, e, "config file '%s'", path);
	}
	char *buf = malloc(MSB_CONFIG_MAX_BYTES + 1);
	if (!buf) {
		close(fd);
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	size_t len = 0;
	ssize_t n;
	while (len <= MSB_CONFIG_MAX_BYTES &&
	       (n = read(fd, buf + len, MSB_CONFIG_MAX_BYTES + 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	int r = msb_config_parse(buf, len, path, err);
	explicit_bzero(buf, len);
	free(buf);
	/*
	 * A file that holds secret values is private to whoever runs msb (or
	 * root's), as ssh insists for its keys: otherwise it is refused whole.
	 */
	if (r == 0 && has_secrets() &&
	    ((st.st_mode & 077) || (st.st_uid != geteuid() && st.st_uid != 0))) {
		msb_config_reset();
		return msb_error_set(err, -EPERM,
				     "config file '%s' holds [secrets] but %s (mode %04o, owner "
				     "uid %u; expected mode 0600, owned by you: chmod 600 it)",
				     path,
				     (st.st_mode & 077) ? "others can read or write it"
							: "someone else owns it",
				     (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
	}
	if (r == 0)
		loaded_path = strdup(path);
	return r;
}

const char *msb_config_get(const char *section, const char *key)
{
	/* Later lines override earlier ones. */
	for (size_t i = nentries; i-- > 0;)
		if (strcmp(entries[i].section, section ? section : "") == 0 &&
		    strcmp(entries[i].key, key) == 0)
			return entries[i].value;
	return NULL;
}

const char *msb_config_path(void)
{
	return loaded_path;
}
