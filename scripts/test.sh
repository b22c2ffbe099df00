#!/usr/bin/env bash
# Builds tpt and runs every test: e2e (pytest on the real release binary), then the sanitizer
# builds (ASan+UBSan: unit + e2e; TSan: the concurrency e2e) and the fuzz smoke runs (30 s
# per target, TPT_FUZZ_SECONDS). Installs missing Debian packages first.
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    release build, unit + e2e only (no sanitizer, no fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1

export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export PYTHONDONTWRITEBYTECODE=1
py=/usr/bin/python3
start=$(date +%s)
stages=()
stage() {
    printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"
    stages+=("$(printf '%6ss  %s' "$(( $(date +%s) - start ))" "$*")")
}
# On any exit, the stages with the second each began at, last: a log's tail shows where the
# time went and where a failure happened.
summary() {
    local rc=$?
    printf '\n--- stages (start times), exit %s after %ss\n' "$rc" "$(( $(date +%s) - start ))"
    printf '%s\n' "${stages[@]}"
}
trap summary EXIT

stage "dependencies"
scripts/deps.sh test

stage "format check"
scripts/lint.sh

cmake --preset release >/dev/null
if [ "$quick" = 1 ]; then
    stage "release build"
    cmake --build --preset release
    stage "unit tests (release)"
    ctest --preset release -L unit -j "$(nproc)"
else
    # The unit tests run once, in the ASan+UBSan build below: a superset of what a release
    # run checks, for half the compile time of building them twice on 2 cores.
    stage "release build (tpt)"
    cmake --build --preset release --target tpt
fi

stage "e2e tests (release)"
TPT_BIN=$PWD/build/release/tpt $py -m pytest e2e -q -p no:cacheprovider --durations=10

if [ "$quick" = 1 ]; then
    stage "done (quick)"
    exit 0
fi

stage "ASan+UBSan build"
cmake --preset asan >/dev/null
cmake --build --preset asan

stage "unit tests (ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --preset asan -L unit -j "$(nproc)"

stage "e2e tests (ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    TPT_BIN=$PWD/build/asan/tpt TPT_SANITIZER=asan \
    $py -m pytest e2e -q -p no:cacheprovider --durations=10 -m "not slow and not no_sanitizer"

stage "TSan build"
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target tpt

stage "e2e concurrency tests (TSan)"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    TPT_BIN=$PWD/build/tsan/tpt TPT_SANITIZER=tsan \
    $py -m pytest e2e -q -p no:cacheprovider --durations=10 -m "concurrency and not slow"

stage "fuzz build (clang-16, libFuzzer)"
cmake --preset fuzz >/dev/null
# Only the fuzz targets (and the modules they link), not the whole program under clang.
mapfile -t fuzz_targets < <(basename -s .cpp -a fuzz/*_fuzz.cpp)
cmake --build --preset fuzz --target "${fuzz_targets[@]}"

stage "fuzz smoke (${TPT_FUZZ_SECONDS:-30}s each)"
scripts/fuzz.sh "${TPT_FUZZ_SECONDS:-30}"

stage "all tests passed"
