"""Issue 13, section 3 (server side): every size a caller controls is bounded,
with the limit in the error; filters that nest too deeply and requests that
are not protobuf answer INVALID_ARGUMENT; a turn reads only the history its
window can use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

import grpc
import openai
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from agentapi import errors
from agentapi import v1 as pb
from server.config import Config
from server.domain import limits, turn_history
from server.domain.common import utcnow
from server.domain.history import window
from server.domain.limits import Limits
from server.domain.runs.messages import in_prompt, new_message
from server.domain.tool_outputs import pending_calls
from server.store.repositories import MessageRepository
from tests.helpers import create_agent, create_session, error_reason, user
from tests.stack import AUTH, Stack, start_stack


async def _refused(call: Any) -> errors.AgentAPIError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    return errors.from_rpc_error(caught.value)


def _violation(error: errors.AgentAPIError, field: str) -> str:
    descriptions = dict(error.field_violations)
    assert field in descriptions, error.field_violations
    return descriptions[field]


def _tool(name: str, padding: int = 0) -> pb.Tool:
    parameters = struct_pb2.Struct()
    parameters.update({"type": "object", "description": "x" * padding})
    return pb.Tool(function=pb.FunctionDefinition(name=name, parameters=parameters))


def _struct(**values: Any) -> struct_pb2.Struct:
    holder = struct_pb2.Struct()
    holder.update(values)
    return holder


# --- sizes, at the defaults -------------------------------------------------


async def test_too_many_messages_in_one_request(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    session = await create_session(offline_stack, agent.id)
    request = pb.SendMessageRequest(session_id=session.id, messages=[user(f"m{i}") for i in range(2049)])
    error = await _refused(offline_stack.sessions.SendMessage(request, metadata=AUTH))
    assert error.reason == "LIMIT_EXCEEDED"
    assert error.metadata == {"limits": "AGENTAPI_MAX_MESSAGES_PER_REQUEST"}
    assert "at most 2,048 messages (AGENTAPI_MAX_MESSAGES_PER_REQUEST); got 2,049" in _violation(error, "messages")


async def test_a_message_over_the_character_limit_is_refused_not_rate_limited(offline_stack: Stack, key: str) -> None:
    """5 MiB of content: over gRPC's own 4 MiB default (which answers
    RESOURCE_EXHAUSTED, read by callers as a rate limit), so the server must
    receive it and name the field."""
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    session = await create_session(offline_stack, agent.id)
    big = "a" * (5 * 1024 * 1024)
    request = pb.SendStreamingMessageRequest(session_id=session.id, messages=[user("hi"), user(big)])
    call = offline_stack.sessions.SendStreamingMessage(request, metadata=AUTH)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [event async for event in call]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = errors.from_rpc_error(caught.value)
    assert error.reason == "LIMIT_EXCEEDED"
    assert "at most 1,048,576 characters (AGENTAPI_MAX_MESSAGE_CHARS)" in _violation(error, "messages[1].content")
    # Text parts count as the message's text; nothing was stored.
    parts = [pb.ContentPart(type="text", text="b" * 600_000), pb.ContentPart(type="text", text="c" * 600_000)]
    request = pb.SendMessageRequest(
        session_id=session.id, messages=[pb.InputMessage(role=pb.ROLE_USER, content_parts=parts)]
    )
    error = await _refused(offline_stack.sessions.SendMessage(request, metadata=AUTH))
    assert "got 1,200,000" in _violation(error, "messages[0].content")
    page = await offline_stack.sessions.ListMessages(pb.ListMessagesRequest(session_id=session.id), metadata=AUTH)
    assert list(page.messages) == []


async def test_metadata_limits_on_conversations_and_sessions(offline_stack: Stack, key: str) -> None:
    conversations = offline_stack.conversations
    many_keys = _struct(**{f"k{i}": i for i in range(65)})
    error = await _refused(
        conversations.CreateConversation(
            pb.CreateConversationRequest(conversation=pb.Conversation(metadata=many_keys)), metadata=AUTH
        )
    )
    assert error.reason == "LIMIT_EXCEEDED"
    assert "at most 64 keys (AGENTAPI_MAX_METADATA_KEYS); got 65" in _violation(error, "conversation.metadata")
    large = _struct(note="é" * 9000)  # 18,000 bytes of UTF-8 in 9,000 characters
    created = (
        await conversations.CreateConversation(
            pb.CreateConversationRequest(conversation=pb.Conversation()), metadata=AUTH
        )
    ).conversation
    error = await _refused(
        conversations.UpdateConversation(
            pb.UpdateConversationRequest(conversation=pb.Conversation(id=created.id, metadata=large)), metadata=AUTH
        )
    )
    assert "at most 16,384 bytes of JSON (AGENTAPI_MAX_METADATA_BYTES)" in _violation(error, "conversation.metadata")
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    error = await _refused(
        offline_stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(agent_id=agent.id, metadata=large)), metadata=AUTH
        )
    )
    assert error.reason == "LIMIT_EXCEEDED"
    _violation(error, "session.metadata")
    # Just under the limits is fine.
    fits = _struct(**{f"k{i}": "v" for i in range(64)})
    await conversations.CreateConversation(
        pb.CreateConversationRequest(conversation=pb.Conversation(metadata=fits)), metadata=AUTH
    )


async def test_tool_limits_on_agents_and_sessions(offline_stack: Stack, key: str) -> None:
    agents = offline_stack.agents
    too_many = [_tool(f"t{i}") for i in range(129)]
    error = await _refused(
        agents.CreateAgent(
            pb.CreateAgentRequest(agent=pb.Agent(key=key, default_model="agentapi-offline", tools=too_many)),
            metadata=AUTH,
        )
    )
    assert error.reason == "LIMIT_EXCEEDED"
    assert "at most 128 tools (AGENTAPI_MAX_TOOLS); got 129" in _violation(error, "agent.tools")
    huge = [_tool("small"), _tool("huge", padding=70_000)]
    error = await _refused(
        agents.CreateAgent(
            pb.CreateAgentRequest(agent=pb.Agent(key=key, default_model="agentapi-offline", tools=huge)),
            metadata=AUTH,
        )
    )
    assert "at most 65,536 bytes of JSON (AGENTAPI_MAX_TOOL_SCHEMA_BYTES)" in _violation(error, "agent.tools[1]")
    settings = pb.SessionSettings(model="agentapi-offline", tools=huge)
    error = await _refused(
        offline_stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(overrides=settings)), metadata=AUTH
        )
    )
    assert error.reason == "LIMIT_EXCEEDED"
    _violation(error, "session.overrides.tools[1]")
    # 128 tools are fine.
    await create_agent(offline_stack, key, model="agentapi-offline", tools=[_tool(f"t{i}") for i in range(128)])


# --- filters ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "-" * 900 + 'key = "a"',
        "NOT " * 200 + 'key = "a"',
        "(" * 400 + 'key = "a"' + ")" * 400,
        "(-" * 250 + 'key = "a"' + ")" * 250,
    ],
    ids=["minus", "not", "parentheses", "mixed"],
)
async def test_deeply_nested_filters_are_invalid_not_internal(offline_stack: Stack, text: str) -> None:
    error = await _refused(offline_stack.agents.ListAgents(pb.ListAgentsRequest(filter=text), metadata=AUTH))
    assert error.reason == "INVALID_FILTER"
    assert "AGENTAPI_MAX_FILTER_DEPTH" in _violation(error, "filter")


async def test_filters_long_and_deep_on_messages(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    session = await create_session(offline_stack, agent.id)
    deep = "(" * 600 + "role = user" + ")" * 600
    error = await _refused(
        offline_stack.sessions.ListMessages(pb.ListMessagesRequest(session_id=session.id, filter=deep), metadata=AUTH)
    )
    assert "AGENTAPI_MAX_FILTER_CHARS" in _violation(error, "filter")
    # 32 levels still answer.
    fine = "(" * 16 + "NOT " * 16 + "role = user" + ")" * 16
    await offline_stack.sessions.ListMessages(pb.ListMessagesRequest(session_id=session.id, filter=fine), metadata=AUTH)
    error = await _refused(
        offline_stack.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session.id, filter="NOT " + fine), metadata=AUTH
        )
    )
    assert "at most 32 levels" in _violation(error, "filter")


# --- requests that are not protobuf ------------------------------------------


@pytest.mark.parametrize(
    "method",
    ["/agentapi.v1.AgentService/GetAgent", "/agentapi.v1.SessionService/SendStreamingMessage"],
)
async def test_a_request_that_is_not_protobuf_is_invalid_argument_without_a_traceback(
    offline_stack: Stack, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"\x0a\xff\xff\xff\xff\x0f\x01"  # field 1, length-delimited, claims 4 GiB
    streaming = "Streaming" in method
    factory = offline_stack.channel.unary_stream if streaming else offline_stack.channel.unary_unary
    # With an idempotency key too: the idempotency interceptor never sees the request.
    metadata = (*AUTH, ("idempotency-key", f"garbage-{method}"))
    call = factory(method, request_serializer=None, response_deserializer=None)(garbage, metadata=metadata)
    with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            [item async for item in call]
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert error_reason(caught.value) == "INVALID_REQUEST"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    # Without a key it is still UNAUTHENTICATED first.
    call = factory(method, request_serializer=None, response_deserializer=None)(garbage)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if streaming:
            [item async for item in call]
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- limits are configurable ---------------------------------------------------


@pytest.fixture
async def small_stack(sqlite_url: str) -> AsyncIterator[Stack]:
    """A stack started with small limits from AGENTAPI_MAX_* variables; the
    process-wide limits are restored afterwards for the other tests."""
    env = {
        "AGENTAPI_MAX_MESSAGES_PER_REQUEST": "2",
        "AGENTAPI_MAX_MESSAGE_CHARS": "10",
        "AGENTAPI_MAX_TOOLS": "1",
        "AGENTAPI_MAX_METADATA_KEYS": "1",
        "AGENTAPI_MAX_FILTER_CHARS": "20",
        "AGENTAPI_MAX_HISTORY_MESSAGES": "3",
    }
    config = Config.from_env(env)
    kw = {name: getattr(config, name) for name in config.__dataclass_fields__ if name.startswith("max_")}
    running = await start_stack(sqlite_url, **kw)
    try:
        yield running
    finally:
        await running.stop()
        limits.configure(Limits())


async def test_limits_come_from_the_environment(small_stack: Stack, key: str) -> None:
    agent = await create_agent(small_stack, key, model="agentapi-offline")
    session = await create_session(small_stack, agent.id)
    sessions = small_stack.sessions
    error = await _refused(
        sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user("a")] * 3), metadata=AUTH)
    )
    assert "at most 2 messages" in _violation(error, "messages")
    error = await _refused(
        sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user("x" * 11)]), metadata=AUTH)
    )
    assert "at most 10 characters" in _violation(error, "messages[0].content")
    error = await _refused(
        small_stack.agents.ListAgents(pb.ListAgentsRequest(filter='display_name : "abcdefghijkl"'), metadata=AUTH)
    )
    assert error.reason == "INVALID_FILTER"
    # The history cap: a turn carries at most 3 stored messages (whole groups).
    for text in ("one", "two", "three"):
        await sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user(text)]), metadata=AUTH)
    reply = (
        await sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user("four")]), metadata=AUTH)
    ).message
    # Stored: 1-6 (three turns), the input 7, the reply 8: the prompt is 4..7.
    assert (reply.prompt_messages.first, reply.prompt_messages.last) == (4, 7)


def test_config_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="AGENTAPI_MAX_FILTER_DEPTH must be between 1 and 100"):
        Config(max_filter_depth=1000).check()
    with pytest.raises(ValueError, match="AGENTAPI_MAX_TOOLS must be at least 1"):
        Config.from_env({"AGENTAPI_MAX_TOOLS": "0"}).check()
    assert Config(max_request_bytes=8 * 1024 * 1024).limits.grpc_receive_bytes == 16 * 1024 * 1024


# --- a turn reads a bounded history --------------------------------------------


@pytest.fixture(scope="module")
async def any_db_stack(database_url: str) -> AsyncIterator[Stack]:
    """The offline model on SQLite and on MariaDB."""
    running = await start_stack(database_url)
    yield running
    await running.stop()


async def _seed(stack: Stack, session_id: str, count: int, tokens: int = 10) -> None:
    """``count`` finished messages (user, assistant, ...) inserted directly, ``tokens`` each."""
    assert stack.grpc_server is not None
    now = utcnow()
    rows = [
        new_message(
            session_id,
            "default",
            sequence,
            "user" if sequence % 2 else "assistant",
            now,
            content=f"stored {sequence}",
            token_count=tokens,
        )
        for sequence in range(1, count + 1)
    ]
    async with stack.grpc_server.db.session() as db:
        await MessageRepository(db, session_id).insert(rows)
        await db.commit()


@pytest.fixture
def rows_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many message rows each turn's history read fetched (and that the
    unbounded read is not used)."""
    counts: list[int] = []
    newest = MessageRepository.newest

    async def counting(self: MessageRepository, before: int | None, limit: int) -> list[Any]:
        page = await newest(self, before, limit)
        counts.append(len(page))
        return page

    async def unbounded(self: MessageRepository) -> list[Any]:
        raise AssertionError("a turn read the whole history")

    monkeypatch.setattr(MessageRepository, "newest", counting)
    monkeypatch.setattr(MessageRepository, "history", unbounded)
    return counts


async def test_a_turn_reads_only_what_its_window_uses(any_db_stack: Stack, rows_read: list[int]) -> None:
    stack = any_db_stack
    settings = pb.SessionSettings(model="agentapi-offline", history_token_budget=500)
    session = (
        await stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(overrides=settings)), metadata=AUTH
        )
    ).session
    await _seed(stack, session.id, 5000)
    reply = (
        await stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("and now?")]), metadata=AUTH
        )
    ).message
    assert reply.status == pb.MESSAGE_STATUS_COMPLETED
    # 500 tokens of 10-token messages: the newest 50 stored, then the input (5001).
    assert (reply.prompt_messages.first, reply.prompt_messages.last) == (4951, 5001)
    assert sum(rows_read) < 300, rows_read


async def test_without_a_budget_the_history_cap_binds(any_db_stack: Stack, rows_read: list[int]) -> None:
    """The offline model's 32,768-token window would take ~3,000 of these
    messages; the default cap carries 1,000, and the read stops near it."""
    stack = any_db_stack
    session = await create_session(stack, model="agentapi-offline")
    await _seed(stack, session.id, 5000)
    reply = (
        await stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("and now?")]), metadata=AUTH
        )
    ).message
    assert (reply.prompt_messages.first, reply.prompt_messages.last) == (4001, 5001)
    assert sum(rows_read) <= 1000 + 2 * turn_history.FIRST_BATCH, rows_read


@dataclass
class _Row:
    sequence: int
    role: str
    token_count: int
    status: str = "completed"
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str = ""
    content: str = ""


class _Ledger:
    """A session's messages in memory, read as MessageRepository.newest reads them."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows
        self.fetched = 0

    async def newest(self, before: int | None, limit: int) -> list[_Row]:
        page = [r for r in reversed(self.rows) if before is None or r.sequence < before][:limit]
        self.fetched += len(page)
        return page


@st.composite
def _ledgers(draw: st.DrawFn) -> list[_Row]:
    """User turns, replies (some failed), tool-call groups (some still pending), and a reply in progress."""
    rows: list[_Row] = []

    def add(role: str, **fields: Any) -> None:
        rows.append(_Row(len(rows) + 1, role, draw(st.integers(1, 50)), **fields))

    for turn in range(draw(st.integers(0, 40))):
        add("user")
        for step in range(draw(st.integers(0, 2))):
            ids = [f"c{turn}_{step}_{i}" for i in range(draw(st.integers(1, 3)))]
            add("assistant", status="requires_action", tool_calls=[{"id": i} for i in ids])
            for call_id in ids[: draw(st.integers(0, len(ids)))]:
                add("tool", tool_call_id=call_id)
        add("assistant", status=draw(st.sampled_from(["completed", "completed", "failed", "cancelled"])))
    if rows and draw(st.booleans()):
        add("assistant", status="in_progress")
    return rows


@settings(max_examples=300, deadline=None)
@given(_ledgers(), st.integers(1, 800), st.integers(1, 2000))
def test_the_bounded_read_windows_and_reconciles_like_the_whole_history(
    rows: list[_Row], budget: int, cap: int
) -> None:
    ledger = _Ledger(rows)
    with patch.object(turn_history, "FIRST_BATCH", 2), patch.object(turn_history, "MAX_BATCH", 8):
        read = asyncio.run(turn_history.newest_needed(ledger, budget, cap))  # type: ignore[arg-type]
    assert (read[-1].sequence if read else 0) == (rows[-1].sequence if rows else 0)
    assert any(r.status == "in_progress" for r in read) == any(r.status == "in_progress" for r in rows)
    assert pending_calls(read) == pending_calls(rows)
    full = [r for r in rows if in_prompt(r)]  # type: ignore[arg-type]
    part = [r for r in read if in_prompt(r)]  # type: ignore[arg-type]
    expected = full[window(full, budget) :]
    got = part[window(part, budget) :]
    if len(full) <= cap:
        assert [r.sequence for r in got] == [r.sequence for r in expected]
    else:  # the cap: the newest whole groups of the full window, never an orphan tool result
        assert [r.sequence for r in got] == [r.sequence for r in expected][len(expected) - len(got) :]
        called = {c["id"] for r in got for c in r.tool_calls or ()}
        assert all(r.tool_call_id in called for r in got if r.role == "tool")


async def test_a_page_larger_than_grpcs_default_is_sent(offline_stack: Stack) -> None:
    """Six stored messages of a million characters: a 6 MB page, past gRPC's
    4 MiB default, reaches a client that accepts it (the server sets no send limit)."""
    session = await create_session(offline_stack, model="agentapi-offline")
    assert offline_stack.grpc_server is not None
    now = utcnow()
    rows = [
        new_message(session.id, "default", sequence, "user", now, content=str(sequence) * 1_000_000)
        for sequence in range(1, 7)
    ]
    async with offline_stack.grpc_server.db.session() as db:
        await MessageRepository(db, session.id).insert(rows)
        await db.commit()
    target = f"127.0.0.1:{offline_stack.grpc_server.port}"
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as channel:
        page = await pb.SessionServiceStub(channel).ListMessages(
            pb.ListMessagesRequest(session_id=session.id, page_size=10), metadata=AUTH
        )
    assert [len(m.content) for m in page.messages] == [1_000_000] * 6


async def test_health_answers_an_undecodable_request_and_still_watches(offline_stack: Stack) -> None:
    garbage = b"\x0a\xff\xff\xff\xff\x0f\x01"
    check = offline_stack.channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(garbage)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    watch = health_pb2_grpc.HealthStub(offline_stack.channel).Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


async def test_the_bridge_answers_a_limit_with_400(offline_stack: Stack) -> None:
    """Met as an OpenAI SDK user meets it: a message over the character limit
    is a 400 naming the field, not a 429 the SDK would retry, nor a 500."""
    client = offline_stack.openai()
    # 1.1 MB, and 5 MB: past gRPC's default 4 MiB between the bridge and the server.
    for size in (1_100_000, 5_000_000):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="agentapi-offline", messages=[{"role": "user", "content": "x" * size}]
            )
        assert caught.value.status_code == 400
        assert "messages[0].content must be at most 1,048,576 characters (AGENTAPI_MAX_MESSAGE_CHARS)" in str(
            caught.value
        )
