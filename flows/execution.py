"""Run a plan: start each step when its needs are done, stop on failure, undo in reverse.

The executor schedules; it does not know how a step runs. `StepRunner` runs one step (in a flow,
as a Prefect task run) and reports what came of it, so the scheduling logic stays testable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from siaga.actions import (
    ActionContext,
    ActionFailed,
    ActionRegistry,
    ActionSpec,
    DrillConnections,
    Mode,
    Risk,
    VoiceDesk,
)
from siaga.approvals.policy import Verdict
from siaga.audit import AuditTrail
from siaga.runbook.models import Step
from siaga.runbook.plan import Plan
from siaga.report.summary import Outcome, RunSummary, StepRecord, UndoRecord

from .steps import StepResult

_OUTCOMES = {"completed": Outcome.COMPLETED, "recorded": Outcome.RECORDED, "skipped": Outcome.SKIPPED}


@dataclass(frozen=True)
class Attempt:
    """What came of running a step (or an undo): a result, or the error that ended it."""

    result: StepResult | None
    error: BaseException | None = None
    handle: Any = None  # what later steps wait for (a Prefect state in a flow run)


class StepRunner(Protocol):
    def __call__(
        self,
        step: Step,
        template_context: Mapping[str, Any],
        action_context: ActionContext,
        wait_for: list[Any],
        verdict: Verdict | None = None,
    ) -> Awaitable[Attempt]: ...


class GateRunner(Protocol):
    def __call__(
        self,
        step: Step,
        template_context: Mapping[str, Any],
        action_context: ActionContext,
    ) -> Awaitable[Verdict]: ...


class Waiter(Protocol):
    """The run's waiting at its gates (`gates.RunWaiter`): steps run inside `busy()`, and `watch()`
    runs beside them, raising when the run must suspend or was cancelled."""

    def busy(self) -> AbstractAsyncContextManager[None]: ...

    def watch(self) -> Awaitable[None]: ...


class UndoRunner(Protocol):
    def __call__(
        self,
        step: Step,
        template_context: Mapping[str, Any],
        action_context: ActionContext,
    ) -> Awaitable[Attempt]: ...


@dataclass(frozen=True)
class RunInfo:
    """The run being executed."""

    run_id: str
    run_name: str
    mode: Mode
    home: Path
    inputs: Mapping[str, Any]
    audit: AuditTrail
    """The run's audit trail (its undos are recorded there)."""
    alert: Mapping[str, Any] | None = None
    incident: Mapping[str, Any] | None = None
    publish: Callable[[str, str], Awaitable[None]] | None = None
    started_at: str = ""
    """When the run started, ISO 8601 in UTC (``run.started_at`` in templates)."""
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    secret_source: Callable[[str], str | None] | None = None
    library: Path | None = None
    """The runbook folder (message templates are in its templates/)."""
    templates: Mapping[str, str] = field(default_factory=dict)
    """The message templates of the runbook revision the run executes, by file name."""
    was_done: Callable[[str], Awaitable[bool]] | None = None
    """Whether a step of this incident's response was done (completed, or recorded in a drill)."""
    voices: VoiceDesk | None = None
    """The voices of the run's incident in Siaga's store (a runbook with `voices:`)."""


class Execution:
    """One execution of a plan."""

    def __init__(
        self,
        plan: Plan,
        registry: ActionRegistry,
        run: RunInfo,
        run_step: StepRunner,
        run_undo: UndoRunner,
        gate: GateRunner | None = None,
        waiter: Waiter | None = None,
    ) -> None:
        self.plan = plan
        self.registry = registry
        self.run = run
        self._run_step = run_step
        self._run_undo = run_undo
        self._gate = gate
        self._waiter = waiter
        self._blocked: dict[str, str] = {}  # step -> why it is not done (a rejection it depends on)
        self._records = {
            step.id: StepRecord(step.id, step.action, risky=self._spec(step.action).risk in (Risk.CHANGE, Risk.DESTRUCTIVE))
            for step in plan.steps
        }
        self._finished: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, Any] = {}
        self._completed_order: list[str] = []
        self._stopping = False

    def _spec(self, name: str) -> ActionSpec:
        return self.registry[name]

    def action_context(self, step_id: str) -> ActionContext:
        extra = {"publish": self.run.publish} if self.run.publish else {}
        incident_id = (self.run.incident or {}).get("id")
        return ActionContext(
            runbook_id=self.plan.runbook.id,
            step_id=step_id,
            run_id=self.run.run_id,
            mode=self.run.mode,
            home=self.run.home,
            incident_id=str(incident_id) if incident_id else None,
            connections=self.run.connections,
            secret_source=self.run.secret_source,
            library=self.run.library,
            templates=self.run.templates,
            comms=self.plan.runbook.comms.model_dump(mode="json"),
            drill_connections=DrillConnections.REAL if self.plan.runbook.drill.real_channels else DrillConnections.SANDBOX,
            voices=self.run.voices,
            **extra,
        )

    def template_context(self) -> dict[str, Any]:
        runbook = self.plan.runbook
        return {
            "inputs": dict(self.run.inputs),
            "alert": dict(self.run.alert or {}),
            "incident": dict(self.run.incident or {}),
            "steps": dict(self._finished),
            "runbook": {"id": runbook.id, "title": runbook.title, "severity": str(runbook.severity)},
            "mode": str(self.run.mode),
            "run": {"id": self.run.run_id, "name": self.run.run_name, "started_at": self.run.started_at},
        }

    async def execute(self) -> RunSummary:
        """Run every step, then undo completed ones in reverse if the run failed. A step whose
        gate was rejected is not done, nor is anything that depends on it; the rest goes on. With
        a waiter, raise what its watch raises (the run suspends, or was cancelled)."""
        done = {step.id: asyncio.Event() for step in self.plan.steps}

        async def start(step: Step) -> None:
            needs = self.plan.needs[step.id]
            for need in needs:
                await done[need].wait()
            try:
                if self._stopping:
                    return
                blocked = next((n for n in needs if n in self._blocked), None)
                if blocked is None and step.releases and self.run.was_done and not await self.run.was_done(step.releases):
                    self._blocked[step.releases] = f"`{step.releases}`, which it releases, was never done"
                    blocked = step.releases
                if blocked is not None:
                    await self._not_done(step, blocked)
                else:
                    await self._step(step, [self._handles[n] for n in needs if n in self._handles])
            finally:
                done[step.id].set()

        steps = asyncio.ensure_future(asyncio.gather(*(start(step) for step in self.plan.steps)))
        if self._waiter is not None:
            watch = asyncio.ensure_future(self._waiter.watch())
            await asyncio.wait({steps, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done() and not watch.cancelled() and watch.exception() is not None:
                steps.cancel()
                await asyncio.gather(steps, return_exceptions=True)
                raise watch.exception()  # type: ignore[misc]
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        await steps
        if any(record.outcome is Outcome.FAILED for record in self._records.values()):
            await self._undo_completed()  # a rejection undoes nothing
        runbook = self.plan.runbook
        return RunSummary(
            runbook.id,
            runbook.title,
            str(self.run.mode),
            self.run.run_id,
            [self._records[step_id] for step_id in self.plan.order],
        )

    def _busy(self) -> AbstractAsyncContextManager[None]:
        return self._waiter.busy() if self._waiter is not None else nullcontext()

    async def _step(self, step: Step, wait_for: list[Any]) -> None:
        record = self._records[step.id]
        started = time.perf_counter()
        verdict: Verdict | None = None
        if step.approval is not None and self._gate is not None:
            verdict = await self._gate(step, self.template_context(), self.action_context(step.id))
            if verdict.state == "cancelled":
                raise RunCancelled(verdict.reason)
        async with self._busy():
            attempt = await self._run_step(
                step, self.template_context(), self.action_context(step.id), wait_for, verdict
            )
        record.duration_s = round(time.perf_counter() - started, 3)
        # a step done before a suspension comes back from the cache: it ended when it ended
        record.finished_at = getattr(attempt.result, "finished_at", None) or datetime.now(UTC)
        if attempt.handle is not None and attempt.result is not None and attempt.result.status != "rejected":
            # Later steps wait for this one (Prefect draws the edge); a failed step tolerated by
            # continue_on_error is left out, or Prefect would refuse to start its followers.
            self._handles[step.id] = attempt.handle
        if attempt.result is None:
            record.outcome = Outcome.TOLERATED if step.continue_on_error else Outcome.FAILED
            record.error = _describe(attempt.error)
            record.todo = getattr(attempt.error, "todo", None)
            self._finished[step.id] = {"output": None, "status": "failed", "error": record.error}
            if not step.continue_on_error:
                self._stopping = True
            return
        if attempt.result.status == "rejected":
            record.outcome = Outcome.REJECTED
            record.error = attempt.result.note
            record.todo = ("it was not done; if it is still needed, start the runbook again so that "
                           "people are asked again, or do it by hand")
            self._finished[step.id] = {"output": None, "status": "rejected", "error": record.error}
            self._blocked[step.id] = f"`{step.id}` was rejected ({attempt.result.note})"
            return
        record.outcome = _OUTCOMES[attempt.result.status]
        record.output = attempt.result.output
        if attempt.result.status == "skipped":
            record.error = attempt.result.note if step.id in self._blocked else None
        self._finished[step.id] = {"output": attempt.result.output, "status": attempt.result.status}
        if record.outcome in (Outcome.COMPLETED, Outcome.RECORDED):
            self._completed_order.append(step.id)

    async def _not_done(self, step: Step, blocked_by: str) -> None:
        """`step` depends on a rejected step (or on one not done for that reason): it is skipped,
        and said so, without asking anyone."""
        reason = f"not done: it depends on {self._blocked[blocked_by]}"
        self._blocked[step.id] = self._blocked[blocked_by]
        record = self._records[step.id]
        async with self._busy():
            attempt = await self._run_step(
                step, self.template_context(), self.action_context(step.id), [], Verdict("skipped", reason)
            )
        record.finished_at = datetime.now(UTC)
        record.outcome = Outcome.SKIPPED
        record.error = reason
        self._finished[step.id] = {"output": None, "status": "skipped", "error": reason}
        if attempt.result is None:
            record.error = f"{reason} ({_describe(attempt.error)})"

    async def _undo_completed(self) -> None:
        for step_id in reversed(self._completed_order):
            step = self.plan.step(step_id)
            if step.undo is None:
                continue
            record = self._records[step_id]
            context = self.template_context()
            context["step"] = {"id": step_id, "output": record.output}
            action_context = self.action_context(f"undo-{step_id}")
            attempt = await self._run_undo(step, context, action_context)
            if attempt.result is None:
                record.undo = UndoRecord(step.undo.action, Outcome.FAILED, _describe(attempt.error))
            else:
                record.undo = UndoRecord(step.undo.action, _OUTCOMES[attempt.result.status])
            await self.run.audit.arecord(
                "step.undone" if attempt.result is not None else "step.undo_failed",
                incident_id=action_context.incident_id, run_id=self.run.run_id, runbook=self.plan.runbook.id,
                step=step_id, action=step.undo.action, mode=str(self.run.mode), outcome=str(record.undo.outcome),
                error=record.undo.error, output=attempt.result.output if attempt.result else None,
            )


class RunCancelled(Exception):
    """The run was cancelled while a step waited at its gate."""


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    if isinstance(error, ActionFailed):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"timed out: {error}" if str(error) else "timed out"
    return f"{type(error).__name__}: {error}"
