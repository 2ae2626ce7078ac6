"""Processes that append to one audit chain at once (for the concurrency tests and benchmark)."""

from __future__ import annotations

import multiprocessing
import time

from siaga.audit import AuditTrail
from siaga.store import engine


def append_many(url: str, chain: str, writer: int, count: int, start_at: float) -> None:
    """Append `count` records to `chain` as writer `writer`, starting at `start_at` (wall clock)."""
    trail = AuditTrail(engine(url))
    trail.head(chain)  # connect (and create the tables) before the start line
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        trail.append("test.append", chain=chain, incident_id=chain, actor=f"writer-{writer}", data={"writer": writer, "i": i})


def run_writers(url: str, chain: str, writers: int, count: int, head_start: float = 3.0) -> float:
    """Run `writers` processes appending `count` records each; return the seconds from the common
    start to the last one's end."""
    spawn = multiprocessing.get_context("spawn")
    start_at = time.time() + head_start
    processes = [spawn.Process(target=append_many, args=(url, chain, n, count, start_at)) for n in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    assert not failed, f"writers failed with exit codes {failed}"
    return time.time() - start_at
