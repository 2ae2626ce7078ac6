"""`process_batch` (one path for one alert and a storm: pieces of bounded transactions, each routed
in memory and written together) leaves the store exactly as one `process` per alert in order does:
same alerts, same incidents with the same counts, inputs, openers and states, same audit records,
same outcomes, whatever the piece size. Random batches (seeded) over a catalog with two runbooks on
one source, a threshold runbook, repeats, resolved alerts and re-fired episodes."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from siaga.alerts import Alert, AlertStatus
from siaga.incidents.recording import process, process_batch
from siaga.store import alerts, audit_records, engine, incident_alerts, incidents

from ..support.postgres import fresh_database
from ..support.routing import GATEWAY, NOW, STARTED, STORM, runbook

AUDIT = runbook(
    "audit",
    {"source": "alertmanager", "match": {"severity": "critical"}, "group_by": ["region", "gateway"],
     "inputs": {"region": "{{ alert.labels.region }}"}},
)
CATALOG = {"gateway": GATEWAY, "audit": AUDIT, "storm": STORM}


def snapshot(store: Any) -> dict[str, Any]:
    """The store's content without ids and times that differ between two runs."""
    with store.connect() as c:
        alert_rows = c.execute(select(alerts).order_by(alerts.c.id)).mappings().all()
        by_id = {a["id"]: (a["source"], a["fingerprint"], a["episode"], a["status"]) for a in alert_rows}
        incident_rows = c.execute(select(incidents)).mappings().all()
        links = c.execute(select(incident_alerts)).all()
        names = {i["id"]: (i["runbook_id"], i["group_key"], str(i["opened_at"])) for i in incident_rows}
        trail = c.execute(select(audit_records).order_by(audit_records.c.chain, audit_records.c.seq)).mappings().all()
    chains: dict[Any, list[Any]] = {}
    for r in trail:  # each incident's chain: what was recorded, in order (alert ids become the alerts)
        data = {k: by_id[v] if k == "alert_id" else v for k, v in r["data"].items()}
        chains.setdefault(r["chain"], []).append((r["kind"], r["channel"], json.dumps(data, sort_keys=True)))
    members: dict[str, set[Any]] = {}
    for incident_id, alert_id in links:
        members.setdefault(incident_id, set()).add(by_id[alert_id])
    return {
        "alerts": [(*by_id[a["id"]], a["resolved_at"] is not None) for a in alert_rows],
        "incidents": sorted(
            (i["runbook_id"], i["group_key"], i["state"], i["alerts"], str(i["inputs"]), i["alert"]["fingerprint"],
             i["priority"], frozenset(members.get(i["id"], ()))) for i in incident_rows
        ),
        "audit": sorted((names[chain], records) for chain, records in chains.items()),
    }


def random_batches(seed: int) -> list[list[Alert]]:
    rng = random.Random(seed)
    batches = []
    for _ in range(12):
        batch: list[Alert] = []
        storm = rng.random() < 0.5  # new firing alerts only: the bulk path
        for _ in range(rng.randint(1, 30)):
            region = rng.choice(["a", "b", "c", "d"])
            source = "alertmanager" if storm else rng.choice(["alertmanager"] * 5 + ["generic"])
            n = rng.randint(0, 6)
            labels = {"alertname": rng.choice(["GatewayErrors", "GatewayErrors", "Other"]), "region": region,
                      "gateway": rng.choice(["qris", "va"]), "severity": rng.choice(["critical", "warning"]),
                      "topic": region, "sentiment": rng.choice(["negative", "positive"])}
            if rng.random() < 0.2:
                labels["priority"] = "P1"
            batch.append(Alert(
                source=source, fingerprint=f"fp-{source}-{region}-{n}",
                status=AlertStatus.RESOLVED if rng.random() < 0.15 and not storm else AlertStatus.FIRING,
                labels=labels, starts_at=STARTED + timedelta(minutes=rng.choice([0, 0, 0, 1])),
            ))
            if storm and batch[-1].episode in [a.episode for a in batch[:-1]]:
                batch.pop()
        batches.append(batch)
    return batches


def outcome_shape(outcomes: list[Any], ids: dict[str, tuple[str, str]]) -> list[Any]:
    return [(o.new, sorted(ids[i] for i in o.opened), sorted(ids[i] for i in o.joined), sorted(ids[i] for i in o.resolved))
            for o in outcomes]


def keys(store: Any) -> dict[str, tuple[str, str]]:
    with store.connect() as c:
        return {i: (r, g) for i, r, g in c.execute(select(incidents.c.id, incidents.c.runbook_id, incidents.c.group_key))}


@pytest.mark.parametrize(("seed", "piece"), [(seed, (250, 7, 1)[seed % 3]) for seed in range(8)])
def test_a_batch_does_what_its_alerts_one_by_one_do(tmp_path: Path, seed: int, piece: int) -> None:
    compare(engine(f"sqlite:///{tmp_path / 'one.db'}"), engine(f"sqlite:///{tmp_path / 'batch.db'}"), seed, piece)


@pytest.mark.parametrize("seed", range(3))
def test_on_postgresql_too(postgres: str, seed: int) -> None:
    compare(engine(fresh_database(postgres)), engine(fresh_database(postgres)), seed, (250, 7, 1)[seed])


def compare(one_by_one: Any, batched: Any, seed: int, piece: int) -> None:
    batches = random_batches(seed)
    assert any(a.status is AlertStatus.RESOLVED for b in batches for a in b), "resolved alerts in batches"
    assert any(a.source == "generic" for b in batches for a in b), "and alerts a threshold counts"
    for n, batch in enumerate(batches):
        at = NOW + timedelta(seconds=n)
        expected = [process(one_by_one, CATALOG, a, at) for a in batch]
        got = process_batch(batched, CATALOG, batch, at, piece=piece)
        assert outcome_shape(got, keys(batched)) == outcome_shape(expected, keys(one_by_one))
        assert [o.problems for o in got if o.opened] == [o.problems for o in expected if o.opened]
    assert snapshot(batched) == snapshot(one_by_one)


def test_a_storm_batch_opens_each_group_once(tmp_path: Path) -> None:
    store = engine(f"sqlite:///{tmp_path / 'storm.db'}")
    batch = [Alert(source="alertmanager", fingerprint=f"fp-{n}", status=AlertStatus.FIRING, starts_at=STARTED,
                   labels={"alertname": "GatewayErrors", "region": f"r{n % 7}"}) for n in range(100)]
    outcomes = process_batch(store, CATALOG, batch, NOW)
    assert sum(len(o.opened) for o in outcomes) == 7
    assert [bool(o.opened) for o in outcomes] == [n < 7 for n in range(100)]
    again = process_batch(store, CATALOG, batch, NOW + timedelta(seconds=1))
    assert not any(o.new or o.opened or o.joined for o in again)
    with store.connect() as c:
        counts = sorted(c.execute(select(incidents.c.alerts)).scalars())
        assert counts == [14] * 5 + [15] * 2
        assert len(c.execute(select(alerts.c.id)).all()) == 100
