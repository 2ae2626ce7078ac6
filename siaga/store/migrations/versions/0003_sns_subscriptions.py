"""SNS subscriptions: the topics the receiver confirmed, or was unsubscribed from.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:27:05.184393
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sns_subscriptions",
        sa.Column("topic_arn", sa.String(length=300), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic_arn"),
    )


def downgrade() -> None:
    op.drop_table("sns_subscriptions")
