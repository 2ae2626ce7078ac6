"""The fast lane of `siaga up` end to end: alerts posted to a real stack start their runbook in a
process forked from the warm forkserver, with Prefect's own states, task runs and logs; runs started
any other way are the runner's, and run once; a duplicate alert starts nothing; a run killed with
-9 is reported Crashed and the stack carries on. (Latency figures: benchmarks/alert_to_action.py.)"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga.flows.server import free_port

from ..support.live_receiver import read
from ..support.stack import running_stack

TOKEN = "fast-lane-token"
RUNBOOK = "fast-alert"
RUNBOOK_YAML = """
runbook: fast-alert
title: Fast lane
severity: sev2
roles: {{ops: [eko]}}
inputs:
  key: {{type: string, default: none}}
triggers:
  - source: alertmanager
    match: {{alertname: FastAlert}}
    group_by: [key]
    inputs: {{key: "{{{{ alert.labels.key }}}}"}}
steps:
  - id: call
    action: http.request
    with: {{url: "{url}/{{{{ inputs.key }}}}", json: {{key: "{{{{ inputs.key }}}}"}}, timeout: 2m}}
  - id: after
    action: note
    with: {{text: "called for {{{{ inputs.key }}}}"}}
"""
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class Target:
    """The HTTP server the runbook's first step calls: counts calls per key, and holds a call
    whose key starts with ``hold-`` until the test releases it."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.released: set[str] = set()
        self.changed = threading.Condition()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                key = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))["key"]
                with target.changed:
                    target.calls[key] += 1
                    target.changed.notify_all()
                    if key.startswith("hold-"):
                        target.changed.wait_for(lambda: key in target.released, timeout=120)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_call(self, key: str, timeout: float = 120) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.calls[key] > 0, timeout), f"no call for {key}"

    def release(self, key: str) -> None:
        with self.changed:
            self.released.add(key)
            self.changed.notify_all()


class FastStack:
    def __init__(self, process: subprocess.Popen[str], output: Path, api: str, hooks: str, target: Target) -> None:
        self.process, self.output, self.api, self.hooks, self.target = process, output, api, hooks, target

    def post(self, key: str, fingerprint: str | None = None) -> None:
        alert = {
            "status": "firing", "labels": {"alertname": "FastAlert", "key": key}, "annotations": {},
            "startsAt": "2026-11-24T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example/graph", "fingerprint": fingerprint or f"fp-{key}",
        }
        body = {
            "version": "4", "groupKey": f"{{}}:{{key={key}}}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "siaga", "groupLabels": {"key": key}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager.example", "alerts": [alert],
        }
        answer = httpx.post(f"{self.hooks}/hooks/alertmanager", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert answer.status_code == 202, answer.text

    def runs(self, key: str) -> list[dict[str, Any]]:
        query = {"flows": {"name": {"any_": [RUNBOOK]}}, "limit": 200}
        return [r for r in httpx.post(f"{self.api}/flow_runs/filter", json=query).json() if r["parameters"].get("key") == key]

    def run_of(self, key: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (runs := self.runs(key)):
            assert time.monotonic() < deadline, f"no run for {key}"
            time.sleep(0.2)
        (run,) = runs
        return run

    def final(self, run_id: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while (state := httpx.get(f"{self.api}/flow_runs/{run_id}").json()["state"]["type"]) not in FINAL:
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        return state

    def states(self, run_id: str) -> list[str]:
        history = httpx.get(f"{self.api}/flow_run_states/", params={"flow_run_id": run_id}).json()
        return [s["name"] for s in sorted(history, key=lambda s: s["timestamp"])]

    def warm_children(self) -> list[int]:
        """The processes forked by the stack's forkserver: the fast lane's runs."""
        (server,) = [pid for pid in children(self.process.pid) if b"forkserver" in command(pid)]
        return children(server)


def children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
            if int(ppid) == parent:
                found.append(int(entry.name))
    return found


def command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory, prefect_db: Path) -> Iterator[FastStack]:
    target = Target()
    home = tmp_path_factory.mktemp("fast-home")
    folder = home / "runbooks"
    folder.mkdir()
    (folder / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML.format(url=target.url))
    receiver_port = free_port()
    try:
        with running_stack(home, folder, "--receiver-port", str(receiver_port), env={"SIAGA_ALERTMANAGER_TOKEN": TOKEN},
                           prefect_db=prefect_db) as stack:
            try:
                yield FastStack(stack.process, stack.output, stack.api, f"http://127.0.0.1:{receiver_port}", target)
            finally:
                for key in list(target.calls):
                    target.release(key)
    finally:
        target.server.shutdown()


def test_an_alert_runs_its_runbook_in_a_warm_process_with_prefects_states_and_logs(fast: FastStack) -> None:
    key = f"hold-{uuid.uuid4().hex[:8]}"
    fast.post(key)
    fast.target.wait_call(key)
    running = fast.warm_children()
    assert len(running) == 1, "the first step runs in a process forked by the forkserver"
    fast.target.release(key)

    run = fast.run_of(key)
    assert fast.final(run["id"]) == "COMPLETED"
    assert fast.states(run["id"]) == ["Scheduled", "Pending", "Submitting", "Running", "Completed"]
    assert fast.target.calls[key] == 1
    assert run["parameters"]["incident"]["id"] in run["name"]

    deadline = time.monotonic() + 30
    while True:  # Prefect records task runs from events, a moment after the flow ends
        task_runs = httpx.post(f"{fast.api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}}).json()
        if {t["name"] for t in task_runs} == {"call", "after"} and all(t["state"]["type"] == "COMPLETED" for t in task_runs):
            break
        assert time.monotonic() < deadline, task_runs
        time.sleep(0.3)
    logs = httpx.post(f"{fast.api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}}).json()
    messages = [entry["message"] for entry in logs]
    assert any("step started" in m and "step=call" in m for m in messages), messages
    assert any("Finished in state Completed" in m for m in messages), messages

    heartbeats = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                             "any_resource": {"id": [f"prefect.flow-run.{run['id']}"]}}, "limit": 5}
    deadline = time.monotonic() + 30
    while not httpx.post(f"{fast.api}/events/filter", json=heartbeats).json()["events"]:
        assert time.monotonic() < deadline, "the run sent no heartbeat: the zombie automation could not watch it"
        time.sleep(0.5)


def test_a_run_started_through_the_api_is_the_runners_and_runs_once(fast: FastStack) -> None:
    key = f"api-{uuid.uuid4().hex[:8]}"
    deployment = httpx.get(f"{fast.api}/deployments/name/{RUNBOOK}/siaga").json()
    created = httpx.post(f"{fast.api}/deployments/{deployment['id']}/create_flow_run", json={"parameters": {"key": key}})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    assert fast.final(run_id) == "COMPLETED"
    time.sleep(2)  # two more runner polls: nothing starts it again
    assert fast.target.calls[key] == 1
    assert fast.states(run_id).count("Running") == 1
    assert len(fast.runs(key)) == 1


def test_a_duplicate_alert_never_starts_a_second_run(fast: FastStack) -> None:
    key = f"dup-{uuid.uuid4().hex[:8]}"
    fast.post(key)
    fast.post(key)
    fast.post(key, fingerprint=f"fp-{key}-other")
    run = fast.run_of(key)
    assert fast.final(run["id"]) == "COMPLETED"
    fast.post(key)  # Alertmanager re-sends the group while the incident is open
    time.sleep(3)
    assert len(fast.runs(key)) == 1
    assert fast.target.calls[key] == 1
    assert fast.states(run["id"]).count("Running") == 1
    incidents = read(fast.hooks, state="open")
    assert len([i for i in incidents if i["inputs"] == {"key": key}]) == 1


def test_a_run_killed_with_9_crashes_alone(fast: FastStack) -> None:
    key = f"hold-{uuid.uuid4().hex[:8]}"
    fast.post(key)
    fast.target.wait_call(key)
    (pid,) = fast.warm_children()
    os.kill(pid, signal.SIGKILL)
    run = fast.run_of(key)
    assert fast.final(run["id"], timeout=60) == "CRASHED"
    assert "-9" in httpx.get(f"{fast.api}/flow_runs/{run['id']}").json()["state"]["message"]
    fast.target.release(key)

    assert fast.process.poll() is None, fast.output.read_text()
    assert httpx.get(f"{fast.hooks}/healthz").json()["ok"]
    after = f"after-{uuid.uuid4().hex[:8]}"
    fast.post(after)
    assert fast.final(fast.run_of(after)["id"]) == "COMPLETED"
    assert fast.target.calls[after] == 1


def test_a_fast_run_cancelled_from_the_ui_is_cancelled(fast: FastStack) -> None:
    key = f"hold-{uuid.uuid4().hex[:8]}"
    fast.post(key)
    fast.target.wait_call(key)
    (pid,) = fast.warm_children()
    run = fast.run_of(key)
    cancel = {"state": {"type": "CANCELLING", "name": "Cancelling", "message": "cancelled from the UI"}}
    assert httpx.post(f"{fast.api}/flow_runs/{run['id']}/set_state", json=cancel).status_code in (200, 201)
    assert fast.final(run["id"], timeout=90) == "CANCELLED"
    deadline = time.monotonic() + 30
    while pid in fast.warm_children():
        assert time.monotonic() < deadline, "the cancelled run's process is still running"
        time.sleep(0.3)
    fast.target.release(key)
    assert fast.process.poll() is None


def test_a_run_another_executor_claimed_first_is_left_to_it_quietly(
    prefect_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The runner's poll and the fast lane may race for a run: the server lets one move it from
    Scheduled to Pending and aborts the other, which must step aside without a word."""
    import asyncio

    from prefect import get_client
    from prefect.states import Pending
    from siaga.flows.faststart import FastLane

    async def race() -> tuple[str, bool, list[str]]:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("lane-race")
            deployment_id = await client.create_deployment(flow_id, name="siaga", entrypoint="siaga.flows.library.lane_race")
            deployment = await client.read_deployment(deployment_id)
            run = await client.create_flow_run_from_deployment(deployment_id)
            await client.set_flow_run_state(run.id, Pending())  # the runner claimed it
            async with FastLane() as lane:
                taken = lane.dispatch(run, deployment)  # the receiver's copy still says Scheduled
            history = await client.read_flow_run_states(run.id)
            return (await client.read_flow_run(run.id)).state.name, taken, [s.name for s in history]

    with caplog.at_level(logging.INFO):
        state, taken, history = asyncio.run(race())
    assert taken, "the lane tried: the run it was handed said Scheduled"
    assert state == "Pending" and history == ["Scheduled", "Pending"]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.name.startswith("prefect.runner")]
    assert not loud, [r.getMessage() for r in loud]
