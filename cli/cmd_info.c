/* SPDX-License-Identifier: Apache-2.0 */
/* msb version, msb plugins. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "modules.h"

int cmd_version(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	if (argc > 0)
		die(EXIT_USAGE, "version: unexpected argument '%s' (expected none)", argv[0]);
	printf("msb %s (plugin ABI %d.%d)\n", msb_version(), MSB_PLUGIN_ABI_MAJOR,
	       MSB_PLUGIN_ABI_MINOR);
	return 0;
}

void help_plugins(const struct cli_command *cmd)
{
	printf("Usage: msb %s %s\n\n%s.\n\n"
	       "Modules are searched in MSB_PLUGIN_PATH (colon-separated), the config file's\n"
	       "plugin_path, the build tree (when msb runs from it) and %s.\n"
	       "The first module of a kind and name wins; later ones are refused as duplicates.\n\n"
	       "Options:\n  --json   machine-readable output\n",
	       cmd->name, cmd->args, cmd->summary, MSB_PLUGIN_DIR);
}

static void print_json(const struct msb_registry *reg)
{
	json_t *root = json_object(), *path = json_array(), *mods = json_array();
	for (size_t i = 0; i < reg->nsearch; i++)
		json_array_append_new(path, json_string(reg->search_path[i]));
	for (size_t i = 0; i < reg->count; i++) {
		const struct msb_module *m = &reg->modules[i];
		json_t *o = json_object();
		json_object_set_new(o, "file", json_string(m->file));
		json_object_set_new(o, "status", json_string(m->loaded ? "loaded" : "refused"));
		json_object_set_new(o, "name", m->name[0] ? json_string(m->name) : json_null());
		const char *kind = m->loaded ? msb_kind_name(m->desc.kind) : NULL;
		json_object_set_new(o, "kind", kind ? json_string(kind) : json_null());
		json_object_set_new(o, "version",
				    m->loaded ? json_string(m->version) : json_null());
		char abi[24];
		snprintf(abi, sizeof(abi), "%u.%u", MSB_PLUGIN_ABI_MAJOR_OF(m->abi),
			 MSB_PLUGIN_ABI_MINOR_OF(m->abi));
		json_object_set_new(o, "abi", m->abi ? json_string(abi) : json_null());
		json_object_set_new(o, "reason", m->reason ? json_string(m->reason) : json_null());
		json_array_append_new(mods, o);
	}
	char abi[24];
	snprintf(abi, sizeof(abi), "%d.%d", MSB_PLUGIN_ABI_MAJOR, MSB_PLUGIN_ABI_MINOR);
	json_object_set_new(root, "abi", json_string(abi));
	json_object_set_new(root, "search_path", path);
	json_object_set_new(root, "modules", mods);
	char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	puts(s ? s : "{}");
	free(s);
	json_decref(root);
}

int cmd_plugins(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	int json = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else
			die(EXIT_USAGE, "plugins: unexpected argument '%s' (expected --json)",
			    argv[i]);
	}
	struct msb_registry reg = {0};
	cli_load_registry(&reg, 0);
	if (json) {
		print_json(&reg);
		msb_registry_free(&reg);
		return 0;
	}
	printf("plugin ABI %d.%d; search path:\n", MSB_PLUGIN_ABI_MAJOR, MSB_PLUGIN_ABI_MINOR);
	for (size_t i = 0; i < reg.nsearch; i++)
		printf("  %s\n", reg.search_path[i]);
	size_t refused = 0;
	printf("\n%-11s %-16s %-9s %-5s %s\n", "KIND", "NAME", "VERSION", "ABI", "FILE");
	for (size_t i = 0; i < reg.count; i++) {
		const struct msb_module *m = &reg.modules[i];
		if (!m->loaded) {
			refused++;
			continue;
		}
		printf("%-11s %-16s %-9s %u.%-3u %s\n", msb_kind_name(m->desc.kind), m->name,
		       m->version, MSB_PLUGIN_ABI_MAJOR_OF(m->abi), MSB_PLUGIN_ABI_MINOR_OF(m->abi),
		       m->file);
	}
	if (refused) {
		printf("\nrefused:\n");
		for (size_t i = 0; i < reg.count; i++)
			if (!reg.modules[i].loaded)
				printf("  %s\n", reg.modules[i].reason);
	}
	msb_registry_free(&reg);
	return 0;
}
