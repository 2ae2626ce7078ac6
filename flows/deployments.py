"""One Prefect deployment per runbook, for `siaga up` and for `prefect deploy --all`.

Every runbook's deployment is named ``siaga`` and points at the entry point
``siaga.flows.library.<runbook_id>``; its drill schedule runs the flow with ``mode: drill``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from siaga.runbook import Runbook

from .compiler import compile_runbook, flow_attribute

DEPLOYMENT = "siaga"
"""The name of every runbook's deployment: ``<runbook-id>/siaga``."""

WORK_POOL = "siaga"


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


def prefect_yaml(runbooks: Iterable[Runbook]) -> dict[str, Any]:
    """The contents of prefect.yaml: the same deployments, onto a process work pool."""
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
                "name": DEPLOYMENT,
                "description": runbook.description.strip() or runbook.title,
                "entrypoint": entrypoint(runbook),
                "tags": tags(runbook),
                "parameters": {},
                "work_pool": {
                    "name": WORK_POOL,
                    "job_variables": {"env": {"SIAGA_RUNBOOKS": "{{ $PWD }}/runbooks"}},
                },
                "schedules": drill_schedules(runbook),
            }
            for runbook in sorted(runbooks, key=lambda r: r.id)
        ],
    }
