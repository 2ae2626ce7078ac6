"""Recording alerts: record an alert once, open or join its incidents, resolve them.

Every function takes a connection inside a transaction (or an engine) and the time `now`; the
receiver's worker calls `process_batch` once per webhook, so an alert is recorded together with the
incidents it opened or joined, or not at all.

* A repeat of a notification (same source, fingerprint, start and status) is recorded once and
  changes nothing else.
* One open incident per (runbook, group key): opening inserts with ``ON CONFLICT DO NOTHING`` on the
  unique `open_key` and reads back the winner, so concurrent receivers (PostgreSQL) join one incident.
* Where a route would open or join an incident while a maintenance window covers it, the alert is
  recorded as suppressed instead (`siaga.incidents.suppression`).
* A resolved notification marks its firing alert resolved; an incident whose firing alerts are all
  resolved is resolved, and its key is free for the next episode. If its runbook declares
  `on_resolve` steps and its run was started, a resolve run is then due
  (`siaga.incidents.runs.pending_resolve_runs`), started once like the first run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, select, update

from siaga.audit import AuditTrail
from siaga.runbook import Runbook
from siaga.runbook.models import Trigger
from siaga.store import alerts, as_utc, incident_alerts, incidents, insert_new

from .alert import Alert, AlertStatus
from .ranking import priority_of
from .routing import Route, group_key, matches, render_inputs, routes, threshold_reached
from .suppression import any_window, held_back

__all__ = ["Outcome", "open_or_join", "process", "process_batch", "record_alert", "resolve_alert", "route_recorded"]


@dataclass
class Outcome:
    """What one alert did."""

    alert_id: int
    new: bool
    opened: list[str] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    """The maintenance windows that held it back from an incident (`siaga.incidents.suppression`)."""


_insert = insert_new


def _episode(alert: Alert) -> str:
    return alert.episode[1]


def record_alert(connection: Connection, alert: Alert, now: datetime) -> tuple[int, bool]:
    """Record `alert` once; return its row id and whether this call recorded it."""
    values = {
        "source": alert.source,
        "fingerprint": alert.fingerprint,
        "starts_at": alert.starts_at,
        "episode": _episode(alert),
        "status": str(alert.status),
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "raw": alert.raw,
        "received_at": now,
    }
    # RETURNING rather than rowcount: the row comes back only if this INSERT made it
    inserted = connection.execute(_insert(connection, alerts).values(**values).returning(alerts.c.id)).first()
    if inserted is not None:
        return inserted[0], True
    alert_id = connection.execute(
        select(alerts.c.id).where(
            alerts.c.source == alert.source,
            alerts.c.fingerprint == alert.fingerprint,
            alerts.c.episode == _episode(alert),
            alerts.c.status == str(alert.status),
        )
    ).scalar_one()
    return alert_id, False


def _same_episode(alert: Alert, status: AlertStatus) -> Any:
    return and_(
        alerts.c.source == alert.source,
        alerts.c.fingerprint == alert.fingerprint,
        alerts.c.episode == _episode(alert),
        alerts.c.status == str(status),
    )


def _link(connection: Connection, incident_id: str, alert_id: int) -> bool:
    inserted = connection.execute(
        _insert(connection, incident_alerts)
        .values(incident_id=incident_id, alert_id=alert_id)
        .returning(incident_alerts.c.alert_id)
    ).first()
    return inserted is not None


def open_or_join(
    connection: Connection, route: Route, alert: Alert, alert_id: int, runbook: Runbook, now: datetime
) -> tuple[str, bool]:
    """The open incident of `route.key`, opened now if there is none; and whether it was opened."""
    open_key = f"{route.runbook_id} {route.group_key}"
    candidate = f"inc-{uuid.uuid4().hex[:16]}"
    result = connection.execute(
        _insert(connection, incidents).values(
            id=candidate,
            runbook_id=route.runbook_id,
            group_key=route.group_key,
            open_key=open_key,
            state="open",
            severity=str(runbook.severity),
            priority=priority_of(alert, runbook),
            opened_at=now,
            inputs=route.inputs,
            alert=alert.template_context(),
            run_attempts=0,
            alerts=0,
        )
        .returning(incidents.c.id)
    )
    opened = result.first() is not None
    incident_id = (
        candidate
        if opened
        else connection.execute(select(incidents.c.id).where(incidents.c.open_key == open_key)).scalar_one()
    )
    if _link(connection, incident_id, alert_id):
        connection.execute(
            update(incidents).where(incidents.c.id == incident_id).values(alerts=incidents.c.alerts + 1)
        )
    return incident_id, opened


def _recent(connection: Connection, route: Route, runbook: Runbook, now: datetime) -> dict[int, datetime]:
    """The firing alerts of `route`'s trigger and group that arrived within its threshold window:
    row id -> arrival time."""
    assert route.threshold is not None
    trigger = runbook.triggers[route.trigger_index]
    rows = connection.execute(
        select(alerts.c.id, alerts.c.fingerprint, alerts.c.labels, alerts.c.received_at).where(
            alerts.c.source == trigger.source,
            alerts.c.status == str(AlertStatus.FIRING),
            alerts.c.received_at >= now - route.threshold.within - timedelta(seconds=1),
        )
    ).all()
    recent = {}
    for alert_id, fingerprint, labels, received_at in rows:
        candidate = Alert(source=trigger.source, fingerprint=fingerprint, status=AlertStatus.FIRING, labels=labels)
        if matches(trigger, candidate) and group_key(trigger, candidate) == route.group_key:
            recent[alert_id] = as_utc(received_at) or now
    return recent


def resolve_alert(
    connection: Connection, alert: Alert, alert_id: int, now: datetime, runbooks: Mapping[str, Runbook] | None = None
) -> list[str]:
    """Mark the firing alert of this episode resolved; resolve the open incidents it belonged to
    whose firing alerts are now all resolved (each open one records the alert in its audit trail),
    noting a resolve run due where the runbook (in `runbooks`) declares `on_resolve` steps.
    Return those incidents' ids."""
    connection.execute(
        update(alerts).where(_same_episode(alert, AlertStatus.FIRING), alerts.c.resolved_at.is_(None)).values(resolved_at=now)
    )
    touched = connection.execute(
        select(incidents.c.id)
        .join(incident_alerts, incident_alerts.c.incident_id == incidents.c.id)
        .join(alerts, alerts.c.id == incident_alerts.c.alert_id)
        .where(_same_episode(alert, AlertStatus.FIRING), incidents.c.state == "open")
        .distinct()
    ).scalars().all()
    resolved = []
    trail = AuditTrail(connection.engine, clock=lambda: now)
    for incident_id in touched:
        # PostgreSQL: one resolver at a time per incident, so two last alerts resolved at once
        # cannot each see the other still firing (SQLite has one writer anyway)
        connection.execute(select(incidents.c.id).where(incidents.c.id == incident_id).with_for_update())
        _link(connection, incident_id, alert_id)
        _audit_alert(trail, connection, incident_id, alert, alert_id)
        still_firing = connection.execute(
            select(func.count())
            .select_from(incident_alerts.join(alerts, alerts.c.id == incident_alerts.c.alert_id))
            .where(
                incident_alerts.c.incident_id == incident_id,
                alerts.c.status == str(AlertStatus.FIRING),
                alerts.c.resolved_at.is_(None),
            )
        ).scalar_one()
        if still_firing == 0:
            runbook_id = connection.execute(select(incidents.c.runbook_id).where(incidents.c.id == incident_id)).scalar_one()
            runbook = (runbooks or {}).get(runbook_id)
            connection.execute(
                update(incidents)
                .where(incidents.c.id == incident_id, incidents.c.state == "open")
                .values(state="resolved", resolved_at=now, open_key=None,
                        resolve_due=bool(runbook is not None and runbook.on_resolve))
            )
            trail.append("incident.resolved", incident_id=incident_id, connection=connection)
            resolved.append(incident_id)
    return resolved


def process(engine: Engine, runbooks: Mapping[str, Runbook], alert: Alert, now: datetime) -> Outcome:
    """Record `alert` and open, join or resolve its incidents, in one transaction."""
    with engine.begin() as connection:
        return _process(connection, runbooks, alert, now)


def _process(connection: Connection, runbooks: Mapping[str, Runbook], alert: Alert, now: datetime) -> Outcome:
    alert_id, new = record_alert(connection, alert, now)
    outcome = Outcome(alert_id=alert_id, new=new)
    if not new:
        return outcome
    if alert.status is AlertStatus.RESOLVED:
        outcome.resolved = resolve_alert(connection, alert, alert_id, now, runbooks)
        return outcome
    if connection.execute(select(alerts.c.id).where(_same_episode(alert, AlertStatus.RESOLVED))).first():
        # the resolved notification came first: this episode is over
        connection.execute(update(alerts).where(alerts.c.id == alert_id).values(resolved_at=now))
        return outcome
    return route_recorded(connection, runbooks, alert, alert_id, now, outcome)


def route_recorded(
    connection: Connection, runbooks: Mapping[str, Runbook], alert: Alert, alert_id: int, now: datetime,
    outcome: Outcome | None = None,
) -> Outcome:
    """Open or join the incidents of the recorded firing `alert` in `runbooks` (what a new alert
    does; the end of a maintenance window does it again for the alerts it held back)."""
    outcome = outcome or Outcome(alert_id=alert_id, new=False)
    trail = AuditTrail(connection.engine, clock=lambda: now)
    for route in routes(runbooks.values(), alert):
        runbook = runbooks[route.runbook_id]
        outcome.problems.extend(f"{route.runbook_id}: {p}" for p in route.problems)
        counted: dict[int, datetime] = {}
        if route.threshold is not None:
            already = connection.execute(
                select(incidents.c.id).where(incidents.c.open_key == f"{route.runbook_id} {route.group_key}")
            ).first()
            if not already:
                counted = _recent(connection, route, runbook, now)
                if not threshold_reached(route.threshold, list(counted.values()), now):
                    continue
        if (window := held_back(connection, route, alert, alert_id, now)) is not None:
            outcome.suppressed.append(window)  # a maintenance window covers it
            continue
        incident_id, opened = open_or_join(connection, route, alert, alert_id, runbook, now)
        since = now - route.threshold.within if route.threshold else now
        for earlier, at in counted.items():  # the alerts that reached the threshold belong to it too
            if earlier != alert_id and since <= at <= now and _link(connection, incident_id, earlier):
                connection.execute(
                    update(incidents).where(incidents.c.id == incident_id).values(alerts=incidents.c.alerts + 1)
                )
        (outcome.opened if opened else outcome.joined).append(incident_id)
        _audit_alert(trail, connection, incident_id, alert, alert_id)
        if opened:
            _audit_opened(trail, connection, incident_id, route.runbook_id, route.group_key, runbook, route.inputs)
    return outcome


def process_batch(engine: Engine, runbooks: Mapping[str, Runbook], batch: Sequence[Alert], now: datetime) -> list[Outcome]:
    """`process` for each alert of one webhook, in one transaction: all of them or none.

    A storm is mostly new firing alerts joining or opening incidents without a threshold; those
    take a bulk path (one multi-row INSERT for the alerts, one query for the open incidents, one
    INSERT for the incidents it opens, one for the links, one UPDATE per incident for its count),
    with the same outcome as one `process` per alert in order. A batch holding anything else
    (a resolved alert, a threshold trigger, a repeat inside the batch, a source with one alert)
    takes the per-alert path, still in one transaction.
    """
    with engine.begin() as connection:
        if len(batch) > 1 and _bulk_ok(runbooks, batch) and not any_window(connection, now):
            return _process_bulk(connection, runbooks, batch, now)
        return [_process(connection, runbooks, alert, now) for alert in batch]


def _first_matches(runbooks: Mapping[str, Runbook], alert: Alert) -> list[tuple[Runbook, Trigger]]:
    """Each runbook's first trigger that takes `alert` (what `routes` picks), in catalog order."""
    found = []
    for runbook in runbooks.values():
        for trigger in runbook.triggers:
            if matches(trigger, alert):
                found.append((runbook, trigger))
                break
    return found


def _bulk_ok(runbooks: Mapping[str, Runbook], batch: Sequence[Alert]) -> bool:
    seen: set[tuple[str, str, str, str]] = set()
    for alert in batch:
        key = (alert.source, *alert.episode)
        if alert.status is not AlertStatus.FIRING or key in seen:
            return False
        seen.add(key)
        if any(trigger.threshold is not None for _, trigger in _first_matches(runbooks, alert)):
            return False
    return True


def _chunks(items: Sequence[Any], size: int = 500) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _process_bulk(connection: Connection, runbooks: Mapping[str, Runbook], batch: Sequence[Alert], now: datetime) -> list[Outcome]:
    rows = [
        {
            "source": a.source, "fingerprint": a.fingerprint, "starts_at": a.starts_at, "episode": _episode(a),
            "status": str(a.status), "labels": dict(a.labels), "annotations": dict(a.annotations), "raw": a.raw,
            "received_at": now,
        }
        for a in batch
    ]
    ids: dict[tuple[str, str, str], int] = {}
    for chunk in _chunks(rows):
        inserted = connection.execute(
            _insert(connection, alerts).returning(alerts.c.id, alerts.c.source, alerts.c.fingerprint, alerts.c.episode),
            list(chunk),
        )
        ids.update({(src, fp, ep): alert_id for alert_id, src, fp, ep in inserted})
    outcomes: list[Outcome] = []
    fresh: list[tuple[Alert, Outcome]] = []
    for alert in batch:
        alert_id = ids.get((alert.source, alert.fingerprint, _episode(alert)))
        if alert_id is None:  # a repeat of a recorded notification: changes nothing
            outcomes.append(Outcome(alert_id=_recorded_id(connection, alert), new=False))
            continue
        outcome = Outcome(alert_id=alert_id, new=True)
        outcomes.append(outcome)
        fresh.append((alert, outcome))
    if not fresh:
        return outcomes

    # the resolved notification came first: these episodes are over
    ended: set[tuple[str, str, str]] = set()
    for source in {a.source for a, _ in fresh}:
        fingerprints = sorted({a.fingerprint for a, _ in fresh if a.source == source})
        for chunk in _chunks(fingerprints):
            found = connection.execute(
                select(alerts.c.fingerprint, alerts.c.episode).where(
                    alerts.c.source == source, alerts.c.status == str(AlertStatus.RESOLVED), alerts.c.fingerprint.in_(chunk)
                )
            )
            ended.update((source, fp, ep) for fp, ep in found)
    if ended:
        over = [o.alert_id for a, o in fresh if (a.source, a.fingerprint, _episode(a)) in ended]
        connection.execute(update(alerts).where(alerts.c.id.in_(over)).values(resolved_at=now))
        fresh = [(a, o) for a, o in fresh if (a.source, a.fingerprint, _episode(a)) not in ended]

    # route: the incident key of each (alert, runbook), in batch order
    keyed: dict[str, tuple[Runbook, Trigger, Alert]] = {}  # open key -> its first alert
    links: list[tuple[str, Alert, Outcome]] = []
    for alert, outcome in fresh:
        for runbook, trigger in _first_matches(runbooks, alert):
            open_key = f"{runbook.id} {group_key(trigger, alert)}"
            keyed.setdefault(open_key, (runbook, trigger, alert))
            links.append((open_key, alert, outcome))
    if not links:
        return outcomes
    existing: dict[str, str] = {}
    for chunk in _chunks(list(keyed)):
        existing.update(
            {key: incident_id for incident_id, key in connection.execute(
                select(incidents.c.id, incidents.c.open_key).where(incidents.c.open_key.in_(chunk))
            )}
        )
    opened: set[str] = set()
    to_open = []
    for open_key, (runbook, trigger, alert) in keyed.items():
        if open_key in existing:
            continue
        inputs, problems = render_inputs(trigger, alert, runbook)
        first = next(o for k, a, o in links if k == open_key)
        first.problems.extend(f"{runbook.id}: {p}" for p in problems)
        to_open.append({
            "id": f"inc-{uuid.uuid4().hex[:16]}", "runbook_id": runbook.id, "group_key": group_key(trigger, alert),
            "open_key": open_key, "state": "open", "severity": str(runbook.severity),
            "priority": priority_of(alert, runbook), "opened_at": now, "inputs": inputs,
            "alert": alert.template_context(), "run_attempts": 0, "alerts": 0,
        })
    for chunk in _chunks(to_open):
        won = connection.execute(_insert(connection, incidents).returning(incidents.c.id, incidents.c.open_key), list(chunk))
        for incident_id, open_key in won:
            existing[open_key] = incident_id
            opened.add(incident_id)
    missing = [row["open_key"] for row in to_open if row["open_key"] not in existing]
    if missing:  # another receiver opened them meanwhile (PostgreSQL): join its incidents
        existing.update({key: incident_id for incident_id, key in connection.execute(
            select(incidents.c.id, incidents.c.open_key).where(incidents.c.open_key.in_(missing)))})

    counts: dict[str, int] = {}
    for open_key, alert, outcome in links:
        incident_id = existing[open_key]
        counts[incident_id] = counts.get(incident_id, 0) + 1
        opener = incident_id in opened and keyed[open_key][2] is alert
        (outcome.opened if opener else outcome.joined).append(incident_id)
    # the incidents' records, as one alert at a time would write them: each alert, and after the
    # one that opened an incident, its opening
    trail = AuditTrail(connection.engine, clock=lambda: now)
    opening = {row["open_key"]: row for row in to_open if existing.get(row["open_key"]) in opened}
    drafts = []
    for open_key, alert, outcome in links:
        incident_id = existing[open_key]
        drafts.append(trail.draft("alert.received", incident_id=incident_id, channel=alert.source,
                                  data=_alert_record(alert, outcome.alert_id)))
        if open_key in opening and keyed[open_key][2] is alert:
            row = opening[open_key]
            drafts.append(trail.draft("incident.opened", incident_id=incident_id,
                                      data=_opened_record(row["runbook_id"], row["group_key"], keyed[open_key][0], row["inputs"])))
    trail.extend(connection, drafts)
    link_rows = [{"incident_id": existing[k], "alert_id": o.alert_id} for k, _, o in links]
    for chunk in _chunks(link_rows):
        connection.execute(_insert(connection, incident_alerts), list(chunk))
    connection.execute(
        update(incidents).where(incidents.c.id == bindparam("incident")).values(alerts=incidents.c.alerts + bindparam("n")),
        [{"incident": incident_id, "n": n} for incident_id, n in counts.items()],
    )
    return outcomes


def _recorded_id(connection: Connection, alert: Alert) -> int:
    return connection.execute(select(alerts.c.id).where(_same_episode(alert, alert.status))).scalar_one()


def _audit_alert(trail: AuditTrail, connection: Connection, incident_id: str, alert: Alert, alert_id: int) -> None:
    """The incident's record of an alert that opened, joined or resolved it (part of the alert's
    transaction: no incident changes without its record)."""
    trail.append("alert.received", incident_id=incident_id, connection=connection, channel=alert.source,
                 data=_alert_record(alert, alert_id))


def _alert_record(alert: Alert, alert_id: int) -> dict[str, Any]:
    return {"alert_id": alert_id, "source": alert.source, "fingerprint": alert.fingerprint,
            "status": str(alert.status), "labels": dict(alert.labels)}


def _audit_opened(trail: AuditTrail, connection: Connection, incident_id: str, runbook_id: str, group: str,
                  runbook: Runbook, inputs: Mapping[str, Any]) -> None:
    trail.append("incident.opened", incident_id=incident_id, connection=connection,
                 data=_opened_record(runbook_id, group, runbook, inputs))


def _opened_record(runbook_id: str, group: str, runbook: Runbook, inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"runbook": runbook_id, "group_key": group, "severity": str(runbook.severity), "inputs": dict(inputs)}
