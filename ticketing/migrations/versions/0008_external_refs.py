"""External references of work orders; subscriptions that leave out their own changes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as table:
        table.add_column(sa.Column("external_ref", sa.String(100)))
        table.create_unique_constraint("uq_work_orders_external_ref", ["external_ref"])
    with op.batch_alter_table("webhook_subscriptions") as table:
        table.add_column(sa.Column("exclude_own", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions") as table:
        table.drop_column("exclude_own")
    with op.batch_alter_table("work_orders") as table:
        table.drop_constraint("uq_work_orders_external_ref", type_="unique")
        table.drop_column("external_ref")
