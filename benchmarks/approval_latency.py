"""Approval latency: from a valid approval submitted through Prefect's API (as the UI's Resume
dialog and `siaga approve` submit it) to the gated step starting. One run with 20 gated steps,
each approved by one person with the code they were sent; prints median and p95 (target p95 <= 1 s).
    python benchmarks/approval_latency.py
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

folder = Path(tempfile.mkdtemp(prefix="siaga-approval-bench-"))
os.environ["SIAGA_HOME"] = str(folder)
os.environ["PREFECT_HOME"] = str(folder / "prefect")

from siaga.home import prepare_prefect_environment  # noqa: E402

prepare_prefect_environment()

from prefect import get_client  # noqa: E402
from prefect.client.schemas.objects import StateType  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from siaga.flows import compile_runbook  # noqa: E402
from siaga.flows.gates import POLL_SECONDS  # noqa: E402
from siaga.integrations import default_registry  # noqa: E402
from siaga.integrations.outbox import read_outbox  # noqa: E402
from siaga.runbook import parse_roster, parse_runbook  # noqa: E402

GATES = 20
ROSTER = "people:\n  citra: {name: Citra, roles: [finance]}\n"
STEP = """
  - id: gated-{n}
    action: outbox.send
    with: {{to: finance-desk, message: "step {n}"}}
    approval: {{from: [finance], timeout: 30m}}"""
RUNBOOK = "runbook: latency\ntitle: Latency\nseverity: sev3\nroles: {finance: [citra]}\nsteps:" + "".join(
    STEP.format(n=n) for n in range(GATES)
)


async def drive(run: asyncio.Task[object]) -> list[float]:
    latencies: list[float] = []
    async with get_client() as client:
        key = None
        for n in range(GATES):
            while True:  # the next gate's form is up
                runs = await client.read_flow_runs()
                paused = [r for r in runs if r.state and r.state.type is StateType.PAUSED
                          and r.state.state_details.pause_key != key]
                if paused:
                    break
                await asyncio.sleep(0.05)
            flow_run = paused[0]
            key = flow_run.state.state_details.pause_key
            [code] = [re.search(r"code: (\d{8})", m["message"]).group(1) for m in read_outbox(folder)  # type: ignore[union-attr]
                      if m["to"] == "person:citra" and f"step `gated-{n}`" in m["message"]]
            submitted = time.time()
            await client.resume_flow_run(flow_run.id, run_input={"decision": "approve", "approver": "citra", "code": code})
            while not (done := [m for m in read_outbox(folder) if m["to"] == "finance-desk" and m["message"] == f"step {n}"]):
                await asyncio.sleep(0.01)
            latencies.append(datetime.fromisoformat(done[0]["at"]).timestamp() - submitted)
    await run
    return latencies


async def main() -> None:
    os.environ["SIAGA_ROSTER"] = str(folder / "roster.yaml")
    (folder / "roster.yaml").write_text(ROSTER)
    flow = compile_runbook(parse_runbook(RUNBOOK, default_registry(), roster=parse_roster(ROSTER)))
    run = asyncio.create_task(flow(return_state=True))
    latencies = await drive(run)
    median, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
    print(f"approval -> gated step started over {GATES} gates (gate poll {POLL_SECONDS:.2f} s)")
    print(f"  median {median * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"  target p95 <= 1000 ms: {'met' if p95 <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    with prefect_test_harness(server_startup_timeout=120):
        asyncio.run(main())
