"""Debian's PostgreSQL on loopback for the store's tests (the scale-out path: several receivers
on one database). `postgres_server` starts a throwaway cluster; `fresh_database` makes an empty
database in it, so each test starts from nothing."""

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

import pytest

from .conftest import missing
from .test_stack import free_port

BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True) if (p / "initdb").exists()), None)


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster of its own; yields the SQLAlchemy URL of its `postgres` database.
    Skips (fails in CI) without the server binaries or psycopg."""
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
        while subprocess.run([str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], check=False, capture_output=True).returncode:
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """One PostgreSQL cluster for the test session (import this fixture into a test module)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store database on each dialect Siaga supports: a test taking it runs twice."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'siaga.db'}"
    return fresh_database(request.getfixturevalue("postgres"))
