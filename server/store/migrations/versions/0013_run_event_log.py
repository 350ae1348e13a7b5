"""the runs' event log, reply checkpoints and cancel requests (durable runs)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 05:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mariadb").with_variant(mysql.DATETIME(fsp=6), "mysql")
LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql")
LONGBLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mariadb").with_variant(mysql.LONGBLOB(), "mysql")


def upgrade() -> None:
    op.create_table(
        "run_event_chunks",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("terminal", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("payload", LONGBLOB, nullable=False),
        sa.Column("create_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "first_sequence", name="pk_run_event_chunks"),
    )
    op.create_index("ix_run_event_chunks_create_time", "run_event_chunks", ["create_time"])
    op.create_table(
        "run_cancellations",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("create_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name="pk_run_cancellations"),
    )
    op.create_index("ix_run_cancellations_create_time", "run_cancellations", ["create_time"])
    op.create_table(
        "reply_checkpoints",
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("content", LONGTEXT, nullable=False),
        sa.Column("reasoning_content", LONGTEXT, nullable=True),
        sa.Column("update_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_reply_checkpoints"),
    )
    op.create_index("ix_reply_checkpoints_update_time", "reply_checkpoints", ["update_time"])


def downgrade() -> None:
    op.drop_table("reply_checkpoints")
    op.drop_table("run_cancellations")
    op.drop_table("run_event_chunks")
