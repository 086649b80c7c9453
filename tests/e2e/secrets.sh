# shellcheck shell=bash
# 12. secrets (sourced by suite.sh after net.sh, whose world functions it
# reuses): a real guest with curl and Python against HTTPS servers on
# documentation addresses, whose certificates come from a test CA that plays
# the host's trust store.  Needs the python image (curl, python3,
# ca-certificates).  Needs: $msb, $work, $MSB_HOME, check/pass/fail.

secrets_value='e2e-s3cr3t-0123456789abcdef'

secrets_world_up() {
	net_world_up || return 1
	local a d="$work/sec"
	mkdir -p "$d"
	for a in 198.51.100.20 198.51.100.21 198.51.100.54; do
		ip -n world addr add "$a/32" dev lo
		ip route add "$a/32" via 203.0.113.2
	done
	# Certificates: the "public" CA (the host's trust store) and two servers,
	# the second also valid for the first's name (a CDN, say).
	/usr/bin/python3 - "$here_net" "$d" <<'PYEOF' || return 1
import sys
sys.path.insert(0, sys.argv[1])
import test_secrets as t
d = sys.argv[2]
ca = t.make_ca(d, "public-ca")
t.make_leaf(d, ca, "api", ["api.secret.test"])
t.make_leaf(d, ca, "other", ["other.secret.test", "api.secret.test"])
PYEOF
	# The servers answer what Authorization held: "value", "placeholder",
	# "none" or "other", never the header itself.
	cat >"$d/server.py" <<'PYEOF'
import http.server, os, socket, ssl, sys, threading
VALUE = os.environ["E2E_VALUE"]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        a = self.headers.get("Authorization", "")
        r = ("value" if a == "Bearer " + VALUE else "placeholder" if a == "Bearer $MSB_TEST_TOKEN"
             else "none" if not a else "other")
        body = (r + "\n").encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
for spec in sys.argv[1:]:
    addr, port, cert = spec.split(",")
    s = http.server.ThreadingHTTPServer((addr, int(port)), H)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert + ".pem", cert + ".key")
        s.socket = ctx.wrap_socket(s.socket, server_side=True)
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("up", flush=True)
threading.Event().wait()
PYEOF
	E2E_VALUE=$secrets_value ip netns exec world /usr/bin/python3 "$d/server.py" \
		"198.51.100.20,443,$d/api" "198.51.100.20,80," "198.51.100.21,443,$d/other" \
		>"$d/server.out" 2>&1 &
	secrets_server_pid=$!
	ip netns exec world /usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); import test_net as t; exec(t.DNS_SERVER)' \
		"$here_net" '{"api.secret.test": ["198.51.100.20"], "other.secret.test": ["198.51.100.21"]}' \
		198.51.100.54 >"$d/dns.out" 2>&1 &
	secrets_dns_pid=$!
	printf '[secrets.tls-intercept]\nca_file = %s\n' "$d/public-ca.pem" >"$d/msb.conf"
	for _ in $(seq 300); do
		grep -q up "$d/server.out" 2>/dev/null && grep -q up "$d/dns.out" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

secrets_world_down() {
	kill "$secrets_server_pid" "$secrets_dns_pid" 2>/dev/null
	wait "$secrets_server_pid" "$secrets_dns_pid" 2>/dev/null
	net_world_down
	for a in 198.51.100.20 198.51.100.21 198.51.100.54; do ip route del "$a/32" 2>/dev/null; done
}

here_net=$(cd "$(dirname "${BASH_SOURCE[0]}")/../net" && pwd)
if [ -z "${MSB_E2E_PYTHON_IMAGE:-}" ]; then
	: # the python image is what has curl and a CA bundle
elif ! secrets_world_up; then
	fail "secrets: the test world came up" "$(tail -n 3 "$work"/sec/*.out 2>&1 | tr '\n' ' ')"
else
	d=$work/sec
	export TEST_TOKEN=$secrets_value
	# --trust-host-cas ships "the host's" roots (SSL_CERT_FILE here) into the
	# guest, so the spliced, non-secret host verifies there too.
	out=$(MSB_CONFIG="$d/msb.conf" SSL_CERT_FILE="$d/public-ca.pem" "$msb" create \
		--name sec1 --dns-nameserver 198.51.100.54 --secret TEST_TOKEN@api.secret.test \
		--trust-host-cas localhost/e2e/python:1 2>&1)
	check "secrets: create with --secret and --trust-host-cas" "sec1" "$out"
	sup=$(cat "$MSB_HOME/sandboxes/sec1/supervisor.pid" 2>/dev/null)
	# shellcheck disable=SC2016 # expanded in the guest
	probe='c() { r=$(curl -s -m 10 -w " %{http_code}" "$@" 2>&1 | tr -d "\n"); echo "${r:-failed}"; }
		A="Authorization: Bearer $TEST_TOKEN"
		echo "env $TEST_TOKEN"
		c --resolve api.secret.test:443:198.51.100.20 -H "$A" https://api.secret.test/
		c -H "$A" https://api.secret.test/
		python3 -c "import os, urllib.request as u; print(u.urlopen(u.Request(\"https://api.secret.test/\", headers={\"Authorization\": \"Bearer \" + os.environ[\"TEST_TOKEN\"]}), timeout=10).read().decode().strip())"
		c --resolve api.secret.test:443:198.51.100.21 -H "$A" https://api.secret.test/
		c -H "$A" -H "Host: other.secret.test" https://api.secret.test/
		c -H "$A" https://other.secret.test/
		c -H "$A" http://api.secret.test/'
	out=$("$msb" exec sec1 -- sh -c "$probe" 2>&1 | sed 's/^msb: .*\( [0-9]*\)$/refused\1/' | tr '\n' '|')
	check "secrets: the value only at its host, with curl and Python; never-resolved, SNI spoof, Host != SNI, other host and plain HTTP get none" \
		"env \$MSB_TEST_TOKEN|refused 403|value 200|value|refused 403|refused 403|placeholder 200|placeholder 200|" "$out"
	# Everything the guest can show: its environment, every process's, its CA files.
	"$msb" exec sec1 -u root -- sh -c 'env; cat /proc/[0-9]*/environ; cat /etc/msb/*.pem' \
		>"$d/guest.txt" 2>&1
	grep -q 'BEGIN CERTIFICATE' "$d/guest.txt" && g=seen || g=no-output
	# While it runs: what /proc shows of the supervisor's environment.
	supenv=gone
	[ -n "$sup" ] && [ -r "/proc/$sup/environ" ] && supenv=$(grep -a -c -F "$secrets_value" "/proc/$sup/environ")
	"$msb" stop sec1 >/dev/null 2>&1
	leaks=$(grep -a -l -r -F "$secrets_value" "$d/guest.txt" "$MSB_HOME/sandboxes/sec1" 2>/dev/null | tr '\n' ' ')
	check "secrets: the value is nowhere the guest can see (env, /proc, disk image, console log)" \
		"seen " "$g $leaks"
	check "secrets: the supervisor's environment lost the value" "0" "$supenv"
	"$msb" rm -f sec1 >/dev/null 2>&1
	# The C SDK, with TEST_TOKEN unset here: msb_spec_set_secret_value gives
	# the value directly (read from stdin, never argv or the environment),
	# msb_create hands it to the supervisor in a memfd, msb_exec runs the
	# probe, msb_rm removes the sandbox.
	# shellcheck disable=SC2016 # expanded in the guest
	probe='echo "env $TEST_TOKEN"; r=$(curl -s -m 10 -w " %{http_code}" -H "Authorization: Bearer $TEST_TOKEN" https://api.secret.test/ 2>&1 | tr -d "\n"); echo "$r"'
	out=$( (unset TEST_TOKEN; printf '%s' "$secrets_value" |
		MSB_PROGRAM="$msb_bin" MSB_CONFIG="$d/msb.conf" timeout "$msb_limit" \
			"$build/tests/msb-sdk-secret" image=localhost/e2e/python:1 name=sec2 \
			dns-nameserver=198.51.100.54 secret=TEST_TOKEN@api.secret.test value=TEST_TOKEN \
			-- sh -c "$probe") 2>&1 | tr '\n' '|')
	check "secrets: the C SDK gives the value directly; the guest sees the placeholder, its host the value" \
		"created sec2|env \$MSB_TEST_TOKEN|value 200|status 0|" "$out"
	check "secrets: msb_rm left nothing of the SDK's sandbox" "" "$(ls "$MSB_HOME/sandboxes" | grep -x sec2)"
	out=$(unset TEST_TOKEN; "$msb" run --secret TEST_TOKEN@api.secret.test --rootfs "$root" -- true 2>&1)
	check "secrets: an unset value is one line, nothing started" "1" "$(printf '%s\n' "$out" | grep -c 'TEST_TOKEN is not set')"
	# Once the proxy has the values the supervisor is not dumpable: it leaves
	# no core.  Only inside the KVM test host (/run/kvmhost), a machine of its
	# own, since core_pattern is global: a pipe handler records each dump; a
	# dumpable process killed the same way is the control.
	if [ -d /run/kvmhost ]; then
		MSB_CONFIG="$d/msb.conf" "$msb" create --name sec3 --rootfs "$root" \
			--dns-nameserver 198.51.100.54 --secret TEST_TOKEN@api.secret.test >/dev/null 2>"$work/err"
		sup=$(cat "$MSB_HOME/sandboxes/sec3/supervisor.pid" 2>/dev/null)
		printf '#!/bin/sh\necho "$1" >>%s/cores\ncat >/dev/null\n' "$d" >"$d/corehelper"
		chmod 755 "$d/corehelper"
		: >"$d/cores"
		old_pattern=$(cat /proc/sys/kernel/core_pattern) old_suid=$(cat /proc/sys/fs/suid_dumpable)
		echo "|$d/corehelper %P" >/proc/sys/kernel/core_pattern
		echo 0 >/proc/sys/fs/suid_dumpable
		sleep 300 &
		ctl=$!
		for p in $ctl $sup; do
			[ -n "$p" ] && prlimit --core=unlimited --pid "$p" && kill -SEGV "$p"
		done
		wait "$ctl" 2>/dev/null
		for _ in $(seq 100); do [ -n "$sup" ] && kill -0 "$sup" 2>/dev/null || break; sleep 0.1; done
		sleep 1
		echo "$old_pattern" >/proc/sys/kernel/core_pattern
		echo "$old_suid" >/proc/sys/fs/suid_dumpable
		check "secrets: the supervisor (pid ${sup:-none}) leaves no core; a dumpable process does" \
			"control-dumped-supervisor-none" \
			"$(grep -qx "$ctl" "$d/cores" && echo control-dumped || echo control-none)-$(
				[ -n "$sup" ] && ! grep -qx "$sup" "$d/cores" && echo supervisor-none || echo supervisor-dumped)"
		"$msb" rm -f sec3 >/dev/null 2>&1
	fi
	unset TEST_TOKEN
	check "secrets: nothing left" "" "$(net_leftovers)"
	secrets_world_down
fi
