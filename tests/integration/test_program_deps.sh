#!/bin/sh
# Which shared libraries each msb program maps (README, docs/performance.md):
#  - msb-supervisor, the process that hosts a VM, links none of the image
#    code's libraries (the monitor's own memory);
#  - msb links neither libcurl nor libarchive (nor, through them, some 35
#    other libraries): it loads msb-image-io.so, which does, only for what
#    needs it (core/image/image-io.h);
#  - without that module, or with one from another build, what needs it
#    fails with one line naming the module, and the rest of msb still works.
#   test_program_deps.sh MSB MSB-SUPERVISOR MSB-IMAGE-IO.SO STALE-MODULE.SO
set -eu
msb=$1 sup=$2 mod=$3 stale=$4
fail() { echo "FAIL: $*" >&2; exit 1; }
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

n=$(needed "$sup")
echo "msb-supervisor NEEDED: $(echo $n)"
bad=$(echo "$n" | grep -E '^lib(curl|archive|crypto|ssl)\.' || true)
[ -z "$bad" ] || fail "msb-supervisor links $bad"
echo "PASS: msb-supervisor links no curl, archive or OpenSSL library"

n=$(needed "$msb")
echo "msb NEEDED: $(echo $n)"
bad=$(echo "$n" | grep -E '^lib(curl|archive|ssl)\.' || true)
[ -z "$bad" ] || fail "msb links $bad"
all=$(ldd "$msb" | grep -c '=>' || true)
[ "$all" -le 8 ] || fail "msb maps $all shared libraries (expected at most 8)"
echo "PASS: msb links no curl, archive or TLS library ($all libraries in all)"

n=$(needed "$mod")
echo "$(basename "$mod") NEEDED: $(echo $n)"
echo "$n" | grep -q '^libcurl\.' || fail "the module does not link libcurl"
echo "$n" | grep -q '^libarchive\.' || fail "the module does not link libarchive"
echo "PASS: the image I/O module links libcurl and libarchive"

# msb alone in a directory: no module next to it (and none installed here).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin" "$tmp/home"
cp "$msb" "$tmp/bin/msb"
libexec=$(strings "$msb" | grep -m1 '/libexec/msb$' || true)
if [ -n "$libexec" ] && [ -e "$libexec/msb-image-io.so" ]; then
	echo "SKIP: an installed module ($libexec) would be found"
	exit 0
fi
check_refused() { # WHAT EXPECTED-TEXT
	set +e
	out=$(MSB_HOME="$tmp/home" "$tmp/bin/msb" pull --pull never localhost:1/x 2>&1)
	rc=$?
	set -e
	echo "$1: rc=$rc: $out"
	[ "$rc" -ne 0 ] || fail "$1: msb pull succeeded"
	[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || fail "$1: not one line"
	printf '%s' "$out" | grep -q "$2" || fail "$1: expected '$2'"
}
check_refused "no module" "image I/O module could not be loaded"
MSB_HOME="$tmp/home" "$tmp/bin/msb" ls >/dev/null || fail "msb ls needs the module"
cp "$stale" "$tmp/bin/msb-image-io.so"
check_refused "a stale module" "is from msb 0.0.0-stale, not"
cp "$mod" "$tmp/bin/msb-image-io.so"
set +e
out=$(MSB_HOME="$tmp/home" "$tmp/bin/msb" pull --pull never localhost:1/x 2>&1)
set -e
echo "with the module: $out"
printf '%s' "$out" | grep -q "image I/O module" && fail "the module next to msb was not used"
echo "PASS: a missing or stale module is refused in one line; msb ls works without it"
