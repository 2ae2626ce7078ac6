"""Driving approval gates from a test as people would: read the codes they were sent (the outbox,
their only channel here) and answer through Prefect's resume API, then wait for the gate to move."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.input import keyset_from_base_key
from prefect.input.actions import aread_flow_run_input

from siaga.approvals.records import GateRecords, gate_id
from siaga.integrations.outbox import read_outbox
from siaga.store import engine

ROSTER = """
people:
  alice: {name: Alice Wibowo, roles: [commander]}
  citra: {name: Citra Lestari, roles: [finance]}
  dewi: {name: Dewi Anggraini, roles: [finance]}
  eko: {name: Eko Prasetyo, roles: [ops]}
  fajar: {name: Fajar Nugroho, roles: [ops]}
"""


def code_for(home: Path, person: str, run_id: Any, step: str) -> str:
    """The one-time code `person` was sent for `step` of run `run_id` (the last one sent)."""
    found = [
        m.group(1)
        for entry in read_outbox(home)
        if entry["to"] == f"person:{person}" and str(run_id) in entry["message"] and f"step `{step}`" in entry["message"]
        for m in [re.search(r"one-time code: (\d{8})", entry["message"])]
        if m
    ]
    assert found, f"no code was sent to {person} for {step}"
    return found[-1]


async def paused_run(flow_name: str, timeout: float = 60) -> tuple[UUID, str]:
    """The paused run of `flow_name` and the key of its pause, once the form is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_flow_runs()
            for run in runs:
                if run.state and run.state.type is StateType.PAUSED and run.state.state_details.pause_key:
                    flow = await client.read_flow(run.flow_id)
                    key = run.state.state_details.pause_key
                    if flow.name == flow_name and await form_saved(run.id, key):
                        return run.id, key
            assert loop.time() < deadline, f"no paused run of {flow_name}"
            await asyncio.sleep(0.2)


async def form_saved(run_id: UUID, pause_key: str) -> bool:
    """Whether the paused run has saved the form of pause `pause_key` (it does so just after pausing)."""
    return await aread_flow_run_input(keyset_from_base_key(f"paused-{pause_key}")["schema"], flow_run_id=run_id) is not None


async def answer(run_id: UUID, person: str, code: str, decision: str = "approve", comment: str = "") -> Any:
    """Resume the paused run with an answer, as the UI does; returns the server's response."""
    async with get_client() as client:
        return await client.resume_flow_run(
            run_id, run_input={"decision": decision, "approver": person, "code": code, "comment": comment}
        )


async def next_pause(run_id: UUID, after_key: str, timeout: float = 30) -> str:
    """Wait until the run pauses again with a new form (the gate considered the last answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(run_id)).state
            key = state.state_details.pause_key if state and state.type is StateType.PAUSED else None
            if key and key != after_key and await form_saved(run_id, key):
                return key
            assert state is None or not state.is_final(), f"the run ended: {state}"
            assert loop.time() < deadline, "the gate did not pause again"
            await asyncio.sleep(0.1)


def events(run_id: Any, step: str) -> list[dict[str, Any]]:
    return GateRecords(engine()).events(gate_id(str(run_id), step))


def kinds(run_id: Any, step: str) -> list[str]:
    return [e["kind"] for e in events(run_id, step)]


async def approve_every_gate(home: Path, runbook_id: str, stop: asyncio.Event, store_url: str | None = None) -> int:
    """Answer every gate of `runbook_id`'s runs as its people would (each person asked, in turn,
    approves with the code they were sent) until `stop` is set; returns how many answers."""
    records = GateRecords(engine(store_url))
    answered = 0
    done: set[tuple[str, str]] = set()
    async with get_client() as client:
        while not stop.is_set():
            for gate in records.find(state="open"):
                if gate.runbook_id != runbook_id or (gate.id, gate.pause_key or "") in done:
                    continue
                state = (await client.read_flow_run(UUID(gate.run_id))).state
                if not (state and state.type is StateType.PAUSED and state.state_details.pause_key == gate.pause_key):
                    continue
                voted = {v.person for v in records.votes(gate.id)}
                asked = [e["actor"] for e in records.events(gate.id) if e["kind"] == "code sent"]
                person = next((p for p in asked if p not in voted), None)
                if person is None:
                    continue
                await answer(UUID(gate.run_id), person, code_for(home, person, gate.run_id, gate.step_id))
                done.add((gate.id, gate.pause_key or ""))
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
