"""The processes of a bench run: the upstream, the COMMIT-delaying proxy, the
LiteLLM proxy and the agentapi servers; fresh MariaDB databases; CPU and memory
readings of each process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pymysql
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
MYSQL_SERVER_URL = os.environ.get("AGENTAPI_BENCH_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306/")
MASTER_KEY = "sk-bench-master"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Proc:
    """A child process we started; stopped by its own pid only."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _spawn(name: str, cmd: list[str], logs: Path, env: dict[str, str] | None = None) -> Proc:
    log_path = logs / f"{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it
    popen = subprocess.Popen(
        cmd, cwd=REPO, env=env or os.environ.copy(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return Proc(name, popen, log_path)


def _wait_for_lines(proc: Proc, prefix: str, count: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in proc.log_tail(200).splitlines() if line.startswith(prefix)]
        if len(found) >= count:
            return found[:count]
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not start:\n{proc.log_tail()}")


def start_upstream(logs: Path, pace_ms: float, deltas: int) -> Proc:
    cmd = [sys.executable, "-m", "bench.upstream", "--pace-ms", str(pace_ms), "--deltas", str(deltas)]
    proc = _spawn("upstream", cmd, logs)
    proc.ports["http"] = int(_wait_for_lines(proc, "listening ", 1)[0].split()[1])
    return proc


def start_dbproxy(logs: Path, delays_ms: list[float]) -> Proc:
    url = make_url(MYSQL_SERVER_URL)
    target = f"{url.host or '127.0.0.1'}:{url.port or 3306}"
    cmd = [sys.executable, "-m", "bench.dbproxy", "--target", target]
    for delay in delays_ms:
        cmd += ["--delay-ms", str(delay)]
    proc = _spawn("dbproxy", cmd, logs)
    for line in _wait_for_lines(proc, "listening ", len(delays_ms)):
        _, port, delay = line.split()
        proc.ports[f"delay{float(delay):g}"] = int(port)
    return proc


def start_agentapi(
    name: str,
    logs: Path,
    database_url: str,
    llm_base_url: str,
    llm_api_key: str,
    wrapper: list[str] | None = None,
    workers: int = 1,
) -> Proc:
    """``agentapi serve --migrate`` (gRPC and the bridge in one process, as
    shipped; ``workers`` > 1: that many processes sharing both ports)."""
    grpc_port, http_port = free_port(), free_port()
    env = os.environ.copy() | {
        "AGENTAPI_DATABASE_URL": database_url,
        "AGENTAPI_LLM_BASE_URL": llm_base_url,
        "AGENTAPI_LLM_API_KEY": llm_api_key,
        "AGENTAPI_MASTER_KEY": MASTER_KEY,
        "AGENTAPI_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "AGENTAPI_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "AGENTAPI_RUNNER_ID": f"bench-{name}",
        "AGENTAPI_WORKERS": str(workers),
    }
    cmd = [sys.executable, *(wrapper or ["-m"]), "server.cli", "serve", "--migrate"]
    proc = _spawn(f"agentapi-{name}", cmd, logs, env)
    proc.ports.update(grpc=grpc_port, http=http_port)
    return proc


def wait_http(proc: Proc, url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            break
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}:\n{proc.log_tail()}")


class MariaDB:
    """Fresh databases on the MariaDB server, dropped at the end of the run."""

    def __init__(self) -> None:
        self.url = make_url(MYSQL_SERVER_URL)
        self.run = uuid.uuid4().hex[:8]
        self.names: list[str] = []

    def _connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            host=self.url.host or "127.0.0.1",
            port=self.url.port or 3306,
            user=self.url.username or "root",
            password=self.url.password or "",
            connect_timeout=3,
        )

    def create(self, suffix: str, port: int | None = None) -> str:
        name = f"agentapi_bench_{self.run}_{suffix}"
        with self._connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        self.names.append(name)
        url = self.url.set(database=name)
        if port is not None:
            url = url.set(host="127.0.0.1", port=port)
        return url.render_as_string(hide_password=False)

    def variables(self) -> dict[str, str]:
        with self._connect() as connection, connection.cursor() as cursor:
            cursor.execute(
                "SHOW VARIABLES WHERE Variable_name IN ('version', 'innodb_flush_log_at_trx_commit', "
                "'sync_binlog', 'log_bin', 'innodb_buffer_pool_size')"
            )
            return {k: v for k, v in cursor.fetchall()}

    def drop_all(self) -> None:
        if not self.names:
            return
        with self._connect() as connection, connection.cursor() as cursor:
            for name in self.names:
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        self.names = []


def _tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of a process and (by default) its children."""
    total = 0.0
    for process in _tree(pid) if children else _tree(pid)[:1]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children."""
    total = 0
    for process in _tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class CpuMeter:
    """CPU seconds of our processes, and of everything else on the machine, over a window."""

    def __init__(self, pids: dict[str, int]) -> None:
        """``pids`` by name; ``bench`` (the load generator, parent of the others) counts without its children."""
        self.pids = pids
        self.start: dict[str, float] = {}
        self.total_start = 0.0
        self.wall_start = 0.0

    @staticmethod
    def _machine() -> float:
        times = psutil.cpu_times()
        return (
            times.user
            + times.system
            + getattr(times, "nice", 0.0)
            + getattr(times, "irq", 0.0)
            + getattr(times, "softirq", 0.0)
        )

    def begin(self) -> None:
        self.start = {name: cpu_seconds(pid, name != "bench") for name, pid in self.pids.items()}
        self.total_start = self._machine()
        self.wall_start = time.perf_counter()

    def end(self) -> dict[str, float]:
        """Cores used (CPU seconds per wall second) by each process, by all of
        them, and by the rest of the machine (``other``: other users' load)."""
        wall = time.perf_counter() - self.wall_start
        used = {name: (cpu_seconds(pid, name != "bench") - self.start[name]) / wall for name, pid in self.pids.items()}
        machine = (self._machine() - self.total_start) / wall
        used["other"] = max(0.0, machine - sum(used.values()))
        return {k: round(v, 3) for k, v in used.items()} | {"wall_s": round(wall, 2)}


async def wait_quiet(limit_s: float, below_cores: float = 0.3, sample_s: float = 0.25) -> tuple[float, float]:
    """Waits until the whole machine used fewer than ``below_cores`` over one
    ``sample_s`` sample, or ``limit_s`` passed. An overloaded arm's server (or
    the LiteLLM proxy) keeps working through its backlog after the load
    generator gave up on it; without this that work lands in the next arm's
    window. Returns (seconds waited, cores used in the last sample)."""
    started = time.perf_counter()
    used = 0.0
    while limit_s > 0:
        before = CpuMeter._machine()
        await asyncio.sleep(sample_s)
        used = (CpuMeter._machine() - before) / sample_s
        if used < below_cores or time.perf_counter() - started >= limit_s:
            break
    return round(time.perf_counter() - started, 2), round(used, 3)
