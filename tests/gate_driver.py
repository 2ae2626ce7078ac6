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
                    if flow.name == flow_name:
                        return run.id, run.state.state_details.pause_key
            assert loop.time() < deadline, f"no paused run of {flow_name}"
            await asyncio.sleep(0.2)


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
            if state and state.type is StateType.PAUSED and state.state_details.pause_key != after_key:
                return str(state.state_details.pause_key)
            assert state is None or not state.is_final(), f"the run ended: {state}"
            assert loop.time() < deadline, "the gate did not pause again"
            await asyncio.sleep(0.1)


def events(run_id: Any, step: str) -> list[dict[str, Any]]:
    return GateRecords(engine()).events(gate_id(str(run_id), step))


def kinds(run_id: Any, step: str) -> list[str]:
    return [e["kind"] for e in events(run_id, step)]
