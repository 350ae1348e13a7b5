"""The bridge forwards what an OpenAI caller sends and answers as OpenAI does:
every parameter reaches the upstream through the real LiteLLM proxy, the
response names the model that answered, every chunk carries the reply's id,
logprobs and refusals come back, content_filter is a 200, errors carry
OpenAI's codes, and a large prompt runs once. The official openai SDK is the
client; the scripted upstream (tests/support/upstream.py) records what it got."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jsonschema
import openai
import pydantic
import pytest
from google.rpc import error_details_pb2, status_pb2
from pydantic import BaseModel

from agentapi import v1 as pb
from gateway.errors import from_status
from tests.helpers import all_messages, create_agent
from tests.stack import AUTH, Stack, start_stack
from tests.support.upstream import REFUSAL_TEXT, ScriptedUpstream, minimal_instance


def unique(text: str) -> str:
    """``text`` with a unique suffix: the upstream is shared by the SQLite and MariaDB runs."""
    return f"{text} {uuid.uuid4().hex[:8]}"


def chat_bodies(upstream: ScriptedUpstream, marker: str) -> list[dict[str, Any]]:
    """The chat-completions bodies the upstream received whose last user text contains ``marker``."""

    def text(message: dict[str, Any]) -> str:
        content = message.get("content")
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content or ""

    return [
        r["body"]
        for r in upstream.requests
        if r["path"].endswith("/chat/completions") and marker in text(r["body"]["messages"][-1])
    ]


# --------------------------------------------------------------------------- #
# Parameters reach the upstream, and are stored with the reply
# --------------------------------------------------------------------------- #

SENT = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "required": ["a"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    "tool_choice": "none",
    "parallel_tool_calls": False,
    "stop": ["zz"],
    "seed": 7,
    "top_p": 0.5,
    "frequency_penalty": 0.1,
    "presence_penalty": 0.2,
    "logit_bias": {"50256": -5},
    "logprobs": True,
    "top_logprobs": 2,
    "reasoning_effort": "low",
    "max_completion_tokens": 50,
    "service_tier": "auto",
    "modalities": ["text"],
}
# LiteLLM's proxy keeps these two for itself (its own tracking), so they are
# checked on the stored reply's options instead of at the upstream.
KEPT_BY_LITELLM = {"user": "end-user-1", "metadata": {"k": "v"}}


@pytest.mark.parametrize("stream", [False, True])
async def test_every_parameter_reaches_the_upstream_and_is_stored(
    stack: Stack, upstream: ScriptedUpstream, stream: bool
) -> None:
    marker = unique("params")
    parts = [
        {"type": "text", "text": marker},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    raw = await stack.openai().chat.completions.with_raw_response.create(
        model="scripted-a",
        messages=[{"role": "user", "content": parts}],
        tools=tools,
        stream=stream,
        extra_body={"custom_field": {"nested": [1, "two"]}},
        **SENT,
        **KEPT_BY_LITELLM,
    )
    if stream:
        async for _ in raw.parse():
            pass
    (sent,) = chat_bodies(upstream, marker)
    for name, value in SENT.items():
        assert sent.get(name) == value, name
    assert "max_tokens" not in sent, "max_completion_tokens is sent as itself"
    assert sent["custom_field"] == {"nested": [1, "two"]}
    assert sent["messages"][-1]["content"] == parts
    stored = await all_messages(stack, raw.headers["x-session-id"])
    options = stored[-1].options
    assert options.user == "end-user-1" and dict(options.metadata) == {"k": "v"}
    assert options.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    assert options.max_completion_tokens == 50 and not options.HasField("max_output_tokens")
    assert [p.type for p in stored[0].content_parts] == ["text", "image_url", "input_audio", "file"]
    assert stored[0].content_parts[1].detail == "low"


async def test_max_tokens_is_sent_as_max_tokens(stack: Stack, upstream: ScriptedUpstream) -> None:
    marker = unique("cap me")
    await stack.openai().chat.completions.create(
        model="scripted-a", messages=[{"role": "user", "content": marker}], max_tokens=12
    )
    (sent,) = chat_bodies(upstream, marker)
    assert sent["max_tokens"] == 12 and "max_completion_tokens" not in sent


async def test_n_above_one_is_refused_naming_n(stack: Stack, upstream: ScriptedUpstream) -> None:
    marker = unique("two please")
    with pytest.raises(openai.BadRequestError) as caught:
        await stack.openai().chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": marker}], n=2
        )
    assert caught.value.body["param"] == "n"
    assert not chat_bodies(upstream, marker)


async def test_model_and_tools_apply_to_a_continued_turn(stack: Stack, upstream: ScriptedUpstream) -> None:
    marker = unique("turn two")
    client = stack.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted-a", messages=[{"role": "user", "content": "turn one"}]
    )
    session = {"X-Session-Id": raw.headers["x-session-id"]}
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    second = await client.chat.completions.create(
        model="scripted-b",
        messages=[{"role": "user", "content": f"{marker} [[tool:weather {{}}]]"}],
        tools=tools,
        extra_headers=session,
    )
    (sent,) = chat_bodies(upstream, marker)
    assert sent["model"] == "scripted-b"
    assert [t["function"]["name"] for t in sent["tools"]] == ["weather"]
    assert second.model == "scripted-b"
    assert second.choices[0].message.tool_calls[0].function.name == "weather"


# --------------------------------------------------------------------------- #
# The answering model, the reply's id on every chunk, replays
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("stream", [False, True])
async def test_response_model_is_the_model_that_answered(stack: Stack, key: str, stream: bool) -> None:
    await create_agent(stack, key, model="scripted-a", fallback_models=["scripted-b"])
    client = stack.openai()
    messages = [{"role": "user", "content": f"fall back {stream} [[error:500@scripted-a]]"}]
    if not stream:
        completion = await client.chat.completions.create(model=f"agent:{key}", messages=messages)
        assert completion.model == "scripted-b"
        return
    chunks = [
        c async for c in await client.chat.completions.create(model=f"agent:{key}", messages=messages, stream=True)
    ]
    assert {c.model for c in chunks} == {"scripted-b"}


async def test_every_chunk_has_the_reply_id_and_a_replay_has_the_same(stack: Stack) -> None:
    client = stack.openai()
    request = {
        "model": "scripted-a",
        "messages": [{"role": "user", "content": "ids for every chunk"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Idempotency-Key": f"ids-{id(request)}"}
    raw = await client.chat.completions.with_raw_response.create(**request, extra_headers=headers)
    chunks = [c async for c in raw.parse()]
    ids = {c.id for c in chunks}
    (reply_id,) = ids
    stored = await all_messages(stack, raw.headers["x-session-id"])
    assert reply_id == f"chatcmpl-{stored[-1].id}"
    replay = [c async for c in await client.chat.completions.create(**request, extra_headers=headers)]
    assert {c.id for c in replay} == {reply_id}
    assert "".join(c.choices[0].delta.content or "" for c in replay if c.choices) == "Echo: ids for every chunk"
    unary = {"model": "scripted-a", "messages": [{"role": "user", "content": "unary replay"}]}
    first = await client.chat.completions.create(**unary, extra_headers={"Idempotency-Key": f"u-{reply_id}"})
    again = await client.chat.completions.create(**unary, extra_headers={"Idempotency-Key": f"u-{reply_id}"})
    assert first.id == again.id and first.id.startswith("chatcmpl-")


@pytest.mark.parametrize("stream", [False, True])
async def test_content_filter_is_a_200_with_the_partial_content(stack: Stack, stream: bool) -> None:
    client = stack.openai()
    messages = [{"role": "user", "content": f"partly filtered {stream} [[finish:content_filter]]"}]
    if stream:
        chunks = [
            c async for c in await client.chat.completions.create(model="scripted-a", messages=messages, stream=True)
        ]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        completion = await client.chat.completions.create(model="scripted-a", messages=messages)
        text, finish = completion.choices[0].message.content, [completion.choices[0].finish_reason]
    assert text == f"Echo: partly filtered {stream}"
    assert finish == ["content_filter"]


# --------------------------------------------------------------------------- #
# logprobs, refusal, structured output
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_come_back_and_are_stored(stack: Stack, stream: bool) -> None:
    client = stack.openai()
    request: dict[str, Any] = {
        "model": "scripted-a",
        "messages": [{"role": "user", "content": f"probable words {stream}"}],
        "logprobs": True,
        "top_logprobs": 1,
    }
    if stream:
        raw = await client.chat.completions.with_raw_response.create(**request, stream=True)
        entries = [
            e
            for c in [c async for c in raw.parse()]
            if c.choices and c.choices[0].logprobs
            for e in c.choices[0].logprobs.content
        ]
    else:
        raw = await client.chat.completions.with_raw_response.create(**request)
        entries = raw.parse().choices[0].logprobs.content
    assert [e.token for e in entries] == ["Echo: ", "probable ", "words ", str(stream)]
    assert entries[0].logprob == pytest.approx(-0.01) and entries[0].bytes == list(b"Echo: ")
    assert [t.token for t in entries[0].top_logprobs] == ["alt0"]
    stored = (await all_messages(stack, raw.headers["x-session-id"]))[-1]
    assert [lp.token for lp in stored.logprobs] == [e.token for e in entries]


@pytest.fixture
async def direct(sqlite_url: str, upstream: ScriptedUpstream) -> AsyncIterator[Stack]:
    """agentapi calling the scripted upstream without LiteLLM in between."""
    running = await start_stack(sqlite_url, upstream.base_url, "unused", runner_id="direct")
    yield running
    await running.stop()


async def test_a_developer_message_stays_developer(direct: Stack, upstream: ScriptedUpstream) -> None:
    """Directly against the upstream: LiteLLM's proxy (1.103.7) sends a developer
    message to an ``openai/`` model as a system message."""
    marker = unique("developer")
    raw = await direct.openai().chat.completions.with_raw_response.create(
        model="scripted-a",
        messages=[{"role": "developer", "content": "Answer briefly."}, {"role": "user", "content": marker}],
    )
    (sent,) = chat_bodies(upstream, marker)
    assert sent["messages"][0] == {"role": "developer", "content": "Answer briefly."}
    stored = await all_messages(direct, raw.headers["x-session-id"])
    assert stored[0].role == pb.ROLE_DEVELOPER


async def test_a_refusal_comes_back_as_refusal(direct: Stack) -> None:
    """Directly against the upstream: LiteLLM's proxy (1.103.7) moves a refusal
    into ``provider_specific_fields`` and drops refusal deltas."""
    client = direct.openai()
    messages = [{"role": "user", "content": "do the bad thing [[refusal]]"}]
    completion = await client.chat.completions.create(model="scripted-a", messages=messages)
    assert completion.choices[0].message.refusal == REFUSAL_TEXT
    assert completion.choices[0].message.content is None
    chunks = [c async for c in await client.chat.completions.create(model="scripted-a", messages=messages, stream=True)]
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks if c.choices) == REFUSAL_TEXT


class Step(BaseModel):
    explanation: str
    output: int


class MathAnswer(BaseModel):
    steps: list[Step]
    final_answer: str
    confident: bool


async def test_the_sdk_parse_helper_returns_the_pydantic_model(stack: Stack, upstream: ScriptedUpstream) -> None:
    marker = unique("solve 8x + 7 = -23")
    client = stack.openai()
    completion = await client.chat.completions.parse(
        model="scripted-a",
        messages=[{"role": "user", "content": marker}],
        response_format=MathAnswer,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, MathAnswer)
    assert parsed == MathAnswer(steps=[], final_answer=marker, confident=False)
    (sent,) = chat_bodies(upstream, marker)
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "MathAnswer"
    json_mode = await client.chat.completions.create(
        model="scripted-a",
        messages=[{"role": "user", "content": "answer in JSON"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(json_mode.choices[0].message.content) == {"echo": "answer in JSON"}


class Kind(enum.Enum):
    A = "a"
    B = "b"


class Everything(BaseModel):
    when: datetime.datetime
    kind: Kind
    maybe: int | None
    score: float = pydantic.Field(ge=1.5)
    tags: list[str] = pydantic.Field(min_length=2)
    nested: Step


@pytest.mark.parametrize("model", [MathAnswer, Everything])
def test_the_scripted_upstreams_json_is_valid_against_the_schema(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    instance = minimal_instance(schema, schema, "some text")
    jsonschema.validate(instance, schema)
    model.model_validate(instance)


# --------------------------------------------------------------------------- #
# Errors in OpenAI's codes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("directive", "status", "code", "error_type", "reason"),
    [
        ("[[error:context]]", 400, "context_length_exceeded", "invalid_request_error", "CONTEXT_WINDOW_EXCEEDED"),
        ("[[error:quota]]", 429, "insufficient_quota", "insufficient_quota", "UPSTREAM_QUOTA_EXCEEDED"),
        ("[[error:content_filter]]", 400, "content_policy_violation", "invalid_request_error", "CONTENT_FILTERED"),
        ("[[error:429]]", 429, "rate_limit_exceeded", "rate_limit_error", "UPSTREAM_RATE_LIMITED"),
    ],
)
async def test_upstream_failures_carry_openai_codes(
    stack: Stack, directive: str, status: int, code: str, error_type: str, reason: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await stack.openai().chat.completions.create(
            model="scripted-a", messages=[{"role": "user", "content": f"fail {directive}"}]
        )
    assert caught.value.status_code == status
    body = caught.value.body
    assert (body["code"], body["type"], body["reason"]) == (code, error_type, reason)


async def test_a_large_prompt_runs_once_and_answers_200(stack: Stack, upstream: ScriptedUpstream) -> None:
    """A 4 MB prompt (four messages, each under the server's 1 MiB-character
    limit) makes a reply of over 5 MB: SendMessage returns the stored input
    with the answer. The bridge's channel used to refuse that reply with
    grpc's RESOURCE_EXHAUSTED, answered 429 after the turn ran and was
    billed, so the SDK retried it."""
    marker = unique("large-prompt")
    words = "lorem ipsum dolor sit amet " * (1_000_000 // 27)
    # Hyphens, not spaces: the upstream echoes one delta per word, and a few
    # large deltas keep the echo of 1 MB quick.
    prompt = f"{marker} " + "lorem-ipsum-dolor-sit-amet-" * (1_000_000 // 27)
    messages = [
        {"role": "system", "content": words},
        {"role": "user", "content": words},
        {"role": "assistant", "content": words},
        {"role": "user", "content": prompt},
    ]
    client = openai.AsyncOpenAI(base_url=f"{stack.bridge_url}/v1", api_key="sk-test-master", max_retries=2)
    raw = await client.chat.completions.with_raw_response.create(model="scripted-a", messages=messages)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == f"Echo: {prompt}"
    assert len(chat_bodies(upstream, marker)) == 1
    stored = await all_messages(stack, raw.headers["x-session-id"])
    assert [m.role for m in stored] == [
        pb.ROLE_SYSTEM,
        pb.ROLE_USER,
        pb.ROLE_ASSISTANT,
        pb.ROLE_USER,
        pb.ROLE_ASSISTANT,
    ]


def test_grpcs_own_resource_exhausted_is_413_never_429() -> None:
    """grpc's own RESOURCE_EXHAUSTED carries no agentapi ErrorInfo: a message
    size limit, which SDKs must not retry as a rate limit."""
    size = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="Received message larger than max"
    )
    error = from_status(size)
    assert error.http_status == 413 and error.body["error"]["code"] == "request_too_large"
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="agentapi")
    limited = status_pb2.Status(code=size.code, message="over the limit")
    limited.details.add().Pack(info)
    assert from_status(limited).http_status == 429


async def test_a_tenant_over_its_rate_limit_gets_rate_limit_exceeded(offline_stack: Stack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    limits = pb.RateLimits(requests_per_minute=1)
    await offline_stack.tenants.CreateTenant(
        pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant, rate_limits=limits)), metadata=AUTH
    )
    created = await offline_stack.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(api_key=pb.ApiKey(tenant_id=tenant, scope=pb.API_KEY_SCOPE_CLIENT)), metadata=AUTH
    )
    client = offline_stack.openai(api_key=created.secret)
    messages = [{"role": "user", "content": "once a minute"}]
    await client.chat.completions.create(model="agentapi-offline", messages=messages)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="agentapi-offline", messages=messages)
    body = caught.value.body
    assert (body["code"], body["type"], body["reason"]) == ("rate_limit_exceeded", "rate_limit_error", "RATE_LIMITED")
    assert int(caught.value.response.headers["retry-after"]) >= 1
