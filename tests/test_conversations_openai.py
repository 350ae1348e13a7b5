"""OpenAI's Conversations API on the bridge (issue 21): the official SDK's
``conversations.*`` against agentapi's conversations, with responses run in
them; items carry the response that produced them; tenants are isolated."""

from __future__ import annotations

import grpc
import openai
import pytest

from agentapi import v1 as pb
from tests.stack import AUTH, Stack
from tests.support.open_responses import validate_response

OFFLINE = "agentapi-offline"


async def test_conversation_lifecycle_and_items(offline_stack: Stack) -> None:
    client = offline_stack.openai()
    conversation = await client.conversations.create(metadata={"topic": "demo"})
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "demo"}
    first = await client.responses.create(model=OFFLINE, input="first turn", conversation=conversation.id)
    second = await client.responses.create(model=OFFLINE, input="second turn", conversation={"id": conversation.id})
    async with offline_stack.http() as http:
        validate_response((await http.get(f"/v1/responses/{second.id}")).json())

    items = await client.conversations.items.list(conversation.id, order="asc")
    texts = [(i.type, i.role, i.content[0].text) for i in items.data]
    assert texts == [
        ("message", "user", "first turn"),
        ("message", "assistant", "You said: first turn"),
        ("message", "user", "second turn"),
        ("message", "assistant", "You said: second turn"),
    ]
    raw = (await client.conversations.items.with_raw_response.list(conversation.id, order="asc")).http_response.json()
    assert [i["response_id"] for i in raw["data"]] == [first.id, first.id, second.id, second.id]
    assert raw["first_id"] == raw["data"][0]["id"] and raw["has_more"] is False

    newest = await client.conversations.items.list(conversation.id, limit=1)
    assert newest.data[0].content[0].text == "You said: second turn" and newest.has_more
    page = await client.conversations.items.list(conversation.id, limit=2, order="asc", after=raw["data"][1]["id"])
    assert [i.content[0].text for i in page.data] == ["second turn", "You said: second turn"]

    item = await client.conversations.items.retrieve(raw["data"][0]["id"], conversation_id=conversation.id)
    assert item.content[0].text == "first turn"
    await client.conversations.items.delete(raw["data"][0]["id"], conversation_id=conversation.id)
    remaining = await client.conversations.items.list(conversation.id, order="asc")
    assert "first turn" not in [i.content[0].text for i in remaining.data]

    updated = await client.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    assert (await client.conversations.retrieve(conversation.id)).metadata == {"topic": "changed"}
    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conversation.id)


async def test_conversation_errors(offline_stack: Stack) -> None:
    client = offline_stack.openai()
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve("conv_" + "0" * 32)
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve("not-a-conversation")
    conversation = await client.conversations.create()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.conversations.items.create(
            conversation.id, items=[{"type": "message", "role": "user", "content": "hi"}]
        )
    assert refused.value.body["param"] == "items"
    with pytest.raises(openai.BadRequestError):
        await client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}] * 21)
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve("msg_nope", conversation_id=conversation.id)


async def test_conversations_are_tenant_isolated(offline_stack: Stack) -> None:
    import uuid

    tenant_ids = []
    secrets = []
    for _ in range(2):
        tenant_id = f"t-{uuid.uuid4().hex[:10]}"
        await offline_stack.tenants.CreateTenant(pb.CreateTenantRequest(tenant=pb.Tenant(id=tenant_id)), metadata=AUTH)
        key = pb.ApiKey(tenant_id=tenant_id, scope=pb.API_KEY_SCOPE_CLIENT, display_name="test")
        created = await offline_stack.api_keys.CreateApiKey(pb.CreateApiKeyRequest(api_key=key), metadata=AUTH)
        tenant_ids.append(tenant_id)
        secrets.append(created.secret)
    alpha, beta = offline_stack.openai(secrets[0]), offline_stack.openai(secrets[1])
    conversation = await alpha.conversations.create()
    response = await alpha.responses.create(model=OFFLINE, input="alpha only", conversation=conversation.id)
    with pytest.raises(openai.NotFoundError):
        await beta.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        await beta.conversations.items.list(conversation.id)
    with pytest.raises(openai.NotFoundError):
        await beta.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        await beta.responses.create(model=OFFLINE, input="steal", previous_response_id=response.id)
    with pytest.raises(openai.NotFoundError):
        await beta.responses.create(model=OFFLINE, input="steal", conversation=conversation.id)
    # store: false works for a tenant's client key (EraseTurn needs no operator), on its own turns only.
    unstored = await alpha.responses.create(model=OFFLINE, input="keep nothing", store=False)
    assert unstored.output_text == "You said: keep nothing"
    with pytest.raises(openai.NotFoundError):
        await alpha.responses.retrieve(unstored.id)
    session_id, turn_id = str(uuid.UUID(response.id[5:37])), str(uuid.UUID(response.id[37:]))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await offline_stack.sessions.EraseTurn(
            pb.EraseTurnRequest(session_id=session_id, message_id=turn_id),
            metadata=(("authorization", f"Bearer {secrets[1]}"),),
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await alpha.responses.retrieve(response.id)).output_text == "You said: alpha only"
