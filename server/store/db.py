"""Engine and session factory, and the mapping of driver errors to domain errors."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from server.domain.errors import AgentAPIError
from server.observability import database as observed_database

log = logging.getLogger(__name__)

# Defaults (Config.db_*_timeout_s): seconds to open a MySQL connection, to wait
# for the server's reply to a statement, and to wait for a pooled connection.
# When the database is gone or frozen, requests fail fast with UNAVAILABLE
# (DATABASE_UNAVAILABLE) instead of queueing behind it.
CONNECT_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 10.0
POOL_TIMEOUT_S = 5.0
# A pooled connection idle this long is pinged before use. One used more
# recently is trusted: a ping on every checkout (pool_pre_ping) costs a round
# trip, two per turn (bench/README.md); if the server restarted meanwhile, the
# first statement fails (DATABASE_UNAVAILABLE) and SQLAlchemy invalidates the
# whole pool, so the next request gets fresh connections.
IDLE_PING_S = 5.0
_commits: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("agentapi_commits", default=None)


def track_commits() -> list[int]:
    """Starts counting the commits made from here on in this context (this RPC's
    task); ``counter[0]`` is how many succeeded. The idempotency layer uses it
    to tell a request that changed nothing from one that did."""
    counter = [0]
    _commits.set(counter)
    return counter


class _TrackedSession(AsyncSession):
    """An AsyncSession whose commits are counted (see :func:`track_commits`)."""

    async def commit(self) -> None:
        await super().commit()
        counter = _commits.get()
        if counter is not None:
            counter[0] += 1


def _fix_aiomysql_bytes() -> None:
    """aiomysql 0.3 escapes bytes parameters with PyMySQL's
    ``escape_bytes_prefixed``, which PyMySQL 1.2 replaced by a string (see
    PyMySQL issue #1274), so binding any bytes (a LONGBLOB) raises TypeError.
    Puts back the function it stood for."""
    try:
        from aiomysql import connection
        from pymysql.converters import escape_bytes
    except ImportError:  # no MySQL driver installed
        return
    if not callable(connection.escape_bytes_prefixed):
        connection.escape_bytes_prefixed = escape_bytes


def _bound_aiomysql_reads() -> None:
    """Gives aiomysql a read timeout, which it lacks (PyMySQL has
    ``read_timeout``): reading a statement's whole result, and any other
    packet (an OK, the handshake), must finish within the connection's
    ``agentapi_read_timeout`` (set when the pool opens it; during the
    handshake, its ``connect_timeout``). On expiry the connection is closed
    and OperationalError 2013 raised, as for a lost connection, so a frozen
    server or network fails the call UNAVAILABLE and the pool discards the
    connection. One timer per statement, not per packet: a result of many
    rows and columns is many packets (bench/turncost.py)."""
    try:
        from aiomysql import connection
        from pymysql.constants import CR
        from pymysql.err import OperationalError as MySQLOperationalError
    except ImportError:  # no MySQL driver installed
        return
    read_packet = connection.Connection._read_packet
    read_result = connection.Connection._read_query_result
    if getattr(read_packet, "agentapi_bounded", False):
        return

    async def bounded(self, read, *args):  # type: ignore[no-untyped-def]
        timeout = getattr(self, "agentapi_read_timeout", None) or self.connect_timeout
        if not timeout or getattr(self, "agentapi_reading", False):
            return await read(self, *args)
        self.agentapi_reading = True
        try:
            async with asyncio.timeout(timeout):
                return await read(self, *args)
        except TimeoutError as exc:
            self.close()
            raise MySQLOperationalError(
                CR.CR_SERVER_LOST, f"no reply from the MySQL server within {timeout} s"
            ) from exc
        finally:
            self.agentapi_reading = False

    async def _read_packet(self, *args):  # type: ignore[no-untyped-def]
        return await bounded(self, read_packet, *args)

    async def _read_query_result(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return await bounded(self, lambda this, *a: read_result(this, *a, **kwargs), *args)

    _read_packet.agentapi_bounded = True  # type: ignore[attr-defined]
    connection.Connection._read_packet = _read_packet
    connection.Connection._read_query_result = _read_query_result


def ensure_sqlite_dir(url: str) -> None:
    """Creates the parent folder of a SQLite database file, e.g. ``./var/``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(
    url: str,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    query_timeout_s: float = QUERY_TIMEOUT_S,
    pool_timeout_s: float = POOL_TIMEOUT_S,
    pool_size: int = 20,
    max_overflow: int = 20,
) -> AsyncEngine:
    """Creates an async engine for ``sqlite+aiosqlite://`` or ``mysql+aiomysql://``
    URLs. On MySQL every connect, statement and pool checkout is bounded by
    the timeouts (seconds; see :func:`_bound_aiomysql_reads`)."""
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
    _fix_aiomysql_bytes()
    _bound_aiomysql_reads()
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=3600,
        pool_timeout=pool_timeout_s,
        connect_args={"connect_timeout": connect_timeout_s},
        pool_reset_on_return=None,  # _reset_when_in_transaction does it
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _read_timeout(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection._connection.agentapi_read_timeout = query_timeout_s

    _ping_when_idle(engine)
    _reset_when_in_transaction(engine)
    return engine


def _reset_when_in_transaction(engine: AsyncEngine) -> None:
    """Rolls a returned connection back only when the server says a transaction
    is open on it (the IN_TRANS flag of its last reply). The pool's default
    reset sends ROLLBACK on every return, after a COMMIT too: two round trips
    per turn for nothing."""

    @event.listens_for(engine.sync_engine.pool, "reset")
    def _reset(dbapi_connection, record, reset_state):  # type: ignore[no-untyped-def]
        if reset_state.terminate_only or not reset_state.asyncio_safe or reset_state.transaction_was_reset:
            return
        raw = getattr(dbapi_connection, "_connection", None)
        in_transaction = getattr(raw, "get_transaction_status", None)
        if in_transaction is None or in_transaction():
            dbapi_connection.rollback()


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pings a connection at checkout when it sat in the pool ``IDLE_PING_S`` or
    more (SQLAlchemy's documented custom pessimistic check: a failed ping raises
    DisconnectionError and the pool connects afresh), so the service recovers
    by itself when the database comes back."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _checked_in(dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_connection, record, proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            dbapi_connection.ping(False)
        except Exception as exc:
            raise DisconnectionError("the pooled connection is gone") from exc


class Database:
    """Owns the engine and hands out one ``AsyncSession`` per unit of work."""

    def __init__(
        self,
        url: str,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        query_timeout_s: float = QUERY_TIMEOUT_S,
        pool_timeout_s: float = POOL_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.engine = create_engine(url, connect_timeout_s, query_timeout_s, pool_timeout_s)
        observed_database.instrument(self.engine)  # pool and statement metrics, SQL spans when asked
        self._timeouts = (connect_timeout_s, query_timeout_s, pool_timeout_s)
        self._side_engine: AsyncEngine | None = None
        self._side_sessions: async_sessionmaker[AsyncSession] | None = None
        # SQLite: one local writer, whose COMMIT is cheap and serialised; a
        # server database commits over the network and can overlap other work.
        self.local_writer = make_url(url).get_backend_name() == "sqlite"
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=_TrackedSession)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yields a session; driver errors leave it as domain errors (see :func:`translate`)."""
        async with self._session(self._sessions) as session:
            yield session

    @asynccontextmanager
    async def side_session(self) -> AsyncIterator[AsyncSession]:
        """Like :meth:`session`, from a second, small pool: for a short
        transaction that runs while the caller holds a connection of the main
        pool (a turn's budget reservation). From the main pool, 40 turns each
        holding one connection and waiting for a second would wait for ever."""
        if self._side_sessions is None:
            self._side_engine = create_engine(self.url, *self._timeouts, pool_size=4, max_overflow=4)
            observed_database.instrument(self._side_engine, "side")
            self._side_sessions = async_sessionmaker(self._side_engine, expire_on_commit=False, class_=_TrackedSession)
        async with self._session(self._side_sessions) as session:
            yield session

    @asynccontextmanager
    async def _session(self, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
        try:
            async with sessions() as session:
                try:
                    yield session
                except (DBAPIError, PoolTimeoutError) as exc:
                    try:
                        await session.rollback()
                    except (DBAPIError, PoolTimeoutError, OSError):
                        pass  # the connection is gone; the pool discards it
                    raise translate(exc) from exc
        except (DBAPIError, PoolTimeoutError) as exc:  # closing a session on a dead connection
            raise translate(exc) from exc

    async def dispose(self) -> None:
        """Closes every pooled connection."""
        await self.engine.dispose()
        if self._side_engine is not None:
            await self._side_engine.dispose()


def translate(exc: DBAPIError | PoolTimeoutError) -> AgentAPIError:
    """Maps a driver error to ALREADY_EXISTS (duplicate key: MySQL 1062, SQLite
    UNIQUE), UNAVAILABLE (DATABASE_UNAVAILABLE: connection refused or lost, no
    pooled connection free, SQLite busy) or INTERNAL."""
    if isinstance(exc, PoolTimeoutError) or not isinstance(exc, DBAPIError):
        return AgentAPIError("UNAVAILABLE", "DATABASE_UNAVAILABLE", "the database is unavailable; retry later")
    if isinstance(exc, IntegrityError):
        text = str(exc.orig)
        if "1062" in text or "UNIQUE constraint failed" in text or "Duplicate entry" in text:
            return AgentAPIError("ALREADY_EXISTS", "ALREADY_EXISTS", "the resource already exists")
        return AgentAPIError("FAILED_PRECONDITION", "INTEGRITY_ERROR", "the change conflicts with stored data")
    if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
        log.warning("database unavailable: %s", exc.orig if exc.orig is not None else exc)
        return AgentAPIError("UNAVAILABLE", "DATABASE_UNAVAILABLE", "the database is unavailable; retry later")
    log.error("database error", exc_info=exc)
    return AgentAPIError("INTERNAL", "DATABASE_ERROR", "a database error occurred")
