"""money as DECIMAL, session claims, budget reservations, runner heartbeats

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 02:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 10)
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mariadb").with_variant(mysql.DATETIME(fsp=6), "mysql")


def upgrade() -> None:
    # MySQL's FLOAT is single precision: 6e-05 read back as 5.999999848427251e-05.
    # The conversion rounds each stored value to ten decimal places.
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "cost_usd", type_=MONEY, existing_type=sa.Float(), existing_nullable=False, existing_server_default="0"
        )
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.alter_column("max_cost_usd", type_=MONEY, existing_type=sa.Float(), existing_nullable=True)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_reply_id", sa.String(length=36), nullable=True))
    op.create_table(
        "budget_reservations",
        sa.Column("reply_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("create_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("reply_id", name=op.f("pk_budget_reservations")),
    )
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_budget_reservations_tenant_id"), ["tenant_id"], unique=False)
    op.create_table(
        "runners",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("start_time", TIMESTAMP, nullable=False),
        sa.Column("heartbeat_time", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runners")),
    )


def downgrade() -> None:
    op.drop_table("runners")
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_reservations_tenant_id"))
    op.drop_table("budget_reservations")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("active_reply_id")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.alter_column("max_cost_usd", type_=sa.Float(), existing_type=MONEY, existing_nullable=True)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("idempotency_key")
        batch_op.alter_column(
            "cost_usd", type_=sa.Float(), existing_type=MONEY, existing_nullable=False, existing_server_default="0"
        )
