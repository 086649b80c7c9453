/* SPDX-License-Identifier: Apache-2.0 */
#include "host.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msb/msb.h>

#include "config.h"
#include "error.h"
#include "log.h"
#include "seccomp-filters.h"
#include "secretval.h"

static struct msb_instance *instance_of(const struct msb_host *h)
{
	return h ? (struct msb_instance *)h->core : NULL;
}

__attribute__((format(printf, 3, 4))) static void host_log(const struct msb_host *h, int level,
							   const char *fmt, ...)
{
	struct msb_instance *in = instance_of(h);
	char prefix[80];
	snprintf(prefix, sizeof(prefix), "%s/%s", in ? msb_kind_name(in->module->desc.kind) : "?",
		 in ? in->module->name : "?");
	va_list ap;
	va_start(ap, fmt);
	msb_log_v(level, prefix, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 4, 5))) static int
host_error_set(const struct msb_host *h, struct msb_error *err, int code, const char *fmt, ...)
{
	(void)h;
	va_list ap;
	va_start(ap, fmt);
	int r = msb_error_vset(err, code, fmt, ap);
	va_end(ap);
	return r;
}

static int host_fd_add(const struct msb_host *h, int fd, uint32_t events, msb_fd_cb cb, void *arg)
{
	struct msb_instance *in = instance_of(h);
	return in && in->loop ? msb_loop_add(in->loop, fd, events, cb, arg) : -ENOSYS;
}

static int host_fd_mod(const struct msb_host *h, int fd, uint32_t events)
{
	struct msb_instance *in = instance_of(h);
	return in && in->loop ? msb_loop_mod(in->loop, fd, events) : -ENOSYS;
}

static int host_fd_del(const struct msb_host *h, int fd)
{
	struct msb_instance *in = instance_of(h);
	return in && in->loop ? msb_loop_del(in->loop, fd) : -ENOSYS;
}

/* "a.b.c" in the spec, as text; "plugin.KEY" from the config file's module section. */
static const char *host_config_get(const struct msb_host *h, const char *key)
{
	struct msb_instance *in = instance_of(h);
	if (!in || !key)
		return NULL;
	if (strncmp(key, "plugin.", 7) == 0) {
		char section[80];
		snprintf(section, sizeof(section), "%s.%s", msb_kind_name(in->module->desc.kind),
			 in->module->name);
		return msb_config_get(section, key + 7);
	}
	json_t *node = in->spec_root;
	char part[128];
	const char *p = key;
	while (node && *p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		if (len >= sizeof(part))
			return NULL;
		memcpy(part, p, len);
		part[len] = '\0';
		node = json_is_object(node) ? json_object_get(node, part) : NULL;
		p += len + (dot ? 1 : 0);
	}
	if (!node || json_is_null(node))
		return NULL;
	free(in->config_buf);
	in->config_buf = NULL;
	if (json_is_string(node))
		in->config_buf = strdup(json_string_value(node));
	else if (json_is_integer(node))
		(void)!asprintf(&in->config_buf, "%" JSON_INTEGER_FORMAT, json_integer_value(node));
	else if (json_is_boolean(node))
		in->config_buf = strdup(json_is_true(node) ? "true" : "false");
	else
		in->config_buf = json_dumps(node, JSON_COMPACT | JSON_PRESERVE_ORDER);
	return in->config_buf;
}

static int host_secret_value(const struct msb_host *h, const char *env, char *buf, size_t cap,
			     size_t *len)
{
	(void)h;
	const char *v;
	size_t vl;
	if (!env || !buf || !len || msb_secret_lookup(env, &v, &vl) < 0)
		return -ENOENT;
	if (vl > cap)
		return -EFBIG;
	memcpy(buf, v, vl);
	*len = vl;
	return 0;
}

static const char *host_spec_json(const struct msb_host *h)
{
	struct msb_instance *in = instance_of(h);
	return in ? in->spec_json : NULL;
}

struct thread_start {
	void *(*fn)(void *);
	void *arg;
	char name[16];
	int thread_class;
	sem_t started; /* posted once the filter is in (or failed to go in) */
	int result;
	char why[200];
};

static void *thread_trampoline(void *p)
{
	struct thread_start *ts = p;
	void *(*fn)(void *) = ts->fn;
	void *arg = ts->arg;
	pthread_setname_np(pthread_self(), ts->name);
	/* Signals belong to the supervisor's main thread; a module thread never handles them. */
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	/* The class's seccomp filter (core/seccomp-filters.c) before the module's code runs. */
	ts->result = msb_seccomp_enter(ts->thread_class, ts->why, sizeof(ts->why));
	int ok = ts->result == 0;
	sem_post(&ts->started); /* ts is the creator's again from here */
	return ok ? fn(arg) : NULL;
}

int msb_thread_start(int thread_class, const char *name, void *(*fn)(void *), void *arg,
		     unsigned long *tid)
{
	if (!fn || thread_class < MSB_THREAD_VMM || thread_class > MSB_THREAD_PROXY)
		return -EINVAL;
	struct thread_start *ts = calloc(1, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	ts->fn = fn;
	ts->arg = arg;
	ts->thread_class = thread_class;
	snprintf(ts->name, sizeof(ts->name), "%s", name ? name : "msb-module");
	sem_init(&ts->started, 0, 0);
	/*
	 * Small stacks: module threads run loops, not deep recursions, and a
	 * stack under 2 MiB is never backed by a transparent huge page (a
	 * default 8 MiB one can cost 2 MiB of RSS at once).
	 */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, MSB_PLUGIN_THREAD_STACK);
	pthread_t t;
	int r = pthread_create(&t, &attr, thread_trampoline, ts);
	pthread_attr_destroy(&attr);
	if (r == 0) {
		while (sem_wait(&ts->started) < 0 && errno == EINTR)
			;
		r = ts->result;
		if (r < 0) {
			/* Fail closed: the thread never ran the module's code. */
			pthread_join(t, NULL);
			msb_log(MSB_LOG_ERROR, "core", "thread %s: %s", ts->name, ts->why);
		}
	} else {
		r = -r;
	}
	sem_destroy(&ts->started);
	free(ts);
	if (r == 0 && tid)
		*tid = (unsigned long)t;
	return r;
}

static int host_thread_create(const struct msb_host *h, int thread_class, const char *name,
			      void *(*fn)(void *), void *arg, unsigned long *tid)
{
	(void)h;
	return msb_thread_start(thread_class, name, fn, arg, tid);
}

int msb_instance_create(const struct msb_module *m, const char *sandbox_name, const char *state_dir,
			const char *spec_json, struct msb_loop *loop, struct msb_instance **out,
			struct msb_error *err)
{
	if (!m->loaded)
		return msb_error_set(err, -EINVAL, "module %s was refused: %s", m->file,
				     m->reason ? m->reason : "?");
	struct msb_instance *in = calloc(1, sizeof(*in));
	if (!in)
		return msb_error_set(err, -ENOMEM, "out of memory");
	in->module = m;
	in->loop = loop;
	in->name = strdup(sandbox_name ? sandbox_name : "");
	in->state_dir = strdup(state_dir ? state_dir : "");
	in->spec_json = strdup(spec_json ? spec_json : "{}");
	if (!in->name || !in->state_dir || !in->spec_json) {
		msb_instance_destroy(in);
		return msb_error_set(err, -ENOMEM, "out of memory");
	}
	in->spec_root = json_loads(in->spec_json, 0, NULL);
	in->host = (struct msb_host){
		.abi = MSB_PLUGIN_ABI,
		.size = sizeof(struct msb_host),
		.log = host_log,
		.error_set = host_error_set,
		.fd_add = host_fd_add,
		.fd_mod = host_fd_mod,
		.fd_del = host_fd_del,
		.config_get = host_config_get,
		.spec_json = host_spec_json,
		.thread_create = host_thread_create,
		.sandbox_name = in->name,
		.state_dir = in->state_dir,
		.core = in,
		.secret_value = host_secret_value,
	};
	struct msb_error e = MSB_ERROR_INIT;
	int r = m->desc.create(&in->host, &in->inst, &e);
	if (r < 0) {
		if (!e.msg[0])
			msb_error_set(&e, r, "create failed: %s", strerror(-r));
		msb_error_set(err, r, "%s module '%s': %s", msb_kind_name(m->desc.kind), m->name,
			      e.msg);
		msb_instance_destroy(in);
		return r;
	}
	in->created = 1;
	*out = in;
	return 0;
}

int msb_instance_phase(struct msb_instance *in, int phase, struct msb_error *err)
{
	if (!in->module->desc.phase)
		return 0;
	struct msb_error e = MSB_ERROR_INIT;
	int r = in->module->desc.phase(in->inst, phase, &e);
	if (r < 0)
		return msb_error_set(err, r, "%s module '%s': phase %d: %s",
				     msb_kind_name(in->module->desc.kind), in->module->name, phase,
				     e.msg[0] ? e.msg : strerror(-r));
	return 0;
}

void msb_instance_destroy(struct msb_instance *in)
{
	if (!in)
		return;
	if (in->created)
		in->module->desc.destroy(in->inst);
	json_decref(in->spec_root);
	free(in->config_buf);
	free(in->spec_json);
	free(in->name);
	free(in->state_dir);
	free(in);
}
