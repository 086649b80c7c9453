/* SPDX-License-Identifier: Apache-2.0 */
/* The spec: every option's parser, whole-spec validation, JSON both ways. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "config.h"
#include "secretval.h"
#include "spec.h"

static struct msb_spec *spec_of(const char *const *kv)
{
	struct msb_spec *s = msb_spec_new();
	assert_non_null(s);
	for (size_t i = 0; kv[i]; i += 2) {
		struct msb_error err = MSB_ERROR_INIT;
		if (msb_spec_set(s, kv[i], kv[i + 1], &err) < 0)
			fail_msg("option %s=%s: %s", kv[i], kv[i + 1] ? kv[i + 1] : "", err.msg);
	}
	return s;
}

static void test_defaults(void **state)
{
	(void)state;
	static const char *const kv[] = {"image", "python", NULL};
	struct msb_spec *s = spec_of(kv);
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_int_equal(s->cpus, 1);
	assert_true(s->memory == 512ull << 20);
	/* Default posture: deny by default, public egress and DNS allowed. */
	assert_int_equal(s->egress, MSB_EGRESS_DENY);
	assert_int_equal(s->nrules, 2);
	assert_int_equal(s->rules[0].target, MSB_TARGET_GROUP);
	assert_int_equal(s->rules[0].group, MSB_GROUP_PUBLIC);
	assert_int_equal(s->rules[1].target, MSB_TARGET_DNS);
	assert_string_equal(msb_spec_module(s, MSB_SLOT_HV), "kvm");
	msb_spec_free(s);
}

static void test_explicit_egress_has_no_default_rules(void **state)
{
	(void)state;
	struct msb_error err = MSB_ERROR_INIT;
	static const char *const deny[] = {"image", "x", "net-default-egress", "deny", NULL};
	struct msb_spec *s = spec_of(deny);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_int_equal(s->egress, MSB_EGRESS_DENY);
	assert_int_equal(s->nrules, 0); /* deny means deny: nothing added behind the user's back */
	msb_spec_free(s);
	static const char *const allow[] = {"image", "x", "net-default-egress", "allow", NULL};
	s = spec_of(allow);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_int_equal(s->egress, MSB_EGRESS_ALLOW);
	assert_int_equal(s->nrules, 0);
	msb_spec_free(s);
}

static void test_brief_examples(void **state)
{
	(void)state;
	struct msb_error err = MSB_ERROR_INIT;
	static const char *const a[] = {"image",  "python", "name", "isolated",
					"no-net", NULL,	    NULL};
	struct msb_spec *s = spec_of(a);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_true(s->no_net);
	assert_int_equal(s->nrules, 0);
	msb_spec_free(s);

	static const char *const b[] = {"image",
					"alpine",
					"name",
					"worker",
					"net-default-egress",
					"deny",
					"net-rule",
					"allow@public:tcp:443,allow@host:udp:53",
					NULL};
	s = spec_of(b);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_int_equal(s->nrules, 2); /* the given rules replace the defaults */
	assert_int_equal(s->rules[0].port_lo, 443);
	assert_int_equal(s->rules[1].proto, MSB_PROTO_UDP);
	msb_spec_free(s);

	static const char *const c[] = {"image", "python",   "name",	   "worker", "user",
					"app",	 "security", "restricted", NULL};
	s = spec_of(c);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_string_equal(s->user, "app");
	assert_int_equal(s->security, MSB_SECURITY_RESTRICTED);
	msb_spec_free(s);

	static const char *const d[] = {
		"image",	"python", "cpus",	  "2",	"memory", "1G",
		"idle-timeout", "5m",	  "max-duration", "1h", NULL};
	s = spec_of(d);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_int_equal(s->cpus, 2);
	assert_true(s->memory == 1ull << 30);
	assert_true(s->idle_timeout_ms == 300000);
	assert_true(s->max_duration_ms == 3600000);
	msb_spec_free(s);
}

struct bad {
	const char *option, *value, *token;
};

static void test_bad_values(void **state)
{
	(void)state;
	static const struct bad cases[] = {
		{"name", "-x", "'-x'"},
		{"name", "a/b", "'a/b'"},
		{"name", "", "invalid name"},
		{"cpus", "0", "'0'"},
		{"cpus", "65", "'65'"},
		{"cpus", "2x", "'2x'"},
		{"cpus", "02", "'02'"},
		{"memory", "32M", "out of range"},
		{"memory", "65537K", "whole number of MiB"},
		{"memory", "lots", "'lots'"},
		{"net-default-egress", "alow", "did you mean 'allow'"},
		{"net-rule", "allow@publc", "did you mean 'public'"},
		{"publish", "80", "'80'"},
		{"publish", "0:80", "bad host port"},
		{"publish", "8080:80/sctp", "'sctp'"},
		{"publish", "1.2.3:8080:80", "bad address"},
		{"dns-nameserver", "dns.example", "expected an IPv4 or IPv6 address"},
		{"dns-nameserver", "[::1]", "'[::1]'"},
		{"user", "Root", "'Root'"},
		{"user", "app:", "'app:'"},
		{"user", "a:b:c", "'a:b:c'"},
		{"security", "strict", "expected default or restricted"},
		{"volume", "/tmp", "HOST:GUEST"},
		{"volume", "/tmp:data", "not absolute"},
		{"volume", "/tmp:/a/../b", "'..'"},
		{"volume", "/tmp:/data:rx", "'rx'"},
		{"volume", "/tmp:/data:ro,rw", "twice"},
		{"volume", "bad name!:/data", "neither a path nor a volume name"},
		{"volume", "/tmp:/data:identity=maybe", "'identity=maybe'"},
		{"volume", "/tmp:/data:identity=of", "did you mean 'identity=off'"},
		{"volume", "/tmp:/data:identity=off,identity=strict", "identity given twice"},
		{"volume", "/tmp:/data:locks=hots", "did you mean 'locks=host'"},
		{"volume", "/tmp:/data:locks=guest,locks=host", "locks given twice"},
		{"secret", "KEY=sk-123@api.example.com", "inline value is refused"},
		{"secret", "KEY", "no @HOST"},
		{"secret", "1KEY@x.com", "not an environment variable name"},
		{"secret", "KEY@", "bad host"},
		{"secret", "KEY@a..com", "bad host"},
		{"secret", "KEY@x.com,,y.com", "bad host"},
		{"secret-file", "KEY", "ENV=PATH"},
		{"on-secret-violation", "drop", "expected block, block-and-log or passthrough"},
		{"on-secret-violation", "blok", "did you mean 'block'"},
		{"env", "1A=b", "not a variable name"},
		{"env", "MSB_TEST_SURELY_UNSET_VAR", "not set in the host environment"},
		{"workdir", "relative", "not absolute"},
		{"idle-timeout", "5", "no unit"},
		{"max-duration", "1y", "'y'"},
		{"hypervisor", "KVM", "invalid module name"},
		{"kernel", "", "expected a path"},
		{"image", "has space", "image reference"},
		{"image", "-flag", "image reference"},
		{"no-net", "yes", "takes no value"},
		{"memory", NULL, "needs a value"},
		{"frobnicate", "1", "unknown option"},
		{"name", "a\nb", "control characters"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct msb_spec *s = msb_spec_new();
		struct msb_error err = MSB_ERROR_INIT;
		int r = msb_spec_set(s, cases[i].option, cases[i].value, &err);
		if (r >= 0)
			fail_msg("--%s %s accepted", cases[i].option, cases[i].value);
		if (!strstr(err.msg, cases[i].token))
			fail_msg("--%s %s: message '%s' lacks '%s'", cases[i].option,
				 cases[i].value, err.msg, cases[i].token);
		assert_null(strchr(err.msg, '\n'));
		msb_spec_free(s);
	}
}

static void expect_invalid(const char *const *kv, const char *token)
{
	struct msb_spec *s = spec_of(kv);
	struct msb_error err = MSB_ERROR_INIT;
	int r = msb_spec_validate(s, &err);
	if (r >= 0)
		fail_msg("spec accepted; expected an error with '%s'", token);
	if (!strstr(err.msg, token))
		fail_msg("message '%s' lacks '%s'", err.msg, token);
	msb_spec_free(s);
}

static void test_validation(void **state)
{
	(void)state;
	static const char *const noimg[] = {"name", "x", NULL};
	expect_invalid(noimg, "no image");
	static const char *const both[] = {"image", "x", "rootfs", "/", NULL};
	expect_invalid(both, "both");
	static const char *const nonet[] = {"image",	"x",	     "no-net", NULL,
					    "net-rule", "deny@meta", NULL};
	expect_invalid(nonet, "--no-net cannot be combined with --net-rule");
	static const char *const nonet2[] = {"image",	"x",	 "no-net", NULL,
					     "publish", "80:80", NULL};
	expect_invalid(nonet2, "--publish");
	static const char *const nonet3[] = {"image",	       "x",	     "no-net", NULL,
					     "dns-nameserver", "192.0.2.53", NULL};
	expect_invalid(nonet3, "--dns-nameserver");
	{
		struct msb_spec *d = msb_spec_new();
		struct msb_error err = MSB_ERROR_INIT;
		static const char *const three[] = {"192.0.2.1", "192.0.2.2", "2001:db8::3"};
		for (int i = 0; i < 3; i++)
			assert_int_equal(msb_spec_set(d, "dns-nameserver", three[i], &err), 0);
		assert_true(msb_spec_set(d, "dns-nameserver", "192.0.2.4", &err) < 0);
		assert_non_null(strstr(err.msg, "at most 3 resolvers"));
		msb_spec_free(d);
	}
	static const char *const root[] = {"image", "x", "volume", "/tmp:/", NULL};
	expect_invalid(root, "cannot mount over the guest's /");
	static const char *const agent[] = {"image", "x", "volume", "/tmp:/.msb/agent", NULL};
	expect_invalid(agent, "reserved");
	static const char *const twice[] = {"image",  "x",	"volume", "/tmp:/d",
					    "volume", "/:/d//", NULL};
	expect_invalid(twice, "used twice");
	static const char *const missing[] = {"image", "x", "volume", "/no/such/dir:/d", NULL};
	expect_invalid(missing, "/no/such/dir");
	/* The API filesystems the agent mounts, and below them. */
	static const char *const api[] = {"/proc",	"/sys/fs", "/dev",
					  "/dev/shm/x", "/run",	   "/run/a"};
	for (size_t i = 0; i < sizeof(api) / sizeof(api[0]); i++) {
		char v[64];
		snprintf(v, sizeof(v), "/tmp:%s", api[i]);
		const char *kv[] = {"image", "x", "volume", v, NULL};
		expect_invalid(kv, "API filesystem");
	}
	static const char *const file[] = {"image", "x", "volume", "/etc/hostname:/d", NULL};
	expect_invalid(file, "not a directory");
	static const char *const many[] = {
		"image",   "x",	      "volume",	 "/tmp:/1", "volume",  "/tmp:/2", "volume",
		"/tmp:/3", "volume",  "/tmp:/4", "volume",  "/tmp:/5", "volume",  "/tmp:/6",
		"volume",  "/tmp:/7", "volume",	 "/tmp:/8", "volume",  "/tmp:/9", NULL};
	expect_invalid(many, "at most 8");
	static const char *const secret[] = {"image", "x", "secret", "MSB_TEST_UNSET_SECRET@x.com",
					     NULL};
	expect_invalid(secret, "MSB_TEST_UNSET_SECRET is not set");
	static const char *const sfile[] = {"image", "x", "secret-file", "OTHER=/etc/hostname",
					    NULL};
	expect_invalid(sfile, "no --secret OTHER@HOST binds it");
	setenv("MSB_TEST_SET_SECRET", "v", 1);
	static const char *const nonet_secret[] = {
		"image", "x", "secret", "MSB_TEST_SET_SECRET@x.com", "no-net", NULL, NULL};
	expect_invalid(nonet_secret, "--no-net cannot be combined with --secret");
	static const char *const trust[] = {"image", "x", "trust-host-cas", NULL, NULL};
	expect_invalid(trust, "--trust-host-cas needs a --secret");
	static const char *const viol[] = {"image", "x", "on-secret-violation", "passthrough",
					   NULL};
	expect_invalid(viol, "--on-secret-violation needs a --secret");
	unsetenv("MSB_TEST_SET_SECRET");
	static const char *const kernel[] = {"image", "x", "kernel", "/no/such/bzImage", NULL};
	expect_invalid(kernel, "/no/such/bzImage");
	static const char *const rootfs[] = {"rootfs", "/etc/hostname", NULL};
	expect_invalid(rootfs, "not a directory");
}

/* Look-alikes of reserved paths are fine; identity=off is kept. */
static void test_volume_options(void **state)
{
	(void)state;
	static const char *const kv[] = {"image",  "x",
					 "volume", "/tmp:/procfs:rw,identity=off",
					 "volume", "/tmp:/devices",
					 "volume", "/tmp:/x/run:ro,locks=host",
					 NULL};
	struct msb_spec *s = spec_of(kv);
	struct msb_error err = MSB_ERROR_INIT;
	if (msb_spec_validate(s, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(s->nvolumes, 3);
	assert_int_equal(s->volumes[0].identity, 1); /* MSB_SHARE_IDENTITY_OFF */
	assert_int_equal(s->volumes[0].read_only, 0);
	assert_int_equal(s->volumes[1].identity, 0);
	assert_int_equal(s->volumes[2].read_only, 1);
	assert_int_equal(s->volumes[0].locks, 0); /* MSB_SHARE_LOCKS_GUEST, the default */
	assert_int_equal(s->volumes[2].locks, 1); /* MSB_SHARE_LOCKS_HOST */
	char *json = msb_spec_to_json(s, 1);
	assert_non_null(strstr(json, "\"identity\": \"off\""));
	assert_non_null(strstr(json, "\"identity\": \"strict\""));
	assert_non_null(strstr(json, "\"locks\": \"guest\""));
	assert_non_null(strstr(json, "\"locks\": \"host\""));
	/* ... and back. */
	struct msb_spec *t = NULL;
	if (msb_spec_from_json(json, strlen(json), &t, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(t->volumes[2].locks, 1);
	assert_int_equal(t->volumes[0].locks, 0);
	msb_spec_free(t);
	msb_free(json);
	msb_spec_free(s);
}

static void test_secret_value_never_in_spec(void **state)
{
	(void)state;
	setenv("MSB_TEST_API_KEY", "sk-very-secret-value", 1);
	static const char *const kv[] = {"image", "python", "secret",
					 "MSB_TEST_API_KEY@api.example.com,*.example.org", NULL};
	struct msb_spec *s = spec_of(kv);
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_spec_validate(s, &err), 0);
	char *json = msb_spec_to_json(s, 0);
	assert_non_null(json);
	assert_null(strstr(json, "sk-very-secret-value"));
	assert_non_null(strstr(json, "api.example.com"));
	assert_non_null(strstr(json, "*.example.org"));
	msb_free(json);
	msb_spec_free(s);
	/* Nor in an error message about it. */
	s = msb_spec_new();
	assert_true(msb_spec_set(s, "secret", "KEY=sk-very-secret-value@x.com", &err) < 0);
	assert_null(strstr(err.msg, "sk-very-secret"));
	msb_spec_free(s);
	unsetenv("MSB_TEST_API_KEY");
}

/* The VmFlags line of the mapping holding p (from /proc/self/smaps), or "". */
static void vmflags_of(const void *p, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	assert_non_null(f);
	char line[512];
	int in = 0;
	out[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (in && !strncmp(line, "VmFlags:", 8))
			snprintf(out, len, "%s", line);
	}
	fclose(f);
}

/* Values given directly live in memory out of core dumps (dd) and forks (wf). */
static void test_secret_value_memory_is_guarded(void **state)
{
	(void)state;
	static const char *const kv[] = {"image", "python", "secret", "MSB_TEST_G@a.example.com",
					 NULL};
	struct msb_spec *s = spec_of(kv);
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_spec_set_secret_value(s, "MSB_TEST_G", "v1", 2, &err), 0);
	char flags[512];
	vmflags_of(s->secrets[0].value, flags, sizeof(flags));
	if (!strstr(flags, " dd") || !strstr(flags, " wf"))
		fail_msg("the spec's value mapping: '%s'", flags);
	msb_spec_free(s);
	assert_int_equal(msb_secret_vault_add("MSB_TEST_G", "v2", 2, &err), 0);
	size_t len;
	const char *v = msb_secret_vault_get("MSB_TEST_G", &len);
	assert_non_null(v);
	vmflags_of(v, flags, sizeof(flags));
	if (!strstr(flags, " dd") || !strstr(flags, " wf"))
		fail_msg("the vault's mapping: '%s'", flags);
	msb_secret_vault_wipe();
}

/* The SDK's msb_spec_set_secret_value: the value is held, never serialized. */
static void test_secret_value_given_directly(void **state)
{
	(void)state;
	unsetenv("MSB_TEST_DIRECT");
	static const char *const kv[] = {"image", "python", "secret",
					 "MSB_TEST_DIRECT@api.example.com", NULL};
	struct msb_spec *s = spec_of(kv);
	struct msb_error err = MSB_ERROR_INIT;
	/* Bound first; bounded; no NUL; never echoed. */
	assert_int_equal(msb_spec_set_secret_value(s, "OTHER", "v", 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "no secret of that name is bound"));
	assert_int_equal(msb_spec_set_secret_value(s, "MSB_TEST_DIRECT", "", 0, &err), -EINVAL);
	assert_int_equal(msb_spec_set_secret_value(s, "MSB_TEST_DIRECT", "a\0b", 3, &err), -EINVAL);
	static char big[MSB_SECRET_VALUE_MAX + 1];
	memset(big, 'x', sizeof(big));
	assert_int_equal(msb_spec_set_secret_value(s, "MSB_TEST_DIRECT", big, sizeof(big), &err),
			 -EFBIG);
	assert_null(strstr(err.msg, "xxxx"));
	assert_int_equal(
		msb_spec_set_secret_value(s, "MSB_TEST_DIRECT", big, MSB_SECRET_VALUE_MAX, &err),
		0);
	const char *v = "sk-direct-value-42";
	assert_int_equal(msb_spec_set_secret_value(s, "MSB_TEST_DIRECT", v, strlen(v), &err), 0);
	/* Valid without the environment; the JSON says where, never what. */
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_int_equal(s->secrets[0].source, MSB_SECRET_FROM_VALUE);
	assert_int_equal(s->secrets[0].value_len, strlen(v));
	assert_memory_equal(s->secrets[0].value, v, strlen(v));
	char *json = msb_spec_to_json(s, 0);
	assert_non_null(json);
	assert_null(strstr(json, v));
	assert_non_null(strstr(json, "\"source\":\"value\""));
	msb_free(json);
	/* After validation nothing changes. */
	assert_int_equal(msb_spec_set_secret_value(s, "MSB_TEST_DIRECT", "x", 1, &err), -EBUSY);
	msb_spec_free(s);
	/* Without a value anywhere: one line naming every way to give one. */
	s = spec_of(kv);
	assert_int_equal(msb_spec_validate(s, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "given directly"));
	msb_spec_free(s);
}

/* Where a value comes from: --secret-file, given directly, environment, config. */
static void test_secret_sources_in_order(void **state)
{
	(void)state;
	struct msb_error err = MSB_ERROR_INIT;
	static const char conf[] = "[secrets]\nMSB_TEST_SRC = from-config\n";
	assert_int_equal(msb_config_parse(conf, strlen(conf), "test", &err), 0);
	unsetenv("MSB_TEST_SRC");
	const char *v;
	size_t len;
	assert_int_equal(msb_secret_lookup("MSB_TEST_SRC", &v, &len), MSB_SECRET_FROM_CONFIG);
	assert_int_equal(len, strlen("from-config"));
	setenv("MSB_TEST_SRC", "from-env", 1);
	assert_int_equal(msb_secret_lookup("MSB_TEST_SRC", &v, &len), MSB_SECRET_FROM_ENV);
	assert_memory_equal(v, "from-env", len);
	assert_int_equal(msb_secret_vault_add("MSB_TEST_SRC", "from-vault", 10, &err), 0);
	assert_int_equal(msb_secret_lookup("MSB_TEST_SRC", &v, &len), MSB_SECRET_FROM_VALUE);
	assert_memory_equal(v, "from-vault", len);
	static const char *const kv[] = {"image", "python", "secret", "MSB_TEST_SRC@a.example.com",
					 NULL};
	struct msb_spec *s = spec_of(kv);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_int_equal(s->secrets[0].source, MSB_SECRET_FROM_VALUE);
	msb_spec_free(s);
	/* Wiped: the vault is gone, the config's value is no more. */
	msb_secret_vault_wipe();
	msb_config_forget_secrets();
	unsetenv("MSB_TEST_SRC");
	assert_int_equal(msb_secret_lookup("MSB_TEST_SRC", &v, &len), -ENOENT);
	/* A bad [secrets] line names the key, never the value. */
	static const char bad[] = "[secrets]\n1BAD = hunter2\n";
	assert_int_equal(msb_config_parse(bad, strlen(bad), "c", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "c:2: [secrets] 1BAD"));
	assert_null(strstr(err.msg, "hunter2"));
	msb_config_reset();
}

static int memfd_of(const char *data, size_t len)
{
	int fd = memfd_create("t", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* The fd msb-supervisor reads values from: NUL-ended NAME=VALUE, bounded. */
static void test_secret_values_fd(void **state)
{
	(void)state;
	struct msb_error err = MSB_ERROR_INIT;
	const char *names[] = {"A_KEY", "B"}, *values[] = {"alpha", "b=c"};
	size_t lens[] = {5, 3};
	int fd = msb_secret_values_memfd(names, values, lens, 2, 0, &err);
	assert_true(fd >= 0);
	assert_int_equal(msb_secret_vault_read_fd(fd, &err), 0);
	close(fd);
	size_t len;
	const char *v = msb_secret_vault_get("B", &len);
	assert_non_null(v);
	assert_int_equal(len, 3);
	assert_memory_equal(v, "b=c", 3);
	msb_secret_vault_wipe();
	assert_null(msb_secret_vault_get("B", &len));
	static const struct {
		const char *data;
		size_t len;
		const char *msg;
	} bad[] = {
		{"A=1", 3, "not ended by a NUL"},
		{"A1\0", 3, "has no '='"},
		{"A=\0", 3, "it is empty"},
		{"=x\0", 3, "not an environment variable name"},
		{"1A=x\0", 5, "not an environment variable name"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fd = memfd_of(bad[i].data, bad[i].len);
		assert_true(msb_secret_vault_read_fd(fd, &err) < 0);
		if (!strstr(err.msg, bad[i].msg))
			fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
		close(fd);
		msb_secret_vault_wipe();
	}
	/* Too long a value; too many entries. */
	static char big[MSB_SECRET_VALUE_MAX + 8];
	memcpy(big, "K=", 2);
	memset(big + 2, 'v', MSB_SECRET_VALUE_MAX + 1);
	big[MSB_SECRET_VALUE_MAX + 3] = '\0';
	fd = memfd_of(big, MSB_SECRET_VALUE_MAX + 4);
	assert_int_equal(msb_secret_vault_read_fd(fd, &err), -EFBIG);
	assert_null(strstr(err.msg, "vvvv"));
	close(fd);
	char many[(MSB_SECRET_VALUES_MAX + 1) * 16];
	size_t n = 0;
	for (int i = 0; i <= MSB_SECRET_VALUES_MAX; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "K%d=v", i) + 1;
	fd = memfd_of(many, n);
	assert_int_equal(msb_secret_vault_read_fd(fd, &err), -E2BIG);
	close(fd);
	msb_secret_vault_wipe();
}

/* A config file with [secrets] must be private (0600, the user's or root's). */
static void test_config_secrets_private(void **state)
{
	(void)state;
	char path[] = "/tmp/msb-test-config-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char text[] = "[secrets]\nK = v\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	setenv("MSB_CONFIG", path, 1);
	struct msb_error err = MSB_ERROR_INIT;
	msb_config_reset();
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(msb_config_load(&err), -EPERM);
	assert_non_null(strstr(err.msg, "chmod 600"));
	assert_null(msb_config_get("secrets", "K"));
	msb_config_reset();
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(msb_config_load(&err), 0);
	assert_string_equal(msb_config_get("secrets", "K"), "v");
	msb_config_reset();
	/* 0600 but someone else's (not root's): refused too. */
	if (geteuid() == 0) {
		assert_int_equal(chown(path, 4321, 4321), 0);
		assert_int_equal(msb_config_load(&err), -EPERM);
		assert_non_null(strstr(err.msg, "someone else owns it"));
		msb_config_reset();
		assert_int_equal(chown(path, 0, 0), 0);
	}
	/* Without [secrets], any mode is fine. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "plugin_path = /x\n", 17), 17);
	close(fd);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(msb_config_load(&err), 0);
	msb_config_reset();
	unsetenv("MSB_CONFIG");
	unlink(path);
}

static void test_json_round_trip(void **state)
{
	(void)state;
	setenv("MSB_TEST_TOKEN", "t0k", 1);
	static const char *const kv[] = {"image",
					 "python:3.12",
					 "name",
					 "rt",
					 "cpus",
					 "3",
					 "memory",
					 "768M",
					 "net-default-egress",
					 "allow",
					 "net-rule",
					 "deny@meta,allow:ingress@[2001:db8::/32]:tcp:80-90",
					 "publish",
					 "8080:80",
					 "publish",
					 "[::1]:5353:53/udp",
					 "dns-nameserver",
					 "198.51.100.53",
					 "dns-nameserver",
					 "2001:db8::53",
					 "user",
					 "1000:1000",
					 "security",
					 "restricted",
					 "volume",
					 "/tmp:/data:ro,noexec,identity=off",
					 "volume",
					 "vol1:/cache",
					 "secret",
					 "MSB_TEST_TOKEN@api.example.com",
					 "on-secret-violation",
					 "block-and-log",
					 "trust-host-cas",
					 NULL,
					 "env",
					 "A=b c",
					 "workdir",
					 "/srv//app/",
					 "idle-timeout",
					 "5m",
					 "max-duration",
					 "1h",
					 "storage-backend",
					 "other",
					 NULL};
	struct msb_spec *s = spec_of(kv);
	char *argv[] = {"python3", "-c", "print('hi')"};
	struct msb_error err = MSB_ERROR_INIT;
	assert_int_equal(msb_spec_set_command(s, argv, 3, &err), 0);
	assert_int_equal(msb_spec_validate(s, &err), 0);
	assert_string_equal(s->workdir, "/srv/app");
	char *a = msb_spec_to_json(s, 1);
	assert_non_null(a);
	struct msb_spec *t = NULL;
	if (msb_spec_from_json(a, strlen(a), &t, &err) < 0)
		fail_msg("from_json: %s\n%s", err.msg, a);
	char *b = msb_spec_to_json(t, 1);
	assert_string_equal(a, b);
	msb_free(a);
	msb_free(b);
	msb_spec_free(s);
	msb_spec_free(t);
	unsetenv("MSB_TEST_TOKEN");
}

static void test_json_bad(void **state)
{
	(void)state;
	static const struct {
		const char *json, *token;
	} cases[] = {
		{"", "not JSON"},
		{"[]", "an object"},
		{"{\"msb_spec\":2,\"image\":\"x\"}", "msb_spec"},
		{"{\"msb_spec\":1}", "no image"},
		{"{\"msb_spec\":1,\"image\":5}", "image"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"image\":\"y\"}", "not JSON"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"resources\":{\"cpus\":\"2\"}}",
		 "resources.cpus"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"resources\":{\"cpus\":-1}}", "--cpus"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"network\":{\"rules\":[\"alow@any\"]}}", "alow"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"volumes\":[{\"source\":\"/a:b\",\"target\":\"/"
		 "x\"}]}",
		 "volumes"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"volumes\":[{\"source\":\"/tmp\",\"target\":"
		 "\"/x\",\"identity\":\"maybe\"}]}",
		 "identity"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"volumes\":[{\"source\":\"/tmp\",\"target\":"
		 "\"/x\",\"locks\":\"all\"}]}",
		 "locks"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"process\":{\"env\":[\"NOEQUALS\"]}}",
		 "process.env"},
		{"{\"msb_spec\":1,\"image\":\"x\",\"command\":[1]}", "command"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct msb_spec *s = NULL;
		struct msb_error err = MSB_ERROR_INIT;
		int r = msb_spec_from_json(cases[i].json, strlen(cases[i].json), &s, &err);
		if (r >= 0)
			fail_msg("accepted: %s", cases[i].json);
		assert_null(s);
		if (!strstr(err.msg, cases[i].token))
			fail_msg("%s: message '%s' lacks '%s'", cases[i].json, err.msg,
				 cases[i].token);
	}
	char *huge = malloc(MSB_SPEC_JSON_MAX + 2);
	memset(huge, ' ', MSB_SPEC_JSON_MAX + 1);
	huge[MSB_SPEC_JSON_MAX + 1] = '\0';
	struct msb_spec *s = NULL;
	assert_int_equal(msb_spec_from_json(huge, MSB_SPEC_JSON_MAX + 1, &s, NULL), -E2BIG);
	free(huge);
}

static void test_repeat_limits(void **state)
{
	(void)state;
	struct msb_spec *s = msb_spec_new();
	struct msb_error err = MSB_ERROR_INIT;
	int r = 0;
	for (int i = 0; i < 300 && r == 0; i++) {
		char kv[32];
		snprintf(kv, sizeof(kv), "K%d=v", i);
		r = msb_spec_set(s, "env", kv, &err);
	}
	assert_int_equal(r, -E2BIG);
	assert_non_null(strstr(err.msg, "too many"));
	msb_spec_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_explicit_egress_has_no_default_rules),
		cmocka_unit_test(test_brief_examples),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_volume_options),
		cmocka_unit_test(test_secret_value_never_in_spec),
		cmocka_unit_test(test_secret_value_given_directly),
		cmocka_unit_test(test_secret_sources_in_order),
		cmocka_unit_test(test_secret_value_memory_is_guarded),
		cmocka_unit_test(test_secret_values_fd),
		cmocka_unit_test(test_config_secrets_private),
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_json_bad),
		cmocka_unit_test(test_repeat_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
