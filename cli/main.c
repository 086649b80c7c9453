/* SPDX-License-Identifier: Apache-2.0 */
/* msb: the command table and dispatch.  The work lives in libmsb-core. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "image.h"
#include "suggest.h"

static const struct cli_command commands[] = {
	{"create", "IMAGE [OPTIONS]", "create a sandbox (--dry-run: validate and print its spec)",
	 cmd_create, help_sandbox},
	{"run", "IMAGE [OPTIONS] [-- COMMAND [ARG...]]",
	 "run a command in a new sandbox (--dry-run: validate and print its spec)", cmd_run,
	 help_sandbox},
	{"exec", "NAME [-e KEY=VALUE] [-w DIR] [-u USER] -- COMMAND [ARG...]",
	 "run a command in a running sandbox", cmd_exec, help_simple},
	{"ls", "[--json]", "list sandboxes and whether they run", cmd_ls, help_simple},
	{"stop", "NAME... [--timeout DURATION]",
	 "stop sandboxes: the guest syncs and powers off, killed after the timeout (10s)", cmd_stop,
	 help_simple},
	{"start", "NAME", "boot a stopped sandbox again, its disk as it was", cmd_start,
	 help_simple},
	{"rm", "[-f] NAME...", "remove sandboxes (-f: stop running ones first)", cmd_rm,
	 help_simple},
	{"logs", "NAME", "print a sandbox's console and supervisor logs", cmd_logs, help_simple},
	{"image", "COMMAND ...", "manage images: pull, ls, inspect, rm, prune, load, save",
	 cmd_image, help_image, 1},
	{"volume", "COMMAND ...", "manage named volumes: create, ls, inspect, rm", cmd_volume,
	 help_volume, 1},
	{"pull", "REFERENCE [OPTIONS]", "pull an image (short for msb image pull)", cmd_pull,
	 help_pull},
	{"registry", "login|logout REGISTRY ...", "store or forget a registry's credentials",
	 cmd_registry, help_registry, 1},
	{"plugins", "[--json]", "list the modules found, loaded and refused, and why", cmd_plugins,
	 help_plugins},
	{"version", "", "print msb's version and plugin ABI", cmd_version, help_simple},
	{NULL, NULL, NULL, NULL, NULL, 0},
};

const struct cli_command *cli_commands(void)
{
	return commands;
}

void die(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("msb: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(status);
}

void die_input(const struct msb_error *err)
{
	die(EXIT_USAGE, "%s", err->msg);
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: msb COMMAND [OPTIONS]\n\n"
		     "msb runs untrusted code in microVM sandboxes under KVM.\n\nCommands:\n");
	for (const struct cli_command *c = commands; c->name; c++)
		fprintf(out, "  %-10s %s\n", c->name, c->summary);
	fprintf(out, "\nRun 'msb COMMAND --help' for a command's options.\n"
		     "Environment: MSB_HOME (state), MSB_PLUGIN_PATH (modules), MSB_CONFIG "
		     "(config file), MSB_LOG (error|warn|info|debug).\n");
}

void cli_warn_line(const char *line, void *arg)
{
	(void)arg;
	fprintf(stderr, "msb: warning: %s\n", line);
}

void help_simple(const struct cli_command *cmd)
{
	printf("Usage: msb %s %s\n\n%s\n", cmd->name, cmd->args, cmd->summary);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(name, "--version"))
		name = "version";
	for (const struct cli_command *c = commands; c->name; c++) {
		if (strcmp(c->name, name) != 0)
			continue;
		/* --help anywhere; for a command with subcommands, right after its name. */
		for (int i = 2; i < argc && strcmp(argv[i], "--") && !(c->subcommands && i > 2);
		     i++)
			if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
				c->help(c);
				return 0;
			}
		return c->run(c, argc - 2, argv + 2);
	}
	const char *names[16];
	size_t n = 0;
	for (const struct cli_command *c = commands; c->name && n < 15; c++)
		names[n++] = c->name;
	names[n] = NULL;
	const char *m = msb_suggest(name, names);
	if (m)
		die(EXIT_USAGE, "unknown command '%s'; did you mean '%s'? (see msb --help)", name,
		    m);
	die(EXIT_USAGE, "unknown command '%s' (see msb --help)", name);
}
