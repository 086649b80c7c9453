#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/lib/netbench.py -- the measuring half of bench/net (stdlib only).

Runs where /dev/kvm works (bench/net puts it inside tests/kvmhost when this
machine has none), as root.  Builds a "world" network namespace on
documentation addresses (a TCP sink on 198.51.100.10:5001, a DNS server on
198.51.100.53), then, alternating the order every round, boots:

  msb-1       msb run, default egress deny, one rule for the sink
              (allow@198.51.100.10, plus DNS to the gateway and the resolver):
              throughput, connection rate, DNS through the interceptor on
              the gateway and straight to the world's resolver
  msb-1000    msb run, default egress deny, 999 address rules that do not
              match, then allow@198.51.100.10: throughput, connection rate
  slirp       QEMU -M microvm, same kernel/initramfs/root image, virtio-net on
              QEMU's user-mode network (-netdev user)
  passt       the same QEMU guest on passt (-netdev stream to passt's socket)

Inside each guest bench/lib/netops (static) times the work itself, so boot
time is not in any figure:
  send      one TCP connection, --mib MiB guest -> world (MiB/s)
  connect   --conns TCP connections one after another, connect + close (conn/s)
  dns       --queries UDP A queries one at a time (p50 and p90 in us)

Medians of --runs rounds and ratios go to stderr and, with every sample, to
--json.
"""

import argparse
import ipaddress
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bootbench  # noqa: E402  (the agent protocol and the QEMU microvm peer)

SINK = "198.51.100.10"
SINK_PORT = "5001"
RESOLVER = "198.51.100.53"
NAME = "api.example.com"
WORLD = "msbbench-world"
# "1 rule": the sink; plus DNS (to the gateway's interceptor and, for the
# direct comparison, to the world's resolver), which only msb-1 measures.
RULES_1 = "allow@%s,allow@%s:udp:53,allow@dns" % (SINK, RESOLVER)


def log(msg):
    print("bench/net: " + msg, file=sys.stderr, flush=True)


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


# --- the world ------------------------------------------------------------------

DNSD = r'''
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("up", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    i = 12
    while i < len(q) and q[i]:
        i += 1 + q[i]
    out = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + q[12:i + 5]
    out += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("198.51.100.10")
    s.sendto(out, peer)
'''


class World:
    def __init__(self, netops, work):
        self.netops, self.work = netops, work
        self.procs = []

    def up(self):
        self.down(quiet=True)
        sh("ip", "netns", "add", WORLD)
        sh("ip", "link", "add", "msbbw0", "type", "veth", "peer", "name", "w0", "netns", WORLD)
        sh("ip", "addr", "add", "203.0.113.1/24", "dev", "msbbw0")
        sh("ip", "link", "set", "msbbw0", "up")
        sh("ip", "-n", WORLD, "link", "set", "lo", "up")
        sh("ip", "-n", WORLD, "addr", "add", "203.0.113.2/24", "dev", "w0")
        sh("ip", "-n", WORLD, "link", "set", "w0", "up")
        for a in (SINK, RESOLVER):
            sh("ip", "-n", WORLD, "addr", "add", a + "/32", "dev", "lo")
        sh("ip", "-n", WORLD, "route", "add", "default", "via", "203.0.113.1")
        # passt takes its guest's addresses from the host's default route.
        had = sh("ip", "route", "show", "default").stdout.strip()
        self.default_added = not had
        if self.default_added:
            sh("ip", "route", "add", "default", "via", "203.0.113.2", "dev", "msbbw0")
        else:
            for a in (SINK, RESOLVER):
                sh("ip", "route", "add", a + "/32", "via", "203.0.113.2")
        for argv in ([self.netops, "sink", SINK, SINK_PORT],
                     [sys.executable, "-c", DNSD, RESOLVER]):
            p = subprocess.Popen(["ip", "netns", "exec", WORLD] + argv, stdout=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, text=True)
            self.procs.append(p)
            if p.stdout.readline().strip() != "up":
                raise SystemExit("bench/net: %r did not start in the world namespace" % argv)

    def down(self, quiet=False):
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []
        sh("ip", "netns", "del", WORLD, check=False)
        sh("ip", "link", "del", "msbbw0", check=False)


# --- guests ---------------------------------------------------------------------


def guest_script(a, dns):
    """The work inside one guest: netops lines on stdout."""
    s = ["netops send %s %s %d" % (SINK, SINK_PORT, a.mib),
         "netops connect %s %s %d" % (SINK, SINK_PORT, a.conns)]
    if dns:
        s.append("netops dns $(awk '/^nameserver/{print $2; exit}' /etc/resolv.conf) %s %d"
                 % (NAME, a.queries))
        s.append("netops dns %s %s %d" % (RESOLVER, NAME, a.queries))
    return "set -e; " + "; ".join(s)


def parse(out, dns):
    res = {}
    dnsrows = []
    for line in out.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "send":
            res["mibps"] = float(f[5])
        elif f[0] == "connect":
            res["conns"] = float(f[5])
        elif f[0] == "dns":
            dnsrows.append((float(f[3]), float(f[5])))
    if "mibps" not in res or "conns" not in res or (dns and len(dnsrows) != 2):
        raise RuntimeError("unexpected guest output: %r" % out[-1500:])
    if dns:
        res["dns_gw_p50_us"], res["dns_gw_p90_us"] = dnsrows[0]
        res["dns_direct_p50_us"], res["dns_direct_p90_us"] = dnsrows[1]
    return res


class Net(bootbench.Bench):
    def __init__(self, a):
        super().__init__(a)
        self.netdev = None
        self.net_cmdline = ""

    def msb(self, rules, dns):
        argv = [self.a.msb, "run", "--rootfs", self.a.rootfs, "--cpus", "1", "--memory",
                self.a.memory, "--net-default-egress", "deny", "--net-rule", rules, "--",
                "sh", "-c", guest_script(self.a, dns)]
        p = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=self.a.timeout * 3)
        if p.returncode != 0:
            raise RuntimeError("msb run exited %d: %s %s" % (p.returncode, p.stdout[-1000:],
                                                              p.stderr[-2000:]))
        return parse(p.stdout, dns)

    def qemu_argv(self, upper, sock, serial):
        argv = super().qemu_argv(upper, sock, serial)
        i = argv.index("-append")
        argv[i + 1] += " " + self.net_cmdline
        return argv + self.netdev

    def qemu(self, kind):
        d = tempfile.mkdtemp(dir=self.work)
        passt = None
        cleanup = [d]
        try:
            if kind == "slirp":
                self.netdev = ["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"]
                self.net_cmdline = "msb.net=10.0.2.15/24,10.0.2.2 msb.dns=10.0.2.3 msb.mtu=1500"
            else:
                # passt drops root for nobody before it binds its socket.
                sd = tempfile.mkdtemp(prefix="msb-passt-", dir="/tmp")
                os.chmod(sd, 0o777)
                cleanup.append(sd)
                sock = sd + "/passt.sock"
                passt = subprocess.Popen([self.a.passt, "-f", "-q", "-s", sock, "-t", "none",
                                          "-u", "none"], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(100):
                    if os.path.exists(sock) or passt.poll() is not None:
                        break
                    time.sleep(0.05)
                if passt.poll() is not None or not os.path.exists(sock):
                    passt.kill()
                    passt.wait()
                    raise RuntimeError("passt made no socket: %s" % passt.stderr.read(2000))
                self.netdev = ["-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=" + sock,
                               "-device", "virtio-net-device,netdev=n0"]
                # passt gives its guest the host's address and gateway.
                self.net_cmdline = "msb.net=203.0.113.1/24,203.0.113.2 msb.dns=%s msb.mtu=1500" % RESOLVER
            r = self.qemu_run(["sh", "-c", guest_script(self.a, False)], keep_output=True)
            return parse(r["output"], False)
        finally:
            if passt:
                passt.kill()
                passt.wait()
            for x in cleanup:
                shutil.rmtree(x, ignore_errors=True)


def rules_1000():
    # 999 addresses that are not the sink (one run of allow rules, as an
    # allowlist is), then the sink.
    net = ipaddress.ip_network("198.18.0.0/22")
    hosts = [str(h) for h, _ in zip(net.hosts(), range(999))]
    return ",".join("allow@" + h for h in hosts) + ",allow@" + SINK


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description="bench/net inner part")
    ap.add_argument("--msb", required=True)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--passt", default="passt")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initramfs", required=True)
    ap.add_argument("--rootfs", required=True, help="a tree with /bin/netops in it")
    ap.add_argument("--netops", required=True, help="netops for the world namespace")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--conns", type=int, default=300)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--memory", default="512M")
    ap.add_argument("--msb-home", required=True)
    ap.add_argument("--timeout", type=int, default=180)
    ap.add_argument("--mem-samples", type=int, default=1)
    ap.add_argument("--json", default="-")
    ap.add_argument("--command-line", default="")
    a = ap.parse_args()
    a.msb = os.path.abspath(a.msb)
    conf = os.path.join(a.msb_home, "net.conf")
    os.makedirs(a.msb_home, exist_ok=True)
    with open(conf, "w") as f:
        f.write("[network.netfilter]\ndns = %s\n" % RESOLVER)
    b = Net(a)
    b.env["MSB_CONFIG"] = conf
    world = World(a.netops, b.work)
    world.up()
    samples = {k: [] for k in ("msb-1", "msb-1000", "slirp", "passt")}
    r1000 = rules_1000()
    try:
        log("warm-up: msb run (builds the erofs image) ...")
        b.msb(RULES_1, False)
        b.find_image()
        for i in range(a.runs):
            order = ["msb-1", "msb-1000", "slirp", "passt"]
            if i % 2:
                order.reverse()
            for k in order:
                if k == "msb-1":
                    r = b.msb(RULES_1, True)
                elif k == "msb-1000":
                    r = b.msb(r1000, False)
                else:
                    r = b.qemu(k)
                samples[k].append(r)
                log("run %d/%d %-9s %s" % (i + 1, a.runs, k,
                                           ", ".join("%s=%.1f" % kv for kv in sorted(r.items()))))
    finally:
        world.down()
        shutil.rmtree(b.work, ignore_errors=True)

    m = {k: {f: med([s.get(f) for s in v]) for f in
             ("mibps", "conns", "dns_gw_p50_us", "dns_direct_p50_us", "dns_gw_p90_us",
              "dns_direct_p90_us")} for k, v in samples.items()}

    def ratio(x, y):
        return None if not x or not y else x / y
    ratios = {
        "throughput_msb_over_slirp": ratio(m["msb-1"]["mibps"], m["slirp"]["mibps"]),
        "throughput_msb_over_passt": ratio(m["msb-1"]["mibps"], m["passt"]["mibps"]),
        "conns_msb_over_slirp": ratio(m["msb-1"]["conns"], m["slirp"]["conns"]),
        "conns_msb_over_passt": ratio(m["msb-1"]["conns"], m["passt"]["conns"]),
        "conns_1000_rules_over_1_rule": ratio(m["msb-1000"]["conns"], m["msb-1"]["conns"]),
        "throughput_1000_rules_over_1_rule": ratio(m["msb-1000"]["mibps"], m["msb-1"]["mibps"]),
    }
    added = None
    if m["msb-1"]["dns_gw_p50_us"] is not None:
        added = m["msb-1"]["dns_gw_p50_us"] - m["msb-1"]["dns_direct_p50_us"]
    lines = ["", "bench/net: %d rounds, medians (%d MiB, %d connections, %d queries per guest)"
             % (a.runs, a.mib, a.conns, a.queries),
             "%-34s %12s %12s %12s %12s" % ("", "msb 1 rule", "msb 1000", "QEMU slirp", "passt")]

    def row(label, f, fmt):
        cells = []
        for k in ("msb-1", "msb-1000", "slirp", "passt"):
            v = m[k][f]
            cells.append(fmt % v if v is not None else "-")
        lines.append("%-34s %12s %12s %12s %12s" % tuple([label] + cells))
    row("TCP guest -> world (MiB/s)", "mibps", "%.1f")
    row("new connections (conn/s)", "conns", "%.0f")
    for n, v in ratios.items():
        lines.append("%-46s %s" % (n, "%.2f" % v if v is not None else "-"))
    if added is not None:
        lines.append("DNS p50: via the interceptor %.0f us, straight to the resolver %.0f us: "
                     "added %.0f us" % (m["msb-1"]["dns_gw_p50_us"],
                                        m["msb-1"]["dns_direct_p50_us"], added))
    print("\n".join(lines), file=sys.stderr)
    results = {"command_line": a.command_line, "runs": a.runs, "mib": a.mib, "conns": a.conns,
               "queries": a.queries, "medians": m, "ratios": ratios, "dns_added_p50_us": added,
               "samples": samples, "machine": bootbench.machine_info(a)
               if hasattr(bootbench, "machine_info") else None}
    text = json.dumps(results, indent=1, sort_keys=True)
    if a.json == "-":
        print(text)
    else:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
