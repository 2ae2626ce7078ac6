"""`siaga up`: the embedded stack on one machine.

A Prefect server on SQLite (UI and API on 127.0.0.1:4200, data under the Siaga home), the
zombie-run automation that marks runs whose process died as Crashed, a runner serving one
deployment per runbook (with its drill schedule), and the alert receiver (127.0.0.1:8787) in the
same asyncio loop as the runner. An already running server named by
``PREFECT_API_URL`` is reused instead of starting one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import uvicorn
from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, temporary_settings

from siaga.approvals.records import GateRecords
from siaga.catalog import Catalog
from siaga.errors import StackUnavailable
from siaga.home import prefect_answers, stack_file
from siaga.runbook import Runbook
from siaga.settings import HEARTBEAT_SECONDS, Settings
from siaga.wiring import Wiring

from .approving import announce_gates
from .deadline_watch import watch_deadlines
from .deployments import deployment
from .faststart import FastLane
from .running import Deployments, flow_run_url, follow_run, start_incident_run, start_run
from .server import prefect_server
from .sitreps import watch_sitreps
from .wakeups import watch_runs

ZOMBIE_AUTOMATION = "siaga: crash flow runs whose process died"
"""How often a run's process sends Prefect a heartbeat (Prefect sends none more often than 30 s)."""
ZOMBIE_WINDOW = timedelta(seconds=60)
"""How long a run may go without a heartbeat before the zombie-run automation marks it Crashed;
``$SIAGA_ZOMBIE_WINDOW_SECONDS`` sets another (`zombie_window`)."""

Echo = Callable[[str], None]


@dataclass(frozen=True)
class StackOptions:
    host: str = "127.0.0.1"
    port: int = 4200
    runbooks: Path = Path("runbooks")
    drill: str | None = None
    exit_after_drill: bool = False
    receiver: bool = True
    receiver_host: str = "127.0.0.1"
    receiver_port: int = 8787
    max_runs: int = 20
    """How many flow runs the runner runs at once (Prefect's own default is 5)."""


def served_catalog(folder: Path, wiring: Wiring, echo: Echo) -> Catalog | None:
    """The runbooks of `folder` to serve, each invalid one named as skipped; None (said) if none is valid."""
    catalog = wiring.catalog(folder.resolve())
    for problem in catalog.problems:
        echo(f"skipped: {problem}")
    if not catalog.runbooks:
        echo(f"no valid runbooks in {folder}: nothing to serve")
        return None
    return catalog


def run_stack(options: StackOptions, wiring: Wiring, echo: Echo = print) -> int:
    """Run the stack until Ctrl-C (or until the drill ends with `exit_after_drill`), its services
    made from `wiring` (the command line's)."""
    catalog = served_catalog(options.runbooks, wiring, echo)
    if catalog is None:
        return 2
    if options.drill and options.drill not in catalog.runbooks:
        echo(f"no runbook `{options.drill}` in {options.runbooks}")
        return 2
    zombie_window(wiring.settings)  # a bad $SIAGA_ZOMBIE_WINDOW_SECONDS is said before anything starts
    home = wiring.home
    # the runs this stack serves read their settings from its environment (`siaga.settings`)
    os.environ["SIAGA_RUNBOOKS"] = str(options.runbooks.resolve())
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))
    with _server(options, home, wiring.settings.prefect_api_url, echo) as (api_url, server_pid), \
            temporary_settings({PREFECT_API_URL: api_url}):
        os.environ["PREFECT_API_URL"] = api_url
        noted = {"api_url": api_url, "pid": os.getpid(), "server_pid": server_pid, "runbooks": str(options.runbooks.resolve())}
        stack_file(home).write_text(json.dumps(noted))
        try:
            return asyncio.run(_serve(catalog, options, wiring, api_url, echo))
        finally:
            stack_file(home).unlink(missing_ok=True)


@contextlib.contextmanager
def _server(options: StackOptions, home: Path, named: str | None, echo: Echo) -> Iterator[tuple[str, int | None]]:
    """The API URL of a running Prefect server, the one `named` (PREFECT_API_URL) or a new one,
    and the new server's process id."""
    if named:
        if not prefect_answers(named):
            raise StackUnavailable(f"PREFECT_API_URL is {named}, but no Prefect server answers there")
        echo(f"Using the Prefect server at {named}")
        yield named, None
        return
    api_url = f"http://{options.host}:{options.port}/api"
    if prefect_answers(api_url):
        echo(f"Using the Prefect server already running at {api_url}")
        yield api_url, None
        return
    with prefect_server(options.host, options.port, home) as server:
        echo(f"Prefect server up (SQLite under {server.prefect_home}), logs in {server.log}")
        yield server.api_url, server.pid


async def _serve(catalog: Catalog, options: StackOptions, wiring: Wiring, api_url: str, echo: Echo) -> int:
    async with contextlib.AsyncExitStack() as stack:
        return await _serve_in(stack, catalog, options, wiring, api_url, echo)


async def _serve_in(
    stack: contextlib.AsyncExitStack, catalog: Catalog, options: StackOptions, wiring: Wiring, api_url: str, echo: Echo
) -> int:
    await ensure_zombie_automation(list(catalog.runbooks), zombie_window(wiring.settings))
    runner = Runner(
        name="siaga", query_seconds=1, heartbeat_seconds=HEARTBEAT_SECONDS, pause_on_shutdown=False,
        limit=options.max_runs,
    )
    for runbook in catalog.runbooks.values():
        await runner.aadd_deployment(await deployment(runbook))
    # the fast lane starts alert runs and wakes runs waiting at gates without the runner's poll
    lane = await stack.enter_async_context(FastLane(heartbeat_seconds=HEARTBEAT_SECONDS))
    receiver, receiver_task = (
        await start_receiver(catalog, wiring, options.receiver_host, options.receiver_port, echo, lane)
        if options.receiver else (None, None)
    )
    ui = api_url.removesuffix("/api")
    runs = f"{runner.limit} run" + ("" if runner.limit == 1 else "s")
    echo(f"Siaga is up: {len(catalog.runbooks)} runbooks served, at most {runs} at once (--max-runs). "
         f"Prefect UI: {ui}")
    echo("Press Ctrl-C to stop.")
    stop = asyncio.Event()
    runner_task = asyncio.create_task(runner.start())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    drill_task = asyncio.create_task(_drill(catalog, options, wiring, echo)) if options.drill else None
    watcher = asyncio.create_task(watch_runs(stop, wiring, lane))
    deadline_watcher = asyncio.create_task(
        watch_deadlines(stop, folder=catalog.folder, runbooks=catalog.runbooks, wiring=wiring))
    sitrep_watcher = asyncio.create_task(watch_sitreps(stop, catalog.runbooks, folder=catalog.folder, wiring=wiring))
    waiters = {asyncio.create_task(stop.wait()), runner_task}
    if drill_task and options.exit_after_drill:
        waiters.add(drill_task)
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if drill_task and drill_task in done:
        code = drill_task.result()
    echo("Stopping Siaga...")
    if receiver and receiver_task:
        receiver.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(receiver_task, timeout=10)
    await runner.astop()
    for task in (runner_task, drill_task, watcher, deadline_watcher, sitrep_watcher):
        if task and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SystemExit, Exception):
                await task
    return code


class _EmbeddedServer(uvicorn.Server):
    """uvicorn in the stack's loop: the stack handles Ctrl-C, so uvicorn leaves the signals alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def prefect_session() -> contextlib.AbstractAsyncContextManager[Any]:
    """A Prefect client shared by every `get_client()` inside it (`start_incident_run`'s)."""
    from prefect.context import AsyncClientContext

    if not PREFECT_API_URL.value():  # no server: `start_incident_run` says so (no ephemeral one here)
        return contextlib.nullcontext()
    return AsyncClientContext.get_or_create()


def standalone_receiver(runbooks: Mapping[str, Runbook], wiring: Wiring) -> Any:
    """The receiver app (ASGI) of `siaga receiver`: its runs start on the deployments' runner or work pool, a
    pass of starts sharing one Prefect client, each run of the revision that routed its incident."""
    from siaga.alerts.receiver import create_app

    start_run = functools.partial(start_incident_run, runbooks=runbooks, wiring=wiring, deployments=Deployments())
    return create_app(runbooks, wiring.settings, wiring.engine, start_run, session=prefect_session)


async def start_receiver(
    catalog: Catalog, wiring: Wiring, host: str, port: int, echo: Echo, lane: FastLane | None = None, *,
    start_run: Callable[[Any], Awaitable[str]] | None = None, start_concurrency: int = 1,
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve the alert receiver on `host`:`port` in this loop; raise StackUnavailable if the port
    is taken. The runs it starts go straight to the fast `lane` (`siaga up`, through the lane's
    client); without one, to the deployment's runner or work pool (`siaga node`, which gives its
    own `start_run` and creates `start_concurrency` runs at once), each pass of starts sharing one
    Prefect client. Stop it with ``server.should_exit = True``."""
    from siaga.alerts.receiver import ReceiverConfig, create_app

    config = ReceiverConfig.from_settings(wiring.settings)
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise StackUnavailable(f"the alert receiver cannot listen on {host}:{port}: {exc} (choose --receiver-port)") from None
    app = create_app(catalog.runbooks, wiring.settings, wiring.engine,
                     start_run or functools.partial(start_incident_run, lane=lane, runbooks=catalog.runbooks,
                                                    wiring=wiring, folder=catalog.folder, deployments=Deployments()),
                     notify=echo, session=None if lane is not None else prefect_session)
    app.state.worker.start_concurrency = start_concurrency
    server = _EmbeddedServer(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="siaga-receiver")
    while not server.started:
        if task.done():
            task.result()
            raise StackUnavailable("the alert receiver stopped while starting")
        await asyncio.sleep(0.05)
    echo(f"Alert receiver: http://{host}:{port} (Alertmanager webhook: http://{host}:{port}/hooks/alertmanager)")
    for warning in config.warnings():
        echo(f"warning: {warning}")
    return server, task


async def _drill(catalog: Catalog, options: StackOptions, wiring: Wiring, echo: Echo) -> int:
    assert options.drill
    run_id = await start_run(catalog.runbooks[options.drill], {"mode": "drill"}, wiring.engine)
    echo(f"Drill of {options.drill} started: {flow_run_url(run_id)}")
    gates = asyncio.create_task(announce_gates(run_id, echo, records=GateRecords(wiring.engine, wiring.seal_key),
                                               home=wiring.home))
    try:
        summary = await follow_run(run_id, options.drill, echo, logs=False)
    finally:
        gates.cancel()
    for step in summary["steps"]:
        detail = f": {step['error']}" if step.get("error") else ""
        echo(f"  {step['outcome']:>17}  {step['step']} ({step['action']}){detail}")
    return 0 if summary["ok"] else 1


def zombie_window(settings: Settings) -> timedelta:
    """How long a run may go without a heartbeat: `Settings.zombie_window_seconds`
    (``$SIAGA_ZOMBIE_WINDOW_SECONDS``, checked there to be longer than the 30 s between a live run's
    heartbeats, or every healthy run would be crashed), or 60 s."""
    return timedelta(seconds=settings.zombie_window_seconds)


async def ensure_zombie_automation(flow_names: list[str], window: timedelta = ZOMBIE_WINDOW) -> UUID:
    """Install Prefect's zombie-run automation for Siaga's flows (a run whose heartbeats stop for
    `window`, `zombie_window(settings)` from `siaga up` and `siaga node`, 60 s unless given, is
    marked Crashed; Paused and Suspended runs are expected
    to go quiet); return its id. A `window` given here is not checked against the heartbeat
    interval: it is for heartbeats sent by hand (Prefect's own floor for it is 10 s).

    An automation that is already as wanted is left alone. Prefect keeps each run's heartbeat
    window under the trigger's id, and its server draws a new trigger id at every create and
    update (it resets ids a client sends): updating at every `siaga up` forgot the windows of the
    runs that went quiet before the restart, so a run killed together with the stack stayed
    Running forever. Now only a change of the runbooks served (or of the window) changes the trigger."""
    automation = _zombie_automation(flow_names, window)
    async with get_client() as client:
        existing = await client.read_automations_by_name(ZOMBIE_AUTOMATION)  # newest first
        if not existing:
            return await client.create_automation(automation)
        keep, *extra = existing
        for other in extra:
            await client.delete_automation(other.id)
        if AutomationCore.model_validate(keep.model_dump()) != automation:
            await client.update_automation(keep.id, automation)
        return keep.id


def _zombie_automation(flow_names: list[str], window: timedelta) -> AutomationCore:
    """The zombie-run automation for `flow_names` (as Prefect's client models it: no trigger id)."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Marks Siaga flow runs Crashed when their process stops sending heartbeats.",
        enabled=True,
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": sorted(flow_names)}
            ),
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.Paused",
                "prefect.flow-run.Suspended",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=window,
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message="Flow run marked as crashed: its process stopped sending heartbeats.",
        )],
    )
