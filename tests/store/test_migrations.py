"""The store's schema is versioned by Alembic: a fresh database is brought to head on first use, on
SQLite and PostgreSQL; the migrations describe exactly `siaga.store.metadata` (a table added without
a migration fails here); a database made by the pre-migration ``create_all`` is adopted with its
rows; processes opening a fresh database at once all succeed."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, column, create_engine, inspect, select, table, text

from siaga.store import (
    BASELINE,
    StoreError,
    current_revision,
    engine,
    incidents,
    metadata,
    upgrade,
)
from siaga.store.database import BASELINE_TABLES


@pytest.fixture
def empty_url(store_url: str) -> str:
    """The URL of an empty database, on each dialect the store supports."""
    return store_url


def head() -> str:
    from alembic.script import ScriptDirectory

    from siaga.store.migrations import alembic_config

    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert found is not None
    return found


def test_the_numbered_files_name_alembics_single_head() -> None:
    """`siaga.store.migrations.head` reads the newest number off the file names (no Alembic import):
    it must be what Alembic finds, and there must be one head (two branches adding 0005 clash)."""
    from alembic.script import ScriptDirectory

    from siaga.store.migrations import alembic_config
    from siaga.store.migrations import head as newest

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [newest()]
    numbers = [r.revision for r in script.walk_revisions()]
    assert sorted(numbers) == [f"{n:04d}" for n in range(1, len(numbers) + 1)]


def differences(store: Engine) -> list[object]:
    with store.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), metadata)


def test_first_use_brings_an_empty_database_to_head_and_matches_the_metadata(empty_url: str) -> None:
    store = engine(empty_url)
    assert current_revision(store) == head()
    assert set(metadata.tables) <= set(inspect(store).get_table_names())
    assert differences(store) == [], "siaga.store.metadata changed without a migration: python -m siaga.store.migrations"
    assert upgrade(store) is False  # at head: nothing to do


def old_create_all(url: str) -> Engine:
    """What the store did before it had migrations: ``create_all`` of the baseline tables as they
    were then (the baseline migration's tables; today's metadata has columns added since), with no
    version table."""
    from alembic import command

    from siaga.store.migrations import alembic_config

    old = create_engine(url)
    config = alembic_config()
    with old.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, BASELINE)
        connection.execute(text("DROP TABLE alembic_version"))
    assert set(inspect(old).get_table_names()) == BASELINE_TABLES
    return old


def test_a_database_made_by_the_old_create_all_is_adopted_with_its_rows(empty_url: str) -> None:
    old = old_create_all(empty_url)
    now = datetime.now(UTC)
    with old.begin() as connection:
        # the old table's own columns (today's `incidents` would also write columns added since)
        old_incidents = table("incidents", *(column(name) for name in (
            "id", "runbook_id", "group_key", "open_key", "state", "opened_at", "inputs", "run_attempts", "alerts")))
        connection.execute(old_incidents.insert().values(
            id="inc-old", runbook_id="gateway", group_key="region=x", open_key="gateway region=x",
            state="open", opened_at=now, inputs="{}", run_attempts=0, alerts=1,
        ))
    assert "alembic_version" not in inspect(old).get_table_names()
    old.dispose()

    store = engine(empty_url)
    assert current_revision(store) == head()
    assert differences(store) == []
    with store.connect() as connection:
        assert connection.execute(select(incidents.c.id, incidents.c.state)).all() == [("inc-old", "open")]


def test_the_baseline_is_stamped_not_run_on_an_old_database(tmp_path: Path) -> None:
    """Adopting records the baseline as done (its CREATE TABLEs would fail on existing tables)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old_create_all(url).dispose()
    store = create_engine(url)
    upgrade(store)
    with store.connect() as connection:
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    assert versions == [head()]
    assert BASELINE <= head()


def test_a_database_with_only_some_of_the_tables_is_refused_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'partial.db'}"
    partial = create_engine(url)
    metadata.create_all(partial, tables=[metadata.tables["side_effects"]])
    with pytest.raises(StoreError, match="has some of Siaga's tables.*side_effects"):
        upgrade(partial)
    assert "alerts" not in inspect(partial).get_table_names()  # nothing was half-done


def test_processes_migrating_one_fresh_database_at_once_all_succeed(empty_url: str, tmp_path: Path) -> None:
    """Flow runs and receivers starting together on a new install (SQLite: BEGIN IMMEDIATE;
    PostgreSQL: an advisory lock) race to migrate: none fails, the database ends at head."""
    count = 6
    code = (
        "import os, sys, time; from pathlib import Path; from siaga.store import engine; "
        "ready = Path(sys.argv[2]); (ready / str(os.getpid())).touch(); "
        f"[time.sleep(0.005) for _ in iter(lambda: len(list(ready.iterdir())) < {count}, False)]; "
        "engine(sys.argv[1])"
    )
    (tmp_path / "ready").mkdir()
    children = [
        subprocess.Popen([sys.executable, "-c", code, empty_url, str(tmp_path / "ready")], stderr=subprocess.PIPE)
        for _ in range(count)
    ]
    errors = [child.communicate(timeout=120)[1].decode() for child in children]
    assert [e[-400:] for c, e in zip(children, errors, strict=True) if c.returncode != 0] == []
    store = create_engine(empty_url)
    assert current_revision(store) == head()
    assert differences(store) == []


def test_siaga_db_upgrade_migrates_then_says_it_is_at_head(empty_url: str, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SIAGA_DATABASE_URL": empty_url}
    first = subprocess.run([sys.executable, "-m", "siaga.cli", "db", "upgrade"], env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert f"migrated from nothing to {head()}" in first.stdout
    again = subprocess.run([sys.executable, "-m", "siaga.cli", "db", "upgrade"], env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and f"already at migration {head()}" in again.stdout
    assert current_revision(create_engine(empty_url)) == head()
