# shellcheck shell=bash
# 11. the network (sourced by suite.sh): real guests behind the net module,
# against a "world" namespace of documentation addresses inside the test host.
# Needs: $msb, $root, $work, check/pass/fail from suite.sh.

net_world_up() {
	ip netns add world || return 1
	ip link add hw0 type veth peer name w0 netns world
	ip addr add 203.0.113.1/24 dev hw0
	ip addr add 2001:db8:ffff::1/64 dev hw0 nodad
	ip link set hw0 up
	ip -n world link set lo up
	ip -n world addr add 203.0.113.2/24 dev w0
	ip -n world addr add 2001:db8:ffff::2/64 dev w0 nodad
	ip -n world link set w0 up
	for a in 198.51.100.10 203.0.113.10 192.168.50.10 169.254.169.254 198.51.100.53; do
		ip -n world addr add "$a/32" dev lo
		[ "$a" = 203.0.113.10 ] || ip route add "$a/32" via 203.0.113.2
	done
	ip -n world addr add 2001:db8:1::10/128 dev lo nodad
	ip -6 route add 2001:db8:1::10/128 via 2001:db8:ffff::2
	ip -n world route add default via 203.0.113.1
	ip -n world -6 route add default via 2001:db8:ffff::1
	cat >"$work/httpd.py" <<'PYEOF'
import http.server, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello %s %d\n" % self.server.server_address[:2]).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S6(http.server.ThreadingHTTPServer): address_family = socket.AF_INET6
for spec in sys.argv[1:]:
    a, p = spec.rsplit(",", 1)
    s = (S6 if ":" in a else http.server.ThreadingHTTPServer)((a, int(p)), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("up", flush=True)
threading.Event().wait()
PYEOF
	local specs=()
	for a in 198.51.100.10 203.0.113.10 192.168.50.10 169.254.169.254 2001:db8:1::10; do
		specs+=("$a,80" "$a,443")
	done
	ip netns exec world /usr/bin/python3 "$work/httpd.py" "${specs[@]}" >"$work/world.out" 2>&1 &
	net_world_pid=$!
	/usr/bin/python3 "$work/httpd.py" 0.0.0.0,8080 >"$work/hostsvc.out" &
	net_host_pid=$!
	# The world's resolver: a few A records, NXDOMAIN for the rest.
	cat >"$work/dnsd.py" <<'PYEOF'
import socket, struct
zone = {"api.example.com": "198.51.100.10", "other.example.com": "203.0.113.10",
        "rebind.example.com": "192.168.50.10"}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.53", 53))
print("up", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    name = ".".join(labels).lower()
    a = zone.get(name) if qtype == 1 else None
    out = q[:2] + struct.pack("!HHHHH", 0x8180 | (0 if name in zone else 3), 1, 1 if a else 0, 0, 0)
    out += q[12:i + 5]
    if a:
        out += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(a)
    s.sendto(out, peer)
PYEOF
	ip netns exec world /usr/bin/python3 "$work/dnsd.py" >"$work/dnsd.out" 2>&1 &
	net_dns_pid=$!
	printf '[network.netfilter]\ndns = 198.51.100.53\n' >"$work/net.conf"
	for _ in $(seq 600); do
		grep -q up "$work/world.out" 2>/dev/null && grep -q up "$work/hostsvc.out" 2>/dev/null &&
			grep -q up "$work/dnsd.out" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

net_world_down() {
	kill "$net_world_pid" "$net_host_pid" "$net_dns_pid" 2>/dev/null
	wait "$net_world_pid" "$net_host_pid" "$net_dns_pid" 2>/dev/null
	ip netns del world 2>/dev/null
	ip link del hw0 2>/dev/null
}

# What a sandbox may leave on the host: uplink links, host tables.
net_leftovers() {
	{ ip -o link | grep -o 'msbh[0-9]*'; nft list tables | grep -o 'msb_h[0-9]*'; } | tr '\n' ' '
}

# The guest sends an HTTP GET to each HOST PORT pair (busybox nc) and prints
# the server's banner, or "blocked HOST:PORT".
net_probe='while [ $# -gt 1 ]; do r=$(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 "$1" "$2" 2>/dev/null | tail -1); echo "${r:-blocked $1:$2}"; shift 2; done'

if ! net_world_up; then
	fail "network: the test world came up" "$(tail -n 3 "$work/world.out" "$work/hostsvc.out" "$work/dnsd.out" 2>&1 | tr "\n" " ")"
else
	out=$("$msb" run --rootfs "$root" --no-net -- sh -c 'ls /sys/class/net | tr "\n" " "' 2>&1)
	check "--no-net: the guest has no network device" "lo " "$out"

	out=$("$msb" run --rootfs "$root" -- sh -c "ip -4 -o addr show eth0 | grep -c 'inet 10\.' ; grep -c nameserver /etc/resolv.conf; grep -c host.msb.internal /etc/hosts" 2>&1 | tr '\n' ' ')
	check "network: eth0 configured by the agent (address, resolver, host name v4+v6)" "1 1 2 " "$out"

	out=$("$msb" run --rootfs "$root" -- sh -c "$net_probe" sh 198.51.100.10 80 203.0.113.10 443 \
		2001:db8:1::10 80 192.168.50.10 80 169.254.169.254 80 host.msb.internal 8080 2>&1 | tr '\n' '|')
	check "default posture: public v4+v6 yes; LAN, metadata, host no" \
		"hello 198.51.100.10 80|hello 203.0.113.10 443|hello 2001:db8:1::10 80|blocked 192.168.50.10:80|blocked 169.254.169.254:80|blocked host.msb.internal:8080|" "$out"

	out=$("$msb" run --rootfs "$root" --net-default-egress allow --net-rule deny@meta -- \
		sh -c "$net_probe" sh 192.168.50.10 80 169.254.169.254 80 198.51.100.10 80 2>&1 | tr '\n' '|')
	check "allow-by-default with deny@meta: LAN yes, metadata no" \
		"hello 192.168.50.10 80|blocked 169.254.169.254:80|hello 198.51.100.10 80|" "$out"

	out=$("$msb" run --rootfs "$root" --net-default-egress deny --net-rule allow@public:tcp:443 -- \
		sh -c "$net_probe" sh 198.51.100.10 443 198.51.100.10 80 2>&1 | tr '\n' '|')
	check "allow@public:tcp:443 allows 443, not 80" "hello 198.51.100.10 443|blocked 198.51.100.10:80|" "$out"

	out=$("$msb" run --rootfs "$root" --net-default-egress deny --net-rule allow@host:tcp:8080 -- \
		sh -c "$net_probe" sh host.msb.internal 8080 198.51.100.10 80 2>&1 | tr '\n' '|')
	check "allow@host: the host's service by name, nothing else" \
		"hello 0.0.0.0 8080|blocked 198.51.100.10:80|" "$out"

	# DNS through the interceptor (upstream: the world's resolver, from the config).
	out=$(MSB_CONFIG="$work/net.conf" "$msb" run --rootfs "$root" --net-default-egress deny \
		--net-rule allow@dns,allow@api.example.com:tcp:80 -- sh -c '
		nslookup api.example.com | grep -c 198.51.100.10
		nslookup other.example.com >/dev/null 2>&1 && echo resolved || echo nxdomain
		r=$(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 api.example.com 80 2>/dev/null | tail -1); echo "${r:-blocked}"
		r=$(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 5 203.0.113.10 80 2>/dev/null | tail -1); echo "${r:-blocked}"' 2>&1 | tr '\n' '|')
	check "DNS: a domain rule opens what the interceptor resolved, nothing else" \
		"1|nxdomain|hello 198.51.100.10 80|blocked|" "$out"
	# The upstream from --dns-nameserver this time, not the config.
	out=$("$msb" run --rootfs "$root" --net-default-egress allow --dns-nameserver 198.51.100.53 -- sh -c '
		nslookup rebind.example.com >/dev/null 2>&1 && echo resolved || echo nxdomain
		nslookup api.example.com | grep -c 198.51.100.10' 2>&1 | tr '\n' '|')
	check "DNS: rebind protection (a public name answering 192.168.x is NXDOMAIN); --dns-nameserver" "nxdomain|1|" "$out"

	# Python's own HTTP client and resolver (the python image, section 9).
	if [ -n "${MSB_E2E_PYTHON_IMAGE:-}" ]; then
		out=$(MSB_CONFIG="$work/net.conf" "$msb" run localhost/e2e/python:1 -- python3 -c '
import socket, urllib.request
def get(u):
    try:
        return urllib.request.urlopen(u, timeout=5).read().decode().strip()
    except OSError as e:
        return "blocked"
print(get("http://198.51.100.10/"), get("http://[2001:db8:1::10]/"), get("http://192.168.50.10/"),
      get("http://169.254.169.254/"), sep="|")
print(sorted({a[4][0] for a in socket.getaddrinfo("api.example.com", 80, socket.AF_INET)}))
print(get("http://api.example.com/"))' 2>&1 | tr '\n' ' ')
		check "python urllib + getaddrinfo: public v4/v6 yes, LAN and metadata no, names resolve" \
			"hello 198.51.100.10 80|hello 2001:db8:1::10 80|blocked|blocked ['198.51.100.10'] hello 198.51.100.10 80 " "$out"
	fi

	# The posture table again with curl, wget and dig (the python image has them).
	if [ -n "${MSB_E2E_PYTHON_IMAGE:-}" ]; then
		# shellcheck disable=SC2016 # expanded in the guest
		probe='c() { r=$(curl -sg -m 5 "$1" 2>/dev/null); echo "${r:-blocked}"; }
			w() { r=$(wget -q -T 5 -t 1 -O - "$1" 2>/dev/null); echo "${r:-blocked}"; }
			d() { dig +tries=1 +time=3 "$@" 2>&1 | grep -oE "status: [A-Z]+|^[a-z.]+\.[[:space:]].*IN[[:space:]]+A[[:space:]].*" | awk "{print \$NF}" | sort | tr "\n" " "; echo; }
			gw6=$(awk "/host.msb.internal/ && /:/ {print \$1}" /etc/hosts)'
		out=$(MSB_CONFIG="$work/net.conf" "$msb" run localhost/e2e/python:1 -- sh -c "$probe"'
			c http://198.51.100.10/; c "http://[2001:db8:1::10]/"; c http://192.168.50.10/
			c http://169.254.169.254/; w http://api.example.com/; w http://192.168.50.10/
			d api.example.com; d @"$gw6" api.example.com; d rebind.example.com' 2>&1 | tr '\n' '|')
		check "trusted posture with curl, wget and dig (v4 and v6 resolver): public yes, LAN and metadata no, rebind NXDOMAIN" \
			"hello 198.51.100.10 80|hello 2001:db8:1::10 80|blocked|blocked|hello 198.51.100.10 80|blocked|198.51.100.10 NOERROR |198.51.100.10 NOERROR |NXDOMAIN |" "$out"
		out=$(MSB_CONFIG="$work/net.conf" "$msb" run --net-default-egress deny \
			--net-rule allow@dns,allow@api.example.com:tcp:80 localhost/e2e/python:1 -- sh -c "$probe"'
			c http://198.51.100.10/; w http://api.example.com/; c http://198.51.100.10/
			c http://other.example.com/; c http://203.0.113.10/
			d @198.51.100.53 api.example.com' 2>&1 | tr '\n' '|')
		check "untrusted allowlist with curl, wget and dig: an allowed name's address only once resolved; other resolvers blocked" \
			"blocked|hello 198.51.100.10 80|hello 198.51.100.10 80|blocked|blocked||" "$out"
	fi

	# A published port: the host reaches the guest's port 80 at 127.0.0.1:18080,
	# whatever the egress policy.
	"$msb" run --rootfs "$root" --net-default-egress deny -p 127.0.0.1:18080:80 -- \
		sh -c 'echo from-the-guest | nc -l -p 80 >/dev/null' >"$work/pub.out" 2>&1 &
	pubpid=$!
	got=
	for _ in $(seq 240); do
		got=$(/usr/bin/python3 -c 'import socket; s = socket.create_connection(("127.0.0.1", 18080), 2); s.settimeout(5); print(s.recv(100).decode().strip())' 2>/dev/null) &&
			[ -n "$got" ] && break
		sleep 0.5
	done
	wait "$pubpid"
	check "-p 127.0.0.1:18080:80: the host reaches the guest's port, egress deny-all" \
		"from-the-guest 0" "$got $?"

	check "network: nothing left after the runs" "" "$(net_leftovers)"

	# Multi-tenant: a running sandbox serves on its port 80 and allows all
	# egress; another one, also allow-all, cannot reach it (the world it can).
	"$msb" create --rootfs "$root" --name tenant1 --net-default-egress allow >/dev/null 2>&1
	t1=$("$msb" exec tenant1 -- sh -c "ip -4 -o addr show eth0" 2>/dev/null | grep -o 'inet [0-9.]*' | cut -d' ' -f2)
	"$msb" exec tenant1 -- sh -c 'echo from-tenant1 | nc -l -p 80 >/dev/null' >/dev/null 2>&1 &
	srvpid=$!
	for _ in $(seq 30); do
		"$msb" exec tenant1 -- sh -c 'netstat -ltn | grep -q ":80 "' >/dev/null 2>&1 && break
		sleep 0.5
	done
	out=$("$msb" run --rootfs "$root" --net-default-egress allow -- sh -c "
		$net_probe" sh "${t1:-none}" 80 198.51.100.10 80 2>&1 | tr '\n' '|')
	# The server was there all along: tenant1 reaches it itself.
	own=$("$msb" exec tenant1 -- sh -c 'nc -w 5 127.0.0.1 80' 2>&1)
	wait "$srvpid"
	check "multi-tenant: a sandbox (allow-all) cannot reach another's server; the world it can" \
		"yes|blocked $t1:80|hello 198.51.100.10 80||from-tenant1" \
		"$(case "$t1" in 10.*) echo yes ;; *) echo "no address: $t1" ;; esac)|$out|$own"
	# (If its stop runs out of time, what it leaves is reaped by the next msb
	# run: the SIGKILL check below.)
	"$msb" rm -f tenant1 >/dev/null 2>&1

	# A supervisor killed with SIGKILL: the next msb cleans what it left.
	"$msb" create --rootfs "$root" --name netcrash >/dev/null 2>&1
	pid=$(cat "$MSB_HOME/sandboxes/netcrash/supervisor.pid" 2>/dev/null)
	before=$(net_leftovers)
	[ -n "$pid" ] && kill -9 "$pid"
	sleep 1
	"$msb" run --rootfs "$root" -- true >/dev/null 2>&1
	check "network: SIGKILL'd supervisor's leftovers gone once msb runs again" "yes " \
		"$([ -n "$before" ] && echo yes) $(net_leftovers)"
	"$msb" rm -f netcrash >/dev/null 2>&1
	net_world_down
fi
