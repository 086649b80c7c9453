/* SPDX-License-Identifier: Apache-2.0 */
/* msb image ... / msb pull / msb registry ...: image commands. */
#ifndef MSB_CLI_IMAGE_H
#define MSB_CLI_IMAGE_H

#include "cli.h"

/* cli/cmd_pull.c: msb image pull ARGS (argv[0] is the first argument after "pull"). */
int cli_image_pull(int argc, char **argv);
void cli_image_pull_help(void);
/* cli/cmd_pull.c: msb registry login|logout ... */
int cmd_registry(const struct cli_command *cmd, int argc, char **argv);
void help_registry(const struct cli_command *cmd);

/* cli/cmd_image.c */
int cmd_image(const struct cli_command *cmd, int argc, char **argv);
void help_image(const struct cli_command *cmd);
int cmd_pull(const struct cli_command *cmd, int argc, char **argv);
void help_pull(const struct cli_command *cmd);

#endif
