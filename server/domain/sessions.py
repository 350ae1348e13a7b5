"""Sessions: creation (optionally carrying a conversation's history forward),
lookup with effective settings, ending, listing, and the message ledger's
listing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, and_

from server.domain import limits
from server.domain.agents import TOOL_NAME_PATTERN, AgentFields, AgentService, fields_of
from server.domain.common import Principal, new_id, require_uuid, utcnow
from server.domain.conversations import deleted_conversation
from server.domain.errors import AgentAPIError, Violations, not_found
from server.domain.filtering import FieldCompiler, FieldMap, compile_filter
from server.domain.message_copies import copy_message
from server.domain.pagination import Page, PageTokens, time_key, time_position
from server.store.db import Database
from server.store.models import ConversationRow, MessageRow, SessionRow
from server.store.repositories import AgentRepository, ConversationRepository, MessageRepository, SessionRepository


@dataclass
class Settings:
    """Model settings of a session: overrides, or the effective merge over the agent."""

    model: str = ""
    temperature: float | None = None
    max_output_tokens: int | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    fallback_models: list[str] = field(default_factory=list)
    system_prompt: str = ""
    allowed_tools: list[str] = field(default_factory=list)
    history_token_budget: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The overrides as stored: only the fields that are set."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", [])}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        """Reads stored overrides, ignoring keys this version does not know."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def effective_settings(agent: AgentFields | None, overrides: Settings) -> Settings:
    """The session's overrides merged over the pinned agent revision's settings."""
    if agent is None:
        merged = replace(overrides)
    else:
        merged = Settings(
            model=overrides.model or agent.default_model,
            temperature=overrides.temperature if overrides.temperature is not None else agent.temperature,
            max_output_tokens=overrides.max_output_tokens,
            tools=overrides.tools or list(agent.tools),
            fallback_models=overrides.fallback_models or ([] if overrides.model else list(agent.fallback_models)),
            system_prompt=overrides.system_prompt or agent.system_prompt,
            allowed_tools=list(overrides.allowed_tools),
            history_token_budget=overrides.history_token_budget,
        )
    if merged.allowed_tools:
        allowed = set(merged.allowed_tools)
        merged.tools = [t for t in merged.tools if tool_name(t) in allowed]
    return merged


def tool_name(tool: dict[str, Any]) -> str:
    """The function name of an OpenAI tool definition."""
    return str((tool.get("function") or {}).get("name", ""))


MAX_HISTORY_TOKEN_BUDGET = 10_000_000


def validate_settings(
    settings: Settings,
    prefix: str,
    violations: Violations,
    available_tools: list[dict[str, Any]] | None = None,
    server_tools: tuple[list[str], list[str]] = ([], []),
) -> None:
    """Records violations for out-of-range temperature, max tokens or history
    budget, bad tool names, and allowed tools that ``available_tools`` (the
    agent's tools, or the session's own) does not define, nor ``server_tools``
    (the agent's built-in tool names, and its MCP server ids, whose tools are
    named ``<server id>__<tool>``); and size-limit violations (see
    :mod:`server.domain.limits`) for too many tools, a tool definition or a
    system prompt that is too large."""
    limits.check_tools(settings.tools, f"{prefix}.tools", violations)
    limits.check_chars(settings.system_prompt, f"{prefix}.system_prompt", violations)
    if settings.temperature is not None and not 0.0 <= settings.temperature <= 2.0:
        violations.add(f"{prefix}.temperature", "must be between 0 and 2")
    if settings.max_output_tokens is not None and settings.max_output_tokens < 1:
        violations.add(f"{prefix}.max_output_tokens", "must be at least 1")
    if settings.history_token_budget is not None and not 1 <= settings.history_token_budget <= MAX_HISTORY_TOKEN_BUDGET:
        violations.add(f"{prefix}.history_token_budget", f"must be between 1 and {MAX_HISTORY_TOKEN_BUDGET}")
    for index, tool in enumerate(settings.tools):
        if not TOOL_NAME_PATTERN.match(tool_name(tool)):
            violations.add(f"{prefix}.tools[{index}].function.name", "must be 1 to 64 of a-z, A-Z, 0-9, '_' or '-'")
    if available_tools is not None:
        names = {tool_name(t) for t in (settings.tools or available_tools)} | set(server_tools[0])
        prefixes = tuple(f"{server_id}__" for server_id in server_tools[1])
        for index, name in enumerate(settings.allowed_tools):
            if name not in names and not (prefixes and name.startswith(prefixes)):
                known = ", ".join(sorted(names)) or "none"
                violations.add(f"{prefix}.allowed_tools[{index}]", f"unknown tool {name!r}; the tools are: {known}")


@dataclass
class SessionView:
    """A session with its pinned agent revision's settings (None for a plain-model session)."""

    row: SessionRow
    agent: AgentFields | None

    @property
    def overrides(self) -> Settings:
        """The stored overrides."""
        return Settings.from_json(self.row.overrides)

    @property
    def effective(self) -> Settings:
        """The overrides merged over the agent's settings."""
        return effective_settings(self.agent, self.overrides)


# Agent revisions never change once written, so every turn of a session can
# share one copy instead of reading it again (a bounded, first-in-first-out cache).
_REVISION_CACHE_SIZE = 4096
_REVISIONS: dict[tuple[str, int], AgentFields] = {}


class SessionService:
    """Creates, reads, ends and lists sessions and lists their messages."""

    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens

    async def create(
        self,
        principal: Principal,
        agent_id: str,
        conversation_id: str,
        overrides: Settings,
        metadata: dict[str, Any],
        carry_forward_history: bool = False,
        pin_revision: int | None = None,
    ) -> SessionView:
        """Stores a session, creating a conversation when ``conversation_id`` is
        empty. With ``carry_forward_history``, the conversation's earlier
        sessions' messages (not failed or unfinished replies) are copied in as
        the new session's first messages, with zero usage, so nothing is billed twice.
        ``pin_revision`` pins an earlier agent revision instead of the current one.

        Raises INVALID_ARGUMENT (FIELD_VIOLATION when neither an agent nor a
        model is given, a setting is out of range or an allowed tool is
        unknown; LIMIT_EXCEEDED for metadata, tools or a system prompt over
        its size limit; INVALID_CONVERSATION_ID), NOT_FOUND (AGENT_NOT_FOUND,
        CONVERSATION_NOT_FOUND), FAILED_PRECONDITION (AGENT_DELETED,
        CONVERSATION_DELETED).
        """
        violations = Violations()
        limits.check_metadata(metadata, "session.metadata", violations)
        limits.raise_if_any(violations)
        if not agent_id and not overrides.model:
            violations.add("session.agent_id", "name an agent, or set overrides.model for a plain-model session")
        if conversation_id:
            conversation_id = require_uuid(conversation_id, "session.conversation_id", "INVALID_CONVERSATION_ID")
        now = utcnow()
        async with self.db.session() as session:
            agent = None
            if agent_id:
                agent = await AgentService.resolve(AgentRepository(session), agent_id, True, principal)
                if agent.delete_time is not None:
                    raise AgentAPIError(
                        "FAILED_PRECONDITION",
                        "AGENT_DELETED",
                        f"agent {agent.key!r} is deleted",
                        {"agent_id": agent.id},
                    )
            server_tools = (
                (list(agent.builtin_tools or []), [entry["server_id"] for entry in agent.mcp_servers or []])
                if agent
                else ([], [])
            )
            validate_settings(
                overrides, "session.overrides", violations, list(agent.tools) if agent else [], server_tools
            )
            limits.raise_if_any(violations)
            carried: list[MessageRow] = []
            if conversation_id:
                conversation = await ConversationRepository(session, principal.tenant_id).get(
                    conversation_id, include_deleted=True
                )
                if conversation is None:
                    raise not_found("conversation", conversation_id)
                if conversation.delete_time is not None:
                    raise deleted_conversation(conversation)
                if carry_forward_history:
                    carried = await SessionRepository(session, principal.tenant_id).conversation_history(
                        conversation_id
                    )
            else:
                conversation_id = new_id()
                session.add(
                    ConversationRow(
                        id=conversation_id,
                        tenant_id=principal.tenant_id,
                        title="",
                        metadata_={},
                        create_time=now,
                        update_time=now,
                    )
                )
                await session.flush()  # the session's foreign key needs the conversation first
            row = SessionRow(
                id=new_id(),
                tenant_id=principal.tenant_id,
                conversation_id=conversation_id,
                agent_id=agent.id if agent else None,
                agent_revision=(pin_revision or agent.revision) if agent else None,
                overrides=overrides.to_json(),
                metadata_=metadata,
                status="active",
                create_time=now,
                update_time=now,
            )
            session.add(row)
            await session.flush()
            session.add_all(_carry(carried, row, now))
            await session.commit()
        if pin_revision:
            return await self.get(principal, row.id)
        return SessionView(row, fields_of(agent) if agent else None)

    async def get(self, principal: Principal, session_id: str) -> SessionView:
        """Raises INVALID_ARGUMENT (INVALID_SESSION_ID) or NOT_FOUND (SESSION_NOT_FOUND)."""
        async with self.db.session() as session:
            return await self.load(session, principal, session_id)

    @staticmethod
    async def load(session: Any, principal: Principal, session_id: str, readonly: bool = False) -> SessionView:
        """Loads a session and its pinned agent revision inside an open database
        session; ``readonly`` reads the session as a plain row (cheaper, for a
        caller that will not change it)."""
        session_id = require_uuid(session_id, "session_id", "INVALID_SESSION_ID")
        repository = SessionRepository(session, principal.tenant_id)
        row = await (repository.snapshot(session_id) if readonly else repository.get(session_id))
        if row is None:
            raise not_found("session", session_id)
        if not row.agent_id:
            return SessionView(row, None)
        revision_key = (row.agent_id, row.agent_revision or 1)
        cached = _REVISIONS.get(revision_key)
        if cached is not None:
            return SessionView(row, cached)
        agents = AgentRepository(session)
        pinned = await agents.revision(*revision_key)
        if pinned is not None:
            fields_ = AgentFields(**pinned.settings)
            if len(_REVISIONS) >= _REVISION_CACHE_SIZE:
                _REVISIONS.pop(next(iter(_REVISIONS)))
            _REVISIONS[revision_key] = fields_
            return SessionView(row, fields_)
        agent = await agents.get(row.agent_id)
        return SessionView(row, fields_of(agent) if agent else None)

    async def end(self, principal: Principal, session_id: str) -> SessionView:
        """Ends the session (status ENDED, ``end_time``); ending an ended
        session returns it unchanged. Raises INVALID_ARGUMENT
        (INVALID_SESSION_ID) or NOT_FOUND (SESSION_NOT_FOUND)."""
        async with self.db.session() as session:
            view = await self.load(session, principal, session_id)
            if view.row.status != "ended":
                view.row.status = "ended"
                view.row.end_time = view.row.update_time = utcnow()
                await session.commit()
        return view

    async def delete_empty(self, principal: Principal, session_id: str) -> bool:
        """Deletes a session that holds no message, and its conversation when
        that was created with it (same create time, no title, no metadata)
        and holds no other session. Returns whether the conversation went.
        Raises INVALID_ARGUMENT (INVALID_SESSION_ID), NOT_FOUND
        (SESSION_NOT_FOUND), FAILED_PRECONDITION (SESSION_NOT_EMPTY)."""
        async with self.db.session() as session:
            view = await self.load(session, principal, session_id)
            sessions = SessionRepository(session, principal.tenant_id)
            if await sessions.has_messages(view.row.id) or view.row.active_reply_id:
                raise AgentAPIError(
                    "FAILED_PRECONDITION",
                    "SESSION_NOT_EMPTY",
                    "the session holds messages, which stay in the ledger; end it instead",
                    {"session_id": view.row.id},
                )
            conversation = await ConversationRepository(session, principal.tenant_id).get(
                view.row.conversation_id, include_deleted=True
            )
            implicit = (
                conversation is not None
                and conversation.create_time == view.row.create_time
                and not conversation.title
                and not conversation.metadata_
                and not await sessions.others_in_conversation(conversation.id, view.row.id)
            )
            await session.delete(view.row)
            if implicit:
                await session.flush()  # the session's foreign key goes first
                await session.delete(conversation)
            await session.commit()
        return implicit

    async def list(self, principal: Principal, conversation_id: str, size: int, token: str) -> Page[SessionView]:
        """At most ``page_size`` (1-100, default 20) sessions of a conversation
        by (create_time, id). Raises INVALID_ARGUMENT (INVALID_CONVERSATION_ID)
        or NOT_FOUND (CONVERSATION_NOT_FOUND)."""
        conversation_id = require_uuid(conversation_id, "conversation_id", "INVALID_CONVERSATION_ID")
        params = {"kind": "sessions", "conversation": conversation_id}
        request = self.tokens.start(token, size, params, time_position)
        async with self.db.session() as session:
            repo = ConversationRepository(session, principal.tenant_id)
            if await repo.get(conversation_id, include_deleted=True) is None:
                raise not_found("conversation", conversation_id)
            rows = await SessionRepository(session, principal.tenant_id).page(
                conversation_id, request.position, request.fetch, request.backward
            )
            page = self.tokens.finish(rows, request, time_key)
            views = [await self.load(session, principal, row.id) for row in page.rows]
        return Page(views, page.next_page_token, page.previous_page_token)

    async def list_messages(
        self,
        principal: Principal,
        session_id: str,
        size: int,
        token: str,
        filter_text: str = "",
        show_deleted: bool = False,
    ) -> Page[MessageRow]:
        """At most ``page_size`` (1-100, default 20) messages in sequence order,
        forwards or backwards, filtered by AIP-160 ``role`` and ``status``;
        messages hidden by DeleteMessage only with ``show_deleted`` (AIP-164).
        Raises INVALID_ARGUMENT (INVALID_SESSION_ID, INVALID_PAGE_TOKEN,
        INVALID_FILTER) or NOT_FOUND (SESSION_NOT_FOUND)."""
        condition = compile_filter(filter_text, MESSAGE_FILTER_FIELDS)
        if not show_deleted:
            live = MessageRow.delete_time.is_(None)
            condition = live if condition is None else and_(condition, live)
        params: dict[str, Any] = {"kind": "messages", "session": session_id, "filter": filter_text}
        if show_deleted:  # only then: the tokens of callers that never ask stay valid across the upgrade
            params["show_deleted"] = True
        request = self.tokens.start(token, size, params, lambda values: (int(values[0]),))
        async with self.db.session() as session:
            view = await self.load(session, principal, session_id)
            position = request.position[0] if request.position else None
            rows = await MessageRepository(session, view.row.id).page(
                position, request.fetch, condition, request.backward
            )
        return self.tokens.finish(rows, request, lambda row: [row.sequence])


def _enum_field(column: Any, values: tuple[str, ...], prefix: str) -> FieldCompiler:
    """An enum column filtered by ``=``/``!=``; accepts ``user`` or ``ROLE_USER``."""

    def compile_enum(op: str, value: str) -> ColumnElement[bool]:
        name = value.lower().removeprefix(prefix.lower())
        if op not in ("=", "!=") or name not in values:
            raise ValueError(f"{column.key} supports = and != with one of: {', '.join(values)}")
        return column == name if op == "=" else column != name

    return compile_enum


MESSAGE_FILTER_FIELDS: FieldMap = {
    "role": _enum_field(MessageRow.role, ("system", "user", "assistant", "tool"), "ROLE_"),
    "status": _enum_field(
        MessageRow.status,
        ("in_progress", "completed", "cancelled", "failed", "requires_action"),
        "MESSAGE_STATUS_",
    ),
}


def _carry(history: list[MessageRow], target: SessionRow, now: Any) -> list[MessageRow]:
    """Copies of a conversation's earlier messages for a new session: no
    failed or unfinished replies, no deleted messages, no trailing unanswered
    tool calls, no usage."""
    kept = [m for m in history if m.status not in ("failed", "in_progress") and m.delete_time is None]
    while kept and kept[-1].status == "requires_action":
        kept.pop()
    return [copy_message(message, target, sequence, now, "carried_from") for sequence, message in enumerate(kept, 1)]
