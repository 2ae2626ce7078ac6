"""Approval gates on a real Prefect server: the run pauses with a form, people answer through
Prefect's resume API with the codes they were sent, the gate checks and records every answer."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client

from siaga.approvals.records import GateRecords, gate_id
from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.runbook import parse_runbook, parse_roster
from siaga.store import engine

from .gate_driver import ROSTER, answer, code_for, events, kinds, next_pause, paused_run

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(autouse=True)
def roster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER)
    monkeypatch.setenv("SIAGA_ROSTER", str(path))


def gated(name: str, approval: str, *, chain: str = "[ops, commander]", extra: str = "") -> Any:
    text = textwrap.dedent(f"""\
        runbook: {name}
        title: Gated payout freeze
        severity: sev2
        roles: {{finance: [citra, dewi], ops: [eko, fajar], commander: [alice]}}
        chain_of_command: {chain}
        inputs:
          scope: {{type: string, default: payouts}}
        steps:
          - id: before
            action: note
            with: {{text: before the gate}}
          - id: freeze
            action: outbox.send
            with: {{to: finance-desk, message: "freeze {{{{ inputs.scope }}}}"}}
            approval: {approval}
          - id: after
            action: note
            with: {{text: after the gate}}
        {extra}""")
    return compile_runbook(parse_runbook(text, default_registry(), file=f"{name}.yaml", roster=parse_roster(ROSTER)))


def sent(home: Path, text: str) -> list[dict[str, Any]]:
    return [e for e in read_outbox(home) if e["to"] == "finance-desk" and text in e["message"]]


def test_quorum_of_two_roles_with_refusals_recorded(siaga_home: Path) -> None:
    flow = gated("gate-quorum", "{from: [finance, ops], quorum: 2, distinct_roles: true, timeout: 10m}")

    async def scenario() -> Any:
        running = asyncio.create_task(flow(scope="q-payouts", requested_by="eko", return_state=True))
        run_id, key = await paused_run("gate-quorum")
        codes = {p: code_for(siaga_home, p, run_id, "freeze") for p in ("citra", "dewi", "fajar")}
        with pytest.raises(AssertionError):
            code_for(siaga_home, "eko", run_id, "freeze")  # the requester is never asked

        # the server enforces the form's JSON schema: a malformed code is refused, still paused
        refused = await answer(run_id, "citra", "12ab")
        assert refused.status.value == "REJECT", refused
        async with get_client() as client:
            assert (await client.read_flow_run(run_id)).state.is_paused()

        assert (await answer(run_id, "citra", "00000000" if codes["citra"] != "00000000" else "11111111")).status.value == "ACCEPT"
        key = await next_pause(run_id, key)
        assert (await answer(run_id, "citra", codes["citra"], comment="ledger checked")).status.value == "ACCEPT"
        key = await next_pause(run_id, key)
        assert (await answer(run_id, "dewi", codes["dewi"])).status.value == "ACCEPT"  # same role: not enough
        key = await next_pause(run_id, key)
        assert (await answer(run_id, "fajar", codes["citra"])).status.value == "ACCEPT"  # someone else's code
        key = await next_pause(run_id, key)
        assert not sent(siaga_home, "freeze q-payouts"), "nothing happens before the quorum"
        assert (await answer(run_id, "fajar", codes["fajar"])).status.value == "ACCEPT"
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_completed(), state
    assert len(sent(siaga_home, "freeze q-payouts")) == 1
    gate = GateRecords(engine()).get(gate_id(str(run_id), "freeze"))
    assert gate is not None and gate.state == "approved" and sorted(gate.approvers or []) == ["citra", "fajar"]
    history = events(run_id, "freeze")
    refused = [(e["actor"], e["detail"]["reason"]) for e in history if e["kind"] == "refused"]
    assert refused == [
        ("citra", "wrong code (1 of 5)"),
        ("fajar", "wrong code (1 of 5)"),
    ]
    approved = [(e["actor"], e["channel"], e["detail"]["roles"]) for e in history if e["kind"] == "approved"]
    assert approved == [("citra", "ui", ["finance"]), ("dewi", "ui", ["finance"]), ("fajar", "ui", ["ops"])]
    assert [e["detail"]["comment"] for e in history if e["actor"] == "citra" and e["kind"] == "approved"] == ["ledger checked"]
    assert kinds(run_id, "freeze")[0] == "opened" and kinds(run_id, "freeze")[-1] == "decided"
    assert sorted(e["actor"] for e in history if e["kind"] == "code sent") == ["citra", "dewi", "fajar"]


def test_self_approval_and_reuse_are_refused(siaga_home: Path) -> None:
    flow = gated("gate-self", "{from: [ops], quorum: 1, timeout: 10m}", chain="[ops]")

    async def scenario() -> Any:
        running = asyncio.create_task(flow(scope="s-payouts", requested_by="eko", return_state=True))
        run_id, key = await paused_run("gate-self")
        fajar = code_for(siaga_home, "fajar", run_id, "freeze")
        # eko is not in the form's approver enum: the server refuses him outright
        assert (await answer(run_id, "eko", fajar)).status.value == "REJECT"
        assert (await answer(run_id, "fajar", fajar, decision="reject", comment="not without finance")).status.value == "ACCEPT"
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_cancelled(), state  # people said no: the run stops, nothing is undone
    assert "rejected by Fajar Nugroho" in (state.message or "")
    assert not sent(siaga_home, "freeze s-payouts")
    assert kinds(run_id, "freeze")[-2:] == ["rejected", "decided"]


def test_escalation_and_timeout_on_a_short_clock(siaga_home: Path) -> None:
    flow = gated("gate-clock", "{from: [finance], quorum: 1, timeout: 4s, on_timeout: reject}")

    async def scenario() -> Any:
        return await flow(scope="c-payouts", return_state=True)

    state = asyncio.run(scenario())
    run_id = state.state_details.flow_run_id
    assert state.is_cancelled(), state
    history = events(run_id, "freeze")
    escalations = [e["detail"]["roles"] for e in history if e["kind"] == "escalated"]
    assert escalations == [["ops"], ["commander"]]
    assert sorted(e["actor"] for e in history if e["kind"] == "code sent") == ["alice", "citra", "dewi", "eko", "fajar"]
    assert [e["kind"] for e in history][-2:] == ["timed out", "decided"]
    assert GateRecords(engine()).get(gate_id(str(run_id), "freeze")).state == "timed_out"  # type: ignore[union-attr]
    assert not sent(siaga_home, "freeze c-payouts")


def test_safe_by_default_step_is_approved_at_the_deadline(siaga_home: Path) -> None:
    flow = gated("gate-safe", "{from: [finance], timeout: 2s, safe_by_default: true, on_timeout: approve}")
    state = asyncio.run(flow(scope="d-payouts", return_state=True))
    assert state.is_completed(), state
    assert len(sent(siaga_home, "freeze d-payouts")) == 1


def test_five_wrong_codes_lock_the_approver_out_and_alert_the_commander(siaga_home: Path) -> None:
    flow = gated("gate-lock", "{from: [finance], quorum: 1, timeout: 10m}", chain="[finance, commander]")

    async def scenario() -> Any:
        running = asyncio.create_task(flow(scope="l-payouts", return_state=True))
        run_id, key = await paused_run("gate-lock")
        right = code_for(siaga_home, "citra", run_id, "freeze")
        wrong = f"{(int(right) + 1) % 10**8:08d}"
        for _ in range(5):
            assert (await answer(run_id, "citra", wrong)).status.value == "ACCEPT"
            key = await next_pause(run_id, key)
        # locked out: citra is no longer offered, even with her right code
        assert (await answer(run_id, "citra", right)).status.value == "REJECT"
        assert (await answer(run_id, "dewi", code_for(siaga_home, "dewi", run_id, "freeze"))).status.value == "ACCEPT"
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_completed(), state
    history = events(run_id, "freeze")
    assert [e["detail"]["reason"] for e in history if e["kind"] == "refused"] == [f"wrong code ({n} of 5)" for n in range(1, 6)]
    assert [e["actor"] for e in history if e["kind"] == "locked out"] == ["citra"]
    assert [e["actor"] for e in history if e["kind"] == "commander alerted"] == ["alice"]
    alerts = [m for m in read_outbox(siaga_home) if m["to"] == "person:alice" and "locked out" in m["message"]]
    assert len(alerts) == 1 and "Citra Lestari typed 5 wrong codes" in alerts[0]["message"]
