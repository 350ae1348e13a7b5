"""Fault injection: every upstream failure of the taxonomy, produced by the
scripted upstream both behind the real LiteLLM proxy and directly, checked for
its gRPC status, ErrorInfo reason, retry hint and stored rows; what the bridge
answers for them (HTTP status, or an error chunk then ``[DONE]`` once the
stream began); and cancellation, over gRPC and by an HTTP client that goes
away, closing the upstream request.

Process-level faults (SIGTERM, SIGKILL) are in tests/test_faults_process.py,
database faults in tests/test_faults_db.py, and the idempotency retry storm and
two-process tests in tests/test_idempotency.py.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import openai
import pytest
from google.rpc import error_details_pb2

from agentapi import errors
from agentapi import v1 as pb
from tests.helpers import all_messages, create_session, user
from tests.stack import AUTH, Stack, free_port, start_stack
from tests.support.litellm_proxy import LiteLLMProxy
from tests.support.upstream import ScriptedUpstream

# Short timeouts so that stalls fail fast; one attempt per model so that each
# failure reaches the caller as the upstream produced it.
FAULT_SETTINGS: dict[str, Any] = {"upstream_read_timeout_s": 1.0, "attempt_timeout_s": 1.0, "retry_attempts": 1}
# The close of the upstream request after a cancel must be observed within this.
CLOSE_WITHIN_S = 0.100


@pytest.fixture(scope="module")
async def routes(sqlite_url: str, upstream: ScriptedUpstream, litellm: LiteLLMProxy) -> AsyncIterator[dict[str, Stack]]:
    """agentapi straight to the scripted upstream, and through the real LiteLLM proxy."""
    direct = await start_stack(sqlite_url, upstream.base_url, "unused", runner_id="faults-direct", **FAULT_SETTINGS)
    proxied = await start_stack(
        sqlite_url, f"{litellm.base_url}/v1", litellm.master_key, runner_id="faults-litellm", **FAULT_SETTINGS
    )
    yield {"direct": direct, "litellm": proxied}
    await proxied.stop()  # last started, first stopped
    await direct.stop()


def stored_reason(message: pb.Message) -> str:
    for detail in message.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def run_turn(
    stack: Stack, content: str, model: str = "scripted-a"
) -> tuple[pb.Session, list[pb.SendStreamingMessageResponse], grpc.aio.AioRpcError | None]:
    session = await create_session(stack, model=model)
    received: list[pb.SendStreamingMessageResponse] = []
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user(content)]), metadata=AUTH
    )
    try:
        async for event in call:
            received.append(event)
    except grpc.aio.AioRpcError as exc:
        return session, received, exc
    return session, received, None


# (content, gRPC code, reason, retry hint in seconds or None, fails after deltas were streamed)
TAXONOMY = {
    "rate_limited": ("[[error:429]] [[retry_after:7]]", "RESOURCE_EXHAUSTED", "UPSTREAM_RATE_LIMITED", 7.0, False),
    "quota_exhausted": ("[[error:quota]]", "RESOURCE_EXHAUSTED", "UPSTREAM_QUOTA_EXCEEDED", None, False),
    "server_error": ("[[error:503]]", "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", None, False),
    "gateway_timeout": ("[[error:504]]", "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", None, False),
    "context_length": ("[[error:context]]", "INVALID_ARGUMENT", "CONTEXT_WINDOW_EXCEEDED", None, False),
    "content_policy": ("[[error:content_filter]]", "FAILED_PRECONDITION", "CONTENT_FILTERED", None, False),
    "unknown_model": ("[[error:404]]", "NOT_FOUND", "MODEL_NOT_FOUND", None, False),
    "upstream_rejects_key": ("[[error:401]]", "INTERNAL", "UPSTREAM_AUTH_FAILED", None, False),
    "malformed_stream": ("one two three [[malformed:1]]", "UNAVAILABLE", "UPSTREAM_PROTOCOL_ERROR", None, True),
    "truncated_stream": (
        "one two three four [[slow:20]] [[drop_after:2]]",
        "UNAVAILABLE",
        "UPSTREAM_PROTOCOL_ERROR",
        None,
        True,
    ),
    "connection_reset_mid_stream": (
        "one two three four [[slow:20]] [[reset_after:2]]",
        "UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
        None,
        True,
    ),
    "stall_before_first_delta": ("[[stall:3000]]", "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", None, False),
    "stall_mid_stream": ("one two three [[stall:3000@1]]", "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", None, True),
    "empty_completion": ("[[empty]]", "UNAVAILABLE", "UPSTREAM_EMPTY_COMPLETION", None, False),
}


@pytest.mark.parametrize("route", ["direct", "litellm"])
@pytest.mark.parametrize("case", list(TAXONOMY))
async def test_upstream_failure_taxonomy(routes: dict[str, Stack], route: str, case: str) -> None:
    content, code, reason, retry_after, mid_stream = TAXONOMY[case]
    stack = routes[route]
    session, received, error = await run_turn(stack, f"{case} {content}")
    assert error is not None, f"{case} over {route} succeeded"
    decoded = errors.from_rpc_error(error)
    assert (error.code().name, decoded.reason) == (code, reason), decoded
    assert decoded.retry_delay_s == retry_after
    deltas = "".join(e.delta.content for e in received if e.HasField("delta"))
    assert bool(deltas) == mid_stream, f"deltas before the failure: {deltas!r}"
    # Never a silent success: the stream ends with the FAILED reply, then the status.
    assert received[0].HasField("turn_started") and received[1].input_message.content == f"{case} {content}"
    final = received[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_FAILED and stored_reason(final) == reason
    stored = await all_messages(stack, session.id)
    assert [(m.role, m.status) for m in stored] == [
        (pb.ROLE_USER, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_FAILED),
    ]
    assert stored[1].id == final.id and stored_reason(stored[1]) == reason
    assert stored[1].content == deltas  # the partial reply is kept, nothing more


@pytest.mark.parametrize("route", ["direct", "litellm"])
@pytest.mark.parametrize("content", ["one two [[finish:content_filter]]", "[[empty]] [[finish:content_filter]]"])
async def test_a_content_filter_finish_is_a_completed_reply_with_its_partial_content(
    routes: dict[str, Stack], route: str, content: str
) -> None:
    # OpenAI answers a filtered completion with a 200, the partial content and
    # finish_reason "content_filter": a reply, not an upstream failure.
    await run_turn(routes[route], "warm up")  # a cold LiteLLM can take longer than the 1 s attempt timeout
    session, received, error = await run_turn(routes[route], content)
    assert error is None, error
    final = received[-1].assistant_message
    deltas = "".join(e.delta.content for e in received if e.HasField("delta"))
    assert (final.status, final.finish_reason) == (pb.MESSAGE_STATUS_COMPLETED, "content_filter")
    assert final.content == deltas and (deltas.startswith("Echo: one") if "one" in content else deltas == "")
    stored = await all_messages(routes[route], session.id)
    assert (stored[-1].status, stored[-1].finish_reason) == (pb.MESSAGE_STATUS_COMPLETED, "content_filter")


async def test_connection_refused_is_upstream_unavailable(sqlite_url: str) -> None:
    refused = await start_stack(sqlite_url, f"http://127.0.0.1:{free_port()}/v1", "unused", **FAULT_SETTINGS)
    try:
        session, received, error = await run_turn(refused, "anyone?")
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
        assert errors.from_rpc_error(error).reason == "UPSTREAM_UNAVAILABLE"
        assert stored_reason(received[-1].assistant_message) == "UPSTREAM_UNAVAILABLE"
    finally:
        await refused.stop()


async def test_wrong_litellm_key_is_internal_auth_failure(
    sqlite_url: str, litellm: LiteLLMProxy, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = await start_stack(sqlite_url, f"{litellm.base_url}/v1", "sk-not-the-litellm-key", **FAULT_SETTINGS)
    try:
        with caplog.at_level("CRITICAL", logger="server.llm.errors"):
            session, received, error = await run_turn(wrong, "hello")
        assert error is not None and error.code() == grpc.StatusCode.INTERNAL
        assert errors.from_rpc_error(error).reason == "UPSTREAM_AUTH_FAILED"
        assert any("AGENTAPI_LLM_API_KEY" in r.getMessage() for r in caplog.records), "logged loudly"
        stored = await all_messages(wrong, session.id)
        assert stored_reason(stored[-1]) == "UPSTREAM_AUTH_FAILED"
    finally:
        await wrong.stop()


# (content, HTTP status, OpenAI error code (OpenAI's own where it has one, else
# the reason in lower case; the reason is in error.reason), Retry-After header)
BRIDGE = {
    "rate_limited": ("[[error:429]] [[retry_after:7]]", 429, "rate_limit_exceeded", "7"),
    "quota_exhausted": ("[[error:quota]]", 429, "insufficient_quota", None),
    "server_error": ("[[error:500]]", 502, "upstream_unavailable", None),
    "timeout": ("[[stall:3000]]", 504, "upstream_timeout", None),
    "context_length": ("[[error:context]]", 400, "context_length_exceeded", None),
    "content_policy": ("[[error:content_filter]]", 400, "content_policy_violation", None),
    "unknown_model": ("[[error:404]]", 404, "model_not_found", None),
    "malformed_stream": ("x [[malformed:0]]", 502, "upstream_protocol_error", None),
    "upstream_rejects_key": ("[[error:401]]", 500, "upstream_auth_failed", None),
    "empty_completion": ("[[empty]]", 502, "upstream_empty_completion", None),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", list(BRIDGE))
async def test_bridge_answers_the_taxonomy_with_http_statuses(
    routes: dict[str, Stack], case: str, stream: bool
) -> None:
    content, status, code, retry_after = BRIDGE[case]
    body = {"model": "scripted-a", "stream": stream, "messages": [{"role": "user", "content": content}]}
    async with routes["direct"].http() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"message", "type", "param", "code", "reason"}
    assert response.headers.get("retry-after") == retry_after


@pytest.mark.parametrize("route", ["direct", "litellm"])
async def test_bridge_error_after_the_first_delta_is_an_error_chunk_then_done(
    routes: dict[str, Stack], route: str
) -> None:
    body = {
        "model": "scripted-a",
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four five [[slow:20]] [[drop_after:3]]"}],
    }
    async with routes[route].http() as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            data = [line[6:] for line in [line async for line in response.aiter_lines()] if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])
    assert error["error"]["code"] == "upstream_protocol_error" and set(error["error"]) == {
        "message",
        "type",
        "param",
        "code",
        "reason",
    }
    chunks = [json.loads(d) for d in data[:-2]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).startswith("Echo:")
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks), "no finish chunk for a failed turn"

    client = routes[route].openai()
    streamed = await client.chat.completions.create(
        model="scripted-a", stream=True, messages=[{"role": "user", "content": body["messages"][0]["content"]}]
    )
    with pytest.raises(openai.APIError):
        async for _ in streamed:
            pass


async def _wait_for_disconnect(upstream: ScriptedUpstream, before: int, timeout_s: float = 5.0) -> float:
    """The upstream's time of the next disconnect after ``before`` of them."""
    deadline = time.monotonic() + timeout_s
    while upstream.disconnects <= before:
        assert time.monotonic() < deadline, "the upstream request was never closed"
        await asyncio.sleep(0.002)
    return upstream.disconnect_times[before]


async def _cancelled_reply(stack: Stack, session_id: str) -> pb.Message:
    for _ in range(400):  # the server stores the terminal state as the cancel reaches it
        reply = (await all_messages(stack, session_id))[-1]
        if reply.status != pb.MESSAGE_STATUS_IN_PROGRESS:
            return reply
        await asyncio.sleep(0.01)
    raise AssertionError("the reply stayed in progress")


SLOW_REPLY = "one two three four five six seven eight nine ten [[slow:200]]"
FULL_REPLY = "Echo: one two three four five six seven eight nine ten"


@pytest.mark.parametrize("route", ["direct", "litellm"])
async def test_grpc_cancel_closes_the_upstream_request_and_stores_the_partial_reply(
    routes: dict[str, Stack], route: str, upstream: ScriptedUpstream
) -> None:
    stack = routes[route]
    latencies = []
    for _ in range(3):
        session = await create_session(stack, model="scripted-a")
        call = stack.sessions.SendStreamingMessage(
            pb.SendStreamingMessageRequest(session_id=session.id, messages=[user(SLOW_REPLY)]), metadata=AUTH
        )
        received = ""
        async for event in call:
            received += event.delta.content
            if event.HasField("delta"):
                break
        before = upstream.disconnects
        cancelled_at = time.monotonic()
        call.cancel()
        latencies.append(await _wait_for_disconnect(upstream, before) - cancelled_at)
        reply = await _cancelled_reply(stack, session.id)
        assert reply.status == pb.MESSAGE_STATUS_CANCELLED
        assert reply.content.startswith(received) and len(reply.content) < len(FULL_REPLY)
        # Billed for what was streamed before the cancel, no more.
        assert 0 < reply.usage.completion_tokens <= len(reply.content.split()) + 1
    print(f"\nupstream closed after a gRPC cancel ({route}): {', '.join(f'{s * 1000:.1f} ms' for s in latencies)}")
    if route == "direct":  # through LiteLLM the proxy's own close adds its latency
        assert min(latencies) < CLOSE_WITHIN_S, latencies


async def test_http_client_going_away_closes_the_upstream_request(
    routes: dict[str, Stack], upstream: ScriptedUpstream
) -> None:
    stack = routes["direct"]
    latencies = []
    for _ in range(3):
        marker = uuid.uuid4().hex
        body = {
            "model": "scripted-a",
            "stream": True,
            "messages": [{"role": "user", "content": f"{marker} {SLOW_REPLY}"}],
        }
        async with stack.http() as http:
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                session_id = response.headers["x-session-id"]
                async for line in response.aiter_lines():
                    if '"content":"Echo: "' in line:
                        break
                before = upstream.disconnects
                left_at = time.monotonic()
        latencies.append(await _wait_for_disconnect(upstream, before) - left_at)
        reply = await _cancelled_reply(stack, session_id)
        assert reply.status == pb.MESSAGE_STATUS_CANCELLED and reply.content.startswith("Echo: ")
    print(f"\nupstream closed after the HTTP client left: {', '.join(f'{s * 1000:.1f} ms' for s in latencies)}")
    assert min(latencies) < CLOSE_WITHIN_S, latencies


async def test_retry_after_as_an_http_date(routes: dict[str, Stack]) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    _, _, error = await run_turn(routes["direct"], f"[[error:429]] [[retry_after:{when}]]")
    assert error is not None
    delay = errors.from_rpc_error(error).retry_delay_s
    assert delay is not None and 25 <= delay <= 31
