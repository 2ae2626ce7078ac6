"""Siaga's promises on Prefect's own distributed deployment: the topology of `cluster/up` started
once for the module (Debian's PostgreSQL, Redis and haproxy; two Prefect API servers and their
background services; two Siaga nodes behind the load balancer; two live workers and a drill
worker), alerts sent over HTTP as Alertmanager sends them, and a provider stand-in counting every
call the runbooks' steps make.

- 200 distinct incidents' alerts at once through the load balancer: 200 incidents, 200 runs, each
  first step once;
- the same batch to both receivers at once, again and again: one incident, one run;
- three votes for a quorum of two, at once, from two machines: decided once, the step once, the
  audit chain whole (`siaga audit verify`);
- the node holding the singletons' lease killed -9 in the middle of a stream of batches: every
  accepted alert gets its incident and its run (the other node takes the lease and records what the
  dead one accepted); a worker killed -9 in the middle of a step: the run still finishes, the
  stand-in counts the call once; a worker's host lost (the worker and the run's process killed -9)
  in the middle of a step: the run ends Crashed, the store and the audit trail say so and name the
  call of unknown outcome to settle, and the stand-in counted that one call;
- a drill lands only on the drill worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import text

from cluster.topology import POSTGRES_BIN, Topology, running
from siaga.store import engine

from ..conftest import missing
from ..support.gate_driver import ROSTER, code_for

pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(600)]

TOKEN = "cluster-test-token"

RUNBOOK = """
runbook: cluster-first
title: First step on the cluster
severity: sev2
roles: {ops: [eko, fajar]}
inputs:
  key: {type: string, default: none}
triggers:
  - source: alertmanager
    match: {alertname: ClusterAlert}
    group_by: [key]
    inputs: {key: "{{ alert.labels.key }}"}
steps:
  - id: first
    action: http.request
    with: {url: "URL/first", json: {key: "{{ inputs.key }}"}}
"""

GATED = """
runbook: cluster-gated
title: A gate decided from two machines
severity: sev2
roles: {ops: [eko, fajar], commander: [alice]}
chain_of_command: [ops, commander]
inputs:
  key: {type: string, default: none}
triggers:
  - source: alertmanager
    match: {alertname: ClusterGate}
    group_by: [key]
    inputs: {key: "{{ alert.labels.key }}"}
steps:
  - id: freeze
    action: http.request
    with: {url: "URL/freeze", json: {key: "{{ inputs.key }}"}}
    approval: {from: [ops, commander], quorum: 2, timeout: 30m, on_timeout: reject}
"""


class Provider:
    """The stand-in every step calls: counts each (path, key); a key starting with ``slow`` is
    answered after `SLOW` seconds (a step in flight long enough to kill its worker)."""

    SLOW = 4.0

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.first_at: dict[str, float] = {}
        self.changed = threading.Condition()

    def record(self, path: str, key: str) -> None:
        with self.changed:
            self.calls[(path, key)] += 1
            self.first_at.setdefault(key, time.time())
            self.changed.notify_all()

    def wait_for(self, path: str, keys: set[str], timeout: float, stalled: float | None = None) -> set[str]:
        """The keys of `keys` not yet called on `path` (empty: all came) after `timeout` seconds or,
        with `stalled`, once `stalled` seconds passed without a new one coming: a burst's runs come
        as fast as the box's cores allow, and the test asserts that every one comes, not how fast."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while missing := {k for k in keys if (path, k) not in self.calls}:
                left = deadline - time.monotonic()
                if left <= 0 or not self.changed.wait_for(
                    lambda: any((path, k) in self.calls for k in missing), min(left, stalled or left)
                ):
                    return missing
            return set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Provider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                key = str(body.get("key"))
                provider.record(self.path, key)
                if key.startswith("slow"):
                    time.sleep(Provider.SLOW)
                answer = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def batch(alertname: str, *keys: str, fingerprint: str | None = None) -> dict[str, Any]:
    """An Alertmanager webhook with one firing alert per key."""
    return {
        "version": "4", "groupKey": f"{alertname}:{keys[0]}", "status": "firing", "receiver": "siaga",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
        "alerts": [{
            "status": "firing", "labels": {"alertname": alertname, "key": key}, "annotations": {},
            "startsAt": "2026-12-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
            "fingerprint": fingerprint or f"fp-{key}",
        } for key in keys],
    }


def send(client: httpx.Client, base: str, payload: dict[str, Any]) -> int:
    try:
        return client.post(f"{base}/hooks/alertmanager", json=payload,
                           headers={"Authorization": f"Bearer {TOKEN}"}).status_code
    except httpx.TransportError:
        return 0


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with Provider() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, provider: Provider) -> Iterator[Topology]:
    if POSTGRES_BIN is None:
        missing("PostgreSQL server binaries", "apt-get install -y postgresql")
    for binary in ("redis-server", "haproxy"):
        if not any(Path(d, binary).exists() for d in ("/usr/bin", "/usr/sbin")):
            missing(binary, "apt-get install -y redis-server haproxy")
    pytest.importorskip("prefect_redis", reason="no prefect-redis: pip install 'siaga[cluster]'")
    folder = tmp_path_factory.mktemp("cluster")
    runbooks = folder / "runbooks"
    runbooks.mkdir()
    (runbooks / "first.yaml").write_text(RUNBOOK.replace("URL", provider.url))
    (runbooks / "gated.yaml").write_text(GATED.replace("URL", provider.url))
    (runbooks / "roster.yaml").write_text(ROSTER)
    topology = Topology(folder / "cluster", runbooks, secrets={"SIAGA_ALERTMANAGER_TOKEN": TOKEN},
                        drill_secrets={"SIAGA_SECRET_DRILL_SANDBOX": "drill-only"}, inbox_stale=10.0,
                        echo=lambda line: None)
    with running(topology):
        yield topology


@pytest.fixture(scope="module")
def store(cluster: Topology) -> Any:
    return engine(cluster.store_url)


async def count_runs(api: str, flow: str) -> int:
    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            return await client.count_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))


async def read_runs(api: str, ids: list[str]) -> dict[str, Any]:
    """The flow runs of `ids` (read 200 at a time, Prefect's page)."""
    found: dict[str, Any] = {}
    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            for start in range(0, len(ids), 200):
                chunk = [uuid.UUID(i) for i in ids[start:start + 200]]
                runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)),
                                                   limit=200)
                found.update({str(r.id): r for r in runs})
    return found


def incidents_of(store: Any, runbook: str) -> list[dict[str, Any]]:
    from siaga.incidents.views import list_incidents

    return [i for i in list_incidents(store, limit=10_000) if i["runbook_id"] == runbook]


def worker_running(cluster: Topology, run_id: str) -> str:
    """The live worker whose forkserver forked the run's process (Prefect's infrastructure pid):
    the one whose claim won, not one that also picked the run up and was turned away."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = asyncio.run(read_runs(cluster.prefect_api, [run_id]))[run_id]
        if run.infrastructure_pid:
            pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
            forkserver = _parent(pid)
            for name in ("live-1", "live-2"):
                part = cluster.parts[f"worker-{name}"].process
                if part is not None and forkserver is not None and _parent(forkserver) == part.pid:
                    return name
        time.sleep(0.2)
    raise AssertionError(f"no live worker runs {run_id}")


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


LOST: dict[str, str] = {}
"""The run whose worker host was lost (killed with its run), checked by the module's last test:
Prefect's zombie-run automation needs a minute of missing heartbeats, which the tests between
them give it."""


def test_a_worker_host_lost_mid_step_is_killed_with_its_run(cluster: Topology, provider: Provider, store: Any) -> None:
    with httpx.Client(timeout=30) as client:
        assert send(client, cluster.receiver_url, batch("ClusterAlert", "slow-lost")) == 202
    assert not provider.wait_for("/first", {"slow-lost"}, timeout=90)
    (incident,) = [i for i in incidents_of(store, "cluster-first") if i["inputs"]["key"] == "slow-lost"]
    worker = worker_running(cluster, incident["flow_run_id"])
    cluster.kill(f"worker-{worker}")  # the worker, its forkserver and the run's process: a lost host
    cluster.start(f"worker-{worker}")
    LOST.update(run=incident["flow_run_id"], incident=incident["id"])


@pytest.mark.timeout(1800)  # 200 runs on the cores the box has: about 1.7 CPU-seconds each (README)
def test_200_incidents_at_once_through_the_load_balancer(cluster: Topology, provider: Provider, store: Any) -> None:
    keys = [f"storm-{n:03d}" for n in range(200)]
    before = asyncio.run(count_runs(cluster.prefect_api, "cluster-first"))
    started = time.monotonic()
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda k: send(client, cluster.receiver_url, batch("ClusterAlert", k)), keys))
    assert Counter(answers) == {202: 200}
    missing_keys = provider.wait_for("/first", set(keys), timeout=1500, stalled=120)
    took = time.monotonic() - started
    assert not missing_keys, f"{len(missing_keys)} first steps never ran (after {took:.0f} s)"
    time.sleep(2)  # a duplicate run would call again by now
    assert all(provider.calls[("/first", k)] == 1 for k in keys), "a first step ran twice"
    incidents = [i for i in incidents_of(store, "cluster-first") if i["inputs"]["key"].startswith("storm-")]
    assert len(incidents) == 200 and len({i["inputs"]["key"] for i in incidents}) == 200
    run_ids = {i["flow_run_id"] for i in incidents}
    assert None not in run_ids and len(run_ids) == 200
    runs = asyncio.run(read_runs(cluster.prefect_api, sorted(run_ids)))
    assert sorted(r.parameters["key"] for r in runs.values()) == keys
    with store.connect() as db:  # the audit trail says so too: each incident opened once, its run started once
        started = Counter(dict(db.execute(text(
            "SELECT incident_id, count(*) FROM audit_records WHERE kind = 'incident.run_started' GROUP BY incident_id"
        )).all()))
    assert all(started[i["id"]] == 1 for i in incidents)
    assert asyncio.run(count_runs(cluster.prefect_api, "cluster-first")) == before + 200  # no other run
    print(f"200 incidents: every first step ran once within {took:.1f} s of the first webhook")


def test_the_same_batch_to_both_receivers_at_once_opens_one_incident_with_one_run(
    cluster: Topology, provider: Provider, store: Any
) -> None:
    keys = [f"twice-{n}" for n in range(5)]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
        for key in keys:
            payload = batch("ClusterAlert", key)
            targets = [cluster.receiver(1), cluster.receiver(2)] * 3
            assert set(pool.map(lambda base: send(client, base, payload), targets)) == {202}
    assert not provider.wait_for("/first", set(keys), timeout=120)
    time.sleep(2)
    run_ids = []
    for key in keys:
        assert provider.calls[("/first", key)] == 1
        (incident,) = [i for i in incidents_of(store, "cluster-first") if i["inputs"]["key"] == key]
        assert incident["alerts"] == 1 and incident["flow_run_id"]
        run_ids.append(incident["flow_run_id"])
    runs = asyncio.run(read_runs(cluster.prefect_api, run_ids))
    assert sorted(r.parameters["key"] for r in runs.values()) == sorted(keys)
    from siaga.audit import AuditTrail

    for incident_id in {i["id"] for i in incidents_of(store, "cluster-first") if i["inputs"]["key"] in keys}:
        kinds = [r.kind for r in AuditTrail(store).records(incident_id)]
        assert kinds.count("incident.opened") == 1 and kinds.count("incident.run_started") == 1, kinds


def test_votes_from_two_machines_at_once_decide_the_gate_once(cluster: Topology, provider: Provider, store: Any) -> None:
    from siaga.approvals.records import GateRecords, gate_id

    with httpx.Client(timeout=30) as client:
        assert send(client, cluster.receiver_url, batch("ClusterGate", "vote-1")) == 202
    deadline = time.monotonic() + 90
    run_id = None
    while time.monotonic() < deadline:
        found = [i for i in incidents_of(store, "cluster-gated") if i["inputs"]["key"] == "vote-1" and i["flow_run_id"]]
        run_id = found[0]["flow_run_id"] if found else None
        gate = GateRecords(store).get(gate_id(run_id, "freeze")) if run_id else None
        if gate is not None and gate.is_open and {"eko", "fajar", "alice"} <= GateRecords(store).holders_of_codes(gate.id):
            break
        time.sleep(0.3)
    else:
        pytest.fail("the gate did not open with its codes sent")
    homes = [cluster.folder / f"worker-live-{n}" for n in (1, 2)]

    def code(person: str) -> str:
        for home in homes:
            try:
                return code_for(home, person, run_id, "freeze")
            except AssertionError:
                continue
        raise AssertionError(f"no code for {person}")

    votes = [("eko", 1), ("fajar", 2), ("alice", 1)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}}
    commands = [
        subprocess.Popen([sys.executable, "-m", "siaga.cli", "approve", run_id, "freeze", "--as", person,
                          "--code", code(person)],
                         env={**env, **cluster.siaga_env(f"machine-{machine}")}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for person, machine in votes
    ]
    outputs = [c.communicate(timeout=60)[0] for c in commands]
    assert sum("counted" in o for o in outputs) >= 2, outputs
    assert sum("the gate is approved" in o for o in outputs) == 1, outputs  # one vote decided it
    assert not provider.wait_for("/freeze", {"vote-1"}, timeout=90), "the approved step did not run"
    time.sleep(2)
    assert provider.calls[("/freeze", "vote-1")] == 1
    gate = GateRecords(store).get(gate_id(run_id, "freeze"))
    assert gate is not None and gate.state == "approved" and len(gate.approvers or []) >= 2
    assert [e["kind"] for e in GateRecords(store).events(gate.id)].count("decided") == 1
    verify = subprocess.run([sys.executable, "-m", "siaga.cli", "audit", "verify"],
                            env={**env, **cluster.client_env()}, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_node_killed_mid_stream_loses_no_accepted_alert(cluster: Topology, provider: Provider, store: Any) -> None:
    """Kill -9 the node holding the singletons' lease while batches stream into it: the other node
    takes the lease, records what the dead one accepted, and its receiver starts the runs."""
    holder = next(n for n in (1, 2) if "holds the lease" in (cluster.logs / f"node-{n}.log").read_text())
    keys = [f"kill-{n:02d}" for n in range(30)]
    accepted: list[str] = []
    with httpx.Client(timeout=5) as client:
        for n, key in enumerate(keys):
            if n == 15:
                cluster.kill(f"node-{holder}")
            if send(client, cluster.receiver(holder), batch("ClusterAlert", key)) == 202:
                accepted.append(key)
    assert 10 <= len(accepted) < 30
    # what the dead node took in and had not recorded yet when it died (the row it wrote before
    # its 202): the node that took the lease over records it as its own
    from siaga.alerts import inbox

    inbox.put(store, "alertmanager", json.dumps(batch("ClusterAlert", "kill-unrecorded")).encode(), datetime.now(UTC))
    accepted.append("kill-unrecorded")
    missing_keys = provider.wait_for("/first", set(accepted), timeout=90)
    assert not missing_keys, f"accepted and lost: {sorted(missing_keys)}"
    other = 3 - holder
    survivor = (cluster.logs / f"node-{other}.log").read_text()
    assert "holds the lease" in survivor and "took up a webhook its receiver did not record" in survivor
    time.sleep(1)
    assert all(provider.calls[("/first", k)] == 1 for k in accepted)
    cluster.start(f"node-{holder}")


def test_a_worker_killed_mid_step_leaves_the_run_to_finish_once(cluster: Topology, provider: Provider, store: Any) -> None:
    with httpx.Client(timeout=30) as client:
        assert send(client, cluster.receiver_url, batch("ClusterAlert", "slow-1")) == 202
    assert not provider.wait_for("/first", {"slow-1"}, timeout=60)
    (incident,) = [i for i in incidents_of(store, "cluster-first") if i["inputs"]["key"] == "slow-1"]
    run = asyncio.run(read_runs(cluster.prefect_api, [incident["flow_run_id"]]))[incident["flow_run_id"]]
    worker = worker_running(cluster, str(run.id))
    cluster.kill_process(f"worker-{worker}")  # the worker process only: its run's process lives on
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = asyncio.run(read_runs(cluster.prefect_api, [str(run.id)]))[str(run.id)]
        if run.state and run.state.is_final():
            break
        time.sleep(0.5)
    assert run.state and run.state.is_completed(), run.state
    assert provider.calls[("/first", "slow-1")] == 1
    cluster.start(f"worker-{worker}")


def test_a_drill_runs_only_on_the_drill_worker(cluster: Topology) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SIAGA_"))}, **cluster.client_env()}
    done = subprocess.run([sys.executable, "-m", "siaga.cli", "drill", "cluster-first", "--input", "key=drill-1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = next(line.rsplit("/", 1)[-1] for line in done.stdout.splitlines() if "/runs/flow-run/" in line)
    runs = list(asyncio.run(read_runs(cluster.prefect_api, [run_id.strip()])).values())
    assert runs and all(r.work_queue_name == "drill" and r.parameters["mode"] == "drill" for r in runs)
    drill_log = (cluster.logs / "worker-drill-1.log").read_text()
    live_logs = "".join((cluster.logs / f"worker-live-{n}.log").read_text() for n in (1, 2))
    for run in runs:
        assert str(run.id) in drill_log and str(run.id) not in live_logs


def test_the_lost_hosts_run_ends_in_a_stated_state_with_its_side_effect_to_settle(
    cluster: Topology, provider: Provider, store: Any
) -> None:
    """Nothing runs the lost run again by itself: Prefect's zombie-run automation marks it Crashed,
    the singleton run watcher ends it in the store and audits what a person must do (settle the
    call of unknown outcome); the provider saw that one call only."""
    from siaga.approvals.runs import RunRecords
    from siaga.audit import AuditTrail

    if not LOST:
        pytest.skip("the lost-host test did not run")
    run_id = LOST["run"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        record = RunRecords(store).get(run_id)
        if record is not None and record.state == "ended":
            break
        time.sleep(1)
    else:
        pytest.fail(f"the lost run is still {record and record.state} in the store")
    run = asyncio.run(read_runs(cluster.prefect_api, [run_id]))[run_id]
    assert run.state is not None and run.state.is_crashed()
    (died,) = [r for r in AuditTrail(store).records(LOST["incident"]) if r.kind == "run.died"]
    assert died.data["unsettled"] and any("siaga ledger --resolve" in step for step in died.data["next"])
    assert provider.calls[("/first", "slow-lost")] == 1
