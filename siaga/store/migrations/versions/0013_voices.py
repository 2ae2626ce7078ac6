"""voices: mentions to answer, the alerts that carried them, reply drafts

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("voice_drafts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("incident_id", sa.String(length=40), nullable=False),
        sa.Column("runbook_id", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=80), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=120), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("voice_drafts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_voice_drafts_incident_id"), ["incident_id"], unique=False)

    op.create_table("voices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("incident_id", sa.String(length=40), nullable=False),
        sa.Column("runbook_id", sa.String(length=100), nullable=False),
        sa.Column("platform", sa.String(length=40), nullable=False),
        sa.Column("mention_id", sa.String(length=300), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("thread", sa.String(length=300), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=True),
        sa.Column("author_tier", sa.String(length=40), nullable=True),
        sa.Column("sentiment", sa.String(length=40), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("topic", sa.String(length=80), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("draft_id", sa.String(length=40), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_by", sa.String(length=200), nullable=True),
        sa.Column("reply_url", sa.String(length=2000), nullable=True),
        sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dismissed_by", sa.String(length=200), nullable=True),
        sa.Column("dismissed_reason", sa.Text(), nullable=True),
        sa.Column("missed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("escalated", sa.Integer(), nullable=False),
        sa.Column("people", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"]),
        sa.ForeignKeyConstraint(["draft_id"], ["voice_drafts.id"]),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("platform", "mention_id", name="uq_voices_mention"),
    )
    with op.batch_alter_table("voices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_voices_incident_id"), ["incident_id"], unique=False)

    op.create_table("voice_alerts",
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("voice_id", sa.String(length=40), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"]),
        sa.ForeignKeyConstraint(["voice_id"], ["voices.id"]),
        sa.PrimaryKeyConstraint("alert_id"),
    )
    with op.batch_alter_table("voice_alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_voice_alerts_voice_id"), ["voice_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("voice_alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voice_alerts_voice_id"))

    op.drop_table("voice_alerts")
    with op.batch_alter_table("voices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voices_incident_id"))

    op.drop_table("voices")
    with op.batch_alter_table("voice_drafts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voice_drafts_incident_id"))

    op.drop_table("voice_drafts")
