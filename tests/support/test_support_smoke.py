"""Smoke tests: the scripted upstream, alone and behind a real LiteLLM proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.litellm_proxy import LiteLLMProxy, available
from tests.support.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(scripted: ScriptedUpstream) -> Iterator[LiteLLMProxy]:
    ok, reason = available()
    if not ok:
        pytest.skip(reason)
    with LiteLLMProxy(scripted.base_url) as running:
        yield running


@pytest.fixture(scope="module")
def client(proxy: LiteLLMProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{proxy.base_url}/v1", api_key=proxy.master_key, max_retries=0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_upstream_direct_stream_format(scripted: ScriptedUpstream) -> None:
    body = {
        "model": "scripted-b",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": user("one two three"),
    }
    with httpx.stream("POST", f"{scripted.base_url}/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "scripted-b" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: one two three"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert any(r["body"] == body for r in scripted.requests)


def test_echo_through_proxy(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="scripted-a", messages=user("hello proxy"))
    assert response.choices[0].message.content == "Echo: hello proxy"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None and response.usage.completion_tokens > 0


def test_streamed_echo_through_proxy(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="scripted-c", messages=user("stream me please [[slow:5]]"), stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == "Echo: stream me please"
    assert len([p for p in pieces if p]) >= 3


def test_streamed_tool_call_through_proxy(client: openai.OpenAI) -> None:
    args = {"city": "Paris", "days": [1, 2, 3]}
    stream = client.chat.completions.create(
        model="scripted-a", messages=user(f"weather? [[tool:get_weather {json.dumps(args)}]]"), stream=True
    )
    name, arguments, finish = None, "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function:
                    name = call.function.name or name
                    arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments) == args
    assert finish == "tool_calls"


def test_rate_limit_through_proxy(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="scripted-a", messages=user("[[error:429]]"))
