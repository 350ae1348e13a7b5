"""Typed errors decoded from agentapi's ``google.rpc.Status`` details.

Every failed call raises a subclass of :class:`AgentAPIError`, chosen by the
ErrorInfo ``reason`` (domain ``agentapi``) and, when no reason is known, by
the gRPC status code. Decisions are made on ``reason``, never on message text.

Example::

    try:
        client.sessions.send(session_id, "hi")
    except agentapi.RateLimitedError as exc:
        time.sleep(exc.retry_after or 1)
    except agentapi.NotFoundError as exc:
        print(exc.reason)  # e.g. SESSION_NOT_FOUND
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
        reason: ErrorInfo reason, e.g. ``AGENT_NOT_FOUND``; empty if absent
            (a transport failure, or a status from outside agentapi).
        message: the status message, for people; never parsed.
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
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asks the caller to wait before retrying (RetryInfo), or None."""
        return self.retry_delay_s


class InvalidArgumentError(AgentAPIError):
    """INVALID_ARGUMENT: the request is malformed or over a limit; see ``field_violations``."""


class NotFoundError(AgentAPIError):
    """NOT_FOUND: the agent, session, conversation, model, ... does not exist (for this tenant)."""


class ConflictError(AgentAPIError):
    """ALREADY_EXISTS or ABORTED: the resource exists, an etag is stale, an idempotency key is reused."""


class AlreadyExistsError(ConflictError):
    """ALREADY_EXISTS: e.g. AGENT_ALREADY_EXISTS for a key in use."""


class FailedPreconditionError(AgentAPIError):
    """FAILED_PRECONDITION: the resource is not in a state that allows the call."""


class SessionBusyError(FailedPreconditionError):
    """SESSION_BUSY: another turn of the session is running; wait for it or cancel it."""


class ToolOutputsPendingError(FailedPreconditionError):
    """TOOL_OUTPUTS_PENDING: the session waits for tool outputs or approvals (SubmitToolOutputs)."""


class AuthenticationError(AgentAPIError):
    """UNAUTHENTICATED: no API key, or one that is unknown or revoked."""


class PermissionDeniedError(AgentAPIError):
    """PERMISSION_DENIED: the key may not do this (e.g. ADMIN_REQUIRED, OPERATOR_REQUIRED)."""


class RateLimitedError(AgentAPIError):
    """RESOURCE_EXHAUSTED / RATE_LIMITED (or UPSTREAM_RATE_LIMITED); ``retry_after`` in seconds."""


class BudgetExceededError(AgentAPIError):
    """RESOURCE_EXHAUSTED / BUDGET_EXCEEDED: the tenant's budget for the period is spent.

    ``retry_after`` points at the next period; retrying sooner does not help."""


class UnavailableError(AgentAPIError):
    """UNAVAILABLE: agentapi or its database cannot answer now (transient: retried)."""


class StreamInterruptedError(UnavailableError):
    """The connection dropped in the middle of a streamed turn.

    The turn may go on, and its reply is stored, on the server: read it with
    ``client.messages.list(session_id)``. Rejoining the live stream from
    ``last_sequence_number`` needs the run's event log (issue 16), not built yet.

    Attributes:
        message_id: the assistant message of the turn, if ``turn_started`` arrived.
        last_sequence_number: the last delta's sequence number received, or 0.
    """

    message_id: str = ""
    last_sequence_number: int = 0


class DeadlineExceededError(AgentAPIError):
    """DEADLINE_EXCEEDED: the call's deadline (``timeout``) or the turn's limit passed."""


class CancelledError(AgentAPIError):
    """CANCELLED: the call or the turn was cancelled."""


class InternalError(AgentAPIError):
    """INTERNAL or UNKNOWN: a fault in agentapi; the details are in the server's log."""


class UpstreamError(AgentAPIError):
    """The LLM upstream (LiteLLM or an OpenAI-compatible API) failed the turn (UPSTREAM_*)."""


class UpstreamUnavailableError(UpstreamError, UnavailableError):
    """UPSTREAM_UNAVAILABLE: the upstream refused or failed (5xx, connection refused)."""


class UpstreamTimeoutError(UpstreamError, DeadlineExceededError):
    """UPSTREAM_TIMEOUT: no first delta within the attempt timeout."""


class UpstreamRateLimitedError(UpstreamError, RateLimitedError):
    """UPSTREAM_RATE_LIMITED: the upstream answered 429."""


class UpstreamProtocolError(UpstreamError):
    """UPSTREAM_PROTOCOL_ERROR, UPSTREAM_EMPTY_COMPLETION, UPSTREAM_BAD_REQUEST, UPSTREAM_AUTH_FAILED,
    UPSTREAM_QUOTA_EXCEEDED: the upstream answered something unusable."""


class ContextWindowExceededError(UpstreamError, InvalidArgumentError):
    """CONTEXT_WINDOW_EXCEEDED: the prompt does not fit the model's context window."""


class ContentFilteredError(UpstreamError):
    """CONTENT_FILTERED: the upstream's content filter refused the turn."""


class ModelNotFoundError(UpstreamError, NotFoundError):
    """MODEL_NOT_FOUND: the model is not served upstream."""


_BY_REASON: dict[str, type[AgentAPIError]] = {
    "SESSION_BUSY": SessionBusyError,
    "TOOL_OUTPUTS_PENDING": ToolOutputsPendingError,
    "RATE_LIMITED": RateLimitedError,
    "BUDGET_EXCEEDED": BudgetExceededError,
    "UPSTREAM_UNAVAILABLE": UpstreamUnavailableError,
    "UPSTREAM_TIMEOUT": UpstreamTimeoutError,
    "UPSTREAM_RATE_LIMITED": UpstreamRateLimitedError,
    "UPSTREAM_PROTOCOL_ERROR": UpstreamProtocolError,
    "UPSTREAM_EMPTY_COMPLETION": UpstreamProtocolError,
    "UPSTREAM_BAD_REQUEST": UpstreamProtocolError,
    "UPSTREAM_AUTH_FAILED": UpstreamProtocolError,
    "UPSTREAM_QUOTA_EXCEEDED": UpstreamProtocolError,
    "CONTEXT_WINDOW_EXCEEDED": ContextWindowExceededError,
    "CONTENT_FILTERED": ContentFilteredError,
    "MODEL_NOT_FOUND": ModelNotFoundError,
}

_BY_CODE: dict[grpc.StatusCode, type[AgentAPIError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.UNKNOWN: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
    grpc.StatusCode.UNIMPLEMENTED: InternalError,
}


def error_class(code: grpc.StatusCode, reason: str) -> type[AgentAPIError]:
    """The exception class for a status: by reason first, then by the reason's
    ``UPSTREAM_`` family, then by code."""
    if reason in _BY_REASON:
        return _BY_REASON[reason]
    if reason.startswith("UPSTREAM_"):
        return UpstreamError
    return _BY_CODE.get(code, AgentAPIError)


def from_rpc_error(error: grpc.RpcError) -> AgentAPIError:
    """Decodes the status details of a failed call (grpc or grpc.aio) into its typed error."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    code: grpc.StatusCode = error.code()
    reason, metadata = "", {}
    violations: list[tuple[str, str]] = []
    retry_delay_s: float | None = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay_s = retry.retry_delay.ToMilliseconds() / 1000
    cls = error_class(code, reason)
    details: str = error.details() or ""
    return cls(code, reason, details, metadata, violations, retry_delay_s)
