"""alerts and incidents: fingerprints and group keys of any length on every database

PostgreSQL refused what SQLite kept (a fingerprint over 200 characters, a group key over 500, a
generic source name over 40), after the receiver had answered 202. The text columns become
unbounded; their unique keys move to fixed-size digests (`siaga.canonical.digest`), since a
PostgreSQL btree entry holds at most about 2.7 kB:

* alerts: ``notification`` = digest of (source, fingerprint, episode, status), unique
  (``uq_alerts_notification``, before over the four columns); a hash index on ``fingerprint``
  for lookups (a plain index on SQLite).
* incidents: ``key_digest`` = digest of (runbook_id, group_key); one open incident per key is the
  partial unique index ``uq_incidents_open`` on it where ``open_key`` is not NULL (before: a unique
  constraint on ``open_key``); a hash index on ``open_key`` for lookups.
* alerts, inbox, deliveries: ``source`` up to 64 characters (a generic source's name has up to 63).

Existing rows get their digests here.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

from siaga.canonical import digest

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OPEN = sa.text("open_key IS NOT NULL")
NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
"""Names SQLite's unnamed constraints in a batch (the baseline's unique ``open_key``)."""


def _fill(table: str, column: str, sources: tuple[str, ...]) -> None:
    """Set `column` to the digest of `sources` on every existing row."""
    bind = op.get_bind()
    rows = sa.table(table, sa.column("id"), sa.column(column), *(sa.column(name) for name in sources))
    found = bind.execute(sa.select(rows.c.id, *(rows.c[name] for name in sources))).all()
    updates = [{"row_id": row[0], "value": digest(list(row[1:]))} for row in found]
    if updates:
        bind.execute(
            rows.update().where(rows.c.id == sa.bindparam("row_id")).values({column: sa.bindparam("value")}),
            updates,
        )


def _unique_on(table: str, columns: list[str]) -> str:
    """The name of the unique constraint over `columns` (PostgreSQL named it; SQLite did not)."""
    for found in sa.inspect(op.get_bind()).get_unique_constraints(table):
        if found["column_names"] == columns and found["name"]:
            return found["name"]
    return NAMES["uq"] % {"table_name": table, "column_0_name": columns[0]}


def upgrade() -> None:
    op.add_column("alerts", sa.Column("notification", sa.String(length=64), nullable=True))
    _fill("alerts", "notification", ("source", "fingerprint", "episode", "status"))
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("source", existing_type=sa.String(length=40), type_=sa.String(length=64), existing_nullable=False)
        batch_op.alter_column("fingerprint", existing_type=sa.String(length=200), type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column("notification", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_constraint("uq_alerts_notification", type_="unique")
        batch_op.create_unique_constraint("uq_alerts_notification", ["notification"])
        batch_op.create_index("ix_alerts_fingerprint", ["fingerprint"], unique=False, postgresql_using="hash")

    op.add_column("incidents", sa.Column("key_digest", sa.String(length=64), nullable=True))
    _fill("incidents", "key_digest", ("runbook_id", "group_key"))
    open_key_unique = _unique_on("incidents", ["open_key"])
    with op.batch_alter_table("incidents", schema=None, naming_convention=NAMES) as batch_op:
        batch_op.alter_column("group_key", existing_type=sa.String(length=500), type_=sa.Text(), existing_nullable=False)
        batch_op.alter_column("open_key", existing_type=sa.String(length=700), type_=sa.Text(), existing_nullable=True)
        batch_op.alter_column("key_digest", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_constraint(open_key_unique, type_="unique")
        batch_op.create_index("uq_incidents_open", ["key_digest"], unique=True, sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.create_index("ix_incidents_open_key", ["open_key"], unique=False, postgresql_using="hash")

    for table in ("inbox", "deliveries"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("source", existing_type=sa.String(length=40), type_=sa.String(length=64), existing_nullable=False)


def downgrade() -> None:
    for table in ("deliveries", "inbox"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("source", existing_type=sa.String(length=64), type_=sa.String(length=40), existing_nullable=False)
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_index("ix_incidents_open_key")
        batch_op.drop_index("uq_incidents_open")
        batch_op.drop_column("key_digest")
        batch_op.alter_column("open_key", existing_type=sa.Text(), type_=sa.String(length=700), existing_nullable=True)
        batch_op.alter_column("group_key", existing_type=sa.Text(), type_=sa.String(length=500), existing_nullable=False)
        batch_op.create_unique_constraint("uq_incidents_open_key", ["open_key"])
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_fingerprint")
        batch_op.drop_constraint("uq_alerts_notification", type_="unique")
        batch_op.drop_column("notification")
        batch_op.alter_column("fingerprint", existing_type=sa.Text(), type_=sa.String(length=200), existing_nullable=False)
        batch_op.alter_column("source", existing_type=sa.String(length=64), type_=sa.String(length=40), existing_nullable=False)
        batch_op.create_unique_constraint("uq_alerts_notification", ["source", "fingerprint", "episode", "status"])
