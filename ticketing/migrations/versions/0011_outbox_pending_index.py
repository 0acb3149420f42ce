"""The deliverer's look at the outbox: a subscription's pending messages in order, from one index.

With only single-column indexes the look walked every message a subscription ever had (delivered ones
too) many times a second, and grew with the delivery log.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_webhook_outbox_pending", "webhook_outbox", ["state", "subscription_id", "id"])
    op.drop_index("ix_webhook_outbox_state", table_name="webhook_outbox")


def downgrade() -> None:
    op.create_index("ix_webhook_outbox_state", "webhook_outbox", ["state"])
    op.drop_index("ix_webhook_outbox_pending", table_name="webhook_outbox")
