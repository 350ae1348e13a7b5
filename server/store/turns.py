"""Queries that hold and free what a running turn owns: its session (one turn
at a time), its budget reservation, and its runner's heartbeat.

Like the other repositories they never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import aliased

from server.store.models import BudgetReservationRow, MessageRow, RunnerRow, SessionRow, TenantRow

_S = SessionRow.__table__
_B = BudgetReservationRow.__table__
# Prebuilt: they run on every turn.
_CLAIM = (
    update(_S)
    .where(_S.c.id == bindparam("session_id"), _S.c.active_reply_id.is_(None))
    .values(active_reply_id=bindparam("reply_id"))
)
_UNCLAIM = (
    update(_S)
    .where(_S.c.id == bindparam("session_id"), _S.c.active_reply_id == bindparam("reply_id"))
    .values(active_reply_id=None)
)
_UNRESERVE = delete(_B).where(_B.c.reply_id == bindparam("reply_id"))


async def claim_session(connection: AsyncConnection, session_id: str, reply_id: str) -> bool:
    """Marks the session as held by ``reply_id`` if no turn holds it. False: it is
    busy. On MySQL the UPDATE locks the row until the transaction ends, so a
    racing turn waits for this one's commit and then finds the session held."""
    result = await connection.execute(_CLAIM, {"session_id": session_id, "reply_id": reply_id})
    return bool(result.rowcount)


async def release_turn(connection: AsyncConnection, session_id: str, reply_id: str, reserved: bool) -> None:
    """Frees the session ``reply_id`` holds and, if ``reserved``, its budget reservation."""
    await connection.execute(_UNCLAIM, {"session_id": session_id, "reply_id": reply_id})
    if reserved:
        await connection.execute(_UNRESERVE, {"reply_id": reply_id})


async def release_turns(
    session: AsyncSession, replies: Sequence[tuple[str, str]], sessions: Collection[str] = ()
) -> None:
    """Frees the sessions and budget reservations of (reply id, session id)
    pairs, and whatever run holds ``sessions`` (their rows left in progress
    show that the holder is the dead run)."""
    if not replies and not sessions:
        return
    reply_ids = {reply_id for reply_id, _ in replies}
    if sessions:
        held = select(SessionRow.active_reply_id).where(
            SessionRow.id.in_(set(sessions)), SessionRow.active_reply_id.is_not(None)
        )
        reply_ids.update(row.active_reply_id for row in await session.execute(held))
    await session.execute(
        update(SessionRow)
        .where(SessionRow.id.in_({s for _, s in replies} | set(sessions)), SessionRow.active_reply_id.in_(reply_ids))
        .values(active_reply_id=None)
    )
    await session.execute(delete(BudgetReservationRow).where(BudgetReservationRow.reply_id.in_(reply_ids)))


class BudgetRepository:
    """Budget reservations of running turns."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_tenant(self, tenant_id: str) -> None:
        """Locks the tenant's row until the transaction ends (MySQL: SELECT ... FOR
        UPDATE), so admissions of one tenant take turns. SQLite has one writer and
        needs no lock: the reservation's INSERT takes it."""
        await self.session.execute(select(TenantRow.id).where(TenantRow.id == tenant_id).with_for_update())

    async def reserved(self, tenant_id: str, excluding: str | None = None) -> tuple[int, Decimal]:
        """(tokens, US dollars) reserved by the tenant's running turns, but the
        one held under ``excluding`` (a reply id)."""
        query = select(
            func.coalesce(func.sum(BudgetReservationRow.tokens), 0),
            func.coalesce(func.sum(BudgetReservationRow.cost_usd), 0),
        ).where(BudgetReservationRow.tenant_id == tenant_id)
        if excluding is not None:
            query = query.where(BudgetReservationRow.reply_id != excluding)
        tokens, cost = (await self.session.execute(query)).one()
        return int(tokens), Decimal(str(cost))

    async def add(self, reply_id: str, tenant_id: str, tokens: int, cost_usd: Decimal, now: datetime) -> None:
        """INSERTs a reservation."""
        connection = await self.session.connection()
        await connection.execute(
            insert(_B).values(reply_id=reply_id, tenant_id=tenant_id, tokens=tokens, cost_usd=cost_usd, create_time=now)
        )

    async def resize(self, reply_id: str, tokens: int, cost_usd: Decimal) -> None:
        """Changes the amounts of a reservation."""
        await self.session.execute(
            update(BudgetReservationRow)
            .where(BudgetReservationRow.reply_id == reply_id)
            .values(tokens=tokens, cost_usd=cost_usd)
        )

    async def remove(self, reply_id: str) -> None:
        """DELETEs one reservation."""
        connection = await self.session.connection()
        await connection.execute(_UNRESERVE, {"reply_id": reply_id})

    async def purge(self, before: datetime) -> int:
        """DELETEs reservations made before ``before`` (no turn runs that long). Returns how many."""
        result = await self.session.execute(
            delete(BudgetReservationRow).where(BudgetReservationRow.create_time < before)
        )
        return int(result.rowcount or 0)


class RunnerRepository:
    """Heartbeats of runners (replicas)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def beat(self, runner_id: str, now: datetime, started: datetime) -> None:
        """Records that ``runner_id`` is alive now (UPDATE, else INSERT)."""
        result = await self.session.execute(
            update(RunnerRow).where(RunnerRow.id == runner_id).values(heartbeat_time=now)
        )
        if not result.rowcount:
            await self.session.execute(insert(RunnerRow).values(id=runner_id, start_time=started, heartbeat_time=now))

    async def silent_since(self, before: datetime) -> list[str]:
        """Runners whose last heartbeat is older than ``before``."""
        query = select(RunnerRow.id).where(RunnerRow.heartbeat_time < before)
        return list((await self.session.execute(query)).scalars())

    async def bury(self, runner_id: str, before: datetime) -> bool:
        """DELETEs the runner's row if it is still silent since ``before``; True
        for the one replica that did (and so reclaims its turns)."""
        result = await self.session.execute(
            delete(RunnerRow).where(RunnerRow.id == runner_id, RunnerRow.heartbeat_time < before)
        )
        return bool(result.rowcount)

    async def forget(self, runner_id: str) -> None:
        """DELETEs the runner's row (a clean shutdown)."""
        await self.session.execute(delete(RunnerRow).where(RunnerRow.id == runner_id))


async def orphan_claims(session: AsyncSession, runner_id: str | None, before: datetime | None) -> list[tuple[str, str]]:
    """(holder reply id, session id) of sessions still claimed by a run that
    has no message in progress left (it died between two of its steps), of
    ``runner_id`` or with a holder last changed before ``before``."""
    holder = aliased(MessageRow)
    running = select(MessageRow.id).where(MessageRow.session_id == SessionRow.id, MessageRow.status == "in_progress")
    query = (
        select(SessionRow.active_reply_id, SessionRow.id)
        .join(holder, holder.id == SessionRow.active_reply_id)
        .where(SessionRow.active_reply_id.is_not(None), holder.status != "in_progress", ~running.exists())
    )
    if runner_id is not None:
        query = query.where(holder.runner_id == runner_id)
    if before is not None:
        query = query.where(holder.update_time < before)
    return [(row[0], row[1]) for row in await session.execute(query)]
