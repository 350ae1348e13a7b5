"""Run a real Arize Phoenix (from ``.venv-phoenix``) as the trace backend of the tests.

``Phoenix().start()`` runs ``phoenix serve`` on free loopback ports with a
temp working directory (its SQLite database), and waits for ``/healthz``.
It receives OTLP over HTTP at ``otlp_traces_url`` (``/v1/traces`` on its web
port) and serves spans back through its REST API: :meth:`spans` lists a
project's spans of one trace. Install the venv with
``scripts/install-phoenix.sh``.

Findings (Phoenix 20.26.1)
--------------------------
* Start-up takes ~5-10 s (migrations of its own SQLite database).
* Spans land in the project named by the resource attribute
  ``openinference.project.name``, else in ``default``.
* ``GET /v1/projects/{project}/spans?trace_id=...`` returns ``{"data": [...],
  "next_cursor": ...}``; each span has ``name``, ``context.trace_id``,
  ``context.span_id``, ``parent_id``, ``span_kind``, ``status_code`` and
  ``attributes`` (a flat dict; array values as lists).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx

from tests.support.litellm_proxy import _free_port
from tests.support.service_process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-phoenix"


def available(venv: str | os.PathLike[str] = DEFAULT_VENV) -> tuple[bool, str]:
    """``(True, "")`` if ``venv`` has the ``phoenix`` CLI, else ``(False, reason)``."""
    exe = Path(venv) / "bin" / "phoenix"
    if exe.is_file() and os.access(exe, os.X_OK):
        return True, ""
    return False, f"Phoenix venv not found at {exe}: run scripts/install-phoenix.sh"


class Phoenix(ServiceProcess):
    """A ``phoenix serve`` subprocess; ``stop()`` terminates it (by its pid) and removes its directory."""

    def __init__(self, venv: str | os.PathLike[str] = DEFAULT_VENV) -> None:
        self.venv = Path(venv)
        self.port: int | None = None
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("Phoenix is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_traces_url(self) -> str:
        """Where OTLP/HTTP exporters send spans (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)."""
        return f"{self.base_url}/v1/traces"

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self, timeout: float = 120.0) -> Self:
        ok, reason = available(self.venv)
        if not ok:
            raise RuntimeError(reason)
        self._dir = tempfile.mkdtemp(prefix="phoenix-")
        self.port = _free_port()
        self.log_path = Path(self._dir) / "phoenix.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))},
            "PHOENIX_WORKING_DIR": self._dir,
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(_free_port()),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [str(self.venv / "bin" / "phoenix"), "serve"],
                cwd=self._dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"Phoenix exited during startup:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"Phoenix not ready after {timeout:.0f}s:\n{tail}")
            time.sleep(0.25)

    async def spans(self, trace_id: str, project: str = "default") -> list[dict[str, Any]]:
        """Every span Phoenix holds of ``trace_id`` (32 hex digits) in ``project``."""
        found: list[dict[str, Any]] = []
        cursor = None
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            while True:
                params: dict[str, Any] = {"trace_id": trace_id, "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                response = await http.get(f"/v1/projects/{project}/spans", params=params)
                if response.status_code == 404:  # no span in the project yet
                    return found
                response.raise_for_status()
                body = response.json()
                found.extend(body.get("data") or [])
                cursor = body.get("next_cursor")
                if not cursor:
                    return found
