"""Situation reports (SITREPs) while an incident is open: conditions (alerts, impact, time against
the maximum tolerable downtime), actions (steps done, running, failed, undone; gates waiting) and
needs (open decisions and who may answer them, statement deadlines pending or overdue). Pure: a
`Story` and a clock in, a `Sitrep` (text and data) out; `flows/sitreps.py` sends it.

They go to the liaison and the commander (or the roles of `comms.sitrep.to`) through their roster
channels; wider audiences hear only what an approved statement (`comms.publish`) says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from siaga.runbook.models import SITREP_ROLES

from .facts import IncidentFacts, RunbookInfo
from siaga.runbook.durations import human_duration

from .story import Story

__all__ = ["Sitrep", "build_sitrep", "recipients", "sitrep_due"]

DONE = ("completed", "recorded", "skipped")
DRILL_PREFIX = "[DRILL] "


@dataclass(frozen=True)
class Sitrep:
    """One situation report."""

    number: int
    at: datetime
    chain: str
    title: str
    drill: bool
    conditions: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        prefix = DRILL_PREFIX if self.drill else ""
        return f"{prefix}SITREP {self.number}: {self.title} ({self.chain}) at {self.at:%H:%M} UTC"

    def text(self) -> str:
        """The report as people read it: three short sections of bullet lines."""
        lines = [self.subject, ""]
        for name, items in (
            ("CONDITIONS", self.conditions),
            ("ACTIONS", self.actions),
            ("NEEDS", self.needs),
        ):
            lines += [name, *(f"- {item}" for item in items), ""]
        lines.append(
            "Wider audiences hear only approved statements (comms.draft, then the comms.publish gate)."
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "at": self.at.isoformat(),
            "chain": self.chain,
            "title": self.title,
            "drill": self.drill,
            "subject": self.subject,
            "conditions": self.conditions,
            "actions": self.actions,
            "needs": self.needs,
            "text": self.text(),
        }


def sitrep_due(
    opened_at: datetime, last_sent: datetime | None, every: timedelta, now: datetime
) -> bool:
    """Whether the next report is owed at `now`: `every` after the last one, or after the opening."""
    return now >= (last_sent or opened_at) + every


def recipients(runbook: RunbookInfo | None) -> list[str]:
    """The people a SITREP goes to: everyone holding the runbook's `comms.sitrep.to` roles
    (liaison and commander by default), each once, in that order."""
    if runbook is None:
        return []
    roles = runbook.sitrep_to or list(SITREP_ROLES)
    return list(dict.fromkeys(person for role in roles for person in runbook.roles.get(role, [])))


def build_sitrep(story: Story, now: datetime | None = None) -> Sitrep:
    """The situation report of `story` at `now` (the facts' time by default)."""
    facts = story.facts
    now = now or facts.generated_at
    number = 1 + sum(1 for r in facts.records if r.kind == "sitrep.sent")
    started = [r for r in facts.records if r.kind == "run.started"]
    drill = bool(started) and started[-1].data.get("mode") == "drill"
    title = (
        facts.runbook.title
        if facts.runbook
        else (facts.incident.runbook_id if facts.incident else facts.chain)
    )
    return Sitrep(
        number,
        now,
        facts.chain,
        title,
        drill,
        _conditions(story, now),
        _actions(story, now),
        _needs(story, now),
    )


def _conditions(story: Story, now: datetime) -> list[str]:
    facts, runbook = story.facts, story.facts.runbook
    state = facts.incident.state if facts.incident else ("ended" if story.ended_at else "running")
    open_for = (story.ended_at or now) - story.opened_at
    said = f"Incident {facts.chain} {state}, opened {story.opened_at:%Y-%m-%d %H:%M} UTC, "
    said += f"{'lasted' if story.ended_at else 'open for'} {human_duration(open_for.total_seconds())}"
    downtime = runbook.max_tolerable_downtime_s if runbook else None
    if downtime:
        left = downtime - open_for.total_seconds()
        said += (
            f"; {human_duration(left)} left of the maximum tolerable downtime ({human_duration(downtime)})"
            if left >= 0
            else f"; the maximum tolerable downtime ({human_duration(downtime)}) was passed {human_duration(-left)} ago"
        )
    lines = [said + "."]
    if runbook and runbook.services:
        lines.append(f"Impact: {', '.join(runbook.services)} ({runbook.severity}).")
    alerts: dict[str, tuple[str, str, datetime]] = {}
    for r in story.alerts:
        name = str(
            (r.data.get("labels") or {}).get("alertname") or r.data.get("fingerprint") or "alert"
        )
        key = f"{r.channel}:{r.data.get('fingerprint')}"
        since = (
            alerts[key][2]
            if key in alerts and alerts[key][1] == str(r.data.get("status"))
            else r.at
        )
        alerts[key] = (name, str(r.data.get("status") or "firing"), since)
    firing = [
        f"{name} since {at:%H:%M}" for name, status, at in alerts.values() if status == "firing"
    ]
    resolved = [
        f"{name} at {at:%H:%M}" for name, status, at in alerts.values() if status == "resolved"
    ]
    if firing:
        lines.append(f"Alerts firing ({len(firing)}): {', '.join(firing)}.")
    if resolved:
        lines.append(f"Alerts resolved ({len(resolved)}): {', '.join(resolved)}.")
    if not alerts:
        lines.append("No alert is linked to it (started by hand).")
    return lines


def _actions(story: Story, now: datetime) -> list[str]:
    lines = []
    done = [s for s in story.spans if s.outcome in DONE]
    if done:
        lines.append(
            "Done: "
            + ", ".join(
                f"{s.step_id} ({s.outcome}, {s.ended_at or s.started_at:%H:%M})" for s in done
            )
            + "."
        )
    running = [s for s in story.spans if s.outcome == "running"]
    lines += [
        f"Running: {s.step_id} ({s.action}) for {human_duration((now - s.started_at).total_seconds())}."
        for s in running
    ]
    lines += [
        f"Failed: {s.step_id} ({s.action}): {s.error or 'no reason recorded'}."
        for s in story.failed
    ]
    lines += [f"Undone: {u['step']} ({u['outcome']}, {u['at']:%H:%M})." for u in story.undone]
    waiting = [g for g in story.gates if g.state == "open"]
    lines += [
        f"Waiting at the gate of {g.step_id} since {g.opened_at:%H:%M} "
        f"({human_duration((now - g.opened_at).total_seconds())})."
        for g in waiting
    ]
    statements = [m for m in story.messages if m.kind == "statement"]
    lines += [
        f"Statement to {m.audience} published at {m.at:%H:%M} ({m.channel})." for m in statements
    ]
    return lines or ["Nothing has run yet."]


def _needs(story: Story, now: datetime) -> list[str]:
    facts = story.facts
    lines = []
    for gate in (g for g in story.gates if g.state == "open"):
        asked = _asked(facts, gate.run_id, gate.step_id)
        left = (gate.deadline - now).total_seconds()
        when = f"in {human_duration(left)}" if left >= 0 else f"{human_duration(-left)} ago"
        lines.append(
            f"Decision at the gate of {gate.step_id}"
            + (f" ({gate.action})" if gate.action else "")
            + f": deadline {gate.deadline:%H:%M} UTC ({when}); may answer: {', '.join(asked) or 'nobody yet'} "
            f"(Prefect UI Resume, or `siaga approve {gate.run_id} {gate.step_id} --as ID --code CODE`)."
        )
    for d in facts.deadlines:
        if d.met_at is not None:
            continue
        if d.state == "missed" or now >= d.due_at:
            lines.append(
                f"OVERDUE: the statement to {d.name} was due {d.due_at:%H:%M} UTC "
                f"({human_duration((now - d.due_at).total_seconds())} ago); none has been published."
            )
        else:
            lines.append(
                f"Statement to {d.name} due {d.due_at:%H:%M} UTC (in {human_duration((d.due_at - now).total_seconds())}); "
                "none published yet."
            )
    return lines or ["No decision or statement is waiting."]


def _asked(facts: IncidentFacts, run_id: str, step_id: str) -> list[str]:
    """Who was sent a code for the gate and has neither answered nor been locked out."""
    asked: list[str] = []
    done: set[str] = set()
    for r in facts.records:
        if r.run_id != run_id or r.data.get("gate") != step_id or not r.actor:
            continue
        if r.kind == "gate.code_sent":
            asked.append(r.actor)
        elif r.kind in ("gate.approved", "gate.rejected", "gate.locked_out"):
            done.add(r.actor)
        elif r.kind == "gate.parameters_changed":
            done.clear()
    return [p for p in dict.fromkeys(asked) if p not in done]
