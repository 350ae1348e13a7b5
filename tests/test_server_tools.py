"""Runs of steps: the server runs built-in tools, stores every step, and
streams it, through the real LiteLLM proxy and with the offline model."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, error_reason, field_violations, user
from tests.stack import AUTH, Stack, start_stack
from tests.support import slow_tools

CLIENT_TOOL = pb.Tool(type="function", function=pb.FunctionDefinition(name="lookup"))


@pytest.fixture(scope="module")
async def tools_stack(sqlite_url: str) -> AsyncIterator[Stack]:
    """The offline model with the test's operator tools and short tool bounds."""
    running = await start_stack(
        sqlite_url, tool_modules=("tests.support.slow_tools",), tool_timeout_s=0.5, tool_max_output_bytes=1000
    )
    yield running
    await running.stop()


async def events_of(stack: Stack, session_id: str, text: str) -> list[pb.SendStreamingMessageResponse]:
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user(text)]), metadata=AUTH
    )
    return [event async for event in call]


def kinds(events: list[Any]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


async def agent_session(stack: Stack, model: str, **fields: Any) -> pb.Session:
    agent = await create_agent(stack, f"agent-{uuid.uuid4().hex[:10]}", model=model, **fields)
    return await create_session(stack, agent.id)


async def test_the_offline_model_answers_a_sum_through_one_server_side_step(tools_stack: Stack) -> None:
    session = await agent_session(tools_stack, "agentapi-offline", builtin_tools=["calculator"])
    events = await events_of(tools_stack, session.id, 'call calculator {"expression": "(2 + 3) * 4"}')
    assert kinds(events)[:4] == ["turn_started", "input_message", "tool_call_started", "tool_call_completed"]
    assert kinds(events)[-1] == "assistant_message" and set(kinds(events)[4:-1]) == {"delta"}
    started, completed = events[2].tool_call_started, events[3].tool_call_completed
    assert (started.name, started.executor, started.step) == ("calculator", "builtin", 1)
    assert json.loads(started.arguments) == {"expression": "(2 + 3) * 4"}
    assert (completed.content, completed.status, completed.executor) == ("20", pb.MESSAGE_STATUS_COMPLETED, "builtin")
    final = events[-1].assistant_message
    assert final.content == "Tool calculator returned: 20" and final.step == 2
    assert "".join(e.delta.content for e in events if e.HasField("delta")) == final.content
    assert all(not e.delta.tool_calls for e in events if e.HasField("delta")), "server calls are not client deltas"
    numbers = [e.delta.sequence_number for e in events if e.HasField("delta")]
    assert numbers == list(range(1, len(numbers) + 1))
    stored = await all_messages(tools_stack, session.id)
    assert [(m.role, m.step, m.status) for m in stored] == [
        (pb.ROLE_USER, 0, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, 1, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_TOOL, 1, pb.MESSAGE_STATUS_COMPLETED),
        (pb.ROLE_ASSISTANT, 2, pb.MESSAGE_STATUS_COMPLETED),
    ]
    assert stored[1].tool_calls[0].executor == "builtin" and stored[2].tool_call_id == stored[1].tool_calls[0].id
    assert stored[2].duration_ms >= 0 and stored[3].id == final.id


async def test_parallel_server_calls_through_litellm_reach_the_model_as_tool_messages(
    stack: Stack, upstream: Any
) -> None:
    session = await agent_session(stack, "scripted-a", builtin_tools=["calculator", "echo"])
    marker = uuid.uuid4().hex
    text = f'{marker} [[tool:calculator {{"expression": "6 * 7"}}]] [[tool:echo {{"text": "hi {marker}"}}]]'
    events = await events_of(stack, session.id, text)
    completed = [e.tool_call_completed for e in events if e.HasField("tool_call_completed")]
    assert sorted(m.content for m in completed) == ["42", f"hi {marker}"]
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED and final.step == 2
    second = [
        r["body"]
        for r in upstream.requests
        if r["path"].endswith("/chat/completions")
        and r["body"]["messages"][-1].get("role") == "tool"
        and marker in json.dumps(r["body"])
    ]
    assert len(second) == 1, "one follow-up model call with both results"
    messages = second[0]["messages"]
    assert [m["role"] for m in messages[-3:]] == ["assistant", "tool", "tool"]
    assert all(set(call) == {"id", "type", "function"} for call in messages[-3]["tool_calls"])
    assert {t["function"]["name"] for t in second[0]["tools"]} == {"calculator", "echo"}
    usage = [m.usage.total_tokens for m in await all_messages(stack, session.id) if m.role == pb.ROLE_ASSISTANT]
    assert len(usage) == 2 and all(usage), "one usage record per model step"


async def test_a_failing_tool_does_not_fail_the_run(tools_stack: Stack) -> None:
    session = await agent_session(tools_stack, "agentapi-offline", builtin_tools=["calculator"])
    events = await events_of(tools_stack, session.id, 'call calculator {"expression": "1 / 0"}')
    tool = next(e.tool_call_completed for e in events if e.HasField("tool_call_completed"))
    assert tool.status == pb.MESSAGE_STATUS_FAILED and json.loads(tool.content)["error"]["reason"] == "TOOL_FAILED"
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_COMPLETED and final.content.startswith("Tool calculator returned: {")


async def test_a_slow_tool_times_out_and_a_big_output_is_truncated(tools_stack: Stack) -> None:
    session = await agent_session(tools_stack, "agentapi-offline", builtin_tools=["slow", "big"])
    events = await events_of(tools_stack, session.id, 'call slow {"seconds": 3}')
    tool = next(e.tool_call_completed for e in events if e.HasField("tool_call_completed"))
    assert tool.status == pb.MESSAGE_STATUS_FAILED
    assert json.loads(tool.content)["error"]["reason"] == "TOOL_TIMEOUT"
    events = await events_of(tools_stack, session.id, 'call big {"size": 5000}')
    tool = next(e.tool_call_completed for e in events if e.HasField("tool_call_completed"))
    assert tool.content.endswith("[output truncated: 1000 of 5000 bytes]")


async def test_max_steps_ends_the_run_failed_with_everything_stored(tools_stack: Stack) -> None:
    session = await agent_session(tools_stack, "agentapi-offline", builtin_tools=["echo"], max_steps=1)
    call = tools_stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user('call echo {"text": "x"}')]),
        metadata=AUTH,
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in call:
            received.append(event)
    assert error_reason(caught.value) == "MAX_STEPS_EXCEEDED"
    final = received[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_FAILED and final.tool_calls[0].function.name == "echo"
    stored = await all_messages(tools_stack, session.id)
    assert [m.role for m in stored] == [pb.ROLE_USER, pb.ROLE_ASSISTANT], "the call over the limit did not run"


async def test_a_client_call_beside_a_server_call_waits_for_the_caller(tools_stack: Stack) -> None:
    session = await agent_session(tools_stack, "agentapi-offline", builtin_tools=["echo"], tools=[CLIENT_TOOL])
    events = await events_of(tools_stack, session.id, 'call echo and lookup {"text": "both"}')
    final = events[-1].assistant_message
    assert final.status == pb.MESSAGE_STATUS_REQUIRES_ACTION
    assert {(c.function.name, c.executor) for c in final.tool_calls} == {("echo", "builtin"), ("lookup", "client")}
    assert [e.tool_call_completed.content for e in events if e.HasField("tool_call_completed")] == ["both"]
    client_deltas = [f.name for e in events if e.HasField("delta") for f in e.delta.tool_calls if f.name]
    assert client_deltas == ["lookup"]
    lookup = next(c for c in final.tool_calls if c.function.name == "lookup")
    continued = tools_stack.sessions.SubmitToolOutputs(
        pb.SubmitToolOutputsRequest(
            session_id=session.id, tool_outputs=[pb.ToolOutput(tool_call_id=lookup.id, output="found")]
        ),
        metadata=AUTH,
    )
    answer = [e async for e in continued][-1].assistant_message
    assert answer.status == pb.MESSAGE_STATUS_COMPLETED and answer.content == "Tool lookup returned: found"


async def test_a_cancelled_run_stops_the_running_tool_and_stores_it_cancelled(tools_stack: Stack) -> None:
    session = await agent_session(tools_stack, "agentapi-offline", builtin_tools=["slow"])
    before = slow_tools.STARTED.get("slow", 0)
    call = tools_stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user('call slow {"seconds": 0.4}')]),
        metadata=AUTH,
    )
    async for event in call:
        if event.HasField("tool_call_started"):
            call.cancel()
            break
    for _ in range(50):
        stored = await all_messages(tools_stack, session.id)
        if stored[-1].status != pb.MESSAGE_STATUS_IN_PROGRESS:
            break
        await asyncio.sleep(0.05)
    assert [(m.role, m.status) for m in stored][-1] == (pb.ROLE_TOOL, pb.MESSAGE_STATUS_CANCELLED)
    assert slow_tools.STARTED["slow"] == before + 1, "the tool ran once"


async def test_an_agent_naming_an_unknown_built_in_tool_is_refused(tools_stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_agent(tools_stack, f"agent-{uuid.uuid4().hex[:10]}", builtin_tools=["calculater"])
    assert "agent.builtin_tools[0]" in field_violations(caught.value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_agent(tools_stack, f"agent-{uuid.uuid4().hex[:10]}", max_steps=0)
    assert "agent.max_steps" in field_violations(caught.value)


async def test_rate_limits_are_checked_before_each_model_step(tools_stack: Stack) -> None:
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    await tools_stack.tenants.CreateTenant(
        pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant_id, rate_limits=pb.RateLimits(requests_per_minute=1))),
        metadata=AUTH,
    )
    key = await tools_stack.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(api_key=pb.ApiKey(tenant_id=tenant_id, scope=pb.API_KEY_SCOPE_CLIENT)), metadata=AUTH
    )
    auth = (("authorization", f"Bearer {key.secret}"),)
    agent = await create_agent(
        tools_stack, f"agent-{uuid.uuid4().hex[:10]}", "agentapi-offline", builtin_tools=["echo"]
    )
    session = await tools_stack.sessions.CreateSession(
        pb.CreateSessionRequest(session=pb.Session(agent_id=agent.id)), metadata=auth
    )
    call = tools_stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.session.id, messages=[user('call echo {"text": "a"}')]),
        metadata=auth,
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in call:
            received.append(event)
    assert error_reason(caught.value) == "RATE_LIMITED", "the second model step is a second request"
    assert [e.tool_call_completed.content for e in received if e.HasField("tool_call_completed")] == ["a"]
    page = await tools_stack.sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session.session.id, page_size=100), metadata=auth
    )
    stored = list(page.messages)
    assert [(m.role, m.status) for m in stored][-1] == (pb.ROLE_ASSISTANT, pb.MESSAGE_STATUS_FAILED)
    assert stored[-1].step == 2 and stored[-1].id == received[-1].assistant_message.id
    # The run released its session: the next turn is refused by the rate limit, not SESSION_BUSY.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tools_stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.session.id, messages=[user("again")]), metadata=auth
        )
    assert error_reason(caught.value) == "RATE_LIMITED"


def test_a_tool_module_that_cannot_load_is_a_setting_error_at_start() -> None:
    from server.config import Config

    with pytest.raises(ValueError, match="AGENTAPI_TOOL_MODULES: cannot load tools from 'no.such.module'"):
        Config(tool_modules=("no.such.module",)).check()
    Config(tool_modules=("tests.support.slow_tools",)).check()


async def test_records_logged_while_serving_a_call_carry_its_request_id(tools_stack: Stack) -> None:
    import logging

    from server import logs

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(logs.RequestId())
    logging.getLogger("server").addHandler(handler)
    try:
        session = await tools_stack.sessions.CreateSession(
            pb.CreateSessionRequest(
                session=pb.Session(
                    overrides=pb.SessionSettings(model="no-such-model", fallback_models=["agentapi-offline"])
                )
            ),
            metadata=AUTH,
        )
        await tools_stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.session.id, messages=[user("hi")]),
            metadata=(*AUTH, ("x-request-id", "req-fallback-1")),
        )
    finally:
        logging.getLogger("server").removeHandler(handler)
    fallback = [r for r in records if "trying agentapi-offline" in r.getMessage()]
    assert fallback and all(getattr(r, "request_id", "") == "req-fallback-1" for r in fallback)


async def test_recovery_frees_a_session_whose_run_died_between_steps(tools_stack: Stack) -> None:
    """A run that died after its tool calls finished and before its next step
    holds the session with nothing in progress: recovery frees it."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from server.domain.common import utcnow
    from server.domain.recovery import INTERRUPTED
    from server.store.db import Database
    from server.store.idempotency import InterruptedReplies

    session = await agent_session(tools_stack, "agentapi-offline", builtin_tools=["echo"])
    await events_of(tools_stack, session.id, 'call echo {"text": "a"}')
    stored = await all_messages(tools_stack, session.id)
    engine = create_async_engine(tools_stack.config.database_url)
    async with engine.begin() as connection:  # as if the process died before the second step
        await connection.execute(text("DELETE FROM messages WHERE id = :id"), {"id": stored[-1].id})
        await connection.execute(
            text("UPDATE sessions SET active_reply_id = :holder WHERE id = :s"),
            {"holder": stored[1].id, "s": session.id},
        )
    await engine.dispose()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events_of(tools_stack, session.id, "blocked?")
    assert error_reason(caught.value) == "SESSION_BUSY"
    db = Database(tools_stack.config.database_url)
    try:
        async with db.session() as db_session:
            await InterruptedReplies(db_session).fail(INTERRUPTED, utcnow(), before=utcnow())
            await db_session.commit()
    finally:
        await db.dispose()
    assert (await events_of(tools_stack, session.id, "free again"))[
        -1
    ].assistant_message.content == "You said: free again"
