/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secret values given to msb directly (the SDK's msb_spec_set_secret_value,
 * `--secret-values-fd`), and where a secret's value comes from.
 *
 * A process holds such values in one vault: an anonymous mapping kept out of
 * core dumps (MADV_DONTDUMP), out of forked children (MADV_WIPEONFORK) and,
 * where the limit allows, out of swap (mlock).  The msb CLI hands them to
 * the sandbox's supervisor in a memfd (never argv, the environment or a
 * file); the supervisor reads them into its vault, and the secrets module
 * asks for them through the host table's secret_value (ABI 1.2).
 *
 * The wire form, on the fd: entries "NAME=VALUE" each ended by a NUL byte;
 * at most MSB_SECRET_VALUES_MAX entries, each value 1 to
 * MSB_SECRET_VALUE_MAX bytes without NUL.
 */
#ifndef MSB_CORE_SECRETVAL_H
#define MSB_CORE_SECRETVAL_H

#include <stddef.h>

#include <msb/msb-error.h>

#define MSB_SECRET_VALUES_MAX 64
#define MSB_SECRET_VALUE_MAX  8192
#define MSB_SECRET_NAME_MAX   255

/* Where a secret's value comes from, in this order of precedence. */
enum msb_secret_source {
	MSB_SECRET_FROM_FILE = 1,   /* --secret-file ENV=PATH */
	MSB_SECRET_FROM_VALUE = 2,  /* given directly: the SDK or --secret-values-fd */
	MSB_SECRET_FROM_ENV = 3,    /* the host environment variable ENV */
	MSB_SECRET_FROM_CONFIG = 4, /* ENV = VALUE in the config file's [secrets] */
};

/* Memory for a value: as the vault's (undumpable, wiped on fork, locked if allowed). */
void *msb_secret_mem_alloc(size_t len);
/* Wipe and release what msb_secret_mem_alloc gave. */
void msb_secret_mem_free(void *p, size_t len);

/* "file", "value", "env", "config". */
const char *msb_secret_source_name(int source);

/*
 * Add ENV's value to this process's vault (replacing an earlier one).
 * -EINVAL for a bad name or an empty value, a NUL in it; -EFBIG over
 * MSB_SECRET_VALUE_MAX; -E2BIG past MSB_SECRET_VALUES_MAX names.
 */
int msb_secret_vault_add(const char *env, const char *value, size_t len, struct msb_error *err);

/* ENV's value in the vault (not NUL-terminated), or NULL. */
const char *msb_secret_vault_get(const char *env, size_t *len);

/* Read entries from fd (to its end) into the vault; fd is not closed. */
int msb_secret_vault_read_fd(int fd, struct msb_error *err);

/* Wipe and unmap the vault. */
void msb_secret_vault_wipe(void);

/*
 * Where ENV's value is, outside a --secret-file: the vault, the host
 * environment, the config file's [secrets] (msb_config_load first).
 * Returns the source (enum msb_secret_source) and points *value at the
 * bytes, or -ENOENT.
 */
int msb_secret_lookup(const char *env, const char **value, size_t *len);

/*
 * A memfd (without O_CLOEXEC when keep_open) holding entries for the given
 * names and values, positioned at 0; -errno with err filled.
 */
int msb_secret_values_memfd(const char *const *names, const char *const *values, const size_t *lens,
			    size_t n, int keep_open, struct msb_error *err);

#endif
