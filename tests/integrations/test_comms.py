"""Crisis statements: drafted from the bundled templates in Indonesian and English, refused when
tampered with, checked at validation, and sent after a real approval gate to a local Statuspage
stand-in, an aiosmtpd mailbox and the outbox, byte for byte as approved."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import os
import pytest
from pydantic import ValidationError

from siaga.actions import ActionContext, ActionFailed, Mode
from siaga.approvals.records import GateRecords
from siaga.report.deadlines import DeadlineRecords
from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from siaga.integrations.comms import Draft, DraftText, Message, Publish, draft, draft_hash, publish
from siaga.integrations.outbox import read_outbox
from siaga.runbook import RunbookError, parse_roster, parse_runbook
from siaga.runbook.loader import read_templates
from siaga.settings import Settings
from siaga.store import engine
from testkit.provider_servers import smtp_server

from ..conftest import RUNBOOKS
from ..support.gate_driver import with_approvals
from ..support.payment_standins import FakeStatuspage
from ..support.settings import settings_with

REGISTRY = default_registry()
ROSTER = """
people:
  alice: {name: Alice Wibowo, roles: [commander]}
  budi: {name: Budi Santoso, roles: [liaison]}
  eko: {name: Eko Prasetyo, roles: [ops]}
"""
FACTS = {
    "headline": {"id": "Gangguan pembayaran", "en": "Payment disruption"},
    "what_happened": {"id": "Sebagian pembayaran kartu gagal.", "en": "Some card payments are failing."},
    "impact": {"id": "Dana Anda aman.", "en": "Your funds are safe."},
    "doing": {"id": "Kami mengalihkan ke jalur cadangan.", "en": "We are moving to a standby route."},
}


def context(tmp_path: Path, **extra: Any) -> ActionContext:
    values: dict[str, Any] = {
        "runbook_id": "comms-test", "step_id": "draft", "run_id": "run-1", "mode": Mode.LIVE,
        "home": tmp_path, "library": RUNBOOKS, "incident_id": "INC-77",
        "comms": {"languages": ["id", "en"], "timezone": "Asia/Jakarta"},
    }
    return ActionContext(**(values | extra))


def drafted(tmp_path: Path, **params: Any) -> DraftText:
    return asyncio.run(draft(Draft.model_validate({"audience": "customers", "facts": FACTS} | params), context(tmp_path)))


def test_a_draft_is_written_in_both_languages_from_the_incident(tmp_path: Path) -> None:
    statement = drafted(tmp_path, next_update="30m")
    assert statement.languages == ["id", "en"]
    indonesian, english = statement.messages["id"], statement.messages["en"]
    assert (indonesian.subject, english.subject) == ("Gangguan pembayaran", "Payment disruption")
    assert indonesian.body.startswith("Sebagian pembayaran kartu gagal.\n\n**Dampaknya bagi Anda:** Dana Anda aman.")
    assert "paling lambat pukul" in indonesian.body and indonesian.body.endswith(" WIB.")
    assert english.body.startswith("Some card payments are failing.\n\n**What this means for you:** Your funds are safe.")
    assert "We will post the next update by" in english.body and english.body.endswith(" WIB.")
    # the channels send every language, Indonesian first, as one subject and one text
    assert statement.subject == "Gangguan pembayaran / Payment disruption"
    assert statement.text == indonesian.body + "\n\n---\n\n" + english.body
    assert statement.sha256 == draft_hash(statement) and len(statement.sha256) == 64

    report = asyncio.run(draft(Draft.model_validate({
        "audience": "regulator", "languages": ["en"], "facts": {**FACTS, "contact": "budi (liaison)"},
    }), context(tmp_path)))
    assert report.subject == "Initial incident report: Payment disruption"
    assert "Incident reference: INC-77" in report.text and "4. Contact: budi (liaison)" in report.text


def test_a_fact_missing_a_language_stops_the_draft(tmp_path: Path) -> None:
    with pytest.raises(ActionFailed, match="fact `impact` has no `id` text"):
        drafted(tmp_path, facts={**FACTS, "impact": {"en": "Your funds are safe."}})


def test_publish_refuses_a_tampered_draft(tmp_path: Path) -> None:
    statement = drafted(tmp_path).model_dump(mode="json")
    tampered = json.loads(json.dumps(statement))
    tampered["messages"]["en"]["body"] = "All is fine, nothing happened."
    with pytest.raises(ValidationError, match="does not match its sha256"):
        Publish.model_validate({"draft": tampered})
    combined = json.loads(json.dumps(statement))
    combined["text"] = combined["text"].replace("Dana Anda aman", "Dana Anda hilang")
    with pytest.raises(ValidationError, match="does not match its sha256"):
        Publish.model_validate({"draft": combined})
    # and the action itself never sends a text its hash does not cover
    messages = {lang: Message(**m) for lang, m in tampered.pop("messages").items()}
    forged = Publish.model_construct(draft=DraftText.model_construct(**tampered, messages=messages), channels=[])
    with pytest.raises(ActionFailed, match="does not match its sha256"):
        asyncio.run(publish(forged, context(tmp_path, step_id="publish")))
    assert not read_outbox(tmp_path)


def test_a_channel_cannot_replace_the_approved_text() -> None:
    statement = {"audience": "customers", "languages": ["en"], "messages": {"en": {"subject": "S", "body": "B"}},
                 "subject": "S", "text": "B"}
    statement["sha256"] = draft_hash(statement)
    for channel in ({"action": "statuspage.create_incident", "with": {"body": "other"}},
                    {"action": "email.send", "with": {"to": ["a@example.com"], "html": "<p>other</p>"}},
                    {"action": "outbox.send", "with": {"message": "other"}}):
        with pytest.raises(ValidationError, match="come from the approved draft"):
            Publish.model_validate({"draft": statement, "channels": [channel]})


RUNBOOK = """\
runbook: {id}
title: Payment disruption statement
severity: sev2
roles: {{commander: [alice], liaison: [budi], ops: [eko]}}
chain_of_command: [ops, commander]
comms:
  languages: [id, en]
  timezone: Asia/Jakarta
  deadlines: {{customers: 1h}}
steps:
  - id: draft-customers
    action: comms.draft
    with:
      audience: customers
      next_update: 30m
      facts: {facts}
  - id: publish-customers
    action: comms.publish
    after: [draft-customers]
    approval: {{from: [liaison, commander], quorum: 2, distinct_roles: true}}
    with:
      draft: "{{{{ steps['draft-customers'].output }}}}"
      channels: {channels}
"""


def statement_runbook(runbook_id: str, channels: str) -> Any:
    text = RUNBOOK.format(id=runbook_id, facts=json.dumps(FACTS), channels=channels)
    return parse_runbook(text, REGISTRY, file=f"{runbook_id}.yaml", roster=parse_roster(ROSTER),
                         templates=read_templates(RUNBOOKS))


def test_validation_finds_a_missing_template_and_a_missing_fact() -> None:
    text = RUNBOOK.format(id="comms-missing", facts=json.dumps({"headline": "x"}), channels="[{action: outbox.send}]")
    text = text.replace("audience: customers", "audience: media")
    with pytest.raises(RunbookError) as caught:
        parse_runbook(text, REGISTRY, file="comms-missing.yaml", templates={
            "media.id.md.j2": "# {{ facts.headline }}\n{{ facts.what_happened }}",
        })
    found = [(d.code, d.path, d.line) for d in caught.value.diagnostics]
    assert found == [
        ("missing-template", "steps[0].with.audience", 14),
        ("missing-fact", "steps[0].with.facts", 16),
    ]
    assert "`templates/media.en.md.j2`" in caught.value.diagnostics[0].message
    assert "facts.what_happened" in caught.value.diagnostics[1].message


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The session's settings with a roster file of the people these runbooks name."""
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER)
    return settings_with(roster=path)


@pytest.fixture
def providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeStatuspage, Any, Path]]:
    """The status page and the mail server the statements go to, and the connections file that
    reaches them."""
    monkeypatch.setenv("SIAGA_SECRET_STATUS_KEY", "status-key-3f1")
    monkeypatch.setenv("SIAGA_SECRET_MAIL_PASSWORD", "mail-password-9c2")
    with FakeStatuspage("status-key-3f1").running() as page, smtp_server(tmp_path, "siaga", "mail-password-9c2") as box:
        connections = {"connections": {
            "status": {"type": "statuspage", "base_url": f"{page.url}/v1", "page_id": page.page_id,  # type: ignore[attr-defined]
                       "api_key": "secret://status-key"},
            "mail": {"type": "smtp", "host": "localhost", "port": box.port, "username": "siaga",
                     "password": "secret://mail-password", "sender": "Siaga <siaga@pay.example.com>",
                     "ca_file": box.ca_file},
        }}
        path = tmp_path / "connections.yaml"
        path.write_text(json.dumps(connections))
        yield page, box, path  # type: ignore[misc]


@pytest.mark.usefixtures("prefect_api")
def test_a_gated_statement_goes_out_exactly_as_approved(siaga_home: Path, settings: Settings, providers: Any) -> None:
    page, box, connections = providers
    runbook = statement_runbook("comms-gated", """
        - {action: statuspage.create_incident, with: {status: investigating, impact: major}}
        - {action: email.send, with: {to: [customers-list@pay.example.com]}}
        - {action: email.send, id: email-en, language: en, with: {to: [expat-desk@pay.example.com]}}
        - {action: outbox.send, with: {to: "customers:app-banner"}}""")
    flow = compile_runbook(runbook, settings=replace(settings, connections=connections))
    state = asyncio.run(with_approvals(siaga_home, runbook.id, flow(incident={"id": "INC-COMMS-1"}, requested_by="alert", return_state=True)))
    assert state.is_completed(), state.message

    [gate] = [g for g in GateRecords(engine(Settings.from_environ(os.environ).store_url)).find(incident_id="INC-COMMS-1") if g.step_id == "publish-customers"]
    assert gate.state == "approved" and sorted(gate.approvers or []) == ["alice", "budi"]
    approved = gate.evidence["params"]["draft"]  # what the approvers were shown
    assert approved["subject"] == "Gangguan pembayaran / Payment disruption"
    text, english = approved["text"], approved["messages"]["en"]
    assert "Sebagian pembayaran kartu gagal." in text and "Some card payments are failing." in text
    # ...and, readable, as each channel would send it
    shown = gate.evidence["preview"]
    assert shown.startswith("== statuspage: statuspage.create_incident (status: investigating, impact: major)\n"
                            f"Subject: {approved['subject']}\n\n{text}\n\n== email: email.send")
    assert f"Subject: {english['subject']}\n\n{english['body']}\n\n== outbox" in shown

    [incident] = page.created()
    assert incident["name"] == approved["subject"]
    assert [u["body"] for u in incident["incident_updates"]] == [text]
    mails = {tuple(rcpt): message for _, rcpt, message in box.messages}

    def plain(message: Any) -> str:  # mail lines end in CRLF on the wire (RFC 5322)
        return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n").rstrip("\n")

    assert set(mails) == {("customers-list@pay.example.com",), ("expat-desk@pay.example.com",)}
    both = mails[("customers-list@pay.example.com",)]
    assert both["Subject"] == approved["subject"]
    assert plain(both) == text
    only_english = mails[("expat-desk@pay.example.com",)]
    assert only_english["Subject"] == english["subject"]
    assert plain(only_english) == english["body"]
    [banner] = [e for e in read_outbox(siaga_home) if e["to"] == "customers:app-banner"]
    assert (banner["subject"], banner["message"]) == (approved["subject"], text)

    # the statement met the customers' deadline (and the run's artifacts say so)
    [deadline] = DeadlineRecords(engine(Settings.from_environ(os.environ).store_url)).find(incident_id="INC-COMMS-1")
    assert (deadline.name, deadline.state, deadline.met_by) == ("customers", "met", "publish-customers")


@pytest.mark.usefixtures("prefect_api")
def test_a_rejected_statement_is_not_sent(siaga_home: Path, settings: Settings) -> None:
    from ..support.gate_driver import code_for, open_gate, run_of, vote

    runbook = statement_runbook("comms-rejected", '[{action: outbox.send, with: {to: "customers:rejected"}}]')
    flow = compile_runbook(runbook, settings=settings)

    async def scenario() -> Any:
        running = asyncio.create_task(flow(incident={"id": "INC-COMMS-2"}, requested_by="alert", return_state=True))
        run_id = await run_of("comms-rejected")
        await open_gate(run_id, "publish-customers", "budi")
        vote(run_id, "publish-customers", "budi", code_for(siaga_home, "budi", run_id, "publish-customers", "reject"),
             "reject")
        return await running

    state = asyncio.run(scenario())
    assert state.name == "Rejected", state
    assert not [e for e in read_outbox(siaga_home) if e["to"] == "customers:rejected"]
    [deadline] = DeadlineRecords(engine(Settings.from_environ(os.environ).store_url)).find(incident_id="INC-COMMS-2")
    assert deadline.state == "pending" and deadline.met_at is None
