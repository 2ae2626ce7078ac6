"""The side-effect ledger on its own: who may act on a key, and when a silent intent is dead. On
SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from siaga.audit.ledger import Claim, Ledger
from siaga.store import engine


def ledger(store_url: str) -> Ledger:
    return Ledger(engine(store_url))


def test_only_one_of_two_callers_reclaims_a_failed_call(store_url: str) -> None:
    book = ledger(store_url)
    assert book.claim("k", "payments.freeze", {}, "run-1") == (Claim.NEW, None)
    book.failed("k", "503 from the switch")
    first = book.claim("k", "payments.freeze", {}, "run-2")
    second = book.claim("k", "payments.freeze", {}, "run-3")
    assert [first[0], second[0]] == [Claim.NEW, Claim.UNKNOWN]


def test_the_heartbeat_moves_only_its_own_intent(store_url: str) -> None:
    book = ledger(store_url)
    book.claim("k", "payments.freeze", {}, "run-1")
    before = book.get("k")
    assert before is not None
    assert not book.touch("k", "run-2")
    assert book.touch("k", "run-1")
    after = book.get("k")
    assert after is not None and after.updated_at > before.updated_at
    book.done("k", {"ok": True})
    assert not book.touch("k", "run-1"), "a settled call has no heartbeat"


def test_a_silent_intent_is_taken_over_once_and_only_as_seen(store_url: str) -> None:
    book = ledger(store_url)
    book.claim("k", "payments.freeze", {}, "run-1")
    stale = book.get("k")
    assert stale is not None
    book.touch("k", "run-1")  # the owner was alive after all
    assert not book.take_over("k", "run-2", stale)
    seen = book.get("k")
    assert seen is not None
    assert book.take_over("k", "run-2", seen)
    assert not book.take_over("k", "run-3", seen), "the second taker must wait for the first"
    entry = book.get("k")
    assert entry is not None and entry.run_id == "run-2" and entry.state == "intent"


def test_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Flow runs starting together on a new install race to create the tables."""
    count = 8
    code = (
        "import os, sys, time; from pathlib import Path; from siaga.store import engine; "
        "ready = Path(sys.argv[2]); (ready / str(os.getpid())).touch(); "
        f"[time.sleep(0.005) for _ in iter(lambda: len(list(ready.iterdir())) < {count}, False)]; "
        "engine(sys.argv[1])"
    )
    (tmp_path / "ready").mkdir()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, str(tmp_path / "ready")], stderr=subprocess.PIPE
        )
        for _ in range(count)
    ]
    errors = [child.communicate(timeout=60)[1].decode() for child in children]
    assert [e[-300:] for c, e in zip(children, errors, strict=True) if c.returncode != 0] == []
