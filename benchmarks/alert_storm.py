"""An alert storm against a real receiver: 10,000 alerts in Alertmanager webhooks of 100, over 500
incident groups, posted by 32 concurrent clients (httpx AsyncClient) to `siaga receiver` (its own
process, the default SQLite store) with a Prefect server of its own (its own process, SQLite) that
serves one deployment per runbook; no runner, so the 500 runs are created and stay scheduled.

Then the same load against a bare uvicorn app answering 202 (the ceiling on this box).

Prints: the HTTP accept rate and p50/p99 request latency (receiver and ceiling); the end-to-end
rate (until all 10,000 alerts are recorded and linked to their incident, read from the store); the
time until the 500 runs are created (one Prefect API call each, one at a time: on its SQLite
default the Prefect server loses concurrent run creations to "database is locked"); incidents opened, alerts stored (counted in the store), flow runs created (counted in
the Prefect API). Pass/fail against the targets: >= 2,000 alerts/s end to end, 500 incidents, 0
alerts lost, 500 runs.

    python benchmarks/alert_storm.py [--alerts 10000] [--batch 100] [--groups 500] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
TOKEN = "storm-bench-token"
RUNBOOK = "storm-bench"
RUNBOOK_YAML = f"""
runbook: {RUNBOOK}
title: Alert storm benchmark
severity: sev3
roles: {{ops: [eko]}}
inputs:
  group: {{type: string, default: none}}
triggers:
  - source: alertmanager
    match: {{alertname: StormBench}}
    group_by: [group]
    inputs: {{group: "{{{{ alert.labels.group }}}}"}}
steps:
  - id: hello
    action: note
    with: {{text: "storm in {{{{ inputs.group }}}}"}}
"""
TARGET_RATE = 2000.0


async def ceiling(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bare ASGI app: read the body, answer 202 (what any receiver must at least do)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"accepted": 100}'})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batches(total: int, size: int, groups: int, run: str) -> list[dict[str, Any]]:
    """Alertmanager webhook bodies: `total` distinct alerts, `size` per body, spread over `groups`."""
    bodies = []
    for start in range(0, total, size):
        alerts = [
            {
                "status": "firing",
                "labels": {"alertname": "StormBench", "group": f"{run}-g{n % groups}", "instance": f"i-{n}"},
                "annotations": {"summary": "storm"},
                "startsAt": "2026-11-24T03:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": f"{run}-fp-{n}",
            }
            for n in range(start, min(start + size, total))
        ]
        bodies.append({"version": "4", "status": "firing", "receiver": "siaga", "groupKey": "{}:{}", "truncatedAlerts": 0,
                       "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "alerts": alerts})
    return bodies


async def storm(url: str, bodies: list[dict[str, Any]], concurrency: int) -> tuple[float, list[float], list[int]]:
    """Post every body with `concurrency` clients at once; return wall time, latencies, statuses."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    statuses: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                began = time.perf_counter()
                answer = await client.post(url, json=body)
                latencies.append(time.perf_counter() - began)
                statuses.append(answer.status_code)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, latencies, statuses


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path, ready: str) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in its own group, waited for until `ready` (a URL) answers; stopped after."""
    with log.open("w") as out:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if child.poll() is not None:
                raise SystemExit(f"{args[:4]} exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready, timeout=2).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{ready} did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    bodies = batches(options.alerts, options.batch, options.groups, "storm")

    with tempfile.TemporaryDirectory(prefix="siaga-storm-") as scratch:
        home = Path(scratch)
        (home / "runbooks").mkdir()
        (home / "runbooks" / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}
        base |= {"SIAGA_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        prefect_port, receiver_port, ceiling_port = free_port(), free_port(), free_port()
        api = f"http://127.0.0.1:{prefect_port}/api"
        prefect = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
        receiver_env = {**base, "PREFECT_API_URL": api, "SIAGA_ALERTMANAGER_TOKEN": TOKEN, "SIAGA_RUNBOOKS": str(home / "runbooks")}
        receiver = [sys.executable, "-m", "siaga.cli", "receiver", "--port", str(receiver_port)]
        bare = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent), "--port", str(ceiling_port),
                "--log-level", "warning", "--no-access-log", "alert_storm:ceiling"]

        with process(bare, base, home / "ceiling.log", f"http://127.0.0.1:{ceiling_port}/"):
            c_wall, c_lat, c_status = asyncio.run(storm(f"http://127.0.0.1:{ceiling_port}/hooks/alertmanager", bodies, options.concurrency))

        with process(prefect, base, home / "prefect.log", f"{api}/health"):
            flow_id = httpx.post(f"{api}/flows/", json={"name": RUNBOOK}).json()["id"]
            httpx.post(f"{api}/deployments/", json={"name": "siaga", "flow_id": flow_id}).raise_for_status()
            url = f"http://127.0.0.1:{receiver_port}"
            with process(receiver, receiver_env, home / "receiver.log", f"{url}/healthz"):
                began = time.perf_counter()
                wall, latencies, statuses = asyncio.run(storm(f"{url}/hooks/alertmanager", bodies, options.concurrency))
                while _linked(home) < options.alerts and time.perf_counter() - began < 600:
                    time.sleep(0.02)
                recorded = time.perf_counter() - began
                runs_done = _wait_runs(api, flow_id, options.groups, timeout=600)
                runs_at = time.perf_counter() - began
                runs = httpx.post(f"{api}/flow_runs/count", json={"flows": {"id": {"any_": [flow_id]}}}).json()
            with contextlib.closing(sqlite3.connect(home / "siaga.db")) as db:
                stored = db.execute("SELECT count(*) FROM alerts").fetchone()[0]
                opened = db.execute("SELECT count(*) FROM incidents").fetchone()[0]
                linked = db.execute("SELECT count(*) FROM incident_alerts").fetchone()[0]

    n = options.alerts
    accepted = sum(1 for s in statuses if s == 202)
    rate = n / recorded
    print(f"alert storm: {n} alerts in {len(bodies)} Alertmanager webhooks of {options.batch}, {options.groups} groups, "
          f"{options.concurrency} concurrent clients")
    print(f"ceiling (bare uvicorn, 202): {n / c_wall:8.0f} alerts/s accepted   p50 {percentile(c_lat, .5) * 1000:6.1f} ms  "
          f"p99 {percentile(c_lat, .99) * 1000:6.1f} ms  ({sum(s == 202 for s in c_status)}/{len(c_status)} answered 202)")
    print(f"receiver, HTTP:              {n / wall:8.0f} alerts/s accepted   p50 {percentile(latencies, .5) * 1000:6.1f} ms  "
          f"p99 {percentile(latencies, .99) * 1000:6.1f} ms  ({accepted}/{len(statuses)} answered 202)")
    print(f"receiver, end to end:        {rate:8.0f} alerts/s recorded and routed ({recorded:.2f} s)   "
          f"target >= {TARGET_RATE:.0f}: {verdict(rate >= TARGET_RATE)}")
    print(f"runs created:                {runs} in {runs_at:.2f} s{'' if runs_done else ' (timed out)'}   "
          f"target {options.groups}: {verdict(runs == options.groups)}")
    print(f"incidents opened:            {opened}   target {options.groups}: {verdict(opened == options.groups)}")
    print(f"alerts stored:               {stored} (linked to incidents: {linked}), lost: {n - stored}   "
          f"target 0 lost: {verdict(stored == n and linked == n)}")


def _linked(home: Path) -> int:
    """Alerts recorded and routed into their incident so far (read from the store, as it fills)."""
    try:
        with contextlib.closing(sqlite3.connect(home / "siaga.db", timeout=5)) as db:
            return db.execute("SELECT count(*) FROM incident_alerts").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _wait_runs(api: str, flow_id: str, expected: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = httpx.post(f"{api}/flow_runs/count", json={"flows": {"id": {"any_": [flow_id]}}}).json()
        if count >= expected:
            return True
        time.sleep(0.2)
    return False


if __name__ == "__main__":
    main()
