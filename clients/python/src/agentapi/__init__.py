"""agentapi's Python client.

``agentapi.Client`` (blocking) and ``agentapi.AsyncClient`` (asyncio) wrap the
generated stubs of ``agentapi.v1``: typed resources, paging iterators, streamed
turns, typed errors (``agentapi.errors``) and safe retries. Example::

    with agentapi.Client("127.0.0.1:50051", api_key="sk-...") as client:
        session = client.sessions.create(agent_id="helper")
        with client.sessions.stream(session.id, "hi") as turn:
            for text in turn.text_stream:
                print(text, end="")
"""

from agentapi._async.client import AsyncClient
from agentapi._async.sessions import Input
from agentapi._async.streaming import AsyncTurnStream, TurnEvent
from agentapi._sync.client import Client
from agentapi._sync.streaming import TurnStream
from agentapi.errors import (
    AgentAPIError,
    AlreadyExistsError,
    AuthenticationError,
    BudgetExceededError,
    CancelledError,
    ConflictError,
    ContentFilteredError,
    ContextWindowExceededError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    SessionBusyError,
    StreamInterruptedError,
    ToolOutputsPendingError,
    UnavailableError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

__all__ = [
    "AgentAPIError",
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncTurnStream",
    "AuthenticationError",
    "BudgetExceededError",
    "CancelledError",
    "Client",
    "ConflictError",
    "ContentFilteredError",
    "ContextWindowExceededError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "Input",
    "InternalError",
    "InvalidArgumentError",
    "ModelNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "SessionBusyError",
    "StreamInterruptedError",
    "ToolOutputsPendingError",
    "TurnEvent",
    "TurnStream",
    "UnavailableError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRateLimitedError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
]
