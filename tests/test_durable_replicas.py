"""Durable runs across replicas (issue 16): two agentapi servers on one
MariaDB, with and without Redis. A turn started on one is rejoined and
cancelled on the other; and a server killed mid-stream leaves its reply's
text up to the last flush of the event log."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agentapi import v1 as pb
from tests.conftest import unavailable
from tests.helpers import create_session, user
from tests.stack import AUTH, Stack, start_stack
from tests.test_faults_process import AUTH as PROCESS_AUTH
from tests.test_faults_process import Server, db_rows, first_delta, servers, start  # noqa: F401 (fixture)

REDIS_URL = os.environ.get("AGENTAPI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"


@pytest.fixture(params=["polling", "redis"])
async def replicas(request: pytest.FixtureRequest, mariadb_url: str, litellm: Any) -> AsyncIterator[list[Stack]]:
    extra: dict[str, Any] = {}
    if request.param == "redis":
        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
        extra["redis_url"] = REDIS_URL
    started = []
    for name in ("a", "b"):
        started.append(
            await start_stack(
                mariadb_url,
                f"{litellm.base_url}/v1",
                litellm.master_key,
                runner_id=f"replica-{name}-{uuid.uuid4().hex[:6]}",
                **extra,
            )
        )
    yield started
    for stack in started:
        await stack.stop()


async def test_a_turn_is_rejoined_live_on_another_replica(replicas: list[Stack]) -> None:
    one, other = replicas
    session = await create_session(one, model="scripted-a")
    request = pb.SendStreamingMessageRequest(
        session_id=session.id, messages=[user(f"{WORDS} [[slow:120]]")], on_disconnect=pb.ON_DISCONNECT_CONTINUE
    )
    call = one.sessions.SendStreamingMessage(request, metadata=AUTH)
    seen = []
    async for event in call:
        seen.append(event)
        if sum(e.HasField("delta") for e in seen) == 2:
            break
    call.cancel()
    message_id = seen[0].turn_started.message_id
    rejoin = pb.StreamTurnRequest(
        session_id=session.id, message_id=message_id, after_sequence_number=seen[-1].sequence_number
    )
    rest = [event async for event in other.sessions.StreamTurn(rejoin, metadata=AUTH)]
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(1, len(numbers) + 1))
    final = rest[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED
    text = "".join(e.delta.content for e in seen + rest if e.HasField("delta"))
    assert text == final.content and "juliet" in text


async def test_cancel_turn_on_another_replica_stops_the_run(replicas: list[Stack]) -> None:
    one, other = replicas
    session = await create_session(one, model="scripted-a")
    request = pb.SendStreamingMessageRequest(session_id=session.id, messages=[user(f"{WORDS} [[slow:300]]")])
    call = one.sessions.SendStreamingMessage(request, metadata=AUTH)
    events = []
    async for event in call:
        events.append(event)
        if event.HasField("delta") and len(events) < 4:
            message_id = events[0].turn_started.message_id
            await other.sessions.CancelTurn(
                pb.CancelTurnRequest(session_id=session.id, message_id=message_id), metadata=AUTH
            )
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_CANCELLED
    assert final.error.message and len(final.content.split()) < len(WORDS.split())


async def test_sigkill_mid_stream_keeps_the_reply_text_up_to_the_last_flush(
    mariadb_url: str,
    upstream: Any,
    servers: list[Server],  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    runner = f"checkpoint-{uuid.uuid4().hex[:8]}"
    server = await start(servers, tmp_path, mariadb_url, upstream.base_url, runner, 5.0)
    session_id = await server.new_session()
    request = pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(f"{WORDS} [[slow:100]]")])
    call = server.sessions.SendStreamingMessage(request, metadata=PROCESS_AUTH)
    received = await first_delta(call)
    async for event in call:
        received.append(event)
        if sum(e.HasField("delta") for e in received) == 6:
            break
    await asyncio.sleep(0.35)  # past one flush interval (200 ms)
    server.signal(signal.SIGKILL)
    await server.exit_code()
    streamed = "".join(e.delta.content for e in received if e.HasField("delta"))
    restarted = await start(servers, tmp_path, mariadb_url, upstream.base_url, runner, 5.0)
    reply = "SELECT status, content FROM messages WHERE session_id = :s AND role = 'assistant'"
    ((status, content),) = await db_rows(mariadb_url, reply, s=session_id)
    assert status == "failed"  # INTERRUPTED by recovery, with the checkpointed text
    assert content and (streamed.startswith(content) or content.startswith(streamed)), (content, streamed)
    assert len(content) >= len(streamed) - len("foxtrot ")
    message_id = received[0].turn_started.message_id
    rejoin = pb.StreamTurnRequest(session_id=session_id, message_id=message_id)
    events = [e async for e in restarted.sessions.StreamTurn(rejoin, metadata=PROCESS_AUTH)]
    assert events[-1].assistant_message.status == pb.MESSAGE_STATUS_FAILED
    assert events[-1].assistant_message.content == content
