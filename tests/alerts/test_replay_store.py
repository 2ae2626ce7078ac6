"""Replay protection that outlives the receiver: deliveries are remembered in the store, so a signed
webhook replayed after a restart of `siaga receiver` is refused; two receivers (threads here) on one
database cannot both claim a delivery; expired deliveries are accepted again and pruned. On SQLite and
on PostgreSQL."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from siaga.alerts.replay import StoreReplayGuard
from siaga.store import deliveries, engine

from ..support.receiver_process import receiver_process, signed_headers

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
SECRET = "social-secret-for-replay-tests"


@pytest.fixture
def guard(store_url: str) -> StoreReplayGuard:
    return StoreReplayGuard(engine(store_url))


def rows(guard: StoreReplayGuard) -> int:
    with guard.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(deliveries)).scalar_one()


def test_a_delivery_is_claimed_once_until_it_expires(guard: StoreReplayGuard) -> None:
    until = NOW + timedelta(minutes=10)
    assert guard.claim("social:sha256=aa", NOW, until)
    assert not guard.claim("social:sha256=aa", NOW + timedelta(minutes=9), until)
    assert guard.claim("social:sha256=bb", NOW, until), "another delivery is not a replay"
    assert guard.claim("social:sha256=aa", until, until + timedelta(minutes=10)), "expired: accepted again"


def test_a_released_delivery_can_be_claimed_again(guard: StoreReplayGuard) -> None:
    assert guard.claim("pagerduty:abc", NOW, NOW + timedelta(minutes=10))
    guard.release("pagerduty:abc")
    assert guard.claim("pagerduty:abc", NOW, NOW + timedelta(minutes=10))


def test_concurrent_claims_of_one_delivery_let_exactly_one_through(guard: StoreReplayGuard) -> None:
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda _: guard.claim("cloudwatch:topic:m-1", NOW, NOW + timedelta(minutes=10)), range(16)))
    assert won.count(True) == 1


def test_expired_deliveries_are_pruned(guard: StoreReplayGuard) -> None:
    for n in range(5):
        guard.claim(f"social:sha256={n}", NOW, NOW + timedelta(minutes=n + 1))
    assert guard.prune(NOW + timedelta(minutes=3)) == 3
    assert rows(guard) == 2
    guard.claim("social:sha256=late", NOW + timedelta(hours=1), NOW + timedelta(hours=2))  # prunes as it goes
    assert rows(guard) == 1


def test_a_replay_after_the_receiver_restarts_is_refused(tmp_path: Path) -> None:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    body = json.dumps({"alerts": [{"labels": {"alertname": "Angry", "topic": "payments"}}]}).encode()
    headers = signed_headers(SECRET, body)
    with receiver_process(tmp_path, runbooks, {"SIAGA_HOOK_SECRET_SOCIAL": SECRET}) as receiver:
        receiver.start()
        first = receiver.post("social", body, headers)
        assert first.status_code == 202, first.text
        assert receiver.post("social", body, headers).status_code == 403
        receiver.stop()

        receiver.start()
        again = receiver.post("social", body, headers)
        assert again.status_code == 403, again.text
        assert "replay" in again.json()["detail"]
        fresh = receiver.post("social", body, signed_headers(SECRET, body, at=int(headers["X-Siaga-Timestamp"]) + 1))
        assert fresh.status_code == 202, "a new delivery of the same alert is no replay"
