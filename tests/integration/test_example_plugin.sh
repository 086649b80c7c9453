#!/usr/bin/env bash
# The out-of-tree example module, built as a third party would: against a
# temporary `meson install` of msb, found through pkg-config; then loaded
# by build/msb.  Also checks what the installed artefacts export.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
prefix=$3
libdir=$4
tmp=$(mktemp -d /tmp/msb-example-plugin.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet >/dev/null
root="$tmp/root"
pcdir="$root$prefix/$libdir/pkgconfig"
[ -f "$pcdir/msb-plugin.pc" ] || fail "msb-plugin.pc not installed in $pcdir"
for h in msb.h msb-plugin.h msb-error.h; do
	[ -f "$root$prefix/include/msb/$h" ] || fail "header $h not installed"
done
export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$root"
# (pkg-config prefixes the sysroot to paths it prints.)
[ "$(pkg-config --variable=pluginsdir msb-plugin)" = "$root$prefix/$libdir/msb/plugins" ] ||
	fail "pluginsdir variable is wrong: $(pkg-config --variable=pluginsdir msb-plugin)"
# The ABI version pkg-config states is the headers'.
for part in MAJOR MINOR; do
	h=$(awk -v k="MSB_PLUGIN_ABI_$part" '$1 == "#define" && $2 == k {print $3}' "$root$prefix/include/msb/msb-plugin.h")
	p=$(pkg-config --variable="abi_$(echo "$part" | tr A-Z a-z)" msb-plugin)
	[ -n "$h" ] && [ "$h" = "$p" ] || fail "msb-plugin.pc abi_$part '$p' differs from msb-plugin.h's '$h'"
done
# The default modules were installed where msb looks for them.
for m in hv-kvm net storage secrets; do
	[ -f "$root$prefix/$libdir/msb/plugins/$m.so" ] || fail "module $m.so not installed"
done
# msb's private programs, where msb looks for them (MSB_LIBEXEC_DIR).
libexec=$(strings "$build/msb" | grep '/libexec/msb$' || true)
libexec=${libexec%%$'\n'*}
[ -n "$libexec" ] || fail "no libexec directory in msb"
for f in msb-supervisor msb-image-io.so; do
	[ -f "$root$libexec/$f" ] || fail "$f not installed in $libexec"
done

meson setup "$tmp/hello" "$src/examples/plugin-hello" >"$tmp/setup.log" 2>&1 ||
	{ cat "$tmp/setup.log"; fail "example plugin: meson setup"; }
meson compile -C "$tmp/hello" >"$tmp/compile.log" 2>&1 ||
	{ cat "$tmp/compile.log"; fail "example plugin: compile"; }
so="$tmp/hello/hello.so"
[ -f "$so" ] || fail "hello.so not built"

# A module exports exactly one symbol.
exports=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ {print $3}' | sort)
[ "$exports" = "msb_plugin_entry_v1" ] || fail "hello.so exports: $exports"

json=$(MSB_PLUGIN_PATH="$tmp/hello" "$build/msb" plugins --json)
python3 - "$json" "$so" <<'PY' || fail "msb plugins did not load hello"
import json, sys
data = json.loads(sys.argv[1])
mods = [m for m in data["modules"] if m["file"] == sys.argv[2]]
assert len(mods) == 1, mods
m = mods[0]
assert m["status"] == "loaded", m
assert m["name"] == "hello" and m["kind"] == "storage" and m["version"] == "1.0.0", m
assert data["search_path"][0].endswith("/hello"), data["search_path"]
PY
MSB_PLUGIN_PATH="$tmp/hello" "$build/msb" create python --storage-backend hello --dry-run --json |
	grep -q '"storage": "hello"' || fail "a spec naming the hello module was not accepted"

# libmsb.so exports exactly the functions msb.h declares (linker version script).
want=$(grep -oE 'msb_[a-z0-9_]+\(' "$src/include/msb/msb.h" | tr -d '(' | sort -u)
have=$(nm -D --defined-only "$build/sdk/libmsb.so" | awk '$2 == "T" {print $3}' | sed 's/@.*//' | sort -u)
[ "$want" = "$have" ] || fail "libmsb.so exports differ from msb.h: $(diff <(echo "$want") <(echo "$have") | tr '\n' ' ')"
echo "example plugin: built out of tree, exports one symbol, loaded; libmsb exports $(echo "$have" | wc -l) msb.h functions"
