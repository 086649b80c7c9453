/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Named volumes: directories msb keeps under MSB_HOME for sandboxes to share
 * with `-v NAME:GUEST`, outliving any one sandbox.
 *
 *   MSB_HOME/volumes/            mode 0700
 *       lock                     flock: creating and removing volumes
 *       NAME/volume.json         {"name": ..., "created": RFC 3339 UTC}
 *       NAME/data/               what the guest sees (mode 0755)
 *
 * A volume is made whole in a temporary directory and renamed into place, and
 * removed by renaming it away first: a reader sees it whole or not at all.
 * Which sandboxes use a volume is not recorded anywhere: it is read from
 * their specs each time, so it can never go stale.
 */
#ifndef MSB_CORE_VOLUME_H
#define MSB_CORE_VOLUME_H

#include <stddef.h>
#include <sys/types.h>

#include <msb/msb-error.h>

#include "spec.h"
#include "state.h"

struct msb_volume_info {
	char name[MSB_NAME_MAX + 1];
	char created[32]; /* "2025-01-31T12:00:00Z", "" if unknown */
	char *path;	  /* its data directory (malloc'd) */
};

/* Volume names are sandbox names: [A-Za-z0-9][A-Za-z0-9_.-]{0,62}. */
int msb_volume_name_valid(const char *name);

/* NAME's data directory in buf (whether or not it exists). */
int msb_volume_path(const char *home, const char *name, char *buf, size_t len,
		    struct msb_error *err);
/* Create NAME: -EEXIST if it exists. */
int msb_volume_create(const char *home, const char *name, struct msb_error *err);
/* NAME's record: -ENOENT ("no volume named ...") if there is none. */
int msb_volume_inspect(const char *home, const char *name, struct msb_volume_info *info,
		       struct msb_error *err);
void msb_volume_info_free(struct msb_volume_info *info);
/* Every volume's name, sorted (free each and the array); none yet is 0 volumes. */
int msb_volume_list(const char *home, char ***names, size_t *count, struct msb_error *err);

/* A sandbox that names a volume (or, for conflicts, shares a directory). */
struct msb_volume_user {
	char *sandbox;
	pid_t pid; /* running: its monitor's pid; stopped: 0 */
	int read_only;
};
/* Sandboxes whose spec mounts volume `name`, sorted by name. */
int msb_volume_users(struct msb_state *st, const char *name, struct msb_volume_user **users,
		     size_t *count, struct msb_error *err);
void msb_volume_users_free(struct msb_volume_user *users, size_t count);

/*
 * Remove NAME and its data.  Unless force, -EBUSY while any sandbox
 * (running or stopped) uses it, naming them.
 */
int msb_volume_remove(struct msb_state *st, const char *name, int force, struct msb_error *err);

/*
 * Fill each volume's host_path: the bind's source, or the named volume's
 * data directory, which must exist (-ENOENT, "volume 'x' does not exist
 * (msb volume create x)").  home NULL: the default MSB_HOME.  Never creates
 * anything.
 */
int msb_volumes_resolve(const char *home, struct msb_spec *spec, struct msb_error *err);

/*
 * A shared writable volume is a deliberate hole between sandboxes: call
 * warn(line) once for each running sandbox other than `self` that mounts
 * one of spec's volumes (the same named volume, or the same or a nested host
 * directory) where either side may write.  spec's volumes must be resolved.
 * Returns the number of warnings.
 */
size_t msb_volumes_shared_check(struct msb_state *st, const char *self, const struct msb_spec *spec,
				void (*warn)(const char *line, void *arg), void *arg);

#endif
