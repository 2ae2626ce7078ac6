"""The post-incident report of a whole incident driven end to end: `siaga up` (on the session's
Prefect server) with a runbook that freezes payouts on a kill-switch stand-in behind an approval
gate, drafts a customer statement and publishes it, behind a second gate, to a Statuspage
stand-in, an aiosmtpd mailbox and the outbox, then fails its last check, so the freeze is undone.
The alert goes to the receiver as Alertmanager would post it; people approve through Prefect's
API with the codes they were sent. Then `siaga report` as Markdown and HTML: every trail record in
order, the decisions and messages listed, the HTML opened in Debian's chromium and screenshotted,
and the providers' secrets (one echoed back by a careless switch, one by a failing check) nowhere
in the report, its picture, the trail's export or the run's report artifact."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from siaga.approvals.records import GateRecords
from siaga.audit import AuditTrail
from siaga.audit.chain import AuditRecord
from siaga.flows.server import free_port
from siaga.store import engine
from testkit.provider_servers import Mailbox, smtp_server

from ..conftest import RUNBOOKS
from ..support.alert_payloads import am_alert, webhook
from ..support.browser import browser_fixture, page_fixture  # noqa: F401
from ..support.gate_driver import approving_in_background
from ..support.live_receiver import read
from ..support.payment_standins import FakeStatuspage, KillSwitch
from ..support.stack import clean_env, stop
from ..support.webhook_server import WebhookServer, webhook_server

pytestmark = pytest.mark.slow

RUNBOOK = "payout-freeze-report"
TOKEN = "report-alertmanager-token"
CANARIES = {
    "REPORT_SWITCH_TOKEN": "canary-switch-5d1f0c77",
    "REPORT_STATUS_KEY": "canary-status-9a4e2b10",
    "REPORT_MAIL_PASSWORD": "canary-mail-3c8f6d21",
    "REPORT_CHECK_KEY": "canary-check-7b2a9e45",
}
ROSTER = """
people:
  alice: {name: Alice Wibowo, roles: [commander]}
  budi: {name: Budi Santoso, roles: [liaison]}
  eko: {name: Eko Prasetyo, roles: [ops]}
"""
RUNBOOK_YAML = """\
runbook: payout-freeze-report
title: Payouts held while the gateway fails
severity: sev1
impact:
  services: [payouts, checkout]
  max_tolerable_downtime: 30m
  public_statement_within: 1h
roles: {commander: [alice], liaison: [budi], ops: [eko]}
chain_of_command: [ops, commander]
comms:
  languages: [id, en]
  timezone: Asia/Jakarta
  deadlines: {customers: 1h}
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: alertmanager
    match: {alertname: GatewayErrors}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
steps:
  - id: page-oncall
    action: outbox.send
    with: {to: "pagerduty:payments-oncall", message: "Gateway errors in {{ inputs.region }}"}
  - id: freeze-payouts
    action: payments.freeze
    approval: {from: [ops], timeout: 10m}
    with: {scope: payouts, reason: "gateway errors in {{ inputs.region }}"}
    undo: payments.unfreeze
  - id: draft-customers
    action: comms.draft
    with:
      audience: customers
      next_update: 30m
      facts:
        headline: {id: Gangguan pembayaran, en: Payment disruption}
        what_happened: {id: Sebagian pembayaran kartu gagal., en: Some card payments are failing.}
        impact: {id: Dana Anda aman., en: Your funds are safe.}
        doing: {id: Kami mengalihkan ke jalur cadangan., en: We are moving to a standby route.}
  - id: publish-customers
    action: comms.publish
    after: [draft-customers, freeze-payouts]
    approval: {from: [liaison, commander], quorum: 2, distinct_roles: true}
    with:
      draft: "{{ steps['draft-customers'].output }}"
      channels:
        - {action: statuspage.create_incident, with: {status: investigating, impact: major}}
        - {action: email.send, with: {to: [customers-list@pay.example.com]}}
        - {action: outbox.send, with: {to: "customers:app-banner"}}
  - id: verify-checkout
    action: http.request
    with: {url: "{check}/checkout", sign: {secret: "secret://report-check-key"}}
on_resolve:
  - id: all-clear
    action: outbox.send
    with: {to: team, message: "All clear: the gateway answers again."}
"""


@dataclass
class Incident:
    id: str
    run_id: str
    home: Path
    folder: Path
    api: str
    switch: KillSwitch
    page: FakeStatuspage
    mailbox: Mailbox
    check: WebhookServer

    def siaga(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The command line as a person at the incident's machine runs it: its home, and none of
        the secrets the stack was given (what is redacted must have been redacted when written)."""
        env = clean_env(self.home)
        return subprocess.run(
            [sys.executable, "-m", "siaga.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    def records(self) -> list[AuditRecord]:
        return AuditTrail(engine(f"sqlite:///{self.home / 'siaga.db'}")).records(self.id)


def _wait(what: str, check: Any, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def incident(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("report-home")
    folder = home / "runbooks"
    shutil.copytree(RUNBOOKS / "templates", folder / "templates")
    (folder / "roster.yaml").write_text(ROSTER)
    with ExitStack() as stack:
        switch = stack.enter_context(
            KillSwitch(CANARIES["REPORT_SWITCH_TOKEN"], echo_auth=True).running()
        )
        page = stack.enter_context(FakeStatuspage(CANARIES["REPORT_STATUS_KEY"]).running())
        mailbox = stack.enter_context(smtp_server(home, "siaga", CANARIES["REPORT_MAIL_PASSWORD"]))
        check = stack.enter_context(webhook_server())
        # the last check fails, saying the credential it was given, as a careless service might
        check.answer(
            "/checkout",
            (503, {"error": f"upstream down; token {CANARIES['REPORT_CHECK_KEY']} rejected"}),
        )
        (folder / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML.replace("{check}", check.url))
        (folder / "connections.yaml").write_text(
            json.dumps(
                {
                    "connections": {
                        "switch": {
                            "type": "payment_switch",
                            "base_url": switch.url,
                            "auth": {"bearer": "secret://report-switch-token"},
                        },
                        "status": {
                            "type": "statuspage",
                            "base_url": f"{page.url}/v1",
                            "page_id": page.page_id,
                            "api_key": "secret://report-status-key",
                        },
                        "mail": {
                            "type": "smtp",
                            "host": "localhost",
                            "port": mailbox.port,
                            "username": "siaga",
                            "password": "secret://report-mail-password",
                            "sender": "Siaga <siaga@pay.example.com>",
                            "ca_file": mailbox.ca_file,
                        },
                    }
                }
            )
        )
        receiver_port = free_port()
        env = {
            **clean_env(home),
            "PREFECT_API_URL": prefect_api,
            "SIAGA_ALERTMANAGER_TOKEN": TOKEN,
            **{f"SIAGA_SECRET_{name}": value for name, value in CANARIES.items()},
        }
        output = home / "up.log"
        with output.open("w") as log:
            up = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "siaga.cli",
                    "up",
                    "--runbooks",
                    str(folder),
                    "--receiver-port",
                    str(receiver_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
        try:
            _wait(
                "siaga up",
                lambda: up.poll() is not None or "Siaga is up" in output.read_text(),
                180,
            )
            assert up.poll() is None, output.read_text()
            receiver = f"http://127.0.0.1:{receiver_port}"
            region = f"r-{uuid.uuid4().hex[:8]}"
            store = f"sqlite:///{home / 'siaga.db'}"
            with (
                temporary_settings({PREFECT_API_URL: prefect_api}),
                approving_in_background(home, RUNBOOK, store),
            ):
                answer = httpx.post(
                    f"{receiver}/hooks/alertmanager",
                    json=webhook(am_alert(region)),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=10,
                )
                assert answer.status_code == 202, answer.text
                opened = _wait(
                    "the incident's run",
                    lambda: [
                        i
                        for i in read(receiver)
                        if i["runbook_id"] == RUNBOOK and i["flow_run_id"]
                    ],
                )
                run_id = opened[0]["flow_run_id"]
                state = _wait("the run to end", lambda: _final(prefect_api, run_id), 300)
            assert state["type"] == "FAILED", (state, output.read_text()[-3000:])
            answer = httpx.post(
                f"{receiver}/hooks/alertmanager",
                json=webhook(am_alert(region, "resolved")),
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=10,
            )
            assert answer.status_code == 202, answer.text
            _wait(
                "the incident to resolve",
                lambda: [
                    i
                    for i in read(receiver)
                    if i["id"] == opened[0]["id"] and i["state"] == "resolved"
                ],
            )
            resolving = _wait("the resolve run", lambda: _resolve_run(prefect_api, opened[0]["id"]))
            resolved = _wait("the resolve run to end", lambda: _final(prefect_api, resolving), 300)
            assert resolved["type"] == "COMPLETED", (resolved, output.read_text()[-3000:])
            yield Incident(
                opened[0]["id"], run_id, home, folder, prefect_api, switch, page, mailbox, check
            )
        finally:
            stop(up)


@contextlib.contextmanager
def _serving(folder: Path) -> Iterator[str]:
    """`folder` over HTTP on loopback (the browser fixture lets pages reach only this machine)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _resolve_run(api: str, incident_id: str) -> str | None:
    found = httpx.post(
        f"{api}/flow_runs/filter",
        timeout=10,
        json={"flow_runs": {"tags": {"all_": ["resolve", incident_id]}}},
    ).json()
    return found[0]["id"] if found else None


def _final(api: str, run_id: str) -> dict[str, Any] | None:
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
    return state if state["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") else None


def _report_rows(markdown: str) -> list[tuple[int, str]]:
    """(seq, kind) of each row of the report's audit trail table, in order."""
    section = markdown.split("## Audit trail", 1)[1]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 5 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[2].strip("`")))
    return rows


def test_the_report_tells_the_whole_incident_and_renders_in_chromium(
    incident: Incident, page: Page, tmp_path: Path
) -> None:
    # what really happened, on the providers' side
    assert len(incident.switch.freezes) == 1 and incident.switch.active == [], "frozen, then undone"
    [statement] = incident.page.created()
    assert statement["name"] == "Gangguan pembayaran / Payment disruption"
    assert [rcpt for _, rcpt, _ in incident.mailbox.messages] == [
        ["customers-list@pay.example.com"]
    ]

    # the incident view shows its statement deadlines, met by the gated statement
    shown = incident.siaga("incident", incident.id, "--json")
    deadlines = {d["name"]: d for d in json.loads(shown.stdout)["deadlines"]}
    assert {name: d["state"] for name, d in deadlines.items()} == {"public": "met", "customers": "met"}
    viewed = incident.siaga("incident", incident.id).stdout
    assert "2 statement deadlines" in viewed and "met" in viewed

    markdown_file, folder = tmp_path / "report.md", str(incident.folder)
    made = incident.siaga(
        "report", incident.id, "--format", "md", "-o", str(markdown_file), "--runbooks", folder
    )
    assert made.returncode == 0, made.stderr
    markdown = markdown_file.read_text()
    picture = tmp_path / "report.timeline.svg"
    assert f"![Timeline of {incident.id}](report.timeline.svg)" in markdown
    assert picture.read_text().startswith("<svg ") and "gate freeze-payouts" in picture.read_text()
    records = incident.records()
    # every record of the trail, in order; the report's writing is the newest record
    assert _report_rows(markdown) == [(r.seq, r.kind) for r in records[:-1]]
    generated = records[-1]
    assert generated.kind == "report.generated" and generated.channel == "cli"
    assert generated.data["files"] == [str(markdown_file), str(picture)]
    assert generated.data["sha256"] == hashlib.sha256(markdown.encode()).hexdigest()
    assert generated.data["head"] == records[-2].hash
    kinds = {r.kind for r in records}
    assert {
        "alert.received",
        "incident.opened",
        "run.started",
        "gate.opened",
        "gate.code_sent",
        "gate.approved",
        "gate.decided",
        "step.finished",
        "step.failed",
        "step.undone",
        "run.finished",
        "incident.resolved",
    } <= kinds

    gates = {
        g.step_id: g
        for g in GateRecords(engine(f"sqlite:///{incident.home / 'siaga.db'}")).find(
            incident_id=incident.id
        )
    }
    assert gates["freeze-payouts"].approvers == ["eko"]
    assert sorted(gates["publish-customers"].approvers or []) == ["alice", "budi"]
    decisions = markdown.split("## Decisions", 1)[1].split("## Messages sent", 1)[0]
    for person, gate in (
        ("eko", "freeze-payouts"),
        ("budi", "publish-customers"),
        ("alice", "publish-customers"),
    ):
        assert (
            f"| `{gate}` | approved | {person} | cli | `{gates[gate].params_hash}` |" in decisions
        ), decisions
    messages = markdown.split("## Messages sent", 1)[1].split("## What failed", 1)[0]
    assert "| notification | pagerduty:payments-oncall | outbox | `page-oncall` |" in messages, (
        messages
    )
    assert (
        "| statement | customers | email (smtp), outbox (outbox), statuspage (statuspage) | `publish-customers` |"
        in messages
    ), messages
    assert "| approval code | eko | outbox | `freeze-payouts` |" in messages
    failed = markdown.split("## What failed and what was undone", 1)[1].split("##", 1)[0]
    assert "- Step verify-checkout (http.request) failed at " in failed and "503" in failed
    assert "- Step freeze-payouts undone (payments.unfreeze) at " in failed
    assert "| Outcome | run failed; resolve run completed; incident resolved |" in markdown
    assert "| notification | team | outbox | `all-clear` |" in messages, messages
    impact = markdown.split("## Impact and durations", 1)[1].split("##", 1)[0]
    assert "| first public statement |" in impact and "| 1h 00m | ✓ met |" in impact
    assert "| incident duration |" in impact and "| 30m 00s | ✓ met |" in impact
    lessons = markdown.split("## Lessons learned", 1)[1].split("## Audit trail", 1)[0]
    line = RUNBOOK_YAML.splitlines().index("  - id: verify-checkout") + 1
    assert (
        f"(step `verify-checkout`, `{incident.folder / (RUNBOOK + '.yaml')}:{line}`)" in lessons
    ), lessons

    html_file = tmp_path / "report.html"
    made = incident.siaga(
        "report", incident.id[:14], "--format", "html", "-o", str(html_file), "--runbooks", folder
    )
    assert made.returncode == 0, made.stderr
    records = incident.records()
    assert records[-1].kind == "report.generated" and records[-2].kind == "report.generated"
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    with _serving(tmp_path) as url:
        page.goto(f"{url}/report.html")
    assert requested[0] == f"{url}/report.html"
    assert [u for u in requested if u not in (f"{url}/report.html", f"{url}/favicon.ico")] == [], (
        "self-contained"
    )
    svg = page.locator("figure svg.siaga-timeline")
    svg.wait_for(state="visible")
    box = svg.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    assert page.locator("svg.siaga-timeline rect.bar.step").count() >= 5
    shown = [
        (int(row.get_attribute("data-seq") or 0), row.locator("td").nth(2).inner_text())
        for row in page.locator("table.trail tr.event").all()
    ]
    assert shown == [(r.seq, r.kind) for r in records[:-1]]
    assert page.locator("table.decisions tr").count() == 1 + sum(
        1
        for r in records
        if r.kind
        in (
            "gate.approved",
            "gate.decided",
            "gate.rejected",
            "gate.escalated",
            "gate.refused",
            "gate.timed_out",
            "gate.locked_out",
        )
    )
    assert "publish-customers" in page.locator("table.messages").inner_text()
    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert (
        screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    )


def test_no_provider_secret_reaches_the_report_the_trail_or_the_artifact(
    incident: Incident, tmp_path: Path
) -> None:
    made = [
        incident.siaga(
            "report",
            incident.id,
            "--format",
            fmt,
            "-o",
            str(tmp_path / f"r.{fmt}"),
            "--runbooks",
            str(incident.folder),
        )
        for fmt in ("md", "html")
    ]
    assert all(m.returncode == 0 for m in made), [m.stderr for m in made]
    printed = incident.siaga("report", incident.id)  # Markdown on standard output, picture inline
    assert (
        f"The runbook {RUNBOOK} is not in the runbook folder" in printed.stdout
    )  # not given: said so
    assert printed.returncode == 0 and "data:image/svg+xml;base64," in printed.stdout
    export = incident.siaga("audit", "export", incident.id)
    assert export.returncode == 0, export.stderr
    # the secrets were in play: the switch and the check said them back, redacted on the way in
    assert (
        "[secret:report-switch-token]" in export.stdout
        and "[secret:report-check-key]" in export.stdout
    )
    artifacts = httpx.post(
        f"{incident.api}/artifacts/filter",
        json={
            "artifacts": {
                "key": {"any_": [f"{RUNBOOK}-report"]},
                "flow_run_id": {"any_": [incident.run_id]},
            }
        },
    ).json()
    assert artifacts, "the run published its report"
    assert "## Decisions" in artifacts[0]["data"] and "publish-customers" in artifacts[0]["data"]
    texts = {
        "report.md": (tmp_path / "r.md").read_text(),
        "report.html": (tmp_path / "r.html").read_text(),
        "timeline.svg": (tmp_path / "r.timeline.svg").read_text(),
        "stdout report": printed.stdout,
        "trail export": export.stdout,
        "artifact": json.dumps(artifacts),
    }
    for where, text in texts.items():
        for name, canary in CANARIES.items():
            assert canary not in text, f"{name} in the {where}"
