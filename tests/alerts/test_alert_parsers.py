"""The alert parsers: every source's payload becomes `Alert`s, and anything malformed is a
`BadPayload` (never another exception)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siaga.alerts import Alert, AlertStatus, BadPayload, parse, parse_body, sns_subscribe_url
from siaga.alerts.parsers import SOURCES, generic_fingerprint

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alerts"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


# --- Alertmanager ---------------------------------------------------------------------------


def test_alertmanager_firing() -> None:
    alerts = parse("alertmanager", load("alertmanager_firing"))
    assert [a.labels["region"] for a in alerts] == ["ap-southeast-1", "ap-southeast-3"]
    first = alerts[0]
    assert first.source == "alertmanager"
    assert first.fingerprint == "5b4c1e8f0a9d2c37"
    assert first.status is AlertStatus.FIRING
    assert first.annotations["summary"] == "Card payments failing"
    # Go's nanoseconds are cut to microseconds; the time is aware and UTC.
    assert first.starts_at == datetime(2026, 11, 24, 3, 12, 40, 123456, tzinfo=UTC)
    assert first.ends_at is None, "0001-01-01T00:00:00Z means 'no end yet'"
    assert first.raw["generatorURL"].startswith("http://prometheus")
    assert first.raw["receiver"] == "siaga"


def test_alertmanager_firing_resolved_refiring_share_the_fingerprint_not_the_episode() -> None:
    firing = parse("alertmanager", load("alertmanager_firing"))[0]
    resolved = parse("alertmanager", load("alertmanager_resolved"))[0]
    refiring = parse("alertmanager", load("alertmanager_refiring"))[0]
    assert firing.fingerprint == resolved.fingerprint == refiring.fingerprint
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.starts_at == firing.starts_at, "resolved closes the episode that fired"
    assert resolved.ends_at == datetime(2026, 11, 24, 3, 41, 10, 500000, tzinfo=UTC)
    assert refiring.starts_at != firing.starts_at, "only startsAt tells episodes apart"
    assert len({firing.episode, resolved.episode, refiring.episode}) == 3


def test_alertmanager_repeat_of_the_same_notification_is_the_same_episode() -> None:
    once = parse("alertmanager", load("alertmanager_firing"))
    again = parse("alertmanager", load("alertmanager_firing"))  # repeat_interval later
    assert [a.episode for a in once] == [a.episode for a in again]


def test_alertmanager_without_fingerprint_hashes_the_labels() -> None:
    payload = load("alertmanager_firing")
    del payload["alerts"][0]["fingerprint"]
    alert = parse("alertmanager", payload)[0]
    assert alert.fingerprint == generic_fingerprint(alert.labels)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("alerts"), "alerts: missing"),
        (lambda p: p.update(alerts={}), "alerts: expected a list"),
        (lambda p: p.update(version="3"), "unsupported webhook version"),
        (lambda p: p["alerts"][0].update(status="pending"), "alerts[0].status: unknown status"),
        (lambda p: p["alerts"][0]["labels"].update(severity=2), "alerts[0].labels.severity"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda p: p["alerts"][1].update(startsAt="2026-11-24T03:13:10"), "time zone"),
        (lambda p: p["alerts"][0].pop("labels"), "alerts[0].labels: missing"),
        (lambda p: p["alerts"][0].update(fingerprint=""), "alerts[0].fingerprint: must not"),
    ],
)
def test_alertmanager_malformed(mutate: Any, message: str) -> None:
    payload = load("alertmanager_firing")
    mutate(payload)
    with pytest.raises(BadPayload, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse("alertmanager", payload)


# --- Grafana ---------------------------------------------------------------------------------


def test_grafana() -> None:
    (alert,) = parse("grafana", load("grafana_firing"))
    assert alert.source == "grafana"
    assert alert.fingerprint == "a1b2c3d4e5f60718"
    assert alert.status is AlertStatus.FIRING
    assert alert.labels["team"] == "checkout"
    assert alert.ends_at is None
    assert alert.raw["dashboardURL"].endswith("orgId=1")
    assert alert.raw["values"] == {"B": 2.41, "C": 1}
    assert alert.raw["orgId"] == 1 and alert.raw["state"] == "alerting"


def test_grafana_resolved() -> None:
    payload = load("grafana_firing")
    payload["alerts"][0].update(status="resolved", endsAt="2026-11-24T04:10:00Z")
    (alert,) = parse("grafana", payload)
    assert alert.status is AlertStatus.RESOLVED
    assert alert.ends_at == datetime(2026, 11, 24, 4, 10, tzinfo=UTC)


# --- CloudWatch via SNS ----------------------------------------------------------------------


def alarm_payload(**changes: Any) -> dict[str, Any]:
    payload = load("cloudwatch_alarm")
    alarm = json.loads(payload["Message"])
    alarm.update(changes)
    payload["Message"] = json.dumps(alarm)
    return payload


def test_cloudwatch_alarm_fires() -> None:
    (alert,) = parse("cloudwatch", load("cloudwatch_alarm"))
    assert alert.source == "cloudwatch"
    assert alert.status is AlertStatus.FIRING
    assert alert.labels == {
        "alertname": "ledger-prod-cpu",
        "account": "123456789012",
        "region": "ap-southeast-1",
        "metric": "CPUUtilization",
        "namespace": "AWS/RDS",
        "DBClusterIdentifier": "ledger-prod",
    }
    assert alert.annotations["description"] == "Ledger database CPU above 90%"
    assert alert.starts_at == datetime(2026, 11, 24, 3, 20, 11, 417000, tzinfo=UTC)
    assert alert.raw["MessageId"] == "8a6c7b1e-3f0d-5c2a-9e4b-1d2f3a4b5c6d"


def test_cloudwatch_ok_resolves_the_same_fingerprint() -> None:
    (firing,) = parse("cloudwatch", load("cloudwatch_alarm"))
    ok = alarm_payload(
        NewStateValue="OK", OldStateValue="ALARM", StateChangeTime="2026-11-24T03:50:00.000+0000"
    )
    (resolved,) = parse("cloudwatch", ok)
    assert resolved.status is AlertStatus.RESOLVED
    assert resolved.fingerprint == firing.fingerprint
    assert resolved.ends_at == datetime(2026, 11, 24, 3, 50, tzinfo=UTC)


def test_cloudwatch_fingerprint_is_account_region_and_name() -> None:
    (base,) = parse("cloudwatch", load("cloudwatch_alarm"))
    (other_account,) = parse("cloudwatch", alarm_payload(AWSAccountId="210987654321"))
    (other_name,) = parse("cloudwatch", alarm_payload(AlarmName="ledger-prod-mem"))
    (same,) = parse("cloudwatch", alarm_payload(NewStateReason="another reason"))
    assert len({base.fingerprint, other_account.fingerprint, other_name.fingerprint}) == 3
    assert same.fingerprint == base.fingerprint


def test_cloudwatch_insufficient_data_and_confirmations_carry_no_alert() -> None:
    assert parse("cloudwatch", alarm_payload(NewStateValue="INSUFFICIENT_DATA")) == []
    confirmation = load("sns_subscription_confirmation")
    assert parse("cloudwatch", confirmation) == []
    assert sns_subscribe_url(confirmation).startswith(
        "https://sns.ap-southeast-1.amazonaws.com/?Action=ConfirmSubscription"
    )
    assert sns_subscribe_url(load("cloudwatch_alarm")) is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"Type": "Notification", "Message": "not json"}, "Message: not JSON"),
        ({"Type": "Notification", "Message": "[1]"}, "Message: expected an object"),
        ({"Type": "Nope", "Message": "{}"}, "unknown SNS message type"),
        ({"Message": "{}"}, "Type: missing"),
    ],
)
def test_cloudwatch_malformed(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(BadPayload, match=message):
        parse("cloudwatch", payload)


def test_cloudwatch_unknown_state() -> None:
    with pytest.raises(BadPayload, match="Message.NewStateValue: unknown status"):
        parse("cloudwatch", alarm_payload(NewStateValue="ON_FIRE"))


# --- PagerDuty -------------------------------------------------------------------------------


def test_pagerduty_triggered_and_resolved() -> None:
    (firing,) = parse("pagerduty", load("pagerduty_triggered"))
    (resolved,) = parse("pagerduty", load("pagerduty_resolved"))
    assert firing.fingerprint == resolved.fingerprint == "PGR0VU2"
    assert firing.status is AlertStatus.FIRING and resolved.status is AlertStatus.RESOLVED
    assert firing.labels["service"] == "Card payments"
    assert firing.labels["priority"] == "P1"
    assert firing.labels["urgency"] == "high"
    assert firing.annotations["summary"] == "Payment gateway errors in ap-southeast-1"
    assert firing.starts_at == resolved.starts_at == datetime(2026, 11, 24, 3, 25, 1, tzinfo=UTC)
    assert resolved.ends_at == datetime(2026, 11, 24, 4, 2, 44, 1000, tzinfo=UTC)
    assert firing.raw["event_id"] == "01DEN3QRK9A7BHR7JSU3VN1E2M"


def test_pagerduty_other_events_carry_no_alert() -> None:
    assert parse("pagerduty", load("pagerduty_acknowledged")) == []
    ping = {
        "event": {
            "id": "x",
            "event_type": "pagey.ping",
            "occurred_at": "2026-11-24T00:00:00Z",
            "data": {"message": "Hello from your friend Pagey!", "type": "ping"},
        }
    }
    assert parse("pagerduty", ping) == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("event"), "event: missing"),
        (lambda p: p["event"].pop("data"), "event.data: missing"),
        (lambda p: p["event"]["data"].pop("id"), "event.data.id: missing"),
        (lambda p: p["event"]["data"].update(type="service"), "event.data.type"),
        (lambda p: p["event"].update(occurred_at=17), "event.occurred_at: expected a string"),
        (lambda p: p["event"]["data"].update(service="Card payments"), "event.data.service"),
    ],
)
def test_pagerduty_malformed(mutate: Any, message: str) -> None:
    payload = load("pagerduty_triggered")
    mutate(payload)
    with pytest.raises(BadPayload, match=message):
        parse("pagerduty", payload)


# --- generic ---------------------------------------------------------------------------------


def test_generic_social_mentions() -> None:
    alerts = parse("social", load("generic_social"))
    assert [a.source for a in alerts] == ["social"] * 3
    first, second, third = alerts
    assert first.labels == {"sentiment": "negative", "topic": "failed-payments", "platform": "x"}
    assert first.status is AlertStatus.FIRING
    assert first.starts_at == datetime(2026, 11, 24, 3, 30, tzinfo=timezone(timedelta(hours=7)))
    assert first.fingerprint == generic_fingerprint(first.labels)
    assert first.fingerprint != second.fingerprint
    assert second.annotations == {"mentions": "51"}
    assert third.fingerprint == "spike-2026-11-24"
    assert third.status is AlertStatus.RESOLVED
    assert third.labels["score"] == "-0.8" and third.labels["verified"] == "true"


def test_generic_single_object() -> None:
    (alert,) = parse("social", {"labels": {"topic": "outage", "sentiment": "negative"}})
    assert alert.fingerprint == generic_fingerprint({"sentiment": "negative", "topic": "outage"})


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6))
def test_generic_fingerprint_ignores_label_order(labels: dict[str, str]) -> None:
    reordered = dict(reversed(list(labels.items())))
    assert generic_fingerprint(labels) == generic_fingerprint(reordered)


def test_generic_fingerprint_separates_keys_from_values() -> None:
    assert generic_fingerprint({"a": "b,c"}) != generic_fingerprint({"a,b": "c"})
    assert generic_fingerprint({"a": "b"}) != generic_fingerprint({"a": "b", "c": ""})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"alerts": [{"annotations": {}}]}, r"alerts\[0\].labels: missing"),
        ({"alerts": [{"labels": {"a": ["x"]}}]}, r"alerts\[0\].labels.a: expected a string"),
        ({"alerts": [{"labels": {}, "status": "open"}]}, "unknown status 'open'"),
        ({"alerts": [{"labels": {}, "starts_at": "2026-11-24"}]}, "RFC 3339"),
        ({"alerts": "all of them"}, "alerts: expected a list"),
        ({"labels": None}, "labels: expected an object"),
    ],
)
def test_generic_malformed(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(BadPayload, match=message):
        parse("social", payload)


def test_unknown_source_names_and_non_objects() -> None:
    with pytest.raises(BadPayload, match="not a built-in source"):
        parse("Social Media!", {"labels": {}})
    with pytest.raises(BadPayload, match="expected a JSON object"):
        parse("alertmanager", [])  # type: ignore[arg-type]


def test_parse_body() -> None:
    body = (FIXTURES / "alertmanager_firing.json").read_bytes()
    assert len(parse_body("alertmanager", body)) == 2
    for bad, reason in ((b"{", "body: not JSON"), (b"\xff\xfe", "body: not JSON: not UTF-8"),
                        (b"[" * 100_000, "body: nested deeper than 64 levels"),
                        (b'{"alerts": [{"labels": {"a": "\\ud83d"}}]}', "alerts.0..labels.a: holds half of a UTF-16 surrogate"),
                        (b'{"alerts": [], "x": NaN}', "x: nan is not a finite number")):
        with pytest.raises(BadPayload, match=reason):
            parse_body("alertmanager", bad)


# --- property: malformed input is a BadPayload, never another exception ----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)

# Keys the parsers read, so random objects hit the interesting paths more often.
known_keys = st.sampled_from(
    [
        "alerts",
        "labels",
        "annotations",
        "status",
        "fingerprint",
        "startsAt",
        "endsAt",
        "starts_at",
        "ends_at",
        "version",
        "Type",
        "Message",
        "event",
        "event_type",
        "data",
        "id",
        "type",
        "occurred_at",
        "created_at",
        "service",
        "priority",
        "title",
        "AlarmName",
        "NewStateValue",
        "AWSAccountId",
        "Region",
        "Trigger",
        "Dimensions",
        "StateChangeTime",
        "SubscribeURL",
    ]
)
keyed_objects = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "firing",
            "resolved",
            "ALARM",
            "OK",
            "incident.triggered",
            "incident.resolved",
            "Notification",
            "0001-01-01T00:00:00Z",
            "2026-11-24T03:12:40Z",
            "2026-13-45T99:99:99Z",
            "4",
        ]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(known_keys, inner, max_size=5),
    max_leaves=25,
)
sources = st.sampled_from([*sorted(SOURCES), "social"])


def _parse_or_bad_payload(source: str, payload: Any) -> None:
    try:
        alerts = parse(source, payload)
    except BadPayload:
        return
    assert all(isinstance(a, Alert) for a in alerts)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(sources, json_values)
def test_any_json_is_alerts_or_bad_payload(source: str, payload: Any) -> None:
    _parse_or_bad_payload(source, payload)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(sources, keyed_objects)
def test_any_shaped_object_is_alerts_or_bad_payload(source: str, payload: Any) -> None:
    _parse_or_bad_payload(source, payload)


FIXTURE_SOURCES = {
    "alertmanager_firing": "alertmanager",
    "alertmanager_resolved": "alertmanager",
    "grafana_firing": "grafana",
    "cloudwatch_alarm": "cloudwatch",
    "sns_subscription_confirmation": "cloudwatch",
    "pagerduty_triggered": "pagerduty",
    "pagerduty_resolved": "pagerduty",
    "generic_social": "social",
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> tuple[str, Any]:
    """A real payload with one value anywhere in it replaced (or removed)."""
    name = draw(st.sampled_from(sorted(FIXTURE_SOURCES)))
    payload = load(name)
    if name == "cloudwatch_alarm" and draw(st.booleans()):
        payload["Message"] = json.loads(payload["Message"])  # mutate inside the alarm too
        inner = True
    else:
        inner = False
    path = draw(st.sampled_from(_paths(payload)[1:]))
    parent = payload
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    if inner and "Message" in payload:
        payload["Message"] = json.dumps(payload["Message"])
    return FIXTURE_SOURCES[name], payload


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_fixtures())
def test_mutated_real_payloads_are_alerts_or_bad_payload(case: tuple[str, Any]) -> None:
    _parse_or_bad_payload(*case)


@settings(max_examples=300)
@given(sources, st.binary(max_size=200))
def test_any_body_is_alerts_or_bad_payload(source: str, body: bytes) -> None:
    try:
        parse_body(source, body)
    except BadPayload:
        pass


def test_pagerduty_reopened_is_a_new_episode() -> None:
    (first,) = parse("pagerduty", load("pagerduty_triggered"))
    payload = load("pagerduty_triggered")
    payload["event"].update(event_type="incident.reopened", occurred_at="2026-11-24T05:00:00Z")
    (reopened,) = parse("pagerduty", payload)
    assert reopened.fingerprint == first.fingerprint
    assert reopened.status is AlertStatus.FIRING
    assert reopened.starts_at == datetime(2026, 11, 24, 5, tzinfo=UTC)
    assert reopened.episode != first.episode


# --- the pure core stays pure ----------------------------------------------------------------


def test_parsers_and_signatures_load_no_framework_or_network_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, siaga.alerts.parsers, siaga.alerts.signatures, siaga.alerts;"
        "print(','.join(m for m in ('prefect', 'httpx', 'boto3', 'fastapi', 'cryptography',"
        " 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_exports_match_all() -> None:
    import siaga.alerts as package
    from siaga.alerts import parsers, signatures

    for module in (package, parsers, signatures):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
    assert {"Alert", "AlertStatus", "BadPayload", "parse", "verify", "SourceAuth"} <= set(
        package.__all__
    )
