"""Durable runs (issue 16): the event log, rejoining a turn (StreamTurn, and
Last-Event-ID over HTTP), background runs, CancelTurn, and the purge of old
logs; on SQLite and MariaDB through the real LiteLLM proxy."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import grpc
import httpx
import pytest

import agentapi
from agentapi import v1 as pb
from server.domain.common import utcnow
from server.store.db import Database
from server.store.run_events import RunEventStore
from tests.helpers import create_agent, create_session, error_reason, user
from tests.stack import AUTH, MASTER_KEY, Stack
from tests.support.tcp_proxy import TcpProxy

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
SLOW = f"{WORDS} [[slow:60]]"


def streaming(session_id: str, text: str, **fields: Any) -> pb.SendStreamingMessageRequest:
    return pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(text)], **fields)


async def rejoin(stack: Stack, session_id: str, message_id: str, after: int) -> list[pb.StreamTurnResponse]:
    request = pb.StreamTurnRequest(session_id=session_id, message_id=message_id, after_sequence_number=after)
    return [event async for event in stack.sessions.StreamTurn(request, metadata=AUTH)]


def content(events: list[Any]) -> str:
    return "".join(e.delta.content for e in events if e.HasField("delta"))


async def wait_for(predicate: Any, timeout_s: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("leave_after", ["turn_started", "input_message", "third_delta", "end"])
async def test_a_caller_that_goes_away_rejoins_with_no_gap_and_no_duplicate(stack: Stack, leave_after: str) -> None:
    session = await create_session(stack, model="scripted-a")
    call = stack.sessions.SendStreamingMessage(
        streaming(session.id, SLOW, on_disconnect=pb.ON_DISCONNECT_CONTINUE), metadata=AUTH
    )
    seen: list[pb.SendStreamingMessageResponse] = []
    deltas = 0
    async for event in call:
        seen.append(event)
        deltas += event.HasField("delta")
        kind = event.WhichOneof("event")
        if kind == leave_after or (leave_after == "third_delta" and deltas == 3):
            break
    call.cancel()
    message_id = seen[0].turn_started.message_id
    assert message_id and seen[0].sequence_number == 1
    rest = await rejoin(stack, session.id, message_id, seen[-1].sequence_number)
    numbers = [e.sequence_number for e in seen] + [e.sequence_number for e in rest]
    assert numbers == list(range(1, len(numbers) + 1))
    final = (rest or seen)[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED
    assert content(seen) + content(rest) == final.content
    # Rejoining from the start replays the very same events.
    again = await rejoin(stack, session.id, message_id, 0)
    assert [e.SerializeToString() for e in again[: len(seen)]] == [e.SerializeToString() for e in seen]


async def test_a_caller_that_leaves_mid_tool_call_rejoins_with_the_whole_call(stack: Stack, key: str) -> None:
    from tests.test_grpc_turns import WEATHER_TOOL

    agent = await create_agent(stack, key, tools=[WEATHER_TOOL])
    session = await create_session(stack, agent.id)
    text = 'weather please [[tool:get_weather {"city": "Paris", "unit": "celsius"}]] [[slow:60]]'
    call = stack.sessions.SendStreamingMessage(
        streaming(session.id, text, on_disconnect=pb.ON_DISCONNECT_CONTINUE), metadata=AUTH
    )
    seen: list[pb.SendStreamingMessageResponse] = []
    async for event in call:
        seen.append(event)
        if event.HasField("delta") and event.delta.tool_calls:
            break  # the call's first fragment: its arguments are still coming
    call.cancel()
    rest = await rejoin(stack, session.id, seen[0].turn_started.message_id, seen[-1].sequence_number)
    events = seen + rest
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    fragments = [f for e in events if e.HasField("delta") for f in e.delta.tool_calls]
    assert len(fragments) >= 2 and any(
        f in [g for e in rest if e.HasField("delta") for g in e.delta.tool_calls] for f in fragments
    )
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_REQUIRES_ACTION
    arguments = "".join(f.arguments for f in fragments)
    assert (
        json.loads(arguments)
        == json.loads(final.tool_calls[0].function.arguments)
        == {"city": "Paris", "unit": "celsius"}
    )


async def test_the_default_disconnect_still_cancels_the_run(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    call = stack.sessions.SendStreamingMessage(streaming(session.id, SLOW), metadata=AUTH)
    message_id = ""
    async for event in call:
        message_id = message_id or event.turn_started.message_id
        if event.HasField("delta"):
            break
    call.cancel()
    rest = await rejoin(stack, session.id, message_id, 0)
    final = rest[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_CANCELLED and final.content.startswith("Echo:")


async def test_a_background_turn_finishes_with_nobody_connected_and_is_read_later(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    reply = await stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user(SLOW)], background=True), metadata=AUTH
    )
    assert reply.message.status == pb.MESSAGE_STATUS_IN_PROGRESS and reply.input_messages[0].content == SLOW

    async def finished() -> pb.Message | None:
        got = await stack.sessions.GetMessage(
            pb.GetMessageRequest(session_id=session.id, message_id=reply.message.id), metadata=AUTH
        )
        return got.message if got.message.status != pb.MESSAGE_STATUS_IN_PROGRESS else None

    got = await wait_for(finished)
    assert got.status == pb.MESSAGE_STATUS_COMPLETED and got.content.startswith("Echo: alpha")
    events = await rejoin(stack, session.id, reply.message.id, 0)
    assert events[0].turn_started.message_id == reply.message.id
    assert events[-1].assistant_message.content == got.content == content(events)


async def test_get_message_shows_a_running_reply_so_far(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    call = stack.sessions.SendStreamingMessage(streaming(session.id, SLOW, background=True), metadata=AUTH)
    message_id, deltas = "", 0
    async for event in call:
        message_id = message_id or event.turn_started.message_id
        deltas += event.HasField("delta")
        if deltas == 3:
            break
    call.cancel()  # a background turn goes on
    got = await stack.sessions.GetMessage(
        pb.GetMessageRequest(session_id=session.id, message_id=message_id), metadata=AUTH
    )
    assert got.message.status == pb.MESSAGE_STATUS_IN_PROGRESS and got.message.content.startswith("Echo: alpha")
    rest = await rejoin(stack, session.id, message_id, 0)
    assert rest[-1].assistant_message.status == pb.MESSAGE_STATUS_COMPLETED


async def test_cancel_turn_stops_the_run_and_keeps_its_partial_reply(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    call = stack.sessions.SendStreamingMessage(streaming(session.id, SLOW), metadata=AUTH)
    events = []
    async for event in call:
        events.append(event)
        if event.HasField("delta"):
            cancelled = await stack.sessions.CancelTurn(
                pb.CancelTurnRequest(session_id=session.id, message_id=events[0].turn_started.message_id),
                metadata=AUTH,
            )
    # The caller's own stream ends normally, with the stored CANCELLED reply.
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_CANCELLED and final.error.details
    assert cancelled.message.status == pb.MESSAGE_STATUS_CANCELLED
    assert final.content == content(events) and final.content.startswith("Echo:")
    assert len(final.content.split()) < len(WORDS.split()) + 1
    # Cancelling a finished turn returns it unchanged.
    again = await stack.sessions.CancelTurn(
        pb.CancelTurnRequest(session_id=session.id, message_id=final.id), metadata=AUTH
    )
    assert again.message.status == pb.MESSAGE_STATUS_CANCELLED and again.message.content == final.content


async def test_rejoin_and_cancel_of_an_unknown_or_foreign_turn_are_not_found(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await rejoin(stack, session.id, missing, 0)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(error.value) == "MESSAGE_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stack.sessions.CancelTurn(pb.CancelTurnRequest(session_id=session.id, message_id="x"), metadata=AUTH)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sse_events_carry_ids_and_last_event_id_rejoins(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    body = {"messages": [{"role": "ROLE_USER", "content": SLOW}], "onDisconnect": "ON_DISCONNECT_CONTINUE"}
    ids: list[int] = []
    message_id = ""
    async with httpx.AsyncClient(base_url=stack.bridge_url, timeout=30) as http:
        url = f"/agentapi/v1/sessions/{session.id}:sendStreamingMessage"
        async with http.stream("POST", url, json=body, headers=headers) as response:
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    ids.append(int(line[3:].strip()))
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    message_id = message_id or data.get("turnStarted", {}).get("messageId", "")
                if len(ids) == 4:
                    break  # the client goes away mid-content
        assert ids == [1, 2, 3, 4]
        resumed: list[int] = []
        final: dict[str, Any] = {}
        rejoin_url = f"/agentapi/v1/sessions/{session.id}/messages/{message_id}:stream"
        async with http.stream("GET", rejoin_url, headers={**headers, "Last-Event-ID": "4"}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    resumed.append(int(line[3:].strip()))
                elif line.startswith("data:"):
                    final = json.loads(line[5:]).get("assistantMessage", final)
    assert resumed == list(range(5, 5 + len(resumed))) and resumed
    assert final["status"] == "MESSAGE_STATUS_COMPLETED"


async def test_purge_deletes_old_event_logs_and_rejoin_then_says_so(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    events = [e async for e in stack.sessions.SendStreamingMessage(streaming(session.id, "short reply"), metadata=AUTH)]
    message_id = events[0].turn_started.message_id
    # Once flushed, a finished run is read from the log, not this replica's memory.
    await asyncio.sleep(stack.config.event_log_flush_s * 4 + 1.2)
    assert len(await rejoin(stack, session.id, message_id, 0)) == len(events)
    db = Database(stack.config.database_url)
    try:
        deleted = await RunEventStore(db).purge(utcnow() + timedelta(seconds=1), utcnow() - timedelta(days=1))
    finally:
        await db.dispose()
    assert deleted >= 1
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await rejoin(stack, session.id, message_id, 0)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error.value) == "EVENT_LOG_EXPIRED"


async def test_the_client_rejoins_a_stream_whose_connection_was_cut(stack: Stack) -> None:
    assert stack.grpc_server is not None
    proxy = TcpProxy("127.0.0.1", stack.grpc_server.port).start()
    try:
        async with agentapi.AsyncClient(f"127.0.0.1:{proxy.port}", api_key=MASTER_KEY) as api:
            session = await api.sessions.create(overrides=pb.SessionSettings(model="scripted-a"))
            events = []
            async with api.sessions.stream(session.id, SLOW) as turn:
                async for event in turn.events:
                    events.append(event)
                    if sum(e.HasField("delta") for e in events) == 2 and not turn.rejoins:
                        proxy.cut()  # every open connection is reset, as by a load balancer
                        proxy.restore()
                final = await turn.final_message()
            assert turn.rejoins >= 1
            assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
            assert final.status == pb.MESSAGE_STATUS_COMPLETED and final.content == content(events)
            assert "juliet" in final.content
    finally:
        proxy.stop()
