/* SPDX-License-Identifier: Apache-2.0 */
/* Loading the registry for a command, and checking a spec's module names. */
#include "modules.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "suggest.h"

void cli_open_registry(struct msb_registry *reg)
{
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_config_load(&err) < 0)
		die(1, "%s", err.msg);
	if (msb_registry_default_path(reg, MSB_BUILD_ROOT, &err) < 0)
		die(1, "loading plugins: %s", err.msg);
}

void cli_warn_refused(const struct msb_registry *reg)
{
	for (size_t i = 0; i < reg->count; i++)
		if (!reg->modules[i].loaded)
			fprintf(stderr, "msb: warning: refused plugin %s\n",
				reg->modules[i].reason);
}

void cli_load_registry(struct msb_registry *reg, int warn_refused)
{
	struct msb_error err = MSB_ERROR_INIT;
	cli_open_registry(reg);
	if (msb_registry_scan(reg, &err) < 0)
		die(1, "loading plugins: %s", err.msg);
	if (warn_refused)
		cli_warn_refused(reg);
}

static const uint32_t slot_kind[MSB_SLOT_COUNT] = {MSB_PLUGIN_HV, MSB_PLUGIN_NET,
						   MSB_PLUGIN_STORAGE, MSB_PLUGIN_SECRETS};

/* Does the sandbox use this slot's module (or did the user name one)? */
static int slot_used(const struct msb_spec *spec, int slot)
{
	if (spec->modules[slot])
		return 1;
	switch (slot) {
	case MSB_SLOT_NET:
		return !spec->no_net;
	case MSB_SLOT_STORAGE:
		return spec->nvolumes > 0;
	case MSB_SLOT_SECRETS:
		return spec->nsecrets > 0;
	default:
		return 1;
	}
}

int cli_check_modules(struct msb_registry *reg, const struct msb_spec *spec, int all,
		      const struct msb_module *out[MSB_SLOT_COUNT], struct msb_error *err)
{
	/* Load only what is needed (every module for `all`); pointers after the loads. */
	for (int slot = 0; slot < MSB_SLOT_COUNT; slot++) {
		int r = all || slot_used(spec, slot)
				? msb_registry_resolve(reg, slot_kind[slot],
						       msb_spec_module(spec, slot), err)
				: 0;
		if (r < 0)
			return r;
	}
	for (int slot = 0; slot < MSB_SLOT_COUNT; slot++) {
		const char *name = msb_spec_module(spec, slot);
		uint32_t kind = slot_kind[slot];
		out[slot] = NULL;
		if (!all && !slot_used(spec, slot))
			continue;
		const struct msb_module *m = msb_registry_find(reg, kind, name);
		if (m) {
			out[slot] = m;
			continue;
		}
		const char *names[64];
		char found[512] = "";
		size_t n = 0, off = 0;
		for (size_t i = 0; i < reg->count && n < 63; i++) {
			if (!reg->modules[i].loaded || reg->modules[i].desc.kind != kind)
				continue;
			names[n++] = reg->modules[i].name;
			off += (size_t)snprintf(found + off,
						off < sizeof(found) ? sizeof(found) - off : 0,
						"%s%s", n > 1 ? ", " : "", reg->modules[i].name);
		}
		names[n] = NULL;
		const char *m2 = msb_suggest(name, names);
		if (!spec->modules[slot])
			return msb_error_set(
				err, -ENOENT,
				"the default %s module '%s' was not found on the plugin "
				"path (found: %s; see msb plugins)",
				msb_kind_name(kind), name, n ? found : "none");
		return msb_error_set(
			err, -EINVAL,
			"--%s '%s': no %s module of that name (expected one of: %s)%s%s%s",
			msb_slot_option[slot], name, msb_kind_name(kind), n ? found : "none found",
			m2 ? "; did you mean '" : "", m2 ? m2 : "", m2 ? "'?" : "");
	}
	return 0;
}
