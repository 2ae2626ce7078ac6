"""Recording alerts: each notification once, and the incidents it opens, joins or resolves.

One path for one alert and for a storm. `process_batch` records a webhook's alerts in pieces of at
most `PIECE` alerts, each piece one short transaction (`record_piece`) holding its alerts, the
incidents they open or join or resolve, and those incidents' audit records; `process` is a batch of
one. A batch leaves the store as its alerts recorded one at a time, in order, would. A piece is
committed whole or not at all; a batch cut short (the process died) is recorded again from its
start, which changes nothing for what was already recorded.

* A repeat of a notification (same source, fingerprint, start and status) is recorded once and
  changes nothing else.
* Routing (`siaga.incidents.routing`): every trigger that takes a firing alert is a candidate; per
  runbook the first that fires decides, so one alert opens or joins at most one incident per
  runbook. Threshold triggers count from `threshold_hits` (`siaga.incidents.thresholds`).
* One open incident per (runbook, group key): opening inserts with ``ON CONFLICT DO NOTHING`` on the
  open key's unique index (`uq_incidents_open`, see `siaga.store`) and reads back the winner, so
  concurrent receivers (PostgreSQL) join one incident. The alerts a threshold counted in its window
  belong to the incident it opens.
* Where the deciding route would open or join an incident while a maintenance window covers it,
  the alert is recorded as suppressed by that window instead (`siaga.incidents.suppression`); when
  the window ends, `route_recorded` routes it again.
* A resolved notification marks its firing alert resolved; an incident whose firing alerts are all
  resolved is resolved, and its key is free for the next episode. If its runbook declares
  `on_resolve` steps and its run was started, a resolve run is then due
  (`siaga.incidents.runs.pending_resolve_runs`), started once like the first run. A firing
  notification whose resolved one came first ends its episode at once.
* No incident changes without its audit records, in the order one alert at a time writes them:
  ``alert.received`` for each alert that opened, joined or resolved it, ``incident.opened`` after
  the alert that opened it, ``incident.resolved`` after the one that resolved it.

How a piece is recorded: its new notifications are inserted together; what routing needs from the
store (notifications already recorded, episodes already over, open incidents, threshold hits) is
read with one query per kind; the alerts are then routed in order in memory, and what they make
(incidents, links, hits, audit records) is written together at the end. A resolved alert first
writes what the piece made so far, then resolves on the store as it stands.

Where a decided route opens or joins an incident is one method, `_Piece.apply`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, select, update

from siaga.audit import AuditTrail
from siaga.runbook import Runbook
from siaga.store import alerts, incident_alerts, incidents, insert_ignoring, write_transaction

from . import thresholds
from .alert import Alert, AlertStatus
from .ranking import priority_of
from .routing import Route, decide, per_runbook, render_inputs, routes
from .suppression import active_windows, held_back

__all__ = ["PIECE", "Outcome", "process", "process_batch", "record_piece", "route_recorded"]

PIECE = 250
"""The most alerts one transaction records: short enough that other writers (the inbox taking a
webhook in) wait a fraction of a second behind it, on SQLite's one write lock."""


@dataclass
class Outcome:
    """What one alert did: its row, whether this call recorded it, the incidents it opened,
    joined or resolved, and the inputs left out of an incident it opened (`render_inputs`)."""

    alert_id: int
    new: bool
    opened: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    """The maintenance windows that held it back from an incident (`siaga.incidents.suppression`)."""


def process(engine: Engine, runbooks: Mapping[str, Runbook], alert: Alert, now: datetime) -> Outcome:
    """Record `alert` and open, join or resolve its incidents, in one transaction."""
    return record_piece(engine, runbooks, [alert], now)[0]


def process_batch(
    engine: Engine, runbooks: Mapping[str, Runbook], batch: Sequence[Alert], now: datetime, piece: int = PIECE
) -> list[Outcome]:
    """Record `batch` in order, `piece` alerts per transaction; one outcome per alert."""
    outcomes: list[Outcome] = []
    for start in range(0, len(batch), piece):
        outcomes += record_piece(engine, runbooks, batch[start : start + piece], now)
    return outcomes


def record_piece(engine: Engine, runbooks: Mapping[str, Runbook], batch: Sequence[Alert], now: datetime) -> list[Outcome]:
    """Record `batch` (keep it to `PIECE` alerts) in one transaction: all of it or none."""
    with write_transaction(engine) as connection:
        return _Piece(connection, runbooks, now).record(batch)


def route_recorded(connection: Connection, runbooks: Mapping[str, Runbook], alert: Alert, alert_id: int,
                   now: datetime) -> Outcome:
    """Open or join the incidents of the recorded firing `alert`, as a new alert would (its
    threshold hits were counted when it was recorded): the end of a maintenance window does this
    again for the alerts it held back."""
    piece = _Piece(connection, runbooks, now)
    outcome = Outcome(alert_id=alert_id, new=False)
    found = routes(runbooks.values(), alert)
    piece.read_open(found)
    piece.counted.update(thresholds.load(connection, [
        route for route in found if route.threshold is not None and piece.open[route.open_key] is None], now))
    piece.route(found, alert, alert_id, outcome)
    piece.flush()
    return outcome


Notification = tuple[str, str, str, str]
"""What repeats of one notification share: (source, fingerprint, episode, status)."""
Episode = tuple[str, str, str]


def _episode(alert: Alert) -> str:
    return alert.episode[1]


def _notification(alert: Alert) -> Notification:
    return alert.source, alert.fingerprint, _episode(alert), str(alert.status)


def _same_episode(alert: Alert, status: AlertStatus) -> Any:
    return and_(
        alerts.c.source == alert.source,
        alerts.c.fingerprint == alert.fingerprint,
        alerts.c.episode == _episode(alert),
        alerts.c.status == str(status),
    )


def _chunks(items: Sequence[Any], size: int = 500) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class _Piece:
    """One piece of a batch being recorded in one transaction: what it read, and what it made and
    has yet to write (`flush`)."""

    def __init__(self, connection: Connection, runbooks: Mapping[str, Runbook], now: datetime) -> None:
        self.connection, self.runbooks, self.now = connection, runbooks, now
        self.trail = AuditTrail(connection.engine, clock=lambda: now)
        self.open: dict[str, str | None] = {}
        """Open key -> its open incident, or None where none is open."""
        self.ended: set[Episode] = set()
        """Episodes whose resolved notification is recorded."""
        self.counted: dict[thresholds.HitKey, dict[int, datetime]] = {}
        """The threshold hits in the window, of the keys counted so far (pending ones included)."""
        # made by the alerts so far, written by `flush`:
        self.new_incidents: dict[str, dict[str, Any]] = {}
        self.openers: dict[str, Outcome] = {}
        self.links: dict[tuple[str, int], None] = {}
        self.hits: list[dict[str, object]] = []
        self.over: list[int] = []
        self.drafts: list[tuple[str, str, dict[str, Any], str | None]] = []
        """Audit records to write: (kind, incident id, data, channel)."""
        self.windows = active_windows(connection, now)
        """The maintenance windows active now (read once per piece)."""

    def record(self, batch: Sequence[Alert]) -> list[Outcome]:
        rows = self.insert_alerts(batch)
        candidates = {
            n: routes(self.runbooks.values(), alert)
            for n, (alert, (_, new)) in enumerate(zip(batch, rows, strict=True))
            if new and alert.status is AlertStatus.FIRING
        }
        self.read_open([route for found in candidates.values() for route in found])
        self.counted.update(thresholds.load(self.connection, [
            route for found in candidates.values() for route in found
            if route.threshold is not None and self.open[route.open_key] is None
        ], self.now))
        outcomes = []
        for n, (alert, (alert_id, new)) in enumerate(zip(batch, rows, strict=True)):
            outcome = Outcome(alert_id=alert_id, new=new)
            outcomes.append(outcome)
            if not new:
                continue
            if alert.status is AlertStatus.RESOLVED:
                self.flush()
                outcome.resolved = self.resolve(alert, alert_id)
                continue
            self.count(candidates[n], alert_id)
            if _notification(alert)[:3] in self.ended:  # the resolved notification came first
                self.over.append(alert_id)
                continue
            self.route(candidates[n], alert, alert_id, outcome)
        self.flush()
        return outcomes

    # reading

    def insert_alerts(self, batch: Sequence[Alert]) -> list[tuple[int, bool]]:
        """Insert the batch's notifications not yet recorded; each alert's row id and whether it
        is new (the first of its notification, in the store and in the batch)."""
        recorded: dict[Notification, int] = {}
        for source in sorted({a.source for a in batch}):
            fingerprints = sorted({a.fingerprint for a in batch if a.source == source})
            for chunk in _chunks(fingerprints):
                found = self.connection.execute(
                    select(alerts.c.id, alerts.c.fingerprint, alerts.c.episode, alerts.c.status)
                    .where(alerts.c.source == source, alerts.c.fingerprint.in_(chunk))
                )
                for alert_id, fingerprint, episode, status in found:
                    recorded[(source, fingerprint, episode, status)] = alert_id
                    if status == str(AlertStatus.RESOLVED):
                        self.ended.add((source, fingerprint, episode))
        fresh: dict[Notification, Alert] = {}
        for alert in batch:
            if _notification(alert) not in recorded:
                fresh.setdefault(_notification(alert), alert)
        inserted: dict[Notification, int] = {}
        rows = [
            {"source": a.source, "fingerprint": a.fingerprint, "starts_at": a.starts_at, "episode": _episode(a),
             "status": str(a.status), "labels": dict(a.labels), "annotations": dict(a.annotations), "raw": a.raw,
             "received_at": self.now}
            for a in fresh.values()
        ]
        returning = (alerts.c.id, alerts.c.source, alerts.c.fingerprint, alerts.c.episode, alerts.c.status)
        for chunk in _chunks(rows):
            for alert_id, *key in self.connection.execute(insert_ignoring(self.connection, alerts).returning(*returning), list(chunk)):
                inserted[tuple(key)] = alert_id  # type: ignore[index]
        for key, alert in fresh.items():
            if key not in inserted:  # another receiver recorded it meanwhile (PostgreSQL)
                recorded[key] = self.connection.execute(
                    select(alerts.c.id).where(_same_episode(alert, alert.status))).scalar_one()
        result, seen = [], set()
        for alert in batch:
            key = _notification(alert)
            if key in inserted and key not in seen:
                seen.add(key)
                result.append((inserted[key], True))
            else:
                result.append((inserted.get(key) or recorded[key], False))
        return result

    def read_open(self, found: Iterable[Route]) -> None:
        """Which of the open keys of `found` have an open incident."""
        keys = sorted({route.open_key for route in found} - set(self.open))
        for chunk in _chunks(keys):
            self.open.update(dict.fromkeys(chunk))
            self.open.update({key: incident_id for incident_id, key in self.connection.execute(
                select(incidents.c.id, incidents.c.open_key).where(incidents.c.open_key.in_(chunk)))})

    def is_open(self, route: Route) -> bool:
        if route.open_key not in self.open:
            self.read_open([route])
        return self.open[route.open_key] is not None

    def in_window(self, route: Route) -> int:
        """The alerts `route`'s threshold counted in its window, the current one included."""
        key = thresholds.hit_key(route)
        if key not in self.counted:  # its incident was open when the piece began: read it now
            thresholds.write(self.connection, self.hits)
            self.hits = []
            self.counted.update(thresholds.load(self.connection, [route], self.now))
        return len(self.counted[key])

    # routing

    def count(self, found: Sequence[Route], alert_id: int) -> None:
        """Every threshold that takes the alert counts it."""
        for route in found:
            if route.threshold is not None:
                self.hits.append(thresholds.hit_row(route, alert_id, self.now))
                self.counted.get(thresholds.hit_key(route), {})[alert_id] = self.now

    def route(self, candidates: Sequence[Route], alert: Alert, alert_id: int, outcome: Outcome) -> None:
        """Per runbook, the route that decides takes the alert, unless a maintenance window holds it
        back (the one check for windows)."""
        for of_runbook in per_runbook(candidates):
            route = decide(of_runbook, self.is_open, self.in_window)
            if route is None:
                continue
            if self.windows and (window := held_back(self.connection, self.windows, route, alert, alert_id, self.now)):
                outcome.suppressed.append(window)
                continue
            self.apply(route, alert, alert_id, outcome)

    def apply(self, route: Route, alert: Alert, alert_id: int, outcome: Outcome) -> None:
        """The decided `route` takes the alert: it joins the open incident of its key, or opens it."""
        incident_id = self.open.get(route.open_key)
        opened = incident_id is None
        if incident_id is None:
            incident_id = self.open_incident(route, alert, outcome)
        else:
            outcome.joined.append(incident_id)
        self.links[(incident_id, alert_id)] = None
        self.drafts.append(("alert.received", incident_id, _alert_record(alert, alert_id), alert.source))
        if opened:
            incident = self.new_incidents[incident_id]
            self.drafts.append(("incident.opened", incident_id, {
                "runbook": route.runbook_id, "group_key": route.group_key, "severity": incident["severity"],
                "inputs": dict(incident["inputs"])}, None))
        if opened and route.threshold is not None:  # the alerts that reached it belong to it too
            for earlier in self.counted[thresholds.hit_key(route)]:
                self.links[(incident_id, earlier)] = None

    def open_incident(self, route: Route, alert: Alert, outcome: Outcome) -> str:
        runbook = self.runbooks[route.runbook_id]
        inputs, problems = render_inputs(route.trigger, alert, runbook)
        outcome.problems.extend(f"{route.runbook_id}: {p}" for p in problems)
        incident_id = f"inc-{uuid.uuid4().hex[:16]}"
        self.new_incidents[incident_id] = {
            "id": incident_id, "runbook_id": route.runbook_id, "group_key": route.group_key,
            "open_key": route.open_key, "state": "open", "severity": str(runbook.severity),
            "priority": priority_of(alert, runbook), "opened_at": self.now, "inputs": inputs,
            "alert": alert.template_context(), "run_attempts": 0, "alerts": 0,
        }
        self.openers[incident_id] = outcome
        self.open[route.open_key] = incident_id
        outcome.opened.append(incident_id)
        return incident_id

    def resolve(self, alert: Alert, alert_id: int) -> list[str]:
        """Mark the firing alert of this episode resolved; resolve the open incidents it belonged
        to whose firing alerts are now all resolved (each open one records the alert), noting a
        resolve run due where the runbook declares `on_resolve` steps. Their ids."""
        c = self.connection
        self.ended.add(_notification(alert)[:3])
        c.execute(update(alerts).where(_same_episode(alert, AlertStatus.FIRING), alerts.c.resolved_at.is_(None))
                  .values(resolved_at=self.now))
        touched = c.execute(
            select(incidents.c.id)
            .join(incident_alerts, incident_alerts.c.incident_id == incidents.c.id)
            .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
            .where(_same_episode(alert, AlertStatus.FIRING), incidents.c.state == "open")
            .distinct()
        ).scalars().all()
        resolved = []
        for incident_id in touched:
            # PostgreSQL: one resolver at a time per incident, so two last alerts resolved at once
            # cannot each see the other still firing (SQLite has one writer anyway)
            runbook_id, open_key = c.execute(
                select(incidents.c.runbook_id, incidents.c.open_key).where(incidents.c.id == incident_id).with_for_update()
            ).one()
            c.execute(insert_ignoring(c, incident_alerts).values(incident_id=incident_id, alert_id=alert_id))
            self.drafts.append(("alert.received", incident_id, _alert_record(alert, alert_id), alert.source))
            still_firing = c.execute(
                select(func.count())
                .select_from(incident_alerts.join(alerts, alerts.c.id == incident_alerts.c.alert_id))
                .where(incident_alerts.c.incident_id == incident_id, alerts.c.status == str(AlertStatus.FIRING),
                       alerts.c.resolved_at.is_(None))
            ).scalar_one()
            if still_firing:
                continue
            runbook = self.runbooks.get(runbook_id)
            c.execute(
                update(incidents).where(incidents.c.id == incident_id, incidents.c.state == "open")
                .values(state="resolved", resolved_at=self.now, open_key=None,
                        resolve_due=bool(runbook is not None and runbook.on_resolve))
            )
            self.drafts.append(("incident.resolved", incident_id, {}, None))
            self.open[open_key] = None
            resolved.append(incident_id)
        return resolved

    # writing

    def flush(self) -> None:
        """Write what the piece made so far: incidents, links and their counts, episodes over,
        threshold hits, audit records."""
        c = self.connection
        if self.new_incidents:
            self._insert_incidents()
        if self.over:
            for chunk in _chunks(self.over):
                c.execute(update(alerts).where(alerts.c.id.in_(chunk)).values(resolved_at=self.now))
            self.over = []
        if self.links:
            counts: dict[str, int] = {}
            for chunk in _chunks(list(self.links)):
                linked = c.execute(
                    insert_ignoring(c, incident_alerts).returning(incident_alerts.c.incident_id),
                    [{"incident_id": i, "alert_id": a} for i, a in chunk],
                )
                for (incident_id,) in linked:
                    counts[incident_id] = counts.get(incident_id, 0) + 1
            if counts:
                c.execute(
                    update(incidents).where(incidents.c.id == bindparam("incident"))
                    .values(alerts=incidents.c.alerts + bindparam("n")),
                    [{"incident": incident_id, "n": n} for incident_id, n in counts.items()],
                )
            self.links = {}
        if self.hits:
            thresholds.write(c, self.hits)
            self.hits = []
        if self.drafts:
            self.trail.extend(c, [
                self.trail.draft(kind, incident_id=incident_id, channel=channel, data=data)
                for kind, incident_id, data, channel in self.drafts
            ])
            self.drafts = []

    def _insert_incidents(self) -> None:
        """Insert the incidents the piece opened; where another receiver opened the same key first
        (PostgreSQL), the alert joins that one instead."""
        c = self.connection
        rows = list(self.new_incidents.values())
        won: set[str] = set()
        for chunk in _chunks(rows):
            won.update(c.execute(insert_ignoring(c, incidents).returning(incidents.c.id), list(chunk)).scalars())
        lost = {row["id"]: row["open_key"] for row in rows if row["id"] not in won}
        if lost:
            winners = dict(c.execute(
                select(incidents.c.open_key, incidents.c.id).where(incidents.c.open_key.in_(list(lost.values())))).all())
            instead = {candidate: winners[key] for candidate, key in lost.items()}
            for candidate, winner in instead.items():
                outcome = self.openers[candidate]
                outcome.opened.remove(candidate)
                outcome.joined.append(winner)
                self.open[lost[candidate]] = winner
            self.links = {(instead.get(i, i), a): None for i, a in self.links}
            self.drafts = [(kind, instead.get(i, i), data, channel) for kind, i, data, channel in self.drafts
                           if not (kind == "incident.opened" and i in instead)]
        self.new_incidents, self.openers = {}, {}


def _alert_record(alert: Alert, alert_id: int) -> dict[str, Any]:
    return {"alert_id": alert_id, "source": alert.source, "fingerprint": alert.fingerprint,
            "status": str(alert.status), "labels": dict(alert.labels)}
