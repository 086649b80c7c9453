#!/bin/sh
# msb-supervisor, the process that hosts a VM, links none of the image code's
# libraries (README, docs/performance.md: the monitor's own memory).
#   test_monitor_deps.sh PATH/TO/msb-supervisor
set -eu
needed=$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "NEEDED: $(echo $needed)"
bad=$(echo "$needed" | grep -E '^lib(curl|archive|crypto|ssl)\.' || true)
if [ -n "$bad" ]; then
	echo "FAIL: msb-supervisor links $bad" >&2
	exit 1
fi
echo "PASS: msb-supervisor links no curl, archive or OpenSSL library"
