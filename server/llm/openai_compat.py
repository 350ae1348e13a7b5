"""Streaming client for an OpenAI-compatible API, such as a LiteLLM proxy.

Plain httpx with httpx-sse's SSE parser rather than the openai SDK: the SDK
builds pydantic objects per chunk, which dominated per-delta cost in our
measurements (see bench/README.md), and we only need a handful of fields.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from httpx_sse import EventSource

from server.llm import errors
from server.llm.types import ChatChunk, ChatRequest, ModelInfo, TokenUsage, ToolCallFragment
from server.observability import tracing


class _Stream:
    """An open SSE completion stream; iterating yields :class:`ChatChunk`."""

    def __init__(self, response: httpx.Response, model: str) -> None:
        self._response = response
        self._model = model
        self.request_id = response.headers.get("x-request-id") or response.headers.get("x-litellm-call-id", "")
        self.cost_usd = _float(response.headers.get("x-litellm-response-cost"))

    async def __aiter__(self) -> AsyncIterator[ChatChunk]:
        done = False
        try:
            async for sse in EventSource(self._response).aiter_sse():
                # Read on to the end of the body after [DONE] (it ends right
                # there): a response read to its end returns its connection to
                # httpx's pool, where breaking off would close it and make the
                # next turn pay for a new TCP connection.
                if sse.data == "[DONE]":
                    done = True
                if done or not sse.data:
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
        except httpx.HTTPError as exc:
            raise errors.from_transport(exc, self._model, started=True) from exc
        if not done:
            raise errors.protocol_error(self._model, "the stream ended without [DONE]")


def _stream_error(error: object, model: str) -> Exception:
    """The typed error for an in-stream ``{"error": ...}`` event (a LiteLLM proxy
    sends one when its upstream fails after the response began)."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    code = str(error.get("code", ""))
    status = int(code) if code.isdigit() and 400 <= int(code) < 600 else 500
    return errors.from_status(status, json.dumps({"error": error}).encode(), httpx.Headers(), model)


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
        read_timeout_s: longest silence, in seconds, between two stream events.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )

    def check(self, model: str, params: dict[str, Any]) -> None:
        """Nothing to refuse here: the upstream answers for its own models."""

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[_Stream]:
        """Opens a streamed completion. Raises AgentAPIError for HTTP errors and
        transport failures (see :mod:`server.llm.errors`). Leaving the context
        closes the upstream connection, also on cancellation."""
        try:
            # traceparent of the attempt's span (when tracing is on), so the proxy's spans join the trace.
            headers = tracing.inject({})
            body = request.body(stream=True)
            async with self._client.stream("POST", "/chat/completions", json=body, headers=headers) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise errors.from_status(response.status_code, body, response.headers, request.model)
                yield _Stream(response, request.model)
        except httpx.HTTPError as exc:
            raise errors.from_transport(exc, request.model, started=False) from exc

    async def list_models(self) -> list[ModelInfo]:
        """GET ``/models``. Raises AgentAPIError (UPSTREAM_UNAVAILABLE, ...)."""
        try:
            response = await self._client.get("/models")
        except httpx.HTTPError as exc:
            raise errors.from_transport(exc, "", started=False) from exc
        if response.status_code >= 400:
            raise errors.from_status(response.status_code, response.content, response.headers, "")
        data = response.json().get("data", [])
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
        empty when the upstream does not offer it."""
        try:
            response = await self._client.get("/model/info")
            if response.status_code != 200:
                return {}
            return {m["model_name"]: m.get("model_info") or {} for m in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return {}

    async def aclose(self) -> None:
        """Closes pooled connections."""
        await self._client.aclose()
