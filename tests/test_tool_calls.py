"""Tool-call round trips: parallel calls streamed through the real LiteLLM
proxy, outputs reconciled by tool_call_id (also across a restart), and the
offline model driving the same loop with no upstream at all."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from agentapi import errors
from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, error_reason, field_violations, stream_turn, user
from tests.stack import AUTH, Stack, start_stack

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def _tools() -> list[pb.Tool]:
    return [json_format.ParseDict(tool, pb.Tool()) for tool in (WEATHER, CLOCK)]


async def _submit(stack: Stack, session_id: str, outputs: dict[str, str]) -> list[pb.SubmitToolOutputsResponse]:
    request = pb.SubmitToolOutputsRequest(
        session_id=session_id,
        tool_outputs=[pb.ToolOutput(tool_call_id=call_id, output=output) for call_id, output in outputs.items()],
    )
    return [event async for event in stack.sessions.SubmitToolOutputs(request, metadata=AUTH)]


async def _refused(call: Any, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)
    return caught.value


async def test_parallel_tool_calls_round_trip_across_a_restart(stack: Stack, upstream: Any, key: str) -> None:
    agent = await create_agent(stack, key, tools=_tools())
    session = await create_session(stack, agent.id)
    ask = 'weather and time please [[tool:get_weather {"city": "Oslo"}]] [[tool:get_time]]'
    events = await stream_turn(stack, session.id, user(ask))
    called = events[-1].assistant_message
    assert called.status == pb.MESSAGE_STATUS_REQUIRES_ACTION and called.finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in called.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {}),
    ]
    # The deltas carried the calls in fragments that assemble into the stored calls.
    fragments = [f for e in events if e.HasField("delta") for f in e.delta.tool_calls]
    assert "".join(f.arguments for f in fragments if f.index == 0) == called.tool_calls[0].function.arguments
    weather_id, clock_id = (c.id for c in called.tool_calls)

    await stack.restart()  # the pending calls live in the ledger, not in memory

    pending = await _refused(
        stack.sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user("hi?")]), metadata=AUTH),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOOL_OUTPUTS_PENDING",
    )
    assert errors.from_rpc_error(pending).metadata["pending_tool_call_ids"] == f"{weather_id},{clock_id}"
    unknown = await _refused(
        _submit(stack, session.id, {weather_id: "{}", "call_bogus": "{}"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_TOOL_CALL_ID",
    )
    assert field_violations(unknown) == ["tool_outputs[1].tool_call_id"]
    missing = await _refused(
        _submit(stack, session.id, {weather_id: '{"temp_c": 4}'}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOOL_OUTPUTS_PENDING",
    )
    assert errors.from_rpc_error(missing).metadata["pending_tool_call_ids"] == clock_id
    assert len(await all_messages(stack, session.id)) == 2, "a refused submission stores nothing"

    upstream_calls = len(upstream.requests)
    outputs = {weather_id: '{"temp_c": 4}', clock_id: '{"time": "12:00"}'}
    continued = await _submit(stack, session.id, outputs)
    assert [e.input_message.tool_call_id for e in continued if e.HasField("input_message")] == [weather_id, clock_id]
    final = continued[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED
    assert final.content == 'Tool result: {"time": "12:00"}'
    assert len(upstream.requests) == upstream_calls + 1
    prompt = upstream.requests[-1]["body"]["messages"]
    assert [m["role"] for m in prompt] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in prompt[2:]] == [weather_id, clock_id]

    # A retry of the same outputs is a no-op: the stored reply, no new upstream call.
    again = await _submit(stack, session.id, outputs)
    assert again[-1].assistant_message.id == final.id
    assert len(upstream.requests) == upstream_calls + 1
    conflict = await _refused(
        _submit(stack, session.id, {weather_id: '{"temp_c": 30}'}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOOL_OUTPUT_CONFLICT",
    )
    assert errors.from_rpc_error(conflict).metadata["tool_call_id"] == weather_id
    stored = await all_messages(stack, session.id)
    assert [m.role for m in stored] == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, pb.ROLE_TOOL, pb.ROLE_ASSISTANT]


async def test_outputs_resent_after_a_failed_continuation_run_it_again(stack: Stack, upstream: Any, key: str) -> None:
    agent = await create_agent(stack, key, tools=_tools())
    session = await create_session(stack, agent.id)
    called = (await stream_turn(stack, session.id, user("time? [[tool:get_time]]")))[-1].assistant_message
    call_id = called.tool_calls[0].id
    # A replica whose upstream is down takes the outputs; the continuation fails.
    down = await start_stack(stack.config.database_url, "http://127.0.0.1:9/v1", "sk-none", retry_attempts=1)
    try:
        await _refused(
            _submit(down, session.id, {call_id: "noon"}), grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"
        )
    finally:
        await down.stop()
    failed = (await all_messages(stack, session.id))[-1]
    assert failed.status == pb.MESSAGE_STATUS_FAILED
    retried = await _submit(stack, session.id, {call_id: "noon"})
    assert retried[-1].assistant_message.status == pb.MESSAGE_STATUS_COMPLETED
    assert retried[-1].assistant_message.id != failed.id
    stored = await all_messages(stack, session.id)
    assert [m.role for m in stored].count(pb.ROLE_TOOL) == 1, "the identical output was not stored twice"


async def test_no_pending_calls_and_plain_replies(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    await stream_turn(offline_stack, session.id, user("hello"))
    await _refused(
        _submit(offline_stack, session.id, {"call_x": "1"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_TOOL_CALL_ID",
    )


async def test_offline_model_drives_a_tool_round_trip(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline", tools=_tools())
    session = await create_session(offline_stack, agent.id)
    called = (await stream_turn(offline_stack, session.id, user('call get_weather {"city": "Lima"}')))[-1]
    call = called.assistant_message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Lima"})
    done = await _submit(offline_stack, session.id, {call.id: "sunny, 24 C"})
    assert done[-1].assistant_message.content == "Tool get_weather returned: sunny, 24 C"


async def test_bridge_tool_round_trip_as_the_openai_sdk_does_it(stack: Stack, upstream: Any) -> None:
    """The SDK loop: ask with tools, run the calls, append the assistant message
    and one ``tool`` message per call, resend everything with X-Session-Id."""
    client = stack.openai()
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": 'plan my day [[tool:get_weather {"city": "Rome"}]] [[tool:get_time]]'}
    ]
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted-a", messages=messages, tools=[WEATHER, CLOCK], stream=True
    )
    session_id = raw.headers["x-session-id"]
    calls: dict[int, dict[str, str]] = {}
    async for chunk in raw.parse():
        for fragment in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            call = calls.setdefault(fragment.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = fragment.id or call["id"]
            call["name"] += fragment.function.name or ""
            call["arguments"] += fragment.function.arguments or ""
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ],
        }
    )
    messages += [{"role": "tool", "tool_call_id": c["id"], "content": f"result of {c['name']}"} for c in calls.values()]

    await stack.restart()
    final = await stack.openai().chat.completions.create(
        model="scripted-a", messages=messages, tools=[WEATHER, CLOCK], extra_headers={"X-Session-Id": session_id}
    )
    assert final.choices[0].message.content == "Tool result: result of get_time"
    assert final.choices[0].finish_reason == "stop"
    stored = await all_messages(stack, session_id)
    assert [m.role for m in stored] == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, pb.ROLE_TOOL, pb.ROLE_ASSISTANT]
    assert [m.tool_call_id for m in stored[2:4]] == [c["id"] for c in calls.values()]
