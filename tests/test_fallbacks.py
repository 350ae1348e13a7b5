"""Fallback routing through the real LiteLLM proxy: the scripted upstream fails
the agent's default model, and the next model answers, before any delta only."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, error_reason, stream_turn, user
from tests.stack import Stack, start_stack


@pytest.mark.parametrize(
    ("directive", "reason", "tries"),
    [
        # Retryable on the same model: the policy's two attempts, then the fallback.
        ("[[error:429@scripted-a]]", "UPSTREAM_RATE_LIMITED", 2),
        ("[[error:500@scripted-a]]", "UPSTREAM_UNAVAILABLE", 2),
        # Another try of a model the upstream does not know cannot help.
        ("[[error:404@scripted-a]]", "MODEL_NOT_FOUND", 1),
    ],
)
async def test_retryable_failure_falls_back_before_first_delta(
    stack: Stack, key: str, directive: str, reason: str, tries: int
) -> None:
    agent = await create_agent(stack, key, fallback_models=["scripted-b", "scripted-c"])
    session = await create_session(stack, agent.id)
    events = await stream_turn(stack, session.id, user(f"fall back please {directive}"))
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED
    assert final.model == "scripted-b"
    assert final.content == "Echo: fall back please"
    assert [(a.model, a.error_reason) for a in final.attempts] == [("scripted-a", reason)] * tries + [
        ("scripted-b", "")
    ]
    stored = (await all_messages(stack, session.id))[-1]
    assert stored.model == "scripted-b" and list(stored.attempts) == list(final.attempts)


async def test_failure_after_first_delta_does_not_fall_back(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key, fallback_models=["scripted-b"])
    session = await create_session(stack, agent.id)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stack.sessions.SendStreamingMessage(
            pb.SendStreamingMessageRequest(
                session_id=session.id, messages=[user("one two three four [[slow:50]] [[drop_after:3]]")]
            ),
            metadata=(("authorization", "Bearer sk-test-master"),),
        ):
            received.append(event)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(caught.value) in ("UPSTREAM_PROTOCOL_ERROR", "UPSTREAM_UNAVAILABLE")
    final = received[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_FAILED
    assert [a.model for a in final.attempts] == ["scripted-a"]
    assert final.content and final.content == "".join(e.delta.content for e in received if e.HasField("delta"))


async def test_exhausted_fallbacks_fail_with_the_last_error(stack: Stack, key: str) -> None:
    agent = await create_agent(stack, key, fallback_models=["scripted-b"])
    session = await create_session(stack, agent.id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_turn(stack, session.id, user("all down [[error:503]]"))
    assert error_reason(caught.value) == "UPSTREAM_UNAVAILABLE"
    stored = (await all_messages(stack, session.id))[-1]
    assert [(a.model, a.error_reason) for a in stored.attempts] == [
        ("scripted-a", "UPSTREAM_UNAVAILABLE"),
        ("scripted-a", "UPSTREAM_UNAVAILABLE"),
        ("scripted-b", "UPSTREAM_UNAVAILABLE"),
        ("scripted-b", "UPSTREAM_UNAVAILABLE"),
    ]


@pytest.mark.parametrize("via", ["litellm", "direct"])
async def test_a_model_that_times_out_falls_back(
    database_url: str, litellm: Any, upstream: Any, key: str, via: str
) -> None:
    """An attempt that sends nothing within the attempt timeout is UPSTREAM_TIMEOUT,
    and the next model answers. Talking to the upstream directly, the stalled
    request is seen closed at once, not left open until the turn ends (LiteLLM
    does not pass on a close before the upstream answers)."""
    base_url, api_key = (
        (f"{litellm.base_url}/v1", litellm.master_key) if via == "litellm" else (upstream.base_url, None)
    )
    impatient = await start_stack(database_url, base_url, api_key, attempt_timeout_s=1.0, retry_attempts=1)
    try:
        agent = await create_agent(impatient, key, fallback_models=["scripted-b"])
        session = await create_session(impatient, agent.id)
        started = time.monotonic()
        # scripted-a sends its headers and role chunk, then nothing, so the attempt is open when it
        # times out; scripted-b answers slowly (six deltas, 150 ms apart), so the turn outlives it.
        events = await stream_turn(
            impatient, session.id, user("wake up now please right away [[stall:5000@0/scripted-a]] [[slow:150]]")
        )
        ended = time.monotonic()
    finally:
        await impatient.stop()
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED and final.model == "scripted-b"
    assert [(a.model, a.error_reason) for a in final.attempts] == [
        ("scripted-a", "UPSTREAM_TIMEOUT"),
        ("scripted-b", ""),
    ]
    assert 900 <= final.attempts[0].duration_ms < 5000
    if via == "direct":
        closed = [t for t in upstream.disconnect_times if started < t]
        assert closed and closed[0] < ended - 0.3, "the stalled request stayed open until the turn ended"
