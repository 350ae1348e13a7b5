"""The embedded default: SQLite and the built-in offline model, no keys, no servers."""

from __future__ import annotations

import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentapi import v1 as pb
from tests.helpers import all_messages, create_agent, create_session, error_reason, stream_turn, user
from tests.stack import AUTH, Stack

CALCULATOR = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}},
}


async def test_offline_model_streams_several_deltas(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    session = await create_session(offline_stack, agent.id)
    events = await stream_turn(offline_stack, session.id, user("one two three four"))
    deltas = [e.delta.content for e in events if e.HasField("delta")]
    assert len(deltas) >= 4
    assert events[-1].assistant_message.content == "You said: one two three four" == "".join(deltas)
    assert events[-1].assistant_message.model == "agentapi-offline"


async def test_offline_tool_round_trip_over_the_bridge(offline_stack: Stack) -> None:
    client = offline_stack.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="agentapi-offline",
        messages=[{"role": "user", "content": 'please call add {"a": 2}'}],
        tools=[CALCULATOR],
    )
    first = raw.parse()
    session_id = raw.headers["x-session-id"]
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2}

    second = await client.chat.completions.create(
        model="agentapi-offline",
        messages=[{"role": "tool", "tool_call_id": call.id, "content": "4"}],
        extra_headers={"X-Session-Id": session_id},
    )
    assert second.choices[0].message.content == "Tool add returned: 4"
    stored = await all_messages(offline_stack, session_id)
    assert [m.role for m in stored] == [pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, pb.ROLE_ASSISTANT]
    assert stored[1].status == pb.MESSAGE_STATUS_REQUIRES_ACTION
    assert stored[2].tool_call_id == call.id


async def test_unknown_model_offline_is_model_not_found(offline_stack: Stack) -> None:
    session = await create_session(offline_stack, model="gpt-4o")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user("hi")]), metadata=AUTH
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(caught.value) == "MODEL_NOT_FOUND"


async def test_model_catalog_is_the_offline_model(offline_stack: Stack) -> None:
    response = await offline_stack.models.ListModels(pb.ListModelsRequest(), metadata=AUTH)
    assert [m.id for m in response.models] == ["agentapi-offline"]


async def test_health_and_reflection_need_no_key(offline_stack: Stack) -> None:
    health = health_pb2_grpc.HealthStub(offline_stack.channel)
    for service in ("", "agentapi.v1.SessionService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(offline_stack.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for r in responses for s in r.list_services_response.service]
    assert {
        "agentapi.v1.AgentService",
        "agentapi.v1.ConversationService",
        "agentapi.v1.SessionService",
        "agentapi.v1.ModelService",
    } <= set(names)


async def test_conversations_and_message_pages(offline_stack: Stack, key: str) -> None:
    conversation = (
        await offline_stack.conversations.CreateConversation(
            pb.CreateConversationRequest(conversation=pb.Conversation(title="Trip")), metadata=AUTH
        )
    ).conversation
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    session = (
        await offline_stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(agent_id=key, conversation_id=conversation.id)), metadata=AUTH
        )
    ).session
    assert session.conversation_id == conversation.id and session.agent_id == agent.id
    assert session.effective_settings.model == "agentapi-offline"
    for text in ("a", "b", "c"):
        await offline_stack.sessions.SendMessage(
            pb.SendMessageRequest(session_id=session.id, messages=[user(text)]), metadata=AUTH
        )
    page = await offline_stack.sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session.id, page_size=4), metadata=AUTH
    )
    assert [m.sequence for m in page.messages] == [1, 2, 3, 4] and page.next_page_token
    rest = await offline_stack.sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session.id, page_size=4, page_token=page.next_page_token), metadata=AUTH
    )
    assert [m.sequence for m in rest.messages] == [5, 6] and not rest.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session.id, page_size=4, page_token=page.next_page_token + "x"),
            metadata=AUTH,
        )
    assert error_reason(caught.value) == "INVALID_PAGE_TOKEN"
    with pytest.raises(grpc.aio.AioRpcError) as too_big:
        await offline_stack.sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session.id, page_size=101), metadata=AUTH
        )
    assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
