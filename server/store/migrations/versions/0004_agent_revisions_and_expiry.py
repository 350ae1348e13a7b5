"""agent revisions and expiry

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 14:30:15.960988
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_revisions",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mariadb").with_variant(mysql.DATETIME(fsp=6), "mysql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_agent_revisions_agent_id_agents")),
        sa.PrimaryKeyConstraint("agent_id", "revision", name=op.f("pk_agent_revisions")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "expire_time",
                sa.DateTime()
                .with_variant(mysql.DATETIME(fsp=6), "mariadb")
                .with_variant(mysql.DATETIME(fsp=6), "mysql"),
                nullable=True,
            )
        )

    _backfill_revisions()


def _backfill_revisions() -> None:
    """Every existing agent gets its current settings as its current revision."""
    agents = sa.table(
        "agents",
        sa.column("id"),
        sa.column("key"),
        sa.column("display_name"),
        sa.column("system_prompt"),
        sa.column("default_model"),
        sa.column("fallback_models", sa.JSON()),
        sa.column("temperature"),
        sa.column("tools", sa.JSON()),
        sa.column("metadata", sa.JSON()),
        sa.column("allowed_tenants", sa.JSON()),
        sa.column("revision"),
        sa.column("update_time"),
    )
    revisions = sa.table(
        "agent_revisions",
        sa.column("agent_id"),
        sa.column("revision"),
        sa.column("settings", sa.JSON()),
        sa.column("create_time"),
    )
    rows = op.get_bind().execute(sa.select(agents)).mappings().all()
    if rows:
        fields = (
            "key",
            "display_name",
            "system_prompt",
            "default_model",
            "fallback_models",
            "temperature",
            "tools",
            "metadata",
            "allowed_tenants",
        )
        op.bulk_insert(
            revisions,
            [
                {
                    "agent_id": r["id"],
                    "revision": r["revision"],
                    "create_time": r["update_time"],
                    "settings": {f: (r[f] if r[f] is not None or f == "temperature" else []) for f in fields},
                }
                for r in rows
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("expire_time")

    op.drop_table("agent_revisions")
