"""Forking a session: a new session of the same conversation whose history is
the original's up to a message, optionally with that user message edited.

The original is untouched. The fork is pinned to the same agent revision and
records its parent session and message; its messages are copies (new ids,
sequences from 1) that carry no usage or cost, since the original's turns
were billed once already.
"""

from __future__ import annotations

from typing import Any

from server.domain.common import Principal, new_id, require_uuid, utcnow
from server.domain.errors import AgentAPIError, not_found
from server.domain.history import count_message
from server.domain.message_copies import copy_message
from server.domain.runs.messages import in_prompt, to_openai
from server.domain.sessions import SessionService, SessionView
from server.store.db import Database
from server.store.models import MessageRow, SessionRow
from server.store.repositories import MessageRepository

MAX_EDIT_CHARS = 1_048_576


async def fork(
    db: Database, principal: Principal, session_id: str, message_id: str, edited: str | None
) -> tuple[SessionView, list[MessageRow]]:
    """Creates the fork and returns it with its messages.

    Raises INVALID_ARGUMENT (INVALID_SESSION_ID, INVALID_MESSAGE_ID,
    FIELD_VIOLATION for an edit of a message that is not the user's, or an
    empty or oversized edit), NOT_FOUND (SESSION_NOT_FOUND, MESSAGE_NOT_FOUND
    for a message of another session, or one deleted), FAILED_PRECONDITION
    (MESSAGE_IN_PROGRESS for a reply still running).
    """
    message_id = require_uuid(message_id, "message_id", "INVALID_MESSAGE_ID")
    async with db.session() as session:
        view = await SessionService.load(session, principal, session_id)
        history = await MessageRepository(session, view.row.id).history()
        target = next((m for m in history if m.id == message_id and not getattr(m, "delete_time", None)), None)
        if target is None:
            raise not_found("message", message_id)
        if target.status == "in_progress":
            raise AgentAPIError(
                "FAILED_PRECONDITION", "MESSAGE_IN_PROGRESS", "the message is still being written; fork after it ends"
            )
        if edited is not None:
            _check_edit(target, edited)
        now = utcnow()
        row = SessionRow(
            id=new_id(),
            tenant_id=view.row.tenant_id,
            conversation_id=view.row.conversation_id,
            agent_id=view.row.agent_id,
            agent_revision=view.row.agent_revision,
            overrides=dict(view.row.overrides or {}),
            metadata_=dict(view.row.metadata_ or {}),
            status="active",
            parent_session_id=view.row.id,
            parent_message_id=target.id,
            create_time=now,
            update_time=now,
        )
        session.add(row)
        await session.flush()
        kept = [m for m in history if m.sequence <= target.sequence and in_prompt(m) and not m.delete_time]
        copies = [
            _copy(m, row, sequence, now, edited if m.id == target.id else None) for sequence, m in enumerate(kept, 1)
        ]
        if copies:
            await MessageRepository(session, row.id).insert(copies)
        await session.commit()
    return SessionView(row, view.agent), copies


def _check_edit(target: Any, edited: str) -> None:
    if target.role != "user":
        raise AgentAPIError(
            "INVALID_ARGUMENT", "FIELD_VIOLATION", "only a user message can be edited; fork without an edit"
        )
    if not edited.strip() or len(edited) > MAX_EDIT_CHARS:
        raise AgentAPIError(
            "INVALID_ARGUMENT", "FIELD_VIOLATION", f"edited_content must be 1 to {MAX_EDIT_CHARS} characters"
        )


def _copy(message: Any, target: SessionRow, sequence: int, now: Any, edited: str | None) -> MessageRow:
    """A copy for the fork, the edit applied (its token count counted again)."""
    if edited is None:
        return copy_message(message, target, sequence, now, "forked_from")
    copy = copy_message(message, target, sequence, now, "forked_from", content=edited, content_parts=None)
    copy.token_count = count_message(to_openai(copy), copy.model)
    return copy
