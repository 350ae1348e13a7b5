"""Maps upstream HTTP failures to typed domain errors, once, at the adapter edge."""

from __future__ import annotations

import json

import httpx

from server.domain.errors import AgentAPIError


def _upstream_message(body: bytes) -> tuple[str, str]:
    """Extracts (message, code) from an OpenAI-shaped error body, tolerating anything."""
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500], ""
    if not isinstance(error, dict):
        return str(error)[:500], ""
    return str(error.get("message", ""))[:500], str(error.get("code") or error.get("type") or "")


def from_status(status: int, body: bytes, headers: httpx.Headers, model: str) -> AgentAPIError:
    """Maps an upstream HTTP error response to an :class:`AgentAPIError`.

    429 -> RESOURCE_EXHAUSTED (UPSTREAM_RATE_LIMITED, or UPSTREAM_QUOTA_EXCEEDED
    for ``insufficient_quota``); 401/403 -> INTERNAL (UPSTREAM_AUTH_FAILED);
    404 or an unknown model -> NOT_FOUND (MODEL_NOT_FOUND); 400 context length ->
    INVALID_ARGUMENT (CONTEXT_WINDOW_EXCEEDED); content policy ->
    FAILED_PRECONDITION (CONTENT_FILTERED); 408/504 -> DEADLINE_EXCEEDED
    (UPSTREAM_TIMEOUT); other 5xx -> UNAVAILABLE (UPSTREAM_UNAVAILABLE).
    """
    message, code = _upstream_message(body)
    lowered = f"{message} {code}".lower()
    meta = {"model": model, "upstream_status": str(status)}
    if status == 429:
        if "insufficient_quota" in lowered or "quota" in code.lower():
            return AgentAPIError("RESOURCE_EXHAUSTED", "UPSTREAM_QUOTA_EXCEEDED", message, meta)
        retry_after = _retry_after(headers)
        return AgentAPIError("RESOURCE_EXHAUSTED", "UPSTREAM_RATE_LIMITED", message, meta, retry_after_s=retry_after)
    if status in (401, 403):
        return AgentAPIError("INTERNAL", "UPSTREAM_AUTH_FAILED", "the upstream rejected agentapi's credentials", meta)
    if "context_length" in lowered or "context window" in lowered or "maximum context" in lowered:
        return AgentAPIError("INVALID_ARGUMENT", "CONTEXT_WINDOW_EXCEEDED", message, meta)
    if "content_filter" in lowered or "content_policy" in lowered or "content policy" in lowered:
        return AgentAPIError("FAILED_PRECONDITION", "CONTENT_FILTERED", message, meta)
    if status == 404 or (
        "model" in lowered and ("not found" in lowered or "does not exist" in lowered or "invalid model" in lowered)
    ):
        return AgentAPIError("NOT_FOUND", "MODEL_NOT_FOUND", f"model {model!r} is not served upstream", meta)
    if status in (408, 504):
        return AgentAPIError("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", message or "the upstream timed out", meta)
    if status >= 500:
        return AgentAPIError("UNAVAILABLE", "UPSTREAM_UNAVAILABLE", message or "the upstream failed", meta)
    return AgentAPIError(
        "INVALID_ARGUMENT", "UPSTREAM_BAD_REQUEST", message or "the upstream rejected the request", meta
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def from_transport(exc: httpx.HTTPError, model: str, started: bool) -> AgentAPIError:
    """Maps a transport failure: timeouts -> DEADLINE_EXCEEDED (UPSTREAM_TIMEOUT);
    refused or reset before the stream began -> UNAVAILABLE (UPSTREAM_UNAVAILABLE);
    a broken stream after it began -> UNAVAILABLE (UPSTREAM_PROTOCOL_ERROR)."""
    meta = {"model": model}
    if isinstance(exc, httpx.TimeoutException):
        return AgentAPIError("DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", "the upstream timed out", meta)
    if started:
        return AgentAPIError(
            "UNAVAILABLE", "UPSTREAM_PROTOCOL_ERROR", f"the upstream stream broke: {type(exc).__name__}", meta
        )
    return AgentAPIError(
        "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", f"cannot reach the upstream: {type(exc).__name__}", meta
    )


def protocol_error(model: str, detail: str) -> AgentAPIError:
    """UNAVAILABLE (UPSTREAM_PROTOCOL_ERROR) for a malformed or truncated stream."""
    return AgentAPIError(
        "UNAVAILABLE", "UPSTREAM_PROTOCOL_ERROR", f"malformed upstream stream: {detail}", {"model": model}
    )
