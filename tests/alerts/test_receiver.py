"""The alert receiver end to end: `siaga up` (Prefect server, runner, receiver) as a user starts it,
Alertmanager-shaped webhooks posted to it, incidents read back from the receiver and runs counted
through the Prefect API."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.alert_payloads import am_alert, signed, webhook
from ..support.alertmanager import post_alerts
from ..support.gate_driver import code_for
from ..support.live_receiver import API, read
from ..support.receiver_stack import (  # the module fixtures (hooks, receiver, alertmanager): ./conftest.py
    RESOLVING,
    RUNBOOK,
    STORM,
    TOKEN,
    Receiver,
    of_group,
    region,
    runs_in,
    wait_for,
    wait_for_run,
)
from ..support.webhook_server import WebhookServer


def test_alerts_open_one_incident_and_start_its_runbook_once(receiver: Receiver) -> None:
    r = region()
    before = len(receiver.runs())
    answer = receiver.post(webhook(am_alert(r), am_alert(r, fingerprint=f"fp-{r}-2")))
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 2}
    receiver.settle()
    (incident,) = of_group(receiver.incidents(), r)
    assert incident["state"] == "open" and incident["alerts"] == 2 and incident["severity"] == "sev2"
    assert incident["inputs"] == {"region": r}

    # Alertmanager re-sends the group, now with a third alert: still one incident, one run
    assert receiver.post(webhook(am_alert(r), am_alert(r, fingerprint=f"fp-{r}-2"))).status_code == 202
    assert receiver.post(webhook(am_alert(r), am_alert(r, fingerprint=f"fp-{r}-3"))).status_code == 202
    receiver.settle()
    (incident,) = of_group(receiver.incidents(), r)
    assert incident["alerts"] == 3
    runs = receiver.runs()
    assert len(runs) == before + 1
    (run,) = [run for run in runs if run["id"] == incident["flow_run_id"]]
    assert incident["id"] in run["name"]
    assert run["idempotency_key"] == incident["id"]
    assert run["parameters"]["region"] == r
    assert run["parameters"]["incident"]["id"] == incident["id"]
    assert run["parameters"]["incident"]["runbook"] == RUNBOOK
    assert run["parameters"]["alert"]["labels"]["region"] == r

    deadline = time.monotonic() + 120
    while (state := httpx.get(f"{receiver.stack.api}/flow_runs/{run['id']}").json()["state"]["type"]) != "COMPLETED":
        assert state not in ("FAILED", "CRASHED", "CANCELLED") and time.monotonic() < deadline, state
        time.sleep(0.5)

    detail = read(receiver.url, f"/incidents/{incident['id']}")
    assert {a["fingerprint"] for a in detail["alert_list"]} == {f"fp-{r}", f"fp-{r}-2", f"fp-{r}-3"}

    # resolved, two in one webhook and the last one later: the incident resolves with the last
    receiver.post(webhook(am_alert(r, "resolved"), am_alert(r, "resolved", fingerprint=f"fp-{r}-2")))
    receiver.settle()
    assert of_group(receiver.incidents(), r)[0]["state"] == "open"
    receiver.post(webhook(am_alert(r, "resolved", fingerprint=f"fp-{r}-3")))
    receiver.settle()
    (incident,) = of_group(receiver.incidents(), r)
    assert incident["state"] == "resolved" and incident["resolved_at"]
    assert len(receiver.runs()) == before + 1

    # one audit chain for the incident, written by the receiver and by its run (two processes)
    verified = receiver.stack.siaga("audit", "verify", "--incident", incident["id"])
    assert verified.returncode == 0 and verified.stdout.startswith(f"OK {incident['id']}: "), verified.stderr
    exported = receiver.stack.siaga("audit", "export", incident["id"]).stdout.splitlines()
    kinds = [json.loads(line)["kind"] for line in exported[:-1]]
    assert kinds[:3] == ["alert.received", "incident.opened", "alert.received"]
    assert {"incident.run_started", "run.started", "step.started", "step.finished", "run.finished"} <= set(kinds)
    assert kinds[-1] == "incident.resolved" and kinds.count("alert.received") == 6


def test_a_resolved_incident_runs_its_on_resolve_steps_once(receiver: Receiver, hooks: WebhookServer) -> None:
    r = region()

    def down(status: str = "firing") -> dict[str, Any]:
        alert = am_alert(r, status, fingerprint=f"down-{r}")
        return {**alert, "labels": {**alert["labels"], "alertname": "GatewayDown"}}

    def the_incident() -> dict[str, Any]:
        (found,) = [i for i in of_group(receiver.incidents(), r) if i["runbook_id"] == RESOLVING]
        return found

    assert receiver.post(webhook(down())).status_code == 202
    receiver.settle()
    incident = the_incident()
    assert incident["priority"] == "P1" and incident["flow_run_id"] and incident["resolve_run_id"] is None
    wait_for_run(receiver, incident["flow_run_id"])
    assert hooks.calls(path="/all-clear") == []  # the response does not run the resolve steps

    assert receiver.post(webhook(down("resolved"))).status_code == 202
    receiver.settle()
    incident = the_incident()
    assert incident["state"] == "resolved" and incident["resolve_due"] and incident["resolve_run_id"]
    resolve_id = incident["resolve_run_id"]
    run = httpx.get(f"{receiver.stack.api}/flow_runs/{resolve_id}").json()
    assert run["idempotency_key"] == f"{incident['id']}:resolved" and run["name"] == f"{RESOLVING}-{incident['id']}-resolve"
    assert run["parameters"]["phase"] == "resolve" and run["parameters"]["region"] == r
    assert run["parameters"]["incident"]["id"] == incident["id"] and run["parameters"]["incident"]["resolved_at"]

    # the all-clear waits at its gate until the on-call approves it, as anyone would: `siaga approve`
    # with the code sent to them
    gate = wait_for(lambda: [g for g in json.loads(receiver.stack.siaga("approvals", "--json").stdout)
                             if g["run_id"] == resolve_id and g["may_approve"]], timeout=120, what="the gate")[0]
    assert gate["step"] == "all-clear" and gate["incident"] == incident["id"] and hooks.calls(path="/all-clear") == []
    home = Path(receiver.stack.env["SIAGA_HOME"])
    approved = receiver.stack.siaga("approve", resolve_id, "all-clear", "--as", "eko",
                                    "--code", code_for(home, "eko", resolve_id, "all-clear"))
    assert approved.returncode == 0, approved.stdout + approved.stderr
    wait_for_run(receiver, resolve_id)
    (call,) = hooks.calls("POST", "/all-clear")
    assert json.loads(call.body) == {"incident": incident["id"], "said": f"gateway back in {r}, incident {incident['id']} resolved"}

    # Alertmanager repeats the resolved notification: nothing more starts
    for _ in range(2):
        assert receiver.post(webhook(down("resolved"))).status_code == 202
    receiver.settle()
    assert the_incident()["resolve_run_id"] == resolve_id
    mine = [x for x in receiver.runs(RESOLVING) if x["parameters"].get("region") == r]
    assert sorted(x["id"] for x in mine) == sorted([incident["flow_run_id"], resolve_id])
    assert len(hooks.calls(path="/all-clear")) == 1

    # `siaga incident` shows the resolve run and its gate; the audit trail holds it all, once
    report = json.loads(receiver.stack.siaga("incident", incident["id"], "--json").stdout)
    assert report["resolve_run"]["id"] == resolve_id and report["resolve_run"]["state"] == "Completed"
    (shown,) = report["gates"]
    assert (shown["step"], shown["state"], shown["approved_by"], shown["rejected_by"]) == ("all-clear", "approved", ["eko"], [])
    assert shown["run_id"] == resolve_id and shown["url"].endswith(f"/runs/flow-run/{resolve_id}")
    events = [e["event"] for e in report["timeline"]]
    assert events.index("incident resolved") < events.index(f"resolve run {RESOLVING}-{incident['id']}-resolve created")
    assert "gate all-clear: approved by eko" in events and events[-1] == "resolve run ended: Completed"
    human = receiver.stack.siaga("incident", incident["id"])
    assert human.returncode == 0 and "1 approval gates" in human.stdout and "resolve" in human.stdout, human.stdout
    exported = receiver.stack.siaga("audit", "export", incident["id"]).stdout.splitlines()
    kinds = [json.loads(line)["kind"] for line in exported[:-1]]
    assert kinds.count("incident.resolve_run_started") == 1 and kinds.count("run.started") == 2
    assert kinds.index("incident.resolved") < kinds.index("incident.resolve_run_started")
    assert receiver.stack.siaga("audit", "verify", "--incident", incident["id"]).returncode == 0


def test_a_missing_or_wrong_token_is_refused_and_nothing_is_recorded(receiver: Receiver) -> None:
    r = region()
    for token in (None, "wrong", ""):
        answer = receiver.post(webhook(am_alert(r)), token=token)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
    answer = httpx.post(f"{receiver.url}/hooks/alertmanager", json=webhook(am_alert(r)),
                        headers={"Authorization": f"Basic {TOKEN}"})
    assert answer.status_code == 401
    receiver.settle()
    assert of_group(receiver.incidents(), r) == []
    listed = receiver.stack.siaga("incidents", "--json")
    assert listed.returncode == 0, listed.stderr
    assert not [i for i in json.loads(listed.stdout) if r in i["group_key"]]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 422, "not a JSON object"),
        (b'{"version": "4"}', 422, "alerts"),
        (json.dumps(webhook({**am_alert("x"), "status": "burning"})).encode(), 422, "status"),
        (json.dumps(webhook({**am_alert("x"), "labels": ["a"]})).encode(), 422, "labels"),
        (json.dumps(webhook({**am_alert("x"), "startsAt": "yesterday"})).encode(), 422, "startsAt"),
        (json.dumps(webhook({**am_alert("x"), "fingerprint": 7})).encode(), 422, "fingerprint"),
        (b"\xff\xfe", 400, "not JSON"),
    ],
)
def test_a_malformed_body_is_refused_with_a_reason(receiver: Receiver, body: bytes, status: int, reason: str) -> None:
    answer = receiver.post(None, raw=body)
    assert answer.status_code == status, answer.text
    assert reason in answer.json()["detail"]


def test_other_sources_and_unknown_incidents(receiver: Receiver) -> None:
    assert httpx.post(f"{receiver.url}/hooks/nagios", json={}).status_code == 404
    sns = httpx.post(f"{receiver.url}/hooks/cloudwatch", json={})  # SIAGA_SNS_TOPIC_ARNS is not set
    assert sns.status_code == 404 and "SIAGA_SNS_TOPIC_ARNS" in sns.json()["detail"]
    assert httpx.get(f"{receiver.url}/incidents/inc-nope", headers=API).status_code == 404
    assert httpx.get(f"{receiver.url}/incidents", params={"state": "weird"}, headers=API).status_code == 422


def test_30_concurrent_webhooks_lose_no_run_and_start_none_twice(receiver: Receiver) -> None:
    groups = [region() for _ in range(10)]
    bodies = [webhook(am_alert(g)) for g in groups for _ in range(3)]
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda body: receiver.post(body).status_code, bodies))
    assert answers == [202] * 30
    receiver.settle(timeout=120)
    incidents = [i for g in groups for i in of_group(receiver.incidents(), g)]
    assert len(incidents) == 10 and all(i["alerts"] == 1 for i in incidents)
    runs = [run for g in groups for run in runs_in(receiver, g)]
    assert len(runs) == 10, "one run per group, none lost and none twice"
    started = {run["parameters"]["incident"]["id"] for run in runs if run["parameters"].get("incident")}
    assert {i["id"] for i in incidents} <= started
    assert {i["flow_run_id"] for i in incidents} <= {run["id"] for run in runs}


def test_a_signed_generic_source_opens_a_threshold_incident_on_the_third_post(receiver: Receiver) -> None:
    topic = region()
    url = f"{receiver.url}/hooks/social"
    before = len(receiver.runs(STORM))

    def post(n: int, sentiment: str = "negative") -> httpx.Response:
        body = json.dumps({"labels": {"sentiment": sentiment, "topic": topic, "post": str(n)}}).encode()
        return httpx.post(url, content=body, headers=signed(body))

    assert post(1).status_code == 202
    assert post(2).status_code == 202
    assert post(3, sentiment="positive").status_code == 202
    receiver.settle()
    assert of_group(receiver.incidents(), topic) == []

    body = json.dumps({"labels": {"sentiment": "negative", "topic": topic, "post": "4"}}).encode()
    headers = signed(body)
    assert httpx.post(url, content=body, headers=headers).status_code == 202
    replayed = httpx.post(url, content=body, headers=headers)
    assert replayed.status_code == 403 and "replay" in replayed.json()["detail"]
    unsigned = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    forged = httpx.post(url, content=body, headers=signed(body, secret="guess"))
    assert forged.status_code == 401
    receiver.settle()
    (incident,) = of_group(receiver.incidents(), topic)
    assert incident["runbook_id"] == STORM and incident["alerts"] == 3  # the three negative posts
    assert post(5).status_code == 202
    receiver.settle()
    (incident,) = of_group(receiver.incidents(), topic)
    assert incident["alerts"] == 4
    runs = receiver.runs(STORM)
    assert len(runs) == before + 1
    (run,) = [r for r in runs if r["id"] == incident["flow_run_id"]]
    assert run["parameters"]["topic"] == topic


def fire(alertmanager: str, region: str, instances: list[str], *, ended: bool = False) -> None:
    """Post alerts to Alertmanager's v2 API, as Prometheus does."""
    now = datetime.now(UTC)
    alerts = [
        {
            "labels": {"alertname": "GatewayErrors", "region": region, "instance": instance, "severity": "critical"},
            "annotations": {"summary": f"5xx at the gateway in {region}"},
            "startsAt": STARTS[region, instance].isoformat(),
            **({"endsAt": now.isoformat()} if ended else {"endsAt": (now + timedelta(minutes=5)).isoformat()}),
            "generatorURL": "http://prometheus.example/graph",
        }
        for instance in instances
    ]
    post_alerts(alertmanager, alerts)


STARTS: dict[tuple[str, str], datetime] = {}


def test_a_real_alertmanager_opens_one_incident_and_one_run(receiver: Receiver, alertmanager: str) -> None:
    r = region()
    instances = ["gw-1", "gw-2", "gw-3"]
    for instance in instances:
        STARTS[r, instance] = datetime.now(UTC).replace(microsecond=0)
    fire(alertmanager, r, instances[:2])
    wait_for(lambda: of_group(receiver.incidents(), r), timeout=120, what="the incident")
    fire(alertmanager, r, instances)  # Prometheus re-sends every evaluation; a third instance joins
    incident = wait_for(
        lambda: [i for i in of_group(receiver.incidents(), r) if i["alerts"] == 3 and i["flow_run_id"]],
        timeout=120, what="the third alert to join",
    )[0]
    receiver.settle()
    assert len(of_group(receiver.incidents(), r)) == 1
    assert len(runs_in(receiver, r)) == 1
    run = httpx.get(f"{receiver.stack.api}/flow_runs/{incident['flow_run_id']}").json()
    assert run["parameters"]["region"] == r and run["parameters"]["incident"]["id"] == incident["id"]

    fire(alertmanager, r, instances, ended=True)
    wait_for(lambda: of_group(receiver.incidents(), r)[0]["state"] == "resolved", timeout=120,
             what="the incident to resolve")
    assert len(runs_in(receiver, r)) == 1
