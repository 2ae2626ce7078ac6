"""Alert to action: from an alert webhook to the runbook's first step running, on three paths.

1. Siaga: an Alertmanager webhook POSTed to the receiver of `siaga up`, which opens the incident,
   creates the run and starts it in a process forked from its warm forkserver.
2. Prefect `serve()`: the same flow served by ``flow.serve()`` (polling every second); the run is
   created through the API, as a home-made receiver would.
3. Prefect process worker: the same flow deployed to a process work pool and run by
   ``prefect worker start --type process`` (polling every second), the run created the same way.

The clock starts just before the webhook is sent (Siaga) or the run is created (Prefect paths), and
stops when the runbook's first step, an ``http.request``, reaches a local HTTP server. Runs go one
at a time; each path gets one unmeasured warm-up run. Prints p50/p95 per path and the ratios
against the targets (Siaga p50 <= 0.5 s, p95 <= 1 s, >= 3x faster than serve(), >= 5x than a worker).

    python benchmarks/alert_to_action.py [--count 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from siaga.flows.server import free_port

RUNBOOK = "bench-alert"
TOKEN = "bench-token"
POOL = "siaga-bench-process"
FINAL = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]

RUNBOOK_YAML = """
runbook: bench-alert
title: Alert-to-action benchmark
severity: sev2
roles: {{ops: [eko]}}
inputs:
  key: {{type: string, default: none}}
triggers:
  - source: alertmanager
    match: {{alertname: BenchAlert}}
    group_by: [key]
    inputs: {{key: "{{{{ alert.labels.key }}}}"}}
steps:
  - id: first
    action: http.request
    with: {{url: "{url}", json: {{key: "{{{{ inputs.key }}}}"}}}}
"""


class Hits:
    """The arrival time of each key's first call, from the runbook's first step."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.changed = threading.Condition()

    def record(self, key: str) -> None:
        now = time.time()
        with self.changed:
            self.seen.setdefault(key, now)
            self.changed.notify_all()

    def wait(self, key: str, timeout: float = 60) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: key in self.seen, timeout):
                raise TimeoutError(f"the first step of run {key} did not run within {timeout} s")
            return self.seen[key]


def serve_hits(hits: Hits) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hits.record(json.loads(body)["key"])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def alert(key: str) -> dict[str, Any]:
    return {
        "version": "4", "groupKey": f"bench:{key}", "status": "firing", "receiver": "siaga",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
        "alerts": [{
            "status": "firing", "labels": {"alertname": "BenchAlert", "key": key}, "annotations": {},
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
            "fingerprint": uuid.uuid4().hex[:16],
        }],
    }


class Bench:
    def __init__(self, work: Path, count: int) -> None:
        self.work, self.count = work, count
        self.hits = Hits()
        self.hit_server = serve_hits(self.hits)
        self.processes: list[subprocess.Popen[bytes]] = []
        self._deployments: dict[str, str] = {}
        folder = work / "runbooks"
        folder.mkdir()
        url = f"http://127.0.0.1:{self.hit_server.server_port}/hit"
        (folder / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML.format(url=url))
        self.port, self.receiver_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}
        self.env = {**base, "SIAGA_HOME": str(work / "home"), "SIAGA_RUNBOOKS": str(folder)}
        self.client_env = {**self.env, "PREFECT_API_URL": self.api}

    def start(self, name: str, command: list[str], env: dict[str, str], ready: Callable[[str], bool]) -> None:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.work)
        self.processes.append(process)
        deadline = time.monotonic() + 180
        while not ready(log.read_text(errors="replace")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(2)  # Ctrl-C: siaga up stops its Prefect server too
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.hit_server.shutdown()

    def wait_idle(self) -> None:
        """Wait until no run of the benchmark's flow is unfinished, so runs never overlap."""
        query = {"flows": {"name": {"any_": [RUNBOOK]}}, "flow_runs": {"state": {"type": {"not_any_": FINAL}}}}
        deadline = time.monotonic() + 120
        while httpx.post(f"{self.api}/flow_runs/count", json=query, timeout=10).json():
            if time.monotonic() > deadline:
                raise RuntimeError("a benchmark run did not finish within 120 s")
            time.sleep(0.1)

    def measure(self, name: str, trigger: Callable[[str], float]) -> list[float]:
        figures = []
        for i in range(self.count + 1):
            key = f"{name}-{i}-{uuid.uuid4().hex[:6]}"
            started = trigger(key)
            reached = self.hits.wait(key)
            if i:  # the first run warms the path up
                figures.append(reached - started)
            self.wait_idle()
            time.sleep(0.2)
        return figures

    # the three paths

    def up(self) -> None:
        env = {**self.env, "SIAGA_ALERTMANAGER_TOKEN": TOKEN}
        command = [sys.executable, "-m", "siaga.cli", "up", "--port", str(self.port),
                   "--receiver-port", str(self.receiver_port), "--runbooks", self.env["SIAGA_RUNBOOKS"]]
        self.start("siaga-up", command, env, lambda text: "Siaga is up" in text)

    def siaga(self, key: str) -> float:
        started = time.time()
        response = httpx.post(
            f"http://127.0.0.1:{self.receiver_port}/hooks/alertmanager",
            json=alert(key), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10,
        )
        assert response.status_code == 202, response.text
        return started

    def create_run(self, deployment: str, key: str) -> float:
        """Create a run of `deployment` through the API, as a hand-built receiver would; a key of
        its own, since Prefect keeps idempotency keys per flow, not per deployment. The clock
        starts at the attempt that succeeds (SQLite may answer 503 "database is locked")."""
        deployment_id = self.deployment_id(deployment)
        for _ in range(20):
            started = time.time()
            response = httpx.post(
                f"{self.api}/deployments/{deployment_id}/create_flow_run",
                json={"parameters": {"key": key}, "idempotency_key": key}, timeout=10,
            )
            if response.status_code != 503:
                break
            time.sleep(0.2)
        assert response.status_code in (200, 201), response.text
        return started

    def deployment_id(self, name: str) -> str:
        if name not in self._deployments:
            response = httpx.get(f"{self.api}/deployments/name/{RUNBOOK}/{name}", timeout=10)
            response.raise_for_status()
            self._deployments[name] = response.json()["id"]
        return self._deployments[name]

    def serve(self) -> None:
        env = {**self.client_env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        code = (
            "from prefect import serve\n"
            "from prefect.deployments.runner import EntrypointType\n"
            "from siaga.flows.library import bench_alert\n"
            "serve(bench_alert.to_deployment(name='bench-serve', entrypoint_type=EntrypointType.MODULE_PATH))\n"
        )
        self.start("serve", [sys.executable, "-c", code], env, lambda _: self.deployed("bench-serve"))
        time.sleep(2)  # the runner polls once it has registered the deployment

    def worker(self) -> None:
        prefect = [sys.executable, "-m", "prefect"]
        subprocess.run([*prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"],
                       env=self.client_env, check=True, capture_output=True, cwd=self.work)
        code = (
            "from prefect.deployments.runner import EntrypointType\n"
            "from siaga.flows.library import bench_alert\n"
            f"bench_alert.to_deployment(name='bench-worker', work_pool_name='{POOL}',"
            " entrypoint_type=EntrypointType.MODULE_PATH).apply()\n"
        )
        subprocess.run([sys.executable, "-c", code], env=self.client_env, check=True, capture_output=True, cwd=self.work)
        env = {**self.client_env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        command = [*prefect, "worker", "start", "--pool", POOL, "--type", "process"]
        self.start("worker", command, env, lambda text: "started!" in text or "Worker" in text and "started" in text)

    def deployed(self, name: str) -> bool:
        return httpx.get(f"{self.api}/deployments/name/{RUNBOOK}/{name}", timeout=10).status_code == 200


def summary(name: str, figures: list[float]) -> dict[str, float]:
    ordered = sorted(figures)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    row = {"p50": statistics.median(ordered), "p95": p95, "mean": statistics.fmean(ordered), "max": ordered[-1]}
    print(f"{name:<24} p50 {row['p50']:6.3f} s   p95 {row['p95']:6.3f} s   mean {row['mean']:6.3f} s   max {row['max']:6.3f} s")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="measured runs per path (default 50)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data in the work folder")
    parser.add_argument("--only-siaga", action="store_true", help="measure Siaga's path alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="siaga-bench-"))
    bench = Bench(work, args.count)
    try:
        bench.up()
        fast = bench.measure("siaga", bench.siaga)
        if args.only_siaga:
            served = worked = fast
        else:
            bench.serve()
            served = bench.measure("serve", lambda key: bench.create_run("bench-serve", key))
            bench.worker()
            worked = bench.measure("worker", lambda key: bench.create_run("bench-worker", key))
    finally:
        bench.stop()
        if args.keep or sys.exc_info()[0]:
            print(f"logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nwebhook/run created -> first step running, {args.count} runs per path, one at a time")
    siaga = summary("siaga up (warm fork)", fast)
    serve = summary("Prefect serve()", served)
    worker = summary("Prefect process worker", worked)
    print()
    checks = [
        (f"siaga p50 {siaga['p50']:.3f} s <= 0.5 s", siaga["p50"] <= 0.5),
        (f"siaga p95 {siaga['p95']:.3f} s <= 1.0 s", siaga["p95"] <= 1.0),
        (f"serve() p50 / siaga p50 = {serve['p50'] / siaga['p50']:.1f}x >= 3x", serve["p50"] / siaga["p50"] >= 3),
        (f"worker p50 / siaga p50 = {worker['p50'] / siaga['p50']:.1f}x >= 5x", worker["p50"] / siaga["p50"] >= 5),
    ]
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'MISS'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
