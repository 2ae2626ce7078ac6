"""prefect.yaml deploys every runbook onto a process work pool, and a Prefect worker runs them:
the path for a team that already runs its own Prefect server and workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from prefect import get_client
from ruamel.yaml import YAML
from siaga.flows.deployments import prefect_yaml
from siaga.integrations import default_registry

from siaga.catalog import Catalog

from ..conftest import REPO, RUNBOOKS
from ..support.gate_driver import approving_in_background


def test_prefect_yaml_matches_the_runbooks() -> None:
    committed = YAML(typ="safe").load((REPO / "prefect.yaml").read_text())
    catalog = Catalog.load(RUNBOOKS, default_registry())
    assert committed == prefect_yaml(catalog.runbooks.values()), (
        "prefect.yaml is stale: run `siaga prefect-yaml > prefect.yaml`"
    )


def prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )


def test_prefect_deploy_and_a_process_worker_run_a_drill(prefect_api: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "prefect"), SIAGA_HOME=str(tmp_path))
    env.pop("SIAGA_RUNBOOKS", None)
    created = prefect("work-pool", "create", "siaga", "--type", "process", env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect("deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    async def start() -> str:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("payment-gateway-outage/siaga")
            assert deployment.entrypoint == "siaga.flows.library.payment_gateway_outage"
            assert deployment.work_pool_name == "siaga"
            assert deployment.work_queue_name == "live" and not deployment.schedules
            drills = await client.read_deployment_by_name("payment-gateway-outage/siaga-drill")
            assert drills.work_queue_name == "drill"  # drill schedules start runs on drill workers only
            assert drills.schedules and drills.schedules[0].parameters == {"mode": "drill"}
            run = await client.create_flow_run_from_deployment(deployment.id, parameters={"mode": "drill"})
            return str(run.id)

    run_id = asyncio.run(start())
    with approving_in_background(tmp_path, "payment-gateway-outage", f"sqlite:///{tmp_path / 'siaga.db'}") as approvals:
        worker = prefect("worker", "start", "--pool", "siaga", "--run-once", env=env)
    assert approvals.get("answers", 0) >= 2, "the drill's gates were answered"
    assert worker.returncode == 0, worker.stdout + worker.stderr

    async def final_state() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state.name

    assert asyncio.run(final_state()) == "Completed", worker.stdout + worker.stderr
