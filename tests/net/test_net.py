#!/usr/bin/env python3
"""The net module's sandbox network and policy, with real packets, no VM.

Runs inside a private network namespace (run.sh), which plays the host.  The
world is one more namespace holding the "public" servers on documentation
addresses (198.51.100.10, 203.0.113.10, 2001:db8:1::10), a LAN server
(192.168.50.10), the metadata address (169.254.169.254, fd00:ec2::254), all
routed from the host; a service listens on the host itself.  Each sandbox is
msb-netharness: plugins/net's own code builds the slot, namespace, uplink,
NAT and nftables policy, with a veth into a test namespace standing in for the
guest's TAP.  Clients run in that guest namespace and report what they reach.
"""
import hashlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HARNESS = None
WORLD4 = ['198.51.100.10', '203.0.113.10', '192.168.50.10', '169.254.169.254', '198.51.100.53']
WORLD6 = ['2001:db8:1::10', 'fd00:ec2::254']
HOST_PORT = 8080
RESOLVER = '198.51.100.53'
# The world's DNS: name -> A records (TTL 60).  Only the world's resolver knows them.
ZONE = {'api.example.com': ['198.51.100.10'], 'other.example.com': ['203.0.113.10'],
        'rebind.example.com': ['192.168.50.10'], 'meta.example.com': ['169.254.169.254']}

DNS_SERVER = r'''
import json, socket, struct, sys
zone = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[2], 53))
print("up", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    qid, flags = struct.unpack("!HH", q[:4])
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    question = q[12:i + 5]
    name = ".".join(labels).lower()
    addrs = zone.get(name, []) if qtype == 1 else []
    rcode = 0 if name in zone else 3
    out = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(addrs), 0, 0) + question
    for a in addrs:
        out += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(a)
    s.sendto(out, peer)
'''

RESOLVE = r'''
import socket, struct, sys, time
server, name = sys.argv[1], sys.argv[2]
q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
for l in name.split("."):
    q += bytes([len(l)]) + l.encode()
q += b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
t0 = time.monotonic()
try:
    s.sendto(q, (server, 53)); r = s.recv(4096)
except OSError as e:
    print("error", e); sys.exit()
rcode, an = struct.unpack("!H", r[2:4])[0] & 15, struct.unpack("!H", r[6:8])[0]
i = 12
while r[i]:
    i += 1 + r[i]
i += 5
addrs = []
for _ in range(an):
    i += 2 if r[i] >= 0xC0 else 0
    typ, _, ttl, ln = struct.unpack("!HHIH", r[i:i + 10]); i += 10
    if typ == 1:
        addrs.append(socket.inet_ntoa(r[i:i + 4]))
    i += ln
print(["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN"][rcode] if rcode < 4 else rcode,
      ",".join(addrs), "%.2f" % (time.monotonic() - t0))
'''

SERVER = r'''
import socket, sys, threading
def serve(fam, addr, port):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port)); s.listen(64)
    while True:
        c, _ = s.accept()
        try: c.sendall(("hello %s %d\n" % (addr, port)).encode())
        finally: c.close()
for spec in sys.argv[1:]:
    addr, port = spec.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    threading.Thread(target=serve, args=(fam, addr, int(port)), daemon=True).start()
print("up", flush=True)
threading.Event().wait()
'''

CLIENT = r'''
import json, socket, sys
out = {}
for t in sys.argv[1:]:
    addr, port = t.rsplit(",", 1)
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(2)
    try:
        s.connect((addr, int(port))); out[t] = s.recv(100).decode().strip()
    except OSError as e:
        out[t] = "error: %s" % (e.strerror or type(e).__name__)
    finally:
        s.close()
print(json.dumps(out))
'''


# One UDP datagram to ADDR PORT: "answered", "refused" (an ICMP error came back) or "silent".
UDP_PROBE = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    s.send(b"q"); s.recv(100); print("answered")
except socket.timeout:
    print("silent")
except OSError:  # ECONNREFUSED, EHOSTUNREACH (admin-prohibited): an ICMP error
    print("refused")
'''


UDP_ECHO = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
print("up", flush=True)
while True:
    b, peer = s.recvfrom(100); s.sendto(b, peer)
'''


ECHO = r"""
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 7)); s.listen(16)
    while True:
        c, _ = s.accept()
        def one(c=c):
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
            c.close()
        threading.Thread(target=one, daemon=True).start()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
    while True:
        b, peer = u.recvfrom(65536); u.sendto(b"echo " + b, peer)
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
print("up", flush=True)
threading.Event().wait()
"""


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port

def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


def ns_exec(ns, *args, **kw):
    return sh('ip', 'netns', 'exec', ns, *args, **kw)


class World:
    """The world namespace, routes to it, its servers and the host's service."""

    def __init__(self):
        sh('ip', 'netns', 'add', 'world')
        sh('ip', 'link', 'add', 'hw0', 'type', 'veth', 'peer', 'name', 'w0', 'netns', 'world')
        sh('ip', 'addr', 'add', '203.0.113.1/24', 'dev', 'hw0')
        sh('ip', 'addr', 'add', '2001:db8:ffff::1/64', 'dev', 'hw0', 'nodad')
        sh('ip', 'link', 'set', 'hw0', 'up')
        ns_exec('world', 'ip', 'link', 'set', 'lo', 'up')
        ns_exec('world', 'ip', 'addr', 'add', '203.0.113.2/24', 'dev', 'w0')
        ns_exec('world', 'ip', 'addr', 'add', '2001:db8:ffff::2/64', 'dev', 'w0', 'nodad')
        ns_exec('world', 'ip', 'link', 'set', 'w0', 'up')
        for a in WORLD4:
            if a != '203.0.113.10':
                sh('ip', 'route', 'add', a + '/32', 'via', '203.0.113.2')
            ns_exec('world', 'ip', 'addr', 'add', a + '/32', 'dev', 'lo')
        for a in WORLD6:
            sh('ip', '-6', 'route', 'add', a + '/128', 'via', '2001:db8:ffff::2')
            ns_exec('world', 'ip', 'addr', 'add', a + '/128', 'dev', 'lo', 'nodad')
        ns_exec('world', 'ip', 'route', 'add', 'default', 'via', '203.0.113.1')
        ns_exec('world', 'ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:ffff::1')
        specs = ['%s,%d' % (a, p) for a in WORLD4 + WORLD6 for p in (80, 443, 53)]
        self.world = subprocess.Popen(['ip', 'netns', 'exec', 'world', sys.executable, '-c',
                                       SERVER] + specs, stdout=subprocess.PIPE, text=True)
        self.dns = subprocess.Popen(['ip', 'netns', 'exec', 'world', sys.executable, '-c',
                                     DNS_SERVER, json.dumps(ZONE), RESOLVER],
                                    stdout=subprocess.PIPE, text=True)
        self.host = subprocess.Popen([sys.executable, '-c', SERVER, '0.0.0.0,%d' % HOST_PORT,
                                      '::,%d' % HOST_PORT], stdout=subprocess.PIPE, text=True)
        for p in (self.world, self.host, self.dns):
            if p.stdout.readline().strip() != 'up':
                self.close()  # the servers that did start must not outlive the tests
                raise RuntimeError('a world server did not come up')

    def close(self):
        for p in (self.world, self.host, self.dns):
            p.kill()
            p.wait()
            p.stdout.close()
        sh('ip', 'netns', 'del', 'world', check=False)
        sh('ip', 'link', 'del', 'hw0', check=False)


class Sandbox:
    """One sandbox network from msb-netharness, with a guest namespace."""
    count = 0

    def __init__(self, network, rundir, pool=None, extra=None, pass_fds=()):
        Sandbox.count += 1
        self.ns = 'guest%d' % Sandbox.count
        sh('ip', 'netns', 'add', self.ns)
        self.spec = tempfile.NamedTemporaryFile('w', suffix='.json', delete=False)
        json.dump(dict({'network': network}, **(extra or {})), self.spec)
        self.spec.close()
        env = dict(os.environ, MSB_NET_DNS=RESOLVER)
        if pool:
            env['MSB_NET_POOL'] = pool
        self.p = subprocess.Popen([HARNESS, rundir, self.spec.name, '/run/netns/' + self.ns],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env,
                                  pass_fds=pass_fds)
        line = self.p.stdout.readline().split()
        if not line or line[0] != 'ready':
            self.p.wait()
            err = self.p.stderr.read().strip()
            for f in (self.p.stdin, self.p.stdout, self.p.stderr):
                f.close()
            sh('ip', 'netns', 'del', self.ns, check=False)
            raise RuntimeError(err or 'harness failed')
        _, self.slot, self.guest4, self.gw4, self.guest6, self.gw6 = line
        self.slot = int(self.slot)
        # What the agent does in a real guest.
        ns_exec(self.ns, 'ip', 'link', 'set', 'lo', 'up')
        ns_exec(self.ns, 'ip', 'addr', 'add', self.guest4, 'dev', 'eth0')
        ns_exec(self.ns, 'ip', 'addr', 'add', self.guest6, 'dev', 'eth0', 'nodad')
        ns_exec(self.ns, 'ip', 'link', 'set', 'eth0', 'up')
        ns_exec(self.ns, 'ip', 'route', 'add', 'default', 'via', self.gw4)
        ns_exec(self.ns, 'ip', '-6', 'route', 'add', 'default', 'via', self.gw6)

    def cmd(self, line):
        self.p.stdin.write(line + '\n')
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def ruleset(self):
        self.p.stdin.write('list\n')
        self.p.stdin.flush()
        lines = []
        for line in self.p.stdout:
            if line.strip() == 'end':
                break
            lines.append(line)
        return ''.join(lines)

    def apply(self, network):
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump({'network': network}, f)
        try:
            return self.cmd('apply ' + f.name)
        finally:
            os.unlink(f.name)

    def reach(self, *targets):
        """{target: banner or 'error: ...'} for 'addr,port' targets, from the guest."""
        r = ns_exec(self.ns, sys.executable, '-c', CLIENT, *targets)
        return json.loads(r.stdout)

    def resolve(self, name, server=None):
        """(rcode, [addresses], seconds) for an A query to the gateway's interceptor."""
        out = ns_exec(self.ns, sys.executable, '-c', RESOLVE, server or self.gw4,
                      name).stdout.split()
        if out[0] == 'error':
            return ('error', [], 0.0)
        return (out[0], [a for a in out[1].split(',') if a] if len(out) == 3 else [],
                float(out[-1]))

    def ok(self, target):
        return self.reach(target)[target].startswith('hello')

    def close(self, kill=False):
        if kill:
            self.p.send_signal(signal.SIGKILL)
        else:
            self.p.stdin.close()
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            f.close()
        sh('ip', 'netns', 'del', self.ns, check=False)
        os.unlink(self.spec.name)


def rule(action, kind, proto='any', ports=None, **target):
    target['kind'] = kind
    return {'rule': '', 'action': action, 'direction': 'egress', 'target': target,
            'proto': proto, 'ports': ports}


def policy(default, *rules):
    return {'enabled': True, 'default_egress': default, 'rules': list(rules), 'publish': []}


DEFAULT = policy('deny', rule('allow', 'group', group='public'), rule('allow', 'dns'))
PUB80, PUB443 = '198.51.100.10,80', '203.0.113.10,443'
PUB6 = '2001:db8:1::10,80'
LAN, META, META6 = '192.168.50.10,80', '169.254.169.254,80', 'fd00:ec2::254,80'


def leftovers():
    """What a sandbox could leave on the host: msbh links and msb_h tables."""
    links = [l for l in sh('ip', '-o', 'link').stdout.splitlines() if ': msbh' in l]
    tables = [t for t in sh('nft', 'list', 'tables').stdout.splitlines() if 'msb_h' in t]
    return links + tables


class NetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.world = World()
        cls.rundir = tempfile.mkdtemp(prefix='msb-net-run-')

    @classmethod
    def tearDownClass(cls):
        cls.world.close()

    def sandbox(self, network, **kw):
        sb = Sandbox(network, self.rundir, **kw)
        self.addCleanup(sb.close)
        return sb

    def assertReach(self, sb, yes=(), no=()):
        got = sb.reach(*yes, *no)
        for t in yes:
            self.assertTrue(got[t].startswith('hello'), '%s should be reachable: %s' % (t, got[t]))
        for t in no:
            self.assertFalse(got[t].startswith('hello'), '%s should be blocked' % t)

    # ---- the posture table ----

    def test_default_posture_public_only(self):
        sb = self.sandbox(DEFAULT)
        host = '%s,%d' % (sb.gw4, HOST_PORT)
        self.assertReach(sb, yes=[PUB80, PUB443, PUB6], no=[LAN, META, META6, host])

    def test_denied_fails_fast(self):
        sb = self.sandbox(DEFAULT)
        t0 = time.monotonic()
        got = sb.reach(LAN)[LAN]
        self.assertLess(time.monotonic() - t0, 1.9, 'a denied connect must not wait for a timeout')
        self.assertIn('error', got)

    def test_allow_default_with_deny_meta(self):
        sb = self.sandbox(policy('allow', rule('deny', 'group', group='meta')))
        self.assertReach(sb, yes=[PUB80, LAN, PUB6], no=[META, META6])

    def test_allow_default_reaches_meta_without_the_rule(self):
        # The control for the test above: the rule is what closes it.
        sb = self.sandbox(policy('allow'))
        self.assertReach(sb, yes=[META, META6])

    def test_public_443_not_80(self):
        sb = self.sandbox(policy('deny', rule('allow', 'group', 'tcp', [443, 443], group='public')))
        self.assertReach(sb, yes=[PUB443, '198.51.100.10,443', '2001:db8:1::10,443'],
                         no=[PUB80, PUB6, '203.0.113.10,80'])

    def test_link_local_does_not_open_meta(self):
        sb = self.sandbox(policy('deny', rule('allow', 'group', group='link-local')))
        self.assertReach(sb, no=[META])

    def test_private_group_and_first_match_wins(self):
        sb = self.sandbox(policy('deny', rule('deny', 'ipv4', address='192.168.50.10', prefix=32),
                                 rule('allow', 'group', group='private')))
        self.assertReach(sb, no=[LAN])
        sb.apply(policy('deny', rule('allow', 'group', group='private'),
                        rule('deny', 'ipv4', address='192.168.50.10', prefix=32)))
        self.assertReach(sb, yes=[LAN], no=[PUB80])

    def test_host_group(self):
        sb = self.sandbox(policy('deny', rule('allow', 'group', 'tcp', group='host')))
        self.assertReach(sb, yes=['%s,%d' % (sb.gw4, HOST_PORT), '%s,%d' % (sb.gw6, HOST_PORT)],
                         no=[PUB80])

    def test_host_not_reachable_at_its_other_addresses(self):
        # allow@public must not open the host's own services at its uplink address.
        sb = self.sandbox(policy('allow'))
        self.assertReach(sb, no=['203.0.113.1,%d' % HOST_PORT])

    def test_ipv6_mirrors_ipv4(self):
        sb = self.sandbox(policy('deny', rule('allow', 'ipv6', address='2001:db8:1::', prefix=64)))
        self.assertReach(sb, yes=[PUB6], no=[PUB80, META6])

    def test_domain_rule_needs_a_pin(self):
        sb = self.sandbox(policy('deny', rule('allow', 'domain', name='api.example.com')))
        self.assertReach(sb, no=[PUB80])
        self.assertEqual(sb.cmd('pin api.example.com 198.51.100.10 60'), '1')
        self.assertEqual(sb.cmd('pin other.example.com 203.0.113.10 60'), '0')
        self.assertReach(sb, yes=[PUB80, '198.51.100.10,443'], no=[PUB443])

    def test_suffix_rule_pins_names_under_it(self):
        sb = self.sandbox(policy('deny', rule('allow', 'suffix', name='example.com')))
        self.assertEqual(sb.cmd('pin example.com 198.51.100.10 60'), '0')
        self.assertEqual(sb.cmd('pin a.b.example.com 2001:db8:1::10 60'), '1')
        self.assertReach(sb, yes=[PUB6], no=[PUB80])

    def test_domain_rules_block_other_resolvers(self):
        sb = self.sandbox(policy('allow', rule('allow', 'domain', name='api.example.com')))
        self.assertReach(sb, yes=[PUB80], no=['198.51.100.10,53', '2001:db8:1::10,53'])

    def test_two_sandboxes_cannot_reach_each_other(self):
        a = self.sandbox(policy('allow'))
        b = self.sandbox(policy('allow'))
        srv = self.serve(b.ns, SERVER, '0.0.0.0,80')
        self.assertTrue(b.ok('127.0.0.1,80'))
        b4 = b.guest4.split('/')[0]
        self.assertNotEqual(a.slot, b.slot)
        self.assertReach(a, no=['%s,80' % b4, '%s,80' % b.gw4])

    def test_a_thousand_rules_are_one_lookup(self):
        # 1000 address rules of one kind are one set lookup, not 1000 rules.
        many = [rule('allow', 'ipv4', 'tcp', [80, 80], address='10.%d.%d.0' % (i // 250, i % 250),
                     prefix=24) for i in range(999)]
        many.append(rule('allow', 'ipv4', 'tcp', [80, 80], address='198.51.100.10', prefix=32))
        many.append(rule('allow', 'ipv6', 'tcp', [80, 80], address='2001:db8:1::10', prefix=128))
        sb = self.sandbox(policy('deny', *many))
        self.assertReach(sb, yes=[PUB80, PUB6], no=['198.51.100.10,443', PUB443])
        chain = sb.ruleset().split('chain guest_egress')[1]
        verdicts = [l for l in chain.splitlines() if 'accept' in l or 'reject' in l]
        self.assertLessEqual(len(verdicts), 3, chain[:2000])

    def test_runs_merge_but_order_still_holds(self):
        # deny A, allow A+B: merging must not let the allow jump ahead of the deny.
        sb = self.sandbox(policy('deny', rule('deny', 'ipv4', address='198.51.100.10', prefix=32),
                                 rule('allow', 'ipv4', address='198.51.100.0', prefix=24),
                                 rule('allow', 'ipv4', address='203.0.113.0', prefix=24)))
        self.assertReach(sb, yes=[PUB443], no=[PUB80])

    def test_name_runs_share_a_pin_set(self):
        sb = self.sandbox(policy('deny', rule('allow', 'domain', name='a.example.com'),
                                 rule('allow', 'domain', name='b.example.com'),
                                 rule('deny', 'domain', name='c.example.com')))
        self.assertEqual(sb.cmd('pin b.example.com 198.51.100.10 60'), '1')
        self.assertEqual(sb.cmd('pin c.example.com 203.0.113.10 60'), '1')
        self.assertReach(sb, yes=[PUB80], no=[PUB443])

    # ---- the DNS interceptor ----

    def test_dns_answers_and_pins(self):
        sb = self.sandbox(policy('deny', rule('allow', 'dns'),
                                 rule('allow', 'domain', 'tcp', [80, 80], name='api.example.com')))
        self.assertReach(sb, no=[PUB80])  # not resolved yet: nothing pinned
        self.assertEqual(sb.resolve('api.example.com')[:2], ('NOERROR', ['198.51.100.10']))
        self.assertReach(sb, yes=[PUB80], no=['198.51.100.10,443'])
        # A hard-coded address of another name, never resolved, stays closed.
        self.assertReach(sb, no=[PUB443])

    def test_dns_on_the_gateways_ipv6_address(self):
        sb = self.sandbox(policy('deny', rule('allow', 'dns'),
                                 rule('allow', 'domain', 'tcp', [80, 80], name='api.example.com')))
        self.assertEqual(sb.resolve('api.example.com', sb.gw6)[:2], ('NOERROR', ['198.51.100.10']))
        self.assertEqual(sb.resolve('other.example.com', sb.gw6)[:2], ('NXDOMAIN', []))
        self.assertReach(sb, yes=[PUB80])  # pinned through the IPv6 interceptor too

    # ---- steering to the secrets proxy (a stand-in in the harness) ----

    def test_tls_steering_after_the_policy(self):
        sb = self.sandbox(policy('deny', rule('allow', 'group', 'tcp', [443, 443], group='public'),
                                 rule('allow', 'group', 'tcp', [80, 80], group='public'),
                                 rule('allow', 'group', 'udp', [443, 443], group='public')))
        self.assertReach(sb, yes=['198.51.100.10,443', '2001:db8:1::10,443'])  # before: direct
        udp = subprocess.Popen(['ip', 'netns', 'exec', 'world', sys.executable, '-c', UDP_ECHO,
                                '198.51.100.10', '443'], stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (udp.kill(), udp.wait(), udp.stdout.close()))
        self.assertEqual(udp.stdout.readline().strip(), 'up')
        quic = lambda: ns_exec(sb.ns, sys.executable, '-c', UDP_PROBE, '198.51.100.10',
                               '443').stdout.strip()
        self.assertEqual(quic(), 'answered')
        self.assertEqual(sb.cmd('steer 443 15443 1'), 'ok')
        got = sb.reach('198.51.100.10,443', '2001:db8:1::10,443', PUB80, '192.168.50.10,443',
                       '%s,15443' % sb.gw4, '%s,443' % sb.gw4)
        # Allowed 443 lands at the proxy, which learns the real destination.
        self.assertEqual(got['198.51.100.10,443'], 'orig 198.51.100.10 443')
        self.assertEqual(got['2001:db8:1::10,443'], 'orig 2001:db8:1::10 443')
        self.assertTrue(got[PUB80].startswith('hello'), got)  # other ports untouched
        # Steering never opens what the policy closes, nor the proxy's own port.
        for t in ('192.168.50.10,443', '%s,15443' % sb.gw4, '%s,443' % sb.gw4):
            self.assertIn('error', got[t], t)
        # QUIC (UDP 443) is refused while steering is on, though the policy allows it.
        self.assertEqual(quic(), 'refused')
        # A bad steering request: one line, the table unchanged.
        self.assertIn('cannot be steered', sb.cmd('steer 53 15444 0'))
        self.assertEqual(sb.reach('198.51.100.10,443')['198.51.100.10,443'],
                         'orig 198.51.100.10 443')

    def test_tls_steering_survives_a_policy_apply(self):
        sb = self.sandbox(policy('allow'))
        self.assertEqual(sb.cmd('steer 443,8443 15443 0'), 'ok')
        sb.apply(policy('deny', rule('allow', 'group', 'tcp', [443, 443], group='public')))
        got = sb.reach('198.51.100.10,443', '192.168.50.10,443')
        self.assertEqual(got['198.51.100.10,443'], 'orig 198.51.100.10 443')
        self.assertIn('error', got['192.168.50.10,443'])

    def test_pin_check_answers_only_what_the_guest_was_told(self):
        sb = self.sandbox(policy('deny', rule('allow', 'dns'), rule('allow', 'group', group='public')))
        self.assertEqual(sb.cmd('pincheck api.example.com 198.51.100.10'), '0')
        self.assertEqual(sb.resolve('api.example.com')[:2], ('NOERROR', ['198.51.100.10']))
        self.assertEqual(sb.cmd('pincheck api.example.com 198.51.100.10'), '1')
        self.assertEqual(sb.cmd('pincheck API.example.com 198.51.100.10'), '1')
        self.assertEqual(sb.cmd('pincheck api.example.com 203.0.113.10'), '0')  # another address
        self.assertEqual(sb.cmd('pincheck other.example.com 198.51.100.10'), '0')  # another name

    def test_dns_blocked_names_nxdomain_at_once(self):
        sb = self.sandbox(policy('deny', rule('allow', 'dns'),
                                 rule('allow', 'domain', name='api.example.com')))
        rcode, addrs, secs = sb.resolve('other.example.com')
        self.assertEqual((rcode, addrs), ('NXDOMAIN', []))
        self.assertLess(secs, 1.0)
        self.assertReach(sb, no=[PUB443])

    def test_dns_rebind_protection(self):
        sb = self.sandbox(policy('allow'))
        self.assertEqual(sb.resolve('rebind.example.com')[0], 'NXDOMAIN')
        self.assertEqual(sb.resolve('meta.example.com')[0], 'NXDOMAIN')
        self.assertEqual(sb.resolve('api.example.com')[:2], ('NOERROR', ['198.51.100.10']))
        # An explicit address rule for the LAN lets its answers through.
        sb.apply(policy('allow', rule('allow', 'ipv4', address='192.168.50.0', prefix=24)))
        self.assertEqual(sb.resolve('rebind.example.com')[:2], ('NOERROR', ['192.168.50.10']))
        self.assertEqual(sb.resolve('meta.example.com')[0], 'NXDOMAIN')

    def test_dns_denied_without_allow_dns(self):
        # DNS to the gateway is traffic like any other: no allow@dns, no answers.
        sb = self.sandbox(policy('deny', rule('allow', 'group', group='public')))
        self.assertNotEqual(sb.resolve('api.example.com')[0], 'NOERROR')

    def test_nothing_new_gets_in(self):
        # Even with routes to it, neither the host nor the world can open a
        # connection into a sandbox (no published ports), whatever its egress policy.
        sb = self.sandbox(policy('allow'))
        srv = self.serve(sb.ns, SERVER, '0.0.0.0,80')
        guest = sb.guest4.split('/')[0]
        base = ipaddress.ip_address(sb.gw4) - 1
        sh('ip', 'route', 'add', guest + '/32', 'via', str(base + 6))
        self.addCleanup(sh, 'ip', 'route', 'del', guest + '/32', check=False)
        self.assertTrue(sb.ok('127.0.0.1,80'))  # the server is up
        for where in (None, 'world'):
            cmd = [sys.executable, '-c', CLIENT, '%s,80' % guest]
            if where:
                cmd = ['ip', 'netns', 'exec', where] + cmd
            got = json.loads(sh(*cmd).stdout)
            self.assertFalse(got['%s,80' % guest].startswith('hello'), where or 'the host')

    # ---- published ports ----

    def test_published_ports_tcp_and_udp(self):
        # -p 127.0.0.1:P:80, -p 127.0.0.1:E:7 and -p 127.0.0.1:U:5353/udp reach
        # the guest even when its egress is deny-all; nothing else gets in.
        tp, ep = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
        up = free_port(socket.SOCK_DGRAM)
        net = policy('deny')
        net['publish'] = [
            {'address': '127.0.0.1', 'host_port': tp, 'guest_port': 80, 'proto': 'tcp'},
            {'address': '127.0.0.1', 'host_port': ep, 'guest_port': 7, 'proto': 'tcp'},
            {'address': '127.0.0.1', 'host_port': up, 'guest_port': 5353, 'proto': 'udp'}]
        sb = self.sandbox(net)
        self.guest_servers(sb)
        got = json.loads(sh(sys.executable, '-c', CLIENT, '127.0.0.1,%d' % tp).stdout)
        self.assertEqual(got['127.0.0.1,%d' % tp], 'hello 0.0.0.0 80')
        # Bound to 127.0.0.1 only: not on the host's other addresses.
        got = json.loads(sh(sys.executable, '-c', CLIENT, '203.0.113.1,%d' % tp).stdout)
        self.assertFalse(got['203.0.113.1,%d' % tp].startswith('hello'))
        # An unpublished guest port stays closed to the host.
        guest = sb.guest4.split('/')[0]
        got = json.loads(sh(sys.executable, '-c', CLIENT, '%s,7' % guest).stdout)
        self.assertFalse(got['%s,7' % guest].startswith('hello'))
        # UDP: each peer its own flow, answers come back to it.
        for i in range(3):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.sendto(b'ping %d' % i, ('127.0.0.1', up))
            self.assertEqual(u.recv(100), b'echo ping %d' % i)
            u.close()
        # A large stream both ways, with half-close: 4 MiB out, the same back.
        data = os.urandom(4 << 20)
        e = socket.create_connection(('127.0.0.1', ep), timeout=20)
        t = threading.Thread(target=lambda: (e.sendall(data), e.shutdown(socket.SHUT_WR)),
                             daemon=True)
        t.start()
        back = bytearray()
        while True:
            b = e.recv(1 << 16)
            if not b:
                break
            back += b
        t.join()
        e.close()
        self.assertEqual(len(back), len(data))
        self.assertEqual(hashlib.sha256(back).digest(), hashlib.sha256(data).digest())

    def test_ingress_rules_on_published_ports(self):
        # First match wins on the peer: 127.0.0.1 is loopback; a rule for
        # another port or direction does not apply.
        tp, up = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
        deny_lo = rule('deny', 'group', group='loopback')
        deny_lo['direction'] = 'ingress'
        egress_only = rule('deny', 'any')  # egress: never about published ports
        other_port = rule('allow', 'group', 'tcp', [81, 81], group='loopback')
        other_port['direction'] = 'ingress'
        net = policy('allow', other_port, egress_only, deny_lo)
        net['publish'] = [
            {'address': '127.0.0.1', 'host_port': tp, 'guest_port': 80, 'proto': 'tcp'},
            {'address': '127.0.0.1', 'host_port': up, 'guest_port': 5353, 'proto': 'udp'}]
        sb = self.sandbox(net)
        self.guest_servers(sb)
        got = json.loads(sh(sys.executable, '-c', CLIENT, '127.0.0.1,%d' % tp).stdout)
        self.assertFalse(got['127.0.0.1,%d' % tp].startswith('hello'), got)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(1)
        u.sendto(b'ping', ('127.0.0.1', up))
        with self.assertRaises(socket.timeout):
            u.recv(100)
        u.close()
        # The same sandbox, the rule gone (apply): the port answers.
        del net['rules'][2]
        self.assertEqual(sb.apply(net), 'ok')
        got = json.loads(sh(sys.executable, '-c', CLIENT, '127.0.0.1,%d' % tp).stdout)
        self.assertEqual(got['127.0.0.1,%d' % tp], 'hello 0.0.0.0 80')

    def guest_servers(self, sb):
        """A banner on :80, TCP echo on :7 and UDP echo on :5353, in the guest."""
        self.serve(sb.ns, SERVER, '0.0.0.0,80')
        self.serve(sb.ns, ECHO)

    def serve(self, ns, code, *args):
        """A Python server in namespace ns, up before this returns, gone after the test."""
        p = subprocess.Popen(['ip', 'netns', 'exec', ns, sys.executable, '-c', code, *args],
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        self.assertEqual(p.stdout.readline().strip(), 'up')
        return p

    def test_published_port_taken_fails_cleanly(self):
        busy = socket.socket()
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        net = policy('deny')
        net['publish'] = [{'address': '127.0.0.1', 'host_port': port, 'guest_port': 80,
                           'proto': 'tcp'}]
        with self.assertRaises(RuntimeError) as cm:
            Sandbox(net, self.rundir)
        msg = str(cm.exception)
        self.assertEqual(len(msg.splitlines()), 1, msg)
        self.assertIn('127.0.0.1:%d:80/tcp' % port, msg)
        self.assertIn('Address already in use', msg)
        self.assertEqual(leftovers(), [])

    # ---- policy changes ----

    def test_apply_replaces_atomically(self):
        sb = self.sandbox(DEFAULT)
        self.assertEqual(sb.apply(policy('deny')), 'ok')
        self.assertReach(sb, no=[PUB80])
        self.assertTrue(sb.apply({'default_egress': 'sideways'}).startswith('error: '))
        self.assertReach(sb, no=[PUB80])  # the failed apply changed nothing
        self.assertEqual(sb.apply(DEFAULT), 'ok')
        self.assertReach(sb, yes=[PUB80])

    # ---- nothing leaks ----

    def test_teardown_leaves_nothing(self):
        sb = Sandbox(DEFAULT, self.rundir)
        self.assertTrue(leftovers())
        sb.close()
        self.assertEqual(leftovers(), [])

    def test_crash_then_reap_leaves_nothing(self):
        sb = Sandbox(DEFAULT, self.rundir)
        sb.close(kill=True)
        self.assertTrue(leftovers(), 'a SIGKILL leaves the host table (what reap is for)')
        env = dict(os.environ, MSB_NET_RUNDIR=self.rundir)
        r = sh(HARNESS, 'reap', env=env)
        self.assertGreaterEqual(int(r.stdout), 1)
        deadline = time.monotonic() + 5
        while leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(leftovers(), [])
        # And the slot is usable again.
        again = self.sandbox(DEFAULT)
        self.assertTrue(again.ok(PUB80))

    def test_bad_input_one_line_nothing_left(self):
        for network, pool, want in [
                (policy('deny'), '10.200.0.1/16', 'network pool'),
                (policy('deny'), '10.200.0.0/30', 'network pool'),
                ({'default_egress': 'maybe'}, None, 'default_egress'),
                (policy('deny', {'action': 'allow', 'target': {'kind': 'bogus'}}), None,
                 'rule 1')]:
            with self.assertRaises(RuntimeError) as cm:
                Sandbox(network, self.rundir, pool=pool)
            msg = str(cm.exception)
            self.assertIn(want, msg)
            self.assertEqual(len(msg.splitlines()), 1, msg)
            self.assertEqual(leftovers(), [])


def main():
    global HARNESS
    HARNESS = sys.argv.pop(1)
    unittest.main(verbosity=2)


if __name__ == '__main__':
    main()
