"""DeleteSession removes an empty session (and the conversation made with
it), never stored messages; the bridge uses it so that a chat completion the
server refuses leaves nothing behind."""

from __future__ import annotations

import grpc
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentapi import v1 as pb
from tests.helpers import create_session, error_reason, user
from tests.stack import AUTH, MASTER_KEY, Stack


async def counts(stack: Stack) -> tuple[int, int, int]:
    engine = create_async_engine(stack.config.database_url)
    try:
        async with engine.connect() as connection:
            values = []
            for table in ("conversations", "sessions", "messages"):
                values.append((await connection.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
            return values[0], values[1], values[2]
    finally:
        await engine.dispose()


async def test_an_empty_session_goes_with_its_conversation(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="agentapi-offline")
    deleted = await offline_stack.sessions.DeleteSession(pb.DeleteSessionRequest(session_id=session.id), metadata=AUTH)
    assert deleted.conversation_deleted
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.sessions.GetSession(pb.GetSessionRequest(session_id=session.id), metadata=AUTH)
    assert error_reason(caught.value) == "SESSION_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.conversations.GetConversation(
            pb.GetConversationRequest(conversation_id=session.conversation_id), metadata=AUTH
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stored_messages_and_shared_conversations_stay(offline_stack: Stack) -> None:
    used = await create_session(offline_stack, model="agentapi-offline")
    await offline_stack.sessions.SendMessage(
        pb.SendMessageRequest(session_id=used.id, messages=[user("hello")]), metadata=AUTH
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.sessions.DeleteSession(pb.DeleteSessionRequest(session_id=used.id), metadata=AUTH)
    assert error_reason(caught.value) == "SESSION_NOT_EMPTY"
    second = await offline_stack.sessions.CreateSession(
        pb.CreateSessionRequest(
            session=pb.Session(
                conversation_id=used.conversation_id, overrides=pb.SessionSettings(model="agentapi-offline")
            )
        ),
        metadata=AUTH,
    )
    deleted = await offline_stack.sessions.DeleteSession(
        pb.DeleteSessionRequest(session_id=second.session.id), metadata=AUTH
    )
    assert not deleted.conversation_deleted


async def test_a_chat_completion_the_server_refuses_leaves_nothing_behind(offline_stack: Stack) -> None:
    before = await counts(offline_stack)
    async with httpx.AsyncClient(base_url=offline_stack.bridge_url, timeout=30) as http:
        for stream in (False, True):
            response = await http.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {MASTER_KEY}"},
                json={
                    "model": "agentapi-offline",
                    "n": 2,
                    "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            assert response.status_code == 400 and response.json()["error"]["param"] == "n"
            assert "x-session-id" not in response.headers
    assert await counts(offline_stack) == before
