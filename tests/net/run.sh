#!/usr/bin/env bash
# The net module's host-level tests, in a network and mount namespace of
# their own: "the host" here is that namespace, /run is a private tmpfs (for
# ip netns), and every namespace the tests make dies with it.
#   tests/net/run.sh PATH/TO/msb-netharness [TEST_SCRIPT (default test_net.py)]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
harness=$(readlink -f "$1")
for t in ip nft unshare; do
	command -v "$t" >/dev/null || { echo "net tests: $t not found (scripts/install-deps)"; exit 1; }
done
if [ "$(id -u)" != 0 ] || [ ! -c /dev/net/tun ]; then
	echo "net tests: need root and /dev/net/tun; skipped"
	exit 77
fi
exec unshare --net --mount --propagation private -- /bin/sh -c '
	mount -t tmpfs msb-net-test /run && mkdir -p /run/netns &&
	ip link set lo up &&
	exec /usr/bin/python3 "$0" "$1"' "$here/${2:-test_net.py}" "$harness"
