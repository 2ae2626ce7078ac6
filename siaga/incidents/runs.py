"""The runs an incident is owed: its first run once it opens, its resolve run once it resolves
(when its runbook declares `on_resolve` steps); which are due, and noting them started or failed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, select, true, update

from siaga.audit import AuditTrail
from siaga.store import incidents, run_starts

from .ranking import RANK
from .views import incident_view

__all__ = ["note_run_failure", "pending_resolve_runs", "pending_runs", "run_key", "set_flow_run", "set_resolve_run"]

RESOLVE_KEY_SUFFIX = ":resolved"


def run_key(incident_id: str, phase: str = "respond") -> str:
    """The idempotency key of the incident's run (its id), or of its resolve run (``<id>:resolved``):
    Prefect creates one run per key, and Siaga notes the revision each must execute under it."""
    return incident_id + (RESOLVE_KEY_SUFFIX if phase == "resolve" else "")


def pending_runs(engine: Engine, max_attempts: int = 20) -> list[dict[str, Any]]:
    """Open incidents whose run has not been started yet, the highest ranked first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(incidents)
            .where(incidents.c.state == "open", incidents.c.flow_run_id.is_(None), incidents.c.run_attempts < max_attempts)
            .order_by(*RANK)
        ).mappings().all()
    return [incident_view(row) | {"phase": "respond"} for row in rows]


def pending_resolve_runs(engine: Engine, max_attempts: int = 20) -> list[dict[str, Any]]:
    """Resolved incidents whose resolve run is due and not started yet, the highest ranked first.
    Only incidents whose first run was started: an incident that resolved before anything was
    done has nothing to wind down."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(incidents)
            .where(
                incidents.c.state == "resolved", incidents.c.resolve_due == true(),
                incidents.c.resolve_run_id.is_(None), incidents.c.flow_run_id.is_not(None),
                incidents.c.resolve_attempts < max_attempts,
            )
            .order_by(*RANK)
        ).mappings().all()
    return [incident_view(row) | {"phase": "resolve"} for row in rows]


def set_flow_run(engine: Engine, incident_id: str, flow_run_id: str) -> None:
    """Note the run started for the incident, with its audit record, in one transaction; once
    (several receivers on one store may each be told the same run: Prefect's idempotency key)."""
    with engine.begin() as connection:
        runbook_id = connection.execute(
            update(incidents)
            .where(incidents.c.id == incident_id, incidents.c.flow_run_id.is_(None))
            .values(flow_run_id=flow_run_id, run_error=None, run_attempts=incidents.c.run_attempts + 1)
            .returning(incidents.c.runbook_id)
        ).scalar_one_or_none()
        if runbook_id is None:
            return
        AuditTrail(engine).append(
            "incident.run_started", incident_id=incident_id, run_id=flow_run_id, connection=connection,
            data={"runbook": runbook_id, **_revision(connection, run_key(incident_id))},
        )


def set_resolve_run(engine: Engine, incident_id: str, flow_run_id: str) -> bool:
    """Note the resolve run started for the incident, with its audit record, in one transaction;
    False (and no record) if one was noted already."""
    with engine.begin() as connection:
        runbook_id = connection.execute(
            update(incidents)
            .where(incidents.c.id == incident_id, incidents.c.resolve_run_id.is_(None))
            .values(resolve_run_id=flow_run_id, resolve_error=None, resolve_attempts=incidents.c.resolve_attempts + 1)
            .returning(incidents.c.runbook_id)
        ).scalar_one_or_none()
        if runbook_id is None:
            return False
        AuditTrail(engine).append(
            "incident.resolve_run_started", incident_id=incident_id, run_id=flow_run_id, connection=connection,
            data={"runbook": runbook_id, **_revision(connection, run_key(incident_id, "resolve"))},
        )
    return True


def _revision(connection: Connection, start_key: str) -> dict[str, str]:
    """The runbook revision the run keyed `start_key` was started with, as its starter noted it."""
    noted = connection.execute(select(run_starts.c.revision).where(run_starts.c.start_key == start_key)).scalar()
    return {"revision": noted} if noted else {}


def note_run_failure(engine: Engine, incident_id: str, error: str, phase: str = "respond") -> None:
    """Note that the incident's run (or with ``phase="resolve"``, its resolve run) did not start."""
    if phase == "resolve":
        values = {"resolve_error": error[:2000], "resolve_attempts": incidents.c.resolve_attempts + 1}
    else:
        values = {"run_error": error[:2000], "run_attempts": incidents.c.run_attempts + 1}
    with engine.begin() as connection:
        connection.execute(update(incidents).where(incidents.c.id == incident_id).values(**values))
