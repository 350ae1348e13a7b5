"""``agentapi serve --workers N`` as a real process tree: N workers share the
gRPC port and the bridge port (SO_REUSEPORT), each is its own runner in the
ledger, SIGTERM drains them all (exit 0), a killed worker is restarted and
recovers the turn it lost, and the configuration errors are refused."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from agentapi import v1 as pb
from server.config import Config
from server.workers import bind_socket
from tests.helpers import process_exit, user
from tests.stack import free_port
from tests.support.upstream import ScriptedUpstream
from tests.test_faults_process import COMMAND, REPO, db_rows, first_delta

KEY = "sk-workers"
AUTH = (("authorization", f"Bearer {KEY}"),)


class Workers:
    """One ``agentapi serve --workers N`` parent process on fixed free ports."""

    def __init__(self, database_url: str, log: Path, workers: int = 2, llm_base_url: str = "") -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.runner = f"workers-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "AGENTAPI_DATABASE_URL": database_url,
            "AGENTAPI_MASTER_KEY": KEY,
            "AGENTAPI_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "AGENTAPI_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "AGENTAPI_RUNNER_ID": self.runner,
            "AGENTAPI_WORKERS": str(workers),
            "AGENTAPI_LLM_BASE_URL": llm_base_url,
            "AGENTAPI_LLM_API_KEY": "unused",
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout_s: float = 60.0) -> Workers:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                COMMAND, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while "agentapi workers: " not in self.text():
            assert self.process.poll() is None, f"agentapi exited during start-up:\n{self.text()}"
            assert time.monotonic() < deadline, f"agentapi did not start:\n{self.text()}"
            await asyncio.sleep(0.1)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> dict[int, int]:
        """The newest pid of each worker index, from the parent's log."""
        return {int(i): int(p) for i, p in re.findall(r"worker w(\d+) \(pid (\d+)\) serving", self.text())}

    async def exit_code(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        return await process_exit(self.process, timeout_s, self.text)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # only the parent this test started, by its pid; its workers follow (PDEATHSIG)
            self.process.wait(10)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[list[Workers]]:
    servers: list[Workers] = []
    yield servers
    for server in servers:
        server.close()


def channel(port: int) -> grpc.aio.Channel:
    """A channel with a connection of its own (not shared through the global
    subchannel pool), so the kernel picks a worker for it afresh."""
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


async def grpc_turn(port: int, model: str = "agentapi-offline") -> str:
    """One non-streamed turn on a new connection; the id of the stored reply."""
    async with channel(port) as ch:
        sessions = pb.SessionServiceStub(ch)
        request = pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model=model)))
        session = (await sessions.CreateSession(request, metadata=AUTH)).session
        reply = await sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("hello workers")]), metadata=AUTH
        )
    assert reply.message.status == pb.MESSAGE_STATUS_COMPLETED
    assert reply.message.content.endswith(": hello workers")  # the offline model's "You said", the upstream's "Echo"
    return reply.message.id


async def http_turn(port: int) -> str:
    """One chat completion over the bridge on a new connection; the stored session id."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "agentapi-offline", "messages": [{"role": "user", "content": "hello bridge"}]},
        )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "You said: hello bridge"
    return response.headers["x-session-id"]


async def test_two_workers_share_both_ports_and_stop_cleanly_on_sigterm(
    mariadb_url: str, started: list[Workers], tmp_path: Path
) -> None:
    server = Workers(mariadb_url, tmp_path / "agentapi.log")
    started.append(server)
    await server.start()
    text = server.text()
    assert f"agentapi gRPC listening on 127.0.0.1:{server.grpc_port}\n" in text
    assert f"agentapi JSON bridge listening on http://127.0.0.1:{server.http_port} " in text
    assert "rate limits count in each of the 2 workers" in text  # no Redis configured
    pids = server.pids()
    assert sorted(pids) == [0, 1] and len(set(pids.values())) == 2
    expected = {f"{server.runner}/w0", f"{server.runner}/w1"}

    # Each turn on a new connection: the kernel spreads them over both workers.
    grpc_runners: set[str] = set()
    for _ in range(40):
        message_id = await grpc_turn(server.grpc_port)
        ((runner,),) = await db_rows(mariadb_url, "SELECT runner_id FROM messages WHERE id = :i", i=message_id)
        grpc_runners.add(runner)
        if grpc_runners == expected:
            break
    assert grpc_runners == expected
    # A worker's bridge calls that worker's gRPC server: both bridges served.
    http_runners: set[str] = set()
    for _ in range(40):
        session_id = await http_turn(server.http_port)
        rows = await db_rows(
            mariadb_url, "SELECT runner_id FROM messages WHERE session_id = :s AND role = 'assistant'", s=session_id
        )
        http_runners |= {runner for (runner,) in rows}
        if http_runners == expected:
            break
    assert http_runners == expected

    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert await server.exit_code() == 0
    text = server.text()
    assert "[w0] agentapi: stopped" in text and "[w1] agentapi: stopped" in text
    assert "all workers stopped" in text
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the parent"
    in_progress = await db_rows(
        mariadb_url,
        "SELECT id FROM messages WHERE status = 'in_progress' AND runner_id LIKE :r",
        r=f"{server.runner}/%",
    )
    assert in_progress == []


async def test_a_killed_worker_is_restarted_and_recovers_its_lost_turn(
    mariadb_url: str, upstream: ScriptedUpstream, started: list[Workers], tmp_path: Path
) -> None:
    server = Workers(mariadb_url, tmp_path / "agentapi.log", llm_base_url=upstream.base_url)
    started.append(server)
    await server.start()
    before = server.pids()
    async with channel(server.grpc_port) as ch:
        sessions = pb.SessionServiceStub(ch)
        request = pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a")))
        session_id = (await sessions.CreateSession(request, metadata=AUTH)).session.id
        words = " ".join(f"w{i}" for i in range(40))
        call = sessions.SendStreamingMessage(
            pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(f"{words} [[slow:200]]")]),
            metadata=AUTH,
        )
        received = await first_delta(call)
        assert received[-1].HasField("delta")
        ((reply_id, runner),) = await db_rows(
            mariadb_url,
            "SELECT id, runner_id FROM messages WHERE session_id = :s AND status = 'in_progress'",
            s=session_id,
        )
        index = int(runner.rsplit("/w", 1)[1])
        os.kill(before[index], signal.SIGKILL)  # a worker this test's parent process started
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in call:
                pass
    deadline = time.monotonic() + 60
    while server.pids()[index] == before[index]:
        assert time.monotonic() < deadline, f"worker w{index} was not restarted:\n{server.text()}"
        await asyncio.sleep(0.1)
    assert f"worker w{index} (pid {before[index]}) exited with code -9: restarting it" in server.text()
    # The new process is the same runner: at start-up (it may still be starting) it fails the turn it lost.
    while True:
        query = "SELECT status, error FROM messages WHERE id = :i"
        ((status, error),) = await db_rows(mariadb_url, query, i=reply_id)
        if status != "in_progress" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert status == "failed" and "INTERRUPTED" in error
    await grpc_turn(server.grpc_port, "scripted-a")  # still serving
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    assert await server.exit_code() == 0


async def test_a_worker_that_cannot_start_stops_the_others_and_fails(started: list[Workers], tmp_path: Path) -> None:
    # The parent never opens the database; each worker fails on this URL.
    server = Workers("nosuchdialect://nowhere/db", tmp_path / "agentapi.log")
    started.append(server)
    with open(server.log, "ab") as out:
        server.process = subprocess.Popen(COMMAND, env=server.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    assert await server.exit_code(60) == 1, server.text()
    assert "before it served: stopping" in server.text()
    assert "listening on" not in server.text()


def _serve(*args: str, env: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], env={**os.environ, **(env or {})}, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_workers_refuse_a_picked_port() -> None:
    result = _serve("--workers", "2", "--grpc-addr", "127.0.0.1:0", "--http-addr", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "2 workers share one port: 127.0.0.1:0 would give each its own" in result.stderr


def test_workers_refuse_a_port_already_taken(sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _serve(
            "--workers",
            "2",
            "--database-url",
            sqlite_url,
            "--grpc-addr",
            f"127.0.0.1:{free_port()}",
            "--http-addr",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_config_workers_and_event_loop() -> None:
    env = {"AGENTAPI_WORKERS": "3", "AGENTAPI_EVENT_LOOP": "uvloop"}
    config = Config.from_env(env)
    assert (config.workers, config.event_loop) == (3, "uvloop")
    assert Config.from_env({}).event_loop == "asyncio"
    assert Config.from_env(env, workers=1).workers == 1
    with pytest.raises(ValueError, match="share one port"):
        Config(workers=2, http_addr="127.0.0.1:0").check()
    Config(workers=2, http_addr="127.0.0.1:0").check(only="grpc")  # the bridge does not run
    Config(workers=1, grpc_addr="127.0.0.1:0").check()
    with pytest.raises(ValueError, match="unknown event loop"):
        Config(event_loop="trio").check()
    with pytest.raises(ValueError, match="at least 1"):
        Config(workers=0).check()


@pytest.mark.parametrize("reuse_port", [False, True])
async def test_bridge_socket_sends_small_writes_at_once(reuse_port: bool) -> None:
    """The bridge's accepted connections have TCP_NODELAY: an SSE response is
    headers then one small write per event, and with Nagle on each event waited
    for the client's delayed ACK (40 ms a response, seen in the benchmark)."""
    sock = bind_socket("127.0.0.1:0", reuse_port=reuse_port)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connection, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
