"""The incident engine under fire, through the real receiver over HTTP, on SQLite and PostgreSQL
(issue 12):

* nothing answered 202 is lost: an alert the store refuses (a trigger in the database, as a
  constraint or a failing disk would) is tried a bounded number of times, then the webhook is
  given up on with its reason, visible in ``/healthz`` (counts only), ``/metrics`` and
  ``siaga incidents``; the other alerts of its webhook are recorded; a restart does not try it
  again, and gives up on a webhook that earlier receivers left out of tries;
* one storming source holds up neither the answer to another source's webhook nor its incident;
* the bundled `social-media-storm`'s second trigger (5 influencer posts) fires though the first
  (200 posts) is not reached.

The receiver is `create_app` on a real uvicorn in a thread, its runs started by a stand-in that
records what it was asked (no Prefect server needed here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select, text

from siaga.alerts import inbox
from siaga.alerts.receiver import create_app
from siaga.flows.server import free_port
from siaga.integrations import default_registry
from siaga.runbook import load_roster, load_runbook, parse_runbook
from siaga.settings import Settings
from siaga.store import alerts, engine
from siaga.store import inbox as inbox_table

from ..conftest import RUNBOOKS
from ..support.alert_payloads import am_alert, webhook
from ..support.live_receiver import API, API_TOKEN, read, serve, settle
from ..support.postgres import fresh_database
from ..support.receiver_process import signed_headers
from ..support.receiver_stack import RUNBOOK_YAML, TOKEN

SECRET = "social-engine-secret"
MENTIONS_YAML = """
runbook: mentions
title: Many mentions of one topic
severity: sev3
roles: {comms: [gita]}
inputs:
  topic: {type: string, default: unknown}
triggers:
  - source: social
    group_by: [topic]
    inputs: {topic: "{{ alert.labels.topic }}"}
    threshold: {count: 3, within: 10m, match: {kind: mention}}
steps:
  - id: hello
    action: note
    with: {text: "mentions of {{ inputs.topic }}"}
"""
STORM_SIZE = 2_500
"""Mentions in the storm, each of its own topic (a threshold trigger `group_by: [topic]`)."""

REFUSE_SQLITE = """
CREATE TRIGGER refuse_poison BEFORE INSERT ON alerts WHEN NEW.fingerprint LIKE 'poison%'
BEGIN SELECT RAISE(ABORT, 'refused by the database'); END
"""
REFUSE_POSTGRESQL = [
    """CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN
         IF NEW.fingerprint LIKE 'poison%' THEN RAISE EXCEPTION 'refused by the database'; END IF;
         RETURN NEW; END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER refuse_poison BEFORE INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
]


def refuse_poison(store: Engine) -> None:
    """The database refuses every alert whose fingerprint starts with `poison`, whoever writes it."""
    with store.begin() as connection:
        for statement in [REFUSE_SQLITE] if store.dialect.name == "sqlite" else REFUSE_POSTGRESQL:
            connection.execute(text(statement))


@dataclass
class Receiver:
    url: str
    store_url: str
    store: Engine
    app: Any
    started: list[str]

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/healthz", timeout=10).json()

    def incidents(self) -> list[dict[str, Any]]:
        return read(self.url)

    def social(self, *alerts: dict[str, Any], url: str | None = None) -> httpx.Response:
        body = json.dumps({"alerts": list(alerts)}).encode()
        return httpx.post(f"{url or self.url}/hooks/social", content=body, headers=signed_headers(SECRET, body), timeout=30)

    def alertmanager(self, *alerts: dict[str, Any], url: str | None = None) -> httpx.Response:
        return httpx.post(f"{url or self.url}/hooks/alertmanager", json=webhook(*alerts),
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def catalog() -> dict[str, Any]:
    registry = default_registry()
    roster = load_roster(RUNBOOKS / "roster.yaml")
    bundled = load_runbook(RUNBOOKS / "social-media-storm.yaml", registry, roster)
    gateway = parse_runbook(RUNBOOK_YAML, registry)
    mentions = parse_runbook(MENTIONS_YAML, registry)
    return {runbook.id: runbook for runbook in (gateway, mentions, bundled)}


def receiver_app(store: Engine, started: list[str]) -> Any:
    async def start_run(incident: Any) -> str:
        started.append(incident["id"])
        return f"run-of-{incident['id']}"

    settings = Settings.from_environ({"SIAGA_ALERTMANAGER_TOKEN": TOKEN, "SIAGA_HOOK_SECRET_SOCIAL": SECRET,
                                      "SIAGA_API_TOKEN": API_TOKEN})
    app = create_app(catalog(), settings, store, start_run)
    app.state.worker.retry_delay = 0.05  # tries again after 0.05, 0.1, 0.2, 0.4 s
    return app


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def receiver(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('engine') / 'siaga.db'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres"))
    store = engine(url)
    refuse_poison(store)
    started: list[str] = []
    app = receiver_app(store, started)
    with serve(app, free_port()) as served:
        yield Receiver(served, url, store, app, started)


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.02)
    return found


def of_group(receiver: Receiver, runbook: str, *values: str) -> list[dict[str, Any]]:
    key = json.dumps(list(values), separators=(",", ":"))
    return [i for i in receiver.incidents() if i["runbook_id"] == runbook and i["group_key"] == key]


def test_an_alert_the_store_refuses_is_given_up_on_with_its_reason_and_counted(receiver: Receiver) -> None:
    region = f"r-{uuid.uuid4().hex[:8]}"
    before = receiver.health()["failed"]
    answer = receiver.alertmanager(am_alert(region), am_alert(region, fingerprint=f"poison-{region}"),
                                   am_alert(region, fingerprint=f"fp-{region}-2"))
    assert answer.status_code == 202 and answer.json() == {"accepted": 3}

    health = wait_for("the webhook to be given up on", lambda: (h := receiver.health())["failed"]["webhooks"] > before["webhooks"] and h)
    assert health["failed"] == {"webhooks": before["webhooks"] + 1, "alerts": before["alerts"] + 1}
    assert region not in json.dumps(health), "counts only: no alert data"
    settle(receiver.url)
    (incident,) = of_group(receiver, "gateway-alert", region)
    assert incident["alerts"] == 2, "the other alerts of the webhook are recorded"
    with receiver.store.connect() as connection:
        row = connection.execute(select(inbox_table).where(inbox_table.c.failed_at.is_not(None))
                                 .order_by(inbox_table.c.id.desc())).mappings().first()
    assert row["attempts"] == inbox.MAX_ATTEMPTS and row["lost"] == 1 and row["done_at"] is None
    assert row["error"].startswith(f"given up after {inbox.MAX_ATTEMPTS} tries; the last: 1 of 3 alerts were not recorded: ")
    assert "refused by the database" in row["error"] and "INSERT" not in row["error"], "the reason, not the statement"

    assert httpx.get(f"{receiver.url}/metrics", timeout=10).status_code == 401  # the read API's token
    metrics = httpx.get(f"{receiver.url}/metrics", headers=API, timeout=10)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    figures = dict(line.rsplit(" ", 1) for line in metrics.text.splitlines() if line and not line.startswith("#"))
    assert float(figures["siaga_inbox_failed_webhooks"]) == health["failed"]["webhooks"]
    assert float(figures["siaga_inbox_lost_alerts"]) == health["failed"]["alerts"]
    assert float(figures["siaga_receiver_queued_webhooks"]) == 0 and region not in metrics.text

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIAGA_DATABASE")} | {"SIAGA_DATABASE_URL": receiver.store_url}
    listed = subprocess.run([sys.executable, "-m", "siaga.cli", "incidents", "--json"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert any(i["id"] == incident["id"] for i in json.loads(listed.stdout)), "--json stays one document"
    said = " ".join(listed.stderr.split())
    assert f"{health['failed']['webhooks']} webhooks taken in could not be recorded" in said
    assert "refused by the database" in said and "not tried again" in said


def test_a_restart_tries_no_webhook_given_up_on_and_gives_up_on_one_out_of_tries(receiver: Receiver) -> None:
    """What made a webhook fail again at every restart: it is never taken up once given up on, and
    one that earlier receivers left unfinished with its last try spent is given up on, not tried."""
    region = f"r-{uuid.uuid4().hex[:8]}"
    body = json.dumps(webhook(am_alert(region, fingerprint=f"poison-{region}"))).encode()
    spent = inbox.put(receiver.store, "alertmanager", body, datetime.now(UTC))
    for _ in range(inbox.MAX_ATTEMPTS - 1):  # four receivers tried it and stopped
        inbox.retry_later(receiver.store, spent, "the receiver stopped before it was recorded")
    failed = receiver.health()["failed"]

    again = receiver_app(receiver.store, [])
    with serve(again, free_port()) as url:
        fresh = f"r-{uuid.uuid4().hex[:8]}"
        assert receiver.alertmanager(am_alert(fresh), url=url).status_code == 202
        settle(url)
        health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["processed"] == 1, "only the new webhook: nothing given up on was tried again"
    assert health["failed"]["webhooks"] == failed["webhooks"] + 1
    with receiver.store.connect() as connection:
        row = connection.execute(select(inbox_table).where(inbox_table.c.id == spent)).mappings().one()
        poisoned = connection.execute(select(func.count()).select_from(alerts)
                                      .where(alerts.c.fingerprint == f"poison-{region}")).scalar_one()
    assert row["failed_at"] is not None and row["attempts"] == inbox.MAX_ATTEMPTS and poisoned == 0
    assert row["error"] == f"given up after {inbox.MAX_ATTEMPTS} tries; the last: the receiver stopped before it was recorded"


def mention(run: str, n: int) -> dict[str, Any]:
    return {"labels": {"kind": "mention", "topic": f"{run}-t{n}", "sentiment": "neutral"}, "fingerprint": f"{run}-m{n}"}


def test_a_storm_from_one_source_holds_up_neither_the_answer_nor_the_incident_of_another(receiver: Receiver) -> None:
    run = uuid.uuid4().hex[:8]
    region = f"r-{run}"
    storm = receiver.social(*(mention(run, n) for n in range(STORM_SIZE)))
    assert storm.status_code == 202
    answer = receiver.alertmanager(am_alert(region))
    assert answer.status_code == 202

    def recorded(fingerprint_like: str) -> list[int]:
        with receiver.store.connect() as connection:
            return list(connection.execute(select(alerts.c.id).where(alerts.c.fingerprint.like(fingerprint_like))).scalars())

    storm_so_far = len(recorded(f"{run}-m%"))
    assert storm_so_far < STORM_SIZE, "the Alertmanager webhook was answered while the storm was being recorded"
    settle(receiver.url, timeout=120)
    (am_id,) = recorded(f"fp-{region}")
    storm_ids = recorded(f"{run}-m%")
    assert len(storm_ids) == STORM_SIZE
    assert am_id < max(storm_ids), "the Alertmanager alert was recorded before the storm was through, not after it"
    (incident,) = of_group(receiver, "gateway-alert", region)
    assert incident["id"] in receiver.started

    # the storm's mentions counted: two more of one topic reach its threshold of 3
    assert receiver.social(mention(run, 0) | {"fingerprint": f"{run}-again-1"},
                           mention(run, 0) | {"fingerprint": f"{run}-again-2"}).status_code == 202
    settle(receiver.url)
    (topic,) = of_group(receiver, "mentions", f"{run}-t0")
    assert topic["alerts"] == 3


def test_the_bundled_social_storms_second_trigger_fires_on_five_influencer_posts(receiver: Receiver) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"fees-{run}"  # the storm's incidents are grouped by topic

    def post(n: int, tier: str = "influencer") -> None:
        labels = {"sentiment": "negative", "author_tier": tier, "topic": topic, "post": f"{run}-{n}"}
        assert receiver.social({"labels": labels}).status_code == 202

    post(0, tier="regular")  # counts for the first trigger (200 in 30 minutes) only
    for n in range(1, 5):
        post(n)
    settle(receiver.url)
    assert of_group(receiver, "social-media-storm", topic) == [], "4 influencer posts of 5"
    post(5)
    settle(receiver.url)
    (incident,) = of_group(receiver, "social-media-storm", topic)
    assert incident["alerts"] == 5 and incident["id"] in receiver.started
    post(6, tier="regular")  # the first trigger is still far from 200, but its incident is open: it joins
    settle(receiver.url)
    assert of_group(receiver, "social-media-storm", topic)[0]["alerts"] == 6
