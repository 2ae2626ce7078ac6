"""A paused flow run resumed by a person in the Prefect UI, in a real browser: the path every
approval gate relies on. A real Prefect server on its own SQLite database, a flow paused for a
RunInput in a subprocess, and Debian's chromium filling Prefect's resume form."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from playwright.sync_api import Page, expect

from siaga.flows.server import free_port

from ..conftest import REPO
from ..support.browser import browser_fixture, page_fixture  # noqa: F401  (the fixtures `browser`, `page`)
from ..support.prefect_ui import open_resume_form, run_page
from ..support.stack import clean_env

pytestmark = pytest.mark.slow
T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    ui: str
    api: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`prefect server start` with its UI, on a database of its own."""
    home = tmp_path_factory.mktemp("prefect-ui")
    ui = f"http://127.0.0.1:{free_port()}"
    api = f"{ui}/api"
    env = clean_env(home) | {
        "PREFECT_HOME": str(home / "server"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api,
    }
    log = home / "server.log"
    port = ui.rsplit(":", 1)[1]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", port],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not _healthy(api):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        client_env = clean_env(home) | {"PREFECT_API_URL": api, "PREFECT_HOME": str(home / "client")}
        yield Server(ui, api, client_env)
    finally:
        _stop(process)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    for signum, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)


class PausedRun:
    """`tests/support/paused_flow.py` running in its own process, paused for input."""

    def __init__(self, server: Server, folder: Path) -> None:
        self.server, self.folder = server, folder
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.paused_flow", str(folder)], cwd=REPO, env=server.env,
            stdout=(folder / "flow.log").open("wb"), stderr=subprocess.STDOUT,
        )
        self.id = self._wait(lambda: (folder / "flow_run_id").exists() and (folder / "flow_run_id").read_text())
        self._wait(lambda: self.state() == "PAUSED")

    def state(self) -> str:
        return httpx.get(f"{self.server.api}/flow_runs/{self.id}", timeout=30).json()["state"]["type"]

    def received(self) -> dict[str, str] | None:
        path = self.folder / "received.json"
        return json.loads(path.read_text()) if path.exists() else None

    def wait_final(self) -> str:
        return self._wait(lambda: self.state() in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and self.state())

    def _wait(self, ready: Callable[[], T], timeout: float = 60) -> T:
        deadline = time.monotonic() + timeout
        while not (value := ready()):
            log = (self.folder / "flow.log").read_text(errors="replace")
            assert time.monotonic() < deadline, log
            assert self.process.poll() is None or ready(), log
            time.sleep(0.3)
        return value

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def paused_run(server: Server, tmp_path: Path) -> Iterator[PausedRun]:
    run = PausedRun(server, tmp_path)
    try:
        yield run
    finally:
        run.stop()


@pytest.mark.parametrize("ui", ["v2", "v1"])
def test_a_person_resumes_a_paused_run_in_the_prefect_ui(
    server: Server, paused_run: PausedRun, page: Page, ui: str
) -> None:
    url = run_page(server.ui, paused_run.id) if ui == "v2" else f"{server.ui}/runs/flow-run/{paused_run.id}"
    form = open_resume_form(page, url)
    # the description is rendered Markdown: the bold words are an element of their own
    expect(form.dialog.get_by_text("Error rate", exact=True)).to_be_visible()
    expect(form.dialog.get_by_text("payments-api", exact=True)).to_be_visible()
    assert form.choose("Decision", "approve") == ["approve", "reject"]
    assert form.choose("Approver", "bob") == ["alice", "bob"]
    form.fill("Code", "204613")
    form.fill("Comment", "rollback looks right")
    answer = form.submit()

    assert (answer.http_status, answer.status) == (201, "ACCEPT"), answer.body
    assert paused_run.wait_final() == "COMPLETED"
    assert paused_run.received() == {
        "decision": "approve", "approver": "bob", "code": "204613", "comment": "rollback looks right",
    }


def test_input_that_breaks_the_schema_is_refused_and_the_run_stays_paused(
    server: Server, paused_run: PausedRun, page: Page
) -> None:
    form = open_resume_form(page, run_page(server.ui, paused_run.id))
    form.choose("Decision", "approve")
    form.choose("Approver", "alice")
    form.fill("Code", "12345")
    answer = form.submit()

    assert (answer.http_status, answer.status) == (200, "REJECT"), answer.body
    assert "'12345' does not match" in answer.reason
    expect(page.get_by_text("Validation failed for field 'code'")).to_be_visible()
    time.sleep(2)  # two of the flow's polls: it must not have gone on
    assert paused_run.state() == "PAUSED"
    assert paused_run.received() is None
