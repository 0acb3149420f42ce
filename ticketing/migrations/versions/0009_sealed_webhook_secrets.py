"""Webhook signing secrets are kept sealed (encrypted with a key from the gateway's keyring): wider column.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions") as table:
        table.alter_column("secret", type_=sa.String(500), existing_type=sa.String(100), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions") as table:
        table.alter_column("secret", type_=sa.String(100), existing_type=sa.String(500), existing_nullable=False)
