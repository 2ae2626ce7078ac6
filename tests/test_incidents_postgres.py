"""The incident store on PostgreSQL (the scale-out path, many receivers): concurrent alerts of one
group open exactly one incident, each notification is recorded once, and concurrent resolutions
resolve it. Debian's postgresql on loopback; skipped without it or without psycopg."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from siaga.alerts import Alert, AlertStatus
from siaga.incidents import get_incident, list_incidents, process

from .conftest import missing
from .test_routing import CATALOG, STARTED
from .test_stack import free_port

BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True) if (p / "initdb").exists()), None)


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if BIN is None:
        missing("PostgreSQL server binaries", "apt-get install -y postgresql")
    pytest.importorskip("psycopg", reason="no psycopg: pip install 'psycopg[binary]'")
    folder = Path(tempfile.mkdtemp(prefix="siaga-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(data), "-U", "siaga", "--auth=trust"]),
                   check=True, capture_output=True)
    server = subprocess.Popen(
        _as_postgres([str(BIN / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(folder)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode:
            assert server.poll() is None and time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        yield f"postgresql+psycopg://siaga@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def test_concurrent_alerts_open_one_incident_and_concurrent_resolutions_resolve_it(postgres_url: str) -> None:
    from siaga.store import engine

    store = engine(postgres_url)
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
