"""Routing and dedup: which runbook an alert starts, its incident key, inputs, thresholds; and the
store keeping one open incident per key, each notification once."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from siaga.audit import AuditTrail
from siaga.incidents import Alert, AlertStatus
from siaga.incidents.recording import process
from siaga.incidents.routing import decide, group_key, matches, per_runbook, render_inputs, routes
from siaga.incidents.runs import pending_resolve_runs, pending_runs, set_resolve_run
from siaga.incidents.views import get_incident, list_incidents
from siaga.runbook.models import Runbook
from siaga.store import alerts, engine

from ..support.routing import CATALOG, GATEWAY, NOW, STARTED, STORM, alert, runbook


def test_a_trigger_matches_on_source_and_every_label() -> None:
    trigger = GATEWAY.triggers[0]
    assert matches(trigger, alert())
    assert not matches(trigger, alert(alertname="Other"))
    assert not matches(trigger, alert(source="grafana"))


def test_the_incident_key_is_the_runbook_and_the_group_by_values() -> None:
    (route,) = routes([GATEWAY, STORM], alert("ap-southeast-1"))
    assert route.key == ("gateway", '["ap-southeast-1"]') and route.open_key == 'gateway ["ap-southeast-1"]'
    assert render_inputs(route.trigger, alert("ap-southeast-1"), GATEWAY) == ({"region": "ap-southeast-1"}, [])
    assert group_key(GATEWAY.triggers[0], alert("x")) != route.group_key
    missing = Alert(source="alertmanager", fingerprint="f", status=AlertStatus.FIRING, labels={"alertname": "GatewayErrors"})
    (route,) = routes([GATEWAY], missing)
    assert route.group_key == '[""]'
    inputs, problems = render_inputs(route.trigger, missing, GATEWAY)
    assert inputs == {} and "region" in problems[0]


def test_every_trigger_is_a_candidate_and_the_first_that_fires_decides() -> None:
    twice = runbook("twice", {"source": "alertmanager"}, {"source": "alertmanager", "match": {"region": "a"}})
    found = routes([twice, GATEWAY], alert("a"))
    assert [(r.runbook_id, r.trigger_index) for r in found] == [("twice", 0), ("twice", 1), ("gateway", 0)]
    assert [[r.trigger_index for r in of] for of in per_runbook(found)] == [[0, 1], [0]]
    never = lambda route: pytest.fail("a plain trigger needs no count")  # noqa: E731
    assert decide(found[:2], lambda route: False, never) is found[0]


def test_a_threshold_not_reached_does_not_shadow_a_later_trigger() -> None:
    counting = runbook(
        "counting",
        {"source": "generic", "threshold": {"count": 200, "within": "30m", "match": {"sentiment": "negative"}}},
        {"source": "generic", "threshold": {"count": 5, "within": "15m", "match": {"sentiment": "negative", "tier": "vip"}}},
        {"source": "generic", "match": {"tier": "vip"}, "group_by": ["topic"]},
    )
    post = Alert(source="generic", fingerprint="p", status=AlertStatus.FIRING,
                 labels={"sentiment": "negative", "tier": "vip", "topic": "fees"})
    found = routes([counting], post)
    assert [r.trigger_index for r in found] == [0, 1, 2]
    counts = {0: 5, 1: 5}
    assert decide(found, lambda r: False, lambda r: counts[r.trigger_index]) is found[1]  # 5 of 5, not 5 of 200
    counts[1] = 4
    assert decide(found, lambda r: False, lambda r: counts[r.trigger_index]) is found[2]  # neither: the plain one
    assert decide(found, lambda r: r.trigger_index == 0, lambda r: 0) is found[0]  # its incident is open: it joins
    assert decide(found[:2], lambda r: False, lambda r: 1) is None


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    """The incident store, on SQLite and on PostgreSQL."""
    return engine(store_url)


def test_one_open_incident_per_key_and_each_notification_recorded_once(store) -> None:  # type: ignore[no-untyped-def]
    first = process(store, CATALOG, alert("ap-southeast-1"), NOW)
    assert first.new and len(first.opened) == 1
    again = process(store, CATALOG, alert("ap-southeast-1"), NOW)
    assert not again.new and not again.opened and not again.joined
    other_fp = process(store, CATALOG, alert("ap-southeast-1", fingerprint="fp-2"), NOW)
    assert other_fp.joined == first.opened
    other_group = process(store, CATALOG, alert("ap-southeast-3"), NOW)
    assert other_group.opened and other_group.opened != first.opened
    incident = get_incident(store, first.opened[0])
    assert incident and incident["alerts"] == 2 and incident["inputs"] == {"region": "ap-southeast-1"}
    with store.connect() as c:
        assert c.execute(select(func.count()).select_from(alerts)).scalar_one() == 3


def test_an_incident_resolves_when_all_its_alerts_resolve_and_the_key_is_free_again(store) -> None:  # type: ignore[no-untyped-def]
    opened = process(store, CATALOG, alert(), NOW).opened[0]
    process(store, CATALOG, alert(fingerprint="fp-2"), NOW)
    assert process(store, CATALOG, alert(status="resolved"), NOW).resolved == []
    assert process(store, CATALOG, alert(fingerprint="fp-2", status="resolved"), NOW).resolved == [opened]
    assert get_incident(store, opened)["state"] == "resolved"
    refired = process(store, CATALOG, alert(starts_at=NOW), NOW + timedelta(minutes=1))
    assert refired.opened and refired.opened != [opened]
    assert [i["state"] for i in list_incidents(store)] == ["open", "resolved"]


def test_a_resolved_notification_that_came_first_ends_the_episode(store) -> None:  # type: ignore[no-untyped-def]
    process(store, CATALOG, alert(status="resolved"), NOW)
    assert not process(store, CATALOG, alert(), NOW).opened
    assert list_incidents(store) == []


def test_a_threshold_trigger_opens_on_the_count_th_alert_then_joins(store) -> None:  # type: ignore[no-untyped-def]
    def post(n: int, at: datetime, topic: str = "fees") -> list[str]:
        a = Alert(source="generic", fingerprint=f"post-{topic}-{n}", status=AlertStatus.FIRING,
                  labels={"sentiment": "negative", "topic": topic})
        outcome = process(store, CATALOG, a, at)
        return outcome.opened + outcome.joined

    assert post(1, NOW - timedelta(minutes=20)) == []
    assert post(2, NOW - timedelta(minutes=5)) == []
    assert post(3, NOW - timedelta(minutes=1), topic="other") == []
    assert post(4, NOW - timedelta(minutes=1)) == []
    opened = post(5, NOW)
    assert len(opened) == 1
    assert get_incident(store, opened[0])["alerts"] == 3  # posts 2, 4 and 5: the ones in the window
    assert post(6, NOW + timedelta(hours=1)) == opened


def test_every_trigger_of_a_runbook_is_evaluated_on_the_store(store) -> None:  # type: ignore[no-untyped-def]
    counting = runbook(
        "counting",
        {"source": "generic", "group_by": ["topic"], "threshold": {"count": 3, "within": "10m"}},
        {"source": "generic", "match": {"tier": "vip"}, "group_by": ["topic"]},
    )
    catalog = {"counting": counting}

    def post(n: int, topic: str, **labels: str):  # type: ignore[no-untyped-def]
        a = Alert(source="generic", fingerprint=f"p-{n}", status=AlertStatus.FIRING, labels={"topic": topic, **labels})
        return process(store, catalog, a, NOW + timedelta(seconds=n))

    vip = post(1, "fees", tier="vip")
    assert len(vip.opened) == 1, "the plain trigger fires though the threshold before it (1 of 3) does not"
    assert not post(2, "rates").opened and not post(3, "rates").opened
    third = post(4, "rates")
    assert len(third.opened) == 1 and get_incident(store, third.opened[0])["alerts"] == 3
    assert post(5, "fees").joined == vip.opened, "the threshold joins the open incident of its key"
    assert get_incident(store, vip.opened[0])["alerts"] == 2


def test_inputs_are_coerced_to_the_runbooks_types_or_left_out() -> None:
    typed = Runbook.model_validate(
        {
            "runbook": "typed",
            "title": "typed",
            "severity": "sev3",
            "roles": {"ops": ["eko"]},
            "inputs": {"replicas": {"type": "integer", "default": 1}, "zone": {"type": "string", "default": "a", "enum": ["a", "b"]}},
            "triggers": [{"source": "alertmanager", "inputs": {"replicas": "{{ alert.labels.n }}", "zone": "{{ alert.labels.zone }}"}}],
            "steps": [{"id": "note", "action": "note", "with": {"text": "hi"}}],
        }
    )
    (route,) = routes([typed], alert(n="3", zone="z"))
    inputs, problems = render_inputs(route.trigger, alert(n="3", zone="z"), typed)
    assert inputs == {"replicas": 3}
    assert "zone" in problems[0]


def test_the_worker_retries_a_run_that_did_not_start_and_records_it_once(store) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from siaga.alerts.receiver import Batch, Worker

    calls: list[str] = []

    async def flaky_start(incident) -> str:  # type: ignore[no-untyped-def]
        calls.append(incident["id"])
        if len(calls) < 3:
            raise ConnectionError("503 database is locked")
        return f"run-of-{incident['id']}"

    async def go() -> None:
        worker = Worker(CATALOG, store, flaky_start, attempts=3, first_delay=0)
        task = asyncio.create_task(worker.run())
        worker.queue.put_nowait(Batch("alertmanager", [alert("a"), alert("a"), alert("b", fingerprint="x")], NOW))
        await worker.queue.join()
        task.cancel()

    asyncio.run(go())
    incidents = list_incidents(store)
    assert len(incidents) == 2 and all(i["flow_run_id"] == f"run-of-{i['id']}" for i in incidents)
    assert len(calls) == 4  # two failures and a success for the first incident, one for the second


def ranked_runbook(id: str, severity: str, priority: str | None, *, on_resolve: bool = False) -> Runbook:
    return Runbook.model_validate({
        "runbook": id, "title": id, "severity": severity, "impact": {"priority": priority},
        "triggers": [{"source": "alertmanager", "match": {"alertname": id}, "group_by": ["region"]}],
        "steps": [{"id": "page", "action": "note", "with": {"text": "hi"}}],
        "on_resolve": [{"id": "all-clear", "action": "note", "with": {"text": "bye"}}] if on_resolve else [],
    })


RANKED = {
    "minor": ranked_runbook("minor", "sev3", "P2"),
    "major": ranked_runbook("major", "sev1", "P3", on_resolve=True),
    "loud": ranked_runbook("loud", "sev1", None),
}


def fire(runbook_id: str, region: str, **labels: str) -> Alert:
    return Alert(source="alertmanager", fingerprint=f"fp-{runbook_id}-{region}", status=AlertStatus.FIRING,
                 labels={"alertname": runbook_id, "region": region, **labels}, starts_at=STARTED)


def test_open_incidents_rank_by_severity_then_priority_then_age(store) -> None:  # type: ignore[no-untyped-def]
    opened = {}
    for minute, (runbook_id, region, labels) in enumerate([
        ("minor", "a", {}),                  # sev3 P2 (the runbook's)
        ("loud", "a", {}),                   # sev1, no priority: after every sev1 with one
        ("major", "a", {}),                  # sev1 P3
        ("major", "b", {"priority": "p1"}),  # sev1 P1: the alert's label wins over the runbook's P3
        ("major", "c", {}),                  # sev1 P3, younger than major/a
        ("minor", "b", {"priority": "2"}),   # sev3 P2, younger than minor/a
        ("minor", "c", {"priority": "urgent"}),  # not a priority: the runbook's P2
    ]):
        (opened[runbook_id, region],) = process(store, RANKED, fire(runbook_id, region, **labels),
                                                NOW + timedelta(minutes=minute)).opened
    ranked = [("major", "b"), ("major", "a"), ("major", "c"), ("loud", "a"), ("minor", "a"), ("minor", "b"), ("minor", "c")]
    listed = list_incidents(store, "open")
    assert [i["id"] for i in listed] == [opened[k] for k in ranked]
    assert [i["rank"] for i in listed] == [1, 2, 3, 4, 5, 6, 7]
    assert [(i["severity"], i["priority"]) for i in listed] == [
        ("sev1", "P1"), ("sev1", "P3"), ("sev1", "P3"), ("sev1", None), ("sev3", "P2"), ("sev3", "P2"), ("sev3", "P2")]
    assert [i["id"] for i in pending_runs(store)] == [opened[k] for k in ranked]  # runs start in rank order

    # a resolved incident leaves the ranking and is listed after the open ones, unranked
    resolved = Alert(source="alertmanager", fingerprint="fp-major-b", status=AlertStatus.RESOLVED,
                     labels={"alertname": "major", "region": "b", "priority": "p1"}, starts_at=STARTED)
    assert process(store, RANKED, resolved, NOW + timedelta(hours=1)).resolved == [opened["major", "b"]]
    everything = list_incidents(store)
    assert [i["id"] for i in everything] == [opened[k] for k in ranked[1:]] + [opened["major", "b"]]
    assert [i["rank"] for i in everything] == [1, 2, 3, 4, 5, 6, None]
    assert [i["id"] for i in list_incidents(store, "open", limit=2)] == [opened[k] for k in ranked[1:3]]


def test_the_worker_starts_a_resolve_run_once_per_resolved_incident(store) -> None:  # type: ignore[no-untyped-def]
    """The starter (with a stand-in for Prefect's run creation that records what it was asked)
    starts each incident's run in rank order and, once the incident resolves, its resolve run:
    once, whatever repeats of the resolved notification arrive or how often the receiver restarts;
    not for a runbook without on_resolve steps, nor for an incident whose run never started."""
    import asyncio

    from siaga.alerts.receiver import Batch, Worker

    started: list[tuple[str, str]] = []

    async def start(incident) -> str:  # type: ignore[no-untyped-def]
        started.append((incident["id"], incident["phase"]))
        return f"{incident['phase']}-run-of-{incident['id']}"

    def resolved(runbook_id: str, region: str) -> Alert:
        return Alert(source="alertmanager", fingerprint=f"fp-{runbook_id}-{region}", status=AlertStatus.RESOLVED,
                     labels={"alertname": runbook_id, "region": region}, starts_at=STARTED)

    async def deliver(*batches: list[Alert]) -> None:  # one receiver's life: a start, batches, a stop
        worker = Worker(RANKED, store, start, attempts=2, first_delay=0)
        task = asyncio.create_task(worker.run())
        for batch in batches or [[]]:  # the starter has been through once the batch is done
            worker.queue.put_nowait(Batch("alertmanager", batch, NOW))
            await worker.queue.join()
        task.cancel()

    asyncio.run(deliver([fire("minor", "r"), fire("major", "r"), fire("loud", "r")]))
    ids = {i["runbook_id"]: i["id"] for i in list_incidents(store)}
    assert started == [(ids["major"], "respond"), (ids["loud"], "respond"), (ids["minor"], "respond")]

    started.clear()
    asyncio.run(deliver([resolved("major", "r"), resolved("minor", "r")], [resolved("major", "r")]))
    assert started == [(ids["major"], "resolve")]  # minor has no on_resolve steps
    asyncio.run(deliver([resolved("major", "r")]))  # a restarted receiver, a repeated notification
    assert started == [(ids["major"], "resolve")]
    incident = get_incident(store, ids["major"])
    assert incident["resolve_run_id"] == f"resolve-run-of-{ids['major']}" and incident["resolve_attempts"] == 1
    assert incident["flow_run_id"] == f"respond-run-of-{ids['major']}"
    kinds = [r.kind for r in AuditTrail(store).records(ids["major"])]
    assert kinds.count("incident.resolve_run_started") == 1 and kinds[-1] == "incident.resolve_run_started"
    assert kinds.index("incident.resolved") < kinds.index("incident.resolve_run_started")
    assert set_resolve_run(store, ids["major"], "another") is False  # noted once, never replaced

    # resolved before its run started (no starter ran): nothing was done, nothing to wind down
    (early,) = process(store, RANKED, fire("major", "quick"), NOW).opened
    process(store, RANKED, resolved("major", "quick"), NOW)
    assert get_incident(store, early)["resolve_due"] and pending_resolve_runs(store) == []
    started.clear()
    asyncio.run(deliver())
    assert started == []


def test_routing_is_pure() -> None:
    import subprocess
    import sys

    code = (
        "import sys, siaga.incidents.routing; "
        "print(sorted(m for m in ('prefect', 'fastapi', 'httpx', 'sqlalchemy', 'uvicorn', 'boto3') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
