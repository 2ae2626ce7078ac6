"""Compile a runbook into a Prefect flow: one flow per runbook, one task run per step.

The flow's parameters are the runbook's inputs (so Prefect's UI shows a typed form) plus `mode`
(live or drill), `alert`, `incident` and `phase`: ``respond`` runs the runbook's `steps`, ``resolve``
its `on_resolve` steps (the receiver starts that run once the incident resolves), and a drill of
the respond phase goes on to rehearse `on_resolve` in the same run. Each step is a Prefect task
named after the step id with the step's retries and timeout; the scheduling between steps is
`execution.Execution`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from prefect import Flow, Task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectNotFound, Pause
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed, State
from siaga.integrations import default_registry

from siaga.actions import ActionContext, ActionRegistry, Mode
from siaga.approvals.policy import Verdict
from siaga.approvals.records import GateRecords
from siaga.approvals.runs import RunRecords
from siaga.audit import arecord, chain_of, decision_rows, timeline_markdown, trail
from siaga.connections import load_connections
from siaga.deadlines import DeadlineRecords, deadlines_markdown
from siaga.home import runbook_folder, siaga_home
from siaga.ledger import Ledger
from siaga.logs import get_logger
from siaga.runbook.comms import statement_deadlines
from siaga.runbook.models import RESOLVE, RESPOND, Input, Phase, Runbook, Step
from siaga.runbook.plan import plan_runbook
from siaga.secrets import REDACTOR
from siaga.store import engine
from siaga.team import find_roster

from . import drilling
from .deadlines import open_deadlines, statement_sent
from .admission import admit
from .execution import Attempt, Execution, RunCancelled, RunInfo
from .gates import Gatekeeper, RunWaiter, Suspend
from .prefect_logs import attach_run_logs
from .steps import StepRefused, StepResult, drill_behaviour, perform, render_params, run_step

__all__ = ["RunbookFailed", "compile_runbook", "flow_attribute"]

log = get_logger("siaga.report")


class RunbookFailed(Exception):
    """The run failed; the message says what failed, what was undone and what to do next."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


def flow_attribute(runbook_id: str) -> str:
    """The Python name under which a runbook's flow is found: ``payment-gateway-outage`` ->
    ``payment_gateway_outage``."""
    return runbook_id.replace("-", "_")


def compile_runbook(runbook: Runbook, registry: ActionRegistry | None = None) -> Flow[..., Any]:
    """The Prefect flow that runs `runbook`."""
    registry = registry or default_registry()
    plans = {phase: plan_runbook(runbook, phase) for phase in (RESPOND, RESOLVE)}
    every_step = [*runbook.steps, *runbook.on_resolve]
    step_tasks = {step.id: _step_task(runbook, step, registry) for step in every_step}
    undo_tasks = {step.id: _undo_task(runbook, step, registry) for step in every_step if step.undo}

    gated = {phase: any(s.approval for s in plans[phase].steps) for phase in plans}
    timelines: dict[str, Timeline] = {}  # run id -> its timeline, while it runs in this process

    async def run_step(
        step: Step, template_context: Mapping[str, Any], context: ActionContext, wait_for: list[Any],
        verdict: Verdict | None = None,
    ) -> Attempt:
        state = await step_tasks[step.id](template_context, context, verdict, return_state=True, wait_for=wait_for)
        attempt = await _attempt(state)
        if context.run_id in timelines:
            await timelines[context.run_id].publish(final=False)
        return attempt

    async def run_undo(step: Step, template_context: Mapping[str, Any], context: ActionContext) -> Attempt:
        state = await undo_tasks[step.id](template_context, context, return_state=True)
        return await _attempt(state)

    async def run_runbook(**parameters: Any) -> dict[str, Any]:
        attach_run_logs()
        given = dict(parameters)
        mode = Mode(parameters.pop("mode", Mode.LIVE))
        phase: Phase = parameters.pop("phase", None) or RESPOND
        alert = parameters.pop("alert", None)
        if alert is None and mode is Mode.DRILL:
            alert = runbook.drill.alert  # a drill rehearses with the runbook's sample alert
        incident = parameters.pop("incident", None)
        requested_by = parameters.pop("requested_by", None)
        inputs = _coerce_inputs(runbook.inputs, parameters)
        run_id = str(flow_run.get_id() or "local")
        incident_id = str(incident["id"]) if incident and incident.get("id") else None
        store = engine()
        runs, records = RunRecords(store), GateRecords(store)
        admission = await admit(run_id, runbook.id, given, mode=str(mode), requester=requested_by,
                                incident_id=incident_id, gated=gated[phase], runs=runs, records=records)
        if not admission.runs:
            if admission.verdict == "cancelled":
                return Cancelled(message=admission.reason)  # type: ignore[return-value]
            return Failed(name="Refused", message=admission.reason)  # type: ignore[return-value]
        if admission.verdict == "start" and mode is Mode.DRILL and (
            skipped := await drilling.stand_down(runbook, run_id)
        ) is not None:
            runs.end(run_id, "ended", "stood down")
            return skipped  # type: ignore[return-value]  # never beside a live incident
        if admission.verdict == "start" and mode is Mode.DRILL:
            drilling.open_drill_window(runbook, run_id)  # its alerts page nobody
        first_start = _first_start(runs, run_id)  # a resumed run keeps its start
        run = RunInfo(
            run_id=run_id,
            run_name=str(flow_run.get_name() or "local"),
            mode=mode,
            home=siaga_home(),
            inputs=inputs,
            alert=alert,
            incident=incident,
            publish=_publish(runbook.id),
            started_at=first_start.isoformat(timespec="seconds"),
            connections=load_connections(runbook_folder()),
            secret_source=prefect_secret,
            library=runbook_folder(),
            was_done=functools.partial(_was_done, chain_of(incident_id, run_id)),
        )
        timeline = timelines[run.run_id] = Timeline(runbook.id, incident_id, run.run_id)
        roster = find_roster(runbook_folder())
        context = FlowRunContext.get()
        waiter = RunWaiter(
            run_id, records, runs, runbook=runbook, roster=roster, clock=lambda: datetime.now(UTC),
            can_suspend=bool(context and context.flow_run and context.flow_run.deployment_id),
        )
        gatekeeper = Gatekeeper(runbook, registry, roster, records, waiter, requester=requested_by,
                                incident_opened_at=_opened_at(incident))
        if admission.verdict == "start":
            await arecord(
                "run.started", incident_id=incident_id, run_id=run.run_id, runbook=runbook.id,
                run_name=run.run_name, mode=str(mode), inputs=inputs, requested_by=requested_by, phase=phase,
            )
            if phase == RESPOND:
                open_deadlines(runbook, roster, run_id=run.run_id, mode=str(mode), incident=incident,
                               started_at=datetime.now(UTC))
        # a drill of the response rehearses the resolve steps after it, as the incident would
        phases = [RESPOND, RESOLVE] if phase == RESPOND and mode is Mode.DRILL and runbook.on_resolve else [phase]
        try:
            summaries = [
                await Execution(plans[p], registry, run, run_step, run_undo, gatekeeper, waiter).execute()
                for p in phases
            ]
        except Suspend as suspended:
            await arecord("run.suspended", incident_id=incident_id, run_id=run.run_id, runbook=runbook.id,
                          waiting_on=sorted(g.step_id for g in waiter.waiting.values()))
            raise Pause(state=suspended.state) from None
        except RunCancelled as cancelled:
            runs.end(run_id, "cancelled", str(cancelled))
            await arecord("run.cancelled", incident_id=incident_id, run_id=run.run_id, runbook=runbook.id,
                          reason=str(cancelled))
            return Cancelled(message=str(cancelled))  # type: ignore[return-value]
        finally:
            timelines.pop(run.run_id, None)
        runs.end(run_id, "ended")
        summary = summaries[0]
        summary.steps = [record for each in summaries for record in each.steps]
        outcome = "failed" if not summary.ok else "rejected" if summary.rejected else "ok"
        await arecord(
            "run.finished", incident_id=incident_id, run_id=run.run_id, runbook=runbook.id,
            mode=str(mode), outcome=outcome, note=summary.headline(),
        )
        if phase == RESPOND:
            await _publish_deadlines(runbook, run)
        if mode is Mode.DRILL:
            await drilling.score(runbook, summary, first_start)
        records_shown = await timeline.publish(final=True)
        decisions = decision_rows(records_shown)
        if decisions:
            await acreate_table_artifact(
                key=artifact_key(f"{runbook.id}-decisions"), table=decisions, description="Approval gate decisions"
            )
        await _publish_report(runbook, registry, timeline.chain)
        await acreate_markdown_artifact(
            key=artifact_key(f"{runbook.id}-summary"),
            markdown=summary.to_markdown(),
            description=summary.headline(),
        )
        await acreate_table_artifact(
            key=artifact_key(f"{runbook.id}-steps"),
            table=summary.step_rows(),
            description=summary.headline(),
        )
        if not summary.ok:
            raise RunbookFailed(summary.to_text(), summary.as_dict())
        if summary.rejected:  # people said no to part of it: the rest ran; say what was not done
            return Completed(name="Rejected", message=summary.to_text(), data=summary.as_dict())  # type: ignore[return-value]
        return summary.as_dict()

    run_runbook.__name__ = run_runbook.__qualname__ = flow_attribute(runbook.id)
    run_runbook.__module__ = "siaga.flows.library"
    run_runbook.__doc__ = runbook.description or runbook.title
    signature = _signature(runbook.inputs)
    run_runbook.__signature__ = signature  # type: ignore[attr-defined]
    run_runbook.__annotations__ = {
        name: parameter.annotation for name, parameter in signature.parameters.items()
    } | {"return": dict[str, Any]}
    return Flow(
        fn=run_runbook,
        name=runbook.id,
        description=runbook.title,
        validate_parameters=True,
        persist_result=False,
    )


def _signature(inputs: Mapping[str, Input]) -> inspect.Signature:
    """Typed flow parameters: required inputs first, then inputs with defaults, then the rest."""
    required, optional = [], []
    for name, spec in inputs.items():
        annotation: Any = spec.type.python_type()
        if spec.enum is not None:
            annotation = Literal[tuple(spec.enum)]  # type: ignore[valid-type]
        default = inspect.Parameter.empty if spec.required else spec.default
        parameter = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        (required if spec.required else optional).append(parameter)
    fixed = [
        inspect.Parameter("mode", inspect.Parameter.KEYWORD_ONLY, default="live", annotation=Literal["live", "drill"]),
        inspect.Parameter("alert", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict[str, Any] | None),
        inspect.Parameter("incident", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=dict[str, Any] | None),
        inspect.Parameter("requested_by", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None),
        inspect.Parameter("phase", inspect.Parameter.KEYWORD_ONLY, default=RESPOND, annotation=Literal["respond", "resolve"]),
    ]
    return inspect.Signature([*required, *optional, *fixed])


def _opened_at(incident: Mapping[str, Any] | None) -> datetime | None:
    """When the incident opened: the start of its impact clock."""
    value = (incident or {}).get("opened_at")
    if not value:
        return None
    try:
        opened = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return opened if opened.tzinfo else opened.replace(tzinfo=UTC)


def _first_start(runs: RunRecords, run_id: str) -> datetime:
    pinned = runs.get(run_id)
    return pinned.started_at if pinned else datetime.now(UTC)


async def _was_done(chain: str, step_id: str) -> bool:
    """Whether the audit chain records `step_id` as done: completed, or recorded in a drill."""
    records = await asyncio.to_thread(trail().records, chain)
    return any(
        r.kind == "step.finished" and r.data.get("step") == step_id and r.data.get("outcome") in ("completed", "recorded")
        for r in records
    )


def _coerce_inputs(specs: Mapping[str, Input], given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ValueError(f"unknown inputs: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in given and given[name] is not None:
            values[name] = spec.coerce(given[name])
        elif spec.required:
            raise ValueError(f"input {name} is required")
        else:
            values[name] = spec.default
    return values


def _step_task(runbook: Runbook, step: Step, registry: ActionRegistry) -> Task[..., Any]:
    spec = registry[step.action]

    async def step_body(template_context: Mapping[str, Any], context: ActionContext, verdict: Verdict | None = None) -> Any:
        result = await run_step(runbook, step, spec, template_context, context, process_ledger(), verdict)
        if result.status in ("completed", "recorded"):
            statement_sent(step.id, step.action, result.output, context)
        return _as_state(result)

    step_body.__qualname__ = step_body.__name__ = f"step_{step.id.replace('-', '_')}"
    return _task(step_body, step.id, step, once_per_run=True)


def _undo_task(runbook: Runbook, step: Step, registry: ActionRegistry) -> Task[..., Any]:
    assert step.undo is not None
    undo = step.undo
    spec = registry[undo.action]
    raw = undo.with_ if undo.with_ is not None else step.with_

    async def undo_body(template_context: Mapping[str, Any], context: ActionContext) -> Any:
        params = render_params(spec, raw, template_context, "undo.with" if undo.with_ is not None else "with")
        return _as_state(await perform(spec, params, context, drill_behaviour(runbook, spec), process_ledger()))

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


async def _attempt(state: State[Any]) -> Attempt:
    if state.is_completed():
        return Attempt(await state.aresult(), handle=state)
    error = await state.aresult(raise_on_failure=False)
    if state.name == "Rejected" and isinstance(error, StepResult):  # a rejection is an outcome, not an error
        return Attempt(error, handle=state)
    if not isinstance(error, BaseException):
        error = RuntimeError(state.message or f"step ended {state.name}")
    return Attempt(None, error, handle=state)


async def _publish_deadlines(runbook: Runbook, run: RunInfo) -> None:
    """The statement deadlines of this incident (or run) as they stand when the run ends; a drill
    that is over records those it did not meet as missed."""
    if not statement_deadlines(runbook):
        return
    records = DeadlineRecords(engine())
    if run.mode is Mode.DRILL:
        records.close_drill(run.run_id, datetime.now(UTC))
    incident_id = (run.incident or {}).get("id")
    found = records.find(incident_id=str(incident_id)) if incident_id else records.find(run_id=run.run_id)
    await acreate_markdown_artifact(
        key=artifact_key(f"{runbook.id}-statement-deadlines"),
        markdown="### Statement deadlines\n\n" + deadlines_markdown(found),
        description="Statement deadlines and whether they were met",
    )


async def _publish_report(runbook: Runbook, registry: ActionRegistry, chain: str) -> None:
    """The post-incident report of the incident (or run) as it stands when this run ends, as the
    Markdown artifact `<runbook>-report` (without its picture: `siaga report --format html` has it).
    A report that cannot be built is logged, never a reason to fail the run."""
    from siaga.report import report_markdown, tell
    from siaga.report.gather import gather

    try:
        facts = await asyncio.to_thread(gather, engine(), chain, registry=registry, runbook=runbook)
        markdown = REDACTOR.text(report_markdown(tell(facts)))
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands; the report can be built later
        log.error("post-incident report not published", chain=chain, error=REDACTOR.text(f"{type(exc).__name__}: {exc}"))
        return
    await acreate_markdown_artifact(
        key=artifact_key(f"{runbook.id}-report"), markdown=markdown,
        description=f"Post-incident report of {chain} as this run ended (`siaga report {chain}` for the latest)",
    )


def artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100]


class Timeline:
    """The run's timeline artifact, drawn from its audit records: published again after a step at
    most every `EVERY` seconds (each version is an API call and a read of the trail), and always
    at the end."""

    EVERY = 2.0

    def __init__(self, runbook_id: str, incident_id: str | None, run_id: str) -> None:
        self.runbook_id, self.run_id = runbook_id, run_id
        self.chain = chain_of(incident_id, run_id)
        self.published = float("-inf")

    async def publish(self, *, final: bool) -> list[Any]:
        """Publish a new version (if due, or `final`); return the records it shows (none if not due)."""
        if not final and time.monotonic() - self.published < self.EVERY:
            return []
        self.published = time.monotonic()
        records = await asyncio.to_thread(trail().records, self.chain, self.run_id)
        await acreate_markdown_artifact(
            key=artifact_key(f"{self.runbook_id}-timeline"),
            markdown=REDACTOR.text(timeline_markdown(records, f"Timeline of run {self.run_id}")),
            description=f"Audit trail of this run: {len(records)} records, chain {self.chain}",
        )
        return records


def _publish(runbook_id: str) -> Any:
    async def publish(key: str, markdown: str) -> None:
        await acreate_markdown_artifact(key=artifact_key(f"{runbook_id}-{key}"), markdown=REDACTOR.text(markdown))

    return publish


@cache
def process_ledger() -> Ledger:
    """The side-effect ledger in Siaga's store, one per process."""
    return Ledger(engine())


def prefect_secret(name: str) -> str | None:
    """A secret from the Prefect Secret block `name`, if there is one."""
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(name, _sync=True).get())  # type: ignore[call-arg]
    except (ValueError, ObjectNotFound):
        return None
