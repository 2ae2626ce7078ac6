"""Runs waiting at their gates hold no process: `siaga up` wakes them, and ends runs that died.

Every `POLL` seconds this watcher reads the store for waiting runs that a decision or their clock
needs back; every `LOOK_EVERY` seconds it also reads the runs Siaga recorded as waiting or running
(`siaga.approvals.runs`) and their Prefect states, in one call per 200 runs:

- a waiting run still suspended is woken when a gate it waits on was decided, or its clock (the
  next escalation, the deadline) is due: Siaga notes the wake-up as its own, resumes the run and
  hands it to the fast lane (else the runner starts it at its next poll);
- a waiting run resumed by someone else (the Resume form, or anyone on Prefect's API) is handed
  to the fast lane too; when it starts it records how it came back, and only the ledger decides;
- a run cancelled in Prefect, however (the UI, the API, a runner stopping), ends cancelled for
  good: its open gates close as cancelled and it is never started again (`admission`);
- a run Siaga saw running whose Prefect run ended without it (killed with its process, crashed,
  marked crashed by the zombie automation) ends as that, its gates close, and the audit trail
  names the next human action: the side effects of unknown outcome to settle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Scheduled

from siaga.approvals.records import GateRecords
from siaga.approvals.runs import RunRecord, RunRecords
from siaga.logs import get_logger
from siaga.wiring import Wiring

from .artifacts import artifact_key

if TYPE_CHECKING:
    from .faststart import FastLane

log = get_logger("siaga.wakeups")

POLL = 0.1
"""How often the store is read for runs to wake (a vote to a step running again is mostly this)."""
LOOK_EVERY = 1.0
"""How often the Prefect states of the runs are read (cancellations, deaths, resumes by others)."""
BATCH = 200


class Wakeups:
    """The watcher of waiting and running runs (one per stack), in the store of `wiring`."""

    def __init__(self, wiring: Wiring, lane: FastLane | None = None) -> None:
        store = wiring.engine
        self.runs, self.records, self.ledger = RunRecords(store), GateRecords(store), wiring.ledger
        self.audit = wiring.audit
        self.lane = lane
        self._deployments: dict[UUID, Any] = {}

    async def once(self, look: bool = True) -> None:
        """Wake the waiting runs that must come back; with `look`, also compare every waiting or
        running run with its state in Prefect."""
        due = [r for r in self.runs.find("waiting") if r.wake_requested_at is None and self._wake_reason(r)]
        known = self.runs.find("waiting", "running") if look else due
        if not known:
            return
        async with get_client() as client:
            prefect = await _read(client, [r.run_id for r in known])
            for record in known:
                run = prefect.get(record.run_id)
                if run is None or run.state is None:
                    continue
                await self._look_at(client, record, run)

    async def _look_at(self, client: Any, record: RunRecord, run: FlowRun) -> None:
        state = run.state
        assert state is not None
        if state.type in (StateType.CANCELLED, StateType.CANCELLING):
            await self._end(client, record, "cancelled", f"the run was {state.name} in Prefect", state.message)
        elif state.is_final():
            await self._end(client, record, "ended", f"the run ended {state.name} without finishing its steps",
                            state.message)
        elif record.state == "waiting" and state.type is StateType.PAUSED:
            reason = self._wake_reason(record)
            if reason and record.wake_requested_at is None and not (self.lane and self.lane.holds(run.id)):
                # (a run the lane started is woken once its process has exited: the lane starts it again)
                await self._wake(client, record, run, reason)
        elif record.state == "waiting" and state.type is StateType.SCHEDULED:
            await self._dispatch(client, run)  # resumed by its form, or by someone on the API

    def _wake_reason(self, record: RunRecord) -> str | None:
        for gid in record.waiting_on or ():
            gate = self.records.get(gid)
            if gate is None or not gate.is_open:
                return f"gate {gid.rsplit(':', 1)[-1]} was decided"
        if record.wake_at is not None and record.wake_at <= datetime.now(UTC):
            return "its gates' clock is due"
        return None

    async def _wake(self, client: Any, record: RunRecord, run: FlowRun, reason: str) -> None:
        if not self.runs.update(record.run_id, only_if={"state": "waiting"}, wake_requested_at=datetime.now(UTC)):
            return
        if self.lane is not None and run.deployment_id is not None and self.lane.wake(run, await self._deployment(client, run)):
            log.info("run woken", run_id=record.run_id, reason=reason, on="the fast lane")
            return
        result = await client.set_flow_run_state(run.id, Scheduled(name="Resuming"))  # for the runner
        if result.state is None or result.state.type is not StateType.SCHEDULED:
            self.runs.update(record.run_id, wake_requested_at=None)  # looked at again next time
            log.warning("could not wake a waiting run", run_id=record.run_id, details=str(result.details))
            return
        log.info("run woken", run_id=record.run_id, reason=reason, on="the runner")

    async def _deployment(self, client: Any, run: FlowRun) -> Any:
        assert run.deployment_id is not None
        if run.deployment_id not in self._deployments:
            self._deployments[run.deployment_id] = await client.read_deployment(run.deployment_id)
        return self._deployments[run.deployment_id]

    async def _dispatch(self, client: Any, run: FlowRun) -> None:
        if self.lane is not None and run.deployment_id is not None:
            self.lane.dispatch(run, await self._deployment(client, run))

    async def _end(self, client: Any, record: RunRecord, state: str, reason: str, message: str | None) -> None:
        if not self.runs.end(record.run_id, state, reason):
            return
        closed = self.records.close_for_run(record.run_id, "cancelled", reason)
        unsettled = [e.key for e in self.ledger.entries(unsettled=True) if e.run_id == record.run_id]
        todo = [f"settle the side effect of unknown outcome: check the provider, then "
                f"`siaga ledger --resolve {key} --done` or `--retry`" for key in unsettled]
        if state == "ended":
            todo.append("read the run's logs for the step it stopped in, and finish or start the runbook again")
        await self.audit.arecord(
            "run.cancelled" if state == "cancelled" else "run.died", incident_id=record.incident_id,
            run_id=record.run_id, runbook=record.runbook_id, reason=reason, message=message,
            gates_closed=[g.step_id for g in closed], unsettled=unsettled, next=todo,
        )
        log.warning("run ended outside its flow", run_id=record.run_id, state=state, reason=reason, next=todo)
        await client.create_artifact(ArtifactCreate(
            key=artifact_key(f"{record.runbook_id}-summary"), type="markdown", flow_run_id=UUID(record.run_id),
            description=f"Runbook {record.runbook_id}: {reason}",
            data="\n".join([f"# {record.runbook_id}: {reason}", "", *(f"- {m}" for m in [message] if m),
                            *([f"- gates closed: {', '.join(g.step_id for g in closed)}"] if closed else []),
                            "", "## What a person must do next", "", *(f"- {item}" for item in todo)]) + "\n",
        ))


async def _read(client: Any, run_ids: Iterable[str]) -> dict[str, FlowRun]:
    ids = [UUID(i) for i in run_ids if _uuid(i)]
    found: dict[str, FlowRun] = {}
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk))
        found.update({str(r.id): r for r in runs})
    return found


def _uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


async def watch_runs(stop: asyncio.Event, wiring: Wiring, lane: FastLane | None = None, interval: float = POLL) -> None:
    """Wake waiting runs every `interval` seconds, and look for dead ones every `LOOK_EVERY`, until
    `stop` is set; the runs and gates are in the store of `wiring` (its entry point's)."""
    watcher = Wakeups(wiring, lane)
    loop = asyncio.get_running_loop()
    looked = float("-inf")
    while not stop.is_set():
        try:
            look = loop.time() - looked >= LOOK_EVERY
            await watcher.once(look)
            looked = loop.time() if look else looked
        except Exception as exc:  # noqa: BLE001 - the watcher outlives a bad moment of the API
            log.error("run watcher failed; trying again", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
