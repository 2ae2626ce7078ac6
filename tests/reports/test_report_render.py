"""The reports' pure core on a recorded fact set (the incident of tests/reports/test_report.py,
gathered from its store): what the story makes of it, the Markdown, HTML and SVG it renders,
escaping of hostile text; and the gathering side's redaction of secrets it learns late."""

from __future__ import annotations

import json
import os
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from siaga.integrations import default_registry

from siaga.approvals.records import GateRecords
from siaga.audit import AuditTrail
from siaga.report import IncidentFacts, report_html, report_markdown, tell, timeline_svg
from siaga.report.gather import gather, learn_environment_secrets
from siaga.secrets import REDACTOR
from siaga.settings import Settings
from siaga.store import engine

from ..support.report_facts import recorded

SVG = "{http://www.w3.org/2000/svg}"


def test_facts_survive_a_round_trip_through_json() -> None:
    facts = replace(recorded(), notes=["The runbook was not found."])
    assert IncidentFacts.from_json(json.loads(json.dumps(facts.as_json()))) == facts
    assert facts.records[-1].hash == facts.head


def test_the_story_of_the_recorded_incident() -> None:
    story = tell(recorded())
    assert story.outcome == "run failed; incident resolved"
    assert story.decided_by == ["alice", "budi", "eko"]
    assert [(s.step_id, s.outcome) for s in story.spans] == [
        ("page-oncall", "completed"),
        ("freeze-payouts", "completed"),
        ("draft-customers", "completed"),
        ("publish-customers", "completed"),
        ("verify-checkout", "failed"),
    ]
    assert [(u["step"], u["outcome"]) for u in story.undone] == [("freeze-payouts", "undone")]
    assert [(d.step_id, d.event, d.by, d.channel) for d in story.decisions] == [
        ("freeze-payouts", "approved", "eko", "ui"),
        ("freeze-payouts", "decided", None, "system"),
        ("publish-customers", "approved", "budi", "ui"),
        ("publish-customers", "approved", "alice", "ui"),
        ("publish-customers", "decided", None, "system"),
    ]
    assert [(m.kind, m.audience) for m in story.messages] == [
        ("notification", "pagerduty:payments-oncall"),
        ("approval code", "eko"),
        ("approval code", "budi"),
        ("approval code", "alice"),
        ("statement", "customers"),
    ]
    targets = {t.name: t for t in story.targets}
    assert (
        targets["first public statement"].met is True
        and targets["first public statement"].target_s == 3600
    )
    assert (
        targets["incident duration"].met is True and targets["incident duration"].target_s == 1800
    )
    assert targets["decision at gate freeze-payouts"].met is True
    places = {lesson.step_id: lesson.place for lesson in story.lessons}
    assert places["verify-checkout"] == "runbooks/payout-freeze-report.yaml:50"
    assert places["freeze-payouts"] == "runbooks/payout-freeze-report.yaml:25"


def test_missed_targets_become_lessons_pointing_at_their_steps() -> None:
    facts = recorded()
    incident = facts.incident
    assert incident and incident.resolved_at
    late = replace(
        facts,
        incident=replace(incident, resolved_at=incident.opened_at + timedelta(hours=2)),
        deadlines=[
            replace(d, state="missed", met_at=d.opened_at + timedelta(hours=1, minutes=5))
            for d in facts.deadlines
        ],
        gates=[
            replace(g, deadline=g.opened_at + timedelta(seconds=1))
            if g.step_id == "publish-customers"
            else g
            for g in facts.gates
        ],
    )
    story = tell(late)
    assert story.target("incident duration").met is False  # type: ignore[union-attr]
    assert story.target("statement to customers").met is False  # type: ignore[union-attr]
    duration = next(
        lesson
        for lesson in story.lessons
        if lesson.question.startswith("The incident lasted 2h 00m")
    )
    assert "beyond the maximum tolerable downtime of 30m 00s" in duration.question
    statement = next(
        lesson for lesson in story.lessons if "statement to customers missed" in lesson.question
    )
    assert (
        statement.step_id == "publish-customers"
        and statement.place == "runbooks/payout-freeze-report.yaml:40"
    )
    slow_gate = next(
        lesson
        for lesson in story.lessons
        if lesson.question.startswith("The gate of step publish-customers")
    )
    assert slow_gate.step_id == "publish-customers"
    markdown = report_markdown(story)
    assert "| incident duration | 2h 00m (resolved) | 30m 00s | ✗ missed |" in markdown


def test_markdown_lists_every_record_in_order_and_ends_with_the_head() -> None:
    facts = recorded()
    markdown = report_markdown(tell(facts), "incident.timeline.svg")
    trail = markdown.split("## Audit trail", 1)[1]
    rows = [
        line.split(" | ")[:3]
        for line in trail.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]
    assert [(int(seq.strip("| ")), kind.strip("`")) for seq, _, kind in rows] == [
        (r.seq, r.kind) for r in facts.records
    ]
    assert f"head `{facts.head}`" in trail.splitlines()[-1]
    assert "![Timeline of" in markdown and "(incident.timeline.svg)" in markdown
    # what the trail holds, redacted
    assert "[secret:report-check-key]" in markdown.replace("\\", "")
    for section in (
        "Summary",
        "Impact and durations",
        "Decisions",
        "Messages sent",
        "What failed and what was undone",
        "Statement deadlines",
        "Lessons learned",
        "Audit trail",
    ):
        assert f"\n## {section}\n" in markdown
    # a Prefect artifact goes without the picture
    assert "## Timeline" not in report_markdown(tell(facts))


def test_hostile_text_is_escaped_in_html_markdown_and_svg() -> None:
    facts = recorded()
    hostile = "</td><script>alert('x')</script> | ![img](http://evil.example/x.png)"
    records = [
        replace(r, data={**r.data, "comment": hostile}, actor="eve<b>")
        if r.kind == "gate.approved"
        else r
        for r in facts.records
    ]
    records = [
        replace(r, data={**r.data, "step": "verify-<i>checkout</i>"})
        if r.data.get("step") == "verify-checkout"
        else r
        for r in records
    ]
    story = tell(replace(facts, records=records))
    html = report_html(story)
    assert "<script>" not in html and "&lt;script&gt;" in html and "eve&lt;b&gt;" in html
    assert "<i>checkout</i>" not in html
    markdown = report_markdown(story)
    assert "<script>" not in markdown and "\\<script\\>" in markdown
    # a link no viewer renders as an image
    assert "\\[img\\](http://evil.example/x.png)" in markdown
    svg = timeline_svg(story)
    root = ET.fromstring(svg)  # well-formed XML: everything in it was escaped
    assert root.tag == f"{SVG}svg"
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert any("verify-<i>checkout</i>" in t for t in titles)  # as text, not markup


def test_the_picture_has_a_lane_per_kind_and_a_bar_per_step_and_gate() -> None:
    story = tell(recorded())
    root = ET.fromstring(timeline_svg(story))
    lanes = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "lane"]
    assert lanes == ["Incident", "Steps", "Approval gates", "Messages"]
    bars = [
        r.get("class") for r in root.iter(f"{SVG}rect") if (r.get("class") or "").startswith("bar")
    ]
    assert bars.count("bar step completed") == 4 and bars.count("bar step failed") == 1
    assert bars.count("bar gate approved") == 2
    dots = [c.get("class") for c in root.iter(f"{SVG}circle")]
    assert (
        "message statement" in dots
        and "event alert firing" in dots
        and "event alert resolved" in dots
    )


def test_gathering_redacts_what_the_process_knows_now(siaga_home: Path) -> None:
    store = engine(Settings.from_environ(os.environ).store_url)
    chain = f"inc-redact-{uuid.uuid4().hex[:8]}"
    canary = f"canary-late-{uuid.uuid4().hex[:10]}"
    # written while nobody knew the value was a secret (another process, an older release)
    AuditTrail(store).append(
        "run.started", incident_id=chain, run_id="r-1", data={"runbook": "x", "note": canary}
    )
    GateRecords(store).open(
        id=f"r-1:{chain}",
        run_id="r-1",
        step_id="freeze",
        runbook_id="x",
        incident_id=chain,
        mode="live",
        params_hash="0" * 64,
        requester=None,
        opened_at=AuditTrail(store).records(chain)[0].at,
        deadline=AuditTrail(store).records(chain)[0].at + timedelta(minutes=5),
        evidence={
            "action": "http.request",
            "params": {"headers": {"Authorization": f"Bearer {canary}"}},
        },
    )
    assert learn_environment_secrets({"SIAGA_SECRET_LATE_CANARY": canary, "OTHER": "x" * 10}) == 1
    assert REDACTOR.text(canary) == "[secret:late-canary]"
    facts = gather(store, chain, registry=default_registry(), folder=siaga_home / "no-runbooks")
    assert facts.records[0].data["note"] == "[secret:late-canary]"
    assert facts.gates[0].params == {"headers": {"Authorization": "Bearer [secret:late-canary]"}}
    assert canary not in json.dumps(facts.as_json())
    assert facts.notes and "The runbook x is not in the runbook folder" in facts.notes[0]
