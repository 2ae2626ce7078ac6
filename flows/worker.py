"""`siaga worker`: Prefect's process worker, each run started from a warm process.

A Prefect process worker (`prefect worker start --type process`) polls its work pool and starts
each run as ``python -m prefect.engine`` in a new interpreter: 5-7 s before a runbook's first step,
most of it importing Prefect again. `WarmProcessWorker` is that same worker (Prefect's
`ProcessWorker`: its polling, claiming, heartbeats, cancellation and crash reporting), on the same
``process`` work pools; only the process a run starts in comes from Siaga's warm forkserver
(`siaga.flows.faststart`), which imported Prefect, Siaga and the compiled runbooks once. The run's
process still runs Prefect's own engine entry for the run, with the pool job's environment.

Rules: a deployment whose job sets its own ``command`` is started Prefect's way; so is every run
when no forkserver can start here. The worker polls the queues it is given (``live``, or ``drill``
on the machines that hold the drill sandbox's credentials): it never runs a run of another queue.

Stopping drains: the first SIGTERM (or Ctrl-C) stops the worker taking runs, and it stays until the
runs it started have ended (their crashes still reported by it), at most `drain_seconds`; a second
signal, or the end of that time, stops it at once, leaving runs still going to Prefect's heartbeats
(a run's process outlives its worker).
"""

from __future__ import annotations

import asyncio
import os
import signal
import warnings
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.runner._process_manager import ProcessHandle
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from siaga.logs import get_logger

from .faststart import WarmStarter, wait_started, warm_context

log = get_logger("siaga.worker")


# It takes the place of Prefect's class for the type ``process`` in this process, on purpose.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)

    class WarmProcessWorker(ProcessWorker):
        """Prefect's process worker whose runs start in a process forked from a warm forkserver."""

        _description = "Prefect's process worker, each flow run forked from a warm Siaga process."

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._warm: tuple[Any, dict[str, str]] | None = None
            self._draining = False
            self._in_flight = 0

        def drain(self) -> None:
            """Take no more runs; those started go on."""
            self._draining = True

        @property
        def runs_in_flight(self) -> int:
            return self._in_flight

        async def wait_idle(self) -> None:
            """Until no run this worker claimed is still being started or going."""
            while self._in_flight or self._submitting_flow_run_ids:
                await anyio.sleep(0.2)

        async def get_and_submit_flow_runs(self) -> list[FlowRun]:
            if self._draining:
                return []
            return await super().get_and_submit_flow_runs()

        async def warm_up(self) -> bool:
            """Start the forkserver (Prefect, Siaga and the runbooks imported once); False if none can
            start here, and the runs start Prefect's way."""
            try:
                context, baseline = warm_context()
                await asyncio.to_thread(wait_started, context)
            except (ValueError, OSError, EOFError) as exc:
                log.warning("no warm forkserver: runs start in a new interpreter", error=str(exc))
                return False
            self._warm = (context, baseline)
            return True

        async def run(
            self,
            flow_run: FlowRun,
            configuration: ProcessJobConfiguration,
            task_status: anyio.abc.TaskStatus[int] | None = None,
        ) -> ProcessWorkerResult:
            self._in_flight += 1
            try:
                return await self._run(flow_run, configuration, task_status)
            finally:
                self._in_flight -= 1

        async def _run(
            self, flow_run: FlowRun, configuration: ProcessJobConfiguration, task_status: anyio.abc.TaskStatus[int] | None
        ) -> ProcessWorkerResult:
            if self._warm is None or configuration._command_configured:
                return await super().run(flow_run, configuration, task_status)
            task_status = task_status or anyio.TASK_STATUS_IGNORED
            context, baseline = self._warm
            entrypoint = None
            if flow_run.deployment_id is not None:
                entrypoint = (await self.client.read_deployment(flow_run.deployment_id)).entrypoint
            job_env = {k: v for k, v in configuration.env.items() if v is not None and os.environ.get(k) != v}
            async with FlowRunExecutorContext() as executors:
                starter = WarmStarter(
                    context, baseline=baseline, entrypoint=entrypoint, deployment_name=None, heartbeat_seconds=None,
                    control_channel=executors.control_channel, extra_env=job_env,
                )
                executor = executors.create_executor(
                    flow_run, starter, resolve_flow=load_flow_from_flow_run, propose_submitting=False
                )
                execution: FlowRunExecutionResult | None = None

                async def execute(*, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED) -> None:
                    nonlocal execution
                    execution = await executor.submit(task_status=task_status)

                async with anyio.create_task_group() as group:
                    handle = await group.start(execute)
                    if handle.pid is None:
                        raise RuntimeError("Flow run process has no PID")
                    task_status.started(handle.pid)
            if execution is None or execution.status_code is None:
                raise RuntimeError("Failed to start flow run process.")
            return ProcessWorkerResult(status_code=execution.status_code, identifier=str(execution.handle.pid))


async def run_worker(
    pool: str, queues: list[str], name: str | None = None, limit: int | None = None, drain_seconds: float = 300
) -> None:
    """Poll `queues` of the process work pool `pool` until a SIGTERM or SIGINT, then drain."""
    worker = WarmProcessWorker(
        work_pool_name=pool, work_queues=queues, name=name, limit=limit, create_pool_if_not_found=False
    )
    await worker.warm_up()
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as group:
            group.start_soon(worker.start)
            await anext(signals)
            await _drain(worker, signals, drain_seconds)
            group.cancel_scope.cancel()


async def _drain(worker: WarmProcessWorker, signals: AsyncIterator[int], seconds: float) -> None:
    """Take no new runs and wait for those going to end: at most `seconds`, or until another signal.
    The runs still going then are stopped as Prefect stops them when their worker stops."""
    worker.drain()
    log.info("worker draining: it takes no new runs", runs_going=worker.runs_in_flight, drain_seconds=seconds)
    with anyio.move_on_after(seconds) as waited:
        async with anyio.create_task_group() as waiting:

            async def until_another_signal() -> None:
                await anext(signals)
                log.warning("worker stopping at once: a second signal", runs_going=worker.runs_in_flight)
                waiting.cancel_scope.cancel()

            waiting.start_soon(until_another_signal)
            await worker.wait_idle()
            waiting.cancel_scope.cancel()
    log.info("worker stopped", runs_stopped=worker.runs_in_flight, drain_timed_out=waited.cancelled_caught)
