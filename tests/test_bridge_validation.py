"""Malformed chat-completions bodies: each is a 400 in OpenAI's shape naming the
request field in ``param``, never a 500, and nothing is created for it (no
session, no message): the body is validated before any gRPC call."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.stack import Stack

OFFLINE = "agentapi-offline"
USER = [{"role": "user", "content": "hi"}]


async def stored_counts(stack: Stack) -> tuple[int, int]:
    """(sessions, messages) in the stack's database."""
    engine = create_async_engine(stack.config.database_url)
    try:
        async with engine.connect() as connection:
            sessions = (await connection.execute(text("SELECT COUNT(*) FROM sessions"))).scalar_one()
            messages = (await connection.execute(text("SELECT COUNT(*) FROM messages"))).scalar_one()
    finally:
        await engine.dispose()
    return sessions, messages


def body(**fields: Any) -> dict[str, Any]:
    return {"model": OFFLINE, "messages": USER, **fields}


# (raw body, the param OpenAI's error must name); each was a 500 or a silent accept before.
MALFORMED = [
    pytest.param(body(messages=[{"role": ["user"], "content": "x"}]), "messages[0].role", id="non-string role"),
    pytest.param(body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", id="unknown role"),
    pytest.param(
        body(messages=[{"role": "assistant", "content": "x", "tool_calls": "call"}, *USER]),
        "messages[0].tool_calls",
        id="string tool_calls",
    ),
    pytest.param(body(max_tokens=True), "max_tokens", id="boolean max_tokens"),
    pytest.param(body(max_tokens=2**70), "max_tokens", id="integer past 64 bits"),
    pytest.param(body(seed=-(2**64)), "seed", id="seed past 64 bits"),
    pytest.param(body(temperature="hot"), "temperature", id="string temperature"),
    pytest.param(body(temperature=7), "temperature", id="temperature out of range"),
    pytest.param(body(stream=True, stream_options="yes"), "stream_options", id="non-object stream_options"),
    pytest.param(body(stream=True, stream_options=[1]), "stream_options", id="array stream_options"),
    pytest.param(body(response_format={"type": "xml"}), "response_format.type", id="unknown response_format"),
    pytest.param(body(response_format={"type": "json_schema"}), "response_format", id="json_schema without schema"),
    pytest.param(body(tool_choice="always"), "tool_choice", id="unknown tool_choice"),
    pytest.param(body(tools=[{"type": "function", "function": {"name": "a b"}}]), "tools[0].function.name", id="tool"),
    pytest.param(body(stop=["a", "b", "c", "d", "e"]), "stop", id="five stop sequences"),
    pytest.param(body(logit_bias={"50256": 500}), "logit_bias", id="logit_bias out of range"),
    pytest.param(body(metadata={"k": 5}), "metadata", id="non-string metadata"),
    pytest.param(body(messages=[]), "messages", id="no messages"),
    pytest.param({"model": OFFLINE}, "messages", id="messages missing"),
    pytest.param(body(messages=[{"role": "user", "content": 5}]), "messages[0].content", id="numeric content"),
    pytest.param(
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 1}}]}]),
        "messages[0].content[0].image_url.url",
        id="numeric image url",
    ),
    pytest.param(body(my_extension=10**30), "my_extension", id="extra field past 2**53"),
    pytest.param({"messages": USER}, "model", id="model missing"),
]
RAW = [
    pytest.param(
        b'{"model": "agentapi-offline", "messages": [{"role": "user", "content": "\\ud800"}]}', id="surrogate"
    ),
    pytest.param(b'{"model": "agentapi-offline", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}", id="deep nesting"),
    pytest.param(
        b'{"model": "agentapi-offline", "messages": [{"role": "user", "content": "x"}], "x": '
        + b"[" * 60
        + b"]" * 60
        + b"}",
        id="deep extra field",
    ),
    pytest.param(b'{"model": "agentapi-offline", "messages": [{"role": "user"', id="cut-off JSON"),
    pytest.param(b'["a list"]', id="not an object"),
    pytest.param(b"\xff\xfe", id="not UTF-8"),
]


@pytest.mark.parametrize(("payload", "param"), MALFORMED)
async def test_malformed_body_is_a_400_naming_the_field_and_stores_nothing(
    offline_stack: Stack, payload: dict[str, Any], param: str
) -> None:
    before = await stored_counts(offline_stack)
    async with offline_stack.http() as http:
        response = await http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert await stored_counts(offline_stack) == before


@pytest.mark.parametrize("raw", RAW)
async def test_unparseable_body_is_a_400_and_stores_nothing(offline_stack: Stack, raw: bytes) -> None:
    before = await stored_counts(offline_stack)
    async with offline_stack.http() as http:
        response = await http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert await stored_counts(offline_stack) == before


async def test_the_sdk_sees_a_bad_request_with_param(offline_stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await offline_stack.openai().chat.completions.create(model=OFFLINE, messages=USER, temperature=9)
    assert caught.value.body["param"] == "temperature"
    assert caught.value.body["code"] == "invalid_request"


async def test_a_bad_key_is_401_before_a_bad_body(offline_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=offline_stack.bridge_url) as http:
        response = await http.post(
            "/v1/chat/completions", json={"messages": "x"}, headers={"Authorization": "Bearer wrong"}
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_resent_sdk_message_objects_and_developer_role_are_accepted(offline_stack: Stack) -> None:
    """SDKs append their own response message (with extra keys such as
    ``annotations`` and ``audio``) to the next request; that is not an error."""
    client = offline_stack.openai()
    first = await client.chat.completions.create(model=OFFLINE, messages=USER)
    history = [
        {"role": "developer", "content": "Answer briefly."},
        *USER,
        first.choices[0].message.model_dump(),
        {"role": "user", "content": "again"},
    ]
    second = await client.chat.completions.create(model=OFFLINE, messages=history)
    assert second.choices[0].message.content
