"""Regenerating a reply: the latest turn of a session runs again on the same
inputs. Its old messages (each step's reply and the server's tool messages)
stay stored, ``superseded_by`` the new reply, and leave the session's active
path, so no later prompt includes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.errors import AgentAPIError, not_found
from server.store.models import MessageRow

_SUPERSEDE = (
    update(MessageRow.__table__)
    .where(MessageRow.__table__.c.id.in_(bindparam("ids", expanding=True)))
    .values(superseded_by=bindparam("by"))
)


def _is_input(message: Any) -> bool:
    """A message the caller sent: a user message, or a client tool's output."""
    return message.role == "user" or (message.role == "tool" and message.executor in ("", "client"))


def latest_run(history: Sequence[Any], message_id: str) -> list[Any]:
    """The messages the session's latest turn produced (after its inputs), to
    be superseded. ``message_id`` ('' for the last reply) must name one of its
    assistant replies. Raises NOT_FOUND (MESSAGE_NOT_FOUND) and
    FAILED_PRECONDITION (NOT_REGENERABLE)."""
    active = [m for m in history if not m.superseded_by and not m.delete_time]
    start = max((i for i, m in enumerate(active) if _is_input(m)), default=-1) + 1
    run = active[start:]
    replies = [m for m in run if m.role == "assistant"]
    if not replies or start == 0:
        raise AgentAPIError(
            "FAILED_PRECONDITION",
            "NOT_REGENERABLE",
            "the session has no reply to regenerate after its last input",
        )
    if message_id and message_id not in {m.id for m in replies}:
        if message_id not in {m.id for m in history}:
            raise not_found("message", message_id)
        raise AgentAPIError(
            "FAILED_PRECONDITION",
            "NOT_REGENERABLE",
            "only the session's latest turn can be regenerated; fork the session at that turn's input to redo it",
            {"message_id": message_id},
        )
    return run


async def supersede(session: AsyncSession, run: Sequence[Any], by: str) -> None:
    """Marks the old run's messages ``superseded_by`` the new reply (in the
    new turn's first transaction)."""
    if run:
        connection = await session.connection()
        await connection.execute(_SUPERSEDE, {"ids": [m.id for m in run], "by": by})
