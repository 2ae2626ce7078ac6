"""gates: the decision ledger (approve and reject codes, the binding, the policy), and runs

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, as in 0009 (a batch would copy the tables).
    op.add_column("gates", sa.Column("params", sa.JSON(), nullable=True))
    op.add_column("gates", sa.Column("binding", sa.JSON(), nullable=True))
    op.add_column("gates", sa.Column("binding_hash", sa.String(length=64), nullable=True))
    op.add_column("gates", sa.Column("policy", sa.JSON(), nullable=True))
    op.add_column("gate_codes", sa.Column("reject_salt", sa.String(length=32), nullable=True))
    op.add_column("gate_codes", sa.Column("reject_hash", sa.String(length=64), nullable=True))
    op.add_column("gate_codes", sa.Column("used_for", sa.String(length=8), nullable=True))
    # Gates opened before the ledger have no binding or reject codes: their votes cannot be proven
    # the new way, so they close; their runs must be started again.
    op.execute(
        "UPDATE gates SET state = 'voided', decision = 'opened before the decision ledger (0010): "
        "start the run again' WHERE state = 'open'"
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("runbook_id", sa.String(length=100), nullable=False),
        sa.Column("incident_id", sa.String(length=40), nullable=True),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("requester", sa.String(length=80), nullable=True),
        sa.Column("params_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("form_key", sa.String(length=120), nullable=True),
        sa.Column("form_hash", sa.String(length=64), nullable=True),
        sa.Column("answered_key", sa.String(length=120), nullable=True),
        sa.Column("waiting_on", sa.JSON(), nullable=True),
        sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wake_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_incident_id"), ["incident_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_incident_id"))
    op.drop_table("runs")
    with op.batch_alter_table("gate_codes", schema=None) as batch_op:
        batch_op.drop_column("used_for")
        batch_op.drop_column("reject_hash")
        batch_op.drop_column("reject_salt")
    with op.batch_alter_table("gates", schema=None) as batch_op:
        batch_op.drop_column("policy")
        batch_op.drop_column("binding_hash")
        batch_op.drop_column("binding")
        batch_op.drop_column("params")
