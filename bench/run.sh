#!/usr/bin/env bash
# Side-by-side benchmark of tpt, HAProxy (tcp mode, splice-auto) and nginx stream on loopback:
# the same backends, the same load, 2 threads/workers each. Prints one table with ratios to
# HAProxy. Every server is a subprocess with a config generated in a temp dir, on free loopback
# ports, stopped at exit.
#
# Usage: bench/run.sh            (tools: scripts/deps.sh bench, run when one is missing)
# Environment:
#   TPT_BIN=path       tpt binary (default build/release/tpt, else build/perf/tpt)
#   DURATION=10        seconds per iperf3/wrk run
#   REPEAT=1           runs of each iperf3/wrk figure, interleaved across proxies; the table
#                      shows the median (the machine is shared: REPEAT=3 steadies it)
#   TUNNELS=9000       idle tunnels for the RSS figure (see below)
#   PROXIES="tpt haproxy nginx"   may add haproxy-splice (HAProxy with splice forced: option
#                      splice-request + splice-response), tpt-copy (TPT_SPLICE=0: never
#                      splice) and tpt-splice (TPT_SPLICE=1: splice streams even between
#                      loopback peers, where tpt copies by default)
#   TESTS="rss iperf wrk"          which figures to measure
#   DIRECT=1           also run iperf3 and wrk straight to the backends (0: skip)
#   KEEP=1             keep the temp dir (configs, logs, raw outputs)
#
# TUNNELS: a proxy holds two descriptors per tunnel. Where the hard RLIMIT_NOFILE is 20000 and
# cannot be raised (no CAP_SYS_RESOURCE), 10,000 tunnels do not fit in one process; the default
# is the most that fits with headroom for every proxy. TUNNELS=10000 runs the figure as
# specified where the hard limit allows it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py=/usr/bin/python3
lib="$py $here/lib.py"

DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}
TUNNELS=${TUNNELS:-9000}
PROXIES=${PROXIES:-"tpt haproxy nginx"}
TESTS=${TESTS:-"rss iperf wrk"}
DIRECT=${DIRECT:-1}
if [ -z "${TPT_BIN:-}" ]; then
    TPT_BIN=$root/build/release/tpt
    [ -x "$TPT_BIN" ] || TPT_BIN=$root/build/perf/tpt
fi

PATH=$PATH:/usr/sbin
nginx_stream=/usr/lib/nginx/modules/ngx_stream_module.so
for tool in haproxy nginx iperf3 wrk "$nginx_stream"; do
    if ! command -v "$tool" >/dev/null && [ ! -f "$tool" ]; then
        "$root/scripts/deps.sh" bench
        break
    fi
done
[ -x "$TPT_BIN" ] || { echo "no tpt binary at $TPT_BIN (cmake --preset release)" >&2; exit 2; }

ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * TUNNELS + 500)) ]; then
    echo "ulimit -n $(ulimit -n) is too low for TUNNELS=$TUNNELS" >&2
    exit 2
fi

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/tpt-bench.XXXXXX)
chmod 755 "$work"  # nginx workers run as nobody and serve $work/www
pids=()
cleanup() {
    local pid i
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "raw outputs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# Ports: backends (iperf3, http, idle), then three listeners per proxy.
all_proxies="tpt tpt-copy tpt-splice haproxy haproxy-splice nginx"
mapfile -t P < <($lib ports 21)
iperf_port=${P[0]} http_port=${P[1]} idle_port=${P[2]}
declare -A port_iperf port_http port_idle
i=3
for who in $all_proxies; do
    port_iperf[$who]=${P[i]} port_http[$who]=${P[i + 1]} port_idle[$who]=${P[i + 2]}
    i=$((i + 3))
done
port_iperf[direct]=$iperf_port
port_http[direct]=$http_port

start() {  # start NAME CMD...: runs CMD in the background, output in $work/NAME.log
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
}

wait_ready() {  # wait_ready NAME PORT
    $lib wait-port "$2" 10 || { echo "$1 did not listen on $2:" >&2; cat "$work/$1.log" >&2; exit 1; }
}

# --- backends ---------------------------------------------------------------------------------
mkdir -p "$work/www" "$work/nginx-http/logs" "$work/nginx-stream/logs"
chmod 755 "$work/www"
head -c 1024 /dev/urandom >"$work/www/1k.bin"
chmod 644 "$work/www/1k.bin"
start iperf3-server iperf3 -s -B 127.0.0.1 -p "$iperf_port"
cat >"$work/nginx-http/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $work/nginx-http/nginx.pid;
error_log $work/nginx-http/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx-http/body;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$http_port backlog=4096;
        root $work/www;
    }
}
EOF
start nginx-http nginx -p "$work/nginx-http" -c "$work/nginx-http/nginx.conf" \
    -e "$work/nginx-http/logs/error.log"
start idle-backend $py "$here/lib.py" idle-backend "$idle_port" "$work/idle.count"
wait_ready iperf3-server "$iperf_port"
wait_ready nginx-http "$http_port"
wait_ready idle-backend "$idle_port"

# --- proxies ----------------------------------------------------------------------------------
tpt_cfg() {  # tpt_cfg WHO
    local who=$1
    cat <<EOF
version: 1
log: warn
admin: { listen: "" }
reload: { watch: false, poll_interval: 0s }
servers:
  iperf: { listen: ["127.0.0.1:${port_iperf[$who]}"], default: iperf_up, maxclients: 20000 }
  http:  { listen: ["127.0.0.1:${port_http[$who]}"], default: http_up, maxclients: 20000 }
  idle:  { listen: ["127.0.0.1:${port_idle[$who]}"], default: idle_up, maxclients: 20000 }
upstream:
  iperf_up: "tcp://127.0.0.1:$iperf_port"
  http_up: "tcp://127.0.0.1:$http_port"
  idle_up: "tcp://127.0.0.1:$idle_port"
EOF
}
tpt_cfg tpt >"$work/tpt.yaml"
tpt_cfg tpt-copy >"$work/tpt-copy.yaml"
tpt_cfg tpt-splice >"$work/tpt-splice.yaml"
haproxy_cfg() {  # haproxy_cfg WHO SPLICE-OPTIONS
    local who=$1
    cat <<EOF
global
    nbthread 2
    maxconn $((TUNNELS + 100))
    maxpipes 256
defaults
    mode tcp
$2
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend iperf
    bind 127.0.0.1:${port_iperf[$who]}
    default_backend iperf_up
frontend http
    bind 127.0.0.1:${port_http[$who]}
    default_backend http_up
frontend idle
    bind 127.0.0.1:${port_idle[$who]}
    default_backend idle_up
backend iperf_up
    server s 127.0.0.1:$iperf_port
backend http_up
    server s 127.0.0.1:$http_port
backend idle_up
    server s 127.0.0.1:$idle_port
EOF
}
haproxy_cfg haproxy "    option splice-auto" >"$work/haproxy.cfg"
haproxy_cfg haproxy-splice "    option splice-request
    option splice-response" >"$work/haproxy-splice.cfg"
cat >"$work/nginx-stream/nginx.conf" <<EOF
load_module $nginx_stream;
daemon off;
worker_processes 2;
worker_rlimit_nofile $(ulimit -n);
pid $work/nginx-stream/nginx.pid;
error_log $work/nginx-stream/logs/error.log warn;
events { worker_connections $((2 * TUNNELS + 500)); }
stream {
    proxy_timeout 1h;
    server { listen 127.0.0.1:${port_iperf[nginx]} reuseport backlog=4096; proxy_pass 127.0.0.1:$iperf_port; }
    server { listen 127.0.0.1:${port_http[nginx]} reuseport backlog=4096; proxy_pass 127.0.0.1:$http_port; }
    server { listen 127.0.0.1:${port_idle[nginx]} reuseport backlog=4096; proxy_pass 127.0.0.1:$idle_port; }
}
EOF

declare -A proxy_pids
for who in $PROXIES; do
    case $who in
        tpt) start tpt "$TPT_BIN" -c "$work/tpt.yaml" ;;
        tpt-copy) start tpt-copy env TPT_SPLICE=0 "$TPT_BIN" -c "$work/tpt-copy.yaml" ;;
        tpt-splice) start tpt-splice env TPT_SPLICE=1 "$TPT_BIN" -c "$work/tpt-splice.yaml" ;;
        haproxy | haproxy-splice) start "$who" haproxy -db -f "$work/$who.cfg" ;;
        nginx) start nginx nginx -p "$work/nginx-stream" -c "$work/nginx-stream/nginx.conf" \
            -e "$work/nginx-stream/logs/error.log" ;;
        *) echo "unknown proxy $who (one of: $all_proxies)" >&2; exit 2 ;;
    esac
    main_pid=${pids[-1]}
    wait_ready "$who" "${port_idle[$who]}"
    if [ "$who" = nginx ]; then  # the master listens before it forks its 2 workers
        for ((i = 0; i < 100; i++)); do
            [ "$(pgrep -c -P "$main_pid" || true)" -ge 2 ] && break
            sleep 0.1
        done
    fi
    # Every process of the proxy: nginx's master and workers; the others are one process.
    proxy_pids[$who]="$main_pid $(pgrep -P "$main_pid" | tr '\n' ' ' || true)"
done

# The processes of a proxy, one per word.
pids_of() { local -a p; read -ra p <<<"${proxy_pids[$1]}"; printf '%s\n' "${p[@]}"; }
proxy_cpu() { local -a p; mapfile -t p < <(pids_of "$1"); $lib cpu "${p[@]}"; }

results=$work/results.jsonl
: >"$results"
record() {  # record METRIC WHO VALUE
    printf '{"metric":"%s","who":"%s","value":%s}\n' "$1" "$2" "$3" >>"$results"
}

want() { [[ " $TESTS " == *" $1 "* ]]; }
direct=""
[ "$DIRECT" = 1 ] && direct=direct

# --- RSS per idle tunnel (first, on freshly started proxies) ----------------------------------
if want rss; then
    for who in $PROXIES; do
        mapfile -t these < <(pids_of "$who")
        read -r before after n < <($lib idle-client "${port_idle[$who]}" "$TUNNELS" \
            "$work/idle.count" 60 "${these[@]}")
        per=$(((after - before) / n))
        echo "idle tunnels  $who: $n tunnels, RSS $before -> $after bytes, $per B/tunnel"
        record rss_per_tunnel "$who" "$per"
    done
fi

# The proxies in turn, starting one further along each repetition, so that no proxy always
# runs right after the same neighbour (a run after a heavy one starts with a busier kernel).
rotate() {  # rotate N WORD...
    local n=$1
    shift
    local -a w=("$@")
    local k=${#w[@]} j
    for ((j = 0; j < k; j++)); do printf '%s ' "${w[$(((j + n) % k))]}"; done
}

for ((rep = 1; rep <= REPEAT; rep++)); do
    # shellcheck disable=SC2086  # word lists
    order=$(rotate $((rep - 1)) $PROXIES)
    # --- single-stream throughput and CPU per GB ----------------------------------------------
    if want iperf; then
        for who in $direct $order; do
            out=$work/iperf-$who-$rep.json
            cpu0=0
            [ "$who" = direct ] || cpu0=$(proxy_cpu "$who")
            iperf3 -c 127.0.0.1 -p "${port_iperf[$who]}" -t "$DURATION" -J >"$out" ||
                { cat "$out" >&2; exit 1; }
            read -r bps nbytes < <($lib iperf "$out")
            record throughput "$who" "$bps"
            if [ "$who" = direct ]; then
                echo "iperf3        $who: $bps bit/s"
                continue
            fi
            cpu1=$(proxy_cpu "$who")
            cpu_gb=$($py -c "print(f'{($cpu1 - $cpu0) / ($nbytes / 1e9):.4f}')")
            echo "iperf3        $who: $bps bit/s, $nbytes bytes, CPU $cpu0 -> $cpu1 s, $cpu_gb s/GB"
            record cpu_per_gb "$who" "$cpu_gb"
        done
    fi

    # --- keep-alive requests and p99; new connections per second ------------------------------
    if want wrk; then
        for who in $direct $order; do
            url="http://127.0.0.1:${port_http[$who]}/1k.bin"
            out=$work/wrk-ka-$who-$rep.txt
            wrk -t2 -c64 -d"${DURATION}s" --latency "$url" >"$out"
            read -r rps p99 errors < <($lib wrk "$out")
            echo "wrk keepalive $who: $rps req/s, p99 $p99 ms, $errors errors"
            record rps_keepalive "$who" "$rps"
            record p99_keepalive "$who" "$p99"
            out=$work/wrk-close-$who-$rep.txt
            wrk -t2 -c64 -d"${DURATION}s" --latency -H "Connection: close" "$url" >"$out"
            read -r rps p99 errors < <($lib wrk "$out")
            echo "wrk close     $who: $rps conn/s, p99 $p99 ms, $errors errors"
            record rps_close "$who" "$rps"
        done
    fi
done

echo
echo "nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "load average (1/5/15 min) at the start: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tpt: $TPT_BIN; $TUNNELS idle tunnels; ${DURATION}s runs x $REPEAT (median shown)"
echo
$lib table "$results"
