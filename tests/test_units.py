"""Unit tests of adapters and small rules; the upstream is a small aiohttp
server on 127.0.0.1 that answers what each test scripts."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from server.config import Config
from server.domain.errors import AgentAPIError
from server.domain.pagination import PageTokens
from server.llm.openai_compat import OpenAICompatibleBackend
from server.llm.types import ChatRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def backend_for(handler: Handler) -> AsyncIterator[OpenAICompatibleBackend]:
    """A backend whose upstream answers every request with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1", read_timeout_s=2.0)
    try:
        yield backend
    finally:
        await backend.aclose()
        await runner.cleanup()


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=json.dumps(body), headers=headers, content_type="application/json")

    return handle


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "reason"),
    [
        (429, {"error": {"message": "slow down"}}, {"retry-after": "2"}, "RESOURCE_EXHAUSTED", "UPSTREAM_RATE_LIMITED"),
        (
            429,
            {"error": {"message": "x", "code": "insufficient_quota"}},
            {},
            "RESOURCE_EXHAUSTED",
            "UPSTREAM_QUOTA_EXCEEDED",
        ),
        (500, {"error": {"message": "boom"}}, {}, "UNAVAILABLE", "UPSTREAM_UNAVAILABLE"),
        (
            400,
            {"error": {"message": "too long", "code": "context_length_exceeded"}},
            {},
            "INVALID_ARGUMENT",
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (404, {"error": {"message": "The model does not exist"}}, {}, "NOT_FOUND", "MODEL_NOT_FOUND"),
        (401, {"error": {"message": "bad key"}}, {}, "INTERNAL", "UPSTREAM_AUTH_FAILED"),
        (504, {"error": {"message": "slow"}}, {}, "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT"),
    ],
)
async def test_upstream_http_errors_become_typed_errors(status, body, headers, code, reason) -> None:  # type: ignore[no-untyped-def]
    async with backend_for(answer(status, body, headers)) as backend:
        with pytest.raises(AgentAPIError) as caught:
            async with backend.stream(ChatRequest(model="m", messages=[{"role": "user", "content": "x"}])):
                pass
    assert (caught.value.code, caught.value.reason) == (code, reason)
    if reason == "UPSTREAM_RATE_LIMITED":
        assert caught.value.retry_after_s == 2.0


CHUNK = b'data: {"choices":[{"delta":{"content":"hi"},"index":0}]}\n\n'


def sse_then(*body: bytes, close: bool = False, end: bool = False, hang_s: float = 0.0) -> Handler:
    """An upstream that answers an SSE response of ``body``, then closes the
    connection mid-body (``close``), ends the body (``end``) or goes silent."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in body:
            await response.write(piece)
        if close:
            request.transport.close()  # type: ignore[union-attr]  # the chunked encoding never ends
        if end:
            await response.write_eof()
        await asyncio.sleep(hang_s)
        return response

    return handle


async def read_failing(handler: Handler) -> tuple[list[str], AgentAPIError]:
    """The contents a stream from ``handler`` yielded before its error, and the error."""
    received: list[str] = []
    async with backend_for(handler) as backend:
        with pytest.raises(AgentAPIError) as caught:
            async with backend.stream(ChatRequest(model="m", messages=[])) as stream:
                async for chunk in stream:
                    received.append(chunk.content)
    return received, caught.value


async def test_truncated_stream_is_a_protocol_error() -> None:
    received, error = await read_failing(sse_then(CHUNK, end=True))  # a complete body, but no [DONE]
    assert received == ["hi"]
    assert error.reason == "UPSTREAM_PROTOCOL_ERROR"


async def test_a_body_cut_mid_stream_is_a_protocol_error() -> None:
    received, error = await read_failing(sse_then(CHUNK, close=True))
    assert received == ["hi"]
    assert (error.code, error.reason) in {
        ("UNAVAILABLE", "UPSTREAM_PROTOCOL_ERROR"),
        ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE"),
    }


async def test_a_silent_upstream_is_a_timeout() -> None:
    # Silent for longer than the backend's 2 s read timeout.
    _, error = await read_failing(sse_then(b": waiting\n\n", hang_s=10))
    assert (error.code, error.reason) == ("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT")


async def test_a_line_over_the_buffer_is_a_protocol_error() -> None:
    _, error = await read_failing(sse_then(b"data: " + b"x" * (3 * 1024 * 1024)))
    assert error.reason == "UPSTREAM_PROTOCOL_ERROR"


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(AgentAPIError) as caught:
            async with backend.stream(ChatRequest(model="m", messages=[])):
                pass
    finally:
        await backend.aclose()
    assert (caught.value.code, caught.value.reason) == ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE")


def test_page_tokens_are_bound_to_parameters_and_signed() -> None:
    tokens = PageTokens(b"secret")
    token = tokens.encode(["2026-01-01T00:00:00", "id-1"], {"show_deleted": False})
    assert tokens.decode(token, {"show_deleted": False}) == ["2026-01-01T00:00:00", "id-1"]
    with pytest.raises(AgentAPIError):
        tokens.decode(token, {"show_deleted": True})
    with pytest.raises(AgentAPIError):
        PageTokens(b"other").decode(token, {"show_deleted": False})


@pytest.mark.parametrize("token", ["abc.\u00e9\u00e9", "\u00e9.\u00e9", "....", "x" * 300])
def test_a_malformed_page_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(AgentAPIError) as caught:
        PageTokens(b"secret").decode(token, {})
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_non_loopback_address_needs_a_master_key() -> None:
    with pytest.raises(ValueError):
        Config(grpc_addr="0.0.0.0:50051").check()
    Config(grpc_addr="0.0.0.0:50051", master_key="sk-real").check()
    Config().check()


def test_config_reads_environment() -> None:
    config = Config.from_env(
        {
            "AGENTAPI_DATABASE_URL": "mysql+aiomysql://u@h/db",
            "AGENTAPI_LLM_BASE_URL": "http://proxy/v1",
            "AGENTAPI_GRPC_ADDR": "127.0.0.1:6000",
        },
        http_addr="127.0.0.1:9000",
    )
    assert (config.database_url, config.llm_base_url, config.grpc_addr, config.http_addr) == (
        "mysql+aiomysql://u@h/db",
        "http://proxy/v1",
        "127.0.0.1:6000",
        "127.0.0.1:9000",
    )
    assert Config.from_env({}).llm_base_url is None


def test_public_surface_of_the_client_package() -> None:
    from agentapi import v1

    for name in (
        "Agent",
        "AgentServiceStub",
        "SessionServiceStub",
        "ConversationServiceStub",
        "ModelServiceStub",
        "SendStreamingMessageRequest",
        "SendStreamingMessageResponse",
        "Message",
        "ROLE_USER",
        "MESSAGE_STATUS_FAILED",
    ):
        assert name in v1.__all__ and hasattr(v1, name)


async def test_a_failed_model_info_fails_the_catalog_fetch_rather_than_zeroing_prices() -> None:
    async def models_then_cut(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/models"):
            return web.json_response({"data": [{"id": "m", "owned_by": "x"}]})
        request.transport.close()  # type: ignore[union-attr]  # /model/info: the connection drops
        return web.Response()

    async with backend_for(models_then_cut) as backend:
        with pytest.raises(AgentAPIError) as caught:
            await backend.list_models()
    assert (caught.value.code, caught.value.reason) == ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE")


async def test_an_upstream_without_model_info_lists_its_models_unpriced() -> None:
    async def models_only(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/models"):
            return web.json_response({"data": [{"id": "m", "owned_by": "x"}]})
        return web.Response(status=404)

    async with backend_for(models_only) as backend:
        [model] = await backend.list_models()
    assert (model.id, model.input_cost_per_token, model.context_window) == ("m", 0.0, 0)
