"""The body of a runbook's flow run: admit the run (`admission`), set it up (its inputs, alert,
incident, connections, gates), execute its phase (a drill of the response rehearses `on_resolve`
after it), then record how it ended and publish its artifacts. Its final state says what people
need: Completed, Completed named Rejected (people said no to part of it), Failed (what failed, what
was undone, what to do next), Failed named Refused (admission), Cancelled, or Paused while it waits
on people only (`gates`)."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import Task
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from siaga.actions import ActionContext, ActionRegistry, Mode
from siaga.approvals.policy import Verdict
from siaga.approvals.records import GateRecords
from siaga.approvals.runs import RunRecords
from siaga.audit import AuditTrail, chain_of
from siaga.canonical import as_utc
from siaga.report.deadlines import DeadlineRecords
from siaga.report.summary import RunSummary
from siaga.runbook.models import RESOLVE, RESPOND, Input, Phase, Runbook, Step
from siaga.runbook.plan import Plan, plan_runbook
from siaga.runbook.roster import Roster
from siaga.runbook.revision import revision_of
from siaga.settings import Settings
from siaga.voices.desk import StoreDesk
from siaga.wiring import Wiring

from . import drilling
from .admission import admit
from .artifacts import Timeline, markdown_publisher, publish_run_end
from .deadline_watch import open_deadlines
from .execution import Attempt, Execution, RunCancelled, RunInfo
from .gates import Gatekeeper, RunWaiter, Suspend
from .prefect_logs import attach_run_logs
from .revisions import choose_revision
from .secret_blocks import prefect_secret
from .tasks import attempt_of, step_task, undo_task

__all__ = ["RunBody", "RunbookFailed"]


class RunbookFailed(Exception):
    """The run failed; the message says what failed, what was undone and what to do next."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


@dataclass
class RunBody:
    """One runbook's flow body, its steps' and undos' tasks built once (`compiler`)."""

    runbook: Runbook
    registry: ActionRegistry
    plans: Mapping[Phase, Plan]
    step_tasks: Mapping[str, Task[..., Any]]
    undo_tasks: Mapping[str, Task[..., Any]]
    timelines: dict[str, Timeline] = field(default_factory=dict)
    """run id -> its timeline, while it runs in this process."""
    revisions: dict[str, RunBody] = field(default_factory=dict)
    """Other revisions of the runbook that runs here were started with, built once, by digest."""
    settings: Settings | None = None
    """The settings of every run (tests); None: each run reads its own from its environment."""
    services: dict[str, Wiring] = field(default_factory=dict)
    """run id -> the run's services (its `Wiring`: store, audit trail, ledger), while it runs in this
    process: the steps' and undos' tasks, built once for every run, take theirs from here."""

    @classmethod
    def build(cls, runbook: Runbook, registry: ActionRegistry, settings: Settings | None = None) -> RunBody:
        """The body of `runbook`: its plans and its steps' and undos' tasks."""
        every_step = [*runbook.steps, *runbook.on_resolve]
        services: dict[str, Wiring] = {}
        return cls(
            runbook,
            registry,
            plans={phase: plan_runbook(runbook, phase) for phase in (RESPOND, RESOLVE)},
            step_tasks={step.id: step_task(runbook, step, registry, services) for step in every_step},
            undo_tasks={step.id: undo_task(runbook, step, registry, services) for step in every_step if step.undo},
            settings=settings,
            services=services,
        )

    @property
    def gated(self) -> dict[Phase, bool]:
        return {phase: any(s.approval for s in plan.steps) for phase, plan in self.plans.items()}

    async def run_step(
        self, step: Step, template_context: Mapping[str, Any], context: ActionContext, wait_for: list[Any],
        verdict: Verdict | None = None,
    ) -> Attempt:
        state = await self.step_tasks[step.id](template_context, context, verdict, return_state=True, wait_for=wait_for)
        attempt = await attempt_of(state)
        if context.run_id in self.timelines:
            await self.timelines[context.run_id].publish(final=False)
        return attempt

    async def run_undo(self, step: Step, template_context: Mapping[str, Any], context: ActionContext) -> Attempt:
        state = await self.undo_tasks[step.id](template_context, context, return_state=True)
        return await attempt_of(state)

    async def __call__(self, parameters: dict[str, Any]) -> Any:
        """Run the runbook, in the revision the run was started with, with the flow run's `parameters`."""
        wiring = Wiring(self.settings or Settings.from_environ(os.environ))  # the run's composition root
        attach_run_logs(wiring.home)
        run_id = str(flow_run.get_id() or "local")
        chosen = choose_revision(self, run_id, wiring)
        if isinstance(chosen, str):
            incident = parameters.get("incident")
            incident_id = str(incident["id"]) if isinstance(incident, Mapping) and incident.get("id") else None
            RunRecords(wiring.engine).end(run_id, "refused", chosen)
            await wiring.audit.arecord("run.refused", incident_id=incident_id, run_id=run_id, runbook=self.runbook.id,
                                       reason=chosen)
            return Failed(name="Refused", message=chosen)
        return await chosen.execute(parameters, run_id, wiring)

    async def execute(self, parameters: dict[str, Any], run_id: str, wiring: Wiring) -> Any:
        """Run this revision of the runbook as run `run_id`, its services from the run's `wiring`
        (kept in `services` meanwhile, for its steps' tasks)."""
        self.services[run_id] = wiring
        try:
            return await self._execute(parameters, run_id, wiring)
        finally:
            self.services.pop(run_id, None)

    async def _execute(self, parameters: dict[str, Any], run_id: str, wiring: Wiring) -> Any:
        runbook, registry = self.runbook, self.registry
        store = wiring.engine
        revision = revision_of(runbook)
        given = dict(parameters)
        request = _Request.of(runbook, parameters)
        mode, phase, incident = request.mode, request.phase, request.incident
        requested_by, inputs, incident_id = request.requested_by, request.inputs, request.incident_id
        runs, records = RunRecords(store), GateRecords(store, wiring.seal_key)
        admission = await admit(run_id, runbook.id, given, mode=str(mode), requester=requested_by,
                                incident_id=incident_id, gated=self.gated[phase], runs=runs, records=records,
                                audit=wiring.audit, revision=revision.digest)
        if not admission.runs:
            if admission.verdict == "cancelled":
                return Cancelled(message=admission.reason)  # type: ignore[return-value]
            return Failed(name="Refused", message=admission.reason)  # type: ignore[return-value]
        if admission.verdict == "start" and mode is Mode.DRILL and (
            skipped := await drilling.stand_down(runbook, run_id, store)
        ) is not None:
            runs.end(run_id, "ended", "stood down")
            return skipped  # type: ignore[return-value]  # never beside a live incident
        if admission.verdict == "start" and mode is Mode.DRILL:
            drilling.open_drill_window(runbook, run_id, store)  # its alerts page nobody
        first_start = _first_start(runs, run_id)  # a resumed run keeps its start
        roster = wiring.roster()
        run = self._run_info(request, run_id, first_start, wiring, roster)
        timeline = self.timelines[run.run_id] = Timeline(runbook.id, incident_id, run.run_id, wiring.audit)
        context = FlowRunContext.get()
        waiter = RunWaiter(
            run_id, records, runs, runbook=runbook, roster=roster, clock=lambda: datetime.now(UTC),
            can_suspend=bool(context and context.flow_run and context.flow_run.deployment_id),
            audit=wiring.audit, poll_seconds=wiring.settings.gate_poll_seconds,
            park_after=wiring.settings.gate_park_after,
        )
        gatekeeper = Gatekeeper(runbook, registry, roster, records, waiter, requester=requested_by,
                                incident_opened_at=_opened_at(incident))
        if admission.verdict == "start":
            await wiring.audit.arecord(
                "run.started", incident_id=incident_id, run_id=run.run_id, runbook=runbook.id,
                run_name=run.run_name, mode=str(mode), inputs=inputs, requested_by=requested_by, phase=phase,
                revision=revision.digest,
            )
            if phase == RESPOND:
                open_deadlines(runbook, roster, run_id=run.run_id, mode=str(mode), incident=incident,
                               started_at=datetime.now(UTC), store=DeadlineRecords(store))
        # a drill of the response rehearses the resolve steps after it, as the incident would
        phases = [RESPOND, RESOLVE] if phase == RESPOND and mode is Mode.DRILL and runbook.on_resolve else [phase]
        try:
            summaries = [
                await Execution(self.plans[p], registry, run, self.run_step, self.run_undo, gatekeeper, waiter).execute()
                for p in phases
            ]
        except Suspend as suspended:
            await wiring.audit.arecord("run.suspended", incident_id=incident_id, run_id=run.run_id,
                                       runbook=runbook.id, waiting_on=sorted(g.step_id for g in waiter.waiting.values()))
            raise Pause(state=suspended.state) from None
        except RunCancelled as cancelled:
            runs.end(run_id, "cancelled", str(cancelled))
            await wiring.audit.arecord("run.cancelled", incident_id=incident_id, run_id=run.run_id,
                                       runbook=runbook.id, reason=str(cancelled))
            return Cancelled(message=str(cancelled))  # type: ignore[return-value]
        finally:
            self.timelines.pop(run.run_id, None)
        runs.end(run_id, "ended")
        summary = summaries[0]
        summary.steps = [record for each in summaries for record in each.steps]
        return await self._finish(request, run, summary, timeline, first_start, wiring)

    def _run_info(self, request: _Request, run_id: str, first_start: datetime, wiring: Wiring, roster: Roster) -> RunInfo:
        """What every step of the run is given: who and what it runs for, where it publishes, its
        connections and secrets, and how it learns what was already done."""
        runbook = self.runbook
        return RunInfo(
            run_id=run_id,
            run_name=str(flow_run.get_name() or "local"),
            mode=request.mode,
            home=wiring.home,
            inputs=request.inputs,
            audit=wiring.audit,
            alert=request.alert,
            incident=request.incident,
            publish=markdown_publisher(runbook.id),
            started_at=first_start.isoformat(timespec="seconds"),
            connections=wiring.connections(),
            secret_source=prefect_secret,
            library=wiring.folder(),
            templates=revision_of(runbook).templates,
            was_done=functools.partial(_was_done, wiring.audit, chain_of(request.incident_id, run_id)),
            voices=StoreDesk(wiring.engine, runbook, wiring.folder(), roster) if runbook.voices else None,
        )

    async def _finish(self, request: _Request, run: RunInfo, summary: RunSummary, timeline: Timeline,
                      first_start: datetime, wiring: Wiring) -> Any:
        """Record how the run ended, score a drill, publish the run's report, and end in the state
        that says it: Completed, Rejected (people said no to part of it), or failed."""
        runbook = self.runbook
        outcome = "failed" if not summary.ok else "rejected" if summary.rejected else "ok"
        await wiring.audit.arecord(
            "run.finished", incident_id=request.incident_id, run_id=run.run_id, runbook=runbook.id,
            mode=str(request.mode), outcome=outcome, note=summary.headline(),
        )
        if request.mode is Mode.DRILL:
            await drilling.score(runbook, summary, first_start, wiring.engine)
        await publish_run_end(runbook, self.registry, run, summary, timeline, wiring, responding=request.phase == RESPOND)
        if not summary.ok:
            raise RunbookFailed(summary.to_text(), summary.as_dict())
        if summary.rejected:  # people said no to part of it: the rest ran; say what was not done
            return Completed(name="Rejected", message=summary.to_text(), data=summary.as_dict())  # type: ignore[return-value]
        return summary.as_dict()


@dataclass(frozen=True)
class _Request:
    """What a run was asked to do, read from its parameters: the mode, the phase, the alert and
    incident it answers, who asked, and the runbook's inputs."""

    mode: Mode
    phase: Phase
    alert: Any
    incident: dict[str, Any] | None
    requested_by: str | None
    inputs: dict[str, Any]

    @classmethod
    def of(cls, runbook: Runbook, parameters: dict[str, Any]) -> _Request:
        """Read from (and take out of) `parameters`; what is left are the runbook's inputs."""
        mode = Mode(parameters.pop("mode", Mode.LIVE))
        phase: Phase = parameters.pop("phase", None) or RESPOND
        alert = parameters.pop("alert", None)
        if alert is None and mode is Mode.DRILL:
            alert = runbook.drill.alert  # a drill rehearses with the runbook's sample alert
        incident = parameters.pop("incident", None)
        requested_by = parameters.pop("requested_by", None)
        return cls(mode, phase, alert, incident, requested_by, _coerce_inputs(runbook.inputs, parameters))

    @property
    def incident_id(self) -> str | None:
        return str(self.incident["id"]) if self.incident and self.incident.get("id") else None


def _opened_at(incident: Mapping[str, Any] | None) -> datetime | None:
    """When the incident opened: the start of its impact clock."""
    value = (incident or {}).get("opened_at")
    if not value:
        return None
    try:
        opened = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return as_utc(opened)


def _first_start(runs: RunRecords, run_id: str) -> datetime:
    pinned = runs.get(run_id)
    return pinned.started_at if pinned else datetime.now(UTC)


async def _was_done(audit: AuditTrail, chain: str, step_id: str) -> bool:
    """Whether the audit chain records `step_id` as done: completed, or recorded in a drill."""
    records = await asyncio.to_thread(audit.records, chain)
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
