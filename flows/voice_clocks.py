"""The clocks of voices at work: the watcher of statement deadlines (`deadline_watch.watch_deadlines`,
in `siaga up`) also takes new voices in and reminds and escalates on theirs, on the same rule
(`siaga.report.deadlines.owed`) and through the same channels (`reach`).

A storm brings hundreds of voices due within minutes of one another: one message per voice would
bury the people it is for. So what is owed at one pass is told per incident and kind, in one
message to each person, listing the voices (the first twenty, then how many more):

* a reminder to the voices' owners (`voices.owners`, else the liaison) at `remind_at`;
* at its deadline, a miss told to the first level of the chain of command, then one level further
  up every further quarter of its time, while it stays unanswered.

Each voice is claimed before it is told of (a conditional update of its counters), so two
watchers never send the same reminder twice; what was sent, to whom and through which channel is
recorded in the incident's audit trail as ``voices.reminded``, ``voices.missed`` or
``voices.escalated``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from siaga.actions import DRILL_PREFIX, ActionContext, ActionRegistry, Mode
from siaga.audit import AuditTrail
from siaga.report.deadlines import Clock, Due, owed
from siaga.logs import get_logger
from siaga.runbook import Runbook, RunbookError
from siaga.secrets import REDACTOR, SecretSource
from siaga.voices import Voice, people_of
from siaga.voices.desk import is_drill_incident
from siaga.voices.intake import take_in
from siaga.voices.records import VoiceRecords
from siaga.voices.views import time_left
from siaga.wiring import Wiring

from .reach import reach

__all__ = ["check_voice_deadlines", "clock_of"]

log = get_logger("siaga.voices")

LISTED = 20
"""Voices named in one message; the rest are counted."""
DEEPEST = 32
"""The chain of command levels a missed voice may still be told to, when the runbooks are not given."""


def clock_of(voice: Voice) -> Clock:
    """A voice's deadline as the deadline rule reads it."""
    assert voice.due_at is not None
    return Clock(
        opened_at=voice.received_at, due_at=voice.due_at,
        remind_at=(voice.remind_at,) if voice.remind_at else (), reminders=voice.reminders,
        escalated=voice.escalated, levels=len(voice.people.get("chain") or ()),
        missed=voice.missed_at is not None, settled=not voice.is_open,
    )


async def check_voice_deadlines(
    now: datetime | None = None,
    *,
    runbooks: Mapping[str, Runbook] | None = None,
    registry: ActionRegistry | None = None,
    folder: Path | None = None,
    store: Engine | None = None,
    secret_source: SecretSource | None = None,
    wiring: Wiring,
) -> list[tuple[str, Due]]:
    """Take new voices in (given the `runbooks`), then send what is owed now on every open
    voice, one message per incident, kind and person; returns (voice id, what was done). What is
    not given is `wiring`'s (its entry point's)."""
    registry = registry or wiring.registry
    store = store or wiring.engine
    folder = folder or wiring.folder()
    now = now or datetime.now(UTC)
    try:
        roster = wiring.roster(folder)
    except RunbookError:
        roster = None
    if runbooks:
        await asyncio.to_thread(take_in, store, runbooks, roster=roster, now=now)
    records = VoiceRecords(store)
    groups: dict[tuple[str, str, int], list[Voice]] = {}
    deepest = max((len(rb.chain_of_command) for rb in runbooks.values()), default=0) if runbooks else DEEPEST
    for voice in await asyncio.to_thread(records.owing, now, deepest):
        due = owed(clock_of(voice), now) if voice.due_at is not None else None
        if due is not None:
            groups.setdefault((voice.incident_id, due.kind, due.level), []).append(voice)
    done: list[tuple[str, Due]] = []
    connections = wiring.connections(folder)
    for (incident_id, kind, level), voices in groups.items():
        ids = [v.id for v in voices]
        if kind == "miss":
            claimed = await asyncio.to_thread(records.miss, ids, now)
        else:
            counter = "reminders" if kind == "remind" else "escalated"
            claimed = await asyncio.to_thread(records.claim, ids, counter, level)
        told = [v for v in voices if v.id in set(claimed)]
        if not told:
            continue  # another watcher told of them meanwhile
        runbook = (runbooks or {}).get(told[0].runbook_id)
        people, subject, text = _message(told, kind, level, now, people_of(runbook, roster) if runbook else None)
        if is_drill_incident(incident_id):  # a drill's own voices: its people rehearse the clock too
            subject, text = DRILL_PREFIX + subject, DRILL_PREFIX + text
        first = told[0]
        sent = []
        for person in people:
            context = ActionContext(
                runbook_id=first.runbook_id, step_id=f"voices-{kind}{level}-{person}", run_id=incident_id,
                mode=Mode.LIVE, home=wiring.home, incident_id=incident_id, connections=connections,
                secret_source=secret_source,
            )
            sent.append({"to": person, "channel": await reach(person, subject, REDACTOR.text(text), registry, roster, context)})
        record = {"remind": "voices.reminded", "miss": "voices.missed", "escalate": "voices.escalated"}[kind]
        await asyncio.to_thread(
            AuditTrail(store, clock=lambda: now).append, record, incident_id=incident_id, channel="system",
            data={"voices": [v.id for v in told], "level": level, "sent": sent},
        )
        log.info(f"voices {kind}", incident=incident_id, level=level, voices=len(told), to=people)
        done += [(v.id, Due(kind, level)) for v in told]  # type: ignore[arg-type]
    return done


def _message(
    voices: Sequence[Voice], kind: str, level: int, now: datetime, people: Mapping[str, Any] | None
) -> tuple[list[str], str, str]:
    """Whom to tell (from the runbook and roster as they are now, else as they were when the
    voices arrived), the subject and the text."""
    first = voices[0]
    people = people or first.people
    about = f"incident {first.incident_id} ({first.runbook_id})"
    lines = [_line(v, now) for v in voices[:LISTED]]
    if len(voices) > LISTED:
        lines.append(f"... and {len(voices) - LISTED} more")
    listing = "\n".join(lines)
    how = (f"Draft the replies (`siaga voices draft {first.incident_id}`), or dismiss a voice owed no answer "
           f"(`siaga voices dismiss ID --reason ...`); `siaga voices {first.incident_id}` lists them all.")
    if kind == "remind":
        owners = list(people.get("owners") or [])
        subject = f"{len(voices)} voice(s) to answer on {about}, first due {_at(first.due_at)}"
        text = f"{len(voices)} voice(s) of {about} are due to be answered and have not been yet:\n{listing}\n\n{how}"
        return owners, subject, text
    chain: list[Any] = people.get("chain") or []
    told = list(chain[level - 1]) if level <= len(chain) else []
    subject = f"Voices MISSED: {len(voices)} unanswered past their deadline on {about}"
    text = (
        f"{len(voices)} voice(s) of {about} were not answered by their deadline:\n{listing}\n\n"
        f"Their owners were reminded {max(v.reminders for v in voices)} time(s). You are level {level} of the "
        "chain of command: get them answered now, "
        f"or decide who does. {how}"
    )
    return told, subject, text


def _line(voice: Voice, now: datetime) -> str:
    who = f" {voice.author}" if voice.author else ""
    where = f" {voice.url}" if voice.url else ""
    return f"- {voice.id} {voice.platform}{who}: due {_at(voice.due_at)} ({time_left(voice, now)}){where}"


def _at(when: datetime | None) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC" if when else "-"
