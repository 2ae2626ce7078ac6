"""The incident store on PostgreSQL (the scale-out path, many receivers): concurrent alerts of one
group open exactly one incident, each notification is recorded once, and concurrent resolutions
resolve it. Debian's postgresql on loopback; skipped without it or without psycopg."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from siaga.alerts import Alert, AlertStatus
from siaga.incidents.recording import process
from siaga.incidents.views import get_incident, list_incidents

from ..support.postgres import fresh_database
from ..support.routing import CATALOG, STARTED


def test_concurrent_alerts_open_one_incident_and_concurrent_resolutions_resolve_it(postgres: str) -> None:
    from siaga.store import engine

    store = engine(fresh_database(postgres))
    now = datetime.now(UTC)

    def alert(n: int, status: str = "firing") -> Alert:
        return Alert(source="alertmanager", fingerprint=f"pg-{n}", status=AlertStatus(status),
                     labels={"alertname": "GatewayErrors", "region": "pg"}, starts_at=STARTED)

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda n: process(store, CATALOG, alert(n % 20), now), range(40)))
    assert sum(o.new for o in outcomes) == 20
    opened = [i for o in outcomes for i in o.opened]
    assert len(opened) == 1
    assert {i for o in outcomes for i in o.joined} <= set(opened)
    (incident,) = list_incidents(store)
    assert incident["alerts"] == 20

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda n: process(store, CATALOG, alert(n, "resolved"), now), range(20)))
    assert [i for o in outcomes for i in o.resolved] == opened
    assert get_incident(store, opened[0])["state"] == "resolved"
