"""Statement deadlines: a clock per (incident, audience) from the incident's opening.

The runbook says how soon each audience must have had a published statement
(`impact.public_statement_within`, met by customers or media, and `comms.deadlines`). A run opens
one deadline per entry (a second run of the same incident finds them open); a `comms.publish` that
goes out meets the deadlines of its audience. The watcher in `siaga up` (`flows/deadline_watch.py`)
asks `due(...)` what is owed now: a reminder to the liaison at half and at three quarters of the
time, and at the deadline a miss, told to the first level of the chain of command, then one level
further up every further quarter of the time while no statement has gone out.

`owed` is the rule for any clock of the kind (a statement's, a voice's: `siaga.voices`), `due` its
use on a statement deadline; both are pure (a time they are given). `DeadlineRecords` keeps the
statement deadlines in Siaga's store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from siaga.canonical import as_utc
from siaga.logs import get_logger
from siaga.runbook.durations import human_duration
from siaga.store import comms_deadlines

log = get_logger("siaga.report.deadlines")

REMINDERS = (0.5, 0.75)
"""Fractions of the time at which the liaison is reminded."""


@dataclass(frozen=True)
class Deadline:
    id: str
    incident_id: str | None
    run_id: str
    runbook_id: str
    name: str
    mode: str
    opened_at: datetime
    due_at: datetime
    state: str
    met_at: datetime | None
    met_by: str | None
    reminders: int
    escalated: int
    people: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def period(self) -> timedelta:
        return self.due_at - self.opened_at

    def as_dict(self) -> dict[str, Any]:
        """The deadline as `siaga deadlines --json` shows it."""
        return {
            "incident": self.incident_id, "run_id": self.run_id, "runbook": self.runbook_id, "name": self.name,
            "mode": self.mode, "opened_at": self.opened_at.isoformat(), "due_at": self.due_at.isoformat(),
            "state": self.state, "met_at": self.met_at.isoformat() if self.met_at else None, "met_by": self.met_by,
            "reminders": self.reminders, "escalated": self.escalated, "events": self.events,
        }


@dataclass(frozen=True)
class Due:
    """Something owed on a deadline now: a reminder (`level` 1 or 2), the miss, or a further
    escalation (`level`: the chain-of-command level to tell, from 1)."""

    kind: Literal["remind", "miss", "escalate"]
    level: int


@dataclass(frozen=True)
class Clock:
    """What the rule reads of a deadline: when its time started and ends, when its reminders are
    due, what was sent so far, and whether it was missed (recorded) or settled (nothing more owed)."""

    opened_at: datetime
    due_at: datetime
    remind_at: tuple[datetime, ...]
    reminders: int
    escalated: int
    levels: int
    """The levels of the chain of command a miss can be told to."""
    missed: bool = False
    settled: bool = False


def owed(clock: Clock, now: datetime) -> Due | None:
    """What is owed on `clock` at `now`, if anything (one thing at a time; the watcher asks
    again): a reminder, then at the deadline the miss (told to level 1 of the chain of command),
    then one level further up every further quarter of the time. A watcher that was away sends
    only the latest reminder, not every one it missed."""
    if clock.settled:
        return None
    if not clock.missed:
        if now >= clock.due_at:
            return Due("miss", 1)
        count = sum(now >= at for at in clock.remind_at)
        return Due("remind", count) if count > clock.reminders else None
    if clock.escalated < clock.levels:
        level = clock.escalated + 1
        if now >= clock.due_at + (clock.due_at - clock.opened_at) * (0.25 * (level - 1)):
            return Due("escalate", level)
    return None


def due(deadline: Deadline, now: datetime) -> Due | None:
    """What is owed on the statement deadline `deadline` at `now` (`owed`); its reminders are due
    at half and three quarters of its time."""
    return owed(
        Clock(
            opened_at=deadline.opened_at, due_at=deadline.due_at,
            remind_at=tuple(deadline.opened_at + deadline.period * f for f in REMINDERS),
            reminders=deadline.reminders, escalated=deadline.escalated,
            levels=len(deadline.people.get("chain") or ()), missed=deadline.state == "missed",
            settled=deadline.met_at is not None or deadline.state not in ("pending", "missed"),
        ),
        now,
    )


def deadline_id(subject: str, name: str) -> str:
    return f"{subject}:{name}"


class DeadlineRecords:
    """The deadlines in Siaga's store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(
        self, *, subject: str, name: str, incident_id: str | None, run_id: str, runbook_id: str, mode: str,
        opened_at: datetime, within: timedelta, people: Mapping[str, Any],
    ) -> bool:
        """Start the clock of deadline `name` for `subject` (the incident, or the run without one)
        unless it runs already; True if it was started now."""
        try:
            with self.engine.begin() as db:
                db.execute(insert(comms_deadlines).values(
                    id=deadline_id(subject, name), incident_id=incident_id, run_id=run_id, runbook_id=runbook_id,
                    name=name, mode=mode, opened_at=opened_at, due_at=opened_at + within, state="pending",
                    reminders=0, escalated=0, people=dict(people), events=[],
                ))
        except IntegrityError:
            return False
        log.info("statement deadline opened", deadline=deadline_id(subject, name), runbook=runbook_id,
                 incident=incident_id, due_at=(opened_at + within).isoformat(), mode=mode)
        return True

    def find(
        self, *, incident_id: str | None = None, run_id: str | None = None, state: str | None = None,
        unsettled: bool = False,
    ) -> list[Deadline]:
        """Deadlines by incident, run or state; `unsettled`: those the watcher may still owe on."""
        query = select(comms_deadlines).order_by(comms_deadlines.c.due_at, comms_deadlines.c.name)
        if incident_id:
            query = query.where(comms_deadlines.c.incident_id == incident_id)
        if run_id:
            query = query.where(comms_deadlines.c.run_id == run_id)
        if state:
            query = query.where(comms_deadlines.c.state == state)
        if unsettled:
            query = query.where(comms_deadlines.c.met_at.is_(None), comms_deadlines.c.state != "met")
        with self.engine.connect() as db:
            return [_deadline(row) for row in db.execute(query).mappings()]

    def get(self, id: str) -> Deadline | None:
        with self.engine.connect() as db:
            row = db.execute(select(comms_deadlines).where(comms_deadlines.c.id == id)).mappings().first()
        return _deadline(row) if row else None

    def meet(self, subject: str, names: Sequence[str], *, at: datetime, step: str) -> list[str]:
        """A statement went out at `at` (step `step`): every deadline of `subject` among `names`
        not met yet is met (or, past its miss, marked as met late); returns those met now."""
        met = []
        for name in names:
            key = deadline_id(subject, name)
            with self.engine.begin() as db:
                on_time = db.execute(
                    update(comms_deadlines)
                    .where(comms_deadlines.c.id == key, comms_deadlines.c.state == "pending")
                    .values(state="met", met_at=at, met_by=step)
                ).rowcount
                late = 0 if on_time else db.execute(
                    update(comms_deadlines)
                    .where(comms_deadlines.c.id == key, comms_deadlines.c.met_at.is_(None))
                    .values(met_at=at, met_by=step)
                ).rowcount
            if on_time or late:
                met.append(name)
                log.info("statement deadline met" if on_time else "statement sent after its deadline",
                         deadline=key, step=step, at=at.isoformat())
        return met

    def miss(self, deadline: Deadline, at: datetime) -> bool:
        """Record the miss once; False if the deadline was met or missed meanwhile."""
        with self.engine.begin() as db:
            done = db.execute(
                update(comms_deadlines)
                .where(comms_deadlines.c.id == deadline.id, comms_deadlines.c.state == "pending")
                .values(state="missed")
            ).rowcount
        if done:
            log.warning("statement deadline missed", deadline=deadline.id, runbook=deadline.runbook_id,
                        incident=deadline.incident_id, due_at=deadline.due_at.isoformat(), at=at.isoformat())
        return bool(done)

    def note(self, deadline: Deadline, kind: str, *, at: datetime, **values: Any) -> None:
        """Append an event (a reminder or escalation sent: to whom, through which channel) and set
        the counters in `values` (reminders, escalated)."""
        counters = {k: v for k, v in values.items() if k in ("reminders", "escalated")}
        detail = {k: v for k, v in values.items() if k not in counters}
        with self.engine.begin() as db:
            current = db.execute(
                select(comms_deadlines.c.events).where(comms_deadlines.c.id == deadline.id)
            ).scalar() or []
            db.execute(update(comms_deadlines).where(comms_deadlines.c.id == deadline.id).values(
                events=[*current, {"kind": kind, "at": at.isoformat(), **detail}], **counters,
            ))
        log.info(f"statement deadline {kind}", deadline=deadline.id, **detail)

    def close_drill(self, run_id: str, at: datetime) -> list[str]:
        """A drill run ended: its deadlines still pending are recorded missed (nobody is reminded
        of a drill that is over)."""
        closed = []
        for deadline in self.find(run_id=run_id, state="pending"):
            if deadline.mode == "drill" and self.miss(deadline, at):
                self.note(deadline, "drill ended", at=at, reason="the drill ended before a statement went out")
                closed.append(deadline.name)
        return closed


def _deadline(row: Mapping[str, Any]) -> Deadline:
    values = dict(row)
    for name in ("opened_at", "due_at", "met_at"):
        values[name] = as_utc(values[name])
    return Deadline(**values)


def deadlines_markdown(deadlines: Sequence[Deadline], now: datetime | None = None) -> str:
    """A table of statement deadlines and whether they were met, for a run's artifacts and reports."""
    if not deadlines:
        return "No statement deadlines."
    now = now or datetime.now(UTC)
    lines = ["| deadline | due | state | statement sent | reminders | escalated |", "|---|---|---|---|---|---|"]
    for d in deadlines:
        state = d.state
        if d.state == "pending":
            state = f"pending ({human_duration(max(d.due_at - now, timedelta()))} left)"
        sent = f"{d.met_at:%Y-%m-%d %H:%M:%S} UTC ({d.met_by})" if d.met_at else "not yet"
        if d.met_at and d.state == "missed":
            sent += ", late"
        lines.append(f"| {d.name} | {d.due_at:%Y-%m-%d %H:%M:%S} UTC | {state} | {sent} | {d.reminders} | {d.escalated} |")
    return "\n".join(lines)
