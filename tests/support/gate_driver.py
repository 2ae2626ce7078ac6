"""Driving approval gates from a test as people would: read the codes they were sent (the outbox,
their only channel here) and vote through the ledger (as `siaga approve` does) or through the
run's Resume form (as the Prefect UI does)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

from siaga.approvals.records import Gate, GateRecords, Submission, gate_id
from siaga.approvals.runs import RunRecords
from siaga.approvals.seal import ledger_key
from siaga.integrations.outbox import read_outbox
from siaga.settings import Settings
from siaga.store import engine

ROSTER = """
people:
  alice: {name: Alice Wibowo, roles: [commander]}
  citra: {name: Citra Lestari, roles: [finance]}
  dewi: {name: Dewi Anggraini, roles: [finance]}
  eko: {name: Eko Prasetyo, roles: [ops]}
  fajar: {name: Fajar Nugroho, roles: [ops]}
"""


def code_for(home: Path, person: str, run_id: Any, step: str, decision: str = "approve") -> str:
    """The one-time `decision` code `person` was sent for `step` of run `run_id` (the last one sent)."""
    label = "To APPROVE" if decision == "approve" else "To REJECT"
    found = [
        m.group(1)
        for entry in read_outbox(home)
        if entry["to"] == f"person:{person}" and str(run_id) in entry["message"] and f"step `{step}`" in entry["message"]
        for m in [re.search(label + r", your one-time code: (\d{8})", entry["message"])]
        if m
    ]
    assert found, f"no {decision} code was sent to {person} for {step}"
    return found[-1]


def ledger(store_url: str | None = None) -> GateRecords:
    """The decision ledger in `store_url` (default: the session's store), with the key of the seals
    the settings of the session name."""
    settings = Settings.from_environ(os.environ)
    return GateRecords(engine(store_url or settings.store_url), ledger_key(None, settings))


async def open_gate(run_id: Any, step: str, *people: str, timeout: float = 60, store_url: str | None = None) -> Gate:
    """The gate at `step` of the run, once it is open and `people` were sent their codes."""
    records = ledger(store_url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        gate = records.get(gate_id(str(run_id), step))
        if gate is not None and gate.is_open and set(people) <= records.holders_of_codes(gate.id):
            return gate
        assert loop.time() < deadline, f"the gate at {step} did not open (it is {gate and gate.state})"
        await asyncio.sleep(0.1)


async def run_of(flow_name: str, timeout: float = 60) -> UUID:
    """The newest run of `flow_name` once Prefect has it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with get_client() as client:
        while True:
            for run in await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC):
                if (await client.read_flow(run.flow_id)).name == flow_name:
                    return run.id
            assert loop.time() < deadline, f"no run of {flow_name}"
            await asyncio.sleep(0.1)


async def parked(run_id: Any, timeout: float = 60, after_key: str | None = None, store_url: str | None = None) -> str:
    """The key of the pause the run waits in with its Resume form up (a new one after `after_key`)."""
    runs = RunRecords(engine(store_url or Settings.from_environ(os.environ).store_url))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(UUID(str(run_id)))).state
            key = state.state_details.pause_key if state and state.type is StateType.PAUSED else None
            record = runs.get(str(run_id))
            if key and key != after_key and record is not None and record.form_key == key:
                return key
            assert state is None or not state.is_final(), f"the run ended: {state}"
            assert loop.time() < deadline, "the run did not wait with its form"
            await asyncio.sleep(0.1)


async def answer(run_id: Any, step: str, person: str, code: str, decision: str = "approve", comment: str = "") -> Any:
    """Resume the run through its form, as the UI does; returns the server's response."""
    async with get_client() as client:
        return await client.resume_flow_run(
            UUID(str(run_id)),
            run_input={"step": step, "decision": decision, "approver": person, "code": code, "comment": comment},
        )


def vote(
    run_id: Any, step: str, person: str, code: str, decision: str = "approve", *, comment: str = "",
    store_url: str | None = None,
) -> Submission:
    """A vote as `siaga approve` casts it: straight to the ledger."""
    records = ledger(store_url)
    return records.submit(gate_id(str(run_id), step), person, decision, code, channel="cli",  # type: ignore[arg-type]
                          comment=comment)


def events(run_id: Any, step: str) -> list[dict[str, Any]]:
    return ledger().events(gate_id(str(run_id), step))


def kinds(run_id: Any, step: str) -> list[str]:
    return [e["kind"] for e in events(run_id, step)]


async def approve_every_gate(home: Path, runbook_id: str, stop: asyncio.Event, store_url: str | None = None) -> int:
    """Approve every gate of `runbook_id`'s runs as its people would (each person asked, in turn,
    approves with the code they were sent, through the ledger as `siaga approve` does) until
    `stop` is set; returns how many answers."""
    records = ledger(store_url)
    answered = 0
    done: set[tuple[str, str]] = set()
    while not stop.is_set():
        for gate in await asyncio.to_thread(records.find, state="open"):
            if gate.runbook_id != runbook_id:
                continue
            voted = {v.person for v in records.votes(gate)}
            asked = [e["actor"] for e in records.events(gate.id) if e["kind"] == "code sent"]
            person = next((p for p in asked if p not in voted and (gate.id, p) not in done), None)
            if person is None:
                continue
            done.add((gate.id, person))
            records.submit(gate.id, person, "approve", code_for(home, person, gate.run_id, gate.step_id), channel="cli")
            answered += 1
        await asyncio.sleep(0.2)
    return answered


async def with_approvals(home: Path, runbook_id: str, work: Any, store_url: str | None = None) -> Any:
    """Await `work` (a run of `runbook_id`) while its gates are approved as people would."""
    stop = asyncio.Event()
    approver = asyncio.create_task(approve_every_gate(home, runbook_id, stop, store_url))
    try:
        return await work
    finally:
        stop.set()
        await approver


def approving_in_background(home: Path, runbook_id: str, store_url: str | None = None) -> Any:
    """A context manager approving `runbook_id`'s gates from a thread, for runs in other processes."""
    import contextlib
    import contextvars
    import threading

    @contextlib.contextmanager
    def running() -> Any:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        context = contextvars.copy_context()  # Prefect's settings (the API URL) live in contextvars
        result: dict[str, Any] = {}

        def go() -> None:
            result["answers"] = loop.run_until_complete(approve_every_gate(home, runbook_id, stop, store_url))

        thread = threading.Thread(target=context.run, args=(go,), daemon=True)
        thread.start()
        try:
            yield result
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=30)

    return running()
