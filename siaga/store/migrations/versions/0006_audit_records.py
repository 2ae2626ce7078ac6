"""audit_records: the hash-chained audit trail

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 11:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_records',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('chain', sa.String(length=120), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=60), nullable=False),
    sa.Column('incident_id', sa.String(length=40), nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('actor', sa.String(length=200), nullable=True),
    sa.Column('channel', sa.String(length=100), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('chain', 'seq', name='uq_audit_records_chain_seq')
    )


def downgrade() -> None:
    op.drop_table('audit_records')
