"""Scheduled drills on the embedded stack: `siaga up` with a runbook drilled every minute; Prefect's
scheduler creates the runs ahead, the runner starts them on time, and each drill is scored into
Siaga's store without anyone starting it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from siaga.flows.server import free_port

from ..support.prefect_db import seed_prefect_home
from ..support.stack import clean_env, stop

pytestmark = pytest.mark.slow

RUNBOOK = """\
runbook: every-minute
title: Drilled every minute
severity: sev3
impact: {public_statement_within: 15m}
drill:
  schedule: "* * * * *"
  timezone: Asia/Jakarta
steps:
  - id: page
    action: pagerduty.trigger
    with: {summary: "Checkout errors", severity: critical}
  - id: tell-customers
    action: outbox.send
    with: {to: "customers:all", message: "Checkout is failing; we are on it."}
"""


def test_a_drill_schedule_runs_drills_on_its_own(tmp_path: Path, prefect_db: Path) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "every-minute.yaml").write_text(RUNBOOK)
    home = tmp_path / "home"
    seed_prefect_home(home, prefect_db)
    env = clean_env(home)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    output = tmp_path / "up.log"
    with output.open("w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--runbooks", str(folder), "--no-receiver"],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
        )
    try:
        deadline = time.monotonic() + 240  # the stack's start, up to a minute to the first slot, the run
        done = None
        while done is None:
            assert up.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(2)
            if "Siaga is up" not in output.read_text():
                continue
            runs = httpx.post(f"{api}/flow_runs/filter", json={}).json()
            scheduled = [r for r in runs if r["auto_scheduled"]]
            assert all(r["parameters"] == {"mode": "drill"} for r in scheduled)
            done = next((r for r in scheduled if r["state_type"] == "COMPLETED"), None)
        assert len(scheduled) > 1, "the scheduler creates runs ahead"

        listed = subprocess.run([sys.executable, "-m", "siaga.cli", "drills", "every-minute", "--json"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert listed.returncode == 0, listed.stderr
        [record] = [d for d in json.loads(listed.stdout) if d["run_id"] == done["id"]]
        assert record["state"] == "scored" and record["score"] == 100, record
        assert record["figures"]["time_to_first_page_s"] is not None
        assert record["figures"]["time_to_public_statement_s"] is not None
    finally:
        stop(up, home)
