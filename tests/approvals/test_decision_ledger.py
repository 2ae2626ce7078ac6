"""The decision ledger on SQLite and PostgreSQL: votes submitted at once through any channel are
counted exactly once, a gate is decided once, a code works once, and only sealed votes count."""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from siaga.approvals.codes import Binding
from siaga.approvals.policy import GatePolicy, Level
from siaga.approvals.records import GateRecords, Submission
from siaga.audit import AuditTrail, chain_of
from siaga.canonical import digest
from siaga.store import engine

from ..support.postgres import postgres  # noqa: F401  (the session's PostgreSQL cluster)

KEY = b"the stack's ledger key"
PEOPLE = {"finance": ("citra", "dewi", "gita"), "ops": ("eko", "fajar", "hadi")}


def open_gate(records: GateRecords, quorum: int = 2) -> Any:
    now = datetime.now(UTC)
    policy = GatePolicy(
        step_id="freeze", quorum=quorum, distinct_roles=False, reject_rule="any", on_timeout="reject",
        opened_at=now, deadline=now + timedelta(minutes=10), levels=(Level(0, now, ("finance", "ops")),),
        members=PEOPLE, requester="budi",
    )
    params = {"scope": "payouts"}
    binding = Binding("run-1", "freeze", "INC-1", "live", digest(params), digest({"evidence": 1}))
    gate, created = records.open(
        id="run-1:freeze", run_id="run-1", step_id="freeze", runbook_id="rb", incident_id="INC-1", mode="live",
        params_hash=digest(params), requester="budi", opened_at=now, deadline=policy.deadline, evidence={},
        params=params, binding=asdict(binding), binding_hash=binding.digest, policy=policy.as_json(),
    )
    assert created
    codes = {person: records.issue_codes(gate, person) for people in PEOPLE.values() for person in people}
    return gate, codes


def at_once(*calls: Any) -> list[Submission]:
    """Run `calls` in threads released together; their results."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Any) -> None:
        start.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_six_votes_at_once_decide_a_quorum_of_two_exactly_once(store_url: str) -> None:
    records = GateRecords(engine(store_url), KEY)
    gate, codes = open_gate(records)
    people = [p for members in PEOPLE.values() for p in members]
    outcomes = at_once(*(
        (lambda p=p: GateRecords(engine(store_url), KEY).submit(gate.id, p, "approve", codes[p][0],
                                                                channel="cli" if p < "f" else "ui"))
        for p in people
    ))
    kinds = sorted(o.outcome for o in outcomes)
    assert kinds == ["counted", "decided", "refused", "refused", "refused", "refused"], [str(o) for o in outcomes]
    final = records.get(gate.id)
    assert final.state == "approved" and len(final.approvers or []) == 2
    assert sorted(v.person for v in records.votes(final)) == sorted(final.approvers or [])
    assert [e["kind"] for e in records.events(gate.id)].count("decided") == 1
    assert AuditTrail(engine(store_url)).verify(chain_of("INC-1", "run-1")) is None


def test_one_code_through_two_channels_at_once_counts_once(store_url: str) -> None:
    records = GateRecords(engine(store_url), KEY)
    gate, codes = open_gate(records, quorum=3)
    outcomes = at_once(
        lambda: GateRecords(engine(store_url), KEY).submit(gate.id, "citra", "approve", codes["citra"][0], channel="ui"),
        lambda: GateRecords(engine(store_url), KEY).submit(gate.id, "citra", "approve", codes["citra"][0], channel="cli"),
    )
    assert sorted(o.outcome for o in outcomes) == ["counted", "refused"], [str(o) for o in outcomes]
    assert [v.person for v in records.votes(records.get(gate.id))] == ["citra"]


def test_only_votes_with_siagas_seal_count(store_url: str) -> None:
    records = GateRecords(engine(store_url), KEY)
    gate, codes = open_gate(records, quorum=1)
    trail = AuditTrail(engine(store_url))
    trail.append("gate.approved", incident_id="INC-1", run_id="run-1", actor="dewi", channel="ui",
                 data={"gate": "freeze", "roles": ["finance"], "binding": gate.binding_hash, "seal": "f" * 64})
    assert trail.verify("INC-1") is None  # chained correctly, by hand
    assert records.votes(gate) == [] and records.settle(gate, datetime.now(UTC)).is_open
    # a reader with another key (another stack's) counts no vote of this one
    assert records.submit(gate.id, "eko", "approve", codes["eko"][0], channel="cli").outcome == "decided"
    assert [v.person for v in records.votes(records.get(gate.id))] == ["eko"]
    assert GateRecords(engine(store_url), b"another key").votes(records.get(gate.id)) == []
