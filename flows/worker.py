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
"""

from __future__ import annotations

import asyncio
import os
import warnings
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


async def run_worker(pool: str, queues: list[str], name: str | None = None, limit: int | None = None) -> None:
    """Poll `queues` of the process work pool `pool` until stopped (SIGTERM, Ctrl-C)."""
    worker = WarmProcessWorker(
        work_pool_name=pool, work_queues=queues, name=name, limit=limit, create_pool_if_not_found=False
    )
    await worker.warm_up()
    await worker.start()
