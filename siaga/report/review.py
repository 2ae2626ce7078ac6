"""How an incident's story measured up: each figure against the runbook's target (met, missed or
not decided yet), and the questions for the review, each tied to the step it is about. Pure: a
`Story` (`story.py`) in, targets and lessons out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from siaga.runbook.comms import POSTING_ACTIONS
from siaga.runbook.durations import human_duration

from .facts import DeadlineInfo, StepInfo

if TYPE_CHECKING:  # story.py builds its Story with the targets and lessons judged here
    from .story import Span, Story

__all__ = ["Lesson", "Target", "is_public", "lessons", "targets"]

PUBLIC_ACTIONS = frozenset({"statuspage.create_incident", "statuspage.update_incident", *POSTING_ACTIONS})
PUBLIC_AUDIENCES = ("customers", "media", "social", "public", "statuspage", "press")


@dataclass(frozen=True)
class Target:
    """A figure against the runbook's target: `met` True, False (missed) or None (no target, or
    not decided yet)."""

    name: str
    actual_s: float | None
    target_s: float | None
    met: bool | None
    note: str = ""


@dataclass(frozen=True)
class Lesson:
    """A question for the review, tied to the runbook step it is about (and its line)."""

    question: str
    step_id: str | None = None
    place: str | None = None


def is_public(span: Span) -> bool:
    """Whether a step spoke to the public (status page, customers, media)."""
    output = span.output if isinstance(span.output, Mapping) else {}
    if span.action in PUBLIC_ACTIONS:
        return True
    if span.action == "comms.publish":
        return str(output.get("audience")) in ("customers", "media")
    return span.action == "outbox.send" and str(output.get("to", "")).startswith(PUBLIC_AUDIENCES)


def targets(story: Story) -> list[Target]:
    facts, runbook = story.facts, story.facts.runbook
    targets: list[Target] = []
    started = story.spans
    first = started[0].started_at if started else None
    targets.append(
        Target(
            "time to first action",
            _since(story.opened_at, first),
            None,
            None,
            f"step {started[0].step_id}" if started else "no step started",
        )
    )
    for gate in story.gates:
        window = (gate.deadline - gate.opened_at).total_seconds()
        took = _since(gate.opened_at, gate.decided_at)
        met = (
            None
            if gate.decided_at is None
            else gate.state != "timed_out" and gate.decided_at <= gate.deadline
        )
        targets.append(
            Target(
                f"decision at gate {gate.step_id}",
                took,
                window,
                met,
                f"{gate.state}, {human_duration(_since(story.opened_at, gate.decided_at))} after the incident opened"
                if gate.decided_at
                else "waiting",
            )
        )
    within = runbook.public_statement_within_s if runbook else None
    public = next((d for d in facts.deadlines if d.name == "public"), None)
    first_public = (
        public.met_at
        if public and public.met_at
        else next(
            (s.ended_at for s in story.spans if s.outcome == "completed" and is_public(s)), None
        )
    )
    actual = _since(story.opened_at, first_public)
    if actual is not None:
        met = None if within is None else actual <= within
    elif within is not None and (facts.generated_at - story.opened_at).total_seconds() > within:
        met = False
    else:
        met = None
    targets.append(
        Target(
            "first public statement", actual, within, met, "" if actual is not None else "none yet"
        )
    )
    for deadline in facts.deadlines:
        if deadline.name == "public":
            continue
        targets.append(_deadline_target(deadline))
    downtime = runbook.max_tolerable_downtime_s if runbook else None
    lasted = story.elapsed_s
    if story.ended_at is not None:
        met = None if downtime is None else lasted <= downtime
        note = "resolved"
    else:
        met = False if downtime is not None and lasted > downtime else None
        note = "still open"
    targets.append(Target("incident duration", lasted, downtime, met, note))
    return targets


def _deadline_target(deadline: DeadlineInfo) -> Target:
    window = (deadline.due_at - deadline.opened_at).total_seconds()
    actual = _since(deadline.opened_at, deadline.met_at)
    met = {"met": True, "missed": False}.get(deadline.state)
    note = f"by {deadline.met_by}" if deadline.met_by else deadline.state
    if deadline.state == "missed" and deadline.met_at:
        note += ", sent late"
    return Target(f"statement to {deadline.name}", actual, window, met, note)


def lessons(story: Story) -> list[Lesson]:
    facts = story.facts
    lessons: list[Lesson] = []

    def at(step_id: str | None, question: str) -> None:
        info = facts.runbook.step(step_id) if facts.runbook and step_id else None
        lessons.append(Lesson(question, step_id, info.place if info else None))

    for span in story.failed:
        at(
            span.step_id,
            f"Step {span.step_id} ({span.action}) failed: {span.error or 'no reason recorded'}. "
            "What would have prevented it: a retry, a timeout, a check before it, a different action?",
        )
    if story.not_run:
        at(
            story.not_run[0],
            f"{len(story.not_run)} step(s) never ran because an earlier step stopped the run "
            f"({', '.join(story.not_run)}): which of them did people do by hand, and when?",
        )
    for undo in story.undone:
        if undo["outcome"] == "undo failed":
            at(
                undo["step"],
                f"Undoing step {undo['step']} failed ({undo['error']}): what is still to be put right?",
            )
        else:
            at(
                undo["step"],
                f"Step {undo['step']} was undone after a later failure: was the undo complete?",
            )
    escalations: dict[str, int] = {}
    for d in story.decisions:
        if d.event == "escalated":
            escalations[d.step_id] = escalations.get(d.step_id, 0) + 1
    for gate in story.gates:
        window = (gate.deadline - gate.opened_at).total_seconds()
        took = _since(gate.opened_at, gate.decided_at)
        late = took is not None and took > window / 2
        escalated = escalations.get(gate.step_id, 0)
        if gate.state == "timed_out":
            at(
                gate.step_id,
                f"Nobody decided at the gate of step {gate.step_id} within {human_duration(window)}: "
                "were the approvers reachable, and are `approval.from` and `timeout` right?",
            )
        elif late or escalated:
            said = (
                f"took {human_duration(took)} of its {human_duration(window)}"
                if took is not None
                else "is still open"
            )
            more = f" and escalated {escalated}x" if escalated else ""
            at(
                gate.step_id,
                f"The gate of step {gate.step_id} {said}{more}: what slowed the decision, "
                "and should the evidence, the approvers or the timeout change?",
            )
        if gate.state == "rejected":
            why = next(
                (
                    d.note
                    for d in story.decisions
                    if d.step_id == gate.step_id and d.event == "rejected"
                ),
                "",
            )
            at(
                gate.step_id,
                f"The step {gate.step_id} was rejected at its gate ({why or 'no comment'}): "
                "should the runbook propose something else here, or only under a `when:`?",
            )
    for target in story.targets:
        if target.met is not False:
            continue
        if target.name.startswith("statement to") or target.name == "first public statement":
            audience = target.name.removeprefix("statement to ").replace(
                "first public statement", "public"
            )
            step = _statement_step(story, audience)
            at(
                step,
                f"The {target.name} missed its deadline of {human_duration(target.target_s)} "
                f"({'sent after ' + human_duration(target.actual_s) if target.actual_s is not None else 'never sent'}): "
                "what held up the draft or its approval?",
            )
        elif target.name == "incident duration":
            slowest = max(
                (s for s in story.spans if s.seconds is not None),
                key=lambda s: s.seconds or 0,
                default=None,
            )
            at(
                slowest.step_id if slowest else None,
                f"The incident lasted {human_duration(target.actual_s)}, beyond the maximum tolerable downtime of "
                f"{human_duration(target.target_s)}"
                + (
                    f"; the slowest step was {slowest.step_id} ({human_duration(slowest.seconds)})"
                    if slowest
                    else ""
                )
                + ". What would shorten it next time?",
            )
    voices = facts.voices.total if facts.voices else None
    if voices is not None and voices.owed and voices.answered_in_time < voices.owed:
        late = voices.answered - voices.answered_in_time
        lessons.append(Lesson(
            f"{voices.owed - voices.answered_in_time} of the {voices.owed} voices owed an answer were not answered "
            f"within their deadline ({late} answered late, {voices.open} still open): were there enough people "
            "answering, were the reply templates ready, and are `voices.respond_within` and its overrides right?"
        ))
    lessons.append(
        Lesson("What went well and should be kept, in the runbook or in how the team worked?")
    )
    lessons.append(
        Lesson("What did the team have to do that the runbook does not say? Add it as a step.")
    )
    return lessons


def _statement_step(story: Story, audience: str) -> str | None:
    """The step that publishes (else drafts) statements to `audience`, for a lesson to point at."""
    audiences = ("customers", "media") if audience == "public" else (audience,)
    for span in story.spans:
        output = span.output if isinstance(span.output, Mapping) else {}
        if span.action == "comms.publish" and output.get("audience") in audiences:
            return span.step_id
    runbook = story.facts.runbook
    publish = [s for s in runbook.steps if s.action == "comms.publish"] if runbook else []
    draft = [s for s in runbook.steps if s.action == "comms.draft"] if runbook else []
    found: list[StepInfo] = publish or draft
    return found[0].id if found else None


def _since(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 3)
