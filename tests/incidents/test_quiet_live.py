"""Heartbeats and maintenance windows end to end: `siaga up` as a user starts it, Debian's
Alertmanager sending it real webhooks, heartbeats posted over HTTP, windows opened and ended with
the command line, runs read back from the Prefect API.

* An Alertmanager alert repeated every second is a heartbeat; when it stops, one incident opens and
  its runbook runs once; when it fires again, the incident resolves.
* ``POST /heartbeats/{name}`` refuses what is not proven or not expected and keeps nothing then; a
  heartbeat that stops opens one incident and one run.
* A window opened with ``siaga maintenance start`` holds an Alertmanager alert back; ``siaga
  maintenance end`` opens its incident and its run starts once.
* A drill opens its own window: its alert pages nobody.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga.flows.server import free_port
from siaga.incidents.maintenance import get_window
from siaga.store import engine

from ..support.alertmanager import alertmanager_process, post_alerts
from ..support.receiver_stack import ALERTMANAGER_CONFIG as RECEIVER_ALERTMANAGER_CONFIG
from ..support.receiver_stack import Receiver, wait_for, wait_for_run
from ..support.stack import running_stack

TOKEN = "quiet-alertmanager-token"
HEARTBEAT_TOKEN = "quiet-heartbeat-token"

WATCHDOG = "watchdog-quiet"
SETTLEMENT = "settlement-quiet"
HELD = "gateway-held"
RUNBOOKS = {
    WATCHDOG: """
runbook: watchdog-quiet
title: The alerting pipeline went quiet
severity: sev1
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: alertmanager
    match: {alertname: QuietWatchdog}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
    heartbeat: {every: 4s}
steps:
  - id: page
    action: note
    with: {text: "no watchdog from {{ inputs.region }}"}
""",
    SETTLEMENT: """
runbook: settlement-quiet
title: The settlement job stopped checking in
severity: sev2
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: heartbeat
    match: {name: settlement}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
    heartbeat: {every: 3s}
steps:
  - id: page
    action: note
    with: {text: "settlement quiet in {{ inputs.region }}"}
""",
    HELD: """
runbook: gateway-held
title: Gateway errors, sometimes in maintenance
severity: sev2
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: alertmanager
    match: {alertname: GatewayHeld}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
drill:
  maintenance: {for: 10m, match: {env: drill}}
steps:
  - id: page
    action: note
    with: {text: "gateway errors in {{ inputs.region }}"}
""",
}

ALERTMANAGER_CONFIG = RECEIVER_ALERTMANAGER_CONFIG.replace("  repeat_interval: 1h\n", """  repeat_interval: 1h
  routes:
    - matchers: ['alertname="QuietWatchdog"']
      repeat_interval: 1s
""")
"""The receiver tests' Alertmanager (`receiver_stack.ALERTMANAGER_CONFIG`), repeating the firing
QuietWatchdog alert every second."""


class Quiet(Receiver):
    def __init__(self, receiver: Receiver, alertmanager: str, folder: Path) -> None:
        super().__init__(receiver.stack, receiver.url)
        self.alertmanager, self.folder = alertmanager, folder
        self.store = engine(f"sqlite:///{folder.parent / 'siaga.db'}")  # the stack's store, read in this process

    def fire(self, alertname: str, region: str, started: datetime, *, ended: bool = False, **labels: str) -> None:
        now = datetime.now(UTC)
        post_alerts(self.alertmanager, [{
            "labels": {"alertname": alertname, "region": region, **labels},
            "annotations": {"summary": f"{alertname} in {region}"},
            "startsAt": started.isoformat(),
            "endsAt": (now if ended else now + timedelta(minutes=10)).isoformat(),
        }])

    def of(self, runbook: str, region: str) -> list[dict[str, Any]]:
        return [i for i in self.incidents() if i["runbook_id"] == runbook and i["group_key"] == json.dumps([region])]

    def runs_of(self, runbook: str, region: str) -> list[dict[str, Any]]:
        return [run for run in self.runs(runbook) if run["parameters"].get("region") == region]

    def heartbeat(self, name: str, body: Any = None, token: str | None = HEARTBEAT_TOKEN, **options: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return httpx.post(f"{self.url}/heartbeats/{name}", content=body, headers=headers, timeout=10, **options)

    def heartbeats(self) -> list[dict[str, Any]]:
        return self.cli_json("heartbeats")  # of the runbooks the stack serves

    def held(self, window_id: str) -> list[dict[str, Any]]:
        """What the window holds, read from the stack's store (polled: quicker than the CLI)."""
        window = get_window(self.store, window_id)
        assert window is not None
        return window["alert_list"]

    def cli_json(self, *args: str) -> Any:
        done = self.stack.siaga(*args, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory, prefect_db: Path) -> Iterator[Quiet]:
    home = tmp_path_factory.mktemp("quiet-home")
    folder = home / "runbooks"
    folder.mkdir()
    for name, text in RUNBOOKS.items():
        (folder / f"{name}.yaml").write_text(text)
    receiver_port = free_port()
    env = {"SIAGA_ALERTMANAGER_TOKEN": TOKEN, "SIAGA_HEARTBEAT_TOKEN": f"old-token,{HEARTBEAT_TOKEN}"}
    with running_stack(home, folder, "--receiver-port", str(receiver_port), env=env, prefect_db=prefect_db) as stack:
        receiver = Receiver(stack, f"http://127.0.0.1:{receiver_port}")
        config = ALERTMANAGER_CONFIG.format(url=receiver.url, token=TOKEN)
        with alertmanager_process(tmp_path_factory.mktemp("quiet-alertmanager"), config) as alertmanager:
            yield Quiet(receiver, alertmanager, folder)


def region() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


def test_an_alertmanager_watchdog_that_stops_opens_one_incident_and_its_return_resolves_it(quiet: Quiet) -> None:
    r = region()
    started = datetime.now(UTC).replace(microsecond=0)
    quiet.fire("QuietWatchdog", r, started)
    wait_for(lambda: [h for h in quiet.heartbeats() if h["group_key"] == json.dumps([r])],
             timeout=60, what="the watchdog's first webhook")
    time.sleep(6)  # longer than `every`: Alertmanager repeats the firing alert every second, a sign of life each
    assert quiet.of(WATCHDOG, r) == []

    quiet.fire("QuietWatchdog", r, started, ended=True)  # Prometheus stopped: the alert resolves, the repeats stop
    (incident,) = wait_for(lambda: [i for i in quiet.of(WATCHDOG, r) if i["flow_run_id"]], timeout=60,
                           what="the quiet watchdog's incident and its run")
    assert incident["inputs"] == {"region": r} and incident["severity"] == "sev1"
    run = wait_for_run(quiet, incident["flow_run_id"])
    assert run["parameters"]["incident"]["id"] == incident["id"]
    assert run["parameters"]["alert"]["source"] == "heartbeat"
    assert run["parameters"]["alert"]["labels"]["alertname"] == "QuietWatchdog"
    (row,) = [h for h in quiet.heartbeats() if h["group_key"] == json.dumps([r])]
    assert row["state"] == "quiet" and row["runbooks"] == [WATCHDOG] and row["every"] == "4s"

    quiet.fire("QuietWatchdog", r, datetime.now(UTC).replace(microsecond=0))  # firing again: a sign of life
    wait_for(lambda: quiet.of(WATCHDOG, r)[0]["state"] == "resolved", timeout=60, what="the incident to resolve")
    assert len(quiet.of(WATCHDOG, r)) == 1 and len(quiet.runs_of(WATCHDOG, r)) == 1
    verified = quiet.stack.siaga("audit", "verify", "--incident", incident["id"])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_posted_heartbeat_is_proven_and_kept_and_its_silence_runs_the_runbook_once(quiet: Quiet) -> None:
    r = region()
    body = {"labels": {"region": r}}
    refused = [
        (quiet.heartbeat("settlement", body, token=None), 401),
        (quiet.heartbeat("settlement", body, token="guess"), 401),
        (quiet.heartbeat("payroll", body), 404),  # no runbook expects it
        (quiet.heartbeat("Settlement!", body), 422),
        (quiet.heartbeat("settlement", b"{not json"), 400),
        (quiet.heartbeat("settlement", {"labels": ["region"]}), 422),
        (quiet.heartbeat("settlement", {"labels": {"region": r}, "extra": 1}), 422),
        (quiet.heartbeat("settlement", {"labels": {"region": r, "x": "y" * 70_000}}), 413),
    ]
    assert [answer.status_code for answer, _ in refused] == [status for _, status in refused], [a.text for a, _ in refused]
    assert refused[0][0].headers["www-authenticate"] == "Bearer"
    assert "payroll" in refused[2][0].json()["detail"]
    assert not [h for h in quiet.heartbeats() if r in h["group_key"]]  # nothing kept

    for _ in range(3):  # the job checks in every second, then stops
        answer = quiet.heartbeat("settlement", body)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"kept": 1}
        time.sleep(1)
    assert quiet.of(SETTLEMENT, r) == []
    (incident,) = wait_for(lambda: [i for i in quiet.of(SETTLEMENT, r) if i["flow_run_id"]], timeout=60,
                           what="the settlement heartbeat's incident and its run")
    wait_for_run(quiet, incident["flow_run_id"])
    assert quiet.heartbeat("settlement", body).status_code == 202  # back
    wait_for(lambda: quiet.of(SETTLEMENT, r)[0]["state"] == "resolved", timeout=60, what="the incident to resolve")
    assert len(quiet.runs_of(SETTLEMENT, r)) == 1


def test_a_window_holds_an_alertmanager_alert_back_until_it_is_ended(quiet: Quiet) -> None:
    r = region()
    window = quiet.cli_json("maintenance", "start", "--runbook", HELD, "--match", f"region={r}", "--for", "10m",
                            "--reason", "ledger database upgrade", "--as", "alice")
    assert window["opened_by"] == "alice" and window["runbooks"] == [HELD]
    started = datetime.now(UTC).replace(microsecond=0)
    quiet.fire("GatewayHeld", r, started)
    held = wait_for(lambda: quiet.held(window["id"]), timeout=60, what="the alert to be held")
    assert [(a["runbook_id"], a["group_key"], a["source"]) for a in held] == [(HELD, json.dumps([r]), "alertmanager")]
    quiet.settle()
    assert quiet.of(HELD, r) == [] and quiet.runs_of(HELD, r) == []
    (listed,) = [w for w in quiet.cli_json("maintenance", "list") if w["id"] == window["id"]]
    assert (listed["state"], listed["suppressed"]) == ("active", 1)

    ended = quiet.stack.siaga("maintenance", "end", window["id"], "--as", "bob")
    assert ended.returncode == 0, ended.stdout + ended.stderr
    (incident,) = wait_for(lambda: [i for i in quiet.of(HELD, r) if i["flow_run_id"]], timeout=60,
                           what="the held alert's incident and its run")
    wait_for_run(quiet, incident["flow_run_id"])
    assert len(quiet.runs_of(HELD, r)) == 1
    shown = quiet.cli_json("maintenance", "show", window["id"])
    assert shown["released_at"] and shown["alert_list"][0]["incident_id"] == incident["id"]
    trail = quiet.stack.siaga("audit", "export", f"maintenance:{window['id']}").stdout.splitlines()
    kinds = [(json.loads(line)["kind"], json.loads(line)["actor"]) for line in trail[:-1]]
    assert kinds == [("maintenance.opened", "alice"), ("alert.suppressed", None), ("maintenance.ended", "bob"),
                     ("maintenance.released", None)]
    quiet.fire("GatewayHeld", r, started, ended=True)  # fixed: the incident resolves as usual
    wait_for(lambda: quiet.of(HELD, r)[0]["state"] == "resolved", timeout=60, what="the incident to resolve")


def test_a_drill_opens_a_window_so_its_own_alert_pages_nobody(quiet: Quiet) -> None:
    drill = quiet.cli_json("drill", HELD, "--runbooks", str(quiet.folder))
    assert drill["state"] == "Completed", drill
    (window,) = [w for w in quiet.cli_json("maintenance", "list") if w["id"] == f"drill-{drill['run_id']}"]
    assert window["drill"] and window["runbooks"] == [HELD] and window["match"] == {"env": "drill"}

    r = region()
    started = datetime.now(UTC).replace(microsecond=0)
    quiet.fire("GatewayHeld", r, started, env="drill")  # the drill broke something on purpose
    wait_for(lambda: quiet.held(window["id"]), timeout=60, what="the drill's alert to be held")
    quiet.fire("GatewayHeld", r, started, env="drill", ended=True)  # and put it right
    wait_for(lambda: quiet.held(window["id"])[0]["resolved_at"], timeout=60, what="the drill's alert to resolve")
    assert quiet.stack.siaga("maintenance", "end", window["id"], "--as", "citra").returncode == 0
    wait_for(lambda: get_window(quiet.store, window["id"])["released_at"], timeout=60, what="the window's end")
    quiet.settle()
    assert quiet.of(HELD, r) == [] and quiet.runs_of(HELD, r) == []
