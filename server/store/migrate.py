"""Applies Alembic migrations programmatically (``agentapi migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from server.store.db import ensure_sqlite_dir

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
