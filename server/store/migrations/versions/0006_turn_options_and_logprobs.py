"""turn options, logprobs and refusal on messages

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 02:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("options", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("logprobs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("refusal", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("refusal")
        batch_op.drop_column("logprobs")
        batch_op.drop_column("options")
