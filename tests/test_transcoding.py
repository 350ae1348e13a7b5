"""The generic gRPC -> HTTP/JSON transcoder (gateway/transcode.py) and its
OpenAPI document (gateway/openapi.py): every annotated RPC is served, and
every RPC is exercised over HTTP against the offline stack."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf import json_format
from starlette.routing import Match

from agentapi import v1 as pb
from gateway import transcode
from gateway.app import create_app
from gateway.errors import ApiError
from tests.stack import MASTER_KEY, Stack

OFFLINE = "agentapi-offline"


async def sse_events(response: httpx.Response) -> list[tuple[str, Any]]:
    """(event name, decoded data) per SSE event; the name is ``message`` unless given."""
    events: list[tuple[str, Any]] = []
    name, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
    return events


async def create_agent(http: httpx.AsyncClient, key: str, **fields: Any) -> dict[str, Any]:
    response = await http.post("/agentapi/v1/agents", json={"key": key, "defaultModel": OFFLINE, **fields})
    assert response.status_code == 200, response.text
    return response.json()["agent"]


def _sample_path(binding: transcode.Binding) -> str:
    return transcode.VARIABLE.sub("x1", binding.template)


async def test_every_rpc_has_an_http_route_and_an_openapi_operation(offline_stack: Stack) -> None:
    bindings, problems = transcode.scan()
    assert problems == {}, f"RPCs that cannot be served over HTTP: {problems}"
    app = create_app("127.0.0.1:1")
    served = set()
    for binding in bindings:
        scope = {"type": "http", "method": binding.verb, "path": _sample_path(binding), "root_path": ""}
        first = next((r for r in app.routes if r.matches(scope)[0] is Match.FULL), None)
        assert getattr(first, "binding", None) == binding, f"{binding.verb} {binding.template} is shadowed by {first}"
        served.add(binding.rpc)
    async with httpx.AsyncClient(base_url=offline_stack.bridge_url) as anonymous:
        document = (await anonymous.get("/openapi.json")).json()
    operations = {op["operationId"]: op for path in document["paths"].values() for op in path.values()}
    assert document["openapi"] == "3.1.0" and document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    services = transcode.services()
    assert {s.full_name for s in services} >= {f"agentapi.v1.{n}Service" for n in ("Agent", "Session", "Model")}
    for service in services:
        for method in service.methods:
            assert method.GetOptions().HasExtension(annotations_pb2.http), f"{method.full_name}: no rule"
            assert f"/{service.full_name}/{method.name}" in served, f"{method.full_name}: no route"
            operation = operations[f"{service.name}_{method.name}"]
            media = "text/event-stream" if method.server_streaming else "application/json"
            assert media in operation["responses"]["200"]["content"]


async def test_openapi_schemas_follow_the_json_mapping(offline_stack: Stack) -> None:
    async with offline_stack.http() as http:
        document = (await http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    agent = schemas["agentapi.v1.Agent"]["properties"]
    assert agent["createTime"] == {"type": "string", "format": "date-time", "readOnly": True}
    assert agent["metadata"] == {"type": "object"}
    assert agent["fallbackModels"] == {"type": "array", "items": {"type": "string"}}
    assert "key" in schemas["agentapi.v1.Agent"]["required"]
    assert "ROLE_USER" in schemas["agentapi.v1.Message"]["properties"]["role"]["enum"]
    patch = document["paths"]["/agentapi/v1/agents/{agent_id}"]["patch"]
    assert {p["name"]: p["in"] for p in patch["parameters"]} == {"agent_id": "path", "updateMask": "query"}
    assert patch["parameters"][1]["schema"]["type"] == "string"
    send = document["paths"]["/agentapi/v1/sessions/{session_id}:sendMessage"]["post"]
    assert set(send["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"messages", "options"}
    listing = document["paths"]["/agentapi/v1/agents"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"pageSize", "pageToken", "showDeleted", "filter"}


async def test_agent_crud_over_http(offline_stack: Stack, key: str) -> None:
    async with offline_stack.http() as http:
        agent = await create_agent(http, key, system_prompt="old", metadata={"team": "a"})
        assert agent["systemPrompt"] == "old" and agent["metadata"] == {"team": "a"}
        assert agent["revision"] == "1" and agent["createTime"].endswith("Z")
        by_id = (await http.get(f"/agentapi/v1/agents/{agent['id']}")).json()["agent"]
        by_key = (await http.get(f"/agentapi/v1/agents/{key}")).json()["agent"]
        assert by_id == by_key == agent

        change = {"systemPrompt": "new", "displayName": "ignored"}
        updated = (await http.patch(f"/agentapi/v1/agents/{agent['id']}?updateMask=systemPrompt", json=change)).json()
        assert updated["agent"]["systemPrompt"] == "new" and updated["agent"]["displayName"] == ""
        response = await http.patch(
            f"/agentapi/v1/agents/{agent['id']}", params={"update_mask": "display_name,system_prompt"}, json=change
        )
        assert response.status_code == 200, response.text
        assert response.json()["agent"]["displayName"] == "ignored" and response.json()["agent"]["revision"] == "3"

        deleted = (await http.delete(f"/agentapi/v1/agents/{agent['id']}")).json()["agent"]
        assert "deleteTime" in deleted
        live = (await http.get("/agentapi/v1/agents", params={"page_size": 100})).json()
        assert agent["id"] not in [a["id"] for a in live.get("agents", [])]


async def test_list_agents_pages_with_either_parameter_spelling(offline_stack: Stack, key: str) -> None:
    async with offline_stack.http() as http:
        for suffix in ("a", "b"):
            await create_agent(http, f"{key}-{suffix}")
        first = (await http.get("/agentapi/v1/agents?pageSize=1")).json()
        assert len(first["agents"]) == 1 and first["nextPageToken"]
        second = (
            await http.get("/agentapi/v1/agents", params={"page_size": 1, "page_token": first["nextPageToken"]})
        ).json()
        assert len(second["agents"]) == 1 and second["agents"][0]["id"] != first["agents"][0]["id"]
        with_deleted = await http.get("/agentapi/v1/agents?show_deleted=true&pageSize=100")
        assert with_deleted.status_code == 200


async def test_conversations_over_http(offline_stack: Stack) -> None:
    async with offline_stack.http() as http:
        created = (await http.post("/agentapi/v1/conversations", json={})).json()["conversation"]
        fetched = (await http.get(f"/agentapi/v1/conversations/{created['id']}")).json()["conversation"]
        assert fetched == created
        page = (await http.get("/agentapi/v1/conversations", params={"pageSize": 1})).json()
        assert len(page["conversations"]) == 1


async def test_sessions_and_turns_over_http(offline_stack: Stack, key: str) -> None:
    async with offline_stack.http() as http:
        agent = await create_agent(http, key)
        session = (await http.post("/agentapi/v1/sessions", json={"agentId": agent["id"]})).json()["session"]
        assert (await http.get(f"/agentapi/v1/sessions/{session['id']}")).json()["session"]["id"] == session["id"]

        turn = {"messages": [{"role": "ROLE_USER", "content": "one two"}]}
        reply = (await http.post(f"/agentapi/v1/sessions/{session['id']}:sendMessage", json=turn)).json()
        assert reply["message"]["content"] == "You said: one two"
        assert reply["message"]["status"] == "MESSAGE_STATUS_COMPLETED"
        assert [m["role"] for m in reply["inputMessages"]] == ["ROLE_USER"]

        turn = {"messages": [{"role": "ROLE_USER", "content": "three four five"}], "options": {"temperature": 0.5}}
        async with http.stream(
            "POST", f"/agentapi/v1/sessions/{session['id']}:sendStreamingMessage", json=turn
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = await sse_events(response)
        assert {name for name, _ in events} == {"message"}
        data = [event for _, event in events]
        assert data[1]["inputMessage"]["content"] == "three four five"
        deltas = [d["delta"] for d in data if "delta" in d]
        assert len(deltas) >= 3 and [int(d["sequenceNumber"]) for d in deltas] == list(range(1, len(deltas) + 1))
        final = data[-1]["assistantMessage"]
        assert final["content"] == "You said: three four five" == "".join(d["content"] for d in deltas)

        first = (await http.get(f"/agentapi/v1/sessions/{session['id']}/messages", params={"pageSize": 3})).json()
        rest = (
            await http.get(f"/agentapi/v1/sessions/{session['id']}/messages?page_token={first['nextPageToken']}")
        ).json()
        assert [m["sequence"] for m in first["messages"] + rest["messages"]] == ["1", "2", "3", "4"]


async def test_a_turn_failing_after_the_stream_began_ends_with_an_error_event(offline_stack: Stack) -> None:
    async with offline_stack.http() as http:
        session = (await http.post("/agentapi/v1/sessions", json={"overrides": {"model": "gpt-4o"}})).json()["session"]
        turn = {"messages": [{"role": "ROLE_USER", "content": "hi"}]}
        async with http.stream(
            "POST", f"/agentapi/v1/sessions/{session['id']}:sendStreamingMessage", json=turn
        ) as response:
            assert response.status_code == 200
            events = await sse_events(response)
    assert "turnStarted" in events[0][1] and events[1][1]["inputMessage"]["content"] == "hi"
    assert events[-2][1]["assistantMessage"]["status"] == "MESSAGE_STATUS_FAILED"
    assert events[-1] == ("error", events[-1][1]) and events[-1][1]["error"]["code"] == "model_not_found"


async def test_catalog_models_and_openai_models_coexist(offline_stack: Stack) -> None:
    async with offline_stack.http() as http:
        catalog = (await http.get("/agentapi/v1/catalog/models")).json()
        assert [m["id"] for m in catalog["models"]] == [OFFLINE]
        openai_models = (await http.get("/v1/models")).json()
        assert openai_models["object"] == "list" and OFFLINE in [m["id"] for m in openai_models["data"]]


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code", "param"),
    [
        ("GET", "/agentapi/v1/agents/no-such-agent", None, 404, "agent_not_found", None),
        ("GET", "/agentapi/v1/sessions/not-a-uuid", None, 400, "invalid_session_id", None),
        ("POST", "/agentapi/v1/agents", b"{not json", 400, "invalid_request", None),
        (
            "POST",
            "/agentapi/v1/agents",
            b'{"key": "k", "temperature": "hot"}',
            400,
            "invalid_request",
            "agent.temperature",
        ),
        ("POST", "/agentapi/v1/agents", b'{"noSuchField": 1}', 400, "invalid_request", "agent"),
        ("GET", "/agentapi/v1/agents?pageSize=abc", None, 400, "invalid_request", "pageSize"),
        ("GET", "/agentapi/v1/agents?show_deleted=maybe", None, 400, "invalid_request", "show_deleted"),
        ("GET", "/agentapi/v1/agents?pageSize=1&pageSize=2", None, 400, "invalid_request", "pageSize"),
        ("GET", "/agentapi/v1/agents?noSuchParam=1", None, 400, "invalid_request", "noSuchParam"),
        (
            "POST",
            "/agentapi/v1/sessions/00000000-0000-4000-8000-000000000000:sendMessage?page_size=1",
            b"{}",
            400,
            None,
            None,
        ),
        (
            "POST",
            "/agentapi/v1/sessions/00000000-0000-4000-8000-000000000000:sendStreamingMessage",
            b"[]",
            400,
            None,
            None,
        ),
    ],
)
async def test_errors_use_the_openai_shape(
    offline_stack: Stack,
    method: str,
    path: str,
    content: bytes | None,
    status: int,
    code: str | None,
    param: str | None,
) -> None:
    async with offline_stack.http() as http:
        response = await http.request(method, path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "reason"}
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


async def test_missing_key_is_401_and_an_unknown_session_stream_is_404(offline_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=offline_stack.bridge_url) as anonymous:
        response = await anonymous.get("/agentapi/v1/agents")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    async with offline_stack.http() as http:
        path = "/agentapi/v1/sessions/00000000-0000-4000-8000-000000000000:sendStreamingMessage"
        turn = {"messages": [{"role": "ROLE_USER", "content": "hi"}]}
        response = await http.post(path, json=turn)
    assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"


class FakeChannel:
    """Records calls instead of making them; replies with empty messages."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, str]]] = []

    def unary_unary(self, path: str, request_serializer: Any, response_deserializer: Any) -> Any:
        async def invoke(request: Any, metadata: Any) -> Any:
            self.calls.append((path, request, dict(metadata)))
            return response_deserializer(b"")

        return invoke


async def test_headers_path_and_query_reach_the_rpc() -> None:
    app = create_app("127.0.0.1:1")
    channel = app.state.bridge.channel = FakeChannel()
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Idempotency-Key": "k1", "X-Other": "no", "X-Request-Id": "r-1"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge", headers=headers) as http:
        patch = await http.patch(
            "/agentapi/v1/agents/a1?update_mask=system_prompt,displayName", json={"system_prompt": "p"}
        )
        listing = await http.get("/agentapi/v1/agents?page_size=5&showDeleted=true")
    assert patch.status_code == listing.status_code == 200
    (update_path, update, metadata), (_, list_request, _) = channel.calls
    assert update_path == "/agentapi.v1.AgentService/UpdateAgent"
    assert json_format.MessageToDict(update) == {
        "agent": {"id": "a1", "systemPrompt": "p"},
        "updateMask": "systemPrompt,displayName",
    }
    assert metadata == {"authorization": f"Bearer {MASTER_KEY}", "idempotency-key": "k1", "x-request-id": "r-1"}
    assert patch.headers["x-request-id"] == "r-1"
    assert (list_request.page_size, list_request.show_deleted) == (5, True)


def test_assign_sets_repeated_nested_and_typed_fields() -> None:
    agent = pb.Agent()
    transcode.assign(agent, "fallbackModels", ["a", "b"], "fallbackModels")
    transcode.assign(agent, "temperature", ["1.5"], "temperature")
    transcode.assign(agent, "create_time", ["2024-01-02T03:04:05Z"], "create_time")
    assert (list(agent.fallback_models), agent.temperature, agent.create_time.seconds) == (["a", "b"], 1.5, 1704164645)
    session = pb.Session()
    transcode.assign(session, "overrides.max_output_tokens", ["7"], "overrides.max_output_tokens")
    assert session.overrides.max_output_tokens == 7
    message = pb.InputMessage()
    transcode.assign(message, "role", ["ROLE_TOOL"], "role")
    assert message.role == pb.ROLE_TOOL
    with pytest.raises(ApiError) as caught:
        transcode.assign(message, "role", ["ROLE_NOPE"], "role")
    assert caught.value.http_status == 400 and caught.value.body["error"]["param"] == "role"
    with pytest.raises(KeyError):
        transcode.assign(agent, "tools", ["x"], "tools")  # a repeated message is not a query parameter


async def test_new_session_and_conversation_rpcs_over_http(offline_stack: Stack) -> None:
    async with offline_stack.http() as http:
        session = (await http.post("/agentapi/v1/sessions", json={"overrides": {"model": OFFLINE}})).json()["session"]
        conversation_id = session["conversationId"]
        patched = await http.patch(
            f"/agentapi/v1/conversations/{conversation_id}", params={"updateMask": "title"}, json={"title": "over http"}
        )
        assert patched.status_code == 200 and patched.json()["conversation"]["title"] == "over http"
        turn = {"messages": [{"role": "ROLE_USER", "content": "hi"}]}
        assert (await http.post(f"/agentapi/v1/sessions/{session['id']}:sendMessage", json=turn)).status_code == 200
        listed = (await http.get(f"/agentapi/v1/conversations/{conversation_id}/sessions")).json()
        assert [s["id"] for s in listed["sessions"]] == [session["id"]]
        exported = await http.get(
            f"/agentapi/v1/sessions/{session['id']}:export", params={"format": "EXPORT_FORMAT_JSONL"}
        )
        assert exported.json()["contentType"] == "application/jsonl"
        assert json.loads(exported.json()["content"].splitlines()[0])["messages"][-1]["content"] == "You said: hi"
        ended = (await http.post(f"/agentapi/v1/sessions/{session['id']}:end", json={})).json()["session"]
        assert ended["status"] == "SESSION_STATUS_ENDED"
        refused = await http.post(f"/agentapi/v1/sessions/{session['id']}:sendMessage", json=turn)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "session_ended"
        filtered = await http.get(f"/agentapi/v1/sessions/{session['id']}/messages", params={"filter": 'role = "user"'})
        assert [m["content"] for m in filtered.json()["messages"]] == ["hi"]


async def test_the_old_v1_paths_are_deprecated_aliases_except_where_openai_owns_them(
    offline_stack: Stack, key: str
) -> None:
    async with offline_stack.http() as http:
        agent = await create_agent(http, key)
        old = await http.get(f"/v1/agents/{agent['id']}")
        assert old.status_code == 200 and old.json()["agent"] == agent
        assert old.headers["Deprecation"] == "true"
        assert old.headers["Link"] == '</agentapi/v1/agents/{agent_id}>; rel="successor-version"'
        new = await http.get(f"/agentapi/v1/agents/{agent['id']}")
        assert "Deprecation" not in new.headers
        # /v1/conversations is OpenAI's: agentapi's conversation RPCs are only under /agentapi/v1.
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert "/agentapi/v1/conversations" in paths
        assert not [p for p in paths if p.startswith("/v1/") and not p.startswith(transcode.OPENAI_CLAIMED)]
