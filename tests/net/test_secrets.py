#!/usr/bin/env python3
"""The secrets module's proxy with real clients and servers, no VM.

Runs like test_net.py (run.sh: a private network and mount namespace).  Each
sandbox is msb-netharness with secrets in its spec: plugins/net builds the
network, plugins/secrets runs its proxy inside the sandbox's namespace with
guest TLS steered to it, exactly as msb does.  The world gets HTTPS echo
servers on more documentation addresses, with certificates from a test CA
that plays the host's trust store (MSB_SECRETS_CA_FILE), and a resolver of
its own.  Clients (curl and Python) run in the guest namespace; they resolve
names through the gateway's DNS interceptor first, as a guest does, which is
what feeds the pin check.
"""
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

import test_net
from test_net import World, Sandbox, ns_exec, sh, policy, rule

VALUE = 's3cr3t-Value_0123456789+/='
OTHER_VALUE = 'other-secret-value-42'
PH = '$MSB_TEST_TOKEN'
RESOLVER2 = '198.51.100.54'
API, OTHER, SELF_SIGNED = '198.51.100.20', '198.51.100.21', '198.51.100.22'
API6 = '2001:db8:1::20'
ZONE = {'api.example.com': [API], 'other.example.com': [OTHER],
        'bad.example.com': [SELF_SIGNED], 'api6.example.com': []}

# An HTTP/1.1 echo server: the request as it arrived (line, headers, body
# with chunked bodies decoded) back as JSON.  TLS with CERT,KEY when given.
ECHO = r'''
import json, socket, ssl, sys, threading
def handle(c):
    f = c.makefile("rb")
    try:
        while True:
            line = f.readline(65536)
            if not line:
                return
            heads = []
            while True:
                h = f.readline(65536)
                if h in (b"\r\n", b"\n", b""):
                    break
                heads.append(h.decode("latin-1").rstrip("\r\n"))
            hd = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in heads)}
            body = b""
            if "content-length" in hd:
                body = f.read(int(hd["content-length"]))
            elif hd.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    n = int(f.readline().split(b";")[0], 16)
                    if n == 0:
                        while f.readline() not in (b"\r\n", b""):
                            pass
                        break
                    body += f.read(n); f.readline()
            out = json.dumps({"line": line.decode("latin-1").rstrip("\r\n"), "headers": heads,
                              "body": body.decode("latin-1")}).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
            if hd.get("connection", "").lower() == "close":
                return
    except (OSError, ValueError):
        pass
    finally:
        c.close()
def serve(addr, port, cert, key):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(64)
    ctx = None
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
    while True:
        c, _ = s.accept()
        def one(c=c):
            if ctx:
                try:
                    c = ctx.wrap_socket(c, server_side=True)
                except (OSError, ssl.SSLError):
                    c.close(); return
            handle(c)
        threading.Thread(target=one, daemon=True).start()
for spec in sys.argv[1:]:
    addr, port, cert, key = spec.split(",")
    threading.Thread(target=serve, args=(addr, int(port), cert or None, key or None), daemon=True).start()
print("up", flush=True)
threading.Event().wait()
'''

# A client in the guest: one TLS connection to ADDR:443 with SNI NAME trusting
# CA, then the requests given as JSON on stdin [raw bytes as latin-1 text, ...] sent
# (all at once when "pipeline"), and the responses' bodies (or an error) back.
CLIENT = r'''
import json, socket, ssl, sys
addr, name, ca, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
reqs = json.loads(sys.stdin.read())
ctx = ssl.create_default_context(cafile=ca)
out = []
try:
    s = ctx.wrap_socket(socket.create_connection((addr, 443), timeout=10), server_hostname=name)
    f = s.makefile("rb")
    def response():
        line = f.readline()
        if not line:
            return {"status": 0, "body": "closed"}
        hd = {}
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            k, v = h.decode().split(":", 1); hd[k.lower()] = v.strip()
        body = f.read(int(hd.get("content-length", "0")))
        return {"status": int(line.split()[1]), "body": body.decode("latin-1")}
    if mode == "pipeline":
        s.sendall("".join(reqs).encode("latin-1"))
        out = [response() for _ in reqs]
    else:
        for r in reqs:
            s.sendall(r.encode("latin-1")); out.append(response())
except (OSError, ssl.SSLError, ValueError) as e:
    out.append({"status": -1, "body": "%s: %s" % (type(e).__name__, e)})
print(json.dumps(out))
'''


def openssl(*args):
    subprocess.run(['openssl', *args], check=True, capture_output=True)


def make_ca(d, name):
    key, pem = os.path.join(d, name + '.key'), os.path.join(d, name + '.pem')
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
            '-keyout', key, '-out', pem, '-days', '2', '-subj', '/CN=' + name,
            '-addext', 'basicConstraints=critical,CA:TRUE',
            '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    return pem, key


def make_leaf(d, ca, name, sans):
    key, csr, pem = (os.path.join(d, name + x) for x in ('.key', '.csr', '.pem'))
    ext = os.path.join(d, name + '.ext')
    with open(ext, 'w') as f:
        f.write('subjectAltName=' + ','.join('DNS:' + s for s in sans) + '\n'
                'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
            '-keyout', key, '-out', csr, '-subj', '/CN=' + sans[0])
    openssl('x509', '-req', '-in', csr, '-CA', ca[0], '-CAkey', ca[1], '-CAcreateserial',
            '-out', pem, '-days', '2', '-extfile', ext)
    return pem, key


def req(path='/', host='api.example.com', headers=(), body=None, close=False, chunks=None):
    h = ['GET' if body is None and chunks is None else 'POST', ' ', path, ' HTTP/1.1\r\n',
         'Host: ', host, '\r\n']
    for k, v in headers:
        h += [k, ': ', v, '\r\n']
    if body is not None:
        h += ['Content-Length: %d\r\n' % len(body)]
    if chunks is not None:
        h += ['Transfer-Encoding: chunked\r\n']
    if close:
        h += ['Connection: close\r\n']
    h += ['\r\n']
    if body is not None:
        h += [body]
    if chunks is not None:
        for c in chunks:
            h += ['%x\r\n' % len(c), c, '\r\n']
        h += ['0\r\n\r\n']
    return ''.join(h)


AUTH = [('Authorization', 'Bearer ' + PH)]


class SecretsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.world = World()
        cls.rundir = tempfile.mkdtemp(prefix='msb-net-run-')
        cls.tmp = tempfile.mkdtemp(prefix='msb-secrets-test-')
        d = cls.tmp
        public = make_ca(d, 'public-ca')  # plays the host's trust store
        rogue = make_ca(d, 'rogue-ca')   # trusted by nobody
        api = make_leaf(d, public, 'api', ['api.example.com', 'api6.example.com'])
        # A server that holds a valid certificate for api.example.com too
        # (a CDN, say), at an address never given out for that name.
        other = make_leaf(d, public, 'other', ['other.example.com', 'api.example.com'])
        bad = make_leaf(d, rogue, 'bad', ['bad.example.com'])
        cls.public_ca = public[0]
        for a in (API, OTHER, SELF_SIGNED, RESOLVER2):
            sh('ip', 'route', 'add', a + '/32', 'via', '203.0.113.2')
            ns_exec('world', 'ip', 'addr', 'add', a + '/32', 'dev', 'lo')
        sh('ip', '-6', 'route', 'add', API6 + '/128', 'via', '2001:db8:ffff::2')
        ns_exec('world', 'ip', 'addr', 'add', API6 + '/128', 'dev', 'lo', 'nodad')
        specs = ['%s,443,%s,%s' % (API, *api), '%s,80,,' % API, '%s,443,%s,%s' % (API6, *api),
                 '%s,443,%s,%s' % (OTHER, *other), '%s,443,%s,%s' % (SELF_SIGNED, *bad)]
        cls.echo = subprocess.Popen(['ip', 'netns', 'exec', 'world', sys.executable, '-c', ECHO]
                                    + specs, stdout=subprocess.PIPE, text=True)
        zone = dict(ZONE)
        cls.dns = subprocess.Popen(['ip', 'netns', 'exec', 'world', sys.executable, '-c',
                                    test_net.DNS_SERVER, json.dumps(zone), RESOLVER2],
                                   stdout=subprocess.PIPE, text=True)
        for p in (cls.echo, cls.dns):
            assert p.stdout.readline().strip() == 'up'
        test_net.RESOLVER = RESOLVER2
        os.environ['TEST_TOKEN'] = VALUE
        os.environ['MSB_SECRETS_CA_FILE'] = cls.public_ca

    @classmethod
    def tearDownClass(cls):
        for p in (cls.echo, cls.dns):
            p.kill()
            p.wait()
            p.stdout.close()
        cls.world.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def sandbox(self, hosts=('api.example.com',), network=None, on_violation='block',
                secrets=None, env=None, pass_fds=()):
        cadir = tempfile.mkdtemp(dir=self.tmp)
        os.environ['MSB_SECRETS_CA_DIR'] = cadir
        for k in ('MSB_SECRETS_SUBSTITUTE', 'MSB_SECRETS_BYPASS', 'MSB_SECRETS_PORTS'):
            os.environ.pop(k, None)
        os.environ.update(env or {})
        extra = {'secrets': secrets or [{'env': 'TEST_TOKEN', 'hosts': list(hosts)}],
                 'secrets_policy': {'on_violation': on_violation}}
        sb = Sandbox(network or policy('deny', rule('allow', 'dns'),
                                       rule('allow', 'group', 'tcp', [443, 443], group='public'),
                                       rule('allow', 'group', 'tcp', [80, 80], group='public')),
                     self.rundir, extra=extra, pass_fds=pass_fds)
        self.addCleanup(sb.close)
        port, sb.ca = sb.cmd('secrets').split()
        return sb

    def stats(self, sb):
        return json.loads(sb.cmd('stats'))

    def run_client(self, sb, addr, name, reqs, ca=None, mode='seq'):
        r = ns_exec(sb.ns, sys.executable, '-c', CLIENT, addr, name, ca or sb.ca, mode,
                    input=json.dumps(reqs))
        return json.loads(r.stdout)

    def curl(self, sb, url, *args, ca=None, resolve=None):
        cmd = ['curl', '-sS', '-m', '10', '--cacert', ca or sb.ca]
        if resolve:
            cmd += ['--resolve', resolve]
        r = ns_exec(sb.ns, *cmd, *args, url, check=False)
        return r.stdout

    def headers_seen(self, resp):
        return json.loads(resp['body'])['headers']

    # ---- the allowed host gets the value; nobody else does ----

    def test_allowed_host_gets_the_value_curl(self):
        sb = self.sandbox()
        self.assertEqual(sb.resolve('api.example.com')[:2], ('NOERROR', [API]))
        out = self.curl(sb, 'https://api.example.com/v1', '-H', 'Authorization: Bearer ' + PH,
                        '-H', 'X-Any: k=' + PH + ';', resolve='api.example.com:443:' + API)
        seen = json.loads(out)['headers']
        self.assertIn('Authorization: Bearer ' + VALUE, seen)
        self.assertIn('X-Any: k=' + VALUE + ';', seen)
        self.assertEqual(self.stats(sb)['injected'], 1)

    def test_value_from_a_file(self):
        path = os.path.join(self.tmp, 'file-token')
        with open(path, 'w') as f:
            f.write('from-a-file-0123\n')  # one trailing newline is dropped
        sb = self.sandbox(secrets=[{'env': 'FILE_TOKEN', 'hosts': ['api.example.com'],
                                    'file': path}])
        sb.resolve('api.example.com')
        got = self.run_client(sb, API, 'api.example.com',
                              [req(headers=[('X-Key', '$MSB_FILE_TOKEN')], close=True)])
        self.assertIn('X-Key: from-a-file-0123', self.headers_seen(got[0]))

    def test_values_given_directly_and_from_the_config(self):
        # As msb-supervisor takes them: NAME=VALUE entries, NUL-ended, on an
        # fd (the SDK's, --secret-values-fd); and the config file's [secrets].
        conf = os.path.join(self.tmp, 'msb.conf')
        with open(conf, 'w') as f:
            f.write('[secrets]\nCONF_TOKEN = from-the-config-77\n')
        os.chmod(conf, 0o600)
        r, w = os.pipe()
        os.write(w, b'DIRECT_TOKEN=given-directly-42\0')
        os.close(w)
        self.addCleanup(lambda: [os.environ.pop(k, None)
                                 for k in ('MSB_CONFIG', 'MSB_TEST_VALUES_FD')])
        try:
            sb = self.sandbox(secrets=[{'env': 'DIRECT_TOKEN', 'hosts': ['api.example.com']},
                                       {'env': 'CONF_TOKEN', 'hosts': ['api.example.com']}],
                              env={'MSB_CONFIG': conf, 'MSB_TEST_VALUES_FD': str(r)},
                              pass_fds=(r,))
        finally:
            os.close(r)
            os.environ.pop('MSB_TEST_VALUES_FD', None)
        sb.resolve('api.example.com')
        got = self.run_client(sb, API, 'api.example.com',
                              [req(headers=[('X-A', '$MSB_DIRECT_TOKEN'),
                                            ('X-B', '$MSB_CONF_TOKEN')], close=True)])
        seen = self.headers_seen(got[0])
        self.assertIn('X-A: given-directly-42', seen)
        self.assertIn('X-B: from-the-config-77', seen)
        # The harness, as msb, wiped its own copies once the proxy had them.
        with open('/proc/%d/smaps' % sb.p.pid) as f:
            flags = [l.split()[1:] for l in f if l.startswith('VmFlags:')]
        self.assertEqual(len([v for v in flags if 'wf' in v]), 1, flags)
        # A config file others can read is refused, naming the fix.
        os.chmod(conf, 0o644)
        with self.assertRaisesRegex(RuntimeError, 'chmod 600'):
            self.sandbox(secrets=[{'env': 'CONF_TOKEN', 'hosts': ['api.example.com']}],
                         env={'MSB_CONFIG': conf})

    def test_values_live_in_memory_kept_out_of_core_dumps(self):
        # The proxy's values sit in one mapping marked MADV_WIPEONFORK ("wf" in
        # smaps' VmFlags, which nothing else here sets) and MADV_DONTDUMP ("dd").
        sb = self.sandbox()
        with open('/proc/%d/smaps' % sb.p.pid) as f:
            flags = [l.split()[1:] for l in f if l.startswith('VmFlags:')]
        vault = [v for v in flags if 'wf' in v]
        self.assertEqual(len(vault), 1, flags)
        self.assertIn('dd', vault[0])

    def test_basic_credentials_and_python_client(self):
        import base64
        sb = self.sandbox()
        sb.resolve('api.example.com')
        cred = base64.b64encode(('user:' + PH).encode()).decode()
        got = self.run_client(sb, API, 'api.example.com',
                              [req(headers=[('Authorization', 'Basic ' + cred)], close=True)])
        seen = self.headers_seen(got[0])
        want = base64.b64encode(('user:' + VALUE).encode()).decode()
        self.assertIn('Authorization: Basic ' + want, seen)

    def test_other_host_gets_the_placeholder_spliced(self):
        sb = self.sandbox()
        sb.resolve('other.example.com')
        # Not a secret's host: spliced, the real certificate (the host's CA) verifies.
        out = self.curl(sb, 'https://other.example.com/', '-H', 'Authorization: Bearer ' + PH,
                        ca=self.public_ca, resolve='other.example.com:443:' + OTHER)
        self.assertIn('Authorization: Bearer ' + PH, json.loads(out)['headers'])
        s = self.stats(sb)
        self.assertEqual((s['spliced'], s['intercepted'], s['injected']), (1, 0, 0))

    def test_server_speaks_first_is_spliced_not_hung(self):
        # A protocol whose server talks first (the world's banner servers on
        # 443): the proxy waits a moment for a ClientHello, then splices.
        sb = self.sandbox()
        t0 = time.monotonic()
        got = ns_exec(sb.ns, sys.executable, '-c', 'import socket; s = socket.create_connection('
                      '("198.51.100.10", 443), 10); print(s.recv(100).decode().strip())').stdout
        self.assertEqual(got.strip(), 'hello 198.51.100.10 443')
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(self.stats(sb)['spliced'], 1)

    def test_sni_spoof_gets_nothing(self):
        # Allowed name, another host's address (one with a valid certificate
        # for the name): not pinned for it, so the request is refused.
        sb = self.sandbox()
        sb.resolve('api.example.com')
        got = self.run_client(sb, OTHER, 'api.example.com', [req(headers=AUTH)])
        self.assertEqual(got[0]['status'], 403, got)
        self.assertIn('TEST_TOKEN', got[0]['body'])
        self.assertNotIn(VALUE, json.dumps(got))
        # The same request without the placeholder goes through: the gate is the pin.
        got = self.run_client(sb, OTHER, 'api.example.com', [req(close=True)])
        self.assertEqual(got[0]['status'], 200, got)

    def test_host_header_not_sni_gets_nothing(self):
        sb = self.sandbox()
        sb.resolve('api.example.com')
        got = self.run_client(sb, API, 'api.example.com',
                              [req(host='other.example.com', headers=AUTH)])
        self.assertEqual(got[0]['status'], 403, got)
        got = self.run_client(sb, API, 'api.example.com',
                              [req(host='api.example.com:443', headers=AUTH, close=True)])
        self.assertIn('Authorization: Bearer ' + VALUE, self.headers_seen(got[0]))

    def test_never_resolved_address_gets_nothing(self):
        sb = self.sandbox()
        got = self.run_client(sb, API, 'api.example.com', [req(headers=AUTH)])
        self.assertEqual(got[0]['status'], 403, got)
        sb.resolve('api.example.com')  # the control: once resolved, it works
        got = self.run_client(sb, API, 'api.example.com', [req(headers=AUTH, close=True)])
        self.assertIn('Authorization: Bearer ' + VALUE, self.headers_seen(got[0]))

    def test_plain_http_gets_nothing(self):
        sb = self.sandbox()
        sb.resolve('api.example.com')
        out = ns_exec(sb.ns, 'curl', '-sS', '-m', '10', '-H', 'Authorization: Bearer ' + PH,
                      'http://%s/' % API).stdout
        self.assertIn('Authorization: Bearer ' + PH, json.loads(out)['headers'])

    def test_upstream_must_verify_against_the_hosts_cas(self):
        sb = self.sandbox(hosts=('bad.example.com',))
        sb.resolve('bad.example.com')
        got = self.run_client(sb, SELF_SIGNED, 'bad.example.com', [req(host='bad.example.com',
                                                                       headers=AUTH)])
        self.assertEqual(got[0]['status'], 502, got)
        self.assertIn('did not verify', got[0]['body'])
        self.assertEqual(self.stats(sb)['upstream_failed'], 1)

    def test_ipv6_mirrors_ipv4(self):
        sb = self.sandbox(hosts=('api6.example.com',))
        # The world's resolver has no AAAA: pin by hand what a resolver would give.
        self.assertEqual(sb.cmd('pin api6.example.com %s 60' % API6), '0')
        got = self.run_client(sb, API6, 'api6.example.com',
                              [req(host='api6.example.com', headers=AUTH, close=True)])
        self.assertIn('Authorization: Bearer ' + VALUE, self.headers_seen(got[0]))

    def test_wildcard_host_and_two_secrets(self):
        os.environ['OTHER_TOKEN'] = OTHER_VALUE
        sb = self.sandbox(secrets=[{'env': 'TEST_TOKEN', 'hosts': ['*.example.com']},
                                   {'env': 'OTHER_TOKEN', 'hosts': ['nowhere.example.org']}])
        sb.resolve('api.example.com')
        got = self.run_client(sb, API, 'api.example.com', [req(headers=AUTH, close=True)])
        self.assertIn('Authorization: Bearer ' + VALUE, self.headers_seen(got[0]))
        # A secret bound elsewhere is a violation here.
        got = self.run_client(sb, API, 'api.example.com',
                              [req(headers=[('X-Key', '$MSB_OTHER_TOKEN')])])
        self.assertEqual(got[0]['status'], 403)
        self.assertNotIn(OTHER_VALUE, json.dumps(got))

    # ---- HTTP: keep-alive, pipelining, bodies, malformed input ----

    def test_keep_alive_many_requests(self):
        sb = self.sandbox()
        sb.resolve('api.example.com')
        reqs = [req('/%d' % i, headers=AUTH) for i in range(40)] + [req('/end', close=True)]
        got = self.run_client(sb, API, 'api.example.com', reqs)
        self.assertEqual(len(got), 41)
        for i in range(40):
            self.assertIn('Authorization: Bearer ' + VALUE, self.headers_seen(got[i]))
            self.assertEqual(json.loads(got[i]['body'])['line'], 'GET /%d HTTP/1.1' % i)
        s = self.stats(sb)
        self.assertEqual((s['intercepted'], s['requests'], s['injected']), (1, 41, 40))

    def test_pipelining(self):
        sb = self.sandbox()
        sb.resolve('api.example.com')
        reqs = [req('/a', headers=AUTH), req('/b'), req('/c', headers=AUTH, close=True)]
        got = self.run_client(sb, API, 'api.example.com', reqs, mode='pipeline')
        lines = [json.loads(g['body'])['line'] for g in got]
        self.assertEqual(lines, ['GET /a HTTP/1.1', 'GET /b HTTP/1.1', 'GET /c HTTP/1.1'])
        self.assertIn('Authorization: Bearer ' + VALUE, self.headers_seen(got[2]))

    def test_bodies_and_query_when_enabled(self):
        sb = self.sandbox(env={'MSB_SECRETS_SUBSTITUTE': 'headers,query,body'})
        sb.resolve('api.example.com')
        big = 'x' * 100000 + '"key": "' + PH + '"' + 'y' * 1000
        chunks = ['{"key": "$MSB_TEST', '_TOKEN", "n": 1}', 'z' * 5000]
        got = self.run_client(sb, API, 'api.example.com', [
            req('/q?token=%24MSB_TEST_TOKEN&x=1', body=big),
            req('/c', chunks=chunks, close=True)])
        first = json.loads(got[0]['body'])
        self.assertEqual(first['body'], big.replace(PH, VALUE))
        self.assertTrue(first['line'].startswith('POST /q?token=s3cr3t-Value_0123456789%2B%2F%3D&x=1'),
                        first['line'])
        self.assertIn('Content-Length: %d' % len(big.replace(PH, VALUE)), first['headers'])
        self.assertEqual(json.loads(got[1]['body'])['body'], ''.join(chunks).replace(PH, VALUE))

    def test_bodies_untouched_by_default(self):
        sb = self.sandbox()
        sb.resolve('api.example.com')
        body = 'a' * 300000 + PH
        got = self.run_client(sb, API, 'api.example.com', [req(body=body, close=True)])
        seen = json.loads(got[0]['body'])
        self.assertEqual(hashlib.sha256(seen['body'].encode()).hexdigest(),
                         hashlib.sha256(body.encode()).hexdigest())

    def test_too_large_a_body_cannot_carry_a_placeholder(self):
        sb = self.sandbox(env={'MSB_SECRETS_SUBSTITUTE': 'headers,body'})
        sb.resolve('api.example.com')
        big = 'b' * 400000
        got = self.run_client(sb, API, 'api.example.com', [req(body=big)])
        self.assertEqual(len(json.loads(got[0]['body'])['body']), 400000)  # passes as is
        got = self.run_client(sb, API, 'api.example.com', [req(body=big + PH)])
        self.assertNotEqual(got[0]['status'], 200)  # refused: cannot be substituted
        self.assertNotIn(VALUE, json.dumps(got))

    def test_malformed_request_closes_only_that_connection(self):
        sb = self.sandbox()
        sb.resolve('api.example.com')
        bad = ('GET / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 3\r\n'
               'Transfer-Encoding: chunked\r\n\r\n' + AUTH[0][1])
        got = self.run_client(sb, API, 'api.example.com', [bad])
        self.assertEqual(got[0]['status'], 400, got)
        got = self.run_client(sb, API, 'api.example.com', ['\x00\x01garbage\r\n\r\n'])
        self.assertEqual(got[0]['status'], 400, got)
        got = self.run_client(sb, API, 'api.example.com', [req(headers=AUTH, close=True)])
        self.assertIn('Authorization: Bearer ' + VALUE, self.headers_seen(got[0]))
        self.assertEqual(self.stats(sb)['malformed'], 2)

    # ---- modes and lists ----

    def test_passthrough_sends_the_placeholder(self):
        sb = self.sandbox(on_violation='passthrough')
        got = self.run_client(sb, API, 'api.example.com', [req(headers=AUTH, close=True)])
        self.assertIn('Authorization: Bearer ' + PH, self.headers_seen(got[0]))

    def test_bypass_list_splices(self):
        sb = self.sandbox(env={'MSB_SECRETS_BYPASS': 'api.example.com'})
        sb.resolve('api.example.com')
        got = self.run_client(sb, API, 'api.example.com', [req(headers=AUTH, close=True)],
                              ca=self.public_ca)
        self.assertIn('Authorization: Bearer ' + PH, self.headers_seen(got[0]))
        self.assertEqual(self.stats(sb)['intercepted'], 0)

    def test_guest_trusts_only_the_sandbox_ca_for_intercepted_names(self):
        # The leaf is from this sandbox's CA: a client trusting only the public
        # CA refuses it (the guest must be given the CA, which msb does).
        sb = self.sandbox()
        sb.resolve('api.example.com')
        got = self.run_client(sb, API, 'api.example.com', [req()], ca=self.public_ca)
        self.assertEqual(got[0]['status'], -1)
        self.assertIn('CERTIFICATE_VERIFY_FAILED', got[0]['body'])

    def test_bad_input_fails_with_one_line(self):
        os.environ['EMPTY_TOKEN'] = ''
        for secrets, env, want in (
                ([{'env': 'EMPTY_TOKEN', 'hosts': ['api.example.com']}], {}, 'not set'),
                ([{'env': 'NL_TOKEN', 'hosts': ['api.example.com']}], {'NL_TOKEN': 'a\nb'},
                 'CR, LF or NUL'),
                (None, {'MSB_SECRETS_PORTS': '53'}, 'not a port to steer'),
                (None, {'MSB_SECRETS_SUBSTITUTE': 'cookies'}, 'expected headers')):
            with self.subTest(want=want):
                before = test_net.leftovers()
                with self.assertRaises(RuntimeError) as e:
                    self.sandbox(secrets=secrets, env=env)
                self.assertIn(want, str(e.exception))
                self.assertEqual(len(str(e.exception).splitlines()), 1)
                self.assertEqual(test_net.leftovers(), before)
        for k in ('NL_TOKEN', 'EMPTY_TOKEN'):
            os.environ.pop(k, None)


def main():
    test_net.HARNESS = sys.argv.pop(1)
    unittest.main(verbosity=2)


if __name__ == '__main__':
    main()
