/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The config file: MSB_CONFIG, else $XDG_CONFIG_HOME/msb/config (or
 * ~/.config/msb/config), else /etc/msb/config.  Lines are `key = value`,
 * `[section]` headers group module options (`[network.netfilter]`), `#`
 * starts a comment.  docs/config.md lists the keys.
 */
#ifndef MSB_CORE_CONFIG_H
#define MSB_CORE_CONFIG_H

#include <stddef.h>

#include <msb/msb-error.h>

#define MSB_CONFIG_MAX_BYTES (64 * 1024)

/* Load the config file once (idempotent); a missing file is an empty config. */
int msb_config_load(struct msb_error *err);
/* Parse config text (exposed for tests and fuzzing); replaces what was loaded. */
int msb_config_parse(const char *text, size_t len, const char *origin, struct msb_error *err);
/* Value of key in section (NULL: top level), or NULL. */
const char *msb_config_get(const char *section, const char *key);
/* Path of the file loaded, or NULL. */
const char *msb_config_path(void);
void msb_config_reset(void);
/* Wipe the values of the [secrets] section (once the secrets proxy has its own copies). */
void msb_config_forget_secrets(void);

#endif
