"""Alert engine under a storm: threshold hits counted with an index; webhooks given up on.

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-25 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "threshold_hits",
        sa.Column("runbook_id", sa.String(length=100), nullable=False),
        sa.Column("trigger_index", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("group_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"]),
        sa.PrimaryKeyConstraint("runbook_id", "trigger_index", "alert_id"),
    )
    op.create_index("ix_threshold_hits_window", "threshold_hits",
                    ["runbook_id", "trigger_index", "group_hash", "received_at"], unique=False)
    op.create_index(op.f("ix_threshold_hits_received_at"), "threshold_hits", ["received_at"], unique=False)
    # Plain ADD COLUMN (as 0009): a batch would copy the table.
    op.add_column("inbox", sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("inbox", sa.Column("lost", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_inbox_failed_at"), "inbox", ["failed_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_inbox_failed_at"), table_name="inbox")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_column("lost")
        batch_op.drop_column("failed_at")
    op.drop_index(op.f("ix_threshold_hits_received_at"), table_name="threshold_hits")
    op.drop_index("ix_threshold_hits_window", table_name="threshold_hits")
    op.drop_table("threshold_hits")
