"""Applies Alembic migrations programmatically (``agentapi migrate``)."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from server.store.db import Database, ensure_sqlite_dir

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrates the database at ``url`` to ``revision``. Blocking: call it
    before the event loop starts, or through ``asyncio.to_thread``."""
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


@functools.cache
def head_revision() -> str:
    """The newest migration's revision id (what ``agentapi migrate`` reaches).
    Cached: reading the scripts is ~4 % of a serving process's CPU when the
    readiness check asks every few seconds, and they do not change under it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def current_revision(db: Database) -> str | None:
    """The revision the database is at; None for a database never migrated.
    Raises UNAVAILABLE (DATABASE_UNAVAILABLE) when it cannot be reached."""
    async with db.side_session() as session:  # not queued behind a busy main pool
        connection = await session.connection()
        exists = await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version"))
        if not exists:
            return None
        return (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def schema_problem(db: Database) -> str | None:
    """One line saying what is wrong with the schema (not migrated, or not to
    the head revision), or None when it is at head. Raises UNAVAILABLE
    (DATABASE_UNAVAILABLE) when the database cannot be reached."""
    current, head = await current_revision(db), head_revision()
    if current == head:
        return None
    state = "is not migrated" if current is None else f"is at revision {current}, not {head}"
    return f"the database {state}: run `agentapi migrate` (or `agentapi serve --migrate`)"
