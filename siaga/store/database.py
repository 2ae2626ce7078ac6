"""Siaga's store's database: its engine (SQLite in WAL mode under the data folder by default, any
SQLAlchemy URL, PostgreSQL for scale-out, through ``SIAGA_DATABASE_URL``: `Settings.store_url`,
which each entry point reads and hands to `engine`), its migrations, and the two writing idioms
every part uses.

The schema is versioned by Alembic (`siaga.store.migrations`): `engine(url)` brings a database to the newest
migration on first use (`upgrade`), and adopts a database the pre-migration Siaga created (its
tables, no ``alembic_version``) by stamping the baseline. A change to `metadata` needs a migration;
a test fails otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DatabaseError
from sqlalchemy.sql.dml import Insert

from siaga.home import ensure_home

from .tables import metadata


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes, committed when the block ends (rolled back on an exception). On
    SQLite it takes the write lock at its start (``BEGIN IMMEDIATE``): its reads see the state it
    writes over, and it cannot fail half-way on a stale snapshot. Keep it short: on SQLite every
    other writer waits for it."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


def insert_ignoring(connection: Connection, table: Table) -> Insert:
    """An INSERT into `table` that does nothing on a unique conflict (SQLite and PostgreSQL): with
    ``.returning(...)``, a row comes back only if this INSERT made it."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"Siaga's store needs SQLite or PostgreSQL, not {connection.dialect.name}")


class StoreError(Exception):
    """The store's database cannot be used as it is (say why, and what to do)."""


BASELINE = "0001"
"""The first migration: the tables Siaga created with ``create_all`` before it had migrations."""
BASELINE_TABLES = frozenset({"side_effects", "alerts", "incidents", "incident_alerts"})
MIGRATION_LOCK = 0x5149_4147  # "SIAG": PostgreSQL advisory lock id held while migrating


def _head() -> str | None:
    from .migrations import head

    return head()


def _current(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: not versioned, or empty)."""
    with engine.connect() as connection:
        return _current(connection)


def upgrade(engine: Engine) -> bool:
    """Bring the database to the newest migration; True if anything was done.

    Safe to race: on SQLite the work happens under ``BEGIN IMMEDIATE`` (a second process waits on
    the write lock, then finds the database at head); on PostgreSQL under a transaction-scoped
    advisory lock, with the DDL in the same transaction (PostgreSQL's DDL is transactional)."""
    head = _head()
    with engine.connect() as connection:
        if _current(connection) == head:
            return False
    from alembic import command

    from .migrations import alembic_config

    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
        current = _current(connection)
        if current == head:  # another process migrated while we waited for the lock
            connection.rollback()
            return False
        config = alembic_config()
        config.attributes["connection"] = connection
        if current is None:
            _adopt(connection, config)
        command.upgrade(config, "head")
        connection.commit()
    return True


def _adopt(connection: Connection, config: object) -> None:
    """A database without ``alembic_version``: empty (migrate from scratch), or made by the
    pre-migration ``create_all`` (stamp the baseline, then migrate on from there)."""
    from alembic import command

    existing = set(inspect(connection).get_table_names()) & set(metadata.tables)
    if not existing:
        return
    if BASELINE_TABLES <= existing:
        command.stamp(config, BASELINE)  # type: ignore[arg-type]
        return
    raise StoreError(
        f"the store at {connection.engine.url.render_as_string(hide_password=True)} has some of "
        f"Siaga's tables ({', '.join(sorted(existing))}) but not all of "
        f"{', '.join(sorted(BASELINE_TABLES))}, and no migration version: restore it from a "
        "backup or point SIAGA_DATABASE_URL at an empty database"
    )


def engine(url: str, home: Path | None = None) -> Engine:
    """The engine of the store at `url` (`Settings.store_url`; one per URL per process), its
    database at the newest migration. A SQLite file in the data folder `home` (`Settings.home`)
    makes that folder private (`siaga.home.ensure_home`); any other folder is left as its owner
    made it."""
    found = _engines.get(url)
    if found is None:
        created = _connect(url, home)
        _upgrade_retrying(created)
        found = _engines.setdefault(url, created)
    return found


_engines: dict[str, Engine] = {}
"""The engines made in this process, by URL (the data folder matters only to the first)."""


def migrate(url: str, home: Path | None = None) -> tuple[str | None, str | None]:
    """Bring the store at `url` to the newest migration on purpose (``siaga db upgrade``, before
    rolling out receivers that share a PostgreSQL database); return the revisions before and after."""
    created = _connect(url, home)
    try:
        before = current_revision(created)
        _upgrade_retrying(created)
        return before, current_revision(created)
    finally:
        created.dispose()


def _connect(url: str, home: Path | None) -> Engine:
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if folder == home:
            ensure_home(folder)
        else:  # a folder SIAGA_DATABASE_URL names: left as its owner made it
            folder.mkdir(parents=True, exist_ok=True)
    created = create_engine(url, future=True)
    if created.dialect.name == "sqlite":

        @event.listens_for(created, "connect")
        def _sqlite_pragmas(connection, record) -> None:  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA busy_timeout=10000")  # first: turning WAL on waits for the lock too
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return created


def _upgrade_retrying(created: Engine, attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        try:
            upgrade(created)
            return
        except DatabaseError:
            # Another process holds the database (its busy timeout ran out) or created the
            # version table between our check and our CREATE: look again; it is usually done.
            if attempt == attempts:
                raise
