"""Queries for deleting and searching messages: a message's tool-call group,
the expired deleted messages, and the full-text search (MySQL/MariaDB
``MATCH ... AGAINST`` over the ``FULLTEXT`` index of migration 0012, SQLite
FTS5 ``messages_fts``). Like every repository, they never commit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import MessageRow

# What erasing a message's content writes: the text, its parts, reasoning,
# logprobs and refusal go; usage, cost, model and token counts stay (billing).
ERASED: dict[str, Any] = {
    "content": "",
    "content_parts": None,
    "reasoning_content": None,
    "thinking_blocks": None,
    "logprobs": None,
    "refusal": None,
}

# How far back a tool message looks for the assistant message that called it.
_CALL_LOOKBACK = 256
_WORD = re.compile(r"\w+", re.UNICODE)


def erase(row: MessageRow, now: datetime) -> None:
    """Erases a loaded message's content in place (see ``ERASED``); tool calls
    keep their id, type and function name, their arguments become ``""``."""
    for name, value in ERASED.items():
        setattr(row, name, value)
    if row.tool_calls:
        row.tool_calls = [
            {**call, "function": {**(call.get("function") or {}), "arguments": ""}} for call in row.tool_calls
        ]
    row.purge_time = now


class MessageHistoryRepository:
    """Messages of one tenant, for deletion and search."""

    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def get(self, session_id: str, message_id: str) -> MessageRow | None:
        """The tenant's message with this id in this session, deleted or not."""
        row = await self.session.get(MessageRow, message_id)
        if row is None or row.tenant_id != self.tenant_id or row.session_id != session_id:
            return None
        return row

    async def calling(self, tool: MessageRow) -> MessageRow | None:
        """The assistant message of ``tool``'s session whose tool calls hold
        ``tool.tool_call_id`` (the newest before it), or None."""
        query = (
            select(MessageRow)
            .where(
                MessageRow.session_id == tool.session_id,
                MessageRow.role == "assistant",
                MessageRow.sequence < tool.sequence,
            )
            .order_by(MessageRow.sequence.desc())
            .limit(_CALL_LOOKBACK)
        )
        for row in (await self.session.execute(query)).scalars():
            if any(call.get("id") == tool.tool_call_id for call in row.tool_calls or ()):
                return row
        return None

    async def results(self, call: MessageRow) -> list[MessageRow]:
        """The tool messages answering ``call``'s tool calls, in sequence order."""
        ids = [str(c.get("id", "")) for c in call.tool_calls or ()]
        if not ids:
            return []
        query = (
            select(MessageRow)
            .where(
                MessageRow.session_id == call.session_id,
                MessageRow.role == "tool",
                MessageRow.sequence > call.sequence,
                MessageRow.tool_call_id.in_(ids),
            )
            .order_by(MessageRow.sequence)
        )
        return list((await self.session.execute(query)).scalars())


async def expired_deleted(session: AsyncSession, now: datetime, limit: int) -> list[MessageRow]:
    """Up to ``limit`` deleted messages (any tenant) past their expire_time whose content is not erased yet."""
    query = (
        select(MessageRow)
        .where(MessageRow.expire_time < now, MessageRow.purge_time.is_(None))
        .order_by(MessageRow.expire_time, MessageRow.id)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True)
class SearchFilters:
    """What a search is limited to; empty strings and None mean no limit."""

    conversation_id: str = ""
    session_id: str = ""
    agent_id: str = ""
    role: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None


@dataclass(frozen=True)
class SearchHit:
    """One match: the message, its conversation, the score (higher is better) and,
    on SQLite, FTS5's snippet (empty on MySQL: the domain builds it)."""

    message: MessageRow
    conversation_id: str
    score: float
    snippet: str


def fts5_query(query: str) -> str:
    """The words of ``query`` as an FTS5 query that matches any of them (each
    quoted, so no caller text is read as FTS5 syntax); ``""`` when it has none."""
    return " OR ".join(f'"{word}"' for word in _WORD.findall(query))


def query_words(query: str) -> list[str]:
    """The words of a query, as both full-text engines split them."""
    return _WORD.findall(query)


async def search(
    session: AsyncSession,
    tenant_id: str,
    query: str,
    filters: SearchFilters,
    after: tuple[float, str] | None,
    limit: int,
) -> list[SearchHit]:
    """Up to ``limit`` of the tenant's live (not deleted) messages matching
    ``query``, best first, ties by id, after the (score, id) cursor.

    Scores: MySQL/MariaDB natural-language relevance; SQLite ``-bm25`` (FTS5's
    rank is lower-is-better, negated so both read higher-is-better)."""
    sqlite = session.bind.dialect.name == "sqlite"
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit}
    if sqlite:
        params["query"] = fts5_query(query)
        if not params["query"]:
            return []
        score = "-bm25(messages_fts)"
        snippet = "snippet(messages_fts, 0, '<mark>', '</mark>', '…', 16)"
        source = "messages_fts JOIN messages m ON m.rowid = messages_fts.rowid"
        match = "messages_fts MATCH :query"
    else:
        params["query"] = query
        score = "MATCH(m.content) AGAINST (:query IN NATURAL LANGUAGE MODE)"
        snippet = "''"
        source = "messages m"
        match = "MATCH(m.content) AGAINST (:query IN NATURAL LANGUAGE MODE) > 0"
    conditions = [match, "m.tenant_id = :tenant", "m.delete_time IS NULL", "s.tenant_id = :tenant"]
    for column, name in (
        ("s.conversation_id", "conversation_id"),
        ("m.session_id", "session_id"),
        ("s.agent_id", "agent_id"),
        ("m.role", "role"),
    ):
        value = getattr(filters, name)
        if value:
            conditions.append(f"{column} = :{name}")
            params[name] = value
    if filters.start_time is not None:
        conditions.append("m.create_time >= :start_time")
        params["start_time"] = filters.start_time
    if filters.end_time is not None:
        conditions.append("m.create_time < :end_time")
        params["end_time"] = filters.end_time
    inner = (
        f"SELECT m.id AS id, s.conversation_id AS conversation_id, {score} AS score, {snippet} AS snippet "
        f"FROM {source} JOIN sessions s ON s.id = m.session_id WHERE {' AND '.join(conditions)}"
    )
    # Keyset over (score desc, id asc), like Elasticsearch's search_after: the
    # outer query compares the computed score, which FTS5 and MATCH only give
    # in the select list.
    page = ""
    if after is not None:
        page = "WHERE hits.score < :after_score OR (hits.score = :after_score AND hits.id > :after_id)"
        params["after_score"], params["after_id"] = after
    statement = text(f"SELECT * FROM ({inner}) AS hits {page} ORDER BY hits.score DESC, hits.id LIMIT :limit")
    found = (await session.execute(statement, params)).all()
    if not found:
        return []
    ids = [row.id for row in found]
    messages = {m.id: m for m in (await session.execute(select(MessageRow).where(MessageRow.id.in_(ids)))).scalars()}
    return [
        SearchHit(messages[row.id], row.conversation_id, float(row.score), row.snippet or "")
        for row in found
        if row.id in messages
    ]
