"""Debian's PostgreSQL on loopback for the store's tests (the scale-out path: several receivers
on one database): one throwaway cluster a test session (`testkit.postgres`), and
`fresh_database` for an empty database in it, so each test starts from nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.topology import POSTGRES_BIN
from testkit.postgres import fresh_database, postgres_server

from ..conftest import missing

__all__ = ["fresh_database", "postgres", "store_url"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """One PostgreSQL cluster for the test session (import this fixture into a test module).
    Skips (fails in CI) without the server binaries or psycopg."""
    if POSTGRES_BIN is None:
        missing("PostgreSQL server binaries", "apt-get install -y postgresql")
    pytest.importorskip("psycopg", reason="no psycopg: pip install 'psycopg[binary]'")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store database on each dialect Siaga supports: a test taking it runs twice."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'siaga.db'}"
    return fresh_database(request.getfixturevalue("postgres"))
