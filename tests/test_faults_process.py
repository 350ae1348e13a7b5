"""Process faults against real ``agentapi serve`` subprocesses: SIGTERM in the
middle of a streamed turn (health NOT_SERVING, new calls refused UNAVAILABLE,
the turn finishes within the grace period or is stored CANCELLED, the process
exits cleanly with no half-written rows), and SIGKILL followed by a restart
with the same runner id (the turn it lost is marked FAILED / INTERRUPTED and
its idempotency key is released)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentapi import errors
from agentapi import v1 as pb
from tests.helpers import process_exit, user
from tests.stack import free_port
from tests.support.upstream import ScriptedUpstream

KEY = "sk-faults-process"
AUTH = (("authorization", f"Bearer {KEY}"),)
REPO = Path(__file__).resolve().parents[1]
_AGENTAPI = Path(sys.executable).parent / "agentapi"
COMMAND = [str(_AGENTAPI), "serve"] if _AGENTAPI.exists() else [sys.executable, "-m", "server.cli", "serve"]


class Server:
    """One ``agentapi serve`` process with its own ports; a client channel to it."""

    def __init__(self, database_url: str, llm_base_url: str, runner_id: str, grace_s: float, log: Path) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "AGENTAPI_DATABASE_URL": database_url,
            "AGENTAPI_LLM_BASE_URL": llm_base_url,
            "AGENTAPI_LLM_API_KEY": "unused",
            "AGENTAPI_MASTER_KEY": KEY,
            "AGENTAPI_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "AGENTAPI_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "AGENTAPI_RUNNER_ID": runner_id,
            "AGENTAPI_SHUTDOWN_GRACE_S": str(grace_s),
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self, timeout_s: float = 60.0) -> Server:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                COMMAND, env=self.env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        deadline = time.monotonic() + timeout_s
        while await self.health() != health_pb2.HealthCheckResponse.SERVING:
            assert self.process.poll() is None, f"agentapi exited during start-up:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"agentapi did not start:\n{self.log.read_text()}"
            await asyncio.sleep(0.1)
        return self

    async def health(self) -> int:
        assert self.channel is not None
        try:
            reply = await health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return -1
        return reply.status

    @property
    def sessions(self) -> pb.SessionServiceStub:
        return pb.SessionServiceStub(self.channel)

    async def new_session(self) -> str:
        request = pb.CreateSessionRequest(session=pb.Session(overrides=pb.SessionSettings(model="scripted-a")))
        return (await self.sessions.CreateSession(request, metadata=AUTH)).session.id

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def exit_code(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        return await process_exit(self.process, timeout_s, self.log.read_text)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # only the process this test started, by its pid
            self.process.wait(10)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in reversed(started):
        await server.close()


async def start(servers: list[Server], tmp_path: Path, *args: Any, **env: str) -> Server:
    server = Server(*args, tmp_path / f"agentapi-{len(servers)}.log")
    server.env.update(env)
    servers.append(server)
    return await server.start()


async def db_rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def first_delta(call: Any) -> list[pb.SendStreamingMessageResponse]:
    received = []
    async for event in call:
        received.append(event)
        if event.HasField("delta"):
            return received
    raise AssertionError("the stream ended before its first delta")


async def test_sigterm_drains_and_lets_the_turn_finish(
    sqlite_url: str, upstream: ScriptedUpstream, servers: list[Server], tmp_path: Path
) -> None:
    runner = f"sigterm-{uuid.uuid4().hex[:8]}"
    server = await start(servers, tmp_path, sqlite_url, upstream.base_url, runner, 20.0)
    session_id, other_session = await server.new_session(), await server.new_session()
    content = "drain me one two three four five six seven eight [[slow:150]]"
    call = server.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(content)]), metadata=AUTH
    )
    received = await first_delta(call)
    # A streamed chat completion over the bridge, in flight too.
    http = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.http_port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    bridge_body = {"model": "scripted-a", "stream": True, "messages": [{"role": "user", "content": content}]}
    bridge = await http.send(http.build_request("POST", "/v1/chat/completions", json=bridge_body), stream=True)
    bridge_lines = bridge.aiter_lines()
    assert (await anext(bridge_lines)).startswith("data: ")

    server.signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while await server.health() != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() < deadline, "health never reported NOT_SERVING"
        await asyncio.sleep(0.02)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await server.sessions.SendMessage(
            pb.SendMessageRequest(session_id=other_session, messages=[user("too late")]), metadata=AUTH
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert errors.from_rpc_error(refused.value).reason == "SHUTTING_DOWN"

    received += [event async for event in call]  # the turn in flight runs to its end
    final = received[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED
    assert final.content == "Echo: drain me one two three four five six seven eight"
    rest = [line async for line in bridge_lines]
    await bridge.aclose()
    await http.aclose()
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in rest)
    assert await server.exit_code() == 0
    assert (
        await db_rows(sqlite_url, "SELECT id FROM messages WHERE status = 'in_progress' AND runner_id = :r", r=runner)
        == []
    )
    stored = await db_rows(sqlite_url, "SELECT status FROM messages WHERE id = :i", i=final.id)
    assert stored == [("completed",)]


async def test_sigterm_past_the_grace_period_stores_the_turn_cancelled(
    sqlite_url: str, upstream: ScriptedUpstream, servers: list[Server], tmp_path: Path
) -> None:
    runner = f"sigterm-short-{uuid.uuid4().hex[:8]}"
    server = await start(servers, tmp_path, sqlite_url, upstream.base_url, runner, 0.5)
    session_id = await server.new_session()
    words = " ".join(f"w{i}" for i in range(30))
    idem = f"key-{uuid.uuid4()}"
    call = server.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(f"{words} [[slow:200]]")]),
        metadata=(*AUTH, ("idempotency-key", idem)),
    )
    received = await first_delta(call)
    server.signal(signal.SIGTERM)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async for event in call:
            received.append(event)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert errors.from_rpc_error(ended.value).reason == "SHUTTING_DOWN"
    assert await server.exit_code() == 0
    assert (
        await db_rows(sqlite_url, "SELECT id FROM messages WHERE status = 'in_progress' AND runner_id = :r", r=runner)
        == []
    )
    ((status, content, completion_tokens, error),) = await db_rows(
        sqlite_url,
        "SELECT status, content, completion_tokens, error FROM messages WHERE session_id = :s AND role = 'assistant'",
        s=session_id,
    )
    streamed = "".join(e.delta.content for e in received if e.HasField("delta"))
    assert status == "cancelled" and content.startswith(streamed) and streamed
    assert json.loads(error)["reason"] == "SHUTTING_DOWN"  # not "the caller cancelled"
    # The key is released, not stored with the shutdown's error: a retry on another replica runs.
    assert await db_rows(sqlite_url, "SELECT state FROM idempotency_records WHERE key = :k", k=idem) == []
    assert len(content) < len(f"Echo: {words}") and 0 < completion_tokens


async def test_sigkill_then_restart_marks_the_lost_turn_interrupted(
    mariadb_url: str, upstream: ScriptedUpstream, servers: list[Server], tmp_path: Path
) -> None:
    runner = f"sigkill-{uuid.uuid4().hex[:8]}"
    server = await start(servers, tmp_path, mariadb_url, upstream.base_url, runner, 5.0)
    session_id = await server.new_session()
    idem = f"key-{uuid.uuid4()}"
    request = pb.SendStreamingMessageRequest(
        session_id=session_id, messages=[user("lost turn one two three four five six [[slow:150]]")]
    )
    call = server.sessions.SendStreamingMessage(request, metadata=(*AUTH, ("idempotency-key", idem)))
    received = await first_delta(call)
    reply_row = "SELECT status, runner_id, error FROM messages WHERE session_id = :s AND role = 'assistant'"
    server.signal(signal.SIGKILL)
    assert await server.exit_code() == -signal.SIGKILL
    with pytest.raises(grpc.aio.AioRpcError):
        async for event in call:
            received.append(event)
    assert [row[:2] for row in await db_rows(mariadb_url, reply_row, s=session_id)] == [("in_progress", runner)]
    record = "SELECT state, runner_id FROM idempotency_records WHERE `key` = :k"
    assert await db_rows(mariadb_url, record, k=idem) == [("in_progress", runner)]

    restarted = await start(servers, tmp_path, mariadb_url, upstream.base_url, runner, 5.0)
    ((status, _, error),) = await db_rows(mariadb_url, reply_row, s=session_id)
    error = error if isinstance(error, dict) else __import__("json").loads(error)
    assert status == "failed" and error["reason"] == "INTERRUPTED" and error["code"] == "UNAVAILABLE"
    assert await db_rows(mariadb_url, record, k=idem) == []
    page = await restarted.sessions.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=AUTH)
    assert [m.status for m in page.messages] == [pb.MESSAGE_STATUS_COMPLETED, pb.MESSAGE_STATUS_FAILED]
    # The key was released with the turn, so the caller's retry runs: it answers
    # the stored user message, which is neither stored nor sent upstream twice.
    upstream.reset()
    retried = [
        event
        async for event in restarted.sessions.SendStreamingMessage(request, metadata=(*AUTH, ("idempotency-key", idem)))
    ]
    assert retried[-1].assistant_message.status == pb.MESSAGE_STATUS_COMPLETED
    original_input = [e.input_message.id for e in received if e.HasField("input_message")]
    assert [e.input_message.id for e in retried if e.HasField("input_message")] == original_input
    page = await restarted.sessions.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=AUTH)
    assert [(m.role, m.status) for m in page.messages] == [
        (pb.ROLE_USER, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_FAILED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_COMPLETED),
    ]
    (sent,) = [r["body"]["messages"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert [m["role"] for m in sent] == ["user"]


async def test_a_runner_that_comes_back_under_another_id_does_not_hold_sessions(
    mariadb_url: str, upstream: ScriptedUpstream, servers: list[Server], tmp_path: Path
) -> None:
    """SIGKILL, and the replica returns as another runner (a new pod name):
    nobody restarts the dead runner id, so its turn is reclaimed by the
    heartbeat sweep of a live replica, within AGENTAPI_RUNNER_DEAD_AFTER_S
    and a sweep or two, not after the 11-minute staleness age."""
    dead_runner = f"gone-{uuid.uuid4().hex[:8]}"
    server = await start(servers, tmp_path, mariadb_url, upstream.base_url, dead_runner, 5.0)
    session_id = await server.new_session()
    idem = f"key-{uuid.uuid4()}"
    request = pb.SendStreamingMessageRequest(
        session_id=session_id, messages=[user("abandoned one two three four five [[slow:150]]")]
    )
    call = server.sessions.SendStreamingMessage(request, metadata=(*AUTH, ("idempotency-key", idem)))
    await first_delta(call)
    server.signal(signal.SIGKILL)
    assert await server.exit_code() == -signal.SIGKILL
    call.cancel()
    other = await start(
        servers,
        tmp_path,
        mariadb_url,
        upstream.base_url,
        f"new-{uuid.uuid4().hex[:8]}",
        5.0,
        AGENTAPI_RUNNER_DEAD_AFTER_S="3",
    )
    reply_row = "SELECT status, error FROM messages WHERE session_id = :s AND role = 'assistant'"
    started = time.monotonic()
    while (rows := await db_rows(mariadb_url, reply_row, s=session_id))[0][0] == "in_progress":
        assert time.monotonic() - started < 20, "the dead runner's turn was never reclaimed"
        await asyncio.sleep(0.2)
    ((status, error),) = rows
    assert status == "failed" and json.loads(error)["reason"] == "INTERRUPTED"
    assert await db_rows(mariadb_url, "SELECT state FROM idempotency_records WHERE `key` = :k", k=idem) == []
    assert await db_rows(mariadb_url, "SELECT id FROM runners WHERE id = :r", r=dead_runner) == []
    # The session takes turns again, and the caller's retry answers the stored input.
    retried = [
        event
        async for event in other.sessions.SendStreamingMessage(request, metadata=(*AUTH, ("idempotency-key", idem)))
    ]
    assert retried[-1].assistant_message.status == pb.MESSAGE_STATUS_COMPLETED
    page = await other.sessions.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=AUTH)
    assert [m.role for m in page.messages] == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_ASSISTANT]


async def test_serve_refuses_an_unmigrated_database_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTAPI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"}
    env.update({"AGENTAPI_GRPC_ADDR": f"127.0.0.1:{free_port()}", "AGENTAPI_HTTP_ADDR": f"127.0.0.1:{free_port()}"})
    done = subprocess.run(COMMAND, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "agentapi: the database is not migrated: run `agentapi migrate` (or `agentapi serve --migrate`)"
    ]
    migrated = subprocess.run(
        [*COMMAND[:-1], "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0


async def test_sigkill_while_a_server_tool_runs_ends_the_run_interrupted_and_never_reruns_it(
    mariadb_url: str, upstream: ScriptedUpstream, servers: list[Server], tmp_path: Path
) -> None:
    runner = f"sigkill-tool-{uuid.uuid4().hex[:8]}"
    ran = tmp_path / "tool-runs.log"
    env = {
        "AGENTAPI_TOOL_MODULES": "tests.support.slow_tools",
        "AGENTAPI_TEST_TOOL_LOG": str(ran),
        "PYTHONPATH": str(REPO),  # the operator's tool module lives in this checkout
    }
    server = await start(servers, tmp_path, mariadb_url, upstream.base_url, runner, 5.0, **env)
    agent = await pb.AgentServiceStub(server.channel).CreateAgent(
        pb.CreateAgentRequest(
            agent=pb.Agent(key=f"mark-{uuid.uuid4().hex[:8]}", default_model="scripted-a", builtin_tools=["mark"])
        ),
        metadata=AUTH,
    )
    session = await server.sessions.CreateSession(
        pb.CreateSessionRequest(session=pb.Session(agent_id=agent.agent.id)), metadata=AUTH
    )
    session_id = session.session.id
    request = pb.SendStreamingMessageRequest(
        session_id=session_id, messages=[user('mark it [[tool:mark {"seconds": 30}]]')]
    )
    call = server.sessions.SendStreamingMessage(request, metadata=AUTH)
    async for event in call:
        if event.HasField("tool_call_started"):
            break
    for _ in range(100):  # the tool has begun once its line is written
        if ran.exists() and ran.read_text():
            break
        await asyncio.sleep(0.05)
    server.signal(signal.SIGKILL)
    assert await server.exit_code() == -signal.SIGKILL

    restarted = await start(servers, tmp_path, mariadb_url, upstream.base_url, runner, 5.0, **env)
    page = await restarted.sessions.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=AUTH)
    assert [(m.role, m.status) for m in page.messages] == [
        (pb.ROLE_USER, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_TOOL, pb.MESSAGE_STATUS_FAILED),
    ]
    tool = page.messages[-1]
    assert "outcome is unknown" in tool.content and tool.executor == "builtin"
    # The session is free again, and the next turn does not run the tool a second time.
    answered = await restarted.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session_id, messages=[user("what happened?")]), metadata=AUTH
    )
    assert answered.message.status == pb.MESSAGE_STATUS_COMPLETED
    assert ran.read_text() == "ran\n", "the tool ran exactly once"
