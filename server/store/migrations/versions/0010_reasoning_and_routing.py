"""reasoning and routing on messages, routing mode on agents

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 03:35:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasoning_content", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("thinking_blocks", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("reasoning_tokens", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("routing", sa.JSON(), nullable=True))
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("routing_mode", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("routing_mode")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("routing")
        batch_op.drop_column("reasoning_tokens")
        batch_op.drop_column("thinking_blocks")
        batch_op.drop_column("reasoning_content")
