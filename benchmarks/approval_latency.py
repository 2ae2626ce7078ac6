"""Approval latency: from a vote submitted (as `siaga approve` submits it, to the ledger) to the
gated step running, for a run waiting without a process on `siaga up` (suspended, its process
gone, woken by the stack through the fast lane) side by side with a run holding its process
(`--local`). One run of
20 gated steps each way, each approved by one person with the code they were sent; prints median
and p95 (target p95 <= 1 s).

    python benchmarks/approval_latency.py
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

GATES = 20
EXITED_AFTER = 3.0
"""Seconds after a run suspended by when its process has exited (Prefect's engine takes 1-2 s)."""
ROSTER = "people:\n  citra: {name: Citra, roles: [finance]}\n"
STEP = """
  - id: gated-{n}
    action: outbox.send
    with: {{to: finance-desk, message: "step {n}"}}
    approval: {{from: [finance], timeout: 30m}}"""
RUNBOOK = "runbook: latency\ntitle: Latency\nseverity: sev3\nroles: {finance: [citra]}\nsteps:" + "".join(
    STEP.format(n=n) for n in range(GATES)
)


def code(home: Path, run_id: str, n: int) -> str | None:
    from siaga.integrations.outbox import read_outbox

    for m in read_outbox(home):
        if m["to"] == "person:citra" and run_id in m["message"] and f"step `gated-{n}`" in m["message"]:
            return re.search(r"To APPROVE, your one-time code: (\d{8})", m["message"]).group(1)  # type: ignore[union-attr]
    return None


def ran(home: Path, n: int) -> float | None:
    from siaga.integrations.outbox import read_outbox

    done = [m for m in read_outbox(home) if m["to"] == "finance-desk" and m["message"] == f"step {n}"]
    return datetime.fromisoformat(done[0]["at"]).timestamp() if done else None


def drive(home: Path, run_id: str, store: str, ready: object) -> list[float]:
    """Approve the run's gates one after the other; the latency of each."""
    from siaga.approvals.records import GateRecords
    from siaga.approvals.seal import ledger_key
    from siaga.settings import Settings
    from siaga.store import engine

    records = GateRecords(engine(store), ledger_key(home, Settings.from_environ(os.environ)))
    latencies = []
    for n in range(GATES):
        while (found := code(home, run_id, n)) is None or not ready():  # type: ignore[operator]
            time.sleep(0.02)
        submitted = time.time()
        records.submit(f"{run_id}:gated-{n}", "citra", "approve", found, channel="cli")
        while (at := ran(home, n)) is None:
            time.sleep(0.01)
        latencies.append(at - submitted)
    return latencies


def on_stack() -> list[float]:
    home = Path(tempfile.mkdtemp(prefix="siaga-approval-stack-"))
    folder = home / "runbooks"
    folder.mkdir()
    (folder / "roster.yaml").write_text(ROSTER)
    (folder / "latency.yaml").write_text(RUNBOOK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))} | {"SIAGA_HOME": str(home)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = subprocess.Popen(
        [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--no-receiver", "--runbooks", str(folder)],
        stdout=(home / "up.log").open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    os.environ["SIAGA_HOME"] = str(home)
    try:
        while "Siaga is up" not in (home / "up.log").read_text():
            time.sleep(0.5)
        api = f"http://127.0.0.1:{port}/api"
        deployment = httpx.get(f"{api}/deployments/name/latency/siaga").json()["id"]
        run_id = httpx.post(f"{api}/deployments/{deployment}/create_flow_run",
                            json={"parameters": {"requested_by": "bench"}}).json()["id"]
        from siaga.approvals.runs import RunRecords
        from siaga.store import engine

        store = f"sqlite:///{home / 'siaga.db'}"
        runs = RunRecords(engine(store))

        def suspended() -> bool:
            """Waiting at its gate with no process: suspended, and its process has had the time it
            takes to exit (a forked process keeps the forkserver's /proc environment, so it cannot
            be found there)."""
            record = runs.get(run_id)
            if not (record and record.state == "waiting" and record.form_key):
                return False
            since = time.time() - record.updated_at.timestamp()
            return since > EXITED_AFTER

        return drive(home, run_id, store, suspended)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=120)


def held() -> list[float]:
    home = Path(tempfile.mkdtemp(prefix="siaga-approval-held-"))
    os.environ["SIAGA_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["SIAGA_ROSTER"] = str(home / "roster.yaml")
    (home / "roster.yaml").write_text(ROSTER)
    from prefect.testing.utilities import prefect_test_harness

    from siaga.flows import compile_runbook
    from siaga.integrations import default_registry
    from siaga.runbook import parse_roster, parse_runbook

    flow = compile_runbook(parse_runbook(RUNBOOK, default_registry(), roster=parse_roster(ROSTER)))
    with prefect_test_harness(server_startup_timeout=120):
        async def go() -> list[float]:
            run = asyncio.create_task(flow(requested_by="bench", return_state=True))
            while not (run_ids := _runs(home)):
                await asyncio.sleep(0.05)
            latencies = await asyncio.to_thread(drive, home, run_ids[0], f"sqlite:///{home / 'siaga.db'}", lambda: True)
            await run
            return latencies

        return asyncio.run(go())


def _runs(home: Path) -> list[str]:
    from siaga.integrations.outbox import read_outbox

    return [m["run_id"] for m in read_outbox(home) if m["to"] == "person:citra"]


def show(name: str, latencies: list[float]) -> None:
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"  {name:<38} median {statistics.median(latencies) * 1000:5.0f} ms  p95 {p95 * 1000:5.0f} ms  "
          f"max {max(latencies) * 1000:5.0f} ms")
    print(f"    each: {' '.join(f'{x * 1000:.0f}' for x in latencies)}")


if __name__ == "__main__":
    print(f"vote submitted -> gated step running, {GATES} gates each, {os.cpu_count()} cores")
    show("siaga up, run suspended (no process)", on_stack())
    if "--stack-only" not in sys.argv:
        show("--local, run holding its process", held())
