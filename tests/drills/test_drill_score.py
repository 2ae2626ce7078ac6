"""The drill score, from a recorded drill with known times (pure: no store, no Prefect)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from siaga.drills.score import (
    DrillFacts,
    GateFacts,
    StepFacts,
    is_page,
    is_public_statement,
    report_markdown,
    score_drill,
    steps_facts,
)

T0 = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_a_clean_drill_scores_100() -> None:
    facts = DrillFacts(
        "payment-gateway-outage", "run-1", T0, at(20),
        [StepFacts("page", "pagerduty.trigger", "completed", at(1), page=True),
         StepFacts("status", "statuspage.create_incident", "recorded", at(10), public=True)],
        [GateFacts("freeze", at(2), at(32), at(5), "approved")],
        public_statement_within=timedelta(hours=1),
    )
    result = score_drill(facts)
    assert result.score == 100 and result.deductions == []
    assert result.figures["time_to_first_page_s"] == 60
    assert result.figures["time_to_public_statement_s"] == 600
    assert result.figures["gates"] == [{"step": "freeze", "state": "approved", "decision_s": 180, "window_s": 1800,
                                        "escalations": 0, "timed_out": False}]


def test_every_rule_takes_its_points() -> None:
    facts = DrillFacts(
        "payment-gateway-outage", "run-2", T0, at(95),
        [
            StepFacts("page", "pagerduty.trigger", "completed", at(8.5), page=True),  # 3.5 min late: -8
            StepFacts("freeze", "payments.freeze", "recorded", at(30)),
            StepFacts("failover", "aws.route53.failover", "failed", at(40)),  # -10
            StepFacts("tell-bi", "outbox.send", "not run"),  # -2
            StepFacts("check", "http.request", "skipped"),  # by design: free
            StepFacts("status", "statuspage.create_incident", "completed", at(90), public=True),  # late: -15
        ],
        [
            GateFacts("freeze", at(9), at(39), at(29), "approved", escalations=1),  # slow -5, escalated -5
            GateFacts("failover", at(31), at(36), at(36), "rejected", timed_out=True),  # -10
        ],
        public_statement_within=timedelta(hours=1),
    )
    result = score_drill(facts)
    assert sorted(d.points for d in result.deductions) == [2, 5, 5, 8, 10, 10, 15]
    assert result.score == 100 - 55
    figures = result.figures
    assert figures["time_to_first_page_s"] == 510
    assert figures["time_to_public_statement_s"] == 5400
    assert figures["escalations"] == 1 and figures["timeouts"] == 1
    assert figures["steps_failed"] == ["failover"] and figures["steps_not_run"] == ["tell-bi"]
    assert figures["steps_skipped"] == ["check"]
    assert figures["deadlines_missed"] == ["public statement"]
    assert figures["duration_s"] == 95 * 60
    report = report_markdown(facts, result)
    assert "45/100" in report and "8m 30s (target 5m 00s)" in report and "gate `failover` timed out" in report


def test_never_paging_and_never_speaking_cost_and_the_score_floors_at_zero() -> None:
    steps = [StepFacts("page", "pagerduty.trigger", "not run", page=True),
             StepFacts("status", "statuspage.create_incident", "not run", public=True)]
    steps += [StepFacts(f"s{i}", "note", "failed", at(1)) for i in range(10)]
    result = score_drill(DrillFacts("r", "run-3", T0, at(5), steps, public_statement_within=timedelta(minutes=30)))
    assert result.figures["time_to_first_page_s"] is None
    assert "the runbook pages, but the drill never did" in [d.reason for d in result.deductions]
    assert result.figures["deadlines_missed"] == ["public statement"]
    assert result.score == 0


def test_a_runbook_without_pages_or_statements_loses_nothing_for_them() -> None:
    result = score_drill(DrillFacts("r", "run-4", T0, at(1), [StepFacts("n", "note", "completed", at(0.5))],
                                    public_statement_within=timedelta(minutes=1)))
    assert result.score == 100
    assert result.figures["time_to_first_page_s"] is None and result.figures["deadlines_missed"] == []


def test_which_steps_page_and_which_speak_to_the_public() -> None:
    assert is_page("pagerduty.trigger", {})
    assert is_page("notify.fanout", {"channels": [{"action": "slack.post"}, {"action": "pagerduty.trigger"}]})
    assert not is_page("notify.fanout", {"channels": [{"action": "slack.post"}]})
    assert is_page("outbox.send", {"to": "pagerduty:payments"})
    assert not is_page("slack.post", {"text": "x"})
    assert is_public_statement("statuspage.update_incident", {})
    assert is_public_statement("outbox.send", {"to": "customers:affected"})
    assert is_public_statement("outbox.send", {"to": "social:{{ inputs.platform }}"})
    assert not is_public_statement("outbox.send", {"to": "regulator:bi"})
    assert is_public_statement("notify.fanout", {"channels": [{"action": "outbox.send", "with": {"to": "customers"}}]})
    [step] = steps_facts([("p", "pagerduty.trigger", {}, "completed", at(1))])
    assert step.page and not step.public
