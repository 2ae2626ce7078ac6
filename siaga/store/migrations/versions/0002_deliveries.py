"""Deliveries: webhooks seen lately, so a replay is refused across restarts and receivers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:24:39.877282
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=600), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("source", "key", name="uq_deliveries_key"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_expires_at"))

    op.drop_table("deliveries")
