"""Gates on `siaga up`: a run waiting on people holds no process (it is suspended in Prefect and
woken by the stack when a decision or its clock needs it), survives restarts with exactly one gate
per waiting step, and every attack through Prefect's unauthenticated REST API changes nothing:
cancelled runs stay cancelled, a run whose mode was changed is refused, a resume Siaga did not
ask for is recorded and ignored, and an answer given in a forged form does not count."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from siaga.approvals.records import gate_id
from siaga.audit import AuditTrail
from siaga.integrations.outbox import read_outbox
from siaga.store import engine

from ..support.suspended_stack import Up, processes_of, started, wait

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, prefect_db: Path) -> Iterator[Up]:
    with started(tmp_path_factory.mktemp("gates-suspended"), prefect_db) as stack:
        yield stack


def test_a_cancelled_run_is_never_started_again(up: Up) -> None:
    run_id = up.create_run(requested_by="eko")
    wait(lambda: up.waiting(run_id), 120, up.log)
    up.siaga("approve", run_id, "freeze", "--as", "citra", "--code", up.code("citra", run_id))
    up.set_state(run_id, "CANCELLED")
    wait(lambda: up.gate(run_id).state == "cancelled", 30, lambda: up.gate(run_id).state)
    # someone forces it back to Scheduled through the API: it starts, sees it was cancelled, ends
    up.set_state(run_id, "SCHEDULED")
    wait(lambda: up.state(run_id) == "CANCELLED", 120, lambda: up.state(run_id))
    refused = up.siaga("approve", run_id, "freeze", "--as", "fajar", "--code", up.code("fajar", run_id))
    assert refused.returncode != 0 and "no open gate" in refused.stderr, refused.stdout + refused.stderr
    assert up.sent(run_id) == ["before"], "the gated step never ran"


def test_a_drill_turned_live_while_waiting_is_refused(up: Up) -> None:
    run_id = up.create_run(mode="drill")
    wait(lambda: up.waiting(run_id), 120, up.log)
    up.siaga("approve", run_id, "freeze", "--as", "citra", "--code", up.code("citra", run_id))
    parameters = {**up.run(run_id)["parameters"], "mode": "live", "requested_by": "eko"}
    patched = httpx.patch(f"{up.api}/flow_runs/{run_id}", json={"parameters": parameters}, timeout=30)
    assert patched.status_code == 204, patched.text
    up.siaga("approve", run_id, "freeze", "--as", "fajar", "--code", up.code("fajar", run_id))  # the drill's 2nd vote
    wait(lambda: up.state(run_id) == "FAILED", 120, lambda: up.state(run_id) + up.log())
    assert up.run(run_id)["state"]["name"] == "Refused"
    assert "mode drill -> live" in up.run(run_id)["state"]["message"]
    assert [m["message"] for m in read_outbox(up.home) if m["run_id"] == run_id and m["step"] == "freeze"] == []


def test_a_resume_siaga_did_not_ask_for_changes_nothing_and_a_forged_form_does_not_count(up: Up) -> None:
    run_id = up.create_run(requested_by="eko")
    wait(lambda: up.waiting(run_id), 120, up.log)
    first = up.run(run_id)["state"]["state_details"]["pause_key"]
    up.set_state(run_id, "SCHEDULED", "Resuming")  # forced through the API, no answer
    wait(lambda: up.waiting(run_id) and up.run(run_id)["state"]["state_details"]["pause_key"] != first, 120, up.log)
    resumed = [r for r in AuditTrail(engine(up.store)).records(f"run:{run_id}") if r.kind == "run.resumed"]
    assert [(r.channel, r.data["how"]) for r in resumed] == [
        ("prefect-api", "resumed through Prefect's API, not by Siaga: nothing changes")]
    assert up.gate(run_id).is_open and not up.records().votes(up.gate(run_id))

    # the evidence in the form is replaced through the API; an answer given in that form does not count
    key = up.run(run_id)["state"]["state_details"]["pause_key"]
    description = f"{up.api}/flow_runs/{run_id}/input/paused-{key}-description"
    assert httpx.delete(description).status_code == 204
    forged = httpx.post(f"{up.api}/flow_runs/{run_id}/input",
                        json={"key": f"paused-{key}-description", "value": json.dumps("Freeze nothing. Approve.")})
    assert forged.status_code == 201, forged.text
    answer = {"step": "freeze", "decision": "approve", "approver": "citra", "code": up.code("citra", run_id), "comment": ""}
    resumed_by_form = up.resume(run_id, answer)
    assert resumed_by_form["status"] == "ACCEPT", resumed_by_form
    wait(lambda: up.waiting(run_id) and up.run(run_id)["state"]["state_details"]["pause_key"] != key, 120, up.log)
    events = up.records().events(gate_id(run_id, "freeze"))
    answered = [(e["kind"], e["channel"], e["detail"].get("reason", "")) for e in events
                if e["actor"] == "citra" and e["kind"] != "code sent"]
    assert [(kind, channel) for kind, channel, _ in answered] == [("refused", "ui")]
    assert answered[0][2].startswith("the form was changed through Prefect's API after Siaga wrote it")

    # in the form as Siaga wrote it, her answer counts: the run comes back, takes it, waits again
    key = up.run(run_id)["state"]["state_details"]["pause_key"]
    resumed_by_form = up.resume(run_id, answer)
    assert resumed_by_form["status"] == "ACCEPT", resumed_by_form
    wait(lambda: up.waiting(run_id) and up.run(run_id)["state"]["state_details"]["pause_key"] != key, 120, up.log)
    events = up.records().events(gate_id(run_id, "freeze"))
    assert [v.person for v in up.records().votes(up.gate(run_id))] == ["citra"], events
    assert "Citra Lestari's approval of freeze counted" in json.dumps(
        httpx.get(f"{up.api}/flow_runs/{run_id}/input/paused-{up.run(run_id)['state']['state_details']['pause_key']}-description").json())
    up.set_state(run_id, "CANCELLED")


def test_a_run_killed_in_a_step_ends_and_names_the_side_effect_to_settle(up: Up) -> None:
    """The provider takes the call and never answers; the run's process is killed while it waits.
    Within seconds the run is Crashed (its runner saw it die), the stack records its end, and its
    summary and `siaga incident`'s next actions name the whole ledger key to settle."""
    import socket
    import threading

    taken = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def hang() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        taken.set()  # the call reached the provider; its answer never comes

    threading.Thread(target=hang, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/freeze"
    run_id = up.create_run("hanging", url=url, incident={"id": "INC-KILLED"})
    assert taken.wait(120), up.log()
    killed = wait(lambda: processes_of(run_id), 30)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    died = wait(lambda: [r for r in AuditTrail(engine(up.store)).records("INC-KILLED") if r.kind == "run.died"], 120,
                lambda: up.state(run_id) + up.log())
    ended_after = time.monotonic() - started
    key = "INC-KILLED:change:http.request"
    assert up.state(run_id) == "CRASHED" and ended_after < 90, (up.state(run_id), ended_after)
    assert died[0].data["unsettled"] == [key]
    assert any(f"siaga ledger --resolve {key} --done" in item for item in died[0].data["next"]), died[0].data
    summary = httpx.post(f"{up.api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    assert any(f"siaga ledger --resolve {key}" in (a.get("data") or "") for a in summary), summary
    from siaga.report.incident import next_actions

    todo = next_actions(engine(up.store), "INC-KILLED", [])
    assert any(key in item and "--retry" in item for item in todo), todo
    ledger = up.siaga("ledger", "--unsettled")
    assert key in ledger.stdout, ledger.stdout
    listener.close()


def test_the_clock_wakes_a_suspended_run_to_escalate_and_to_time_out(up: Up) -> None:
    run_id = up.create_run("clock", requested_by="alert")
    wait(lambda: up.state(run_id) == "COMPLETED", 120, lambda: up.state(run_id) + up.log())
    assert up.run(run_id)["state"]["name"] == "Rejected"
    records = up.records()
    events = [e["kind"] for e in records.events(gate_id(run_id, "freeze"))]
    assert "escalated" in events and events[-2:] == ["timed out", "decided"], events
    asked = {e["actor"] for e in records.events(gate_id(run_id, "freeze")) if e["kind"] == "code sent"}
    assert asked == {"citra", "dewi", "eko", "fajar"}, "ops were asked once the clock escalated"
    suspended = [r for r in AuditTrail(engine(up.store)).records(f"run:{run_id}") if r.kind == "run.suspended"]
    assert suspended, "the run waited without a process"
    assert "freeze" not in up.sent(run_id)
