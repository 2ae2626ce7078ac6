"""A Prefect SQLite database already at Prefect's schema, made once for a whole test run.

A first `prefect server start` on an empty home spends some 20 s of CPU migrating its database;
a `siaga up` test whose home starts with a copy of this one starts as a restarted stack does (the
database is there, at the schema of the Prefect installed) and skips that. `tests/test_stack.py`'s
main stack still starts on an empty home, as a user's first `siaga up` does."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The migrated database; the xdist workers of one run share it (the first one makes it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's own folder
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
                                  timeout=600, check=False)
            assert done.returncode == 0 and (making / "prefect.db").exists(), done.stdout + done.stderr
            making.rename(folder)
    return database


def seed_prefect_home(home: Path, database: Path) -> None:
    """Give the Siaga home `home` a copy of the migrated Prefect database (where `siaga up` keeps it)."""
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(database, home / "prefect" / "prefect.db")
