"""runbook revisions: the text each run was started with, the runs Siaga started, the revision a
run executes (new tables and a new nullable column only)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 11:57:01.061640
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_starts',
    sa.Column('start_key', sa.String(length=200), nullable=False),
    sa.Column('runbook_id', sa.String(length=100), nullable=False),
    sa.Column('revision', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('start_key')
    )
    op.create_table('runbook_revisions',
    sa.Column('revision', sa.String(length=64), nullable=False),
    sa.Column('runbook_id', sa.String(length=100), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('templates', sa.JSON(), nullable=False),
    sa.Column('kept_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('revision')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revision', sa.String(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('revision')

    op.drop_table('runbook_revisions')
    op.drop_table('run_starts')
