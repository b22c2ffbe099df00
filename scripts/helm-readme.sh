#!/usr/bin/env bash
# Regenerates the "Parameters" section of helm/README.md from the `## @param` comments of
# helm/values.yaml with @bitnami/readme-generator-for-helm (installed by scripts/node-tools.sh),
# which also fails when a value has no @param line or a @param names no value.
#   scripts/helm-readme.sh           rewrite helm/README.md
#   scripts/helm-readme.sh --check   exit 1 when helm/README.md is stale; write nothing
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
modules=$("$repo/scripts/node-tools.sh")
generator=$modules/@bitnami/readme-generator-for-helm/bin/index.js
readme=$repo/helm/README.md

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$readme" "$tmp/README.md"
node "$generator" --values "$repo/helm/values.yaml" --readme "$tmp/README.md" >"$tmp/log" 2>&1 || {
    cat "$tmp/log" >&2
    exit 1
}
if [ "${1:-}" = --check ]; then
    if ! diff -u "$readme" "$tmp/README.md" >&2; then
        echo "helm/README.md is stale: run scripts/helm-readme.sh" >&2
        exit 1
    fi
    echo "helm/README.md parameters are up to date"
else
    cp "$tmp/README.md" "$readme"
    echo "wrote $readme"
fi
