#!/usr/bin/env bash
# Install the LiteLLM proxy into its own virtualenv, pinned exactly.
#
# LiteLLM drags in ~115 packages (fastapi, boto3, azure, polars, ...) whose
# versions would fight with the service's own dependencies, so it lives in a
# separate venv (default: <repo>/.venv-litellm, override with LITELLM_VENV)
# and the tests run its `litellm` CLI as a subprocess.
#
# Pin notes:
#   * 1.82.7 and 1.82.8 were compromised releases: never use them.
#   * 1.103.8 and later (up to 1.109.1 at the time of writing) require
#     certifi>=2026.10.19, which this machine's package index does not carry
#     (newest is 2026.10.18), so 1.103.7 is the newest that installs here.
#
# Idempotent: does nothing if the venv already has exactly this version; a
# broken or partial venv is reused when its interpreter works, else recreated.
# Env: LITELLM_VENV (venv path), PYTHON (interpreter to build the venv from).
set -euo pipefail

LITELLM_VERSION="1.103.7"
# LiteLLM's "otel" callback (the proxy's own spans, joined to agentapi's trace by
# the traceparent it receives) needs the OpenTelemetry SDK and OTLP exporter,
# which litellm[proxy] does not bring: the same versions as agentapi's.
OTEL_PACKAGES=(opentelemetry-api==1.45.1 opentelemetry-sdk==1.45.1 opentelemetry-exporter-otlp-proto-http==1.45.1)

case "$LITELLM_VERSION" in
  1.82.7 | 1.82.8)
    echo "refusing compromised litellm $LITELLM_VERSION" >&2
    exit 1
    ;;
esac

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LITELLM_VENV:-$repo_root/.venv-litellm}"
python="${PYTHON:-python3}"

installed_version() {
  "$venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true
}

has_otel() {
  "$venv/bin/python" -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http' >/dev/null 2>&1
}

if [[ "$(installed_version)" == "$LITELLM_VERSION" && -x "$venv/bin/litellm" ]] && has_otel; then
  echo "litellm $LITELLM_VERSION already installed in $venv"
  exit 0
fi

if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "creating venv $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi

echo "installing litellm[proxy]==$LITELLM_VERSION into $venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
  "litellm[proxy]==$LITELLM_VERSION" "${OTEL_PACKAGES[@]}"

got="$(installed_version)"
if [[ "$got" != "$LITELLM_VERSION" ]]; then
  echo "expected litellm $LITELLM_VERSION in $venv, found '${got:-nothing}'" >&2
  exit 1
fi
echo "litellm $got installed in $venv"
