"""Orders of a site by creation time: the flood check counts a site's recent orders on every new one.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_work_orders_site_created", "work_orders", ["site_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_work_orders_site_created", table_name="work_orders")
