"""agentapi.Client (blocking; generated from the async client by unasync) against
the real server, run in a worker thread because the server shares the test's
event loop; and the client's pinned public surface."""

from __future__ import annotations

import asyncio
import types

import pytest

import agentapi
from agentapi import v1 as pb
from tests.stack import MASTER_KEY, Stack
from tests.test_client import OFFLINE, target


def sync_round_trip(address: str, key: str) -> tuple[str, str, list[int], int]:
    with agentapi.Client(address, api_key=MASTER_KEY) as api:
        api.agents.create(key=key, default_model=OFFLINE)
        session = api.sessions.create(agent_id=key)
        with api.sessions.stream(session.id, "hello sync") as turn:
            text = "".join(turn.text_stream)
            final = turn.final_message()
        for n in range(2):
            api.sessions.send(session.id, f"more {n}")
        roles = [m.role for m in api.messages.list(session.id, page_size=2)]
        pages = len(list(api.messages.pages(session.id, page_size=2)))
        with pytest.raises(agentapi.NotFoundError):
            api.agents.get(f"{key}-missing")
        return text, final.content, roles, pages


async def test_the_sync_client(offline_stack: Stack, key: str) -> None:
    text, final, roles, pages = await asyncio.to_thread(sync_round_trip, target(offline_stack), key)
    assert text and text == final
    assert roles == [pb.ROLE_USER, pb.ROLE_ASSISTANT] * 3 and pages == 3


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTAPI_URL", "http://example.invalid:1234/")
    monkeypatch.setenv("AGENTAPI_API_KEY", "sk-from-env")
    with agentapi.Client() as api:
        assert api.target == "example.invalid:1234"
        assert "sk-from-env" not in repr(api._transport.settings)
    with pytest.raises(ValueError):
        agentapi.Client(max_retries=-1)


def test_an_unreachable_server_is_unavailable_after_the_retries() -> None:
    with agentapi.Client(f"127.0.0.1:{closed_port()}", max_retries=1, timeout=5) as api:
        with pytest.raises(agentapi.UnavailableError) as caught:
            api.models.list()
    assert caught.value.reason == "" and not isinstance(caught.value, agentapi.StreamInterruptedError)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


EXPORTED = {
    "AgentAPIError", "AlreadyExistsError", "AsyncClient", "AsyncTurnStream", "AuthenticationError",
    "BudgetExceededError", "CancelledError", "Client", "ConflictError", "ContentFilteredError",
    "ContextWindowExceededError", "DeadlineExceededError", "FailedPreconditionError", "Input", "InternalError",
    "InvalidArgumentError", "ModelNotFoundError", "NotFoundError", "PermissionDeniedError", "RateLimitedError",
    "SessionBusyError", "StreamInterruptedError", "ToolOutputsPendingError", "TurnEvent", "TurnStream",
    "UnavailableError", "UpstreamError", "UpstreamProtocolError", "UpstreamRateLimitedError",
    "UpstreamTimeoutError", "UpstreamUnavailableError",
}  # fmt: skip


async def test_exported_names_are_pinned() -> None:  # async: grpc.aio channels need a running loop
    assert set(agentapi.__all__) == EXPORTED
    public = {name for name, value in vars(agentapi).items() if not name.startswith("_")}
    assert {name for name in public if not isinstance(getattr(agentapi, name), types.ModuleType)} == EXPORTED
    for name in EXPORTED - {"Input"}:  # Input is a type alias (a union)
        assert getattr(agentapi, name).__module__.startswith("agentapi"), name
    resources = ["agents", "conversations", "sessions", "messages", "models", "tenants", "api_keys", "usage",
                 "mcp_servers"]  # fmt: skip
    with agentapi.Client("127.0.0.1:1") as blocking:
        assert all(hasattr(blocking, name) for name in resources)
    async with agentapi.AsyncClient("127.0.0.1:1") as asynchronous:
        assert all(hasattr(asynchronous, name) for name in resources)


def test_error_classes_are_chosen_by_reason_then_code() -> None:
    import grpc

    from agentapi.errors import error_class

    code = grpc.StatusCode
    assert error_class(code.FAILED_PRECONDITION, "SESSION_BUSY") is agentapi.SessionBusyError
    assert error_class(code.RESOURCE_EXHAUSTED, "BUDGET_EXCEEDED") is agentapi.BudgetExceededError
    assert error_class(code.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED") is agentapi.UpstreamRateLimitedError
    assert error_class(code.UNAVAILABLE, "UPSTREAM_SOMETHING_NEW") is agentapi.UpstreamError
    assert error_class(code.NOT_FOUND, "WIDGET_NOT_FOUND") is agentapi.NotFoundError
    assert error_class(code.DATA_LOSS, "") is agentapi.InternalError
    assert issubclass(agentapi.UpstreamTimeoutError, agentapi.DeadlineExceededError)


def test_which_failures_are_retried_and_how_long_to_wait() -> None:
    import grpc
    from tenacity import RetryCallState, Retrying

    from agentapi._retry import MAX_RETRY_DELAY_S, Safety, should_retry, wait

    code = grpc.StatusCode
    limited = agentapi.RateLimitedError(code.RESOURCE_EXHAUSTED, "RATE_LIMITED", "", retry_delay_s=0.5)
    assert all(should_retry(limited, safety) for safety in Safety)  # refused before any work
    too_long = agentapi.RateLimitedError(code.RESOURCE_EXHAUSTED, "RATE_LIMITED", "", retry_delay_s=120)
    assert not should_retry(too_long, Safety.READ)
    budget = agentapi.BudgetExceededError(code.RESOURCE_EXHAUSTED, "BUDGET_EXCEEDED", "", retry_delay_s=1)
    assert not should_retry(budget, Safety.READ)
    size = agentapi.RateLimitedError(code.RESOURCE_EXHAUSTED, "", "message too large")  # grpc's own, no RetryInfo
    assert not should_retry(size, Safety.READ)
    down = agentapi.UnavailableError(code.UNAVAILABLE, "", "connection refused")
    assert should_retry(down, Safety.READ) and should_retry(down, Safety.KEYED)
    assert not should_retry(down, Safety.UNSAFE)  # a delete may have happened
    in_flight = agentapi.ConflictError(code.ABORTED, "IDEMPOTENCY_REQUEST_IN_FLIGHT", "")
    assert should_retry(in_flight, Safety.KEYED)
    assert not should_retry(agentapi.ConflictError(code.ABORTED, "ETAG_MISMATCH", ""), Safety.READ)
    dropped = agentapi.StreamInterruptedError(code.UNAVAILABLE, "", "dropped")
    assert not should_retry(dropped, Safety.KEYED)

    def state_after(error: Exception) -> RetryCallState:
        state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
        state.set_exception((type(error), error, None))
        return state

    assert wait(state_after(limited)) == 0.5  # RetryInfo's delay
    assert 0 <= wait(state_after(down)) <= MAX_RETRY_DELAY_S  # exponential backoff, jittered
