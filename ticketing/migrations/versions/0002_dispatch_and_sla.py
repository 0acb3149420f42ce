"""Dispatch offers, declines and escalation; SLA clocks; impact; engineers' last known locations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as table:
        table.add_column(sa.Column("impact", sa.String(10), nullable=False, server_default="incipient"))
        table.add_column(sa.Column("required_level", sa.Integer, nullable=False, server_default="1"))
        table.add_column(sa.Column("required_certifications", sa.JSON, nullable=False, server_default="[]"))
        table.add_column(sa.Column("offered_at", sa.Float))
        table.add_column(sa.Column("accepted_at", sa.Float))
        table.add_column(sa.Column("declined", sa.JSON, nullable=False, server_default="[]"))
        table.add_column(sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("sla", sa.JSON))
    op.create_table(
        "engineer_locations",
        sa.Column("engineer_id", sa.String(100), primary_key=True),
        sa.Column("latitude", sa.Float, nullable=False),
        sa.Column("longitude", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("engineer_locations")
    with op.batch_alter_table("work_orders") as table:
        for column in ("sla", "escalation_level", "declined", "accepted_at", "offered_at",
                       "required_certifications", "required_level", "impact"):
            table.drop_column(column)
