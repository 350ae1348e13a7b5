"""agentapi.AsyncClient against the real in-process server (SQLite, the offline
model): every resource, paging across pages, streamed turns, client tools and
approvals, typed errors, and retries that never double a turn."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

import agentapi
from agentapi import v1 as pb
from tests.stack import MASTER_KEY, Stack
from tests.support.mcp_servers import HttpMcpServer

OFFLINE = "agentapi-offline"


def target(stack: Stack) -> str:
    assert stack.grpc_server is not None
    return f"127.0.0.1:{stack.grpc_server.port}"


def client(stack: Stack, **kwargs: object) -> agentapi.AsyncClient:
    kwargs.setdefault("api_key", MASTER_KEY)
    return agentapi.AsyncClient(target(stack), **kwargs)  # type: ignore[arg-type]


async def test_agents_create_get_update_list_revisions_delete(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        agent = await api.agents.create(key=key, default_model=OFFLINE, system_prompt="Be brief.")
        assert agent.key == key and agent.revision == 1
        assert (await api.agents.get(key)).id == agent.id
        updated = await api.agents.update(agent.id, system_prompt="Be briefer.")
        assert updated.system_prompt == "Be briefer." and updated.revision == 2
        # a proto message is accepted too, with keyword fields over it
        from_proto = await api.agents.update(agent.id, pb.Agent(display_name="Helper"), update_mask=["display_name"])
        assert from_proto.display_name == "Helper" and from_proto.system_prompt == "Be briefer."
        # a proto alone: its set fields are the mask; a keyword over it wins, zero values too
        zeroed = await api.agents.update(agent.id, pb.Agent(display_name="x", max_steps=3), display_name="")
        assert zeroed.display_name == "" and zeroed.max_steps == 3
        revisions = [r async for r in api.agents.revisions(key, page_size=1)]
        assert sorted(r.revision for r in revisions) == [1, 2, 3, 4]
        assert key in [a.key async for a in api.agents.list(filter=f'key = "{key}"')]
        deleted = await api.agents.delete(key)
        assert deleted.HasField("delete_time")
        assert (await api.agents.get(key)).HasField("delete_time")  # AIP-164: still readable
        with pytest.raises(agentapi.NotFoundError) as caught:
            await api.agents.get(f"{key}-missing")
        assert caught.value.reason == "AGENT_NOT_FOUND" and caught.value.code == grpc.StatusCode.NOT_FOUND
        assert (await api.agents.undelete(key)).key == key


async def test_agents_create_accepts_a_proto_and_rejects_another_type(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        agent = await api.agents.create(pb.Agent(key=key, default_model=OFFLINE), system_prompt="From kwargs.")
        assert agent.system_prompt == "From kwargs."
        with pytest.raises(TypeError):
            await api.agents.create(pb.Session())  # type: ignore[arg-type]


async def test_list_follows_page_tokens_and_pages_are_whole(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        title = f"paging-{uuid.uuid4().hex[:8]}"
        made = [await api.conversations.create(title=title) for _ in range(5)]
        pages = [page async for page in api.conversations.pages(page_size=2)]
        assert len(pages) >= 3 and all(len(p.conversations) <= 2 for p in pages[:-1])
        assert not pages[-1].next_page_token and all(p.next_page_token for p in pages[:-1])
        seen = [c.id async for c in api.conversations.list(page_size=2)]
        assert len(seen) == len(set(seen)) and {c.id for c in made} <= set(seen)
        # the messages of one session across pages
        session = await api.sessions.create(agent_id="", overrides=pb.SessionSettings(model=OFFLINE))
        for n in range(3):
            await api.sessions.send(session.id, f"message {n}")
        messages = [m async for m in api.messages.list(session.id, page_size=2)]
        assert [m.role for m in messages] == [pb.ROLE_USER, pb.ROLE_ASSISTANT] * 3
        assert len([p async for p in api.messages.pages(session.id, page_size=2)]) == 3


async def test_conversations_and_sessions(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        await api.agents.create(key=key, default_model=OFFLINE)
        conversation = await api.conversations.create(title="first")
        assert (await api.conversations.update(conversation.id, title="second")).title == "second"
        assert (await api.conversations.get(conversation.id)).title == "second"
        session = await api.sessions.create(agent_id=key, conversation_id=conversation.id)
        assert (await api.sessions.get(session.id)).conversation_id == conversation.id
        assert [s.id async for s in api.sessions.list(conversation.id)] == [session.id]
        assert [p async for p in api.sessions.pages(conversation.id)][0].sessions[0].id == session.id
        reply = await api.sessions.send(session.id, "hello")
        assert reply.message.status == pb.MESSAGE_STATUS_COMPLETED and reply.message.content
        for fmt, needle in (("md", "hello"), ("jsonl", '"role"'), ("openai", '"role"')):
            exported = await api.sessions.export(session.id, format=fmt)
            assert needle in exported.content, fmt
        with pytest.raises(ValueError):
            await api.sessions.export(session.id, format="pdf")
        with pytest.raises(agentapi.FailedPreconditionError) as caught:
            await api.sessions.delete(session.id)
        assert caught.value.reason == "SESSION_NOT_EMPTY"
        empty = await api.sessions.create(agent_id=key)
        assert (await api.sessions.delete(empty.id)).conversation_deleted
        ended = await api.sessions.end(session.id)
        assert ended.HasField("end_time")
        assert (await api.conversations.delete(conversation.id)).HasField("delete_time")


async def test_models_tenants_api_keys_usage_mcp_servers(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        assert OFFLINE in [m.id for m in await api.models.list()]
        tenant_id = f"t-{uuid.uuid4().hex[:8]}"
        tenant = await api.tenants.create(id=tenant_id, display_name="Team")
        assert (await api.tenants.get(tenant.id)).display_name == "Team"
        assert tenant.id in [t.id async for t in api.tenants.list(page_size=1)]
        updated = await api.tenants.update(tenant.id, rate_limits=pb.RateLimits(requests_per_minute=7))
        assert updated.rate_limits.requests_per_minute == 7
        created = await api.api_keys.create(tenant_id=tenant.id, scope=pb.API_KEY_SCOPE_ADMIN, display_name="ci")
        assert created.secret and created.api_key.id
        assert [k.id async for k in api.api_keys.list(tenant_id=tenant.id)] == [created.api_key.id]
        async with client(offline_stack, api_key=created.secret) as team:
            session = await team.sessions.create(overrides=pb.SessionSettings(model=OFFLINE))
            await team.sessions.send(session.id, "count me")
            usage = await team.usage.get(
                group_by=[pb.USAGE_DIMENSION_MODEL], start_time=datetime.now(UTC) - timedelta(days=1)
            )
            assert [r.model for r in usage.rows] == [OFFLINE] and usage.total.turns == 1
        assert (await api.api_keys.revoke(created.api_key.id)).HasField("revoke_time")
        async with client(offline_stack, api_key=created.secret) as revoked:
            with pytest.raises(agentapi.AuthenticationError):
                await revoked.models.list()
        assert (await api.tenants.delete(tenant.id)).id == tenant.id


async def test_mcp_servers(offline_stack: Stack) -> None:
    server_id = f"srv-{uuid.uuid4().hex[:8]}"
    async with client(offline_stack) as api:
        with HttpMcpServer() as mcp:
            created = await api.mcp_servers.create(
                id=server_id, transport=pb.MCP_TRANSPORT_STREAMABLE_HTTP, url=mcp.url
            )
            assert (await api.mcp_servers.get(server_id)).url == created.url
            assert server_id in [s.id async for s in api.mcp_servers.list(page_size=1)]
            tools = await api.mcp_servers.tools(server_id)
            assert "add" in [t.name for t in tools]
            approved = await api.mcp_servers.approve_tools(server_id, ["add"])
            assert "add" in [t.name for t in approved.mcp_server.approved_tools]
            renamed = await api.mcp_servers.update(server_id, display_name="Adder")
            assert renamed.display_name == "Adder" and renamed.url == created.url
        assert (await api.mcp_servers.delete(server_id)).id == server_id
        with pytest.raises(agentapi.NotFoundError):
            await api.mcp_servers.get(server_id)


ADD_TOOL = pb.Tool(type="function", function=pb.FunctionDefinition(name="add"))


async def test_stream_text_events_and_final_message(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        await api.agents.create(key=key, default_model=OFFLINE, builtin_tools=["calculator"])
        session = await api.sessions.create(agent_id=key)
        async with api.sessions.stream(session.id, "hello there") as turn:
            text = "".join([piece async for piece in turn.text_stream])
            final = await turn.final_message()
        assert text and final.content == text and final.status == pb.MESSAGE_STATUS_COMPLETED
        assert turn.message_id == final.id and turn.model == OFFLINE and turn.last_sequence_number > 1
        thinking = api.sessions.stream(session.id, "think first", options=pb.TurnOptions(reasoning_effort="low"))
        async with thinking:
            reasoning = "".join([piece async for piece in thinking.reasoning_stream])
        assert reasoning.startswith("Thinking about") and (await thinking.final_message()).reasoning_content
        # a server tool: tool_call_started and tool_call_completed events, then the answer
        async with api.sessions.stream(session.id, 'call calculator {"expression": "6 * 7"}') as turn:
            kinds = [event.WhichOneof("event") async for event in turn.events]
        assert kinds[0] == "turn_started" and kinds[-1] == "assistant_message"
        assert {"input_message", "delta", "tool_call_started", "tool_call_completed"} <= set(kinds)
        assert "42" in (await turn.final_message()).content


async def test_client_tool_round_trip_and_approval(offline_stack: Stack, key: str) -> None:
    async with client(offline_stack) as api:
        await api.agents.create(key=key, default_model=OFFLINE, tools=[ADD_TOOL])
        session = await api.sessions.create(agent_id=key)
        async with api.sessions.stream(session.id, 'call add {"a": 2, "b": 2}') as turn:
            waiting = await turn.final_message()
        assert waiting.status == pb.MESSAGE_STATUS_REQUIRES_ACTION and turn.tool_calls
        with pytest.raises(agentapi.FailedPreconditionError):  # the session waits for the output
            await api.sessions.send(session.id, "not yet")
        reply = await api.sessions.submit_tool_outputs(session.id, {turn.tool_calls[0].id: "4"})
        assert reply.content == "Tool add returned: 4"

        with HttpMcpServer() as mcp:
            server_id = f"srv-{uuid.uuid4().hex[:8]}"
            await api.mcp_servers.create(id=server_id, transport=pb.MCP_TRANSPORT_STREAMABLE_HTTP, url=mcp.url)
            await api.mcp_servers.approve_tools(server_id, ["add"])
            entry = pb.AgentMcpServer(server_id=server_id, require_approval=pb.APPROVAL_MODE_ALWAYS)
            await api.agents.update(key, mcp_servers=[entry], tools=[], update_mask=["mcp_servers", "tools"])
            session = await api.sessions.create(agent_id=key)
            reply = (await api.sessions.send(session.id, f'call {server_id}__add {{"a": 4, "b": 5}}')).message
            [call] = reply.tool_calls
            assert reply.status == pb.MESSAGE_STATUS_REQUIRES_ACTION and call.awaiting_approval
            turn = api.sessions.submit_tool_outputs_stream(
                session.id, approvals=[pb.ToolApproval(tool_call_id=call.id, approve=True)]
            )
            async with turn:
                kinds = [e.WhichOneof("event") async for e in turn.events]
            assert "tool_call_completed" in kinds
            assert (await turn.final_message()).content == f"Tool {server_id}__add returned: 9"


async def test_leaving_a_stream_early_cancels_the_turn(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model=OFFLINE))
        async with api.sessions.stream(session.id, "a long answer please") as turn:
            async for event in turn.events:
                if event.WhichOneof("event") == "delta":
                    turn.cancel()
                    break
        for _ in range(100):  # the server stores the reply CANCELLED once it sees the cancel
            messages = [m async for m in api.messages.list(session.id)]
            if messages[-1].status != pb.MESSAGE_STATUS_IN_PROGRESS:
                break
            await asyncio.sleep(0.05)
        assert messages[-1].status in (pb.MESSAGE_STATUS_CANCELLED, pb.MESSAGE_STATUS_COMPLETED)
        # the session is free again
        assert (await api.sessions.send(session.id, "again")).message.status == pb.MESSAGE_STATUS_COMPLETED


async def test_regenerate_fork_delete_and_search_messages(offline_stack: Stack) -> None:
    async with client(offline_stack) as api:
        session = await api.sessions.create(overrides=pb.SessionSettings(model=OFFLINE))
        word = f"zebra{uuid.uuid4().hex[:8]}"
        first = await api.sessions.send(session.id, f"tell me about {word}")
        async with api.sessions.regenerate_stream(session.id, first.message.id) as turn:
            again = await turn.final_message()
        assert again.id != first.message.id and again.status == pb.MESSAGE_STATUS_COMPLETED
        forked = await api.sessions.fork(session.id, first.input_messages[0].id, edited_content=f"about {word}s")
        assert forked.session.id != session.id
        hits = [hit async for hit in api.messages.search(word, session_id=session.id)]
        assert hits and all(hit.message.session_id == session.id for hit in hits)
        deleted = await api.messages.delete(session.id, first.input_messages[0].id)
        assert first.input_messages[0].id in [m.id for m in deleted.messages]
        visible = [m.id async for m in api.messages.list(session.id)]
        everything = [m.id async for m in api.messages.list(session.id, show_deleted=True)]
        assert first.input_messages[0].id not in visible and first.input_messages[0].id in everything
