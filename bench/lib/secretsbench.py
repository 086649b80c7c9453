#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/lib/secretsbench.py -- the measuring half of bench/secrets (stdlib only).

Runs as root inside the private network and mount namespace bench/secrets
makes (as tests/net/run.sh does), with the sandbox networks of
tests/net/test_net.py: msb-netharness builds each one with the net module's
own code, a namespace playing the guest.  No VM.

The world namespace holds an HTTPS server, bench/lib/tlsecho, on
198.51.100.20:443 with a certificate for api.example.com from a test CA (the
"host's trust store": MSB_SECRETS_CA_FILE for msb, ssl_verify_upstream_trusted_ca
for mitmproxy), and a resolver that knows the name.  It answers 200 only to a
request whose Authorization header is "Bearer <the real value>", 403
otherwise.  The same client, bench/lib/tlsload, runs in three guests:

  direct     a sandbox without secrets: nothing steers its TLS, so the client
             talks to the server end to end (sandbox network, NAT, world) and
             sends the real value itself
  msb        a sandbox with the secret TEST_TOKEN bound to api.example.com:
             its TLS to port 443 is steered to the secrets proxy inside the
             sandbox's namespace, which intercepts (a leaf from the sandbox's
             CA, which the client trusts), checks the gates (SNI, pin, Host)
             and writes the value where the client sent $MSB_TEST_TOKEN
  mitmproxy  a sandbox without secrets whose port-443 traffic the host
             redirects (nft, on that sandbox's uplink) to mitmdump in
             transparent mode on the host; an addon replaces the placeholder
             in Authorization for that name (the client trusts mitmproxy's
             CA; mitmproxy verifies the server against the test CA)

Each round, in an order that flips every round, each contestant runs:
  throughput  --requests keep-alive requests over --conns connections (one
              untimed request per connection first): requests/s, and the
              per-request latency under that load
  latency     --latency requests one after another on one connection: p50/p99
  handshakes  --handshakes requests each on a new connection (TCP + TLS +
              request + close), one after another: p50/p99
plus the proxy's CPU time (user + system, /proc) per throughput request.
Every guest resolves the name through the gateway's DNS interceptor first
(the pin msb's proxy checks).  Medians, ratios and the targets go to stderr;
every sample, as JSON, to --json.
"""

import argparse
import collections
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "net"))
import test_net  # noqa: E402
from test_net import World, Sandbox, ns_exec, sh, policy, rule  # noqa: E402
from test_secrets import make_ca, make_leaf  # noqa: E402

NAME = "api.example.com"
API = "198.51.100.20"
RESOLVER = "198.51.100.54"
VALUE = "s3cr3t-Value_0123456789+/="
PLACEHOLDER = "$MSB_TEST_TOKEN"
MITM_PORT = 8443
CONTESTANTS = ("direct", "msb", "mitmproxy")

# The mitmproxy addon: the same substitution msb's proxy does for this
# secret, behind the same kind of gate (the name the client asked for, in
# SNI and Host).
ADDON = r'''
import os
PLACEHOLDER, NAME, VALUE = "$MSB_TEST_TOKEN", "api.example.com", os.environ["TEST_TOKEN"]

class Inject:
    def request(self, flow):
        if flow.client_conn.sni != NAME or flow.request.host_header != NAME:
            return
        a = flow.request.headers.get("authorization")
        if a is not None and PLACEHOLDER in a:
            flow.request.headers["authorization"] = a.replace(PLACEHOLDER, VALUE)

addons = [Inject()]
'''


def log(msg):
    print("bench/secrets: " + msg, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """User + system CPU of a process and all its threads, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        f = f.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def listening(port):
    """Whether a TCP socket listens on PORT in this namespace (IPv4 or IPv6)."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


class Drain(threading.Thread):
    """Keeps the tail of a pipe nobody else reads (a full pipe would block its writer)."""

    def __init__(self, f):
        super().__init__(daemon=True)
        self.f, self.lines = f, collections.deque(maxlen=50)
        self.start()

    def run(self):
        for line in self.f:
            self.lines.append(line.rstrip("\n"))


class Bench:
    def __init__(self, a):
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix="msb-secrets-bench-")
        self.rundir = tempfile.mkdtemp(prefix="msb-net-run-", dir=self.tmp)
        self.procs, self.sandboxes, self.drains = [], {}, {}
        self.world = None

    # --- setup ---------------------------------------------------------------

    def up(self):
        a = self.a
        test_net.HARNESS = a.harness
        self.world = World()
        # After World(), whose own resolver takes test_net.RESOLVER: from now
        # on, what the sandboxes' DNS interceptors forward to (as in test_secrets).
        test_net.RESOLVER = RESOLVER
        ca = make_ca(self.tmp, "public-ca")  # plays the host's trust store
        leaf = make_leaf(self.tmp, ca, "api", [NAME])
        self.public_ca = ca[0]
        for addr in (API, RESOLVER):
            sh("ip", "route", "add", addr + "/32", "via", "203.0.113.2")
            ns_exec("world", "ip", "addr", "add", addr + "/32", "dev", "lo")
        self.server = self.spawn(["ip", "netns", "exec", "world", a.tlsecho, API, "443",
                                  leaf[0], leaf[1], "Bearer " + VALUE])
        self.spawn(["ip", "netns", "exec", "world", sys.executable, "-c", test_net.DNS_SERVER,
                    json.dumps({NAME: [API]}), RESOLVER])
        os.environ["TEST_TOKEN"] = VALUE
        os.environ["MSB_SECRETS_CA_FILE"] = self.public_ca
        os.environ["MSB_SECRETS_CA_DIR"] = tempfile.mkdtemp(dir=self.tmp)
        net = policy("deny", rule("allow", "dns"),
                     rule("allow", "group", "tcp", [443, 443], group="public"))
        secrets = {"secrets": [{"env": "TEST_TOKEN", "hosts": [NAME]}],
                   "secrets_policy": {"on_violation": "block"}}
        for k, extra in (("direct", None), ("msb", secrets), ("mitmproxy", None)):
            sb = Sandbox(net, self.rundir, extra=extra)
            self.sandboxes[k] = sb
            self.drains[k] = Drain(sb.p.stderr)
        _, self.msb_ca = self.sandboxes["msb"].cmd("secrets").split()
        self.mitm_up()
        self.cas = {"direct": self.public_ca, "msb": self.msb_ca, "mitmproxy": self.mitm_ca}
        self.auth = {"direct": "Bearer " + VALUE, "msb": "Bearer " + PLACEHOLDER,
                     "mitmproxy": "Bearer " + PLACEHOLDER}
        self.proxy_pid = {"msb": self.sandboxes["msb"].p.pid, "mitmproxy": self.mitm.pid}

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kw)
        self.procs.append(p)
        if p.stdout.readline().strip() != "up":
            raise SystemExit("bench/secrets: %r did not start" % argv)
        return p

    def mitm_up(self):
        a = self.a
        conf = os.path.join(self.tmp, "mitmproxy")
        os.makedirs(conf)
        addon = os.path.join(self.tmp, "inject.py")
        with open(addon, "w") as f:
            f.write(ADDON)
        # The mitmproxy sandbox's traffic arrives on its uplink's host end:
        # its TLS to 443 goes to mitmdump (conntrack keeps the original
        # destination for SO_ORIGINAL_DST, as for msb's steering).
        dev = "msbh%d" % self.sandboxes["mitmproxy"].slot
        rules = ("table ip msbbench {\n chain pre {\n  type nat hook prerouting priority "
                 "dstnat - 10; policy accept;\n  iifname \"%s\" tcp dport 443 redirect to :%d\n"
                 " }\n}\n" % (dev, MITM_PORT))
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        self.mitm_log = open(os.path.join(self.tmp, "mitmdump.log"), "w")
        self.mitm = subprocess.Popen(
            [a.mitmdump, "--mode", "transparent", "--listen-port", str(MITM_PORT), "-q",
             "--set", "confdir=" + conf, "--set",
             "ssl_verify_upstream_trusted_ca=" + self.public_ca, "-s", addon],
            stdin=subprocess.DEVNULL, stdout=self.mitm_log, stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=self.tmp))
        self.procs.append(self.mitm)
        self.mitm_ca = os.path.join(conf, "mitmproxy-ca-cert.pem")
        # Ready once it listens (not probed with a connection: in transparent
        # mode that would send mitmproxy to itself) and has made its CA.
        for _ in range(300):
            if self.mitm.poll() is not None:
                break
            if listening(MITM_PORT) and os.path.exists(self.mitm_ca):
                return
            time.sleep(0.1)
        raise SystemExit("bench/secrets: mitmdump did not start: %s" % self.tail_mitm())

    def tail_mitm(self):
        self.mitm_log.flush()
        with open(self.mitm_log.name) as f:
            return f.read()[-2000:]

    def down(self):
        for sb in self.sandboxes.values():
            try:
                sb.close()
            except Exception as e:  # keep tearing down
                log("closing a sandbox: %s" % e)
        for p in self.procs:
            p.kill()
            p.wait()
        if self.world:
            self.world.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- one measurement -----------------------------------------------------

    def server_counts(self):
        self.server.stdin.write("\n")
        self.server.stdin.flush()
        return json.loads(self.server.stdout.readline())

    def load(self, k, requests, conns, fresh=False):
        sb = self.sandboxes[k]
        rc, addrs, _ = sb.resolve(NAME)
        if rc != "NOERROR" or addrs != [API]:
            raise RuntimeError("%s: %s did not resolve through the gateway: %s %s"
                               % (k, NAME, rc, addrs))
        argv = [self.a.tlsload] + (["--fresh"] if fresh else []) + [
            API, "443", NAME, self.cas[k], self.auth[k], str(requests), str(conns)]
        pid = self.proxy_pid.get(k)
        cpu0 = cpu_seconds(pid) if pid else None
        r = ns_exec(sb.ns, *argv, check=False, timeout=self.a.timeout)
        if r.returncode != 0 or not r.stdout.strip():
            raise RuntimeError("%s: tlsload exited %d: %s" % (k, r.returncode, r.stderr[-2000:]))
        out = json.loads(r.stdout)
        if cpu0 is not None:
            out["proxy_cpu_s"] = cpu_seconds(pid) - cpu0
            out["proxy_cpu_us_per_req"] = out["proxy_cpu_s"] * 1e6 / max(out["ok"], 1)
        return out

    def contestant(self, k):
        a = self.a
        s0 = self.server_counts()
        st0 = json.loads(self.sandboxes["msb"].cmd("stats")) if k == "msb" else None
        n = a.mitm_requests if k == "mitmproxy" else a.requests
        res = {"throughput": self.load(k, n, a.conns),
               "latency": self.load(k, a.latency, 1),
               "handshakes": self.load(k, a.handshakes, 1, fresh=True)}
        s1 = self.server_counts()
        res["server"] = {f: s1[f] - s0[f] for f in s1}
        # The client's count: every answer other than 200 (the server's 403s
        # among them) and every connection that failed.
        res["errors"] = sum(res[m]["errors"] for m in ("throughput", "latency", "handshakes"))
        if st0 is not None:
            st1 = json.loads(self.sandboxes["msb"].cmd("stats"))
            st = res["proxy_stats"] = {f: st1[f] - st0[f] for f in st1}
            # Every request the server accepted went through the proxy and had
            # the value written by it (the client only ever sent the placeholder).
            if st["injected"] != res["server"]["ok"] or st["intercepted"] != st["accepted"]:
                log("msb: proxy counters %s do not match the server's %s" % (st, res["server"]))
                res["errors"] += 1
        if res["server"]["bad"] or res["server"]["malformed"]:
            res["errors"] = max(res["errors"], 1)  # the server saw what the client did not
        if res["errors"]:
            log("%s: %d errors (first: %s; server %s)" % (
                k, res["errors"], next((res[m]["first_error"] for m in
                                        ("throughput", "latency", "handshakes")
                                        if res[m]["first_error"]), "-"), res["server"]))
        return res


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(samples):
    fields = {
        "rps": ("throughput", "rps"),
        "load_p50_us": ("throughput", "p50_us"),
        "load_p99_us": ("throughput", "p99_us"),
        "p50_us": ("latency", "p50_us"),
        "p99_us": ("latency", "p99_us"),
        "handshake_p50_us": ("handshakes", "p50_us"),
        "handshake_p99_us": ("handshakes", "p99_us"),
        "proxy_cpu_us_per_req": ("throughput", "proxy_cpu_us_per_req"),
    }
    m = {}
    for k, runs in samples.items():
        m[k] = {f: med([r[part].get(g) for r in runs]) for f, (part, g) in fields.items()}
        m[k]["errors"] = sum(r["errors"] for r in runs)

    def ratio(x, y):
        return None if not x or not y else x / y

    def diff(x, y):
        return None if x is None or y is None else x - y

    # msb's round i over mitmproxy's round i (run back to back): steadier than
    # the ratio of medians when the machine's speed drifts.
    paired = med([ratio(x["throughput"]["rps"], y["throughput"]["rps"])
                  for x, y in zip(samples["msb"], samples["mitmproxy"])])

    def added(k, f):
        # Round i's contestant minus round i's direct, median over rounds.
        return med([diff(x["latency"][f], y["latency"][f])
                    for x, y in zip(samples[k], samples["direct"])])

    d, s, p = m["direct"], m["msb"], m["mitmproxy"]
    return m, {
        "rps_msb_over_mitmproxy": ratio(s["rps"], p["rps"]),
        "rps_msb_over_mitmproxy_paired": paired,
        "rps_msb_over_direct": ratio(s["rps"], d["rps"]),
        "rps_mitmproxy_over_direct": ratio(p["rps"], d["rps"]),
        "added_p50_us_msb": diff(s["p50_us"], d["p50_us"]),
        "added_p50_us_mitmproxy": diff(p["p50_us"], d["p50_us"]),
        "added_p99_us_msb": diff(s["p99_us"], d["p99_us"]),
        "added_p99_us_mitmproxy": diff(p["p99_us"], d["p99_us"]),
        "added_p50_us_msb_paired": added("msb", "p50_us"),
        "added_p50_us_mitmproxy_paired": added("mitmproxy", "p50_us"),
        "added_handshake_p50_us_msb": diff(s["handshake_p50_us"], d["handshake_p50_us"]),
        "added_handshake_p50_us_mitmproxy": diff(p["handshake_p50_us"], d["handshake_p50_us"]),
        "proxy_cpu_mitmproxy_over_msb": ratio(p["proxy_cpu_us_per_req"],
                                              s["proxy_cpu_us_per_req"]),
    }


def table(a, m, r):
    lines = ["", "bench/secrets: %d rounds, medians (throughput: %d requests over %d "
             "connections, mitmproxy %d; latency: %d requests on one connection; "
             "handshakes: %d new connections)" % (a.runs, a.requests, a.conns, a.mitm_requests,
                                                 a.latency, a.handshakes),
             "%-36s %12s %12s %12s" % ("", "direct TLS", "msb", "mitmproxy")]

    def row(label, f, fmt):
        cells = [fmt % m[k][f] if m[k][f] is not None else "-" for k in CONTESTANTS]
        lines.append("%-36s %12s %12s %12s" % tuple([label] + cells))
    row("throughput (requests/s)", "rps", "%.0f")
    row("  latency under load p50 (us)", "load_p50_us", "%.0f")
    row("  latency under load p99 (us)", "load_p99_us", "%.0f")
    row("  proxy CPU per request (us)", "proxy_cpu_us_per_req", "%.1f")
    row("sequential latency p50 (us)", "p50_us", "%.0f")
    row("sequential latency p99 (us)", "p99_us", "%.0f")
    row("new connection + request p50 (us)", "handshake_p50_us", "%.0f")
    row("new connection + request p99 (us)", "handshake_p99_us", "%.0f")
    row("errors (all rounds)", "errors", "%d")

    def f(v, fmt):
        return fmt % v if v is not None else "-"
    lines.append("throughput msb/mitmproxy: %s (paired %s); msb/direct %s; mitmproxy/direct %s"
                 % (f(r["rps_msb_over_mitmproxy"], "%.2f"),
                    f(r["rps_msb_over_mitmproxy_paired"], "%.2f"),
                    f(r["rps_msb_over_direct"], "%.2f"), f(r["rps_mitmproxy_over_direct"], "%.2f")))
    lines.append("added p50: msb %s us (paired %s), mitmproxy %s us (paired %s); "
                 "added p99: msb %s us, mitmproxy %s us"
                 % (f(r["added_p50_us_msb"], "%.0f"), f(r["added_p50_us_msb_paired"], "%.0f"),
                    f(r["added_p50_us_mitmproxy"], "%.0f"),
                    f(r["added_p50_us_mitmproxy_paired"], "%.0f"),
                    f(r["added_p99_us_msb"], "%.0f"), f(r["added_p99_us_mitmproxy"], "%.0f")))
    ok_rps = r["rps_msb_over_mitmproxy"] is not None and r["rps_msb_over_mitmproxy"] >= 5
    ok_lat = r["added_p50_us_msb"] is not None and r["added_p50_us_msb"] < 1000
    lines.append("targets: throughput >= 5x mitmproxy: %s; added p50 < 1 ms: %s"
                 % ("met" if ok_rps else "NOT met", "met" if ok_lat else "NOT met"))
    print("\n".join(lines), file=sys.stderr)
    return {"rps_5x_mitmproxy": ok_rps, "added_p50_under_1ms": ok_lat}


def versions(a):
    v = {"kernel": platform.release(), "python": platform.python_version(),
         "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            v["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open(a.harness, "rb") as f:
        v["harness_sha256"] = hashlib.sha256(f.read()).hexdigest()
    for k, argv in (("mitmproxy", [a.mitmdump, "--version"]), ("openssl", ["openssl", "version"]),
                    ("commit", ["git", "-C", REPO, "rev-parse", "--short", "HEAD"])):
        try:
            v[k] = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            pass
    return v


def main():
    ap = argparse.ArgumentParser(description="bench/secrets inner part")
    ap.add_argument("--harness", required=True, help="build/tests/net/msb-netharness")
    ap.add_argument("--tlsecho", required=True)
    ap.add_argument("--tlsload", required=True)
    ap.add_argument("--mitmdump", default="mitmdump")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--mitm-requests", type=int, default=5000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--latency", type=int, default=2000)
    ap.add_argument("--handshakes", type=int, default=200)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--json", default="-")
    ap.add_argument("--command-line", default="")
    a = ap.parse_args()
    b = Bench(a)
    samples = {k: [] for k in CONTESTANTS}
    try:
        b.up()
        log("warm-up ...")
        for k in CONTESTANTS:
            b.load(k, 1000, a.conns)
            b.load(k, 20, 1, fresh=True)
        for i in range(a.runs):
            order = list(CONTESTANTS) if i % 2 == 0 else list(reversed(CONTESTANTS))
            for k in order:
                res = b.contestant(k)
                samples[k].append(res)
                cpu = res["throughput"].get("proxy_cpu_us_per_req")
                log("run %d/%d %-9s %7.0f req/s (load p50 %.0f us, proxy CPU %s us/req), "
                    "seq p50 %.0f p99 %.0f us, new conn p50 %.0f us, errors %d"
                    % (i + 1, a.runs, k, res["throughput"]["rps"], res["throughput"]["p50_us"],
                       "%.1f" % cpu if cpu is not None else "-", res["latency"]["p50_us"],
                       res["latency"]["p99_us"], res["handshakes"]["p50_us"], res["errors"]))
        harness_log = {k: list(d.lines) for k, d in b.drains.items() if d.lines}
        mitm_log = b.tail_mitm()
    finally:
        b.down()
    m, r = summarize(samples)
    targets = table(a, m, r)
    results = {"command_line": a.command_line, "runs": a.runs, "requests": a.requests,
               "mitm_requests": a.mitm_requests, "conns": a.conns, "latency_requests": a.latency,
               "handshakes": a.handshakes, "medians": m, "ratios": r, "targets": targets,
               "samples": samples, "machine": versions(a), "harness_log": harness_log,
               "mitmdump_log": mitm_log,
               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    text = json.dumps(results, indent=1, sort_keys=True)
    if a.json == "-":
        print(text)
    else:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
