"""Queries over ``mcp_servers``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.store.models import McpServerRow
from server.store.repositories import keyset


class McpServerRepository:
    """Queries over ``mcp_servers``. Never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, server_id: str) -> McpServerRow | None:
        """The server with this id, or None."""
        return await self.session.get(McpServerRow, server_id)

    async def get_for_update(self, server_id: str) -> McpServerRow | None:
        """The server with this id, its row locked until the transaction ends
        (MySQL ``FOR UPDATE``; SQLite has one writer anyway), so two approvals
        or updates cannot overwrite each other's changes."""
        return await self.session.get(McpServerRow, server_id, with_for_update=True, populate_existing=True)

    async def get_many(self, server_ids: Iterable[str]) -> list[McpServerRow]:
        """The servers with these ids that exist, in one query."""
        ids = sorted(set(server_ids))
        if not ids:
            return []
        return list((await self.session.execute(select(McpServerRow).where(McpServerRow.id.in_(ids)))).scalars())

    async def page(self, after: tuple[datetime, str] | None, limit: int) -> list[McpServerRow]:
        """Up to ``limit`` servers after the (create_time, id) cursor."""
        return list((await self.session.execute(keyset(select(McpServerRow), McpServerRow, after, limit))).scalars())

    async def delete(self, row: McpServerRow) -> None:
        """Removes the row (and with it the encrypted secrets and approvals)."""
        await self.session.delete(row)
