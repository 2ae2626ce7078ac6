"""Incidents as people and the API read them: the ranked list, and one incident with its alerts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, select

from siaga.store import alerts, as_utc, incident_alerts, incidents

from .ranking import RANK

__all__ = ["get_incident", "incident_view", "list_incidents"]


def incident_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """An incident row as read out: times in UTC, without its internal open key and its digest."""
    incident = dict(row)
    incident.pop("open_key", None)
    incident.pop("key_digest", None)
    for name in ("opened_at", "resolved_at"):
        incident[name] = as_utc(incident[name])
    return incident


def list_incidents(engine: Engine, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Open incidents ranked (severity, priority, age: see `RANK`), each with its `rank` (1 the
    first to attend to); then resolved ones, the newest first."""
    found: list[dict[str, Any]] = []
    with engine.connect() as connection:
        if state in (None, "open"):
            query = select(incidents).where(incidents.c.state == "open").order_by(*RANK).limit(limit)
            rows = connection.execute(query).mappings().all()
            found += [incident_view(row) | {"rank": n} for n, row in enumerate(rows, 1)]
        if state in (None, "resolved") and len(found) < limit:
            query = (
                select(incidents).where(incidents.c.state == "resolved")
                .order_by(incidents.c.opened_at.desc()).limit(limit - len(found))
            )
            found += [incident_view(row) | {"rank": None} for row in connection.execute(query).mappings().all()]
    return found


def get_incident(engine: Engine, incident_id: str) -> dict[str, Any] | None:
    """The incident with its alerts, or None."""
    with engine.connect() as connection:
        row = connection.execute(select(incidents).where(incidents.c.id == incident_id)).mappings().first()
        if row is None:
            return None
        linked = connection.execute(
            select(alerts)
            .join(incident_alerts, incident_alerts.c.alert_id == alerts.c.id)
            .where(incident_alerts.c.incident_id == incident_id)
            .order_by(alerts.c.id)
        ).mappings().all()
    incident = incident_view(row)
    incident["alert_list"] = [
        {
            "id": a["id"],
            "source": a["source"],
            "fingerprint": a["fingerprint"],
            "status": a["status"],
            "starts_at": as_utc(a["starts_at"]),
            "received_at": as_utc(a["received_at"]),
            "resolved_at": as_utc(a["resolved_at"]),
            "labels": a["labels"],
            "annotations": a["annotations"],
        }
        for a in linked
    ]
    return incident
