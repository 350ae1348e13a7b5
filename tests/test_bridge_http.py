"""The bridge as an HTTP service: request ids and the request log, CORS, the body
limit, /readyz, /v1/models/{model} and /openapi.json."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from grpc_health.v1 import health_pb2

from agentapi import v1 as pb
from gateway.app import create_app
from gateway.settings import BridgeSettings
from tests.helpers import create_agent
from tests.stack import MASTER_KEY, Stack, free_port, start_stack

OFFLINE = "agentapi-offline"
AUTH_HEADER = {"Authorization": f"Bearer {MASTER_KEY}"}


@contextlib.asynccontextmanager
async def bridge(stack: Stack, settings: BridgeSettings) -> AsyncIterator[str]:
    """Another bridge, with ``settings``, in front of ``stack``'s gRPC server; yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(f"127.0.0.1:{stack.grpc_server.port}", settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --------------------------------------------------------------------------- #
# x-request-id
# --------------------------------------------------------------------------- #


async def test_every_response_has_a_request_id_and_each_request_is_logged_once(
    offline_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentapi.bridge")
    async with offline_stack.http() as http:
        echoed = await http.get("/v1/models", headers={"X-Request-Id": "req-abc.123"})
        generated = await http.get("/healthz")
        unsafe = await http.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces" + "x" * 200})
        missing = await http.get("/no/such/route")
        invalid = await http.post("/v1/chat/completions", content=b"{")
    assert echoed.headers["x-request-id"] == "req-abc.123"
    ids = [r.headers["x-request-id"] for r in (generated, unsafe, missing, invalid)]
    assert all(len(i) == 36 for i in ids) and len(set(ids)) == 4, ids
    lines = [r.getMessage() for r in caplog.records if r.name == "agentapi.bridge"]
    assert [line for line in lines if "request_id=req-abc.123" in line] == [
        next(line for line in lines if line.startswith("GET /v1/models 200 "))
    ]
    assert sum(f"request_id={ids[3]}" in line for line in lines) == 1
    assert any(line.startswith("POST /v1/chat/completions 400 ") and ids[3] in line for line in lines)


async def test_the_sdk_reads_the_request_id_of_a_completion(offline_stack: Stack) -> None:
    raw = await offline_stack.openai().chat.completions.with_raw_response.create(
        model=OFFLINE, messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Request-Id": "trace-42"}
    )
    assert raw.headers["x-request-id"] == "trace-42"
    assert raw.request_id == "trace-42"  # the SDK's own accessor (openai-python reads x-request-id)


class RecordingSessions:
    """Stands in for the SessionService stub: records each call's metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def CreateSession(self, request: pb.CreateSessionRequest, metadata: Any) -> pb.CreateSessionResponse:
        self.metadata.append(dict(metadata))
        return pb.CreateSessionResponse(session=pb.Session(id="s-1"))

    async def SendMessage(self, request: pb.SendMessageRequest, metadata: Any) -> pb.SendMessageResponse:
        self.metadata.append(dict(metadata))
        return pb.SendMessageResponse(message=pb.Message(id="m-1", role=pb.ROLE_ASSISTANT, content="ok", model="m"))


async def test_the_request_id_is_sent_to_grpc_with_every_call() -> None:
    app = create_app("127.0.0.1:1", BridgeSettings())
    sessions = app.state.bridge.sessions = RecordingSessions()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={**AUTH_HEADER, "X-Request-Id": "req-7", "Idempotency-Key": "k-7"},
        )
    assert response.status_code == 200 and response.json()["id"] == "chatcmpl-m-1"
    create, send = sessions.metadata
    assert create["x-request-id"] == send["x-request-id"] == "req-7"
    assert send["idempotency-key"] == "k-7" and create["idempotency-key"].startswith("chat-completion-session:")


# --------------------------------------------------------------------------- #
# CORS
# --------------------------------------------------------------------------- #


async def test_cors_is_off_by_default(offline_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=offline_stack.bridge_url) as http:
        preflight = await http.options(
            "/v1/chat/completions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        simple = await http.get("/healthz", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_the_configured_origins_and_exposes_the_session_header(offline_stack: Stack) -> None:
    settings = BridgeSettings.from_env({"AGENTAPI_CORS_ORIGINS": "https://app.example, https://other.example"})
    async with bridge(offline_stack, settings) as url, httpx.AsyncClient(base_url=url) as http:
        preflight = await http.options(
            "/v1/chat/completions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key, x-session-id",
            },
        )
        refused = await http.options(
            "/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        actual = await http.post(
            "/v1/chat/completions",
            json={"model": OFFLINE, "messages": [{"role": "user", "content": "from a browser"}]},
            headers={"Origin": "https://other.example", **AUTH_HEADER},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert {"authorization", "idempotency-key", "x-session-id"} <= {h.strip() for h in allowed.split(",")}
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == "https://other.example"
    exposed = {h.strip().lower() for h in actual.headers["access-control-expose-headers"].split(",")}
    assert {"x-session-id", "x-request-id"} <= exposed


async def test_cors_wildcard(offline_stack: Stack) -> None:
    async with bridge(offline_stack, BridgeSettings(cors_origins=("*",))) as url, httpx.AsyncClient() as http:
        response = await http.get(f"{url}/healthz", headers={"Origin": "https://anyone.example"})
    assert response.headers["access-control-allow-origin"] == "*"


# --------------------------------------------------------------------------- #
# Body limit
# --------------------------------------------------------------------------- #


async def test_a_body_over_the_limit_is_413_before_it_is_read(offline_stack: Stack) -> None:
    limit = 64 * 1024
    big = {"model": OFFLINE, "messages": [{"role": "user", "content": "x" * (limit + 1)}]}
    async with bridge(offline_stack, BridgeSettings(max_request_bytes=limit)) as url:
        async with httpx.AsyncClient(base_url=url, headers=AUTH_HEADER) as http:
            declared = await http.post("/v1/chat/completions", json=big)

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
                yield b'{"model": "agentapi-offline", "messages": [{"role": "user", "content": "'
                for _ in range(1000):  # 8 MiB unless the bridge stops reading
                    yield b"y" * 8192

            streamed = await http.post("/v1/chat/completions", content=chunks())
            small = await http.post(
                "/v1/chat/completions", json={"model": OFFLINE, "messages": [{"role": "user", "content": "small"}]}
            )
            transcoded = await http.post("/agentapi/v1/agents", content=b'{"key": "' + b"k" * limit + b'"}')
        with pytest.raises(openai.APIStatusError) as caught:
            sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=MASTER_KEY, max_retries=0)
            await sdk.chat.completions.create(**big)
    for response in (declared, streamed, transcoded):
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "request_too_large" and str(limit) in error["message"]
        assert response.headers["x-request-id"]
    assert small.status_code == 200
    assert caught.value.status_code == 413


def test_the_body_limit_defaults_to_8_mib_and_is_configurable() -> None:
    assert BridgeSettings.from_env({}).max_request_bytes == 8 * 1024 * 1024
    assert BridgeSettings.from_env({"AGENTAPI_MAX_REQUEST_BYTES": "1024"}).max_request_bytes == 1024
    with pytest.raises(ValueError):
        BridgeSettings.from_env({"AGENTAPI_MAX_REQUEST_BYTES": "0"})


# --------------------------------------------------------------------------- #
# /readyz
# --------------------------------------------------------------------------- #


async def test_readyz_follows_the_servers_grpc_health(sqlite_url: str) -> None:
    stack = await start_stack(sqlite_url, runner_id="readyz")
    try:
        async with httpx.AsyncClient(base_url=stack.bridge_url) as http:
            assert (await http.get("/readyz")).status_code == 200
            await stack.grpc_server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            not_ready = await http.get("/readyz")
            alive = await http.get("/healthz")
            await stack.grpc_server.health.set("", health_pb2.HealthCheckResponse.SERVING)
            ready = await http.get("/readyz")
    finally:
        await stack.stop()
    assert not_ready.status_code == 503 and not_ready.json() == {"status": "NOT_SERVING"}
    assert alive.status_code == 200
    assert ready.status_code == 200 and ready.json() == {"status": "SERVING"}


async def test_readyz_is_503_on_an_unmigrated_database(tmp_path: Path) -> None:
    """What an operator's probe sees when the server reports NOT_SERVING itself
    (the database is not migrated to head)."""
    stack = await start_stack(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", readiness_interval_s=0.2)
    try:
        async with httpx.AsyncClient(base_url=stack.bridge_url) as http:
            ready = await http.get("/readyz")
            alive = await http.get("/healthz")
    finally:
        await stack.stop()
    assert ready.status_code == 503 and ready.json() == {"status": "NOT_SERVING"}
    assert alive.status_code == 200


async def test_readyz_is_503_when_the_server_is_unreachable() -> None:
    app = create_app(f"127.0.0.1:{free_port()}", BridgeSettings(readiness_timeout_s=0.5))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as http:
            response = await http.get("/readyz")
            alive = await http.get("/healthz")
    assert response.status_code == 503 and alive.status_code == 200


# --------------------------------------------------------------------------- #
# /v1/models/{model}
# --------------------------------------------------------------------------- #


async def test_retrieve_a_model_or_an_agent(offline_stack: Stack, key: str) -> None:
    await create_agent(offline_stack, key, model=OFFLINE)
    client = offline_stack.openai()
    model = await client.models.retrieve(OFFLINE)
    assert (model.id, model.object) == (OFFLINE, "model")
    agent = await client.models.retrieve(f"agent:{key}")
    assert agent.id == f"agent:{key}" and agent.owned_by == "agentapi"
    for missing in ("no-such-model", "agent:no-such-agent", "agent:", "a/b/c"):
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve(missing)
        assert caught.value.body["code"] == "model_not_found", missing
        assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        await offline_stack.openai(api_key="wrong").models.retrieve(OFFLINE)


# --------------------------------------------------------------------------- #
# /openapi.json
# --------------------------------------------------------------------------- #


async def test_openapi_documents_the_openai_surface_and_health(offline_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=offline_stack.bridge_url) as http:
        document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    chat = paths["/v1/chat/completions"]["post"]
    headers = {p["name"].lower(): p for p in chat["parameters"] if p["in"] == "header"}
    assert {"idempotency-key", "x-session-id"} <= set(headers)
    schema = chat["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages", "response_format", "max_completion_tokens"} <= set(
        document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]["properties"]
    )
    assert {"application/json", "text/event-stream"} <= set(chat["responses"]["200"]["content"])
    assert "x-session-id" in {h.lower() for h in chat["responses"]["200"]["headers"]}
    assert "get" in paths["/v1/models"] and "get" in paths["/v1/models/{model}"]
    assert paths["/healthz"]["get"]["security"] == paths["/readyz"]["get"]["security"] == []
    assert "503" in paths["/readyz"]["get"]["responses"]
