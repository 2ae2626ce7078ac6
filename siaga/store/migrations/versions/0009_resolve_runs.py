"""incidents: the run of the runbook's on_resolve steps

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 13:18:46.928445
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite supports it for these): a batch would copy the table, and on a
    # store adopted from the pre-migration create_all its column order trips Alembic's reordering.
    op.add_column(
        "incidents",
        sa.Column("resolve_due", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("incidents", sa.Column("resolve_run_id", sa.String(length=64), nullable=True))
    op.add_column(
        "incidents",
        sa.Column("resolve_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("incidents", sa.Column("resolve_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("resolve_error")
        batch_op.drop_column("resolve_attempts")
        batch_op.drop_column("resolve_run_id")
        batch_op.drop_column("resolve_due")
