"""Siaga's own store: SQLite in WAL mode under the data folder by default, any SQLAlchemy URL
(PostgreSQL for scale-out) through ``SIAGA_DATABASE_URL``.

Tables: `side_effects` (the side-effect ledger). Later: alerts, incidents, gates, audit trail.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from sqlalchemy import JSON, Column, DateTime, Engine, MetaData, String, Table, Text, create_engine, event
from sqlalchemy.exc import DatabaseError

from .home import siaga_home

metadata = MetaData()

side_effects = Table(
    "side_effects",
    metadata,
    Column("key", String(300), primary_key=True),
    Column("action", String(100), nullable=False),
    Column("params_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # intent | done | failed
    Column("result", JSON),
    Column("error", Text),
    Column("run_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def database_url(home: Path | None = None) -> str:
    return os.environ.get("SIAGA_DATABASE_URL") or f"sqlite:///{(home or siaga_home()) / 'siaga.db'}"


@cache
def engine(url: str | None = None) -> Engine:
    """The store's engine (one per URL per process), with its tables created."""
    url = url or database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    created = create_engine(url, future=True)
    if created.dialect.name == "sqlite":

        @event.listens_for(created, "connect")
        def _sqlite_pragmas(connection, record) -> None:  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    try:
        metadata.create_all(created)
    except DatabaseError:
        # Another process created the tables between our check and our CREATE (two flow runs
        # starting on a fresh store): they are there now, which a second pass confirms.
        metadata.create_all(created)
    return created
