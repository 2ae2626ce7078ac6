"""Heartbeats and maintenance windows in the store, on SQLite and PostgreSQL, with the clock given:
a heartbeat gone quiet opens one incident and its return resolves it; a window holds alerts back
and its end opens the incidents of those still firing; two watchers at once do each thing once."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from siaga.integrations import default_registry
from sqlalchemy import Engine, create_engine, select

from siaga.audit import AuditTrail
from siaga.incidents import Alert, AlertStatus
from siaga.incidents.heartbeats import heartbeat_rows, note_alerts, note_named
from siaga.incidents.maintenance import (
    WindowError,
    end_window,
    get_window,
    list_windows,
    occurrences,
    open_window,
)
from siaga.incidents.recording import process, process_batch
from siaga.incidents.runs import pending_runs
from siaga.incidents.views import get_incident, list_incidents
from siaga.incidents.watching import watch_once
from siaga.runbook import Runbook, parse_runbook
from siaga.store import engine, incidents

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LONG_AGO = T0 - timedelta(days=1)
"""When the watcher started, in tests that are not about its start."""

PAYMENTS = """
runbook: payments-quiet
title: No successful payment lately
severity: sev1
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: payments
    match: {event: payment_succeeded}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
    heartbeat: {every: 5m}
steps:
  - id: page
    action: note
    with: {text: "no payment in {{ inputs.region }}"}
"""

BATCH_JOB = """
runbook: batch-job-quiet
title: The settlement job stopped checking in
severity: sev2
triggers:
  - source: heartbeat
    match: {name: settlement}
    heartbeat: {every: 10m}
steps:
  - id: page
    action: note
    with: {text: "settlement is quiet"}
"""

GATEWAY = """
runbook: gateway
title: Gateway errors
severity: sev2
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: alertmanager
    match: {alertname: GatewayErrors}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
maintenance:
  - schedule: "0 2 * * *"
    timezone: Asia/Jakarta
    for: 2h
    match: {region: jkt}
    reason: nightly ledger patching
steps:
  - id: page
    action: note
    with: {text: "gateway errors in {{ inputs.region }}"}
"""


@pytest.fixture(scope="module")
def runbooks() -> dict[str, Runbook]:
    registry = default_registry()
    loaded = [parse_runbook(text, registry) for text in (PAYMENTS, BATCH_JOB, GATEWAY)]
    return {runbook.id: runbook for runbook in loaded}


def payment(region: str, event: str = "payment_succeeded", status: AlertStatus = AlertStatus.FIRING) -> Alert:
    return Alert(source="payments", fingerprint=f"pay-{region}-{event}", status=status,
                 labels={"event": event, "region": region})


def gateway_alert(region: str, status: AlertStatus = AlertStatus.FIRING, *, env: str | None = None) -> Alert:
    labels = {"alertname": "GatewayErrors", "region": region} | ({"env": env} if env else {})
    return Alert(source="alertmanager", fingerprint=f"gw-{region}-{env}", status=status, labels=labels,
                 starts_at=T0 - timedelta(minutes=1))


def open_of(store: Engine, runbook: str) -> list[dict]:
    return [i for i in list_incidents(store, "open") if i["runbook_id"] == runbook]


def chain_kinds(store: Engine, chain: str) -> list[str]:
    trail = AuditTrail(store)
    assert trail.verify(chain) is None
    return [record.kind for record in trail.records(chain)]


def test_a_quiet_heartbeat_opens_one_incident_and_its_return_resolves_it(store_url: str, runbooks: Mapping[str, Runbook]) -> None:
    store = engine(store_url)
    assert note_alerts(store, runbooks, [payment("jkt"), payment("sby")], T0) == 2
    # not signs of life: another event, a resolved notification
    assert note_alerts(store, runbooks, [payment("jkt", "payment_failed"), payment("jkt", status=AlertStatus.RESOLVED)], T0) == 0
    assert note_alerts(store, runbooks, [payment("jkt")], T0 + timedelta(minutes=4)) == 1
    assert watch_once(store, runbooks, T0 + timedelta(minutes=5, seconds=1), LONG_AGO).opened != []  # sby went quiet
    (sby,) = open_of(store, "payments-quiet")
    assert sby["inputs"] == {"region": "sby"} and sby["severity"] == "sev1"
    (alert,) = get_incident(store, sby["id"])["alert_list"]
    assert alert["source"] == "heartbeat" and alert["status"] == "firing"
    assert alert["starts_at"] == T0 + timedelta(minutes=5)  # when it went quiet
    assert alert["labels"]["region"] == "sby" and alert["labels"]["event"] == "payment_succeeded"

    # the watcher passes again (and again): still one incident, one run owed
    for seconds in (2, 3):
        assert watch_once(store, runbooks, T0 + timedelta(minutes=5, seconds=seconds), LONG_AGO).opened == []
    assert [i["id"] for i in pending_runs(store) if i["runbook_id"] == "payments-quiet"] == [sby["id"]]

    watched = watch_once(store, runbooks, T0 + timedelta(minutes=9, seconds=1), LONG_AGO)  # jkt's turn
    assert len(watched.opened) == 1 and len(open_of(store, "payments-quiet")) == 2

    # a payment in sby: the heartbeat is back and its incident resolves
    note_alerts(store, runbooks, [payment("sby")], T0 + timedelta(minutes=12))
    watched = watch_once(store, runbooks, T0 + timedelta(minutes=12, seconds=1), LONG_AGO)
    assert watched.resolved == [sby["id"]]
    assert get_incident(store, sby["id"])["state"] == "resolved"
    assert [i["group_key"] for i in open_of(store, "payments-quiet")] == ['["jkt"]']
    rows = {row["group_key"]: row for row in heartbeat_rows(store, runbooks)}
    assert rows['["sby"]']["state"] == "alive" and rows['["jkt"]']["state"] == "quiet"
    assert rows['["sby"]']["runbooks"] == ["payments-quiet"] and rows['["sby"]']["every"] == "5m"
    assert chain_kinds(store, sby["id"]) == ["alert.received", "incident.opened", "alert.received", "incident.resolved"]

    # quiet again later: a new episode, a new incident
    watch_once(store, runbooks, T0 + timedelta(minutes=17, seconds=1), LONG_AGO)
    again = [i for i in open_of(store, "payments-quiet") if i["group_key"] == '["sby"]']
    assert len(again) == 1 and again[0]["id"] != sby["id"]


def test_an_unwatched_heartbeat_is_armed_at_start_and_a_restart_waits_one_interval(
    store_url: str, runbooks: Mapping[str, Runbook]
) -> None:
    from siaga.incidents.heartbeats import arm

    store = engine(store_url)
    assert arm(store, runbooks, T0) == 1  # the ungrouped `settlement` heartbeat
    assert arm(store, runbooks, T0 + timedelta(minutes=1)) == 0
    # a receiver (re)started at T0 + 9m has heard nothing: no proof of silence before T0 + 19m
    restarted = T0 + timedelta(minutes=9)
    assert watch_once(store, runbooks, T0 + timedelta(minutes=15), restarted).opened == []
    assert note_named(store, runbooks, "settlement", {}, T0 + timedelta(minutes=16)) == 1
    assert note_named(store, runbooks, "nobody-expects-this", {}, T0 + timedelta(minutes=16)) == 0
    assert watch_once(store, runbooks, T0 + timedelta(minutes=25), restarted).opened == []
    (opened,) = watch_once(store, runbooks, T0 + timedelta(minutes=26, seconds=1), restarted).opened
    assert get_incident(store, opened)["runbook_id"] == "batch-job-quiet"


def race(stores: list[Engine], runbooks: Mapping[str, Runbook], now: datetime) -> None:
    """A watcher's pass on each of `stores` at the same moment (two receivers on one database)."""
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def watch(store: Engine) -> None:
        start.wait()
        try:
            watch_once(store, runbooks, now, LONG_AGO)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=watch, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_two_watchers_at_once_open_each_incident_once(store_url: str, runbooks: Mapping[str, Runbook]) -> None:
    """Two receivers on one database find the same heartbeats quiet, and the same window ended,
    at the same moment."""
    first = engine(store_url)
    second = create_engine(store_url, connect_args={"timeout": 30} if store_url.startswith("sqlite") else {})
    note_alerts(first, runbooks, [payment(f"r{n}") for n in range(5)], T0)
    race([first, second], runbooks, T0 + timedelta(minutes=6))
    opened = open_of(first, "payments-quiet")
    assert sorted(i["group_key"] for i in opened) == sorted(f'["r{n}"]' for n in range(5))
    assert all(i["alerts"] == 1 for i in opened)
    for incident in opened:
        assert chain_kinds(first, incident["id"]) == ["alert.received", "incident.opened"]

    window = open_window(first, runbooks=["gateway"], match={}, starts_at=T0, ends_at=T0 + timedelta(minutes=10),
                         reason="deploy", by="alice", now=T0)
    process_batch(first, runbooks, [gateway_alert(f"w{n}") for n in range(4)], T0 + timedelta(minutes=1))
    race([first, second], runbooks, T0 + timedelta(minutes=10))
    second.dispose()
    assert sorted(i["group_key"] for i in open_of(first, "gateway")) == sorted(f'["w{n}"]' for n in range(4))
    assert chain_kinds(first, f"maintenance:{window['id']}").count("maintenance.released") == 1


def test_a_window_holds_alerts_back_and_its_end_opens_the_incidents_still_firing(
    store_url: str, runbooks: Mapping[str, Runbook]
) -> None:
    store = engine(store_url)
    window = open_window(store, runbooks=["gateway"], match={}, starts_at=T0, ends_at=T0 + timedelta(hours=1),
                         reason="database upgrade", by="alice", now=T0)
    held = process(store, runbooks, gateway_alert("pdg"), T0 + timedelta(minutes=1))
    assert held.suppressed == [window["id"]] and held.opened == held.joined == []
    process(store, runbooks, gateway_alert("mdn"), T0 + timedelta(minutes=1))
    process(store, runbooks, gateway_alert("mdn", AlertStatus.RESOLVED), T0 + timedelta(minutes=2))  # over
    # a webhook of several alerts takes the per-alert path while a window is active
    batch = [gateway_alert(f"b{n}") for n in range(3)]
    assert [o.suppressed for o in process_batch(store, runbooks, batch, T0 + timedelta(minutes=3))] == [[window["id"]]] * 3
    assert open_of(store, "gateway") == []

    (listed,) = list_windows(store, T0 + timedelta(minutes=5))
    assert (listed["state"], listed["suppressed"], listed["released"], listed["opened_by"]) == ("active", 5, 0, "alice")
    assert watch_once(store, runbooks, T0 + timedelta(minutes=30), LONG_AGO).opened == []

    ended = end_window(store, window["id"], "bob", T0 + timedelta(minutes=40))
    assert ended["ended_by"] == "bob" and ended["ends_at"] == T0 + timedelta(minutes=40)
    with pytest.raises(WindowError, match="ended at"):
        end_window(store, window["id"], "bob", T0 + timedelta(minutes=41))
    with pytest.raises(WindowError, match="no maintenance window"):
        end_window(store, "mw-nope", "bob", T0)
    watched = watch_once(store, runbooks, T0 + timedelta(minutes=40, seconds=1), LONG_AGO)
    assert len(watched.opened) == 4  # pdg and b0..b2; mdn resolved during the window
    assert sorted(i["group_key"] for i in open_of(store, "gateway")) == ['["b0"]', '["b1"]', '["b2"]', '["pdg"]']
    assert watch_once(store, runbooks, T0 + timedelta(minutes=41), LONG_AGO).opened == []  # released once

    detail = get_window(store, window["id"])
    assert detail is not None and detail["released_at"] is not None
    by_group = {a["group_key"]: a for a in detail["alert_list"]}
    assert by_group['["mdn"]']["incident_id"] is None and by_group['["mdn"]']["resolved_at"] is not None
    assert by_group['["pdg"]']["incident_id"] in watched.opened
    kinds = chain_kinds(store, f"maintenance:{window['id']}")
    assert kinds == ["maintenance.opened", *["alert.suppressed"] * 5, "maintenance.ended", "maintenance.released"]
    assert list_windows(store, T0 + timedelta(minutes=42)) == []
    assert len(list_windows(store, T0 + timedelta(minutes=42), ended=True)) == 1


def test_overlapping_windows_hand_an_alert_on_and_labels_narrow_what_a_window_covers(
    store_url: str, runbooks: Mapping[str, Runbook]
) -> None:
    store = engine(store_url)
    drills = open_window(store, runbooks=[], match={"env": "drill"}, starts_at=T0, ends_at=T0 + timedelta(hours=2),
                         reason="game day", by="citra", drill=True, origin="drill", now=T0)
    short = open_window(store, runbooks=["gateway"], match={}, starts_at=T0, ends_at=T0 + timedelta(hours=1),
                        reason="deploy", by="alice", now=T0)
    assert process(store, runbooks, gateway_alert("x", env="drill"), T0 + timedelta(minutes=1)).suppressed == [drills["id"]]
    assert process(store, runbooks, gateway_alert("y"), T0 + timedelta(minutes=1)).suppressed == [short["id"]]
    watched = watch_once(store, runbooks, T0 + timedelta(hours=1, seconds=1), LONG_AGO)
    assert len(watched.opened) == 1  # y; x is still held by the game day
    assert [i["group_key"] for i in open_of(store, "gateway")] == ['["y"]']
    # during the game day, an alert without its label opens as usual
    assert process(store, runbooks, gateway_alert("z"), T0 + timedelta(hours=1, minutes=1)).opened != []
    assert len(watch_once(store, runbooks, T0 + timedelta(hours=2, seconds=1), LONG_AGO).opened) == 1
    assert sorted(i["group_key"] for i in open_of(store, "gateway")) == ['["x"]', '["y"]', '["z"]']


def test_a_heartbeat_quiet_during_a_window_opens_its_incident_when_the_window_ends(
    store_url: str, runbooks: Mapping[str, Runbook]
) -> None:
    store = engine(store_url)
    window = open_window(store, runbooks=["payments-quiet"], match={"region": "jkt"}, starts_at=T0,
                         ends_at=T0 + timedelta(minutes=30), reason="payment switch maintenance", by="eko", now=T0)
    note_alerts(store, runbooks, [payment("jkt")], T0)
    watched = watch_once(store, runbooks, T0 + timedelta(minutes=6), LONG_AGO)
    assert watched.opened == [] and any("held back" in line for line in watched.said)
    (row,) = heartbeat_rows(store, runbooks)
    assert row["state"] == "quiet"
    (opened,) = watch_once(store, runbooks, T0 + timedelta(minutes=30, seconds=1), LONG_AGO).opened
    assert get_incident(store, opened)["inputs"] == {"region": "jkt"}
    assert get_window(store, window["id"])["alert_list"][0]["incident_id"] == opened


def test_a_runbooks_recurring_window_is_set_ahead_once_and_holds_its_alerts(
    store_url: str, runbooks: Mapping[str, Runbook]
) -> None:
    store = engine(store_url)
    jakarta_2am = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)  # 02:00 on 3 March in Asia/Jakarta (UTC+7)
    assert watch_once(store, runbooks, jakarta_2am - timedelta(minutes=30), LONG_AGO).said == []
    said = watch_once(store, runbooks, jakarta_2am - timedelta(minutes=5), LONG_AGO).said
    assert len(said) == 1 and "nightly ledger patching" in said[0]
    assert watch_once(store, runbooks, jakarta_2am - timedelta(minutes=4), LONG_AGO).said == []  # set once
    (window,) = list_windows(store, jakarta_2am - timedelta(minutes=4))
    assert window["state"] == "upcoming" and window["origin"] == "runbook"
    assert (window["starts_at"], window["ends_at"]) == (jakarta_2am, jakarta_2am + timedelta(hours=2))
    assert process(store, runbooks, gateway_alert("jkt"), jakarta_2am + timedelta(minutes=1)).suppressed == [window["id"]]
    assert process(store, runbooks, gateway_alert("bdg"), jakarta_2am + timedelta(minutes=1)).opened != []
    watched = watch_once(store, runbooks, jakarta_2am + timedelta(hours=2), LONG_AGO)
    assert len(watched.opened) == 1
    with store.connect() as connection:
        groups = connection.execute(select(incidents.c.group_key).where(incidents.c.runbook_id == "gateway")).scalars().all()
    assert sorted(groups) == ['["bdg"]', '["jkt"]']


def test_occurrences_of_a_recurring_window() -> None:
    declared = parse_runbook(GATEWAY, default_registry()).maintenance[0]
    during = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 03:30 in Jakarta
    assert list(occurrences(declared, during)) == [(datetime(2026, 3, 2, 19, 0, tzinfo=UTC), datetime(2026, 3, 2, 21, 0, tzinfo=UTC))]
    assert list(occurrences(declared, datetime(2026, 3, 2, 21, 0, tzinfo=UTC))) == []  # over
    assert list(occurrences(declared, datetime(2026, 3, 2, 19, 0, tzinfo=UTC)))[0][0] == datetime(2026, 3, 2, 19, 0, tzinfo=UTC)


def test_a_window_says_what_is_wrong_with_it(store_url: str) -> None:
    store = engine(store_url)
    with pytest.raises(WindowError, match="reason"):
        open_window(store, runbooks=[], match={}, starts_at=T0, ends_at=T0 + timedelta(hours=1), reason=" ", by="a")
    with pytest.raises(WindowError, match="before it starts"):
        open_window(store, runbooks=[], match={}, starts_at=T0, ends_at=T0, reason="x", by="a")
    with pytest.raises(WindowError, match="at most 30d"):
        open_window(store, runbooks=[], match={}, starts_at=T0, ends_at=T0 + timedelta(days=31), reason="x", by="a")
    assert list_windows(store, T0, ended=True) == []
