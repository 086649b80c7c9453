/* SPDX-License-Identifier: Apache-2.0 */
/* msb volume create|ls|inspect|rm: named volumes (core/volume.h). */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "state.h"
#include "suggest.h"
#include "volume.h"

static int volume_create(int argc, char **argv);
static int volume_ls(int argc, char **argv);
static int volume_inspect(int argc, char **argv);
static int volume_rm(int argc, char **argv);

static const struct cli_sub subs[] = {
	{"create", "NAME", "create an empty named volume",
	 "A volume is a directory msb keeps in MSB_HOME/volumes/NAME/data.  Mount it with\n"
	 "-v NAME:/guest/path[:ro] (msb create, msb run); it outlives every sandbox.\n",
	 volume_create},
	{"ls", "[--json]", "list volumes and the sandboxes that use them", NULL, volume_ls},
	{"inspect", "NAME", "show a volume as JSON: name, path, created, in use by", NULL,
	 volume_inspect},
	{"rm", "[-f] NAME...", "remove volumes and their data",
	 "A volume a sandbox names (running or stopped) is refused unless -f is given.\n",
	 volume_rm},
	{0},
};

void help_volume(const struct cli_command *cmd)
{
	cli_sub_help(cmd, subs, 16);
	printf("\nA writable volume mounted into two running sandboxes connects them: msb\n"
	       "warns when that happens.\n");
}

int cmd_volume(const struct cli_command *cmd, int argc, char **argv)
{
	return cli_sub_dispatch(cmd, subs, argc, argv);
}

/* Positional names, --json and -f; anything else is an error. */
struct opts {
	bool json, force;
	char **args;
	size_t nargs;
};

static void parse_opts(const char *cmd, int argc, char **argv, const char *accepted, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->args = calloc((size_t)argc + 1, sizeof(char *));
	if (!o->args)
		die(1, "out of memory");
	bool dashdash = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (dashdash || a[0] != '-' || !a[1])
			o->args[o->nargs++] = argv[i];
		else if (!strcmp(a, "--"))
			dashdash = true;
		else if (!strcmp(a, "--json") && strstr(accepted, "json"))
			o->json = true;
		else if ((!strcmp(a, "-f") || !strcmp(a, "--force")) && strstr(accepted, "force"))
			o->force = true;
		else
			die(EXIT_USAGE,
			    "volume %s: unknown option '%.60s' (see msb volume %s --help)", cmd, a,
			    cmd);
	}
}

static void check_name(const char *cmd, const char *name)
{
	if (!msb_volume_name_valid(name))
		die(EXIT_USAGE,
		    "volume %s: invalid volume name '%.60s' (expected [A-Za-z0-9][A-Za-z0-9_.-]*)",
		    cmd, name);
}

static void open_state(const char *cmd, struct msb_state *st)
{
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_state_open(NULL, st, &err) < 0)
		die(1, "volume %s: %s", cmd, err.msg);
}

static int volume_create(int argc, char **argv)
{
	struct opts o;
	parse_opts("create", argc, argv, "", &o);
	if (o.nargs != 1)
		die(EXIT_USAGE, "volume create: expected one NAME (got %zu)", o.nargs);
	check_name("create", o.args[0]);
	struct msb_state st;
	open_state("create", &st);
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_volume_create(st.home, o.args[0], &err) < 0)
		die(1, "volume create: %s", err.msg);
	printf("%s\n", o.args[0]);
	msb_state_close(&st);
	free(o.args);
	return 0;
}

static json_t *users_json(struct msb_volume_user *u, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s,s:s,s:b}", "sandbox", u[i].sandbox,
						   "status", u[i].pid ? "running" : "stopped",
						   "read_only", u[i].read_only));
	return a;
}

static json_t *volume_json(struct msb_state *st, const char *name)
{
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_volume_info info;
	struct msb_volume_user *u;
	size_t n;
	if (msb_volume_inspect(st->home, name, &info, &err) < 0 ||
	    msb_volume_users(st, name, &u, &n, &err) < 0)
		return NULL;
	json_t *v = json_pack("{s:s,s:s,s:s?,s:o}", "name", info.name, "path", info.path, "created",
			      info.created[0] ? info.created : NULL, "in_use_by", users_json(u, n));
	msb_volume_users_free(u, n);
	msb_volume_info_free(&info);
	return v;
}

static void print_json(json_t *v)
{
	char *s = v ? json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (!s)
		die(1, "out of memory");
	puts(s);
	free(s);
	json_decref(v);
}

static int volume_ls(int argc, char **argv)
{
	struct opts o;
	parse_opts("ls", argc, argv, "json", &o);
	if (o.nargs)
		die(EXIT_USAGE, "volume ls: unexpected argument '%.60s' (expected --json)",
		    o.args[0]);
	struct msb_state st;
	open_state("ls", &st);
	struct msb_error err = MSB_ERROR_INIT;
	char **names;
	size_t n;
	if (msb_volume_list(st.home, &names, &n, &err) < 0)
		die(1, "volume ls: %s", err.msg);
	json_t *all = json_array();
	if (!o.json)
		printf("%-24s %-20s %s\n", "NAME", "CREATED", "IN USE BY (*: running)");
	for (size_t i = 0; i < n; i++) {
		json_t *v = volume_json(&st, names[i]);
		if (v && o.json) {
			json_array_append(all, v);
		} else if (v) {
			json_t *u;
			size_t j;
			char by[512] = "";
			size_t off = 0;
			json_array_foreach(json_object_get(v, "in_use_by"), j, u)
			{
				if (off < sizeof(by))
					off += (size_t)snprintf(
						by + off, sizeof(by) - off, "%s%s%s", j ? "," : "",
						json_string_value(json_object_get(u, "sandbox")),
						strcmp(json_string_value(
							       json_object_get(u, "status")),
						       "running")
							? ""
							: "*");
			}
			const char *c = json_string_value(json_object_get(v, "created"));
			printf("%-24s %-20s %s\n", names[i], c ? c : "-", off ? by : "-");
		}
		json_decref(v);
		free(names[i]);
	}
	free(names);
	if (o.json)
		print_json(all);
	else
		json_decref(all);
	msb_state_close(&st);
	free(o.args);
	return 0;
}

static int volume_inspect(int argc, char **argv)
{
	struct opts o;
	parse_opts("inspect", argc, argv, "json", &o);
	if (o.nargs != 1)
		die(EXIT_USAGE, "volume inspect: expected one NAME (got %zu)", o.nargs);
	check_name("inspect", o.args[0]);
	struct msb_state st;
	open_state("inspect", &st);
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_volume_info info;
	if (msb_volume_inspect(st.home, o.args[0], &info, &err) < 0)
		die(1, "volume inspect: %s", err.msg);
	msb_volume_info_free(&info);
	json_t *v = volume_json(&st, o.args[0]);
	if (!v)
		die(1, "volume inspect: cannot read volume '%s'", o.args[0]);
	print_json(v);
	msb_state_close(&st);
	free(o.args);
	return 0;
}

static int volume_rm(int argc, char **argv)
{
	struct opts o;
	parse_opts("rm", argc, argv, "force", &o);
	if (!o.nargs)
		die(EXIT_USAGE, "volume rm: no volume named (expected msb volume rm [-f] NAME...)");
	for (size_t i = 0; i < o.nargs; i++)
		check_name("rm", o.args[i]);
	struct msb_state st;
	open_state("rm", &st);
	int rc = 0;
	for (size_t i = 0; i < o.nargs; i++) {
		struct msb_error err = MSB_ERROR_INIT;
		if (msb_volume_remove(&st, o.args[i], o.force, &err) < 0) {
			fprintf(stderr, "msb: volume rm: %s\n", err.msg);
			rc = 1;
		}
	}
	msb_state_close(&st);
	free(o.args);
	return rc;
}
