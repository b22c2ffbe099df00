#!/usr/bin/env bash
# Installs the Debian packages tpt needs to build, test and benchmark, only those missing.
# Usage: scripts/deps.sh [build|test|bench|image|all]   (default: test)
set -euo pipefail
what=${1:-test}

build_pkgs=(cmake ninja-build g++ pkg-config libboost1.81-dev libboost-json1.81-dev
    libboost-program-options1.81-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
    prometheus-cpp-dev libssl-dev)
test_pkgs=(libgtest-dev libgmock-dev python3 python3-pytest python3-yaml openssl curl squid apache2-utils
    prometheus clang-16 libclang-rt-16-dev clang-format-16 clang-tidy-16 unzip iproute2 util-linux procps)
image_pkgs=(buildah debootstrap uidmap)
bench_pkgs=(haproxy nginx-light libnginx-mod-stream iperf3 wrk libbenchmark-dev linux-perf)

pkgs=("${build_pkgs[@]}")
case "$what" in
    build) ;;
    test) pkgs+=("${test_pkgs[@]}") ;;
    bench) pkgs+=("${bench_pkgs[@]}") ;;
    image) pkgs+=("${image_pkgs[@]}") ;;
    all) pkgs+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "usage: $0 [build|test|bench|image|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs may come from elsewhere with its own npm; only install Debian's when none is there.
if [ "$what" != build ] && ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "deps: installing ${missing[*]}" >&2
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts services on install; the tests run their own instances on loopback.
for svc in squid prometheus nginx haproxy; do
    if [[ " ${missing[*]} " == *" $svc "* ]] || [[ " ${missing[*]} " == *" $svc-light "* ]]; then
        "${sudo_cmd[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
        "${sudo_cmd[@]}" service "$svc" stop >/dev/null 2>&1 || true
    fi
done
