#!/usr/bin/env bash
# Lays out the root filesystem of the tpt runtime image: the tpt binary, the shared libraries
# it needs (the DT_NEEDED closure, found with readelf, so it works for a cross-built binary
# that cannot be run here, unlike ldd), the dynamic loader, the Debian copyright files of the
# packages those libraries come from, a passwd/group with the non-root user 65532, an
# nsswitch.conf and the default config. Nothing else: no shell, no package manager.
#
# Usage: scripts/image-rootfs.sh BINARY DEST [CONFIG]
#   BINARY  the tpt executable (already stripped, or stripped by the caller)
#   DEST    an empty or missing directory; filled as the image's /
#   CONFIG  copied to /etc/tpt/tpt.yaml (default: deploy/image/tpt.yaml)
# The Dockerfile's build stage runs it and the final stage (`FROM scratch`) copies DEST;
# e2e/test_image.py runs it on the locally built binary and runs tpt from the result.
# Prints the files it laid out, one per line, relative to DEST.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 BINARY DEST [CONFIG]" >&2; exit 2; }
binary=$1
dest=$2
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
config=${3:-$repo/deploy/image/tpt.yaml}
command -v readelf >/dev/null || { echo "image-rootfs: readelf (binutils) is missing" >&2; exit 2; }

# The Debian multiarch triplet of the binary's machine: where its libraries live.
machine=$(readelf -h "$binary" | sed -n 's/^ *Machine: *//p')
case "$machine" in
    *X86-64*) triplet=x86_64-linux-gnu ;;
    *AArch64*) triplet=aarch64-linux-gnu ;;
    *) echo "image-rootfs: unsupported machine '$machine'" >&2; exit 2 ;;
esac
search=(/usr/lib/$triplet /lib/$triplet /usr/lib /lib)

mkdir -p "$dest"
declare -A seen=()
packages=()

# Finds a library by its soname in the multiarch directories.
find_library() {
    local dir
    for dir in "${search[@]}"; do
        if [ -e "$dir/$1" ]; then
            echo "$dir/$1"
            return 0
        fi
    done
    echo "image-rootfs: $1 (needed by $2) not found in ${search[*]}" >&2
    return 1
}

# The Debian package owning a file (also through the /lib -> /usr/lib symlink), if any.
owner() {
    local path=$1 pkg
    pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1) \
        || pkg=$(dpkg -S "${path#/usr}" 2>/dev/null | head -n 1 | cut -d: -f1) || true
    [ -z "$pkg" ] || packages+=("$pkg")
}

# Copies one library (its bytes, under its soname) and then, depth first, what it needs.
add_library() {
    local soname=$1 from=$2 path needed
    [ -z "${seen[$soname]:-}" ] || return 0
    seen[$soname]=1
    path=$(find_library "$soname" "$from")
    install -D -m 0644 "$(readlink -f "$path")" "$dest/usr/lib/$triplet/$soname"
    owner "$(readlink -f "$path")"
    for needed in $(readelf -d "$path" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        add_library "$needed" "$soname"
    done
}

install -D -m 0755 "$binary" "$dest/usr/local/bin/tpt"
for needed in $(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    add_library "$needed" tpt
done

# The loader, at the exact path the binary names (PT_INTERP); it finds the libraries above
# in its built-in multiarch directories, so no ld.so.cache is needed.
interp=$(readelf -l "$binary" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')
[ -n "$interp" ] || { echo "image-rootfs: $binary has no program interpreter" >&2; exit 1; }
if [ -n "${seen[$(basename "$interp")]:-}" ]; then
    # libc already pulled it in under its soname: link to that copy (relative, so that the
    # root also works as `qemu-aarch64 -L ROOT` or a chroot-less library root).
    mkdir -p "$dest$(dirname "$interp")"
    ln -sfr "$dest/usr/lib/$triplet/$(basename "$interp")" "$dest$interp"
    chmod 0755 "$dest/usr/lib/$triplet/$(basename "$interp")"
else
    install -D -m 0755 "$(readlink -f "$interp")" "$dest$interp"
    owner "$(readlink -f "$interp")"
fi

# Licences of what is shipped, as Debian's own images keep them.
if [ ${#packages[@]} -gt 0 ]; then
    for pkg in $(printf '%s\n' "${packages[@]}" | sort -u); do
        if [ -f "/usr/share/doc/$pkg/copyright" ]; then
            install -D -m 0644 "/usr/share/doc/$pkg/copyright" "$dest/usr/share/doc/$pkg/copyright"
        fi
    done
fi

# Numeric user 65532 (the image's USER) with a name, for tools that map UIDs; no login shell.
install -d -m 0755 "$dest/etc"
printf '%s\n' 'root:x:0:0:root:/root:/nonexistent' \
    'nonroot:x:65532:65532:nonroot:/nonexistent:/nonexistent' >"$dest/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$dest/etc/group"
# getaddrinfo: /etc/hosts first, then DNS (the kubelet mounts both files into the pod).
printf '%s\n' 'hosts: files dns' 'networks: files' >"$dest/etc/nsswitch.conf"
chmod 0644 "$dest/etc/passwd" "$dest/etc/group" "$dest/etc/nsswitch.conf"
install -D -m 0644 "$config" "$dest/etc/tpt/tpt.yaml"

(cd "$dest" && find . \( -type f -o -type l \) | sed 's|^\./|/|' | sort)
