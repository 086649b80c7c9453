/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host services and module instances: what the core hands a module
 * (struct msb_host), and one module instance per sandbox.
 */
#ifndef MSB_CORE_HOST_H
#define MSB_CORE_HOST_H

#include <msb/msb-plugin.h>

#include "loop.h"
#include "registry.h"

struct msb_instance {
	struct msb_host host; /* handed to the module; stays put */
	const struct msb_module *module;
	void *inst; /* the module's own state */
	struct msb_loop *loop;
	char *spec_json;
	void *spec_root; /* parsed spec (json_t) for config_get */
	char *name;
	char *state_dir;
	char *config_buf; /* last config_get result */
	int created;
};

/*
 * Create an instance of a loaded module for one sandbox.  spec_json is the
 * validated spec; loop may be NULL (then fd_add fails with -ENOSYS).
 */
int msb_instance_create(const struct msb_module *m, const char *sandbox_name, const char *state_dir,
			const char *spec_json, struct msb_loop *loop, struct msb_instance **out,
			struct msb_error *err);
/*
 * host->thread_create: a thread of thread_class (MSB_THREAD_*) running
 * fn(arg) under its class's seccomp filter (core/seccomp.c), or a negative
 * errno, logged, when the filter cannot be installed: the thread then never
 * runs fn.
 */
int msb_thread_start(int thread_class, const char *name, void *(*fn)(void *), void *arg,
		     unsigned long *tid);
int msb_instance_phase(struct msb_instance *in, int phase, struct msb_error *err);
void msb_instance_destroy(struct msb_instance *in);

#endif
