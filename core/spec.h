/* SPDX-License-Identifier: Apache-2.0 */
/* The sandbox spec model (internal view of struct msb_spec). */
#ifndef MSB_CORE_SPEC_H
#define MSB_CORE_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include <msb/msb.h>

enum msb_module_slot {
	MSB_SLOT_HV = 0,
	MSB_SLOT_NET,
	MSB_SLOT_STORAGE,
	MSB_SLOT_SECRETS,
	MSB_SLOT_COUNT,
};

/* Defaults (docs/spec.md). */
#define MSB_DEFAULT_CPUS   1
#define MSB_DEFAULT_MEMORY (512ull << 20)
#define MSB_MIN_MEMORY	   (64ull << 20)
#define MSB_MAX_MEMORY	   (1ull << 40)
#define MSB_MAX_CPUS	   64
#define MSB_NAME_MAX	   63

enum msb_egress { MSB_EGRESS_UNSET = 0, MSB_EGRESS_ALLOW, MSB_EGRESS_DENY };
enum msb_security { MSB_SECURITY_DEFAULT = 0, MSB_SECURITY_RESTRICTED };

/* Volumes a sandbox may have (each is one virtio-fs device). */
#define MSB_VOLUMES_MAX 8

struct msb_volume {
	char *source; /* absolute host path, or a volume name when named */
	char *target; /* absolute guest path */
	int named;
	int read_only;
	int noexec;
	int identity; /* enum msb_share_identity: strict (default) or off */
	int locks;    /* enum msb_share_locks: guest (default) or host */
	/*
	 * The directory served, once resolved (msb_volumes_resolve, core/volume.h):
	 * source for a bind, the named volume's data directory.  Not in the JSON.
	 */
	char *host_path;
};

struct msb_publish {
	char address[64]; /* host address to bind, "127.0.0.1" by default */
	uint16_t host_port;
	uint16_t guest_port;
	int udp;
};

struct msb_secret {
	char *env;
	char **hosts;
	size_t nhosts;
	char *file; /* value read from this file instead of the environment */
	/* A value given directly (msb_spec_set_secret_value): MSB_SECRET_VALUE_MAX
	 * bytes of msb_secret_mem_alloc memory, never in the JSON. */
	char *value;
	size_t value_len;
	int source; /* enum msb_secret_source, set by validation */
};

/* --on-secret-violation: a placeholder that cannot be substituted safely. */
enum msb_secret_violation {
	MSB_VIOLATION_BLOCK = 0,
	MSB_VIOLATION_BLOCK_AND_LOG = 1,
	MSB_VIOLATION_PASSTHROUGH = 2,
};

struct msb_spec {
	char *image;
	char *rootfs;
	char *name;
	char **command;
	size_t ncommand;
	uint32_t cpus;
	uint64_t memory;
	int no_net;
	int egress;
	int rules_given;
	struct msb_net_rule *rules;
	size_t nrules;
	struct msb_publish *publish;
	size_t npublish;
	char **dns; /* --dns-nameserver: the interceptor's upstreams (addresses) */
	size_t ndns;
	char *user;
	int security;
	struct msb_volume *volumes;
	size_t nvolumes;
	struct msb_secret *secrets;
	size_t nsecrets;
	char **secret_files; /* "ENV=PATH" until validation pairs them */
	size_t nsecret_files;
	int trust_host_cas; /* --trust-host-cas: the host's roots go into the guest */
	int on_violation;   /* --on-secret-violation: enum msb_secret_violation */
	int on_violation_set;
	char **env;
	size_t nenv;
	char *workdir;
	int idle_set, max_set;
	uint64_t idle_timeout_ms;
	uint64_t max_duration_ms;
	char *modules[MSB_SLOT_COUNT];
	char *kernel;
	int validated;
};

/* One spec option: the CLI flag table and msb_spec_set share it. */
enum msb_option_arg { MSB_OPT_FLAG, MSB_OPT_VALUE, MSB_OPT_REPEAT };

struct msb_spec_option {
	const char *name;    /* long name, no dashes */
	char short_name;     /* 0 when none */
	int arg;	     /* enum msb_option_arg */
	const char *metavar; /* "SIZE" */
	const char *help;    /* one line */
};

/* The options, ending with a zeroed entry. */
const struct msb_spec_option *msb_spec_options(void);
const struct msb_spec_option *msb_spec_option_find(const char *name);

/* Module names by slot, and the default for each. */
const char *msb_spec_module(const struct msb_spec *spec, int slot);
extern const char *const msb_default_modules[MSB_SLOT_COUNT];
extern const char *const msb_slot_option[MSB_SLOT_COUNT];

/* Append the command to run (msb run ... -- CMD). */
int msb_spec_set_command(struct msb_spec *spec, char *const *argv, size_t argc,
			 struct msb_error *err);

/* True when name is a valid sandbox name. */
int msb_name_valid(const char *name);

/*
 * The values given directly for a validated spec's secrets (source
 * "value": the spec's own, else this process's vault), in a memfd
 * (msb_secret_values_memfd); -ENOENT when there are none.
 */
int msb_spec_values_memfd(const struct msb_spec *spec, int keep_open, struct msb_error *err);

#endif
