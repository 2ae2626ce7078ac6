"""A Prefect SQLite database already at Prefect's schema, made once for a whole test run.

A first `prefect server start` on an empty home spends some 20 s of CPU migrating its database;
a `siaga up` test whose home starts with a copy of this one starts as a restarted stack does (the
database is there, at the schema of the Prefect installed) and skips that. The main stack of
`tests/flows/test_stack.py` still starts on an empty home, as a user's first `siaga up` does."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

_making: list[threading.Thread] = []


def _shared_folder(config: pytest.Config) -> Path:
    """The folder of this test run that its xdist workers share."""
    base = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]  # pytest's tmp_path_factory
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _make(shared: Path) -> Path:
    """Make the database once for all workers (the others wait on the lock); return its path."""
    folder = shared / "prefect-db-template"
    database = folder / "prefect.db"
    with (shared / "prefect-db-template.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            making = shared / "prefect-db-template.making"
            shutil.rmtree(making, ignore_errors=True)
            making.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            done = subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                                  env={**env, "PREFECT_HOME": str(making)}, capture_output=True, text=True,
                                  timeout=900, check=False)
            assert done.returncode == 0 and (making / "prefect.db").exists(), done.stdout + done.stderr
            making.rename(folder)
    return database


def start_making(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Once the tests are collected, start making the database in the background if a test needs it
    (conftest's `pytest_collection_modifyitems`), so that the first test taking it waits less."""
    if any("prefect_db" in getattr(item, "fixturenames", ()) for item in items):
        shared = _shared_folder(config)
        _making.append(threading.Thread(target=_make, args=(shared,), daemon=True))
        _making[-1].start()


@pytest.fixture(scope="session")
def prefect_db(request: pytest.FixtureRequest) -> Path:
    """The migrated database; the xdist workers of one run share it (the first one makes it)."""
    for thread in _making:
        thread.join()
    return _make(_shared_folder(request.config))


def seed_prefect_home(home: Path, database: Path) -> None:
    """Give the Siaga home `home` a copy of the migrated Prefect database (where `siaga up` keeps it)."""
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(database, home / "prefect" / "prefect.db")
