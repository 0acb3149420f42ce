"""Alarm hygiene and more origins: repeat-failure links, site incidents, due dates; asset operating states.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as table:
        table.add_column(sa.Column("repeat_of", sa.String(32)))
        table.add_column(sa.Column("scope", sa.String(10), nullable=False, server_default="asset"))
        table.add_column(sa.Column("due_at", sa.Float))
        table.add_column(sa.Column("closed_at", sa.Float))
    op.create_table(
        "asset_states",
        sa.Column("asset_id", sa.String(100), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("until", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("asset_states")
    with op.batch_alter_table("work_orders") as table:
        for column in ("closed_at", "due_at", "scope", "repeat_of"):
            table.drop_column(column)
