"""Maintenance windows: opened by hand (``siaga maintenance start``), by a runbook's recurring
``maintenance:`` schedule, or by a drill; ended by their clock or by hand; and, once ended, the
alerts they held back routed again.

Rules:

* A window covers the runbooks it names (none named: every runbook) and the alerts carrying each
  of its `match` labels, from `starts_at` to `ends_at` (recording's check:
  `siaga.incidents.suppression`). Ending one early moves its `ends_at` to now.
* Every opening and end is recorded in the window's audit chain ``maintenance:<id>`` (with who,
  when, what it covers and why), as is each alert it held back and what its release did.
* A runbook's recurring window is opened (`schedule_declared`) from its occurrence in progress or
  starting within `AHEAD`, under an id fixed by the runbook, its place and its start, so several
  receivers open it once.
* When a window has ended, `release_ended` routes again, as if they arrived then, the alerts it
  held that are still firing (no resolved notification since), each to the runbooks it was held
  from: they open or join their incidents as usual, or another window still covering them holds
  them in turn. One transaction per window, claimed by a conditional UPDATE: with several
  receivers on one database, each window is released once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import Connection, Engine, func, select, update

from siaga.audit import AuditTrail
from siaga.runbook import Runbook
from siaga.runbook.durations import format_duration
from siaga.runbook.models import MaintenanceWindow
from siaga.store import alerts, as_utc, insert_ignoring, maintenance_windows, suppressed_alerts

from .alert import Alert, AlertStatus
from .recording import route_recorded
from .suppression import MAINTENANCE_CHAIN

__all__ = [
    "AHEAD",
    "MAX_LENGTH",
    "Release",
    "WindowError",
    "end_window",
    "get_window",
    "list_windows",
    "occurrences",
    "open_window",
    "release_ended",
    "schedule_declared",
]

AHEAD = timedelta(minutes=10)
"""How long before it starts a runbook's recurring window is opened (so it is there on time)."""
MAX_LENGTH = timedelta(days=30)
"""The longest window: longer is a typo, or an alert that should be silenced at its source."""


class WindowError(ValueError):
    """A window that cannot be opened or ended as asked (the message says why)."""


@dataclass
class Release:
    """What the end of one window did: the alerts it held that were still firing, routed again."""

    window_id: str
    routed: int = 0
    opened: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    held_again: list[str] = field(default_factory=list)
    """Other windows that hold some of them now."""


def _view(row: Mapping[str, Any]) -> dict[str, Any]:
    window = dict(row)
    for name in ("starts_at", "ends_at", "created_at", "released_at"):
        window[name] = as_utc(window[name])
    return window


def open_window(
    engine: Engine, *, runbooks: Sequence[str], match: Mapping[str, str], starts_at: datetime, ends_at: datetime,
    reason: str, by: str, origin: str = "cli", drill: bool = False, window_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Open a window with its audit record (given the `window_id` of one already there, return that
    one unchanged); `new` says which. Raise WindowError without a reason, for a window that lasts
    no time, or one over `MAX_LENGTH`."""
    now = now or datetime.now(UTC)
    if not reason.strip():
        raise WindowError("say why (a reason): it is shown to whoever wonders why an alert opened nothing")
    if ends_at <= starts_at:
        raise WindowError(f"the window ends ({ends_at:%Y-%m-%d %H:%M:%S} UTC) before it starts")
    if ends_at - starts_at > MAX_LENGTH:
        raise WindowError(f"a window lasts at most {format_duration(MAX_LENGTH)}, not {format_duration(ends_at - starts_at)}")
    values = {
        "id": window_id or f"mw-{uuid.uuid4().hex[:10]}", "origin": origin, "runbooks": sorted(set(runbooks)),
        "match": dict(match), "starts_at": starts_at, "ends_at": ends_at, "reason": reason.strip(), "opened_by": by,
        "drill": drill, "created_at": now,
    }
    with engine.begin() as connection:
        made = connection.execute(insert_ignoring(connection, maintenance_windows).values(**values)
                                  .returning(maintenance_windows.c.id)).first()
        if made is not None:
            AuditTrail(engine, clock=lambda: now).append(
                "maintenance.opened", connection=connection, chain=MAINTENANCE_CHAIN.format(values["id"]), actor=by,
                channel=origin,
                data={"window": values["id"], "runbooks": values["runbooks"] or "all", "match": values["match"],
                      "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat(), "reason": values["reason"],
                      "drill": drill},
            )
        row = connection.execute(select(maintenance_windows).where(maintenance_windows.c.id == values["id"])).mappings().one()
    return _view(row) | {"new": made is not None}


def end_window(engine: Engine, window_id: str, by: str, now: datetime | None = None) -> dict[str, Any]:
    """End a window now (the receiver then releases what it held), with its audit record; raise
    WindowError if there is no such window or it has ended."""
    now = now or datetime.now(UTC)
    with engine.begin() as connection:
        row = connection.execute(select(maintenance_windows).where(maintenance_windows.c.id == window_id)).mappings().first()
        if row is None:
            raise WindowError(f"no maintenance window {window_id} (`siaga maintenance list --all` lists them)")
        ended = connection.execute(
            update(maintenance_windows)
            .where(maintenance_windows.c.id == window_id, maintenance_windows.c.ends_at > now)
            .values(ends_at=now, ended_by=by)
            .returning(maintenance_windows.c.id)
        ).first()
        if ended is None:
            raise WindowError(f"maintenance window {window_id} ended at {as_utc(row['ends_at']):%Y-%m-%d %H:%M:%S} UTC")
        AuditTrail(engine, clock=lambda: now).append(
            "maintenance.ended", connection=connection, chain=MAINTENANCE_CHAIN.format(window_id), actor=by, channel="cli",
            data={"window": window_id, "early": True, "was_to_end_at": as_utc(row["ends_at"]).isoformat()},  # type: ignore[union-attr]
        )
        row = connection.execute(select(maintenance_windows).where(maintenance_windows.c.id == window_id)).mappings().one()
    return _view(row)


def list_windows(engine: Engine, now: datetime | None = None, *, ended: bool = False) -> list[dict[str, Any]]:
    """The windows active or to come (with `ended`, every window), the soonest to end first, each
    with `state` (upcoming, active, ended) and how many alerts it held back (`suppressed`) and
    released (`released`)."""
    now = now or datetime.now(UTC)
    counts = (
        select(suppressed_alerts.c.window_id, func.count().label("suppressed"),
               func.count(suppressed_alerts.c.released_at).label("released"))
        .group_by(suppressed_alerts.c.window_id).subquery()
    )
    query = (
        select(maintenance_windows, func.coalesce(counts.c.suppressed, 0).label("suppressed"),
               func.coalesce(counts.c.released, 0).label("released"))
        .outerjoin(counts, counts.c.window_id == maintenance_windows.c.id)
        .order_by(maintenance_windows.c.ends_at, maintenance_windows.c.id)
    )
    if not ended:
        query = query.where(maintenance_windows.c.ends_at > now)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [_with_state(_view(row), now) for row in rows]


def _with_state(window: dict[str, Any], now: datetime) -> dict[str, Any]:
    window["state"] = "upcoming" if window["starts_at"] > now else "active" if window["ends_at"] > now else "ended"
    return window


def get_window(engine: Engine, window_id: str, now: datetime | None = None) -> dict[str, Any] | None:
    """One window with the alerts it held back (`alert_list`), or None."""
    with engine.connect() as connection:
        row = connection.execute(select(maintenance_windows).where(maintenance_windows.c.id == window_id)).mappings().first()
        if row is None:
            return None
        held = connection.execute(
            select(suppressed_alerts, alerts.c.source, alerts.c.fingerprint, alerts.c.labels, alerts.c.resolved_at)
            .join(alerts, alerts.c.id == suppressed_alerts.c.alert_id)
            .where(suppressed_alerts.c.window_id == window_id)
            .order_by(suppressed_alerts.c.alert_id, suppressed_alerts.c.runbook_id)
        ).mappings().all()
    window = _with_state(_view(row), now or datetime.now(UTC))
    window["alert_list"] = [
        {"alert_id": h["alert_id"], "runbook_id": h["runbook_id"], "group_key": h["group_key"], "source": h["source"],
         "fingerprint": h["fingerprint"], "labels": h["labels"], "at": as_utc(h["at"]),
         "resolved_at": as_utc(h["resolved_at"]), "released_at": as_utc(h["released_at"]), "incident_id": h["incident_id"]}
        for h in held
    ]
    return window


def occurrences(declared: MaintenanceWindow, now: datetime, ahead: timedelta = AHEAD) -> Iterator[tuple[datetime, datetime]]:
    """(start, end) in UTC of `declared`'s occurrence in progress at `now`, if any, then of those
    starting within `ahead`."""
    zone = ZoneInfo(declared.timezone)
    local = now.astimezone(zone)
    last = next(CronSim(declared.schedule, local + timedelta(microseconds=1), reverse=True))
    if last + declared.for_ > local:
        yield last.astimezone(UTC), (last + declared.for_).astimezone(UTC)
    for start in CronSim(declared.schedule, local):
        if start > local + ahead:
            return
        yield start.astimezone(UTC), (start + declared.for_).astimezone(UTC)


def schedule_declared(engine: Engine, runbooks: Mapping[str, Runbook], now: datetime) -> list[dict[str, Any]]:
    """Open the runbooks' recurring windows in progress or starting within `AHEAD` (each once);
    return the windows opened by this call."""
    due = {
        f"{runbook.id}.maintenance{index}.{start:%Y%m%dT%H%M}Z": (runbook, index, declared, start, end)
        for runbook in runbooks.values()
        for index, declared in enumerate(runbook.maintenance)
        for start, end in occurrences(declared, now)
    }
    if not due:
        return []
    with engine.connect() as connection:  # read first: the watcher asks every second, and writes only when one is new
        there = set(connection.execute(select(maintenance_windows.c.id).where(maintenance_windows.c.id.in_(list(due)))).scalars())
    opened = []
    for window_id, (runbook, index, declared, start, end) in due.items():
        if window_id in there:
            continue
        window = open_window(
            engine, runbooks=[runbook.id], match=declared.match, starts_at=start, ends_at=end,
            reason=declared.reason or f"{runbook.id}'s maintenance[{index}] ({declared.schedule}, {declared.timezone})",
            by=f"runbook {runbook.id}", origin="runbook", window_id=window_id, now=now,
        )
        if window["new"]:
            opened.append(window)
    return opened


def release_ended(engine: Engine, runbooks: Mapping[str, Runbook], now: datetime) -> list[Release]:
    """Route again the alerts held by the windows that have ended and are not released yet."""
    with engine.connect() as connection:
        ended = connection.execute(
            select(maintenance_windows.c.id)
            .where(maintenance_windows.c.ends_at <= now, maintenance_windows.c.released_at.is_(None))
            .order_by(maintenance_windows.c.ends_at)
        ).scalars().all()
    releases = []
    for window_id in ended:
        with engine.begin() as connection:
            release = _release(connection, runbooks, window_id, now)
        if release is not None:
            releases.append(release)
    return releases


def _release(connection: Connection, runbooks: Mapping[str, Runbook], window_id: str, now: datetime) -> Release | None:
    claimed = connection.execute(
        update(maintenance_windows)
        .where(maintenance_windows.c.id == window_id, maintenance_windows.c.released_at.is_(None))
        .values(released_at=now)
        .returning(maintenance_windows.c.ended_by, maintenance_windows.c.ends_at)
    ).first()
    if claimed is None:
        return None  # another receiver released it
    trail = AuditTrail(connection.engine, clock=lambda: now)
    chain = MAINTENANCE_CHAIN.format(window_id)
    if claimed.ended_by is None:
        trail.append("maintenance.ended", connection=connection, chain=chain, channel="clock",
                     data={"window": window_id, "early": False, "ended_at": as_utc(claimed.ends_at).isoformat()})  # type: ignore[union-attr]
    held = connection.execute(
        select(suppressed_alerts.c.alert_id, suppressed_alerts.c.runbook_id, alerts)
        .join(alerts, alerts.c.id == suppressed_alerts.c.alert_id)
        .where(suppressed_alerts.c.window_id == window_id, suppressed_alerts.c.released_at.is_(None))
        .order_by(suppressed_alerts.c.alert_id)
    ).mappings().all()
    release = Release(window_id)
    by_alert: dict[int, list[Mapping[str, Any]]] = {}
    for row in held:
        by_alert.setdefault(row["alert_id"], []).append(row)
    for alert_id, rows in by_alert.items():
        first = rows[0]
        firing = first["status"] == str(AlertStatus.FIRING) and first["resolved_at"] is None
        incident = None
        if firing:
            alert = Alert(source=first["source"], fingerprint=first["fingerprint"], status=AlertStatus.FIRING,
                          labels=first["labels"], annotations=first["annotations"], starts_at=as_utc(first["starts_at"]))
            held_from = {row["runbook_id"]: runbooks[row["runbook_id"]] for row in rows if row["runbook_id"] in runbooks}
            outcome = route_recorded(connection, held_from, alert, alert_id, now)
            release.routed += 1
            release.opened += outcome.opened
            release.joined += outcome.joined
            release.held_again += [w for w in outcome.suppressed if w not in release.held_again]
            incident = next(iter(outcome.opened + outcome.joined), None)
        connection.execute(
            update(suppressed_alerts)
            .where(suppressed_alerts.c.window_id == window_id, suppressed_alerts.c.alert_id == alert_id)
            .values(released_at=now, incident_id=incident)
        )
    trail.append("maintenance.released", connection=connection, chain=chain, channel="clock",
                 data={"window": window_id, "held": len(by_alert), "still_firing": release.routed,
                       "opened": release.opened, "joined": release.joined, "held_again": release.held_again})
    return release

