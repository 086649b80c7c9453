#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""msb image load|save|ls|inspect|rm|prune against OCI layouts built by
tests/registry (busybox with whiteouts, multiarch, bad-diffid), OCI archives
(plain, gzip, zstd), docker-archives (hand-made, with manifest.json after the
layers and symlinked layers, and skopeo's), and hostile inputs.  Every failed
load must exit 1 with one line on stderr and leave the store sound: nothing
in images/tmp, every blob hashing to its name, no pin.

Usage: test_image.py MSB [unittest args]"""
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "registry"))
import registry as R  # noqa: E402

MSB = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "msb"

TMP = None
LAYOUT = {}  # kind -> OCI layout directory (built once)


def setUpModule():
    global TMP
    TMP = tempfile.mkdtemp(prefix="msb-test-image-")
    for name, kind, kw in [("busybox", "busybox", {}),
                           ("busybox-zstd", "busybox", {"compression": "zstd"}),
                           ("busybox-docker", "busybox", {"media": "docker"}),
                           ("multiarch", "multiarch", {}),
                           ("bad-diffid", "bad-diffid", {})]:
        LAYOUT[name] = os.path.join(TMP, "layout-" + name)
        R.build_image(kind, LAYOUT[name], **kw)


def tearDownModule():
    shutil.rmtree(TMP, ignore_errors=True)


def new_home():
    return tempfile.mkdtemp(prefix="home-", dir=TMP)


def msb(home, *args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MSB_")}
    e["MSB_HOME"] = home
    e["MSB_CONFIG"] = "/dev/null"
    if env:
        e.update(env)
    return subprocess.run([MSB, *args], capture_output=True, text=True, env=e, timeout=120)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout_top(layout):
    with open(os.path.join(layout, "index.json")) as f:
        return json.load(f)["manifests"][0]


def layout_blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        return f.read()


def manifest_of(layout):
    """(manifest digest, manifest, config bytes) of a single-image layout."""
    top = layout_top(layout)
    m = json.loads(layout_blob(layout, top["digest"]))
    return top["digest"], m, layout_blob(layout, m["config"]["digest"])


def chain_id(diff_ids):
    chain = diff_ids[0]
    for d in diff_ids[1:]:
        chain = sha256((chain + " " + d).encode())
    return chain


def copy_layout(src):
    dst = tempfile.mkdtemp(prefix="layout-", dir=TMP)
    shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def tar_dir(src, out, mode="w", extra=()):
    """A tar of directory src (names relative to it), plus extra (TarInfo, bytes) members."""
    with tarfile.open(out, mode) as t:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for n in sorted(files):
                p = os.path.join(root, n)
                t.add(p, os.path.relpath(p, src))
        for info, data in extra:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def member(name, data=b"", kind=tarfile.REGTYPE, target=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    ti.linkname = target
    ti.mode = 0o644
    return ti, (data if kind == tarfile.REGTYPE else None)


def docker_archive(layout, out, repo_tags, corrupt_layer=None):
    """docker save's format from a layout: <id>/layer.tar (uncompressed), <hex>.json,
    manifest.json LAST, and each Layers entry a symlink link<i>/layer.tar -> ../<id>/layer.tar."""
    _, m, cfg = manifest_of(layout)
    members, names = [], []
    for i, l in enumerate(m["layers"]):
        data = layout_blob(layout, l["digest"])
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        lid = hashlib.sha256(data).hexdigest()
        if corrupt_layer == i:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xff
            data = bytes(data)
        members.append(member("%s/layer.tar" % lid, data))
        members.append(member("%s/VERSION" % lid, b"1.0"))
        members.append(member("link%d/layer.tar" % i, kind=tarfile.SYMTYPE,
                              target="../%s/layer.tar" % lid))
        names.append("link%d/layer.tar" % i)
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    members.append(member(cfg_name, cfg))
    manifest = [{"Config": cfg_name, "RepoTags": repo_tags, "Layers": names}]
    members.append(member("manifest.json", json.dumps(manifest).encode()))
    with tarfile.open(out, "w") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


class ImageCase(unittest.TestCase):
    def ok(self, p):
        self.assertEqual(p.returncode, 0, "stdout=%r stderr=%r" % (p.stdout, p.stderr))
        return p.stdout

    def fails(self, p, status, *words):
        self.assertEqual(p.returncode, status, "stdout=%r stderr=%r" % (p.stdout, p.stderr))
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        for w in words:
            self.assertIn(w, lines[0])
        return lines[0]

    def load(self, home, path, *args):
        out = self.ok(msb(home, "image", "load", *args, path))
        return dict(line.split(" ", 1)[1].rsplit("@", 1) for line in out.splitlines())

    def pins(self, home):
        p = os.path.join(home, "images", "refs.json")
        if not os.path.exists(p):
            return {}
        with open(p) as f:
            return json.load(f)["refs"]

    def blobs(self, home):
        d = os.path.join(home, "images", "blobs", "sha256")
        return set(os.listdir(d)) if os.path.isdir(d) else set()

    def assertStoreSound(self, home):
        images = os.path.join(home, "images")
        tmp = os.path.join(images, "tmp")
        if os.path.isdir(tmp):
            self.assertEqual(os.listdir(tmp), [], "leftovers in images/tmp")
        for name in self.blobs(home):
            with open(os.path.join(images, "blobs", "sha256", name), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), name,
                                 "blob %s does not hash to its name" % name)

    def assertImageComplete(self, home, ref, digest):
        """inspect shows digest; every blob of the manifest is in the store."""
        info = json.loads(self.ok(msb(home, "image", "inspect", ref, "--json")))
        self.assertEqual(info["digest"], digest)
        have = self.blobs(home)
        self.assertIn(digest[7:], have)
        self.assertIn(info["config"]["digest"][7:], have)
        for l in info["layers"]:
            self.assertIn(l["digest"][7:], have)
        return info


class Load(ImageCase):
    def test_layout_dir_needs_a_name(self):
        home = new_home()
        line = self.fails(msb(home, "image", "load", LAYOUT["busybox"]), 1, "--tag")
        self.assertIn("no name", line)
        self.assertEqual(self.pins(home), {})
        self.assertStoreSound(home)

    def test_layout_dir(self):
        home = new_home()
        digest, m, cfg = manifest_of(LAYOUT["busybox"])
        got = self.load(home, LAYOUT["busybox"], "--tag", "bb:1")
        self.assertEqual(got, {"docker.io/library/bb:1": digest})
        self.assertEqual(self.pins(home), {"docker.io/library/bb:1": digest})
        info = self.assertImageComplete(home, "bb:1", digest)
        c = json.loads(cfg)["config"]
        self.assertEqual(info["platform"], "linux/amd64")
        self.assertEqual(info["config"]["Cmd"], c["Cmd"])
        self.assertEqual(info["config"]["Env"], c["Env"])
        self.assertEqual(info["config"]["WorkingDir"], "/work")
        self.assertEqual(info["config"]["User"], "app")
        self.assertEqual(info["config"]["ExposedPorts"], ["8080/tcp"])
        self.assertIsNone(info["config"]["Entrypoint"])
        self.assertEqual([l["digest"] for l in info["layers"]],
                         [l["digest"] for l in m["layers"]])
        self.assertEqual([l["size"] for l in info["layers"]], [l["size"] for l in m["layers"]])
        self.assertEqual([l["diff_id"] for l in info["layers"]],
                         json.loads(cfg)["rootfs"]["diff_ids"])
        self.assertEqual(info["references"], ["docker.io/library/bb:1"])
        # By digest, and by the short digest ls shows.
        self.assertEqual(json.loads(self.ok(msb(home, "image", "inspect", digest, "--json")))
                         ["digest"], digest)
        self.assertIn(digest, self.ok(msb(home, "image", "inspect", digest[7:19])))
        # ls --json
        ls = json.loads(self.ok(msb(home, "image", "ls", "--json")))
        self.assertEqual(len(ls), 1)
        self.assertEqual(ls[0]["reference"], "docker.io/library/bb:1")
        self.assertEqual(ls[0]["digest"], digest)
        total = len(layout_blob(LAYOUT["busybox"], digest)) + len(cfg) + \
            sum(l["size"] for l in m["layers"])
        self.assertEqual(ls[0]["size"], total)
        self.assertFalse(ls[0]["root_built"])
        self.assertEqual(ls[0]["sandboxes"], [])
        text = self.ok(msb(home, "image", "ls"))
        self.assertIn("docker.io/library/bb:1", text)
        self.assertIn(digest[7:19], text)
        # Loading again changes nothing.
        self.assertEqual(self.load(home, LAYOUT["busybox"], "--tag", "bb:1"), got)
        self.assertStoreSound(home)

    def test_ls_root_column(self):
        home = new_home()
        digest, _, cfg = manifest_of(LAYOUT["busybox"])
        self.load(home, LAYOUT["busybox"], "--tag", "bb:1")
        chain = chain_id(json.loads(cfg)["rootfs"]["diff_ids"])
        root = os.path.join(home, "images", "roots", chain[7:] + ".erofs")
        open(root, "wb").close()
        ls = json.loads(self.ok(msb(home, "image", "ls", "--json")))
        self.assertTrue(ls[0]["root_built"])
        self.assertEqual(ls[0]["root_image"], root)

    def test_multiarch_picks_amd64(self):
        home = new_home()
        idx = json.loads(layout_blob(LAYOUT["multiarch"], layout_top(LAYOUT["multiarch"])["digest"]))
        amd64 = [e["digest"] for e in idx["manifests"]
                 if e.get("platform", {}).get("architecture") == "amd64"]
        self.assertEqual(len(amd64), 1)
        got = self.load(home, LAYOUT["multiarch"], "--tag", "multi:1")
        self.assertEqual(got, {"docker.io/library/multi:1": amd64[0]})
        info = self.assertImageComplete(home, "multi:1", amd64[0])
        self.assertEqual(info["platform"], "linux/amd64")
        # Only the chosen platform's blobs were imported.
        wanted = {amd64[0][7:], info["config"]["digest"][7:]} | \
            {l["digest"][7:] for l in info["layers"]}
        self.assertEqual(self.blobs(home), wanted)
        self.assertStoreSound(home)

    def test_oci_archives(self):
        digest, _, _ = manifest_of(LAYOUT["busybox"])
        plain = tar_dir(LAYOUT["busybox"], os.path.join(TMP, "bb.tar"))
        gz = tar_dir(LAYOUT["busybox"], os.path.join(TMP, "bb.tar.gz"), "w:gz")
        cases = [plain, gz]
        if shutil.which("zstd"):
            subprocess.run(["zstd", "-q", "-f", plain, "-o", plain + ".zst"], check=True)
            cases.append(plain + ".zst")
        for path in cases:
            with self.subTest(path=os.path.basename(path)):
                home = new_home()
                self.assertEqual(self.load(home, path, "--tag", "bb:1"),
                                 {"docker.io/library/bb:1": digest})
                self.assertImageComplete(home, "bb:1", digest)
                self.assertStoreSound(home)

    def test_names_from_annotations(self):
        lay = copy_layout(LAYOUT["busybox"])
        p = os.path.join(lay, "index.json")
        with open(p) as f:
            idx = json.load(f)
        idx["manifests"][0]["annotations"] = {"io.containerd.image.name": "example.com/a/b:v1",
                                              R.REF_NAME: "v1"}
        second = dict(idx["manifests"][0], annotations={R.REF_NAME: "localhost:5000/c:d"})
        idx["manifests"].append(second)
        with open(p, "w") as f:
            json.dump(idx, f)
        home = new_home()
        digest = idx["manifests"][0]["digest"]
        self.assertEqual(self.load(home, lay),
                         {"example.com/a/b:v1": digest, "localhost:5000/c:d": digest})
        # --tag adds a name.
        got = self.load(home, lay, "--tag", "extra")
        self.assertIn("docker.io/library/extra:latest", got)

    def test_docker_archive(self):
        digest0, m, cfg = manifest_of(LAYOUT["busybox"])
        path = docker_archive(LAYOUT["busybox"], os.path.join(TMP, "docker.tar"),
                              ["busybox:saved", "example.com/x/y:2"])
        home = new_home()
        got = self.load(home, path)
        self.assertEqual(set(got), {"docker.io/library/busybox:saved", "example.com/x/y:2"})
        digest = got["example.com/x/y:2"]
        self.assertEqual(got["docker.io/library/busybox:saved"], digest)
        info = self.assertImageComplete(home, "busybox:saved", digest)
        diff_ids = json.loads(cfg)["rootfs"]["diff_ids"]
        self.assertEqual(info["config"]["digest"], sha256(cfg))
        self.assertEqual(info["media_type"], "application/vnd.oci.image.manifest.v1+json")
        # Layers are the uncompressed tars: digest == diff_id.
        self.assertEqual([l["digest"] for l in info["layers"]], diff_ids)
        self.assertEqual([l["diff_id"] for l in info["layers"]], diff_ids)
        self.assertEqual([l["media_type"] for l in info["layers"]],
                         ["application/vnd.oci.image.layer.v1.tar"] * len(diff_ids))
        with open(os.path.join(home, "images", "blobs", "sha256", digest[7:]), "rb") as f:
            man = json.loads(f.read())
        self.assertEqual(man["config"]["mediaType"], "application/vnd.oci.image.config.v1+json")
        self.assertStoreSound(home)
        # The same archive gives the same manifest digest (it is synthesized deterministically),
        # and --tag works on it too.
        home2 = new_home()
        self.assertEqual(self.load(home2, path, "--tag", "t:1")["docker.io/library/t:1"], digest)

    def test_docker_archive_bad_layer(self):
        _, _, cfg = manifest_of(LAYOUT["busybox"])
        diff_ids = json.loads(cfg)["rootfs"]["diff_ids"]
        path = docker_archive(LAYOUT["busybox"], os.path.join(TMP, "docker-bad.tar"),
                              ["busybox:bad"], corrupt_layer=1)
        home = new_home()
        self.fails(msb(home, "image", "load", path), 1, diff_ids[1], "does not match")
        self.assertEqual(self.pins(home), {})
        self.assertNotIn(diff_ids[1][7:], self.blobs(home))
        self.assertStoreSound(home)

    @unittest.skipUnless(shutil.which("skopeo"), "skopeo is not installed")
    def test_skopeo_docker_archive(self):
        path = os.path.join(TMP, "skopeo-docker.tar")
        subprocess.run(["skopeo", "copy", "-q", "oci:%s:latest" % LAYOUT["busybox"],
                        "docker-archive:%s:busybox:sk" % path], check=True, capture_output=True)
        home = new_home()
        got = self.load(home, path)
        self.assertEqual(list(got), ["docker.io/library/busybox:sk"])
        self.assertImageComplete(home, "busybox:sk", got["docker.io/library/busybox:sk"])
        self.assertStoreSound(home)


    @unittest.skipUnless(shutil.which("skopeo"), "skopeo is not installed")
    def test_skopeo_oci_archive(self):
        # skopeo records the whole reference in org.opencontainers.image.ref.name.
        digest, _, _ = manifest_of(LAYOUT["busybox"])
        path = os.path.join(TMP, "skopeo-oci.tar")
        subprocess.run(["skopeo", "copy", "-q", "oci:%s:latest" % LAYOUT["busybox"],
                        "oci-archive:%s:example.com/foo/bar:v2" % path], check=True,
                       capture_output=True)
        home = new_home()
        self.assertEqual(self.load(home, path), {"example.com/foo/bar:v2": digest})
        self.assertStoreSound(home)


class Hostile(ImageCase):
    def corrupt_layout(self, which):
        lay = copy_layout(LAYOUT["busybox"])
        _, m, _ = manifest_of(lay)
        d = m["layers"][1]["digest"] if which == "layer" else m["config"]["digest"]
        p = os.path.join(lay, "blobs", "sha256", d[7:])
        with open(p, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0xff
        os.chmod(p, 0o644)
        with open(p, "wb") as f:
            f.write(data)
        return lay, d

    def test_corrupt_blob(self):
        for which in ("layer", "config"):
            with self.subTest(which=which):
                lay, bad = self.corrupt_layout(which)
                for path in (lay, tar_dir(lay, lay + ".tar")):
                    home = new_home()
                    self.fails(msb(home, "image", "load", "--tag", "x:1", path), 1, bad,
                               "does not match")
                    self.assertEqual(self.pins(home), {})
                    self.assertNotIn(bad[7:], self.blobs(home))
                    self.assertStoreSound(home)

    def test_dotdot_and_absolute_entries(self):
        for name in ("../x", "blobs/../../x", "/etc/x"):
            with self.subTest(name=name):
                path = tar_dir(LAYOUT["busybox"], os.path.join(TMP, "evil.tar"),
                               extra=[member(name, b"evil")])
                home = new_home()
                self.fails(msb(home, "image", "load", "--tag", "x:1", path), 1, name,
                           "refused")
                self.assertEqual(self.pins(home), {})
                self.assertEqual(self.blobs(home), set())
                self.assertStoreSound(home)

    def test_sparse_entry(self):
        for name in ("sparse-gnu", "sparse-pax"):
            with self.subTest(name=name):
                path = os.path.join(TMP, name + ".tar")
                with open(path, "wb") as f:
                    f.write(R.evil_tar(name))
                home = new_home()
                self.fails(msb(home, "image", "load", "--tag", "x:1", path), 1, "sparse")
                self.assertEqual(self.blobs(home), set())
                self.assertStoreSound(home)

    def test_symlink_out_of_layout(self):
        lay = copy_layout(LAYOUT["busybox"])
        _, m, _ = manifest_of(lay)
        d = m["layers"][0]["digest"]
        p = os.path.join(lay, "blobs", "sha256", d[7:])
        outside = os.path.join(TMP, "outside-" + d[7:])
        shutil.copy(p, outside)
        os.unlink(p)
        os.symlink(outside, p)
        home = new_home()
        self.fails(msb(home, "image", "load", "--tag", "x:1", lay), 1, "out of the layout")
        self.assertEqual(self.pins(home), {})
        self.assertStoreSound(home)

    def test_tar_link_out_of_archive(self):
        digest, m, _ = manifest_of(LAYOUT["busybox"])
        lay = copy_layout(LAYOUT["busybox"])
        d = m["layers"][0]["digest"]
        os.unlink(os.path.join(lay, "blobs", "sha256", d[7:]))
        path = tar_dir(lay, os.path.join(TMP, "link.tar"), extra=[
            member("blobs/sha256/" + d[7:], kind=tarfile.SYMTYPE, target="../../../etc/passwd")])
        home = new_home()
        self.fails(msb(home, "image", "load", "--tag", "x:1", path), 1, "outside the archive")
        self.assertEqual(self.pins(home), {})
        self.assertStoreSound(home)

    def test_not_an_image(self):
        home = new_home()
        empty = tempfile.mkdtemp(dir=TMP)
        self.fails(msb(home, "image", "load", "--tag", "x:1", empty), 1, "index.json")
        junk = os.path.join(TMP, "junk.tar")
        with open(junk, "wb") as f:
            f.write(os.urandom(4096))
        self.fails(msb(home, "image", "load", "--tag", "x:1", junk), 1, "junk.tar")
        self.fails(msb(home, "image", "load", "--tag", "Bad//", LAYOUT["busybox"]), 2, "--tag")
        self.fails(msb(home, "image", "load"), 2, "PATH")
        self.assertEqual(self.pins(home), {})
        self.assertStoreSound(home)

    def test_bad_diffid(self):
        """Loading does not decompress layers, so the bad diff_id is not seen then; the image
        must still never become a root: running it fails and builds nothing."""
        home = new_home()
        got = self.load(home, LAYOUT["bad-diffid"], "--tag", "bad:1")
        self.assertEqual(list(got), ["docker.io/library/bad:1"])
        p = msb(home, "run", "--pull", "never", "bad:1", "--", "true",
                env={"MSB_KERNEL": "/bin/true", "MSB_INITRAMFS": "/bin/true"})
        self.assertNotEqual(p.returncode, 0, p.stderr)
        roots = os.path.join(home, "images", "roots")
        self.assertEqual(os.listdir(roots) if os.path.isdir(roots) else [], [])
        sandboxes = os.path.join(home, "sandboxes")
        self.assertEqual(os.listdir(sandboxes) if os.path.isdir(sandboxes) else [], [])
        self.assertStoreSound(home)
        if "bad:1" not in p.stderr:
            # A build without the hypervisor module stops before the image is looked at.
            self.skipTest("msb run stopped before the image: " + p.stderr.strip())


class EvilLayers(ImageCase):
    """Layers built to escape the root, loaded and unpacked into a root image
    (msb image pull --pull never unpacks): each entry is refused or
    neutralised, the unpack either succeeds or fails with one line, and
    nothing appears outside the tree."""

    KINDS = ["dotdot", "absolute", "symlink-abs", "symlink-rel", "hardlink-abs",
             "hardlink-rel", "chardev", "sparse-gnu", "sparse-pax"]

    def markers(self, home):
        found = []
        for top in ("/", "/etc", "/tmp", TMP, home, os.path.join(home, "images")):
            try:
                found += [os.path.join(top, n) for n in os.listdir(top) if "msb-evil" in n]
            except OSError:
                pass
        return found

    def test_evil_layers(self):
        for kind in self.KINDS:
            with self.subTest(kind=kind):
                home = new_home()
                layout = os.path.join(TMP, "evil-" + kind)
                if not os.path.isdir(layout):
                    R.build_image("evil-" + kind, layout)
                self.load(home, layout, "--tag", "evil:1")
                with open("/etc/passwd", "rb") as f:
                    passwd = f.read()
                p = msb(home, "image", "pull", "--pull", "never", "-q", "evil:1")
                if kind.startswith("sparse"):  # 1 TiB apparent: refused before mkfs reads it
                    self.assertIn("max_file_size", p.stderr)
                if p.returncode != 0:
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
                else:
                    roots = os.listdir(os.path.join(home, "images", "roots"))
                    self.assertEqual(len(roots), 1, roots)
                self.assertEqual(self.markers(home), [])
                with open("/etc/passwd", "rb") as f:
                    self.assertEqual(f.read(), passwd)
                self.assertEqual(os.listdir(os.path.join(home, "images", "tmp")), [])
                self.assertStoreSound(home)


class SaveRmPrune(ImageCase):
    def test_save_load_round_trip(self):
        home = new_home()
        digest, _, _ = manifest_of(LAYOUT["busybox"])
        zdigest, _, _ = manifest_of(LAYOUT["busybox-zstd"])
        self.load(home, LAYOUT["busybox"], "--tag", "bb:1")
        self.load(home, LAYOUT["busybox-zstd"], "--tag", "example.com/z/bb:zstd")
        out_dir = os.path.join(tempfile.mkdtemp(dir=TMP), "saved")
        out_tar = out_dir + ".tar"
        self.ok(msb(home, "image", "save", "-o", out_dir, "bb:1", "example.com/z/bb:zstd"))
        self.ok(msb(home, "image", "save", "-o", out_tar, "bb:1", zdigest))
        with open(os.path.join(out_dir, "index.json")) as f:
            idx = json.load(f)
        anns = [e["annotations"] for e in idx["manifests"]]
        self.assertEqual(anns, [{"io.containerd.image.name": "docker.io/library/bb:1",
                                 R.REF_NAME: "1"},
                                {"io.containerd.image.name": "example.com/z/bb:zstd",
                                 R.REF_NAME: "zstd"}])
        with open(os.path.join(out_dir, "oci-layout")) as f:
            self.assertEqual(json.load(f), {"imageLayoutVersion": "1.0.0"})
        for name in os.listdir(os.path.join(out_dir, "blobs", "sha256")):
            with open(os.path.join(out_dir, "blobs", "sha256", name), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), name)
        # Into fresh homes: the same manifest digests.
        h2 = new_home()
        self.assertEqual(self.load(h2, out_dir), {"docker.io/library/bb:1": digest,
                                                  "example.com/z/bb:zstd": zdigest})
        self.assertStoreSound(h2)
        # Saved by digest: no name, so loading it needs --tag, which names that one.
        h3 = new_home()
        self.fails(msb(h3, "image", "load", out_tar), 1, zdigest, "--tag")
        self.assertEqual(self.pins(h3), {})
        self.assertEqual(self.load(h3, out_tar, "--tag", "z:1"),
                         {"docker.io/library/bb:1": digest, "docker.io/library/z:1": zdigest})
        self.assertImageComplete(h3, "z:1", zdigest)
        self.assertStoreSound(h3)
        # An existing non-empty directory is refused and left alone.
        self.fails(msb(home, "image", "save", "-o", out_dir, "bb:1"), 1, "not an empty")
        self.fails(msb(home, "image", "save", "-o", out_dir + "2", "nope:1"), 1, "nope")
        self.fails(msb(home, "image", "save", "bb:1"), 2, "-o")
        self.assertFalse(os.path.exists(out_dir + "2"))

    @unittest.skipUnless(shutil.which("skopeo"), "skopeo is not installed")
    def test_skopeo_accepts_saved(self):
        home = new_home()
        digest, _, _ = manifest_of(LAYOUT["busybox"])
        self.load(home, LAYOUT["busybox"], "--tag", "bb:1")
        base = tempfile.mkdtemp(dir=TMP)
        out_dir, out_tar = os.path.join(base, "saved"), os.path.join(base, "saved.tar")
        self.ok(msb(home, "image", "save", "-o", out_dir, "bb:1"))
        self.ok(msb(home, "image", "save", "-o", out_tar, "bb:1"))
        for src in ("oci:%s:1" % out_dir, "oci-archive:%s:1" % out_tar):
            with self.subTest(src=src.split(":")[0]):
                dst = os.path.join(base, "copy-" + src.split(":")[0])
                p = subprocess.run(["skopeo", "copy", "-q", src, "oci:%s:copied" % dst],
                                   capture_output=True, text=True)
                self.assertEqual(p.returncode, 0, p.stderr)
                with open(os.path.join(dst, "index.json")) as f:
                    self.assertEqual(json.load(f)["manifests"][0]["digest"], digest)

    def make_sandbox(self, home, name, digest=None, root=None):
        d = os.path.join(home, "sandboxes", name)
        os.makedirs(d, mode=0o700)
        open(os.path.join(d, "spec.json"), "w").close()
        if digest:
            with open(os.path.join(d, "image.digest"), "w") as f:
                f.write(digest + "\n")
        if root:
            with open(os.path.join(d, "root.image"), "w") as f:
                f.write(root + "\n")

    def test_rm(self):
        home = new_home()
        digest, _, _ = manifest_of(LAYOUT["busybox"])
        self.load(home, LAYOUT["busybox"], "--tag", "bb:1")
        self.load(home, LAYOUT["busybox"], "--tag", "bb:2")
        self.make_sandbox(home, "x", digest)
        self.assertEqual(json.loads(self.ok(msb(home, "image", "ls", "--json")))[0]["sandboxes"],
                         ["x"])
        self.fails(msb(home, "image", "rm", "bb:1"), 1, "sandbox x", "-f")
        self.assertIn("docker.io/library/bb:1", self.pins(home))
        self.assertIn("untagged docker.io/library/bb:1",
                      self.ok(msb(home, "image", "rm", "-f", "bb:1")))
        self.assertEqual(self.pins(home), {"docker.io/library/bb:2": digest})
        self.fails(msb(home, "image", "rm", "bb:1"), 1, "bb:1")
        # The sandbox's image survives (inspect by digest), and so does it after prune.
        self.assertImageComplete(home, digest, digest)
        shutil.rmtree(os.path.join(home, "sandboxes", "x"))
        # By digest: every name of it.
        self.assertIn("untagged docker.io/library/bb:2",
                      self.ok(msb(home, "image", "rm", digest[7:19])))
        self.assertEqual(self.pins(home), {})
        self.fails(msb(home, "image", "rm"), 2, "no image")

    def age(self, home, seconds=300):
        t = time.time() - seconds
        for sub in ("blobs/sha256", "roots", "diffids", ""):
            d = os.path.join(home, "images", sub)
            for n in os.listdir(d):
                p = os.path.join(d, n)
                if os.path.isfile(p):
                    os.utime(p, (t, t))

    def test_prune(self):
        home = new_home()
        digest, m, cfg = manifest_of(LAYOUT["busybox"])
        zdigest, zm, _ = manifest_of(LAYOUT["busybox-zstd"])
        self.load(home, LAYOUT["busybox"], "--tag", "bb:1")
        self.load(home, LAYOUT["busybox-zstd"], "--tag", "bbz:1")
        self.load(home, LAYOUT["busybox-docker"], "--tag", "used:1")
        used = json.loads(self.ok(msb(home, "image", "inspect", "used:1", "--json")))
        self.ok(msb(home, "image", "rm", "bbz:1", "used:1"))
        # A sandbox still uses the Docker-media image (the same config and layers as bb:1,
        # another manifest) and one a --rootfs tree's root image.
        tree_root = os.path.join(home, "images", "b" * 64 + ".erofs")
        stale_tree = os.path.join(home, "images", "c" * 64 + ".erofs")
        self.make_sandbox(home, "keep", used["digest"])
        self.make_sandbox(home, "tree", root=tree_root)
        chain = chain_id(json.loads(cfg)["rootfs"]["diff_ids"])
        roots = os.path.join(home, "images", "roots")
        live_root = os.path.join(roots, chain[7:] + ".erofs")
        stale_root = os.path.join(roots, "a" * 64 + ".erofs")
        for p in (live_root, stale_root, tree_root, stale_tree):
            with open(p, "wb") as f:
                f.write(b"x" * 100)
        zlayers = {l["digest"][7:] for l in zm["layers"]}
        diffids = os.path.join(home, "images", "diffids")
        for h in list(zlayers) + [m["layers"][0]["digest"][7:]]:
            with open(os.path.join(diffids, h), "w") as f:
                f.write(json.loads(cfg)["rootfs"]["diff_ids"][0] + "\n")
        before = self.blobs(home)
        # Young: nothing goes.
        out = json.loads(self.ok(msb(home, "image", "prune", "--json")))
        self.assertEqual(out["removed"], [])
        self.assertGreater(out["kept"], 0)
        self.assertEqual(self.blobs(home), before)
        self.age(home)
        # A blob being written (its lock held) stays.
        lockp = os.path.join(home, "images", "locks", zdigest[7:] + ".lock")
        with open(lockp, "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            out = json.loads(self.ok(msb(home, "image", "prune", "--json")))
        removed = {(i["kind"], i["name"]) for i in out["removed"]}
        self.assertIn(zdigest[7:], self.blobs(home))
        expect_blobs = {("blob", "sha256:" + h) for h in zlayers}
        self.assertTrue(expect_blobs <= removed, removed)
        self.assertIn(("root", stale_root), removed)
        self.assertIn(("root", stale_tree), removed)
        for h in zlayers:
            self.assertIn(("diffid", "sha256:" + h), removed)
        self.assertEqual(out["freed"], sum(i["size"] for i in out["removed"]))
        # Kept: what pins and sandboxes use.
        self.assertTrue(os.path.exists(live_root))
        self.assertTrue(os.path.exists(tree_root))
        self.assertTrue(os.path.exists(os.path.join(diffids, m["layers"][0]["digest"][7:])))
        self.assertImageComplete(home, "bb:1", digest)
        self.assertImageComplete(home, used["digest"], used["digest"])
        # The lock is gone: the unused manifest goes now.
        out = self.ok(msb(home, "image", "prune"))
        self.assertIn("deleted blob " + zdigest, out)
        self.assertIn("freed", out)
        self.assertNotIn(zdigest[7:], self.blobs(home))
        # The sandbox goes: its image does too.
        shutil.rmtree(os.path.join(home, "sandboxes", "keep"))
        self.age(home)
        self.ok(msb(home, "image", "prune"))
        self.assertNotIn(used["digest"][7:], self.blobs(home))
        self.assertImageComplete(home, "bb:1", digest)
        self.assertStoreSound(home)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[2:], verbosity=2)
