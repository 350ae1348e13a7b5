#!/usr/bin/env bash
# Run the pinned buf (npm devDependency @bufbuild/buf) from the repo root.
# Usage: scripts/buf.sh lint | format -d --exit-code | build | breaking --against ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -x node_modules/.bin/buf ]]; then
  npm ci --silent
fi
exec node_modules/.bin/buf "$@"
