"""The approval policy, codes and roster checks: pure values in, values out."""

from __future__ import annotations

from dataclasses import replace

from datetime import UTC, datetime, timedelta

import pytest

from siaga.approvals.codes import Binding, code_hash, code_matches, new_code, new_salt, statement
from siaga.canonical import digest
from siaga.approvals.evidence import GateView, fenced, form_description
from siaga.approvals.policy import SHORTEST_DEADLINE, Vote, gate_policy
from siaga.integrations import default_registry
from siaga.runbook import RunbookError, parse_roster, parse_runbook

from ..support.gate_driver import ROSTER

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def runbook(approval: str, *, chain: str = "[ops, commander]", impact: str = "", roles: str = "") -> object:
    return parse_runbook(f"""
runbook: policy
title: Policy
severity: sev1
{impact}
roles: {roles or "{finance: [citra, dewi], ops: [eko, fajar], commander: [alice]}"}
chain_of_command: {chain}
steps:
  - id: freeze
    action: note
    with: {{text: freeze}}
    approval: {approval}
""", default_registry(), file="policy.yaml", roster=parse_roster(ROSTER))


def policy(approval: str, requester: str | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    rb = runbook(approval, **kwargs)  # type: ignore[arg-type]
    return gate_policy(rb, rb.steps[0], parse_roster(ROSTER), opened_at=T0, requester=requester)  # type: ignore[attr-defined]


def vote(person: str, choice: str = "approve", *roles: str) -> Vote:
    return Vote(person, choice, T0, roles)  # type: ignore[arg-type]


def test_distinct_roles_needs_two_roles_not_two_people() -> None:
    p = policy("{from: [finance, ops], quorum: 2, distinct_roles: true, timeout: 10m}")
    assert p.decide([vote("citra", "approve", "finance"), vote("dewi", "approve", "finance")], T0).state == "pending"
    done = p.decide([vote("citra", "approve", "finance"), vote("dewi", "approve", "finance"), vote("eko", "approve", "ops")], T0)
    assert done.state == "approved" and set(done.approvers) == {"citra", "eko"}


def test_a_person_holding_two_roles_counts_once() -> None:
    p = policy("{from: [finance, ops], quorum: 2, distinct_roles: true, timeout: 10m}")
    assert p.decide([vote("dewi", "approve", "finance", "ops")], T0).state == "pending"
    # matching moves dewi to the role nobody else can fill
    done = p.decide([vote("dewi", "approve", "finance", "ops"), vote("citra", "approve", "finance")], T0)
    assert done.state == "approved" and set(done.approvers) == {"dewi", "citra"}


def test_one_rejection_rejects_unless_majority_is_asked() -> None:
    assert policy("{from: [finance], quorum: 1, timeout: 10m}").decide([vote("citra", "reject")], T0).state == "rejected"
    majority = policy("{from: [finance, ops], quorum: 3, reject: majority, timeout: 10m}")
    assert majority.decide([vote("citra", "reject")], T0).state == "pending"
    assert majority.decide([vote("citra", "reject"), vote("dewi", "reject"), vote("eko", "reject")], T0).state == "rejected"


def test_the_requester_is_never_eligible_and_a_first_vote_stands() -> None:
    p = policy("{from: [ops], quorum: 1, timeout: 10m}", requester="eko", chain="[ops]")
    assert set(p.eligible(T0)) == {"fajar"}
    assert p.decide([vote("fajar", "approve"), vote("fajar", "reject")], T0).state == "approved"


def test_escalation_levels_at_half_and_three_quarters() -> None:
    p = policy("{from: [finance], timeout: 8m}")
    assert [(lv.roles, lv.at - T0) for lv in p.levels] == [
        (("finance",), timedelta(0)), (("ops",), timedelta(minutes=4)), (("commander",), timedelta(minutes=6)),
    ]
    assert set(p.eligible(T0 + timedelta(minutes=5))) == {"citra", "dewi", "eko", "fajar"}
    assert p.next_level(T0 + timedelta(minutes=5)).roles == ("commander",)  # type: ignore[union-attr]


def test_deadline_from_the_impact_clock() -> None:
    rb = runbook("{from: [finance]}", impact="impact: {max_tolerable_downtime: 30m}")
    started = T0 - timedelta(minutes=10)
    p = gate_policy(rb, rb.steps[0], None, opened_at=T0, incident_opened_at=started)  # type: ignore[attr-defined]
    assert p.deadline == started + timedelta(minutes=30)
    late = gate_policy(rb, rb.steps[0], None, opened_at=T0, incident_opened_at=T0 - timedelta(hours=2))  # type: ignore[attr-defined]
    assert late.deadline == T0 + SHORTEST_DEADLINE


def test_codes_bind_person_decision_and_everything_the_vote_is_about() -> None:
    code, salt = new_code(), new_salt()
    bound = Binding("run-1", "freeze", "inc-1", "live", digest({"scope": "payouts"}), digest({"preview": 3}))
    stored = code_hash(code, statement(bound.digest, "citra", "approve"), salt)
    assert code_matches(code, statement(bound.digest, "citra", "approve"), salt, stored)
    others = [
        statement(bound.digest, "citra", "reject"),  # the approve code is no rejection (and the other way)
        statement(bound.digest, "dewi", "approve"),  # another person
        *(statement(replace(bound, **change).digest, "citra", "approve") for change in (
            {"run_id": "run-2"}, {"step_id": "other"}, {"incident_id": "inc-2"},
            {"mode": "drill"},  # a drill's vote never authorises the live action
            {"params_hash": digest({"scope": "all"})},  # parameters changed
            {"evidence_hash": digest({"preview": 4})},  # evidence changed
        )),
    ]
    for other in others:
        assert not code_matches(code, other, salt, stored)
    assert len(code) == 8 and code.isdigit()


def test_roster_errors_name_the_place() -> None:
    text = """
runbook: bad-roles
title: Bad roles
severity: sev2
roles:
  finance: [citra, eko, zed]
steps:
  - id: one
    action: note
    with: {text: hi}
"""
    with pytest.raises(RunbookError) as caught:
        parse_runbook(text, default_registry(), file="bad.yaml", roster=parse_roster(ROSTER))
    found = {(d.code, d.path, d.line, d.column) for d in caught.value.diagnostics}
    assert found == {("role-not-held", "roles.finance[1]", 6, 20), ("unknown-person", "roles.finance[2]", 6, 25)}
    hints = {d.code: d.hint for d in caught.value.diagnostics}
    assert "add `finance` to their roles" in (hints["role-not-held"] or "")


def test_roles_from_the_roster() -> None:
    p = policy("{from: [finance], quorum: 2, timeout: 10m}", roles="{finance: roster, ops: [eko], commander: [alice]}")
    assert set(p.eligible(T0)) == {"citra", "dewi"}


def test_evidence_cannot_be_reshaped_by_what_it_shows() -> None:
    gate = GateView("s", "live", T0, {"action": "a", "summary": "x", "rule": "r", "on_timeout": "reject",
                                      "params": {"reason": "```\n# injected"}}, {"citra": "**Citra**"}, [])
    text = form_description(title="T", runbook_id="r", incident_id="i", gates=[gate])
    assert "\\*\\*Citra\\*\\*" in text and "````text" in text
    assert fenced("``x``").startswith("```")
