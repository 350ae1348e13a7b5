"""The terminal write of a turn: its reply's final status, content, usage and cost."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import bindparam, update

from server.domain.catalog import Catalog
from server.domain.errors import AgentAPIError
from server.domain.money import ZERO, money
from server.llm.types import TokenUsage
from server.store.db import Database
from server.store.models import MessageRow
from server.store.repositories import MessageRepository
from server.store.turns import BudgetRepository, release_turn

# What the terminal update of an assistant message writes.
TERMINAL_COLUMNS = (
    "status", "content", "tool_calls", "finish_reason", "prompt_tokens", "completion_tokens", "cost_usd",
    "time_to_first_token_ms", "duration_ms", "upstream_request_id", "error", "update_time", "model", "attempts",
    "token_count", "logprobs", "refusal", "reasoning_content", "thinking_blocks", "reasoning_tokens", "routing",
)  # fmt: skip
_TERMINAL_UPDATE = (
    update(MessageRow.__table__)
    .where(MessageRow.__table__.c.id == bindparam("reply_id"))
    .values({name: bindparam(name) for name in TERMINAL_COLUMNS})
)


async def reply_cost(
    catalog: Catalog, model: str, usage: TokenUsage | None, header_cost: float | None, reply: MessageRow
) -> Decimal:
    """US dollars (exact, see :mod:`server.domain.money`): the upstream's reported
    cost (usage block, then header), else the catalog's prices."""
    if usage is not None and usage.cost_usd is not None:
        return money(usage.cost_usd)
    if header_cost is not None:
        return money(header_cost)
    if not reply.prompt_tokens and not reply.completion_tokens:
        return ZERO
    info = await catalog.find(model)
    return money(info.cost(reply.prompt_tokens, reply.completion_tokens)) if info else ZERO


async def finish(db: Database, stored: asyncio.Future[None], reply: MessageRow) -> AgentAPIError | None:
    """Waits for the turn's first commit, then stores the reply's terminal
    state; returns the first commit's error instead (then there is no reply
    row to update, and the turn's budget reservation is dropped)."""
    try:
        await stored
    except AgentAPIError as exc:
        if getattr(reply, "reserved", False):
            async with db.session() as session:
                await BudgetRepository(session).remove(_run_id(reply))
                await session.commit()
        return exc
    await store_reply(db, reply)
    return None


def _run_id(reply: MessageRow) -> str:
    """The id the run's session claim and budget reservation are held under: its first step's reply."""
    return str(getattr(reply, "run_reply_id", None) or reply.id)


async def store_reply(db: Database, reply: MessageRow) -> None:
    """UPDATEs the reply row with its terminal columns and commits; unless the
    run goes on after this step (``reply.continues``: its server tool calls
    run next), also frees the session and the run's budget reservation (the
    recorded usage replaces it)."""
    values = {name: getattr(reply, name) for name in TERMINAL_COLUMNS}
    async with db.session() as session:
        # A plain Core UPDATE with bound parameters: the ORM-enabled form
        # costs about a millisecond more per turn (bench/turncost.py).
        connection = await session.connection()
        await connection.execute(_TERMINAL_UPDATE, {"reply_id": reply.id, **values})
        if not getattr(reply, "continues", False):
            await release_turn(connection, reply.session_id, _run_id(reply), getattr(reply, "reserved", False))
        await session.commit()


async def release_run(db: Database, reply: MessageRow) -> None:
    """Frees the session and the budget reservation of the run ``reply``
    belongs to, when it ends between steps (cancelled while tools ran, or
    after the server calls of a step that waits for the caller)."""
    async with db.session() as session:
        connection = await session.connection()
        await release_turn(connection, reply.session_id, _run_id(reply), getattr(reply, "reserved", False))
        await session.commit()


# What the terminal update of a server-side tool message writes.
TOOL_RESULT_COLUMNS = ("status", "content", "error", "duration_ms", "token_count", "update_time")
_TOOL_RESULT_UPDATE = (
    update(MessageRow.__table__)
    .where(MessageRow.__table__.c.id == bindparam("message_id"))
    .values({name: bindparam(name) for name in TOOL_RESULT_COLUMNS})
)


async def store_tool_result(db: Database, message: MessageRow) -> None:
    """UPDATEs a server-side tool message with its outcome and commits."""
    values = {name: getattr(message, name) for name in TOOL_RESULT_COLUMNS}
    async with db.session() as session:
        connection = await session.connection()
        await connection.execute(_TOOL_RESULT_UPDATE, {"message_id": message.id, **values})
        await session.commit()


async def insert_messages(db: Database, messages: list[MessageRow]) -> None:
    """INSERTs rows of a running turn (a step's tool messages, its next reply)
    and commits."""
    async with db.session() as session:
        await MessageRepository(session, messages[0].session_id).insert(messages)
        await session.commit()
