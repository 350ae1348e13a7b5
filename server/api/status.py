"""Builds ``google.rpc.Status`` from domain errors: the single place that does."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.domain.errors import ERROR_DOMAIN, AgentAPIError


def to_status(error: AgentAPIError) -> status_pb2.Status:
    """A Status with exactly one ErrorInfo, plus BadRequest and RetryInfo when set."""
    details = [error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata))]
    if error.field_violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.field_violations
                ]
            )
        )
    if error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_s * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code_pb2.Code.Value(error.code), message=error.message, details=packed)


def grpc_code(error: AgentAPIError) -> grpc.StatusCode:
    """The grpc.StatusCode named by ``error.code``."""
    return grpc.StatusCode[error.code]
