/* SPDX-License-Identifier: Apache-2.0 */
/* msb image pull / msb pull, and msb registry login|logout. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "error.h"
#include "image.h"
#include "image-root.h"
#include "pull.h"
#include "ref.h"
#include "store.h"

#define SECRET_MAX 4096

void cli_image_pull_help(void)
{
	printf("Usage: msb image pull REFERENCE [OPTIONS]    (or: msb pull ...)\n\n"
	       "Pull an image from its registry into the image store, pin its tag to the\n"
	       "digest it resolved to, and build its root image (its layers unpacked into\n"
	       "one read-only erofs image, shared by its sandboxes).  Prints\n"
	       "'pulled REFERENCE@DIGEST'.\n\n"
	       "Options:\n"
	       "  --platform OS/ARCH[/VARIANT]  the image for this platform (default linux/amd64)\n"
	       "  --ca-certs PATH               a PEM file or directory of CA certificates to "
	       "trust\n"
	       "                                besides the system's\n"
	       "  --insecure                    allow plain HTTP to the registry\n"
	       "  --pull always|if-missing|never  always: resolve the tag again (default);\n"
	       "                                if-missing: only if not in the store; never: no "
	       "network\n"
	       "  --no-unpack                   do not build the root image now (the first\n"
	       "                                sandbox of the image does)\n"
	       "  --parallel N                  layers downloaded at once (default 4)\n"
	       "  -q, --quiet                   no progress; print only the digest\n\n"
	       "Credentials come from msb registry login, then ~/.docker/config.json\n"
	       "($DOCKER_CONFIG/config.json).\n");
}

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value (and *i moved past it), else NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, const char *cmd)
{
	size_t n = strlen(name);
	if (strncmp(argv[*i], name, n) != 0)
		return NULL;
	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (argv[*i][n] != '\0')
		return NULL;
	if (*i + 1 >= argc)
		die(EXIT_USAGE, "%s: %s needs a value", cmd, name);
	return argv[++*i];
}

/* "os/arch[/variant]": each part [a-z0-9._-]+. */
static void parse_platform(const char *s, char *buf, size_t len, struct msb_pull_opts *o)
{
	if (strlen(s) >= len)
		die(EXIT_USAGE, "pull: --platform '%.60s' is too long", s);
	snprintf(buf, len, "%s", s);
	char *parts[4] = {0};
	int n = 0;
	for (char *tok = buf, *save = NULL; n < 4 && (tok = strtok_r(tok, "/", &save)); tok = NULL)
		parts[n++] = tok;
	bool ok = (n == 2 || n == 3) && s[0] != '/' && s[strlen(s) - 1] != '/' && !strstr(s, "//");
	for (int i = 0; ok && i < n; i++)
		for (const char *c = parts[i]; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.' ||
			      *c == '_' || *c == '-'))
				ok = false;
	if (!ok)
		die(EXIT_USAGE,
		    "pull: invalid --platform '%.60s' (expected os/arch[/variant], "
		    "e.g. linux/arm64/v8)",
		    s);
	o->os = parts[0];
	o->arch = parts[1];
	o->variant = n == 3 ? parts[2] : NULL;
}

static void check_ca_certs(const char *cmd, const char *path)
{
	if (access(path, R_OK) < 0)
		die(EXIT_USAGE, "%s: --ca-certs '%s': %s", cmd, path, strerror(errno));
}

int cli_image_pull(int argc, char **argv)
{
	struct msb_pull_opts o = {.policy = MSB_PULL_ALWAYS};
	const char *refstr = NULL, *v;
	int unpack = 1;
	char platform[256];
	for (int i = 0; i < argc; i++) {
		if ((v = opt_value(argc, argv, &i, "--platform", "pull"))) {
			parse_platform(v, platform, sizeof(platform), &o);
		} else if ((v = opt_value(argc, argv, &i, "--ca-certs", "pull"))) {
			check_ca_certs("pull", v);
			o.ca_certs = v;
		} else if ((v = opt_value(argc, argv, &i, "--pull", "pull"))) {
			if (!strcmp(v, "always"))
				o.policy = MSB_PULL_ALWAYS;
			else if (!strcmp(v, "missing") || !strcmp(v, "if-missing"))
				o.policy = MSB_PULL_MISSING;
			else if (!strcmp(v, "never"))
				o.policy = MSB_PULL_NEVER;
			else
				die(EXIT_USAGE,
				    "pull: invalid --pull '%.40s' (expected always, if-missing or "
				    "never)",
				    v);
		} else if ((v = opt_value(argc, argv, &i, "--parallel", "pull"))) {
			char *end;
			long n = strtol(v, &end, 10);
			if (*v == '\0' || *end || n < 1 || n > 16)
				die(EXIT_USAGE,
				    "pull: invalid --parallel '%.40s' (expected 1 to 16)", v);
			o.parallel = (int)n;
		} else if (!strcmp(argv[i], "--insecure")) {
			o.insecure = 1;
		} else if (!strcmp(argv[i], "--no-unpack")) {
			unpack = 0;
		} else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
			o.quiet = 1;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			die(EXIT_USAGE, "pull: unknown option '%.60s' (see msb image pull --help)",
			    argv[i]);
		} else if (refstr) {
			die(EXIT_USAGE,
			    "pull: expected one image reference, got '%.60s' and '%.60s'", refstr,
			    argv[i]);
		} else {
			refstr = argv[i];
		}
	}
	if (!refstr)
		die(EXIT_USAGE, "pull: no image named (expected msb image pull REFERENCE)");
	struct msb_error err = MSB_ERROR_INIT;
	struct msb_image_ref ref;
	if (msb_image_ref_parse(refstr, &ref, &err) < 0)
		die_input(&err);
	struct msb_store s;
	if (msb_store_open(NULL, &s, &err) < 0)
		die(1, "pull: %s", err.msg);
	char digest[72];
	if (msb_image_pull(&s, &ref, &o, digest, &err) < 0)
		die(1, "pull: %s", err.msg);
	/* Only an image this machine can run gets a root image. */
	if (unpack && (!o.arch || !strcmp(o.arch, "amd64")) && (!o.os || !strcmp(o.os, "linux"))) {
		struct msb_image img;
		char *root = NULL;
		if (msb_image_open(&s, digest, &img, &err) < 0 ||
		    msb_image_root(&s, &img, &root, &err) < 0)
			die(1, "pull: %s", err.msg);
		free(root);
		msb_image_close(&img);
	}
	if (o.quiet)
		printf("%s\n", digest);
	else if (ref.digest)
		printf("pulled %s/%s@%s\n", ref.registry, ref.repository, digest);
	else
		printf("pulled %s/%s:%s@%s\n", ref.registry, ref.repository, ref.tag, digest);
	msb_store_close(&s);
	msb_image_ref_free(&ref);
	return 0;
}

/* ---- msb registry ---------------------------------------------------------------------------- */

void help_registry(const struct cli_command *cmd)
{
	(void)cmd;
	printf("Usage: msb registry login [--username USER] [--password-stdin | --password PASS]\n"
	       "                          [--ca-certs PATH] [--insecure] REGISTRY\n"
	       "       msb registry logout REGISTRY\n\n"
	       "login checks the credentials against the registry, then stores them in\n"
	       "MSB_HOME/auth.json (mode 0600); logout forgets them.  Without --username or a\n"
	       "password option, they are asked for on the terminal.  REGISTRY is host[:port]\n"
	       "(docker.io for Docker Hub).\n");
}

/* One line from fd (the newline and a CR before it dropped), at most SECRET_MAX bytes. */
static char *read_line(int fd, const char *what)
{
	char *buf = malloc(SECRET_MAX + 2);
	if (!buf)
		die(1, "registry: out of memory");
	size_t n = 0;
	while (n < SECRET_MAX + 1) {
		ssize_t k = read(fd, buf + n, 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0 || buf[n] == '\n')
			break;
		n++;
	}
	if (n > SECRET_MAX)
		die(EXIT_USAGE, "login: %s longer than %d bytes", what, SECRET_MAX);
	if (n && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	return buf;
}

static char *prompt(const char *label, bool secret)
{
	fprintf(stderr, "%s: ", label);
	fflush(stderr);
	struct termios old, quiet;
	bool restore = false;
	if (secret && tcgetattr(STDIN_FILENO, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
	}
	char *line = read_line(STDIN_FILENO, label);
	if (restore) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	return line;
}

static int registry_login(int argc, char **argv)
{
	struct msb_pull_opts o = {0};
	const char *user = NULL, *pass = NULL, *registry = NULL, *v;
	bool from_stdin = false;
	for (int i = 0; i < argc; i++) {
		if ((v = opt_value(argc, argv, &i, "--username", "login")) ||
		    (v = opt_value(argc, argv, &i, "-u", "login"))) {
			user = v;
		} else if ((v = opt_value(argc, argv, &i, "--password", "login")) ||
			   (v = opt_value(argc, argv, &i, "-p", "login"))) {
			pass = v;
		} else if ((v = opt_value(argc, argv, &i, "--ca-certs", "login"))) {
			check_ca_certs("login", v);
			o.ca_certs = v;
		} else if (!strcmp(argv[i], "--password-stdin")) {
			from_stdin = true;
		} else if (!strcmp(argv[i], "--insecure")) {
			o.insecure = 1;

		} else if (argv[i][0] == '-' && argv[i][1]) {
			die(EXIT_USAGE, "login: unknown option '%.60s' (see msb registry --help)",
			    argv[i]);
		} else if (registry) {
			die(EXIT_USAGE, "login: expected one registry, got '%.60s' and '%.60s'",
			    registry, argv[i]);
		} else {
			registry = argv[i];
		}
	}
	if (!registry)
		die(EXIT_USAGE, "login: no registry named (expected msb registry login REGISTRY)");
	if (from_stdin && pass)
		die(EXIT_USAGE, "login: --password and --password-stdin exclude each other");
	struct msb_error err = MSB_ERROR_INIT;
	char host[300];
	if (msb_registry_normalize(registry, host, sizeof(host), &err) < 0)
		die_input(&err);
	bool tty = isatty(STDIN_FILENO);
	char *owned_user = NULL, *owned_pass = NULL;
	if (!user) {
		if (from_stdin || !tty)
			die(EXIT_USAGE, "login: no user name (expected --username USER)");
		user = owned_user = prompt("Username", false);
	}
	if (!*user || strchr(user, ':'))
		die(EXIT_USAGE, "login: invalid user name (expected a non-empty name without ':')");
	for (const char *c = user; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			die(EXIT_USAGE, "login: invalid user name (control character)");
	if (from_stdin)
		pass = owned_pass = read_line(STDIN_FILENO, "password");
	else if (!pass && tty)
		pass = owned_pass = prompt("Password", true);
	else if (!pass)
		die(EXIT_USAGE,
		    "login: no password (expected --password-stdin or --password PASS)");
	if (!*pass)
		die(EXIT_USAGE, "login: empty password");
	int r = msb_registry_login(NULL, host, user, pass, &o, &err);
	if (owned_pass) {
		explicit_bzero(owned_pass, strlen(owned_pass));
		free(owned_pass);
	}
	free(owned_user);
	if (r < 0)
		die(1, "login: %s", err.msg);
	printf("logged in to %s\n", host);
	return 0;
}

static int registry_logout(int argc, char **argv)
{
	if (argc != 1 || argv[0][0] == '-')
		die(EXIT_USAGE, "logout: expected one registry (msb registry logout REGISTRY)");
	struct msb_error err = MSB_ERROR_INIT;
	char host[300];
	if (msb_registry_normalize(argv[0], host, sizeof(host), &err) < 0)
		die_input(&err);
	int r = msb_registry_logout(NULL, host, &err);
	if (r == -ENOENT) {
		printf("not logged in to %s\n", host);
		return 0;
	}
	if (r < 0)
		die(1, "logout: %s", err.msg);
	printf("logged out of %s\n", host);
	return 0;
}

int cmd_registry(const struct cli_command *cmd, int argc, char **argv)
{
	if (argc < 1)
		die(EXIT_USAGE, "%s: no command given (expected login or logout)", cmd->name);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			help_registry(cmd);
			return 0;
		}
	if (!strcmp(argv[0], "login"))
		return registry_login(argc - 1, argv + 1);
	if (!strcmp(argv[0], "logout"))
		return registry_logout(argc - 1, argv + 1);
	die(EXIT_USAGE, "%s: unknown command '%.60s' (expected login or logout)", cmd->name,
	    argv[0]);
}
