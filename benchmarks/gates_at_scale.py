"""Gates at scale on the embedded default: 50 runs each waiting at 2 gates on `siaga up`.

Prints, in one run:
- the stack's total RSS (siaga up, its Prefect server, their children) idle, and while the 50
  runs wait at their 100 gates (target: under 5 MB more per waiting gate);
- the time a probe run takes from its creation to its first step on the idle stack, and again
  while the 50 runs wait (target: within 1.5x of idle);
- the time from submitting all 100 decisions (as `siaga approve` does, to the ledger) to every
  run finished;
- side by side, the alternative: HELD runs that hold their process while they wait (a flow run
  in its own process with no deployment to come back through, as `--local` runs), and their RSS
  per waiting gate.

    python benchmarks/gates_at_scale.py [RUNS]
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from siaga.flows.server import free_port

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 50
HELD = 10
HOLDER = """
import asyncio, sys
from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from siaga.runbook import parse_roster, parse_runbook
book = parse_runbook(open(sys.argv[1]).read(), default_registry(), roster=parse_roster(open(sys.argv[2]).read()))
asyncio.run(compile_runbook(book)(requested_by="bench", return_state=True))
"""
ROSTER = """people:
  citra: {name: Citra, roles: [finance]}
  eko: {name: Eko, roles: [ops]}
"""
GATED = """runbook: two-gates
title: Two decisions
severity: sev2
roles: {finance: [citra], ops: [eko]}
steps:
  - id: freeze
    action: outbox.send
    after: []
    with: {to: desk, message: "freeze {{ run.id }}"}
    approval: {from: [finance], timeout: 2h}
  - id: failover
    action: outbox.send
    after: []
    with: {to: desk, message: "failover {{ run.id }}"}
    approval: {from: [ops], timeout: 2h}
"""
PROBE = """runbook: probe
title: A run with no gate
severity: sev3
steps:
  - id: first
    action: outbox.send
    with: {to: probe, message: "first step {{ run.id }}"}
"""


def tree_rss_mb(root: int) -> float:
    """The summed RSS of `root` and every process below it."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid, parent = int(proc.name), int(fields["PPid"].strip())
        children.setdefault(parent, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 1024


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="siaga-gates-at-scale-"))
    folder = home / "runbooks"
    folder.mkdir()
    (folder / "roster.yaml").write_text(ROSTER)
    (folder / "two-gates.yaml").write_text(GATED)
    (folder / "probe.yaml").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))} | {"SIAGA_HOME": str(home)}
    port = free_port()
    log = (home / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--no-receiver", "--runbooks", str(folder)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    os.environ["SIAGA_HOME"] = str(home)
    from siaga.approvals.records import GateRecords
    from siaga.approvals.runs import RunRecords
    from siaga.approvals.seal import ledger_key
    from siaga.integrations.outbox import read_outbox
    from siaga.settings import Settings
    from siaga.store import engine

    try:
        wait(lambda: "Siaga is up" in (home / "up.log").read_text(), 180)
        http = httpx.Client(base_url=api, timeout=60)
        deployments = {name: http.get(f"/deployments/name/{name}/siaga").json()["id"] for name in ("two-gates", "probe")}

        def create(name: str, **parameters: object) -> str:
            for _ in range(20):  # Prefect on SQLite answers 503 while its database is locked
                created = http.post(f"/deployments/{deployments[name]}/create_flow_run", json={"parameters": parameters})
                if created.status_code == 201:
                    return str(created.json()["id"])
                time.sleep(1)
            raise RuntimeError(f"could not create a run: {created.status_code} {created.text}")

        def probe() -> float:
            run_id = create("probe")
            created = time.time()
            wait(lambda: any(m["run_id"] == run_id for m in read_outbox(home)), 120)
            [entry] = [m for m in read_outbox(home) if m["run_id"] == run_id]
            return datetime.fromisoformat(entry["at"]).timestamp() - created

        probe()  # warm: the first run imports and migrates
        time.sleep(3)
        idle_rss = tree_rss_mb(up.pid)
        idle = [probe() for _ in range(3)]

        runs = [create("two-gates", requested_by="bench") for _ in range(RUNS)]
        store = RunRecords(engine(f"sqlite:///{home / 'siaga.db'}"))
        wait(lambda: all((r := store.get(i)) is not None and r.state == "waiting" for i in runs), 900)
        time.sleep(5)  # the last runs' processes exit after suspending
        waiting_rss = tree_rss_mb(up.pid)
        loaded = [probe() for _ in range(3)]

        records = GateRecords(engine(f"sqlite:///{home / 'siaga.db'}"), ledger_key(home, Settings.from_environ(os.environ)))
        codes = approve_codes(home)
        submitted = time.time()
        for run_id in runs:
            for step, person in (("freeze", "citra"), ("failover", "eko")):
                records.submit(f"{run_id}:{step}", person, "approve", codes[(run_id, step)], channel="cli")
        decided = time.time() - submitted
        wait(lambda: all(http.get(f"/flow_runs/{i}").json()["state"]["type"] == "COMPLETED" for i in runs), 1800)
        finished = time.time() - submitted

        held_rss = holding(home, folder, api, env, records, store)

        gates = 2 * RUNS
        print(f"{RUNS} runs waiting at {gates} gates on siaga up (Prefect server on SQLite), {os.cpu_count()} cores")
        print(f"  stack RSS idle           {idle_rss:8.0f} MB")
        print(f"  stack RSS while waiting  {waiting_rss:8.0f} MB  (+{waiting_rss - idle_rss:.0f} MB, "
              f"{(waiting_rss - idle_rss) / gates:.2f} MB per waiting gate; target < 5)")
        print(f"  probe run -> first step  idle {statistics.median(idle):.2f} s, while {RUNS} runs wait "
              f"{statistics.median(loaded):.2f} s  ({statistics.median(loaded) / statistics.median(idle):.2f}x; target <= 1.5x)"
              f"  [medians of 3: idle {', '.join(f'{x:.2f}' for x in idle)}; loaded {', '.join(f'{x:.2f}' for x in loaded)}]")
        print(f"  {gates} decisions submitted in {decided:.1f} s; every run finished {finished:.1f} s after the first")
        print(f"  the alternative, {HELD} runs holding their process while they wait: {held_rss:.0f} MB, "
              f"{held_rss / (2 * HELD):.1f} MB per waiting gate")
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=120)


def holding(home: Path, folder: Path, api: str, env: dict[str, str], records: object, store: object) -> float:
    """Start HELD runs that hold their process at their gates; their RSS once all wait, then approve them."""
    holders = [
        subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / "two-gates.yaml"), str(folder / "roster.yaml")],
                         env=env | {"PREFECT_API_URL": api, "SIAGA_ROSTER": str(folder / "roster.yaml")},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(HELD)
    ]
    pids = {p.pid for p in holders}

    def parked() -> list[str]:
        waiting = [r for r in store.find("running") if r.form_key and r.requester == "bench"]  # type: ignore[attr-defined]
        return [r.run_id for r in waiting]

    wait(lambda: len(parked()) >= HELD, 600)
    time.sleep(3)
    rss = sum(tree_rss_mb(pid) for pid in pids)
    codes = approve_codes(home)
    for run_id in parked():
        for step, person in (("freeze", "citra"), ("failover", "eko")):
            if (run_id, step) in codes:
                records.submit(f"{run_id}:{step}", person, "approve", codes[(run_id, step)], channel="cli")  # type: ignore[attr-defined]
    for process in holders:
        process.wait(timeout=600)
    return rss


def approve_codes(home: Path) -> dict[tuple[str, str], str]:
    import re

    from siaga.integrations.outbox import read_outbox

    codes = {}
    for entry in read_outbox(home):
        found = re.search(r"step `(\S+)`.*?To APPROVE, your one-time code: (\d{8})", entry["message"], re.S)
        run = re.search(r"siaga approve (\S+) ", entry["message"])
        if found and run:
            codes[(run.group(1), found.group(1))] = found.group(2)
    return codes


def wait(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
