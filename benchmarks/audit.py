"""The audit trail's costs on the SQLite default: chained appends per second with 1 and with 10
concurrent writer processes on one incident's chain, and the time to verify a 100,000-record chain
(read from the store, and in memory).
    python benchmarks/audit.py [--writers 10] [--per-writer 200] [--verify 100000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from siaga.audit import AuditTrail, verify
from siaga.audit.chain import GENESIS, AuditRecord
from siaga.store import audit_records, engine


def append_many(url: str, chain: str, writer: int, count: int, start_at: float) -> None:
    trail = AuditTrail(engine(url))
    trail.head(chain)
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        trail.append("bench.append", incident_id=chain, actor=f"writer-{writer}", data={"writer": writer, "i": i, "note": "step finished"})


def appends_per_second(url: str, writers: int, per_writer: int) -> float:
    spawn = multiprocessing.get_context("spawn")
    start_at = time.time() + 4.0  # every process imported and connected before the start line
    processes = [spawn.Process(target=append_many, args=(url, f"inc-{writers}", n, per_writer, start_at)) for n in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert all(p.exitcode == 0 for p in processes), "a writer failed"
    elapsed = time.time() - start_at
    trail = AuditTrail(engine(url))
    assert trail.count(f"inc-{writers}") == writers * per_writer and trail.verify(f"inc-{writers}") is None
    return writers * per_writer / elapsed


def long_chain(count: int) -> list[AuditRecord]:
    records, prev, at = [], GENESIS, datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, count + 1):
        record = AuditRecord(
            id=uuid.uuid4().hex, chain="inc-long", seq=seq, at=at + timedelta(milliseconds=seq), kind="step.finished",
            incident_id="inc-long", run_id="run-1", data={"step": f"step-{seq % 40}", "outcome": "completed", "duration_s": 0.123},
            prev_hash=prev,
        ).sealed()
        records.append(record)
        prev = record.hash
    return records


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=10)
    parser.add_argument("--per-writer", type=int, default=200)
    parser.add_argument("--verify", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="siaga-audit-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'siaga.db'}"
        one = appends_per_second(url, 1, args.per_writer * 2)
        print(f"appends, 1 writer process:           {one:8.0f} records/s")
        many = appends_per_second(url, args.writers, args.per_writer)
        print(f"appends, {args.writers} writer processes, one chain: {many:8.0f} records/s "
              f"({args.writers * args.per_writer} records, chain verified)")

        started = time.perf_counter()
        records = long_chain(args.verify)
        built = time.perf_counter() - started
        store = engine(url)
        rows = [{**r.__dict__, "data": dict(r.data)} for r in records]
        with store.begin() as db:
            for i in range(0, len(rows), 5000):
                db.execute(insert(audit_records), rows[i : i + 5000])
        started = time.perf_counter()
        assert verify(records) is None
        in_memory = time.perf_counter() - started
        started = time.perf_counter()
        assert AuditTrail(store).verify("inc-long") is None
        from_store = time.perf_counter() - started
        print(f"build + seal {args.verify} records: {built:6.2f} s")
        print(f"verify {args.verify} records in memory: {in_memory:6.2f} s")
        print(f"verify {args.verify} records from SQLite: {from_store:6.2f} s (read + verify)")


if __name__ == "__main__":
    main()
