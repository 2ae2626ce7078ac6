"""Debian's PostgreSQL on loopback: `postgres_server` starts a throwaway cluster, `fresh_database`
makes an empty database in it. The store's tests (through `tests/support/postgres.py`, which skips
without the binaries) and `benchmarks/alert_storm.py --postgresql` use it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cluster.topology import POSTGRES_BIN, free_port


class PostgresMissing(RuntimeError):
    """Debian's PostgreSQL server binaries are not installed (``apt-get install -y postgresql``)."""


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster of its own; yields the SQLAlchemy URL of its `postgres` database."""
    if POSTGRES_BIN is None:
        raise PostgresMissing("no PostgreSQL server binaries: apt-get install -y postgresql")
    folder = Path(tempfile.mkdtemp(prefix="siaga-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(_as_postgres([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "siaga", "--auth=trust"]),
                   check=True, capture_output=True)
    server = subprocess.Popen(
        _as_postgres([str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                      "-k", str(folder)]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        ready = [str(POSTGRES_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        while subprocess.run(ready, check=False, capture_output=True).returncode:
            assert server.poll() is None and time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        yield f"postgresql+psycopg://siaga@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """An empty database on the server of `server_url`; returns its URL."""
    from sqlalchemy import create_engine

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name
