"""The runbook a run executes is the revision that started it: a runbook edited on disk after
Siaga read it (between the alert and the run's start, or while it waits) does not change the run,
and nothing rewritten through Prefect's API makes it execute another revision. Real Prefect server;
each run executed by a Prefect worker, which loads the runbook as it is on disk then."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client

from siaga.audit import AuditTrail
from siaga.catalog import Catalog
from siaga.flows.deployments import deploy_to_pool
from siaga.flows.running import start_incident_run, start_run
from siaga.flows.links import read_run
from siaga.report.incident import incident_report
from siaga.incidents.alert import Alert, AlertStatus
from siaga.incidents.recording import process
from siaga.incidents.runs import pending_runs, set_flow_run
from siaga.integrations import default_registry
from siaga.runbook.revision import revision_of
from siaga.settings import Settings
from siaga.store import engine
from siaga.wiring import Wiring

from ..support.settings import settings_with


def trail() -> AuditTrail:
    """The audit trail of the session's store, as the runs' settings name it."""
    return AuditTrail(engine(Settings.from_environ(os.environ).store_url))


RUNBOOK = """\
runbook: revised
title: A runbook revised while it runs
severity: sev3
triggers:
  - source: alertmanager
    match: {{alertname: Revised}}
    group_by: [shard]
    inputs: {{shard: "{{{{ alert.labels.shard }}}}"}}
inputs:
  shard: {{type: string, default: "a"}}
steps:
  - id: {step}
    action: note
    with: {{text: "{text}"}}
"""

FIRST = RUNBOOK.format(step="as-it-was", text="the revision the alert found")
EDITED = RUNBOOK.format(step="as-it-is-now", text="an edit made after the run was started")


@pytest.fixture
def library(tmp_path: Path, prefect_api: str) -> Path:
    """The runbook library of these tests: the settings in this process and the environment of its
    subprocesses name it."""
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "revised.yaml").write_text(FIRST)
    return folder


def loaded(folder: Path) -> Catalog:
    catalog = Catalog.load(folder, default_registry())
    assert not catalog.problems, catalog.problems
    return catalog


def execute(run_id: str, folder: Path, prefect_api: str) -> subprocess.CompletedProcess[str]:
    """Execute the flow run (the only one waiting) with a Prefect worker: a process that loads the
    deployment's entry point (the runbook as it is on disk now) and runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(folder.parent / "prefect"), SIAGA_RUNBOOKS=str(folder))
    log = folder.parent / "execute.log"
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "siaga", "--run-once"], check=False,
                              env=env, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=240)
    return subprocess.CompletedProcess(done.args, done.returncode, log.read_text(), "")


async def flow_run(run_id: str) -> Any:
    async with get_client() as client:
        return await client.read_flow_run(run_id)


def steps_done(chain: str) -> list[str]:
    return [r.data["step"] for r in trail().records(chain) if r.kind == "step.finished"]


def open_incident(catalog: Catalog, shard: str) -> dict[str, Any]:
    alert = Alert(source="alertmanager", fingerprint=f"revised-{shard}", status=AlertStatus.FIRING,
                  labels={"alertname": "Revised", "shard": shard}, starts_at=datetime.now(UTC))
    outcome = process(engine(Settings.from_environ(os.environ).store_url), catalog.runbooks, alert, datetime.now(UTC))
    return next(i for i in pending_runs(engine(Settings.from_environ(os.environ).store_url)) if i["id"] == outcome.opened[0])


def test_a_runbook_edited_between_the_alert_and_the_run_start_runs_as_the_alert_found_it(
    library: Path, prefect_api: str,
) -> None:
    receiver = loaded(library)  # the receiver's catalog, read when it started
    asyncio.run(deploy_to_pool(receiver.runbooks.values()))
    incident = open_incident(receiver, "edited-before-start")
    (library / "revised.yaml").write_text(EDITED)  # someone edits the runbook now

    run_id = asyncio.run(start_incident_run(incident, runbooks=receiver.runbooks, wiring=Wiring(settings_with(runbooks=library))))
    set_flow_run(engine(Settings.from_environ(os.environ).store_url), incident["id"], run_id)  # what the receiver's worker does next
    started = revision_of(receiver.runbooks["revised"])
    edited = revision_of(loaded(library).runbooks["revised"])
    assert started.digest != edited.digest

    executed = execute(run_id, library, prefect_api)
    run = asyncio.run(flow_run(run_id))
    assert run.state.is_completed(), executed.stdout + executed.stderr
    assert steps_done(incident["id"]) == ["as-it-was"], "the run executed the revision that started it"
    assert f"revision:{started.short}" in run.tags

    first = [r for r in trail().records(incident["id"]) if r.run_id == run_id]
    assert first[0].kind == "incident.run_started" and first[0].data["revision"] == started.digest
    assert next(r for r in first if r.kind == "run.started").data["revision"] == started.digest

    report = incident_report(engine(Settings.from_environ(os.environ).store_url), incident["id"], prefect_api, read_run=lambda run: read_run(run, prefect_api))
    assert report["run"]["revision"] == started.digest
    shown = subprocess.run([sys.executable, "-m", "siaga.cli", "incident", incident["id"]], check=False,
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PREFECT_API_URL": prefect_api, "SIAGA_RUNBOOKS": str(library)})
    assert f"revision   {started.short}" in shown.stdout, shown.stdout + shown.stderr


def test_a_revision_rewritten_through_prefects_api_changes_nothing(library: Path, prefect_api: str) -> None:
    cli = loaded(library)  # what `siaga run` read
    asyncio.run(deploy_to_pool(cli.runbooks.values()))
    run_id = str(asyncio.run(start_run(cli.runbooks["revised"], {"mode": "live", "shard": "b"}, engine(Settings.from_environ(os.environ).store_url))))
    (library / "revised.yaml").write_text(EDITED)
    edited = revision_of(loaded(library).runbooks["revised"])

    # Anyone reaching Prefect's API can rewrite a run's tags (and parameters) before it starts:
    # claim the edited revision there.
    forged = httpx.patch(f"{prefect_api}/flow_runs/{run_id}", json={"tags": ["live", f"revision:{edited.short}"]})
    assert forged.status_code == 204, forged.text

    executed = execute(run_id, library, prefect_api)
    run = asyncio.run(flow_run(run_id))
    assert run.state.is_completed(), executed.stdout + executed.stderr
    assert steps_done(f"run:{run_id}") == ["as-it-was"]
    started = revision_of(cli.runbooks["revised"])
    assert next(r for r in trail().records(f"run:{run_id}") if r.kind == "run.started").data["revision"] == started.digest


def test_a_revision_that_no_longer_validates_is_refused_with_what_to_do(library: Path, prefect_api: str) -> None:
    """The started revision is kept in Siaga's store and executed; when it cannot be any more (it
    names a person the roster no longer has), the run fails at once and says which revision it was
    started with, which it found, and what to do. It never runs the one on disk instead."""
    (library / "roster.yaml").write_text("people:\n  eko: {name: Eko, roles: [ops]}\n")
    (library / "revised.yaml").write_text(FIRST.replace("severity: sev3", "severity: sev3\nroles: {ops: [eko]}"))
    cli = loaded(library)
    asyncio.run(deploy_to_pool(cli.runbooks.values()))
    run_id = str(asyncio.run(start_run(cli.runbooks["revised"], {"mode": "live"}, engine(Settings.from_environ(os.environ).store_url))))
    (library / "roster.yaml").write_text("people:\n  fajar: {name: Fajar, roles: [ops]}\n")  # eko left
    (library / "revised.yaml").write_text(EDITED.replace("severity: sev3", "severity: sev3\nroles: {ops: [fajar]}"))

    executed = execute(run_id, library, prefect_api)
    run = asyncio.run(flow_run(run_id))
    assert run.state.is_failed() and run.state.name == "Refused", executed.stdout + executed.stderr
    started, found = revision_of(cli.runbooks["revised"]).short, revision_of(loaded(library).runbooks["revised"]).short
    assert f"started with revision {started}" in run.state.message
    assert f"on disk is revision {found}" in run.state.message
    assert "`eko` is not in the roster" in run.state.message
    assert "start a new run" in run.state.message
    assert steps_done(f"run:{run_id}") == []
