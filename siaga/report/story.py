"""What the facts of an incident say: step spans, decisions, messages, targets met or missed, what
failed and was undone, and the questions to learn from. Pure: `IncidentFacts` in, `Story` out.

Both the post-incident report (`postmortem.py`) and the situation report (`sitrep.py`) read a
`Story`, so a figure is computed once and reads the same in both. How the story measured up
(targets met or missed, questions to learn from) is judged in `review.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from siaga.audit.chain import AuditRecord
from .facts import GateInfo, IncidentFacts
from .review import Lesson, Target, lessons, targets

__all__ = ["Decision", "Message", "Span", "Story", "tell"]

DECISION_EVENTS = (
    "approved",
    "rejected",
    "refused",
    "locked_out",
    "escalated",
    "timed_out",
    "decided",
)
ENDS = {"step.finished": None, "step.skipped": "skipped", "step.failed": "failed"}


@dataclass(frozen=True)
class Span:
    """One attempt at a step: from its start to its end (None while it runs)."""

    run_id: str | None
    step_id: str
    action: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str  # completed | recorded | skipped | failed | running | interrupted
    error: str | None = None
    note: str | None = None
    output: Any = None

    @property
    def seconds(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None


@dataclass(frozen=True)
class Decision:
    """An event at an approval gate that decides or moves it."""

    step_id: str
    event: str
    at: datetime
    by: str | None
    channel: str | None
    evidence: str
    note: str = ""


@dataclass(frozen=True)
class Message:
    """Something said to someone: a statement, a notification, a situation report, a reminder, a code."""

    at: datetime
    kind: str  # statement | notification | sitrep | deadline reminder | deadline escalation | approval code
    audience: str
    channel: str
    step_id: str | None = None
    action: str | None = None
    subject: str = ""


@dataclass
class Story:
    facts: IncidentFacts
    opened_at: datetime
    ended_at: datetime | None
    outcome: str
    decided_by: list[str]
    spans: list[Span]
    undone: list[dict[str, Any]]
    not_run: list[str]
    decisions: list[Decision]
    messages: list[Message]
    targets: list[Target]
    lessons: list[Lesson]
    alerts: list[AuditRecord] = field(default_factory=list)
    gates: list[GateInfo] = field(default_factory=list)
    """The gates of the store, and those only the trail knows (a report from an export)."""

    @property
    def failed(self) -> list[Span]:
        return [s for s in self.spans if s.outcome == "failed"]

    @property
    def elapsed_s(self) -> float:
        """The incident's duration (so far, if it is still open)."""
        return ((self.ended_at or self.facts.generated_at) - self.opened_at).total_seconds()

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)


def tell(facts: IncidentFacts) -> Story:
    """The story the facts tell."""
    records = facts.records
    opened_at = (
        facts.incident.opened_at
        if facts.incident
        else (records[0].at if records else facts.generated_at)
    )
    finished = [r for r in records if r.kind == "run.finished"]
    if facts.incident:
        ended_at = facts.incident.resolved_at
    else:
        ended_at = finished[-1].at if finished else None
    spans = _spans(records)
    decisions = [
        Decision(
            step_id=str(r.data.get("gate") or r.data.get("step") or ""),
            event=r.kind.removeprefix("gate."),
            at=r.at,
            by=r.actor,
            channel=r.channel,
            evidence=str(r.data.get("params_hash") or ""),
            note=_decision_note(r),
        )
        for r in records
        if r.kind.startswith("gate.") and r.kind.removeprefix("gate.") in DECISION_EVENTS
    ]
    gates = _gates(facts)
    decided_by = sorted(
        {p for g in gates for p in g.approvers}
        | {d.by for d in decisions if d.event in ("approved", "rejected") and d.by}
    )
    undone = [
        {
            "step": r.data.get("step"),
            "action": r.data.get("action"),
            "at": r.at,
            "outcome": "undone" if r.kind == "step.undone" else "undo failed",
            "error": r.data.get("error"),
        }
        for r in records
        if r.kind in ("step.undone", "step.undo_failed")
    ]
    not_run = _not_run(facts, spans, finished)
    messages = _messages(facts, spans)
    story = Story(
        facts=facts,
        opened_at=opened_at,
        ended_at=ended_at,
        outcome=_outcome(facts, finished),
        decided_by=decided_by,
        spans=spans,
        undone=undone,
        not_run=not_run,
        decisions=decisions,
        messages=messages,
        targets=[],
        lessons=[],
        alerts=[r for r in records if r.kind == "alert.received"],
        gates=gates,
    )
    story.targets = targets(story)  # read the spans and decisions above
    story.lessons = lessons(story)  # reads the targets
    return story


def _spans(records: Iterable[AuditRecord]) -> list[Span]:
    open_: dict[tuple[str | None, str], AuditRecord] = {}
    spans: list[Span] = []
    finished_runs: set[str | None] = set()
    for r in records:
        step = r.data.get("step")
        if r.kind == "step.started" and step:
            open_[(r.run_id, step)] = r
        elif r.kind in ENDS and step:
            start = open_.pop((r.run_id, step), None)
            outcome = ENDS[r.kind] or str(r.data.get("outcome") or "completed")
            spans.append(
                Span(
                    run_id=r.run_id,
                    step_id=step,
                    action=str(r.data.get("action") or ""),
                    started_at=start.at if start else r.at,
                    ended_at=r.at,
                    outcome=outcome,
                    error=r.data.get("error"),
                    note=r.data.get("note"),
                    output=r.data.get("output"),
                )
            )
        elif r.kind == "run.finished":
            finished_runs.add(r.run_id)
    for (run_id, step), start in open_.items():
        spans.append(
            Span(
                run_id=run_id,
                step_id=step,
                action=str(start.data.get("action") or ""),
                started_at=start.at,
                ended_at=None,
                outcome="interrupted" if run_id in finished_runs else "running",
            )
        )
    return sorted(spans, key=lambda s: s.started_at)


def _gates(facts: IncidentFacts) -> list[GateInfo]:
    known = {(g.run_id, g.step_id) for g in facts.gates}
    found = list(facts.gates)
    opened: dict[tuple[str, str], AuditRecord] = {}
    for r in facts.records:
        key = (str(r.run_id), str(r.data.get("gate")))
        if key in known or not r.data.get("gate"):
            continue
        if r.kind == "gate.opened":
            opened[key] = r
        elif r.kind == "gate.decided" and key in opened:
            start = opened.pop(key)
            found.append(_gate_from(start, r, str(r.data.get("decision") or "decided")))
    found += [_gate_from(start, None, "open") for start in opened.values()]
    return sorted(found, key=lambda g: g.opened_at)


def _gate_from(opened: AuditRecord, decided: AuditRecord | None, state: str) -> GateInfo:
    deadline = opened.data.get("deadline")
    return GateInfo(
        step_id=str(opened.data.get("gate")),
        run_id=str(opened.run_id),
        state=state,
        opened_at=opened.at,
        deadline=datetime.fromisoformat(deadline)
        if deadline
        else (decided.at if decided else opened.at),
        decided_at=decided.at if decided else None,
        decision=state,
        approvers=list((decided.data.get("approvers") if decided else None) or []),
        params_hash=str(opened.data.get("params_hash") or ""),
        level=1,
    )


def _not_run(facts: IncidentFacts, spans: list[Span], finished: list[AuditRecord]) -> list[str]:
    """Steps a run did not reach because an earlier step stopped it (each failed or rejected run,
    against the steps of its phase)."""
    if facts.runbook is None:
        return []
    phases = {
        r.run_id: str(r.data.get("phase") or "respond")
        for r in facts.records
        if r.kind == "run.started"
    }
    missing: list[str] = []
    for run in finished:
        if run.data.get("outcome") == "ok":
            continue
        reached = {s.step_id for s in spans if s.run_id == run.run_id}
        phase = phases.get(run.run_id, "respond")
        missing += [s.id for s in facts.runbook.steps if s.phase == phase and s.id not in reached]
    return list(dict.fromkeys(missing))


def _outcome(facts: IncidentFacts, finished: list[AuditRecord]) -> str:
    """How the runs ended (the last of each phase: respond, then resolve) and the incident's state."""
    said = {"ok": "completed", "failed": "failed", "rejected": "stopped by a rejected approval"}
    phases = {
        r.run_id: str(r.data.get("phase") or "respond")
        for r in facts.records
        if r.kind == "run.started"
    }
    last: dict[str, AuditRecord] = {}
    counts: dict[str, int] = {}
    for run in finished:
        phase = phases.get(run.run_id, "respond")
        last[phase] = run
        counts[phase] = counts.get(phase, 0) + 1
    parts = []
    for phase, run in last.items():
        outcome = str(run.data.get("outcome"))
        name = "run" if phase == "respond" else f"{phase} run"
        parts.append(
            f"{name} {said.get(outcome, outcome)}"
            + (f" (the last of {counts[phase]})" if counts[phase] > 1 else "")
        )
    text = "; ".join(parts) or "no run finished yet"
    return f"{text}; incident {facts.incident.state}" if facts.incident else text


def _decision_note(record: AuditRecord) -> str:
    data = record.data
    parts = [str(data[k]) for k in ("decision", "reason", "comment") if data.get(k)]
    if record.kind == "gate.escalated":
        parts.append(f"level {data.get('level')}: {', '.join(data.get('roles') or [])}")
    if record.kind == "gate.timed_out":
        parts.append(f"on_timeout {data.get('on_timeout')}")
    return "; ".join(dict.fromkeys(parts))


def _messages(facts: IncidentFacts, spans: list[Span]) -> list[Message]:
    found: list[Message] = []
    for span in spans:
        if facts.risks.get(span.action) != "notify" or span.outcome not in (
            "completed",
            "recorded",
        ):
            continue
        output = span.output if isinstance(span.output, Mapping) else {}
        if span.action == "comms.publish":
            channels = output.get("channels") or {}
            via = ", ".join(
                f"{cid} ({_via(sent.get('result'), sent.get('action'))})"
                for cid, sent in channels.items()
                if isinstance(sent, Mapping) and sent.get("ok")
            )
            found.append(
                Message(
                    span.ended_at or span.started_at,
                    "statement",
                    str(output.get("audience") or "?"),
                    via or "none",
                    span.step_id,
                    span.action,
                )
            )
        else:
            found.append(
                Message(
                    span.ended_at or span.started_at,
                    "notification",
                    str(output.get("to") or "?"),
                    _via(output, span.action),
                    span.step_id,
                    span.action,
                    str(output.get("subject") or ""),
                )
            )
    for r in facts.records:
        if r.kind == "sitrep.sent":
            for sent in r.data.get("sent") or []:
                found.append(
                    Message(
                        r.at,
                        "sitrep",
                        str(sent.get("to")),
                        str(sent.get("channel")),
                        subject=str(r.data.get("subject") or ""),
                    )
                )
        elif r.kind == "gate.code_sent":
            found.append(
                Message(
                    r.at,
                    "approval code",
                    r.actor or "?",
                    r.channel or "?",
                    str(r.data.get("gate") or ""),
                )
            )
    for deadline in facts.deadlines:
        for event in deadline.events:
            kind = {
                "reminded": "deadline reminder",
                "missed": "deadline escalation",
                "escalated": "deadline escalation",
            }.get(str(event.get("kind")))
            if kind is None:
                continue
            for sent in event.get("sent") or []:
                found.append(
                    Message(
                        datetime.fromisoformat(event["at"]),
                        kind,
                        str(sent.get("to")),
                        str(sent.get("channel")),
                        subject=f"statement to {deadline.name}",
                    )
                )
    return sorted(found, key=lambda m: m.at)


def _via(result: Any, action: Any) -> str:
    if isinstance(result, Mapping) and result.get("delivered_via"):
        return str(result["delivered_via"])
    return str(action or "?").split(".")[0]
