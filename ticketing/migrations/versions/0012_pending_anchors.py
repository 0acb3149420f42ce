"""Chain heads committed but not yet anchored in an audit log kept in another database.

With ``auth.database_url`` set, the audit log is not in the work orders' database and an anchor cannot
commit with the events it anchors; a crash between the two commits left a chain `pmgw verify` could
never call complete. The head is now noted in the work orders' own transaction, and anchored (then
forgotten) after the commit, or at the next start.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_anchors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pending_anchors")
