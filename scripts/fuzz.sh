#!/usr/bin/env bash
# Runs every libFuzzer target of build/fuzz for N seconds (default 60), two at a time, on a
# scratch copy of its seed corpus; fails on any crash. Prints each target's exec count.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pids=()
names=()
for bin in build/fuzz/*_fuzz; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin" _fuzz)
    mkdir -p "$out/$name/corpus"
    cp -r fuzz/corpus/"$name"/. "$out/$name/corpus/" 2>/dev/null || true
    # -timeout: one input may not take 10 s; timeout(1): a fuzzer that wedges in its own
    # out-of-memory handler is ended anyway.
    timeout --kill-after=10 $((secs + 120)) \
        "$bin" -max_total_time="$secs" -max_len=20000 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$out/$name/" "$out/$name/corpus" >"$out/$name/log" 2>&1 &
    pids+=($!)
    names+=("$name")
    if [ ${#pids[@]} -ge "$(nproc)" ]; then
        wait "${pids[0]}" || true
        pids=("${pids[@]:1}")
    fi
done
wait || true
failed=0
for name in "${names[@]}"; do
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$out/$name/log" | grep -Eo '[0-9]+$' || echo 0)
    if ls "$out/$name"/crash-* "$out/$name"/leak-* "$out/$name"/timeout-* >/dev/null 2>&1 \
        || grep -q 'ERROR: libFuzzer\|ERROR: AddressSanitizer\|runtime error' "$out/$name/log"; then
        echo "fuzz $name: FAILED after $execs runs"
        tail -40 "$out/$name/log"
        failed=$((failed + 1))
    else
        echo "fuzz $name: $execs runs, no crash"
    fi
done
echo "fuzz: ${#names[@]} targets, $failed failed"
[ "$failed" -eq 0 ]
