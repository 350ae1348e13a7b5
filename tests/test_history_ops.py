"""Regenerate and fork: the ledger keeps every reply, and the next turn sees
only the active path; through the real LiteLLM proxy on SQLite and MariaDB."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import httpx
import pytest

from agentapi import v1 as pb
from tests.helpers import all_messages, create_session, error_reason, stream_turn, user
from tests.stack import AUTH, MASTER_KEY, Stack


def chat_bodies(upstream: Any, marker: str) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in upstream.requests
        if r["path"].endswith("/chat/completions") and marker in str(r["body"]["messages"])
    ]


async def regenerate(stack: Stack, session_id: str, message_id: str = "") -> list[pb.RegenerateMessageResponse]:
    call = stack.sessions.RegenerateMessage(
        pb.RegenerateMessageRequest(session_id=session_id, message_id=message_id), metadata=AUTH
    )
    return [event async for event in call]


async def test_regenerate_twice_keeps_the_old_replies_off_the_active_path(stack: Stack, upstream: Any) -> None:
    session = await create_session(stack, model="scripted-a")
    marker = uuid.uuid4().hex[:8]
    first = (await stream_turn(stack, session.id, user(f"question {marker}")))[-1].assistant_message
    again = await regenerate(stack, session.id)
    assert [e.WhichOneof("event") for e in again][0] == "turn_started"
    assert not any(e.HasField("input_message") for e in again), "no input is stored again"
    second = again[-1].assistant_message
    third = (await regenerate(stack, session.id, second.id))[-1].assistant_message
    bodies = chat_bodies(upstream, marker)
    assert len(bodies) == 3 and all(b["messages"] == bodies[0]["messages"] for b in bodies), "same prompt each time"
    stored = await all_messages(stack, session.id)
    assert [(m.role, m.superseded_by) for m in stored] == [
        (pb.ROLE_USER, ""),
        (pb.ROLE_ASSISTANT, second.id),
        (pb.ROLE_ASSISTANT, third.id),
        (pb.ROLE_ASSISTANT, ""),
    ]
    assert stored[1].id == first.id
    # The next turn's prompt holds only the active reply.
    await stream_turn(stack, session.id, user(f"next {marker}"))
    last = chat_bodies(upstream, f"next {marker}")[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]


async def test_only_the_latest_turn_regenerates(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    first = (await stream_turn(stack, session.id, user("one")))[-1].assistant_message
    await stream_turn(stack, session.id, user("two"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await regenerate(stack, session.id, first.id)
    assert error_reason(caught.value) == "NOT_REGENERABLE"
    empty = await create_session(stack, model="scripted-a")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await regenerate(stack, empty.id)
    assert error_reason(caught.value) == "NOT_REGENERABLE"


async def test_fork_with_an_edit_branches_and_leaves_the_original(stack: Stack, upstream: Any) -> None:
    session = await create_session(stack, model="scripted-a")
    marker = uuid.uuid4().hex[:8]
    for text in ("alpha", "bravo", "charlie"):
        await stream_turn(stack, session.id, user(f"{text} {marker}"))
    original = await all_messages(stack, session.id)
    third = original[2]  # "bravo": the fork keeps alpha, its reply, and an edited bravo
    forked = await stack.sessions.ForkSession(
        pb.ForkSessionRequest(session_id=session.id, message_id=third.id, edited_content=f"delta {marker}"),
        metadata=AUTH,
    )
    branch = forked.session
    assert (branch.parent_session_id, branch.parent_message_id) == (session.id, third.id)
    assert branch.conversation_id == session.conversation_id
    assert [m.content for m in forked.messages] == [original[0].content, original[1].content, f"delta {marker}"]
    assert all(m.usage.total_tokens == 0 for m in forked.messages), "copies are not billed again"
    reply = (await stream_turn(stack, branch.id, user(f"echo {marker}")))[-1].assistant_message
    assert reply.status == pb.MESSAGE_STATUS_COMPLETED
    prompt = chat_bodies(upstream, f"echo {marker}")[-1]["messages"]
    assert [m["content"] for m in prompt if m["role"] == "user"] == [
        f"alpha {marker}",
        f"delta {marker}",
        f"echo {marker}",
    ]
    assert [m.id for m in await all_messages(stack, session.id)] == [m.id for m in original], "original untouched"
    page = await stack.sessions.ListSessions(
        pb.ListSessionsRequest(conversation_id=session.conversation_id), metadata=AUTH
    )
    assert {s.id: s.parent_session_id for s in page.sessions} == {session.id: "", branch.id: session.id}
    exported = await stack.sessions.ExportSession(pb.ExportSessionRequest(session_id=branch.id), metadata=AUTH)
    header = json.loads(exported.content)["session"]
    assert (header["parent_session_id"], header["parent_message_id"]) == (session.id, third.id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.sessions.ForkSession(
            pb.ForkSessionRequest(session_id=session.id, message_id=original[1].id, edited_content="no"),
            metadata=AUTH,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, "only a user message can be edited"


async def test_the_bridge_regenerates_when_the_messages_end_at_the_last_user_message(
    stack: Stack, upstream: Any
) -> None:
    marker = uuid.uuid4().hex[:8]
    question = {"role": "user", "content": f"regen {marker}"}
    async with httpx.AsyncClient(
        base_url=stack.bridge_url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
    ) as http:
        first = await http.post("/v1/chat/completions", json={"model": "scripted-a", "messages": [question]})
        session_id = first.headers["x-session-id"]
        again = await http.post(
            "/v1/chat/completions",
            json={"model": "scripted-a", "messages": [question]},
            headers={"X-Session-Id": session_id},
        )
    assert again.status_code == 200 and again.json()["id"] != first.json()["id"]
    stored = await all_messages(stack, session_id)
    assert [m.role for m in stored] == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_ASSISTANT]
    assert stored[1].superseded_by == stored[2].id
    assert len(chat_bodies(upstream, f"regen {marker}")) == 2


async def test_keyed_fork_and_regenerate_run_once(stack: Stack, upstream: Any) -> None:
    session = await create_session(stack, model="scripted-a")
    marker = uuid.uuid4().hex[:8]
    await stream_turn(stack, session.id, user(f"once {marker}"))
    key = (("idempotency-key", f"k-{uuid.uuid4().hex}"),)
    request = pb.RegenerateMessageRequest(session_id=session.id)
    first = [e async for e in stack.sessions.RegenerateMessage(request, metadata=(*AUTH, *key))]
    again = [e async for e in stack.sessions.RegenerateMessage(request, metadata=(*AUTH, *key))]
    assert again[-1].assistant_message == first[-1].assistant_message
    assert len(chat_bodies(upstream, f"once {marker}")) == 2, "the first turn and one regeneration"
    message_id = (await all_messages(stack, session.id))[0].id
    fork_key = (("idempotency-key", f"k-{uuid.uuid4().hex}"),)
    fork = pb.ForkSessionRequest(session_id=session.id, message_id=message_id)
    one = await stack.sessions.ForkSession(fork, metadata=(*AUTH, *fork_key))
    two = await stack.sessions.ForkSession(fork, metadata=(*AUTH, *fork_key))
    assert one.session.id == two.session.id


async def test_a_regenerated_call_group_no_longer_waits_for_outputs(offline_stack: Stack) -> None:
    stack = offline_stack
    session = await create_session(stack, model="agentapi-offline")
    lookup = pb.Tool(type="function", function=pb.FunctionDefinition(name="lookup"))
    call = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(
            session_id=session.id, messages=[user("call lookup {}")], options=pb.TurnOptions(tools=[lookup])
        ),
        metadata=AUTH,
    )
    waiting = [e async for e in call][-1].assistant_message
    assert waiting.status == pb.MESSAGE_STATUS_REQUIRES_ACTION
    # Regenerated without calling the tool: the old call leaves the active path, so nothing is pending.
    again = stack.sessions.RegenerateMessage(
        pb.RegenerateMessageRequest(
            session_id=session.id,
            options=pb.TurnOptions(tools=[lookup], tool_choice=pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)),
        ),
        metadata=AUTH,
    )
    assert [e async for e in again][-1].assistant_message.status == pb.MESSAGE_STATUS_COMPLETED
    answer = (await stream_turn(stack, session.id, user("and now?")))[-1].assistant_message
    assert answer.status == pb.MESSAGE_STATUS_COMPLETED
