"""Observability: ``/metrics`` scraped and parsed with prometheus-client's own
parser (one process, and two workers), the one log line per request, and
tracing's off state. The traces themselves, read back from a real Phoenix,
are in tests/test_tracing_phoenix.py."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentapi import v1 as pb
from server.observability import metrics, tracing
from tests.helpers import create_agent, create_session, user
from tests.stack import AUTH, Stack
from tests.test_workers import KEY, Workers


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all((k, v) in sample_labels for k, v in labels.items())
    )


async def scrape(base_url: str) -> dict[Any, float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:  # a new connection each time
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_a_two_step_run_is_counted_in_the_metrics(offline_stack: Stack) -> None:
    before = await scrape(offline_stack.bridge_url)
    agent = await create_agent(
        offline_stack, f"calc-{uuid.uuid4().hex[:8]}", model="agentapi-offline", builtin_tools=["calculator"]
    )
    session = await create_session(offline_stack, agent.id)
    call = offline_stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user('call calculator {"expression": "6*7"}')]),
        metadata=AUTH,
    )
    events = [event async for event in call]
    assert events[-1].assistant_message.content == "Tool calculator returned: 42"
    after = await scrape(offline_stack.bridge_url)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    method = "/agentapi.v1.SessionService/SendStreamingMessage"
    assert grew("agentapi_rpc_requests_total", method=method, code="OK") == 1
    assert grew("agentapi_rpc_duration_seconds_count", method=method) == 1
    assert grew("agentapi_run_duration_seconds_count", status="completed") == 1
    assert grew("agentapi_run_steps_sum", status="completed") == 2
    assert grew("agentapi_tool_calls_total", tool="calculator", executor="builtin", outcome="ok") == 1
    assert grew("agentapi_tool_call_duration_seconds_count", tool="calculator") == 1
    genai = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "agentapi-offline"}
    assert grew("gen_ai_server_time_to_first_token_seconds_count", **genai) == 2
    assert grew("gen_ai_server_time_per_output_token_seconds_count", **genai) == 2
    assert grew("agentapi_upstream_attempts_total", model="agentapi-offline", outcome="ok") == 2
    tokens = {"tenant": "default", "agent": agent.key, "model": "agentapi-offline"}
    assert grew("agentapi_tokens_total", type="input", **tokens) > 0
    assert grew("agentapi_tokens_total", type="output", **tokens) > 0
    assert grew("agentapi_db_statement_duration_seconds_count", operation="INSERT") > 0
    assert grew("agentapi_db_pool_checkouts_total", pool="main") > 0
    assert total(after, "agentapi_runs_in_flight") == 0
    assert total(after, "agentapi_open_streams", server="grpc") == 0
    assert grew("agentapi_http_requests_total", method="GET", route="/metrics", status="200") == 1
    # No label carries an id: the session, reply and tool call ids appear nowhere.
    text = str(after)
    assert session.id not in text and events[-1].assistant_message.id not in text


async def test_errors_and_refusals_are_counted_by_reason(offline_stack: Stack) -> None:
    before = await scrape(offline_stack.bridge_url)
    missing = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError):
        await offline_stack.sessions.GetSession(pb.GetSessionRequest(session_id=missing), metadata=AUTH)
    async with offline_stack.http() as http:
        unauthorized = await http.get("/v1/models", headers={"Authorization": "Bearer sk-wrong-key-123"})
    assert unauthorized.status_code == 401
    after = await scrape(offline_stack.bridge_url)
    get = "/agentapi.v1.SessionService/GetSession"
    assert (
        total(after, "agentapi_rpc_requests_total", method=get, code="NOT_FOUND")
        - total(before, "agentapi_rpc_requests_total", method=get, code="NOT_FOUND")
        == 1
    )
    assert total(after, "agentapi_errors_total", reason="SESSION_NOT_FOUND") > total(
        before, "agentapi_errors_total", reason="SESSION_NOT_FOUND"
    )
    assert total(after, "agentapi_http_requests_total", route="/v1/models", status="401") > total(
        before, "agentapi_http_requests_total", route="/v1/models", status="401"
    )


async def test_each_request_is_one_structured_line_without_secrets(
    offline_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentapi")
    secret_text = f"private words {uuid.uuid4().hex}"
    async with offline_stack.http() as http:
        ok = await http.post(
            "/v1/chat/completions",
            headers={"X-Request-Id": "req-obs-1"},
            json={"model": "agentapi-offline", "messages": [{"role": "user", "content": secret_text}]},
        )
        refused = await http.get(
            "/v1/models", headers={"Authorization": "Bearer sk-not-a-key-999", "X-Request-Id": "req-obs-2"}
        )
    assert (ok.status_code, refused.status_code) == (200, 401)
    session = ok.headers["x-session-id"]
    http_lines = [r for r in caplog.records if r.name == "agentapi.bridge"]
    rpc_lines = [r for r in caplog.records if r.name == "agentapi.rpc"]
    turn = next(r for r in http_lines if getattr(r, "request_id", "") == "req-obs-1")
    assert (turn.method, turn.route, turn.status) == ("POST", "/v1/chat/completions", 200)
    assert turn.session == session and turn.duration_ms > 0
    denied = next(r for r in http_lines if getattr(r, "request_id", "") == "req-obs-2")
    assert (denied.status, denied.reason) == (401, "UNAUTHENTICATED") or denied.status == 401
    # The gRPC side of the turn: its method, code, tenant, session and the bridge's request id.
    send = [r for r in rpc_lines if getattr(r, "request_id", "") == "req-obs-1" and r.status == "OK"]
    assert any(r.method.endswith("/SendMessage") and r.tenant == "default" and r.session == session for r in send)
    refusal = next(r for r in rpc_lines if getattr(r, "request_id", "") == "req-obs-2")
    assert refusal.status == "UNAUTHENTICATED" and refusal.reason
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret_text not in logged and "sk-not-a-key-999" not in logged
    assert not [r for r in caplog.records if r.name.startswith("httpx")]


def test_tracing_is_off_unless_an_exporter_is_configured() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "agentapi"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    if not tracing.enabled():  # the no-op paths: no span, no header, no trace id
        span = tracing.start("x")
        assert not span.is_recording()
        assert tracing.inject({}) == {} and tracing.trace_id() == ""


def test_label_values_are_bounded() -> None:
    kind = f"test-{uuid.uuid4().hex}"
    values = [metrics.bounded(kind, f"v{i}") for i in range(metrics.MAX_LABEL_VALUES + 5)]
    assert values[: metrics.MAX_LABEL_VALUES] == [f"v{i}" for i in range(metrics.MAX_LABEL_VALUES)]
    assert set(values[metrics.MAX_LABEL_VALUES :]) == {metrics.OTHER}
    assert metrics.bounded(kind, "v0") == "v0" and metrics.bounded(kind, "") == "-"


async def test_two_workers_serve_one_sum_of_metrics(sqlite_url: str, tmp_path: Path) -> None:
    """Each scrape lands on whichever worker the kernel picks; every one must
    count all the requests, served by both workers."""
    server = Workers(sqlite_url, tmp_path / "agentapi.log", workers=2)
    try:
        await server.start()
        base = f"http://127.0.0.1:{server.http_port}"
        route = {"method": "GET", "route": "/healthz", "status": "200"}
        start = total(await scrape(base), "agentapi_http_requests_total", **route)
        for _ in range(20):  # a new connection each: the kernel spreads them over the workers
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                assert (await http.get("/healthz")).status_code == 200
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            reply = await http.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"model": "agentapi-offline", "messages": [{"role": "user", "content": "hello"}]},
            )
        assert reply.status_code == 200
        for _ in range(6):
            samples = await scrape(base)
            assert total(samples, "agentapi_http_requests_total", **route) - start == 20
            assert total(samples, "agentapi_run_duration_seconds_count", status="completed") >= 1
            assert total(samples, "agentapi_runs_in_flight") == 0
        pids = server.pids()
        assert len(pids) == 2
        log = server.text()
        served = {pid for pid in pids.values() if f"[w{_index(pids, pid)}] agentapi.bridge: GET /healthz" in log}
        assert len(served) == 2, "both workers served requests: the sums above are of two processes"
    finally:
        server.close()
        await asyncio.sleep(0)


def _index(pids: dict[int, int], pid: int) -> int:
    return next(index for index, p in pids.items() if p == pid)


def test_the_grafana_dashboard_and_the_docs_name_only_metrics_that_exist() -> None:
    import json
    import re

    from prometheus_client import REGISTRY

    repo = Path(__file__).resolve().parents[1]
    declared = {m.name for m in REGISTRY.collect() if m.name.startswith(("agentapi_", "gen_ai_"))}
    exposed = {f"{n}_{s}" for n in declared for s in ("total", "bucket", "sum", "count")} | declared
    labels = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"}
    dashboard = json.loads((repo / "deploy" / "grafana" / "agentapi.json").read_text())
    pattern = r"\b((?:agentapi|gen_ai)_[a-z_]+)\b"
    used = {n for p in dashboard["panels"] for t in p.get("targets", ()) for n in re.findall(pattern, t["expr"])}
    assert used - labels and used - labels <= exposed, used - labels - exposed
    docs = (repo / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"`((?:agentapi|gen_ai)_[a-z_]+)`", docs)) - labels
    assert documented <= exposed, documented - exposed
    for metric in declared:  # every metric is documented, by its exposed name
        assert metric in documented or f"{metric}_total" in documented, metric


async def test_sql_statements_get_spans_only_when_asked(sqlite_url: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy import text

    from server.store.db import Database

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    try:
        for trace_sql in (False, True):
            tracing.configure(provider, trace_sql=trace_sql)
            db = Database(sqlite_url)
            async with db.session() as session:
                assert (await session.execute(text("SELECT 42"))).scalar() == 42
            await db.dispose()
            statements = [s for s in exported.get_finished_spans() if s.name.startswith("SELECT")]
            assert bool(statements) is trace_sql, [s.name for s in exported.get_finished_spans()]
            exported.clear()
    finally:
        tracing.configure(None)
        provider.shutdown()


@pytest.mark.parametrize("capture", [False, True])
async def test_message_content_is_on_spans_only_when_asked(
    offline_stack: Stack, monkeypatch: pytest.MonkeyPatch, capture: bool
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true" if capture else "false")
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    secret = f"sesame-{uuid.uuid4().hex[:8]}"
    try:
        tracing.configure(provider)
        session = await create_session(offline_stack, model="agentapi-offline")
        await offline_stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user(f"remember {secret}")]), metadata=AUTH
        )
    finally:
        tracing.configure(None)
        provider.shutdown()
    [chat] = [s for s in exported.get_finished_spans() if s.name == "chat agentapi-offline"]
    attributes = dict(chat.attributes or {})
    assert ("gen_ai.input.messages" in attributes) is capture
    assert ("gen_ai.output.messages" in attributes) is capture
    everything = str([dict(s.attributes or {}) for s in exported.get_finished_spans()])
    assert (secret in everything) is capture


async def test_a_budget_refusal_is_counted_by_reason(offline_stack: Stack) -> None:
    import agentapi
    from tests.test_client_errors import tenant_client

    before = await scrape(offline_stack.bridge_url)
    budget = pb.Budget(period=pb.BUDGET_PERIOD_MONTH, max_tokens=1)
    async with await tenant_client(offline_stack, budget=budget) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model="agentapi-offline"))
        with pytest.raises(agentapi.BudgetExceededError):
            await api.sessions.send(session.id, "a prompt longer than one token")
    after = await scrape(offline_stack.bridge_url)
    refused = total(after, "agentapi_refusals_total", reason="BUDGET_EXCEEDED") - total(
        before, "agentapi_refusals_total", reason="BUDGET_EXCEEDED"
    )
    assert refused == 1  # the client never retries BUDGET_EXCEEDED: one call, one refusal
