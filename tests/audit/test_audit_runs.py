"""Runs of compiled runbooks (on Prefect's test harness) write the audit trail: run and step
records in order on the incident's chain (or the run's), failures and undos, a timeline artifact
drawn from the trail, and no secret anywhere in it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from sqlalchemy import text

from siaga.audit import AuditTrail
from siaga.runbook import parse_roster, parse_runbook
from siaga.settings import Settings
from siaga.store import engine

from ..support.gate_driver import ROSTER, code_for, kinds, open_gate, run_of, vote
from ..support.settings import settings_with
from ..support.webhook_server import webhook_server


def trail() -> AuditTrail:
    """The audit trail of the session's store, as the runs' settings name it."""
    return AuditTrail(engine(Settings.from_environ(os.environ).store_url))


pytestmark = pytest.mark.usefixtures("prefect_api")


def run(source: str, **parameters: Any) -> tuple[Any, str, list[str]]:
    """Run a runbook; return its final state, flow run id and the Markdown of its timeline artifacts."""
    runbook = parse_runbook(textwrap.dedent(source), default_registry(), file="audit.yaml")

    async def go() -> tuple[Any, str, list[str]]:
        state = await compile_runbook(runbook)(**parameters, return_state=True)
        run_id = state.state_details.flow_run_id
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[f"{runbook.id}-timeline"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
                )
            )
        return state, str(run_id), [str(a.data) for a in artifacts]

    return asyncio.run(go())


def test_a_run_for_an_incident_leaves_its_steps_in_order_on_the_incident_chain() -> None:
    state, run_id, timelines = run("""
        runbook: audit-order
        title: Audit order
        severity: sev3
        steps:
          - id: first
            action: note
            with: {text: one}
          - id: second
            action: note
            with: {text: two}
          - id: only-jakarta
            action: note
            when: "{{ incident.region == 'jakarta' }}"
            with: {text: three}
        """, incident={"id": "inc-audit-order", "region": "bali"})
    assert state.is_completed()
    records = trail().records("inc-audit-order")
    assert [(r.kind, r.data.get("step")) for r in records] == [
        ("run.started", None),
        ("step.started", "first"),
        ("step.finished", "first"),
        ("step.started", "second"),
        ("step.finished", "second"),
        ("step.started", "only-jakarta"),
        ("step.skipped", "only-jakarta"),
        ("run.finished", None),
    ]
    assert {r.run_id for r in records} == {run_id}
    assert {r.incident_id for r in records} == {"inc-audit-order"}
    assert records[2].data["output"] == {"text": "one"}
    assert records[-1].data["outcome"] == "ok"
    assert trail().verify("inc-audit-order") is None
    # the timeline artifact was published as the run went on; its last version ends at the head
    assert len(timelines) >= 2
    assert any(f"hash `{records[-1].hash}`" in markdown for markdown in timelines)
    assert all("step.started" in markdown for markdown in timelines)


def test_a_failed_run_records_the_failure_and_the_undo_on_its_own_chain() -> None:
    with webhook_server() as hooks:
        hooks.answer("/break", (409, {"error": "conflict"}))
        state, run_id, _ = run(f"""
            runbook: audit-undo
            title: Audit undo
            severity: sev3
            steps:
              - id: freeze
                action: http.request
                with: {{url: "{hooks.url}/freeze"}}
                undo:
                  action: http.request
                  with: {{url: "{hooks.url}/unfreeze"}}
              - id: fail-over
                action: http.request
                with: {{url: "{hooks.url}/break"}}
            """)
    assert state.is_failed()
    records = trail().records(f"run:{run_id}")
    assert [(r.kind, r.data.get("step")) for r in records] == [
        ("run.started", None),
        ("step.started", "freeze"),
        ("step.finished", "freeze"),
        ("step.started", "fail-over"),
        ("step.failed", "fail-over"),
        ("step.undone", "freeze"),
        ("run.finished", None),
    ]
    assert "409" in records[4].data["error"]
    assert records[-1].data["outcome"] == "failed"
    assert trail().verify(f"run:{run_id}") is None


def test_a_secret_used_by_a_run_appears_nowhere_in_the_trail_its_export_or_timeline(monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "canary-8c1e55f0-run-secret"
    monkeypatch.setenv("SIAGA_SECRET_AUDIT_RUN_CANARY", canary)
    with webhook_server() as hooks:
        # a provider that echoes the credential back, in an answer and in a refusal
        hooks.answer("/echo", (200, {"token": canary}))
        hooks.answer("/refuse", (400, {"error": f"bad token {canary}"}))
        state, _, timelines = run(f"""
            runbook: audit-canary
            title: Audit canary
            severity: sev3
            steps:
              - id: echo
                action: http.request
                with: {{url: "{hooks.url}/echo", sign: {{secret: "secret://audit-run-canary"}}}}
              - id: refused
                action: http.request
                with: {{url: "{hooks.url}/refuse", sign: {{secret: "secret://audit-run-canary"}}}}
            """, incident={"id": "inc-audit-canary"})
        assert len(hooks.calls("POST")) == 2
    assert state.is_failed()
    kinds = [r.kind for r in trail().records("inc-audit-canary")]
    assert kinds == ["run.started", "step.started", "step.finished", "step.started", "step.failed", "run.finished"]
    with engine(Settings.from_environ(os.environ).store_url).connect() as db:
        rows = json.dumps([[str(value) for value in row] for row in db.execute(text("SELECT * FROM audit_records"))])
    export = io.StringIO()
    trail().export("inc-audit-canary", export)
    assert "[secret:audit-run-canary]" in export.getvalue()  # the echo was there, redacted
    for where in (rows, export.getvalue(), *timelines):
        assert canary not in where


def test_gate_events_reach_the_trail_and_the_decisions_table(siaga_home: Path, tmp_path: Path) -> None:
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    source = textwrap.dedent("""\
        runbook: audit-gate
        title: Audit gate
        severity: sev2
        roles: {finance: [citra, dewi], ops: [eko, fajar], commander: [alice]}
        chain_of_command: [ops]
        steps:
          - id: freeze
            action: outbox.send
            with: {to: finance-desk, message: "freeze payouts"}
            approval: {from: [ops], quorum: 1, timeout: 10m}
        """)
    flow = compile_runbook(parse_runbook(source, default_registry(), file="audit-gate.yaml", roster=parse_roster(ROSTER)),
                           settings=settings_with(roster=roster))

    async def scenario() -> tuple[Any, Any, list[Any]]:
        running = asyncio.create_task(flow(requested_by="eko", incident={"id": "inc-audit-gate"}, return_state=True))
        run_id = await run_of("audit-gate")
        await open_gate(run_id, "freeze", "fajar")
        fajar = code_for(siaga_home, "fajar", run_id, "freeze", "reject")
        vote(run_id, "freeze", "fajar", fajar, "reject", comment="not without finance")
        state = await running
        async with get_client() as client:
            tables = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["audit-gate-decisions"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
                )
            )
        return run_id, state, tables

    run_id, state, tables = asyncio.run(scenario())
    assert state.name == "Rejected", state
    records = trail().records("inc-audit-gate")
    gate_kinds = [r.kind for r in records if r.kind.startswith("gate.")]
    assert gate_kinds == ["gate." + kind.replace(" ", "_") for kind in kinds(run_id, "freeze")]
    assert gate_kinds[0] == "gate.opened" and gate_kinds[-2:] == ["gate.rejected", "gate.decided"]
    rejected = next(r for r in records if r.kind == "gate.rejected")
    assert (rejected.actor, rejected.data["gate"], rejected.data["comment"]) == ("fajar", "freeze", "not without finance")
    assert records[-1].kind == "run.finished" and records[-1].data["outcome"] == "rejected"
    assert trail().verify("inc-audit-gate") is None
    (table,) = tables
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(row["event"], row["decision"], row["by"]) for row in rows] == [("rejected", "rejected", "fajar"), ("decided", "rejected", "")]
    assert rows[0]["evidence"] == rejected.data["params_hash"]
