"""full-text search over messages: a FULLTEXT index (MySQL/MariaDB), an FTS5 table (SQLite)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 04:00:00

SQLite: ``messages_fts`` is an external-content FTS5 table over
``messages.content`` keyed by the messages' rowid, kept in sync by three
triggers. A later migration that rebuilds ``messages`` (Alembic's batch mode
on SQLite copies the table, which drops its triggers and may renumber rowids)
must recreate the triggers and run ``INSERT INTO messages_fts(messages_fts)
VALUES('rebuild')``; :func:`create_sqlite_search` does both.
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = (
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content);
    END""",
)


def create_sqlite_search() -> None:
    """Creates the FTS5 table and its triggers, and indexes the existing rows."""
    op.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(content, content='messages', content_rowid='rowid')"
    )
    for trigger in SQLITE_TRIGGERS:
        op.execute(trigger)
    # The backfill: an external-content table re-reads every row of messages.
    op.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        create_sqlite_search()
    else:
        # Building a FULLTEXT index indexes the existing rows too.
        op.create_index("ix_messages_content_fulltext", "messages", ["content"], mysql_prefix="FULLTEXT")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("messages_fts_update", "messages_fts_delete", "messages_fts_insert"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS messages_fts")
    else:
        op.drop_index("ix_messages_content_fulltext", table_name="messages")
