"""Database faults: MariaDB "restarts" under load (a TCP proxy between agentapi
and the shared MariaDB server resets every connection and refuses new ones,
then comes back). Requests fail fast with UNAVAILABLE (DATABASE_UNAVAILABLE),
never INTERNAL and never hanging; the service recovers without a restart; and
every turn acknowledged to its caller is stored."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
from google.rpc import error_details_pb2
from sqlalchemy.engine import make_url

from agentapi import errors
from agentapi import v1 as pb
from tests.helpers import all_messages, create_session, user
from tests.stack import AUTH, Stack, start_stack
from tests.support.tcp_proxy import TcpProxy
from tests.support.upstream import ScriptedUpstream

CALL_TIMEOUT_S = 20.0


def stored_reason(message: pb.Message) -> str:
    for detail in message.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""  # a call that reaches this hung: the test fails on DEADLINE_EXCEEDED


async def turn(stack: Stack, session_id: str, text: str) -> tuple[str, Any]:
    """("ok", final message) when the caller was told the turn completed, else (code, reason)."""
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(text)]),
        metadata=AUTH,
        timeout=CALL_TIMEOUT_S,
    )
    try:
        events = [event async for event in call]
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, errors.from_rpc_error(exc).reason
    return "ok", events[-1].assistant_message


async def test_database_restart_under_load(mariadb_url: str) -> None:
    with ScriptedUpstream() as upstream, TcpProxy("127.0.0.1", make_url(mariadb_url).port or 3306) as proxy:
        url = make_url(mariadb_url).set(port=proxy.port).render_as_string(hide_password=False)
        stack = await start_stack(url, upstream.base_url, "unused", runner_id=f"db-cut-{uuid.uuid4().hex[:6]}")
        try:
            sessions = [(await create_session(stack, model="scripted-a")).id for _ in range(8)]
            outcomes: list[tuple[str, str, Any]] = []
            stop = asyncio.Event()

            async def worker(session_id: str) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    code, detail = await turn(stack, session_id, f"load {n} a b c [[slow:30]]")
                    outcomes.append((session_id, code, detail))
                    if code != "ok":
                        await asyncio.sleep(0.05)

            workers = [asyncio.create_task(worker(s)) for s in sessions]
            await asyncio.sleep(1.0)
            proxy.cut()
            cut_at = len(outcomes)
            await asyncio.sleep(1.5)
            # While it is down, a plain read fails fast too.
            started = time.monotonic()
            try:
                await stack.sessions.GetSession(
                    pb.GetSessionRequest(session_id=sessions[0]), metadata=AUTH, timeout=CALL_TIMEOUT_S
                )
                raise AssertionError("a read succeeded with the database down")
            except grpc.aio.AioRpcError as exc:
                assert (exc.code(), errors.from_rpc_error(exc).reason) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "DATABASE_UNAVAILABLE",
                )
            failed_in_s = time.monotonic() - started
            proxy.restore()
            restored_at = len(outcomes)
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*workers)

            print(
                f"\n{len(outcomes)} turns: {cut_at} before the cut, {restored_at - cut_at} while down,"
                f" {len(outcomes) - restored_at} after; a read failed in {failed_in_s * 1000:.0f} ms while down"
            )
            codes = {(code, detail) for _, code, detail in outcomes if code != "ok"}
            assert ("UNAVAILABLE", "DATABASE_UNAVAILABLE") in codes, "the cut failed no request"
            # A turn whose last write was lost leaves its session busy until this
            # process reclaims the reply (within seconds): ABORTED, retryable.
            assert codes <= {("UNAVAILABLE", "DATABASE_UNAVAILABLE"), ("ABORTED", "SESSION_BUSY")}, codes
            assert all(code != "ABORTED" for _, code, _ in outcomes[:cut_at])
            assert any(code == "ok" for _, code, _ in outcomes[restored_at:]), "no recovery without a restart"
            # Every session takes turns again, without a restart.
            deadline = time.monotonic() + 15
            for session_id in sessions:
                while (result := await turn(stack, session_id, "after the restart"))[0] != "ok":
                    assert result == ("ABORTED", "SESSION_BUSY"), result
                    assert time.monotonic() < deadline, f"session {session_id} stayed busy"
                    await asyncio.sleep(0.2)

            # Nothing acknowledged is lost: every turn reported completed is stored completed.
            stored = {m.id: m for s in sessions for m in await all_messages(stack, s)}
            acknowledged = [detail for _, code, detail in outcomes if code == "ok"]
            for message in acknowledged:
                assert stored[message.id].status == pb.MESSAGE_STATUS_COMPLETED
                assert stored[message.id].content == message.content
            interrupted = [m for m in stored.values() if m.status == pb.MESSAGE_STATUS_FAILED]
            assert all(stored_reason(m) in ("INTERRUPTED", "DATABASE_UNAVAILABLE") for m in interrupted)
            assert not any(m.status == pb.MESSAGE_STATUS_IN_PROGRESS for m in stored.values())
            print(f"{len(acknowledged)} acknowledged turns all stored; {len(interrupted)} replies marked failed")
        finally:
            await stack.stop()
