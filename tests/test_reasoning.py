"""Reasoning: native reasoning and signed thinking blocks streamed, stored and
sent back; the routing modes of "Reasoning Agent API" over gRPC and the bridge."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, error_reason, user
from tests.stack import AUTH, MASTER_KEY, Stack, start_stack

WEATHER = pb.Tool(type="function", function=pb.FunctionDefinition(name="get_weather"))
BEARER = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
async def direct(sqlite_url: str, upstream: Any) -> AsyncIterator[Stack]:
    running = await start_stack(sqlite_url, upstream.base_url, "unused", runner_id="reasoning-direct")
    yield running
    await running.stop()


async def turn(stack: Stack, session_id: str, text: str, **options: Any) -> list[pb.SendStreamingMessageResponse]:
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(text)], options=pb.TurnOptions(**options)),
        metadata=AUTH,
    )
    return [event async for event in call]


def reasoning_of(events: list[Any]) -> str:
    return "".join(e.delta.reasoning for e in events if e.HasField("delta"))


@pytest.mark.parametrize("route", ["direct", "litellm"])
async def test_native_reasoning_is_streamed_in_sequence_and_stored(
    route: str, direct: Stack, stack: Stack, upstream: Any
) -> None:
    target = direct if route == "direct" else stack
    session = await create_session(target, model="scripted-a")
    marker = uuid.uuid4().hex[:8]
    events = await turn(target, session.id, f"[[reasoning:weigh the options {marker}]] hello")
    deltas = [e.delta for e in events if e.HasField("delta")]
    assert reasoning_of(events) == f"weigh the options {marker}"
    assert [d.sequence_number for d in deltas] == list(range(1, len(deltas) + 1)), "one sequence for both kinds"
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(d.reasoning for d in deltas[:first_content]), "reasoning streams before the answer"
    final = events[-1].assistant_message
    assert final.reasoning_content == f"weigh the options {marker}" and final.content.startswith("Echo:")
    assert final.usage.reasoning_tokens == 4
    stored = (await all_messages(target, session.id))[-1]
    assert stored.reasoning_content == final.reasoning_content


async def test_signed_thinking_blocks_go_back_with_their_tool_call(direct: Stack, upstream: Any) -> None:
    session = await create_session(direct, model="scripted-a")
    marker = uuid.uuid4().hex[:8]
    call = direct.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(
            session_id=session.id,
            messages=[user(f"[[thinking:I should check {marker}]] [[tool:get_weather {{}}]]")],
            options=pb.TurnOptions(tools=[WEATHER]),
        ),
        metadata=AUTH,
    )
    final = [e async for e in call][-1].assistant_message
    [block] = final.thinking_blocks
    assert (block.type, block.thinking) == ("thinking", f"I should check {marker}") and block.signature.startswith(
        "sig-"
    )
    answered = direct.sessions.SubmitToolOutputs(
        pb.SubmitToolOutputsRequest(
            session_id=session.id,
            tool_outputs=[pb.ToolOutput(tool_call_id=final.tool_calls[0].id, output="sunny")],
            options=pb.TurnOptions(tools=[WEATHER]),
        ),
        metadata=AUTH,
    )
    [e async for e in answered]
    follow_up = [
        r["body"]
        for r in upstream.requests
        if r["path"].endswith("/chat/completions") and r["body"]["messages"][-1].get("content") == "sunny"
    ][-1]
    assistant = follow_up["messages"][-2]
    assert assistant["thinking_blocks"] == [
        {"type": "thinking", "thinking": f"I should check {marker}", "signature": block.signature}
    ]


async def test_the_bridge_streams_and_returns_reasoning_content(direct: Stack) -> None:
    body = {"model": "scripted-a", "messages": [{"role": "user", "content": "[[reasoning:hmm let me see]] hi"}]}
    async with httpx.AsyncClient(base_url=direct.bridge_url, headers=BEARER, timeout=30) as http:
        reply = (await http.post("/v1/chat/completions", json=body)).json()
        assert reply["choices"][0]["message"]["reasoning_content"] == "hmm let me see"
        assert reply["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
        async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
            chunks = [
                json.loads(line[6:]) for line in [x async for x in response.aiter_lines()] if line.startswith("data: {")
            ]
    streamed = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"])
    assert streamed == "hmm let me see"


async def test_reasoning_mode_plans_first_and_says_so(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    events = await turn(offline_stack, session.id, "plan my week", routing_mode=pb.ROUTING_MODE_REASONING)
    final = events[-1].assistant_message
    assert reasoning_of(events).startswith("1. Understand the request: plan my week")
    assert final.reasoning_content.startswith("1. Understand the request: plan my week")
    assert final.content == "You said: plan my week"
    assert (final.routing.mode, final.routing.reason) == (pb.ROUTING_MODE_REASONING, "requested")
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0, "the plan's tokens are billed"


async def test_auto_mode_classifies_and_records_the_decision(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    short = (await turn(offline_stack, session.id, "hi", routing_mode=pb.ROUTING_MODE_AUTO))[-1].assistant_message
    assert (short.routing.mode, short.routing.requested) == (pb.ROUTING_MODE_PASSTHROUGH, pb.ROUTING_MODE_AUTO)
    assert short.routing.reason == "classifier" and short.routing.classifier_model == "agentapi-offline"
    assert short.routing.classifier_tokens > 0 and not short.reasoning_content
    long = (await turn(offline_stack, session.id, "how should I split this task", routing_mode=pb.ROUTING_MODE_AUTO))[
        -1
    ].assistant_message
    assert long.routing.mode == pb.ROUTING_MODE_REASONING and long.reasoning_content


async def test_a_failing_classifier_falls_back_to_passthrough(sqlite_url: str) -> None:
    running = await start_stack(sqlite_url, router_model="no-such-router")
    try:
        session = await create_session(running, model="agentapi-offline")
        final = (await turn(running, session.id, "how now", routing_mode=pb.ROUTING_MODE_AUTO))[-1].assistant_message
        assert final.routing.mode == pb.ROUTING_MODE_PASSTHROUGH
        assert final.routing.reason == "classifier failed: MODEL_NOT_FOUND"
        assert final.content == "You said: how now"
    finally:
        await running.stop()


async def test_response_format_and_client_tools_force_passthrough(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    json_mode = pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    final = (
        await turn(offline_stack, session.id, "x", routing_mode=pb.ROUTING_MODE_REASONING, response_format=json_mode)
    )[-1].assistant_message
    assert final.routing.mode == pb.ROUTING_MODE_PASSTHROUGH
    assert final.routing.reason == "response_format forces passthrough" and not final.reasoning_content
    final = (await turn(offline_stack, session.id, "y", routing_mode=pb.ROUTING_MODE_AUTO, tools=[WEATHER]))[
        -1
    ].assistant_message
    assert final.routing.reason == "client tools force passthrough" and not final.routing.classifier_model


async def test_orchestration_is_unimplemented_and_unknown_modes_are_refused(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await turn(offline_stack, session.id, "x", routing_mode=pb.ROUTING_MODE_ORCHESTRATION)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_reason(caught.value) == "ROUTING_MODE_UNAVAILABLE"
    assert await all_messages(offline_stack, session.id) == []
    body = {"model": "agentapi-offline", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=offline_stack.bridge_url, headers=BEARER, timeout=30) as http:
        refused = await http.post("/v1/chat/completions", json=body, headers={"X-Routing-Mode": "orchestration"})
        assert refused.status_code == 501 and refused.json()["error"]["reason"] == "ROUTING_MODE_UNAVAILABLE"
        unknown = await http.post("/v1/chat/completions", json=body, headers={"X-Routing-Mode": "telepathy"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "X-Routing-Mode"
        planned = await http.post("/v1/chat/completions", json=body, headers={"X-Routing-Mode": "reasoning"})
        assert planned.json()["choices"][0]["message"]["reasoning_content"].startswith("1. Understand the request")


async def test_an_agent_sets_its_default_routing_mode(offline_stack: Stack) -> None:
    agent = await create_agent(
        offline_stack, f"agent-{uuid.uuid4().hex[:10]}", "agentapi-offline", routing_mode=pb.ROUTING_MODE_REASONING
    )
    assert agent.routing_mode == pb.ROUTING_MODE_REASONING
    session = await create_session(offline_stack, agent.id)
    final = (await turn(offline_stack, session.id, "go"))[-1].assistant_message
    assert final.routing.mode == pb.ROUTING_MODE_REASONING and final.routing.requested == pb.ROUTING_MODE_REASONING
    direct = (await turn(offline_stack, session.id, "go", routing_mode=pb.ROUTING_MODE_PASSTHROUGH))[
        -1
    ].assistant_message
    assert direct.routing.mode == pb.ROUTING_MODE_PASSTHROUGH, "a turn's mode wins over the agent's"


async def test_reasoning_mode_acts_through_server_tools_with_the_plan_in_context(offline_stack: Stack) -> None:
    agent = await create_agent(
        offline_stack, f"agent-{uuid.uuid4().hex[:10]}", "agentapi-offline", builtin_tools=["calculator"]
    )
    session = await create_session(offline_stack, agent.id)
    events = await turn(
        offline_stack, session.id, 'call calculator {"expression": "6 * 7"}', routing_mode=pb.ROUTING_MODE_REASONING
    )
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.index("delta") < kinds.index("tool_call_started"), "the plan streams before the tool step"
    assert [e.tool_call_completed.content for e in events if e.HasField("tool_call_completed")] == ["42"]
    final = events[-1].assistant_message
    assert final.content == "Tool calculator returned: 42" and final.step == 2
    first_step = [m for m in await all_messages(offline_stack, session.id) if m.role == pb.ROLE_ASSISTANT][0]
    assert first_step.reasoning_content.startswith("1. Understand the request")
    assert first_step.routing.mode == pb.ROUTING_MODE_REASONING


async def test_reasoning_is_not_sent_back_upstream_on_the_next_turn(direct: Stack, upstream: Any) -> None:
    session = await create_session(direct, model="scripted-a")
    marker = uuid.uuid4().hex[:8]
    await turn(direct, session.id, f"[[reasoning:private thought {marker}]] first")
    await turn(direct, session.id, f"second {marker}")
    body = [r["body"] for r in upstream.requests if r["path"].endswith("/chat/completions")][-1]
    assert body["messages"][-1]["content"] == f"second {marker}"
    assistants = [m for m in body["messages"] if m["role"] == "assistant"]
    assert assistants and all(
        "reasoning_content" not in m and "private thought" not in m["content"] for m in assistants
    )
