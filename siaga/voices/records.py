"""Voices in Siaga's store: read them, and change their state with its audit record in the same
transaction (dismissed with a reason, answered, reminded, missed, escalated).

Every change is conditional on the state it changes from, so two people (or two watchers) acting
on one voice at once change it once: the second is told what it found. Each change a person makes
is recorded in the incident's audit trail as ``voice.dismissed`` or ``voice.answered`` (who, through
which channel, why), in the transaction that makes it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update

from siaga.audit import AuditTrail
from siaga.errors import BadInput
from siaga.store import as_utc, voices

from .model import OPEN_STATES, Voice

__all__ = ["Change", "VoiceRecords"]

_TIMES = ("received_at", "due_at", "remind_at", "posted_at", "answered_at", "dismissed_at", "missed_at", "updated_at")


@dataclass(frozen=True)
class Change:
    """What became of one voice a person asked to change."""

    voice: Voice
    done: bool
    said: str


class VoiceRecords:
    """The voices in the store behind `engine`."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))

    def find(
        self, *, incident_id: str | None = None, states: Collection[str] | None = None,
        ids: Collection[str] | None = None,
    ) -> list[Voice]:
        """Voices by incident, state or id: the soonest due first, then by arrival."""
        query = select(voices).order_by(voices.c.due_at.is_(None), voices.c.due_at, voices.c.received_at, voices.c.id)
        if incident_id is not None:
            query = query.where(voices.c.incident_id == incident_id)
        if states is not None:
            query = query.where(voices.c.state.in_(list(states)))
        if ids is not None:
            query = query.where(voices.c.id.in_(list(ids)))
        return self._select(query)

    def owing(self, now: datetime, deepest: int) -> list[Voice]:
        """The open voices something may be owed on at `now`: past their reminder time and not
        reminded, or past their deadline and not yet told to all `deepest` levels of a chain of
        command (the others are not read: a storm's thousands of fresh voices cost the watcher nothing)."""
        c = voices.c
        return self._select(select(voices).where(
            c.state.in_(list(OPEN_STATES)),
            or_(and_(c.remind_at <= now, c.reminders == 0),
                and_(c.due_at <= now, or_(c.missed_at.is_(None), c.escalated < deepest))),
        ).order_by(c.due_at, c.id))

    def _select(self, query: Any) -> list[Voice]:
        with self.engine.connect() as connection:
            return [voice_of(row) for row in connection.execute(query).mappings()]

    def resolve(self, wanted: Sequence[str]) -> list[Voice]:
        """The voices `wanted` names, each by its id or a unique start of it; raise BadInput
        naming every one that names none, or several."""
        found, problems = [], []
        with self.engine.connect() as connection:
            for name in wanted:
                rows = connection.execute(
                    select(voices).where(voices.c.id.startswith(name, autoescape=True)).order_by(voices.c.id).limit(6)
                ).mappings().all()
                exact = [row for row in rows if row["id"] == name]
                if exact or len(rows) == 1:
                    found.append(voice_of((exact or rows)[0]))
                elif rows:
                    problems.append(f"{name} starts several voices ({', '.join(r['id'] for r in rows[:5])}): give more of it")
                else:
                    problems.append(f"no voice {name} (`siaga voices --all` lists them)")
        if problems:
            raise BadInput("; ".join(problems))
        return found

    def dismiss(self, wanted: Sequence[Voice], *, reason: str, by: str | None, channel: str = "cli") -> list[Change]:
        """Dismiss each open (or refused) voice of `wanted` with `reason`: it is owed no answer."""
        if not reason.strip():
            raise BadInput("a dismissal needs a reason (--reason): why this voice is owed no answer")
        return self._change(
            wanted, "dismissed", {*OPEN_STATES, "refused"}, "voice.dismissed", by, channel,
            lambda at: {"dismissed_at": at, "dismissed_by": by, "dismissed_reason": reason.strip()},
            {"reason": reason.strip()},
        )

    def answer(
        self, wanted: Sequence[Voice], *, by: str | None, url: str | None = None, channel: str = "cli",
        at: datetime | None = None, detail: Mapping[str, Any] | None = None,
    ) -> list[Change]:
        """Record each open voice of `wanted` answered (at `at`, default now) by `by`, with the
        reply's `url` where there is one (and `detail` in its audit record)."""
        if url is not None and len(url) > 2000:
            raise BadInput("the reply's URL is over 2,000 characters")
        return self._change(
            wanted, "answered", OPEN_STATES, "voice.answered", by, channel,
            lambda now: {"answered_at": at or now, "answered_by": by, "reply_url": url, "problem": None},
            ({"url": url} if url else {}) | dict(detail or {}),
        )

    def post_failed(self, voice_id: str, reason: str, *, run_id: str, channel: str) -> bool:
        """Keep why the open voice's reply could not be posted (`siaga voices` shows it), with a
        ``voice.post_failed`` record; False when the voice is not open."""
        now = self.clock()
        with self.engine.begin() as connection:
            row = connection.execute(
                update(voices).where(voices.c.id == voice_id, voices.c.state.in_(list(OPEN_STATES)))
                .values(problem=reason[:2000], updated_at=now)
                .returning(voices.c.incident_id, voices.c.platform, voices.c.mention_id)
            ).first()
            if row is not None:
                AuditTrail(self.engine, clock=lambda: now).append(
                    "voice.post_failed", connection=connection, incident_id=row.incident_id, channel=channel,
                    data={"voice": voice_id, "platform": row.platform, "mention": row.mention_id, "run_id": run_id,
                          "reason": reason[:2000]})
        return row is not None

    def _change(
        self, wanted: Sequence[Voice], state: str, from_states: Collection[str], kind: str, by: str | None,
        channel: str, values: Callable[[datetime], dict[str, Any]], detail: Mapping[str, Any],
    ) -> list[Change]:
        now = self.clock()
        trail = AuditTrail(self.engine, clock=lambda: now)
        changes = []
        for voice in wanted:
            with self.engine.begin() as connection:
                done = connection.execute(
                    update(voices).where(voices.c.id == voice.id, voices.c.state.in_(list(from_states)))
                    .values(state=state, updated_at=now, **values(now))
                ).rowcount
                row = connection.execute(select(voices).where(voices.c.id == voice.id)).mappings().one()
                if done:
                    trail.append(kind, connection=connection, incident_id=voice.incident_id, actor=by, channel=channel,
                                 data={"voice": voice.id, "platform": voice.platform, "mention": voice.mention_id,
                                       "was": voice.state, **detail})
            now_voice = voice_of(row)
            said = f"{voice.id} {state}" if done else f"{voice.id} is {now_voice.state}: left as it is"
            changes.append(Change(now_voice, bool(done), said))
        return changes

    def claim(self, ids: Collection[str], counter: str, level: int) -> list[str]:
        """Note reminder or escalation `level` (`counter`: reminders | escalated) on each open voice
        of `ids` that has not had it; the ids claimed now (whoever claims one sends it)."""
        return self._claimed(ids, getattr(voices.c, counter) < level, {counter: level})

    def miss(self, ids: Collection[str], at: datetime) -> list[str]:
        """Record each open voice of `ids` missed at `at` (its first level of the chain of command
        told), once; the ids recorded now."""
        return self._claimed(ids, voices.c.missed_at.is_(None), {"missed_at": at, "escalated": 1})

    def _claimed(self, ids: Collection[str], condition: Any, values: Mapping[str, Any]) -> list[str]:
        if not ids:
            return []
        with self.engine.begin() as connection:
            return list(connection.execute(
                update(voices).where(voices.c.id.in_(list(ids)), voices.c.state.in_(list(OPEN_STATES)), condition)
                .values(**values).returning(voices.c.id)
            ).scalars())


def voice_of(row: Mapping[str, Any]) -> Voice:
    """A store row as a `Voice` (times in UTC)."""
    values = dict(row)
    for name in _TIMES:
        values[name] = as_utc(values[name])
    return Voice(**values)
