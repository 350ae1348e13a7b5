"""Maps upstream failures to typed domain errors, once, at the adapter edge.

The taxonomy (gRPC code / ErrorInfo reason; the bridge's HTTP status in brackets):

===========================================  =====================================================
upstream                                     agentapi
===========================================  =====================================================
429 rate limit                               RESOURCE_EXHAUSTED / UPSTREAM_RATE_LIMITED, with
                                             RetryInfo from ``Retry-After`` (or LiteLLM's
                                             ``llm_provider-retry-after``, or ``retry-after-ms``)
                                             [429]
provider quota exhausted (OpenAI's           RESOURCE_EXHAUSTED / UPSTREAM_QUOTA_EXCEEDED, no
``insufficient_quota``)                      RetryInfo: waiting does not help [429]
5xx; connection refused; connection reset    UNAVAILABLE / UPSTREAM_UNAVAILABLE [502]
(also mid-stream)
read or connect timeout; 408, 504            DEADLINE_EXCEEDED / UPSTREAM_TIMEOUT [504]
context length                               INVALID_ARGUMENT / CONTEXT_WINDOW_EXCEEDED [400]
content policy error (a stream that ends    FAILED_PRECONDITION / CONTENT_FILTERED [400]
with ``finish_reason: content_filter`` is
not an error: a completed reply, as OpenAI)
404; unknown model                           NOT_FOUND / MODEL_NOT_FOUND [404]
malformed stream (not JSON, not SSE) or      UNAVAILABLE / UPSTREAM_PROTOCOL_ERROR [502]
truncated (closed mid-body, no ``[DONE]``)
401/403; LiteLLM's ``no_db_connection``      INTERNAL / UPSTREAM_AUTH_FAILED, logged as CRITICAL:
(a key it cannot check)                      agentapi's own key or LiteLLM's setup is wrong [500]
other 4xx                                    INVALID_ARGUMENT / UPSTREAM_BAD_REQUEST [400]
===========================================  =====================================================

A LiteLLM proxy keeps the upstream's status but rewrites bodies
(``litellm.RateLimitError: ... You exceeded your current quota ...``, code
``"429"``) and reports a broken upstream stream as an in-stream ``{"error":
...}`` event or a 500, so bodies are also classified by their text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import aiohttp

from server.domain.errors import AgentAPIError

log = logging.getLogger(__name__)

# Retry hints, most precise first: OpenAI's milliseconds, the standard header, LiteLLM's copy of the upstream's.
_RETRY_HEADERS = ("retry-after-ms", "retry-after", "llm_provider-retry-after")
_QUOTA_MARKERS = ("exceeded your current quota", "quota exceeded", "check your plan and billing")
_CONTEXT_MARKERS = (
    "context_length",
    "context window",
    "contextwindowexceeded",
    "maximum context",
    "context length",
)
_CONTENT_MARKERS = (
    "content_filter",
    "content_policy",
    "content policy",
    "contentpolicyviolation",
    "safety system",
    "responsible ai",
)
_AUTH_TYPES = ("no_db_connection", "authentication_error", "invalid_api_key")
# A LiteLLM 500 that reports its upstream's stream as broken rather than the upstream as down.
_RESET_MARKERS = ("connection reset", "connectionreseterror", "connection refused", "connecterror")
_PROTOCOL_MARKERS = (
    "payload is not completed",
    "transferencodingerror",
    "incomplete chunked read",
    "jsondecodeerror",
    "expecting ',' delimiter",
    "expecting ':' delimiter",
    "expecting value",
    "unterminated string",
    "malformed",
)


def _upstream_error(body: bytes) -> tuple[str, str, str]:
    """(message, code, type) of an OpenAI-shaped error body, tolerating anything."""
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500], "", ""
    if not isinstance(error, dict):
        return str(error)[:500], "", ""
    return str(error.get("message", ""))[:500], str(error.get("code") or ""), str(error.get("type") or "")


def _has(text: str, markers: tuple[str, ...]) -> bool:
    return any(marker in text for marker in markers)


def from_status(status: int, body: bytes, headers: Mapping[str, str], model: str) -> AgentAPIError:
    """Maps an upstream HTTP error response (or an in-stream error event, given
    the status it names) to an :class:`AgentAPIError`; see the module table."""
    message, code, kind = _upstream_error(body)
    lowered = f"{message} {code} {kind}".lower()
    meta = {"model": model, "upstream_status": str(status)}
    if (
        "insufficient_quota" in lowered
        or "billing_hard_limit" in lowered
        or (status == 429 and _has(lowered, _QUOTA_MARKERS))
    ):
        message = message or "the upstream account's quota is exhausted"
        return AgentAPIError("RESOURCE_EXHAUSTED", "UPSTREAM_QUOTA_EXCEEDED", message, meta)
    if status == 429:
        return AgentAPIError(
            "RESOURCE_EXHAUSTED",
            "UPSTREAM_RATE_LIMITED",
            message or "the upstream is rate limiting",
            meta,
            retry_after_s=retry_after(headers),
        )
    if status in (401, 403) or kind in _AUTH_TYPES:
        log.critical(
            "the upstream rejected agentapi's credentials (HTTP %s: %s): check AGENTAPI_LLM_API_KEY "
            "and the LiteLLM proxy's keys",
            status,
            message,
        )
        return AgentAPIError("INTERNAL", "UPSTREAM_AUTH_FAILED", "the upstream rejected agentapi's credentials", meta)
    if _has(lowered, _CONTEXT_MARKERS):
        return AgentAPIError("INVALID_ARGUMENT", "CONTEXT_WINDOW_EXCEEDED", message, meta)
    if _has(lowered, _CONTENT_MARKERS):
        return AgentAPIError("FAILED_PRECONDITION", "CONTENT_FILTERED", message, meta)
    if status == 404 or (
        "model" in lowered and ("not found" in lowered or "does not exist" in lowered or "invalid model" in lowered)
    ):
        return AgentAPIError("NOT_FOUND", "MODEL_NOT_FOUND", f"model {model!r} is not served upstream", meta)
    if status in (408, 504):
        return AgentAPIError("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", message or "the upstream timed out", meta)
    if status >= 500:
        if _has(lowered, _PROTOCOL_MARKERS) and not _has(lowered, _RESET_MARKERS):
            return AgentAPIError("UNAVAILABLE", "UPSTREAM_PROTOCOL_ERROR", message or "malformed upstream stream", meta)
        return AgentAPIError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", message or "the upstream failed", meta)
    return AgentAPIError(
        "INVALID_ARGUMENT", "UPSTREAM_BAD_REQUEST", message or "the upstream rejected the request", meta
    )


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or an
    HTTP date) or LiteLLM's ``llm_provider-retry-after``; None when absent or unreadable."""
    for name in _RETRY_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
        else:
            if name == "retry-after-ms":
                seconds /= 1000
        if seconds == seconds:  # not NaN
            return min(max(0.0, seconds), 24 * 3600.0)
    return None


def from_transport(exc: BaseException, model: str, started: bool) -> AgentAPIError:
    """Maps a transport failure (aiohttp's exceptions, or a timeout): timeouts ->
    DEADLINE_EXCEEDED (UPSTREAM_TIMEOUT); refused, or reset or closed at any
    point -> UNAVAILABLE (UPSTREAM_UNAVAILABLE); a body cut short or not HTTP
    after the stream began -> UNAVAILABLE (UPSTREAM_PROTOCOL_ERROR)."""
    meta = {"model": model}
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
        return AgentAPIError("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", f"the upstream timed out ({name})", meta)
    if not started or isinstance(exc, aiohttp.ClientConnectionError) or _reset(exc):
        return AgentAPIError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", f"cannot reach the upstream: {name}", meta)
    return AgentAPIError("UNAVAILABLE", "UPSTREAM_PROTOCOL_ERROR", f"the upstream stream broke: {name}: {exc}", meta)


def _reset(exc: BaseException) -> bool:
    """Whether a connection reset lies under ``exc``. aiohttp reports a reset
    mid-body as a ClientPayloadError whose only trace of the
    ConnectionResetError is its message text (aiohttp 3.14), so that is read too."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ConnectionError) or "ConnectionResetError" in str(item):
            return True
        todo += [item.__cause__, item.__context__, *item.args]
    return False


def protocol_error(model: str, detail: str) -> AgentAPIError:
    """UNAVAILABLE (UPSTREAM_PROTOCOL_ERROR) for a malformed or truncated stream."""
    return AgentAPIError(
        "UNAVAILABLE", "UPSTREAM_PROTOCOL_ERROR", f"malformed upstream stream: {detail}", {"model": model}
    )
