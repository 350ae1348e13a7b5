"""Conversations and sessions: creation, lookup and effective settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.domain.agents import TOOL_NAME_PATTERN, AgentFields, AgentService, fields_of
from server.domain.common import Principal, new_id, require_uuid, utcnow
from server.domain.errors import AgentAPIError, Violations, not_found
from server.domain.pagination import PageTokens, page_size
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
        return overrides
    return Settings(
        model=overrides.model or agent.default_model,
        temperature=overrides.temperature if overrides.temperature is not None else agent.temperature,
        max_output_tokens=overrides.max_output_tokens,
        tools=overrides.tools or list(agent.tools),
        fallback_models=overrides.fallback_models or ([] if overrides.model else list(agent.fallback_models)),
        system_prompt=overrides.system_prompt or agent.system_prompt,
    )


def validate_settings(settings: Settings, prefix: str, violations: Violations) -> None:
    """Records violations for out-of-range temperature, max tokens or tool names."""
    if settings.temperature is not None and not 0.0 <= settings.temperature <= 2.0:
        violations.add(f"{prefix}.temperature", "must be between 0 and 2")
    if settings.max_output_tokens is not None and settings.max_output_tokens < 1:
        violations.add(f"{prefix}.max_output_tokens", "must be at least 1")
    for index, tool in enumerate(settings.tools):
        if not TOOL_NAME_PATTERN.match((tool.get("function") or {}).get("name", "")):
            violations.add(f"{prefix}.tools[{index}].function.name", "must be 1 to 64 of a-z, A-Z, 0-9, '_' or '-'")


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


class ConversationService:
    """Creates, reads and lists a tenant's conversations."""

    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens

    async def create(self, principal: Principal, title: str, metadata: dict[str, Any]) -> ConversationRow:
        """Stores a new conversation owned by the caller's tenant."""
        now = utcnow()
        row = ConversationRow(
            id=new_id(),
            tenant_id=principal.tenant_id,
            title=title,
            metadata_=metadata,
            create_time=now,
            update_time=now,
        )
        async with self.db.session() as session:
            session.add(row)
            await session.commit()
        return row

    async def get(self, principal: Principal, conversation_id: str) -> ConversationRow:
        """Raises INVALID_ARGUMENT (INVALID_CONVERSATION_ID) or NOT_FOUND
        (CONVERSATION_NOT_FOUND), also for another tenant's conversation."""
        conversation_id = require_uuid(conversation_id, "conversation_id", "INVALID_CONVERSATION_ID")
        async with self.db.session() as session:
            row = await ConversationRepository(session, principal.tenant_id).get(conversation_id)
        if row is None:
            raise not_found("conversation", conversation_id)
        return row

    async def list(self, principal: Principal, size: int, token: str) -> tuple[list[ConversationRow], str]:
        """A page of the tenant's conversations by (create_time, id), and the next token."""
        limit = page_size(size)
        params = {"kind": "conversations", "tenant": principal.tenant_id}
        after = self.tokens.time_cursor(token, params)
        async with self.db.session() as session:
            rows = await ConversationRepository(session, principal.tenant_id).page(after, limit + 1)
        return self.tokens.page(rows, limit, params)


class SessionService:
    """Creates and reads sessions and lists their messages."""

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
    ) -> SessionView:
        """Stores a session, creating a conversation when ``conversation_id`` is empty.

        Raises INVALID_ARGUMENT (FIELD_VIOLATION when neither an agent nor a model
        is given or a setting is out of range; INVALID_CONVERSATION_ID), NOT_FOUND
        (AGENT_NOT_FOUND, CONVERSATION_NOT_FOUND), FAILED_PRECONDITION
        (AGENT_DELETED).
        """
        violations = Violations()
        if not agent_id and not overrides.model:
            violations.add("session.agent_id", "name an agent, or set overrides.model for a plain-model session")
        validate_settings(overrides, "session.overrides", violations)
        violations.raise_if_any()
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
            if conversation_id:
                if await ConversationRepository(session, principal.tenant_id).get(conversation_id) is None:
                    raise not_found("conversation", conversation_id)
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
                agent_revision=agent.revision if agent else None,
                overrides=overrides.to_json(),
                metadata_=metadata,
                create_time=now,
                update_time=now,
            )
            session.add(row)
            await session.commit()
        return SessionView(row, fields_of(agent) if agent else None)

    async def get(self, principal: Principal, session_id: str) -> SessionView:
        """Raises INVALID_ARGUMENT (INVALID_SESSION_ID) or NOT_FOUND (SESSION_NOT_FOUND)."""
        async with self.db.session() as session:
            return await self.load(session, principal, session_id)

    @staticmethod
    async def load(session: Any, principal: Principal, session_id: str) -> SessionView:
        """Loads a session and its agent inside an open database session."""
        session_id = require_uuid(session_id, "session_id", "INVALID_SESSION_ID")
        row = await SessionRepository(session, principal.tenant_id).get(session_id)
        if row is None:
            raise not_found("session", session_id)
        if not row.agent_id:
            return SessionView(row, None)
        agents = AgentRepository(session)
        pinned = await agents.revision(row.agent_id, row.agent_revision or 1)
        if pinned is not None:
            return SessionView(row, AgentFields(**pinned.settings))
        agent = await agents.get(row.agent_id)
        return SessionView(row, fields_of(agent) if agent else None)

    async def list_messages(
        self, principal: Principal, session_id: str, size: int, token: str
    ) -> tuple[list[MessageRow], str]:
        """A page of the session's messages in sequence order, and the next token."""
        limit = page_size(size)
        params = {"kind": "messages", "session": session_id}
        async with self.db.session() as session:
            view = await self.load(session, principal, session_id)
            cursor = self.tokens.decode(token, params)
            rows = await MessageRepository(session, view.row.id).page(int(cursor[0]) if cursor else 0, limit + 1)
        return self.tokens.page(rows, limit, params, lambda row: [row.sequence])
