#!/usr/bin/env bash
# Install Arize Phoenix (the trace backend the tests export to) into its own
# virtualenv, pinned exactly, like LiteLLM (scripts/install-litellm.sh).
#
# Phoenix brings ~250 packages (its own FastAPI, SQLAlchemy, pandas, an
# OpenTelemetry SDK) that would fight the service's pins, so it lives in a
# separate venv (default: <repo>/.venv-phoenix, override with PHOENIX_VENV)
# and the tests start its `phoenix serve` as a subprocess
# (tests/support/phoenix.py). 20.26.1 is the newest release this machine's
# package index carries.
#
# Idempotent: does nothing if the venv already has exactly this version.
# Env: PHOENIX_VENV (venv path), PYTHON (interpreter to build the venv from).
set -euo pipefail

PHOENIX_VERSION="20.26.1"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PHOENIX_VENV:-$repo_root/.venv-phoenix}"
python="${PYTHON:-python3}"

installed_version() {
  "$venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("arize-phoenix"))' 2>/dev/null || true
}

if [[ "$(installed_version)" == "$PHOENIX_VERSION" && -x "$venv/bin/phoenix" ]]; then
  echo "arize-phoenix $PHOENIX_VERSION already installed in $venv"
  exit 0
fi

if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "creating venv $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi

echo "installing arize-phoenix==$PHOENIX_VERSION into $venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet "arize-phoenix==$PHOENIX_VERSION"

got="$(installed_version)"
if [[ "$got" != "$PHOENIX_VERSION" ]]; then
  echo "expected arize-phoenix $PHOENIX_VERSION in $venv, found '${got:-nothing}'" >&2
  exit 1
fi
echo "arize-phoenix $got installed in $venv"
