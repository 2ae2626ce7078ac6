"""Shared fixtures: a real Prefect server (Prefect's own test harness, on a temporary SQLite
database) and a Siaga home folder of the test session's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = REPO / "runbooks"


SLOWEST_FIRST = (
    "test_stack.py", "test_gates_suspended.py", "test_drill_ui.py", "test_quiet_live.py", "test_receiver.py",
    "test_gate_ui.py", "test_gate_restarts.py", "test_cli.py", "test_faststart.py", "test_zombie.py",
    "test_drill_schedule.py", "test_prefect_ui_pause.py", "test_aws.py", "test_report.py", "test_cluster.py",
)
"""The test files that take longest, longest first (measured with ``--durations``): `pytest -n 3
--dist loadfile` runs each file whole on one worker and hands the files out in this order, then
the others as collected, so that no long file is left to run alone at the end. Named without their
part's folder (tests/flows/test_stack.py is "test_stack.py"): a file's name is unique in tests/."""


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep our order, not most tests first
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: n for n, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
    start_making(config, items)  # the migrated Prefect database, if a test takes it


def missing(what: str, install: str) -> None:
    """Skip a test whose outside program is missing; in CI (which installs it) fail instead."""
    message = f"no {what}: {install}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must install it)")
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def siaga_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session writes its outbox, logs and Prefect data to a fresh folder."""
    home = tmp_path_factory.mktemp("siaga-home")
    saved = {k: os.environ.get(k) for k in ("SIAGA_HOME", "PREFECT_HOME", "SIAGA_RUNBOOKS")}
    os.environ["SIAGA_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["SIAGA_RUNBOOKS"] = str(RUNBOOKS)
    (home / "prefect").mkdir()
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def prefect_api(siaga_home: Path) -> Iterator[str]:
    """A real Prefect server for the session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


# The store's databases: `store_url` runs a test on SQLite and on PostgreSQL (one cluster a session).
from .support.postgres import postgres, store_url  # noqa: F401

# A migrated Prefect database for the homes of the tests' own `siaga up` stacks (made once a run).
from .support.prefect_db import prefect_db, start_making  # noqa: F401
