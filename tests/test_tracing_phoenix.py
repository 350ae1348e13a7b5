"""Traces exported to a real Phoenix and read back through its REST API: one
trace from the caller's ``traceparent`` through the bridge, the gRPC server,
the run (two model steps with a server tool call between them), and the
LiteLLM proxy's own spans, with the GenAI attributes on agentapi's spans."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from server.observability import tracing
from tests.conftest import unavailable
from tests.helpers import create_agent
from tests.stack import Stack, start_stack

pytestmark = pytest.mark.litellm


@pytest.fixture(scope="module")
def phoenix() -> Iterator[Any]:
    """A real Phoenix (its own virtualenv, scripts/install-phoenix.sh) on free ports."""
    from tests.support import phoenix as support

    ok, reason = support.available()
    if not ok:
        unavailable(reason)
    with support.Phoenix() as server:
        yield server


@pytest.fixture(scope="module")
def traced_proxy(upstream: Any, phoenix: Any) -> Iterator[Any]:
    """A LiteLLM proxy of its own, with its OpenTelemetry callback exporting to Phoenix."""
    from tests.support import litellm_proxy

    ok, reason = litellm_proxy.available()
    if not ok:
        unavailable(reason)
    with litellm_proxy.LiteLLMProxy(upstream.base_url, otel_endpoint=phoenix.otlp_traces_url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
async def traced(sqlite_url: str, traced_proxy: Any, phoenix: Any) -> AsyncIterator[tuple[Stack, TracerProvider]]:
    """agentapi with tracing on (OTLP/HTTP to Phoenix) for this module's stack only."""
    provider = TracerProvider(resource=Resource.create({"service.name": "agentapi"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.otlp_traces_url)))
    tracing.configure(provider)
    try:
        stack = await start_stack(sqlite_url, f"{traced_proxy.base_url}/v1", traced_proxy.master_key)
        try:
            yield stack, provider
        finally:
            await stack.stop()
    finally:
        tracing.configure(None)
        provider.shutdown()


async def spans_of(phoenix: Any, trace_id: str, want: dict[str, int], timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The trace's spans once, for each name prefix in ``want``, at least that many spans
    have arrived: agentapi and LiteLLM export in batches of their own, so one
    process's spans can arrive in several exports."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = await phoenix.spans(trace_id)
        names = [s["name"] for s in spans]
        if all(sum(n.startswith(w) for n in names) >= count for w, count in want.items()):
            return spans
        if time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.5)


async def test_one_trace_spans_the_caller_the_bridge_the_run_and_litellm(
    traced: tuple[Stack, TracerProvider], phoenix: Any, traced_proxy: Any
) -> None:
    stack, provider = traced
    agent = await create_agent(stack, f"calc-{uuid.uuid4().hex[:8]}", model="scripted-a", builtin_tools=["calculator"])
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    async with stack.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
            json={
                "model": f"agent:{agent.key}",
                "messages": [{"role": "user", "content": '[[tool:calculator {"expression": "6 * 7"}]]'}],
            },
        )
    assert response.status_code == 200, response.text
    session_id = response.headers["x-session-id"]
    provider.force_flush()
    want = {
        "/agentapi.v1.SessionService/SendMessage": 1,
        "invoke_agent": 1,
        "chat ": 2,
        "execute_tool": 1,
        "Received Proxy Server Request": 2,
        "litellm_request": 2,
    }
    spans = await spans_of(phoenix, trace_id, want)
    by_id = {s["context"]["span_id"]: s for s in spans}
    names = sorted(s["name"] for s in spans)
    assert all(s["context"]["trace_id"] == trace_id for s in spans)

    def one(name: str) -> dict[str, Any]:
        found = [s for s in spans if s["name"] == name]
        assert len(found) == 1, (name, names)
        return found[0]

    def parent(span: dict[str, Any]) -> dict[str, Any] | None:
        return by_id.get(span.get("parent_id") or "")

    # The bridge's server span continues the caller's; the gRPC server span continues the bridge's.
    http_span = next(s for s in spans if s["parent_id"] == caller_span)
    assert http_span["name"].startswith("POST /v1/chat/completions"), names
    send = one("/agentapi.v1.SessionService/SendMessage")
    assert parent(send) is http_span
    run = one(f"invoke_agent {agent.key}")
    assert parent(run) is send
    attrs = run["attributes"]
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.agent.name"] == agent.key and attrs["agentapi.session.id"] == session_id
    assert attrs["agentapi.tenant.id"] == "default" and attrs["gen_ai.request.model"] == "scripted-a"
    assert attrs["gen_ai.conversation.id"] and attrs["agentapi.run.steps"] == 2
    # Two model steps, one attempt each, and the tool call between them: all children of the run.
    chats = sorted((s for s in spans if s["name"] == "chat scripted-a"), key=lambda s: s["attributes"]["agentapi.step"])
    assert [c["attributes"]["agentapi.step"] for c in chats] == [1, 2]
    for chat in chats:
        a = chat["attributes"]
        assert parent(chat) is run
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == "scripted-a" and a["gen_ai.response.model"] == "scripted-a"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert "gen_ai.usage.reasoning.output_tokens" in a and a["gen_ai.response.id"]
        assert (a["agentapi.attempt"], a["agentapi.fallback"]) == (1, False)
        assert "gen_ai.input.messages" not in a, "no message content unless asked for"
    assert list(chats[0]["attributes"]["gen_ai.response.finish_reasons"]) == ["tool_calls"]
    assert list(chats[1]["attributes"]["gen_ai.response.finish_reasons"]) == ["stop"]
    tool = one("execute_tool calculator")
    assert parent(tool) is run
    assert tool["attributes"]["gen_ai.tool.name"] == "calculator" and tool["attributes"]["gen_ai.tool.call.id"]
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    # The LiteLLM hop: the proxy's server span for each attempt's request is a child of
    # that attempt's chat span (the traceparent agentapi sent), its own spans below it.
    received = [s for s in spans if s["name"] == "Received Proxy Server Request"]
    assert sorted(s["parent_id"] for s in received) == sorted(c["context"]["span_id"] for c in chats), (
        f"each attempt's request reached LiteLLM in this trace; trace has {names}\n{traced_proxy.log_tail()}"
    )
    requests = [s for s in spans if s["name"] == "litellm_request"]
    assert len(requests) == 2 and all(parent(s) in received for s in requests)


async def test_retries_and_fallbacks_are_spans_of_their_own_and_counted(
    traced: tuple[Stack, TracerProvider], phoenix: Any
) -> None:
    from tests.test_observability import scrape, total

    stack, provider = traced
    agent = await create_agent(stack, f"fb-{uuid.uuid4().hex[:8]}", fallback_models=["scripted-b"])
    before = await scrape(stack.bridge_url)
    trace_id = secrets.token_hex(16)
    async with stack.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            json={
                "model": f"agent:{agent.key}",
                "messages": [{"role": "user", "content": "hi [[error:500@scripted-a]]"}],
            },
        )
    assert response.status_code == 200, response.text
    after = await scrape(stack.bridge_url)
    provider.force_flush()
    spans = await spans_of(phoenix, trace_id, {"chat scripted-": 3})
    chats = sorted(
        (s for s in spans if s["name"].startswith("chat ")),
        key=lambda s: (s["attributes"]["agentapi.fallback"], s["attributes"]["agentapi.attempt"]),
    )
    assert [(s["name"], s["attributes"]["agentapi.attempt"], s["attributes"]["agentapi.fallback"]) for s in chats] == [
        ("chat scripted-a", 1, False),
        ("chat scripted-a", 2, False),
        ("chat scripted-b", 1, True),
    ]
    assert [s["attributes"].get("error.type") for s in chats] == ["UPSTREAM_UNAVAILABLE"] * 2 + [None]
    assert [s["status_code"] for s in chats] == ["ERROR", "ERROR", "UNSET"]

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("agentapi_upstream_attempts_total", model="scripted-a", outcome="UPSTREAM_UNAVAILABLE") == 2
    assert grew("agentapi_upstream_retries_total", model="scripted-a", reason="UPSTREAM_UNAVAILABLE") == 1
    assert grew("agentapi_upstream_fallbacks_total", model="scripted-a", reason="UPSTREAM_UNAVAILABLE") == 1
    assert grew("agentapi_upstream_attempts_total", model="scripted-b", outcome="ok") == 1


async def test_agentapi_serve_traces_to_phoenix_from_the_otel_environment(
    phoenix: Any, sqlite_url: str, tmp_path: Any
) -> None:
    """What an operator does: ``agentapi serve`` with only the standard
    ``OTEL_*`` variables set exports its spans to Phoenix (no code change)."""
    import os
    import re
    import signal
    import subprocess
    import sys

    import httpx

    master = "sk-master-" + uuid.uuid4().hex[:12]
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": phoenix.otlp_traces_url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "AGENTAPI_MASTER_KEY": master,
    }
    env.pop("AGENTAPI_LLM_BASE_URL", None)  # the offline model
    out = tmp_path / "serve.out"
    database = f"sqlite+aiosqlite:///{tmp_path / 'traced.db'}"
    with out.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--migrate", "--database-url", database,
             "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
            stdout=stdout, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not (found := re.search(r"bridge listening on http://([\d.:]+)", out.read_text())):
                assert process.poll() is None and time.monotonic() < deadline, out.read_text()
                await asyncio.sleep(0.1)
            trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
            async with httpx.AsyncClient(base_url=f"http://{found.group(1)}", timeout=30) as http:
                response = await http.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {master}", "traceparent": f"00-{trace_id}-{caller_span}-01"},
                    json={"model": "agentapi-offline", "messages": [{"role": "user", "content": "hello"}]},
                )
            assert response.status_code == 200, response.text
            want = {"/agentapi.v1.SessionService/SendMessage": 1, "invoke_agent": 1, "chat agentapi-offline": 1}
            spans = await spans_of(phoenix, trace_id, want)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    names = [s["name"] for s in spans]
    for name, count in want.items():
        assert sum(n.startswith(name) for n in names) >= count, names
    assert any(s["parent_id"] == caller_span for s in spans), "the bridge's span continues the caller's"
    chat = next(s for s in spans if s["name"] == "chat agentapi-offline")
    assert chat["attributes"]["gen_ai.request.model"] == "agentapi-offline"
