"""Sign-off: the service reports issued at signing, and drawn signatures.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("work_order_id", sa.Integer, sa.ForeignKey("work_orders.id"), nullable=False, index=True),
        sa.Column("head", sa.String(64), nullable=False, index=True),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pdf", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "signature_drawings",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("work_order_id", sa.Integer, sa.ForeignKey("work_orders.id"), nullable=False, index=True),
        sa.Column("png", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("signature_drawings")
    op.drop_table("service_reports")
