"""A runner killed with -9 leaves its run Running forever in Prefect OSS; the automation `siaga up`
installs marks it Crashed once its heartbeats stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .test_stack import clean_env, free_port

LONG_WAIT = """\
runbook: long-wait
title: A step that waits five minutes
severity: sev4
steps:
  - id: wait-long
    action: wait
    with: {duration: 5m}
"""


def stop_group(pid: int) -> None:
    """Stop the process group the orphaned Prefect server leads: TERM, then KILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_a_killed_runner_leaves_a_crashed_run_not_a_running_one(tmp_path: Path) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "long-wait.yaml").write_text(LONG_WAIT)
    home = tmp_path / "home"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--runbooks", str(folder), "--no-receiver"],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(home), start_new_session=True,
    )
    server_pid = None
    try:
        deadline = time.monotonic() + 180
        while "Siaga is up" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None and time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        server_pid = json.loads((home / "stack.json").read_text())["server_pid"]
        deployment = httpx.get(f"{api}/deployments/name/long-wait/siaga").json()
        for _ in range(10):  # SQLite answers 503 "database is locked" while the server is busy
            created = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={"parameters": {}})
            if created.status_code != 503:
                break
            time.sleep(1)
        assert created.status_code == 201, created.text
        run = created.json()
        while httpx.get(f"{api}/flow_runs/{run['id']}").json()["state"]["type"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(3)  # the first heartbeat is sent as the flow starts

        os.killpg(up.pid, signal.SIGKILL)  # the runner and the flow-run process it started
        up.wait()
        killed = time.monotonic()
        state = "RUNNING"
        while state == "RUNNING" and time.monotonic() - killed < 240:
            time.sleep(2)
            state = httpx.get(f"{api}/flow_runs/{run['id']}").json()["state"]["type"]
        took = time.monotonic() - killed
        print(f"run marked {state} {took:.0f} s after the runner was killed")
        assert state == "CRASHED"
        assert 30 < took < 200
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        if server_pid:
            stop_group(server_pid)
        log.close()
