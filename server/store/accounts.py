"""Queries over tenants, API keys and the usage recorded on messages."""

from __future__ import annotations

import weakref
from datetime import datetime
from decimal import Decimal
from typing import Any

from cachetools import TTLCache
from sqlalchemy import String, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import MONEY_SCALE, ApiKeyRow, MessageRow, SessionRow, TenantRow
from server.store.repositories import keyset


class TenantRepository:
    """Queries over ``tenants``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str) -> TenantRow | None:
        """The tenant with this id, deleted or not."""
        return await self.session.get(TenantRow, tenant_id)

    async def page(self, after: tuple[datetime, str] | None, limit: int) -> list[TenantRow]:
        """Up to ``limit`` live tenants after the (create_time, id) cursor."""
        query = keyset(select(TenantRow).where(TenantRow.delete_time.is_(None)), TenantRow, after, limit)
        return list((await self.session.execute(query)).scalars())


# Seconds a turn may use a tenant row read earlier: its limits change rarely,
# and reading it costs a round trip on every turn. TenantService forgets a
# tenant it changes at once; another process sees the change within this time.
TENANT_CACHE_TTL_S = 1.0
_TENANT_CACHES: weakref.WeakKeyDictionary[Any, TenantCache] = weakref.WeakKeyDictionary()


class TenantCache:
    """Tenant rows by id, each kept ``TENANT_CACHE_TTL_S`` seconds (cachetools'
    TTLCache: bounded, expiring, well kept). Use :func:`tenant_cache` to share
    one per database."""

    def __init__(self, ttl_s: float = TENANT_CACHE_TTL_S) -> None:
        self._rows: TTLCache[str, TenantRow | None] = TTLCache(maxsize=4096, ttl=ttl_s)

    async def get(self, session: AsyncSession, tenant_id: str) -> TenantRow | None:
        """The tenant (deleted or not; None when unknown), read at most ``ttl_s`` seconds ago."""
        try:
            return self._rows[tenant_id]
        except KeyError:
            row = self._rows[tenant_id] = await TenantRepository(session).get(tenant_id)
            return row

    def forget(self, tenant_id: str) -> None:
        """Drops a tenant that this process changed, so its next turn reads it again."""
        self._rows.pop(tenant_id, None)


def tenant_cache(database: Any) -> TenantCache:
    """The one :class:`TenantCache` of this database object (the turn runner and
    the tenant service share it, so an update here is seen at once)."""
    cache = _TENANT_CACHES.get(database)
    if cache is None:
        cache = _TENANT_CACHES[database] = TenantCache()
    return cache


class ApiKeyRepository:
    """Queries over ``api_keys``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_hash(self, secret_hash: str) -> tuple[ApiKeyRow, TenantRow] | None:
        """The key with this secret hash and its tenant, in one query."""
        query = (
            select(ApiKeyRow, TenantRow)
            .join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)
            .where(ApiKeyRow.secret_hash == secret_hash)
        )
        row = (await self.session.execute(query)).first()
        return (row[0], row[1]) if row else None

    async def get(self, key_id: str) -> ApiKeyRow | None:
        """The key with this UUID."""
        return await self.session.get(ApiKeyRow, key_id)

    async def page(self, tenant_id: str, after: tuple[datetime, str] | None, limit: int) -> list[ApiKeyRow]:
        """Up to ``limit`` of a tenant's keys after the (create_time, id) cursor."""
        query = keyset(select(ApiKeyRow).where(ApiKeyRow.tenant_id == tenant_id), ApiKeyRow, after, limit)
        return list((await self.session.execute(query)).scalars())


_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
USAGE_COLUMNS = {
    "tenant": MessageRow.tenant_id,
    "agent": func.coalesce(SessionRow.agent_id, ""),
    "session": MessageRow.session_id,
    "model": MessageRow.model,
}


class UsageRepository:
    """Sums of tokens and cost over assistant messages."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def totals(self, tenant_id: str, since: datetime) -> tuple[int, Decimal]:
        """(tokens, cost in USD) a tenant used since ``since``."""
        query = select(
            func.coalesce(func.sum(MessageRow.prompt_tokens + MessageRow.completion_tokens), 0),
            func.coalesce(func.sum(MessageRow.cost_usd), 0),
        ).where(MessageRow.tenant_id == tenant_id, MessageRow.role == "assistant", MessageRow.create_time >= since)
        tokens, cost = (await self.session.execute(query)).one()
        return int(tokens), Decimal(str(cost)).quantize(_MONEY_QUANTUM)

    async def grouped(
        self, tenant_id: str | None, start: datetime | None, end: datetime, dimensions: list[str]
    ) -> list[dict[str, Any]]:
        """Rows of turns, prompt and completion tokens and cost, grouped by
        ``dimensions`` (tenant, agent, session, model, day)."""
        day = func.substr(cast(MessageRow.create_time, String), 1, 10)
        columns = {**USAGE_COLUMNS, "day": day}
        keys = [columns[d].label(d) for d in dimensions] or [literal("").label("all")]
        query = (
            select(
                *keys,
                func.count().label("turns"),
                func.coalesce(func.sum(MessageRow.prompt_tokens), 0).label("prompt_tokens"),
                func.coalesce(func.sum(MessageRow.completion_tokens), 0).label("completion_tokens"),
                func.coalesce(func.sum(MessageRow.cost_usd), 0).label("cost_usd"),
            )
            .join(SessionRow, SessionRow.id == MessageRow.session_id)
            .where(MessageRow.role == "assistant", MessageRow.create_time < end)
        )
        if tenant_id is not None:
            query = query.where(MessageRow.tenant_id == tenant_id)
        if start is not None:
            query = query.where(MessageRow.create_time >= start)
        if dimensions:
            query = query.group_by(*[columns[d] for d in dimensions]).order_by(*[columns[d] for d in dimensions])
        rows = [dict(row._mapping) for row in await self.session.execute(query)]
        for row in rows:  # SQLite sums floats: back to the ledger's exact scale
            row["cost_usd"] = Decimal(str(row["cost_usd"])).quantize(_MONEY_QUANTUM)
        return rows
