"""One step: render its templates, decide what a drill makes of it, call its action.

This is the body of a step's Prefect task run; it knows nothing of Prefect.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from siaga.actions import (
    DRILL_PREFIX,
    ActionContext,
    ActionFailed,
    ActionSpec,
    DrillBehaviour,
    DrillConnections,
    Mode,
    ProductionInDrill,
    Risk,
)
from siaga.approvals.policy import Verdict
from siaga.audit import AuditTrail
from siaga.audit.ledger import Ledger
from siaga.logs import get_logger
from siaga.runbook.diagnostics import format_path
from siaga.runbook.models import Runbook, Step
from siaga.runbook.templates import TemplateError, evaluate_condition, render_value
from siaga.secrets import REDACTOR

from .effects import call_once

log = get_logger("siaga.steps")


class StepRefused(ActionFailed):
    """A step that cannot start as written (a template or parameter error): never retried."""


@dataclass(frozen=True)
class StepResult:
    """What a step did: ``status`` is completed, recorded or skipped."""

    status: str
    output: Any = None
    note: str | None = None
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the step really ended: a run woken from a suspension gets its done steps back from
    Prefect's cache, with this time, not the time of the wake-up."""


def drill_behaviour(runbook: Runbook, spec: ActionSpec) -> DrillBehaviour:
    """The runbook's `drill.substitute` for this action, else the action's own drill behaviour."""
    for pattern, behaviour in runbook.drill.substitute.items():
        if fnmatch.fnmatchcase(spec.name, pattern):
            return behaviour
    return spec.drill_behaviour


def render_params(
    spec: ActionSpec, raw: Mapping[str, Any], context: Mapping[str, Any], where: str
) -> BaseModel:
    """Render `raw` and validate it against the action's parameters; raise StepRefused."""
    try:
        rendered = render_value(dict(raw), context)
    except TemplateError as exc:
        raise StepRefused(f"template error in {where}: {exc}", todo="fix the template") from None
    try:
        return spec.params.model_validate(rendered)
    except ValidationError as exc:
        problems = "; ".join(
            f"{where}.{format_path(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise StepRefused(
            f"parameters of {spec.name} are not valid after rendering: {problems}",
            todo="fix the runbook or the inputs and run the step again",
        ) from None


async def perform(
    spec: ActionSpec,
    params: BaseModel,
    context: ActionContext,
    behaviour: DrillBehaviour,
    ledger: Ledger | None = None,
) -> StepResult:
    """Call the action, or in a drill do what `behaviour` says instead. Actions that change
    anything go through the side-effect `ledger` so that they never act twice."""
    drill = context.mode is Mode.DRILL
    if drill:
        params = params.model_copy(update=_marked(params, spec.message_fields))
    if drill and behaviour is DrillBehaviour.SKIP:
        return StepResult("skipped", note="skipped in drills")
    if drill and behaviour is DrillBehaviour.SANDBOX:
        if "connection" not in spec.params.model_fields:
            return await _recorded(spec, params, context, f"drill: {spec.name} takes no connection to swap "
                                   "for a sandbox; recorded, not called")
        context = replace(context, drill_connections=DrillConnections.REQUIRED)
    elif drill and behaviour is not DrillBehaviour.CALL:
        note = "drill: recorded, not called"
        if behaviour is DrillBehaviour.DRY_RUN:
            note += " (dry_run needs a provider that supports it; none is configured)"
        return await _recorded(spec, params, context, note)
    try:
        if ledger is not None and spec.risk is not Risk.READ:
            context = replace(context, call=_through(ledger))
            if not spec.ledger_per_part:
                output, note = await call_once(spec, params, context, ledger)
                return StepResult("completed", REDACTOR(output), note)
        output = await spec.run(params, context)
    except ProductionInDrill as refusal:
        return await _recorded(spec, params, context, f"drill: {refusal}; recorded, not called")
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json", by_alias=True)
    return StepResult("completed", REDACTOR(output))


async def _recorded(spec: ActionSpec, params: BaseModel, context: ActionContext, note: str) -> StepResult:
    """What a drill does instead of a call: record exactly what would have been called."""
    call = params.model_dump(mode="json", by_alias=True)
    await context.publish(
        f"drill-{context.step_id}",
        f"### Drill record: `{spec.name}`\n\n{note}. Would have called `{spec.name}` with:\n\n"
        f"```json\n{params.model_dump_json(by_alias=True, indent=2)}\n```\n",
    )
    return StepResult("recorded", {"drill": "recorded", "action": spec.name, "params": call}, note)


def _through(ledger: Ledger) -> Callable[[ActionSpec, BaseModel, ActionContext], Awaitable[Any]]:
    """Calls of an action's parts, each once, through the side-effect `ledger`."""

    async def call(spec: ActionSpec, params: BaseModel, context: ActionContext) -> Any:
        output, _ = await call_once(spec, params, context, ledger)
        return output

    return call


def _marked(params: BaseModel, fields: tuple[str, ...]) -> dict[str, str]:
    """``[DRILL] `` in front of every non-empty outgoing text that does not carry it yet."""
    marked = {}
    for name in fields:
        text = getattr(params, name)
        if isinstance(text, str) and text and not text.startswith(DRILL_PREFIX):
            marked[name] = DRILL_PREFIX + text
    return marked


async def run_step(
    runbook: Runbook,
    step: Step,
    spec: ActionSpec,
    template_context: Mapping[str, Any],
    action_context: ActionContext,
    audit: AuditTrail,
    ledger: Ledger | None = None,
    verdict: Verdict | None = None,
) -> StepResult:
    """The whole of one step, logged and recorded in the run's `audit` trail: condition,
    parameters, drill behaviour, action. Errors
    leave with secrets redacted from their messages. A gated step does what its gate decided
    (`verdict`): it runs with exactly the parameters approved, never evaluating its condition or
    templates again, or ends as skipped, rejected or refused."""
    bound = log.bind(runbook=runbook.id, run_id=action_context.run_id, step=step.id, action=spec.name)

    trail = {
        "incident_id": action_context.incident_id, "run_id": action_context.run_id,
        "runbook": runbook.id, "step": step.id, "action": spec.name, "mode": str(action_context.mode),
    }

    started = time.perf_counter()
    bound.info("step started", mode=str(action_context.mode))
    await audit.arecord("step.started", **trail)
    try:
        if verdict is not None and verdict.state != "approved":
            return await _as_decided(verdict, bound, audit, trail, started)
        if verdict is not None:
            params = spec.params.model_validate(verdict.params or {})
            result = await perform(spec, params, action_context, drill_behaviour(runbook, spec), ledger)
        elif step.when is not None:
            try:
                go = evaluate_condition(step.when, template_context)
            except TemplateError as exc:
                raise StepRefused(f"template error in when: {exc}", todo="fix the condition") from None
            if not go:
                result = StepResult("skipped", note=f"when: {step.when} was false")
                bound.info("step skipped", reason=result.note, duration_s=_since(started))
                await audit.arecord("step.skipped", **trail, outcome="skipped", note=result.note,
                                    duration_s=_since(started))
                return result
        if verdict is None:
            params = render_params(spec, step.with_, template_context, "with")
            result = await perform(spec, params, action_context, drill_behaviour(runbook, spec), ledger)
    except BaseException as exc:
        error = redacted(exc)
        bound.error("step failed", error=f"{type(error).__name__}: {error}", duration_s=_since(started))
        # written in place, not awaited: a step cancelled by its timeout may not await any more
        audit.record("step.failed", **trail, outcome="failed", error=f"{type(error).__name__}: {error}",
                     duration_s=_since(started))
        if error is exc:
            raise
        raise error from None
    bound.info(f"step {result.status}", outcome=result.status, note=result.note, duration_s=_since(started))
    await audit.arecord(
        "step.skipped" if result.status == "skipped" else "step.finished", **trail,
        outcome=result.status, note=result.note, output=result.output, duration_s=_since(started),
    )
    return result


async def _as_decided(
    verdict: Verdict, bound: Any, audit: AuditTrail, trail: Mapping[str, Any], started: float
) -> StepResult:
    """A gated step that does not run: skipped (its condition was false when the gate opened, or
    a step it depends on was rejected), rejected by people or the clock, or failed at its gate."""
    if verdict.state in ("skipped", "rejected"):
        result = StepResult(verdict.state, note=verdict.reason)
        bound.info(f"step {verdict.state}", reason=verdict.reason, duration_s=_since(started))
        await audit.arecord(f"step.{verdict.state}", **trail, outcome=verdict.state, note=verdict.reason,
                            duration_s=_since(started))
        return result
    todo = ("the approval gate failed: decide by hand whether to do this step" if verdict.state == "failed"
            else "fix the runbook or the inputs and run it again")
    raise StepRefused(f"approval gate: {verdict.reason}", todo=todo)


def redacted(error: BaseException) -> BaseException:
    """`error`, or an ActionFailed saying the same with every known secret value redacted."""
    text = str(error)
    clean = REDACTOR.text(text)
    if clean == text or not isinstance(error, Exception):
        return error
    if isinstance(error, ActionFailed):
        return type(error)(clean, retryable=error.retryable, todo=error.todo, changed=error.changed,
                           retry_after=error.retry_after)
    return ActionFailed(f"{type(error).__name__}: {clean}", retryable=True)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
