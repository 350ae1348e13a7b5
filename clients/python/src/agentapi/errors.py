"""Typed errors decoded from agentapi's ``google.rpc.Status`` details.

Example::

    try:
        await stub.GetSession(request, metadata=auth)
    except grpc.aio.AioRpcError as exc:
        error = agentapi.errors.from_rpc_error(exc)
        if error.reason == "SESSION_NOT_FOUND": ...

Decisions are made on ``reason`` (from ErrorInfo), never on message text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "agentapi"


@dataclass
class AgentAPIError(Exception):
    """A failed call.

    Attributes:
        code: the gRPC status code.
        reason: ErrorInfo reason, e.g. ``AGENT_NOT_FOUND``; empty if absent.
        message: the status message.
        metadata: ErrorInfo metadata.
        field_violations: (field path, description) pairs from BadRequest.
        retry_delay_s: seconds from RetryInfo, or None.
    """

    code: grpc.StatusCode
    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    retry_delay_s: float | None = None

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


def from_rpc_error(error: grpc.RpcError) -> AgentAPIError:
    """Decodes the status details of a failed call (grpc or grpc.aio)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    result = AgentAPIError(error.code(), "", error.details() or "")  # type: ignore[attr-defined]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                result.reason, result.metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.field_violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_delay_s = retry.retry_delay.ToMilliseconds() / 1000
    return result
