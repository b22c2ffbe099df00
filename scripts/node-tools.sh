#!/usr/bin/env bash
# Prints the node_modules directory holding the npm packages the Kubernetes tests use,
# installing them into <repo>/.tools/node-<hash>/ (gitignored) only when missing:
#   kubernetes-models, @kubernetes-models/prometheus-operator  the Kubernetes and Prometheus
#       Operator OpenAPI types, for the strict schema check of every rendered manifest
#       (e2e/k8s_schema.mjs);
#   @bitnami/readme-generator-for-helm  the parameters table of helm/README.md from the
#       `## @param` comments of helm/values.yaml (scripts/helm-readme.sh).
# Versions are pinned here; a new pin installs into a new directory. Needs node and npm
# (scripts/deps.sh test installs Debian's npm when none is there).
set -euo pipefail

packages=(kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0
    @bitnami/readme-generator-for-helm@2.7.2)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hash=$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-12)
home=$repo/.tools/node-$hash

if [ -f "$home/.complete" ]; then
    echo "$home/node_modules"
    exit 0
fi
command -v npm >/dev/null || { echo "node-tools.sh: npm is missing (scripts/deps.sh test)" >&2; exit 2; }
mkdir -p "$repo/.tools"
staging=$(mktemp -d "$repo/.tools/node-staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "node-tools.sh: npm install ${packages[*]}" >&2
# --prefer-offline: what the npm cache holds is used without asking the registry again (a
# fresh machine fetches everything; a repeat run, or one while the registry is unreachable,
# does not wait on retries).
npm install --prefer-offline --prefix "$staging" --no-audit --no-fund --loglevel=error "${packages[@]}" >&2
touch "$staging/.complete"
# Rename into place: a concurrent caller sees either nothing or the whole tree.
mv -T "$staging" "$home" 2>/dev/null || true
echo "$home/node_modules"
