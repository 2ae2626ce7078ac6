"""Alert storms against the receiver, in three parts (``--part``, default all):

**throughput**: 10,000 alerts in Alertmanager webhooks of 100, over 500 incident groups, posted by
32 concurrent clients (httpx AsyncClient) to `siaga receiver` (its own process, the default SQLite
store) with a Prefect server of its own (its own process, SQLite) that serves one deployment per
runbook; no runner, so the 500 runs are created and stay scheduled. Then the same load against a
bare uvicorn app answering 202 (the ceiling on this box). Prints: the HTTP accept rate and p50/p99
request latency (receiver and ceiling); the end-to-end rate (until all 10,000 alerts are recorded
and linked to their incident, read from the store); the time until the 500 runs are created (one
Prefect API call each, one at a time: on its SQLite default the Prefect server loses concurrent
run creations to "database is locked"); incidents opened, alerts stored (counted in the store),
flow runs created (counted in the Prefect API). Pass/fail against the targets: >= 2,000 alerts/s
end to end, 500 incidents, 0 alerts lost, 500 runs.

**counting**: a threshold trigger (``group_by: [topic]``) counting 500 / 1,000 / 2,000 / 10,000
mentions (4 per topic, none reaching its count of 5), in process, side by side: the rescan Siaga
had before issue 12 (each new alert reads every recent alert of its source and matches it again:
quadratic; only up to ``--rescan-max`` alerts, the rest projected from its quadratic fit) and
recording them today (`process_batch`: the whole recording path, threshold hits counted with an
index, in pieces of 250).

**fairness**: while 10,000 mentions on 2,500 topics stream into `siaga receiver` (signed generic
source ``social``, 100 webhooks of 100 posted by 8 clients; a threshold trigger ``group_by:
[topic]``), an Alertmanager alert is posted once a quarter of the storm was answered: its 202 and
its incident (read from ``GET /incidents``) are timed, next to the same alert sent to the idle
receiver first. Targets: 202 within 1 s and the incident within 2 s during the storm. On SQLite;
with ``--postgresql``, also on a PostgreSQL cluster of its own (Debian's binaries).

    python benchmarks/alert_storm.py [--part throughput|counting|fairness|all] [--alerts 10000]
        [--batch 100] [--groups 500] [--concurrency 32] [--rescan-max 2000] [--postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from siaga.flows.server import free_port

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
    parser.add_argument("--part", choices=["throughput", "counting", "fairness", "all"], default="all")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rescan-max", type=int, default=2_000, help="the largest storm the old rescan is run on")
    parser.add_argument("--postgresql", action="store_true", help="the fairness part on PostgreSQL too")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    if options.part in ("counting", "all"):
        counting(options.rescan_max)
    if options.part in ("fairness", "all"):
        fairness(options.postgresql)
    if options.part in ("throughput", "all"):
        throughput(options)


def throughput(options: argparse.Namespace) -> None:
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
            flow_id = _created(f"{api}/flows/", {"name": RUNBOOK})["id"]
            _created(f"{api}/deployments/", {"name": "siaga", "flow_id": flow_id})
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


def _created(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the Prefect API, again while its SQLite answers 503 under load."""
    for _ in range(20):
        answer = httpx.post(url, json=body, timeout=30)
        if answer.status_code != 503:
            answer.raise_for_status()
            return answer.json()
        time.sleep(0.5)
    answer.raise_for_status()
    raise AssertionError("unreachable")


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


MENTIONS_YAML = """
runbook: mentions
title: Many mentions of one topic
severity: sev3
roles: {comms: [gita]}
inputs:
  topic: {type: string, default: unknown}
triggers:
  - source: social
    group_by: [topic]
    inputs: {topic: "{{ alert.labels.topic }}"}
    threshold: {count: 5, within: 30m, match: {kind: mention}}
steps:
  - id: hello
    action: note
    with: {text: "mentions of {{ inputs.topic }}"}
"""
"""A threshold trigger counting mentions per topic (4 per topic in these storms: none opens)."""
GATEWAY_YAML = """
runbook: gateway
title: Gateway errors
severity: sev2
roles: {ops: [eko]}
inputs:
  region: {type: string, default: nowhere}
triggers:
  - source: alertmanager
    match: {alertname: GatewayErrors}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}"}
steps:
  - id: hello
    action: note
    with: {text: "gateway errors in {{ inputs.region }}"}
"""
SOCIAL_SECRET = "storm-bench-social-secret"


def mentions(total: int, topics: int, run: str) -> list[dict[str, Any]]:
    return [{"labels": {"kind": "mention", "topic": f"{run}-t{n % topics}", "sentiment": "negative"},
             "fingerprint": f"{run}-m{n}"} for n in range(total)]


# --- counting ---------------------------------------------------------------------------------


def rescan_counting(store: Any, runbook: Any, batch: list[Any], now: Any) -> float:
    """The threshold check Siaga had before issue 12, for the alternative's figure: in one
    transaction, each alert is inserted and every recent firing alert of its source is read back
    and matched again (`recording._recent`, as it was). Returns the seconds it took."""
    from datetime import timedelta

    from sqlalchemy import insert, select

    from siaga.incidents import Alert, AlertStatus, group_key, matches
    from siaga.store import alerts

    trigger = runbook.triggers[0]
    began = time.perf_counter()
    with store.begin() as connection:
        for alert in batch:
            connection.execute(insert(alerts).values(
                source=alert.source, fingerprint=alert.fingerprint, starts_at=None, episode="", status="firing",
                labels=dict(alert.labels), annotations={}, raw={}, received_at=now))
            rows = connection.execute(select(alerts.c.id, alerts.c.fingerprint, alerts.c.labels, alerts.c.received_at).where(
                alerts.c.source == trigger.source, alerts.c.status == "firing",
                alerts.c.received_at >= now - trigger.threshold.within - timedelta(seconds=1))).all()
            group = group_key(trigger, alert)
            sum(1 for _, fingerprint, labels, _ in rows
                if matches(trigger, candidate := Alert(source=trigger.source, fingerprint=fingerprint,
                                                       status=AlertStatus.FIRING, labels=labels))
                and group_key(trigger, candidate) == group)
    return time.perf_counter() - began


def counting(rescan_max: int) -> None:
    from datetime import UTC, datetime

    from siaga.incidents import Alert, AlertStatus
    from siaga.incidents.recording import process_batch
    from siaga.integrations import default_registry
    from siaga.runbook import parse_runbook
    from siaga.store import engine

    runbook = parse_runbook(MENTIONS_YAML, default_registry())
    now = datetime.now(UTC)
    print("threshold counting, in process (SQLite; 4 mentions per topic, `group_by: [topic]`):")
    print(f"{'alerts':>8}  {'rescan (before)':>24}  {'index (now, whole recording)':>30}  {'speed-up':>9}")
    fit: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="siaga-count-") as scratch:
        for n in (500, 1_000, 2_000, 10_000):
            batch = [Alert(source="social", fingerprint=f"c{n}-{i}", status=AlertStatus.FIRING,
                           labels={"kind": "mention", "topic": f"t{i % (n // 4)}"}) for i in range(n)]
            store = engine(f"sqlite:///{scratch}/new-{n}.db")
            began = time.perf_counter()
            process_batch(store, {runbook.id: runbook}, batch, now)
            new = time.perf_counter() - began
            if n <= rescan_max:
                old = rescan_counting(engine(f"sqlite:///{scratch}/old-{n}.db"), runbook, batch, now)
                fit.append((n, old))
                shown = f"{old:,.2f} s"
            else:  # quadratic: old(n) ~ a n^2 from the largest measured point
                largest, seconds = fit[-1]
                old = seconds * (n / largest) ** 2
                shown = f"~{old:,.0f} s (projected)"
            print(f"{n:>8,}  {shown:>24}  {new:>28.2f} s  {old / new:>8,.0f}x")


# --- fairness ---------------------------------------------------------------------------------


async def stream_with_probe(url: str, bodies: list[bytes], probe: Any) -> tuple[float, float, float, int]:
    """Post the storm with 8 clients; once a quarter was answered, post the probe. Returns the
    probe's 202 latency, the seconds until its incident is open, the storm's posting time, and how
    many storm posts were answered 202."""
    from datetime import UTC, datetime

    from siaga.alerts.signing import sign

    def signed_headers(secret: str, body: bytes) -> dict[str, str]:
        return sign("generic", "social", body, datetime.now(UTC), secret=secret)

    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    answered = 0
    quarter = asyncio.Event()
    async with httpx.AsyncClient(timeout=60) as client:

        async def worker() -> None:
            nonlocal answered
            while not queue.empty():
                body = queue.get_nowait()
                reply = await client.post(f"{url}/hooks/social", content=body, headers=signed_headers(SOCIAL_SECRET, body))
                answered += reply.status_code == 202
                if answered >= len(bodies) // 4:
                    quarter.set()

        began = time.perf_counter()
        posting = asyncio.gather(*(worker() for _ in range(8)))
        await quarter.wait()
        accepted, opened = await probe(client)
        await posting
        return accepted, opened, time.perf_counter() - began, answered


def probe_alertmanager(url: str, region: str) -> Any:
    async def probe(client: httpx.AsyncClient) -> tuple[float, float]:
        alert = {"status": "firing", "labels": {"alertname": "GatewayErrors", "region": region, "instance": "gw-1"},
                 "annotations": {}, "startsAt": "2026-11-24T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "", "fingerprint": f"probe-{region}"}
        body = {"version": "4", "status": "firing", "receiver": "siaga", "groupKey": "{}:{}", "truncatedAlerts": 0,
                "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "alerts": [alert]}
        began = time.perf_counter()
        reply = await client.post(f"{url}/hooks/alertmanager", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        accepted = time.perf_counter() - began
        assert reply.status_code == 202, reply.text
        while True:
            listed = (await client.get(f"{url}/incidents", params={"state": "open"})).json()
            if any(i["group_key"] == f'["{region}"]' for i in listed):
                return accepted, time.perf_counter() - began
            assert time.perf_counter() - began < 300, "the probe's incident never opened"
            await asyncio.sleep(0.01)
    return probe


def fairness_on(database: str, label: str) -> None:
    total, topics, size = 10_000, 2_500, 100
    with tempfile.TemporaryDirectory(prefix="siaga-fair-") as scratch:
        home = Path(scratch)
        (home / "runbooks").mkdir()
        (home / "runbooks" / "gateway.yaml").write_text(GATEWAY_YAML)
        (home / "runbooks" / "mentions.yaml").write_text(MENTIONS_YAML)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}
        env |= {"SIAGA_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "SIAGA_ALERTMANAGER_TOKEN": TOKEN,
                "SIAGA_HOOK_SECRET_SOCIAL": SOCIAL_SECRET, "SIAGA_RUNBOOKS": str(home / "runbooks"),
                "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}  # no Prefect: the figure is the incident
        if database:
            env["SIAGA_DATABASE_URL"] = database
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        receiver = [sys.executable, "-m", "siaga.cli", "receiver", "--port", str(port)]
        storm = [json.dumps({"alerts": chunk}).encode() for chunk in
                 (mentions(total, topics, "storm")[i : i + size] for i in range(0, total, size))]
        with process(receiver, env, home / "receiver.log", f"{url}/healthz"):
            idle = asyncio.run(_idle(url))
            accepted, opened, posting, answered = asyncio.run(stream_with_probe(url, storm, probe_alertmanager(url, "stormy")))
            began = time.perf_counter()
            while httpx.get(f"{url}/healthz", timeout=30).json()["queued"]:  # every webhook recorded
                time.sleep(0.05)
            drained = time.perf_counter() - began + posting
    print(f"fairness on {label}: {total:,} mentions on {topics:,} topics in {len(storm)} signed webhooks ({answered} answered 202, "
          f"posted in {posting:.1f} s, recorded within {drained:.1f} s); an Alertmanager alert:")
    print(f"  idle receiver:      202 in {idle[0] * 1000:6.0f} ms   incident open in {idle[1] * 1000:6.0f} ms")
    print(f"  during the storm:   202 in {accepted * 1000:6.0f} ms   incident open in {opened * 1000:6.0f} ms   "
          f"targets 1,000 / 2,000 ms: {verdict(accepted <= 1 and opened <= 2)}")


async def _idle(url: str) -> tuple[float, float]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await probe_alertmanager(url, "calm")(client)


def fairness(postgresql: bool) -> None:
    fairness_on("", "SQLite")
    if postgresql:
        sys.path.insert(0, str(REPO))  # testkit's throwaway PostgreSQL cluster (Debian's binaries)
        from testkit.postgres import fresh_database, postgres_server

        with postgres_server() as server:
            fairness_on(fresh_database(server), "PostgreSQL")


if __name__ == "__main__":
    main()
