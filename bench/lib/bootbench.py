#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/lib/bootbench.py -- the measuring half of bench/boot (stdlib only).

Runs where /dev/kvm works (bench/boot puts it inside tests/kvmhost when this
machine has none).  Boots, one VM at a time, alternating msb and the peer:

  msb-true   `msb run --rootfs TREE -- true`: wall time of the whole command
             (spec, tree hash, upper disk, boot, HELLO, exec, shutdown,
             cleanup), VM exits over the VM's whole life.
  qemu-true  QEMU -M microvm with the same kernel, initramfs, command line,
             root image and a fresh upper: time to the agent's HELLO frame,
             then EXEC `true` -> EXIT, SHUTDOWN -> ACK -> SIGTERM, QEMU exits
             (the steps `msb run` takes: it destroys the VM after the ACK);
             VM exits to HELLO and in all.
  msb-ready / qemu-ready
             the same, running `sh -c 'echo ready; sleep 2'`: time to the
             command's first output (HELLO + exec + first STDOUT: the one
             "ready" point both sides expose), exits up to then, and the
             monitor's memory sampled several times while the command sleeps
             (RSS of the monitor process minus the RSS of its guest-RAM
             mapping; the max is kept).

VM exits are counted with a hist trigger on the kvm:kvm_exit tracepoint (keyed
by exit reason: exact, and counts the exits of VMs that have gone); without
tracefs hist support, by polling the per-VM debugfs directory
/sys/kernel/debug/kvm/<pid>-<fd>/exits (the last value seen before the VM
went).

Prints a table on stderr and writes the results as JSON (--json FILE, '-' =
stdout).
"""

import argparse
import glob
import json
import os
import platform
import re
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

# --- the agent protocol (guest/proto/agent-proto.h) ---------------------------

PROTO_VERSION = 1
HDR = struct.Struct("<BBHII")  # version, type, flags, session, length
T_HELLO, T_STDOUT, T_STDERR, T_EXIT, T_ERROR, T_STARTED, T_PONG, T_SHUTDOWN_ACK = 1, 2, 3, 4, 5, 6, 7, 8
T_EXEC, T_STDIN, T_SIGNAL, T_RESIZE, T_PING, T_SHUTDOWN = 32, 33, 34, 35, 36, 37
T_WINDOW = 64
FRAME_MAX = 64 * 1024
POWEROFF = 1

# The fixed part of the guest command line (plugins/hv-kvm/plugin.c) and what
# msb's core appends (core/sandbox.c).  msb adds virtio_mmio.device= entries
# itself; QEMU microvm adds its own (auto-kernel-cmdline).
BASE_CMDLINE = ("console=ttyS0 reboot=k panic=-1 pci=off nomodule 8250.nr_uarts=1 i8042.noaux "
                "i8042.nomux i8042.nopnp i8042.dumbkbd quiet")
MSB_CMDLINE = "msb.root=/dev/vda msb.upper=/dev/vdb msb.hostname=bench"
UPPER_SIZE = 8 << 30  # MSB_UPPER_SIZE (core/rootfs.h)

# AMD SVM exit codes (the test host is AMD/SVM; Intel's VMX reasons differ).
SVM_EXITS = {
    0x40: "EXCP_DB", 0x41: "EXCP_DB", 0x46: "EXCP_UD", 0x4e: "EXCP_PF",
    0x60: "INTR", 0x61: "NMI", 0x62: "SMI", 0x63: "INIT", 0x64: "VINTR",
    0x65: "CR0_SEL_WRITE", 0x6e: "RDTSC", 0x72: "CPUID", 0x75: "PAUSE",
    0x76: "IRET", 0x77: "INVD", 0x78: "HLT", 0x79: "INVLPG", 0x7a: "INVLPGA",
    0x7b: "IOIO", 0x7c: "MSR", 0x7d: "TASK_SWITCH", 0x7f: "SHUTDOWN",
    0x80: "VMRUN", 0x81: "VMMCALL", 0x87: "RDTSCP", 0x8b: "XSETBV",
    0x400: "NPF", 0x401: "AVIC_INCOMPLETE_IPI", 0x402: "AVIC_UNACCEL_ACCESS",
}


def exit_name(code):
    if 0x00 <= code <= 0x0f:
        return "READ_CR%d" % code
    if 0x10 <= code <= 0x1f:
        return "WRITE_CR%d" % (code - 0x10)
    if 0x20 <= code <= 0x2f:
        return "READ_DR%d" % (code - 0x20)
    if 0x30 <= code <= 0x3f:
        return "WRITE_DR%d" % (code - 0x30)
    return SVM_EXITS.get(code, "0x%x" % code)


def log(msg):
    print("bench/boot: " + msg, file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def enc_str(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def enc_exec(argv, user="", cwd="", env=()):
    p = struct.pack("<IHH", 0, 0, 0) + enc_str(user) + enc_str(cwd)
    p += struct.pack("<I", len(argv)) + b"".join(enc_str(a) for a in argv)
    p += struct.pack("<I", len(env)) + b"".join(enc_str(e) for e in env)
    return p


def frame(ftype, session, payload=b""):
    return HDR.pack(PROTO_VERSION, ftype, 0, session, len(payload)) + payload


class Agent:
    """A minimal host side of the agent protocol over a connected socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_frame(self, deadline):
        while True:
            if len(self.buf) >= HDR.size:
                ver, ftype, flags, session, length = HDR.unpack_from(self.buf)
                if ver != PROTO_VERSION or flags or length > FRAME_MAX:
                    raise RuntimeError("bad frame header from the agent: %r" % self.buf[:12])
                if len(self.buf) >= HDR.size + length:
                    payload = self.buf[HDR.size:HDR.size + length]
                    self.buf = self.buf[HDR.size + length:]
                    return ftype, session, payload
            left = deadline - now()
            if left <= 0:
                raise TimeoutError("no frame from the agent in time")
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the agent channel closed")
            self.buf += data

    def send(self, ftype, session, payload=b""):
        self.sock.sendall(frame(ftype, session, payload))


# --- measurements on the host side of the VM -----------------------------------

# KVM tracepoints, all counted in kernel by hist triggers (exact, no trace
# buffer, and they count the exits of VMs that have already gone): exits by
# reason, port I/O by port, MMIO by type.  Plus one trace instance recording
# MMIO writes with CLOCK_MONOTONIC timestamps, to find the moment the agent's
# HELLO left the guest.
HISTS = {
    "exits": ("kvm_exit", "hist:keys=exit_reason", "exit_reason"),
    "pio": ("kvm_pio", "hist:keys=port", "port"),
    "mmio": ("kvm_mmio", "hist:keys=type", "type"),
}
KVM_TRACE_MMIO_WRITE = 2  # include/trace/events/kvm.h
INSTANCE = "msb-bench"
MMIO_RE = re.compile(r"\s(\d+\.\d+): kvm_mmio: mmio write len \d+ gpa 0x([0-9a-f]+) val 0x([0-9a-f]+)")


class Counters:
    def __init__(self):
        self.tracefs = None
        self.hists = []
        self.instance = None
        self.debugfs = False

    def setup(self):
        if not os.path.isdir("/sys/kernel/debug/kvm"):
            subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"],
                           stderr=subprocess.DEVNULL, check=False)
        self.debugfs = os.path.isdir("/sys/kernel/debug/kvm")
        for t in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
            if not os.path.isdir(t + "/events"):
                subprocess.run(["mount", "-t", "tracefs", "nodev", t],
                               stderr=subprocess.DEVNULL, check=False)
            if os.path.isdir(t + "/events/kvm"):
                self.tracefs = t
                break
        if not self.tracefs:
            log("no tracefs kvm events: exits from per-VM debugfs only")
            return
        for name, (ev, trig, _) in HISTS.items():
            try:
                with open("%s/events/kvm/%s/trigger" % (self.tracefs, ev), "a") as f:
                    f.write(trig + "\n")
                self.hists.append(name)
            except OSError as e:
                log("hist trigger on kvm:%s refused (%s)" % (ev, e))
        try:
            inst = "%s/instances/%s" % (self.tracefs, INSTANCE)
            if not os.path.isdir(inst):
                os.mkdir(inst)
            self._w(inst + "/trace_clock", "mono")
            self._w(inst + "/buffer_size_kb", "4096")
            self._w(inst + "/events/kvm/kvm_mmio/filter", "type == %d" % KVM_TRACE_MMIO_WRITE)
            self._w(inst + "/events/kvm/kvm_mmio/enable", "1")
            self._w(inst + "/tracing_on", "1")
            self.instance = inst
        except OSError as e:
            log("no MMIO trace instance (%s): no guest-side HELLO times" % e)

    @staticmethod
    def _w(path, text):
        with open(path, "w") as f:
            f.write(text + "\n")

    def teardown(self):
        for name in self.hists:
            ev, trig, _ = HISTS[name]
            try:
                with open("%s/events/kvm/%s/trigger" % (self.tracefs, ev), "a") as f:
                    f.write("!" + trig + "\n")
            except OSError:
                pass
        if self.instance:
            try:
                self._w(self.instance + "/events/kvm/kvm_mmio/enable", "0")
                os.rmdir(self.instance)
            except OSError:
                pass

    @property
    def exact(self):
        return "exits" in self.hists

    def snapshot(self):
        """{hist name: {key: count}} since setup."""
        out = {}
        for name in self.hists:
            ev, _, key = HISTS[name]
            d = {}
            with open("%s/events/kvm/%s/hist" % (self.tracefs, ev)) as f:
                for line in f:
                    m = re.match(r"\{ %s:\s*(\d+)\s*\} hitcount:\s*(\d+)" % key, line)
                    if m:
                        d[int(m.group(1))] = int(m.group(2))
            out[name] = d
        return out

    @staticmethod
    def delta(a, b):
        out = {}
        for name in b:
            x, y = a.get(name, {}), b[name]
            d = {k: y.get(k, 0) - x.get(k, 0) for k in set(x) | set(y)}
            out[name] = {k: v for k, v in d.items() if v}
        return out

    def mark(self):
        """Forget the MMIO writes recorded so far."""
        if self.instance:
            with open(self.instance + "/trace", "w"):
                pass

    def hello_sent(self):
        """CLOCK_MONOTONIC time of the first MMIO write of 1 to a QueueNotify
        register (offset 0x50 in a virtio-mmio window; msb's windows are 4 KiB,
        QEMU microvm's 512 B): queue 1 is the console's transmit queue, and
        the first thing the guest transmits on /dev/hvc0 is the agent's HELLO.
        (Block and rng devices have one queue, 0.)  None if not seen."""
        if not self.instance:
            return None
        with open(self.instance + "/trace") as f:
            for line in f:
                m = MMIO_RE.search(line)
                if m and int(m.group(2), 16) & 0x1FF == 0x50 and int(m.group(3), 16) == 1:
                    return float(m.group(1))
        return None


C = Counters()


def exits_total(d):
    return sum(d["exits"].values()) if d and "exits" in d else None


def vm_debugfs_exits(pid):
    """Exits of pid's VM from its per-VM debugfs directory, or None."""
    total = None
    for p in glob.glob("/sys/kernel/debug/kvm/%d-*/exits" % pid):
        try:
            with open(p) as f:
                total = (total or 0) + int(f.read())
        except (OSError, ValueError):
            pass
    return total


def monitor_memory(pid, guest_bytes):
    """(total RSS, guest-RAM RSS, total private, guest-RAM private) in KiB.

    The guest-RAM mapping: the anonymous mapping whose size is the guest's
    memory size (the one with most RSS if several).  None if it is not there.
    """
    want_kib = guest_bytes // 1024
    rss = priv = 0
    best = None
    maps = []
    cur = None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    parts = line.split()
                    path = parts[5] if len(parts) > 5 else ""
                    cur = {"anon": path == "" or path.startswith("[anon"), "size": 0, "rss": 0,
                           "priv": 0, "path": path or "[anon]",
                           "start": int(parts[0].split("-")[0], 16)}
                    maps.append(cur)
                    continue
                k, _, v = line.partition(":")
                if cur is None or not v.strip().endswith("kB"):
                    continue
                n = int(v.split()[0])
                if k == "Size":
                    cur["size"] = n
                elif k == "Rss":
                    cur["rss"] = n
                    rss += n
                    if cur["anon"] and cur["size"] == want_kib and (best is None or n > best["rss"]):
                        best = cur
                elif k == "AnonHugePages":
                    cur["thp"] = n
                elif k in ("Private_Clean", "Private_Dirty"):
                    cur["priv"] += n
                    priv += n
    except (OSError, ValueError):
        return None
    if best is None:
        return None
    # Where the rest is: RSS by mapped file ([anon], [heap], [stack], ...).
    by = {}
    for mp in maps:
        if mp is not best and mp["rss"]:
            by[mp["path"]] = by.get(mp["path"], 0) + mp["rss"]
    top = dict(sorted(by.items(), key=lambda kv: -kv[1])[:10])
    return {"rss_kib": rss, "guest_rss_kib": best["rss"], "priv_kib": priv,
            "guest_priv_kib": best["priv"], "guest_thp_kib": best.get("thp", 0),
            # KVM maps 2 MiB nested pages only where host and guest
            # addresses agree modulo 2 MiB (guest RAM starts at 0).
            "guest_host_addr_mod_2m": best["start"] % (2 << 20),
            "mappings": len(maps), "top_rss_kib": top}


def sample_memory(pid, guest_bytes, samples, interval):
    worst = None
    for i in range(samples):
        m = monitor_memory(pid, guest_bytes)
        if m is not None:
            m["overhead_rss_kib"] = m["rss_kib"] - m["guest_rss_kib"]
            m["overhead_priv_kib"] = m["priv_kib"] - m["guest_priv_kib"]
            if worst is None or m["overhead_rss_kib"] > worst["overhead_rss_kib"]:
                worst = m
        if i + 1 < samples:
            time.sleep(interval)
    return worst


# --- msb --------------------------------------------------------------------------


class Bench:
    def __init__(self, a):
        self.a = a
        self.mem = parse_size(a.memory)
        self.env = dict(os.environ, MSB_HOME=a.msb_home, MSB_KERNEL=a.kernel,
                        MSB_INITRAMFS=a.initramfs)
        self.env.pop("MSB_LOG", None)
        # Nested TCG boots are slow; msb's default wait for the agent is 120 s.
        self.env.setdefault("MSB_BOOT_TIMEOUT", "%ds" % a.timeout)
        self.work = tempfile.mkdtemp(prefix="msb-bench-")
        self.image = None

    def msb_argv(self, cmd):
        # --no-net: the peer has no network device either (the same devices
        # on both sides: two virtio-blk, the agent's console, virtio-rng).
        return [self.a.msb, "run", "--no-net", "--rootfs", self.a.rootfs, "--cpus", "1",
                "--memory", self.a.memory, "--"] + cmd

    def poll_exits(self, proc, stop):
        """Without hist triggers: the last exits count of proc's VM seen
        before it went (polled every 10 ms until proc ends or stop())."""
        last = None
        while proc.poll() is None and not stop():
            v = vm_debugfs_exits(proc.pid)
            if v is not None:
                last = v
            time.sleep(0.01)
        return last

    def begin(self):
        C.mark()
        return C.snapshot()

    def counts_since(self, h0, pid, t0, res, suffix):
        """Exits (and, at the end, their breakdown) since h0 into res."""
        d = Counters.delta(h0, C.snapshot())
        if C.exact:
            res["exits" + suffix] = exits_total(d)
        else:
            res["exits" + suffix] = vm_debugfs_exits(pid)
        return d

    def breakdown(self, d, res):
        if "exits" in d:
            res["exit_reasons"] = named(d["exits"])
        if "pio" in d:
            res["pio_ports"] = {"0x%x" % k: v for k, v in
                                sorted(d["pio"].items(), key=lambda kv: -kv[1])}
        if "mmio" in d:
            res["mmio_writes"] = d["mmio"].get(KVM_TRACE_MMIO_WRITE, 0)
            res["mmio_reads"] = sum(v for k, v in d["mmio"].items() if k != KVM_TRACE_MMIO_WRITE)

    def guest_hello(self, t0, res):
        t = C.hello_sent()
        if t is not None:
            res["hello_sent_s"] = t - t0

    def msb_true(self):
        h0 = self.begin()
        t0 = now()
        p = subprocess.Popen(self.msb_argv(["true"]), env=self.env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        polled = None if C.exact else self.poll_exits(p, lambda: False)
        out, err = p.communicate(timeout=self.a.timeout)
        t1 = now()
        if p.returncode != 0:
            raise RuntimeError("msb run -- true exited %d: %s" % (p.returncode, err.decode(errors="replace")[-2000:]))
        res = {"e2e_s": t1 - t0}
        d = self.counts_since(h0, p.pid, t0, res, "")
        if not C.exact:
            res["exits"] = polled
        self.breakdown(d, res)
        self.guest_hello(t0, res)
        return res

    def msb_ready(self):
        h0 = self.begin()
        t0 = now()
        p = subprocess.Popen(self.msb_argv(["sh", "-c", "echo ready; sleep 2"]), env=self.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        deadline = t0 + self.a.timeout
        line = b""
        while not line.endswith(b"\n"):
            r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - now()))
            if not r:
                p.kill()
                raise RuntimeError("msb: no output from the command in %ds" % self.a.timeout)
            c = os.read(p.stdout.fileno(), 1)
            if not c:
                break
            line += c
        res = {"ready_s": now() - t0}
        self.counts_since(h0, p.pid, t0, res, "_to_ready")
        if line.strip() != b"ready":
            p.kill()
            raise RuntimeError("msb: unexpected output %r: %s" % (line, p.stderr.read().decode(errors="replace")))
        res["memory"] = sample_memory(p.pid, self.mem, self.a.mem_samples,
                                      1.2 / self.a.mem_samples)
        _, err = p.communicate(timeout=self.a.timeout)
        res["e2e_s"] = now() - t0
        if p.returncode != 0:
            raise RuntimeError("msb ready run exited %d: %s" % (p.returncode, err.decode(errors="replace")[-2000:]))
        self.guest_hello(t0, res)
        return res

    def find_image(self):
        imgs = sorted(glob.glob(os.path.join(self.a.msb_home, "images", "*.erofs")),
                      key=os.path.getmtime)
        if not imgs:
            raise RuntimeError("no erofs image under %s/images after the warm-up run" % self.a.msb_home)
        self.image = imgs[-1]
        return self.image

    # --- QEMU ---------------------------------------------------------------------

    def make_upper(self, path):
        t0 = now()
        with open(path, "wb") as f:
            f.truncate(UPPER_SIZE)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^resize_inode", "-E",
                        "lazy_itable_init=1,lazy_journal_init=1,nodiscard", path], check=True)
        return now() - t0

    def qemu_argv(self, upper, sock, serial):
        return [self.a.qemu,
                "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off",
                "-accel", "kvm", "-cpu", "host", "-m", str(self.mem >> 20) + "M", "-smp", "1",
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-serial", "file:" + serial,
                "-kernel", self.a.kernel, "-initrd", self.a.initramfs,
                "-append", BASE_CMDLINE + " " + MSB_CMDLINE,
                # vda: the shared root image (read-only); vdb: the upper.
                "-drive", "id=root,file=%s,format=raw,if=none,readonly=on" % self.image,
                "-device", "virtio-blk-device,drive=root",
                "-drive", "id=upper,file=%s,format=raw,if=none" % upper,
                "-device", "virtio-blk-device,drive=upper",
                # the agent's channel: /dev/hvc0 in the guest
                "-device", "virtio-serial-device",
                "-chardev", "socket,id=agent,path=" + sock,
                "-device", "virtconsole,chardev=agent",
                # msb gives its guests a virtio-rng too
                "-device", "virtio-rng-device"]

    def qemu_run(self, cmd, ready_marker=None, keep_output=False):
        """Boot QEMU, wait for HELLO, run cmd, shut down.  Timings from QEMU start."""
        d = tempfile.mkdtemp(dir=self.work)
        upper, sock, serial = d + "/upper.ext4", d + "/agent.sock", d + "/console.log"
        mkfs_s = self.make_upper(upper)
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(sock)
        ls.listen(1)
        res = {"mkfs_s": mkfs_s}
        h0 = self.begin()
        t0 = now()
        p = subprocess.Popen(self.qemu_argv(upper, sock, serial), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = t0 + self.a.timeout
        conn = None
        try:
            ls.settimeout(self.a.timeout)
            conn, _ = ls.accept()
            ag = Agent(conn)
            ftype, _, payload = ag.read_frame(deadline)
            res["hello_s"] = now() - t0
            if ftype != T_HELLO:
                raise RuntimeError("first frame from the agent is type %d, not HELLO" % ftype)
            self.counts_since(h0, p.pid, t0, res, "_to_hello")
            (ver,) = struct.unpack_from("<I", payload)
            (slen,) = struct.unpack_from("<I", payload, 4)
            res["agent"] = "proto %d, %s" % (ver, payload[8:8 + slen].decode(errors="replace"))
            ag.send(T_EXEC, 1, enc_exec(cmd))
            code = None
            out = b""
            while code is None:
                ftype, session, payload = ag.read_frame(deadline)
                if ftype == T_STDOUT:
                    out += payload
                    if ready_marker and "ready_s" not in res and ready_marker in out:
                        res["ready_s"] = now() - t0
                        self.counts_since(h0, p.pid, t0, res, "_to_ready")
                        res["memory"] = sample_memory(p.pid, self.mem, self.a.mem_samples,
                                                      1.2 / self.a.mem_samples)
                elif ftype == T_EXIT:
                    code, sig = struct.unpack("<ii", payload)
                elif ftype == T_ERROR:
                    (errno_,) = struct.unpack_from("<i", payload)
                    raise RuntimeError("the agent could not run %r: errno %d %r" % (cmd, errno_, payload[8:]))
            res["exec_done_s"] = now() - t0
            if keep_output:
                res["output"] = out.decode(errors="replace")
            if code != 0:
                raise RuntimeError("%r exited %d in the QEMU guest" % (cmd, code))
            polled = None if C.exact else vm_debugfs_exits(p.pid)
            ag.send(T_SHUTDOWN, 0, struct.pack("<I", POWEROFF))
            while True:
                ftype, _, _ = ag.read_frame(deadline)
                if ftype == T_SHUTDOWN_ACK:
                    break
            # The agent has synced the disks; like msb (which then destroys
            # the VM), end QEMU now: the guest's power-off only halts it (no
            # ACPI), so QEMU would not exit by itself.
            p.terminate()
            p.wait(timeout=max(1, deadline - now()))
            res["e2e_s"] = now() - t0
            dd = self.counts_since(h0, p.pid, t0, res, "")
            if not C.exact:
                res["exits"] = polled
            self.breakdown(dd, res)
            self.guest_hello(t0, res)
        except Exception:
            p.kill()
            p.wait()
            try:
                with open(serial, errors="replace") as f:
                    tail = f.read()[-1500:]
            except OSError:
                tail = ""
            log("QEMU failed; stderr: %s; console: %s" % (p.stderr.read().decode(errors="replace")[-1500:], tail))
            raise
        finally:
            if conn:
                conn.close()
            ls.close()
            if p.poll() is None:
                p.kill()
                p.wait()
            shutil.rmtree(d, ignore_errors=True)
        return res

    def qemu_true(self):
        return self.qemu_run(["true"])

    def qemu_ready(self):
        return self.qemu_run(["sh", "-c", "echo ready; sleep 2"], ready_marker=b"ready\n")

    def qemu_smoke(self):
        """Check the QEMU guest sees the same root: prints what it ran."""
        return self.qemu_run(["sh", "-c", "test -e /linuxrc -o -e /usr/bin/python3 && "
                              "grep -q ' / overlay ' /proc/mounts"])


def named(d):
    if d is None:
        return None
    return {exit_name(k): v for k, v in sorted(d.items(), key=lambda kv: -kv[1])}


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMGT]?)", s)
    if not m:
        raise SystemExit("bad size: " + s)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2)]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "s":
        return "%.3f s" % v
    if unit == "MiB":
        return "%.2f MiB" % (v / 1024.0)
    return "%d" % round(v)


def build_id(a):
    """sha256 of the msb binary and the hv-kvm module, and the git HEAD: what
    was measured (the build tree may change under a long run)."""
    # (sha256sum, not hashlib: hashlib would map libcrypto into this process,
    # and the monitors' libcrypto pages would then count as shared, not private)
    out = {}
    root = os.path.dirname(a.msb)
    for name, path in (("msb", a.msb), ("hv-kvm.so", os.path.join(root, "plugins", "hv-kvm", "hv-kvm.so")),
                       ("kernel", a.kernel), ("initramfs", a.initramfs)):
        r = subprocess.run(["sha256sum", path], capture_output=True, text=True)
        out[name] = r.stdout.split()[0][:16] if r.returncode == 0 else None
    try:
        out["git_head"] = subprocess.run(["git", "-C", os.path.dirname(root), "rev-parse", "--short", "HEAD"],
                                         capture_output=True, text=True).stdout.strip() or None
    except OSError:
        out["git_head"] = None
    return out


def machine_info(a):
    info = {"kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        info["cpus"] = os.cpu_count()
    except OSError:
        pass
    try:
        v = subprocess.run([a.qemu, "--version"], capture_output=True, text=True).stdout
        info["qemu"] = v.splitlines()[0]
    except OSError:
        pass
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            info["thp"] = f.read().strip()
    except OSError:
        pass
    info["nested"] = os.environ.get("MSB_BENCH_NESTED", "") == "1"
    return info


def main():
    ap = argparse.ArgumentParser(description="msb vs QEMU microvm boot benchmark (inner part)")
    ap.add_argument("--msb", required=True)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initramfs", required=True)
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--msb-home", default=None)
    ap.add_argument("--mem-samples", type=int, default=5)
    ap.add_argument("--timeout", type=int, default=180)
    ap.add_argument("--json", default="-")
    ap.add_argument("--command-line", default="", help="recorded in the results")
    a = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise SystemExit("bench/boot: no usable /dev/kvm here")
    if a.msb_home is None:
        a.msb_home = tempfile.mkdtemp(prefix="msb-bench-home-")
    a.msb = os.path.abspath(a.msb)
    b = Bench(a)
    C.setup()
    before = build_id(a)
    try:
        results = run_all(a, b)
    finally:
        C.teardown()
    after = build_id(a)
    results["build"] = before
    if {k: v for k, v in after.items() if k != "git_head"} != \
            {k: v for k, v in before.items() if k != "git_head"}:
        log("WARNING: the msb build changed during the run (%s -> %s): the samples mix builds"
            % (before, after))
        results["build_changed_to"] = after
        shutil.rmtree(b.work, ignore_errors=True)
    report(a, results)


def run_all(a, b):
    log("exit counting: %s; guest-side HELLO times: %s"
        % ("tracefs hist triggers (kvm:kvm_exit, kvm_pio, kvm_mmio)" if C.exact
           else "per-VM debugfs polling", "yes" if C.instance else "no"))
    log("warm-up: msb run (builds the erofs image) ...")
    t0 = now()
    # Named, so that its state (console log) stays if it fails.
    argv = b.msb_argv(["true"])
    argv[2:2] = ["--name", "bench-warmup"]
    p = subprocess.run(argv, env=b.env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=a.timeout * 3)
    sbdir = os.path.join(a.msb_home, "sandboxes", "bench-warmup")
    if p.returncode != 0:
        try:
            with open(os.path.join(sbdir, "console.log"), errors="replace") as f:
                console = f.read()[-3000:]
        except OSError:
            console = "(none)"
        raise SystemExit("bench/boot: warm-up msb run failed (%d): %s\nconsole:\n%s"
                         % (p.returncode, p.stderr.decode(errors="replace"), console))
    shutil.rmtree(sbdir, ignore_errors=True)
    log("warm-up msb: %.2f s; image %s" % (now() - t0, b.find_image()))
    t0 = now()
    smoke = b.qemu_smoke()
    log("warm-up QEMU (same root mounted as overlay): %.2f s, agent %s" % (now() - t0, smoke["agent"]))
    s = {"msb_true": [], "qemu_true": [], "msb_ready": [], "qemu_ready": []}
    for i in range(a.runs):
        order = ["msb_true", "qemu_true", "msb_ready", "qemu_ready"]
        if i % 2:
            order = ["qemu_true", "msb_true", "qemu_ready", "msb_ready"]
        for k in order:
            r = getattr(b, k)()
            s[k].append(r)
            brief = ", ".join("%s=%s" % (n, ("%.3f" % v) if isinstance(v, float) else v)
                              for n, v in r.items()
                              if n in ("e2e_s", "hello_s", "ready_s", "exits", "exits_to_hello",
                                       "exits_to_ready"))
            if r.get("memory"):
                brief += ", monitor=%.2f MiB" % (r["memory"]["overhead_rss_kib"] / 1024.0)
            log("run %d/%d %-10s %s" % (i + 1, a.runs, k, brief))
    return {"samples": s, "image": b.image, "agent": smoke["agent"]}


def report(a, results):
    s = results["samples"]

    def col(k, f):
        return [r.get(f) for r in s[k]]

    def memcol(k, f):
        return [r["memory"][f] if r.get("memory") else None for r in s[k]]

    def mx(xs):
        xs = [x for x in xs if x is not None]
        return max(xs) if xs else None

    m = {
        "e2e_true_s": (med(col("msb_true", "e2e_s")), med(col("qemu_true", "e2e_s"))),
        # (every boot has one: the `true` and the `ready` runs both count)
        "hello_sent_s": (med(col("msb_true", "hello_sent_s") + col("msb_ready", "hello_sent_s")),
                         med(col("qemu_true", "hello_sent_s") + col("qemu_ready", "hello_sent_s"))),
        "hello_received_s": (None, med(col("qemu_true", "hello_s"))),
        "ready_first_output_s": (med(col("msb_ready", "ready_s")), med(col("qemu_ready", "ready_s"))),
        "exits_whole_run": (med(col("msb_true", "exits")), med(col("qemu_true", "exits"))),
        "exits_to_ready": (med(col("msb_ready", "exits_to_ready")), med(col("qemu_ready", "exits_to_ready"))),
        "exits_to_hello": (None, med(col("qemu_true", "exits_to_hello"))),
        "mmio_writes": (med(col("msb_true", "mmio_writes")), med(col("qemu_true", "mmio_writes"))),
        "mmio_reads": (med(col("msb_true", "mmio_reads")), med(col("qemu_true", "mmio_reads"))),
        "pio": (med([sum(r["pio_ports"].values()) if r.get("pio_ports") is not None else None
                     for r in s["msb_true"]]),
                med([sum(r["pio_ports"].values()) if r.get("pio_ports") is not None else None
                     for r in s["qemu_true"]])),
        "monitor_rss_overhead_kib_max": (mx(memcol("msb_ready", "overhead_rss_kib")),
                                         mx(memcol("qemu_ready", "overhead_rss_kib"))),
        "monitor_private_overhead_kib_max": (mx(memcol("msb_ready", "overhead_priv_kib")),
                                             mx(memcol("qemu_ready", "overhead_priv_kib"))),
        "monitor_rss_overhead_kib_median": (med(memcol("msb_ready", "overhead_rss_kib")),
                                            med(memcol("qemu_ready", "overhead_rss_kib"))),
        "guest_ram_rss_kib_max": (mx(memcol("msb_ready", "guest_rss_kib")),
                                  mx(memcol("qemu_ready", "guest_rss_kib"))),
        "qemu_upper_mkfs_s": (None, med(col("qemu_true", "mkfs_s"))),
    }
    rows = [
        ("end to end: run `true`, shut down", "e2e_true_s", "s"),
        ("boot to agent HELLO (guest sends it)", "hello_sent_s", "s"),
        ("boot to agent HELLO (host has it)", "hello_received_s", "s"),
        ("boot to a command's first output", "ready_first_output_s", "s"),
        ("VM exits, whole run (`true`)", "exits_whole_run", "n"),
        ("VM exits to first output", "exits_to_ready", "n"),
        ("VM exits to HELLO (host has it)", "exits_to_hello", "n"),
        ("  of which MMIO writes (whole run)", "mmio_writes", "n"),
        ("  of which MMIO reads (whole run)", "mmio_reads", "n"),
        ("  of which port I/O (whole run)", "pio", "n"),
        ("monitor RSS - guest RAM RSS (max)", "monitor_rss_overhead_kib_max", "MiB"),
        ("  the same, median of the runs' max", "monitor_rss_overhead_kib_median", "MiB"),
        ("monitor private - guest RAM (max)", "monitor_private_overhead_kib_max", "MiB"),
        ("guest RAM resident (max)", "guest_ram_rss_kib_max", "MiB"),
        ("QEMU side: mkfs.ext4 of the upper", "qemu_upper_mkfs_s", "s"),
    ]
    # Paired ratios: msb's run i over QEMU's run i (they ran back to back, so
    # drift in the machine's speed mostly cancels), median over i.
    pairs = {"e2e_true_s": [("msb_true", "qemu_true", "e2e_s")],
             "hello_sent_s": [("msb_true", "qemu_true", "hello_sent_s"),
                              ("msb_ready", "qemu_ready", "hello_sent_s")],
             "ready_first_output_s": [("msb_ready", "qemu_ready", "ready_s")],
             "exits_whole_run": [("msb_true", "qemu_true", "exits")]}
    paired = {}
    for k, lst in pairs.items():
        rs = [x[f] / y[f] for sm, sq, f in lst for x, y in zip(s[sm], s[sq])
              if x.get(f) is not None and y.get(f)]
        paired[k] = statistics.median(rs) if rs else None
    ratios = {}
    lines = ["", "msb vs QEMU -M microvm: %d runs each, medians (memory: max of samples)" % a.runs,
             "%-38s %14s %14s %8s %8s" % ("", "msb", "QEMU microvm", "msb/QEMU", "paired")]
    for label, k, unit in rows:
        x, y = m[k]
        r = (x / y) if (x is not None and y) else None
        ratios[k] = r
        pr = paired.get(k)
        lines.append("%-38s %14s %14s %8s %8s" % (label, fmt(x, unit), fmt(y, unit),
                                                  "%.2f" % r if r is not None else "-",
                                                  "%.2f" % pr if pr is not None else ""))
    # Exit reasons, the median run of each side (by total).
    def median_run(k, what="exit_reasons"):
        runs = [r for r in s[k] if r.get(what) is not None and r.get("exits") is not None]
        if not runs:
            return None
        runs.sort(key=lambda r: r["exits"])
        return runs[len(runs) // 2][what]
    reasons = {"msb": median_run("msb_true"), "qemu": median_run("qemu_true")}
    if reasons["msb"] and reasons["qemu"]:
        keys = sorted(set(reasons["msb"]) | set(reasons["qemu"]),
                      key=lambda n: -(reasons["msb"].get(n, 0) + reasons["qemu"].get(n, 0)))
        lines.append("")
        lines.append("%-38s %14s %14s" % ("exit reasons (run with the median total)", "msb", "QEMU"))
        for n in keys[:12]:
            lines.append("  %-36s %14d %14d" % (n, reasons["msb"].get(n, 0), reasons["qemu"].get(n, 0)))
    ports = {"msb": median_run("msb_true", "pio_ports"), "qemu": median_run("qemu_true", "pio_ports")}
    if ports["msb"] is not None and ports["qemu"] is not None:
        keys = sorted(set(ports["msb"]) | set(ports["qemu"]),
                      key=lambda n: -(ports["msb"].get(n, 0) + ports["qemu"].get(n, 0)))
        lines.append("port I/O by port (same runs):")
        for n in keys[:8]:
            lines.append("  %-36s %14d %14d" % (n, ports["msb"].get(n, 0), ports["qemu"].get(n, 0)))
    # Boot to ready: the guest-side HELLO time where it was measured, else
    # the first output of a command.
    ready_basis = "hello_sent_s" if paired.get("hello_sent_s") else "ready_first_output_s"
    ready_ratio = paired.get(ready_basis)
    ox = m["monitor_rss_overhead_kib_max"][0]
    ex, ey = m["exits_whole_run"]
    targets = {
        "boot_to_ready_le_0.7x_qemu": None if ready_ratio is None else ready_ratio <= 0.7,
        "monitor_overhead_le_5MiB": None if ox is None else ox <= 5 * 1024,
        "fewer_exits_than_qemu": None if (ex is None or ey is None) else ex < ey,
    }
    why = {
        "boot_to_ready_le_0.7x_qemu": "paired %s ratio %s" % (
            ready_basis, "%.2f" % ready_ratio if ready_ratio is not None else "-"),
        "monitor_overhead_le_5MiB": "max %s" % fmt(ox, "MiB"),
        "fewer_exits_than_qemu": "%s vs %s" % (fmt(ex, "n"), fmt(ey, "n")),
    }
    lines.append("")
    for k, v in targets.items():
        lines.append("target %-30s %-8s (%s)" % (k, {True: "met", False: "NOT met", None: "unknown"}[v],
                                                 why[k]))
    print("\n".join(lines), file=sys.stderr, flush=True)
    doc = {
        "benchmark": "bench/boot",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": a.command_line,
        "runs": a.runs,
        "guest": {"memory": a.memory, "cpus": 1, "kernel": a.kernel, "initramfs": a.initramfs,
                  "rootfs": a.rootfs, "root_image": results["image"], "agent": results["agent"]},
        "machine": machine_info(a),
        "build": results.get("build"),
        "build_changed_to": results.get("build_changed_to"),
        "exit_counting": "tracefs hist kvm:kvm_exit" if C.exact else "debugfs per-VM polling",
        "medians": {k: {"msb": v[0], "qemu": v[1]} for k, v in m.items()},
        "ratios_msb_over_qemu": ratios,
        "paired_ratio_medians": paired,
        "exit_reasons_median_run": reasons,
        "pio_ports_median_run": ports,
        "boot_to_ready_basis": ready_basis,
        "targets": targets,
        "samples": s,
    }
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    if a.json == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(a.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
