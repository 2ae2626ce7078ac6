"""A receiver keeps its runbooks' deployments (`siaga.flows.running.Deployments`) so that starting
a run reads none; a runbook redeployed meanwhile, even onto another work pool, gets its next run on
the new deployment after one failed start, which the receiver's worker retries. Real Prefect
server; the runs are left scheduled on pools no worker serves, and deleted after."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client

from siaga.catalog import Catalog
from siaga.flows.deployments import deploy_to_pool
from siaga.flows.running import Deployments, start_incident_run
from siaga.incidents.alert import Alert, AlertStatus
from siaga.incidents.recording import process
from siaga.incidents.runs import pending_runs
from siaga.integrations import default_registry
from siaga.wiring import Wiring

from ..support.settings import settings_with

RUNBOOK = """\
runbook: redeployed
title: A runbook redeployed while a receiver runs
severity: sev3
triggers:
  - source: alertmanager
    match: {alertname: Redeployed}
    group_by: [shard]
steps:
  - id: note
    action: note
    with: {text: "started"}
"""


@pytest.fixture
def wiring(tmp_path: Path, prefect_api: str) -> Iterator[Wiring]:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "redeployed.yaml").write_text(RUNBOOK)
    yield Wiring(settings_with(runbooks=folder, database_url=None, home=tmp_path))
    with httpx.Client(base_url=prefect_api) as api:  # no later test's worker may find these runs
        for run in api.post("/flow_runs/filter", json={"flows": {"name": {"any_": ["redeployed"]}}}).json():
            api.delete(f"/flow_runs/{run['id']}")


def incident(wiring: Wiring, runbooks: Any, shard: str) -> dict[str, Any]:
    alert = Alert(source="alertmanager", fingerprint=f"redeployed-{shard}", status=AlertStatus.FIRING,
                  labels={"alertname": "Redeployed", "shard": shard}, starts_at=datetime.now(UTC))
    opened = process(wiring.engine, runbooks, alert, datetime.now(UTC)).opened[0]
    return next(i for i in pending_runs(wiring.engine) if i["id"] == opened)


async def run_of(run_id: str) -> Any:
    async with get_client() as client:
        return await client.read_flow_run(run_id)


def test_a_redeployed_runbook_gets_its_next_run_on_the_new_deployment(wiring: Wiring, prefect_api: str) -> None:
    runbooks = Catalog.load(wiring.folder(), default_registry()).runbooks
    deployments = Deployments(ttl=3600)  # kept longer than the test: only the failed start makes it read again

    async def start(owed: dict[str, Any]) -> Any:
        return await run_of(await start_incident_run(owed, runbooks=runbooks, wiring=wiring, deployments=deployments))

    async def scenario() -> None:
        await deploy_to_pool(runbooks.values(), pool="redeploy-a")
        first = await start(incident(wiring, runbooks, "one"))
        again = await start(incident(wiring, runbooks, "two"))
        assert again.deployment_id == first.deployment_id and again.work_queue_name == "live"

        async with get_client() as client:  # the runbook moves to another pool: a new deployment
            await client.delete_deployment(first.deployment_id)
        await deploy_to_pool(runbooks.values(), pool="redeploy-b")
        third = incident(wiring, runbooks, "three")
        with pytest.raises(httpx.HTTPStatusError):
            await start(third)  # on the deployment kept, now gone
        moved = await start(third)  # the receiver's worker tries again
        assert moved.deployment_id != first.deployment_id
        async with get_client() as client:
            assert (await client.read_deployment(moved.deployment_id)).work_pool_name == "redeploy-b"
        assert moved.work_queue_name == "live"

    asyncio.run(scenario())
