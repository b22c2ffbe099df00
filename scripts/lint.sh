#!/usr/bin/env bash
# Format check (clang-format-16, always) and, with --tidy, clang-tidy-16 on the given files or
# on every source file (slow: ~2 min per coroutine-heavy file; run it on what you changed).
#   scripts/lint.sh                 format check of every tracked C++ file
#   scripts/lint.sh --tidy [FILES]  plus clang-tidy (needs build/release/compile_commands.json)
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cpp' '*.hpp')
clang-format-16 --dry-run --Werror "${files[@]}"
echo "clang-format: ${#files[@]} files clean"
if [ "${1:-}" = "--tidy" ]; then
    shift
    [ $# -gt 0 ] && files=("$@") || mapfile -t files < <(git ls-files 'src/*.cpp')
    for f in "${files[@]}"; do
        clang-tidy-16 -p build/release --quiet "$f"
    done
    echo "clang-tidy: ${#files[@]} files clean"
fi
