"""Taking voices in: every mention that reached an incident whose runbook has `voices:` becomes a
voice, read from the store (`incident_alerts` joined with `alerts`), idempotently.

`take_in` may be called by anyone at any time, as often as wanted (the receiver after each batch,
the clock watcher of `siaga up` on each pass, `siaga voices` and the reports before they read):

* each alert is read once (`voice_alerts` remembers it), and each mention is one voice, keyed by
  (platform, mention id): a repeat of it, from the same source or another, joins the voice;
* two processes taking the same alerts in at once make each voice once (the insert does nothing
  on a conflict, and only the process whose insert made the voice records it in the trail);
* a mention that arrives after its incident resolved (it joins no incident: none is open) is
  still a voice of it, marked late, when the runbook's trigger takes it into the same group within
  `voices.late_within` of the resolution;
* a mention that cannot be taken (no id, no text, an unknown platform, a huge text) becomes a
  refused voice with the reason, its alert kept whole: nothing is lost, and `siaga voices --all`
  shows it.

Each voice taken in is recorded in its incident's audit trail (``voice.received`` or
``voice.refused``) in the transaction that makes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, select

from siaga.audit import AuditTrail
from siaga.incidents.alert import Alert, AlertStatus
from siaga.incidents.routing import routes
from siaga.runbook import Roster, Runbook
from siaga.store import (
    alerts,
    as_utc,
    incident_alerts,
    incidents,
    insert_ignoring,
    voice_alerts,
    voices,
)

from .model import Refusal, is_mention, people_of, read_mention, remind_at, respond_within, voice_id

__all__ = ["Intake", "take_in"]

_CHUNK = 500


@dataclass
class Intake:
    """What one `take_in` did."""

    taken: list[str] = field(default_factory=list)
    """Voices made now."""
    refused: list[str] = field(default_factory=list)
    """Refused voices made now (each with its reason in the store)."""
    repeats: int = 0
    """Alerts that carried a mention already a voice."""


@dataclass(frozen=True)
class _Candidate:
    alert_id: int
    alert: Alert
    received_at: datetime
    posted_at: datetime | None
    incident_id: str
    runbook_id: str
    late: bool


def take_in(
    engine: Engine, runbooks: Mapping[str, Runbook], *, roster: Roster | None = None, now: datetime | None = None
) -> Intake:
    """Make a voice of every mention not yet taken in, of the incidents of `runbooks` that have
    `voices:` (the `roster` says who holds their roles)."""
    now = now or datetime.now(UTC)
    answering = {rid: rb for rid, rb in runbooks.items() if rb.voices is not None}
    if not answering:
        return Intake()
    kinds = sorted({m.source for rb in answering.values() for m in rb.voices.mentions})  # type: ignore[union-attr]
    with engine.connect() as connection:
        candidates = _linked(connection, answering, kinds) + _late(connection, answering, kinds, now)
    rows, links, sources = _rows(candidates, answering, roster, now)
    if not links:
        return Intake()
    done = Intake()
    trail = AuditTrail(engine, clock=lambda: now)
    with engine.begin() as connection:
        made: set[str] = set()
        for start in range(0, len(rows), _CHUNK):
            made.update(connection.execute(
                insert_ignoring(connection, voices).returning(voices.c.id), rows[start:start + _CHUNK]
            ).scalars())
        for start in range(0, len(links), _CHUNK):
            connection.execute(insert_ignoring(connection, voice_alerts), links[start:start + _CHUNK])
        drafts = []
        for row in rows:
            if row["id"] not in made:
                continue
            refused = row["state"] == "refused"
            (done.refused if refused else done.taken).append(row["id"])
            data = {"voice": row["id"], "platform": row["platform"], "mention": row["mention_id"],
                    "alert_id": row["alert_id"], "late": row["late"]}
            data |= {"problem": row["problem"]} if refused else {
                "author": row["author"], "due_at": row["due_at"].isoformat()}
            drafts.append(trail.draft("voice.refused" if refused else "voice.received",
                                      incident_id=row["incident_id"], channel=sources[row["id"]], data=data))
        trail.extend(connection, drafts)
    done.repeats = len(links) - len(done.taken) - len(done.refused)
    return done


def _alert(row: Mapping[str, Any]) -> Alert:
    return Alert(source=row["source"], fingerprint=row["fingerprint"], status=AlertStatus.FIRING,
                 labels=row["labels"] or {}, annotations=row["annotations"] or {})


_ALERT_COLUMNS = (alerts.c.id, alerts.c.source, alerts.c.fingerprint, alerts.c.labels, alerts.c.annotations,
                  alerts.c.starts_at, alerts.c.received_at)


def _linked(connection: Connection, answering: Mapping[str, Runbook], sources: list[str]) -> list[_Candidate]:
    """Mentions linked to an incident of an answering runbook, not yet taken in."""
    query = (
        select(*_ALERT_COLUMNS, incidents.c.id.label("incident_id"), incidents.c.runbook_id)
        .select_from(incident_alerts.join(alerts, alerts.c.id == incident_alerts.c.alert_id)
                     .join(incidents, incidents.c.id == incident_alerts.c.incident_id)
                     .outerjoin(voice_alerts, voice_alerts.c.alert_id == alerts.c.id))
        .where(voice_alerts.c.alert_id.is_(None), incidents.c.runbook_id.in_(list(answering)),
               alerts.c.source.in_(sources), alerts.c.status == str(AlertStatus.FIRING))
        .order_by(alerts.c.id, incidents.c.opened_at)
    )
    found = []
    for row in connection.execute(query).mappings():
        alert = _alert(row)
        if is_mention(answering[row["runbook_id"]].voices, alert):  # type: ignore[arg-type]
            found.append(_Candidate(row["id"], alert, as_utc(row["received_at"]), as_utc(row["starts_at"]),  # type: ignore[arg-type]
                                    row["incident_id"], row["runbook_id"], late=False))
    return found


def _late(connection: Connection, answering: Mapping[str, Runbook], sources: list[str], now: datetime) -> list[_Candidate]:
    """Mentions that joined no incident, arriving after an answering runbook's incident of their
    group resolved, within its `late_within`."""
    longest = max(rb.voices.late_within for rb in answering.values())  # type: ignore[union-attr]
    resolved = connection.execute(
        select(incidents.c.id, incidents.c.runbook_id, incidents.c.group_key, incidents.c.resolved_at)
        .where(incidents.c.state == "resolved", incidents.c.runbook_id.in_(list(answering)),
               incidents.c.resolved_at >= now - longest)
        .order_by(incidents.c.resolved_at.desc())
    ).mappings().all()
    if not resolved:
        return []
    since = min(r["resolved_at"] for r in resolved)
    query = (
        select(*_ALERT_COLUMNS)
        .select_from(alerts.outerjoin(voice_alerts, voice_alerts.c.alert_id == alerts.c.id)
                     .outerjoin(incident_alerts, incident_alerts.c.alert_id == alerts.c.id))
        .where(and_(voice_alerts.c.alert_id.is_(None), incident_alerts.c.alert_id.is_(None),
                    alerts.c.source.in_(sources), alerts.c.status == str(AlertStatus.FIRING),
                    alerts.c.resolved_at.is_(None), alerts.c.received_at >= since))
        .order_by(alerts.c.id)
    )
    found = []
    for row in connection.execute(query).mappings():
        alert, received_at = _alert(row), as_utc(row["received_at"])
        assert received_at is not None
        for route in routes(answering.values(), alert):
            spec = answering[route.runbook_id].voices
            assert spec is not None
            if not is_mention(spec, alert):
                continue
            incident = next((r for r in resolved if r["runbook_id"] == route.runbook_id
                             and r["group_key"] == route.group_key
                             and as_utc(r["resolved_at"]) <= received_at <= as_utc(r["resolved_at"]) + spec.late_within),  # type: ignore[operator]
                            None)
            if incident is not None:
                found.append(_Candidate(row["id"], alert, received_at, as_utc(row["starts_at"]), incident["id"],
                                        route.runbook_id, late=True))
                break
    return found


def _rows(
    candidates: list[_Candidate], answering: Mapping[str, Runbook], roster: Roster | None, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """The voice rows to insert (one per mention), the alert links (one per alert) and the source
    each voice came from."""
    rows: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    links: dict[int, dict[str, Any]] = {}
    people: dict[str, dict[str, Any]] = {}
    for c in candidates:
        if c.alert_id in links:
            continue  # linked to two answering incidents: it is the first one's
        runbook = answering[c.runbook_id]
        spec = runbook.voices
        assert spec is not None
        if c.runbook_id not in people:
            people[c.runbook_id] = people_of(runbook, roster)
        read = read_mention(spec, c.alert.labels, c.alert.annotations)
        base: dict[str, Any] = {"incident_id": c.incident_id, "runbook_id": c.runbook_id, "alert_id": c.alert_id,
                "received_at": c.received_at, "posted_at": c.posted_at, "late": c.late, "reminders": 0,
                "escalated": 0, "people": people[c.runbook_id], "updated_at": now}
        if isinstance(read, Refusal):
            mention_id = f"alert:{c.alert_id}"
            row = base | {"platform": read.platform, "mention_id": mention_id, "text": read.excerpt,
                          "state": "refused", "problem": read.problem}
        else:
            mention_id = read.id
            due_at = c.received_at + respond_within(spec, read)
            row = base | {
                "platform": read.platform, "mention_id": read.id, "text": read.text, "thread": read.thread,
                "author": read.author, "author_tier": read.author_tier, "sentiment": read.sentiment,
                "language": read.language, "topic": read.topic, "url": read.url, "state": "new", "problem": None,
                "due_at": due_at, "remind_at": remind_at(spec, c.received_at, due_at),
            }
        vid = voice_id(read.platform, mention_id)
        rows.setdefault(vid, row | {"id": vid})
        sources.setdefault(vid, c.alert.source)
        links[c.alert_id] = {"alert_id": c.alert_id, "voice_id": vid, "taken_at": now}
    blank = dict.fromkeys(column.name for column in voices.columns)
    return [blank | row for row in rows.values()], list(links.values()), sources
