"""Start a flow run in a warm process: the fast path from an accepted alert to the first step.

Prefect's runner starts every flow run in a fresh interpreter, which imports Prefect again
(about 2 s of a 2.7 s start). Here a standard-library *forkserver* imports Prefect and Siaga once;
each flow run is a fresh process forked from it that runs Prefect's own engine entry for the run
id, exactly what ``python -m prefect.engine`` does. States, logs, task runs, heartbeats and the UI
are therefore Prefect's own, and each run is still its own process: a run that crashes or is
killed takes nothing else down.

The runs are driven by Prefect's own lifecycle classes (`FlowRunExecutorContext`, the one-shot
executor Prefect's workers use): the fast lane proposes Scheduled -> Pending like a runner does,
then hands the run to a `FlowRunExecutor` with a forkserver starter. Its cancelling observer
kills a run cancelled from the UI, and a run whose process exits non-zero is reported Crashed.

The receiver creates the run Scheduled (so the runner would pick it up within a second if this
lane could not) and hands it here at once; so does the run watcher (`wakeups`) when it wakes a run
that waited at its gates. Only one executor can move a run from Scheduled to Pending: when the
runner's poll and this lane race for the same run, the server aborts the loser, who steps aside
quietly. A run created any other way (UI, CLI, drill schedules) is left to the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
from collections.abc import Mapping
from typing import Any, Self
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.context import SettingsContext, get_settings_context
from prefect.settings import Settings, get_current_settings

log = logging.getLogger("siaga.faststart")

PRELOAD = [
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect._internal.metrics",
    "prefect.concurrency.services",
    "prefect.utilities.visualization",
    "pydantic.v1",
    "sqlalchemy.dialects.sqlite",
    "encodings.idna",
    "sqlite3",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "rich._emoji_codes",
    "siaga.store.migrations",
    "siaga.report.gather",
    "siaga.report.incident",
    "siaga.flows.faststart",
    "siaga.integrations",
    "siaga.flows.warm_library",
]
"""What the forkserver imports once, so that no flow run imports it again: Prefect's engines and
what they import lazily, the event loop's backend, the store's driver, Siaga's flows, integrations
and the report a run publishes as it ends. A name missing in some version is skipped."""

try:  # what `python -m prefect.engine` and Prefect's runner use (3.8); a Prefect that moved any
    # of it leaves alert runs to the runner's poll rather than crash them
    from prefect._internal.metrics import RunMetrics
    from prefect.engine import _drive_run_flow_result, configure_from_env, handle_engine_signals
    from prefect.flow_engine import (
        _load_flow_from_runtime_entrypoint,
        flow_run_logger,
        load_flow,
        run_flow,
    )
    from prefect.runner._flow_run_executor import FlowRunExecutorContext
    from prefect.runner._process_manager import ProcessHandle
except ImportError:  # pragma: no cover
    FlowRunExecutorContext = None  # type: ignore[assignment,misc]


def warm_context(preload: list[str] | None = None) -> tuple[multiprocessing.context.ForkServerContext, dict[str, str]]:
    """A forkserver context whose server has imported `preload` (Prefect and Siaga) and is
    started now, not at the first alert; and the Prefect settings it started with.

    The server starts with this process's Prefect settings in its environment, so that a run
    forked from it has the right settings without reading them again (50-150 ms)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preload or PRELOAD)
    settings = _settings_environment()
    saved = dict(os.environ)
    os.environ.update(settings)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return context, settings


def _settings_environment() -> dict[str, str]:
    variables = get_current_settings().to_environment_variables(exclude_unset=True)
    return {key: str(value) for key, value in variables.items() if value is not None}


def wait_started(context: multiprocessing.context.ForkServerContext) -> None:
    """Wait until the forkserver has imported its preload (a first process runs)."""
    probe = context.Process(target=_nothing, name="siaga-warmup")
    probe.start()
    probe.join()


def _nothing() -> None:
    """The warm-up process: proves the forkserver is up."""


def run_in_warm_process(flow_run: FlowRun, entrypoint: str | None, env: Mapping[str, str]) -> None:
    """The child: Prefect's engine entry for one flow run, as ``python -m prefect.engine`` runs it.

    Like Prefect's runner for a flow it holds (`run_flow_in_subprocess`), the run comes from the
    parent rather than from the API, and like the engine with ``PREFECT__FLOW_ENTRYPOINT``, the
    flow is imported from the deployment's entry point (already imported by the forkserver).
    The forkserver's environment is that of when it started, so the run's own (its id, the
    control channel) is applied here, and Prefect's settings are read afresh only if the run's
    differ from the forkserver's."""
    os.environ.update(env)

    settings: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if any(key.startswith("PREFECT_") and not key.startswith("PREFECT__") for key in env):
        settings = SettingsContext(profile=get_settings_context().profile, settings=Settings())
    with settings:
        configure_from_env()
        with handle_engine_signals(flow_run.id):
            run_logger = flow_run_logger(flow_run=flow_run)
            try:
                flow = _load_flow_from_runtime_entrypoint(entrypoint) if entrypoint else load_flow(flow_run)
            except Exception:
                run_logger.exception("Unexpected exception encountered when trying to load flow")
                raise
            with RunMetrics(flow_run, flow):
                _drive_run_flow_result(flow, run_flow(flow, flow_run=flow_run, error_logger=run_logger))


class WarmStarter:
    """A Prefect `ProcessStarter` that forks the run's process from the warm forkserver."""

    def __init__(
        self,
        context: multiprocessing.context.ForkServerContext,
        *,
        baseline: Mapping[str, str],
        entrypoint: str | None,
        deployment_name: str | None,
        heartbeat_seconds: int | None,
        control_channel: Any = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._context = context
        self._extra_env = dict(extra_env or {})
        self._baseline = baseline
        self._entrypoint = entrypoint
        self._deployment_name = deployment_name
        self._heartbeat_seconds = heartbeat_seconds
        self._control_channel = control_channel

    def environment(self, flow_run: FlowRun) -> dict[str, str]:
        """The run's environment, as Prefect's runner gives a run it starts: its id, the
        deployment, the heartbeat, the Prefect settings that changed since the forkserver
        started (usually none), and `extra_env` (a work pool job's variables)."""
        settings = _settings_environment()
        if self._heartbeat_seconds is not None:
            settings["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(int(self._heartbeat_seconds))
        env = {key: value for key, value in settings.items() if self._baseline.get(key) != value}
        env.update(self._extra_env)
        env["PREFECT__FLOW_RUN_ID"] = str(flow_run.id)
        env["PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS"] = "false"
        if self._deployment_name:
            env["PREFECT__DEPLOYMENT_NAME"] = self._deployment_name
        return env

    async def start(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        env = self.environment(flow_run)
        registered = False
        if self._control_channel is not None:
            try:
                port, token = self._control_channel.register(flow_run.id)
                env["PREFECT__CONTROL_PORT"], env["PREFECT__CONTROL_TOKEN"] = str(port), token
                registered = True
            except RuntimeError:  # no loopback listener: cancellation falls back to a plain kill
                pass
        handed_off = False
        try:
            process = self._context.Process(
                target=run_in_warm_process, args=(flow_run, self._entrypoint, env), name=f"siaga-run-{flow_run.id}"
            )
            process.start()
            task_status.started(ProcessHandle(process))
            handed_off = True
            await anyio.to_thread.run_sync(process.join)
        except BaseException:
            if registered and not handed_off:
                self._control_channel.unregister(flow_run.id)
            raise


class FastLane:
    """Runs handed over by the receiver, each in a process forked from the warm forkserver.

    Use as an async context manager in the stack's loop; `dispatch` returns at once."""

    def __init__(self, *, heartbeat_seconds: int | None = None, preload: list[str] | None = None) -> None:
        self._heartbeat_seconds = heartbeat_seconds
        self._preload = preload
        self._tasks: dict[UUID, asyncio.Task[None]] = {}
        self._executors: Any = None
        self._context: multiprocessing.context.ForkServerContext | None = None
        self._baseline: dict[str, str] = {}
        self._stack = contextlib.AsyncExitStack()

    @property
    def available(self) -> bool:
        return self._executors is not None

    @property
    def client(self) -> PrefectClient | None:
        """The lane's Prefect client (open while the lane is), to create runs without opening one."""
        return self._executors.client if self._executors is not None else None

    async def __aenter__(self) -> Self:
        if FlowRunExecutorContext is None:
            log.warning("this Prefect lacks what the fast lane uses: alert runs wait for the runner's poll")
            return self
        try:
            self._context, self._baseline = warm_context(self._preload)
            await asyncio.to_thread(wait_started, self._context)
        except (ValueError, OSError, EOFError) as exc:  # no forkserver here (Windows), or it died
            log.warning("no warm forkserver (%s): alert runs wait for the runner's poll", exc)
            return self
        self._executors = await self._stack.enter_async_context(FlowRunExecutorContext())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the runs still going, as Prefect's runner does when it stops (they end Crashed),
        then Prefect's executor context."""
        if self._executors is not None:
            processes = self._executors.process_manager
            for flow_run_id in list(self._tasks):
                if processes.get(flow_run_id) is None:
                    continue  # not started (yet, or another executor claimed it): nothing to stop
                with contextlib.suppress(Exception):
                    await processes.kill(flow_run_id, grace_seconds=10)
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=30)
        for task in list(self._tasks.values()):
            task.cancel()
        self._executors = None
        await self._stack.aclose()

    def holds(self, flow_run_id: UUID) -> bool:
        """Whether a process of `flow_run_id` started here is still running (a run that just
        suspended exits within a second or two)."""
        return flow_run_id in self._tasks

    def dispatch(self, flow_run: FlowRun, deployment: DeploymentResponse) -> bool:
        """Start `flow_run` of `deployment` now if it is still Scheduled; False when it is left to
        the runner."""
        if flow_run.state is None or not flow_run.state.is_scheduled():
            return False
        return self._start(flow_run, deployment, wake=False)

    def wake(self, flow_run: FlowRun, deployment: DeploymentResponse) -> bool:
        """Resume `flow_run`, suspended at its gates, and start it here at once: Scheduled, then
        claimed (Pending) straight away, so that the runner's poll does not take it first and start
        it in a cold interpreter. False when the lane cannot (the caller resumes it for the runner)."""
        return self._start(flow_run, deployment, wake=True)

    def _start(self, flow_run: FlowRun, deployment: DeploymentResponse, *, wake: bool) -> bool:
        if not self.available or flow_run.id in self._tasks:
            return False
        task = asyncio.create_task(self._execute(flow_run, deployment, wake), name=f"siaga-fast-{flow_run.id}")
        self._tasks[flow_run.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(flow_run.id, None))
        return True

    async def _execute(self, flow_run: FlowRun, deployment: DeploymentResponse, wake: bool = False) -> None:
        try:
            if wake and not await self._resume(flow_run):
                return
            if not await self._claim(flow_run):
                return
            starter = WarmStarter(
                self._context,
                baseline=self._baseline,
                entrypoint=deployment.entrypoint,
                deployment_name=deployment.name,
                heartbeat_seconds=self._heartbeat_seconds,
                control_channel=self._executors.control_channel,
            )
            executor = self._executors.create_executor(flow_run, starter, resolve_flow=_resolve_flow)
            await executor.submit()
        except Exception:  # the lane must outlive any one run
            log.exception("flow run %s failed to start on the fast path", flow_run.id)

    async def _resume(self, flow_run: FlowRun) -> bool:
        """Paused (suspended) -> Scheduled "Resuming", as Prefect's resume does."""
        from prefect.client.schemas.objects import StateType
        from prefect.states import Scheduled

        result = await self._executors.client.set_flow_run_state(flow_run.id, Scheduled(name="Resuming"))
        if result.state is None or result.state.type is not StateType.SCHEDULED:
            log.warning("flow run %s could not be resumed: %s", flow_run.id, result.details)
            return False
        return True

    async def _claim(self, flow_run: FlowRun) -> bool:
        """Scheduled -> Pending, as a runner claims a run; False (quietly) if another did first."""
        from prefect.exceptions import Abort
        from prefect.states import Pending
        from prefect.utilities.engine import propose_state

        try:
            state = await propose_state(self._executors.client, Pending(), flow_run_id=flow_run.id)
        except Abort:
            log.debug("flow run %s was claimed by the runner first", flow_run.id)
            return False
        return state.is_pending()


async def _resolve_flow(flow_run: FlowRun) -> Any:
    """The run's flow, for Prefect's crash and cancellation hooks."""
    from prefect.flows import load_flow_from_flow_run

    return await load_flow_from_flow_run(flow_run)
