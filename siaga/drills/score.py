"""How ready the team is, from one drill: the figures of the drill and a score out of 100.

Pure: values in, values out (no store, no Prefect, no clock). The rule, written once here and in
README.md ("Drills"):

- start at 100;
- paging: minus 2 points per started minute past `PAGE_WITHIN` from the start of the run to the
  first page sent (at most 20); minus 20 when the runbook pages but the drill never did;
- each approval gate decided after half its window (opened -> deadline): minus 5;
- each escalation up the chain of command: minus 5;
- each gate that timed out (nobody decided in time): minus 10;
- each step that failed (stopping the run or tolerated): minus 10;
- each step that did not run because an earlier one stopped the run: minus 2;
- each deadline missed (the public statement later than the runbook's
  `impact.public_statement_within`, or never made while the runbook makes one; any further
  deadline handed in, such as comms deadlines): minus 15;
- each voice (a mention the drill answered, `voices:`) answered after its deadline, or still
  unanswered past it when the drill ended: minus 2, at most 20;
- never below 0.

Steps a drill skips or records are rehearsed as designed and cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from siaga.runbook.comms import POSTING_ACTIONS
from siaga.runbook.durations import human_duration

PAGE_WITHIN = timedelta(minutes=5)
"""How soon after a run starts the on-call should be paged."""
PAGE_POINTS_PER_MINUTE = 2
PAGE_MAX_POINTS = 20
NEVER_PAGED_POINTS = 20
SLOW_GATE_POINTS = 5
ESCALATION_POINTS = 5
TIMEOUT_POINTS = 10
FAILED_STEP_POINTS = 10
NOT_RUN_STEP_POINTS = 2
MISSED_DEADLINE_POINTS = 15
LATE_VOICE_POINTS = 2
LATE_VOICES_MAX_POINTS = 20

PAGING_ACTIONS = frozenset({"pagerduty.trigger"})
PUBLIC_ACTIONS = frozenset({"statuspage.create_incident", "statuspage.update_incident", "comms.publish"}) | POSTING_ACTIONS
PUBLIC_AUDIENCES = ("customers", "social", "public", "statuspage", "press")
"""`outbox.send` to one of these audiences (``to: customers:affected``) is a public statement."""
DONE = frozenset({"completed", "recorded"})
"""Step outcomes that count as done in a drill: a recorded call is the call rehearsed."""


def is_page(action: str, params: Mapping[str, Any]) -> bool:
    """Whether a step with `action` and parameters `params` (as written) pages someone."""
    if action in PAGING_ACTIONS:
        return True
    if action == "notify.fanout":
        return any(isinstance(c, Mapping) and c.get("action") in PAGING_ACTIONS for c in params.get("channels") or [])
    return action == "outbox.send" and str(params.get("to", "")).startswith("pagerduty")


def is_public_statement(action: str, params: Mapping[str, Any]) -> bool:
    """Whether a step speaks to the public (status page, customers, social media)."""
    if action in PUBLIC_ACTIONS:
        return True
    if action == "notify.fanout":
        return any(
            isinstance(c, Mapping) and is_public_statement(str(c.get("action")), c.get("with") or {})
            for c in params.get("channels") or []
        )
    return action == "outbox.send" and str(params.get("to", "")).startswith(PUBLIC_AUDIENCES)


@dataclass(frozen=True)
class StepFacts:
    """One step of the drill: what it did and when it ended."""

    step_id: str
    action: str
    outcome: str  # as in siaga.report.summary.Outcome
    finished_at: datetime | None = None
    page: bool = False
    public: bool = False


@dataclass(frozen=True)
class GateFacts:
    """One approval gate of the drill, from its records."""

    step_id: str
    opened_at: datetime
    deadline: datetime
    decided_at: datetime | None
    state: str  # approved | rejected | timed_out | failed | cancelled | open
    escalations: int = 0
    timed_out: bool = False


@dataclass(frozen=True)
class Deadline:
    """Something due a given time after the run started, and when it was done (None: never)."""

    name: str
    due: timedelta
    done: timedelta | None


@dataclass(frozen=True)
class DrillFacts:
    """Everything the score is computed from."""

    runbook_id: str
    run_id: str
    started_at: datetime
    ended_at: datetime
    steps: Sequence[StepFacts]
    gates: Sequence[GateFacts] = ()
    public_statement_within: timedelta | None = None
    deadlines: Sequence[Deadline] = ()
    """Further deadlines (comms), beside the public statement's."""
    voices: Sequence[VoiceFacts] = ()
    """The voices the drill answered (its mentions), each with its deadline."""


@dataclass(frozen=True)
class VoiceFacts:
    """One voice of the drill: when it was due and when it was answered (None: not yet)."""

    voice_id: str
    due_at: datetime
    answered_at: datetime | None
    state: str  # as in siaga.voices: new, drafted, answered, dismissed...


@dataclass(frozen=True)
class Deduction:
    points: int
    reason: str


@dataclass(frozen=True)
class DrillScore:
    score: int
    figures: dict[str, Any]
    deductions: list[Deduction] = field(default_factory=list)


def score_drill(facts: DrillFacts) -> DrillScore:
    """The drill's figures and its score by the rule in this module's docstring."""
    deductions: list[Deduction] = []
    page_s = _first(facts, lambda s: s.page)
    if page_s is not None and page_s > PAGE_WITHIN.total_seconds():
        minutes = math.ceil((page_s - PAGE_WITHIN.total_seconds()) / 60)
        points = min(PAGE_MAX_POINTS, PAGE_POINTS_PER_MINUTE * minutes)
        deductions.append(Deduction(points, f"first page after {human_duration(page_s)} (target {human_duration(PAGE_WITHIN)})"))
    elif page_s is None and any(s.page for s in facts.steps):
        deductions.append(Deduction(NEVER_PAGED_POINTS, "the runbook pages, but the drill never did"))

    gates = []
    for gate in facts.gates:
        window = (gate.deadline - gate.opened_at).total_seconds()
        took = (gate.decided_at - gate.opened_at).total_seconds() if gate.decided_at else None
        gates.append({"step": gate.step_id, "state": gate.state, "decision_s": took, "window_s": window,
                      "escalations": gate.escalations, "timed_out": gate.timed_out})
        if gate.timed_out:
            deductions.append(Deduction(TIMEOUT_POINTS, f"gate `{gate.step_id}` timed out"))
        elif took is not None and took > window / 2:
            deductions.append(Deduction(
                SLOW_GATE_POINTS, f"gate `{gate.step_id}` decided after {human_duration(took)}, over half its {human_duration(window)}"
            ))
        if gate.escalations:
            deductions.append(Deduction(
                ESCALATION_POINTS * gate.escalations, f"gate `{gate.step_id}` escalated {gate.escalations}x"
            ))

    failed = [s.step_id for s in facts.steps if s.outcome in ("failed", "failed, continued")]
    not_run = [s.step_id for s in facts.steps if s.outcome == "not run"]
    deductions += [Deduction(FAILED_STEP_POINTS, f"step `{step}` failed") for step in failed]
    deductions += [Deduction(NOT_RUN_STEP_POINTS, f"step `{step}` did not run") for step in not_run]

    public_s = _first(facts, lambda s: s.public)
    deadlines = list(facts.deadlines)
    if facts.public_statement_within is not None and any(s.public for s in facts.steps):
        deadlines.insert(0, Deadline(
            "public statement", facts.public_statement_within,
            None if public_s is None else timedelta(seconds=public_s),
        ))
    missed = [d for d in deadlines if d.done is None or d.done > d.due]
    deductions += [Deduction(MISSED_DEADLINE_POINTS, f"missed: {d.name} (due within {human_duration(d.due)})") for d in missed]

    late = [v for v in facts.voices if v.state != "dismissed" and (
        (v.answered_at or facts.ended_at) > v.due_at)]
    if late:
        points = min(LATE_VOICES_MAX_POINTS, LATE_VOICE_POINTS * len(late))
        answered_late = sum(1 for v in late if v.answered_at is not None)
        deductions.append(Deduction(points, f"{len(late)} voice(s) past their deadline: {answered_late} answered late, "
                                            f"{len(late) - answered_late} not answered ({', '.join(v.voice_id for v in late[:5])}"
                                            + (", ..." if len(late) > 5 else "") + ")"))

    figures = {
        "duration_s": _seconds(facts.ended_at - facts.started_at),
        "time_to_first_page_s": page_s,
        "page_target_s": PAGE_WITHIN.total_seconds(),
        "time_to_public_statement_s": public_s,
        "public_statement_target_s": (
            facts.public_statement_within.total_seconds() if facts.public_statement_within else None
        ),
        "gates": gates,
        "escalations": sum(g.escalations for g in facts.gates),
        "timeouts": sum(1 for g in facts.gates if g.timed_out),
        "steps_failed": failed,
        "steps_skipped": [s.step_id for s in facts.steps if s.outcome == "skipped"],
        "steps_not_run": not_run,
        "deadlines_missed": [d.name for d in missed],
        "voices": len(facts.voices),
        "voices_answered": sum(1 for v in facts.voices if v.answered_at is not None),
        "voices_late": [v.voice_id for v in late],
    }
    return DrillScore(max(0, 100 - sum(d.points for d in deductions)), figures, deductions)


def _first(facts: DrillFacts, which: Any) -> float | None:
    """Seconds from the run's start to the end of the first done step `which` selects."""
    times = [s.finished_at for s in facts.steps if which(s) and s.outcome in DONE and s.finished_at]
    return _seconds(min(times) - facts.started_at) if times else None


def _seconds(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0), 3)


def report_markdown(facts: DrillFacts, result: DrillScore) -> str:
    """The drill's report (the run's Markdown artifact)."""
    f = result.figures

    def at(value: float | None, target: float | None = None) -> str:
        text = "never" if value is None else human_duration(value)
        return text + (f" (target {human_duration(target)})" if target else "")

    lines = [
        f"# Drill of {facts.runbook_id}: {result.score}/100",
        "",
        f"Run `{facts.run_id}`, {facts.started_at:%Y-%m-%d %H:%M:%S} UTC, took {human_duration(f['duration_s'])}.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| time to first page | {at(f['time_to_first_page_s'], f['page_target_s'])} |",
        f"| time to public statement | {at(f['time_to_public_statement_s'], f['public_statement_target_s'])} |",
        f"| escalations | {f['escalations']} |",
        f"| gate timeouts | {f['timeouts']} |",
        f"| steps failed | {', '.join(f['steps_failed']) or 'none'} |",
        f"| steps skipped | {', '.join(f['steps_skipped']) or 'none'} |",
        f"| steps not run | {', '.join(f['steps_not_run']) or 'none'} |",
        f"| deadlines missed | {', '.join(f['deadlines_missed']) or 'none'} |",
    ]
    if f.get("voices"):
        lines.append(f"| voices answered | {f['voices_answered']} of {f['voices']}, {len(f['voices_late'])} past their "
                     "deadline |")
    if f["gates"]:
        lines += ["", "## Approval gates", "", "| step | decision | took | window |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {g['step']} | {g['state']} | {at(g['decision_s'])} | {human_duration(g['window_s'])} |" for g in f["gates"]
        ]
    lines += ["", "## Points lost", ""]
    lines += [f"- {d.points}: {d.reason}" for d in result.deductions] or ["- none"]
    return "\n".join(lines) + "\n"


def steps_facts(
    steps: Iterable[tuple[str, str, Mapping[str, Any], str, datetime | None]],
) -> list[StepFacts]:
    """StepFacts from (step id, action, parameters as written, outcome, finished at)."""
    return [
        StepFacts(step_id, action, outcome, finished, is_page(action, params), is_public_statement(action, params))
        for step_id, action, params, outcome, finished in steps
    ]
