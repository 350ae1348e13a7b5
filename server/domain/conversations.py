"""Conversations: create, read, list, update, soft delete and undelete (AIP-164)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from server.domain import limits
from server.domain.common import Principal, new_id, require_uuid, utcnow
from server.domain.errors import AgentAPIError, Violations, not_found
from server.domain.pagination import Page, PageTokens, time_key, time_position
from server.store.db import Database
from server.store.models import ConversationRow
from server.store.repositories import ConversationRepository

# How long a soft-deleted conversation is kept before `agentapi purge` removes it.
DELETE_RETENTION = timedelta(days=30)
MUTABLE_FIELDS = ("title", "metadata")
MAX_TITLE_LENGTH = 255


def conversation_etag(row: ConversationRow) -> str:
    """A checksum of the conversation's last change."""
    return hashlib.sha256(f"{row.id}:{row.update_time.isoformat()}".encode()).hexdigest()[:16]


def deleted_conversation(row: ConversationRow) -> AgentAPIError:
    """FAILED_PRECONDITION (CONVERSATION_DELETED): a deleted conversation is read-only."""
    return AgentAPIError(
        "FAILED_PRECONDITION",
        "CONVERSATION_DELETED",
        f"conversation {row.id} is deleted; undelete it first",
        {"conversation_id": row.id},
    )


class ConversationService:
    """A tenant's conversations."""

    def __init__(self, db: Database, tokens: PageTokens) -> None:
        self.db = db
        self.tokens = tokens

    async def create(self, principal: Principal, title: str, metadata: dict[str, Any]) -> ConversationRow:
        """Stores a new conversation owned by the caller's tenant. Raises
        INVALID_ARGUMENT (FIELD_VIOLATION) for a title over 255 characters,
        (LIMIT_EXCEEDED) for metadata over ``AGENTAPI_MAX_METADATA_KEYS`` keys
        or ``AGENTAPI_MAX_METADATA_BYTES`` bytes of JSON."""
        _check_title(title, "conversation.title")
        _check_metadata(metadata)
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
        """Returns the conversation, also when soft-deleted (with ``delete_time``).
        Raises INVALID_ARGUMENT (INVALID_CONVERSATION_ID) or NOT_FOUND
        (CONVERSATION_NOT_FOUND), also for another tenant's conversation."""
        async with self.db.session() as session:
            return await self._load(session, principal, conversation_id)

    async def _load(self, session: Any, principal: Principal, conversation_id: str) -> ConversationRow:
        conversation_id = require_uuid(conversation_id, "conversation_id", "INVALID_CONVERSATION_ID")
        row = await ConversationRepository(session, principal.tenant_id).get(conversation_id, include_deleted=True)
        if row is None:
            raise not_found("conversation", conversation_id)
        return row

    async def list(self, principal: Principal, size: int, token: str, show_deleted: bool = False) -> Page[Any]:
        """At most ``page_size`` (1-100, default 20) of the tenant's
        conversations by (create_time, id), with next and previous tokens."""
        params = {"kind": "conversations", "tenant": principal.tenant_id, "show_deleted": show_deleted}
        request = self.tokens.start(token, size, params, time_position)
        async with self.db.session() as session:
            rows = await ConversationRepository(session, principal.tenant_id).page(
                request.position, request.fetch, show_deleted, request.backward
            )
        return self.tokens.finish(rows, request, time_key)

    async def update(
        self,
        principal: Principal,
        conversation_id: str,
        title: str,
        metadata: dict[str, Any],
        paths: list[str],
        expected_etag: str = "",
    ) -> ConversationRow:
        """Updates the masked fields (``title``, ``metadata``; both when ``paths``
        is empty). Raises INVALID_ARGUMENT (FIELD_VIOLATION; LIMIT_EXCEEDED
        for metadata over its size limits), NOT_FOUND
        (CONVERSATION_NOT_FOUND), ABORTED (ETAG_MISMATCH), FAILED_PRECONDITION
        (CONVERSATION_DELETED)."""
        violations = Violations()
        for path in paths:
            if path not in MUTABLE_FIELDS:
                violations.add("update_mask", f"unknown or read-only field {path!r}; updatable: title, metadata")
        violations.raise_if_any()
        paths = paths or list(MUTABLE_FIELDS)
        if "title" in paths:
            _check_title(title, "conversation.title")
        if "metadata" in paths:
            _check_metadata(metadata)
        async with self.db.session() as session:
            row = await self._load(session, principal, conversation_id)
            if row.delete_time is not None:
                raise deleted_conversation(row)
            if expected_etag and expected_etag != conversation_etag(row):
                raise AgentAPIError(
                    "ABORTED", "ETAG_MISMATCH", "the conversation changed since it was read; re-read and retry"
                )
            if "title" in paths:
                row.title = title
            if "metadata" in paths:
                row.metadata_ = metadata
            row.update_time = utcnow()
            await session.commit()
        return row

    async def delete(self, principal: Principal, conversation_id: str) -> ConversationRow:
        """Soft-deletes: sets ``delete_time`` and ``expire_time`` (30 days on).
        Raises NOT_FOUND (CONVERSATION_NOT_FOUND)."""
        async with self.db.session() as session:
            row = await self._load(session, principal, conversation_id)
            if row.delete_time is None:
                row.delete_time = row.update_time = utcnow()
                row.expire_time = row.delete_time + DELETE_RETENTION
                await session.commit()
        return row

    async def undelete(self, principal: Principal, conversation_id: str) -> ConversationRow:
        """Restores a soft-deleted conversation. Raises NOT_FOUND
        (CONVERSATION_NOT_FOUND) or FAILED_PRECONDITION (CONVERSATION_NOT_DELETED)."""
        async with self.db.session() as session:
            row = await self._load(session, principal, conversation_id)
            if row.delete_time is None:
                raise AgentAPIError(
                    "FAILED_PRECONDITION", "CONVERSATION_NOT_DELETED", f"conversation {row.id} is not deleted"
                )
            row.delete_time = row.expire_time = None
            row.update_time = utcnow()
            await session.commit()
        return row

    async def purge(self, now: datetime | None = None) -> int:
        """Deletes, for good, soft-deleted conversations past their
        expire_time, with their sessions and messages. Returns how many."""
        async with self.db.session() as session:
            repo = ConversationRepository(session, "")
            expired = await repo.expired(now or utcnow())
            for conversation_id in expired:
                await repo.purge(conversation_id)
            await session.commit()
        return len(expired)


def _check_title(title: str, path: str) -> None:
    if len(title) > MAX_TITLE_LENGTH:
        violations = Violations()
        violations.add(path, f"must be at most {MAX_TITLE_LENGTH} characters")
        violations.raise_if_any()


def _check_metadata(metadata: dict[str, Any]) -> None:
    violations = Violations()
    limits.check_metadata(metadata, "conversation.metadata", violations)
    limits.raise_if_any(violations)
