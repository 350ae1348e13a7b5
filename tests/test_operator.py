"""Issue 13, section 6: operator hygiene of the ``agentapi`` command: no secret
printed or logged, a busy port is one line and an exit code, ``--version``,
``--log-level`` and ``--log-format``, and a docker-compose.yml that does not
expose the LiteLLM proxy with a default key."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.conftest import MYSQL_SERVER_URL, _mysql_connect, unavailable

ROOT = Path(__file__).resolve().parent.parent
AGENTAPI = [sys.executable, "-m", "server.cli"]
DB_PASSWORD = "pw-" + uuid.uuid4().hex[:12]
UPSTREAM_KEY = "sk-upstream-" + uuid.uuid4().hex[:12]
MASTER_KEY = "sk-master-" + uuid.uuid4().hex[:12]


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENTAPI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="module")
def mysql_with_password() -> Iterator[str]:
    """A MariaDB database and a user with a password: the URL carries a secret."""
    try:
        connection = _mysql_connect()
    except Exception as exc:
        unavailable(f"MariaDB/MySQL not reachable at {MYSQL_SERVER_URL}: {exc}")
    name = f"agentapi_pw_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        for host in ("%", "localhost", "127.0.0.1"):
            cursor.execute(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{DB_PASSWORD}'")
            cursor.execute(f"GRANT ALL ON {name}.* TO '{name}'@'{host}'")
    server = make_url(MYSQL_SERVER_URL)
    url = server.set(username=name, password=DB_PASSWORD, database=name).render_as_string(hide_password=False)
    yield url
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {name}")
        for host in ("%", "localhost", "127.0.0.1"):
            cursor.execute(f"DROP USER '{name}'@'{host}'")
    connection.close()


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("agentapi 0.")


def test_migrate_prints_no_password(mysql_with_password: str) -> None:
    result = _run("migrate", "--database-url", mysql_with_password, "--log-level", "debug")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert DB_PASSWORD not in output
    assert ":***@" in result.stdout
    # A wrong password: one line naming the masked URL, exit 1, no traceback.
    wrong = mysql_with_password.replace(DB_PASSWORD, DB_PASSWORD + "-wrong")
    result = _run("migrate", "--database-url", wrong)
    assert result.returncode == 1
    assert DB_PASSWORD not in result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("agentapi: cannot migrate mysql+aiomysql://")
    assert "Traceback" not in result.stderr


def _serve_until_announced(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    """Starts ``agentapi serve``, waits for its announcement, lets it log for a
    moment, stops it with SIGTERM; returns (stdout, stderr)."""
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [*AGENTAPI, "serve", *args], stdout=stdout, stderr=stderr, cwd=ROOT, env={**os.environ, **env}
        )
        try:
            deadline = time.monotonic() + 30
            while "agentapi upstream:" not in out.read_text():
                assert process.poll() is None, err.read_text()
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
            time.sleep(1.0)  # the catalog refresh fails against the dead upstream, and logs
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    return out.read_text(), err.read_text()


def test_serve_prints_and_logs_no_secret(mysql_with_password: str, tmp_path: Path) -> None:
    """The database password, the upstream key and the master key appear
    nowhere in what ``serve`` prints or logs (at debug level, in JSON)."""
    assert _run("migrate", "--database-url", mysql_with_password).returncode == 0
    env = {"AGENTAPI_LLM_API_KEY": UPSTREAM_KEY, "AGENTAPI_MASTER_KEY": MASTER_KEY}
    args = [
        "--database-url",
        mysql_with_password,
        "--llm-base-url",
        "http://127.0.0.1:9/v1",  # nothing listens: every catalog refresh fails and is logged
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--log-level",
        "debug",
        "--log-format",
        "json",
    ]
    stdout, stderr = _serve_until_announced(args, env, tmp_path)
    for secret in (DB_PASSWORD, UPSTREAM_KEY, MASTER_KEY):
        assert secret not in stdout and secret not in stderr
    assert ":***@" in stdout
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert records, stderr
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert any(record["level"] == "DEBUG" for record in records)


def test_log_level_and_text_format(tmp_path: Path, sqlite_url: str) -> None:
    args = ["--database-url", sqlite_url, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]
    _, stderr = _serve_until_announced([*args, "--log-level", "error"], {}, tmp_path)
    assert " INFO " not in stderr and " WARNING " not in stderr, stderr
    _, stderr = _serve_until_announced(args, {"AGENTAPI_LOG_LEVEL": "info", "AGENTAPI_LOG_FORMAT": "text"}, tmp_path)
    assert " INFO agentapi: shutting down" in stderr, stderr
    result = _run("serve", "--log-format", "yaml")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_a_bad_setting_is_one_line() -> None:
    result = _run("serve", env={"AGENTAPI_MAX_TOOLS": "many"})
    assert result.returncode == 2
    assert result.stderr == "agentapi: AGENTAPI_MAX_TOOLS must be a whole number, not 'many'\n"
    result = _run("migrate", env={"AGENTAPI_MAX_FILTER_DEPTH": "5000", "AGENTAPI_DATABASE_URL": "sqlite+aiosqlite://"})
    assert result.returncode == 2
    assert result.stderr == "agentapi: AGENTAPI_MAX_FILTER_DEPTH must be between 1 and 100, not 5000\n"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process (this one) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("which", ["grpc", "http", "workers-grpc", "workers-http"])
def test_a_busy_port_is_one_line_and_exit_1(busy_port: int, which: str, sqlite_url: str) -> None:
    grpc_addr = f"127.0.0.1:{busy_port if which.endswith('grpc') else _free_port()}"
    http_addr = f"127.0.0.1:{busy_port if which.endswith('http') else _free_port()}"
    workers = ["--workers", "2"] if which.startswith("workers") else []
    result = _run(
        "serve", "--database-url", sqlite_url, "--grpc-addr", grpc_addr, "--http-addr", http_addr, *workers, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"agentapi: cannot listen on 127.0.0.1:{busy_port}: Address already in use\n"


def test_compose_keeps_litellm_private_and_names_each_replica() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    litellm = services["litellm"]
    for port in litellm.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port
    assert litellm["environment"]["LITELLM_MASTER_KEY"].startswith("${LITELLM_MASTER_KEY:?")
    replicas = {name: s for name, s in services.items() if "agentapi" in str(s.get("command", ""))}
    servers = {name: s for name, s in replicas.items() if "serve" in s["command"]}
    assert len(servers) >= 2
    runner_ids = [s["environment"]["AGENTAPI_RUNNER_ID"] for s in servers.values()]
    assert len(set(runner_ids)) == len(runner_ids), runner_ids
    for service in servers.values():
        environment = service["environment"]
        assert environment["AGENTAPI_LLM_API_KEY"].startswith("${LITELLM_MASTER_KEY:?")
        assert environment["AGENTAPI_MASTER_KEY"].startswith("${AGENTAPI_MASTER_KEY:?")
        assert "--migrate" not in service["command"]  # one migration, before the replicas
    text = (ROOT / "docker-compose.yml").read_text()
    assert "sk-litellm-compose" not in text


def test_a_secret_in_a_library_message_is_masked_in_the_log() -> None:
    """An upstream's 401 may quote the key, a driver's error the URL: the log
    filter masks the configured secrets in any record, traceback included."""
    script = (
        "import logging; from server import logs; from server.config import Config\n"
        f"config = Config(llm_api_key={UPSTREAM_KEY!r}, database_url='mysql+aiomysql://u:p%40ss-{DB_PASSWORD}@h/db')\n"
        "logs.setup('info', 'json', secrets=config.secrets)\n"
        f"logging.getLogger('x').critical('upstream said: Received API Key = %s', {UPSTREAM_KEY!r})\n"
        "try:\n"
        f"    raise RuntimeError('cannot connect with p@ss-{DB_PASSWORD}')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('y').exception('failed')\n"
        "logs.mask_also('mcp-token-1234567')\n"
        "logging.getLogger('z').warning('MCP server answered 401 for mcp-token-1234567')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    assert UPSTREAM_KEY not in result.stderr and DB_PASSWORD not in result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records[0]["message"] == "upstream said: Received API Key = ***"
    assert "cannot connect with ***" in records[1]["exc_info"]
    assert records[2]["message"] == "MCP server answered 401 for ***"
