"""Keyed event chains: each event's MAC covers the order's sealed fields; the key that made it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_order_events") as table:
        # Events from before stay as they are (no key id): verification says they cannot be proven.
        table.add_column(sa.Column("row_digest", sa.String(64)))
        table.add_column(sa.Column("key_id", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("work_order_events") as table:
        table.drop_column("key_id")
        table.drop_column("row_digest")
