"""Siaga's own store: SQLite in WAL mode under the data folder by default, any SQLAlchemy URL
(PostgreSQL for scale-out) through ``SIAGA_DATABASE_URL``.

Tables: `side_effects` (the side-effect ledger); `alerts`, `incidents` and `incident_alerts`
(what the alert receiver recorded and opened); `gates`, `gate_codes` and `gate_events` (approval
gates, their hashed one-time codes and everything that happened at them).

One open incident per (runbook, group key): `incidents.open_key` holds the key while the incident is
open and NULL once it is resolved, under a unique constraint. SQLite and PostgreSQL both treat NULLs
as distinct in a unique constraint, so resolved incidents never collide and two receivers racing to
open the same incident cannot both succeed.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.exc import DatabaseError

from .home import siaga_home

metadata = MetaData()

side_effects = Table(
    "side_effects",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("action", String(100), nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # intent | done | failed
    Column("result", JSON),
    Column("error", Text),
    Column("run_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(40), nullable=False),
    Column("fingerprint", String(200), nullable=False),
    Column("starts_at", DateTime(timezone=True)),
    # `starts_at` as ISO text, "" when the source gave none: the unique constraint needs a
    # non-NULL value, since NULLs never collide.
    Column("episode", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # firing | resolved
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("raw", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),  # on a firing alert: when it was resolved
    UniqueConstraint("source", "fingerprint", "episode", "status", name="uq_alerts_notification"),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("runbook_id", String(100), nullable=False),
    Column("group_key", String(500), nullable=False),
    # runbook_id + " " + group_key while open, NULL once resolved: one open incident per key
    Column("open_key", String(700), unique=True),
    Column("state", String(16), nullable=False),  # open | resolved
    Column("severity", String(16)),
    Column("priority", String(16)),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("inputs", JSON, nullable=False),
    Column("alert", JSON),  # the template context of the alert that opened it
    Column("flow_run_id", String(64)),
    Column("run_attempts", Integer, nullable=False, default=0),
    Column("run_error", Text),
    Column("alerts", Integer, nullable=False, default=0),
)

incident_alerts = Table(
    "incident_alerts",
    metadata,
    Column("incident_id", String(40), ForeignKey("incidents.id"), primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), primary_key=True),
)
"""Which alerts belong to which incident (one alert may start several runbooks)."""

gates = Table(
    "gates",
    metadata,
    Column("id", String(200), primary_key=True),  # run id + ":" + step id
    Column("run_id", String(64), nullable=False, index=True),
    Column("step_id", String(80), nullable=False),
    Column("runbook_id", String(100), nullable=False),
    Column("incident_id", String(40), index=True),
    Column("mode", String(8), nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("requester", String(80)),
    Column("state", String(16), nullable=False),  # open | approved | rejected | timed_out | failed | cancelled
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Column("decision", Text),  # why it was decided so
    Column("approvers", JSON),  # who approved it, once approved
    Column("pause_key", String(120)),  # the Prefect pause now waiting for input
    Column("level", Integer, nullable=False, default=1),  # chain-of-command levels reached
    Column("evidence", JSON, nullable=False),
    Column("host", String(200)),  # where the run waiting at the gate lives
    Column("pid", Integer),
)
"""Approval gates: one per (flow run, step), kept across restarts of the run."""

gate_codes = Table(
    "gate_codes",
    metadata,
    Column("gate_id", String(200), ForeignKey("gates.id"), primary_key=True),
    Column("approver", String(80), primary_key=True),
    Column("salt", String(32), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("wrong", Integer, nullable=False, default=0),  # wrong codes typed for this approver
)
"""One-time codes, stored hashed (see `siaga.approvals.codes`)."""

gate_events = Table(
    "gate_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gate_id", String(200), ForeignKey("gates.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("actor", String(80)),
    Column("channel", String(16)),  # ui | cli | system | slack | email | pagerduty | outbox
    Column("detail", JSON, nullable=False),
)
"""Everything that happened at a gate, in order: opened, code sent, approval, rejection, refused
attempt, escalation, timeout, decision."""


def database_url(home: Path | None = None) -> str:
    return os.environ.get("SIAGA_DATABASE_URL") or f"sqlite:///{(home or siaga_home()) / 'siaga.db'}"


@cache
def engine(url: str | None = None) -> Engine:
    """The store's engine (one per URL per process), with its tables created."""
    url = url or database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    created = create_engine(url, future=True)
    if created.dialect.name == "sqlite":

        @event.listens_for(created, "connect")
        def _sqlite_pragmas(connection, record) -> None:  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    for attempt in range(len(metadata.tables) + 1):
        try:
            metadata.create_all(created)
            break
        except DatabaseError:
            # Another process created a table between our check and our CREATE (two flow runs
            # starting on a fresh store): it is there now; the next pass checks the rest.
            if attempt == len(metadata.tables):
                raise
    return created
