"""The audit trail: the hash chain (pure), the store (SQLite, PostgreSQL), tampering caught and
named, concurrent appenders in many processes keep one chain, secrets never reach it, and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog.testing
from pydantic import BaseModel
from sqlalchemy import Engine, create_engine, text

from siaga.audit import (
    AuditTrail,
    canonical_json,
    decision_rows,
    read_export,
    timeline_markdown,
    verify,
)
from siaga.audit.chain import GENESIS, AuditRecord
from siaga.cli import main
from siaga.flows.server import free_port
from siaga.incidents.recording import process
from siaga.incidents.runs import set_flow_run
from siaga.secrets import resolve_secret
from siaga.store import engine

from ..support.audit_writers import run_writers
from ..support.postgres import fresh_database
from ..support.routing import CATALOG
from ..support.routing import alert as routing_alert


@pytest.fixture
def store(tmp_path: Path) -> Engine:
    return engine(f"sqlite:///{tmp_path / 'siaga.db'}")


def filled(store: Engine, chain: str = "inc-tamper", count: int = 8) -> tuple[AuditTrail, list[AuditRecord]]:
    audit = AuditTrail(store)
    records = [
        audit.append("step.finished", incident_id=chain, run_id="run-1", actor="eko", data={"step": f"s{i}", "note": "freeze payouts"})
        for i in range(1, count + 1)
    ]
    return audit, records


# --- the chain, pure -------------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8_with_utc_times() -> None:
    at = datetime(2026, 11, 24, 17, 0, tzinfo=UTC).astimezone()
    assert canonical_json({"b": 1, "a": ["é", at]}) == '{"a":["é","2026-11-24T17:00:00.000000+00:00"],"b":1}'


def test_the_hash_covers_the_previous_hash_and_the_canonical_record() -> None:
    record = AuditRecord(id="r1", chain="inc-1", seq=1, at=datetime(2026, 1, 1, tzinfo=UTC), kind="run.started", data={"x": 1})
    sealed = record.sealed()
    expected = hashlib.sha256((GENESIS + canonical_json(record.body())).encode()).hexdigest()
    assert sealed.hash == expected
    assert set(record.body()) == {f.name for f in dataclasses.fields(AuditRecord)} - {"hash", "seq"}


def chain_of(n: int) -> list[AuditRecord]:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        record = AuditRecord(id=f"r{seq}", chain="c", seq=seq, at=datetime(2026, 1, 1, tzinfo=UTC), kind="k", data={"n": seq}, prev_hash=prev).sealed()
        records.append(record)
        prev = record.hash
    return records


def test_verify_names_the_first_changed_missing_or_moved_record() -> None:
    records = chain_of(5)
    assert verify(records) is None
    changed = [*records[:2], AuditRecord(**{**records[2].__dict__, "data": {"n": 33}}), *records[3:]]
    assert (verify(changed).seq, verify(changed).id) == (3, "r3")
    assert "changed" in verify(changed).reason
    gap = verify([*records[:2], *records[3:]])
    assert (gap.seq, gap.id) == (4, "r4") and "record 3 removed" in gap.reason
    swapped = [records[0], AuditRecord(**{**records[2].__dict__, "seq": 2}), AuditRecord(**{**records[1].__dict__, "seq": 3}), *records[3:]]
    moved = verify(swapped)
    assert (moved.seq, moved.id) == (2, "r3") and "prev hash" in moved.reason
    assert verify(records[:4], head=records[4].hash) is not None
    assert verify(records, head=records[4].hash) is None


def test_gate_records_render_as_a_decisions_table_and_all_records_as_a_timeline() -> None:
    at = datetime(2026, 11, 24, 3, 4, 5, tzinfo=UTC)
    records = [
        AuditRecord(id="1", chain="c", seq=1, at=at, kind="step.started", data={"step": "freeze"}),
        AuditRecord(id="2", chain="c", seq=2, at=at, kind="gate.code_sent", actor="dewi", channel="slack",
                    data={"gate": "freeze", "params_hash": "ab12"}),
        AuditRecord(id="3", chain="c", seq=3, at=at, kind="gate.approved", actor="dewi", channel="ui",
                    data={"gate": "freeze", "params_hash": "ab12"}, hash="f" * 64),
    ]
    assert decision_rows(records) == [{
        "gate": "freeze", "event": "approved", "decision": "approved", "by": "dewi",
        "when": "2026-11-24T03:04:05+00:00", "evidence": "ab12", "record": "3 ffffffffffff",
    }]
    markdown = timeline_markdown(records)
    assert "| 2 | 03:04:05.000 | `gate.code_sent` | dewi / slack |  |" in markdown
    assert markdown.rstrip().endswith(f"hash `{'f' * 64}`.")


# --- the store: tampering with the database's rows -------------------------------------------------


def test_a_changed_byte_in_a_row_is_named(store: Engine) -> None:
    audit, records = filled(store)
    assert audit.verify() is None
    with store.begin() as db:
        db.execute(text("UPDATE audit_records SET data = replace(data, 'payouts', 'pay0uts') WHERE seq = 5"))
    breach = audit.verify()
    assert breach is not None
    assert (breach.chain, breach.seq, breach.id) == ("inc-tamper", 5, records[4].id)
    assert "changed" in breach.reason
    assert f"record 5 (id {records[4].id})" in str(breach)


def test_a_deleted_row_is_named(store: Engine) -> None:
    audit, records = filled(store)
    with store.begin() as db:
        db.execute(text("DELETE FROM audit_records WHERE seq = 4"))
    breach = audit.verify("inc-tamper")
    assert breach is not None
    assert (breach.seq, breach.id) == (5, records[4].id)
    assert "sequence gap: record 4 removed" in breach.reason


def test_two_swapped_rows_are_named(store: Engine) -> None:
    audit, records = filled(store)
    with store.begin() as db:
        db.execute(text("UPDATE audit_records SET seq = -1 WHERE seq = 3"))
        db.execute(text("UPDATE audit_records SET seq = 3 WHERE seq = 4"))
        db.execute(text("UPDATE audit_records SET seq = 4 WHERE seq = -1"))
    breach = audit.verify()
    assert breach is not None
    assert (breach.seq, breach.id) == (3, records[3].id)  # record 4 now stands third
    assert "out of place" in breach.reason


def test_the_newest_rows_deleted_show_against_the_exported_head(store: Engine, tmp_path: Path) -> None:
    audit, records = filled(store)
    export = tmp_path / "inc-tamper.jsonl"
    head = audit.export("inc-tamper", export)
    assert head == records[-1].hash
    exported, exported_head = read_export(export.read_text().splitlines())
    assert exported == records and exported_head == head
    assert verify(exported, head=exported_head) is None
    with store.begin() as db:
        db.execute(text("DELETE FROM audit_records WHERE seq >= 7"))
    assert audit.verify() is None  # consistent in itself ...
    breach = audit.verify("inc-tamper", head=head)  # ... but not with the head kept elsewhere
    assert breach is not None and "not at the head" in breach.reason


def test_an_edited_export_is_caught(store: Engine) -> None:
    audit, _ = filled(store)
    buffer = io.StringIO()
    audit.export("inc-tamper", buffer)
    lines = buffer.getvalue().splitlines()
    lines[1] = lines[1].replace('"actor": "eko"', '"actor": "ek0"')
    records, head = read_export(lines)
    breach = verify(records, head=head)
    assert breach is not None and breach.seq == 2


def test_records_keep_their_exact_content_through_the_store(store: Engine) -> None:
    audit = AuditTrail(store)
    written = audit.append(
        "gate.decision", incident_id="inc-1", run_id="r", actor="dewi", channel="slack",
        data={"decision": "approve", "amount": 1.1, "nested": {"z": [1, "ü", None], "a": True}, "at": datetime(2026, 1, 1, 3, tzinfo=UTC)},
    )
    assert audit.records("inc-1") == [written]
    assert written.data["at"] == "2026-01-01T03:00:00.000000+00:00"
    assert audit.verify() is None


# --- concurrency: many processes append to one chain -----------------------------------------------


def test_ten_processes_appending_to_one_chain_keep_it_whole(store_url: str) -> None:
    run_writers(store_url, "inc-busy", writers=10, count=30)
    audit = AuditTrail(engine(store_url))
    records = audit.records("inc-busy")
    assert [r.seq for r in records] == list(range(1, 301))
    assert audit.verify() is None
    for writer in range(10):  # each writer's records in the order it wrote them
        assert [r.data["i"] for r in records if r.data["writer"] == writer] == list(range(30))


# --- alerts and incidents -------------------------------------------------------------------------


def test_alerts_incidents_and_their_runs_are_recorded_on_the_incident_chain(store: Engine) -> None:
    now = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    incident = process(store, CATALOG, routing_alert(fingerprint="a"), now).opened[0]
    process(store, CATALOG, routing_alert(fingerprint="b"), now)
    set_flow_run(store, incident, "flow-run-1")
    set_flow_run(store, incident, "flow-run-1")  # a second receiver told the same run: noted once
    process(store, CATALOG, routing_alert(fingerprint="a", status="resolved"), now)
    process(store, CATALOG, routing_alert(fingerprint="b", status="resolved"), now)
    records = AuditTrail(store).records(incident)
    assert [(r.kind, r.data.get("fingerprint")) for r in records] == [
        ("alert.received", "a"),
        ("incident.opened", None),
        ("alert.received", "b"),
        ("incident.run_started", None),
        ("alert.received", "a"),  # resolved, while b still fires
        ("alert.received", "b"),  # resolved: the last one
        ("incident.resolved", None),
    ]
    assert records[1].data["runbook"] == "gateway" and records[3].run_id == "flow-run-1"
    assert records[4].data["status"] == "resolved" and records[0].channel == "alertmanager"
    assert AuditTrail(store).verify() is None


def test_concurrent_receivers_on_postgresql_keep_the_incident_chain_whole(postgres: str) -> None:
    store, now = engine(fresh_database(postgres)), datetime.now(UTC)
    alerts = [routing_alert("pg-audit", fingerprint=f"pga-{n}") for n in range(20)]
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda a: process(store, CATALOG, a, now), alerts))
    (incident,) = [i for o in outcomes for i in o.opened]
    records = AuditTrail(store).records(incident)
    kinds = [r.kind for r in records]
    assert kinds.count("alert.received") == 20 and kinds.count("incident.opened") == 1
    assert [r.seq for r in records] == list(range(1, 22))
    assert AuditTrail(store).verify(incident) is None


# --- secrets ---------------------------------------------------------------------------------------


def test_a_resolved_secret_never_reaches_the_trail_or_its_export(store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    class Params(BaseModel):
        token: str

    canary = "canary-4f1d9a7e-trail"
    monkeypatch.setenv("SIAGA_SECRET_AUDIT_CANARY", canary)
    assert resolve_secret("secret://audit-canary") == canary
    audit = AuditTrail(store)
    audit.append("step.failed", incident_id="inc-secret", actor=f"bot {canary}",
                 data={"error": f"POST https://x/?token={canary} failed", "output": {"list": [canary]}, "params": Params(token=canary)})
    with store.connect() as db:
        rows = json.dumps([list(map(str, row)) for row in db.execute(text("SELECT * FROM audit_records"))])
    buffer = io.StringIO()
    audit.export("inc-secret", buffer)
    assert canary not in rows and canary not in buffer.getvalue()
    assert "[secret:audit-canary]" in buffer.getvalue()
    assert audit.verify() is None


def test_record_says_loudly_when_the_trail_cannot_take_a_record_and_the_caller_goes_on() -> None:
    down = create_engine(f"postgresql+psycopg://siaga@127.0.0.1:{free_port()}/nowhere")  # a store that is down
    with structlog.testing.capture_logs() as logs:
        AuditTrail(down).record("step.started", incident_id="inc-lost", run_id="run-1", step="freeze")
    (entry,) = [e for e in logs if e["event"] == "audit record NOT written"]
    assert entry["log_level"] == "error"
    assert (entry["kind"], entry["chain"]) == ("step.started", "inc-lost")
    assert "OperationalError" in entry["error"]


# --- record() and the CLI --------------------------------------------------------------------------


def test_record_appends_to_the_incident_chain_or_the_run_chain_and_cli_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SIAGA_DATABASE_URL", url)
    audit = AuditTrail(engine(url))
    audit.record("incident.opened", incident_id="inc-cli", runbook="payment-gateway-outage")
    audit.record("step.started", incident_id="inc-cli", run_id="run-9", step="page")
    audit.record("run.started", incident_id=None, run_id="run-manual", runbook="drill")
    assert audit.chains() == ["inc-cli", "run:run-manual"]
    assert [r.kind for r in audit.records("inc-cli")] == ["incident.opened", "step.started"]

    assert main(["audit", "verify"]) == 0
    output = capsys.readouterr().out
    assert f"OK inc-cli: 2 records, head {audit.head('inc-cli')[1]}" in output

    export = tmp_path / "inc-cli.jsonl"
    assert main(["audit", "export", "inc-cli", "-o", str(export)]) == 0
    assert json.loads(export.read_text().splitlines()[-1]) == {"chain": "inc-cli", "records": 2, "head": audit.head("inc-cli")[1]}
    assert main(["audit", "verify", "--file", str(export)]) == 0
    assert main(["audit", "show", "inc-cli"]) == 0
    assert "incident.opened" in capsys.readouterr().out
    assert main(["audit", "export", "inc-none"]) == 2

    with engine(url).begin() as db:
        db.execute(text("UPDATE audit_records SET kind = 'step.startex' WHERE chain = 'inc-cli' AND seq = 2"))
    assert main(["audit", "verify", "--incident", "inc-cli"]) == 1
    assert "BROKEN chain inc-cli: record 2" in capsys.readouterr().err
