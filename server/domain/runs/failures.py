"""The turn's own errors, raised from more than one of its steps."""

from __future__ import annotations

import time

from server.domain.errors import AgentAPIError

# The message a shutdown cancels calls with (``Task.cancel(msg)``), so a turn
# stopped by it is stored with that reason rather than as the caller's cancel.
SHUTDOWN_CANCEL = "agentapi: SHUTTING_DOWN"
# The cancel message of a run stopped by CancelTurn (server/domain/runs/live.py).
TURN_CANCEL = "agentapi: TURN_CANCELLED"
# A cancel this close to the turn's deadline is the deadline's (gRPC cancels
# the call when the caller's deadline passes; the clocks differ slightly).
_DEADLINE_SLACK_S = 0.25


def busy(session_id: str) -> AgentAPIError:
    return AgentAPIError(
        "ABORTED",
        "SESSION_BUSY",
        "another turn of this session is running; retry when it ends",
        {"session_id": session_id},
    )


def turn_deadline() -> AgentAPIError:
    return AgentAPIError(
        "DEADLINE_EXCEEDED",
        "TURN_DEADLINE_EXCEEDED",
        "the turn ran out of time (the caller's deadline or the server's maximum turn duration)",
    )


def stop_reason(exc: BaseException, deadline: float) -> AgentAPIError:
    """Why a turn was cancelled: the server's shutdown (UNAVAILABLE,
    SHUTTING_DOWN), the caller's deadline, ``deadline`` being the turn's
    (time.monotonic()) one (DEADLINE_EXCEEDED, TURN_DEADLINE_EXCEEDED), else
    the caller (CANCELLED)."""
    if SHUTDOWN_CANCEL in getattr(exc, "args", ()):
        return AgentAPIError("UNAVAILABLE", "SHUTTING_DOWN", "the server shut down before the turn finished")
    if TURN_CANCEL in getattr(exc, "args", ()):
        return AgentAPIError("CANCELLED", "TURN_CANCELLED", "the turn was cancelled (CancelTurn)")
    if time.monotonic() >= deadline - _DEADLINE_SLACK_S:
        return AgentAPIError("DEADLINE_EXCEEDED", "TURN_DEADLINE_EXCEEDED", "the caller's deadline passed")
    return AgentAPIError("CANCELLED", "CANCELLED", "the caller cancelled the turn")
