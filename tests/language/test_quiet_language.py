"""Heartbeat triggers and maintenance windows in the runbook language: checked with located
diagnostics, in the JSON Schema, and routed (pure) as the engine routes them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from siaga.incidents import Alert, AlertStatus, render_inputs, routes
from siaga.incidents.routing import HEARTBEAT_LABEL, expects, heartbeat_key
from siaga.integrations import default_registry
from siaga.runbook import RunbookError, parse_runbook
from siaga.settings import Settings

REPO = Path(__file__).resolve().parent.parent.parent

HEAD = """
runbook: quiet
title: Quiet things
severity: sev2
inputs:
  region: {type: string, default: nowhere}
steps:
  - id: page
    action: note
    with: {text: "{{ inputs.region }}"}
"""

GOOD = HEAD + """
triggers:
  - source: payments
    match: {event: payment_succeeded}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
    heartbeat: {every: 5m}
  - source: heartbeat
    match: {name: settlement-job}
    heartbeat: {every: 1h}
  - source: alertmanager
    match: {alertname: GatewayErrors}
maintenance:
  - schedule: "0 2 * * SUN"
    for: 2h
    timezone: Asia/Jakarta
    match: {region: jkt}
    reason: weekly patching
drill:
  maintenance: {for: 30m, match: {env: drill}}
"""


def problems(text: str) -> list[tuple[str, str, int]]:
    with pytest.raises(RunbookError) as caught:
        parse_runbook(text, default_registry())
    return [(d.code, d.path, d.line) for d in caught.value.diagnostics]


def test_a_good_runbook_parses_and_its_schema_takes_it() -> None:
    runbook = parse_runbook(GOOD, default_registry())
    assert runbook.triggers[0].heartbeat is not None and runbook.triggers[0].heartbeat.every.total_seconds() == 300
    assert runbook.maintenance[0].for_.total_seconds() == 7200 and runbook.drill.maintenance is not None
    schema = json.loads((REPO / "runbook.schema.json").read_text())
    jsonschema.validate(YAML(typ="safe").load(GOOD), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(YAML(typ="safe").load(GOOD.replace("every: 5m", "every: soon")), schema)


def test_a_heartbeat_trigger_cannot_also_be_a_threshold_and_a_posted_one_has_a_name() -> None:
    text = HEAD + """
triggers:
  - source: payments
    heartbeat: {every: 5m}
    threshold: {count: 3, within: 1m}
  - source: heartbeat
    heartbeat: {every: 5m}
  - source: heartbeat
    match: {name: Settlement Job}
    heartbeat: {every: 5m}
"""
    assert problems(text) == [
        ("heartbeat-threshold", "triggers[0].threshold", 15),
        ("heartbeat-name", "triggers[1].match", 16),
        ("heartbeat-name", "triggers[2].match.name", 19),
    ]


def test_intervals_schedules_and_time_zones_are_checked_where_they_stand() -> None:
    found = problems(HEAD + "triggers:\n  - source: x\n    heartbeat: {every: 0s}\n")
    assert [(path, line) for _, path, line in found] == [("triggers[0].heartbeat.every", 13)]
    found = problems(HEAD + 'maintenance:\n  - {schedule: "0 2 * * FUNDAY", for: 1h, timezone: Mars/Base}\n')
    assert [(code, path) for code, path, _ in found] == [("bad-cron", "maintenance[0].schedule"),
                                                         ("bad-timezone", "maintenance[0].timezone")]
    found = problems(HEAD + 'maintenance:\n  - {schedule: "0 2 * * *", for: 0s}\n')
    assert [path for _, path, _ in found] == ["maintenance[0].for"]


def test_a_heartbeat_trigger_routes_only_the_alert_its_silence_raises() -> None:
    runbook = parse_runbook(GOOD, default_registry())
    trigger = runbook.triggers[0]
    signal = Alert(source="payments", fingerprint="p1", status=AlertStatus.FIRING,
                   labels={"event": "payment_succeeded", "region": "jkt"})
    assert expects(trigger, signal) and routes([runbook], signal) == []  # a sign of life opens nothing
    quiet = Alert(source="heartbeat", fingerprint="hb", status=AlertStatus.FIRING,
                  labels={"event": "payment_succeeded", "region": "jkt", HEARTBEAT_LABEL: heartbeat_key(trigger)})
    (route,) = routes([runbook], quiet)
    assert (route.trigger_index, route.group_key) == (0, '["jkt"]')
    assert render_inputs(route.trigger, quiet, runbook) == ({"region": "jkt"}, [])
    # the same signal expected by another runbook is the same heartbeat; another interval is not
    assert heartbeat_key(trigger) == heartbeat_key(parse_runbook(GOOD.replace("runbook: quiet", "runbook: other"),
                                                                 default_registry()).triggers[0])
    assert heartbeat_key(trigger) != heartbeat_key(parse_runbook(GOOD.replace("every: 5m", "every: 6m"),
                                                                 default_registry()).triggers[0])


def test_no_generic_source_may_take_the_name_of_quiet_heartbeats() -> None:
    """``heartbeat`` names the alerts quiet heartbeats raise: a generic signed source of that name
    could forge them, so the receiver serves none (other names are served)."""
    from siaga.alerts.receiver import ReceiverConfig

    config = ReceiverConfig.from_settings(Settings.from_environ({"SIAGA_HOOK_SECRET_HEARTBEAT": "s3cret", "SIAGA_HOOK_SECRET_PAYMENTS": "s3cret"}))
    assert "heartbeat" not in config.sources and "payments" in config.sources
