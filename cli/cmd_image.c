/* SPDX-License-Identifier: Apache-2.0 */
/* msb image pull|ls|inspect|rm|prune|load|save, and msb pull (short for msb image pull). */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "image-archive.h"
#include "image-root.h"
#include "image.h"
#include "ref.h"
#include "store.h"
#include "suggest.h"

/* Unused blobs and roots younger than this are kept by prune: a writer may be about to use them. */
#define PRUNE_MIN_AGE 60

static int image_ls(int argc, char **argv);
static int image_inspect(int argc, char **argv);
static int image_rm(int argc, char **argv);
static int image_prune(int argc, char **argv);
static int image_load(int argc, char **argv);
static int image_save(int argc, char **argv);

static const struct cli_sub subs[] = {
	{"pull", "REFERENCE [OPTIONS]", "pull an image from its registry", NULL, cli_image_pull,
	 cli_image_pull_help},
	{"ls", "[--json]", "list the images in the store",
	 "Columns: the pinned reference, the manifest digest (short), the size of its blobs,\n"
	 "whether its root image is built, and the sandboxes made from it.\n",
	 image_ls},
	{"inspect", "REFERENCE|DIGEST [--json]", "show an image's layers and config",
	 "A DIGEST may be shortened to its first digits, as msb image ls shows it.\n",
	 image_inspect},
	{"rm", "[-f] REFERENCE|DIGEST...", "remove image names",
	 "Removes the name (a digest: every name of that image).  An image a sandbox uses\n"
	 "is refused unless -f is given; the sandbox keeps working either way: its blobs\n"
	 "and root image stay until nothing uses them and msb image prune runs.\n",
	 image_rm},
	{"prune", "[--json]", "remove blobs and root images nothing uses",
	 "Removes blobs, diff_id records and root images that no name and no sandbox\n"
	 "uses.  Entries younger than a minute or being written are kept.\n",
	 image_prune},
	{"load", "[--tag REFERENCE] PATH", "import an OCI layout, OCI archive or docker-archive",
	 "PATH is an OCI image layout directory, a tar of one (gzip, zstd, xz or bzip2\n"
	 "compressed or not) or a docker-archive (docker save).  The linux/amd64 image of\n"
	 "each entry is imported and pinned under its names (io.containerd.image.name,\n"
	 "a full org.opencontainers.image.ref.name, or RepoTags).  --tag names the one\n"
	 "image that has no name, or adds a name to the only image.\n",
	 image_load},
	{"save", "-o OUT REFERENCE|DIGEST...", "write images as an OCI layout",
	 "OUT is a new (or empty) directory, or an uncompressed OCI archive when it ends\n"
	 "in .tar.  Each name is recorded as io.containerd.image.name and its tag as\n"
	 "org.opencontainers.image.ref.name.\n",
	 image_save},
	{0},
};

void help_image(const struct cli_command *cmd)
{
	cli_sub_help(cmd, subs, 32);
	printf("\nImages live in MSB_HOME/images; see msb pull --help for pull's options.\n");
}

int cmd_image(const struct cli_command *cmd, int argc, char **argv)
{
	return cli_sub_dispatch(cmd, subs, argc, argv);
}

void help_pull(const struct cli_command *cmd)
{
	(void)cmd;
	cli_image_pull_help();
}

int cmd_pull(const struct cli_command *cmd, int argc, char **argv)
{
	(void)cmd;
	return cli_image_pull(argc, argv);
}

/* ---- shared helpers ---------------------------------------------------------------------- */

static void open_store(const char *cmd, struct msb_store *s)
{
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_store_open(NULL, s, &err) < 0)
		die(1, "%s: %s", cmd, err.msg);
}

/* "1.2 MB": decimal units, as docker shows sizes. */
static const char *human(uint64_t n, char buf[32])
{
	static const char *const unit[] = {"B", "kB", "MB", "GB", "TB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1000 && u < 4) {
		v /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, 32, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, 32, "%.1f %s", v, unit[u]);
	return buf;
}

static void print_json(json_t *v)
{
	char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (!s)
		die(1, "out of memory");
	puts(s);
	free(s);
	json_decref(v);
}

/* The path of img's root image if it is built, else NULL (malloc'd). */
static char *root_built(const struct msb_store *s, const struct msb_image *img)
{
	char *p = NULL;
	if (asprintf(&p, "%s/roots/%s.erofs", s->dir, img->chain_id + 7) < 0)
		die(1, "out of memory");
	if (access(p, F_OK) == 0)
		return p;
	free(p);
	return NULL;
}

/* --json, or the one positional argument some subcommands take; anything else is an error. */
struct opts {
	bool json, force;
	const char *tag, *out;
	const char **args;
	size_t nargs;
};

static void parse_opts(const char *cmd, int argc, char **argv, const char *accepted, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->args = calloc((size_t)argc + 1, sizeof(char *));
	if (!o->args)
		die(1, "out of memory");
	bool dashdash = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (dashdash || a[0] != '-' || !a[1]) {
			o->args[o->nargs++] = a;
		} else if (!strcmp(a, "--")) {
			dashdash = true;
		} else if (!strcmp(a, "--json") && strstr(accepted, "json")) {
			o->json = true;
		} else if ((!strcmp(a, "-f") || !strcmp(a, "--force")) &&
			   strstr(accepted, "force")) {
			o->force = true;
		} else if ((!strcmp(a, "--tag") || !strcmp(a, "-t")) && strstr(accepted, "tag")) {
			if (++i >= argc)
				die(EXIT_USAGE, "image %s: %s needs a value (expected a reference)",
				    cmd, a);
			o->tag = argv[i];
		} else if (!strncmp(a, "--tag=", 6) && strstr(accepted, "tag")) {
			o->tag = a + 6;
		} else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) &&
			   strstr(accepted, "out")) {
			if (++i >= argc)
				die(EXIT_USAGE, "image %s: %s needs a value (expected a path)", cmd,
				    a);
			o->out = argv[i];
		} else if (!strncmp(a, "--output=", 9) && strstr(accepted, "out")) {
			o->out = a + 9;
		} else {
			die(EXIT_USAGE,
			    "image %s: unknown option '%.60s' (see msb image %s --help)", cmd, a,
			    cmd);
		}
	}
}

/* Exit status for an error code: 2 for input that can never work, 1 otherwise. */
static int status_of(int code)
{
	return code == -EINVAL || code == -ENOTUNIQ ? EXIT_USAGE : 1;
}

/* ---- ls ----------------------------------------------------------------------------------- */

static int image_ls(int argc, char **argv)
{
	struct opts o;
	parse_opts("ls", argc, argv, "json", &o);
	if (o.nargs)
		die(EXIT_USAGE, "image ls: unexpected argument '%.60s' (expected --json)",
		    o.args[0]);
	struct msb_store s;
	struct msb_error err = MSB_ERROR_INIT;
	open_store("image ls", &s);
	char **refs, **digests;
	size_t n, nusers;
	struct msb_image_user *users;
	if (msb_store_pins(&s, &refs, &digests, &n, &err) < 0 ||
	    msb_image_users(&s, &users, &nusers, &err) < 0)
		die(1, "image ls: %s", err.msg);
	json_t *all = json_array();
	size_t w = strlen("REFERENCE");
	for (size_t i = 0; i < n; i++)
		if (strlen(refs[i]) > w)
			w = strlen(refs[i]);
	if (!o.json)
		printf("%-*s  %-12s  %-9s  %-5s  %s\n", (int)w, "REFERENCE", "DIGEST", "SIZE",
		       "ROOT", "SANDBOXES");
	for (size_t i = 0; i < n; i++) {
		uint64_t size = 0;
		struct msb_error e2 = MSB_ERROR_INIT;
		bool complete = msb_image_size(&s, digests[i], &size, &e2) == 0;
		struct msb_image img;
		char *root = NULL;
		if (complete && msb_image_open(&s, digests[i], &img, &e2) == 0) {
			root = root_built(&s, &img);
			msb_image_close(&img);
		}
		json_t *sbx = json_array();
		char sb[256] = "";
		size_t sl = 0;
		for (size_t j = 0; j < nusers; j++) {
			if (strcmp(users[j].digest, digests[i]))
				continue;
			json_array_append_new(sbx, json_string(users[j].sandbox));
			if (sl < sizeof(sb))
				sl += (size_t)snprintf(sb + sl, sizeof(sb) - sl, "%s%s",
						       sl ? "," : "", users[j].sandbox);
		}
		if (o.json) {
			json_t *v = json_pack("{s:s, s:s, s:o?, s:b, s:b, s:s?, s:o}", "reference",
					      refs[i], "digest", digests[i], "size",
					      complete ? json_integer((json_int_t)size) : NULL,
					      "complete", complete, "root_built", root != NULL,
					      "root_image", root, "sandboxes", sbx);
			json_array_append_new(all, v);
		} else {
			char hs[32];
			printf("%-*s  %.12s  %-9s  %-5s  %s\n", (int)w, refs[i], digests[i] + 7,
			       complete ? human(size, hs) : "missing", root ? "yes" : "no",
			       sl ? sb : "-");
			json_decref(sbx);
		}
		free(root);
	}
	if (o.json)
		print_json(all);
	else
		json_decref(all);
	for (size_t i = 0; i < n; i++) {
		free(refs[i]);
		free(digests[i]);
	}
	free(refs);
	free(digests);
	msb_image_users_free(users, nusers);
	msb_store_close(&s);
	free(o.args);
	return 0;
}

/* ---- inspect ------------------------------------------------------------------------------ */

static json_t *strv_json(char **v, size_t n, bool has)
{
	if (!has)
		return json_null();
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static void print_strv(const char *label, json_t *v)
{
	if (json_is_null(v))
		return;
	char *s = json_dumps(v, JSON_COMPACT);
	printf("%-11s %s\n", label, s ? s : "?");
	free(s);
}

static int image_inspect(int argc, char **argv)
{
	struct opts o;
	parse_opts("inspect", argc, argv, "json", &o);
	if (o.nargs != 1)
		die(EXIT_USAGE, "image inspect: expected one REFERENCE or DIGEST, got %zu",
		    o.nargs);
	struct msb_store s;
	struct msb_error err = MSB_ERROR_INIT;
	open_store("image inspect", &s);
	char digest[72];
	int r = msb_image_resolve(&s, o.args[0], digest, NULL, &err);
	if (r < 0)
		die(status_of(r), "image inspect: %s", err.msg);
	struct msb_image img;
	uint64_t size = 0;
	if (msb_image_open(&s, digest, &img, &err) < 0 ||
	    msb_image_size(&s, digest, &size, &err) < 0)
		die(1, "image inspect: %s", err.msg);
	char **refs, **digests;
	size_t n, nusers;
	struct msb_image_user *users;
	if (msb_store_pins(&s, &refs, &digests, &n, &err) < 0 ||
	    msb_image_users(&s, &users, &nusers, &err) < 0)
		die(1, "image inspect: %s", err.msg);
	const struct msb_image_config *c = &img.config;
	const struct msb_manifest *m = &img.manifest;
	json_t *names = json_array(), *sbx = json_array(), *layers = json_array();
	for (size_t i = 0; i < n; i++)
		if (!strcmp(digests[i], digest))
			json_array_append_new(names, json_string(refs[i]));
	for (size_t i = 0; i < nusers; i++)
		if (!strcmp(users[i].digest, digest))
			json_array_append_new(sbx, json_string(users[i].sandbox));
	for (size_t i = 0; i < m->nlayers; i++)
		json_array_append_new(layers, json_pack("{sssIssss}", "digest", m->layers[i].digest,
							"size", (json_int_t)m->layers[i].size,
							"media_type", m->layers[i].media_type,
							"diff_id", c->diff_ids[i]));
	char platform[200];
	snprintf(platform, sizeof(platform), "%s/%s%s%s", c->os ? c->os : "linux",
		 c->arch ? c->arch : "amd64", c->variant ? "/" : "", c->variant ? c->variant : "");
	char *root = root_built(&s, &img);
	json_t *ports = strv_json(c->exposed_ports, c->nexposed, true);
	json_t *config = json_pack(
		"{s:s, s:I, s:o, s:o, s:o, s:s?, s:s?, s:o}", "digest", m->config.digest, "size",
		(json_int_t)m->config.size, "Entrypoint",
		strv_json(c->entrypoint, c->nentrypoint, c->has_entrypoint), "Cmd",
		strv_json(c->cmd, c->ncmd, c->has_cmd), "Env", strv_json(c->env, c->nenv, true),
		"WorkingDir", c->workdir, "User", c->user, "ExposedPorts", ports);
	json_t *v = json_pack("{s:s, s:o, s:s, s:s, s:I, s:o, s:o, s:s?, s:o}", "digest", digest,
			      "references", names, "media_type",
			      m->kind == MSB_MEDIA_DOCKER_MANIFEST
				      ? "application/vnd.docker.distribution.manifest.v2+json"
				      : "application/vnd.oci.image.manifest.v1+json",
			      "platform", platform, "size", (json_int_t)size, "config", config,
			      "layers", layers, "root_image", root, "sandboxes", sbx);
	if (!v)
		die(1, "out of memory");
	if (o.json) {
		print_json(v);
	} else {
		char hs[32];
		printf("%-11s %s\n", "digest", digest);
		for (size_t i = 0; i < json_array_size(names); i++)
			printf("%-11s %s\n", i ? "" : "reference",
			       json_string_value(json_array_get(names, i)));
		printf("%-11s %s\n", "platform", platform);
		printf("%-11s %s\n", "size", human(size, hs));
		print_strv("entrypoint", json_object_get(config, "Entrypoint"));
		print_strv("cmd", json_object_get(config, "Cmd"));
		for (size_t i = 0; i < c->nenv; i++)
			printf("%-11s %s\n", "env", c->env[i]);
		if (c->workdir)
			printf("%-11s %s\n", "workdir", c->workdir);
		if (c->user)
			printf("%-11s %s\n", "user", c->user);
		for (size_t i = 0; i < c->nexposed; i++)
			printf("%-11s %s\n", "port", c->exposed_ports[i]);
		for (size_t i = 0; i < m->nlayers; i++)
			printf("%-11s %s %s\n", "layer", m->layers[i].digest,
			       human((uint64_t)m->layers[i].size, hs));
		printf("%-11s %s\n", "root", root ? root : "(not built)");
		for (size_t i = 0; i < json_array_size(sbx); i++)
			printf("%-11s %s\n", "sandbox", json_string_value(json_array_get(sbx, i)));
		json_decref(v);
	}
	free(root);
	for (size_t i = 0; i < n; i++) {
		free(refs[i]);
		free(digests[i]);
	}
	free(refs);
	free(digests);
	msb_image_users_free(users, nusers);
	msb_image_close(&img);
	msb_store_close(&s);
	free(o.args);
	return 0;
}

/* ---- rm ----------------------------------------------------------------------------------- */

static int image_rm(int argc, char **argv)
{
	struct opts o;
	parse_opts("rm", argc, argv, "force", &o);
	if (!o.nargs)
		die(EXIT_USAGE, "image rm: no image named (expected REFERENCE|DIGEST...)");
	struct msb_store s;
	struct msb_error err = MSB_ERROR_INIT;
	open_store("image rm", &s);
	char **refs, **digests;
	size_t n, nusers;
	struct msb_image_user *users;
	if (msb_store_pins(&s, &refs, &digests, &n, &err) < 0 ||
	    msb_image_users(&s, &users, &nusers, &err) < 0)
		die(1, "image rm: %s", err.msg);
	int status = 0;
	for (size_t a = 0; a < o.nargs; a++) {
		char digest[72], *key = NULL;
		int r = msb_image_resolve(&s, o.args[a], digest, &key, &err);
		if (r < 0) {
			fprintf(stderr, "msb: image rm: %s\n", err.msg);
			status = status ? status : status_of(r);
			continue;
		}
		const char *user = NULL;
		for (size_t i = 0; i < nusers && !user; i++)
			if (!strcmp(users[i].digest, digest))
				user = users[i].sandbox;
		if (user && !o.force) {
			fprintf(stderr,
				"msb: image rm: %s (%.19s) is used by sandbox %s (expected -f to "
				"remove its name anyway; the sandbox keeps working)\n",
				o.args[a], digest, user);
			status = 1;
			free(key);
			continue;
		}
		/* A reference removes its pin; a digest every pin naming it. */
		size_t removed = 0;
		for (size_t i = 0; i < n; i++) {
			if (key ? strcmp(refs[i], key) : strcmp(digests[i], digest))
				continue;
			if (msb_store_pin_remove(&s, refs[i], &err) < 0 && err.code != -ENOENT) {
				fprintf(stderr, "msb: image rm: %s\n", err.msg);
				status = 1;
				continue;
			}
			printf("untagged %s\n", refs[i]);
			removed++;
		}
		if (!removed) {
			fprintf(stderr, "msb: image rm: %s has no name to remove\n", o.args[a]);
			status = 1;
		}
		free(key);
	}
	for (size_t i = 0; i < n; i++) {
		free(refs[i]);
		free(digests[i]);
	}
	free(refs);
	free(digests);
	msb_image_users_free(users, nusers);
	msb_store_close(&s);
	free(o.args);
	return status;
}

/* ---- prune -------------------------------------------------------------------------------- */

static int image_prune(int argc, char **argv)
{
	struct opts o;
	parse_opts("prune", argc, argv, "json", &o);
	if (o.nargs)
		die(EXIT_USAGE, "image prune: unexpected argument '%.60s' (expected --json)",
		    o.args[0]);
	struct msb_store s;
	struct msb_error err = MSB_ERROR_INIT;
	open_store("image prune", &s);
	struct msb_prune_result res;
	int r = msb_image_prune(&s, PRUNE_MIN_AGE, &res, &err);
	static const char *const kind[] = {"blob", "diffid", "root"};
	char hs[32];
	if (o.json) {
		json_t *items = json_array();
		for (size_t i = 0; i < res.n; i++)
			json_array_append_new(items,
					      json_pack("{sssssI}", "kind", kind[res.items[i].kind],
							"name", res.items[i].name, "size",
							(json_int_t)res.items[i].bytes));
		print_json(json_pack("{sosIsI}", "removed", items, "freed", (json_int_t)res.bytes,
				     "kept", (json_int_t)res.kept));
	} else {
		for (size_t i = 0; i < res.n; i++)
			if (res.items[i].kind != MSB_PRUNE_DIFFID)
				printf("deleted %s %s (%s)\n", kind[res.items[i].kind],
				       res.items[i].name, human(res.items[i].bytes, hs));
		printf("freed %s", human(res.bytes, hs));
		if (res.kept)
			printf(" (kept %zu unused entr%s younger than a minute or in use)",
			       res.kept, res.kept == 1 ? "y" : "ies");
		printf("\n");
	}
	msb_prune_result_free(&res);
	msb_store_close(&s);
	free(o.args);
	if (r < 0)
		die(1, "image prune: %s", err.msg);
	return 0;
}

/* ---- load / save -------------------------------------------------------------------------- */

static int image_load(int argc, char **argv)
{
	struct opts o;
	parse_opts("load", argc, argv, "tag", &o);
	if (o.nargs != 1)
		die(EXIT_USAGE, "image load: expected one PATH, got %zu", o.nargs);
	struct msb_error err = MSB_ERROR_INIT;
	if (o.tag) {
		struct msb_image_ref ref;
		if (msb_image_ref_parse(o.tag, &ref, &err) < 0)
			die(EXIT_USAGE, "image load: --tag: %s", err.msg);
		msb_image_ref_free(&ref);
	}
	struct msb_store s;
	open_store("image load", &s);
	char **refs;
	size_t n;
	int r = msb_image_load(&s, o.args[0], o.tag, &refs, &n, &err);
	if (r < 0)
		die(1, "image load: %s", err.msg);
	for (size_t i = 0; i < n; i++) {
		char digest[72];
		if (msb_store_pin_get(&s, refs[i], digest, &err) < 0)
			die(1, "image load: %s", err.msg);
		printf("loaded %s@%s\n", refs[i], digest);
	}
	msb_image_load_free(refs, n);
	msb_store_close(&s);
	free(o.args);
	return 0;
}

static int image_save(int argc, char **argv)
{
	struct opts o;
	parse_opts("save", argc, argv, "out", &o);
	if (!o.out || !*o.out)
		die(EXIT_USAGE, "image save: no output given (expected -o DIR or -o FILE.tar)");
	if (!o.nargs)
		die(EXIT_USAGE, "image save: no image named (expected REFERENCE|DIGEST...)");
	struct msb_store s;
	struct msb_error err = MSB_ERROR_INIT;
	open_store("image save", &s);
	int r = msb_image_save(&s, o.args, o.nargs, o.out, &err);
	if (r < 0)
		die(status_of(r), "image save: %s", err.msg);
	printf("saved %zu image%s to %s\n", o.nargs, o.nargs == 1 ? "" : "s", o.out);
	msb_store_close(&s);
	free(o.args);
	return 0;
}
