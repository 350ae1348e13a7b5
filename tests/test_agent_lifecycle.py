"""Agent revisions pinned by sessions, soft delete, undelete and purge (AIP-164)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agentapi import v1 as pb
from server.domain.agents import AgentService
from server.domain.pagination import PageTokens
from server.store.db import Database
from tests.helpers import create_agent, create_session, error_reason, sent_upstream, stream_turn, user
from tests.stack import AUTH, Stack


async def test_sessions_pin_the_agent_revision_they_started_with(stack: Stack, key: str, upstream: object) -> None:
    agent = await create_agent(stack, key, system_prompt="Prompt one.")
    pinned = await create_session(stack, agent.id)
    await stack.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=pb.Agent(id=agent.id, system_prompt="Prompt two."),
            update_mask=field_mask_pb2.FieldMask(paths=["system_prompt"]),
        ),
        metadata=AUTH,
    )
    fresh = await create_session(stack, agent.id)
    await stream_turn(stack, pinned.id, user(f"pinned {key}"))
    await stream_turn(stack, fresh.id, user(f"fresh {key}"))
    assert sent_upstream(upstream, f"pinned {key}")["messages"][0]["content"] == "Prompt one."
    assert sent_upstream(upstream, f"fresh {key}")["messages"][0]["content"] == "Prompt two."
    got = await stack.sessions.GetSession(pb.GetSessionRequest(session_id=pinned.id), metadata=AUTH)
    assert got.session.effective_settings.system_prompt == "Prompt one."
    revisions = await stack.agents.ListAgentRevisions(pb.ListAgentRevisionsRequest(agent_id=key), metadata=AUTH)
    assert [(r.revision, r.agent.system_prompt) for r in revisions.revisions] == [
        (2, "Prompt two."),
        (1, "Prompt one."),
    ]


async def test_soft_delete_undelete_and_visibility(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    session = await create_session(offline_stack, agent.id)
    deleted = (await offline_stack.agents.DeleteAgent(pb.DeleteAgentRequest(agent_id=key), metadata=AUTH)).agent
    assert deleted.expire_time.ToDatetime() > deleted.delete_time.ToDatetime()
    hidden = await offline_stack.agents.ListAgents(pb.ListAgentsRequest(page_size=100), metadata=AUTH)
    shown = await offline_stack.agents.ListAgents(pb.ListAgentsRequest(page_size=100, show_deleted=True), metadata=AUTH)
    assert agent.id not in [a.id for a in hidden.agents] and agent.id in [a.id for a in shown.agents]
    # Existing sessions still read.
    assert (await offline_stack.sessions.GetSession(pb.GetSessionRequest(session_id=session.id), metadata=AUTH)).session
    restored = (await offline_stack.agents.UndeleteAgent(pb.UndeleteAgentRequest(agent_id=key), metadata=AUTH)).agent
    assert not restored.HasField("delete_time") and not restored.HasField("expire_time")
    await create_session(offline_stack, agent.id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.agents.UndeleteAgent(pb.UndeleteAgentRequest(agent_id=key), metadata=AUTH)
    assert (caught.value.code(), error_reason(caught.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "AGENT_NOT_DELETED",
    )


async def test_purge_removes_only_expired_unused_agents(offline_stack: Stack, key: str) -> None:
    unused = await create_agent(offline_stack, f"{key}-unused", model="agentapi-offline")
    used = await create_agent(offline_stack, f"{key}-used", model="agentapi-offline")
    await create_session(offline_stack, used.id)
    for agent in (unused, used):
        await offline_stack.agents.DeleteAgent(pb.DeleteAgentRequest(agent_id=agent.id), metadata=AUTH)
    agentapi = str(Path(sys.executable).parent / "agentapi")
    database = ["--database-url", offline_stack.config.database_url]
    before = subprocess.run([agentapi, "purge", *database], capture_output=True, text=True, check=True)
    assert before.stdout.splitlines()[0] == "purged 0 expired agents and 0 expired conversations"
    db = Database(offline_stack.config.database_url)
    try:
        # The periodic purge and `agentapi purge` share this method; time moves past the 30-day expiry.
        purged = await AgentService(db, PageTokens(b"")).purge(
            datetime.now(UTC).replace(tzinfo=None) + timedelta(days=31)
        )
    finally:
        await db.dispose()
    assert purged >= 1
    for agent, exists in ((unused, False), (used, True)):
        lookup = offline_stack.agents.GetAgent(pb.GetAgentRequest(agent_id=agent.id), metadata=AUTH)
        if exists:
            assert (await lookup).agent.id == agent.id
        else:
            with pytest.raises(grpc.aio.AioRpcError):
                await lookup
