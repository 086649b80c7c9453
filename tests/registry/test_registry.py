#!/usr/bin/python3
"""Self-tests of the registry harness (registry.py): every registry mode,
pushing/pulling with curl and skopeo, the token flow by hand, the fault
proxy, the image builders and the CLI.

Run: tests/registry/test_registry.py [-v] [-k PATTERN]
The python image test runs when MSB_TEST_PYTHON_IMAGE=1 or when
scripts/build-rootfs's python tree is already cached (MSB_TEST_PYTHON_IMAGE=0
skips it).  Exit status is nonzero on any failure."""

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import registry as R  # noqa: E402

WORK = None
CA = None
LAYOUTS = {}
DIGESTS = {}


def setUpModule():
    global WORK, CA
    WORK = tempfile.mkdtemp(prefix="msb-registry-test-")
    CA = R.CertAuthority(os.path.join(WORK, "ca"))
    for kind in ("busybox", "multiarch"):
        d = R.build_image(kind, os.path.join(WORK, kind), tag="latest")
        LAYOUTS[kind] = os.path.join(WORK, kind)
        DIGESTS[kind] = d["digest"]


def tearDownModule():
    shutil.rmtree(WORK, ignore_errors=True)


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Curl:
    def __init__(self, rc, status, headers, body, stderr):
        self.rc, self.status, self.headers, self.body, self.stderr = rc, status, headers, body, stderr

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)


def curl(url, *args, ca=None, user=None, bearer=None, accept=None, method=None, location=False):
    """curl URL; returns status, the last response's headers, body, exit code."""
    fd, hfile = tempfile.mkstemp(dir=WORK)
    os.close(fd)
    cmd = ["curl", "-sS", "--max-time", "20", "-D", hfile, "-o", "-"]
    if ca:
        cmd += ["--cacert", ca]
    if user:
        cmd += ["-u", user]
    if bearer:
        cmd += ["-H", "Authorization: Bearer " + bearer]
    if accept:
        cmd += ["-H", "Accept: " + accept]
    if method == "HEAD":
        cmd += ["-I"]
    elif method:
        cmd += ["-X", method]
    if location:
        cmd += ["-L"]
    p = subprocess.run(cmd + list(args) + [url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(hfile, "rb") as f:
        raw = f.read().decode(errors="replace")
    os.unlink(hfile)
    blocks = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.strip()]
    status, headers = 0, {}
    if blocks:
        lines = blocks[-1].split("\n")
        status = int(lines[0].split()[1])
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = p.stdout
    if method == "HEAD":
        body = b""
    return Curl(p.returncode, status, headers, body, p.stderr.decode(errors="replace"))


def layout_manifest(kind):
    lay = R.Layout(LAYOUTS[kind], create=False)
    return lay.read_blob(DIGESTS[kind])


def skopeo(*args, check=True):
    return R.skopeo(list(args), check=check)


class RegistryCase(unittest.TestCase):
    mode = "plain"
    reg_kw = {}

    @classmethod
    def setUpClass(cls):
        cls.reg = R.Registry(cls.mode, os.path.join(WORK, "reg-" + cls.__name__), ca=CA, **cls.reg_kw)
        cls.reg.start()

    @classmethod
    def tearDownClass(cls):
        cls.reg.stop()

    def v2(self, path):
        return self.reg.url + "/v2/" + path

    def assert_served(self, repo, digest, **auth):
        """Manifest by tag and digest, config and layers by digest: bytes match."""
        r = curl(self.v2("%s/manifests/latest" % repo), accept=R.ACCEPT_ALL, ca=self.reg.cacert, **auth)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.header("docker-content-digest"), digest)
        self.assertEqual(sha(r.body), digest)
        man = r.json()
        if man["mediaType"] in R.INDEX_TYPES:
            children = man["manifests"]
        else:
            children = []
            for d in [man["config"]] + man["layers"]:
                b = curl(self.v2("%s/blobs/%s" % (repo, d["digest"])), ca=self.reg.cacert,
                         location=True, **auth)
                self.assertEqual(b.status, 200)
                self.assertEqual(sha(b.body), d["digest"])
                self.assertEqual(len(b.body), d["size"])
        for c in children:
            r = curl(self.v2("%s/manifests/%s" % (repo, c["digest"])), accept=c["mediaType"],
                     ca=self.reg.cacert, **auth)
            self.assertEqual(r.status, 200)
            self.assertEqual(sha(r.body), c["digest"])
        return man


class PlainTests(RegistryCase):
    mode = "plain"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bb = R.push_layout(LAYOUTS["busybox"], cls.reg, "test/busybox", "latest")
        cls.ma = R.push_layout(LAYOUTS["multiarch"], cls.reg, "test/multiarch", "latest", tool="skopeo")

    def test_ping(self):
        r = curl(self.v2(""))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("docker-distribution-api-version"), "registry/2.0")

    def test_busybox_served(self):
        self.assertEqual(self.bb, DIGESTS["busybox"])
        man = self.assert_served("test/busybox", self.bb)
        self.assertEqual(man["mediaType"], R.OCI_MANIFEST)
        self.assertEqual(len(man["layers"]), 2)
        h = curl(self.v2("test/busybox/blobs/" + man["layers"][0]["digest"]), method="HEAD")
        self.assertEqual(h.status, 200)
        self.assertEqual(int(h.header("content-length")), man["layers"][0]["size"])

    def test_multiarch_served(self):
        self.assertEqual(self.ma, DIGESTS["multiarch"])
        idx = self.assert_served("test/multiarch", self.ma)
        plats = [(m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
                 for m in idx["manifests"]]
        self.assertIn(("linux", R.host_arch(), None), plats)
        self.assertIn(("unknown", "unknown", None), plats)
        self.assertEqual(len(plats), 3)

    def test_skopeo_inspect_raw(self):
        for repo, kind in (("test/busybox", "busybox"), ("test/multiarch", "multiarch")):
            p = skopeo("inspect", "--raw", "--tls-verify=false", "docker://" + self.reg.ref(repo))
            self.assertEqual(p.stdout, layout_manifest(kind))
        p = skopeo("inspect", "--tls-verify=false", "docker://" + self.reg.ref("test/busybox"))
        info = json.loads(p.stdout)
        self.assertIn("MSB_TEST=1", info["Env"])

    def test_skopeo_pull_back(self):
        out = os.path.join(WORK, "pulled-plain")
        skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
               "docker://" + self.reg.ref("test/multiarch"), "oci:%s:back" % out)
        lay = R.Layout(out, create=False)
        self.assertEqual(lay.resolve("back")["digest"], self.ma)
        idx = json.loads(lay.read_blob(self.ma))
        for m in idx["manifests"]:
            man = json.loads(lay.read_blob(m["digest"]))
            for d in [man["config"]] + man["layers"]:
                self.assertEqual(sha(lay.read_blob(d["digest"])), d["digest"])

    def test_python_pusher_index_chunked(self):
        d = R.push_layout(LAYOUTS["multiarch"], self.reg, "test/multiarch-py", "v1", chunk_size=100000)
        self.assertEqual(d, DIGESTS["multiarch"])
        self.assert_served_tag("test/multiarch-py", "v1", d)

    def assert_served_tag(self, repo, tag, digest):
        r = curl(self.v2("%s/manifests/%s" % (repo, tag)), accept=R.ACCEPT_ALL)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("docker-content-digest"), digest)

    def test_docker_media_types(self):
        d = R.build_and_push("busybox", self.reg, "test/busybox-docker", media="docker")
        r = curl(self.v2("test/busybox-docker/manifests/latest"), accept=R.DOCKER_MANIFEST)
        self.assertEqual(r.header("content-type"), R.DOCKER_MANIFEST)
        man = r.json()
        self.assertEqual(man["config"]["mediaType"], R.DOCKER_CONFIG)
        self.assertEqual({l["mediaType"] for l in man["layers"]}, {R.DOCKER_LAYER_GZIP})
        self.assertEqual(sha(r.body), d)
        d = R.build_and_push("multiarch", self.reg, "test/multiarch-docker", media="docker")
        r = curl(self.v2("test/multiarch-docker/manifests/latest"), accept=R.ACCEPT_ALL)
        self.assertEqual(r.header("content-type"), R.DOCKER_LIST)

    def test_zstd(self):
        d = R.build_and_push("busybox", self.reg, "test/busybox-zstd", compression="zstd")
        man = self.assert_served("test/busybox-zstd", d)
        self.assertEqual({l["mediaType"] for l in man["layers"]}, {R.OCI_LAYER_ZSTD})
        b = curl(self.v2("test/busybox-zstd/blobs/" + man["layers"][1]["digest"]))
        self.assertEqual(b.body[:4], b"\x28\xb5\x2f\xfd")
        tar = subprocess.run(["zstd", "-dc"], input=b.body, stdout=subprocess.PIPE, check=True).stdout
        cfg = json.loads(curl(self.v2("test/busybox-zstd/blobs/" + man["config"]["digest"])).body)
        self.assertEqual(cfg["rootfs"]["diff_ids"][1], sha(tar))

    def test_bad_layer_digest(self):
        d = R.build_and_push("bad-layer-digest", self.reg, "test/bad-digest")
        r = curl(self.v2("test/bad-digest/manifests/" + d), accept=R.ACCEPT_ALL)
        man = r.json()
        good = man["layers"][0]
        self.assertEqual(sha(curl(self.v2("test/bad-digest/blobs/" + good["digest"])).body), good["digest"])
        bad = man["layers"][1]
        b = curl(self.v2("test/bad-digest/blobs/" + bad["digest"]))
        self.assertEqual(b.status, 200)
        self.assertEqual(len(b.body), bad["size"])
        self.assertNotEqual(sha(b.body), bad["digest"])
        tf = tarfile.open(fileobj=io.BytesIO(gzip.decompress(b.body)))
        self.assertIn("etc/added", tf.getnames())  # a well-formed layer, just not the right one
        self.assertEqual(tf.extractfile("etc/added").read().lower(),
                         b"added by layer 2 of the bad-layer-digest image\n")
        # The good busybox's layers in the same registry are not affected.
        self.assert_served("test/busybox", self.bb)

    def test_bad_diffid(self):
        d = R.build_and_push("bad-diffid", self.reg, "test/bad-diffid")
        man = self.assert_served("test/bad-diffid", d)  # all blobs are intact
        cfg = json.loads(curl(self.v2("test/bad-diffid/blobs/" + man["config"]["digest"])).body)
        layer = curl(self.v2("test/bad-diffid/blobs/" + man["layers"][1]["digest"])).body
        self.assertNotEqual(cfg["rootfs"]["diff_ids"][1], sha(gzip.decompress(layer)))
        layer0 = curl(self.v2("test/bad-diffid/blobs/" + man["layers"][0]["digest"])).body
        self.assertEqual(cfg["rootfs"]["diff_ids"][0], sha(gzip.decompress(layer0)))

    def test_evil_images(self):
        expect = {"dotdot": "../msb-evil-dotdot", "absolute": "/etc/msb-evil-absolute",
                  "symlink-abs": "evil/etc/msb-evil-symlink", "symlink-rel": "evil/msb-evil-symlink-rel",
                  "hardlink-abs": "hl", "hardlink-rel": "hl", "chardev": "dev/msb-evil-mem",
                  "tarbomb": "bomb/f0000999", "sparse-gnu": "sparse-gnu",
                  "sparse-pax": "GNUSparseFile.0/sparse-pax"}
        self.assertEqual(set(expect), set(R.EVIL_TARS))
        for name, member in expect.items():
            d = R.build_and_push("evil-" + name, self.reg, "evil/" + name, count=1000)
            man = self.assert_served("evil/" + name, d)
            layer = curl(self.v2("evil/%s/blobs/%s" % (name, man["layers"][0]["digest"]))).body
            raw = gzip.decompress(layer)
            self.assertEqual(raw, R.evil_tar(name, count=1000))
            # Python's tarfile resolves GNU/PAX sparse names; read raw names.
            names = [m.name for m in tarfile.open(fileobj=io.BytesIO(raw))]
            if name == "sparse-pax":
                names.append("GNUSparseFile.0/sparse-pax")
            self.assertIn(member, names, name)


class ImageTests(unittest.TestCase):
    def test_deterministic(self):
        for kind in ("busybox", "multiarch"):
            d = R.build_image(kind, os.path.join(WORK, "again-" + kind))
            self.assertEqual(d["digest"], DIGESTS[kind], kind)

    def test_busybox_contents(self):
        lay = R.Layout(LAYOUTS["busybox"], create=False)
        man = json.loads(lay.read_blob(DIGESTS["busybox"]))
        cfg = json.loads(lay.read_blob(man["config"]["digest"]))
        c = cfg["config"]
        self.assertEqual(c["User"], "app")
        self.assertEqual(c["WorkingDir"], "/work")
        self.assertEqual(c["Cmd"], ["sh"])
        self.assertEqual(c["ExposedPorts"], {"8080/tcp": {}})
        self.assertIn("MSB_TEST=1", c["Env"])
        self.assertTrue(any(e.startswith("PATH=") for e in c["Env"]))
        tars = [gzip.decompress(lay.read_blob(l["digest"])) for l in man["layers"]]
        self.assertEqual(cfg["rootfs"]["diff_ids"], [sha(t) for t in tars])
        base = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(tars[0]))}
        self.assertTrue(base["bin/busybox"].isreg())
        self.assertEqual(base["bin/sh"].linkname, "/bin/busybox")
        self.assertEqual((base["work"].uid, base["work"].gid), (1000, 1000))
        self.assertEqual(base["tmp"].mode, 0o1777)
        passwd = tarfile.open(fileobj=io.BytesIO(tars[0])).extractfile("etc/passwd").read()
        self.assertIn(b"app:x:1000:1000:", passwd)
        second = tarfile.open(fileobj=io.BytesIO(tars[1])).getnames()
        self.assertIn("etc/.wh.remove-me", second)
        self.assertIn("opt/opaque/.wh..wh..opq", second)
        # An independent unpacker applies the whiteouts.
        out = os.path.join(WORK, "umoci-unpack")
        subprocess.run(["umoci", "unpack", "--rootless", "--image", LAYOUTS["busybox"] + ":latest", out],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        root = os.path.join(out, "rootfs")
        self.assertFalse(os.path.exists(os.path.join(root, "etc/remove-me")))
        self.assertTrue(os.path.exists(os.path.join(root, "etc/added")))
        self.assertEqual(sorted(os.listdir(os.path.join(root, "opt/opaque"))), ["new"])
        self.assertTrue(os.path.exists(os.path.join(root, "opt/kept")))
        r = subprocess.run([os.path.join(root, "bin/busybox"), "echo", "ok"], stdout=subprocess.PIPE)
        self.assertEqual(r.stdout, b"ok\n")

    def test_multiarch_layout(self):
        lay = R.Layout(LAYOUTS["multiarch"], create=False)
        top = lay.resolve("latest")
        self.assertEqual(top["mediaType"], R.OCI_INDEX)
        idx = json.loads(lay.read_blob(top["digest"]))
        by = {(m["platform"]["architecture"], m["platform"].get("variant")): m for m in idx["manifests"]}
        if R.host_arch() == "amd64":
            self.assertIn(("amd64", None), by)
            self.assertIn(("arm64", "v8"), by)
        att = by[("unknown", None)]
        self.assertEqual(att["annotations"]["vnd.docker.reference.type"], "attestation-manifest")
        self.assertEqual(att["annotations"]["vnd.docker.reference.digest"], DIGESTS["busybox"])

    def test_evil_tar_listing(self):
        """GNU tar's view of the raw tars (what the names/types really are)."""
        want = {"dotdot": ["../msb-evil-dotdot", "a/../../msb-evil-dotdot2"],
                "absolute": ["/msb-evil-absolute"],
                "symlink-abs": ["evil -> /", "evil/etc/msb-evil-symlink"],
                "symlink-rel": ["evil -> ../../..", "evil/msb-evil-symlink-rel"],
                "hardlink-abs": ["hl link to etc/passwd"],  # GNU tar strips the '/' when listing
                "hardlink-rel": ["hl link to x"],
                "chardev": ["crw-rw-rw- 0/0             1,1", "brw-rw-rw-"],
                "sparse-gnu": ["1099511627776", "sparse-gnu"],
                "sparse-pax": ["1099511627776", "sparse-pax"]}
        for name, needles in want.items():
            p = subprocess.run(["tar", "-tvf", "-"], input=R.evil_tar(name), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
            self.assertEqual(p.returncode, 0, name)
            for n in needles:
                self.assertIn(n, p.stdout.decode(), name)
        hl = tarfile.open(fileobj=io.BytesIO(R.evil_tar("hardlink-abs"))).getmembers()
        self.assertEqual((hl[0].type, hl[0].linkname), (tarfile.LNKTYPE, "/etc/passwd"))
        bomb = R.evil_tar("tarbomb", count=5000)
        self.assertEqual(len(tarfile.open(fileobj=io.BytesIO(bomb)).getnames()), 5001)
        # The sparse members really extract to 1 TiB sparse files.
        out = os.path.join(WORK, "sparse-x")
        os.makedirs(out)
        for name in ("sparse-gnu", "sparse-pax"):
            subprocess.run(["tar", "-xf", "-", "-C", out], input=R.evil_tar(name), check=True)
            st = os.stat(os.path.join(out, name))
            self.assertEqual(st.st_size, R.TIB)
            self.assertLess(st.st_blocks * 512, 1 << 20)
        shutil.rmtree(out)


class TLSTests(RegistryCase):
    mode = "tls"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bb = R.push_layout(LAYOUTS["busybox"], cls.reg, "test/busybox", "latest")

    def test_cacert(self):
        self.assertTrue(self.reg.url.startswith("https://127.0.0.1:"))
        self.assertEqual(curl(self.v2(""), ca=self.reg.cacert).status, 200)
        r = curl(self.v2(""))
        self.assertEqual(r.rc, 60, r.stderr)  # SSL certificate problem
        r = curl("https://localhost:%d/v2/" % self.reg.port, "--resolve",
                 "localhost:%d:127.0.0.1" % self.reg.port, ca=self.reg.cacert)
        self.assertEqual(r.status, 200)

    def test_ipv6(self):
        with R.Registry("tls", os.path.join(WORK, "reg-v6"), ca=CA, listen="::1") as reg6:
            self.assertTrue(reg6.url.startswith("https://[::1]:"))
            self.assertEqual(curl(reg6.url + "/v2/", ca=reg6.cacert).status, 200)

    def test_served(self):
        self.assert_served("test/busybox", self.bb)

    def test_skopeo(self):
        p = skopeo("inspect", "--raw", "--cert-dir=" + self.reg.cert_dir, "docker://" + self.reg.ref("test/busybox"))
        self.assertEqual(sha(p.stdout), self.bb)
        p = skopeo("inspect", "--raw", "docker://" + self.reg.ref("test/busybox"), check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("certificate", p.stderr.decode())
        out = os.path.join(WORK, "pulled-tls")
        skopeo("copy", "--src-cert-dir=" + self.reg.cert_dir, "docker://" + self.reg.ref("test/busybox"),
               "oci:%s:x" % out)
        self.assertTrue(os.path.exists(R.Layout(out, create=False).blob_path(self.bb)))


class BasicTests(RegistryCase):
    mode = "basic"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bb = R.push_layout(LAYOUTS["busybox"], cls.reg, "test/busybox", "latest")

    def test_challenge(self):
        r = curl(self.v2(""), ca=self.reg.cacert)
        self.assertEqual(r.status, 401)
        self.assertEqual(r.header("www-authenticate"), 'Basic realm="msb-test-registry"')
        r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert, user="msb:wrong")
        self.assertEqual(r.status, 401)
        r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert, user="nobody:x")
        self.assertEqual(r.status, 401)

    def test_served(self):
        self.assert_served("test/busybox", self.bb, user="%s:%s" % (self.reg.user, self.reg.password))

    def test_pusher_needs_credentials(self):
        c = R.RegistryClient(self.reg.url, ca=self.reg.cacert)
        with self.assertRaises(R.HarnessError):
            c.push_blob("test/anon", sha(b"x"), b"x")
        c = R.RegistryClient(self.reg.url, ca=self.reg.cacert, user="msb", password="wrong")
        with self.assertRaises(R.HarnessError):
            c.push_blob("test/anon", sha(b"x"), b"x")

    def test_skopeo(self):
        ref = "docker://" + self.reg.ref("test/busybox")
        cd = "--cert-dir=" + self.reg.cert_dir
        p = skopeo("inspect", "--raw", cd, "--creds=msb:" + self.reg.password, ref)
        self.assertEqual(sha(p.stdout), self.bb)
        self.assertNotEqual(skopeo("inspect", "--raw", cd, "--creds=msb:wrong", ref, check=False).returncode, 0)
        self.assertNotEqual(skopeo("inspect", "--raw", cd, "--no-creds", ref, check=False).returncode, 0)


class TokenTests(RegistryCase):
    mode = "token"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bb = R.push_layout(LAYOUTS["busybox"], cls.reg, "test/busybox", "latest")
        cls.ma = R.push_layout(LAYOUTS["multiarch"], cls.reg, "test/multiarch", "latest", tool="skopeo")

    def challenge(self, path):
        r = curl(self.v2(path), ca=self.reg.cacert, accept=R.ACCEPT_ALL)
        self.assertEqual(r.status, 401)
        scheme, params = R.parse_www_authenticate(r.header("www-authenticate"))
        self.assertEqual(scheme, "bearer")
        return params

    def token(self, params, user=None, scope=None):
        q = urllib.parse.urlencode({"service": params["service"], "scope": scope or params["scope"]})
        r = curl(params["realm"] + "?" + q, ca=self.reg.cacert, user=user)
        return r

    def test_challenge_flow_anonymous(self):
        p = self.challenge("test/busybox/manifests/latest")
        self.assertEqual(p["realm"], self.reg.token_server.realm)
        self.assertEqual(p["service"], self.reg.service)
        self.assertEqual(p["scope"], "repository:test/busybox:pull")
        t = self.token(p)
        self.assertEqual(t.status, 200)
        j = t.json()
        self.assertEqual(j["token"], j["access_token"])
        self.assertEqual(j["expires_in"], 300)
        r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert, bearer=j["token"],
                 accept=R.ACCEPT_ALL)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("docker-content-digest"), self.bb)
        # A pull token doesn't open another repository.
        r = curl(self.v2("test/multiarch/manifests/latest"), ca=self.reg.cacert, bearer=j["token"])
        self.assertEqual(r.status, 401)
        self.assertIn('error="insufficient_scope"', r.header("www-authenticate"))

    def test_base_challenge(self):
        r = curl(self.v2(""), ca=self.reg.cacert)
        self.assertEqual(r.status, 401)
        self.assertTrue(r.header("www-authenticate").startswith('Bearer realm="%s",service="%s"' % (
            self.reg.token_server.realm, self.reg.service)))

    def test_served_with_tokens(self):
        """The whole image and index through the flow (RegistryClient)."""
        c = self.reg.client(anonymous=True)
        for repo, dg in (("test/busybox", self.bb), ("test/multiarch", self.ma)):
            mt, body, got = c.get_manifest(repo, "latest")
            self.assertEqual(got, dg)
            man = json.loads(body)
            for d in man.get("layers", []) + ([man["config"]] if "config" in man else []):
                self.assertEqual(sha(c.get_blob(repo, d["digest"])), d["digest"])

    def test_credentials(self):
        p = self.challenge("test/busybox/manifests/latest")
        self.assertEqual(self.token(p, user="msb:wrong").status, 401)
        self.assertEqual(self.token(p, user="nobody:x").status, 401)
        t = self.token(p, user="msb:" + self.reg.password)
        self.assertEqual(t.status, 200)
        r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert, bearer=t.json()["token"],
                 accept=R.ACCEPT_ALL)
        self.assertEqual(r.status, 200)

    def test_pull_user_cannot_push(self):
        p = self.challenge("test/busybox/manifests/latest")
        for user in (None, "msb:" + self.reg.password):
            t = self.token(p, user=user, scope="repository:test/busybox:pull,push").json()["token"]
            claims = json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=="))
            self.assertEqual(claims["access"], [{"type": "repository", "name": "test/busybox",
                                                 "actions": ["pull"]}])
            r = curl(self.v2("test/busybox/blobs/uploads/"), "-d", "", ca=self.reg.cacert,
                     bearer=t, method="POST")
            self.assertEqual(r.status, 401)
            self.assertIn('error="insufficient_scope"', r.header("www-authenticate"))
        c = self.reg.client()  # msb, pull only
        with self.assertRaises(R.HarnessError):
            c.push_blob("test/busybox", sha(b"x"), b"x")
        push = self.token(p, user="%s:%s" % (self.reg.push_user, self.reg.push_password),
                          scope="repository:test/busybox:pull,push").json()["token"]
        r = curl(self.v2("test/busybox/blobs/uploads/"), "-d", "", ca=self.reg.cacert, bearer=push,
                 method="POST")
        self.assertEqual(r.status, 202)

    def test_jwt_variants(self):
        """What distribution 2.8 accepts: an x5c chain to rootcertbundle, or a
        kid naming a cert in rootcertbundle; ES256; iss/aud/exp checked."""
        ts = self.reg.token_server
        other = R.CertAuthority(os.path.join(WORK, "other-ca"))
        okey_cert, okey = other.token_signer()
        access = [{"type": "repository", "name": "test/busybox", "actions": ["pull"]}]
        cases = [
            ("x5c", {"header": "x5c"}, 200),
            ("kid", {"header": "kid"}, 200),
            ("both", {"header": "both"}, 200),
            ("no key hint", {"header": "none"}, 401),
            ("untrusted x5c", {"header": "x5c", "key": okey, "cert": okey_cert}, 401),
            ("untrusted kid", {"header": "kid", "key": okey, "cert": okey_cert}, 401),
            ("wrong aud", {"audience": "other"}, 401),
            ("wrong iss", {"issuer": "other"}, 401),
            ("expired", {"ttl": -120}, 401),
        ]
        for name, kw, status in cases:
            tok = ts.issue("msb", access, **kw)
            r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert, bearer=tok,
                     accept=R.ACCEPT_ALL)
            self.assertEqual(r.status, status, name)
            if status == 401:
                self.assertIn('error="invalid_token"', r.header("www-authenticate"), name)
        hdr = json.loads(base64.urlsafe_b64decode(ts.issue("msb", access, header="both").split(".")[0] + "=="))
        self.assertEqual(hdr["alg"], "ES256")
        self.assertEqual(hdr["kid"], R.libtrust_key_id(ts.signer_cert))

    def test_oauth_post(self):
        body = urllib.parse.urlencode({"grant_type": "password", "username": "msb",
                                       "password": self.reg.password, "service": self.reg.service,
                                       "scope": "repository:test/busybox:pull", "client_id": "msb"})
        r = curl(self.reg.token_server.realm, "-d", body, ca=self.reg.cacert)
        self.assertEqual(r.status, 200)
        tok = r.json()["access_token"]
        r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert, bearer=tok, accept=R.ACCEPT_ALL)
        self.assertEqual(r.status, 200)

    def test_skopeo(self):
        ref = "docker://" + self.reg.ref("test/multiarch")
        cd = "--cert-dir=" + self.reg.cert_dir
        p = skopeo("inspect", "--raw", cd, "--no-creds", ref)
        self.assertEqual(sha(p.stdout), self.ma)
        out = os.path.join(WORK, "pulled-token")
        skopeo("copy", "--all", "--preserve-digests", "--src-cert-dir=" + self.reg.cert_dir,
               "--src-creds=msb:" + self.reg.password, ref, "oci:%s:x" % out)
        self.assertEqual(R.Layout(out, create=False).resolve("x")["digest"], self.ma)
        self.assertNotEqual(skopeo("inspect", "--raw", cd, "--creds=msb:wrong", ref, check=False).returncode, 0)


class TokenPrivateTests(RegistryCase):
    mode = "token"
    reg_kw = {"anonymous_pull": False}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bb = R.push_layout(LAYOUTS["busybox"], cls.reg, "test/busybox", "latest")

    def test_anonymous_denied(self):
        r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert)
        _, p = R.parse_www_authenticate(r.header("www-authenticate"))
        q = urllib.parse.urlencode({"service": p["service"], "scope": p["scope"]})
        t = curl(p["realm"] + "?" + q, ca=self.reg.cacert)
        self.assertEqual(t.status, 200)  # like Docker Hub: a token with no access
        r = curl(self.v2("test/busybox/manifests/latest"), ca=self.reg.cacert, bearer=t.json()["token"])
        self.assertEqual(r.status, 401)
        self.assertIn('error="insufficient_scope"', r.header("www-authenticate"))
        ref = "docker://" + self.reg.ref("test/busybox")
        cd = "--cert-dir=" + self.reg.cert_dir
        self.assertNotEqual(skopeo("inspect", "--raw", cd, "--no-creds", ref, check=False).returncode, 0)
        p = skopeo("inspect", "--raw", cd, "--creds=msb:" + self.reg.password, ref)
        self.assertEqual(sha(p.stdout), self.bb)

    def test_authenticated_pull(self):
        c = self.reg.client()
        self.assertEqual(c.get_manifest("test/busybox", "latest")[2], self.bb)


class FaultProxyTests(RegistryCase):
    mode = "plain"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bb = R.push_layout(LAYOUTS["busybox"], cls.reg, "test/busybox", "latest")
        man = json.loads(layout_manifest("busybox"))
        cls.layer = man["layers"][0]
        cls.lay_bytes = R.Layout(LAYOUTS["busybox"], create=False).read_blob(cls.layer["digest"])
        cls.px = R.FaultProxy(cls.reg.url).start()

    @classmethod
    def tearDownClass(cls):
        cls.px.stop()
        super().tearDownClass()

    def setUp(self):
        self.px.clear()

    def blob_path(self):
        return "/v2/test/busybox/blobs/" + self.layer["digest"]

    def get(self, *a, **kw):
        return curl(self.px.url + self.blob_path(), *a, **kw)

    def test_passthrough_and_count(self):
        for _ in range(2):
            r = self.get()
            self.assertEqual(r.status, 200)
            self.assertEqual(sha(r.body), self.layer["digest"])
        self.assertEqual(self.px.count(self.blob_path()), 2)
        r = curl(self.px.url + "/v2/test/busybox/manifests/latest", accept=R.ACCEPT_ALL)
        self.assertEqual(r.header("docker-content-digest"), self.bb)
        self.assertEqual(self.px.count("/v2/test/busybox/manifests/latest"), 1)
        self.assertEqual(self.px.count_matching(R.BLOB_PATH), 2)
        self.assertEqual(self.px.count(self.blob_path(), method="HEAD"), 0)

    def test_truncate(self):
        rule = self.px.truncate(1000, times=1)
        r = self.get()
        self.assertEqual((r.rc, r.status, len(r.body)), (0, 200, 1000))
        self.assertEqual(r.body, self.lay_bytes[:1000])
        self.assertEqual(rule.hits, 1)
        self.assertEqual(sha(self.get().body), self.layer["digest"])  # only once

    def test_corrupt(self):
        self.px.corrupt(offsets=[10, 5000])
        r = self.get()
        self.assertEqual((r.rc, r.status, len(r.body)), (0, 200, self.layer["size"]))
        diff = [i for i in range(len(r.body)) if r.body[i] != self.lay_bytes[i]]
        self.assertEqual(diff, [10, 5000])
        self.px.clear()
        self.px.corrupt()
        self.assertNotEqual(sha(self.get().body), self.layer["digest"])

    def test_close_mid_body(self):
        self.px.close_after(4096, times=1)
        r = self.get()
        self.assertEqual(r.rc, 18, r.stderr)  # CURLE_PARTIAL_FILE
        self.assertEqual(r.body, self.lay_bytes[:4096])
        self.assertEqual(int(r.header("content-length")), self.layer["size"])
        self.px.close_after(4096, reset=True, times=1)
        r = self.get()
        self.assertIn(r.rc, (18, 56), r.stderr)  # partial / connection reset
        self.assertEqual(sha(self.get().body), self.layer["digest"])

    def test_fail_then_succeed(self):
        self.px.fail(2, status=500)
        self.assertEqual(self.get().status, 500)
        self.assertEqual(self.get().status, 500)
        self.assertEqual(self.get().status, 200)
        self.assertEqual(self.px.count(self.blob_path()), 3)
        self.px.fail(1, status=503, path=R.MANIFEST_PATH, headers=[("Retry-After", "1")])
        r = curl(self.px.url + "/v2/test/busybox/manifests/latest")
        self.assertEqual((r.status, r.header("retry-after")), (503, "1"))
        # skip: let the first matching request through, fail the next one.
        self.px.fail(1, skip=1)
        self.assertEqual(self.get().status, 200)
        self.assertEqual(self.get().status, 500)
        self.assertEqual(self.get().status, 200)

    def test_redirect(self):
        self.px.redirect(times=1)
        r = self.get()
        self.assertEqual(r.status, 307)
        loc = r.header("location")
        self.assertTrue(loc.startswith(self.px.url + "/_redirect/"), loc)
        r = curl(loc)
        self.assertEqual(sha(r.body), self.layer["digest"])
        self.px.redirect(times=1)
        r = self.get(location=True)
        self.assertEqual((r.status, sha(r.body)), (200, self.layer["digest"]))
        self.assertEqual(self.px.count_matching("^/_redirect/"), 2)
        self.px.redirect(location="http://127.0.0.1:1/nowhere", times=1)
        self.assertEqual(self.get().header("location"), "http://127.0.0.1:1/nowhere")

    def test_delay(self):
        self.px.delay(0.3, times=1)
        t = time.monotonic()
        self.assertEqual(self.get().status, 200)
        self.assertGreaterEqual(time.monotonic() - t, 0.3)

    def test_push_and_pull_through_proxy(self):
        d = R.push_layout(LAYOUTS["multiarch"], self.px.url, "test/via-proxy", "latest", chunk_size=200000)
        self.assertEqual(d, DIGESTS["multiarch"])
        self.assertGreater(self.px.count_matching("/blobs/uploads/", method="PATCH"), 0)
        p = skopeo("inspect", "--raw", "--tls-verify=false", "docker://%s/test/via-proxy:latest" % self.px.host)
        self.assertEqual(sha(p.stdout), d)
        out = os.path.join(WORK, "pulled-proxy")
        skopeo("copy", "--src-tls-verify=false", "docker://%s/test/busybox:latest" % self.px.host, "oci:%s:x" % out)
        self.assertTrue(os.path.exists(R.Layout(out, create=False).blob_path(self.layer["digest"])))

    def test_tls_proxy_token_registry(self):
        """HTTPS proxy in front of the token registry: the challenge flow
        passes through; a redirect to another origin (localhost) is served
        without the client's Authorization (curl drops it across hosts)."""
        with R.Registry("token", os.path.join(WORK, "reg-proxy-token"), ca=CA) as reg, \
                R.FaultProxy(reg.url, ca=CA, tls=True) as px:
            R.push_layout(LAYOUTS["busybox"], reg, "test/busybox", "latest")
            url = px.url + self.blob_path()
            r = curl(url, ca=CA.cert)
            self.assertEqual(r.status, 401)
            _, p = R.parse_www_authenticate(r.header("www-authenticate"))
            q = urllib.parse.urlencode({"service": p["service"], "scope": p["scope"]})
            tok = curl(p["realm"] + "?" + q, ca=CA.cert).json()["token"]
            r = curl(url, ca=CA.cert, bearer=tok)
            self.assertEqual(sha(r.body), self.layer["digest"])
            px.redirect(host="localhost", times=1)
            r = curl(url, "--resolve", "localhost:%d:127.0.0.1" % px.port, ca=CA.cert, bearer=tok,
                     location=True)
            self.assertEqual((r.status, sha(r.body)), (200, self.layer["digest"]))
            redirected = [e for e in px.log if e[1].startswith("/_redirect/")]
            self.assertEqual(len(redirected), 1)
            self.assertFalse(redirected[0][3])  # no Authorization on the other origin
            c = R.RegistryClient(px.url, ca=CA.cert)
            self.assertEqual(sha(c.get_blob("test/busybox", self.layer["digest"])), self.layer["digest"])


class CLITests(unittest.TestCase):
    def test_up_and_die_with_parent(self):
        d = os.path.join(WORK, "cli-up")
        p = subprocess.Popen([sys.executable if sys.executable.startswith("/usr/bin/") else "/usr/bin/python3",
                              os.path.join(HERE, "registry.py"), "up", "token", d],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            info = json.loads(p.stdout.readline())
            for k in ("url", "host", "port", "ca", "user", "password", "push_user", "push_password"):
                self.assertIn(k, info)
            self.assertEqual(curl(info["url"] + "/v2/", ca=info["ca"]).status, 401)
            out = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "registry.py"), "build-and-push",
                                  "busybox", info["url"], "cli/busybox", "t1", "--ca", info["ca"],
                                  "--user", info["push_user"], "--password", info["push_password"]],
                                 stdout=subprocess.PIPE, check=True).stdout.decode().strip()
            self.assertEqual(out, DIGESTS["busybox"])
            pid = info["pid"]
            os.kill(p.pid, signal.SIGKILL)  # no cleanup: PDEATHSIG must take the registry down
            p.wait()
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                    with open("/proc/%d/stat" % pid) as f:
                        if f.read().split(")")[-1].split()[0] == "Z":
                            break
                except (ProcessLookupError, FileNotFoundError):
                    break
                time.sleep(0.05)
            else:
                self.fail("registry process %d survived its parent" % pid)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    def test_up_sigterm(self):
        p = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "registry.py"), "up", "plain",
                              os.path.join(WORK, "cli-up2")], stdout=subprocess.PIPE)
        info = json.loads(p.stdout.readline())
        self.assertEqual(curl(info["url"] + "/v2/").status, 200)
        p.terminate()
        self.assertEqual(p.wait(10), 0)
        p.stdout.close()
        self.assertNotEqual(curl(info["url"] + "/v2/").rc, 0)


def _python_image_wanted():
    v = os.environ.get("MSB_TEST_PYTHON_IMAGE")
    if v is not None:
        return v not in ("", "0")
    return R.python_tree() is not None


@unittest.skipUnless(_python_image_wanted(), "python tree not cached (MSB_TEST_PYTHON_IMAGE=1 builds it)")
class PythonImageTests(RegistryCase):
    mode = "plain"

    def test_python_image(self):
        d = R.build_and_push("python", self.reg, "test/python", build_tree=True, level=1)
        man = self.assert_served("test/python", d)
        self.assertEqual(len(man["layers"]), 2)
        cfg = json.loads(curl(self.v2("test/python/blobs/" + man["config"]["digest"])).body)
        self.assertEqual(cfg["config"]["User"], "app")
        self.assertEqual(cfg["config"]["WorkingDir"], "/work")
        l2 = curl(self.v2("test/python/blobs/" + man["layers"][1]["digest"])).body
        names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(l2))).getnames()
        self.assertTrue(any(n.startswith("usr/lib/python3") and n.endswith("/os.py") for n in names))


if __name__ == "__main__":
    t0 = time.monotonic()
    prog = unittest.main(exit=False, verbosity=2 if "-q" not in sys.argv else 1)
    res = prog.result
    ok = res.wasSuccessful()
    print("%s: %d tests, %d failures, %d errors, %d skipped in %.1fs" % (
        "PASS" if ok else "FAIL", res.testsRun, len(res.failures), len(res.errors),
        len(res.skipped), time.monotonic() - t0))
    sys.exit(0 if ok else 1)
