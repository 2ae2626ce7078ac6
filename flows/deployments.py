"""The runbooks' Prefect deployments: served by `siaga up`'s runner, or on a process work pool
(`prefect deploy --all` with prefect.yaml, or `siaga deploy`) for Prefect workers.

Every runbook's deployment is named ``siaga`` and points at the entry point
``siaga.flows.library.<runbook_id>``. Under `siaga up` it carries the drill schedule (the flow
with ``mode: drill``). On a work pool, live runs and drills go to different queues so that drill
sandbox credentials need live only on drill workers: ``<runbook>/siaga`` goes to the ``live``
queue, and ``<runbook>/siaga-drill`` (the drill schedule, ``mode: drill`` by default) to the
``drill`` queue; a drill started by hand (`siaga run --drill`) is placed on the ``drill`` queue too
(`run_queue`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from siaga.runbook import Runbook

from .compiler import compile_runbook, flow_attribute

DEPLOYMENT = "siaga"
"""The name of every runbook's deployment: ``<runbook-id>/siaga``."""

DRILL_DEPLOYMENT = "siaga-drill"
"""On a work pool: the deployment whose schedule starts drills, on the drill queue."""

WORK_POOL = "siaga"
LIVE_QUEUE = "live"
DRILL_QUEUE = "drill"


def run_queue(work_pool_name: str | None, mode: str) -> str | None:
    """The work queue a run of `mode` goes to on a deployment of `work_pool_name` (None: the
    deployment's own, as under `siaga up`'s runner, which has no pool)."""
    if not work_pool_name:
        return None
    return DRILL_QUEUE if mode == "drill" else LIVE_QUEUE


def entrypoint(runbook: Runbook) -> str:
    return f"siaga.flows.library.{flow_attribute(runbook.id)}"


def drill_schedules(runbook: Runbook) -> list[dict[str, Any]]:
    """The runbook's drill schedule as Prefect schedule fields (none if it has no schedule)."""
    if not runbook.drill.schedule:
        return []
    parameters = {**runbook.drill.inputs, "mode": "drill"}
    return [{"cron": runbook.drill.schedule, "timezone": runbook.drill.timezone, "parameters": parameters}]


def tags(runbook: Runbook) -> list[str]:
    return ["siaga", str(runbook.severity)]


async def deployment(runbook: Runbook) -> RunnerDeployment:
    """The runbook's deployment for a runner in this process (`siaga up`)."""
    flow = compile_runbook(runbook)
    deployment = await flow.ato_deployment(
        name=DEPLOYMENT,
        entrypoint_type=EntrypointType.MODULE_PATH,
        schedules=[Cron(s["cron"], timezone=s["timezone"], parameters=s["parameters"]) for s in drill_schedules(runbook)],
        tags=tags(runbook),
        description=runbook.description or runbook.title,
    )
    assert deployment.entrypoint == entrypoint(runbook), deployment.entrypoint
    return deployment


async def deploy_to_pool(runbooks: Iterable[Runbook], pool: str = WORK_POOL) -> list[str]:
    """Apply every runbook's live and drill deployments onto the process work pool `pool` (created,
    with its ``live`` and ``drill`` queues, if missing), through the API PREFECT_API_URL names:
    what `prefect deploy --all` does with prefect.yaml, without a project folder. Return the
    deployments' names."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(pool)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(WorkPoolCreate(
                    name=pool, type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                ))
        for queue in (LIVE_QUEUE, DRILL_QUEUE):
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_queue(name=queue, work_pool_name=pool)
    names = []
    for runbook in runbooks:
        flow = compile_runbook(runbook)
        for name, queue, schedules, parameters in (
            (DEPLOYMENT, LIVE_QUEUE, [], {}),
            (DRILL_DEPLOYMENT, DRILL_QUEUE, drill_schedules(runbook), {"mode": "drill"}),
        ):
            pooled = await flow.ato_deployment(
                name=name, entrypoint_type=EntrypointType.MODULE_PATH, tags=tags(runbook),
                schedules=[Cron(s["cron"], timezone=s["timezone"], parameters=s["parameters"]) for s in schedules],
                parameters=parameters, description=runbook.description or runbook.title,
                work_pool_name=pool, work_queue_name=queue,
            )
            await pooled.apply(work_pool_name=pool)
            names.append(f"{runbook.id}/{name}")
    return names


def prefect_yaml(runbooks: Iterable[Runbook]) -> dict[str, Any]:
    """The contents of prefect.yaml: the same deployments onto a process work pool, live runs on
    its ``live`` queue and drills (their schedule) on its ``drill`` queue."""
    return {
        "name": "siaga",
        "prefect-version": "3.8.0",
        "build": None,
        "push": None,
        "pull": [
            {
                "prefect.deployments.steps.set_working_directory": {
                    "directory": "{{ $PWD }}",
                }
            }
        ],
        "deployments": [
            {
                "name": name,
                "description": runbook.description.strip() or runbook.title,
                "entrypoint": entrypoint(runbook),
                "tags": tags(runbook),
                "parameters": parameters,
                "work_pool": {
                    "name": WORK_POOL,
                    "work_queue_name": queue,
                    "job_variables": {"env": {"SIAGA_RUNBOOKS": "{{ $PWD }}/runbooks"}},
                },
                "schedules": schedules,
            }
            for runbook in sorted(runbooks, key=lambda r: r.id)
            for name, queue, parameters, schedules in (
                (DEPLOYMENT, LIVE_QUEUE, {}, []),
                (DRILL_DEPLOYMENT, DRILL_QUEUE, {"mode": "drill"}, drill_schedules(runbook)),
            )
        ],
    }
