"""Siaga on Prefect's distributed deployment next to the embedded default, on the same box, in one run.

The same burst goes to each: `--count` (500) distinct incidents' Alertmanager webhooks, 32 at a
time, each opening an incident whose runbook's first step is an ``http.request`` to a local
server.

1. cluster: the topology of `cluster/up` (PostgreSQL, Redis, two Prefect API servers and their
   services behind haproxy, two Siaga nodes behind haproxy, two live workers), the alerts sent to
   the receivers' load balancer;
2. embedded: `siaga up` (Prefect on SQLite, the receiver, the fast lane), the alerts sent to its
   receiver.

3. creation: the cluster with no worker started, so that run creation alone is measured, as when
   the workers run on other machines (on one box they take most of the cores: a run costs about
   1.7 CPU-seconds in all, 0.7 s of it in the worker's run process).

Figures per path: runs created per second (from the first webhook until the store notes a run for
every incident), the time until every first step ran, and alert-to-first-step p50/p95 (each
webhook's send to its runbook's first step reaching the local server). Targets on the cluster: the
500 runs created in under 30 s, first step p95 under 2 s.

    python benchmarks/cluster.py [--count 500] [--only cluster|embedded]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from siaga.flows.server import free_port

HERE = Path(__file__).resolve().parent  # the repository's `cluster` package first, this script's folder last
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != HERE), str(HERE)]

from alert_to_action import RUNBOOK, RUNBOOK_YAML, TOKEN, Hits, alert, serve_hits  # noqa: E402

from cluster.topology import Topology  # noqa: E402

def burst(receiver: str, store_url: str, hits: Hits, name: str, count: int, timeout: float = 1200,
          steps: bool = True) -> dict[str, Any]:
    """Send `count` incidents' webhooks to `receiver`; wait for every run (and, with `steps`, every
    first step)."""
    keys = [f"{name}-{n:04d}" for n in range(count)]
    sent: dict[str, float] = {}
    store = create_engine(store_url)
    counted = text("SELECT count(*) FROM incidents WHERE flow_run_id IS NOT NULL AND runbook_id = :runbook "
                   "AND group_key LIKE :prefix")
    created_at: float | None = None

    def send(key: str) -> int:
        sent[key] = time.time()
        return client.post(f"{receiver}/hooks/alertmanager", json=alert(key),
                           headers={"Authorization": f"Bearer {TOKEN}"}).status_code

    started = time.time()
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, keys))
    accepted = time.time() - started
    if set(answers) != {202}:
        raise RuntimeError(f"{name}: answers {sorted(set(answers))}")
    deadline = started + timeout
    while time.time() < deadline:
        if created_at is None:
            with store.connect() as db:
                if db.execute(counted, {"runbook": RUNBOOK, "prefix": f"%{name}-%"}).scalar() >= count:
                    created_at = time.time()
        with hits.changed:
            done = sum(k in hits.seen for k in keys)
        if created_at is not None and (done == count or not steps):
            break
        time.sleep(0.25)
    store.dispose()
    with hits.changed:
        latencies = sorted(hits.seen[k] - sent[k] for k in keys if k in hits.seen)
        last = max((hits.seen[k] for k in keys if k in hits.seen), default=time.time())
    return {
        "accepted_s": accepted,
        "created_s": (created_at - started) if created_at else None,
        "runs_per_s": count / (created_at - started) if created_at else None,
        "all_first_steps_s": last - started if len(latencies) == count else None,
        "first_steps": len(latencies),
        "p50": statistics.median(latencies) if latencies else None,
        "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
    }


def cluster_path(work: Path, runbooks: Path, hits: Hits, count: int, workers: bool = True) -> dict[str, Any]:
    name = "cluster" if workers else "creation"
    topology = Topology(work / name, runbooks, secrets={"SIAGA_ALERTMANAGER_TOKEN": TOKEN}, start_workers=workers,
                        echo=lambda line: print(f"  {line}", flush=True))
    topology.up()
    try:
        return burst(topology.receiver_url, topology.store_url, hits, name, count, steps=workers)
    finally:
        topology.down()


def creation_path(work: Path, runbooks: Path, hits: Hits, count: int) -> dict[str, Any]:
    """The cluster with its workers held back: run creation alone, as when the workers are on
    other machines and do not share these cores."""
    return cluster_path(work, runbooks, hits, count, workers=False)


def embedded_path(work: Path, runbooks: Path, hits: Hits, count: int) -> dict[str, Any]:
    home, port, receiver_port = work / "embedded", free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}
    env.update(SIAGA_HOME=str(home), SIAGA_RUNBOOKS=str(runbooks), SIAGA_ALERTMANAGER_TOKEN=TOKEN)
    home.mkdir()
    log = (work / "siaga-up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--receiver-port",
                           str(receiver_port), "--runbooks", str(runbooks)], env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Siaga is up" not in (work / "siaga-up.log").read_text(errors="replace"):
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("siaga up did not start: see " + str(work / "siaga-up.log"))
            time.sleep(0.3)
        return burst(f"http://127.0.0.1:{receiver_port}", f"sqlite:///{home / 'siaga.db'}", hits, "embedded", count)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--only", choices=["cluster", "creation", "embedded"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="siaga-bench-cluster-"))
    hits = Hits()
    server = serve_hits(hits)
    runbooks = work / "runbooks"
    runbooks.mkdir()
    (runbooks / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML.format(url=f"http://127.0.0.1:{server.server_port}/hit"))
    paths: dict[str, Callable[..., dict[str, Any]]] = {
        "cluster": cluster_path, "creation": creation_path, "embedded": embedded_path,
    }
    results = {}
    try:
        for name, path in paths.items():
            if args.only and name != args.only:
                continue
            print(f"{name}: {args.count} incidents...", flush=True)
            results[name] = path(work, runbooks, hits, args.count)
    finally:
        server.shutdown()
    print(f"\n{args.count} incidents, 32 concurrent senders, {os.cpu_count()} cores\n")
    rows = [("webhooks all answered 202", "accepted_s", "{:.1f} s"), ("runs created (all)", "created_s", "{:.1f} s"),
            ("runs created per second", "runs_per_s", "{:.1f}/s"), ("every first step ran", "all_first_steps_s", "{:.1f} s"),
            ("first steps seen", "first_steps", "{}"), ("alert to first step p50", "p50", "{:.2f} s"),
            ("alert to first step p95", "p95", "{:.2f} s")]
    names = list(results)
    print(f"| figure | {' | '.join(names)} |")
    print(f"| --- | {' | '.join('---' for _ in names)} |")
    for label, key, form in rows:
        cells = [form.format(results[n][key]) if results[n][key] is not None else "n/a" for n in names]
        print(f"| {label} | {' | '.join(cells)} |")
    if "cluster" in results:
        c = results["cluster"]
        print(f"\ntargets on the cluster: {args.count} runs created in under 30 s: "
              f"{'met' if c['created_s'] and c['created_s'] < 30 else 'missed'}; first step p95 under 2 s: "
              f"{'met' if c['p95'] and c['p95'] < 2 else 'missed'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
