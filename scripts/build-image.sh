#!/usr/bin/env bash
# Builds the tpt container image with buildah (no Docker engine needed) and smoke-runs it.
# Usage: scripts/build-image.sh [--ref GIT_REF] [TAG]        (default tag tpt:dev)
#   --ref: build a committed tree (`git archive GIT_REF`) instead of the working tree, which
#          may hold someone's half-written change.
#
# When buildah's local storage lacks docker.io/library/debian:bookworm or :bookworm-slim,
# they are made here from `debootstrap --variant=minbase bookworm` (no registry access
# needed, only a Debian mirror), then the Dockerfile is built with --pull=never and the
# image is run with `tpt --version` and `tpt -t -c /etc/tpt/tpt.yaml`.
# Needs root (or a working rootless buildah), buildah and debootstrap:
#   apt-get install buildah debootstrap
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), JOBS (default 2),
# BUILDAH_ISOLATION (default chroot).
# Not part of the CI test run (it takes minutes); .github/workflows/image.yml builds the
# image with a real engine and smoke-tests it in kind.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ref=
if [ "${1:-}" = --ref ]; then
    [ $# -ge 2 ] || { echo "usage: $0 [--ref GIT_REF] [TAG]" >&2; exit 2; }
    ref=$2
    shift 2
fi
tag=${1:-tpt:dev}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
jobs=${JOBS:-2}
isolation=${BUILDAH_ISOLATION:-chroot}
full_ref=docker.io/library/debian:${suite}
slim_ref=docker.io/library/debian:${suite}-slim

for tool in buildah debootstrap; do
    command -v "$tool" >/dev/null || {
        echo "build-image: $tool is missing (apt-get install buildah debootstrap)" >&2
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

# The base images a registry would give us, rebuilt locally from the Debian archive.
make_base_images() {
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
    have_image "$full_ref" || commit_rootfs "$rootfs" "$full_ref"
    if ! have_image "$slim_ref"; then
        # As the official -slim image: drop documentation, man pages and translations, and
        # keep dpkg from installing them again.
        cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EXCLUDES'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EXCLUDES
        find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
        find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
        rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
            "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian/*
        commit_rootfs "$rootfs" "$slim_ref"
    fi
    rm -rf "$workdir"
    workdir=
    log "base images ready in $((SECONDS - started)) s"
}

if have_image "$full_ref" && have_image "$slim_ref"; then
    log "base images present: $full_ref $slim_ref"
else
    make_base_images
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
log "buildah bud --isolation $isolation -t $tag $context"
buildah bud --isolation "$isolation" --pull=never --layers --force-rm --build-arg "JOBS=$jobs" \
    -f "$context/Dockerfile" -t "$tag" "$context"
build_seconds=$((SECONDS - started))

ctr=$(buildah from --pull=never "$tag")
run() { buildah run --isolation "$isolation" "$ctr" -- "$@"; }
log "smoke: tpt --version"
run /usr/local/bin/tpt --version
log "smoke: tpt -t -c /etc/tpt/tpt.yaml"
run /usr/local/bin/tpt -t -c /etc/tpt/tpt.yaml
user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$tag")
log "smoke: image user $user"

# Serve for real as the image's user on a read-only root filesystem, with no capabilities,
# in private mount/network/PID namespaces (nothing binds on the host): /ready must answer
# 200 and SIGTERM must end tpt with status 0 after its shutdown.delay.
serve_check() {
    local mnt=$1 scratch rc=0
    scratch=$(mktemp -d /var/tmp/tpt-serve.XXXXXX)
    mkdir "$scratch/root"
    unshare --mount --net --pid --fork bash -euo pipefail -c '
        mnt=$1 user=$2 scratch=$3
        mount --make-rprivate /
        ip link set lo up
        ro=$scratch/root
        mount --bind "$mnt" "$ro"
        mount -o remount,bind,ro "$ro"
        mount -t proc proc "$ro/proc"
        if touch "$ro/probe" 2>/dev/null; then echo "root filesystem is writable" >&2; exit 1; fi
        chroot --userspec="$user" "$ro" /usr/local/bin/tpt --config /etc/tpt/tpt.yaml \
            >"$scratch/serve.log" 2>&1 &
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
        echo "serve check: /ready 200 as $user, read-only root, no capabilities, SIGTERM exit 0"
    ' serve-check "$mnt" "$user" "$scratch" || rc=$?
    # Never recursive: should a mount have leaked, rmdir fails instead of deleting through it.
    rm -f "$scratch/serve.log"
    rmdir "$scratch/root" "$scratch"
    return "$rc"
}
if command -v unshare >/dev/null && command -v ip >/dev/null && command -v curl >/dev/null \
    && [ "$(id -u)" -eq 0 ]; then
    log "smoke: serve on a read-only root filesystem"
    serve_check "$(buildah mount "$ctr")"
    buildah umount "$ctr" >/dev/null
else
    log "smoke: serve check skipped (needs root, unshare, ip and curl)"
fi
buildah rm "$ctr" >/dev/null
ctr=

size=$(buildah images --format '{{.Size}}' "$tag" | head -n 1)
log "image $tag: size $size, build ${build_seconds} s"
