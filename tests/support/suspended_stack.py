"""`siaga up` for the tests of runs suspended at their gates: a stack on one home folder serving
three runbooks (a gate that holds no process, a step killed in flight, a gate nobody answers),
started, stopped and restarted as a person would; with the processes running a flow run."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from siaga.approvals.records import GateRecords, gate_id
from siaga.approvals.runs import RunRecords
from siaga.approvals.seal import ledger_key
from siaga.flows.server import free_port
from siaga.integrations.outbox import read_outbox
from siaga.settings import Settings
from siaga.store import engine

from .gate_driver import ROSTER, code_for
from .prefect_db import seed_prefect_home
from .stack import clean_env, create_flow_run, stop

CLOCK = """
runbook: clock
title: Nobody answers
severity: sev2
roles: {finance: [citra, dewi], ops: [eko, fajar]}
chain_of_command: [ops]
steps:
  - id: freeze
    action: outbox.send
    with: {to: team, message: "frozen by nobody"}
    approval: {from: [finance], quorum: 1, timeout: 6s, on_timeout: reject}
"""

HANGING = """
runbook: hanging
title: A step killed in flight
severity: sev2
steps:
  - id: change
    action: http.request
    timeout: 10m
    with: {url: "{{ inputs.url }}", method: POST, json: {freeze: payouts}}
inputs:
  url: {type: string}
"""

RUNBOOK = """
runbook: waiting
title: A gate that holds no process
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
        (self.folder / "waiting.yaml").write_text(RUNBOOK)
        (self.folder / "hanging.yaml").write_text(HANGING)
        (self.folder / "clock.yaml").write_text(CLOCK)
        (self.folder / "roster.yaml").write_text(ROSTER)
        self.env = clean_env(home)
        self.process: subprocess.Popen[str] | None = None
        self.api = ""
        self.store = f"sqlite:///{home / 'siaga.db'}"

    def start(self) -> None:
        port = free_port()
        log = (self.home / "up.log").open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--no-receiver", "--runbooks", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=self.env,
        )
        self.api = f"http://127.0.0.1:{port}/api"
        wait(lambda: "Siaga is up" in self.log().rsplit("Stopping Siaga", 1)[-1], 180, self.log)

    def log(self) -> str:
        return (self.home / "up.log").read_text()

    def stop(self) -> None:
        assert self.process is not None
        stop(self.process, self.home)

    def siaga(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "siaga.cli", *args], capture_output=True, text=True,
                              timeout=120, env=self.env, check=False)

    def create_run(self, runbook: str = "waiting", **parameters: Any) -> str:
        deployment = httpx.get(f"{self.api}/deployments/name/{runbook}/siaga").json()
        return str(create_flow_run(self.api, deployment["id"], parameters)["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.api}/flow_runs/{run_id}", timeout=30).json()

    def state(self, run_id: str) -> str:
        return self.run(run_id)["state"]["type"]

    def set_state(self, run_id: str, state: str, name: str | None = None) -> dict[str, Any]:
        body = {"state": {"type": state, **({"name": name} if name else {})}, "force": True}
        return httpx.post(f"{self.api}/flow_runs/{run_id}/set_state", json=body, timeout=30).json()

    def resume(self, run_id: str, answer: dict[str, Any]) -> dict[str, Any]:
        """Resume the run through its form, as the UI does (asking again while SQLite is locked)."""
        for _ in range(10):
            resumed = httpx.post(f"{self.api}/flow_runs/{run_id}/resume", json={"run_input": answer}, timeout=30)
            if resumed.status_code != 503:
                break
            time.sleep(1)
        return resumed.json()

    def records(self) -> GateRecords:
        """The stack's decision ledger, read with the stack's own key."""
        return GateRecords(engine(self.store), ledger_key(self.home, Settings.from_environ(self.env)))

    def gate(self, run_id: str) -> Any:
        return self.records().get(gate_id(run_id, "freeze"))

    def waiting(self, run_id: str) -> bool:
        """Suspended at its gate, its form up: Prefect's state and Siaga's record agree."""
        record = RunRecords(engine(self.store)).get(run_id)
        state = self.run(run_id)["state"]
        return bool(record and record.state == "waiting" and record.form_key
                    and state["type"] == "PAUSED" and state["name"] == "Suspended"
                    and state["state_details"]["pause_key"] == record.form_key)

    def sent(self, run_id: str) -> list[str]:
        return [m["step"] for m in read_outbox(self.home) if m["run_id"] == run_id and not m["to"].startswith("person:")]

    def code(self, person: str, run_id: str, decision: str = "approve") -> str:
        return code_for(self.home, person, run_id, "freeze", decision)


def wait(condition: Callable[[], Any], timeout: float, say: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, say()
        time.sleep(0.3)
    return value


def processes_of(run_id: str) -> list[int]:
    """The processes on this machine running flow run `run_id` (Prefect names it in their environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"PREFECT__FLOW_RUN_ID={run_id}".encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@contextlib.contextmanager
def started(home: Path, prefect_db: Path) -> Iterator[Up]:
    """`siaga up` on `home` (its Prefect database a copy of `prefect_db`) until the block ends (it may
    have been restarted meanwhile)."""
    seed_prefect_home(home, prefect_db)
    stack = Up(home)
    try:  # a stack that does not come up is stopped too, and the server a killed one left behind
        stack.start()
        yield stack
    finally:
        if stack.process:
            stack.stop()
