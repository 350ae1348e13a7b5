"""Conversations and sessions: AIP lifecycle, carried-forward history,
overrides, EndSession, SESSION_BUSY and the ledger's listing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format

from agentapi import errors
from agentapi import v1 as pb
from server.domain.conversations import ConversationService
from server.domain.pagination import PageTokens
from server.store.db import Database
from tests.helpers import (
    all_messages,
    create_agent,
    create_session,
    error_reason,
    field_violations,
    sent_upstream,
    stream_turn,
    user,
)
from tests.stack import AUTH, Stack

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


async def _expect(call: object, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)
    return caught.value


async def test_conversation_update_delete_undelete(offline_stack: Stack) -> None:
    conversations = offline_stack.conversations
    created = (
        await conversations.CreateConversation(
            pb.CreateConversationRequest(conversation=pb.Conversation(title="first")), metadata=AUTH
        )
    ).conversation
    change = pb.Conversation(id=created.id, title="renamed", etag=created.etag)
    mask = field_mask_pb2.FieldMask(paths=["title"])
    updated = (
        await conversations.UpdateConversation(
            pb.UpdateConversationRequest(conversation=change, update_mask=mask), metadata=AUTH
        )
    ).conversation
    assert updated.title == "renamed" and updated.etag != created.etag
    stale = pb.UpdateConversationRequest(conversation=change, update_mask=mask)
    await _expect(conversations.UpdateConversation(stale, metadata=AUTH), grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    bad_mask = pb.UpdateConversationRequest(
        conversation=pb.Conversation(id=created.id), update_mask=field_mask_pb2.FieldMask(paths=["create_time"])
    )
    error = await _expect(
        conversations.UpdateConversation(bad_mask, metadata=AUTH), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_VIOLATION"
    )
    assert field_violations(error) == ["update_mask"]

    session = await offline_stack.sessions.CreateSession(
        pb.CreateSessionRequest(
            session=pb.Session(conversation_id=created.id, overrides={"model": "agentapi-offline"})
        ),
        metadata=AUTH,
    )
    deleted = (
        await conversations.DeleteConversation(pb.DeleteConversationRequest(conversation_id=created.id), metadata=AUTH)
    ).conversation
    assert deleted.HasField("delete_time") and deleted.expire_time.seconds > deleted.delete_time.seconds
    listed = await conversations.ListConversations(pb.ListConversationsRequest(page_size=100), metadata=AUTH)
    assert created.id not in {c.id for c in listed.conversations}
    # Soft-deleted: still readable, with its sessions, but takes no new session.
    got = await conversations.GetConversation(pb.GetConversationRequest(conversation_id=created.id), metadata=AUTH)
    assert got.conversation.HasField("delete_time")
    sessions = await offline_stack.sessions.ListSessions(
        pb.ListSessionsRequest(conversation_id=created.id), metadata=AUTH
    )
    assert [s.id for s in sessions.sessions] == [session.session.id]
    await _expect(
        offline_stack.sessions.CreateSession(
            pb.CreateSessionRequest(
                session=pb.Session(conversation_id=created.id, overrides={"model": "agentapi-offline"})
            ),
            metadata=AUTH,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONVERSATION_DELETED",
    )
    restored = await conversations.UndeleteConversation(
        pb.UndeleteConversationRequest(conversation_id=created.id), metadata=AUTH
    )
    assert not restored.conversation.HasField("delete_time")
    await _expect(
        conversations.UndeleteConversation(pb.UndeleteConversationRequest(conversation_id=created.id), metadata=AUTH),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONVERSATION_NOT_DELETED",
    )


@pytest.mark.parametrize(
    ("conversation_id", "code", "reason"),
    [
        ("not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CONVERSATION_ID"),
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND, "CONVERSATION_NOT_FOUND"),
    ],
)
async def test_create_session_checks_the_conversation(
    offline_stack: Stack, conversation_id: str, code: grpc.StatusCode, reason: str
) -> None:
    request = pb.CreateSessionRequest(
        session=pb.Session(conversation_id=conversation_id, overrides={"model": "agentapi-offline"})
    )
    await _expect(offline_stack.sessions.CreateSession(request, metadata=AUTH), code, reason)


async def test_history_is_carried_forward_only_when_asked(stack: Stack, upstream: Any, key: str) -> None:
    agent = await create_agent(stack, key)
    first = await create_session(stack, agent.id)
    await stream_turn(stack, first.id, user("remember the word heron"))

    async def second_session(carry: bool) -> pb.Session:
        request = pb.CreateSessionRequest(
            session=pb.Session(agent_id=agent.id, conversation_id=first.conversation_id), carry_forward_history=carry
        )
        return (await stack.sessions.CreateSession(request, metadata=AUTH)).session

    fresh = await second_session(False)
    assert await all_messages(stack, fresh.id) == []
    carried = await second_session(True)
    copies = await all_messages(stack, carried.id)
    assert [(m.role, m.content) for m in copies] == [
        (pb.ROLE_USER, "remember the word heron"),
        (pb.ROLE_ASSISTANT, "Echo: remember the word heron"),
    ]
    assert all(m.usage.total_tokens == 0 for m in copies), "carried copies must not be billed again"
    await stream_turn(stack, carried.id, user("which word?"))
    prompt = sent_upstream(upstream, "which word?")["messages"]
    assert [m["content"] for m in prompt] == ["remember the word heron", "Echo: remember the word heron", "which word?"]


async def test_overrides_are_validated_and_filter_the_tools(stack: Stack, upstream: Any, key: str) -> None:
    agent = await create_agent(stack, key, tools=[tool_proto(WEATHER), tool_proto(CLOCK)])
    bad = pb.Session(
        agent_id=agent.id,
        overrides=pb.SessionSettings(allowed_tools=["get_weather", "launch_rocket"], history_token_budget=0),
    )
    error = await _expect(
        stack.sessions.CreateSession(pb.CreateSessionRequest(session=bad), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_VIOLATION",
    )
    assert set(field_violations(error)) == {
        "session.overrides.allowed_tools[1]",
        "session.overrides.history_token_budget",
    }
    good = pb.Session(agent_id=agent.id, overrides=pb.SessionSettings(allowed_tools=["get_time"]))
    session = (await stack.sessions.CreateSession(pb.CreateSessionRequest(session=good), metadata=AUTH)).session
    assert [t.function.name for t in session.effective_settings.tools] == ["get_time"]
    assert session.agent_revision == agent.revision == 1
    await stream_turn(stack, session.id, user("what time is it"))
    sent = sent_upstream(upstream, "what time is it")
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_time"]


def tool_proto(tool: dict[str, Any]) -> pb.Tool:
    return json_format.ParseDict(tool, pb.Tool())


async def test_ended_session_reads_but_refuses_turns(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    await stream_turn(offline_stack, session.id, user("hello"))
    ended = (
        await offline_stack.sessions.EndSession(pb.EndSessionRequest(session_id=session.id), metadata=AUTH)
    ).session
    assert ended.status == pb.SESSION_STATUS_ENDED and ended.HasField("end_time")
    again = await offline_stack.sessions.EndSession(pb.EndSessionRequest(session_id=session.id), metadata=AUTH)
    assert again.session.end_time == ended.end_time
    await _expect(
        offline_stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("more")]), metadata=AUTH
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_ENDED",
    )
    assert len(await all_messages(offline_stack, session.id)) == 2


async def test_a_second_turn_while_one_runs_is_session_busy(stack: Stack) -> None:
    session = await create_session(stack, model="scripted-a")
    first = stack.sessions.SendStreamingMessage(
        pb.SendStreamingMessageRequest(session_id=session.id, messages=[user("one two three four [[slow:150]]")]),
        metadata=AUTH,
    )
    events = aiter(first)
    assert (await anext(events)).HasField("turn_started")  # the first turn is stored and running
    error = await _expect(
        stack.sessions.SendMessage(pb.SendMessageRequest(session_id=session.id, messages=[user("two")]), metadata=AUTH),
        grpc.StatusCode.ABORTED,
        "SESSION_BUSY",
    )
    assert errors.from_rpc_error(error).metadata["session_id"] == session.id
    rest = [event async for event in events]
    assert rest[-1].assistant_message.status == pb.MESSAGE_STATUS_COMPLETED
    # Two racing turns: exactly one runs, the other is refused before anything is stored.
    results = await asyncio.gather(
        *(
            stack.sessions.SendMessage(
                pb.SendMessageRequest(session_id=session.id, messages=[user(f"race {i} [[slow:50]]")]), metadata=AUTH
            )
            for i in range(2)
        ),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 1 and error_reason(refused[0]) == "SESSION_BUSY"
    stored = await all_messages(stack, session.id)
    assert [m.sequence for m in stored] == [1, 2, 3, 4]


async def test_list_messages_filters_by_role_and_pages_backwards(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    for word in ("alpha", "beta", "gamma"):
        await stream_turn(offline_stack, session.id, user(word))
    listed = await offline_stack.sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session.id, filter='role = "user"'), metadata=AUTH
    )
    assert [m.content for m in listed.messages] == ["alpha", "beta", "gamma"]
    replies = await offline_stack.sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session.id, filter="role = ROLE_ASSISTANT AND status = completed"),
        metadata=AUTH,
    )
    assert [m.sequence for m in replies.messages] == [2, 4, 6]
    reply = replies.messages[0]
    assert reply.token_count > 0 and reply.time_to_first_token_ms >= 0 and reply.duration_ms >= 0
    assert (reply.prompt_messages.first, reply.prompt_messages.last) == (1, 1)
    assert (replies.messages[2].prompt_messages.first, replies.messages[2].prompt_messages.last) == (1, 5)
    # Forwards two at a time to the end, then backwards from the last page.
    pages = []
    token = ""
    while True:
        page = await offline_stack.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session.id, page_size=4, page_token=token), metadata=AUTH
        )
        pages.append([m.sequence for m in page.messages])
        token = page.next_page_token
        if not token:
            break
    assert pages == [[1, 2, 3, 4], [5, 6]]
    back = await offline_stack.sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session.id, page_size=4, page_token=page.previous_page_token), metadata=AUTH
    )
    assert [m.sequence for m in back.messages] == [1, 2, 3, 4] and not back.previous_page_token
    error = await _expect(
        offline_stack.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session.id, filter='role = "robot"'), metadata=AUTH
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FILTER",
    )
    assert field_violations(error) == ["filter"]


async def test_history_budget_keeps_the_newest_messages(stack: Stack, upstream: Any) -> None:
    budgeted = pb.Session(overrides=pb.SessionSettings(model="scripted-a", history_token_budget=30))
    session = (await stack.sessions.CreateSession(pb.CreateSessionRequest(session=budgeted), metadata=AUTH)).session
    for index in range(4):
        await stream_turn(stack, session.id, user(f"message number {index} with some padding words"))
    last = "the final question"
    events = await stream_turn(stack, session.id, user(last))
    prompt = sent_upstream(upstream, last)["messages"]
    stored = await all_messages(stack, session.id)
    kept = sum(m.token_count for m in stored[-1 - len(prompt) + 1 : -2])
    assert 1 < len(prompt) < len(stored) - 1, "the window dropped old messages but kept some"
    assert kept <= 30
    assert prompt[-2]["content"] == stored[-3].content, "the newest history is kept"
    reply = events[-1].assistant_message
    assert reply.prompt_messages.last == reply.sequence - 1
    assert reply.prompt_messages.first == reply.sequence - len(prompt)


async def test_purge_removes_expired_conversations_with_their_ledger(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    await stream_turn(offline_stack, session.id, user("soon forgotten"))
    keep = await create_session(offline_stack, model="agentapi-offline")
    await offline_stack.conversations.DeleteConversation(
        pb.DeleteConversationRequest(conversation_id=session.conversation_id), metadata=AUTH
    )
    db = Database(offline_stack.config.database_url)
    try:
        service = ConversationService(db, PageTokens(b""))
        assert await service.purge() == 0, "nothing expires before its expire_time"
        assert await service.purge(datetime.now(UTC).replace(tzinfo=None) + timedelta(days=31)) >= 1
    finally:
        await db.dispose()
    for gone in (
        offline_stack.conversations.GetConversation(
            pb.GetConversationRequest(conversation_id=session.conversation_id), metadata=AUTH
        ),
        offline_stack.sessions.GetSession(pb.GetSessionRequest(session_id=session.id), metadata=AUTH),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gone
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    still = await offline_stack.sessions.GetSession(pb.GetSessionRequest(session_id=keep.id), metadata=AUTH)
    assert still.session.id == keep.id
