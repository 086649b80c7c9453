/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The module loader.  A module is untrusted as to its *shape*: it may be
 * built against another ABI, be truncated, or not be a module at all.  Every
 * check below happens before any field beyond the frozen head (abi, size,
 * kind, name, version) is read, and what passes is copied into zeroed
 * host-side structs so later code never reads past what the module provided.
 * Modules are never dlclose()d: a module may have started threads or
 * registered atexit handlers, and unloading code that might still run is the
 * classic plugin crash.
 */
#include "registry.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msb/msb.h>

#include "config.h"
#include "error.h"

#define REASON_MAX 512

/* What ABI 1.0 requires: everything through `ops`. */
#define DESC_MIN_SIZE (offsetof(struct msb_plugin_desc, ops) + sizeof(const void *))

const char *msb_kind_name(uint32_t kind)
{
	switch (kind) {
	case MSB_PLUGIN_HV:
		return "hypervisor";
	case MSB_PLUGIN_NET:
		return "network";
	case MSB_PLUGIN_STORAGE:
		return "storage";
	case MSB_PLUGIN_SECRETS:
		return "secrets";
	default:
		return NULL;
	}
}

/* A required operation: its offset in the kind's ops table and its name. */
struct required_op {
	size_t offset;
	const char *name;
};

#define REQ(type, field)                                                                           \
	{                                                                                          \
		offsetof(struct type, field) + sizeof(((struct type *)0)->field), #field           \
	}

static const struct required_op hv_required[] = {
	REQ(msb_hv_ops, configure),
	REQ(msb_hv_ops, add_disk),
	REQ(msb_hv_ops, start),
	REQ(msb_hv_ops, agent_connect),
	REQ(msb_hv_ops, kill),
	REQ(msb_hv_ops, exited),
	{0, NULL},
};
static const struct required_op net_required[] = {
	REQ(msb_net_ops, setup),
	REQ(msb_net_ops, apply_policy),
	REQ(msb_net_ops, teardown),
	REQ(msb_net_ops, reap),
	{0, NULL},
};
static const struct required_op storage_required[] = {
	REQ(msb_storage_ops, share_open),
	REQ(msb_storage_ops, share_close),
	{0, NULL},
};
static const struct required_op secrets_required[] = {
	REQ(msb_secrets_ops, proxy_start),
	REQ(msb_secrets_ops, guest_env),
	REQ(msb_secrets_ops, proxy_stop),
	{0, NULL},
};

struct kind_ops {
	size_t host_size; /* sizeof the host's ops struct */
	const struct required_op *required;
};

static const struct kind_ops *kind_ops_of(uint32_t kind)
{
	static const struct kind_ops table[] = {
		[MSB_PLUGIN_HV] = {sizeof(struct msb_hv_ops), hv_required},
		[MSB_PLUGIN_NET] = {sizeof(struct msb_net_ops), net_required},
		[MSB_PLUGIN_STORAGE] = {sizeof(struct msb_storage_ops), storage_required},
		[MSB_PLUGIN_SECRETS] = {sizeof(struct msb_secrets_ops), secrets_required},
	};
	if (kind < MSB_PLUGIN_HV || kind > MSB_PLUGIN_SECRETS)
		return NULL;
	return &table[kind];
}

/* The largest offset any required op ends at: the minimum ops size. */
static size_t ops_min_size(const struct required_op *req)
{
	size_t m = sizeof(uint32_t);
	for (; req->name; req++)
		if (req->offset > m)
			m = req->offset;
	return m;
}

/* Copy a module-supplied string for display: bounded, printable only. */
static void copy_label(char *dst, size_t len, const char *src)
{
	size_t i = 0;
	if (src)
		for (; i + 1 < len && src[i]; i++)
			dst[i] = isprint((unsigned char)src[i]) ? src[i] : '?';
	dst[i] = '\0';
}

static int name_valid(const char *n)
{
	size_t len = strnlen(n, 33);
	if (len == 0 || len > 32 || !(islower((unsigned char)n[0]) || isdigit((unsigned char)n[0])))
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!islower((unsigned char)n[i]) && !isdigit((unsigned char)n[i]) && n[i] != '-' &&
		    n[i] != '_')
			return 0;
	return 1;
}

static struct msb_module *add_record(struct msb_registry *reg, const char *file,
				     struct msb_error *err)
{
	struct msb_module *m = realloc(reg->modules, (reg->count + 1) * sizeof(*m));
	if (!m) {
		msb_error_set(err, -ENOMEM, "out of memory");
		return NULL;
	}
	reg->modules = m;
	m = &reg->modules[reg->count];
	memset(m, 0, sizeof(*m));
	m->file = strdup(file);
	if (!m->file) {
		msb_error_set(err, -ENOMEM, "out of memory");
		return NULL;
	}
	reg->count++;
	return m;
}

__attribute__((format(printf, 2, 3))) static int refuse(struct msb_module *m, const char *fmt, ...)
{
	char why[REASON_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	char *line = NULL;
	if (m->name[0])
		(void)!asprintf(&line, "%s (module \"%s\"): %s", m->file, m->name, why);
	else
		(void)!asprintf(&line, "%s: %s", m->file, why);
	m->reason = line;
	m->loaded = 0;
	return 0; /* a refusal is recorded, not an error of the scan */
}

const struct msb_module *msb_registry_find(const struct msb_registry *reg, uint32_t kind,
					   const char *name)
{
	for (size_t i = 0; i < reg->count; i++)
		if (reg->modules[i].loaded && reg->modules[i].desc.kind == kind &&
		    strcmp(reg->modules[i].name, name) == 0)
			return &reg->modules[i];
	return NULL;
}

typedef const struct msb_plugin_desc *(*entry_fn)(void);

int msb_registry_load_file(struct msb_registry *reg, const char *path, struct msb_error *err)
{
	char real[PATH_MAX];
	if (!realpath(path, real))
		return msb_error_errno(err, -errno, "plugin '%s'", path);
	/* The same file reached twice through the search path is one module. */
	for (size_t i = 0; i < reg->count; i++)
		if (strcmp(reg->modules[i].file, real) == 0)
			return 0;
	struct msb_module *m = add_record(reg, real, err);
	if (!m)
		return err ? err->code : -ENOMEM;

	/*
	 * RTLD_NOW: an unresolved symbol is a refusal now, not a crash later.
	 * RTLD_LOCAL: one module's symbols never satisfy another's, so modules
	 * cannot reach each other except through the core.
	 */
	dlerror();
	void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		/* dlerror repeats the path; keep what follows it. */
		const char *tail = e ? strstr(e, ": ") : NULL;
		return refuse(m, "not a loadable module (%s)", tail ? tail + 2 : (e ? e : "?"));
	}
	dlerror();
	entry_fn entry = (entry_fn)dlsym(h, MSB_PLUGIN_ENTRY_SYMBOL);
	if (!entry)
		return refuse(m, "not an msb module: no %s symbol", MSB_PLUGIN_ENTRY_SYMBOL);
	const struct msb_plugin_desc *d = entry();
	if (!d)
		return refuse(m, "%s returned no descriptor", MSB_PLUGIN_ENTRY_SYMBOL);

	m->abi = d->abi;
	uint32_t major = MSB_PLUGIN_ABI_MAJOR_OF(d->abi), minor = MSB_PLUGIN_ABI_MINOR_OF(d->abi);
	/*
	 * The head (abi, size, kind, name, version) is frozen across every
	 * major and begins every descriptor whatever its `size` says, so the
	 * name can be read to say which module is refused.
	 */
	if (d->name)
		copy_label(m->name, sizeof(m->name), d->name);
	if (major != MSB_PLUGIN_ABI_MAJOR)
		return refuse(
			m,
			"built for plugin ABI %u.%u, but this msb speaks ABI %u.%u (the major "
			"version must match)",
			major, minor, MSB_PLUGIN_ABI_MAJOR, MSB_PLUGIN_ABI_MINOR);
	if (minor > MSB_PLUGIN_ABI_MINOR)
		return refuse(
			m,
			"built for plugin ABI %u.%u, newer than this msb's ABI %u.%u (upgrade "
			"msb or rebuild the module against msb %u.%u headers)",
			major, minor, MSB_PLUGIN_ABI_MAJOR, MSB_PLUGIN_ABI_MINOR,
			MSB_PLUGIN_ABI_MAJOR, MSB_PLUGIN_ABI_MINOR);
	if (d->size < DESC_MIN_SIZE)
		return refuse(
			m, "descriptor size %u is too small for ABI %u.%u (expected at least %zu)",
			d->size, major, minor, DESC_MIN_SIZE);
	if (d->size > sizeof(struct msb_plugin_desc))
		return refuse(
			m,
			"descriptor size %u is larger than ABI %u.%u defines (%zu; expected at "
			"most that)",
			d->size, MSB_PLUGIN_ABI_MAJOR, MSB_PLUGIN_ABI_MINOR,
			sizeof(struct msb_plugin_desc));
	if (!d->name || !name_valid(d->name))
		return refuse(m, "invalid module name '%s' (expected [a-z0-9][a-z0-9_-]{0,31})",
			      m->name);
	const struct kind_ops *ko = kind_ops_of(d->kind);
	if (!ko)
		return refuse(m,
			      "unknown module kind %u (expected 1-4: hypervisor, network, "
			      "storage, secrets)",
			      d->kind);

	memcpy(&m->desc, d, d->size); /* the rest stays zero */
	copy_label(m->version, sizeof(m->version), d->version ? d->version : "");
	m->desc.name = m->name;
	m->desc.version = m->version;
	if (!m->desc.create)
		return refuse(m, "missing required callback 'create'");
	if (!m->desc.destroy)
		return refuse(m, "missing required callback 'destroy'");
	if (!m->desc.ops)
		return refuse(m, "missing required %s operations table 'ops'",
			      msb_kind_name(d->kind));

	uint32_t ops_size = *(const uint32_t *)m->desc.ops;
	size_t need = ops_min_size(ko->required);
	if (ops_size < need)
		return refuse(m, "%s ops table size %u is too small (expected at least %zu)",
			      msb_kind_name(d->kind), ops_size, need);
	if (ops_size > ko->host_size)
		return refuse(
			m,
			"%s ops table size %u is larger than ABI %u.%u defines (%zu; expected "
			"at most that)",
			msb_kind_name(d->kind), ops_size, MSB_PLUGIN_ABI_MAJOR,
			MSB_PLUGIN_ABI_MINOR, ko->host_size);
	memcpy(&m->ops, m->desc.ops, ops_size);
	m->desc.ops = &m->ops;
	for (const struct required_op *r = ko->required; r->name; r++) {
		void *fn;
		memcpy(&fn, (const char *)&m->ops + r->offset - sizeof(void *), sizeof(fn));
		if (!fn)
			return refuse(m, "missing required %s operation '%s'",
				      msb_kind_name(d->kind), r->name);
	}
	const struct msb_module *dup = msb_registry_find(reg, d->kind, m->name);
	if (dup)
		return refuse(m, "duplicate %s module name, already loaded from %s",
			      msb_kind_name(d->kind), dup->file);
	m->loaded = 1;
	return 0;
}

int msb_registry_add_dir(struct msb_registry *reg, const char *dir, struct msb_error *err)
{
	if (!dir || !*dir)
		return 0;
	for (size_t i = 0; i < reg->nsearch; i++)
		if (strcmp(reg->search_path[i], dir) == 0)
			return 0;
	char **v = realloc(reg->search_path, (reg->nsearch + 1) * sizeof(char *));
	if (!v)
		return msb_error_set(err, -ENOMEM, "out of memory");
	reg->search_path = v;
	v[reg->nsearch] = strdup(dir);
	if (!v[reg->nsearch])
		return msb_error_set(err, -ENOMEM, "out of memory");
	reg->nsearch++;
	return 0;
}

static int add_path_list(struct msb_registry *reg, const char *list, struct msb_error *err)
{
	cleanup_free char *copy = strdup(list);
	if (!copy)
		return msb_error_set(err, -ENOMEM, "out of memory");
	char *save = NULL;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		int r = msb_registry_add_dir(reg, d, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* When this binary runs from the build tree, its modules are there too. */
static int add_build_tree(struct msb_registry *reg, const char *build_root, struct msb_error *err)
{
	if (!build_root)
		return 0;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return 0;
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return 0;
	*slash = '\0';
	char root[PATH_MAX];
	if (!realpath(build_root, root) || strcmp(root, exe) != 0)
		return 0;
	static const char *const dirs[] = {"hv-kvm", "net", "storage", "secrets"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char d[PATH_MAX];
		if (snprintf(d, sizeof(d), "%s/plugins/%s", root, dirs[i]) >= (int)sizeof(d))
			continue;
		int r = msb_registry_add_dir(reg, d, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int msb_registry_default_path(struct msb_registry *reg, const char *build_root,
			      struct msb_error *err)
{
	int r;
	const char *env = getenv("MSB_PLUGIN_PATH");
	if (env && (r = add_path_list(reg, env, err)) < 0)
		return r;
	const char *cfg = msb_config_get(NULL, "plugin_path");
	if (cfg && (r = add_path_list(reg, cfg, err)) < 0)
		return r;
	if ((r = add_build_tree(reg, build_root, err)) < 0)
		return r;
	return msb_registry_add_dir(reg, MSB_PLUGIN_DIR, err);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Load or refuse every *.so in dir, in name order.  With `want`, stop at the
 * first file that loads as a module of that kind and name (*found = 1).
 */
static int scan_dir(struct msb_registry *reg, const char *dir, uint32_t kind, const char *want,
		    int *found, struct msb_error *err)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0; /* a missing directory on the path is not an error */
	char **names = NULL;
	size_t n = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		if (len < 4 || strcmp(de->d_name + len - 3, ".so") != 0)
			continue;
		char **v = realloc(names, (n + 1) * sizeof(char *));
		if (!v || !(v[n] = strdup(de->d_name))) {
			names = v ? v : names;
			r = msb_error_set(err, -ENOMEM, "out of memory");
			break;
		}
		names = v;
		n++;
	}
	closedir(d);
	/* Sorted, so "first found wins" is the same on every machine. */
	if (r == 0 && n)
		qsort(names, n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (r == 0 && !(want && *found)) {
			char path[PATH_MAX];
			int pl = snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
			struct stat st;
			if (pl < (int)sizeof(path) && stat(path, &st) == 0 && S_ISREG(st.st_mode))
				r = msb_registry_load_file(reg, path, err);
			if (r == 0 && want && msb_registry_find(reg, kind, want))
				*found = 1;
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int msb_registry_scan(struct msb_registry *reg, struct msb_error *err)
{
	for (size_t i = 0; i < reg->nsearch; i++) {
		int r = scan_dir(reg, reg->search_path[i], 0, NULL, NULL, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int msb_registry_resolve(struct msb_registry *reg, uint32_t kind, const char *name,
			 struct msb_error *err)
{
	int found = msb_registry_find(reg, kind, name) != NULL;
	for (size_t i = 0; !found && i < reg->nsearch; i++) {
		int r = scan_dir(reg, reg->search_path[i], kind, name, &found, err);
		if (r < 0)
			return r;
	}
	return 0;
}

void msb_registry_free(struct msb_registry *reg)
{
	/* Modules stay mapped (never dlclose); only our records go. */
	for (size_t i = 0; i < reg->count; i++) {
		free(reg->modules[i].file);
		free(reg->modules[i].reason);
	}
	free(reg->modules);
	for (size_t i = 0; i < reg->nsearch; i++)
		free(reg->search_path[i]);
	free(reg->search_path);
	memset(reg, 0, sizeof(*reg));
}
