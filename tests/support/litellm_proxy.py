"""Run a real LiteLLM proxy (from ``.venv-litellm``) in front of an upstream.

``LiteLLMProxy(upstream.base_url)`` writes a config to a temp dir that routes
``scripted-a``, ``scripted-b``, ``scripted-c`` and, through a ``*`` wildcard,
any other model name to the upstream as OpenAI-compatible models
(``openai/<name>``), with LiteLLM's retries off, and starts
``litellm --config ... --host 127.0.0.1 --port <free>`` offline: no database,
local cost map, no telemetry. Clients use ``f"{proxy.base_url}/v1"`` with
``proxy.master_key`` as the API key. Install the venv with
``scripts/install-litellm.sh``.

Findings (LiteLLM 1.103.7 against tests/support/upstream.py)
------------------------------------------------------------
* Startup takes ~5.5 s; the proxy calls the upstream's ``GET /v1/models``
  three times while starting (wildcard discovery).
* Upstream HTTP errors keep their status, streaming or not (the proxy calls
  upstream before it starts its own response): 400/401/404/429/500/503/418
  come back as the same status with body
  ``{"error": {"message": "litellm.<Class>: ... <upstream message> ...",
  "type": ..., "param": null, "code": "<status as a string>"}}``. Types:
  429 ``throttling_error``; 500 and 503 ``internal_server_error``; 400, 401,
  404 ``invalid_request_error``. ``[[error:context]]`` gives 400 with message
  ``litellm.ContextWindowExceededError: ...`` (the upstream's "maximum context
  length" text is kept) and code ``"400"``: the ``context_length_exceeded``
  code is NOT passed on. The upstream's ``Retry-After`` is NOT forwarded.
  The openai SDK maps these to RateLimitError, InternalServerError,
  BadRequestError, ... as usual.
* Router cooldowns are disabled in the config: with them on, one upstream
  401/404/400 makes every later request to that model a 429
  ``all_deployments_in_cooldown`` for ~5 s.
* An upstream that drops mid-stream: if the proxy had already started the
  response it sends ``data: {"error": {..., "code": "500"}}`` and ends the
  stream without ``[DONE]`` (the openai SDK raises ``openai.APIError``); if
  the drop came before its first chunk went out (e.g. a fast upstream) it
  answers HTTP 500 JSON instead. A non-streaming drop is a 500.
* ``x-litellm-response-cost`` is sent on non-streaming successes when the
  model has a price (here ``PRICES`` for the named models, e.g. ``8e-06``);
  it is absent on streams and on wildcard (unpriced) models, and ``0`` on
  errors. Streams with ``stream_options.include_usage`` get the cost as
  ``usage.cost`` in the final usage chunk (priced models only).
* The proxy always asks the upstream for ``stream_options.include_usage``,
  but only passes the usage chunk on if the client asked for it.
* Closing a client stream closes the proxy's upstream stream within ~0.2 s
  (``ScriptedUpstream.disconnects`` goes up).
* ``GET /v1/models`` through the proxy lists the three named models and then
  every ``openai/...`` model of LiteLLM's cost map (because of the wildcard).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import httpx

from tests.support.service_process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-litellm"
MODELS = ("scripted-a", "scripted-b", "scripted-c")
# Prices given to the named models, so the proxy can compute a response cost.
PRICES = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}

# Everything LiteLLM would otherwise fetch from the internet at startup.
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}
# Inherited variables that would make the proxy want a database, cache or keys.
_DROP_ENV = ("DATABASE_URL", "DIRECT_URL", "REDIS_HOST", "REDIS_URL", "LITELLM_MASTER_KEY", "STORE_MODEL_IN_DB")


def available(venv: str | os.PathLike[str] = DEFAULT_VENV) -> tuple[bool, str]:
    """``(True, "")`` if ``venv`` has the ``litellm`` CLI, else ``(False, reason)``."""
    exe = Path(venv) / "bin" / "litellm"
    if exe.is_file() and os.access(exe, os.X_OK):
        return True, ""
    return False, f"LiteLLM venv not found at {exe}: run scripts/install-litellm.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(upstream_base_url: str, master_key: str, otel: bool = False) -> str:
    """The proxy config YAML (JSON is valid YAML, and needs no yaml package);
    ``otel`` turns on LiteLLM's OpenTelemetry callback."""

    def route(name: str, **model_info: float) -> dict:
        params = {"model": f"openai/{name}", "api_base": upstream_base_url, "api_key": "sk-upstream"}
        return {"model_name": name, "litellm_params": params, "model_info": model_info}

    return json.dumps(
        {
            "model_list": [route(m, **PRICES) for m in MODELS] + [route("*")],
            "litellm_settings": {
                "num_retries": 0,
                "request_timeout": 60,
                **({"callbacks": ["otel"]} if otel else {}),
            },
            # Without disable_cooldowns one upstream 4xx/5xx benches the model and
            # later requests get 429 "No deployments available" for ~5 s.
            "router_settings": {"num_retries": 0, "disable_cooldowns": True},
            "general_settings": {"master_key": master_key},
        },
        indent=2,
    )


class LiteLLMProxy(ServiceProcess):
    """A LiteLLM proxy subprocess routing to ``upstream_base_url`` (``http://.../v1``).

    ``start(timeout=90)`` launches it and waits until ``/health/liveliness``
    answers (``RuntimeError`` with the log tail if it dies or times out);
    ``stop()`` terminates it (SIGTERM, then SIGKILL after 10 s) and removes
    the temp dir. Also a context manager. ``base_url`` is
    ``http://127.0.0.1:PORT`` (append ``/v1`` for OpenAI clients);
    ``log_path`` holds the proxy's stdout and stderr.
    """

    def __init__(
        self,
        upstream_base_url: str,
        master_key: str = "sk-litellm-test",
        venv: str | os.PathLike[str] = DEFAULT_VENV,
        otel_endpoint: str | None = None,
    ) -> None:
        self.upstream_base_url = upstream_base_url.rstrip("/")
        # An OTLP/HTTP traces URL: the proxy exports its spans there, continuing
        # the trace of the traceparent each request carries.
        self.otel_endpoint = otel_endpoint
        self.master_key = master_key
        self.venv = Path(venv)
        self.port: int | None = None
        self.log_path: Path | None = None
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LiteLLMProxy is not started")
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the proxy's log."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self, timeout: float = 90.0) -> Self:
        if self._proc is not None:
            return self
        ok, reason = available(self.venv)
        if not ok:
            raise RuntimeError(reason)
        self._dir = tempfile.mkdtemp(prefix="litellm-proxy-")
        config = Path(self._dir) / "config.yaml"
        config.write_text(_config(self.upstream_base_url, self.master_key, otel=self.otel_endpoint is not None))
        self.log_path = Path(self._dir) / "proxy.log"
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV and not k.startswith("OTEL_")} | _OFFLINE_ENV
        if self.otel_endpoint is not None:
            env |= {"OTEL_EXPORTER": "otlp_http", "OTEL_ENDPOINT": self.otel_endpoint, "OTEL_SERVICE_NAME": "litellm"}
        cmd = [
            str(self.venv / "bin" / "litellm"),
            "--config", str(config),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--telemetry", "False",
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, cwd=self._dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"LiteLLM proxy exited with code {code} during startup:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/health/liveliness", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"LiteLLM proxy not ready after {timeout:.0f}s:\n{tail}")
            time.sleep(0.25)
