"""What a run did, step by step, and what a person must do next. Pure: values in, text out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

_DEFAULT_TODO = "find the cause in its logs, then finish the step by hand or run the runbook again"


class Outcome(StrEnum):
    COMPLETED = "completed"
    RECORDED = "recorded"  # a drill recorded the call instead of making it
    SKIPPED = "skipped"  # `when:` was false, or the drill behaviour is skip
    FAILED = "failed"
    TOLERATED = "failed, continued"  # failed with continue_on_error
    REJECTED = "rejected"  # its approval gate said no (or nobody said yes in time)
    NOT_RUN = "not run"  # an earlier failure or rejection stopped the run first


@dataclass
class UndoRecord:
    action: str
    outcome: Outcome
    error: str | None = None
    params: dict[str, Any] | None = None


@dataclass
class StepRecord:
    step_id: str
    action: str
    outcome: Outcome = Outcome.NOT_RUN
    duration_s: float | None = None
    finished_at: datetime | None = None
    """When the step ended (drill scores measure times to a page or a statement with it)."""
    error: str | None = None
    todo: str | None = None
    output: Any = None
    undo: UndoRecord | None = None
    risky: bool = False


@dataclass
class RunSummary:
    runbook_id: str
    title: str
    mode: str
    run_id: str
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[StepRecord]:
        return [s for s in self.steps if s.outcome is Outcome.FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed

    def next_actions(self) -> list[str]:
        """What a person must do now, most urgent first."""
        todo: list[str] = []
        for step in self.rejected:
            todo.append(f"Step `{step.step_id}` was rejected ({step.error}): it was not done, nor what depends on "
                        "it; if it is still needed, start the runbook again so that people are asked again, "
                        "or do it by hand.")
        for step in self.failed + self.tolerated:
            advice = step.todo or _DEFAULT_TODO
            todo.append(f"Step `{step.step_id}` failed: {advice}.")
        for step in self.steps:
            if step.undo and step.undo.outcome is Outcome.FAILED:
                todo.append(
                    f"Undo of `{step.step_id}` ({step.undo.action}) failed: {step.undo.error}. "
                    "Reverse that step by hand."
                )
        kept = [
            s.step_id
            for s in self.steps
            if s.outcome is Outcome.COMPLETED and s.risky and s.undo is None
        ]
        if self.failed and kept:
            todo.append(
                "These steps changed things and have no undo: check them: "
                + ", ".join(f"`{s}`" for s in kept)
                + "."
            )
        blocked = [s.step_id for s in self.steps if s.outcome is Outcome.SKIPPED and s.error]
        if blocked:
            todo.append("Not done because of a rejection: " + ", ".join(f"`{s}`" for s in blocked) + ".")
        not_run = [s.step_id for s in self.steps if s.outcome is Outcome.NOT_RUN]
        if not_run:
            todo.append(
                "These steps did not run; do them by hand if still needed: "
                + ", ".join(f"`{s}`" for s in not_run)
                + "."
            )
        return todo

    @property
    def rejected(self) -> list[StepRecord]:
        return [s for s in self.steps if s.outcome is Outcome.REJECTED]

    @property
    def tolerated(self) -> list[StepRecord]:
        return [s for s in self.steps if s.outcome is Outcome.TOLERATED]

    def headline(self) -> str:
        if not self.ok:
            verdict = "failed"
        elif self.rejected:
            verdict = f"completed without {', '.join(s.step_id for s in self.rejected)} (rejected)"
        elif self.tolerated:
            verdict = f"completed with {len(self.tolerated)} failed step(s) tolerated"
        else:
            verdict = "completed"
        mode = " (drill)" if self.mode == "drill" else ""
        return f"Runbook {self.runbook_id}{mode} {verdict}"

    def to_text(self) -> str:
        """A plain summary: what failed, what was undone, what a person must do next."""
        lines = [self.headline() + "."]
        for step in self.failed + self.tolerated:
            lines.append(f"Failed: {step.step_id} ({step.action}): {step.error}")
        for step in self.rejected:
            lines.append(f"Rejected: {step.step_id} ({step.action}): {step.error}")
        undone = [s for s in self.steps if s.undo]
        for step in undone:
            assert step.undo is not None
            lines.append(f"Undo of {step.step_id} ({step.undo.action}): {step.undo.outcome}")
        if not undone and not self.ok:
            lines.append("Nothing was undone.")
        for item in self.next_actions():
            lines.append("Next: " + item.replace("`", ""))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = [
            f"# {self.title}",
            "",
            f"**{self.headline()}**, run `{self.run_id}`.",
            "",
            "| step | action | outcome | duration | detail |",
            "| --- | --- | --- | --- | --- |",
        ]
        for step in self.steps:
            took = f"{step.duration_s:.2f}s" if step.duration_s is not None else ""
            detail = (step.error or "").replace("|", "\\|").replace("\n", " ")[:200]
            if step.undo:
                detail += f" undo {step.undo.action}: {step.undo.outcome}"
            rows.append(f"| {step.step_id} | {step.action} | {step.outcome} | {took} | {detail} |")
        todo = self.next_actions()
        if todo:
            rows += ["", "## What a person must do next", ""] + [f"- {item}" for item in todo]
        return "\n".join(rows) + "\n"

    def step_rows(self) -> list[dict[str, Any]]:
        """One flat row per step (the run's table artifact)."""
        return [
            {
                "step": s.step_id,
                "action": s.action,
                "outcome": str(s.outcome),
                "duration_s": s.duration_s,
                "error": s.error or "",
                "undo": "" if s.undo is None else s.undo.action,
                "undo_outcome": "" if s.undo is None else str(s.undo.outcome),
                "undo_error": "" if s.undo is None else s.undo.error or "",
            }
            for s in self.steps
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook_id,
            "mode": self.mode,
            "run_id": self.run_id,
            "ok": self.ok,
            "steps": self.step_rows(),
            "next": self.next_actions(),
        }
