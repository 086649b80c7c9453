/* SPDX-License-Identifier: Apache-2.0 */
/* Command families with subcommands (msb image, msb volume): one help printer, one dispatcher. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "suggest.h"

void cli_sub_help(const struct cli_command *cmd, const struct cli_sub *subs, int args_width)
{
	printf("Usage: msb %s COMMAND ...\n\n%s.\n\nCommands:\n", cmd->name, cmd->summary);
	for (size_t i = 0; subs[i].name; i++)
		printf("  %-8s %-*s %s\n", subs[i].name, args_width, subs[i].args, subs[i].summary);
	/* main.c answers --help anywhere on the line with this, so the details are here too. */
	for (size_t i = 0; subs[i].name; i++) {
		if (!subs[i].detail)
			continue;
		printf("\nmsb %s %s %s\n", cmd->name, subs[i].name, subs[i].args);
		for (const char *p = subs[i].detail; *p;) {
			size_t n = strcspn(p, "\n");
			printf("  %.*s\n", (int)n, p);
			p += n + (p[n] == '\n');
		}
	}
}

int cli_sub_dispatch(const struct cli_command *cmd, const struct cli_sub *subs, int argc,
		     char **argv)
{
	const char *names[32];
	char list[256] = "";
	size_t n = 0;
	for (size_t i = 0; subs[i].name && n < sizeof(names) / sizeof(names[0]) - 1; i++) {
		names[n++] = subs[i].name;
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
			 subs[i].name);
	}
	names[n] = NULL;
	if (argc < 1)
		die(EXIT_USAGE, "%s: no command given (expected one of %s)", cmd->name, list);
	for (size_t i = 0; subs[i].name; i++) {
		if (strcmp(subs[i].name, argv[0]) != 0)
			continue;
		for (int j = 1; j < argc && strcmp(argv[j], "--"); j++)
			if (!strcmp(argv[j], "--help") || !strcmp(argv[j], "-h")) {
				if (subs[i].help)
					subs[i].help();
				else
					printf("Usage: msb %s %s %s\n\n%s.\n%s%s", cmd->name,
					       subs[i].name, subs[i].args, subs[i].summary,
					       subs[i].detail ? "\n" : "",
					       subs[i].detail ? subs[i].detail : "");
				return 0;
			}
		return subs[i].run(argc - 1, argv + 1);
	}
	const char *m = msb_suggest(argv[0], names);
	die(EXIT_USAGE, "%s: unknown command '%s'%s%s%s (see msb %s --help)", cmd->name, argv[0],
	    m ? "; did you mean '" : "", m ? m : "", m ? "'?" : "", cmd->name);
}
