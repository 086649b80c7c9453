#!/usr/bin/python3
"""Local OCI registry test harness for msb.

Starts Debian's distribution/registry 2.8 (`docker-registry`) on loopback in
four modes (plain, tls, basic, token), a bearer-token server for the token
mode, a fault-injecting reverse proxy, and builds deterministic test images
(OCI layouts) from Debian packages, plus malicious layers.  Python stdlib
only; shells out to docker-registry, openssl, htpasswd, zstd and skopeo.
See README.md next to this file for the API.

CLI:
  registry.py up MODE DIR [--no-anonymous-pull] [--port N] [--listen ADDR]
  registry.py build-image KIND OUT_DIR [--tag T] [--compression C] [--media M] [--count N]
  registry.py push LAYOUT URL REPO TAG [--ref R] [--ca F] [--user U] [--password P] [--skopeo]
  registry.py build-and-push KIND URL REPO TAG [--ca F] [--user U] [--password P] [--storage DIR]
  registry.py evil-tar NAME OUT_FILE [--count N]
  registry.py proxy UPSTREAM_URL [--ca F] [--tls CA_DIR] [--rule JSON]...
  registry.py ca DIR
  registry.py kinds
"""

import base64
import ctypes
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

REGISTRY_BIN = os.environ.get("MSB_REGISTRY_BIN", "/usr/bin/docker-registry")
MODES = ("plain", "tls", "basic", "token")

# Deterministic builds: every mtime and "created" is this (2024-01-01 UTC).
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "1704067200"))
CREATED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))

# Media types.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = DOCKER_LAYER + ".gzip"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT_ALL = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
REF_NAME = "org.opencontainers.image.ref.name"

BLOB_PATH = r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$"
MANIFEST_PATH = r"^/v2/.+/manifests/[^/]+$"


class HarnessError(Exception):
    pass


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _run(cmd, *, input=None, cwd=None, env=None, check=True):
    p = subprocess.run(cmd, input=input, cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if check and p.returncode != 0:
        raise HarnessError("%s failed (exit %d): %s" % (
            " ".join(cmd), p.returncode, p.stderr.decode(errors="replace").strip()))
    return p


def _write_atomic(path, data, mode=0o644):
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def free_port(listen="127.0.0.1"):
    """A TCP port that was free a moment ago on `listen`."""
    fam = socket.AF_INET6 if ":" in listen else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((listen, 0))
        return s.getsockname()[1]


def _hostport(listen, port):
    return "[%s]:%d" % (listen, port) if ":" in listen else "%s:%d" % (listen, port)


# --- child processes: die with the parent ------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec(parent_pid):
    def preexec():
        # SIGKILL this child when the thread that forked it dies.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl
            os._exit(1)
    return preexec


def spawn(cmd, *, log_path=None, env=None):
    """Popen that is SIGKILLed when this process (more exactly: the calling
    thread) dies.  Output goes to log_path (or /dev/null)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=_pdeathsig_preexec(os.getpid()))
    finally:
        if log_path:
            out.close()


def stop_process(proc, timeout=5):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- certificates (openssl) --------------------------------------------------------

LOOPBACK_SANS = ("IP:127.0.0.1", "IP:::1", "DNS:localhost")


class CertAuthority:
    """A test CA under `dir` (made with openssl on first use, then reused).

    cert/key: the CA.  cert_dir: a directory holding only ca.crt (for skopeo
    --cert-dir, containers' certs.d layout).  server(): cert+key for
    127.0.0.1, ::1 and localhost.  token_signer(): cert+key for signing JWTs.
    All keys are EC P-256."""

    def __init__(self, dir, name="msb test CA"):
        self.dir = os.path.abspath(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.cert = os.path.join(self.dir, "ca.crt")
        self.key = os.path.join(self.dir, "ca.key")
        self.cert_dir = os.path.join(self.dir, "certs.d")
        if not (os.path.exists(self.cert) and os.path.exists(self.key)):
            self._make_ca(name)
        if not os.path.exists(os.path.join(self.cert_dir, "ca.crt")):
            os.makedirs(self.cert_dir, exist_ok=True)
            shutil.copyfile(self.cert, os.path.join(self.cert_dir, "ca.crt.tmp"))
            os.replace(os.path.join(self.cert_dir, "ca.crt.tmp"), os.path.join(self.cert_dir, "ca.crt"))

    @staticmethod
    def _genkey(path):
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", path + ".tmp"])
        os.replace(path + ".tmp", path)

    def _make_ca(self, name):
        key = self.key
        self._genkey(key)
        _run(["openssl", "req", "-x509", "-new", "-key", key, "-sha256", "-days", "3650",
              "-subj", "/CN=" + name, "-set_serial", "0x" + secrets.token_hex(8),
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
              "-addext", "subjectKeyIdentifier=hash",
              "-out", self.cert + ".tmp"])
        os.replace(self.cert + ".tmp", self.cert)

    def issue(self, name, *, sans=LOOPBACK_SANS, server=True):
        """Cert and key `name`.crt/.key signed by this CA (cached)."""
        crt = os.path.join(self.dir, name + ".crt")
        key = os.path.join(self.dir, name + ".key")
        if os.path.exists(crt) and os.path.exists(key):
            return crt, key
        self._genkey(key)
        ext = ["basicConstraints=critical,CA:FALSE", "authorityKeyIdentifier=keyid"]
        if server:
            ext += ["keyUsage=critical,digitalSignature,keyEncipherment",
                    "extendedKeyUsage=serverAuth"]
        else:
            ext += ["keyUsage=critical,digitalSignature"]
        if sans:
            ext.append("subjectAltName=" + ",".join(sans))
        extfile = os.path.join(self.dir, name + ".ext")
        _write_atomic(extfile, "\n".join(ext) + "\n")
        csr = _run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=" + name]).stdout
        _run(["openssl", "x509", "-req", "-CA", self.cert, "-CAkey", self.key, "-sha256",
              "-days", "825", "-set_serial", "0x" + secrets.token_hex(8), "-extfile", extfile,
              "-out", crt + ".tmp"], input=csr)
        os.replace(crt + ".tmp", crt)
        return crt, key

    def server(self):
        return self.issue("server")

    def token_signer(self):
        return self.issue("token-signer", sans=(), server=False)

    def server_context(self):
        crt, key = self.server()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        return ctx

    def client_context(self):
        return ssl.create_default_context(cafile=self.cert)


def _as_ca(ca):
    if ca is None or isinstance(ca, CertAuthority):
        return ca
    return CertAuthority(ca)


# --- JWT (ES256, signed with openssl) -----------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _der_ecdsa_to_raw(der, n=32):
    """DER SEQUENCE{INTEGER r, INTEGER s} -> r||s, each n bytes (JOSE form)."""
    if der[0] != 0x30:
        raise HarnessError("bad ECDSA signature")
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise HarnessError("bad ECDSA signature")
        ln = der[i + 1]
        v = int.from_bytes(der[i + 2:i + 2 + ln], "big")
        i += 2 + ln
        out += v.to_bytes(n, "big")
    return out


def es256_sign(key_path, data):
    der = _run(["openssl", "dgst", "-sha256", "-sign", key_path], input=data).stdout
    return _der_ecdsa_to_raw(der)


def pem_cert_der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def libtrust_key_id(cert_path):
    """docker/libtrust KeyID of a certificate's public key: base32 of the first
    240 bits of sha256(DER SubjectPublicKeyInfo), in 12 ':'-separated groups of
    4 -- what distribution's token auth looks a JWT `kid` up by."""
    pub = _run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"]).stdout
    spki = _run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub).stdout
    s = base64.b32encode(hashlib.sha256(spki).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


def make_jwt(claims, key_path, cert_path, *, header="x5c"):
    """A compact ES256 JWT.  header: 'x5c' (signing cert chain), 'kid' (libtrust
    key id), 'both', or 'none'."""
    hdr = {"typ": "JWT", "alg": "ES256"}
    if header in ("x5c", "both"):
        hdr["x5c"] = [base64.b64encode(pem_cert_der(cert_path)).decode()]
    if header in ("kid", "both"):
        hdr["kid"] = libtrust_key_id(cert_path)
    signing_input = (b64url(json.dumps(hdr, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + b64url(es256_sign(key_path, signing_input.encode()))


# --- small HTTP servers ------------------------------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, BrokenPipeError, socket.timeout, OSError)):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):
        if os.environ.get("MSB_REGISTRY_DEBUG"):
            sys.stderr.write("[%s] %s\n" % (type(self).__name__, fmt % args))

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline().strip():
                        pass
                    return out
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body=b"", headers=(), content_type="application/json"):
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _serve(handler, owner, listen="127.0.0.1", port=0, ssl_context=None):
    cls = _Server6 if ":" in listen else _Server
    srv = cls((listen, port), handler)
    srv.owner = owner
    if ssl_context is not None:
        srv.socket = ssl_context.wrap_socket(srv.socket, server_side=True,
                                             do_handshake_on_connect=False)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    return srv, t


def _shutdown(srv):
    if srv is not None:
        srv.shutdown()
        srv.server_close()


# --- token server ------------------------------------------------------------------

def parse_scope(scope):
    """'repository:foo/bar:pull,push' -> ('repository', 'foo/bar', ['pull', 'push'])."""
    typ, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return typ, name, [a for a in actions.split(",") if a]


class TokenServer:
    """Docker registry token server (GET realm?service=&scope= with optional
    Basic credentials; POST OAuth2 password grant), HTTPS with the CA.

    users: {name: (password, allowed_actions)}; anonymous: actions granted
    without credentials.  Requested actions are intersected with what the
    identity may do (possibly empty, like Docker Hub); wrong credentials -> 401.
    requests: a log of {'method', 'user', 'scopes', 'status'} dicts."""

    def __init__(self, ca, *, service="msb-test-registry", issuer="msb-test-token-issuer",
                 users=None, anonymous=("pull",), ttl=300, header="x5c", listen="127.0.0.1"):
        self.ca = _as_ca(ca)
        self.service = service
        self.issuer = issuer
        self.users = dict(users or {})
        self.anonymous = set(anonymous)
        self.ttl = ttl
        self.header = header
        self.listen = listen
        self.signer_cert, self.signer_key = self.ca.token_signer()
        self.requests = []
        self._lock = threading.Lock()
        self._srv = None
        self.port = None

    @property
    def url(self):
        return "https://" + _hostport(self.listen, self.port)

    @property
    def realm(self):
        return self.url + "/token"

    def start(self):
        self._srv, _ = _serve(_TokenHandler, self, self.listen, 0, self.ca.server_context())
        self.port = self._srv.server_address[1]
        return self

    def stop(self):
        _shutdown(self._srv)
        self._srv = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def allowed(self, user, typ, name):
        if user is None:
            return set(self.anonymous)
        return set(self.users[user][1])

    def authenticate(self, auth_header):
        """-> (user or None, ok)."""
        if not auth_header:
            return None, True
        scheme, _, val = auth_header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, pw = base64.b64decode(val.strip()).decode().partition(":")
        except Exception:
            return None, False
        if user in self.users and self.users[user][0] == pw:
            return user, True
        return user, False

    def grant(self, user, scopes):
        access = []
        for sc in scopes:
            for one in sc.split(" "):
                if not one:
                    continue
                typ, name, actions = parse_scope(one)
                ok = self.allowed(user, typ, name)
                granted = [a for a in actions if a in ok or "*" in ok]
                access.append({"type": typ, "name": name, "actions": granted})
        return access

    def issue(self, subject, access, *, ttl=None, header=None, audience=None, issuer=None,
              key=None, cert=None, not_before=None):
        """Mint a token directly (tests use the overrides to make bad ones)."""
        now = int(time.time())
        ttl = self.ttl if ttl is None else ttl
        claims = {
            "iss": self.issuer if issuer is None else issuer,
            "sub": subject or "",
            "aud": self.service if audience is None else audience,
            "exp": now + ttl,
            "nbf": (now - 5) if not_before is None else not_before,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return make_jwt(claims, key or self.signer_key, cert or self.signer_cert,
                        header=header or self.header)

    def _log(self, **kw):
        with self._lock:
            self.requests.append(kw)


class _TokenHandler(_Handler):
    def _answer(self, method, user, ok, scopes, service, oauth):
        ts = self.server.owner
        if not ok:
            ts._log(method=method, user=user, scopes=scopes, status=401)
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                           "message": "bad credentials"}]}).encode()
            return self._send(401, body, [("WWW-Authenticate", 'Basic realm="msb-token"')])
        if service and service != ts.service:
            ts._log(method=method, user=user, scopes=scopes, status=400)
            return self._send(400, json.dumps({"error": "unknown service " + service}).encode())
        tok = ts.issue(user, ts.grant(user, scopes))
        ts._log(method=method, user=user, scopes=scopes, status=200)
        ans = {"token": tok, "access_token": tok, "expires_in": ts.ttl,
               "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if oauth:
            ans = {"access_token": tok, "token_type": "Bearer", "expires_in": ts.ttl,
                   "scope": " ".join(scopes)}
        self._send(200, json.dumps(ans).encode())

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path != "/token":
            return self._send(404, b'{"error":"not found"}')
        q = urllib.parse.parse_qs(u.query)
        user, ok = self.server.owner.authenticate(self.headers.get("Authorization"))
        self._answer("GET", user, ok, q.get("scope", []), (q.get("service") or [""])[0], False)

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        body = self._read_body()
        if u.path != "/token":
            return self._send(404, b'{"error":"not found"}')
        q = urllib.parse.parse_qs(body.decode())
        ts = self.server.owner
        if (q.get("grant_type") or [""])[0] != "password":
            return self._send(400, b'{"error":"unsupported_grant_type"}')
        user = (q.get("username") or [""])[0]
        pw = (q.get("password") or [""])[0]
        ok = user in ts.users and ts.users[user][0] == pw
        scopes = [s for v in q.get("scope", []) for s in v.split(" ")]
        self._answer("POST", user, ok, scopes, (q.get("service") or [""])[0], True)


# --- registry ----------------------------------------------------------------------

def _yaml(obj, indent=0):
    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        return json.dumps(str(v))
    lines = []
    for k, v in obj.items():
        pad = " " * indent
        if isinstance(v, dict):
            lines.append("%s%s:" % (pad, k))
            lines.extend(_yaml(v, indent + 2))
        elif isinstance(v, (list, tuple)):
            lines.append("%s%s:" % (pad, k))
            lines.extend("%s  - %s" % (pad, scalar(x)) for x in v)
        else:
            lines.append("%s%s: %s" % (pad, k, scalar(v)))
    return lines


class Registry:
    """A distribution/registry 2.8 on loopback.

    mode: 'plain' (HTTP, anonymous), 'tls' (HTTPS, anonymous), 'basic'
    (HTTPS + htpasswd), 'token' (HTTPS + bearer tokens from a TokenServer).
    dir: storage, config, certs and log go there (a temporary directory,
    removed on stop, when None).  ca: a CertAuthority or its directory
    (default dir/ca).  user/password: a pull-only identity (token mode; in
    basic mode any valid user can push); push_user/push_password: the
    harness's identity, allowed to push.  anonymous_pull: token mode grants
    pull without credentials (default True).

    Use as a context manager; the registry process gets PR_SET_PDEATHSIG
    (SIGKILL) so it dies with the thread that started it."""

    def __init__(self, mode="plain", dir=None, *, ca=None, user="msb", password="msb-test-password",
                 push_user="harness", push_password="harness-test-password", anonymous_pull=True,
                 user_can_push=False, listen="127.0.0.1", port=0, jwt_header="x5c", token_ttl=300,
                 service="msb-test-registry", issuer="msb-test-token-issuer"):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % (MODES,))
        self.mode = mode
        self._tmp = dir is None
        self.dir = os.path.abspath(dir or tempfile.mkdtemp(prefix="msb-registry-"))
        self.ca = _as_ca(ca) if ca is not None else (
            CertAuthority(os.path.join(self.dir, "ca")) if mode != "plain" else None)
        self.tls = mode != "plain"
        self.auth = mode in ("basic", "token")
        self.user, self.password = (user, password) if self.auth else (None, None)
        self.push_user, self.push_password = (push_user, push_password) if self.auth else (None, None)
        self.anonymous_pull = anonymous_pull if mode == "token" else (mode in ("plain", "tls"))
        self.user_can_push = user_can_push
        self.listen = listen
        self.port = port or None
        self._want_port = port
        self.jwt_header = jwt_header
        self.token_ttl = token_ttl
        self.service = service
        self.issuer = issuer
        self.storage = os.path.join(self.dir, "storage")
        self.config_path = os.path.join(self.dir, "config.yml")
        self.log_path = os.path.join(self.dir, "registry.log")
        self.token_server = None
        self.proc = None

    # addresses
    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def host(self):
        return _hostport(self.listen, self.port)

    @property
    def url(self):
        return "%s://%s" % (self.scheme, self.host)

    @property
    def cacert(self):
        return self.ca.cert if (self.tls and self.ca) else None

    @property
    def cert_dir(self):
        return self.ca.cert_dir if (self.tls and self.ca) else None

    def ref(self, repo, tag="latest"):
        """'127.0.0.1:PORT/repo:tag' (or @digest when tag starts with sha256:)."""
        return "%s/%s%s%s" % (self.host, repo, "@" if tag.startswith("sha256:") else ":", tag)

    def info(self):
        return {
            "mode": self.mode, "url": self.url, "host": self.host, "port": self.port,
            "scheme": self.scheme, "ca": self.cacert, "cert_dir": self.cert_dir,
            "user": self.user, "password": self.password,
            "push_user": self.push_user, "push_password": self.push_password,
            "anonymous_pull": self.anonymous_pull,
            "token_realm": self.token_server.realm if self.token_server else None,
            "service": self.service if self.mode == "token" else None,
            "storage": self.storage, "dir": self.dir, "log": self.log_path,
            "pid": self.proc.pid if self.proc else None,
        }

    # lifecycle
    def _config(self):
        cfg = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": self.storage},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                "secret": "msb-test-http-secret",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.tls:
            crt, key = self.ca.server()
            cfg["http"]["tls"] = {"certificate": crt, "key": key}
        if self.mode == "basic":
            cfg["auth"] = {"htpasswd": {"realm": "msb-test-registry",
                                        "path": os.path.join(self.dir, "htpasswd")}}
        if self.mode == "token":
            cfg["auth"] = {"token": {"realm": self.token_server.realm, "service": self.service,
                                     "issuer": self.issuer,
                                     "rootcertbundle": os.path.join(self.dir, "token-roots.pem")}}
        return "\n".join(_yaml(cfg)) + "\n"

    def _prepare_auth(self):
        if self.mode == "basic":
            lines = []
            for u, p in ((self.push_user, self.push_password), (self.user, self.password)):
                lines.append(_run(["htpasswd", "-Bbn", u, p]).stdout.decode().strip())
            _write_atomic(os.path.join(self.dir, "htpasswd"), "\n".join(lines) + "\n")
        if self.mode == "token":
            users = {self.push_user: (self.push_password, ("pull", "push", "delete", "*")),
                     self.user: (self.password, ("pull", "push") if self.user_can_push else ("pull",))}
            self.token_server = TokenServer(
                self.ca, service=self.service, issuer=self.issuer, users=users,
                anonymous=("pull",) if self.anonymous_pull else (), ttl=self.token_ttl,
                header=self.jwt_header, listen=self.listen).start()
            # The CA (for x5c chains) and the signing cert itself (for `kid`).
            bundle = ""
            for p in (self.ca.cert, self.token_server.signer_cert):
                with open(p) as f:
                    bundle += f.read()
            _write_atomic(os.path.join(self.dir, "token-roots.pem"), bundle)

    def _ready(self):
        ctx = None
        if self.tls:
            ctx = self.ca.client_context()
        cls = http.client.HTTPSConnection if self.tls else http.client.HTTPConnection
        kw = {"context": ctx} if self.tls else {}
        c = cls(self.listen, self.port, timeout=2, **kw)
        try:
            c.request("GET", "/v2/")
            return c.getresponse().status in (200, 401)
        except (OSError, http.client.HTTPException):
            return False
        finally:
            c.close()

    def start(self, timeout=20):
        os.makedirs(self.storage, exist_ok=True)
        self._prepare_auth()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "OTEL_"))}
        for attempt in range(5):
            self.port = self._want_port or free_port(self.listen)
            _write_atomic(self.config_path, self._config())
            with open(self.log_path, "ab") as f:
                f.write(b"--- start on port %d\n" % self.port)
            self.proc = spawn([REGISTRY_BIN, "serve", self.config_path], log_path=self.log_path, env=env)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if self._ready():
                    return self
                time.sleep(0.05)
            stop_process(self.proc)
            log = self.log_tail()
            if "address already in use" in log and not self._want_port:
                continue
            self.stop()
            raise HarnessError("registry (%s) did not start; log:\n%s" % (self.mode, log))
        self.stop()
        raise HarnessError("registry: no free port")

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        stop_process(self.proc)
        if self.token_server:
            self.token_server.stop()
        if self._tmp and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    # clients
    def client(self, user=None, password=None, *, push=False, anonymous=False):
        """A RegistryClient; push=True uses the harness's push identity."""
        if push:
            user, password = self.push_user, self.push_password
        elif user is None and not anonymous:
            user, password = self.user, self.password
        if anonymous:
            user = password = None
        return RegistryClient(self.url, ca=self.cacert, user=user, password=password)

    # storage tricks (filesystem driver layout)
    def blob_data_path(self, digest):
        return storage_blob_path(self.storage, digest)

    def inject_blob(self, repo, digest, data):
        """Store `data` under `digest` (whatever its real hash) and link it into
        `repo`, bypassing the API's digest check."""
        storage_inject_blob(self.storage, repo, digest, data)

    def tamper_blob(self, digest, data):
        """Overwrite the stored bytes of an existing blob (in every repo)."""
        p = self.blob_data_path(digest)
        if not os.path.exists(p):
            raise HarnessError("no stored blob " + digest)
        _write_atomic(p, data)


def storage_blob_path(storage, digest):
    """Where distribution's filesystem driver keeps a blob's bytes."""
    algo, hexd = digest.split(":", 1)
    return os.path.join(storage, "docker/registry/v2/blobs", algo, hexd[:2], hexd, "data")


def storage_inject_blob(storage, repo, digest, data):
    """Write `data` as blob `digest` (no hash check) into a registry's storage
    directory and link it into `repo` (the registry reads both per request)."""
    p = storage_blob_path(storage, digest)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    _write_atomic(p, data)
    algo, hexd = digest.split(":", 1)
    link = os.path.join(storage, "docker/registry/v2/repositories", repo, "_layers", algo, hexd, "link")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    _write_atomic(link, digest)


# --- a small distribution API client (also the pusher) ------------------------------

def parse_www_authenticate(value):
    """'Bearer realm="x",service="y"' -> ('bearer', {'realm': 'x', 'service': 'y'})."""
    scheme, _, rest = value.strip().partition(" ")
    params = dict((k.lower(), v) for k, v in re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # http.client.HTTPMessage (case-insensitive)
        self.body = body

    def json(self):
        return json.loads(self.body)


class RegistryClient:
    """Minimal distribution API client: Basic and Bearer challenge flow, blob
    upload (monolithic or chunked), manifest PUT/GET."""

    def __init__(self, url, *, ca=None, user=None, password=None, insecure=False):
        self.url = url.rstrip("/")
        u = urllib.parse.urlsplit(self.url)
        self.scheme, self.netloc = u.scheme, u.netloc
        self.user, self.password = user, password
        if u.scheme == "https":
            self.ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
            if insecure:
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE
        else:
            self.ctx = None
        self._auth = {}  # repo -> Authorization header value
        self.token_requests = 0

    def _conn(self, scheme, netloc):
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=60, context=self.ctx)
        return http.client.HTTPConnection(netloc, timeout=60)

    def _raw(self, method, url, body=None, headers=None):
        u = urllib.parse.urlsplit(url if "://" in url else self.url + url)
        c = self._conn(u.scheme, u.netloc)
        try:
            path = u.path + ("?" + u.query if u.query else "")
            h = dict(headers or {})
            if body is not None or method in ("PUT", "POST", "PATCH"):
                h["Content-Length"] = str(len(body or b""))
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.headers, data)
        finally:
            c.close()

    def _basic(self):
        return "Basic " + base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()

    def fetch_token(self, realm, service, scopes):
        q = [("service", service)] if service else []
        q += [("scope", s) for s in scopes if s]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(q)
        h = {"Authorization": self._basic()} if self.user is not None else {}
        self.token_requests += 1
        r = self._raw("GET", url, headers=h)
        if r.status != 200:
            raise HarnessError("token request failed: %d %s" % (r.status, r.body[:200]))
        j = r.json()
        return j.get("token") or j["access_token"]

    @staticmethod
    def _repo_of(path):
        m = re.match(r"^/v2/(.+)/(blobs|manifests|tags)/", urllib.parse.urlsplit(path).path)
        return m.group(1) if m else ""

    def request(self, method, url, body=None, headers=None, *, repo=None):
        """One API request with the auth challenge handled (one retry)."""
        repo = self._repo_of(url) if repo is None else repo
        h = dict(headers or {})
        if repo in self._auth:
            h["Authorization"] = self._auth[repo]
        r = self._raw(method, url, body, h)
        if r.status != 401 or not r.headers.get("WWW-Authenticate"):
            return r
        scheme, params = parse_www_authenticate(r.headers["WWW-Authenticate"])
        if scheme == "basic":
            if self.user is None:
                return r
            self._auth[repo] = self._basic()
        elif scheme == "bearer":
            self._auth[repo] = "Bearer " + self.fetch_token(
                params["realm"], params.get("service"), [params.get("scope", "")])
        else:
            return r
        h["Authorization"] = self._auth[repo]
        return self._raw(method, url, body, h)

    def _check(self, r, *ok):
        if r.status not in ok:
            raise HarnessError("registry answered %d: %s" % (r.status, r.body[:500].decode(errors="replace")))
        return r

    def ping(self):
        return self.request("GET", "/v2/", repo="").status

    def blob_exists(self, repo, digest):
        return self.request("HEAD", "/v2/%s/blobs/%s" % (repo, digest)).status == 200

    def push_blob(self, repo, digest, data, *, chunk_size=None):
        if self.blob_exists(repo, digest):
            return False
        r = self._check(self.request("POST", "/v2/%s/blobs/uploads/" % repo, b""), 202)
        loc = urllib.parse.urljoin(self.url + "/", r.headers["Location"])
        if chunk_size:
            for off in range(0, len(data), chunk_size):
                piece = data[off:off + chunk_size]
                r = self._check(self.request(
                    "PATCH", loc, piece, {"Content-Type": "application/octet-stream",
                                          "Content-Range": "%d-%d" % (off, off + len(piece) - 1)},
                    repo=repo), 202)
                loc = urllib.parse.urljoin(self.url + "/", r.headers["Location"])
            body = b""
        else:
            body = data
        loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(digest)
        self._check(self.request("PUT", loc, body, {"Content-Type": "application/octet-stream"},
                                 repo=repo), 201)
        return True

    def put_manifest(self, repo, ref, data, media_type):
        r = self._check(self.request("PUT", "/v2/%s/manifests/%s" % (repo, ref), data,
                                     {"Content-Type": media_type}), 201)
        return r.headers.get("Docker-Content-Digest") or sha256_digest(data)

    def get_manifest(self, repo, ref, accept=ACCEPT_ALL):
        r = self._check(self.request("GET", "/v2/%s/manifests/%s" % (repo, ref),
                                     headers={"Accept": accept}), 200)
        return r.headers.get("Content-Type"), r.body, r.headers.get("Docker-Content-Digest")

    def get_blob(self, repo, digest):
        r = self.request("GET", "/v2/%s/blobs/%s" % (repo, digest))
        if r.status in (301, 302, 303, 307, 308):
            r = self._raw("GET", urllib.parse.urljoin(self.url + "/", r.headers["Location"]))
        return self._check(r, 200).body


# --- OCI layouts -------------------------------------------------------------------

class Layout:
    """An OCI image layout directory (oci-layout, index.json, blobs/sha256)."""

    def __init__(self, path, create=True):
        self.path = os.path.abspath(path)
        if create:
            os.makedirs(os.path.join(self.path, "blobs", "sha256"), exist_ok=True)
            if not os.path.exists(os.path.join(self.path, "oci-layout")):
                _write_atomic(os.path.join(self.path, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}')
            if not os.path.exists(os.path.join(self.path, "index.json")):
                self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    def blob_path(self, digest):
        algo, hexd = digest.split(":", 1)
        return os.path.join(self.path, "blobs", algo, hexd)

    def add_blob(self, data, media_type=None, digest=None):
        digest = digest or sha256_digest(data)
        p = self.blob_path(digest)
        if not os.path.exists(p):
            _write_atomic(p, data)
        d = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if media_type is None:
            del d["mediaType"]
        return d

    def add_json(self, obj, media_type):
        return self.add_blob(canonical_json(obj), media_type)

    def read_blob(self, digest):
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    def index(self):
        with open(os.path.join(self.path, "index.json"), "rb") as f:
            return json.load(f)

    def _write_index(self, idx):
        _write_atomic(os.path.join(self.path, "index.json"), canonical_json(idx))

    def tag(self, desc, tag):
        idx = self.index()
        idx["manifests"] = [m for m in idx["manifests"]
                            if m.get("annotations", {}).get(REF_NAME) != tag]
        d = dict(desc)
        d["annotations"] = dict(d.get("annotations", {}), **{REF_NAME: tag})
        idx["manifests"].append(d)
        self._write_index(idx)

    def resolve(self, ref=None):
        ms = self.index()["manifests"]
        if ref is None:
            if len(ms) != 1:
                raise HarnessError("layout %s has %d refs; name one" % (self.path, len(ms)))
            return ms[0]
        for m in ms:
            if m.get("annotations", {}).get(REF_NAME) == ref:
                return m
        raise HarnessError("no ref %r in layout %s" % (ref, self.path))


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --- tar building ------------------------------------------------------------------

class Entry:
    """One tar member: kind is 'file', 'dir', 'symlink', 'hardlink', 'char',
    'block' or 'fifo'."""

    TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
             "hardlink": tarfile.LNKTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE,
             "fifo": tarfile.FIFOTYPE}

    def __init__(self, name, kind="file", *, data=b"", mode=None, uid=0, gid=0, link="",
                 major=0, minor=0, mtime=None):
        self.name, self.kind, self.data, self.link = name, kind, data, link
        self.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
        self.uid, self.gid, self.major, self.minor = uid, gid, major, minor
        self.mtime = EPOCH if mtime is None else mtime

    def tarinfo(self):
        ti = tarfile.TarInfo(self.name)
        ti.type = self.TYPES[self.kind]
        ti.mode = self.mode
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname = ti.gname = ""
        ti.mtime = self.mtime
        ti.linkname = self.link
        ti.devmajor, ti.devminor = self.major, self.minor
        ti.size = len(self.data) if self.kind == "file" else 0
        return ti


def make_tar(entries, *, sort=True):
    """Uncompressed tar (PAX format) of `entries` (sorted by path unless
    sort=False, so a parent comes before its children)."""
    if sort:
        entries = sorted(entries, key=lambda e: e.name.rstrip("/").split("/"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = e.tarinfo()
            tf.addfile(ti, io.BytesIO(e.data) if ti.size else None)
    return buf.getvalue()


def compress(data, compression="gzip", level=None):
    if compression in (None, "none"):
        return data
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6 if level is None else level, mtime=0)
    if compression == "zstd":
        return _run(["zstd", "-q", "-c", "-%d" % (3 if level is None else level), "--no-check"],
                    input=data).stdout
    raise ValueError("compression must be gzip, zstd or none")


def layer_media_type(compression, media):
    if media == "oci":
        return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER, None: OCI_LAYER}[compression]
    if media == "docker":
        if compression == "zstd":
            raise ValueError("Docker schema 2 has no zstd layer media type")
        return {"gzip": DOCKER_LAYER_GZIP, "none": DOCKER_LAYER, None: DOCKER_LAYER}[compression]
    raise ValueError("media must be oci or docker")


def host_arch():
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


def add_image(layout, layers, config, *, compression="gzip", media="oci", level=None,
              annotations=None, layer_annotations=None, diff_ids=None):
    """Write an image (layers: uncompressed tar bytes; config: the image config
    without rootfs) into `layout`; returns the manifest descriptor (with
    platform).  diff_ids overrides the computed ones (for broken images)."""
    cfg = dict(config)
    cfg.setdefault("created", CREATED)
    cfg.setdefault("os", "linux")
    cfg.setdefault("architecture", host_arch())
    cfg["rootfs"] = {"type": "layers",
                     "diff_ids": diff_ids or [sha256_digest(t) for t in layers]}
    cfg.setdefault("history", [{"created": CREATED, "created_by": "msb tests/registry layer %d" % i}
                               for i in range(len(layers))])
    lmt = layer_media_type(compression, media)
    ldescs = []
    for i, t in enumerate(layers):
        d = layout.add_blob(compress(t, compression, level), lmt)
        if layer_annotations and layer_annotations[i]:
            d["annotations"] = layer_annotations[i]
        ldescs.append(d)
    cdesc = layout.add_json(cfg, OCI_CONFIG if media == "oci" else DOCKER_CONFIG)
    mt = OCI_MANIFEST if media == "oci" else DOCKER_MANIFEST
    man = {"schemaVersion": 2, "mediaType": mt, "config": cdesc, "layers": ldescs}
    if annotations and media == "oci":
        man["annotations"] = annotations
    mdesc = layout.add_json(man, mt)
    plat = {"architecture": cfg["architecture"], "os": cfg["os"]}
    if cfg.get("variant"):
        plat["variant"] = cfg["variant"]
    mdesc["platform"] = plat
    return mdesc


def _strip_platform(desc):
    return {k: v for k, v in desc.items() if k != "platform"}


# --- test images -------------------------------------------------------------------

BUSYBOX_BIN = os.environ.get("MSB_BUSYBOX", "/bin/busybox")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1000:\n"


def _dirs_for(paths):
    out = set()
    for p in paths:
        parts = p.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.add("/".join(parts[:i]))
    return out


def busybox_layers():
    """(base tar, second tar) for the busybox image."""
    with open(BUSYBOX_BIN, "rb") as f:
        bb = f.read()
    applets = [a for a in _run([BUSYBOX_BIN, "--list-full"]).stdout.decode().split()
               if a and a != "bin/busybox"]
    base = [Entry("bin/busybox", data=bb, mode=0o755)]
    base += [Entry(a, "symlink", link="/bin/busybox", mode=0o777) for a in applets]
    files = {
        "etc/passwd": PASSWD, "etc/group": GROUP,
        "etc/hostname": b"msb-test\n",
        "etc/msb-test-release": b"msb test image: busybox\n",
        "etc/remove-me": b"deleted by layer 2 (whiteout)\n",
        "opt/opaque/a": b"hidden by layer 2 (opaque dir)\n",
        "opt/opaque/sub/b": b"hidden by layer 2 (opaque dir)\n",
        "opt/kept": b"kept\n",
    }
    base += [Entry(p, data=d) for p, d in files.items()]
    special = {"root": (0o700, 0, 0), "tmp": (0o1777, 0, 0), "work": (0o755, 1000, 1000),
               "home/app": (0o755, 1000, 1000)}
    dirs = _dirs_for([e.name for e in base]) | {"dev", "proc", "sys", "var", "usr/local/bin",
                                                "root", "tmp", "work", "home/app"}
    dirs |= _dirs_for([d + "/x" for d in dirs])
    for d in sorted(dirs):
        mode, uid, gid = special.get(d, (0o755, 0, 0))
        base.append(Entry(d, "dir", mode=mode, uid=uid, gid=gid))
    second = [
        Entry("etc", "dir"),
        Entry("etc/added", data=b"added by layer 2\n"),
        Entry("etc/.wh.remove-me"),
        Entry("opt", "dir"),
        Entry("opt/opaque", "dir"),
        Entry("opt/opaque/.wh..wh..opq"),
        Entry("opt/opaque/new", data=b"the only file in /opt/opaque\n"),
        Entry("work", "dir", uid=1000, gid=1000),
        Entry("work/hello.txt", data=b"hello from layer 2\n", uid=1000, gid=1000),
    ]
    return make_tar(base), make_tar(second)


BUSYBOX_CONFIG = {
    "config": {
        "User": "app",
        "Env": [PATH_ENV, "MSB_TEST=1"],
        "Cmd": ["sh"],
        "WorkingDir": "/work",
        "ExposedPorts": {"8080/tcp": {}},
        "Labels": {"org.opencontainers.image.title": "msb-test-busybox"},
    },
}


def build_busybox(layout, *, compression="gzip", media="oci", diff_ids=None, **_):
    l1, l2 = busybox_layers()
    return add_image(layout, [l1, l2], BUSYBOX_CONFIG, compression=compression, media=media,
                     diff_ids=diff_ids)


def python_tree(build=False):
    """Path of scripts/build-rootfs's python tree, or None if not built (and
    build is False)."""
    script = os.path.join(REPO_ROOT, "scripts", "build-rootfs")
    p = _run([script, "--print-path", "python"], check=False)
    if p.returncode == 0:
        return p.stdout.decode().strip()
    if not build:
        return None
    return _run([script, "python"]).stdout.decode().strip()


def tar_tree(root, include, extra=()):
    """Deterministic tar of the tree at root: paths (relative) for which
    include(rel) is true, sorted, mtimes fixed, owners numeric."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def norm(ti):
            ti.mtime = EPOCH
            ti.uname = ti.gname = ""
            return ti
        rels = []
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for n in dns + fns:
                rels.append(os.path.relpath(os.path.join(dp, n), root))
        for rel in sorted(rels, key=lambda r: r.split("/")):
            if include(rel):
                full = os.path.join(root, rel)
                ti = tf.gettarinfo(full, rel)
                if ti is None:  # socket
                    continue
                norm(ti)
                if ti.isreg():
                    with open(full, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
        for e in extra:
            ti = e.tarinfo()
            tf.addfile(ti, io.BytesIO(e.data) if ti.size else None)
    return buf.getvalue()


def build_python(layout, *, compression="gzip", media="oci", build_tree=False, level=None, **_):
    root = python_tree(build_tree)
    if root is None:
        raise HarnessError("python tree not built (scripts/build-rootfs python)")

    def in_stdlib(rel):
        return re.match(r"^usr/lib/python3[^/]*(/|$)", rel) is not None
    l1 = tar_tree(root, lambda r: not in_stdlib(r))
    l2 = tar_tree(root, in_stdlib, extra=[Entry("work", "dir", uid=1000, gid=1000)])
    cfg = {"config": {"User": "app", "WorkingDir": "/work", "Cmd": ["python3"],
                      "Env": [PATH_ENV, "MSB_TEST=1", "LANG=C.UTF-8"],
                      "Labels": {"org.opencontainers.image.title": "msb-test-python"}}}
    return add_image(layout, [l1, l2], cfg, compression=compression, media=media, level=level)


def build_multiarch(layout, *, compression="gzip", media="oci", **_):
    """Index: host arch (busybox image), the other of amd64/arm64 (a tiny fake
    image; arm64 gets variant v8) and an unknown/unknown attestation entry."""
    host = host_arch()
    real = build_busybox(layout, compression=compression, media=media)
    other = "arm64" if host != "arm64" else "amd64"
    fake_cfg = {"architecture": other, "config": {"Cmd": ["/hello"], "Env": [PATH_ENV]}}
    if other == "arm64":
        fake_cfg["variant"] = "v8"
    fake = add_image(layout, [make_tar([
        Entry("hello", data=b"#!/bin/sh\necho fake %s image\n" % other.encode(), mode=0o755),
        Entry("etc", "dir"), Entry("etc/msb-test-release", data=b"msb test image: fake %s\n" % other.encode())])],
        fake_cfg, compression=compression, media=media)
    # Attestation manifest, shaped like BuildKit's.
    stmt = canonical_json({"_type": "https://in-toto.io/Statement/v0.1",
                           "predicateType": "https://spdx.dev/Document",
                           "subject": [{"name": "msb-test", "digest": {"sha256": real["digest"][7:]}}],
                           "predicate": {"spdxVersion": "SPDX-2.3"}})
    sdesc = layout.add_blob(stmt, "application/vnd.in-toto+json")
    sdesc["annotations"] = {"in-toto.io/predicate-type": "https://spdx.dev/Document"}
    acfg = layout.add_json({"architecture": "unknown", "os": "unknown", "config": {},
                            "rootfs": {"type": "layers", "diff_ids": [sdesc["digest"]]}}, OCI_CONFIG)
    att = layout.add_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": acfg,
                           "layers": [sdesc]}, OCI_MANIFEST)
    att["platform"] = {"architecture": "unknown", "os": "unknown"}
    att["annotations"] = {"vnd.docker.reference.type": "attestation-manifest",
                          "vnd.docker.reference.digest": real["digest"]}
    imt = OCI_INDEX if media == "oci" else DOCKER_LIST
    idx = {"schemaVersion": 2, "mediaType": imt, "manifests": [real, fake, att]}
    return layout.add_json(idx, imt)


def build_bad_diffid(layout, *, compression="gzip", media="oci", **_):
    l1, l2 = busybox_layers()
    wrong = [sha256_digest(l1), sha256_digest(b"not the layer's diff id")]
    return add_image(layout, [l1, l2], BUSYBOX_CONFIG, compression=compression, media=media,
                     diff_ids=wrong)


def build_bad_layer_digest(layout, *, compression="gzip", media="oci", **_):
    """busybox whose second layer's blob holds *other* valid bytes of the same
    size (a well-formed compressed tar with different content): only checking
    the digest catches it.  The claimed layer is unique to this image (so
    injecting the wrong bytes under its digest spoils no other image in the
    same registry).  Pushing it needs a Registry (push_layout injects the
    blob into its storage)."""
    def second(text):
        return make_tar([
            Entry("etc", "dir"),
            Entry("etc/added", data=text),
            Entry("etc/.wh.remove-me"),
            Entry("opt", "dir"),
            Entry("opt/opaque", "dir"),
            Entry("opt/opaque/.wh..wh..opq"),
            Entry("opt/opaque/new", data=b"the only file in /opt/opaque\n"),
            Entry("work", "dir", uid=1000, gid=1000),
            Entry("work/hello.txt", data=b"hello from layer 2\n", uid=1000, gid=1000),
        ])
    base_text = b"added by layer 2 of the bad-layer-digest image\n"
    letters = [k for k, c in enumerate(base_text) if 0x61 <= c <= 0x7A]
    seen = {}
    for i in range(1 << min(len(letters), 16)):
        # Variants differ only in the letter case of etc/added; take the
        # first two whose compressed sizes are equal: one is the layer the
        # manifest and config name, the other the bytes actually stored.
        text = bytearray(base_text)
        for bit, k in enumerate(letters[:16]):
            if (i >> bit) & 1:
                text[k] ^= 0x20
        tar = second(bytes(text))
        blob = compress(tar, compression)
        if len(blob) in seen:
            good_tar, evil = seen[len(blob)], blob
            break
        seen[len(blob)] = tar
    else:
        raise HarnessError("could not make a same-size replacement layer")
    l1, _ = busybox_layers()
    desc = add_image(layout, [l1, good_tar], BUSYBOX_CONFIG, compression=compression, media=media)
    man = json.loads(layout.read_blob(desc["digest"]))
    _write_atomic(layout.blob_path(man["layers"][1]["digest"]), evil)
    return desc


# Malicious layer tars -----------------------------------------------------------

def _tar_header(name, *, typeflag=b"0", size=0, mode=0o644, linkname="", uid=0, gid=0,
                mtime=EPOCH, gnu=False, extra=None):
    """A raw 512-byte tar header (ustar, or old GNU when gnu=True).  Numeric
    fields too large for octal use GNU base-256.  extra: {offset: bytes}."""
    def num(v, n):
        if v < 8 ** (n - 1):
            return ("%0*o" % (n - 1, v)).encode() + b"\0"
        return bytes([0x80]) + v.to_bytes(n - 1, "big")
    h = bytearray(512)

    def put(off, b):
        h[off:off + len(b)] = b
    put(0, name.encode()[:100])
    put(100, num(mode, 8))
    put(108, num(uid, 8))
    put(116, num(gid, 8))
    put(124, num(size, 12))
    put(136, num(mtime, 12))
    put(156, typeflag)
    put(157, linkname.encode()[:100])
    put(257, b"ustar  \0" if gnu else b"ustar\x0000")
    for off, b in (extra or {}).items():
        put(off, b)
    put(148, b"        ")
    put(148, ("%06o" % sum(h)).encode() + b"\0 ")
    return bytes(h)


def _pad(data):
    return data + b"\0" * (-len(data) % 512)


TIB = 1 << 40


def sparse_gnu_tar(name="sparse-gnu", realsize=TIB, chunk=b"end of a 1 TiB sparse file\n"):
    """Old-GNU sparse member ('S'): one data chunk at the very end."""
    data = _pad(chunk)
    off = realsize - len(data)

    def num12(v):
        return ("%011o" % v).encode() + b"\0" if v < 8 ** 11 else bytes([0x80]) + v.to_bytes(11, "big")
    extra = {386: num12(off) + num12(len(data)),  # sparse map entry 0
             482: b"\0",                           # isextended
             483: num12(realsize)}                 # realsize
    hdr = _tar_header(name, typeflag=b"S", size=len(data), gnu=True, extra=extra)
    return hdr + data + b"\0" * 1024


def sparse_pax_tar(name="sparse-pax", realsize=TIB, chunk=b"end of a 1 TiB sparse file\n"):
    """PAX GNU.sparse 1.0 member: map block then one data chunk at the end."""
    data = _pad(chunk)
    off = realsize - len(data)
    body = _pad(b"1\n%d\n%d\n" % (off, len(data))) + data
    ti = tarfile.TarInfo("GNUSparseFile.0/" + name)
    ti.size, ti.mtime, ti.mode = len(body), EPOCH, 0o644
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                      "GNU.sparse.name": name, "GNU.sparse.realsize": str(realsize)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


def tarbomb_tar(count=200000, dir="bomb"):
    """`count` empty files in one directory (raw headers: fast)."""
    out = [_tar_header(dir + "/", typeflag=b"5", mode=0o755)]
    hdr = _tar_header  # local for speed
    out += [hdr("%s/f%07d" % (dir, i)) for i in range(count)]
    out.append(b"\0" * 1024)
    return b"".join(out)


def _evil(entries):
    return make_tar(entries, sort=False)


EVIL_TARS = {
    "dotdot": lambda **kw: _evil([
        Entry("a", "dir"),
        Entry("../msb-evil-dotdot", data=b"escaped with ..\n"),
        Entry("a/../../msb-evil-dotdot2", data=b"escaped with a/../..\n")]),
    "absolute": lambda **kw: _evil([
        Entry("/msb-evil-absolute", data=b"absolute path\n"),
        Entry("/etc/msb-evil-absolute", data=b"absolute path\n")]),
    "symlink-abs": lambda **kw: _evil([
        Entry("evil", "symlink", link="/", mode=0o777),
        Entry("evil/etc/msb-evil-symlink", data=b"written through evil -> /\n")]),
    "symlink-rel": lambda **kw: _evil([
        Entry("evil", "symlink", link="../../..", mode=0o777),
        Entry("evil/msb-evil-symlink-rel", data=b"written through evil -> ../../..\n")]),
    "hardlink-abs": lambda **kw: _evil([
        Entry("hl", "hardlink", link="/etc/passwd"),
        Entry("hl", data=b"overwrites the hard link's target?\n")]),
    "hardlink-rel": lambda **kw: _evil([
        Entry("hl", "hardlink", link="../x"),
        Entry("hl", data=b"overwrites the hard link's target?\n")]),
    "chardev": lambda **kw: _evil([
        Entry("dev", "dir"),
        Entry("dev/msb-evil-mem", "char", major=1, minor=1, mode=0o666),
        Entry("dev/msb-evil-sda", "block", major=8, minor=0, mode=0o666)]),
    "tarbomb": lambda count=200000, **kw: tarbomb_tar(count),
    "sparse-gnu": lambda **kw: sparse_gnu_tar(),
    "sparse-pax": lambda **kw: sparse_pax_tar(),
}


def evil_tar(name, **kw):
    """Raw (uncompressed) tar bytes of malicious layer `name` (EVIL_TARS)."""
    return EVIL_TARS[name](**kw)


def build_evil(layout, name, *, compression="gzip", media="oci", count=200000, **_):
    tar = evil_tar(name, count=count)
    cfg = {"config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
           "history": [{"created": CREATED, "created_by": "msb tests/registry evil-" + name}]}
    return add_image(layout, [tar], cfg, compression=compression, media=media)


KINDS = ["busybox", "python", "multiarch", "bad-diffid", "bad-layer-digest"] + \
        ["evil-" + n for n in EVIL_TARS]


def build_image(kind, out_dir, *, tag="latest", compression="gzip", media="oci", **kw):
    """Build test image `kind` into OCI layout out_dir, tagged `tag` in
    index.json; returns the top descriptor (manifest or index)."""
    layout = Layout(out_dir)
    builders = {"busybox": build_busybox, "python": build_python, "multiarch": build_multiarch,
                "bad-diffid": build_bad_diffid, "bad-layer-digest": build_bad_layer_digest}
    if kind in builders:
        desc = builders[kind](layout, compression=compression, media=media, **kw)
    elif kind.startswith("evil-") and kind[5:] in EVIL_TARS:
        desc = build_evil(layout, kind[5:], compression=compression, media=media, **kw)
    else:
        raise ValueError("unknown kind %r (kinds: %s)" % (kind, ", ".join(KINDS)))
    desc = _strip_platform(desc)
    layout.tag(desc, tag)
    return desc


# --- pushing -----------------------------------------------------------------------

def _client_for(registry, user=None, password=None, ca=None):
    if isinstance(registry, Registry):
        if user is None and registry.auth:
            user, password = registry.push_user, registry.push_password
        return RegistryClient(registry.url, ca=ca or registry.cacert, user=user, password=password)
    return RegistryClient(registry, ca=ca, user=user, password=password)


def push_layout(layout_dir, registry, repo, tag, *, ref=None, tool="python", chunk_size=None,
                user=None, password=None, ca=None, storage=None):
    """Push the image (or index, with all its children) that `ref` (default:
    `tag` if present, else the layout's only entry) names in the OCI layout
    to registry (a Registry, or a URL with ca/user/password) as repo:tag.
    tool: 'python' (this module's pusher; chunk_size>0 = chunked uploads;
    blobs whose content doesn't match their digest are written straight into
    the registry's storage directory: a Registry's, or `storage`) or
    'skopeo' (skopeo copy --all --preserve-digests; OCI media types only).
    Returns the manifest digest."""
    layout = Layout(layout_dir, create=False)
    if ref is None:
        try:
            desc = layout.resolve(tag)
            ref = tag
        except HarnessError:
            desc = layout.resolve(None)
            ref = desc.get("annotations", {}).get(REF_NAME)
    else:
        desc = layout.resolve(ref)
    if tool == "skopeo":
        return skopeo_push(layout.path, ref, registry, repo, tag, user=user, password=password, ca=ca)
    client = _client_for(registry, user, password, ca)

    def push_blob(d):
        data = layout.read_blob(d["digest"])
        if sha256_digest(data) != d["digest"]:
            store = registry.storage if isinstance(registry, Registry) else storage
            if store is None:
                raise HarnessError("blob %s does not match its digest; pushing it needs the "
                                   "registry's storage directory" % d["digest"])
            storage_inject_blob(store, repo, d["digest"], data)
            return
        client.push_blob(repo, d["digest"], data, chunk_size=chunk_size)

    def push(d, ref):
        data = layout.read_blob(d["digest"])
        man = json.loads(data)
        mt = d.get("mediaType") or man.get("mediaType")
        if mt in INDEX_TYPES:
            for child in man["manifests"]:
                push(child, child["digest"])
        else:
            push_blob(man["config"])
            for l in man.get("layers", []):
                if not l.get("urls"):
                    push_blob(l)
        return client.put_manifest(repo, ref, data, mt)

    return push(desc, tag)


def _skopeo_env(tmp):
    env = dict(os.environ)
    env["REGISTRY_AUTH_FILE"] = os.path.join(tmp, "auth.json")
    return env


def skopeo(args, *, check=True):
    """Run skopeo with an accept-anything policy and an empty auth file."""
    with tempfile.TemporaryDirectory(prefix="msb-skopeo-") as tmp:
        pol = os.path.join(tmp, "policy.json")
        _write_atomic(pol, '{"default":[{"type":"insecureAcceptAnything"}]}')
        return _run(["skopeo", "--policy", pol] + list(args), env=_skopeo_env(tmp), check=check)


def _cert_dir_for(ca):
    """A directory skopeo can use as --cert-dir for CA `ca` (a directory, or
    a certificate file: copied alone into a cached directory, since a *.key
    without its *.cert there would be taken for a broken client cert)."""
    if os.path.isdir(ca):
        return ca
    with open(ca, "rb") as f:
        data = f.read()
    d = os.path.join(tempfile.gettempdir(), "msb-certdir-" + hashlib.sha256(data).hexdigest()[:16])
    if not os.path.exists(os.path.join(d, "ca.crt")):
        os.makedirs(d, exist_ok=True)
        _write_atomic(os.path.join(d, "ca.crt"), data)
    return d


def skopeo_tls_args(registry=None, prefix="", *, ca=None, user=None, password=None, url=None):
    """skopeo flags to reach `registry` ("src-"/"dest-" prefix, or "" for inspect)."""
    if isinstance(registry, Registry):
        url = registry.url
        ca = ca or registry.cert_dir
        if user is None and registry.auth and prefix != "src-":
            user, password = registry.push_user, registry.push_password
    args = []
    if url and url.startswith("http://"):
        args.append("--%stls-verify=false" % prefix)
    elif ca:
        args.append("--%scert-dir=%s" % (prefix, _cert_dir_for(ca)))
    if user is not None:
        args.append("--%screds=%s:%s" % (prefix, user, password))
    else:
        args.append("--%sno-creds" % prefix)
    return args


def skopeo_push(layout_dir, ref, registry, repo, tag, *, user=None, password=None, ca=None):
    top = Layout(layout_dir, create=False).resolve(ref)
    if top.get("mediaType") not in (OCI_MANIFEST, OCI_INDEX):
        # containers/image's oci: transport only looks at OCI-typed index.json entries.
        raise HarnessError("skopeo cannot push %s from an OCI layout; use tool='python'" % top.get("mediaType"))
    url = registry.url if isinstance(registry, Registry) else registry
    host = urllib.parse.urlsplit(url).netloc
    with tempfile.TemporaryDirectory(prefix="msb-push-") as tmp:
        df = os.path.join(tmp, "digest")
        skopeo(["copy", "--quiet", "--all", "--preserve-digests", "--digestfile", df] +
               skopeo_tls_args(registry, "dest-", ca=ca, user=user, password=password, url=url) +
               ["oci:%s%s" % (layout_dir, ":" + ref if ref else ""), "docker://%s/%s:%s" % (host, repo, tag)])
        with open(df) as f:
            return f.read().strip()


def build_and_push(kind, registry, repo, tag="latest", *, workdir=None, tool="python",
                   chunk_size=None, user=None, password=None, ca=None, storage=None, **kw):
    """build_image(kind) into a temporary layout and push_layout it; returns
    the manifest digest."""
    tmp = tempfile.mkdtemp(prefix="msb-image-", dir=workdir)
    try:
        build_image(kind, tmp, tag=tag, **kw)
        return push_layout(tmp, registry, repo, tag, tool=tool, chunk_size=chunk_size,
                           user=user, password=password, ca=ca, storage=storage)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- fault proxy -------------------------------------------------------------------

class Rule:
    """One fault: applies to requests whose method matches (None = any) and
    whose path (no query) matches the regex, after `skip` matching requests
    pass untouched, at most `times` times (None = always).  hits: how often it
    fired."""

    ACTIONS = ("truncate", "corrupt", "close", "status", "redirect", "delay")

    def __init__(self, action, *, path=BLOB_PATH, method="GET", times=None, skip=0, nbytes=0,
                 offsets=None, status=500, headers=(), location=None, host=None, seconds=0.0,
                 reset=False, body=None):
        if action not in self.ACTIONS:
            raise ValueError("action must be one of %s" % (self.ACTIONS,))
        self.action, self.path, self.method = action, re.compile(path), method
        self.times, self.skip = times, skip
        self.nbytes, self.offsets, self.status = nbytes, offsets, status
        self.headers, self.location, self.host = list(headers), location, host
        self.seconds, self.reset, self.body = seconds, reset, body
        self.seen = 0
        self.hits = 0

    def matches(self, method, path):
        return (self.method is None or self.method == method) and self.path.search(path) is not None


class FaultProxy:
    """HTTP(S) reverse proxy on loopback in front of `upstream_url`.

    ca: CertAuthority/dir to verify an https upstream and, with tls=True, to
    serve HTTPS itself (cert for 127.0.0.1/::1/localhost).  Rules (add_rule or
    the helpers) inject faults; the first rule that matches a request and
    still has firings left applies.  counts: {(method, path): n} of all
    requests seen; log: [(method, path, status, has_authorization)]."""

    def __init__(self, upstream_url, *, ca=None, tls=False, listen="127.0.0.1", port=0):
        self.upstream = upstream_url.rstrip("/")
        u = urllib.parse.urlsplit(self.upstream)
        self.up_scheme, self.up_netloc = u.scheme, u.netloc
        self.ca = _as_ca(ca)
        self.tls = tls
        self.listen, self._want_port = listen, port
        self.port = None
        self.rules = []
        self.counts = {}
        self.log = []
        self._redirects = {}
        self._lock = threading.Lock()
        self._srv = None
        if u.scheme == "https":
            self._up_ctx = self.ca.client_context() if self.ca else ssl.create_default_context()
        else:
            self._up_ctx = None

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def host(self):
        return _hostport(self.listen, self.port)

    @property
    def url(self):
        return "%s://%s" % (self.scheme, self.host)

    def start(self):
        ctx = self.ca.server_context() if self.tls else None
        self._srv, _ = _serve(_ProxyHandler, self, self.listen, self._want_port, ctx)
        self.port = self._srv.server_address[1]
        return self

    def stop(self):
        _shutdown(self._srv)
        self._srv = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    # rules
    def add_rule(self, action, **kw):
        r = Rule(action, **kw)
        with self._lock:
            self.rules.append(r)
        return r

    def clear(self):
        """Drop all rules, counts and the log."""
        with self._lock:
            self.rules.clear()
            self.counts.clear()
            self.log.clear()

    def truncate(self, nbytes, **kw):
        """Answer with only the first nbytes of the body and Content-Length:
        nbytes (a clean, complete-looking short response)."""
        return self.add_rule("truncate", nbytes=nbytes, **kw)

    def corrupt(self, offsets=None, **kw):
        """Flip (xor 0xff) the body bytes at offsets (default: the middle one)."""
        return self.add_rule("corrupt", offsets=offsets, **kw)

    def close_after(self, nbytes, reset=False, **kw):
        """Send the real headers (full Content-Length), nbytes of body, then
        close the connection (FIN; RST with reset=True)."""
        return self.add_rule("close", nbytes=nbytes, reset=reset, **kw)

    def fail(self, times, status=500, **kw):
        """Answer `status` without asking upstream, for the first `times`
        matching requests."""
        return self.add_rule("status", times=times, status=status, **kw)

    def redirect(self, status=307, location=None, host=None, **kw):
        """Answer `status` with Location: location, or by default a one-use
        URL /_redirect/<id>/<digest> on this proxy (host replaced by `host`,
        e.g. 'localhost', to make it another origin) that serves the upstream
        response without needing the client's Authorization (like a signed
        URL: the proxy stored the original request's)."""
        return self.add_rule("redirect", status=status, location=location, host=host, **kw)

    def delay(self, seconds, **kw):
        """Sleep before forwarding."""
        return self.add_rule("delay", seconds=seconds, **kw)

    def count(self, path, method="GET"):
        """How many requests for exactly `path` (method None = any)."""
        with self._lock:
            return sum(n for (m, p), n in self.counts.items()
                       if p == path and (method is None or m == method))

    def count_matching(self, regex, method="GET"):
        rx = re.compile(regex)
        with self._lock:
            return sum(n for (m, p), n in self.counts.items()
                       if rx.search(p) and (method is None or m == method))

    def _take_rule(self, method, path):
        with self._lock:
            self.counts[(method, path)] = self.counts.get((method, path), 0) + 1
            for r in self.rules:
                if not r.matches(method, path):
                    continue
                r.seen += 1
                if r.seen <= r.skip:
                    continue
                if r.times is not None and r.hits >= r.times:
                    continue
                r.hits += 1
                return r
        return None

    def _record(self, *entry):
        with self._lock:
            self.log.append(entry)

    def _up_conn(self):
        if self.up_scheme == "https":
            return http.client.HTTPSConnection(self.up_netloc, timeout=60, context=self._up_ctx)
        return http.client.HTTPConnection(self.up_netloc, timeout=60)


HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length"}


class _ProxyHandler(_Handler):
    def _handle(self):
        px = self.server.owner
        method = self.command
        path = urllib.parse.urlsplit(self.path).path
        body = self._read_body()
        rule = px._take_rule(method, path)
        auth = self.headers.get("Authorization")
        if rule and rule.action == "delay":
            time.sleep(rule.seconds)
        if rule and rule.action == "status":
            px._record(method, path, rule.status, auth is not None)
            b = rule.body if rule.body is not None else json.dumps({"errors": [{
                "code": "UNKNOWN", "message": "msb fault proxy: injected %d" % rule.status}]}).encode()
            return self._send(rule.status, b, rule.headers)
        if rule and rule.action == "redirect":
            loc = rule.location
            if loc is None:
                rid = secrets.token_hex(8)
                with px._lock:
                    px._redirects[rid] = (self.path, auth)
                host = self.headers.get("Host") or px.host
                if rule.host:
                    host = "%s:%d" % (rule.host, px.port)
                loc = "%s://%s/_redirect/%s/%s" % (px.scheme, host, rid, path.rsplit("/", 1)[-1])
            px._record(method, path, rule.status, auth is not None)
            return self._send(rule.status, b"", [("Location", loc)] + rule.headers)

        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        up_path = self.path
        if path.startswith("/_redirect/"):
            rid = path.split("/")[2]
            with px._lock:
                target = px._redirects.get(rid)
            if target is None:
                px._record(method, path, 404, auth is not None)
                return self._send(404, b'{"errors":[{"code":"NOT_FOUND","message":"no such redirect"}]}')
            up_path, stored_auth = target
            headers = [(k, v) for k, v in headers if k.lower() not in ("authorization", "host")]
            headers.append(("Host", px.up_netloc))
            if stored_auth:
                headers.append(("Authorization", stored_auth))
        if not any(k.lower() == "host" for k, _ in headers):
            headers.append(("Host", px.host))
        headers.append(("X-Forwarded-Proto", px.scheme))
        c = px._up_conn()
        try:
            c.putrequest(method, up_path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                c.putheader(k, v)
            if body or method in ("POST", "PUT", "PATCH"):
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body if body else None)
            r = c.getresponse()
            self._relay(px, rule, method, path, r, auth)
        finally:
            c.close()

    def _relay(self, px, rule, method, path, r, auth):
        px._record(method, path, r.status, auth is not None)
        out_headers = []
        for k, v in r.getheaders():
            if k.lower() in HOP_BY_HOP:
                continue
            if k.lower() == "location" and v.startswith(px.upstream):
                v = px.url + v[len(px.upstream):]
            out_headers.append((k, v))
        length = r.getheader("Content-Length")
        act = rule.action if rule else None
        if method == "HEAD" or r.status in (204, 304):
            self.send_response(r.status)
            for k, v in out_headers:
                self.send_header(k, v)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            return
        if act in ("truncate", "corrupt", "close") or length is None:
            data = r.read()
            declared = len(data)
            if act == "truncate":
                data = data[:rule.nbytes]
                declared = len(data)
            elif act == "corrupt" and data:
                b = bytearray(data)
                for off in (rule.offsets if rule.offsets is not None else [len(b) // 2]):
                    if 0 <= off < len(b):
                        b[off] ^= 0xFF
                data = bytes(b)
            elif act == "close":
                data = data[:rule.nbytes]
            self.send_response(r.status)
            for k, v in out_headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(data)
            if act == "close":
                self.wfile.flush()
                self._abort(rule.reset)
            return
        self.send_response(r.status)
        for k, v in out_headers:
            self.send_header(k, v)
        self.send_header("Content-Length", length)
        self.end_headers()
        while True:
            chunk = r.read(65536)
            if not chunk:
                break
            self.wfile.write(chunk)

    def _abort(self, reset):
        self.close_connection = True
        s = self.connection
        try:
            if reset:
                import struct
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self):
        try:
            self._handle()
        except (ConnectionError, BrokenPipeError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # upstream unreachable etc.
            try:
                self._send(502, json.dumps({"errors": [{"code": "UNKNOWN",
                                                        "message": "fault proxy: %s" % e}]}).encode())
            except OSError:
                pass
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


# --- CLI ---------------------------------------------------------------------------

def _wait_forever(cleanup):
    def bye(*_):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)
    signal.signal(signal.SIGHUP, bye)
    try:
        while True:
            signal.pause()
    finally:
        cleanup()


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="registry.py", description="msb local OCI registry harness")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("up", help="start a registry; print a JSON line; run until killed")
    p.add_argument("mode", choices=MODES)
    p.add_argument("dir")
    p.add_argument("--no-anonymous-pull", action="store_true")
    p.add_argument("--user-can-push", action="store_true")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--ca", help="CA directory (default DIR/ca)")
    p.add_argument("--jwt-header", default="x5c", choices=("x5c", "kid", "both"))

    def image_opts(p):
        p.add_argument("--compression", default="gzip", choices=("gzip", "zstd", "none"))
        p.add_argument("--media", default="oci", choices=("oci", "docker"))
        p.add_argument("--count", type=int, default=200000, help="files in evil-tarbomb")
        p.add_argument("--build-tree", action="store_true", help="python: build the tree if needed")

    def target_opts(p):
        p.add_argument("url")
        p.add_argument("repo")
        p.add_argument("tag")
        p.add_argument("--ca", help="CA certificate file")
        p.add_argument("--user")
        p.add_argument("--password")
        p.add_argument("--chunk-size", type=int)
        p.add_argument("--skopeo", action="store_true")
        p.add_argument("--storage", help="the registry's storage dir (for bad-layer-digest)")

    p = sub.add_parser("build-image", help="build a test image into an OCI layout")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("out")
    p.add_argument("--tag", default="latest")
    image_opts(p)

    p = sub.add_parser("push", help="push an OCI layout's image")
    p.add_argument("layout")
    target_opts(p)
    p.add_argument("--ref")

    p = sub.add_parser("build-and-push", help="build a test image and push it")
    p.add_argument("kind", choices=KINDS)
    target_opts(p)
    image_opts(p)

    p = sub.add_parser("evil-tar", help="write a malicious layer tar")
    p.add_argument("name", choices=sorted(EVIL_TARS))
    p.add_argument("out")
    p.add_argument("--count", type=int, default=200000)

    p = sub.add_parser("proxy", help="run a FaultProxy; print a JSON line")
    p.add_argument("upstream")
    p.add_argument("--ca", help="CA directory")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rule", action="append", default=[],
                   help='JSON: {"action": "status", "times": 2, "status": 500, "path": "..."}')

    p = sub.add_parser("ca", help="make (or reuse) a CA + server + token-signer certs")
    p.add_argument("dir")

    sub.add_parser("kinds", help="list image kinds")
    a = ap.parse_args(argv)

    if a.cmd == "up":
        reg = Registry(a.mode, a.dir, ca=a.ca, anonymous_pull=not a.no_anonymous_pull,
                       user_can_push=a.user_can_push, port=a.port, listen=a.listen,
                       jwt_header=a.jwt_header)
        reg.start()
        print(json.dumps(reg.info()), flush=True)
        _wait_forever(reg.stop)
    elif a.cmd == "build-image":
        d = build_image(a.kind, a.out, tag=a.tag, compression=a.compression, media=a.media,
                        count=a.count, build_tree=a.build_tree)
        print(json.dumps(d))
    elif a.cmd in ("push", "build-and-push"):
        target = a.url
        tool = "skopeo" if a.skopeo else "python"
        if a.cmd == "push":
            dg = push_layout(a.layout, target, a.repo, a.tag, ref=a.ref, tool=tool,
                             chunk_size=a.chunk_size, user=a.user, password=a.password, ca=a.ca,
                             storage=a.storage)
        else:
            dg = build_and_push(a.kind, target, a.repo, a.tag, tool=tool, chunk_size=a.chunk_size,
                                user=a.user, password=a.password, ca=a.ca, storage=a.storage,
                                compression=a.compression, media=a.media, count=a.count,
                                build_tree=a.build_tree)
        print(dg)
    elif a.cmd == "evil-tar":
        with open(a.out, "wb") as f:
            f.write(evil_tar(a.name, count=a.count))
    elif a.cmd == "proxy":
        px = FaultProxy(a.upstream, ca=a.ca, tls=a.tls, port=a.port)
        for r in a.rule:
            kw = json.loads(r)
            px.add_rule(kw.pop("action"), **kw)
        px.start()
        print(json.dumps({"url": px.url, "host": px.host, "port": px.port}), flush=True)
        _wait_forever(px.stop)
    elif a.cmd == "ca":
        ca = CertAuthority(a.dir)
        crt, key = ca.server()
        tcrt, tkey = ca.token_signer()
        print(json.dumps({"ca": ca.cert, "ca_key": ca.key, "cert_dir": ca.cert_dir,
                          "server_cert": crt, "server_key": key,
                          "token_cert": tcrt, "token_key": tkey,
                          "token_kid": libtrust_key_id(tcrt)}))
    elif a.cmd == "kinds":
        print("\n".join(KINDS))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (HarnessError, ValueError) as e:
        sys.stderr.write("registry.py: error: %s\n" % e)
        sys.exit(1)
