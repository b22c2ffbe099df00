#!/usr/bin/env bash
# Builds the tpt container image with buildah (no Docker engine needed) and smoke-runs it.
# Usage: scripts/build-image.sh [--ref GIT_REF] [--arch ARCH] [TAG]   (default tag tpt:dev)
#   --ref:  build a committed tree (`git archive GIT_REF`) instead of the working tree, which
#           may hold someone's half-written change.
#   --arch: the image's architecture (amd64 or arm64; default: this machine's). The build
#           stage runs natively and cross-compiles (see the Dockerfile), so a foreign
#           architecture needs no binfmt/qemu to build; its smoke run uses qemu-user.
#
# When buildah's local storage lacks docker.io/library/debian:bookworm, it is made here from
# `debootstrap --variant=minbase bookworm` (no registry access needed, only a Debian mirror)
# and passed as BUILD_IMAGE (the Dockerfile's default is the registry image pinned by
# digest). The runtime stage is `scratch`. Then the image is run: `tpt --version`,
# `tpt -t -c /etc/tpt/tpt.yaml`, a serve check (below), its file list and its size.
# Needs root (or a working rootless buildah), buildah and debootstrap (qemu-user for a
# foreign --arch): scripts/deps.sh image
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), JOBS (default 2),
# BUILDAH_ISOLATION (default chroot).
# Not part of the CI test run (it takes minutes); .github/workflows/image.yml builds the
# image with a real engine for amd64 and arm64 and smoke-tests it in kind.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ref=
native=$(dpkg --print-architecture)
arch=$native
usage() { echo "usage: $0 [--ref GIT_REF] [--arch amd64|arm64] [TAG]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --ref) [ $# -ge 2 ] || usage; ref=$2; shift 2 ;;
        --arch) [ $# -ge 2 ] || usage; arch=$2; shift 2 ;;
        -*) usage ;;
        *) break ;;
    esac
done
case "$arch" in amd64 | arm64) ;; *) usage ;; esac
tag=${1:-tpt:dev}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
jobs=${JOBS:-2}
isolation=${BUILDAH_ISOLATION:-chroot}
full_ref=docker.io/library/debian:${suite}

tools=(buildah debootstrap)
qemu=
if [ "$arch" != "$native" ]; then
    qemu=qemu-$([ "$arch" = arm64 ] && echo aarch64 || echo x86_64)
    tools+=("$qemu")
fi
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || {
        echo "build-image: $tool is missing (scripts/deps.sh image)" >&2
        exit 2
    }
done

log() { echo "build-image: $*" >&2; }
have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

workdir=
ctr=
cleanup() {
    [ -z "$ctr" ] || buildah rm "$ctr" >/dev/null 2>&1 || true
    [ -z "$workdir" ] || rm -rf "$workdir"
}
trap cleanup EXIT

# Copies a root filesystem into a new image made `from scratch` and commits it as $2.
commit_rootfs() {
    local rootfs=$1 ref=$2 mnt
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    cp -a "$rootfs"/. "$mnt"/
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd bash --os linux --arch "$(dpkg --print-architecture)" "$ctr"
    buildah commit --rm --quiet "$ctr" "$ref" >/dev/null
    ctr=
    log "committed $ref"
}

# The build stage's base image, as a registry would give it, made from the Debian archive.
make_base_image() {
    local started=$SECONDS rootfs
    workdir=$(mktemp -d /var/tmp/tpt-rootfs.XXXXXX)
    rootfs=$workdir/rootfs
    log "debootstrap --variant=minbase $suite from $mirror"
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
        tail -n 30 "$workdir/debootstrap.log" >&2
        exit 1
    }
    cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
    commit_rootfs "$rootfs" "$full_ref"
    rm -rf "$workdir"
    workdir=
    log "base image ready in $((SECONDS - started)) s"
}

if have_image "$full_ref"; then
    log "base image present: $full_ref"
else
    make_base_image
fi

context=$repo
if [ -n "$ref" ]; then
    commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}")
    workdir=$(mktemp -d /var/tmp/tpt-context.XXXXXX)
    context=$workdir/src
    mkdir "$context"
    git -C "$repo" archive --format=tar "$commit" | tar -x -C "$context"
    log "context: git archive $ref ($commit)"
fi

started=$SECONDS
log "buildah bud --isolation $isolation --platform linux/$arch -t $tag $context"
buildah bud --isolation "$isolation" --pull=never --layers --force-rm --platform "linux/$arch" \
    --build-arg "JOBS=$jobs" --build-arg "BUILD_IMAGE=$full_ref" \
    --build-arg "BUILDPLATFORM=linux/$native" \
    -f "$context/Dockerfile" -t "$tag" "$context"
build_seconds=$((SECONDS - started))

ctr=$(buildah from --pull=never --arch "$arch" "$tag")
mnt=$(buildah mount "$ctr")
# A foreign-architecture binary runs under qemu-user with the image root as its library root.
if [ -n "$qemu" ]; then
    run() { "$qemu" -L "$mnt" "$mnt$1" "${@:2}"; }
    config=$mnt/etc/tpt/tpt.yaml
else
    run() { buildah run --isolation "$isolation" "$ctr" -- "$@"; }
    config=/etc/tpt/tpt.yaml
fi
# The image's files, before anything runs in the container (buildah run adds /etc/hosts,
# /etc/resolv.conf and /etc/hostname to the container, as every runtime does).
files=$(cd "$mnt" && find . \( -type f -o -type l \) | sed 's|^\./|/|' | sort)
log "files ($(wc -l <<<"$files")):"
sed 's/^/    /' <<<"$files" >&2
if grep -E '/(sh|bash|dash|busybox|apt|apt-get|dpkg|ls|cat)$' <<<"$files" >&2; then
    log "the runtime image holds a shell or package tool"
    exit 1
fi
log "smoke: tpt --version"
run /usr/local/bin/tpt --version
log "smoke: tpt -t -c /etc/tpt/tpt.yaml"
run /usr/local/bin/tpt -t -c "$config"
user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$tag")
image_arch=$(buildah inspect --type image --format '{{.OCIv1.Architecture}}' "$tag")
log "smoke: image user $user, architecture $image_arch"
[ "$image_arch" = "$arch" ] || { log "image architecture $image_arch, wanted $arch"; exit 1; }

# Serve for real as the image's user on a read-only root filesystem, with no capabilities,
# in private mount/network/PID namespaces (nothing binds on the host): /ready must answer
# 200 and SIGTERM must end tpt with status 0 after its shutdown.delay.
serve_check() {
    local mnt=$1 scratch rc=0 launch
    # Runtimes create /proc as a mount point in the container's writable layer; so do we.
    mkdir -p "$mnt/proc"
    if [ -n "$qemu" ]; then
        launch="setpriv --reuid=${user%%:*} --regid=${user##*:} --clear-groups $qemu -L \$ro \$ro/usr/local/bin/tpt --config \$ro/etc/tpt/tpt.yaml"
    else
        launch="chroot --userspec=$user \$ro /usr/local/bin/tpt --config /etc/tpt/tpt.yaml"
    fi
    scratch=$(mktemp -d /var/tmp/tpt-serve.XXXXXX)
    # qemu-user opens the binary and libraries as the image's user, not through a chroot.
    chmod 0755 "$scratch"
    mkdir "$scratch/root" "$scratch/config"
    # Mounted over /etc/tpt as a ConfigMap volume would be: admin on [::] (both families), a
    # listener whose default route is the built-in `echo` upstream.
    cat >"$scratch/config/tpt.yaml" <<'CONFIG'
version: 2
log: info
log_format: json
admin:
  listen: "[::]:9901"
shutdown:
  delay: 1s
  drain_timeout: 5s
servers:
  smoke:
    listen: ["127.0.0.1:8443", "[::1]:8443"]
    default: echo
CONFIG
    unshare --mount --net --pid --fork bash -euo pipefail -c '
        mnt=$1 user=$2 scratch=$3 launch=$4
        mount --make-rprivate /
        ip link set lo up
        ro=$scratch/root
        mount --bind "$mnt" "$ro"
        mount -o remount,bind,ro "$ro"
        mount -t proc proc "$ro/proc"
        mount --bind -o ro "$scratch/config" "$ro/etc/tpt"
        if touch "$ro/probe" 2>/dev/null; then echo "root filesystem is writable" >&2; exit 1; fi
        eval "exec $launch" >"$scratch/serve.log" 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do
            curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        status=$(curl -sS -o /dev/null -w "%{http_code}" http://127.0.0.1:9901/ready || true)
        problems=
        metrics=$(curl -fsS http://127.0.0.1:9901/metrics || true)
        grep -q "^tpt_build_info" <<<"$metrics" || problems+=" no-metrics"
        status6=$(curl -sS -o /dev/null -w "%{http_code}" "http://[::1]:9901/ready" || true)
        [ "$status6" = 200 ] || problems+=" admin-not-on-ipv6"
        # A proxied connection over loopback: bytes out, the same bytes back (echo route).
        reply=
        if exec 3<>/dev/tcp/127.0.0.1/8443; then
            printf "ping from the smoke run" >&3
            read -r -t 5 -n 23 reply <&3 || true
            exec 3>&-
        fi
        [ "$reply" = "ping from the smoke run" ] || problems+=" no-echo-through-tpt"
        sleep 1.2   # the tunnel ends and is counted
        metrics=$(curl -fsS http://127.0.0.1:9901/metrics || true)
        grep -q "^tpt_route_connections_total{.*server=\"smoke\".*} 1" <<<"$metrics" \
            || problems+=" tunnel-not-counted"
        # This PID namespace'"'"'s proc is the one mounted in the image root.
        proc_status=$(grep -E "^(Uid|Gid|CapEff|NoNewPrivs)" "$ro/proc/$pid/status" || true)
        grep -q "^Uid:[[:space:]]*${user%%:*}[[:space:]]" <<<"$proc_status" || problems+=" wrong-uid"
        grep -q "^CapEff:[[:space:]]*0*$" <<<"$proc_status" || problems+=" has-capabilities"
        kill -TERM "$pid"
        rc=0
        wait "$pid" || rc=$?
        if [ "$status" != 200 ] || [ "$rc" != 0 ] || [ -n "$problems" ]; then
            echo "serve check: /ready=$status exit=$rc${problems}" >&2
            echo "$proc_status" >&2
            cat "$scratch/serve.log" >&2
            exit 1
        fi
        echo "serve check: /ready 200 on 127.0.0.1 and [::1] as $user, read-only root, no capabilities;"
        echo "  echo route relayed \"$reply\" over loopback and counted it; SIGTERM exit 0"
        grep -E "tpt started|access|tpt stopped|shutdown" "$scratch/serve.log" | head -n 4 | sed "s/^/  log: /"
    ' serve-check "$mnt" "$user" "$scratch" "$launch" || rc=$?
    # Never recursive: should a mount have leaked, rmdir fails instead of deleting through it.
    rm -f "$scratch/serve.log" "$scratch/config/tpt.yaml"
    rmdir "$scratch/root" "$scratch/config" "$scratch"
    return "$rc"
}
if command -v unshare >/dev/null && command -v ip >/dev/null && command -v curl >/dev/null \
    && [ "$(id -u)" -eq 0 ]; then
    log "smoke: serve on a read-only root filesystem"
    serve_check "$mnt"
else
    log "smoke: serve check skipped (needs root, unshare, ip and curl)"
fi
buildah umount "$ctr" >/dev/null
buildah rm "$ctr" >/dev/null
ctr=

size=$(buildah images --format '{{.Size}}' "$tag" | head -n 1)
log "image $tag ($arch): size $size, build ${build_seconds} s"
