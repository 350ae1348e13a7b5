"""Background responses, resumable streams and cancellation on the durable-run
RPCs (StreamTurn, CancelTurn, ``background`` on sends). The contract is on
this branch; the server side lands with issue 16, so the integration tests
are marked ``needs_event_log``. The numbering they rely on is tested here
too, purely: the same turn's events give the same Responses events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentapi import v1 as pb
from gateway.openai.responses_stream import ResponseEvents
from tests.stack import Stack
from tests.support.open_responses import validate_event, validate_response

SESSION = "11111111-1111-4111-8111-111111111111"
TURN = "22222222-2222-4222-8222-222222222222"


def _turn_events() -> list[pb.SendStreamingMessageResponse]:
    """A turn as the server streams it: reasoning, text, a client tool call."""
    events = [pb.SendStreamingMessageResponse(turn_started=pb.TurnStarted(message_id=TURN, model="m"))]
    events.append(pb.SendStreamingMessageResponse(delta=pb.Delta(reasoning="Thinking")))
    for word in ("Hello", " there"):
        events.append(pb.SendStreamingMessageResponse(delta=pb.Delta(content=word)))
    call = pb.ToolCallDelta(index=0, id="call_abc", name="get_weather")
    events.append(pb.SendStreamingMessageResponse(delta=pb.Delta(tool_calls=[call])))
    for part in ('{"city": ', '"Paris"}'):
        events.append(
            pb.SendStreamingMessageResponse(delta=pb.Delta(tool_calls=[pb.ToolCallDelta(index=0, arguments=part)]))
        )
    reply = pb.Message(
        id=TURN,
        role=pb.ROLE_ASSISTANT,
        content="Hello there",
        reasoning_content="Thinking",
        model="m",
        status=pb.MESSAGE_STATUS_REQUIRES_ACTION,
        finish_reason="tool_calls",
    )
    reply.tool_calls.add(id="call_abc", type="function").function.CopyFrom(
        pb.FunctionCall(name="get_weather", arguments='{"city": "Paris"}')
    )
    events.append(pb.SendStreamingMessageResponse(assistant_message=reply))
    return events


def _run(events: list[pb.SendStreamingMessageResponse]) -> list[dict[str, Any]]:
    machine = ResponseEvents(SESSION, "m", pb.TurnOptions())
    out = []
    for event in events:
        kind = event.WhichOneof("event")
        out += machine.event(kind, getattr(event, kind))
    return out


def test_replayed_turn_gives_the_same_numbered_events() -> None:
    first, again = _run(_turn_events()), _run(_turn_events())
    assert json.dumps(first) == json.dumps(again)
    assert [e["sequence_number"] for e in first] == list(range(len(first)))
    for event in first:
        validate_event(event)
    final = first[-1]["response"]
    validate_response(final)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["arguments"] == '{"city": "Paris"}'


async def _wait_for(stack: Stack, response_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    async with stack.http() as http:
        for _ in range(200):
            body = (await http.get(f"/v1/responses/{response_id}")).json()
            if body.get("status") in statuses:
                return body
            await asyncio.sleep(0.05)
    raise AssertionError(f"{response_id} never reached {statuses}: {body}")


@pytest.mark.needs_event_log
async def test_background_response_runs_on_and_is_polled(stack: Stack) -> None:
    async with stack.http() as http:
        created = await http.post(
            "/v1/responses", json={"model": "scripted-a", "input": "later please [[slow:50]]", "background": True}
        )
    body = created.json()
    assert created.status_code == 200, body
    validate_response(body)
    assert body["background"] is True and body["status"] in ("queued", "in_progress")
    done = await _wait_for(stack, body["id"], ("completed",))
    validate_response(done)
    assert done["output"][-1]["content"][0]["text"] == "Echo: later please"


@pytest.mark.needs_event_log
async def test_background_stream_disconnect_and_resume(stack: Stack) -> None:
    body = {
        "model": "scripted-a",
        "input": "one two three four five six [[slow:100]]",
        "background": True,
        "stream": True,
    }
    seen: list[dict[str, Any]] = []
    async with stack.http() as http:
        async with http.stream("POST", "/v1/responses", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and line != "data: [DONE]":
                    seen.append(json.loads(line[5:]))
                    if seen[-1]["type"] == "response.output_text.delta":
                        break  # the caller goes away mid-turn; a background turn goes on
    response_id = seen[0]["response"]["id"]
    last = seen[-1]["sequence_number"]
    resumed: list[dict[str, Any]] = []
    async with stack.http() as http:
        async with http.stream("GET", f"/v1/responses/{response_id}?stream=true&starting_after={last}") as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:") and line != "data: [DONE]":
                    resumed.append(json.loads(line[5:]))
    for event in resumed:
        validate_event(event)
    assert [e["sequence_number"] for e in resumed] == list(range(last + 1, last + 1 + len(resumed)))
    assert resumed[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in seen + resumed if e["type"] == "response.output_text.delta")
    assert text == "Echo: one two three four five six"
    # The whole stream again, from the start, numbers the same events the same way.
    async with stack.http() as http:
        async with http.stream("GET", f"/v1/responses/{response_id}?stream=true") as response:
            replay = [json.loads(line[5:]) async for line in response.aiter_lines() if line.startswith("data: {")]
    assert [(e["sequence_number"], e["type"]) for e in replay[: len(seen)]] == [
        (e["sequence_number"], e["type"]) for e in seen
    ]


@pytest.mark.needs_event_log
async def test_cancel_a_background_response(stack: Stack) -> None:
    async with stack.http() as http:
        created = (
            await http.post(
                "/v1/responses",
                json={"model": "scripted-a", "input": "a b c d e f g h [[slow:300]]", "background": True},
            )
        ).json()
        cancelled = await http.post(f"/v1/responses/{created['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    validate_response(cancelled.json())
    done = await _wait_for(stack, created["id"], ("cancelled",))
    assert done["status"] == "cancelled"


@pytest.mark.needs_event_log
async def test_the_sdk_resumes_and_cancels_background_responses(stack: Stack) -> None:
    client = stack.openai()
    started = await client.responses.create(
        model="scripted-a", input="alpha beta gamma delta [[slow:100]]", background=True, stream=True
    )
    seen = []
    async for event in started:
        seen.append(event)
        if event.type == "response.output_text.delta":
            break
    await started.close()  # the caller leaves; the background run goes on
    response_id = seen[0].response.id
    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)
    rest = [event async for event in resumed]
    assert rest[0].sequence_number == seen[-1].sequence_number + 1 and rest[-1].type == "response.completed"
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    assert text == "Echo: alpha beta gamma delta"

    slow = await client.responses.create(model="scripted-a", input="a b c d e f g h [[slow:300]]", background=True)
    cancelled = await client.responses.cancel(slow.id)
    assert cancelled.id == slow.id
    done = await _wait_for(stack, slow.id, ("cancelled",))
    assert done["status"] == "cancelled"
