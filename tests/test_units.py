"""Unit tests of adapters and small rules, with httpx.MockTransport standing in
for the network edge."""

from __future__ import annotations

import httpx
import pytest

from server.config import Config
from server.domain.errors import AgentAPIError
from server.domain.pagination import PageTokens
from server.llm.openai_compat import OpenAICompatibleBackend
from server.llm.types import ChatRequest


def backend_for(handler) -> OpenAICompatibleBackend:  # type: ignore[no-untyped-def]
    backend = OpenAICompatibleBackend("http://upstream.test/v1")
    backend._client = httpx.AsyncClient(base_url="http://upstream.test/v1", transport=httpx.MockTransport(handler))
    return backend


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
    backend = backend_for(lambda request: httpx.Response(status, json=body, headers=headers))
    with pytest.raises(AgentAPIError) as caught:
        async with backend.stream(ChatRequest(model="m", messages=[{"role": "user", "content": "x"}])):
            pass
    assert (caught.value.code, caught.value.reason) == (code, reason)
    if reason == "UPSTREAM_RATE_LIMITED":
        assert caught.value.retry_after_s == 2.0


async def test_truncated_stream_is_a_protocol_error() -> None:
    chunk = b'data: {"choices":[{"delta":{"content":"hi"},"index":0}]}\n\n'
    backend = backend_for(lambda r: httpx.Response(200, content=chunk, headers={"content-type": "text/event-stream"}))
    received = []
    with pytest.raises(AgentAPIError) as caught:
        async with backend.stream(ChatRequest(model="m", messages=[])) as stream:
            async for c in stream:
                received.append(c.content)
    assert received == ["hi"]
    assert caught.value.reason == "UPSTREAM_PROTOCOL_ERROR"


async def test_connection_refused_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(AgentAPIError) as caught:
        async with backend_for(refuse).stream(ChatRequest(model="m", messages=[])):
            pass
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
