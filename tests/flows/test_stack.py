"""End to end: `siaga up` as a user starts it, a drill through the CLI, the outcome read back
from the Prefect API, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from siaga.integrations import default_registry

from siaga.catalog import Catalog
from siaga.flows.server import free_port

from ..conftest import RUNBOOKS
from ..support.prefect_db import seed_prefect_home
from ..support.stack import Stack, clean_env, create_flow_run, running_stack, stop

MAIN_RUNBOOK = "payment-gateway-outage"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack-home"), RUNBOOKS, "--receiver-port", str(free_port())) as up:
        yield up


@pytest.mark.timeout(600)  # every gate of the bundled drill, each vote a `siaga` process: on busy cores this takes minutes
def test_a_drill_through_the_cli_runs_on_the_stack(stack: Stack) -> None:
    drill = subprocess.Popen(
        [sys.executable, "-m", "siaga.cli", "drill", MAIN_RUNBOOK, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=stack.env,
    )
    said = stack.approve_gates_until_done(drill)
    stdout, stderr = drill.communicate()
    assert drill.returncode == 0, stdout + stderr
    assert any("the gate is approved" in line for line in said), said
    assert any("still open" in line for line in said), "quorum 2 needed two people"
    summary = json.loads(stdout)
    assert summary["state"] == "Completed"
    run_id = summary["run_id"]

    run = httpx.get(f"{stack.api}/flow_runs/{run_id}").json()
    assert run["state"]["type"] == "COMPLETED"
    assert run["parameters"]["mode"] == "drill"
    deployment = httpx.get(f"{stack.api}/deployments/{run['deployment_id']}").json()
    assert deployment["name"] == "siaga"
    assert deployment["entrypoint"] == "siaga.flows.library.payment_gateway_outage"
    task_runs = httpx.post(
        f"{stack.api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}
    ).json()
    names = {t["name"] for t in task_runs}
    step_ids = {s["step"] for s in summary["steps"]}
    assert step_ids and step_ids <= names
    assert all(t["state"]["type"] == "COMPLETED" for t in task_runs)

    logs = httpx.post(f"{stack.api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}).json()
    step_logs = [entry["message"] for entry in logs if entry["name"] == "siaga.steps"]
    first = sorted(step_ids)[0]
    assert any("step started" in m and f"step={first}" in m for m in step_logs), step_logs
    assert any("duration_s=" in m and f"step={first}" in m for m in step_logs), step_logs

    lines = (Path(stack.env["SIAGA_HOME"]) / "logs" / "siaga.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if run_id in line]
    ends = [r for r in records if r.get("step") == first and "duration_s" in r]
    assert ends and ends[0]["runbook"] == MAIN_RUNBOOK and ends[0]["outcome"] in ("completed", "recorded", "skipped")


def test_every_runbook_is_deployed_with_its_drill_schedule(stack: Stack) -> None:
    deployments = httpx.post(f"{stack.api}/deployments/filter", json={}).json()
    by_flow = {}
    for d in deployments:
        flow = httpx.get(f"{stack.api}/flows/{d['flow_id']}").json()
        by_flow[flow["name"]] = d
    bundled = Catalog.load(RUNBOOKS, default_registry()).runbooks
    assert len(bundled) >= 4 and set(bundled) <= set(by_flow)
    schedules = by_flow[MAIN_RUNBOOK]["schedules"]
    assert schedules and schedules[0]["parameters"] == {"mode": "drill"}
    assert schedules[0]["schedule"]["timezone"]


def test_the_zombie_run_automation_is_installed(stack: Stack) -> None:
    automations = httpx.post(f"{stack.api}/automations/filter", json={}).json()
    zombie = [a for a in automations if a["name"].startswith("siaga: crash")]
    assert len(zombie) == 1
    trigger = zombie[0]["trigger"]
    assert trigger["posture"] == "Proactive"
    assert {"prefect.flow-run.Paused", "prefect.flow-run.Suspended"} <= set(trigger["expect"])
    assert zombie[0]["actions"][0]["state"] == "CRASHED"


def test_runbooks_lists_the_last_run(stack: Stack) -> None:
    result = stack.siaga("runbooks", "--runbooks", str(RUNBOOKS), "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["id"]: r for r in json.loads(result.stdout)["runbooks"]}
    assert rows[MAIN_RUNBOOK]["last_run"]["state"] == "Completed"
    assert rows[MAIN_RUNBOOK]["last_run"]["mode"] == "drill"


def test_bad_input_starts_no_run(stack: Stack) -> None:
    before = httpx.post(f"{stack.api}/flow_runs/count", json={}).json()
    result = stack.siaga("run", MAIN_RUNBOOK, "--input", "no_such_input=1")
    assert result.returncode == 2
    assert "unknown input `no_such_input`" in result.stderr
    assert httpx.post(f"{stack.api}/flow_runs/count", json={}).json() == before


def test_ctrl_c_stops_everything(stack: Stack) -> None:
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=60) == 0, stack.output.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{stack.api}/health", timeout=2)
    assert not (Path(stack.env["SIAGA_HOME"]) / "stack.json").exists()


def test_up_reuses_the_server_named_by_prefect_api_url(prefect_api: str, tmp_path: Path) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(
        "runbook: tiny\ntitle: Tiny\nseverity: sev4\nsteps:\n  - {id: hello, action: note, with: {text: hello}}\n"
    )
    env = {**clean_env(tmp_path / "home"), "PREFECT_API_URL": prefect_api}
    output = tmp_path / "up.log"
    with output.open("w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "up", "--runbooks", str(folder), "--drill", "tiny", "--exit-after-drill",
             "--receiver-port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        assert up.wait(timeout=180) == 0, output.read_text()
    finally:
        if up.poll() is None:
            up.kill()
    text = output.read_text()
    assert f"Using the Prefect server at {prefect_api}" in text
    assert "Run Completed" in text and "completed  hello (note)" in text
    assert httpx.get(f"{prefect_api}/health").status_code == 200, "a reused server is left running"



# --- a small stack on the session's server: the runner's limit, and stopping with SIGTERM --------

SLOW = "runbook: slow\ntitle: Slow\nseverity: sev4\nsteps:\n  - {id: pause, action: wait, with: {duration: 2s}}\n"


def wait_for(text: str, output: Path, process: subprocess.Popen[str], timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while text not in (said := output.read_text()):
        assert process.poll() is None, said
        assert time.monotonic() < deadline, said
        time.sleep(0.2)
    return said


@pytest.fixture(scope="module")
def small_stack(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`siaga up --max-runs 1` serving one slow runbook on the session's Prefect server."""
    home = tmp_path_factory.mktemp("small-stack")
    folder = home / "runbooks"
    folder.mkdir()
    (folder / "slow.yaml").write_text(SLOW)
    env = {**clean_env(home), "PREFECT_API_URL": prefect_api, "SIAGA_RUNBOOKS": str(folder)}
    output = home / "up.log"
    with output.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "up", "--runbooks", str(folder), "--no-receiver", "--max-runs", "1"],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
        )
    try:
        wait_for("Siaga is up", output, process)
        yield Stack(process, output, prefect_api, env)
    finally:
        stop(process)


def test_max_runs_is_the_runners_limit(small_stack: Stack) -> None:
    """With --max-runs 1, two runs created together run one after the other."""
    help_text = small_stack.siaga("up", "--help").stdout
    assert "--max-runs N" in help_text and "(default 20)" in help_text
    assert "at most 1 run at once (--max-runs)" in small_stack.output.read_text()

    api = small_stack.api
    deployment = httpx.get(f"{api}/deployments/name/slow/siaga").json()
    runs = [create_flow_run(api, deployment["id"])["id"] for _ in range(2)]
    deadline = time.monotonic() + 120
    while True:
        done = [httpx.get(f"{api}/flow_runs/{run}").json() for run in runs]
        if all(run["state"]["type"] == "COMPLETED" for run in done):
            break
        assert time.monotonic() < deadline, [run["state"] for run in done]
        time.sleep(0.5)
    first, second = sorted(done, key=lambda run: run["start_time"])
    assert second["start_time"] >= first["end_time"], "the runner ran two runs at once"


def test_sigterm_stops_siaga_run_following_a_run_without_a_traceback(small_stack: Stack) -> None:
    """`siaga run` on a stack only follows the run: SIGTERM stops the following, not the run."""
    output = Path(small_stack.env["SIAGA_HOME"]) / "run.log"
    with output.open("w") as log:
        follow = subprocess.Popen([sys.executable, "-m", "siaga.cli", "run", "slow"],
                                  stdout=log, stderr=subprocess.STDOUT, text=True, env=small_stack.env)
    said = wait_for("Started live run of slow: ", output, follow)
    run_id = said.split("/runs/flow-run/")[1].split()[0]
    follow.send_signal(signal.SIGTERM)
    assert follow.wait(timeout=30) == 143
    said = output.read_text()
    assert "Traceback" not in said
    assert said.rstrip().endswith("siaga run: stopped following the run (SIGTERM); the run goes on on the stack")
    deadline = time.monotonic() + 120
    while (state := httpx.get(f"{small_stack.api}/flow_runs/{run_id}").json()["state"])["type"] != "COMPLETED":
        assert time.monotonic() < deadline and state["type"] not in ("FAILED", "CRASHED", "CANCELLED"), state
        time.sleep(0.5)


def test_sigterm_stops_siaga_up_cleanly(small_stack: Stack) -> None:
    small_stack.process.send_signal(signal.SIGTERM)
    assert small_stack.process.wait(timeout=60) == 0, small_stack.output.read_text()
    said = small_stack.output.read_text()
    assert "Stopping Siaga..." in said and "Traceback" not in said
    assert not (Path(small_stack.env["SIAGA_HOME"]) / "stack.json").exists()


def test_sigterm_while_starting_stops_the_server_it_started(tmp_path: Path, prefect_db: Path) -> None:
    """SIGTERM before the stack is up (its Prefect server just answered) still stops that server."""
    seed_prefect_home(tmp_path / "home", prefect_db)
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "slow.yaml").write_text(SLOW)
    port = free_port()
    output = tmp_path / "up.log"
    with output.open("w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "siaga.cli", "up", "--port", str(port), "--runbooks", str(folder), "--no-receiver"],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=clean_env(tmp_path / "home"),
        )
    try:
        wait_for("Prefect server up", output, up)
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=150) == 0, output.read_text()
    finally:
        stop(up, tmp_path / "home")
    said = output.read_text()
    assert "Traceback" not in said
    assert "stopped (SIGTERM) before it was up" in said or "Stopping Siaga..." in said, said
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
