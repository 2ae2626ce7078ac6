"""heartbeats, maintenance windows and the alerts they suppressed (new tables only)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 08:48:48.289999
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('heartbeats',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('heartbeat', sa.String(length=40), nullable=False),
    sa.Column('group_key', sa.Text(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=8), nullable=False),
    sa.Column('quiet_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reported', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('heartbeats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_heartbeats_due_at'), ['due_at'], unique=False)

    op.create_table('maintenance_windows',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('runbooks', sa.JSON(), nullable=False),
    sa.Column('match', sa.JSON(), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('opened_by', sa.String(length=200), nullable=True),
    sa.Column('ended_by', sa.String(length=200), nullable=True),
    sa.Column('drill', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('maintenance_windows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_maintenance_windows_ends_at'), ['ends_at'], unique=False)

    op.create_table('suppressed_alerts',
    sa.Column('window_id', sa.String(length=200), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=False),
    sa.Column('runbook_id', sa.String(length=100), nullable=False),
    sa.Column('group_key', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('incident_id', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], ),
    sa.ForeignKeyConstraint(['window_id'], ['maintenance_windows.id'], ),
    sa.PrimaryKeyConstraint('window_id', 'alert_id', 'runbook_id')
    )


def downgrade() -> None:
    op.drop_table('suppressed_alerts')
    with op.batch_alter_table('maintenance_windows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_maintenance_windows_ends_at'))

    op.drop_table('maintenance_windows')
    with op.batch_alter_table('heartbeats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_heartbeats_due_at'))

    op.drop_table('heartbeats')
