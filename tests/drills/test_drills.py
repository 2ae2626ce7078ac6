"""Drills on a real Prefect server: a drill stands down while a live incident of its runbook is
open, and a drill that runs is scored from its steps and gates, kept in the store and published
as a Markdown artifact."""

from __future__ import annotations

import asyncio
import os
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox

from siaga.incidents import Alert, AlertStatus
from siaga.drills.records import DrillRecords
from siaga.incidents.recording import process
from siaga.runbook import parse_roster, parse_runbook
from siaga.settings import Settings
from siaga.store import engine

from ..support.gate_driver import ROSTER, with_approvals
from ..support.settings import settings_with

pytestmark = pytest.mark.usefixtures("prefect_api")

RUNBOOK = textwrap.dedent("""\
    runbook: {name}
    title: Checkout errors
    severity: sev2
    impact: {{public_statement_within: 30m}}
    roles: {{ops: [eko, fajar], commander: [alice]}}
    chain_of_command: [ops, commander]
    triggers:
      - source: alertmanager
        match: {{alertname: CheckoutErrors}}
        group_by: [region]
    steps:
      - id: page
        action: pagerduty.trigger
        with: {{summary: "Checkout errors", severity: critical}}
      - id: hold-payouts
        action: outbox.send
        with: {{to: finance-desk, message: "hold payouts"}}
        {gate}
      - id: tell-customers
        action: outbox.send
        with: {{to: "customers:all", message: "Checkout is failing; we are on it."}}
""")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The session's settings with a roster file of the people these runbooks name."""
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER)
    return settings_with(roster=path)


def runbook(name: str, gate: str = "") -> Any:
    text = RUNBOOK.format(name=name, gate=gate)
    return parse_runbook(text, default_registry(), file=f"{name}.yaml", roster=parse_roster(ROSTER))


def alert(status: str) -> Alert:
    return Alert(source="alertmanager", fingerprint="checkout-jkt", status=AlertStatus(status),
                 labels={"alertname": "CheckoutErrors", "region": "jakarta"},
                 starts_at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC))


async def artifact(run_id: Any, key: str) -> Any:
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    [match] = [a for a in found if a.key == key]
    return match


def test_a_drill_stands_down_while_a_live_incident_is_open(siaga_home: Path, settings: Settings) -> None:
    book = runbook("drill-guard")
    flow = compile_runbook(book, settings=settings)
    opened = process(engine(Settings.from_environ(os.environ).store_url), {book.id: book}, alert("firing"), datetime.now(UTC))
    [incident_id] = opened.opened

    state = asyncio.run(flow(mode="drill", return_state=True))
    run_id = state.state_details.flow_run_id
    assert state.is_completed() and state.name == "Skipped"
    assert incident_id in state.message and "wait until it is resolved" in state.message
    assert not [m for m in read_outbox(siaga_home) if m["run_id"] == str(run_id)], "a skipped drill did something"
    [record] = DrillRecords(engine(Settings.from_environ(os.environ).store_url)).find("drill-guard")
    assert record["state"] == "skipped" and record["score"] is None and incident_id in record["reason"]
    assert "skipped" in asyncio.run(artifact(run_id, "drill-guard-drill-score")).data

    live = asyncio.run(flow(mode="live", return_state=True))
    assert live.is_completed() and live.name == "Completed", "only drills stand down"

    resolved = process(engine(Settings.from_environ(os.environ).store_url), {book.id: book}, alert("resolved"), datetime.now(UTC))
    assert resolved.resolved == [incident_id]
    state = asyncio.run(flow(mode="drill", return_state=True))
    assert state.is_completed() and state.name == "Completed", state.message
    latest = DrillRecords(engine(Settings.from_environ(os.environ).store_url)).find("drill-guard")[-1]
    assert latest["state"] == "scored" and latest["run_id"] == str(state.state_details.flow_run_id)


def test_a_drill_is_scored_from_its_steps_and_gates(siaga_home: Path, settings: Settings) -> None:
    book = runbook("drill-scored", "approval: {from: [ops], timeout: 10m}")

    async def drill() -> Any:
        return await with_approvals(siaga_home, book.id, compile_runbook(book, settings=settings)(mode="drill", return_state=True))

    state = asyncio.run(drill())
    assert state.is_completed(), state.message
    run_id = str(state.state_details.flow_run_id)
    [record] = DrillRecords(engine(Settings.from_environ(os.environ).store_url)).find("drill-scored")
    assert record["run_id"] == run_id and record["state"] == "scored"
    figures = record["figures"]
    # Everything ran within seconds: nothing is late, nothing failed.
    assert record["score"] == 100, figures["deductions"]
    assert 0 <= figures["time_to_first_page_s"] <= figures["time_to_public_statement_s"] < 120
    assert figures["public_statement_target_s"] == 1800
    [gate] = figures["gates"]
    assert gate["step"] == "hold-payouts" and gate["state"] == "approved" and gate["window_s"] == 600
    assert 0 < gate["decision_s"] < 120
    assert figures["steps_failed"] == [] and figures["escalations"] == 0 and figures["timeouts"] == 0
    assert record["started_at"] <= record["ended_at"]

    report = asyncio.run(artifact(run_id, "drill-scored-drill-score"))
    assert report.description == "Drill score 100/100"
    assert "| time to first page |" in report.data and "hold-payouts | approved" in report.data
