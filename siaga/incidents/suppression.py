"""Recording's maintenance check: does a maintenance window hold an alert back from its incident?

Recording asks `held_back` where a route of a new firing alert would open or join an incident
(and a window's end asks it again, for the alerts that window held). Rules:

* A window covers a route while it is active (``starts_at <= now < ends_at``), names the route's
  runbook (or no runbook: then every runbook), and each of its `match` labels has exactly that value
  on the alert.
* Of the windows covering a route, the one ending last holds the alert: the alert is recorded as
  suppressed by it (`suppressed_alerts`, and an ``alert.suppressed`` record in the window's audit
  chain ``maintenance:<id>``), in the alert's transaction, and no incident is opened or joined.
  When that window ends, `siaga.incidents.maintenance.release_ended` routes the alert again if it
  is still firing (another window may then hold it in turn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from siaga.audit import AuditTrail
from siaga.store import insert_ignoring, maintenance_windows, suppressed_alerts

from .alert import Alert
from .routing import Route

__all__ = ["MAINTENANCE_CHAIN", "active_windows", "covers", "held_back"]

MAINTENANCE_CHAIN = "maintenance:{}"
"""The audit chain of a maintenance window (its id in the braces)."""


def covers(window: Mapping[str, Any], runbook_id: str, labels: Mapping[str, str]) -> bool:
    """Whether `window` (a `maintenance_windows` row) covers `runbook_id`'s route of an alert with
    `labels`, its times aside."""
    runbooks = window["runbooks"] or []
    if runbooks and runbook_id not in runbooks:
        return False
    return all(labels.get(name) == value for name, value in (window["match"] or {}).items())


def active_windows(connection: Connection, now: datetime) -> list[Mapping[str, Any]]:
    """The maintenance windows active at `now`, the one ending last first (read once per piece
    that recording writes)."""
    return list(connection.execute(
        select(maintenance_windows)
        .where(maintenance_windows.c.starts_at <= now, maintenance_windows.c.ends_at > now)
        .order_by(maintenance_windows.c.ends_at.desc(), maintenance_windows.c.id)
    ).mappings().all())


def held_back(connection: Connection, windows: Sequence[Mapping[str, Any]], route: Route, alert: Alert,
              alert_id: int, now: datetime) -> str | None:
    """The id of the window of `windows` (`active_windows`) holding `alert` back from `route`'s
    incident (the alert is recorded as suppressed by it, with its audit record), or None if none
    covers the route."""
    window = next((w for w in windows if covers(w, route.runbook_id, alert.labels)), None)
    if window is None:
        return None
    noted = connection.execute(
        insert_ignoring(connection, suppressed_alerts)
        .values(window_id=window["id"], alert_id=alert_id, runbook_id=route.runbook_id, group_key=route.group_key, at=now)
        .returning(suppressed_alerts.c.alert_id)
    ).first()
    if noted is not None:
        AuditTrail(connection.engine, clock=lambda: now).append(
            "alert.suppressed", connection=connection, chain=MAINTENANCE_CHAIN.format(window["id"]),
            channel=alert.source,
            data={"alert_id": alert_id, "source": alert.source, "fingerprint": alert.fingerprint,
                  "labels": dict(alert.labels), "runbook": route.runbook_id, "group_key": route.group_key},
        )
    return str(window["id"])
