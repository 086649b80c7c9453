/* SPDX-License-Identifier: Apache-2.0 */
#ifndef MSB_CLI_H
#define MSB_CLI_H

#include <msb/msb.h>

/* Exit statuses: 0 success, 1 failure at run time, 2 bad input. */
#define EXIT_USAGE 2

struct cli_command {
	const char *name;
	const char *args;    /* "IMAGE [OPTIONS] [-- COMMAND...]" */
	const char *summary; /* one line */
	int (*run)(const struct cli_command *cmd, int argc, char **argv);
	void (*help)(const struct cli_command *cmd);
	/* Has subcommands, which answer --help after their name themselves. */
	int subcommands;
};

/* Print "msb: <message>" and exit with status; only the CLI ever exits. */
__attribute__((noreturn, format(printf, 2, 3))) void die(int status, const char *fmt, ...);
/* Exit 2 for bad input: the message names the bad token and what was expected. */
__attribute__((noreturn)) void die_input(const struct msb_error *err);

const struct cli_command *cli_commands(void);

/* A subcommand of a family (msb image ls, msb volume rm); tables end with a zeroed entry. */
struct cli_sub {
	const char *name, *args, *summary, *detail; /* detail: more lines for --help, or NULL */
	int (*run)(int argc, char **argv);
	void (*help)(void); /* its own --help, or NULL for name/args/summary/detail */
};
/* The family's help: usage, one line per subcommand (args in args_width columns), details. */
void cli_sub_help(const struct cli_command *cmd, const struct cli_sub *subs, int args_width);
/* Run argv[0]'s subcommand, or answer its --help; unknown or missing: exit 2, one line. */
int cli_sub_dispatch(const struct cli_command *cmd, const struct cli_sub *subs, int argc,
		     char **argv);

/* Command families, one file each. */
int cmd_version(const struct cli_command *cmd, int argc, char **argv);
int cmd_plugins(const struct cli_command *cmd, int argc, char **argv);
void help_plugins(const struct cli_command *cmd);
int cmd_create(const struct cli_command *cmd, int argc, char **argv);
int cmd_run(const struct cli_command *cmd, int argc, char **argv);
void help_sandbox(const struct cli_command *cmd);
int cmd_exec(const struct cli_command *cmd, int argc, char **argv);
int cmd_ls(const struct cli_command *cmd, int argc, char **argv);
int cmd_stop(const struct cli_command *cmd, int argc, char **argv);
int cmd_start(const struct cli_command *cmd, int argc, char **argv);
int cmd_rm(const struct cli_command *cmd, int argc, char **argv);
int cmd_logs(const struct cli_command *cmd, int argc, char **argv);
void help_simple(const struct cli_command *cmd);
/* cli/cmd_volume.c */
int cmd_volume(const struct cli_command *cmd, int argc, char **argv);
void help_volume(const struct cli_command *cmd);
/* Print a shared-volume warning ("msb: warning: LINE"); a callback for msb_volumes_shared_check. */
void cli_warn_line(const char *line, void *arg);

#endif
