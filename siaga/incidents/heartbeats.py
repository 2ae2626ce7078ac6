"""Heartbeats: signals expected at least every so often (a dead man's switch), when each was last
seen, and the alert a quiet one raises.

Rules:

* A heartbeat trigger (``heartbeat: {every: 5m}``) watches one heartbeat per group: the key is
  `siaga.incidents.routing.heartbeat_key` (what it expects) with the trigger's group key, so
  runbooks expecting the same signal share one heartbeat.
* A sign of life is a firing alert the receiver took in that a heartbeat trigger expects
  (`routing.expects`: its source and match labels), repeats included (Alertmanager repeating a
  firing Watchdog alert is the signal), or a post to ``/heartbeats/{name}`` (a ``source:
  heartbeat`` trigger with ``match: {name: ...}``). It moves the heartbeat's `last_seen_at` to the
  time it was received (never back) and its `due_at` to that time plus the interval.
* An ungrouped heartbeat is watched from the moment a receiver starts (`arm`); a grouped one from
  its group's first sign of life.
* Past `due_at` with no sign of life the heartbeat goes quiet (`check`): it raises one firing alert,
  source ``heartbeat``, fingerprint fixed per heartbeat and group, `starts_at` the moment it went
  quiet, labels those of the trigger's `match` and group plus `routing.HEARTBEAT_LABEL`; routed
  as any alert, it opens one incident and its runbook runs once. The next sign of life makes it
  alive again and raises the same alert resolved, which resolves the incident.
* A watcher judges nothing quiet until one interval has passed since it started: a receiver that
  was down heard nothing, which proves no silence.
* Safe with several receivers on one database: state changes are conditional UPDATEs, and a
  quiet spell's alerts have a fixed episode (fingerprint, start), so recording them twice records
  them once. A spell's alert is noted `reported` once recorded; until then every check raises it
  again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, case, false, select, true, update

from siaga.canonical import digest
from siaga.runbook import Runbook
from siaga.runbook.durations import format_duration
from siaga.runbook.models import HEARTBEAT_SOURCE, Trigger
from siaga.store import as_utc, heartbeats, insert_ignoring

from .alert import Alert, AlertStatus
from .routing import HEARTBEAT_LABEL, expects, group_key, heartbeat_key

__all__ = ["Expected", "Spell", "arm", "check", "expected", "heartbeat_rows", "mark_reported", "note_alerts", "note_named"]


@dataclass(frozen=True)
class Expected:
    """One heartbeat the runbooks expect: the trigger (the first of those that share it) and the
    runbooks whose triggers expect it."""

    key: str
    trigger: Trigger
    runbooks: tuple[str, ...]


@dataclass(frozen=True)
class Spell:
    """A quiet spell's alert to record: firing when it went quiet, resolved when it came back."""

    heartbeat_id: str
    state: str
    quiet_since: datetime
    alert: Alert


def expected(runbooks: Mapping[str, Runbook]) -> dict[str, Expected]:
    """The heartbeats `runbooks` expect, by key."""
    found: dict[str, Expected] = {}
    for runbook in runbooks.values():
        for trigger in runbook.triggers:
            if trigger.heartbeat is None:
                continue
            key = heartbeat_key(trigger)
            known = found.get(key)
            found[key] = Expected(key, trigger, (*known.runbooks, runbook.id) if known else (runbook.id,))
    return found


def _row_id(key: str, group: str) -> str:
    return digest([key, group])


def _labels(trigger: Trigger, alert: Alert) -> dict[str, str]:
    """The labels of the alert the heartbeat raises: the trigger's match and group, and its key."""
    group = {name: alert.labels.get(name, "") for name in trigger.group_by}
    return {**trigger.match, **group, HEARTBEAT_LABEL: heartbeat_key(trigger)}


def arm(engine: Engine, runbooks: Mapping[str, Runbook], now: datetime) -> int:
    """Start watching the ungrouped heartbeats not watched yet (as if seen at `now`); how many."""
    armed = 0
    with engine.begin() as connection:
        for hb in expected(runbooks).values():
            if hb.trigger.group_by:
                continue
            empty = Alert(source=hb.trigger.source, fingerprint="-", status=AlertStatus.FIRING)
            group = group_key(hb.trigger, empty)
            assert hb.trigger.heartbeat is not None
            inserted = connection.execute(
                insert_ignoring(connection, heartbeats).values(
                    id=_row_id(hb.key, group), heartbeat=hb.key, group_key=group, labels=_labels(hb.trigger, empty),
                    last_seen_at=now, due_at=now + hb.trigger.heartbeat.every, state="alive", reported=True,
                ).returning(heartbeats.c.id)
            ).first()
            armed += inserted is not None
    return armed


def note_alerts(engine: Engine, runbooks: Mapping[str, Runbook], batch: Iterable[Alert], now: datetime) -> int:
    """Note the signs of life among `batch` (firing alerts received at `now`); how many heartbeats
    they moved."""
    watched = expected(runbooks)
    if not watched:
        return 0
    seen: dict[str, tuple[Expected, Alert]] = {}
    for alert in batch:
        if alert.status is not AlertStatus.FIRING:
            continue
        for hb in watched.values():
            if expects(hb.trigger, alert):
                seen.setdefault(_row_id(hb.key, group_key(hb.trigger, alert)), (hb, alert))
    if not seen:
        return 0
    with engine.begin() as connection:
        for row_id, (hb, alert) in sorted(seen.items()):  # in one order: two receivers never deadlock
            assert hb.trigger.heartbeat is not None
            due = now + hb.trigger.heartbeat.every
            inserted = connection.execute(
                insert_ignoring(connection, heartbeats).values(
                    id=row_id, heartbeat=hb.key, group_key=group_key(hb.trigger, alert), labels=_labels(hb.trigger, alert),
                    last_seen_at=now, due_at=due, state="alive", reported=True,
                ).returning(heartbeats.c.id)
            ).first()
            if inserted is None:
                connection.execute(
                    update(heartbeats)
                    .where(heartbeats.c.id == row_id, heartbeats.c.last_seen_at <= now)
                    .values(last_seen_at=now, due_at=due, state="alive",
                            reported=case((heartbeats.c.state == "quiet", false()), else_=heartbeats.c.reported))
                )
    return len(seen)


def note_named(engine: Engine, runbooks: Mapping[str, Runbook], name: str, labels: Mapping[str, str], now: datetime) -> int:
    """Note a heartbeat posted as `name` (with `labels` for the triggers' match and group_by);
    how many heartbeats it moved (0: no runbook expects it)."""
    signal = Alert(source=HEARTBEAT_SOURCE, fingerprint=f"post-{name}", status=AlertStatus.FIRING,
                   labels={**labels, "name": name})
    return note_alerts(engine, runbooks, [signal], now)


def check(engine: Engine, runbooks: Mapping[str, Runbook], now: datetime, watching_since: datetime) -> list[Spell]:
    """Mark the heartbeats past due quiet (none before an interval from `watching_since`), and
    return every quiet spell's alert not yet recorded (`mark_reported` once it is)."""
    watched = expected(runbooks)
    if not watched:
        return []
    with engine.begin() as connection:
        due = connection.execute(
            select(heartbeats.c.id, heartbeats.c.heartbeat, heartbeats.c.due_at).where(
                heartbeats.c.state == "alive", heartbeats.c.due_at <= now, heartbeats.c.heartbeat.in_(list(watched))
            )
        ).all()
        for row_id, key, due_at in due:
            every = watched[key].trigger.heartbeat.every  # type: ignore[union-attr]
            if watching_since + every > now:
                continue  # just started: no proof of silence yet
            connection.execute(
                update(heartbeats)
                .where(heartbeats.c.id == row_id, heartbeats.c.state == "alive", heartbeats.c.due_at == due_at)
                .values(state="quiet", quiet_since=due_at, reported=False)
            )
        unreported = connection.execute(
            select(heartbeats).where(
                heartbeats.c.reported == false(), heartbeats.c.quiet_since.is_not(None),
                heartbeats.c.heartbeat.in_(list(watched)),
            ).order_by(heartbeats.c.quiet_since, heartbeats.c.id)
        ).mappings().all()
    return [_spell(row, watched[row["heartbeat"]]) for row in unreported]


def _spell(row: Mapping[str, Any], hb: Expected) -> Spell:
    assert hb.trigger.heartbeat is not None
    since = as_utc(row["quiet_since"])
    seen = as_utc(row["last_seen_at"])
    assert since is not None and seen is not None
    quiet = row["state"] == "quiet"
    match = ", ".join(f"{k}={v}" for k, v in sorted(hb.trigger.match.items()))
    what = f"{hb.trigger.source} signal" + (f" ({match})" if match else "")
    summary = (
        f"no {what} since {seen:%Y-%m-%d %H:%M:%S} UTC (expected every {format_duration(hb.trigger.heartbeat.every)})"
        if quiet else f"the {what} is back ({seen:%Y-%m-%d %H:%M:%S} UTC)"
    )
    alert = Alert(
        source=HEARTBEAT_SOURCE,
        fingerprint=f"heartbeat-{row['id'][:40]}",
        status=AlertStatus.FIRING if quiet else AlertStatus.RESOLVED,
        labels=dict(row["labels"]),
        annotations={"summary": summary, "last_seen_at": seen.isoformat()},
        starts_at=since,
        ends_at=None if quiet else seen,
        raw={"heartbeat": row["heartbeat"], "group_key": row["group_key"], "runbooks": list(hb.runbooks)},
    )
    return Spell(row["id"], row["state"], since, alert)


def mark_reported(engine: Engine, spells: Sequence[Spell]) -> None:
    """Note the spells' alerts recorded (unless the heartbeat changed state meanwhile: its new
    alert is still to record)."""
    with engine.begin() as connection:
        for spell in spells:
            connection.execute(
                update(heartbeats)
                .where(heartbeats.c.id == spell.heartbeat_id, heartbeats.c.state == spell.state,
                       heartbeats.c.quiet_since == spell.quiet_since)
                .values(reported=true())
            )


def heartbeat_rows(engine: Engine, runbooks: Mapping[str, Runbook]) -> list[dict[str, Any]]:
    """Every heartbeat watched, with the runbooks expecting it, the quiet ones first
    (`siaga heartbeats`)."""
    watched = expected(runbooks)
    with engine.connect() as connection:
        rows = connection.execute(select(heartbeats).order_by(heartbeats.c.state.desc(), heartbeats.c.due_at)).mappings().all()
    found = []
    for row in rows:
        hb = watched.get(row["heartbeat"])
        found.append({
            "heartbeat": row["heartbeat"], "group_key": row["group_key"], "state": row["state"],
            "last_seen_at": as_utc(row["last_seen_at"]), "due_at": as_utc(row["due_at"]),
            "quiet_since": as_utc(row["quiet_since"]), "labels": row["labels"],
            "source": hb.trigger.source if hb else None,
            "every": format_duration(hb.trigger.heartbeat.every) if hb and hb.trigger.heartbeat else None,
            "runbooks": list(hb.runbooks) if hb else [],
        })
    return found
