"""mcp servers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mariadb").with_variant(mysql.DATETIME(fsp=6), "mysql")
LONGTEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mariadb").with_variant(mysql.LONGTEXT(), "mysql")


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("transport", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("header_names", sa.JSON(), nullable=False),
        sa.Column("env_names", sa.JSON(), nullable=False),
        sa.Column("secrets", LONGTEXT, nullable=True),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("tools", sa.JSON(), nullable=True),
        sa.Column("tools_discover_time", TIMESTAMP, nullable=True),
        sa.Column("approved_tools", sa.JSON(), nullable=False),
        sa.Column("create_time", TIMESTAMP, nullable=False),
        sa.Column("update_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
    )
    with op.batch_alter_table("mcp_servers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mcp_servers_create_time_id"), ["create_time", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("mcp_servers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mcp_servers_create_time_id"))
    op.drop_table("mcp_servers")
