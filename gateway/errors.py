"""gRPC status -> HTTP status and OpenAI's error body: the one table, used by
every route of the bridge.

The body is OpenAI's ``{"error": {"message", "type", "param", "code"}}`` plus
``reason``, agentapi's ErrorInfo reason (None when the error has none).
``code`` and ``type`` are OpenAI's own where OpenAI has one for the failure
(its error-codes guide: ``invalid_api_key``, ``context_length_exceeded``,
``insufficient_quota``, ``rate_limit_exceeded``, ``content_policy_violation``,
``model_not_found``), else the reason in lower case. ``param`` is the request
field a BadRequest violation names, without the gRPC request's ``options.``
prefix (the chat-completions parameters are TurnOptions on gRPC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from starlette.responses import JSONResponse

from server.observability import request_log

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


@dataclass(frozen=True)
class OpenAIKind:
    """How one failure looks to an OpenAI caller; None fields take the defaults."""

    http_status: int | None = None
    type: str | None = None
    code: str | None = None


_RATE_LIMIT = OpenAIKind(429, "rate_limit_error", "rate_limit_exceeded")
_QUOTA = OpenAIKind(429, "insufficient_quota", "insufficient_quota")
BY_REASON: dict[str, OpenAIKind] = {
    "UNAUTHENTICATED": OpenAIKind(401, "invalid_request_error", "invalid_api_key"),
    "CONTEXT_WINDOW_EXCEEDED": OpenAIKind(400, "invalid_request_error", "context_length_exceeded"),
    "CONTENT_FILTERED": OpenAIKind(400, "invalid_request_error", "content_policy_violation"),
    "MODEL_NOT_FOUND": OpenAIKind(404, "invalid_request_error", "model_not_found"),
    "RATE_LIMITED": _RATE_LIMIT,
    "UPSTREAM_RATE_LIMITED": _RATE_LIMIT,
    # OpenAI's SDKs and dashboards key on this exact type and code for spend caps.
    "BUDGET_EXCEEDED": _QUOTA,
    "UPSTREAM_QUOTA_EXCEEDED": _QUOTA,
    # The upstream, not agentapi, is what failed: HTTP calls that a bad gateway.
    "UPSTREAM_UNAVAILABLE": OpenAIKind(502),
    "UPSTREAM_PROTOCOL_ERROR": OpenAIKind(502),
    "UPSTREAM_EMPTY_COMPLETION": OpenAIKind(502),
    # A key reused for another request: the IETF Idempotency-Key draft answers 422.
    "IDEMPOTENCY_KEY_REUSED": OpenAIKind(422),
}
# Statuses that carry no agentapi ErrorInfo come from grpc itself.
WITHOUT_REASON: dict[grpc.StatusCode, OpenAIKind] = {
    grpc.StatusCode.UNAUTHENTICATED: BY_REASON["UNAUTHENTICATED"],
    # grpc's own RESOURCE_EXHAUSTED is a message-size limit. The bridge's channel
    # takes replies of any size, so it is the server refusing the request as too
    # large: nothing ran. Never a 429, which SDKs retry (and a turn that did run
    # would run again).
    grpc.StatusCode.RESOURCE_EXHAUSTED: OpenAIKind(413, "invalid_request_error", "request_too_large"),
}
OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    429: "rate_limit_error",
}
IDEMPOTENCY_HEADER = "idempotency-key"


class ApiError(Exception):
    """A failure as the bridge answers it: HTTP status and OpenAI body, plus
    ``Retry-After`` when the server gave a RetryInfo."""

    def __init__(self, http_status: int, body: dict[str, Any], retry_after_s: float | None = None) -> None:
        super().__init__(body["error"]["message"])
        self.http_status = http_status
        self.body = body
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, at least 1) when the server gave a RetryInfo."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error's OpenAI body with its HTTP status, ``Retry-After`` and ``headers``."""
    return JSONResponse(error.body, status_code=error.http_status, headers={**error.headers, **(headers or {})})


def _default_type(http_status: int) -> str:
    if http_status >= 500:
        return "server_error"
    return OPENAI_TYPE.get(http_status, "invalid_request_error")


def openai_error(
    http_status: int, message: str, reason: str = "", param: str | None = None, kind: OpenAIKind | None = None
) -> dict[str, Any]:
    """OpenAI's error body plus ``reason``: ``{"error": {"message", "type",
    "param", "code", "reason"}}``. ``kind`` (default: the table's entry for
    ``reason``) overrides type and code."""
    kind = kind or BY_REASON.get(reason) or OpenAIKind()
    if reason:
        request_log.note(reason=reason)  # for the request's log line
    return {
        "error": {
            "message": message,
            "type": kind.type or _default_type(http_status),
            "param": param,
            "code": kind.code or reason.lower() or None,
            "reason": reason or None,
        }
    }


def bad_request(message: str, param: str | None = None, reason: str = "INVALID_REQUEST") -> ApiError:
    """A 400 ``invalid_request_error`` found by the bridge itself."""
    return ApiError(400, openai_error(400, message, reason, param))


def metadata_value(header: str, value: str) -> str | None:
    """``value`` if gRPC metadata can carry it (printable ASCII), else None.
    Raises a 400 :class:`ApiError` for an ``Idempotency-Key`` it cannot carry;
    other headers are dropped (a dropped key then answers 401)."""
    if value.isascii() and value.isprintable():
        return value
    if header.lower() == IDEMPOTENCY_HEADER:
        message = "Idempotency-Key must be at most 255 printable ASCII characters"
        raise bad_request(message, "Idempotency-Key", "IDEMPOTENCY_KEY_INVALID")
    return None


def _param(field: str) -> str:
    return field.removeprefix("options.")


def from_status(status: status_pb2.Status) -> ApiError:
    """Decodes a google.rpc.Status (ErrorInfo, BadRequest, RetryInfo) to an :class:`ApiError`."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    reason = ""
    param = None
    retry_after = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations:
                param = _param(bad.field_violations[0].field)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToMilliseconds() / 1000
    kind = BY_REASON.get(reason) if reason else WITHOUT_REASON.get(code)
    kind = kind or OpenAIKind()
    http_status = kind.http_status or HTTP_STATUS.get(code, 500)
    return ApiError(http_status, openai_error(http_status, status.message, reason, param, kind), retry_after)


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """Decodes a failed call; a status without details still maps by its code."""
    status = rpc_status.from_call(error)
    if status is None:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return from_status(status)
