"""The durable inbox: a webhook answered 202 is in the store before the answer, so a receiver killed
(kill -9) with work still queued loses nothing: started again, it processes what it had taken in.
`siaga receiver` runs as a real process; it is killed while it records a storm of alerts (pieces
of bounded transactions, some seconds in all), so the storm's webhook is unfinished in the inbox and
only part of it recorded. A webhook is never tried forever: each try, and each start that finds it
unfinished, counts; out of tries it is given up on with its reason, and counted."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from siaga.alerts import inbox
from siaga.flows.server import free_port
from siaga.store import engine
from siaga.store import inbox as inbox_table
from siaga.store import incidents as incidents_table

from ..support.live_receiver import read
from ..support.receiver_process import ReceiverProcess, receiver_process

TOKEN = "inbox-test-token"
RUNBOOK = """
runbook: gateway-alert
title: Gateway errors
severity: sev2
roles: {ops: [eko]}
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: alertmanager
    match: {alertname: GatewayErrors}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
steps:
  - id: hello
    action: note
    with: {text: "gateway errors in {{ inputs.region }}"}
"""


STORM = 20_000
"""Alerts in the webhook the receiver is killed recording."""


def webhook(region: str, alerts: int = 1) -> bytes:
    return json.dumps({
        "version": "4", "groupKey": "{}:{region=" + region + "}", "status": "firing", "receiver": "siaga",
        "groupLabels": {"region": region}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "GatewayErrors", "region": region, "pod": str(n)},
                    "annotations": {}, "startsAt": "2026-11-24T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": f"fp-{region}-{n}"} for n in range(alerts)],
    }).encode()


def post(receiver: ReceiverProcess, region: str, alerts: int = 1) -> httpx.Response:
    return receiver.post("alertmanager", webhook(region, alerts), {"Authorization": f"Bearer {TOKEN}",
                                                             "Content-Type": "application/json"})


def incidents(receiver: ReceiverProcess) -> dict[str, dict[str, Any]]:
    return {i["inputs"]["region"]: i for i in read(receiver.url)}


def alerts_of(store: Any, region: str) -> int:
    """The alerts recorded in the incident of `region` (0: none is open)."""
    with store.connect() as connection:
        counts = {inputs["region"]: n for inputs, n in connection.execute(
            select(incidents_table.c.inputs, incidents_table.c.alerts))}
    return counts.get(region, 0)


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.1)
    return found


def test_a_webhook_queued_when_the_receiver_is_killed_is_processed_after_a_restart(tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "gateway-alert.yaml").write_text(RUNBOOK)
    env = {"SIAGA_ALERTMANAGER_TOKEN": TOKEN, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    with receiver_process(tmp_path, tmp_path / "runbooks", env) as receiver:
        receiver.start()
        assert post(receiver, "a").status_code == 202
        wait_for("incident a", lambda: "a" in incidents(receiver))
        assert post(receiver, "b", STORM).status_code == 202
        health = httpx.get(f"{receiver.url}/healthz", timeout=5).json()
        assert health["busy"] and health["processed"] == 1, health  # recording the storm
        receiver.kill()

        store = engine(f"sqlite:///{tmp_path / 'siaga.db'}")
        (left,) = inbox.unfinished(store)
        assert left.source == "alertmanager" and b'"region": "b"' in left.body
        assert alerts_of(store, "b") < STORM, "the storm was cut short: some of its pieces were not recorded"

        receiver.start()
        found = wait_for("incident b after the restart", lambda: (i := incidents(receiver)) and "b" in i and i)
        wait_for("the storm recorded", lambda: incidents(receiver)["b"]["alerts"] == STORM)
        assert incidents(receiver)["a"]["alerts"] == 1, "each alert recorded once"
        wait_for("the inbox to be done", lambda: not inbox.unfinished(store))
        assert "taking up 1 webhooks received before a restart" in receiver.output()
    with store.connect() as connection:
        done = connection.execute(select(inbox_table.c.source, inbox_table.c.done_at)).all()
    assert len(done) == 2 and all(at is not None for _, at in done)


def test_done_webhooks_are_pruned_and_one_out_of_tries_is_given_up_on_with_its_reason(store_url: str) -> None:
    store = engine(store_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    body = webhook("raw \xff bytes kept as sent").replace(b"raw", b"\xff")
    old = inbox.put(store, "alertmanager", b"{}", at)
    inbox.finish(store, old, at)
    pending = inbox.put(store, "alertmanager", body, at)
    assert inbox.retry_later(store, pending, "1 of 1 alerts were not recorded: IntegrityError: refused") == 1
    assert inbox.prune(store, datetime(2026, 1, 2, tzinfo=UTC)) == 1
    (left,) = inbox.unfinished(store)
    assert (left.id, left.body, left.attempts) == (pending, body, 1), "an unfinished webhook is kept, byte for byte"

    # each start takes it up, counting the try the receiver before did not finish; out of tries,
    # it is given up on instead, never tried again, and counted
    for tries in range(2, inbox.MAX_ATTEMPTS):
        (taken,) = inbox.take_up(store, at)
        assert (taken.id, taken.attempts) == (pending, tries)
    assert inbox.take_up(store, at) == [] and inbox.unfinished(store) == []
    lost = inbox.losses(store)
    assert (lost.webhooks, lost.alerts) == (1, 0)
    assert lost.reasons == [(f"given up after {inbox.MAX_ATTEMPTS} tries; the last: "
                             "1 of 1 alerts were not recorded: IntegrityError: refused", 1)]
    other = inbox.put(store, "social", b"{}", at)
    inbox.fail(store, other, at, "3 of 5 alerts were not recorded: DataError: too long", 3)
    assert (inbox.losses(store).webhooks, inbox.losses(store).alerts) == (2, 3)
    assert inbox.prune(store, datetime(2030, 1, 1, tzinfo=UTC)) == 0, "a webhook given up on is kept for a person"
