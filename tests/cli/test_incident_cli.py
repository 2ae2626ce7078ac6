"""`siaga incident ID` through the command line, on a store filled by the real receiver path: the
receiver app on a real uvicorn, Alertmanager-shaped webhooks, runs started through the real
`start_incident_run` on a real Prefect server; run states read back from that server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga.alerts.receiver import create_app
from siaga.approvals.records import GateRecords, gate_id
from siaga.catalog import Catalog
from siaga.flows.server import free_port
from siaga.integrations import default_registry
from siaga.settings import Settings
from siaga.store import engine
from siaga.wiring import Wiring

from ..support.alert_payloads import am_alert, webhook
from ..support.live_receiver import API_TOKEN, read, serve, settle
from ..support.receiver_stack import RESOLVING, RESOLVING_YAML, RUNBOOK, RUNBOOK_YAML, TOKEN
from ..support.stack import clean_env


@dataclass
class Setup:
    url: str
    api: str
    home: Path
    store: Any

    def post(self, body: dict[str, Any]) -> None:
        answer = httpx.post(f"{self.url}/hooks/alertmanager", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 202, answer.text
        settle(self.url)

    def siaga(self, *args: str, api: str | None = "same") -> subprocess.CompletedProcess[str]:
        env = {**clean_env(self.home), "COLUMNS": "200"}
        if api:
            env["PREFECT_API_URL"] = self.api if api == "same" else api
        return subprocess.run([sys.executable, "-m", "siaga.cli", *args], check=False, capture_output=True, text=True,
                              env=env, timeout=60)

    def incident_of(self, group: str) -> dict[str, Any]:
        (found,) = [i for i in read(self.url) if i["group_key"] == json.dumps([group])]
        return found


@pytest.fixture(scope="module")
def setup(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from siaga.flows.running import start_incident_run

    home = tmp_path_factory.mktemp("incident-cli")
    (home / "runbooks").mkdir()
    (home / "runbooks" / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML)
    (home / "runbooks" / f"{RESOLVING}.yaml").write_text(RESOLVING_YAML.format(hooks="http://127.0.0.1:9"))
    runbooks = Catalog.load(home / "runbooks", default_registry()).runbooks
    # the runbooks' deployments, as `siaga up` would register them (no runner: runs stay scheduled)
    for name in (RUNBOOK, RESOLVING):
        flow_id = httpx.post(f"{prefect_api}/flows/", json={"name": name}).json()["id"]
        answer = httpx.post(f"{prefect_api}/deployments/", json={"name": "siaga", "flow_id": flow_id})
        assert answer.status_code in (200, 201), answer.text

    async def start_run(incident: Any) -> str:
        with temporary_settings({PREFECT_API_URL: prefect_api}):  # uvicorn's thread has its own context
            return await start_incident_run(incident, runbooks=runbooks, wiring=Wiring(Settings.from_environ(os.environ)))

    store = engine(f"sqlite:///{home / 'siaga.db'}")
    app = create_app(runbooks, Settings.from_environ({"SIAGA_ALERTMANAGER_TOKEN": TOKEN, "SIAGA_API_TOKEN": API_TOKEN}), store, start_run)
    with serve(app, free_port()) as url:
        yield Setup(url, prefect_api, home, store)


def test_an_incident_in_detail_with_its_alerts_run_and_timeline(setup: Setup) -> None:
    r = f"r-{uuid.uuid4().hex[:8]}"
    setup.post(webhook(am_alert(r), am_alert(r, fingerprint=f"fp-{r}-2")))
    incident = setup.incident_of(r)
    run_id = incident["flow_run_id"]
    assert run_id
    moved = httpx.post(f"{setup.api}/flow_runs/{run_id}/set_state", json={"state": {"type": "RUNNING"}, "force": True})
    assert moved.status_code in (200, 201), moved.text

    shown = setup.siaga("incident", incident["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["id"] == incident["id"] and report["runbook_id"] == RUNBOOK
    assert report["state"] == "open" and report["severity"] == "sev2" and report["resolved_at"] is None
    assert report["age_seconds"] >= 0
    assert [(a["source"], a["fingerprint"], a["status"]) for a in report["alert_list"]] == [
        ("alertmanager", f"fp-{r}", "firing"), ("alertmanager", f"fp-{r}-2", "firing")]
    assert report["alert_list"][0]["labels"]["region"] == r
    assert report["alert_list"][0]["starts_at"].startswith("2026-11-24 03:00:00")
    run = report["run"]
    assert run["id"] == run_id and run["state"] == "Running" and "error" not in run
    assert run["url"] == f"{setup.api.removesuffix('/api')}/runs/flow-run/{run_id}"
    assert run["name"] == f"{RUNBOOK}-{incident['id']}"
    events = [e["event"] for e in report["timeline"]]
    assert events[:2] == [f"alertmanager alert GatewayErrors (fp-{r}) received, firing",
                          f"alertmanager alert GatewayErrors (fp-{r}-2) received, firing"]
    assert events[2].startswith(f"incident opened ({RUNBOOK}")
    assert events[3:] == [f"run {RUNBOOK}-{incident['id']} created", "run started"]
    stamps = [e["at"] for e in report["timeline"]]
    assert stamps == sorted(stamps)

    # both alerts resolve: so does the incident, and the timeline ends with it
    setup.post(webhook(am_alert(r, "resolved"), am_alert(r, "resolved", fingerprint=f"fp-{r}-2")))
    report = json.loads(setup.siaga("incident", incident["id"], "--json").stdout)
    assert report["state"] == "resolved" and report["resolved_at"]
    assert len(report["alert_list"]) == 4
    assert report["timeline"][-1]["event"] == "incident resolved"
    assert [e["event"] for e in report["timeline"]][-3:-1] == [
        f"alertmanager alert GatewayErrors (fp-{r}) resolved", f"alertmanager alert GatewayErrors (fp-{r}-2) resolved"]

    # for people: a unique start of the id is enough
    human = setup.siaga("incident", incident["id"][:12])
    assert human.returncode == 0, human.stderr
    for expected in (incident["id"], f"/runs/flow-run/{run_id}", "Running", "timeline", f"fp-{r}-2", f"region={r}",
                     "incident resolved", "lasted"):
        assert expected in human.stdout, (expected, human.stdout)


def test_an_unknown_id_is_refused_with_the_nearest_ids(setup: Setup) -> None:
    r = f"r-{uuid.uuid4().hex[:8]}"
    setup.post(webhook(am_alert(r)))
    real = setup.incident_of(r)["id"]
    typo = real[:-1] + ("0" if real[-1] != "0" else "1")
    shown = setup.siaga("incident", typo)
    assert shown.returncode == 2
    assert f"no incident {typo}" in shown.stderr and real in shown.stderr
    assert shown.stdout == ""


def test_without_a_stack_the_store_still_answers_and_says_why_the_run_state_is_missing(setup: Setup) -> None:
    r = f"r-{uuid.uuid4().hex[:8]}"
    setup.post(webhook(am_alert(r)))
    incident = setup.incident_of(r)
    report = json.loads(setup.siaga("incident", incident["id"], "--json", api=None).stdout)
    assert report["run"]["id"] == incident["flow_run_id"] and "state" not in report["run"]
    assert "no stack is running" in report["run"]["error"] and "siaga up" in report["run"]["error"]
    assert [e["event"] for e in report["timeline"]][-1].startswith("incident opened")

    dead = f"http://127.0.0.1:{free_port()}/api"
    human = setup.siaga("incident", incident["id"], api=dead)
    assert human.returncode == 0, human.stderr
    assert f"the Prefect server at {dead} does not answer" in human.stdout


def gate(store: Any, incident: dict[str, Any], run_id: str, step: str, *votes: tuple[str, str]) -> None:
    """A gate as the gatekeeper keeps it: opened, the votes cast, then decided."""
    records = GateRecords(store)
    opened = datetime(2026, 11, 24, 3, 1, tzinfo=UTC)
    made, _ = records.open(
        id=gate_id(run_id, step), run_id=run_id, step_id=step, runbook_id=RESOLVING, incident_id=incident["id"],
        mode="live", params_hash="0" * 64, requester=None, opened_at=opened, deadline=opened + timedelta(minutes=10),
        evidence={"action": "http.request"}, host="test", pid=1,
    )
    records.event(made, "opened", channel="system")
    records.event(made, "code sent", actor="eko", channel="outbox")  # not on the timeline
    for person, choice in votes:
        records.event(made, choice, actor=person, channel="cli", roles=["ops"])
    state = "approved" if all(choice == "approved" for _, choice in votes) else "rejected"
    approvers = [person for person, choice in votes if choice == "approved"] if state == "approved" else None
    records.decide(made.id, state, "quorum reached", approvers)
    records.event(made, "decided", channel="system", decision=state)


def test_an_incident_shows_its_gates_and_its_resolve_run(setup: Setup) -> None:
    r = f"r-{uuid.uuid4().hex[:8]}"

    def down(status: str = "firing") -> dict[str, Any]:
        alert = am_alert(r, status)
        return {**alert, "labels": {**alert["labels"], "alertname": "GatewayDown"}}

    setup.post(webhook(down()))
    incident = setup.incident_of(r)
    assert incident["runbook_id"] == RESOLVING and incident["priority"] == "P1" and incident["rank"] >= 1
    gate(setup.store, incident, incident["flow_run_id"], "hello", ("eko", "approved"), ("fajar", "approved"))
    report = json.loads(setup.siaga("incident", incident["id"], "--json").stdout)
    assert report["resolve_run"] is None and not report["resolve_due"]

    # resolved: the receiver starts the resolve run (scheduled here: no runner), whose gate says no
    setup.post(webhook(down("resolved")))
    incident = setup.incident_of(r)
    resolve_id = incident["resolve_run_id"]
    assert incident["state"] == "resolved" and resolve_id and resolve_id != incident["flow_run_id"]
    gate(setup.store, incident, resolve_id, "all-clear", ("eko", "rejected"))

    shown = setup.siaga("incident", incident["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    resolving = report["resolve_run"]
    assert resolving["id"] == resolve_id and resolving["state"] == "Scheduled"
    assert resolving["name"] == f"{RESOLVING}-{incident['id']}-resolve"
    assert resolving["url"] == f"{setup.api.removesuffix('/api')}/runs/flow-run/{resolve_id}"
    first, second = report["gates"]
    assert (first["step"], first["state"], first["approved_by"], first["rejected_by"], first["run_id"]) == (
        "hello", "approved", ["eko", "fajar"], [], incident["flow_run_id"])
    assert (second["step"], second["state"], second["approved_by"], second["rejected_by"], second["run_id"]) == (
        "all-clear", "rejected", [], ["eko"], resolve_id)
    assert second["deadline"].startswith("2026-11-24 03:11:00") and second["decided_at"]
    assert second["url"].endswith(f"/runs/flow-run/{resolve_id}")
    events = [e["event"] for e in report["timeline"]]
    assert events.count("gate hello: approved by eko") == 1 and "gate all-clear: rejected by eko" in events
    assert "gate all-clear: decided: rejected" in events and not [e for e in events if "code sent" in e]
    assert events.index("incident resolved") < events.index(f"resolve run {RESOLVING}-{incident['id']}-resolve created")

    human = setup.siaga("incident", incident["id"])
    assert human.returncode == 0, human.stderr
    for expected in ("2 approval gates", "eko, fajar", "rejected", f"resolve    {resolve_id}", "Scheduled",
                     "gate all-clear: rejected by eko"):
        assert expected in human.stdout, (expected, human.stdout)

    listed = json.loads(setup.siaga("incidents", "--json").stdout)
    (mine,) = [i for i in listed if i["id"] == incident["id"]]
    assert mine["resolve_run_id"] == resolve_id and mine["rank"] is None
    table = setup.siaga("incidents")
    assert table.returncode == 0 and resolve_id[:8] in table.stdout and "resolve run" in table.stdout, table.stdout
