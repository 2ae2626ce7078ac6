"""The figures of an incident's voices, as the situation and post-incident reports give them.

* received: voices taken in (refused mentions are counted apart, as `refused`);
* answered, and answered within the deadline: their share is of the voices owed an answer (those
  received, less those dismissed); the median time to answer is from arrival to answer;
* dismissed (with a reason), still open, of which overdue;
* the same by platform.

Pure: voices and a time in, figures out; JSON round-trippable for the reports' facts.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .model import Voice

__all__ = ["Tally", "VoiceFigures", "voice_figures"]


@dataclass(frozen=True)
class Tally:
    """The figures of some voices (all of an incident's, or one platform's)."""

    received: int = 0
    answered: int = 0
    answered_in_time: int = 0
    dismissed: int = 0
    open: int = 0
    overdue: int = 0
    refused: int = 0
    median_answer_s: float | None = None

    @property
    def owed(self) -> int:
        """Voices owed an answer: received, not dismissed."""
        return self.received - self.dismissed

    @property
    def share_in_time(self) -> float | None:
        """The share of the voices owed an answer that were answered within their deadline."""
        return self.answered_in_time / self.owed if self.owed else None


@dataclass(frozen=True)
class VoiceFigures:
    """An incident's voices in figures, at `at`."""

    at: datetime
    total: Tally
    by_platform: dict[str, Tally] = field(default_factory=dict)
    next_due_at: datetime | None = None
    """The deadline of the open voice due first (None when none is open)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "total": asdict(self.total),
            "by_platform": {name: asdict(tally) for name, tally in self.by_platform.items()},
            "next_due_at": self.next_due_at.isoformat() if self.next_due_at else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VoiceFigures:
        return cls(
            at=datetime.fromisoformat(data["at"]),
            total=Tally(**data["total"]),
            by_platform={name: Tally(**tally) for name, tally in data.get("by_platform", {}).items()},
            next_due_at=datetime.fromisoformat(data["next_due_at"]) if data.get("next_due_at") else None,
        )


def _tally(voices: list[Voice], now: datetime) -> Tally:
    kept = [v for v in voices if v.state != "refused"]
    answered = [v for v in kept if v.state == "answered" and v.answered_at is not None]
    opened = [v for v in kept if v.is_open]
    times = [(v.answered_at - v.received_at).total_seconds() for v in answered if v.answered_at]
    return Tally(
        received=len(kept),
        answered=len(answered),
        answered_in_time=sum(1 for v in answered if v.answered_in_time()),
        dismissed=sum(1 for v in kept if v.state == "dismissed"),
        open=len(opened),
        overdue=sum(1 for v in opened if v.due_at is not None and v.due_at < now),
        refused=len(voices) - len(kept),
        median_answer_s=statistics.median(times) if times else None,
    )


def voice_figures(voices: Iterable[Voice], now: datetime) -> VoiceFigures:
    """The figures of `voices` at `now`, in all and by platform (platforms by voices received)."""
    every = list(voices)
    platforms: dict[str, list[Voice]] = {}
    for voice in every:
        platforms.setdefault(voice.platform or "(none)", []).append(voice)
    ordered = sorted(platforms.items(), key=lambda item: (-len(item[1]), item[0]))
    due = [v.due_at for v in every if v.is_open and v.due_at is not None]
    return VoiceFigures(
        at=now,
        total=_tally(every, now),
        by_platform={name: _tally(group, now) for name, group in ordered},
        next_due_at=min(due) if due else None,
    )
