#!/usr/bin/env bash
# Every C file is clang-format clean (.clang-format at the top).
set -euo pipefail
cd "$1"
mapfile -t files < <(find include core cli sdk plugins tests examples guest bench -name '*.[ch]' 2>/dev/null | sort)
clang-format --dry-run --Werror "${files[@]}"
echo "format: ${#files[@]} files clean"
