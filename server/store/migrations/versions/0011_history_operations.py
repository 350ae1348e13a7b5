"""history operations: superseded replies, forked sessions, soft-deleted messages

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 03:45:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded_by", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("delete_time", Timestamp, nullable=True))
        batch_op.add_column(sa.Column("expire_time", Timestamp, nullable=True))
        batch_op.add_column(sa.Column("purge_time", Timestamp, nullable=True))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_session_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("parent_message_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("parent_message_id")
        batch_op.drop_column("parent_session_id")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("purge_time")
        batch_op.drop_column("expire_time")
        batch_op.drop_column("delete_time")
        batch_op.drop_column("superseded_by")
