"""A run waiting at its gate on `siaga up` holds no process, keeps exactly one gate across
restarts of the stack, and comes back when its gate is decided (a file of its own: it restarts
its stack, and runs beside the other stack tests)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..support.suspended_stack import Up, processes_of, started, wait

pytestmark = pytest.mark.slow


@pytest.fixture
def up(tmp_path_factory: pytest.TempPathFactory, prefect_db: Path) -> Iterator[Up]:
    with started(tmp_path_factory.mktemp("gate-restarts"), prefect_db) as stack:
        yield stack


def test_a_waiting_run_holds_no_process_and_comes_back_once_decided_across_restarts(up: Up) -> None:
    run_id = up.create_run(requested_by="eko")
    wait(lambda: up.waiting(run_id), 120, up.log)
    wait(lambda: processes_of(run_id) == [], 20, lambda: f"a run waiting on people holds no process: {processes_of(run_id)}")

    approve = up.siaga("approve", run_id, "freeze", "--as", "citra", "--code", up.code("citra", run_id))
    assert approve.returncode == 0 and "still open" in approve.stdout, approve.stdout + approve.stderr
    time.sleep(2)
    assert up.waiting(run_id), "a vote that decides nothing leaves the run asleep"

    for _ in range(2):  # restarts: exactly one gate per waiting step, its vote kept
        up.stop()
        up.start()
        listed = json.loads(up.siaga("approvals", "--json").stdout)
        assert [(g["step"], g["decided"]) for g in listed if g["run_id"] == run_id] == [("freeze", ["citra"])]
    shown = up.siaga("approvals", "--evidence").stdout  # for people: whole ids, the command, the evidence
    assert f"run {run_id}" in shown and f"siaga approve {run_id} freeze --as ID --code CODE" in shown, shown
    assert "the gated step" in shown, shown

    approve = up.siaga("approve", run_id, "freeze", "--as", "fajar", "--code", up.code("fajar", run_id))
    assert approve.returncode == 0 and "the gate is approved" in approve.stdout, approve.stdout + approve.stderr
    wait(lambda: up.state(run_id) == "COMPLETED", 120, lambda: up.state(run_id) + up.log())
    assert up.sent(run_id) == ["before", "freeze"], "no step ran twice, the gated one once"
    task_runs = httpx.post(f"{up.api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    assert sorted(t["state"]["name"] for t in task_runs if t["name"] == "before") == ["Cached", "Completed"]
