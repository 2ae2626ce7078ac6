"""Situation reports: the cadence in the runbook language (checked at file:line:col like every
field), the pure SITREP builder on the recorded incident stopped half-way, `siaga sitrep` on
demand, and the watcher `siaga up` runs on a clock of a few seconds against a real store: reports
to the liaison through the outbox and to the commander by e-mail (aiosmtpd), recorded in the trail."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from siaga.alerts.parsers import parse
from siaga.audit import AuditTrail
from siaga.cli import main
from siaga.flows.sitreps import watch_sitreps
from siaga.incidents.recording import process
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.report import IncidentFacts, report_markdown, tell
from siaga.report.gather import gather
from siaga.report.sitrep import build_sitrep, recipients, sitrep_due
from siaga.runbook import Runbook, RunbookError, parse_roster, parse_runbook
from siaga.settings import Settings
from siaga.store import engine
from siaga.wiring import Wiring
from testkit.provider_servers import Mailbox, smtp_server

from ..support.alert_payloads import am_alert, webhook
from ..support.report_facts import recorded

REGISTRY = default_registry()
ROSTER = """
people:
  alice: {name: Alice Wibowo, roles: [commander], channels: {email: alice@pay.example.com}}
  budi: {name: Budi Santoso, roles: [liaison]}
  eko: {name: Eko Prasetyo, roles: [ops]}
"""
RUNBOOK = """\
runbook: {id}
title: Gateway errors, reported on
severity: sev2
impact: {{services: [checkout], max_tolerable_downtime: 30m}}
roles: {{commander: [alice], liaison: [budi], ops: [eko]}}
chain_of_command: [ops, commander]
comms:
  sitrep: {sitrep}
triggers:
  - source: alertmanager
    match: {{alertname: GatewayErrors}}
    group_by: [region]
steps:
  - {{id: look, action: note, with: {{text: looking}}}}
"""


def runbook(runbook_id: str, sitrep: str = "{every: 2s}") -> Runbook:
    return parse_runbook(
        RUNBOOK.format(id=runbook_id, sitrep=sitrep),
        REGISTRY,
        file=f"{runbook_id}.yaml",
        roster=parse_roster(ROSTER),
    )


def test_the_cadence_is_checked_like_every_field() -> None:
    assert runbook("cadence-ok").comms.sitrep.every == timedelta(seconds=2)  # type: ignore[union-attr]
    assert runbook("cadence-ok").comms.sitrep.to == ["liaison", "commander"]  # type: ignore[union-attr]
    with pytest.raises(RunbookError) as caught:
        runbook("cadence-bad", "{every: soon}")
    [bad] = caught.value.diagnostics
    assert (bad.path, bad.line, bad.column) == ("comms.sitrep.every", 8, 19)
    with pytest.raises(RunbookError) as caught:
        runbook("cadence-who", "{every: 30m, to: [liason, commander]}")
    [who] = caught.value.diagnostics
    assert (who.code, who.path, who.line, who.column) == (
        "unknown-role",
        "comms.sitrep.to[0]",
        8,
        29,
    )
    assert who.hint == "did you mean `liaison`?"
    with pytest.raises(RunbookError) as caught:
        runbook("cadence-zero", "{every: 0s}")
    assert "longer than 0s" in caught.value.diagnostics[0].message


def halfway() -> IncidentFacts:
    """The recorded incident as it stood when the liaison had approved the statement and the
    commander had not yet: the statement gate open, the deadlines pending, the incident open."""
    facts = recorded()
    cut = next(
        i for i, r in enumerate(facts.records) if r.kind == "gate.approved" and r.actor == "budi"
    )
    incident = facts.incident
    assert incident is not None
    return replace(
        facts,
        records=facts.records[: cut + 1],
        incident=replace(incident, state="open", resolved_at=None),
        gates=[
            replace(g, state="open", decided_at=None, approvers=[])
            if g.step_id == "publish-customers"
            else g
            for g in facts.gates
        ],
        deadlines=[replace(d, state="pending", met_at=None, met_by=None) for d in facts.deadlines],
    )


def test_a_sitrep_says_conditions_actions_and_needs() -> None:
    facts = halfway()
    opened = facts.incident.opened_at  # type: ignore[union-attr]
    report = build_sitrep(tell(facts), opened + timedelta(minutes=45))
    assert report.number == 1 and not report.drill
    assert (
        report.subject == f"SITREP 1: Payouts held while the gateway fails ({facts.chain}) at "
        f"{opened + timedelta(minutes=45):%H:%M} UTC"
    )
    conditions, actions, needs = report.conditions, report.actions, report.needs
    assert conditions[0].startswith(f"Incident {facts.chain} open, opened ")
    assert conditions[0].endswith(
        "open for 45m 00s; the maximum tolerable downtime (30m 00s) was passed 15m 00s ago."
    )
    assert conditions[1] == "Impact: payouts, checkout (sev1)."
    assert conditions[2].startswith("Alerts firing (1): GatewayErrors since ")
    assert actions[0] == (
        "Done: "
        + ", ".join(
            f"{s.step_id} (completed, {s.ended_at:%H:%M})"
            for s in tell(facts).spans
            if s.outcome == "completed"
        )
        + "."
    )
    assert any(a.startswith("Waiting at the gate of publish-customers since ") for a in actions)
    [decision, *deadlines] = needs
    assert decision.startswith(
        "Decision at the gate of publish-customers (comms.publish): deadline "
    )
    assert "; may answer: alice (" in decision, "budi answered already; eko was never asked"
    assert sorted(d.split(" due ")[0] for d in deadlines) == [
        "Statement to customers",
        "Statement to public",
    ]
    assert all("(in 15m 00s); none published yet." in d for d in deadlines)
    late = build_sitrep(tell(facts), opened + timedelta(minutes=70))
    assert [n for n in late.needs if n.startswith("OVERDUE: the statement to customers was due ")]
    text = report.text()
    assert text.index("CONDITIONS") < text.index("ACTIONS") < text.index("NEEDS")
    assert "only approved statements" in text


def test_when_a_sitrep_is_due_and_whom_it_goes_to() -> None:
    t0 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    every = timedelta(minutes=30)
    assert not sitrep_due(t0, None, every, t0 + timedelta(minutes=29))
    assert sitrep_due(t0, None, every, t0 + every)
    assert not sitrep_due(t0, t0 + timedelta(minutes=40), every, t0 + timedelta(minutes=60))
    assert sitrep_due(t0, t0 + timedelta(minutes=40), every, t0 + timedelta(minutes=70))
    facts = recorded()
    assert recipients(facts.runbook) == ["budi", "alice"]  # liaison, then commander
    assert recipients(replace(facts.runbook, sitrep_to=["ops", "commander"])) == ["eko", "alice"]  # type: ignore[type-var]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Mailbox]]:
    """A runbook folder with the roster and an SMTP connection to a local mailbox, in the files
    beside its runbooks (where the watcher and `siaga sitrep --runbooks` look when the settings name
    no others)."""
    monkeypatch.delenv("SIAGA_ROSTER", raising=False)
    monkeypatch.setenv("SIAGA_SECRET_SITREP_MAIL", "sitrep-mail-password-77e")
    with smtp_server(tmp_path, "siaga", "sitrep-mail-password-77e") as box:
        (tmp_path / "roster.yaml").write_text(ROSTER)
        connections = tmp_path / "connections.yaml"
        connections.write_text(
            json.dumps(
                {
                    "connections": {
                        "mail": {
                            "type": "smtp",
                            "host": "localhost",
                            "port": box.port,
                            "username": "siaga",
                            "password": "secret://sitrep-mail",
                            "sender": "Siaga <siaga@pay.example.com>",
                            "ca_file": box.ca_file,
                        }
                    }
                }
            )
        )
        yield tmp_path, box


def open_incident(found: Runbook, now: datetime) -> str:
    """An incident opened by an Alertmanager alert through the receiver's own recording path."""
    [alert] = parse("alertmanager", webhook(am_alert(f"r-{uuid.uuid4().hex[:8]}")))
    [incident] = process(engine(Settings.from_environ(os.environ).store_url), {found.id: found}, alert, now).opened
    return incident


def test_the_watcher_sends_on_the_cadence_to_the_liaison_and_commander(
    siaga_home: Path, folder: tuple[Path, Mailbox], capsys: pytest.CaptureFixture[str]
) -> None:
    """The service `siaga up` starts, on the real clock and store, with a 2-second cadence."""
    runbook_folder, mailbox = folder
    found = runbook(f"sitrep-watched-{uuid.uuid4().hex[:6]}")
    (runbook_folder / f"{found.id}.yaml").write_text(
        RUNBOOK.format(id=found.id, sitrep="{every: 2s}")
    )
    opened = datetime.now(UTC)
    incident = open_incident(found, opened)
    store = engine(Settings.from_environ(os.environ).store_url)

    async def watch() -> list[Any]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(
            watch_sitreps(stop, {found.id: found}, interval=0.1, folder=runbook_folder, store=store,
                          wiring=Wiring(Settings.from_environ(os.environ)))
        )
        try:
            for _ in range(300):  # up to 30 s for the two reports due 2 s and 4 s after the opening
                sent = [r for r in AuditTrail(store).records(incident) if r.kind == "sitrep.sent"]
                if len(sent) >= 2:
                    return sent
                await asyncio.sleep(0.1)
            raise AssertionError(f"the watcher sent {len(sent)} reports")
        finally:
            stop.set()
            await watcher

    first, second = asyncio.run(watch())[:2]
    assert (first.data["number"], second.data["number"]) == (1, 2)
    assert first.at - opened >= timedelta(seconds=2) and second.at - first.at >= timedelta(
        seconds=2
    )
    assert first.channel == "system" and first.data["to"] == ["budi", "alice"]
    assert first.data["sent"] == [
        {"to": "budi", "channel": "outbox"},
        {"to": "alice", "channel": "smtp"},
    ]
    assert first.data["subject"].startswith("SITREP 1: Gateway errors, reported on")
    to_budi = [
        e for e in read_outbox(siaga_home) if e["to"] == "person:budi" and incident in e["message"]
    ]
    assert [e["subject"] for e in to_budi][:2] == [first.data["subject"], second.data["subject"]]
    assert "Alerts firing (1): GatewayErrors since" in to_budi[0]["message"]
    assert "No decision or statement is waiting." in to_budi[0]["message"]
    mails = [m for _, rcpt, m in mailbox.messages if rcpt == ["alice@pay.example.com"]]
    assert len(mails) >= 2 and str(mails[0]["Subject"]).strip() == first.data["subject"]
    assert "sitrep-mail-password-77e" not in json.dumps(
        [r.data for r in AuditTrail(store).records(incident)]
    )

    # on demand: shown (nothing sent), then sent and recorded as the third
    capsys.readouterr()
    assert main(["sitrep", incident, "--json", "--runbooks", str(runbook_folder)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["sent"] == []
        and shown["number"]
        == len([r for r in AuditTrail(store).records(incident) if r.kind == "sitrep.sent"]) + 1
    )
    assert shown["conditions"][0].startswith(f"Incident {incident} open")
    before = len(AuditTrail(store).records(incident))
    assert main(["sitrep", incident[:16], "--send", "--runbooks", str(runbook_folder)]) == 0
    said = capsys.readouterr().out
    assert "CONDITIONS" in said and "sent to budi (outbox), alice (smtp)" in said
    newest = AuditTrail(store).records(incident)[before:]
    assert [(r.kind, r.channel) for r in newest] == [("sitrep.sent", "cli")]
    # and the post-incident report lists every one among the messages sent
    messages = report_markdown(tell(gather(store, incident, registry=REGISTRY, folder=runbook_folder))).split(
        "## Messages sent"
    )[1]
    sent = [line for line in messages.split("##")[0].splitlines() if "| sitrep |" in line]
    assert len(sent) == 2 * len(
        [r for r in AuditTrail(store).records(incident) if r.kind == "sitrep.sent"]
    )
    assert any("| sitrep | budi | outbox |" in line for line in sent)
    assert any("| sitrep | alice | smtp |" in line for line in sent)
