"""Repositories: the only place that builds queries. They never commit; the
domain services own the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, delete, func, insert, inspect, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import AgentRevisionRow, AgentRow, ConversationRow, MessageRow, SessionRow


def snapshot_columns(model: Any) -> list[Any]:
    """The model's columns labelled with its attribute names (``metadata_``, not
    ``metadata``), so a Core row reads like the ORM entity, without the
    identity map and instance state that loading entities costs."""
    return [attr.columns[0].label(attr.key) for attr in inspect(model).column_attrs]


def insert_values(entity: Any) -> dict[str, Any]:
    """A transient entity's values keyed by column name, for a Core INSERT:
    the attributes it sets, else the column's Python-side default, else None
    (every row of one INSERT must bind the same columns)."""
    values = {}
    for attr in inspect(type(entity)).column_attrs:
        column = attr.columns[0]
        if attr.key in entity.__dict__:
            values[column.name] = entity.__dict__[attr.key]
        elif column.default is not None:
            default = column.default
            values[column.name] = default.arg(None) if default.is_callable else default.arg
        else:
            values[column.name] = None
    return values


# The turn's hot path runs these prebuilt statements with bound parameters:
# one compiled form each, cached by SQLAlchemy, and no unit of work.
_SESSION_SNAPSHOT = select(*snapshot_columns(SessionRow)).where(SessionRow.__table__.c.id == bindparam("id"))
_HISTORY_SNAPSHOT = (
    select(*snapshot_columns(MessageRow))
    .where(MessageRow.__table__.c.session_id == bindparam("session_id"))
    .order_by(MessageRow.__table__.c.sequence)
)
# Newest first, below a sequence number: a turn reads its history backwards in
# batches, only as far as its window can use (server/domain/turn_history.py).
_NEWEST_SNAPSHOT = (
    select(*snapshot_columns(MessageRow))
    .where(
        MessageRow.__table__.c.session_id == bindparam("session_id"),
        MessageRow.__table__.c.sequence < bindparam("before"),
    )
    .order_by(MessageRow.__table__.c.sequence.desc())
    .limit(bindparam("limit"))
)
_INSERT_MESSAGES = insert(MessageRow.__table__)


def keyset(
    query: Select[Any], model: Any, after: tuple[datetime, str] | None, limit: int, backward: bool = False
) -> Select[Any]:
    """Orders ``query`` by (create_time, id) and starts after the cursor (or,
    ``backward``, reads down from before it, newest first): stable under
    concurrent inserts and deletes, unlike offsets."""
    key = tuple_(model.create_time, model.id)
    if backward:
        query = query.order_by(model.create_time.desc(), model.id.desc()).limit(limit)
        return query if after is None else query.where(key < tuple_(*after))
    query = query.order_by(model.create_time, model.id).limit(limit)
    return query if after is None else query.where(key > tuple_(*after))


class AgentRepository:
    """Queries over ``agents``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, agent_id: str) -> AgentRow | None:
        """The agent with this UUID, deleted or not."""
        return await self.session.get(AgentRow, agent_id)

    async def revision(self, agent_id: str, revision: int) -> AgentRevisionRow | None:
        """One stored revision of an agent."""
        return await self.session.get(AgentRevisionRow, (agent_id, revision))

    async def revisions(self, agent_id: str, before: int | None, limit: int) -> list[AgentRevisionRow]:
        """Up to ``limit`` revisions, newest first, below ``before`` when given."""
        query = select(AgentRevisionRow).where(AgentRevisionRow.agent_id == agent_id)
        if before is not None:
            query = query.where(AgentRevisionRow.revision < before)
        query = query.order_by(AgentRevisionRow.revision.desc()).limit(limit)
        return list((await self.session.execute(query)).scalars())

    async def expired(self, now: datetime) -> list[AgentRow]:
        """Soft-deleted agents past their expire_time that no session uses."""
        in_use = select(SessionRow.agent_id).where(SessionRow.agent_id.is_not(None))
        query = select(AgentRow).where(AgentRow.expire_time < now, AgentRow.id.not_in(in_use))
        return list((await self.session.execute(query)).scalars())

    async def purge(self, agent: AgentRow) -> None:
        """Deletes an agent and its revisions for good."""
        await self.session.execute(delete(AgentRevisionRow).where(AgentRevisionRow.agent_id == agent.id))
        await self.session.delete(agent)

    async def get_by_key(self, key: str) -> AgentRow | None:
        """The agent with this key, deleted or not."""
        return (await self.session.execute(select(AgentRow).where(AgentRow.key == key))).scalar_one_or_none()

    async def get_by_keys(self, keys: Sequence[str]) -> list[AgentRow]:
        """Live agents with any of these keys."""
        rows = await self.session.execute(
            select(AgentRow).where(AgentRow.key.in_(keys), AgentRow.delete_time.is_(None))
        )
        return list(rows.scalars())

    async def page(
        self,
        position: tuple[datetime, str] | None,
        limit: int,
        show_deleted: bool,
        condition: ColumnElement[bool] | None = None,
        backward: bool = False,
    ) -> list[AgentRow]:
        """Up to ``limit`` agents matching ``condition`` after the (create_time,
        id) cursor in that order, or before it newest first when ``backward``."""
        query = keyset(select(AgentRow), AgentRow, position, limit, backward)
        if not show_deleted:
            query = query.where(AgentRow.delete_time.is_(None))
        if condition is not None:
            query = query.where(condition)
        return list((await self.session.execute(query)).scalars())


class ConversationRepository:
    """Queries over ``conversations``, always scoped to one tenant."""

    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def get(self, conversation_id: str, include_deleted: bool = False) -> ConversationRow | None:
        """The tenant's conversation with this UUID; a soft-deleted one only with ``include_deleted``."""
        row = await self.session.get(ConversationRow, conversation_id)
        if row is None or row.tenant_id != self.tenant_id:
            return None
        if row.delete_time is not None and not include_deleted:
            return None
        return row

    async def page(
        self, position: tuple[datetime, str] | None, limit: int, show_deleted: bool = False, backward: bool = False
    ) -> list[ConversationRow]:
        """Up to ``limit`` of the tenant's conversations after the cursor (before it, newest first, ``backward``)."""
        query = select(ConversationRow).where(ConversationRow.tenant_id == self.tenant_id)
        if not show_deleted:
            query = query.where(ConversationRow.delete_time.is_(None))
        query = keyset(query, ConversationRow, position, limit, backward)
        return list((await self.session.execute(query)).scalars())

    async def expired(self, now: datetime) -> list[str]:
        """Ids of soft-deleted conversations (of any tenant) past their expire_time."""
        query = select(ConversationRow.id).where(ConversationRow.expire_time < now)
        return list((await self.session.execute(query)).scalars())

    async def purge(self, conversation_id: str) -> None:
        """Deletes a conversation with its sessions and messages, for good."""
        sessions = select(SessionRow.id).where(SessionRow.conversation_id == conversation_id)
        await self.session.execute(delete(MessageRow).where(MessageRow.session_id.in_(sessions)))
        await self.session.execute(delete(SessionRow).where(SessionRow.conversation_id == conversation_id))
        await self.session.execute(delete(ConversationRow).where(ConversationRow.id == conversation_id))


class SessionRepository:
    """Queries over ``sessions``, always scoped to one tenant."""

    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def get(self, session_id: str) -> SessionRow | None:
        """The tenant's session with this UUID."""
        row = await self.session.get(SessionRow, session_id)
        if row is None or row.tenant_id != self.tenant_id:
            return None
        return row

    async def snapshot(self, session_id: str) -> Row[Any] | None:
        """The tenant's session with this UUID as a read-only row (attributes
        as on :class:`SessionRow`), or None."""
        connection = await self.session.connection()
        row = (await connection.execute(_SESSION_SNAPSHOT, {"id": session_id})).first()
        if row is None or row.tenant_id != self.tenant_id:
            return None
        return row

    async def page(
        self, conversation_id: str, position: tuple[datetime, str] | None, limit: int, backward: bool = False
    ) -> list[SessionRow]:
        """Up to ``limit`` sessions of a conversation after the cursor (before it, newest first, ``backward``)."""
        query = select(SessionRow).where(
            SessionRow.tenant_id == self.tenant_id, SessionRow.conversation_id == conversation_id
        )
        query = keyset(query, SessionRow, position, limit, backward)
        return list((await self.session.execute(query)).scalars())

    async def has_messages(self, session_id: str) -> bool:
        """Whether any message is stored in the session."""
        query = select(MessageRow.id).where(MessageRow.session_id == session_id).limit(1)
        return (await self.session.execute(query)).first() is not None

    async def others_in_conversation(self, conversation_id: str, session_id: str) -> bool:
        """Whether the conversation holds a session besides ``session_id``."""
        query = (
            select(SessionRow.id)
            .where(SessionRow.conversation_id == conversation_id, SessionRow.id != session_id)
            .limit(1)
        )
        return (await self.session.execute(query)).first() is not None

    async def conversation_history(self, conversation_id: str) -> list[MessageRow]:
        """Every message of a conversation's sessions, session by session (by
        creation) and in sequence order within each."""
        query = (
            select(MessageRow)
            .join(SessionRow, MessageRow.session_id == SessionRow.id)
            .where(SessionRow.tenant_id == self.tenant_id, SessionRow.conversation_id == conversation_id)
            .order_by(SessionRow.create_time, SessionRow.id, MessageRow.sequence)
        )
        return list((await self.session.execute(query)).scalars())


class MessageRepository:
    """Queries over ``messages`` of one session."""

    def __init__(self, session: AsyncSession, session_id: str) -> None:
        self.session = session
        self.session_id = session_id

    async def history(self) -> list[Row[Any]]:
        """Every message of the session, in sequence order, as read-only rows
        (attributes as on :class:`MessageRow`)."""
        connection = await self.session.connection()
        return list(await connection.execute(_HISTORY_SNAPSHOT, {"session_id": self.session_id}))

    async def newest(self, before: int | None, limit: int) -> list[Row[Any]]:
        """Up to ``limit`` messages with a sequence below ``before`` (None: from
        the newest), newest first, as read-only rows like :meth:`history`'s."""
        connection = await self.session.connection()
        params = {"session_id": self.session_id, "before": 2**62 if before is None else before, "limit": limit}
        return list(await connection.execute(_NEWEST_SNAPSHOT, params))

    async def insert(self, messages: Sequence[MessageRow]) -> None:
        """INSERTs transient messages in one statement; the entities stay
        detached (a Core INSERT, without the unit of work's flush)."""
        connection = await self.session.connection()
        await connection.execute(_INSERT_MESSAGES, [insert_values(m) for m in messages])

    async def last_sequence(self) -> int:
        """The highest sequence number used so far; 0 for an empty session."""
        query = select(func.max(MessageRow.sequence)).where(MessageRow.session_id == self.session_id)
        return (await self.session.execute(query)).scalar() or 0

    async def page(
        self,
        position: int | None,
        limit: int,
        condition: ColumnElement[bool] | None = None,
        backward: bool = False,
    ) -> list[MessageRow]:
        """Up to ``limit`` messages matching ``condition`` with a sequence above
        ``position``, or below it in descending order when ``backward``."""
        query = select(MessageRow).where(MessageRow.session_id == self.session_id).limit(limit)
        if backward:
            query = query.order_by(MessageRow.sequence.desc())
            if position is not None:
                query = query.where(MessageRow.sequence < position)
        else:
            query = query.order_by(MessageRow.sequence)
            if position is not None:
                query = query.where(MessageRow.sequence > position)
        if condition is not None:
            query = query.where(condition)
        return list((await self.session.execute(query)).scalars())
