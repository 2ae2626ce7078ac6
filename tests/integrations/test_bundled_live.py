"""The bundled payment-gateway-outage runbook, run LIVE on a real Prefect server against the local
stand-ins of every provider it calls: moto (the ledger cluster and the payment routes' DNS zone),
the payment switch, Statuspage, Slack, PagerDuty and SMTP; the synthetic checkout probe is a plain
HTTP stand-in. Approvals are not enforced yet, so the run goes through without anyone approving.

A second run for the same incident finds every side effect in the ledger: no second freeze,
failover or snapshot."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from siaga.approvals.records import GateRecords
from siaga.catalog import Catalog
from siaga.flows.compiler import compile_runbook
from siaga.integrations import default_registry
from siaga.settings import Settings
from siaga.store import engine
from testkit.provider_servers import PAGERDUTY_PATH, Mailbox, Providers, providers, smtp_server

from ..conftest import REPO, RUNBOOKS
from ..support.gate_driver import with_approvals
from ..support.moto_server import KEY_ID, REGION, SECRET, Moto, moto_server
from ..support.payment_standins import FakeStatuspage, KillSwitch
from ..support.settings import settings_with
from ..support.webhook_server import WebhookServer, webhook_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

CONNECTIONS_FILE = REPO / "tests" / "fixtures" / "connections" / "stand-ins.yaml"
ZONE = "routes.pay.example.com"
GATEWAY = f"primary-acquirer.{REGION}.{ZONE}"
STANDBY = f"secondary-acquirer.{REGION}.{ZONE}"
ACQUIRER = "edge.primary-acquirer.example"

SECRETS = {
    "SWITCH_TOKEN": "switch-token-7f3a91c2",
    "STATUSPAGE_KEY": "statuspage-key-51be08d4",
    "SLACK_TOKEN": "xoxb-slack-token-2c9d",
    "PD_KEY": "0123456789abcdef0123456789abcdef",  # PagerDuty routing keys are 32 characters
    "SMTP_PASSWORD": "smtp-password-8e1f",
    "MOTO_KEY_ID": KEY_ID,
    "MOTO_SECRET_KEY": SECRET,
}


@dataclass
class StandIns:
    moto: Moto
    switch: KillSwitch
    page: FakeStatuspage
    notify: Providers
    mailbox: Mailbox
    probe: WebhookServer


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIns]:
    folder = tmp_path_factory.mktemp("bundled-live")
    with ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        for name, value in SECRETS.items():
            env.setenv(f"SIAGA_SECRET_{name}", value)
        found = StandIns(
            moto=stack.enter_context(moto_server(folder / "recording.jsonl")),
            switch=stack.enter_context(KillSwitch(SECRETS["SWITCH_TOKEN"]).running()),  # type: ignore[arg-type]
            page=stack.enter_context(FakeStatuspage(SECRETS["STATUSPAGE_KEY"]).running()),  # type: ignore[arg-type]
            notify=stack.enter_context(providers(slack_token=SECRETS["SLACK_TOKEN"])),
            mailbox=stack.enter_context(smtp_server(folder, "siaga", SECRETS["SMTP_PASSWORD"])),
            probe=stack.enter_context(webhook_server()),
        )
        _aws_resources(found.moto)
        CONNECTIONS_FILE.parent.mkdir(parents=True, exist_ok=True)
        CONNECTIONS_FILE.write_text(json.dumps({"connections": _connections(found)}, indent=2))  # JSON is YAML
        yield found


def _connections(s: StandIns) -> dict[str, Any]:
    return {
        "aws": {
            "type": "aws",
            "region": REGION,
            "endpoint_url": s.moto.url,
            "access_key_id": "secret://moto-key-id",
            "secret_access_key": "secret://moto-secret-key",
        },
        "switch": {
            "type": "payment_switch",
            "base_url": s.switch.url,
            "auth": {"bearer": "secret://switch-token"},
        },
        "status": {
            "type": "statuspage",
            "base_url": f"{s.page.url}/v1",
            "page_id": s.page.page_id,
            "api_key": "secret://statuspage-key",
        },
        "bridge": {
            "type": "slack",
            "bot_token": "secret://slack-token",
            "api_url": s.notify.slack_api,
        },
        "oncall": {
            "type": "pagerduty",
            "routing_key": "secret://pd-key",
            "events_url": s.notify.pagerduty_url,
        },
        "mail": {
            "type": "smtp",
            "host": "localhost",
            "port": s.mailbox.port,
            "username": "siaga",
            "password": "secret://smtp-password",
            "sender": "Siaga <siaga@pay.example.com>",
            "ca_file": s.mailbox.ca_file,
        },
    }


def _aws_resources(moto: Moto) -> None:
    """The ledger cluster the runbook snapshots, and the payment route it fails over."""
    rds = moto.client("rds")
    rds.create_db_cluster(DBClusterIdentifier="ledger-prod", Engine="aurora-postgresql",
                          MasterUsername="siaga", MasterUserPassword="not-a-real-password")
    for n in (1, 2):
        rds.create_db_instance(DBInstanceIdentifier=f"ledger-prod-{n}", DBInstanceClass="db.r6g.large",
                               Engine="aurora-postgresql", DBClusterIdentifier="ledger-prod")
    route53 = moto.client("route53")
    zone = route53.create_hosted_zone(Name=ZONE, CallerReference="bundled-live")["HostedZone"]["Id"]
    route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "CREATE",
        "ResourceRecordSet": {"Name": GATEWAY, "Type": "CNAME", "TTL": 60, "ResourceRecords": [{"Value": ACQUIRER}]},
    }]})


def _route(moto: Moto) -> list[str]:
    route53 = moto.client("route53")
    zone = route53.list_hosted_zones_by_name(DNSName=ZONE)["HostedZones"][0]["Id"]
    records = route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    found = next(r for r in records if r["Name"].rstrip(".") == GATEWAY and r["Type"] == "CNAME")
    return [v["Value"].rstrip(".") for v in found["ResourceRecords"]]


async def _run(incident: str, probe_url: str) -> tuple[Any, dict[str, Any]]:
    runbook = Catalog.load(RUNBOOKS, default_registry()).runbooks["payment-gateway-outage"]
    settings = settings_with(connections=CONNECTIONS_FILE)
    flow = compile_runbook(runbook, settings=settings)
    run = flow(
        mode="live", incident={"id": incident}, region=REGION, synthetics_url=probe_url,
        settle_for="1s", requested_by="alert", return_state=True,
    )
    state = await with_approvals(settings.home, runbook.id, run)  # as the team would
    result = await state.aresult(raise_on_failure=False)
    return state, result if isinstance(result, dict) else {"error": repr(result)}


def test_payment_gateway_outage_live_against_the_stand_ins(stand_ins: StandIns) -> None:
    s = stand_ins
    assert _route(s.moto) == [ACQUIRER]

    with s.moto.recording() as first_calls:
        state, summary = asyncio.run(_run("INC-PGW-1", s.probe.url))
    assert state.is_completed(), f"{state.name}: {state.message} {summary}"
    assert "CreateDBClusterSnapshot" in first_calls and any(c.startswith("POST") and "/rrset" in c for c in first_calls), first_calls
    outcomes = {row["step"]: row["outcome"] for row in summary["steps"]}
    assert set(outcomes.values()) == {"completed"}, outcomes

    # a page
    pages = [r.json() for r in s.notify.calls(PAGERDUTY_PATH)]
    assert [p["event_action"] for p in pages] == ["trigger"]
    assert pages[0]["payload"]["summary"] == f"SEV1 payment gateway outage: primary-acquirer in {REGION}"
    # the bridge and the situation report on Slack
    posts = [r.json() for r in s.notify.calls("/slack/api/chat.postMessage")]
    assert [p["channel"] for p in posts] == ["#inc-payments", "#inc-payments"]
    # a ledger snapshot, then a freeze of payouts (after the preview its approvers see)
    snapshots = s.moto.client("rds").describe_db_cluster_snapshots(
        DBClusterIdentifier="ledger-prod", SnapshotType="manual")["DBClusterSnapshots"]
    assert len(snapshots) == 1
    # the runbook's preview step, the preview its approval gate shows its approvers, the freeze
    assert [(r.method, r.path) for r in s.switch.requests] == [("GET", "/preview")] * 2 + [("POST", "/freeze")]
    [gate] = [g for g in GateRecords(engine(Settings.from_environ(os.environ).store_url)).find() if g.step_id == "freeze-payouts" and g.incident_id == "INC-PGW-1"]
    assert gate.state == "approved" and gate.evidence["preview"]["merchants"], gate.evidence
    assert [f["scope"] for f in s.switch.freezes] == ["payouts"]
    assert s.switch.freezes[0]["key"].startswith("INC-PGW-1:freeze-payouts")
    # the gateway's route points at the standby, in moto's Route 53
    assert _route(s.moto) == [STANDBY]
    # the probe ran against the standby route, the status page has the incident, merchants an e-mail
    assert [r.path for r in s.probe.calls("POST")] == [f"/v1/probes/checkout/run?region={REGION}"]
    assert [i["name"] for i in s.page.created()] == ["Gangguan pembayaran / Payment disruption"]
    assert s.page.created()[0]["status"] == "investigating"
    assert [rcpt for _, rcpt, _ in s.mailbox.messages] == [["merchant-announcements@pay.example.com"]]

    # The same incident again: the side-effect ledger has every change; nothing is made twice.
    with s.moto.recording() as aws_calls:
        state, summary = asyncio.run(_run("INC-PGW-1", s.probe.url))
    assert state.is_completed(), f"{state.name}: {state.message} {summary}"
    assert [f["scope"] for f in s.switch.freezes] == ["payouts"], "a second freeze"
    assert s.switch.calls("POST", "/freeze") == s.switch.calls("POST", "/freeze")[:1]
    assert "CreateDBClusterSnapshot" not in aws_calls, f"a second snapshot: {aws_calls}"
    assert not any(c.startswith("POST") and "/rrset" in c for c in aws_calls), f"a second failover: {aws_calls}"
    assert _route(s.moto) == [STANDBY]
    assert len(s.moto.client("rds").describe_db_cluster_snapshots(
        DBClusterIdentifier="ledger-prod", SnapshotType="manual")["DBClusterSnapshots"]) == 1
    assert len(s.page.created()) == 1, "a second status page incident"
