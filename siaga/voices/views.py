"""What `siaga voices` shows: per incident, its open voices by time left (the overdue first), and
with `include_closed` the answered, dismissed and refused ones after them; as values a command
line prints or dumps as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from siaga.runbook.durations import human_duration
from siaga.store import as_utc, incidents

from .model import Voice
from .records import VoiceRecords

__all__ = ["IncidentVoices", "excerpt", "list_voices", "time_left", "voice_json"]


@dataclass(frozen=True)
class IncidentVoices:
    """One incident's voices as listed."""

    incident_id: str
    runbook_id: str
    state: str
    resolved_at: datetime | None
    voices: list[Voice] = field(default_factory=list)
    open: int = 0
    overdue: int = 0
    refused: int = 0
    closed: int = 0
    """Answered, dismissed or refused: listed only with `include_closed`."""


def time_left(voice: Voice, now: datetime) -> str:
    """``3h12m left``, ``25m overdue``; for a closed voice, what became of it."""
    left = voice.left(now)
    if left is None:
        return {"answered": "answered", "dismissed": "dismissed", "refused": "refused"}.get(voice.state, voice.state)
    return f"{human_duration(abs(left))} {'left' if left.total_seconds() >= 0 else 'overdue'}"


def excerpt(text: str, width: int = 120) -> str:
    """`text` on one line, cut at `width` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def voice_json(voice: Voice, now: datetime) -> dict[str, Any]:
    """A voice as `siaga voices --json` gives it: its record, and its time left in seconds."""
    left = voice.left(now)
    return voice.as_dict() | {"left_s": left.total_seconds() if left is not None else None,
                              "overdue": left is not None and left.total_seconds() < 0}


def list_voices(
    engine: Engine, *, incident_id: str | None = None, include_closed: bool = False, now: datetime
) -> list[IncidentVoices]:
    """The voices of `incident_id` (or of every incident that has some), the incident whose
    voice is due first first."""
    every = VoiceRecords(engine).find(incident_id=incident_id)
    by_incident: dict[str, list[Voice]] = {}
    for voice in every:
        by_incident.setdefault(voice.incident_id, []).append(voice)
    with engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(
            select(incidents.c.id, incidents.c.runbook_id, incidents.c.state, incidents.c.resolved_at)
            .where(incidents.c.id.in_(list(by_incident)))
        )}
    listed = []
    for found, found_voices in by_incident.items():
        row = rows[found]
        opened = [v for v in found_voices if v.is_open]
        closed = [v for v in found_voices if not v.is_open]
        closed.sort(key=lambda v: (v.state == "refused", v.received_at))
        listed.append(IncidentVoices(
            incident_id=found, runbook_id=row.runbook_id, state=row.state, resolved_at=as_utc(row.resolved_at),
            voices=opened + (closed if include_closed else []), open=len(opened),
            overdue=sum(1 for v in opened if v.due_at is not None and v.due_at < now),
            refused=sum(1 for v in closed if v.state == "refused"), closed=len(closed),
        ))
    far = datetime.max.replace(tzinfo=now.tzinfo)
    listed.sort(key=lambda i: (not i.open, min((v.due_at or far for v in i.voices if v.is_open), default=far), i.incident_id))
    return listed
