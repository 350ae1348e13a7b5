"""MCP on /v1/responses: an agent's registered MCP server (its id is the
``server_label``) shows as ``mcp_call`` items, and a call that needs approval
as an ``mcp_approval_request``, answered by an ``mcp_approval_response`` with
``previous_response_id`` (the approval round trip). An ``mcp`` tool naming an
arbitrary ``server_url`` is refused. Open Responses defines no MCP items, so
these bodies are checked against its schema with the MCP items left out."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentapi import v1 as pb
from tests.helpers import create_agent
from tests.stack import AUTH, Stack, start_stack
from tests.support.mcp_servers import HttpMcpServer
from tests.support.open_responses import validate_event, validate_response

SECRET_KEY = "test-secret-key-for-responses-mcp"
HEADER_SECRET = "hdr-secret-responses-mcp"
_ids = itertools.count()


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[HttpMcpServer]:
    with HttpMcpServer(required_header=("X-Api-Key", HEADER_SECRET)) as server:
        yield server


@pytest.fixture(scope="module")
async def offline(sqlite_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(sqlite_url, secret_key=SECRET_KEY, tool_timeout_s=3.0)
    yield running
    await running.stop()


async def _agent(stack: Stack, server: HttpMcpServer, mode: int) -> tuple[str, str]:
    server_id = f"tools-{int(time.time() * 1000) % 10**8}-{next(_ids)}"
    servers = pb.McpServerServiceStub(stack.channel)
    mcp = pb.McpServer(
        id=server_id, transport=pb.MCP_TRANSPORT_STREAMABLE_HTTP, url=server.url, headers={"X-Api-Key": HEADER_SECRET}
    )
    await servers.CreateMcpServer(pb.CreateMcpServerRequest(mcp_server=mcp), metadata=AUTH)
    await servers.ApproveMcpServerTools(pb.ApproveMcpServerToolsRequest(mcp_server_id=server_id), metadata=AUTH)
    key = f"agent-{uuid.uuid4().hex[:10]}"
    entry = pb.AgentMcpServer(server_id=server_id, require_approval=mode)
    await create_agent(stack, key, model="agentapi-offline", mcp_servers=[entry])
    return key, server_id


def _without_mcp(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "output": [i for i in body["output"] if not i["type"].startswith("mcp_")]}


async def _post(stack: Stack, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    async with stack.http() as http:
        response = await http.post("/v1/responses", json=body)
    assert response.status_code == status, response.text
    if status == 200:
        validate_response(_without_mcp(response.json()))
    return response.json()


async def test_mcp_call_items_plain_and_streamed(offline: Stack, mcp_server: HttpMcpServer) -> None:
    key, server_id = await _agent(offline, mcp_server, pb.APPROVAL_MODE_NEVER)
    text = f'call {server_id}__add {{"a": 2, "b": 3}}'
    tool = {"type": "mcp", "server_label": server_id, "require_approval": "never"}
    created = await _post(offline, {"model": f"agent:{key}", "input": text, "tools": [tool]})
    call, message = created["output"]
    assert call["type"] == "mcp_call" and call["server_label"] == server_id and call["name"] == "add"
    assert call["output"] == "5" and call["status"] == "completed" and json.loads(call["arguments"]) == {"a": 2, "b": 3}
    assert message["content"][0]["text"] == f"Tool {server_id}__add returned: 5"
    async with offline.http() as http:
        stored = (await http.get(f"/v1/responses/{created['id']}")).json()
        assert stored["output"] == created["output"]
        async with http.stream(
            "POST", "/v1/responses", json={"model": f"agent:{key}", "input": text, "stream": True}
        ) as r:
            events = [json.loads(line[5:]) async for line in r.aiter_lines() if line.startswith("data: {")]
    for event in events:
        if "mcp_" not in json.dumps(event.get("item", {})) and event["type"] not in ("response.completed",):
            validate_event(event)
    final = events[-1]["response"]
    async with offline.http() as http:
        stored = (await http.get(f"/v1/responses/{final['id']}")).json()
    assert stored["output"] == final["output"]
    assert [i["type"] for i in final["output"]] == ["mcp_call", "message"]


async def test_mcp_approval_round_trip(offline: Stack, mcp_server: HttpMcpServer) -> None:
    key, server_id = await _agent(offline, mcp_server, pb.APPROVAL_MODE_ALWAYS)
    calls = len(mcp_server.calls)
    asked = await _post(offline, {"model": f"agent:{key}", "input": f'call {server_id}__add {{"a": 4, "b": 5}}'})
    [request] = [i for i in asked["output"] if i["type"] == "mcp_approval_request"]
    assert request["server_label"] == server_id and request["name"] == "add" and len(mcp_server.calls) == calls
    approval = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
    approved = await _post(offline, {"model": f"agent:{key}", "previous_response_id": asked["id"], "input": [approval]})
    assert [i["type"] for i in approved["output"]] == ["mcp_call", "message"]
    assert approved["output"][0]["output"] == "9" and len(mcp_server.calls) == calls + 1
    assert approved["output"][1]["content"][0]["text"] == f"Tool {server_id}__add returned: 9"
    assert approved["id"] != asked["id"] and approved["previous_response_id"] == asked["id"]
    async with offline.http() as http:
        stored = (await http.get(f"/v1/responses/{approved['id']}")).json()
        inputs = (await http.get(f"/v1/responses/{approved['id']}/input_items")).json()["data"]
    assert stored["output"] == approved["output"]
    assert inputs == [
        {
            "type": "mcp_approval_response",
            "id": request["id"].replace("mcpr_", "mcpra_"),
            "approval_request_id": request["id"],
            "approve": True,
            "reason": None,
        }
    ]

    asked = await _post(offline, {"model": f"agent:{key}", "input": f'call {server_id}__add {{"a": 1, "b": 1}}'})
    [request] = [i for i in asked["output"] if i["type"] == "mcp_approval_request"]
    denial = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": False, "reason": "no"}
    # Streamed this time: the same typed events, ending with the stored response.
    body = {"model": f"agent:{key}", "previous_response_id": asked["id"], "input": [denial], "stream": True}
    async with offline.http() as http:
        async with http.stream("POST", "/v1/responses", json=body) as response:
            assert response.status_code == 200
            lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
        assert lines[-1] == "data: [DONE]"
        events = [json.loads(line[5:]) for line in lines[:-1]]
        denied = events[-1]["response"]
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        stored = (await http.get(f"/v1/responses/{denied['id']}")).json()
    assert denied["output"][0]["error"] == "denied by the user: no" and denied["output"][0]["status"] == "failed"
    assert stored == denied


async def test_mcp_tools_and_approvals_refused_where_unsupported(offline: Stack) -> None:
    tool = {"type": "mcp", "server_label": "anything", "server_url": "https://example.com/mcp"}
    body = await _post(offline, {"model": "agentapi-offline", "input": "x", "tools": [tool]}, 400)
    assert body["error"]["param"] == "tools[0].server_url"
    tool = {"type": "mcp", "server_label": "not-registered"}
    body = await _post(offline, {"model": "agentapi-offline", "input": "x", "tools": [tool]}, 400)
    assert body["error"]["param"] == "tools[0].server_label"
    approval = {"type": "mcp_approval_response", "approval_request_id": "mcpr_x", "approve": True}
    body = await _post(offline, {"model": "agentapi-offline", "input": [approval]}, 400)
    assert body["error"]["param"] == "previous_response_id"
