"""A runner killed with -9 leaves its run Running forever in Prefect OSS; the automation `siaga up`
installs marks it Crashed once its heartbeats stop, also when the stack started again meanwhile."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

from siaga.cli import main
from siaga.errors import BadInput
from siaga.flows.server import free_port
from siaga.flows.stack import ZOMBIE_AUTOMATION, ensure_zombie_automation, zombie_window
from siaga.settings import Settings

from ..support.stack import clean_env, create_flow_run

LONG_WAIT = """\
runbook: long-wait
title: A step that waits five minutes
severity: sev4
steps:
  - id: wait-long
    action: wait
    with: {duration: 5m}
"""


def test_a_killed_runner_leaves_a_crashed_run_not_a_running_one(prefect_api: str, tmp_path: Path) -> None:
    """`siaga up` (on the session's Prefect server, which outlives it as a server of its own would:
    `siaga up` starts it in a process group of its own) killed -9 with its run; the automation it
    installed marks the run Crashed once the window passes (40 s here, the shortest a live run's
    30 s heartbeats allow; 60 s by default)."""
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "long-wait.yaml").write_text(LONG_WAIT)
    api = prefect_api
    env = {**clean_env(tmp_path / "home"), "PREFECT_API_URL": api, "SIAGA_ZOMBIE_WINDOW_SECONDS": "40"}
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "siaga.cli", "up", "--runbooks", str(folder), "--no-receiver"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while "Siaga is up" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None and time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        [automation] = zombie_automations(api)
        assert automation["trigger"]["within"] == 40.0
        deployment = httpx.get(f"{api}/deployments/name/long-wait/siaga").json()
        run = create_flow_run(api, deployment["id"])
        while httpx.get(f"{api}/flow_runs/{run['id']}").json()["state"]["type"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(3)  # the first heartbeat is sent as the flow starts

        os.killpg(up.pid, signal.SIGKILL)  # the runner and the flow-run process it started
        up.wait()
        killed = time.monotonic()
        state = "RUNNING"
        while state == "RUNNING" and time.monotonic() - killed < 240:
            time.sleep(1)
            state = httpx.get(f"{api}/flow_runs/{run['id']}").json()["state"]["type"]
        took = time.monotonic() - killed
        print(f"run marked {state} {took:.0f} s after the runner was killed")
        assert state == "CRASHED"
        assert 30 < took < 200
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()


@pytest.mark.parametrize("window", ["30", "soon", "nan", "inf", "1e9", "-45"])
def test_the_window_is_more_than_a_heartbeat_and_at_most_a_day(monkeypatch: pytest.MonkeyPatch, window: str) -> None:
    monkeypatch.setenv("SIAGA_ZOMBIE_WINDOW_SECONDS", window)
    with pytest.raises(BadInput, match=r"SIAGA_ZOMBIE_WINDOW_SECONDS is .*more than 30"):
        zombie_window(Settings.from_environ(os.environ))
    monkeypatch.setenv("SIAGA_ZOMBIE_WINDOW_SECONDS", " 45 ")
    assert zombie_window(Settings.from_environ(os.environ)) == timedelta(seconds=45)
    monkeypatch.delenv("SIAGA_ZOMBIE_WINDOW_SECONDS")
    assert zombie_window(Settings.from_environ(os.environ)) == timedelta(seconds=60)


def test_a_window_a_live_run_cannot_keep_is_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A window no longer than the 30 s between a live run's heartbeats would crash every healthy
    run: `siaga up` says so and starts no server."""
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "long-wait.yaml").write_text(LONG_WAIT)
    home = tmp_path / "home"
    monkeypatch.setenv("SIAGA_HOME", str(home))
    monkeypatch.setenv("SIAGA_ZOMBIE_WINDOW_SECONDS", "20")
    assert main(["up", "--runbooks", str(folder), "--no-receiver", "--port", str(free_port())]) == 2
    said = capsys.readouterr()
    assert "SIAGA_ZOMBIE_WINDOW_SECONDS" in said.err and "more than 30" in said.err
    assert "Prefect server" not in said.out and not (home / "logs" / "prefect-server.log").exists()


# --- the automation across restarts of `siaga up` ---------------------------------------------


def zombie_automations(api: str) -> list[dict]:
    found = httpx.post(f"{api}/automations/filter", json={}).json()
    return [a for a in found if a["name"] == ZOMBIE_AUTOMATION]


def test_the_zombie_automation_is_left_alone_when_unchanged(prefect_api: str) -> None:
    """Each `siaga up` start ensures the automation: the same runbooks leave it (and its trigger,
    whose id Prefect keeps the runs' heartbeat windows under) as it was."""
    names = ["zombie-test-a", "zombie-test-b"]
    first = asyncio.run(ensure_zombie_automation(names))
    [before] = zombie_automations(prefect_api)
    again = asyncio.run(ensure_zombie_automation(list(reversed(names))))
    [after] = zombie_automations(prefect_api)
    assert first == again == UUID(after["id"])
    assert after["trigger"]["id"] == before["trigger"]["id"] and after["updated"] == before["updated"]

    changed = asyncio.run(ensure_zombie_automation([*names, "zombie-test-c"]))
    [updated] = zombie_automations(prefect_api)
    assert changed == first and updated["trigger"]["match_related"]["prefect.resource.name"][-1] == "zombie-test-c"


@pytest.mark.slow
def test_a_run_that_went_quiet_before_a_restart_is_marked_crashed(prefect_api: str) -> None:
    """A run sends a heartbeat and its process dies with the stack; the stack starts again (and
    ensures the automation again); within the window and a little, the run is Crashed. The window
    is 10 s here (Prefect's floor): the one heartbeat is sent by hand, no process sends more."""
    name = "zombie-test-quiet"
    window = timedelta(seconds=10)
    asyncio.run(ensure_zombie_automation([name], window))
    flow = httpx.post(f"{prefect_api}/flows/", json={"name": name}).json()
    run = httpx.post(f"{prefect_api}/flow_runs/", json={"flow_id": flow["id"], "state": {"type": "RUNNING"}}).json()
    heartbeat = {
        "id": str(uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": "prefect.flow-run.heartbeat",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run['id']}"},
        "related": [{"prefect.resource.id": f"prefect.flow.{flow['id']}", "prefect.resource.role": "flow",
                     "prefect.resource.name": name}],
    }  # what the run's process sends, once, before it dies
    assert httpx.post(f"{prefect_api}/events", json=[heartbeat]).status_code == 204
    time.sleep(2)
    asyncio.run(ensure_zombie_automation([name], window))  # the restart
    deadline = time.monotonic() + 90
    while (state := httpx.get(f"{prefect_api}/flow_runs/{run['id']}").json()["state"])["type"] == "RUNNING":
        assert time.monotonic() < deadline, "the quiet run is still Running"
        time.sleep(1)
    assert state["type"] == "CRASHED" and "stopped sending heartbeats" in state["message"]

