"""A runbook step as a Prefect task: named after the step, with its retries and timeout, done once per
run (a run started again from the top gets a completed step back from Prefect's result cache), its
outcome shown under its own state name (Skipped, Recorded, Rejected); and its undo as a task.

The tasks are built once per runbook revision (`run_body.RunBody.build`) and serve every run of it
in this process; each run's services (its store, audit trail and side-effect ledger: the `Wiring`
its body made) are found under the run's id in `services`, where `RunBody.execute` keeps them while
the run lasts. The runbook language and the action contract stay free of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import Cancelled, Completed, State

from siaga.actions import ActionContext, ActionRegistry
from siaga.approvals.policy import Verdict
from siaga.report.deadlines import DeadlineRecords
from siaga.runbook.models import Runbook, Step
from siaga.wiring import Wiring

from .deadline_watch import statement_sent
from .execution import Attempt
from .steps import StepRefused, StepResult, drill_behaviour, perform, render_params, run_step

__all__ = ["attempt_of", "step_task", "undo_task"]


def step_task(runbook: Runbook, step: Step, registry: ActionRegistry, services: Mapping[str, Wiring]) -> Task[..., Any]:
    """The step's task; a run finds its services in `services` under its id."""
    spec = registry[step.action]

    async def step_body(template_context: Mapping[str, Any], context: ActionContext, verdict: Verdict | None = None) -> Any:
        wiring = services[context.run_id]
        result = await run_step(runbook, step, spec, template_context, context, wiring.audit, wiring.ledger, verdict)
        if result.status in ("completed", "recorded"):
            statement_sent(step.id, step.action, result.output, context, DeadlineRecords(wiring.engine))
        return _as_state(result)

    step_body.__qualname__ = step_body.__name__ = f"step_{step.id.replace('-', '_')}"
    return _task(step_body, step.id, step, once_per_run=True)


def undo_task(runbook: Runbook, step: Step, registry: ActionRegistry, services: Mapping[str, Wiring]) -> Task[..., Any]:
    """The task of the step's undo; a run finds its services in `services` under its id."""
    assert step.undo is not None
    undo = step.undo
    spec = registry[undo.action]
    raw = undo.with_ if undo.with_ is not None else step.with_

    async def undo_body(template_context: Mapping[str, Any], context: ActionContext) -> Any:
        params = render_params(spec, raw, template_context, "undo.with" if undo.with_ is not None else "with")
        ledger = services[context.run_id].ledger
        return _as_state(await perform(spec, params, context, drill_behaviour(runbook, spec), ledger))

    undo_body.__qualname__ = undo_body.__name__ = f"undo_{step.id.replace('-', '_')}"
    return _task(undo_body, f"undo-{step.id}", step, retries=step.retries)


def _task(fn: Any, name: str, step: Step, *, retries: int | None = None, once_per_run: bool = False) -> Task[..., Any]:
    """A step's task. With `once_per_run`, a step that completed comes back from Prefect's
    result cache (shown as Cached) when its flow run is started again from the top: a run revived
    from a suspension at its gates (`gates`) never does a step twice."""
    caching: dict[str, Any] = (
        {"cache_key_fn": _once_per_run, "persist_result": True}
        if once_per_run
        else {"cache_policy": NO_CACHE, "persist_result": False}
    )
    return Task(
        fn=fn,
        name=name,
        task_run_name=name,
        retries=step.retries if retries is None else retries,
        retry_delay_seconds=step.retry_delay.total_seconds(),
        timeout_seconds=step.timeout.total_seconds() if step.timeout else None,
        retry_condition_fn=_may_retry,
        **caching,
    )


def _once_per_run(context: TaskRunContext, parameters: Mapping[str, Any]) -> str:
    return f"siaga-{context.task_run.flow_run_id}-{context.task.name}"


def _may_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry unless the action said trying again cannot help (bad request, bad template)."""
    error = state.data
    return not (isinstance(error, StepRefused) or getattr(error, "retryable", True) is False)


def _as_state(result: StepResult) -> Any:
    """Skipped and drill-recorded steps show under their own state names in Prefect's UI."""
    if result.status == "skipped":
        return Completed(name="Skipped", message=result.note, data=result)
    if result.status == "recorded":
        return Completed(name="Recorded", message=result.note, data=result)
    if result.status == "rejected":
        return Cancelled(name="Rejected", message=result.note, data=result)
    return result


async def attempt_of(state: State[Any]) -> Attempt:
    if state.is_completed():
        return Attempt(await state.aresult(), handle=state)
    error = await state.aresult(raise_on_failure=False)
    if state.name == "Rejected" and isinstance(error, StepResult):  # a rejection is an outcome, not an error
        return Attempt(error, handle=state)
    if not isinstance(error, BaseException):
        error = RuntimeError(state.message or f"step ended {state.name}")
    return Attempt(None, error, handle=state)
