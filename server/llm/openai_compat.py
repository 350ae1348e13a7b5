"""Streaming client for an OpenAI-compatible API, such as a LiteLLM proxy.

aiohttp rather than the openai SDK or httpx: the SDK builds pydantic objects
per chunk, and httpx parses HTTP/1.1 in pure Python (h11, through anyio): with
httpx-sse on top, reading the upstream was about a quarter of agentapi's CPU
per streamed delta (bench/README.md, issue 20). aiohttp's HTTP parser is C
(llhttp) and its line reader hands over whole SSE lines; the SSE field rules
(the WHATWG event-stream grammar) stay httpx-sse's ``SSEDecoder``, pinned.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError
from httpx_sse._decoders import SSEDecoder

from server.llm import errors
from server.llm.types import ChatChunk, ChatRequest, ModelInfo, TokenUsage, ToolCallFragment
from server.observability import tracing

# The longest SSE line (one chunk) read from the upstream: aiohttp's line
# reader refuses a line over twice its buffer. A tool call's arguments come in
# fragments, so a single chunk this long is a broken upstream.
READ_BUFFER_BYTES = 1024 * 1024


class _Stream:
    """An open SSE completion stream; iterating yields :class:`ChatChunk`."""

    def __init__(self, response: aiohttp.ClientResponse, model: str) -> None:
        self._response = response
        self._model = model
        headers = response.headers
        self.request_id = headers.get("x-request-id") or headers.get("x-litellm-call-id", "")
        self.cost_usd = _float(headers.get("x-litellm-response-cost"))

    async def __aiter__(self) -> AsyncIterator[ChatChunk]:
        done = False
        decoder = SSEDecoder()
        try:
            async for raw in self._response.content:
                # Read on to the end of the body after [DONE] (it ends right
                # there): a response read to its end returns its connection to
                # the pool, where breaking off would close it and make the
                # next turn pay for a new TCP connection.
                if done:
                    continue
                sse = decoder.decode(raw.decode("utf-8", "replace").rstrip("\r\n"))
                if sse is None or not sse.data:
                    continue
                if sse.data == "[DONE]":
                    done = True
                    continue
                try:
                    payload = json.loads(sse.data)
                except ValueError as exc:
                    raise errors.protocol_error(self._model, "a chunk is not JSON") from exc
                if not isinstance(payload, dict):
                    raise errors.protocol_error(self._model, "a chunk is not a JSON object")
                if "error" in payload:
                    raise _stream_error(payload["error"], self._model)
                try:
                    chunk = parse_chunk(payload)
                except (AttributeError, TypeError, ValueError, KeyError) as exc:
                    raise errors.protocol_error(self._model, f"a chunk has an unexpected shape ({exc})") from exc
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.from_transport(exc, self._model, started=True) from exc
        except HttpProcessingError as exc:  # LineTooLong: a line over twice the buffer
            raise errors.protocol_error(self._model, f"a line is over {2 * READ_BUFFER_BYTES} bytes") from exc
        if not done:
            raise errors.protocol_error(self._model, "the stream ended without [DONE]")


def _stream_error(error: object, model: str) -> Exception:
    """The typed error for an in-stream ``{"error": ...}`` event (a LiteLLM proxy
    sends one when its upstream fails after the response began)."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    code = str(error.get("code", ""))
    status = int(code) if code.isdigit() and 400 <= int(code) < 600 else 500
    return errors.from_status(status, json.dumps({"error": error}).encode(), {}, model)


def _float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def parse_chunk(payload: dict[str, Any]) -> ChatChunk:
    """Converts one ``chat.completion.chunk`` JSON object to a :class:`ChatChunk`."""
    content = refusal = reasoning = ""
    thinking_blocks: tuple[dict[str, Any], ...] = ()
    finish_reason = ""
    fragments: tuple[ToolCallFragment, ...] = ()
    logprobs: tuple[dict[str, Any], ...] = ()
    choices = payload.get("choices") or ()
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content") or ""
        # LiteLLM moves some providers' refusal into provider_specific_fields.
        refusal = delta.get("refusal") or (delta.get("provider_specific_fields") or {}).get("refusal") or ""
        finish_reason = choice.get("finish_reason") or ""
        logprobs = tuple((choice.get("logprobs") or {}).get("content") or ())
        # reasoning_content: LiteLLM's and DeepSeek's field; reasoning: vLLM's and Ollama's.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
        thinking_blocks = tuple(b for b in delta.get("thinking_blocks") or () if isinstance(b, dict))
        raw_calls = delta.get("tool_calls")
        if raw_calls:
            fragments = tuple(
                ToolCallFragment(
                    index=call.get("index", 0),
                    id=call.get("id") or "",
                    name=(call.get("function") or {}).get("name") or "",
                    arguments=(call.get("function") or {}).get("arguments") or "",
                )
                for call in raw_calls
            )
    usage = payload.get("usage")
    return ChatChunk(
        content=content,
        tool_calls=fragments,
        finish_reason=finish_reason,
        usage=TokenUsage(
            usage.get("prompt_tokens") or 0,
            usage.get("completion_tokens") or 0,
            _float(usage.get("cost")),
            int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0),
        )
        if usage
        else None,
        model=payload.get("model") or "",
        logprobs=logprobs,
        refusal=refusal,
        reasoning=reasoning,
        thinking_blocks=thinking_blocks,
    )


class OpenAICompatibleBackend:
    """Chat backend for ``<base_url>/chat/completions`` and ``<base_url>/models``.

    Args:
        base_url: e.g. ``http://127.0.0.1:4000/v1`` (a LiteLLM proxy).
        api_key: sent as ``Authorization: Bearer``; optional.
        connect_timeout_s: seconds to open a connection.
        read_timeout_s: longest silence, in seconds, between two stream
            events; also the longest wait for a free pooled connection.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=read_timeout_s, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                # An idle connection is dropped after 4 s, before uvicorn's (LiteLLM's)
                # 5 s keep-alive closes it from the other side: reusing a connection
                # the server is closing fails the request (ServerDisconnectedError).
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=4),
                read_bufsize=READ_BUFFER_BYTES,
                auto_decompress=True,
                # HTTP(S)_PROXY, NO_PROXY and .netrc apply, as they did with httpx.
                trust_env=True,
            )
        return self._session

    def check(self, model: str, params: dict[str, Any]) -> None:
        """Nothing to refuse here: the upstream answers for its own models."""

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[_Stream]:
        """Opens a streamed completion. Raises AgentAPIError for HTTP errors and
        transport failures (see :mod:`server.llm.errors`). Leaving the context
        closes the upstream connection, also on cancellation."""
        try:
            # traceparent of the attempt's span (when tracing is on), so the proxy's spans join the trace.
            headers = tracing.inject({"Content-Type": "application/json"})
            body = json.dumps(request.body(stream=True)).encode()
            url = f"{self._base_url}/chat/completions"
            async with self._client().post(url, data=body, headers=headers) as response:
                if response.status >= 400:
                    error_body = await response.read()
                    raise errors.from_status(response.status, error_body, response.headers, request.model)
                yield _Stream(response, request.model)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.from_transport(exc, request.model, started=False) from exc

    async def _get_json(self, path: str) -> tuple[int, Any, Mapping[str, str], bytes]:
        async with self._client().get(f"{self._base_url}{path}") as response:
            body = await response.read()
            try:
                data = json.loads(body) if response.status < 400 else None
            except ValueError:
                data = None
            return response.status, data, response.headers, body

    async def list_models(self) -> list[ModelInfo]:
        """GET ``/models``. Raises AgentAPIError (UPSTREAM_UNAVAILABLE, ...)."""
        try:
            status, payload, headers, body = await self._get_json("/models")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.from_transport(exc, "", started=False) from exc
        if status >= 400:
            raise errors.from_status(status, body, headers, "")
        if not isinstance(payload, dict):
            raise errors.protocol_error("", "GET /models did not answer a JSON object")
        data = payload.get("data", [])
        details = await self._model_info()
        models = []
        for entry in data:
            info = details.get(entry["id"], {})
            models.append(
                ModelInfo(
                    id=entry["id"],
                    owned_by=entry.get("owned_by", ""),
                    context_window=int(info.get("max_input_tokens") or info.get("max_tokens") or 0),
                    input_cost_per_token=float(info.get("input_cost_per_token") or 0.0),
                    output_cost_per_token=float(info.get("output_cost_per_token") or 0.0),
                )
            )
        return sorted(models, key=lambda m: m.id)

    async def _model_info(self) -> dict[str, dict[str, Any]]:
        """LiteLLM's ``/model/info`` (context window and prices) by model name;
        empty when the upstream does not offer it. A transport failure raises
        (UNAVAILABLE / UPSTREAM_UNAVAILABLE, ...): the catalog then keeps its
        last good prices rather than a refresh setting every price to zero,
        which would let budget reservations admit turns for free."""
        try:
            status, payload, _, _ = await self._get_json("/model/info")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.from_transport(exc, "", started=False) from exc
        if status != 200 or not isinstance(payload, dict):
            return {}
        try:
            return {m["model_name"]: m.get("model_info") or {} for m in payload.get("data", [])}
        except (KeyError, TypeError, AttributeError):
            return {}

    async def aclose(self) -> None:
        """Closes pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
