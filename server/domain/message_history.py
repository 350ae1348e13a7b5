"""Deleting and searching messages (issue 22).

Delete is AIP-164's soft delete: ``delete_time`` hides a message from every
later prompt (:func:`server.domain.runs.messages.in_prompt`), from
``ListMessages`` (unless ``show_deleted``), from export and replay, and from
search; the row with its usage and cost stays, since the usage ledger and
budgets sum it. After ``expire_time`` (30 days, as for conversations and
agents) ``agentapi purge`` erases its content; ``force`` (operators) erases it
at once. A tool call and its results are one unit: deleting either deletes
both, so no prompt ever holds a call without its results or a result
without its call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.common import Principal, is_uuid, require_operator, require_uuid, utcnow
from server.domain.errors import AgentAPIError, FieldViolation, invalid_argument, not_found
from server.domain.pagination import PageTokens, page_size
from server.domain.sessions import SessionService
from server.store.db import Database
from server.store.message_history import (
    MessageHistoryRepository,
    SearchFilters,
    SearchHit,
    erase,
    expired_deleted,
    query_words,
    search,
)
from server.store.models import MessageRow
from server.store.repositories import AgentRepository

# How long a deleted message keeps its content before `agentapi purge` erases it;
# the same 30 days as conversations and agents (their DELETE_RETENTION).
DELETE_RETENTION = timedelta(days=30)
MAX_QUERY_CHARS = 256
# Characters of context on each side of the first match in a MySQL snippet.
SNIPPET_CONTEXT = 60
PURGE_BATCH = 500
ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class SearchPage:
    """One page of search hits, best first, and the token of the next page ("" on the last)."""

    hits: list[SearchHit]
    next_page_token: str


class MessageHistoryService:
    """DeleteMessage and SearchMessages over one tenant's messages."""

    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens

    async def delete(self, principal: Principal, session_id: str, message_id: str, force: bool) -> list[MessageRow]:
        """Soft-deletes a message with its tool-call group; returns the group in
        sequence order. Deleting again returns the same messages (with ``force``,
        erasing what is not erased yet).

        Raises PERMISSION_DENIED (OPERATOR_REQUIRED) for ``force`` by a
        non-operator; INVALID_ARGUMENT (INVALID_SESSION_ID, INVALID_MESSAGE_ID);
        NOT_FOUND (SESSION_NOT_FOUND, MESSAGE_NOT_FOUND; also for another
        tenant's); FAILED_PRECONDITION (SESSION_BUSY while a turn runs,
        MESSAGE_IN_PROGRESS for an unfinished message, TOOL_CALLS_PENDING for
        a call still waiting for its results)."""
        if force:
            require_operator(principal)
        message_id = require_uuid(message_id, "message_id", "INVALID_MESSAGE_ID")
        async with self.db.session() as db:
            view = await SessionService.load(db, principal, session_id)
            repository = MessageHistoryRepository(db, principal.tenant_id)
            target = await repository.get(view.row.id, message_id)
            if target is None:
                raise not_found("message", message_id)
            group = await _group(repository, target)
            if any(m.delete_time is None for m in group):
                _check_deletable(view.row.active_reply_id, group)
            now = utcnow()
            for message in group:
                if message.delete_time is None:
                    message.delete_time = message.update_time = now
                    message.expire_time = now + DELETE_RETENTION
                if force and message.purge_time is None:
                    erase(message, now)
            await db.commit()
        return group

    async def search(
        self, principal: Principal, query: str, filters: SearchFilters, size: int, token: str
    ) -> SearchPage:
        """At most ``page_size`` (1-100, default 20) of the caller's tenant's
        live messages matching ``query`` (any of its words), best first, each
        with a snippet marking the matched words with ``<mark>``/``</mark>``.

        MySQL/MariaDB's natural-language search skips words shorter than
        ``innodb_ft_min_token_size`` (3 by default) and its stopwords, and a
        word in most rows ranks low; SQLite's FTS5 matches every word. On
        MySQL the snippet is built here, around the first matched word; on
        SQLite it is FTS5's ``snippet()``. Snippets are plain text (not HTML
        escaped) apart from the marks.

        Raises INVALID_ARGUMENT (FIELD_VIOLATION for an empty query or one over
        256 characters, a bad role, an end before the start;
        INVALID_CONVERSATION_ID, INVALID_SESSION_ID; INVALID_PAGE_TOKEN),
        NOT_FOUND (AGENT_NOT_FOUND for an unknown agent key)."""
        _check_query(query)
        filters = await self._checked(filters)
        limit = page_size(size)
        params = {
            "kind": "message_search",
            "tenant": principal.tenant_id,
            "query": query,
            "filters": [str(value) for value in vars(filters).values()],
        }
        cursor = self.tokens.decode(token, params)
        after = (float(cursor[0]), str(cursor[1])) if cursor else None
        async with self.db.session() as db:
            hits = await search(db, principal.tenant_id, query, filters, after, limit + 1)
        kept, following = self.tokens.page(hits, limit, params, lambda hit: [hit.score, hit.message.id])
        words = query_words(query)
        return SearchPage([_with_snippet(hit, words) for hit in kept], following)

    async def _checked(self, filters: SearchFilters) -> SearchFilters:
        """The filters with UUIDs lower-cased and an agent key resolved to its id."""
        conversation_id = filters.conversation_id and require_uuid(
            filters.conversation_id, "conversation_id", "INVALID_CONVERSATION_ID"
        )
        session_id = filters.session_id and require_uuid(filters.session_id, "session_id", "INVALID_SESSION_ID")
        agent_id = filters.agent_id
        if agent_id and is_uuid(agent_id):
            agent_id = agent_id.lower()
        elif agent_id:
            async with self.db.session() as db:
                agent = await AgentRepository(db).get_by_key(agent_id)
            if agent is None:
                raise not_found("agent", agent_id)
            agent_id = agent.id
        if filters.role and filters.role not in ROLES:
            raise invalid_argument("role is not a message role", [FieldViolation("role", "unknown role")])
        if filters.start_time and filters.end_time and filters.end_time <= filters.start_time:
            raise invalid_argument(
                "end_time must be after start_time", [FieldViolation("end_time", "must be after start_time")]
            )
        return SearchFilters(conversation_id, session_id, agent_id, filters.role, filters.start_time, filters.end_time)


async def purge_expired_messages(db: Database, now: datetime | None = None) -> int:
    """Erases the content of deleted messages past their expire_time (any
    tenant), keeping their usage and cost, in batches of 500; returns how
    many were erased. ``agentapi purge`` runs it."""
    now = now or utcnow()
    total = 0
    while True:
        async with db.session() as session:
            rows = await expired_deleted(session, now, PURGE_BATCH)
            for row in rows:
                erase(row, utcnow())
            await session.commit()
        total += len(rows)
        if len(rows) < PURGE_BATCH:
            return total


async def _group(repository: MessageHistoryRepository, target: MessageRow) -> list[MessageRow]:
    """``target`` with its tool-call group: an assistant message with tool calls
    and every tool message answering them."""
    call: MessageRow | None = target
    if target.role == "tool":
        call = await repository.calling(target)
    if call is None or not call.tool_calls:
        return [target]
    group = {m.id: m for m in [call, target, *await repository.results(call)]}
    return sorted(group.values(), key=lambda m: m.sequence)


def _check_deletable(active_reply_id: str | None, group: list[MessageRow]) -> None:
    if active_reply_id is not None:
        # A running turn has read its history already: what it sends next
        # could still hold the message. Deleting waits for the turn to end.
        raise AgentAPIError(
            "FAILED_PRECONDITION", "SESSION_BUSY", "a turn is running in this session; delete after it ends"
        )
    for message in group:
        if message.status == "in_progress":
            raise AgentAPIError("FAILED_PRECONDITION", "MESSAGE_IN_PROGRESS", f"message {message.id} is not finished")
    call = group[0]
    if call.role == "assistant" and call.status == "requires_action":
        answered = {m.tool_call_id for m in group if m.role == "tool"}
        if any(c.get("id") not in answered for c in call.tool_calls or ()):
            # Reconciliation would still accept results for the hidden call,
            # and a prompt would then hold results without their call.
            raise AgentAPIError(
                "FAILED_PRECONDITION",
                "TOOL_CALLS_PENDING",
                f"message {call.id} has tool calls waiting for results; answer them first",
            )


def _check_query(query: str) -> None:
    if not query.strip() or len(query) > MAX_QUERY_CHARS:
        raise invalid_argument(
            f"query must be 1 to {MAX_QUERY_CHARS} characters",
            [FieldViolation("query", f"must be 1 to {MAX_QUERY_CHARS} characters, not blank")],
        )


def _with_snippet(hit: SearchHit, words: list[str]) -> SearchHit:
    if hit.snippet:
        return hit
    return SearchHit(hit.message, hit.conversation_id, hit.score, mark_snippet(hit.message.content, words))


def mark_snippet(content: str, words: list[str], context: int = SNIPPET_CONTEXT) -> str:
    """An excerpt of ``content`` around the first of ``words`` it holds (whole
    words, case-insensitive), every one of them inside wrapped in
    ``<mark>``/``</mark>``, with ``…`` where text was cut; the start of the
    content when none is found."""
    if not words:
        return content[: 2 * context]
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    first = pattern.search(content)
    if first is None:
        return content[: 2 * context] + ("…" if len(content) > 2 * context else "")
    start = max(0, first.start() - context)
    end = min(len(content), first.end() + context)
    excerpt = pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", content[start:end])
    return ("…" if start else "") + excerpt + ("…" if end < len(content) else "")
