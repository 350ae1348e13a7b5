"""Engine and session factory, and the mapping of driver errors to domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from server.domain.errors import AgentAPIError


def ensure_sqlite_dir(url: str) -> None:
    """Creates the parent folder of a SQLite database file, e.g. ``./var/``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str) -> AsyncEngine:
    """Creates an async engine for ``sqlite+aiosqlite://`` or ``mysql+aiomysql://`` URLs."""
    ensure_sqlite_dir(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run beside the single writer; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True, pool_recycle=3600)


class Database:
    """Owns the engine and hands out one ``AsyncSession`` per unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yields a session; driver errors leave it as domain errors (see :func:`translate`)."""
        async with self._sessions() as session:
            try:
                yield session
            except DBAPIError as exc:
                await session.rollback()
                raise translate(exc) from exc

    async def dispose(self) -> None:
        """Closes every pooled connection."""
        await self.engine.dispose()


def translate(exc: DBAPIError) -> AgentAPIError:
    """Maps a driver error to ALREADY_EXISTS (duplicate key: MySQL 1062, SQLite
    UNIQUE), UNAVAILABLE (connection lost) or INTERNAL."""
    if isinstance(exc, IntegrityError):
        text = str(exc.orig)
        if "1062" in text or "UNIQUE constraint failed" in text or "Duplicate entry" in text:
            return AgentAPIError("ALREADY_EXISTS", "ALREADY_EXISTS", "the resource already exists")
        return AgentAPIError("FAILED_PRECONDITION", "INTEGRITY_ERROR", "the change conflicts with stored data")
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return AgentAPIError("UNAVAILABLE", "DATABASE_UNAVAILABLE", "the database is unavailable; retry later")
    return AgentAPIError("INTERNAL", "DATABASE_ERROR", "a database error occurred")
