"""Work orders, their hash-chained events, anomalies and code counters.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("open_dedup_key", sa.String(200), unique=True),
        sa.Column("dedup_key", sa.String(200), nullable=False, index=True),
        sa.Column("device_id", sa.String(100), nullable=False, index=True),
        sa.Column("site_id", sa.String(100), nullable=False, index=True),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("failure_mode", sa.String(10), nullable=False, index=True),
        sa.Column("failure_mechanism", sa.String(60), nullable=False),
        sa.Column("failure_cause", sa.String(60), nullable=False),
        sa.Column("maintainable_item", sa.String(60), nullable=False),
        sa.Column("priority", sa.String(2), nullable=False, index=True),
        sa.Column("state", sa.String(20), nullable=False, index=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("required_skill", sa.String(60), nullable=False),
        sa.Column("occurrences", sa.Integer, nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("assigned_engineer_id", sa.String(100), index=True),
        sa.Column("assignment", sa.JSON),
        sa.Column("eta", sa.Float),
        sa.Column("closure", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("last_occurrence_at", sa.Float, nullable=False),
    )
    op.create_table(
        "work_order_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("work_order_id", sa.Integer, sa.ForeignKey("work_orders.id"), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "anomalies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.String(100), nullable=False, index=True),
        sa.Column("detected_at", sa.Float, nullable=False, index=True),
        sa.Column("detector", sa.String(40), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("severity", sa.String(10), nullable=False),
        sa.Column("failure_mode", sa.String(10), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("work_order_code", sa.String(32), index=True),
    )
    op.create_table(
        "code_counters",
        sa.Column("day", sa.String(8), primary_key=True),
        sa.Column("last", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("code_counters", "anomalies", "work_order_events", "work_orders"):
        op.drop_table(table)
