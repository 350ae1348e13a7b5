"""The JSON bridge with the official openai SDK as the client, through the real
LiteLLM proxy, on SQLite and MariaDB; stored messages are checked over gRPC."""

from __future__ import annotations

import json

import grpc
import openai
import pytest

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, field_violations, sent_upstream
from tests.stack import AUTH, Stack, free_port, start_stack
from tests.support.upstream import ScriptedUpstream


async def test_non_streamed_completion_is_recorded_as_a_session(stack: Stack) -> None:
    client = stack.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted-a",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello bridge"}],
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Echo: hello bridge"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    session_id = raw.headers["x-session-id"]
    stored = await all_messages(stack, session_id)
    assert [(m.role, m.content) for m in stored] == [
        (pb.ROLE_SYSTEM, "Be kind."),
        (pb.ROLE_USER, "hello bridge"),
        (pb.ROLE_ASSISTANT, "Echo: hello bridge"),
    ]
    assert completion.id == f"chatcmpl-{stored[-1].id}"


async def test_streamed_completion_uses_openai_sse_and_ends_with_done(stack: Stack) -> None:
    client = stack.openai()
    stream = await client.chat.completions.create(
        model="scripted-a",
        messages=[{"role": "user", "content": "stream to me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream to me please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    async with stack.http() as http:
        async with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "scripted-a", "stream": True, "messages": [{"role": "user", "content": "raw sse"}]},
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-session-id"]
            lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][len("data: ") :])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


async def test_session_header_continues_with_server_side_history(stack: Stack, upstream: ScriptedUpstream) -> None:
    client = stack.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted-a", messages=[{"role": "user", "content": "my name is Ada"}]
    )
    session_id = raw.headers["x-session-id"]
    stream = await client.chat.completions.create(
        model="scripted-a",
        messages=[{"role": "user", "content": "what is my name"}],
        stream=True,
        extra_headers={"X-Session-Id": session_id},
    )
    async for _ in stream:
        pass
    body = sent_upstream(upstream, "what is my name")
    assert [m["content"] for m in body["messages"]] == ["my name is Ada", "Echo: my name is Ada", "what is my name"]
    stored = await all_messages(stack, session_id)
    assert len(stored) == 4


async def test_agent_addressed_as_model_and_listed(stack: Stack, key: str, upstream: ScriptedUpstream) -> None:
    await create_agent(stack, key, system_prompt="Agent prompt here.")
    client = stack.openai()
    completion = await client.chat.completions.create(
        model=f"agent:{key}", messages=[{"role": "user", "content": "agent hi"}]
    )
    assert completion.choices[0].message.content == "Echo: agent hi"
    body = sent_upstream(upstream, "agent hi")
    assert body["messages"][0] == {"role": "system", "content": "Agent prompt here."}
    assert body["model"] == "scripted-a"
    ids = [m.id async for m in client.models.list()]
    assert f"agent:{key}" in ids and "scripted-a" in ids


async def test_bridge_errors_use_openai_shapes(stack: Stack) -> None:
    client = stack.openai()
    with pytest.raises(openai.NotFoundError) as not_found:
        await client.chat.completions.create(model="agent:no-such-agent", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.body["code"] == "agent_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="scripted-a",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Session-Id": "00000000-0000-4000-8000-000000000000"},
        )
    with pytest.raises(openai.BadRequestError) as malformed:
        await client.chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": "x"}], extra_headers={"X-Session-Id": "nope"}
        )
    assert malformed.value.body["code"] == "invalid_session_id"
    with pytest.raises(openai.BadRequestError) as empty:
        await client.chat.completions.create(model="scripted-a", messages=[{"role": "user", "content": ""}])
    assert empty.value.body["param"] == "messages[0].content"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="scripted-a", messages=[])
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        await stack.openai(api_key="wrong").models.list()
    assert set(unauthenticated.value.body) == {"message", "type", "param", "code", "reason"}
    assert unauthenticated.value.body["code"] == "invalid_api_key"
    assert unauthenticated.value.body["type"] == "invalid_request_error"
    async with stack.http() as http:
        response = await http.post("/v1/chat/completions", content=b"{not json")
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": ""}):
            unauthorized = await http.post("/v1/chat/completions", content=b"{}", headers=headers)
            assert unauthorized.status_code == 401, headers


async def test_upstream_error_maps_to_http_status(stack: Stack) -> None:
    client = stack.openai()
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": "fail [[error:500]]"}], stream=True
        )
    assert caught.value.status_code in (502, 503)
    session_id = caught.value.response.headers["x-session-id"]
    stored = await all_messages(stack, session_id)
    assert [m.status for m in stored] == [pb.MESSAGE_STATUS_COMPLETED, pb.MESSAGE_STATUS_FAILED]


async def test_upstream_down_stores_user_message_and_failed_reply(sqlite_url: str) -> None:
    down = await start_stack(sqlite_url, f"http://127.0.0.1:{free_port()}/v1", "unused")
    try:
        client = down.openai()
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model="scripted-a", messages=[{"role": "user", "content": "anyone there?"}], stream=stream
                )
            assert caught.value.status_code in (502, 503)
            assert caught.value.body["code"] == "upstream_unavailable"
            stored = await all_messages(down, caught.value.response.headers["x-session-id"])
            assert [(m.role, m.status) for m in stored] == [
                (pb.ROLE_USER, pb.MESSAGE_STATUS_COMPLETED),
                (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_FAILED),
            ]
    finally:
        await down.stop()


async def test_content_parts_with_an_image_are_stored_and_forwarded(stack: Stack, upstream: ScriptedUpstream) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    content = [{"type": "text", "text": "describe this"}, {"type": "image_url", "image_url": {"url": image}}]
    raw = await stack.openai().chat.completions.with_raw_response.create(
        model="scripted-a", messages=[{"role": "user", "content": content}]
    )
    assert raw.parse().choices[0].message.content == "Echo: describe this"
    sent = [r["body"] for r in upstream.requests if r["path"].endswith("/chat/completions")][-1]
    assert sent["messages"][-1]["content"] == content
    stored = (await all_messages(stack, raw.headers["x-session-id"]))[0]
    assert stored.content == "describe this"
    assert [(p.type, p.text, p.image_url) for p in stored.content_parts] == [
        ("text", "describe this", ""),
        ("image_url", "", image),
    ]
    assert stored.token_count > 85, "an image part counts as 85 tokens on top of the text"


async def test_bad_content_parts_are_named(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    bad = pb.InputMessage(
        role=pb.ROLE_USER,
        content_parts=[pb.ContentPart(type="audio"), pb.ContentPart(type="image_url", image_url="ftp://x")],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[bad]), metadata=AUTH)
    assert set(field_violations(caught.value)) == {
        "messages[0].content_parts[0].type",
        "messages[0].content_parts[1].image_url",
    }
    with pytest.raises(openai.BadRequestError) as rejected:
        await stack.openai().chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": [{"type": "video"}]}]
        )
    assert rejected.value.body["param"] == "messages[0].content[0]"
    with pytest.raises(openai.BadRequestError) as incomplete:
        await stack.openai().chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": [{"type": "input_audio"}]}]
        )
    assert incomplete.value.body["param"] == "messages[0].content[0].input_audio"
