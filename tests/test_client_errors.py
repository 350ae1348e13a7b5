"""The client's typed errors, each provoked on the real server and decoded from
google.rpc.Status (never message text); retries that never double a turn; a
dropped stream raising StreamInterruptedError."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

import agentapi
from agentapi import v1 as pb
from tests.stack import MASTER_KEY, Stack, start_stack
from tests.support.mcp_servers import HttpMcpServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.upstream import ScriptedUpstream
from tests.test_client import ADD_TOOL, OFFLINE, client, target


@pytest.fixture(scope="module")
def mcp() -> Iterator[HttpMcpServer]:
    with HttpMcpServer() as server:
        yield server


async def slow_agent(api: agentapi.AsyncClient, mcp: HttpMcpServer) -> tuple[str, str]:
    """An agent whose MCP tool ``<server>__slow`` holds a turn while it sleeps; (agent key, tool name)."""
    server_id = f"srv-{uuid.uuid4().hex[:8]}"
    await api.mcp_servers.create(id=server_id, transport=pb.MCP_TRANSPORT_STREAMABLE_HTTP, url=mcp.url)
    await api.mcp_servers.approve_tools(server_id, ["slow"])
    key = f"slow-{uuid.uuid4().hex[:8]}"
    await api.agents.create(key=key, default_model=OFFLINE, mcp_servers=[pb.AgentMcpServer(server_id=server_id)])
    return key, f"{server_id}__slow"


async def test_invalid_argument_carries_field_violations(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        with pytest.raises(agentapi.InvalidArgumentError) as caught:
            await api.agents.create(key="", default_model="")
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "FIELD_VIOLATION"
    assert {field for field, _ in error.field_violations} >= {"agent.key", "agent.default_model"}


async def test_already_exists_and_not_found(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        await api.agents.create(key=key, default_model=OFFLINE)
        with pytest.raises(agentapi.AlreadyExistsError) as caught:
            await api.agents.create(key=key, default_model=OFFLINE)
        assert isinstance(caught.value, agentapi.ConflictError) and caught.value.reason == "AGENT_ALREADY_EXISTS"
        with pytest.raises(agentapi.NotFoundError) as missing:
            await api.sessions.get(str(uuid.uuid4()))
        assert missing.value.reason == "SESSION_NOT_FOUND"


async def test_authentication_and_permission(offline_stack: Stack) -> None:
    async with client(offline_stack, api_key="sk-wrong") as api:
        with pytest.raises(agentapi.AuthenticationError) as caught:
            await api.models.list()
        assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with client(offline_stack) as admin:
        created = await admin.api_keys.create(scope=pb.API_KEY_SCOPE_CLIENT)
    async with client(offline_stack, api_key=created.secret) as api:
        with pytest.raises(agentapi.PermissionDeniedError) as denied:
            await api.tenants.create(id=f"t-{uuid.uuid4().hex[:8]}")
        assert denied.value.reason


async def tenant_client(stack: Stack, **tenant: object) -> agentapi.AsyncClient:
    async with client(stack) as admin:
        made = await admin.tenants.create(id=f"t-{uuid.uuid4().hex[:8]}", **tenant)
        key = await admin.api_keys.create(tenant_id=made.id, scope=pb.API_KEY_SCOPE_ADMIN)
    return client(stack, api_key=key.secret, max_retries=0)


async def test_rate_limited_has_retry_after(offline_stack: Stack) -> None:
    async with await tenant_client(offline_stack, rate_limits=pb.RateLimits(requests_per_minute=1)) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model=OFFLINE))
        await api.sessions.send(session.id, "one")
        with pytest.raises(agentapi.RateLimitedError) as caught:
            await api.sessions.send(session.id, "two")
    assert caught.value.reason == "RATE_LIMITED" and caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 60


async def test_budget_exceeded(offline_stack: Stack) -> None:
    budget = pb.Budget(period=pb.BUDGET_PERIOD_MONTH, max_tokens=1)
    async with await tenant_client(offline_stack, budget=budget) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model=OFFLINE))
        with pytest.raises(agentapi.BudgetExceededError) as caught:
            await api.sessions.send(session.id, "a prompt longer than one token")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and caught.value.reason == "BUDGET_EXCEEDED"


async def test_model_not_found_is_an_upstream_and_a_not_found_error(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model="no-such-model"))
        with pytest.raises(agentapi.ModelNotFoundError) as caught:
            await api.sessions.send(session.id, "hi")
    assert isinstance(caught.value, agentapi.UpstreamError) and isinstance(caught.value, agentapi.NotFoundError)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
async def down_upstream_stack(sqlite_url: str) -> AsyncIterator[Stack]:
    """agentapi in front of an upstream that refuses connections."""
    stack = await start_stack(
        sqlite_url, llm_base_url=f"http://127.0.0.1:{closed_port()}/v1", retry_attempts=1, retry_max_backoff_s=0.01
    )
    yield stack
    await stack.stop()


async def test_upstream_unavailable_is_typed_and_not_retried_as_a_new_turn(down_upstream_stack: Stack) -> None:
    async with client(down_upstream_stack, max_retries=1) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model="any-model"))
        with pytest.raises(agentapi.UpstreamUnavailableError) as caught:
            await api.sessions.send(session.id, "hi")
        assert isinstance(caught.value, agentapi.UnavailableError) and caught.value.reason == "UPSTREAM_UNAVAILABLE"
        # the retry carried the same idempotency key: one user message, one failed reply
        messages = [m async for m in api.messages.list(session.id)]
    assert [m.role for m in messages] == [pb.ROLE_USER, pb.ROLE_ASSISTANT]
    assert messages[-1].status == pb.MESSAGE_STATUS_FAILED


async def test_session_busy_and_deadline(offline_stack: Stack, mcp: HttpMcpServer) -> None:
    async with client(offline_stack) as api:
        key, slow = await slow_agent(api, mcp)
        session = await api.sessions.create(agent_id=key)
        async with api.sessions.stream(session.id, f'call {slow} {{"seconds": 1.5}}') as turn:
            async for event in turn.events:
                if event.WhichOneof("event") == "tool_call_started":
                    break
            with pytest.raises(agentapi.SessionBusyError) as caught:
                await api.sessions.send(session.id, "me too")
            assert isinstance(caught.value, agentapi.FailedPreconditionError)
            await turn.final_message()
    async with client(offline_stack, timeout=0.3, max_retries=0) as hurried:
        with pytest.raises(agentapi.DeadlineExceededError):
            await hurried.sessions.send(session.id, f'call {slow} {{"seconds": 2}}')


async def test_a_dropped_stream_raises_stream_interrupted(offline_stack: Stack, mcp: HttpMcpServer) -> None:
    async with client(offline_stack) as api:
        key, slow = await slow_agent(api, mcp)
        session = await api.sessions.create(agent_id=key)
    with TcpProxy("127.0.0.1", int(target(offline_stack).rsplit(":", 1)[1])) as proxy:
        async with agentapi.AsyncClient(f"127.0.0.1:{proxy.port}", api_key=MASTER_KEY) as api:
            turn = api.sessions.stream(session.id, f'call {slow} {{"seconds": 1}}')
            with pytest.raises(agentapi.StreamInterruptedError) as caught:
                async with turn:
                    async for event in turn.events:
                        if event.WhichOneof("event") == "tool_call_started":
                            proxy.cut()
    error = caught.value
    assert isinstance(error, agentapi.UnavailableError) and error.message_id == turn.message_id != ""
    assert error.last_sequence_number == turn.last_sequence_number


async def test_a_send_message_retried_after_a_refused_connection_stores_one_turn(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model=OFFLINE))
    with TcpProxy("127.0.0.1", int(target(offline_stack).rsplit(":", 1)[1])) as proxy:
        proxy.cut()  # the first attempt fails at the transport level: connection refused
        async with agentapi.AsyncClient(f"127.0.0.1:{proxy.port}", api_key=MASTER_KEY, max_retries=6) as api:
            send = asyncio.create_task(api.sessions.send(session.id, "once only"))
            await asyncio.sleep(0.3)
            assert not send.done()
            proxy.restore()
            reply = await send
    assert reply.message.status == pb.MESSAGE_STATUS_COMPLETED
    async with client(offline_stack) as api:
        messages = [m async for m in api.messages.list(session.id)]
    assert [(m.role, m.content) for m in messages][0] == (pb.ROLE_USER, "once only") and len(messages) == 2


async def test_a_send_message_retried_after_its_turn_ran_stores_one_turn(
    offline_stack: Stack, mcp: HttpMcpServer
) -> None:
    """The first attempt reaches the server, which starts the turn; the connection is
    then reset before the reply arrives (UNAVAILABLE, retried). The server cancels the
    turn of a caller that left; the retry carries the same idempotency key, so the server
    answers with that stored outcome (CANCELLED) instead of running the turn again."""
    async with client(offline_stack) as api:
        key, slow = await slow_agent(api, mcp)
        session = await api.sessions.create(agent_id=key)
    mcp.slow_started.clear()
    before = mcp.calls.count("slow")
    with TcpProxy("127.0.0.1", int(target(offline_stack).rsplit(":", 1)[1])) as proxy:
        async with agentapi.AsyncClient(f"127.0.0.1:{proxy.port}", api_key=MASTER_KEY, max_retries=3) as api:
            send = asyncio.create_task(api.sessions.send(session.id, f'call {slow} {{"seconds": 0.5}}'))
            await asyncio.to_thread(mcp.slow_started.wait, 10)
            proxy.cut()  # the first attempt's connection is reset while its turn runs
            proxy.restore()
            with pytest.raises(agentapi.CancelledError):
                await send
    async with client(offline_stack) as api:
        messages = [m async for m in api.messages.list(session.id)]
    users = [m for m in messages if m.role == pb.ROLE_USER]
    assert len(users) == 1, [(m.role, m.status, m.content) for m in messages]
    assert mcp.calls.count("slow") == before + 1


@pytest.fixture(scope="module")
async def scripted_stack(sqlite_url: str) -> AsyncIterator[Stack]:
    """agentapi in front of the scripted upstream, with one attempt per
    model and a half-second read timeout, so each failure surfaces at once."""
    with ScriptedUpstream() as upstream:
        stack = await start_stack(
            sqlite_url,
            upstream.base_url,
            "unused",
            retry_attempts=1,
            retry_max_backoff_s=0.01,
            upstream_read_timeout_s=0.5,
        )
        yield stack
        await stack.stop()


@pytest.mark.parametrize(
    ("directive", "error_class", "reason"),
    [
        ("[[error:content_filter]]", agentapi.ContentFilteredError, "CONTENT_FILTERED"),
        ("[[error:context]]", agentapi.ContextWindowExceededError, "CONTEXT_WINDOW_EXCEEDED"),
        ("[[error:429]] [[retry_after:0]]", agentapi.UpstreamRateLimitedError, "UPSTREAM_RATE_LIMITED"),
        ("[[malformed:1]]", agentapi.UpstreamProtocolError, "UPSTREAM_PROTOCOL_ERROR"),
        ("[[stall:3000]]", agentapi.UpstreamTimeoutError, "UPSTREAM_TIMEOUT"),
    ],
)
async def test_each_upstream_failure_raises_its_class(
    scripted_stack: Stack, directive: str, error_class: type[agentapi.AgentAPIError], reason: str
) -> None:
    async with client(scripted_stack, max_retries=0) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model="scripted-a"))
        with pytest.raises(error_class) as caught:
            await api.sessions.send(session.id, f"hello {directive}")
        # Streamed, the same failure ends the stream with the same class.
        with pytest.raises(error_class):
            async with api.sessions.stream(session.id, f"again {directive}") as turn:
                await turn.final_message()
    assert caught.value.reason == reason
    assert isinstance(caught.value, agentapi.UpstreamError)


async def test_a_message_while_tool_outputs_are_awaited_raises_tool_outputs_pending(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        key = f"adder-{uuid.uuid4().hex[:8]}"
        await api.agents.create(key=key, default_model=OFFLINE, tools=[ADD_TOOL])
        session = await api.sessions.create(agent_id=key)
        waiting = (await api.sessions.send(session.id, 'call add {"a": 1, "b": 2}')).message
        assert waiting.status == pb.MESSAGE_STATUS_REQUIRES_ACTION
        with pytest.raises(agentapi.ToolOutputsPendingError) as caught:
            await api.sessions.send(session.id, "not yet")
    assert isinstance(caught.value, agentapi.FailedPreconditionError)
