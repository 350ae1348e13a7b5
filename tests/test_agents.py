"""AgentService over gRPC: validation, uniqueness, update masks, soft delete."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from agentapi import v1 as pb
from tests.helpers import create_agent, error_reason, field_violations
from tests.stack import AUTH, Stack


async def test_create_reports_every_bad_field(offline_stack: Stack) -> None:
    agent = pb.Agent(key="Bad Key!", default_model="", temperature=3.5, fallback_models=["x", "x"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.agents.CreateAgent(pb.CreateAgentRequest(agent=agent), metadata=AUTH)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "FIELD_VIOLATION"
    assert set(field_violations(caught.value)) == {
        "agent.key",
        "agent.default_model",
        "agent.temperature",
        "agent.fallback_models[1]",
    }


async def test_duplicate_key_already_exists_and_get_by_key(offline_stack: Stack, key: str) -> None:
    created = await create_agent(offline_stack, key, model="agentapi-offline", display_name="Helper")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create_agent(offline_stack, key)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(caught.value) == "AGENT_ALREADY_EXISTS"
    by_key = (await offline_stack.agents.GetAgent(pb.GetAgentRequest(agent_id=key), metadata=AUTH)).agent
    by_id = (await offline_stack.agents.GetAgent(pb.GetAgentRequest(agent_id=created.id), metadata=AUTH)).agent
    assert by_key == by_id and by_key.display_name == "Helper"
    assert list(by_key.unsupported_models) == []


async def test_unsupported_models_flags_models_missing_from_catalog(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline", fallback_models=["gone-model"])
    assert list(agent.unsupported_models) == ["gone-model"]


async def test_update_honours_mask_and_bumps_revision(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline", system_prompt="old")
    change = pb.Agent(id=agent.id, system_prompt="new", display_name="ignored")
    updated = (
        await offline_stack.agents.UpdateAgent(
            pb.UpdateAgentRequest(agent=change, update_mask=field_mask_pb2.FieldMask(paths=["system_prompt"])),
            metadata=AUTH,
        )
    ).agent
    assert (updated.system_prompt, updated.display_name, updated.revision) == ("new", "", 2)
    assert updated.etag != agent.etag
    with pytest.raises(grpc.aio.AioRpcError) as bad_mask:
        await offline_stack.agents.UpdateAgent(
            pb.UpdateAgentRequest(agent=change, update_mask=field_mask_pb2.FieldMask(paths=["revision"])), metadata=AUTH
        )
    assert bad_mask.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    stale = pb.Agent(id=agent.id, system_prompt="newer", etag=agent.etag)
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await offline_stack.agents.UpdateAgent(
            pb.UpdateAgentRequest(agent=stale, update_mask=field_mask_pb2.FieldMask(paths=["system_prompt"])),
            metadata=AUTH,
        )
    assert conflict.value.code() == grpc.StatusCode.ABORTED


async def test_deleted_agent_takes_no_new_sessions(offline_stack: Stack, key: str) -> None:
    agent = await create_agent(offline_stack, key, model="agentapi-offline")
    deleted = (await offline_stack.agents.DeleteAgent(pb.DeleteAgentRequest(agent_id=agent.id), metadata=AUTH)).agent
    assert deleted.HasField("delete_time")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.sessions.CreateSession(
            pb.CreateSessionRequest(session=pb.Session(agent_id=agent.id)), metadata=AUTH
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await offline_stack.agents.ListAgents(pb.ListAgentsRequest(page_size=100), metadata=AUTH)
    assert agent.id not in [a.id for a in listed.agents]


async def test_list_agents_pages_in_creation_order(offline_stack: Stack, key: str) -> None:
    created = [await create_agent(offline_stack, f"{key}-{i}", model="agentapi-offline") for i in range(3)]
    seen: list[str] = []
    token = ""
    while True:
        page = await offline_stack.agents.ListAgents(pb.ListAgentsRequest(page_size=2, page_token=token), metadata=AUTH)
        seen += [a.id for a in page.agents]
        token = page.next_page_token
        if not token:
            break
    positions = [seen.index(a.id) for a in created]
    assert positions == sorted(positions) and len(seen) == len(set(seen))


async def test_tool_parameters_must_be_a_valid_json_schema(offline_stack: Stack, key: str) -> None:
    bad = pb.Tool(type="function", function=pb.FunctionDefinition(name="lookup"))
    bad.function.parameters.update({"type": "object", "properties": {"city": {"type": "strng"}}})
    not_object = pb.Tool(type="function", function=pb.FunctionDefinition(name="other"))
    not_object.function.parameters.update({"type": "array"})
    agent = pb.Agent(key=key, default_model="agentapi-offline", tools=[bad, not_object])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await offline_stack.agents.CreateAgent(pb.CreateAgentRequest(agent=agent), metadata=AUTH)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == [
        "agent.tools[0].function.parameters.properties.city.type",
        "agent.tools[1].function.parameters.type",
    ]
