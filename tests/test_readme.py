"""The README's quickstart runs as written, twice: every Python snippet (and
the curl one, when curl is installed) against a ``make run``-like server
(``agentapi serve --migrate``, SQLite, the offline model, with
``AGENTAPI_SECRET_KEY`` as the MCP section asks) and the example MCP server,
only the ports changed to free ones."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# docs/grpc-stubs.md holds the raw-stub version of the quickstart: it runs too.
STUBS_DOC = (ROOT / "docs" / "grpc-stubs.md").read_text()
PYTHON_SNIPPETS = re.findall(r"```python\n(.*?)```", README + STUBS_DOC, re.S)
CURL_SNIPPETS = [block for block in re.findall(r"```sh\n(.*?)```", README, re.S) if "curl -s" in block]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``agentapi serve --migrate`` as ``make run`` starts it (development key,
    offline model, SQLite), in a directory of its own, on free ports."""
    workdir = tmp_path_factory.mktemp("readme")
    ports = {
        "127.0.0.1:50051": f"127.0.0.1:{free_port()}",
        "127.0.0.1:8080": f"127.0.0.1:{free_port()}",
        "127.0.0.1:8765": f"127.0.0.1:{free_port()}",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTAPI_")}
    env |= {"PYTHONPATH": str(ROOT), "AGENTAPI_SECRET_KEY": "change-me"}
    commands = {
        "serve": [sys.executable, "-m", "server.cli", "serve", "--migrate"]
        + ["--grpc-addr", ports["127.0.0.1:50051"], "--http-addr", ports["127.0.0.1:8080"]],
        "mcp": [sys.executable, str(ROOT / "examples" / "mcp_server.py"), "--api-key", "s3cret"]
        + ["--port", ports["127.0.0.1:8765"].rsplit(":", 1)[1]],
    }
    ready = {"serve": "development master key", "mcp": "MCP server at"}
    processes = {}
    try:
        for name, command in commands.items():
            log = workdir / f"{name}.log"
            with log.open("w") as out:
                processes[name] = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while ready[name] not in log.read_text():
                assert processes[name].poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield ports
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def _localized(snippet: str, ports: dict[str, str]) -> str:
    for documented, actual in ports.items():
        snippet = snippet.replace(documented, actual)
    return snippet


def test_the_readme_has_the_snippets() -> None:
    assert len(PYTHON_SNIPPETS) >= 4 and CURL_SNIPPETS


@pytest.mark.parametrize("index", range(len(PYTHON_SNIPPETS)))
def test_python_snippet_runs_twice(served: dict[str, str], index: int, tmp_path: Path) -> None:
    script = tmp_path / f"snippet{index}.py"
    script.write_text(_localized(PYTHON_SNIPPETS[index], served))
    for run in (1, 2):
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, f"run {run} of snippet {index}:\n{script.read_text()}\n{result.stderr}"


def run_curls(served: dict[str, str], tmp_path: Path, marker: str) -> subprocess.CompletedProcess[str]:
    """Runs the README's one curl block containing ``marker`` (skips without curl); asserts it exits 0."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    [snippet] = [block for block in CURL_SNIPPETS if marker in block]
    script = tmp_path / "snippet.sh"
    script.write_text("set -euo pipefail\n" + _localized(snippet, served))
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result


def test_curl_snippet_runs_twice(served: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    script = tmp_path / "curl.sh"
    # The session id must have been read from the first response's headers.
    snippet = re.sub(r"^(SESSION_ID=.*)$", r'\1\ntest -n "$SESSION_ID"', CURL_SNIPPETS[0], flags=re.M)
    script.write_text("set -euo pipefail\n" + _localized(snippet, served))
    for run in (1, 2):
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 0, f"run {run}:\n{result.stderr}"
        assert "data: [DONE]" in result.stdout, result.stdout


def test_the_routing_mode_curls_answer(served: dict[str, str], tmp_path: Path) -> None:
    result = run_curls(served, tmp_path, "X-Routing-Mode")
    assert result.stdout.count('"reasoning_content"') == 2, "reasoning, and auto routed to reasoning, show a plan"


def test_the_history_curls_regenerate_and_fork(served: dict[str, str], tmp_path: Path) -> None:
    result = run_curls(served, tmp_path, ":regenerate")
    assert "assistantMessage" in result.stdout and '"parentSessionId"' in result.stdout, result.stdout[-500:]


def test_the_durable_run_curls_poll_rejoin_and_cancel(served: dict[str, str], tmp_path: Path) -> None:
    result = run_curls(served, tmp_path, ":cancel")
    assert "id: 3" in result.stdout and "id: 2\n" not in result.stdout, result.stdout[-800:]
    assert "assistantMessage" in result.stdout and result.stdout.count('"status"') >= 2, result.stdout[-800:]


def test_the_observability_curls_run_a_tool_and_count_it(served: dict[str, str], tmp_path: Path) -> None:
    result = run_curls(served, tmp_path, "/metrics")
    assert "Tool calculator returned: 42" in result.stdout, result.stdout
    # The server is shared with the other snippets, which call the calculator too.
    counted = r'^agentapi_tool_calls_total\{executor="builtin",outcome="ok",tool="calculator"\} [1-9]'
    assert re.search(counted, result.stdout, re.M), result.stdout
