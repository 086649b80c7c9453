#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Secret values given directly (docs/secrets.md, "Where the value comes
from"): the C SDK's msb_spec_set_secret_value and msb_create, msb's
--secret-values-fd and --spec, and the config file's [secrets].  Without a
VM: what crosses each boundary, and the errors.  tests/e2e/secrets.sh boots
a sandbox made through the SDK and checks the value reaches its host.

    test_sdk.py MSB SDK_PROGRAM"""
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

MSB = sys.argv[1]
SDK = sys.argv[2]
VALUE = "sk-direct-4c1d-value"


def clean_env(home, **extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MSB_")}
    e.pop("TOKX", None)
    e["MSB_HOME"] = home
    e["MSB_CONFIG"] = "/dev/null"
    e.update(extra)
    return e


class Sdk(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="msb-sdk-")
        self.dir = self._tmp.name
        self.home = os.path.join(self.dir, "home")
        os.mkdir(self.home)

    def tearDown(self):
        self._tmp.cleanup()

    def msb(self, *args, env=None, **kw):
        return subprocess.run([MSB, *args], capture_output=True, env=env or clean_env(self.home),
                              timeout=60, **kw)

    def sandboxes(self):
        d = os.path.join(self.home, "sandboxes")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def test_sdk_hands_the_value_over_fd_3_only(self):
        """What msb_create gives the msb program: the spec on stdin with no
        value in it, the value on fd 3, nothing in argv or the environment.
        The program here records what it got (the real one is used below
        and in e2e)."""
        rec = os.path.join(self.dir, "rec")
        prog = os.path.join(self.dir, "msb-recorder")
        with open(prog, "w") as f:
            f.write(textwrap.dedent(f"""\
                #!/usr/bin/python3
                import json, os, sys
                fd3 = b""
                try:
                    while True:
                        b = os.read(3, 65536)
                        if not b:
                            break
                        fd3 += b
                except OSError:
                    fd3 = None
                with open({rec!r} + "." + sys.argv[1], "w") as f:
                    json.dump({{"argv": sys.argv[1:], "stdin": sys.stdin.read(),
                               "fd3": None if fd3 is None else fd3.hex(),
                               "env": dict(os.environ)}}, f)
                if sys.argv[1] == "create":
                    print("rec-sandbox")
                """))
        os.chmod(prog, 0o755)
        r = subprocess.run([SDK, "rootfs=/", "secret=TOKX@api.x.test", "value=TOKX", "--",
                            "echo", "hi"], input=VALUE.encode() + b"\n", capture_output=True,
                           env=clean_env(self.home, MSB_PROGRAM=prog), timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"created rec-sandbox\n")
        with open(rec + ".create") as f:
            got = json.load(f)
        self.assertEqual(got["argv"], ["create", "--spec", "-", "--secret-values-fd", "3"])
        self.assertEqual(bytes.fromhex(got["fd3"]), b"TOKX=" + VALUE.encode() + b"\0")
        spec = json.loads(got["stdin"])
        self.assertEqual(spec["secrets"][0]["env"], "TOKX")
        self.assertEqual(spec["secrets"][0]["source"], "value")
        self.assertNotIn(VALUE, got["stdin"])
        self.assertNotIn(VALUE, json.dumps(got["env"]))
        with open(rec + ".exec") as f:
            got = json.load(f)
        self.assertEqual(got["argv"], ["exec", "rec-sandbox", "--", "echo", "hi"])
        self.assertIsNone(got["fd3"], "fd 3 is open in msb exec")
        with open(rec + ".rm") as f:
            self.assertEqual(json.load(f)["argv"], ["rm", "-f", "rec-sandbox"])

    def test_sdk_errors_are_msbs_one_line(self):
        env = clean_env(self.home, MSB_PROGRAM=MSB)
        r = subprocess.run([SDK, "rootfs=/", "secret=TOKX@api.x.test", "value=TOKX",
                            "volume=nosuchvol:/data"], input=VALUE.encode(),
                           capture_output=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode().splitlines(),
                         ["sdk: --volume 'nosuchvol:/data': volume 'nosuchvol' does not exist "
                          "(expected a volume msb volume ls lists; msb volume create nosuchvol "
                          "makes it)"])
        self.assertEqual(self.sandboxes(), [])
        # Bound first; never echoed.
        r = subprocess.run([SDK, "rootfs=/", "value=TOKX"], input=VALUE.encode(),
                           capture_output=True, env=env, timeout=60)
        self.assertIn(b"no secret of that name is bound", r.stderr)
        self.assertNotIn(VALUE.encode(), r.stderr)
        r = subprocess.run([SDK, "rootfs=/"], capture_output=True, timeout=60,
                           env=clean_env(self.home, MSB_PROGRAM="/no/such/msb"))
        self.assertIn(b"the msb program '/no/such/msb'", r.stderr)

    def test_values_fd(self):
        r = self.msb("create", "--dry-run", "--json", "--rootfs", "/", "--secret",
                     "TOKX@api.x.test", "--secret-values-fd", "3",
                     pass_fds=[self.fd_with(b"TOKX=" + VALUE.encode() + b"\0")])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["secrets"][0]["source"], "value")
        self.assertNotIn(VALUE.encode(), r.stdout + r.stderr)
        for data, token in [(b"TOKX=" + VALUE.encode(), b"not ended by a NUL"),
                            (b"TOKX\0", b"has no '='"), (b"TOKX=\0", b"it is empty"),
                            (b"TOKX=" + b"v" * 9000 + b"\0", b"expected at most 8192")]:
            with self.subTest(data=data[:12]):
                r = self.msb("create", "--dry-run", "--rootfs", "/", "--secret",
                             "TOKX@api.x.test", "--secret-values-fd", "3",
                             pass_fds=[self.fd_with(data)])
                self.assertEqual(r.returncode, 2)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertIn(token, r.stderr)
                self.assertNotIn(VALUE.encode(), r.stderr)
        r = self.msb("create", "--dry-run", "--rootfs", "/", "--secret-values-fd", "77")
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--secret-values-fd '77': not an open file descriptor", r.stderr)

    def fd_with(self, data):
        """A pipe holding data, its read end open as fd 3 here."""
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        if r != 3:
            os.dup2(r, 3)
            os.close(r)
        self.addCleanup(lambda: os.close(3) if _isopen(3) else None)
        return 3

    def test_spec_file(self):
        env = clean_env(self.home, TOKX="from-env")
        r = self.msb("create", "--dry-run", "--json", "--rootfs", "/", "--name", "s1",
                     "--cpus", "2", "--secret", "TOKX@api.x.test", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        path = os.path.join(self.dir, "spec.json")
        with open(path, "wb") as f:
            f.write(r.stdout)
        again = self.msb("create", "--dry-run", "--json", "--spec", path, env=env)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(json.loads(again.stdout), json.loads(r.stdout))
        stdin = self.msb("create", "--dry-run", "--json", "--spec", "-", env=env,
                         input=r.stdout)
        self.assertEqual(json.loads(stdin.stdout), json.loads(r.stdout))
        for args, token in [(["--spec", path, "--cpus", "1"], b"cannot be combined with --cpus"),
                            (["--spec", path, "python"], b"cannot be combined with python"),
                            (["--spec", "/no/such.json"], b"'/no/such.json'"),
                            (["--spec", path, "--spec", path], b"--spec given twice")]:
            with self.subTest(args=args):
                r = self.msb("create", "--dry-run", *args, env=env)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertIn(token, r.stderr)
        # The spec's own checks: without the value, a spec is refused as options are.
        r = self.msb("create", "--dry-run", "--spec", path)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"TOKX is not set", r.stderr)
        self.assertEqual(self.sandboxes(), [])

    def test_config_secrets(self):
        conf = os.path.join(self.dir, "config")
        with open(conf, "w") as f:
            f.write(f"[secrets]\nTOKX = {VALUE}\n")
        os.chmod(conf, 0o644)
        env = clean_env(self.home, MSB_CONFIG=conf)
        args = ["create", "--dry-run", "--json", "--rootfs", "/", "--secret", "TOKX@api.x.test"]
        r = self.msb(*args, env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"holds [secrets] but others can read or write it (mode 0644", r.stderr)
        self.assertNotIn(VALUE.encode(), r.stderr)
        os.chmod(conf, 0o600)
        r = self.msb(*args, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["secrets"][0]["source"], "config")
        self.assertNotIn(VALUE.encode(), r.stdout + r.stderr)
        # The environment comes first, a value given directly before both.
        env["TOKX"] = "from-env"
        r = self.msb(*args, env=env)
        self.assertEqual(json.loads(r.stdout)["secrets"][0]["source"], "env")
        r = self.msb(*args, "--secret-values-fd", "3", env=env,
                     pass_fds=[self.fd_with(b"TOKX=direct\0")])
        self.assertEqual(json.loads(r.stdout)["secrets"][0]["source"], "value")
        self.assertEqual(stat.S_IMODE(os.stat(conf).st_mode), 0o600)


def _isopen(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
