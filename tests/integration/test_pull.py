#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""msb image pull against real registries on loopback (tests/registry):
plain, TLS, basic and token auth, multi-arch indexes, media types and
compressions, pins, concurrency, and faults injected by a FaultProxy.  Every
failing pull must exit 1 with one line on stderr and leave the store as a
store must be: nothing in images/tmp, every blob hashing to its name.

Usage: test_pull.py MSB [unittest args]"""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "registry"))
import registry as R  # noqa: E402

MSB = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "msb"

TMP = None
CA = None
REG = {}       # mode -> Registry
DIGESTS = {}   # (mode, repo) -> pushed manifest (or index) digest


def setUpModule():
    global TMP, CA
    TMP = tempfile.mkdtemp(prefix="msb-test-pull-")
    CA = R.CertAuthority(os.path.join(TMP, "ca"))
    for mode in ("plain", "tls", "basic", "token"):
        REG[mode] = R.Registry(mode, os.path.join(TMP, "reg-" + mode), ca=CA).start()
    REG["token-private"] = R.Registry("token", os.path.join(TMP, "reg-token-private"), ca=CA,
                                      anonymous_pull=False).start()
    plain = REG["plain"]
    images = [("busybox", "busybox", {}),
              ("busybox-zstd", "busybox", {"compression": "zstd"}),
              ("busybox-docker", "busybox", {"media": "docker"}),
              ("multi", "multiarch", {}),
              ("baddiff", "bad-diffid", {}),
              ("badlayer", "bad-layer-digest", {})]
    for repo, kind, kw in images:
        DIGESTS[("plain", repo)] = R.build_and_push(kind, plain, repo, workdir=TMP, **kw)
    for mode in ("tls", "basic", "token", "token-private"):
        DIGESTS[(mode, "busybox")] = R.build_and_push("busybox", REG[mode], "busybox",
                                                      workdir=TMP)


def tearDownModule():
    for reg in REG.values():
        reg.stop()
    shutil.rmtree(TMP, ignore_errors=True)


def new_home():
    return tempfile.mkdtemp(prefix="home-", dir=TMP)


def msb(home, *args, env=None, input=None, wait=True):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("MSB_") and k.lower() not in ("http_proxy", "https_proxy",
                                                           "all_proxy", "docker_config")}
    e["MSB_HOME"] = home
    e["HOME"] = home  # no ~/.docker/config.json of the machine's user
    e["NO_PROXY"] = "*"
    if env:
        e.update(env)
    if not wait:
        return subprocess.Popen([MSB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=e, stdin=subprocess.DEVNULL)
    return subprocess.run([MSB, *args], capture_output=True, text=True, env=e, input=input,
                          timeout=120)


def blob_digests(manifest_bytes):
    m = json.loads(manifest_bytes)
    return [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]


def manifest_of(reg, repo, ref):
    ctype, body, _ = reg.client(push=True).get_manifest(repo, ref)
    return body


def blob_path(repo, digest):
    return "/v2/%s/blobs/%s" % (repo, digest)


class PullCase(unittest.TestCase):
    def pull(self, home, ref, *args, **kw):
        return msb(home, "pull", ref, *args, **kw)

    def assertPulled(self, p, ref, digest=None):
        self.assertEqual(p.returncode, 0, "stdout=%r stderr=%r" % (p.stdout, p.stderr))
        line = p.stdout.strip()
        self.assertTrue(line.startswith("pulled %s@sha256:" % ref), line)
        got = line.rsplit("@", 1)[1]
        if digest:
            self.assertEqual(got, digest)
        return got

    def assertStoreSound(self, home):
        images = os.path.join(home, "images")
        tmp = os.path.join(images, "tmp")
        if os.path.isdir(tmp):
            self.assertEqual(os.listdir(tmp), [], "leftovers in images/tmp")
        blobs = os.path.join(images, "blobs", "sha256")
        if os.path.isdir(blobs):
            for name in os.listdir(blobs):
                with open(os.path.join(blobs, name), "rb") as f:
                    self.assertEqual(hashlib.sha256(f.read()).hexdigest(), name,
                                     "blob %s does not hash to its name" % name)

    def assertFailed(self, p, home, *needles):
        self.assertEqual(p.returncode, 1, "stdout=%r stderr=%r" % (p.stdout, p.stderr))
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, "expected one line on stderr: %r" % p.stderr)
        if os.environ.get("MSB_TEST_VERBOSE"):
            sys.stderr.write("\n    " + lines[0] + "\n")
        for n in needles:
            self.assertIn(n, lines[0])
        self.assertEqual(p.stdout, "")
        self.assertStoreSound(home)
        return lines[0]

    def assertHasImage(self, home, mdigest):
        blobs = os.path.join(home, "images", "blobs", "sha256")
        with open(os.path.join(blobs, mdigest[7:]), "rb") as f:
            for d in blob_digests(f.read()):
                self.assertTrue(os.path.exists(os.path.join(blobs, d[7:])), d)

    def pins(self, home):
        try:
            with open(os.path.join(home, "images", "refs.json")) as f:
                return json.load(f)["refs"]
        except FileNotFoundError:
            return {}


class Transports(PullCase):
    def test_plain_needs_insecure(self):
        reg, home = REG["plain"], new_home()
        ref = reg.ref("busybox")
        p = self.pull(home, ref)
        self.assertFailed(p, home, "--insecure")
        self.assertEqual(self.pins(home), {})
        d = self.assertPulled(self.pull(home, ref, "--insecure"), ref, DIGESTS[("plain", "busybox")])
        self.assertHasImage(home, d)
        self.assertEqual(self.pins(home), {ref: d})
        self.assertStoreSound(home)
        # -q prints only the digest.
        p = self.pull(home, ref, "--insecure", "-q")
        self.assertEqual(p.stdout.strip(), d)

    def test_tls_needs_ca(self):
        reg, home = REG["tls"], new_home()
        ref = reg.ref("busybox")
        self.assertFailed(self.pull(home, ref), home, "not trusted", "--ca-certs")
        # --insecure never turns off verification of an https registry.
        self.assertFailed(self.pull(home, ref, "--insecure"), home)
        d = self.assertPulled(self.pull(home, ref, "--ca-certs", reg.cacert), ref,
                              DIGESTS[("tls", "busybox")])
        self.assertHasImage(home, d)
        # A directory of CA files works too.
        home2 = new_home()
        self.assertPulled(self.pull(home2, ref, "--ca-certs", reg.cert_dir), ref, d)


class Auth(PullCase):
    def test_basic_login(self):
        reg, home = REG["basic"], new_home()
        ref = reg.ref("busybox")
        self.assertFailed(self.pull(home, ref, "--ca-certs", reg.cacert), home,
                          "requires credentials", "msb registry login")
        auth = os.path.join(home, "auth.json")
        # Wrong password: refused by the registry, nothing stored.
        p = msb(home, "registry", "login", "--username", reg.user, "--password-stdin",
                "--ca-certs", reg.cacert, reg.host, input="wrong\n")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertFalse(os.path.exists(auth))
        p = msb(home, "registry", "login", "--username", reg.user, "--password-stdin",
                "--ca-certs", reg.cacert, reg.host, input=reg.password + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(os.stat(auth).st_mode & 0o777, 0o600)
        with open(auth) as f:
            entry = json.load(f)["auths"][reg.host]["auth"]
        self.assertEqual(base64.b64decode(entry).decode(), "%s:%s" % (reg.user, reg.password))
        d = self.assertPulled(self.pull(home, ref, "--ca-certs", reg.cacert), ref,
                              DIGESTS[("basic", "busybox")])
        self.assertHasImage(home, d)
        p = msb(home, "registry", "logout", reg.host)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(auth) as f:
            self.assertNotIn(reg.host, json.load(f)["auths"])
        self.assertFailed(self.pull(home, ref, "--ca-certs", reg.cacert), home,
                          "requires credentials")

    def test_basic_docker_config(self):
        reg, home = REG["basic"], new_home()
        ref = reg.ref("busybox")
        dc = os.path.join(home, "docker")
        os.makedirs(dc)

        def write(password):
            cred = base64.b64encode(("%s:%s" % (reg.user, password)).encode()).decode()
            with open(os.path.join(dc, "config.json"), "w") as f:
                json.dump({"auths": {"https://" + reg.host: {"auth": cred}},
                           "credHelpers": {"gcr.io": "gcloud"}}, f)

        write("wrong")
        self.assertFailed(self.pull(home, ref, "--ca-certs", reg.cacert,
                                    env={"DOCKER_CONFIG": dc}), home,
                          "refused the credentials of user '%s'" % reg.user)
        write(reg.password)
        self.assertPulled(self.pull(home, ref, "--ca-certs", reg.cacert,
                                    env={"DOCKER_CONFIG": dc}), ref, DIGESTS[("basic", "busybox")])

    def test_token_anonymous(self):
        reg, home = REG["token"], new_home()
        ref = reg.ref("busybox")
        self.assertPulled(self.pull(home, ref, "--ca-certs", reg.cacert), ref,
                          DIGESTS[("token", "busybox")])

    def test_token_credentials(self):
        reg, home = REG["token-private"], new_home()
        ref = reg.ref("busybox")
        self.assertFailed(self.pull(home, ref, "--ca-certs", reg.cacert), home)
        p = msb(home, "registry", "login", "-u", reg.user, "--password", "nope",
                "--ca-certs", reg.cacert, reg.host)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("refused the credentials", p.stderr)
        p = msb(home, "registry", "login", "-u", reg.user, "--password-stdin",
                "--ca-certs", reg.cacert, reg.host, input=reg.password)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertPulled(self.pull(home, ref, "--ca-certs", reg.cacert), ref,
                          DIGESTS[("token-private", "busybox")])


class Images(PullCase):
    def test_multiarch(self):
        reg, home = REG["plain"], new_home()
        ref = reg.ref("multi")
        index = json.loads(manifest_of(reg, "multi", "latest"))
        by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
        d = self.assertPulled(self.pull(home, ref, "--insecure"), ref, by_arch["amd64"])
        self.assertHasImage(home, d)
        d2 = self.assertPulled(self.pull(home, ref, "--insecure", "--platform",
                                         "linux/arm64/v8"), ref, by_arch["arm64"])
        self.assertHasImage(home, d2)
        # Each platform has its own pin: pulling arm64 did not move amd64's.
        pins = self.pins(home)
        self.assertEqual(pins[ref], d)
        self.assertEqual(pins[ref + "#linux/arm64/v8"], d2)
        p = self.pull(home, ref, "--insecure", "--platform", "linux/s390x")
        self.assertFailed(p, home, "linux/s390x")
        p = self.pull(home, ref, "--platform", "linux")
        self.assertEqual(p.returncode, 2, p.stderr)

    def test_media_types_and_compression(self):
        reg, home = REG["plain"], new_home()
        for repo, ltype in (("busybox-zstd", "application/vnd.oci.image.layer.v1.tar+zstd"),
                            ("busybox-docker",
                             "application/vnd.docker.image.rootfs.diff.tar.gzip")):
            ref = reg.ref(repo)
            d = self.assertPulled(self.pull(home, ref, "--insecure"), ref,
                                  DIGESTS[("plain", repo)])
            with open(os.path.join(home, "images", "blobs", "sha256", d[7:])) as f:
                self.assertEqual(json.load(f)["layers"][0]["mediaType"], ltype)
            self.assertHasImage(home, d)
        self.assertStoreSound(home)

    def test_digest_ref(self):
        reg, home = REG["plain"], new_home()
        d = DIGESTS[("plain", "busybox")]
        name = "%s/busybox" % reg.host
        self.assertPulled(self.pull(home, name + "@" + d, "--insecure"), name, d)
        self.assertEqual(self.pins(home), {})  # the tag was never touched
        # A digest of an index gives the platform manifest's digest.
        idx = DIGESTS[("plain", "multi")]
        index = json.loads(manifest_of(reg, "multi", idx))
        amd = [m["digest"] for m in index["manifests"]
               if m["platform"]["architecture"] == "amd64"][0]
        self.assertPulled(self.pull(home, "%s/multi@%s" % (reg.host, idx), "--insecure"),
                          "%s/multi" % reg.host, amd)
        # A digest that names nothing.
        bad = "sha256:" + "0" * 64
        self.assertFailed(self.pull(home, name + "@" + bad, "--insecure"), home, "not found")

    def test_bad_layer_digest(self):
        reg, home = REG["plain"], new_home()
        man = json.loads(manifest_of(reg, "badlayer", "latest"))
        layer = man["layers"][1]["digest"]
        self.assertFailed(self.pull(home, reg.ref("badlayer"), "--insecure"), home,
                          "layer " + layer, "does not match")
        self.assertEqual(self.pins(home), {})

    def test_bad_diffid(self):
        reg, home = REG["plain"], new_home()
        self.assertFailed(self.pull(home, reg.ref("baddiff"), "--insecure"), home, "diff_id")
        self.assertEqual(self.pins(home), {})
        # Also when the layer is already in the store from a good image.
        self.assertPulled(self.pull(home, reg.ref("busybox"), "--insecure"), reg.ref("busybox"))
        self.assertFailed(self.pull(home, reg.ref("baddiff"), "--insecure"), home, "diff_id")


class Proxied(PullCase):
    """Through a FaultProxy in front of the plain registry."""

    def setUp(self):
        self.px = R.FaultProxy(REG["plain"].url).start()
        self.home = new_home()
        self.ref = "%s/busybox" % self.px.host + ":latest"
        man = manifest_of(REG["plain"], "busybox", "latest")
        self.blobs = blob_digests(man)

    def tearDown(self):
        self.px.stop()

    def test_pinned_tag_needs_no_network(self):
        d = self.assertPulled(self.pull(self.home, self.ref, "--insecure"), self.ref)
        self.assertGreater(len(self.px.log), 0)
        self.px.clear()
        self.assertPulled(self.pull(self.home, self.ref, "--insecure", "--pull", "missing"),
                          self.ref, d)
        self.assertEqual(self.px.log, [], "a pinned, complete image asked the registry")
        self.assertPulled(self.pull(self.home, self.ref, "--insecure", "--pull", "never"),
                          self.ref, d)
        self.assertEqual(self.px.log, [])
        # always: the manifest is asked for again, the blobs are not.
        self.assertPulled(self.pull(self.home, self.ref, "--insecure"), self.ref, d)
        self.assertEqual(self.px.count_matching(R.MANIFEST_PATH), 1)
        self.assertEqual(self.px.count_matching(R.BLOB_PATH), 0)
        # A digest reference is never resolved again, whatever the policy.
        self.px.clear()
        name = "%s/busybox" % self.px.host
        self.assertPulled(self.pull(self.home, name + "@" + d, "--insecure", "--pull", "always"),
                          name, d)
        self.assertEqual(self.px.log, [])
        # never, with nothing there: an error and no request.
        home2 = new_home()
        self.assertFailed(self.pull(home2, self.ref, "--insecure", "--pull", "never"), home2,
                          "not in the image store")
        self.assertEqual(self.px.log, [])

    def test_moved_tag(self):
        reg = REG["plain"]
        R.build_and_push("busybox", reg, "moving", workdir=TMP)
        ref = "%s/moving:latest" % self.px.host
        d1 = self.assertPulled(self.pull(self.home, ref, "--insecure"), ref)
        d2 = R.build_and_push("busybox", reg, "moving", workdir=TMP, compression="zstd")
        self.assertNotEqual(d1, d2)
        # missing: the pin holds.
        self.assertPulled(self.pull(self.home, ref, "--insecure", "--pull", "missing"), ref, d1)
        p = self.pull(self.home, ref, "--insecure")
        self.assertPulled(p, ref, d2)
        self.assertIn("moved", p.stderr)
        self.assertEqual(self.pins(self.home)[ref], d2)

    def test_concurrent_pulls_download_once(self):
        procs = [self.pull(self.home, self.ref, "--insecure", wait=False) for _ in range(4)]
        outs = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        digests = set()
        for out, err, rc in outs:
            self.assertEqual(rc, 0, err)
            digests.add(out.strip())
        self.assertEqual(len(digests), 1)
        for d in self.blobs:
            self.assertEqual(self.px.count(blob_path("busybox", d)), 1, d)
        self.assertStoreSound(self.home)

    def test_retry_after_500(self):
        rule = self.px.fail(2, status=500)
        self.assertPulled(self.pull(self.home, self.ref, "--insecure"), self.ref)
        self.assertEqual(rule.hits, 2)
        self.assertStoreSound(self.home)

    def test_404_not_retried(self):
        ref = "%s/nosuch:latest" % self.px.host
        self.assertFailed(self.pull(self.home, ref, "--insecure"), self.home, "not found")
        self.assertEqual(self.px.count_matching(R.MANIFEST_PATH), 1)

    def test_truncated(self):
        layer = self.blobs[1]
        self.px.truncate(1000, path="^" + blob_path("busybox", layer) + "$")
        self.assertFailed(self.pull(self.home, self.ref, "--insecure"), self.home,
                          "layer " + layer)
        self.assertEqual(self.px.count(blob_path("busybox", layer)), 4)  # tried 4 times
        self.px.clear()
        self.assertPulled(self.pull(self.home, self.ref, "--insecure"), self.ref)
        self.assertStoreSound(self.home)

    def test_connection_cut(self):
        layer = self.blobs[1]
        self.px.close_after(5000, reset=True, path="^" + blob_path("busybox", layer) + "$")
        self.assertFailed(self.pull(self.home, self.ref, "--insecure"), self.home,
                          "layer " + layer)
        self.px.clear()
        self.px.close_after(5000, times=1, path="^" + blob_path("busybox", layer) + "$")
        self.assertPulled(self.pull(self.home, self.ref, "--insecure"), self.ref)

    def test_corrupted_blob(self):
        layer = self.blobs[1]
        self.px.corrupt(path="^" + blob_path("busybox", layer) + "$")
        line = self.assertFailed(self.pull(self.home, self.ref, "--insecure"), self.home,
                                 "layer " + layer, "does not match")
        self.assertIn("content digest sha256:", line)
        # Retried once (it could have been the network), not more.
        self.assertEqual(self.px.count(blob_path("busybox", layer)), 2)
        self.px.clear()
        self.assertPulled(self.pull(self.home, self.ref, "--insecure"), self.ref)

    def test_redirect_to_other_port(self):
        reg = REG["plain"]
        for d in self.blobs:
            self.px.redirect(307, location="%s/v2/busybox/blobs/%s" % (reg.url, d),
                             path="^" + blob_path("busybox", d) + "$")
        self.assertPulled(self.pull(self.home, self.ref, "--insecure"), self.ref)
        self.assertEqual(sum(1 for e in self.px.log if e[2] == 307), len(self.blobs))
        self.assertStoreSound(self.home)

    def test_redirect_scheme_refused(self):
        d = self.blobs[1]
        self.px.redirect(302, location="ftp://127.0.0.1/x", path="^" + blob_path("busybox", d) + "$")
        self.assertFailed(self.pull(self.home, self.ref, "--insecure"), self.home, "redirect")


class AuthRedirect(PullCase):
    def test_credentials_stay_with_the_registry(self):
        """A blob redirected to another origin (like a CDN) is fetched without the
        registry's Authorization."""
        reg, home = REG["basic"], new_home()
        with R.FaultProxy(reg.url, ca=CA, tls=True) as px:
            man = manifest_of(reg, "busybox", "latest")
            for d in blob_digests(man):
                px.redirect(307, host="localhost", path="^" + blob_path("busybox", d) + "$")
            dc = os.path.join(home, "docker")
            os.makedirs(dc)
            cred = base64.b64encode(("%s:%s" % (reg.user, reg.password)).encode()).decode()
            with open(os.path.join(dc, "config.json"), "w") as f:
                json.dump({"auths": {px.host: {"auth": cred}}}, f)
            ref = "%s/busybox:latest" % px.host
            self.assertPulled(self.pull(home, ref, "--ca-certs", CA.cert,
                                        env={"DOCKER_CONFIG": dc}), ref)
            redirected = [e for e in px.log if e[1].startswith("/_redirect/")]
            self.assertEqual(len(redirected), 3)
            self.assertTrue(all(not e[3] for e in redirected), px.log)
            self.assertTrue(all(e[3] for e in px.log if e[2] == 307), px.log)


class Faults(PullCase):
    def test_registry_killed_mid_pull(self):
        reg = R.Registry("plain", os.path.join(TMP, "reg-victim")).start()
        try:
            R.build_and_push("busybox", reg, "busybox", workdir=TMP)
            home = new_home()
            with R.FaultProxy(reg.url) as px:
                px.delay(1.0)
                p = self.pull(home, "%s/busybox:latest" % px.host, "--insecure", wait=False)
                time.sleep(0.5)
                reg.proc.kill()
                out, err = p.communicate(timeout=60)
                self.assertFailed(subprocess.CompletedProcess(p.args, p.returncode, out, err),
                                  home)
        finally:
            reg.stop()

    def test_disk_full(self):
        mnt = tempfile.mkdtemp(prefix="tmpfs-", dir=TMP)
        # 512 KiB: less than busybox's 1 MiB base layer, room for the rest.
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", mnt],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs: " + r.stderr.strip())
        try:
            reg = REG["plain"]
            p = self.pull(mnt, reg.ref("busybox"), "--insecure")
            self.assertFailed(p, mnt, "No space left on device")
            self.assertEqual(self.pins(mnt), {})
        finally:
            subprocess.run(["umount", mnt])


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[2:], verbosity=2)
