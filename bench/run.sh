#!/usr/bin/env bash
# Every table of bench/RESULTS.md in one run: tpt side by side with HAProxy, nginx stream and
# squid on loopback (same backends, same load, 2 threads/workers each), and tpt against itself
# (an older binary, a reload every second, the captured path). Installs the tools (scripts/
# deps.sh bench) and builds tpt_loadgen when missing, then runs bench/bench.py, which prints
# the tables in Markdown. Every server is a child process with a config in a temp dir, on
# free loopback ports, stopped at exit.
#
# Usage: bench/run.sh
# Environment (defaults in brackets):
#   TPT_BIN            tpt binary [build/release/tpt]
#   TPT_BASE_BIN       a second tpt binary, measured as the column `tpt-base` beside `tpt`,
#                      interleaved like the others (A/B: an older commit, or a build with
#                      -DTPT_ASIO_INTERNALS=OFF) [none]
#   LOADGEN            tpt_loadgen binary [build/bench/bench/loadgen/tpt_loadgen, built here]
#   DURATION           seconds per measured run [10]
#   REPEAT             runs of each figure, interleaved across the peers (each repetition
#                      starts one peer further along); the tables show medians [1]
#   TESTS              phases and figures [rss iperf wrk sni syscalls http connect reload capture]
#   PROXIES            peers of the main comparison [tpt haproxy haproxy-splice nginx]
#                      (haproxy: option splice-auto; haproxy-splice: splice-request +
#                      splice-response forced; tpt-splice: tpt with TPT_SPLICE=1, splicing
#                      even between loopback peers); tpt-base is added when TPT_BASE_BIN is set
#   DIRECT             1: also run each load straight to its backends (the limit) [1]
#   TUNNELS            idle tunnels for the RSS figure [9000]; a proxy holds two descriptors
#                      per tunnel and the hard RLIMIT_NOFILE here is 20000, so 10,000 tunnels
#                      need a machine with a higher limit
#   SNI_CONCURRENCY    connections in flight for the SNI and HTTP loads [64]
#   CONNECT_CONCURRENCY  the same for the CONNECT loads; each CONNECT row also runs one
#                      connection at a time, for the time a connection takes [16]
#   SQUID_WORKERS      squid SMP workers (2 moved 1.4x the tunnels of 1 here) [2]
#   LOADGEN_THREADS    threads of tpt_loadgen's client and backend [2]
#   ANSWER_BYTES       the backend's answer to each hello or request [512]
#   NAMES, WILD_NAMES  exact names in the SNI tables and names only the wildcard matches
#                      [1000, 100]
#   HELLO              the captured ClientHello whose SNI is rewritten per name
#                      [tests/data/hello/curl_sni.bin: curl with OpenSSL, 517 B]
#   RELOAD_ROUTES, RELOADS, RELOAD_RATE   routes of the reload config, POST /reload timings,
#                      paced connections/s of the latency run [10000, 20, 2000]
#   PROFILE            peers to profile (perf record -e cpu-clock -g) in an extra, unrecorded
#                      run of the SNI load and of the plain new-connections load; with tpt,
#                      also tpt during RELOADS reloads and during the one-at-a-time CONNECT
#                      load through squid: e.g. "tpt nginx" [none]; needs KEEP=1 to keep the
#                      perf.data files (the flat .txt views are kept beside them)
#   SYSCALLS=strace    count system calls with strace -c (its file shows the calls that failed,
#                      EAGAIN included) instead of perf's tracepoints [perf where it works]
#   KEEP=1             keep the temp dir (configs, logs, raw outputs, results.jsonl)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
export PATH=$PATH:/usr/sbin

export TPT_BIN=${TPT_BIN:-$root/build/release/tpt}
[ -x "$TPT_BIN" ] || { echo "no tpt binary at $TPT_BIN (cmake --preset release)" >&2; exit 2; }
if [ -n "${TPT_BASE_BIN:-}" ] && [ ! -x "$TPT_BASE_BIN" ]; then
    echo "TPT_BASE_BIN=$TPT_BASE_BIN is not an executable" >&2
    exit 2
fi

for tool in haproxy nginx squid iperf3 wrk perf /usr/lib/nginx/modules/ngx_stream_module.so; do
    if ! command -v "$tool" >/dev/null && [ ! -f "$tool" ]; then
        "$root/scripts/deps.sh" bench
        break
    fi
done

if [ -z "${LOADGEN:-}" ]; then
    LOADGEN=$root/build/bench/bench/loadgen/tpt_loadgen
    if [ ! -x "$LOADGEN" ] || [ -n "$(find "$here/loadgen" -newer "$LOADGEN" -print -quit)" ]; then
        cmake -S "$root" -B "$root/build/bench" -G Ninja -DCMAKE_BUILD_TYPE=Release \
            -DTPT_BENCH=ON -DTPT_TESTS=OFF >/dev/null
        nice -n 10 cmake --build "$root/build/bench" --target tpt_loadgen -j2 >/dev/null
    fi
fi
export LOADGEN

ulimit -n "$(ulimit -Hn)"
tunnels=${TUNNELS:-9000}
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * tunnels + 500)) ]; then
    echo "ulimit -n $(ulimit -n) is too low for TUNNELS=$tunnels" >&2
    exit 2
fi

echo "nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "kernel $(uname -r); $(haproxy -v | head -1 | cut -d' ' -f1-3);" \
    "$(nginx -v 2>&1 | cut -d' ' -f3); $(squid -v | head -1)"
exec /usr/bin/python3 "$here/bench.py"
