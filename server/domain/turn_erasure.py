"""Erasing one finished turn for good (EraseTurn): what OpenAI's ``store:
false`` leaves of a response is its usage, so the bridge runs the turn and
then erases it.

A turn is the run of step-0 messages (its inputs) and the messages of steps
1 and on that follow them (its steps' replies and server tool results), the
same grouping the Responses surface shows (gateway/openai/responses_convert.py).
Each message is soft-deleted (AIP-164, as DeleteMessage) and its content
erased at once (as DeleteMessage's ``force``); usage, cost and model stay,
since the ledger and budgets sum them. Unlike ``force``, any caller who may
read the session may erase its own turn: erasing only removes what the
caller sent and was sent.
"""

from __future__ import annotations

from typing import Any

from server.domain.common import Principal, require_uuid, utcnow
from server.domain.errors import AgentAPIError, not_found
from server.domain.sessions import SessionService
from server.store.db import Database
from server.store.message_history import erase
from server.store.models import MessageRow
from server.store.repositories import MessageRepository


def turn_of(history: list[Any], message_id: str) -> list[Any]:
    """The messages of the turn holding ``message_id`` (rows in sequence
    order, with ``id`` and ``step``), or [] when no message has that id."""
    turns: list[list[Any]] = []
    outputs_seen = False
    for row in history:
        if row.step == 0 and (not turns or outputs_seen):
            turns.append([])
            outputs_seen = False
        if not turns:
            turns.append([])
        turns[-1].append(row)
        outputs_seen = outputs_seen or row.step > 0
    return next((turn for turn in turns if any(row.id == message_id for row in turn)), [])


async def erase_turn(db: Database, principal: Principal, session_id: str, message_id: str) -> list[MessageRow]:
    """Hides and erases the turn holding ``message_id``; returns its messages.

    Raises INVALID_ARGUMENT (INVALID_SESSION_ID, INVALID_MESSAGE_ID),
    NOT_FOUND (SESSION_NOT_FOUND, MESSAGE_NOT_FOUND; also another tenant's),
    FAILED_PRECONDITION (SESSION_BUSY while a turn runs in the session).
    """
    message_id = require_uuid(message_id, "message_id", "INVALID_MESSAGE_ID")
    async with db.session() as session:
        view = await SessionService.load(session, principal, session_id)
        if view.row.active_reply_id is not None:
            raise AgentAPIError(
                "FAILED_PRECONDITION", "SESSION_BUSY", "a turn is running in this session; erase after it ends"
            )
        turn = turn_of(await MessageRepository(session, view.row.id).history(), message_id)
        if not turn:
            raise not_found("message", message_id)
        now = utcnow()
        rows: list[MessageRow] = []
        for snapshot in turn:
            row = await session.get(MessageRow, snapshot.id)
            if row is None:
                continue
            if row.delete_time is None:
                row.delete_time = row.update_time = now
                row.expire_time = now
            if row.purge_time is None:
                erase(row, now)
            rows.append(row)
        await session.commit()
    return rows
