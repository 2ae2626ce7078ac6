"""Voices, the pure rules: which alerts are mentions, a mention read from its alert (or refused,
with the reason), its deadline, its id, and a voice as the store keeps it.

* An alert is a mention when it comes from a source of `voices.mentions` and carries every label
  that source's `match` names (the social listening tool's volume spikes are not mentions).
* A mention's facts are read from its labels, else its annotations, under the names of
  `voices.fields` (the first one present wins): id, platform, text, thread, author, author tier,
  sentiment, language, topic, URL.
* A mention is refused, with a reason naming what is wrong, when it has no id, no text, a
  platform the runbook does not list, a text over `MAX_TEXT` characters, or a value longer than
  the store keeps. A refused mention is still recorded (its alert is kept whole): `siaga voices
  --all` shows it with the reason, and nothing of it is lost.
* Its deadline is `respond_within` after it arrived (when Siaga received it: a source's own time
  can say anything), or the shortest of the runbook's overrides for its author tier and sentiment.
* Its owners are reminded `remind_before` its deadline (default: a quarter of its time before);
  a voice whose time is shorter than that is reminded at three quarters of it.
* A voice's id is derived from (platform, mention id): the same mention is one voice, whichever
  alert (or source) carried it, and two processes taking it in at once make the same row.

Pure: values in, values out; no store, no clock it is not given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from siaga.incidents.alert import Alert
from siaga.runbook import Roster, role_members
from siaga.runbook.models import MentionSource, Runbook, Voices

__all__ = [
    "CLOSED_STATES",
    "MAX_TEXT",
    "OPEN_STATES",
    "Mention",
    "Refusal",
    "Voice",
    "is_mention",
    "mention_refusals",
    "people_of",
    "read_mention",
    "remind_at",
    "respond_within",
    "voice_id",
]

MAX_TEXT = 25_000
"""The longest mention text taken (X's long posts, the longest any listed platform allows)."""

LIMITS = {"id": 300, "platform": 40, "thread": 300, "author": 200, "author_tier": 40, "sentiment": 40,
          "language": 16, "topic": 80, "url": 2000}
"""The longest value of each field the store keeps."""

PLATFORM_ALIASES = {"twitter": "x"}
LIAISON = "liaison"

State = Literal["new", "drafted", "approved", "answered", "dismissed", "refused"]
OPEN_STATES = frozenset({"new", "drafted", "approved"})
"""Voices still owed an answer: their clock runs."""
CLOSED_STATES = frozenset({"answered", "dismissed", "refused"})

EXCERPT = 200
"""How much of a refused mention's text the voice keeps (its alert keeps all of it)."""


@dataclass(frozen=True)
class Mention:
    """A mention as read from its alert."""

    platform: str
    id: str
    text: str
    thread: str | None = None
    author: str | None = None
    author_tier: str | None = None
    sentiment: str | None = None
    language: str | None = None
    topic: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A mention that cannot be taken as it is, and why."""

    problem: str
    platform: str
    excerpt: str


def is_mention(voices: Voices, alert: Alert) -> bool:
    """Whether `alert` is a mention by `voices.mentions`."""
    return any(_selects(source, alert) for source in voices.mentions)


def _selects(source: MentionSource, alert: Alert) -> bool:
    return source.source == alert.source and all(alert.labels.get(k) == v for k, v in source.match.items())


def _value(names: Sequence[str], labels: Mapping[str, str], annotations: Mapping[str, str]) -> str | None:
    for name in names:
        for found in (labels.get(name), annotations.get(name)):
            if isinstance(found, str) and found.strip():
                return found.strip()
    return None


def read_mention(voices: Voices, labels: Mapping[str, str], annotations: Mapping[str, str]) -> Mention | Refusal:
    """The mention an alert's `labels` and `annotations` carry, or why it is refused."""
    fields = voices.fields
    read = {name: _value(getattr(fields, name), labels, annotations) for name in LIMITS}
    text = _value(fields.text, labels, annotations)
    platform = (read["platform"] or "").lower()
    platform = PLATFORM_ALIASES.get(platform, platform)
    excerpt = (text or "")[:EXCERPT]
    kept = platform if len(platform) <= LIMITS["platform"] else ""

    problems = []
    if read["id"] is None:
        problems.append(f"the mention has no id (a label or annotation {_names(fields.id)})")
    if text is None:
        problems.append(f"the mention has no text (a label or annotation {_names(fields.text)})")
    elif len(text) > MAX_TEXT:
        problems.append(f"the text is {len(text):,} characters long, over the {MAX_TEXT:,} any listed platform allows")
    if not platform:
        problems.append(f"the mention names no platform (a label or annotation {_names(fields.platform)})")
    elif platform not in voices.platforms:
        problems.append(f"the platform `{platform[:LIMITS['platform']]}` is not one this runbook answers on "
                        f"({', '.join(voices.platforms)}: `voices.platforms`)")
    problems += [
        f"its {name.replace('_', ' ')} is {len(value):,} characters long, over the {limit:,} kept"
        for name, limit in LIMITS.items()
        if (value := read[name]) is not None and len(value) > limit and name != "platform"
    ]
    if problems or text is None or read["id"] is None:
        return Refusal("; ".join(problems), kept, excerpt)
    return Mention(
        platform=platform, id=str(read["id"]), text=text, thread=read["thread"], author=read["author"],
        author_tier=read["author_tier"], sentiment=read["sentiment"],
        language=read["language"].lower() if read["language"] else None, topic=read["topic"], url=read["url"],
    )


def _names(names: Sequence[str]) -> str:
    return " or ".join(f"`{name}`" for name in names)


def respond_within(voices: Voices, mention: Mention) -> timedelta:
    """How long the runbook gives to answer `mention`: the shortest rule that applies to it."""
    rules = [voices.respond_within]
    if mention.author_tier in voices.by_author_tier:
        rules.append(voices.by_author_tier[mention.author_tier])
    if mention.sentiment in voices.by_sentiment:
        rules.append(voices.by_sentiment[mention.sentiment])
    return min(rules)


def remind_at(voices: Voices, received_at: datetime, due_at: datetime) -> datetime:
    """When the owners of a voice due at `due_at` are reminded of it."""
    window = due_at - received_at
    before = voices.remind_before if voices.remind_before and voices.remind_before < window else window / 4
    return due_at - before


def people_of(runbook: Runbook, roster: Roster | None) -> dict[str, Any]:
    """Who is reminded of a runbook's voices (``owners``: `voices.owners`, else the liaison, else
    the first level of the chain of command) and who hears of a miss (``chain``, level by level)."""
    chain = [role_members(runbook, role, roster) for role in runbook.chain_of_command]
    roles = runbook.voices.owners if runbook.voices else []
    owners = [person for role in roles for person in role_members(runbook, role, roster)]
    owners = owners or role_members(runbook, LIAISON, roster) or (chain[0] if chain else [])
    return {"owners": list(dict.fromkeys(owners)), "chain": chain}


def voice_id(platform: str, mention_id: str) -> str:
    """The voice of a mention: ``v-`` and 12 hex digits of (platform, mention id)."""
    return "v-" + hashlib.sha256(f"{platform}\0{mention_id}".encode()).hexdigest()[:12]


def mention_refusals(runbooks: Iterable[Runbook], alerts: Sequence[Alert]) -> list[str]:
    """Why each mention among `alerts` (by any runbook's `voices:`) would be refused, as
    ``alerts[3]: the mention has no text ...``: for a receiver that refuses such a webhook (422)
    rather than recording the refusal."""
    found = []
    specs = [runbook.voices for runbook in runbooks if runbook.voices is not None]
    for index, alert in enumerate(alerts):
        for spec in specs:
            if is_mention(spec, alert):
                read = read_mention(spec, alert.labels, alert.annotations)
                if isinstance(read, Refusal):
                    found.append(f"alerts[{index}]: {read.problem}")
                break
    return found


@dataclass(frozen=True)
class Voice:
    """A voice as the store keeps it (`siaga.store.voices`)."""

    id: str
    incident_id: str
    runbook_id: str
    platform: str
    mention_id: str
    alert_id: int
    text: str
    received_at: datetime
    state: str
    late: bool = False
    due_at: datetime | None = None
    remind_at: datetime | None = None
    thread: str | None = None
    author: str | None = None
    author_tier: str | None = None
    sentiment: str | None = None
    language: str | None = None
    topic: str | None = None
    url: str | None = None
    posted_at: datetime | None = None
    problem: str | None = None
    draft_id: str | None = None
    answered_at: datetime | None = None
    answered_by: str | None = None
    reply_url: str | None = None
    dismissed_at: datetime | None = None
    dismissed_by: str | None = None
    dismissed_reason: str | None = None
    missed_at: datetime | None = None
    reminders: int = 0
    escalated: int = 0
    people: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def left(self, now: datetime) -> timedelta | None:
        """The time left to answer it (negative when overdue); None when it is not open."""
        return self.due_at - now if self.is_open and self.due_at is not None else None

    def answered_in_time(self) -> bool:
        return self.answered_at is not None and self.due_at is not None and self.answered_at <= self.due_at

    def as_dict(self) -> dict[str, Any]:
        """The voice as `siaga voices --json` shows it (times in ISO 8601)."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}
