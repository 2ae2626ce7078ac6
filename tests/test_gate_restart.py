"""A gate outlives the process waiting at it: the run's process killed, then `siaga up` itself
restarted, while a gate is open; the gate comes back with its votes, no step runs twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga.approvals.records import GateRecords, gate_id
from siaga.integrations.outbox import read_outbox
from siaga.store import engine

from .gate_driver import ROSTER, code_for
from .test_stack import clean_env, free_port, stop

RUNBOOK = """
runbook: restartable
title: A gate that outlives its process
severity: sev2
roles: {finance: [citra, dewi], ops: [eko, fajar]}
chain_of_command: [ops]
steps:
  - id: before
    action: outbox.send
    with: {to: team, message: "before the gate"}
  - id: freeze
    action: outbox.send
    with: {to: team, message: "the gated step"}
    approval: {from: [finance, ops], quorum: 2, distinct_roles: true, timeout: 30m}
"""


class Up:
    """`siaga up` on one home folder, started and stopped as a person would."""

    def __init__(self, home: Path) -> None:
        self.home, self.folder = home, home / "runbooks"
        self.folder.mkdir()
        (self.folder / "restartable.yaml").write_text(RUNBOOK)
        (self.folder / "roster.yaml").write_text(ROSTER)
        self.env = clean_env(home)
        self.process: subprocess.Popen[str] | None = None
        self.api = ""

    def start(self) -> None:
        port = free_port()
        log = (self.home / "up.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--no-receiver", "--runbooks", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=self.env,
        )
        self.api = f"http://127.0.0.1:{port}/api"
        wait(lambda: "Siaga is up" in (self.home / "up.log").read_text().rsplit("Stopping Siaga", 1)[-1], 180,
             lambda: (self.home / "up.log").read_text())

    def stop(self) -> None:
        assert self.process is not None
        stop(self.process, self.home)

    def siaga(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "siaga.cli", *args], capture_output=True, text=True,
                              timeout=120, env=self.env, check=False)

    def gate(self, run_id: str) -> Any:
        return GateRecords(engine(f"sqlite:///{self.home / 'siaga.db'}")).get(gate_id(run_id, "freeze"))

    def run_state(self, run_id: str) -> str:
        return httpx.get(f"{self.api}/flow_runs/{run_id}").json()["state"]["type"]


def wait(condition: Callable[[], Any], timeout: float, say: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, say()
        time.sleep(0.3)
    return value


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    stack = Up(tmp_path)
    stack.start()
    try:
        yield stack
    finally:
        if stack.process and stack.process.poll() is None:
            stack.stop()


def test_the_gate_survives_a_killed_run_and_a_restarted_stack(up: Up) -> None:
    deployment = httpx.get(f"{up.api}/deployments/name/restartable/siaga").json()
    run = httpx.post(f"{up.api}/deployments/{deployment['id']}/create_flow_run",
                     json={"parameters": {"requested_by": "eko"}}).json()
    run_id = run["id"]

    def paused() -> bool:
        gate = up.gate(run_id)
        return bool(gate and gate.pid and up.run_state(run_id) == "PAUSED")

    wait(paused, 120, lambda: (up.home / "up.log").read_text())
    approve = up.siaga("approve", run_id, "freeze", "--as", "citra", "--code", code_for(up.home, "citra", run_id, "freeze"))
    assert approve.returncode == 0 and "still open" in approve.stdout, approve.stdout + approve.stderr

    # the process waiting at the gate dies: the stack's watcher starts the run again
    killed = up.gate(run_id).pid
    os.kill(killed, signal.SIGKILL)
    wait(lambda: paused() and up.gate(run_id).pid != killed, 120, lambda: (up.home / "up.log").read_text())

    # the whole stack restarts while the gate is open
    up.stop()
    gate = up.gate(run_id)
    assert gate.state == "open"
    up.start()
    wait(paused, 180, lambda: (up.home / "up.log").read_text())
    listed = json.loads(up.siaga("approvals", "--json").stdout)
    assert [(g["step"], g["decided"]) for g in listed if g["run_id"] == run_id] == [("freeze", ["citra"])]
    shown = up.siaga("approvals").stdout  # for people: whole ids and the command that answers
    assert f"run {run_id}" in shown and "decided: citra" in shown, shown
    assert f"siaga approve {run_id} freeze --as ID --code CODE" in shown, shown

    approve = up.siaga("approve", run_id, "freeze", "--as", "fajar", "--code", code_for(up.home, "fajar", run_id, "freeze"))
    assert approve.returncode == 0 and "the gate is approved" in approve.stdout, approve.stdout + approve.stderr
    wait(lambda: up.run_state(run_id) == "COMPLETED", 120, lambda: up.run_state(run_id))

    sent = [m for m in read_outbox(up.home) if m["run_id"] == run_id and not m["to"].startswith("person:")]
    assert [m["step"] for m in sent] == ["before", "freeze"], "no step ran twice, the gated one once"
    kinds = [e["kind"] for e in GateRecords(engine(f"sqlite:///{up.home / 'siaga.db'}")).events(gate_id(run_id, "freeze"))]
    assert kinds.count("revived") == 2 and "interrupted" in kinds and kinds.count("reopened") == 2
    assert kinds.count("code sent") == 3, "codes are not sent again after a restart"
    task_runs = httpx.post(f"{up.api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    before = sorted(t["state"]["name"] for t in task_runs if t["name"] == "before")
    assert before == ["Cached", "Cached", "Completed"], "done once, then twice from the cache"
