#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The msb command line as a user meets it: good commands, and a battery of
malformed ones that must each fail with exit status 2, one line on stderr
naming the bad token, and nothing created."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

MSB = sys.argv[1]
FIXTURES = sys.argv[2]


def run(*args, env=None, home=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MSB_")}
    e["MSB_HOME"] = home or HOME
    e["MSB_CONFIG"] = "/dev/null"
    if env:
        e.update(env)
    return subprocess.run([MSB, *args], capture_output=True, text=True, env=e, timeout=60)


def home_contents():
    found = []
    for root, dirs, files in os.walk(HOME):
        for n in dirs + files:
            p = os.path.relpath(os.path.join(root, n), HOME)
            # The store's own skeleton is not sandbox state.
            if p not in ("sandboxes", "lock"):
                found.append(p)
    return found


HOME = None

# (argv after `msb`, a token the one-line message must contain)
BAD = [
    (["creat"], "did you mean 'create'"),
    (["frobnicate"], "'frobnicate'"),
    (["create"], "no image"),
    (["create", "python", "--memory", "12X"], "'X'"),
    (["create", "python", "--memory", "1.5G"], "fraction"),
    (["create", "python", "--memory", "32M"], "out of range"),
    (["create", "python", "--memory"], "--memory needs a value"),
    (["create", "python", "--cpus", "0"], "'0'"),
    (["create", "python", "--cpus", "two"], "'two'"),
    (["create", "python", "--cpus", "65"], "'65'"),
    (["create", "python", "--idle-timeout", "5"], "no unit"),
    (["create", "python", "--idle-timeout", "5min"], "'min'"),
    (["create", "python", "--max-duration", "1m1h"], "largest to smallest"),
    (["create", "python", "--name", "bad/name"], "'bad/name'"),
    (["create", "python", "--name", "-x"], "'-x'"),
    (["create", "python", "--nme", "x"], "did you mean '--name'"),
    (["create", "python", "--no-netz"], "did you mean '--no-net'"),
    (["create", "python", "-Z"], "'-Z'"),
    (["create", "python", "--no-net=1"], "takes no value"),
    (["create", "python", "--net-rule", "alow@public"], "did you mean 'allow'"),
    (["create", "python", "--net-rule", "allow@publc"], "did you mean 'public'"),
    (["create", "python", "--net-rule", "allow:egres@public"], "did you mean 'egress'"),
    (["create", "python", "--net-rule", "allow@public:tpc:443"], "did you mean 'tcp'"),
    (["create", "python", "--net-rule", "allow@public:tcp:70000"], "'70000'"),
    (["create", "python", "--net-rule", "allow@public:tcp:90-80"], "'90-80'"),
    (["create", "python", "--net-rule", "allow@public:icmp:80"], "icmp"),
    (["create", "python", "--net-rule", "allow@10.0.0.1/8"], "10.0.0.0/8"),
    (["create", "python", "--net-rule", "allow@300.1.1.1"], "'300.1.1.1'"),
    (["create", "python", "--net-rule", "allow@[2001:db8::/129]"], "2001:db8::/129"),
    (["create", "python", "--net-rule", "allow@public,,deny@meta"], "empty"),
    (["create", "python", "--net-rule", "allow@foo"], "'foo'"),
    (["create", "python", "--net-default-egress", "maybe"], "'maybe'"),
    (["create", "python", "--no-net", "--net-rule", "deny@meta"], "--no-net"),
    (["create", "python", "--no-net", "-p", "8080:80"], "--no-net"),
    (["create", "python", "-p", "8080"], "'8080'"),
    (["create", "python", "-p", "8080:0"], "bad guest port"),
    (["create", "python", "-p", "8080:80/sctp"], "'sctp'"),
    (["create", "python", "-p", "8080:80", "-p", "8080:81"], "already published"),
    (["create", "python", "--user", "Root!"], "'Root!'"),
    (["create", "python", "--security", "restricte"], "did you mean 'restricted'"),
    (["create", "python", "-v", "/tmp"], "HOST:GUEST"),
    (["create", "python", "-v", "/tmp:data"], "not absolute"),
    (["create", "python", "-v", "/tmp:/"], "over the guest's /"),
    (["create", "python", "-v", "/tmp:/x/../y"], "'..'"),
    (["create", "python", "-v", "/tmp:/data:rw,ro"], "twice"),
    (["create", "python", "-v", "/tmp:/data:r0"], "'r0'"),
    (["create", "python", "-v", "/definitely/not/here:/data"], "/definitely/not/here"),
    (["create", "python", "-v", "/tmp:/proc"], "API filesystem"),
    (["create", "python", "-v", "/tmp:/run/x"], "API filesystem"),
    (["create", "python", "-v", "/tmp:/.msb"], "reserved for the guest agent"),
    (["create", "python", "-v", "/etc/hostname:/data"], "not a directory"),
    (["create", "python", "-v", "/tmp:/data:identity=no"], "'identity=no'"),
    (["create", "python", "-v", "nosuchvol:/data"], "volume 'nosuchvol' does not exist"),
    (["run", "--rootfs", "/tmp", "-v", "nosuchvol:/data", "--", "true"], "does not exist"),
    (["volume"], "no command given"),
    (["volume", "creat", "x"], "did you mean 'create'"),
    (["volume", "create"], "expected one NAME"),
    (["volume", "create", "bad/name"], "invalid volume name 'bad/name'"),
    (["volume", "create", "a", "b"], "expected one NAME"),
    (["volume", "ls", "extra"], "'extra'"),
    (["volume", "ls", "--jsn"], "'--jsn'"),
    (["volume", "inspect"], "expected one NAME"),
    (["volume", "rm"], "no volume named"),
    (["volume", "rm", "-x", "v"], "'-x'"),
    (["create", "python", "--secret", "OPENAI_API_KEY=sk-live-123@api.openai.com"],
     "inline value is refused"),
    (["create", "python", "--secret", "OPENAI_API_KEY"], "no @HOST"),
    (["create", "python", "--secret", "OPENAI_API_KEY@"], "bad host"),
    (["create", "python", "--secret", "MSB_SURELY_UNSET_KEY@api.example.com"],
     "MSB_SURELY_UNSET_KEY is not set"),
    (["create", "python", "--secret-file", "NOPE=/etc/hostname"], "no --secret NOPE@HOST"),
    (["create", "python", "-e", "1X=y"], "'1X'"),
    (["create", "python", "-w", "relative/dir"], "not absolute"),
    (["create", "python", "--hypervisor", "kvmm"], "did you mean 'kvm'"),
    (["create", "python", "--net-backend", "nope"], "'nope'"),
    (["create", "python", "--kernel", "/no/such/bzImage"], "/no/such/bzImage"),
    (["create", "python", "--rootfs", "/tmp"], "both"),
    (["create", "python", "extra"], "'extra'"),
    (["create", "python", "--", "ls"], "'--'"),
    (["create", "python", "--json"], "--json is only for --dry-run"),
    (["run", "python", "--"], "no command after '--'"),
    (["run", "--rootfs", "/no/such/root", "--", "true"], "/no/such/root"),
    (["plugins", "--jsn"], "'--jsn'"),
    (["version", "extra"], "'extra'"),
]


class Cli(unittest.TestCase):
    def setUp(self):
        global HOME
        self._tmp = tempfile.TemporaryDirectory(prefix="msb-cli-")
        HOME = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def test_bad_input_battery(self):
        for argv, token in BAD:
            # --dry-run too: a dry run validates everything a create would.
            dry = argv[0] in ("create", "run") and "--json" not in argv
            for extra in ([], ["--dry-run"]) if dry else ([],):
                args = argv[:1] + extra + argv[1:] if extra else argv
                with self.subTest(args=args):
                    r = run(*args)
                    self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
                    lines = r.stderr.splitlines()
                    self.assertEqual(len(lines), 1, f"{args}: {r.stderr!r}")
                    self.assertTrue(lines[0].startswith("msb: "), lines[0])
                    self.assertIn(token, lines[0], args)
                    self.assertEqual(r.stdout, "")
                    self.assertEqual(home_contents(), [], args)

    def test_volumes(self):
        # No volume store yet: an empty list, and nothing is created by listing.
        r = run("volume", "ls", "--json")
        self.assertEqual((r.returncode, json.loads(r.stdout)), (0, []), r.stderr)
        r = run("volume", "create", "cache")
        self.assertEqual((r.returncode, r.stdout), (0, "cache\n"), r.stderr)
        data = os.path.join(HOME, "volumes", "cache", "data")
        self.assertTrue(os.path.isdir(data))
        r = run("volume", "create", "cache")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("already exists", r.stderr)
        r = run("volume", "inspect", "cache")
        self.assertEqual(r.returncode, 0, r.stderr)
        v = json.loads(r.stdout)
        self.assertEqual((v["name"], v["path"], v["in_use_by"]), ("cache", data, []))
        self.assertRegex(v["created"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        # -v NAME:GUEST resolves to the volume; --dry-run shows it as a named volume.
        root = tempfile.mkdtemp(prefix="msb-cli-root-")
        self.addCleanup(os.rmdir, root)
        r = run("create", "--rootfs", root, "--name", "box", "-v", "cache:/cache:ro",
                "-v", f"{root}:/src:identity=off", "--dry-run", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        spec = json.loads(r.stdout)
        self.assertEqual(spec["volumes"][0], {"type": "volume", "source": "cache",
                                              "target": "/cache", "read_only": True,
                                              "noexec": False, "identity": "strict",
                                              "locks": "guest"})
        self.assertEqual(spec["volumes"][1]["identity"], "off")
        h = run("create", "--rootfs", root, "-v", "cache:/cache", "--dry-run")
        self.assertIn("volume cache -> /cache (rw)", h.stdout)
        # A (stopped) sandbox that names it: rm refuses, naming it; inspect and ls show it.
        os.makedirs(os.path.join(HOME, "sandboxes", "box"), mode=0o700)
        with open(os.path.join(HOME, "sandboxes", "box", "spec.json"), "w") as f:
            f.write(r.stdout)
        r = run("volume", "inspect", "cache")
        self.assertEqual(json.loads(r.stdout)["in_use_by"],
                         [{"sandbox": "box", "status": "stopped", "read_only": True}])
        r = run("volume", "ls")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.splitlines()[1], r"^cache\s+\S+Z\s+box$")
        r = run("volume", "rm", "cache")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("used by sandbox box (stopped)", r.stderr)
        self.assertTrue(os.path.isdir(data))
        # Files in it go with it under -f; the name is free again.
        with open(os.path.join(data, "f"), "w") as f:
            f.write("x")
        r = run("volume", "rm", "-f", "cache")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(HOME, "volumes", "cache")))
        self.assertEqual(os.listdir(os.path.join(HOME, "volumes")), ["lock"])
        for argv in (["volume", "inspect", "cache"], ["volume", "rm", "cache"]):
            r = run(*argv)
            self.assertEqual(r.returncode, 1, argv)
            self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
            self.assertIn("no volume named 'cache'", r.stderr)
        r = run("create", "--rootfs", root, "-v", "cache:/cache", "--dry-run")
        self.assertEqual(r.returncode, 2)
        self.assertIn("volume 'cache' does not exist", r.stderr)
        r = run("volume", "--help")
        self.assertEqual(r.returncode, 0)
        for word in ("create", "ls", "inspect", "rm", "-v NAME:/guest/path"):
            self.assertIn(word, r.stdout)
        self.assertIn("volume", run("--help").stdout)

    def test_secret_value_not_echoed(self):
        r = run("create", "python", "--secret", "K=hunter2-sekrit@x.example.com")
        self.assertEqual(r.returncode, 2)
        self.assertNotIn("hunter2", r.stderr)

    def test_brief_examples_dry_run(self):
        data = tempfile.mkdtemp(prefix="msb-cli-data-")
        self.addCleanup(os.rmdir, data)
        cases = [
            ["create", "python", "--name", "isolated", "--no-net"],
            ["create", "alpine", "--name", "worker", "--net-default-egress", "deny",
             "--net-rule", "allow@public:tcp:443,allow@host:udp:53"],
            ["create", "python", "--name", "worker", "--user", "app", "--security", "restricted"],
            ["create", "python", "-v", f"{data}:/data:ro", "--secret",
             "OPENAI_API_KEY@api.openai.com"],
            ["create", "python", "--cpus", "2", "--memory", "1G", "--idle-timeout", "5m",
             "--max-duration", "1h"],
        ]
        for argv in cases:
            with self.subTest(argv=argv):
                r = run(*argv, "--dry-run", "--json", env={"OPENAI_API_KEY": "sk-test-value"})
                self.assertEqual(r.returncode, 0, r.stderr)
                spec = json.loads(r.stdout)
                self.assertEqual(spec["msb_spec"], 1)
                self.assertNotIn("sk-test-value", r.stdout)
                h = run(*argv, "--dry-run", env={"OPENAI_API_KEY": "sk-test-value"})
                self.assertEqual(h.returncode, 0, h.stderr)
                self.assertIn("dry run: nothing was created", h.stdout)
        r = run(*cases[1], "--dry-run", "--json")
        rules = [x["rule"] for x in json.loads(r.stdout)["network"]["rules"]]
        self.assertEqual(rules, ["allow@public:tcp:443", "allow@host:udp:53"])
        r = run(*cases[4], "--dry-run", "--json")
        spec = json.loads(r.stdout)
        self.assertEqual(spec["resources"], {"cpus": 2, "memory": 1 << 30})
        self.assertEqual(spec["lifetime"], {"idle_timeout_ms": 300000, "max_duration_ms": 3600000})
        r = run(*cases[3], "--dry-run", "--json", env={"OPENAI_API_KEY": "x"})
        spec = json.loads(r.stdout)
        self.assertEqual(spec["volumes"][0]["source"], os.path.realpath(data))
        self.assertTrue(spec["volumes"][0]["read_only"])
        self.assertEqual(home_contents(), [])

    def test_run_command_and_equals_forms(self):
        r = run("run", "--memory=256M", "-v/tmp:/t", "-e", "A=1", "python", "--dry-run", "--json",
                "--", "python3", "-c", "print('--memory 1')")
        self.assertEqual(r.returncode, 0, r.stderr)
        spec = json.loads(r.stdout)
        self.assertEqual(spec["command"], ["python3", "-c", "print('--memory 1')"])
        self.assertEqual(spec["resources"]["memory"], 256 << 20)

    def test_create_without_kvm_creates_nothing(self):
        r = run("create", "python", "--name", "box", "--no-net",
                env={"MSB_KVM_DEVICE": "/nonexistent/kvm"})
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn("/nonexistent/kvm", r.stderr)
        self.assertIn("nothing was created", r.stderr)
        self.assertEqual(home_contents(), [])

    def test_help_and_version(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for c in ("create", "run", "plugins", "version"):
            self.assertIn(c, r.stdout)
        r = run("create", "--help")
        self.assertEqual(r.returncode, 0)
        for flag in ("--name", "--cpus", "--memory", "--no-net", "--net-default-egress",
                     "--net-rule", "--publish", "--user", "--security", "--volume", "--secret",
                     "--env", "--workdir", "--idle-timeout", "--max-duration", "--hypervisor",
                     "--net-backend", "--kernel", "--dry-run"):
            self.assertIn(flag, r.stdout)
        r = run("version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^msb \d+\.\d+\.\d+ \(plugin ABI 1\.4\)$")
        self.assertEqual(run().returncode, 2)

    def test_plugins_lists_loaded_and_refused(self):
        r = run("plugins", "--json", env={"MSB_PLUGIN_PATH": FIXTURES})
        self.assertEqual(r.returncode, 0, r.stderr)
        data = json.loads(r.stdout)
        self.assertEqual(data["search_path"][0], FIXTURES)
        by_file = {os.path.basename(m["file"]): m for m in data["modules"]}
        # The project's own modules load from the build tree.
        names = {(m["kind"], m["name"]) for m in data["modules"] if m["status"] == "loaded"}
        for kn in [("hypervisor", "kvm"), ("network", "netfilter"), ("storage", "virtiofs"),
                   ("secrets", "tls-intercept"), ("hypervisor", "fx-good")]:
            self.assertIn(kn, names)
        expect = {
            "fx-bad-major.so": ["fx-major", "ABI 2.0", "ABI 1.4"],
            "fx-newer-minor.so": ["fx-minor", "ABI 1.7", "ABI 1.4"],
            "fx-size-big.so": ["fx-big", "larger than"],
            "fx-size-small.so": ["fx-small", "too small"],
            "fx-garbage.so": ["not a loadable module"],
            "fx-no-symbol.so": ["msb_plugin_entry_v1"],
            "fx-zz-duplicate.so": ["duplicate", "fx-good.so"],
        }
        for f, needles in expect.items():
            m = by_file[f]
            self.assertEqual(m["status"], "refused", f)
            self.assertIn(os.path.join(FIXTURES, f), m["reason"])
            for n in needles:
                self.assertIn(n, m["reason"], f)
        # The table form lists refusals with their reasons.
        r = run("plugins", env={"MSB_PLUGIN_PATH": FIXTURES})
        self.assertIn("refused:", r.stdout)
        self.assertIn("fx-bad-major.so", r.stdout)
        # Commands that load modules warn about refusals, one line each, and go on.
        r = run("create", "python", "--hypervisor", "fx-good", "--dry-run",
                env={"MSB_PLUGIN_PATH": FIXTURES})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning: refused plugin", r.stderr)
        self.assertIn("hypervisor fx-good 9.9.9", r.stdout)

    def test_config_file_plugin_path(self):
        cfg = os.path.join(HOME, "config")
        with open(cfg, "w") as f:
            f.write(f"# test\nplugin_path = {FIXTURES}\n")
        r = run("plugins", "--json", env={"MSB_CONFIG": cfg})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(FIXTURES, json.loads(r.stdout)["search_path"])
        with open(cfg, "w") as f:
            f.write("this is not a config\n")
        r = run("plugins", env={"MSB_CONFIG": cfg})
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{cfg}:1", r.stderr)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
