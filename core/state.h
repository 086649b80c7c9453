/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The state store under MSB_HOME (DESIGN.md "Process model"):
 *   MSB_HOME/lock               flock: creating, listing and removing sandboxes
 *   MSB_HOME/sandboxes/NAME/    one directory per sandbox, mode 0700
 *       lock                    flock: read-modify-write of this sandbox's files
 *       spec.json ...
 * Every write is a temp file + fsync + rename, so a reader sees the old or
 * the new content, never a mix; every read-modify-write holds the sandbox's
 * lock, so two msb processes never lose each other's update.
 */
#ifndef MSB_CORE_STATE_H
#define MSB_CORE_STATE_H

#include <stddef.h>

#include <msb/msb-error.h>

struct msb_state {
	char *home;
	int home_fd;
	int sandboxes_fd;
};

#define MSB_STATE_FILE_MAX (16 * 1024 * 1024)

/* MSB_HOME, else /var/lib/msb for root, else $XDG_DATA_HOME/msb or ~/.local/share/msb. */
int msb_state_default_home(char *buf, size_t len, struct msb_error *err);
/* Open (creating as needed) the store at home (NULL: the default). */
int msb_state_open(const char *home, struct msb_state *st, struct msb_error *err);
void msb_state_close(struct msb_state *st);

/* Create sandbox `name` with its first file, atomically: it exists whole or not at all. */
int msb_state_sandbox_create(struct msb_state *st, const char *name, const char *file,
			     const char *data, size_t len, struct msb_error *err);
/* 1 if it exists, 0 if not. */
int msb_state_sandbox_exists(struct msb_state *st, const char *name);
/* Remove a sandbox's directory and everything in it. */
int msb_state_sandbox_remove(struct msb_state *st, const char *name, struct msb_error *err);
/* Names of all sandboxes, sorted; free each and the array. */
int msb_state_list(struct msb_state *st, char ***names, size_t *count, struct msb_error *err);

/* Replace a file of a sandbox atomically. */
int msb_state_write(struct msb_state *st, const char *name, const char *file, const char *data,
		    size_t len, struct msb_error *err);
/* Read a file of a sandbox (NUL-terminated copy in *data, at most MSB_STATE_FILE_MAX). */
int msb_state_read(struct msb_state *st, const char *name, const char *file, char **data,
		   size_t *len, struct msb_error *err);

/*
 * Read-modify-write under the sandbox's lock: fn gets the old content (NULL
 * when the file does not exist) and returns new content in *out (malloc'd,
 * freed here) or a negative errno to abort without writing.
 */
typedef int (*msb_state_update_fn)(const char *old, size_t old_len, char **out, size_t *out_len,
				   void *arg);
int msb_state_update(struct msb_state *st, const char *name, const char *file,
		     msb_state_update_fn fn, void *arg, struct msb_error *err);

#endif
