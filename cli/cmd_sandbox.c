/* SPDX-License-Identifier: Apache-2.0 */
/*
 * msb create / msb run: command-line flags become spec options (the table in
 * core/spec.c), the spec is validated as a whole, the modules it names are
 * resolved, and then — with --dry-run — it is printed.  Bad input of any kind
 * exits 2 with one line and leaves nothing behind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/random.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "host.h"
#include "lifecycle.h"
#include "image-root.h"
#include "modules.h"
#include "pull.h"
#include "ref.h"
#include "rootfs.h"
#include "spec.h"
#include "suggest.h"
#include "sandbox.h"
#include "secretval.h"
#include "state.h"
#include "volume.h"

struct sandbox_args {
	struct msb_spec *spec;
	int dry_run;
	int json;
	int is_run;
	struct msb_pull_opts pull; /* how to get the image: not part of the sandbox's spec */
	const char *spec_path;	   /* --spec PATH|-: the whole spec, as JSON */
	const char *first_option;  /* the first spec option given on the command line */
};

void help_sandbox(const struct cli_command *cmd)
{
	printf("Usage: msb %s %s\n\n%s.\n\nOptions:\n", cmd->name, cmd->args, cmd->summary);
	for (const struct msb_spec_option *o = msb_spec_options(); o->name; o++) {
		char left[64];
		if (o->short_name)
			snprintf(left, sizeof(left), "-%c, --%s%s%s", o->short_name, o->name,
				 o->metavar ? " " : "", o->metavar ? o->metavar : "");
		else
			snprintf(left, sizeof(left), "    --%s%s%s", o->name, o->metavar ? " " : "",
				 o->metavar ? o->metavar : "");
		printf("  %-40s %s%s\n", left, o->help,
		       o->arg == MSB_OPT_REPEAT ? " (repeatable)" : "");
	}
	printf("  %-40s %s\n  %-40s %s\n  %-40s %s\n  %-40s %s\n",
	       "    --pull always|if-missing|never",
	       "when to pull the image (default if-missing: use the pinned digest)",
	       "    --ca-certs PATH",
	       "also trust these CAs (PEM file or directory) for the registry", "    --insecure",
	       "allow a plain-HTTP registry", "-q, --quiet", "no pull progress");
	printf("  %-40s %s\n  %-40s %s\n", "    --spec PATH",
	       "the whole spec as JSON (docs/spec.md; - for stdin), instead of options",
	       "    --secret-values-fd FD",
	       "read secret values from FD: NAME=VALUE entries, each ended by a NUL byte");
	printf("  %-40s %s\n  %-40s %s\n", "    --dry-run",
	       "validate and print the spec; create nothing", "    --json",
	       "with --dry-run: print the spec as JSON");
	printf("\nSizes: 512M, 1G (K, M, G, T are powers of 1024). Durations: 30s, 5m, 1h30m.\n"
	       "Net rules: <allow|deny>[:<egress|ingress|any>]@<target>[:<proto>[:<ports>]],\n"
	       "  e.g. allow@public:tcp:443,allow@host:udp:53 (docs/network-rules.md).\n");
}

static const struct msb_spec_option *find_short(char c)
{
	for (const struct msb_spec_option *o = msb_spec_options(); o->name; o++)
		if (o->short_name == c)
			return o;
	return NULL;
}

__attribute__((noreturn)) static void unknown_option(const char *arg)
{
	const char *names[64];
	char dashed[64][40];
	size_t n = 0;
	for (const struct msb_spec_option *o = msb_spec_options(); o->name && n < 60; o++) {
		snprintf(dashed[n], sizeof(dashed[n]), "--%s", o->name);
		names[n] = dashed[n];
		n++;
	}
	names[n++] = "--dry-run";
	names[n++] = "--json";
	names[n++] = "--pull";
	names[n++] = "--ca-certs";
	names[n++] = "--insecure";
	names[n++] = "--quiet";
	names[n++] = "--spec";
	names[n++] = "--secret-values-fd";
	names[n] = NULL;
	char word[64];
	snprintf(word, sizeof(word), "%.*s", (int)strcspn(arg, "="), arg);
	const char *m = msb_suggest(word, names);
	if (m)
		die(EXIT_USAGE, "unknown option '%s'; did you mean '%s'?", word, m);
	die(EXIT_USAGE, "unknown option '%s' (see msb create --help)", word);
}

static void apply(struct msb_spec *spec, const char *name, const char *value)
{
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_spec_set(spec, name, value, &err) < 0)
		die_input(&err);
}

/* The value of option argv[*i] (its name l bytes long): after '=', else the next argument. */
static const char *option_value(int argc, char **argv, int *i, size_t l, const char *expected)
{
	const char *arg = argv[*i];
	if (arg[l] == '=')
		return arg + l + 1;
	if (*i + 1 < argc)
		return argv[++*i];
	die(EXIT_USAGE, "%.*s needs a value (expected %s)", (int)l, arg, expected);
}

/* --pull, --ca-certs, --insecure, -q: how to get the image.  1 if argv[*i] was one. */
static int pull_option(struct sandbox_args *a, int argc, char **argv, int *i)
{
	const char *arg = argv[*i];
	size_t l = strcspn(arg, "=");
	if (!strcmp(arg, "--insecure")) {
		a->pull.insecure = 1;
		return 1;
	}
	if (!strcmp(arg, "-q") || !strcmp(arg, "--quiet")) {
		a->pull.quiet = 1;
		return 1;
	}
	int is_pull = l == 6 && !strncmp(arg, "--pull", 6);
	int is_ca = l == 10 && !strncmp(arg, "--ca-certs", 10);
	if (!is_pull && !is_ca)
		return 0;
	const char *v =
		option_value(argc, argv, i, l,
			     is_pull ? "always, if-missing or never" : "a PEM file or a directory");
	if (is_ca) {
		if (access(v, R_OK) != 0)
			die(EXIT_USAGE, "--ca-certs '%s': %s (expected a PEM file or a directory)",
			    v, strerror(errno));
		a->pull.ca_certs = v;
	} else if (!strcmp(v, "always")) {
		a->pull.policy = MSB_PULL_ALWAYS;
	} else if (!strcmp(v, "if-missing") || !strcmp(v, "missing")) {
		a->pull.policy = MSB_PULL_MISSING;
	} else if (!strcmp(v, "never")) {
		a->pull.policy = MSB_PULL_NEVER;
	} else {
		die(EXIT_USAGE, "--pull '%s': expected always, if-missing or never", v);
	}
	return 1;
}

/*
 * --secret-values-fd FD: the values go into this process's vault (and from
 * there to the supervisor); FD is closed.  --spec PATH: noted, read after
 * the values.  1 if argv[*i] was one of them.
 */
static int input_option(struct sandbox_args *a, int argc, char **argv, int *i)
{
	const char *arg = argv[*i];
	size_t l = strcspn(arg, "=");
	int is_spec = l == 6 && !strncmp(arg, "--spec", 6);
	int is_vfd = l == 18 && !strncmp(arg, "--secret-values-fd", 18);
	if (!is_spec && !is_vfd)
		return 0;
	const char *v = option_value(argc, argv, i, l,
				     is_spec ? "a JSON spec file, or - for stdin"
					     : "an open file descriptor");
	if (is_spec) {
		if (a->spec_path)
			die(EXIT_USAGE, "--spec given twice (expected one spec)");
		a->spec_path = v;
		return 1;
	}
	char *end;
	long fd = strtol(v, &end, 10);
	if (!*v || *end || fd < 0 || fd > 65535 || fcntl((int)fd, F_GETFD) < 0)
		die(EXIT_USAGE, "--secret-values-fd '%s': not an open file descriptor", v);
	struct msb_error err = MSB_ERROR_INIT;
	int r = msb_secret_vault_read_fd((int)fd, &err);
	close((int)fd);
	if (r < 0)
		die(EXIT_USAGE, "--secret-values-fd %ld: %s", fd, err.msg);
	return 1;
}

/* --spec PATH: the spec from JSON (validated there), and no other spec option. */
static void load_spec(struct sandbox_args *a, const char *cmdname)
{
	if (a->first_option)
		die(EXIT_USAGE,
		    "%s: --spec cannot be combined with %s (the spec file is the whole spec)",
		    cmdname, a->first_option);
	int fd = strcmp(a->spec_path, "-") ? open(a->spec_path, O_RDONLY | O_CLOEXEC) : 0;
	if (fd < 0)
		die(EXIT_USAGE, "--spec '%s': %s (expected a JSON spec file)", a->spec_path,
		    strerror(errno));
	char *buf = malloc(MSB_SPEC_JSON_MAX + 1);
	if (!buf)
		die(1, "out of memory");
	size_t n = 0;
	ssize_t got;
	while (n <= MSB_SPEC_JSON_MAX &&
	       (got = read(fd, buf + n, MSB_SPEC_JSON_MAX + 1 - n)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			die(EXIT_USAGE, "--spec '%s': %s", a->spec_path, strerror(errno));
		n += (size_t)got;
	}
	if (fd > 0)
		close(fd);
	if (n > MSB_SPEC_JSON_MAX)
		die(EXIT_USAGE, "--spec '%s': larger than %d bytes", a->spec_path,
		    MSB_SPEC_JSON_MAX);
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_spec *spec = NULL;
	if (msb_spec_from_json(buf, n, &spec, &err) < 0) {
		msb_error_prefix(&err, "--spec '%s': ", a->spec_path);
		die_input(&err);
	}
	free(buf);
	msb_spec_free(a->spec);
	a->spec = spec;
}

static void parse_args(struct sandbox_args *a, const char *cmdname, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		if (input_option(a, argc, argv, &i))
			continue;
		if (!a->first_option &&
		    (arg[0] == '-' ? strcmp(arg, "--dry-run") && strcmp(arg, "--json") &&
					     strcmp(arg, "--insecure") && strcmp(arg, "-q") &&
					     strcmp(arg, "--quiet") && strncmp(arg, "--pull", 6) &&
					     strncmp(arg, "--ca-certs", 10)
				   : 1))
			a->first_option = arg;
		if (!strcmp(arg, "--")) {
			if (!a->is_run)
				die(EXIT_USAGE,
				    "%s: unexpected '--' (a command is given to msb run or "
				    "msb exec, not msb create)",
				    cmdname);
			if (i + 1 >= argc)
				die(EXIT_USAGE,
				    "%s: no command after '--' (expected -- COMMAND [ARG...])",
				    cmdname);
			struct msb_error err = MSB_ERROR_INIT;
			if (msb_spec_set_command(a->spec, argv + i + 1, (size_t)(argc - i - 1),
						 &err) < 0)
				die_input(&err);
			return;
		}
		if (!strcmp(arg, "--dry-run")) {
			a->dry_run = 1;
			continue;
		}
		if (!strcmp(arg, "--json")) {
			a->json = 1;
			continue;
		}
		if (pull_option(a, argc, argv, &i))
			continue;
		const struct msb_spec_option *o = NULL;
		const char *value = NULL;
		if (arg[0] == '-' && arg[1] == '-') {
			const char *eq = strchr(arg, '=');
			char name[64];
			size_t len = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
			if (len == 0 || len >= sizeof(name))
				unknown_option(arg);
			memcpy(name, arg + 2, len);
			name[len] = '\0';
			o = msb_spec_option_find(name);
			if (!o)
				unknown_option(arg);
			if (eq) {
				if (o->arg == MSB_OPT_FLAG)
					die(EXIT_USAGE, "--%s takes no value (got '%s')", o->name,
					    eq + 1);
				value = eq + 1;
			}
		} else if (arg[0] == '-' && arg[1]) {
			o = find_short(arg[1]);
			if (!o) {
				char s[3] = {'-', arg[1], 0};
				unknown_option(s);
			}
			if (arg[2])
				value = arg + 2;
		} else {
			if (a->spec->image || a->spec->rootfs)
				die(EXIT_USAGE,
				    "%s: unexpected argument '%s' (expected one IMAGE%s)", cmdname,
				    arg, a->is_run ? "; put the command after --" : "");
			apply(a->spec, "image", arg);
			continue;
		}
		if (o->arg != MSB_OPT_FLAG && !value) {
			if (i + 1 >= argc)
				die(EXIT_USAGE, "--%s needs a value (expected %s)", o->name,
				    o->metavar);
			value = argv[++i];
		}
		apply(a->spec, o->name, value);
	}
}

static void print_human(const struct msb_spec *s, const struct msb_module *mods[MSB_SLOT_COUNT])
{
	printf("%-10s %s\n", "sandbox", s->name ? s->name : "(unnamed: ephemeral)");
	if (s->image)
		printf("%-10s %s\n", "image", s->image);
	else
		printf("%-10s %s\n", "rootfs", s->rootfs);
	if (s->ncommand) {
		printf("%-10s", "command");
		for (size_t i = 0; i < s->ncommand; i++)
			printf(" %s", s->command[i]);
		printf("\n");
	}
	printf("%-10s %u vCPU%s, %llu MiB\n", "resources", s->cpus, s->cpus == 1 ? "" : "s",
	       (unsigned long long)(s->memory >> 20));
	if (s->no_net) {
		printf("%-10s none (--no-net: no network device)\n", "network");
	} else {
		printf("%-10s default egress %s\n", "network",
		       s->egress == MSB_EGRESS_ALLOW ? "allow" : "deny");
		for (size_t i = 0; i < s->nrules; i++) {
			char text[512];
			if (msb_net_rule_format(&s->rules[i], text, sizeof(text)) < 0)
				snprintf(text, sizeof(text), "?");
			printf("%-10s %zu. %s\n", "  rule", i + 1, text);
		}
		for (size_t i = 0; i < s->npublish; i++) {
			const struct msb_publish *p = &s->publish[i];
			int v6 = strchr(p->address, ':') != NULL;
			printf("%-10s %s%s%s:%u -> guest %u/%s\n", "  publish", v6 ? "[" : "",
			       p->address, v6 ? "]" : "", p->host_port, p->guest_port,
			       p->udp ? "udp" : "tcp");
		}
	}
	printf("%-10s %s\n", "user", s->user ? s->user : "(image default)");
	printf("%-10s %s\n", "security",
	       s->security == MSB_SECURITY_RESTRICTED ? "restricted" : "default");
	if (s->workdir)
		printf("%-10s %s\n", "workdir", s->workdir);
	for (size_t i = 0; i < s->nvolumes; i++)
		printf("%-10s %s%s -> %s (%s%s%s%s)\n", "volume",
		       s->volumes[i].named ? "volume " : "", s->volumes[i].source,
		       s->volumes[i].target, s->volumes[i].read_only ? "ro" : "rw",
		       s->volumes[i].noexec ? ",noexec" : "",
		       s->volumes[i].identity == MSB_SHARE_IDENTITY_OFF ? ",identity=off" : "",
		       s->volumes[i].locks == MSB_SHARE_LOCKS_HOST ? ",locks=host" : "");
	for (size_t i = 0; i < s->nsecrets; i++) {
		printf("%-10s %s, only at ", "secret", s->secrets[i].env);
		for (size_t j = 0; j < s->secrets[i].nhosts; j++)
			printf("%s%s", j ? ", " : "", s->secrets[i].hosts[j]);
		int src = s->secrets[i].source;
		printf(" (value %s%s)\n",
		       src == MSB_SECRET_FROM_FILE     ? "from file "
		       : src == MSB_SECRET_FROM_VALUE  ? "given directly"
		       : src == MSB_SECRET_FROM_CONFIG ? "from the config file's [secrets]"
						       : "from the host environment",
		       src == MSB_SECRET_FROM_FILE ? s->secrets[i].file : "");
	}
	for (size_t i = 0; i < s->nenv; i++) {
		/* Show names only: values may be sensitive even if not secrets. */
		printf("%-10s %.*s=...\n", "env", (int)strcspn(s->env[i], "="), s->env[i]);
	}
	if (s->idle_timeout_ms || s->max_duration_ms)
		printf("%-10s idle timeout %llu s, max duration %llu s\n", "lifetime",
		       (unsigned long long)(s->idle_timeout_ms / 1000),
		       (unsigned long long)(s->max_duration_ms / 1000));
	else
		printf("%-10s no limits\n", "lifetime");
	static const char *const slot_label[MSB_SLOT_COUNT] = {"hypervisor", "network", "storage",
							       "secrets"};
	for (int slot = 0; slot < MSB_SLOT_COUNT; slot++)
		printf("%-10s %s %s %s (%s)\n", "module", slot_label[slot], mods[slot]->name,
		       mods[slot]->version, mods[slot]->file);
	printf("%-10s %s\n", "kernel", s->kernel ? s->kernel : "(msb's guest kernel)");
	printf("\ndry run: nothing was created\n");
}

/* msb's own failures in run and exec, apart from the command's statuses. */
#define EXIT_RUN_FAILED 125

static void random_name(char *buf, size_t len)
{
	unsigned char r[4] = {0};
	if (getrandom(r, sizeof(r), 0) != sizeof(r))
		memset(r, 0, sizeof(r));
	snprintf(buf, len, "run-%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
}

/*
 * The values given directly (--secret-values-fd, or the SDK's), in a memfd
 * for the supervisor; -1 when there are none.  Dies on failure.
 */
static int values_memfd(const struct msb_spec *spec, int keep_open, const char *cmdname)
{
	struct msb_error err = MSB_ERROR_INIT;
	int fd = msb_spec_values_memfd(spec, keep_open, &err);
	if (fd == -ENOENT)
		return -1;
	if (fd < 0)
		die(1, "%s: %s (nothing was created)", cmdname, err.msg);
	return fd;
}

/* The sandbox's disks, from its --rootfs tree or its image. */
static int prepare(struct msb_state *st, const char *name, struct msb_spec *spec,
		   const struct msb_pull_opts *pull, struct msb_error *err)
{
	if (spec->rootfs)
		return msb_rootfs_prepare(st, name, spec, err);
	return msb_image_prepare(st, name, spec, pull, err);
}

/*
 * msb run: make the sandbox's state and disks here, then become its monitor:
 * exec msb-supervisor, which boots the VM, runs the command attached to our
 * stdio and signals, stops it, and (without --name) removes its state.  The
 * VM runs in a process that never loaded the image code.
 */
static int run_sandbox(struct msb_spec *spec, const struct msb_pull_opts *pull)
{
	struct msb_error err = MSB_ERROR_INIT;
	if (!spec->ncommand && spec->rootfs)
		die(EXIT_USAGE, "run: no command given (expected -- COMMAND [ARG...])");
	struct msb_assets assets;
	if (msb_assets_find(spec, MSB_BUILD_ROOT, &assets, &err) < 0)
		die(EXIT_RUN_FAILED, "run: %s", err.msg);
	msb_assets_free(&assets);
	char sup[PATH_MAX];
	if (cli_supervisor_path(sup, sizeof(sup), &err) < 0)
		die(EXIT_RUN_FAILED, "run: %s", err.msg);
	int vfd = values_memfd(spec, 1, "run"); /* inherited through the exec below */
	struct msb_state st;
	if (msb_state_open(NULL, &st, &err) < 0)
		die(EXIT_RUN_FAILED, "run: %s", err.msg);
	char name[64];
	int ephemeral = !spec->name;
	if (ephemeral)
		random_name(name, sizeof(name));
	else
		snprintf(name, sizeof(name), "%s", spec->name);
	msb_volumes_shared_check(&st, name, spec, cli_warn_line, NULL);
	char *json = msb_spec_to_json(spec, 1);
	if (!json || msb_state_sandbox_create(&st, name, "spec.json", json, strlen(json), &err) < 0)
		die(EXIT_RUN_FAILED, "run: %s", json ? err.msg : "out of memory");
	msb_free(json);
	/* This process hosts the VM (after the exec, too): a crash of it can be reaped. */
	char owner[32];
	int ol = snprintf(owner, sizeof(owner), "%ld\n", (long)getpid());
	if (msb_state_write(&st, name, "owner.pid", owner, (size_t)ol, &err) < 0 ||
	    (ephemeral && msb_state_write(&st, name, "ephemeral", "", 0, &err) < 0) ||
	    prepare(&st, name, spec, pull, &err) < 0) {
		fprintf(stderr, "msb: run: %s\n", err.msg);
		goto fail;
	}
	fflush(NULL);
	char vstr[16];
	snprintf(vstr, sizeof(vstr), "%d", vfd);
	char *argv[] = {"msb-supervisor", "run", name, vfd >= 0 ? vstr : NULL, NULL};
	execv(sup, argv);
	fprintf(stderr, "msb: run: cannot start %s: %s\n", sup, strerror(errno));
fail:
	if (!ephemeral)
		msb_state_write(&st, name, "owner.pid", "", 0, &err);
	else if (msb_state_sandbox_remove(&st, name, &err) < 0)
		fprintf(stderr, "msb: run: cleaning up: %s\n", err.msg);
	msb_state_close(&st);
	return EXIT_RUN_FAILED;
}

/*
 * msb create: write the sandbox's state, start its supervisor, return once
 * the guest agent answered.  If the boot fails the state goes again: nothing
 * half-made is left.
 */
static int create_sandbox(struct msb_spec *spec, const struct msb_pull_opts *pull,
			  const struct msb_module *mods[MSB_SLOT_COUNT])
{
	struct msb_error err = MSB_ERROR_INIT;
	/* Ask the hypervisor module first: a machine without KVM is told so before
	 * anything is written. */
	char *json = msb_spec_to_json(spec, 1);
	struct msb_instance *hv = NULL;
	if (!json || msb_instance_create(mods[MSB_SLOT_HV], "probe", "", json, NULL, &hv, &err) < 0)
		die(1, "create: %s (nothing was created)", json ? err.msg : "out of memory");
	msb_instance_destroy(hv);
	struct msb_assets assets;
	if (msb_assets_find(spec, MSB_BUILD_ROOT, &assets, &err) < 0)
		die(1, "create: %s (nothing was created)", err.msg);
	msb_assets_free(&assets);
	struct msb_state st;
	if (msb_state_open(NULL, &st, &err) < 0)
		die(1, "create: %s", err.msg);
	char name[64];
	if (spec->name)
		snprintf(name, sizeof(name), "%s", spec->name);
	else
		random_name(name, sizeof(name));
	msb_volumes_shared_check(&st, name, spec, cli_warn_line, NULL);
	if (msb_state_sandbox_create(&st, name, "spec.json", json, strlen(json), &err) < 0)
		die(1, "create: %s", err.msg);
	msb_free(json);
	int vfd = values_memfd(spec, 0, "create");
	int r = prepare(&st, name, spec, pull, &err);
	if (r == 0)
		r = cli_spawn_supervisor(&st, name, vfd, &err);
	if (vfd >= 0)
		close(vfd);
	msb_secret_vault_wipe();
	if (r < 0) {
		struct msb_error e2 = MSB_ERROR_INIT;
		msb_state_sandbox_remove(&st, name, &e2);
		die(1, "create: %s (nothing was created)", err.msg);
	}
	printf("%s\n", name);
	msb_state_close(&st);
	return 0;
}

static int sandbox_main(int is_run, const char *cmdname, int argc, char **argv)
{
	struct sandbox_args a = {.spec = msb_spec_new(), .is_run = is_run};
	if (!a.spec)
		die(1, "out of memory");
	parse_args(&a, cmdname, argc, argv);
	if (a.spec_path)
		load_spec(&a, cmdname);
	if (a.json && !a.dry_run)
		die(EXIT_USAGE, "%s: --json is only for --dry-run", cmdname);
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_spec_validate(a.spec, &err) < 0)
		die_input(&err);
	if (a.spec->image && !a.spec->rootfs) {
		struct msb_image_ref ref;
		if (msb_image_ref_parse(a.spec->image, &ref, &err) < 0)
			die_input(&err);
		msb_image_ref_free(&ref);
	}
	/* Named volumes must exist (looked up, never created: a bad command leaves nothing). */
	if (msb_volumes_resolve(NULL, a.spec, &err) < 0)
		die_input(&err);
	struct msb_registry reg = {0};
	cli_open_registry(&reg);
	const struct msb_module *mods[MSB_SLOT_COUNT] = {0};
	int r = cli_check_modules(&reg, a.spec, a.dry_run, mods, &err);
	cli_warn_refused(&reg);
	if (r < 0)
		die(r == -EINVAL ? EXIT_USAGE : 1, "%s", err.msg);
	if (a.dry_run) {
		if (a.json) {
			char *json = msb_spec_to_json(a.spec, 1);
			if (!json)
				die(1, "out of memory");
			puts(json);
			msb_free(json);
		} else {
			print_human(a.spec, mods);
		}
		msb_registry_free(&reg);
		msb_spec_free(a.spec);
		return 0;
	}
	int status;
	if (a.is_run)
		status = run_sandbox(a.spec, &a.pull);
	else
		status = create_sandbox(a.spec, &a.pull, mods);
	msb_registry_free(&reg);
	msb_spec_free(a.spec);
	return status;
}

int cmd_create(const struct cli_command *cmd, int argc, char **argv)
{
	return sandbox_main(0, cmd->name, argc, argv);
}

int cmd_run(const struct cli_command *cmd, int argc, char **argv)
{
	return sandbox_main(1, cmd->name, argc, argv);
}
