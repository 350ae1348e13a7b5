"""The turn's own errors, raised from more than one of its steps."""

from __future__ import annotations

from server.domain.errors import AgentAPIError


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
