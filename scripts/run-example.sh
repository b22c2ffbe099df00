#!/usr/bin/env bash
# Installs what is missing, builds tpt (release) and runs it on examples/quickstart.yaml
# (or the config given as $1). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake --preset release >/dev/null
cmake --build --preset release --target tpt
exec build/release/tpt -c "${1:-examples/quickstart.yaml}"
