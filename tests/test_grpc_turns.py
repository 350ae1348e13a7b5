"""End to end over gRPC with the generated stubs: agent -> session -> streamed and
unary turns -> stored messages, on SQLite and MariaDB, through the real LiteLLM
proxy to the scripted upstream."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, error_reason, sent_upstream, stream_turn, user
from tests.stack import AUTH, Stack
from tests.support.upstream import ScriptedUpstream

WEATHER_TOOL = pb.Tool(
    type="function",
    function=pb.FunctionDefinition(name="get_weather", description="Weather for a city"),
)
WEATHER_TOOL.function.parameters.update({"type": "object", "properties": {"city": {"type": "string"}}})


async def test_streamed_turn_events_and_stored_messages(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    agent = await create_agent(
        stack,
        key,
        system_prompt="You are terse.",
        fallback_models=["scripted-b"],
        temperature=0.5,
        tools=[WEATHER_TOOL],
    )
    session = await create_session(stack, agent.id)
    assert session.conversation_id, "a conversation is created on demand"

    events = await stream_turn(stack, session.id, user("hello streaming world"))

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:2] == ["turn_started", "input_message"] and kinds[-1] == "assistant_message"
    assert set(kinds[2:-1]) == {"delta"} and len(kinds) - 3 >= 2
    numbers = [e.delta.sequence_number for e in events if e.HasField("delta")]
    assert numbers == list(range(1, len(numbers) + 1))
    final = events[-1].assistant_message
    assert final.content == "".join(e.delta.content for e in events if e.HasField("delta"))
    assert final.content == "Echo: hello streaming world"
    assert final.status == pb.MESSAGE_STATUS_COMPLETED
    assert final.finish_reason == "stop"
    assert final.model == "scripted-a"
    started = events[0].turn_started
    assert (started.message_id, started.model) == (final.id, "scripted-a"), "the first event names the reply"
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens

    body = sent_upstream(upstream, "hello streaming world")
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["temperature"] == 0.5
    assert body["tools"][0]["function"]["name"] == "get_weather"

    stored = await all_messages(stack, session.id)
    assert [(m.role, m.content, m.sequence) for m in stored] == [
        (pb.ROLE_USER, "hello streaming world", 1),
        (pb.ROLE_ASSISTANT, "Echo: hello streaming world", 2),
    ]
    assert stored[0].id == events[1].input_message.id and stored[1].id == final.id


async def test_unary_turn_sends_history_and_survives_restart(
    stack: Stack, key: str, upstream: ScriptedUpstream
) -> None:
    agent = await create_agent(stack, key)
    session = await create_session(stack, agent.id)
    await stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user("first turn")]), metadata=AUTH
    )
    reply = await stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=session.id, messages=[user("second turn")]), metadata=AUTH
    )
    assert reply.message.content == "Echo: second turn"
    assert reply.message.status == pb.MESSAGE_STATUS_COMPLETED
    assert [m.content for m in reply.input_messages] == ["second turn"]
    body = sent_upstream(upstream, "second turn")
    assert [m["content"] for m in body["messages"]] == ["first turn", "Echo: first turn", "second turn"]

    await stack.restart()

    stored = await all_messages(stack, session.id)
    assert [m.content for m in stored] == ["first turn", "Echo: first turn", "second turn", "Echo: second turn"]
    assert all(m.status == pb.MESSAGE_STATUS_COMPLETED for m in stored)


async def test_streamed_tool_call_is_assembled_and_stored(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key, tools=[WEATHER_TOOL])
    session = await create_session(stack, agent.id)
    events = await stream_turn(stack, session.id, user('weather please [[tool:get_weather {"city": "Paris"}]]'))
    fragments = [f for e in events if e.HasField("delta") for f in e.delta.tool_calls]
    assert len(fragments) >= 2, "tool-call fragments are relayed as deltas"
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_REQUIRES_ACTION
    assert final.finish_reason == "tool_calls"
    assert len(final.tool_calls) == 1
    call = final.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    stored = await all_messages(stack, session.id)
    assert stored[-1].tool_calls[0].id == call.id


async def test_upstream_error_before_first_delta_is_typed_and_stored(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key)
    session = await create_session(stack, agent.id)
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user("boom [[error:503]]")]), metadata=AUTH
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in call:
            received.append(event)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) == "UPSTREAM_UNAVAILABLE"
    assert received[1].input_message.content == "boom [[error:503]]"
    assert received[-1].assistant_message.status == pb.MESSAGE_STATUS_FAILED
    stored = await all_messages(stack, session.id)
    assert [m.status for m in stored] == [pb.MESSAGE_STATUS_COMPLETED, pb.MESSAGE_STATUS_FAILED]
    assert stored[1].error.message


async def test_bad_input_answers_typed_errors(stack: Stack, key: str) -> None:
    cases = [
        (
            stack.agents.GetAgent(pb.GetAgentRequest(agent_id="no-such-agent"), metadata=AUTH),
            grpc.StatusCode.NOT_FOUND,
            "AGENT_NOT_FOUND",
        ),
        (
            stack.sessions.CreateSession(
                pb.CreateSessionRequest(session=pb.Session(agent_id="no-such-agent")), metadata=AUTH
            ),
            grpc.StatusCode.NOT_FOUND,
            "AGENT_NOT_FOUND",
        ),
        (
            stack.sessions.GetSession(
                pb.GetSessionRequest(session_id="00000000-0000-4000-8000-000000000000"), metadata=AUTH
            ),
            grpc.StatusCode.NOT_FOUND,
            "SESSION_NOT_FOUND",
        ),
        (
            stack.sessions.GetSession(pb.GetSessionRequest(session_id="not-a-uuid"), metadata=AUTH),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_SESSION_ID",
        ),
        (
            stack.sessions.CreateSession(
                pb.CreateSessionRequest(
                    session=pb.Session(overrides=pb.SessionSettings(model="m"), conversation_id="bad")
                ),
                metadata=AUTH,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_CONVERSATION_ID",
        ),
        (
            stack.agents.ListAgents(pb.ListAgentsRequest(), metadata=()),
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHENTICATED",
        ),
        (
            stack.agents.ListAgents(pb.ListAgentsRequest(), metadata=(("authorization", "Bearer wrong"),)),
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHENTICATED",
        ),
    ]
    for call, code, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert (caught.value.code(), error_reason(caught.value)) == (code, reason)


async def test_empty_message_is_rejected_and_nothing_is_stored(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key)
    session = await create_session(stack, agent.id)
    for messages in ([], [user("   ")]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.sessions.SendMessage(
                pb.SendMessageRequest(session_id=session.id, messages=messages), metadata=AUTH
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(caught.value) == "FIELD_VIOLATION"
    assert await all_messages(stack, session.id) == []


async def test_unknown_session_on_turn_is_not_found(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_turn(stack, "00000000-0000-4000-8000-000000000001", user("hi"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "SESSION_NOT_FOUND"


async def test_caller_cancel_stores_partial_reply_as_cancelled(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key)
    session = await create_session(stack, agent.id)
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(
            session_id=session.id, messages=[user("one two three four five six [[slow:300]]")]
        ),
        metadata=AUTH,
    )
    received = []
    async for event in call:
        received.append(event)
        if event.HasField("delta"):
            break
    call.cancel()
    stored: list[pb.Message] = []
    for _ in range(200):  # the server stores the terminal state as the cancel reaches it
        stored = await all_messages(stack, session.id)
        if stored[-1].status != pb.MESSAGE_STATUS_IN_PROGRESS:
            break
        await asyncio.sleep(0.025)
    reply = stored[-1]
    assert reply.status == pb.MESSAGE_STATUS_CANCELLED
    assert reply.content.startswith(received[-1].delta.content)
    assert reply.content != "Echo: one two three four five six"
