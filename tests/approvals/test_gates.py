"""Approval gates on a real Prefect server, in a run holding its process (no deployment): gates
open side by side, people vote through the ledger (`siaga approve`) or the run's Resume form (the
Prefect UI), and every attack through Prefect's unauthenticated API changes nothing."""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import get_client
from prefect.states import Cancelled

from siaga.approvals.records import GateRecords, gate_id
from siaga.approvals.seal import ledger_key
from siaga.audit import AuditTrail, chain_of
from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.runbook import parse_roster, parse_runbook
from siaga.settings import Settings
from siaga.store import engine

from ..support.gate_driver import ROSTER, answer, code_for, events, kinds, open_gate, parked, run_of, vote
from ..support.prefect_runs import settled_task_runs
from ..support.settings import settings_with

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The session's settings with a roster file of the people these runbooks name."""
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER)
    return settings_with(roster=path)


def compiled(text: str, name: str, settings: Settings) -> Any:
    return compile_runbook(parse_runbook(textwrap.dedent(text), default_registry(), file=f"{name}.yaml",
                                         roster=parse_roster(ROSTER)), settings=settings)


def gated(name: str, approval: str, settings: Settings, *, chain: str = "[ops, commander]", extra: str = "") -> Any:
    return compiled(f"""\
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
        {extra}""", name, settings)


def sent(home: Path, text: str) -> list[dict[str, Any]]:
    return [e for e in read_outbox(home) if e["to"] == "finance-desk" and text in e["message"]]


def test_quorum_of_two_roles_through_both_channels_with_refusals_recorded(siaga_home: Path, settings: Settings) -> None:
    flow = gated("gate-quorum", "{from: [finance, ops], quorum: 2, distinct_roles: true, timeout: 10m}", settings)

    async def scenario() -> Any:
        running = asyncio.create_task(flow(scope="q-payouts", requested_by="eko", return_state=True))
        run_id = await run_of("gate-quorum")
        await open_gate(run_id, "freeze", "citra", "dewi", "fajar")
        key = await parked(run_id)
        with pytest.raises(AssertionError):
            code_for(siaga_home, "eko", run_id, "freeze")  # the requester is never asked
        codes = {p: code_for(siaga_home, p, run_id, "freeze") for p in ("citra", "dewi", "fajar")}

        # the server enforces the form's JSON schema: a malformed code is refused, still paused
        refused = await answer(run_id, "freeze", "citra", "12ab")
        assert refused.status.value == "REJECT", refused
        async with get_client() as client:
            assert (await client.read_flow_run(run_id)).state.is_paused()

        wrong = "00000000" if codes["citra"] != "00000000" else "11111111"
        assert (await answer(run_id, "freeze", "citra", wrong)).status.value == "ACCEPT"
        key = await parked(run_id, after_key=key)
        assert (await answer(run_id, "freeze", "citra", codes["citra"], comment="ledger checked")).status.value == "ACCEPT"
        key = await parked(run_id, after_key=key)
        assert vote(run_id, "freeze", "dewi", codes["dewi"]).outcome == "counted"  # same role: not enough
        assert vote(run_id, "freeze", "fajar", codes["citra"]).outcome == "refused"  # someone else's code
        assert not sent(siaga_home, "freeze q-payouts"), "nothing happens before the quorum"
        decided = vote(run_id, "freeze", "fajar", codes["fajar"])
        assert decided.outcome == "decided" and decided.gate.state == "approved", decided
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_completed() and state.name == "Completed", state
    assert len(sent(siaga_home, "freeze q-payouts")) == 1
    gate = GateRecords(engine(Settings.from_environ(os.environ).store_url)).get(gate_id(str(run_id), "freeze"))
    assert gate is not None and gate.state == "approved" and sorted(gate.approvers or []) == ["citra", "fajar"]
    history = events(run_id, "freeze")
    refused = [(e["actor"], e["channel"], e["detail"]["reason"]) for e in history if e["kind"] == "refused"]
    assert refused == [
        ("citra", "ui", "wrong code (1 of 5)"),
        ("fajar", "cli", "wrong code (1 of 5)"),
    ]
    approved = [(e["actor"], e["channel"], e["detail"]["roles"]) for e in history if e["kind"] == "approved"]
    assert approved == [("citra", "ui", ["finance"]), ("dewi", "cli", ["finance"]), ("fajar", "cli", ["ops"])]
    assert [e["detail"]["comment"] for e in history if e["actor"] == "citra" and e["kind"] == "approved"] == ["ledger checked"]
    assert kinds(run_id, "freeze")[0] == "opened" and kinds(run_id, "freeze")[-1] == "decided"


def test_a_reject_code_never_approves_and_a_rejection_stops_only_what_depends_on_it(
    siaga_home: Path, settings: Settings,
) -> None:
    flow = compiled("""\
        runbook: gate-reject
        title: Freeze or not
        severity: sev2
        roles: {finance: [citra, dewi], ops: [eko, fajar]}
        chain_of_command: [ops]
        steps:
          - id: freeze
            action: outbox.send
            with: {to: finance-desk, message: "freeze r-payouts"}
            approval: {from: [ops], quorum: 1, timeout: 10m}
          - id: tell-merchants
            action: outbox.send
            after: [freeze]
            with: {to: finance-desk, message: "merchants: r-payouts frozen"}
          - id: regulator
            action: outbox.send
            after: []
            with: {to: finance-desk, message: "regulator report r"}
        """, "gate-reject", settings)

    async def scenario() -> Any:
        running = asyncio.create_task(flow(requested_by="eko", return_state=True))
        run_id = await run_of("gate-reject")
        await open_gate(run_id, "freeze", "fajar")
        await parked(run_id)
        reject = code_for(siaga_home, "fajar", run_id, "freeze", "reject")
        # What a client rewriting fajar's stored answer would make of it: his reject code, marked
        # approve. A reject code proves a rejection only: nothing is counted.
        flipped = await answer(run_id, "freeze", "fajar", reject, decision="approve")
        assert flipped.status.value == "ACCEPT"
        await parked(run_id, after_key=(await _key(run_id)))
        records = GateRecords(engine(Settings.from_environ(os.environ).store_url),
                              ledger_key(None, Settings.from_environ(os.environ)))  # votes count with the key
        gate = records.get(gate_id(str(run_id), "freeze"))
        assert gate is not None and gate.is_open and not records.votes(gate)
        assert vote(run_id, "freeze", "fajar", reject, "reject").gate.state == "rejected"
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_completed() and state.name == "Rejected", state
    assert "Rejected: freeze" in (state.message or "") and "Fajar Nugroho" in (state.message or "")
    assert not sent(siaga_home, "freeze r-payouts") and not sent(siaga_home, "merchants: r-payouts")
    assert len(sent(siaga_home, "regulator report r")) == 1, "an independent step still runs"
    refusal = [e["detail"]["reason"] for e in events(run_id, "freeze") if e["kind"] == "refused"]
    assert refusal == ["that is their reject code, not their approve code: nothing was counted"]
    tasks = {t.name: t.state.name for t in asyncio.run(settled_task_runs(run_id))}
    assert tasks["freeze"] == "Rejected" and tasks["tell-merchants"] == "Skipped", tasks


async def _key(run_id: Any) -> str | None:
    async with get_client() as client:
        state = (await client.read_flow_run(UUID(str(run_id)))).state
    return state.state_details.pause_key if state else None


def test_independent_gates_open_together_and_are_decided_in_any_order(siaga_home: Path, settings: Settings) -> None:
    flow = compiled("""\
        runbook: gate-side-by-side
        title: Three decisions
        severity: sev2
        roles: {finance: [citra, dewi], ops: [eko, fajar], commander: [alice]}
        chain_of_command: [commander]
        steps:
          - id: freeze
            action: outbox.send
            after: []
            with: {to: finance-desk, message: "s freeze"}
            approval: {from: [finance], timeout: 10m}
          - id: failover
            action: outbox.send
            after: []
            with: {to: finance-desk, message: "s failover"}
            approval: {from: [ops], timeout: 10m}
          - id: statement
            action: outbox.send
            after: []
            with: {to: finance-desk, message: "s statement"}
            approval: {from: [commander], timeout: 10m}
          - id: note
            action: note
            after: []
            with: {text: runs while the gates wait}
        """, "gate-side-by-side", settings)

    async def scenario() -> Any:
        running = asyncio.create_task(flow(mode="drill", return_state=True))
        run_id = await run_of("gate-side-by-side")
        # all three ask their people at once, before anyone decided anything
        for step, person in (("freeze", "citra"), ("failover", "eko"), ("statement", "alice")):
            await open_gate(run_id, step, person)
        await parked(run_id)  # one form for the three
        order = []
        for step, person in (("statement", "alice"), ("freeze", "citra"), ("failover", "eko")):
            assert vote(run_id, step, person, code_for(siaga_home, person, run_id, step)).outcome == "decided"
            deadline = asyncio.get_running_loop().time() + 20
            while not sent(siaga_home, f"s {step}"):
                assert asyncio.get_running_loop().time() < deadline, f"{step} did not run once approved"
                await asyncio.sleep(0.1)
            order.append(step)
        return order, await running

    order, state = asyncio.run(scenario())
    assert state.is_completed(), state
    assert order == ["statement", "freeze", "failover"]


def test_when_is_decided_once_inside_the_gate(siaga_home: Path, settings: Settings) -> None:
    """A gated step whose `when:` reads `steps`, queued behind another gate: its gate decides the
    condition when it opens, once; a false one is a skip, never a step run without approval."""
    flow = compiled("""\
        runbook: gate-when
        title: A condition read once
        severity: sev2
        roles: {finance: [citra, dewi], ops: [eko, fajar]}
        chain_of_command: [ops]
        steps:
          - id: p
            action: outbox.send
            with: {to: finance-desk, message: "w p"}
            approval: {from: [finance], timeout: 10m}
          - id: q
            action: outbox.send
            after: []
            when: "{{ 'p' in steps }}"
            with: {to: finance-desk, message: "w q without approval"}
            approval: {from: [ops], timeout: 10m}
        """, "gate-when", settings)

    async def scenario() -> Any:
        running = asyncio.create_task(flow(mode="drill", return_state=True))
        run_id = await run_of("gate-when")
        await open_gate(run_id, "p", "citra")
        vote(run_id, "p", "citra", code_for(siaga_home, "citra", run_id, "p"))
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_completed(), state
    assert len(sent(siaga_home, "w p")) == 1 and not sent(siaga_home, "w q without approval")
    gate = GateRecords(engine(Settings.from_environ(os.environ).store_url)).get(gate_id(str(run_id), "q"))
    assert gate is not None and gate.state == "skipped" and "was false" in (gate.decision or "")
    assert not any(e["to"] == "person:eko" and str(run_id) in e["message"] for e in read_outbox(siaga_home))


def test_a_forged_vote_in_the_store_counts_for_nothing(siaga_home: Path, settings: Settings) -> None:
    """A vote appended to the audit chain by hand (chained correctly: `siaga audit verify` passes)
    has no seal from Siaga: the gate does not count it."""
    flow = gated("gate-forged", "{from: [finance], quorum: 1, timeout: 10m}", settings, chain="[finance]")

    async def scenario() -> Any:
        running = asyncio.create_task(flow(scope="f-payouts", requested_by="eko", return_state=True))
        run_id = await run_of("gate-forged")
        gate = await open_gate(run_id, "freeze", "citra")
        trail = AuditTrail(engine(Settings.from_environ(os.environ).store_url))
        for person in ("citra", "dewi"):
            trail.append("gate.approved", incident_id=None, run_id=str(run_id), actor=person, channel="ui",
                         data={"gate": "freeze", "roles": ["finance"], "binding": gate.binding_hash, "seal": "0" * 64})
        assert trail.verify(chain_of(None, str(run_id))) is None
        await asyncio.sleep(2)
        records = GateRecords(engine(Settings.from_environ(os.environ).store_url),
                              ledger_key(None, Settings.from_environ(os.environ)))  # votes count with the key
        still = records.get(gate.id)
        assert still is not None and still.is_open and records.votes(still) == []
        assert not sent(siaga_home, "freeze f-payouts")
        async with get_client() as client:
            await client.set_flow_run_state(run_id, Cancelled(message="test over"), force=True)
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_cancelled(), state
    assert GateRecords(engine(Settings.from_environ(os.environ).store_url)).get(gate_id(str(run_id), "freeze")).state == "cancelled"  # type: ignore[union-attr]


def test_escalation_and_timeout_on_a_short_clock(siaga_home: Path, settings: Settings) -> None:
    flow = gated("gate-clock", "{from: [finance], quorum: 1, timeout: 4s, on_timeout: reject}", settings)
    state = asyncio.run(flow(scope="c-payouts", mode="drill", return_state=True))
    run_id = state.state_details.flow_run_id
    assert state.name == "Rejected", state
    history = events(run_id, "freeze")
    escalations = [e["detail"]["roles"] for e in history if e["kind"] == "escalated"]
    assert escalations == [["ops"], ["commander"]]
    assert sorted(e["actor"] for e in history if e["kind"] == "code sent") == ["alice", "citra", "dewi", "eko", "fajar"]
    assert [e["kind"] for e in history][-2:] == ["timed out", "decided"]
    assert GateRecords(engine(Settings.from_environ(os.environ).store_url)).get(gate_id(str(run_id), "freeze")).state == "timed_out"  # type: ignore[union-attr]
    assert not sent(siaga_home, "freeze c-payouts")


def test_safe_by_default_step_is_approved_at_the_deadline(siaga_home: Path, settings: Settings) -> None:
    flow = gated("gate-safe", "{from: [finance], timeout: 2s, safe_by_default: true, on_timeout: approve}", settings)
    state = asyncio.run(flow(scope="d-payouts", mode="drill", return_state=True))
    assert state.is_completed(), state
    assert len(sent(siaga_home, "[DRILL] freeze d-payouts")) == 1


def test_five_wrong_codes_lock_the_approver_out_and_alert_the_commander(siaga_home: Path, settings: Settings) -> None:
    flow = gated("gate-lock", "{from: [finance], quorum: 1, timeout: 10m}", settings, chain="[finance, commander]")

    async def scenario() -> Any:
        running = asyncio.create_task(flow(scope="l-payouts", requested_by="eko", return_state=True))
        run_id = await run_of("gate-lock")
        await open_gate(run_id, "freeze", "citra", "dewi")
        right = code_for(siaga_home, "citra", run_id, "freeze")
        wrong = f"{(int(right) + 1) % 10**8:08d}"
        for _ in range(5):
            assert vote(run_id, "freeze", "citra", wrong).outcome == "refused"
        # locked out: even her right code is refused, and the form no longer offers her
        assert "locked out" in vote(run_id, "freeze", "citra", right).reason
        key = await parked(run_id)
        assert (await answer(run_id, "freeze", "citra", right)).status.value == "REJECT"
        assert (await answer(run_id, "freeze", "dewi", code_for(siaga_home, "dewi", run_id, "freeze"))).status.value == "ACCEPT"
        assert key
        return run_id, await running

    run_id, state = asyncio.run(scenario())
    assert state.is_completed(), state
    history = events(run_id, "freeze")
    assert [e["detail"]["reason"] for e in history if e["kind"] == "refused"][:5] == [
        f"wrong code ({n} of 5)" for n in range(1, 6)
    ]
    assert [e["actor"] for e in history if e["kind"] == "locked out"] == ["citra"]
    assert [e["actor"] for e in history if e["kind"] == "commander alerted"] == ["alice"]
    alerts = [m for m in read_outbox(siaga_home) if m["to"] == "person:alice" and "locked out" in m["message"]]
    assert len(alerts) == 1 and "Citra Lestari typed 5 wrong codes" in alerts[0]["message"]


def test_a_live_run_without_a_requester_is_refused(siaga_home: Path, settings: Settings) -> None:
    flow = gated("gate-nobody", "{from: [finance], quorum: 1, timeout: 10m}", settings)
    state = asyncio.run(flow(scope="n-payouts", return_state=True))
    assert state.is_failed() and state.name == "Refused", state
    assert "requested_by" in (state.message or "")
    assert not any("n-payouts" in e["message"] for e in read_outbox(siaga_home))
