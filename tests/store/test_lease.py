"""Once across a cluster: the PostgreSQL lease a node must hold to run the singletons, and what
cluster mode refuses. Debian's PostgreSQL on loopback."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import text

from siaga.store.lease import Lease
from siaga.store import engine

from ..support.postgres import fresh_database


def test_one_holder_at_a_time_and_a_dead_holder_loses_the_lease(postgres: str) -> None:
    store = engine(fresh_database(postgres))
    first, second = Lease(store, "singletons"), Lease(store, "singletons")
    assert first.acquire() and first.held()
    assert not second.acquire()
    assert Lease(store, "another job").acquire()  # leases of other names are apart
    with store.connect() as db:  # the holder's connection dies (its node was killed, its host lost)
        db.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND objid = :low"), {"low": first.key & 0xFFFFFFFF})
        db.commit()
    assert not first.held() and not first.mine  # it must stop its singletons at once
    assert second.acquire()
    second.release()
    assert first.acquire()
    first.release()


def test_cluster_mode_refuses_a_sqlite_store_and_a_missing_prefect_server(tmp_path: object) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}
    base["SIAGA_HOME"] = str(tmp_path)

    def node(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "siaga.cli", "node"], env={**base, **env},
                              capture_output=True, text=True, timeout=60)

    no_server = node()
    assert no_server.returncode == 2 and "set PREFECT_API_URL" in no_server.stderr
    sqlite = node(PREFECT_API_URL="http://127.0.0.1:9/api", SIAGA_DATABASE_URL=f"sqlite:///{tmp_path}/s.db")
    assert sqlite.returncode == 2
    assert "needs Siaga's store on PostgreSQL" in sqlite.stderr and "not sqlite" in sqlite.stderr


def test_a_receiver_finding_an_incident_claimed_moves_on_to_the_next(postgres: str) -> None:
    """Two receivers walk the same incidents in the same order: the one that finds an incident's run
    claimed by the other skips it at once (its slot goes to the next incident) rather than waiting,
    and creates it only once the claim is free and no run is noted."""
    import asyncio

    from siaga.flows.node import claimed_start

    store = engine(fresh_database(postgres))
    created: list[str] = []

    async def create(incident: object) -> str:
        created.append(incident["id"])  # type: ignore[index]
        return f"run-of-{incident['id']}"  # type: ignore[index]

    start = claimed_start(store, create)
    other_receiver = Lease(store, "incident-run:inc-1:respond")
    assert other_receiver.acquire()

    async def walk() -> list[str | None]:
        return [await start({"id": "inc-1", "phase": "respond"}), await start({"id": "inc-2", "phase": "respond"})]

    assert asyncio.run(asyncio.wait_for(walk(), timeout=5)) == [None, "run-of-inc-2"]
    assert created == ["inc-2"]
    other_receiver.release()
    assert asyncio.run(start({"id": "inc-1", "phase": "respond"})) == "run-of-inc-1"
    assert created == ["inc-2", "inc-1"]
