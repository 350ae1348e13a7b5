"""DeleteMessage (AIP-164 soft delete, issue 22) on SQLite and MariaDB, through
the real LiteLLM proxy: a deleted message never reaches the upstream again,
nor ListMessages (unless show_deleted), export or replay, while its usage
still sums; a tool call and its results go together; ``force`` (operators)
and ``agentapi purge`` erase content and keep cost."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from agentapi import v1 as pb
from server.domain.message_history import purge_expired_messages
from server.store.db import Database
from tests.helpers import all_messages, create_agent, create_session, error_reason, sent_upstream, stream_turn, user
from tests.stack import AUTH, Stack

Metadata = tuple[tuple[str, str], ...]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


async def _tenant(stack: Stack, scope: int = pb.API_KEY_SCOPE_CLIENT) -> Metadata:
    """A new tenant and one of its keys, as call metadata."""
    tenant_id = f"t-{uuid.uuid4().hex[:10]}"
    await stack.tenants.CreateTenant(pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant_id)), metadata=AUTH)
    created = await stack.api_keys.CreateApiKey(
        pb.CreateApiKeyRequest(api_key=pb.ApiKey(tenant_id=tenant_id, scope=scope, display_name="t")), metadata=AUTH
    )
    return (("authorization", f"Bearer {created.secret}"),)


async def _session(stack: Stack, auth: Metadata = AUTH, agent_id: str = "") -> str:
    session = pb.Session(agent_id=agent_id, overrides=pb.SessionSettings(model="" if agent_id else "scripted-a"))
    return (await stack.sessions.CreateSession(pb.CreateSessionRequest(session=session), metadata=auth)).session.id


async def _turn(stack: Stack, session_id: str, text: str, auth: Metadata = AUTH) -> pb.SendMessageResponse:
    request = pb.SendMessageRequest(session_id=session_id, messages=[user(text)])
    return await stack.sessions.SendMessage(request, metadata=auth)


async def _delete(
    stack: Stack, session_id: str, message_id: str, auth: Metadata = AUTH, force: bool = False
) -> list[pb.Message]:
    request = pb.DeleteMessageRequest(session_id=session_id, message_id=message_id, force=force)
    return list((await stack.sessions.DeleteMessage(request, metadata=auth)).messages)


async def _listed(stack: Stack, session_id: str, auth: Metadata = AUTH, show_deleted: bool = False) -> list[pb.Message]:
    request = pb.ListMessagesRequest(session_id=session_id, page_size=100, show_deleted=show_deleted)
    return list((await stack.sessions.ListMessages(request, metadata=auth)).messages)


async def _refused(call: Any, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)


async def _total(stack: Stack, auth: Metadata) -> pb.UsageRow:
    return (await stack.usage.GetUsage(pb.GetUsageRequest(), metadata=auth)).total


async def test_deleted_messages_leave_prompts_reads_export_and_replay_but_usage_still_sums(
    stack: Stack, upstream: Any
) -> None:
    auth = await _tenant(stack)
    session_id = await _session(stack, auth)
    secret = f"walrus{uuid.uuid4().hex[:8]}"
    first = await _turn(stack, session_id, f"my password is {secret}", auth)
    await _turn(stack, session_id, "second question", auth)
    before = await _total(stack, auth)
    assert before.turns == 2 and before.cost_usd > 0

    user_id, reply_id = first.input_messages[0].id, first.message.id
    deleted = await _delete(stack, session_id, user_id, auth)
    assert [m.id for m in deleted] == [user_id]
    assert deleted[0].HasField("delete_time") and not deleted[0].HasField("purge_time")
    assert deleted[0].expire_time.ToDatetime() - deleted[0].delete_time.ToDatetime() == timedelta(days=30)
    assert deleted[0].content == f"my password is {secret}"  # kept until purged
    again = await _delete(stack, session_id, user_id, auth)  # idempotent
    assert [(m.id, m.delete_time) for m in again] == [(m.id, m.delete_time) for m in deleted]
    await _delete(stack, session_id, reply_id, auth)  # its echo repeats the secret

    assert [m.id for m in await _listed(stack, session_id, auth)] == [
        m.id for m in await _listed(stack, session_id, auth, show_deleted=True) if m.id not in (user_id, reply_id)
    ]
    shown = {m.id: m for m in await _listed(stack, session_id, auth, show_deleted=True)}
    assert shown[user_id].HasField("delete_time") and shown[reply_id].HasField("delete_time")

    third = await _turn(stack, session_id, "third question", auth)
    prompt = sent_upstream(upstream, "third question")["messages"]
    assert secret not in json.dumps(prompt)
    assert [m["content"] for m in prompt if m["role"] == "user"] == ["second question", "third question"]
    assert third.message.prompt_messages.last > 0

    after = await _total(stack, auth)  # the deleted reply's usage and cost still count
    assert after.turns == 3
    assert after.cost_usd == pytest.approx(before.cost_usd + third.message.usage.cost_usd)
    assert after.prompt_tokens == before.prompt_tokens + third.message.usage.prompt_tokens

    for export_format in (pb.EXPORT_FORMAT_OPENAI_JSON, pb.EXPORT_FORMAT_JSONL, pb.EXPORT_FORMAT_MARKDOWN):
        exported = await stack.sessions.ExportSession(
            pb.ExportSessionRequest(session_id=session_id, format=export_format), metadata=auth
        )
        assert secret not in exported.content and "second question" in exported.content
    replayed = await stack.sessions.ReplaySession(
        pb.ReplaySessionRequest(session_id=session_id, model="scripted-b"), metadata=auth
    )
    assert [m.content for m in replayed.messages if m.role == pb.ROLE_USER] == ["second question", "third question"]
    # A new session carrying the conversation's history forward leaves them out too.
    session = (await stack.sessions.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=auth)).session
    carried = pb.Session(conversation_id=session.conversation_id, overrides=pb.SessionSettings(model="scripted-a"))
    created = await stack.sessions.CreateSession(
        pb.CreateSessionRequest(session=carried, carry_forward_history=True), metadata=auth
    )
    copies = await _listed(stack, created.session.id, auth, show_deleted=True)
    assert copies and secret not in json.dumps([m.content for m in copies])


async def test_a_tool_call_and_its_results_are_deleted_together(stack: Stack, upstream: Any, key: str) -> None:
    tools = [json_format.ParseDict(tool, pb.Tool()) for tool in (WEATHER, CLOCK)]
    agent = await create_agent(stack, key, tools=tools)
    session = await create_session(stack, agent.id)
    ask = 'weather and time [[tool:get_weather {"city": "Lima"}]] [[tool:get_time]]'
    called = (await stream_turn(stack, session.id, user(ask)))[-1].assistant_message
    assert called.status == pb.MESSAGE_STATUS_REQUIRES_ACTION
    # The call waits for its results: hiding it would leave results without their call.
    await _refused(_delete(stack, session.id, called.id), grpc.StatusCode.FAILED_PRECONDITION, "TOOL_CALLS_PENDING")
    outputs = [pb.ToolOutput(tool_call_id=c.id, output=f"out-{c.function.name}") for c in called.tool_calls]
    request = pb.SubmitToolOutputsRequest(session_id=session.id, tool_outputs=outputs)
    _ = [event async for event in stack.sessions.SubmitToolOutputs(request, metadata=AUTH)]
    tool_ids = [m.id for m in await all_messages(stack, session.id) if m.role == pb.ROLE_TOOL]
    assert len(tool_ids) == 2

    # Deleting one result deletes its call and the sibling result; over REST through the bridge.
    async with stack.http() as http:
        response = await http.delete(f"/agentapi/v1/sessions/{session.id}/messages/{tool_ids[1]}")
    assert response.status_code == 200, response.text
    assert [m["id"] for m in response.json()["messages"]] == [called.id, *tool_ids]
    assert all(m["deleteTime"] for m in response.json()["messages"])
    # Deleting the call again names the same group (idempotent).
    assert [m.id for m in await _delete(stack, session.id, called.id)] == [called.id, *tool_ids]

    await stream_turn(stack, session.id, user("after the tools"))
    prompt = sent_upstream(upstream, "after the tools")["messages"]
    assert not [m for m in prompt if m["role"] == "tool" or m.get("tool_calls")]
    assert "weather and time" in json.dumps(prompt)  # the user's question stays


async def test_force_erases_content_keeps_cost_and_is_for_operators(stack: Stack) -> None:
    session_id = await _session(stack)
    turn = await _turn(stack, session_id, "forget this sentence entirely")
    reply = turn.message
    admin = await _tenant(stack, pb.API_KEY_SCOPE_ADMIN)  # a tenant's admin is not an operator
    await _refused(
        _delete(stack, session_id, reply.id, admin, force=True),
        grpc.StatusCode.PERMISSION_DENIED,
        "OPERATOR_REQUIRED",
    )
    # Another tenant's message is not found, for a plain delete too.
    await _refused(_delete(stack, session_id, reply.id, admin), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    other_session = await _session(stack)
    await _refused(_delete(stack, other_session, reply.id), grpc.StatusCode.NOT_FOUND, "MESSAGE_NOT_FOUND")

    erased = await _delete(stack, session_id, reply.id, force=True)
    assert [m.id for m in erased] == [reply.id]
    assert erased[0].content == "" and erased[0].HasField("purge_time") and erased[0].HasField("delete_time")
    assert erased[0].usage == reply.usage and erased[0].usage.cost_usd > 0 and erased[0].model == reply.model
    stored = {m.id: m for m in await _listed(stack, session_id, show_deleted=True)}[reply.id]
    assert stored.content == "" and stored.usage == reply.usage
    user_id = turn.input_messages[0].id
    assert (await _delete(stack, session_id, user_id, force=True))[0].content == ""


async def test_purge_erases_expired_deleted_messages(stack: Stack) -> None:
    session_id = await _session(stack)
    turn = await _turn(stack, session_id, "purge me later")
    await _delete(stack, session_id, turn.message.id)
    agentapi = str(Path(sys.executable).parent / "agentapi")
    database = ["--database-url", stack.config.database_url]
    result = subprocess.run([agentapi, "purge", *database], capture_output=True, text=True, check=True)
    assert re.search(r"^erased the content of \d+ expired deleted messages$", result.stdout, re.M), result.stdout
    assert {m.id: m for m in await _listed(stack, session_id, show_deleted=True)}[turn.message.id].content
    db = Database(stack.config.database_url)
    try:  # `agentapi purge` runs this; time moves past the 30-day expiry
        purged = await purge_expired_messages(db, datetime.now(UTC).replace(tzinfo=None) + timedelta(days=31))
    finally:
        await db.dispose()
    assert purged >= 1
    stored = {m.id: m for m in await _listed(stack, session_id, show_deleted=True)}[turn.message.id]
    assert stored.content == "" and stored.HasField("purge_time") and stored.usage == turn.message.usage


async def test_delete_refuses_a_running_turn_and_bad_ids(stack: Stack) -> None:
    session_id = await _session(stack)
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session_id, messages=[user("slow [[slow:300]] reply please")]),
        metadata=AUTH,
    )
    events = aiter(call)
    started = [await anext(events), await anext(events)]
    stored = next(e.input_message for e in started if e.HasField("input_message"))
    await _refused(_delete(stack, session_id, stored.id), grpc.StatusCode.FAILED_PRECONDITION, "SESSION_BUSY")
    _ = [event async for event in events]
    assert [m.id for m in await _delete(stack, session_id, stored.id)] == [stored.id]

    await _refused(_delete(stack, session_id, "nope"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_MESSAGE_ID")
    await _refused(_delete(stack, session_id, str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND, "MESSAGE_NOT_FOUND")
