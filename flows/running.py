"""Start runs and follow them: in this process (`--local`) or on the stack of `siaga up`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterStartTime,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterTimestamp,
)
from prefect.client.schemas.objects import Deployment, FlowRun
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.events.worker import EventsWorker
from prefect.exceptions import ObjectNotFound, TerminationSignal
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine

from siaga.actions import ActionRegistry
from siaga.approvals.records import GateRecords
from siaga.approvals.revisions import Revisions
from siaga.catalog import find_runbook
from siaga.errors import StackUnavailable, Terminated
from siaga.incidents.runs import run_key
from siaga.runbook import Runbook
from siaga.runbook.revision import revision_of, revision_tag
from siaga.wiring import Wiring

from .artifacts import artifact_key
from .compiler import RunbookFailed, compile_runbook
from .deployments import DEPLOYMENT, run_queue
from .links import flow_run_url
from .server import Started, free_port, prefect_server

if TYPE_CHECKING:
    from .faststart import FastLane

Echo = Callable[[str], None] | None


def run_local(
    runbook: Runbook, registry: ActionRegistry, inputs: Mapping[str, Any], mode: str, echo: Echo = None, *,
    home: Path,
) -> dict[str, Any]:
    """Run `runbook` in this process; return its summary.

    On the Prefect server PREFECT_API_URL names (`siaga up`'s, when it runs); with none, on a
    temporary server of its own (its data in the data folder `home`), with its UI, for as long as
    the run lasts, so that the links
    printed meanwhile (gates, codes, Prefect's own) open the run. The summary's `url` is where the
    run can be seen afterwards; after a temporary server, `temporary_server` says where it was."""
    flow = compile_runbook(runbook, registry)

    async def go() -> dict[str, Any]:
        state = await flow(**inputs, mode=mode, return_state=True)
        run_id = str(state.state_details.flow_run_id)
        if state.is_completed():
            return {"run_id": run_id, "state": state.name, **await state.aresult()}
        error = await state.aresult(raise_on_failure=False)
        if isinstance(error, RunbookFailed):
            return {"run_id": run_id, **error.summary, "state": state.name, "message": str(error)}
        return {"run_id": run_id, "ok": False, "state": state.name, "message": state.message}

    try:
        with _server_for_local_runs(echo, home) as temporary:
            summary = asyncio.run(go())
    except TerminationSignal:  # SIGTERM during the run: Prefect's handler marked the run Crashed
        raise Terminated from None
    summary["url"] = flow_run_url(summary["run_id"])  # the temporary server has stopped: where to look now
    if temporary:
        summary["temporary_server"] = temporary.ui_url
    return summary


@contextlib.contextmanager
def _server_for_local_runs(echo: Echo, home: Path) -> Iterator[Started | None]:
    """A temporary Prefect server with its UI when no server is named, else None. (Left to itself,
    Prefect would start an ephemeral server without a UI on a random port.)"""
    if PREFECT_API_URL.value():
        yield None
        return
    with prefect_server("127.0.0.1", free_port(), home) as server:
        if echo:
            echo(f"No Prefect server is named and no `siaga up` answers: this run goes to a temporary "
                 f"Prefect server, UI at {server.ui_url}, until it ends (logs in {server.log})")
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield server
            finally:  # the run's last logs and events reach the server before it stops
                APILogWorker.drain_all(timeout=5)
                EventsWorker.drain_all(timeout=5)


def run_on_stack(
    runbook: Runbook, inputs: Mapping[str, Any], mode: str, wiring: Wiring, echo: Echo = print
) -> dict[str, Any]:
    """Start `runbook` on the running stack, follow its logs, and return its summary; the run's
    start is noted, and its gates read, in the store of `wiring`."""
    return asyncio.run(_run_on_stack(runbook, dict(inputs), mode, wiring, echo))


async def _run_on_stack(
    runbook: Runbook, inputs: dict[str, Any], mode: str, wiring: Wiring, echo: Echo
) -> dict[str, Any]:
    run_id = await start_run(runbook, {**inputs, "mode": mode}, wiring.engine)
    async with _stopped_by_sigterm():
        if not echo:
            return await follow_run(run_id, runbook.id, echo)
        echo(f"Started {mode} run of {runbook.id}: {flow_run_url(run_id)}")
        from .approving import announce_gates

        gates = asyncio.create_task(announce_gates(run_id, echo, records=GateRecords(wiring.engine), home=wiring.home))
        try:
            return await follow_run(run_id, runbook.id, echo)
        finally:
            gates.cancel()


@contextlib.asynccontextmanager
async def _stopped_by_sigterm() -> AsyncIterator[None]:
    """SIGTERM stops the block and raises Terminated, whichever task was running when it came (a
    signal handler's exception raised inside another task would be kept in that task, unseen)."""
    loop, block = asyncio.get_running_loop(), asyncio.current_task()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        if block is not None:
            block.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (NotImplementedError, RuntimeError):  # no signals here (not the main thread, Windows)
        yield
        return
    try:
        yield
    except asyncio.CancelledError:
        if stopped:
            raise Terminated from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def start_run(runbook: Runbook, parameters: dict[str, Any], store: Engine) -> UUID:
    """Create a flow run of the runbook's deployment, to execute this revision of it (kept in
    `store`); raise StackUnavailable if there is none."""
    api = PREFECT_API_URL.value()
    if not api:
        raise StackUnavailable("no stack is running: start one with `siaga up`, or run with --local")
    async with get_client() as client:
        healthy = await client.api_healthcheck()
        if healthy is not None:
            raise StackUnavailable(f"the Prefect server at {api} does not answer ({healthy}): is `siaga up` running?")
        run, _ = await create_run(
            client, runbook, parameters, store=store, tags=[parameters.get("mode", "live")], key=f"{runbook.id}:{uuid4()}",
            not_deployed=f"runbook {runbook.id} is not deployed on {api}: start `siaga up` with the folder "
                         "that holds it, or run with --local",
        )
        return run.id


class Deployments:
    """The runbooks' deployments as a run starter last read them, each kept `ttl` seconds: a
    receiver creating many runs reads a runbook's deployment once in a while, not once a run. A
    redeployed runbook is read again after `ttl`, or at once when creating a run on the deployment
    kept fails. What is kept says only where to create the run (the run still executes the
    revision Siaga noted, whatever Prefect's deployment says)."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._read: dict[str, tuple[float, Deployment]] = {}

    async def of(self, client: PrefectClient, runbook_id: str) -> Deployment:
        """The deployment of `runbook_id` (ObjectNotFound: there is none)."""
        now = time.monotonic()
        kept = self._read.get(runbook_id)
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1]
        deployment = await client.read_deployment_by_name(f"{runbook_id}/{DEPLOYMENT}")
        self._read[runbook_id] = (now, deployment)
        return deployment

    def forget(self, runbook_id: str) -> None:
        self._read.pop(runbook_id, None)


async def create_run(
    client: PrefectClient, runbook: Runbook, parameters: dict[str, Any], *, store: Engine, tags: list[str], key: str,
    not_deployed: str, name: str | None = None, deployments: Deployments | None = None,
) -> tuple[FlowRun, Deployment]:
    """Siaga's one way to create a flow run: of the runbook's deployment, on the queue of its mode
    (a drill only on drill workers), to execute `runbook`'s revision. The revision is kept in
    Siaga's store (`store`) and noted as the start keyed `key` before Prefect creates the run with that
    idempotency key (a retry with the same key finds the same start and the same run); the run
    executes the revision noted here, whatever Prefect's API says of it later (`run_body`). The
    run's tags name the revision, for people. Raise StackUnavailable (`not_deployed`) if the
    runbook has no deployment. With `deployments`, the deployment is the one they keep."""
    try:
        if deployments is not None:
            deployment = await deployments.of(client, runbook.id)
        else:
            deployment = await client.read_deployment_by_name(f"{runbook.id}/{DEPLOYMENT}")
    except ObjectNotFound:
        raise StackUnavailable(not_deployed) from None
    revisions = Revisions(store)
    start = await asyncio.to_thread(revisions.note_start, key, revision_of(runbook))
    try:
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, name=name, tags=[*tags, revision_tag(start.revision)],
            idempotency_key=key, work_queue_name=run_queue(deployment.work_pool_name, parameters.get("mode", "live")),
        )
    except Exception:  # the deployment kept may be gone or moved (redeployed): a retry reads it again
        if deployments is not None:
            deployments.forget(runbook.id)
        raise
    await asyncio.to_thread(revisions.take, key, str(run.id))
    return run, deployment


async def follow_run(
    run_id: UUID, runbook_id: str, echo: Echo, poll: float = 0.5, *, logs: bool = True
) -> dict[str, Any]:
    """Wait for the run to end, printing its logs as they come (unless `logs` is false, as when
    the runner prints them already); return its summary."""
    seen = None
    async with get_client() as client:
        while True:
            run = await client.read_flow_run(run_id)
            new_logs = [] if not logs else await client.read_logs(
                LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[run_id]),
                    timestamp=LogFilterTimestamp(after_=seen) if seen else None,
                ),
                sort=LogSort.TIMESTAMP_ASC,
            )
            for log in new_logs:
                if seen is None or log.timestamp > seen:
                    seen = log.timestamp
                    if echo:
                        echo(f"  {log.timestamp:%H:%M:%S} {log.message}")
            if run.state and run.state.is_final():
                break
            await asyncio.sleep(poll)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                key=ArtifactFilterKey(any_=[artifact_key(f"{runbook_id}-steps")]),
            )
        )
    state = run.state
    steps = artifacts[0].data if artifacts else []
    if isinstance(steps, str):  # a table artifact keeps its rows as JSON text
        steps = json.loads(steps)
    summary = {
        "runbook": runbook_id,
        "run_id": str(run_id),
        "url": flow_run_url(run_id),
        "state": state.name if state else "unknown",
        "ok": bool(state and state.is_completed()),
        "message": state.message if state else None,
        "steps": steps if isinstance(steps, list) else [],
    }
    if echo:
        echo(f"Run {summary['state']}: {summary['url']}")
        if summary["message"] and (not summary["ok"] or summary["state"] == "Skipped"):
            echo(summary["message"])
    return summary


def last_runs(runbook_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each runbook's most recent run on the stack, or nothing when no stack answers."""
    if not runbook_ids or not PREFECT_API_URL.value():
        return {}

    async def read() -> dict[str, dict[str, Any]]:
        async with get_client() as client:
            if await client.api_healthcheck() is not None:
                return {}
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=runbook_ids)),
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
                sort=FlowRunSort.START_TIME_DESC,
                limit=200,
            )
            flows = {f.id: f.name for f in await client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=runbook_ids)))}
        found: dict[str, dict[str, Any]] = {}
        for run in runs:
            name = flows.get(run.flow_id)
            if name and name not in found and run.state:
                found[name] = {
                    "state": run.state.name,
                    "mode": run.parameters.get("mode", "live"),
                    "when": f"{run.start_time:%Y-%m-%d %H:%M}" if run.start_time else "",
                    "run_id": str(run.id),
                }
        return found

    return asyncio.run(read())


__all__ = ["flow_run_url", "follow_run", "last_runs", "run_local", "run_on_stack", "start_run"]


ALERT_REQUESTER = "alert"
"""Who asks for a run the receiver starts: no person (so nobody is kept from approving it)."""


def incident_parameters(incident: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of an incident's run: the inputs its trigger rendered, ``alert`` (the
    template context of the alert that opened it) and ``incident``; for its resolve run (the
    incident's ``phase`` is ``resolve``), ``phase`` and the incident's ``resolved_at`` too."""
    opened_at = incident["opened_at"]
    resolving = incident.get("phase") == "resolve"
    resolved_at = incident.get("resolved_at")
    return {
        **incident["inputs"],
        "mode": "live",
        "requested_by": ALERT_REQUESTER,
        **({"phase": "resolve"} if resolving else {}),
        "alert": incident["alert"],
        "incident": {
            "id": incident["id"],
            "runbook": incident["runbook_id"],
            "group_key": incident["group_key"],
            "opened_at": opened_at.isoformat() if hasattr(opened_at, "isoformat") else opened_at,
            **({"resolved_at": resolved_at.isoformat() if hasattr(resolved_at, "isoformat") else resolved_at}
               if resolving else {}),
        },
    }


async def start_incident_run(
    incident: Mapping[str, Any], lane: FastLane | None = None, *, wiring: Wiring,
    runbooks: Mapping[str, Runbook] | None = None, folder: Path | None = None, deployments: Deployments | None = None,
) -> str:
    """Start the incident's run of its runbook's deployment, once: the incident id is Prefect's
    idempotency key, so a retry returns the run the first call created. Return the run id.
    An incident whose ``phase`` is ``resolve`` (`siaga.incidents.runs.pending_resolve_runs`) gets its
    resolve run instead: the runbook's `on_resolve` steps, keyed ``<incident id>:resolved``.

    The run executes the revision of the runbook in `runbooks` (the receiver's, that routed the
    alert); without them, the one on disk now, in `folder` (default: the library of `wiring`, whose
    store keeps the revision and whose actions check it). A receiver starting many runs gives the
    `deployments` it keeps, so that a run's start reads none.

    Prefect keeps an idempotency key unique per flow, not per deployment; incident ids are random,
    so two deployments of one runbook never share a key. With a `lane` (`siaga up`), the new run
    starts at once in a warm process; without one, or if the lane cannot take it, the runner
    serving the deployment starts it at its next poll."""
    runbook_id = incident["runbook_id"]
    if not PREFECT_API_URL.value():
        raise StackUnavailable("PREFECT_API_URL is not set: no Prefect server to start runs on")
    runbook = (runbooks or {}).get(runbook_id) or await asyncio.to_thread(
        _on_disk, runbook_id, folder or wiring.folder(), wiring)
    open_client = lane.client if lane is not None else None
    async with contextlib.nullcontext(open_client) if open_client else get_client() as client:
        resolving = incident.get("phase") == "resolve"
        run, deployment = await create_run(
            client, runbook, incident_parameters(incident), store=wiring.engine,
            name=f"{runbook_id}-{incident['id']}" + ("-resolve" if resolving else ""),
            tags=["live", "incident", incident["id"], *(["resolve"] if resolving else [])],
            key=run_key(incident["id"], incident.get("phase", "respond")),
            not_deployed=f"runbook {runbook_id} is not deployed on {PREFECT_API_URL.value()}", deployments=deployments,
        )
    if lane is not None:
        lane.dispatch(run, deployment)
    return str(run.id)


def _on_disk(runbook_id: str, folder: Path, wiring: Wiring) -> Runbook:
    return find_runbook(runbook_id, folder, wiring.registry, wiring.settings)[0]
