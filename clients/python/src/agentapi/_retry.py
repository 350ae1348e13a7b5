"""Which failures are retried, and how long to wait: shared by both clients.

Retries use tenacity (the server's own retry library): its ``Retrying`` and
``AsyncRetrying`` share one policy object, so the sync and async clients cannot
drift. gRPC's built-in retry policy was not used: it cannot read RetryInfo from
the status details, nor tell agentapi's reasons apart.
"""

from __future__ import annotations

import enum
from typing import Any

import grpc
from tenacity import RetryCallState, wait_random_exponential

from agentapi.errors import AgentAPIError, BudgetExceededError, StreamInterruptedError

MAX_RETRY_DELAY_S = 30.0
_backoff = wait_random_exponential(multiplier=0.25, max=4.0)
_TRANSIENT_REASONS = {"IDEMPOTENCY_REQUEST_IN_FLIGHT"}


class Safety(enum.Enum):
    """How a method may be retried.

    READ: no effect (Get, List, Export): retried on any transient failure.
    KEYED: carries an ``idempotency-key`` (Create*, SendMessage, SendStreamingMessage,
        SubmitToolOutputs, RegenerateMessage, ForkSession, ReplaySession): the server
        answers a repeat with the stored outcome, so retried like a read.
    UNSAFE: an effect the server does not deduplicate (Update, Delete, Revoke, ...):
        retried only after a refusal that happens before anything is done (a rate
        limit with RetryInfo).
    """

    READ = "read"
    KEYED = "keyed"
    UNSAFE = "unsafe"


def should_retry(error: BaseException, safety: Safety) -> bool:
    """True when ``error`` is transient for a call of this ``safety``."""
    if not isinstance(error, AgentAPIError) or isinstance(error, (BudgetExceededError, StreamInterruptedError)):
        return False
    if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # a refusal before any work; grpc's own (message size, no RetryInfo) is not transient
        return error.retry_delay_s is not None and error.retry_delay_s <= MAX_RETRY_DELAY_S
    if safety is Safety.UNSAFE:
        return False
    if error.code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.code == grpc.StatusCode.ABORTED and error.reason in _TRANSIENT_REASONS


def wait(state: RetryCallState) -> float:
    """Seconds before the next attempt: RetryInfo's delay when given, else exponential backoff with full jitter."""
    outcome: Any = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, AgentAPIError) and error.retry_delay_s is not None:
        return min(error.retry_delay_s, MAX_RETRY_DELAY_S)
    return float(_backoff(state))
