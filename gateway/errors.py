"""gRPC status -> HTTP status and OpenAI's error shape: the one table, used everywhere."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

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
# Reasons whose HTTP status differs from their gRPC code's: the upstream (not
# agentapi) is what failed, which HTTP calls a bad gateway; and an idempotency
# key reused for another request, which the IETF Idempotency-Key draft answers 422.
HTTP_STATUS_BY_REASON = {
    "UPSTREAM_UNAVAILABLE": 502,
    "UPSTREAM_PROTOCOL_ERROR": 502,
    "UPSTREAM_EMPTY_COMPLETION": 502,
    "IDEMPOTENCY_KEY_REUSED": 422,
}
IDEMPOTENCY_HEADER = "idempotency-key"
OPENAI_TYPE = {
    400: "invalid_request_error",
    422: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """A decoded gRPC error: HTTP status and OpenAI body, plus ``Retry-After`` if any."""

    def __init__(self, http_status: int, body: dict[str, Any], retry_after_s: float | None = None) -> None:
        super().__init__(body["error"]["message"])
        self.http_status = http_status
        self.body = body
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` when the server gave a RetryInfo."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


def openai_error(http_status: int, message: str, reason: str = "", param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    error_type = OPENAI_TYPE.get(http_status, "api_error")
    code = reason.lower() or None
    if reason == "BUDGET_EXCEEDED":
        # OpenAI's SDKs and dashboards key on this exact type and code for spend caps.
        error_type = code = "insufficient_quota"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def metadata_value(header: str, value: str) -> str | None:
    """``value`` if gRPC metadata can carry it (printable ASCII), else None.
    Raises a 400 :class:`ApiError` for an ``Idempotency-Key`` it cannot carry;
    other headers are dropped (a dropped key then answers 401)."""
    if value.isascii() and value.isprintable():
        return value
    if header.lower() == IDEMPOTENCY_HEADER:
        message = "Idempotency-Key must be at most 255 printable ASCII characters"
        raise ApiError(400, openai_error(400, message, "IDEMPOTENCY_KEY_INVALID", "Idempotency-Key"))
    return None


def from_status(status: status_pb2.Status) -> ApiError:
    """Decodes a google.rpc.Status (ErrorInfo, BadRequest, RetryInfo) to an :class:`ApiError`."""
    code = grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == status.code))
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
                param = bad.field_violations[0].field
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToMilliseconds() / 1000
    http_status = HTTP_STATUS_BY_REASON.get(reason, HTTP_STATUS.get(code, 500))
    return ApiError(http_status, openai_error(http_status, status.message, reason, param), retry_after)


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """Decodes a failed call; a status without details still maps by its code."""
    status = rpc_status.from_call(error)
    if status is None:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return from_status(status)
