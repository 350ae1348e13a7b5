"""server-side tools on agents, executor and step on messages

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 02:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("builtin_tools", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("mcp_servers", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("max_steps", sa.Integer(), nullable=True))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("executor", sa.String(length=140), server_default="", nullable=False))
        batch_op.add_column(sa.Column("step", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("step")
        batch_op.drop_column("executor")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("max_steps")
        batch_op.drop_column("mcp_servers")
        batch_op.drop_column("builtin_tools")
