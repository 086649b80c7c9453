/* SPDX-License-Identifier: Apache-2.0 */
/* The module loader and registry (DESIGN.md "Plugin ABI"). */
#ifndef MSB_CORE_REGISTRY_H
#define MSB_CORE_REGISTRY_H

#include <stddef.h>

#include <msb/msb-plugin.h>

/* What happened to one file found on the search path. */
struct msb_module {
	char *file;   /* absolute path */
	int loaded;   /* 1: usable; 0: refused */
	char *reason; /* refusal, one line naming file, module and what is wrong */
	/* Host-side copies, zero-filled past what the module provided. */
	struct msb_plugin_desc desc;
	union {
		struct msb_hv_ops hv;
		struct msb_net_ops net;
		struct msb_storage_ops storage;
		struct msb_secrets_ops secrets;
	} ops;
	char name[33];
	char version[65];
	uint32_t abi; /* as the module declared it */
};

struct msb_registry {
	struct msb_module *modules;
	size_t count;
	char **search_path; /* directories, in order */
	size_t nsearch;
};

/*
 * Build the search path: MSB_PLUGIN_PATH, the config file's plugin_path, the
 * build tree (when the running executable lives in build_root; NULL: never)
 * and the installed $libdir/msb/plugins.
 */
int msb_registry_default_path(struct msb_registry *reg, const char *build_root,
			      struct msb_error *err);
/* Add one directory to the search path (kept in order, duplicates dropped). */
int msb_registry_add_dir(struct msb_registry *reg, const char *dir, struct msb_error *err);
/* Scan every directory on the path and load or refuse each *.so found. */
int msb_registry_scan(struct msb_registry *reg, struct msb_error *err);
/*
 * Load files on the path in scan order only until a module of this kind and
 * name is recorded: the one a full scan would pick (the first found wins),
 * without mapping the files after it.  Files already recorded are not loaded
 * again.  0 whether or not it was found (msb_registry_find tells); negative
 * errno on a failure to read.  A load moves the records: take pointers
 * (msb_registry_find) after the last resolve.
 */
int msb_registry_resolve(struct msb_registry *reg, uint32_t kind, const char *name,
			 struct msb_error *err);
/* Load or refuse one file (records it in reg). */
int msb_registry_load_file(struct msb_registry *reg, const char *path, struct msb_error *err);
/* A loaded module of this kind and name, or NULL. */
const struct msb_module *msb_registry_find(const struct msb_registry *reg, uint32_t kind,
					   const char *name);
void msb_registry_free(struct msb_registry *reg);

const char *msb_kind_name(uint32_t kind);

#endif
