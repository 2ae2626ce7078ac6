"""Gates from a terminal: list the open ones, and answer one through Prefect's resume API, the
same path as the UI's Resume dialog, so the gate in the run checks and records it the same way
(and notes the CLI as the channel)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.input.actions import acreate_flow_run_input
from siaga.integrations.outbox import outbox_path

from siaga.approvals.records import Gate, GateRecords
from siaga.errors import BadInput, StackUnavailable
from siaga.home import siaga_home
from siaga.store import engine

from .gates import CHANNEL_KEY
from .links import flow_run_url


@dataclass(frozen=True)
class Answered:
    """What the gate made of an answer: its record, and the gate afterwards."""

    kind: str  # approved | rejected | refused
    reason: str
    gate: Gate


def open_gates() -> list[dict[str, Any]]:
    """Every open gate: run, step, who may still answer, deadline, link to its evidence."""
    records = GateRecords(engine())
    rows = []
    for gate in records.find(state="open"):
        events = records.events(gate.id)
        voted = {e["actor"] for e in events if e["kind"] in ("approved", "rejected")}
        locked = {e["actor"] for e in events if e["kind"] == "locked out"}
        asked = [e["actor"] for e in events if e["kind"] == "code sent"]
        rows.append({
            "run_id": gate.run_id,
            "incident": gate.incident_id,
            "runbook": gate.runbook_id,
            "step": gate.step_id,
            "action": gate.evidence.get("action"),
            "mode": gate.mode,
            "may_approve": [p for p in dict.fromkeys(asked) if p not in voted | locked],
            "decided": sorted(voted),
            "rule": gate.evidence.get("rule"),
            "deadline": gate.deadline.isoformat(),
            "url": flow_run_url(gate.run_id),
        })
    return rows


def find_gate(reference: str, step: str) -> Gate:
    """The open gate at `step` of the run (or incident) `reference`."""
    records = GateRecords(engine())
    found = [g for g in records.find(state="open", run_id=reference)] or [
        g for g in records.find(state="open", incident_id=reference)
    ]
    at_step = [g for g in found if g.step_id == step]
    if not at_step:
        here = ", ".join(sorted(f"{g.step_id} (run {g.run_id})" for g in records.find(state="open"))) or "none"
        raise BadInput(f"no open gate at step `{step}` of `{reference}` (open gates: {here})")
    return at_step[-1]


def answer_gate(
    reference: str, step: str, person: str, code: str, *, reject: bool = False, comment: str = "", timeout: float = 60
) -> Answered:
    """Answer the gate at `step` of run or incident `reference` as `person`; wait for the gate's
    verdict on it."""
    return asyncio.run(_answer(find_gate(reference, step), person, code, reject, comment, timeout))


async def _answer(gate: Gate, person: str, code: str, reject: bool, comment: str, timeout: float) -> Answered:
    records = GateRecords(engine())
    seen = len(records.events(gate.id))
    run_id = UUID(gate.run_id)
    deadline = time.monotonic() + timeout
    body = {"decision": "reject" if reject else "approve", "approver": person, "code": code, "comment": comment}
    try:
        async with get_client() as client:
            while True:  # the run may be between two pauses while the gate records another answer
                run = await client.read_flow_run(run_id)
                state = run.state
                key = state.state_details.pause_key if state is not None and state.type is StateType.PAUSED else None
                recorded = records.get(gate.id)
                if key and recorded is not None and recorded.pause_key == key:  # its form is up
                    await acreate_flow_run_input(key=CHANNEL_KEY.format(key=key), value="cli", flow_run_id=run_id)
                    response = await client.resume_flow_run(run_id, run_input=body)
                    if response.status.value == "ACCEPT":
                        break
                    reason = getattr(response.details, "reason", "") or str(response.details)
                    if "schema" in reason.lower() or "validation" in reason.lower() or "input" in reason.lower():
                        raise BadInput(f"the gate's form refused the answer: {reason}")
                elif state is not None and state.is_final():
                    raise BadInput(f"the run has ended ({state.name}): the gate is closed")
                if time.monotonic() > deadline:
                    raise StackUnavailable(f"the run did not wait at the gate within {timeout:.0f}s: {flow_run_url(run_id)}")
                await asyncio.sleep(0.3)
    except ObjectNotFound:
        raise BadInput(f"run {gate.run_id} is not on this Prefect server") from None
    while True:  # the gate records what it made of the answer
        events = records.events(gate.id)[seen:]
        mine = [e for e in events if e["actor"] == person and e["kind"] in ("approved", "rejected", "refused")]
        if mine:
            event = mine[0]
            after = records.get(gate.id)
            assert after is not None
            return Answered(event["kind"], str(event["detail"].get("reason") or ""), after)
        if time.monotonic() > deadline:
            raise StackUnavailable("the gate did not record the answer in time: is the run still alive?")
        await asyncio.sleep(0.2)


async def announce_gates(run_id: UUID | str, echo: Any, every: float = 1.0) -> None:
    """Tell the person following a run what each of its gates is waiting for (until cancelled)."""
    records = GateRecords(engine())
    told: set[int] = set()
    while True:
        for gate in records.find(run_id=str(run_id)):
            for event in records.events(gate.id):
                if event["id"] in told:
                    continue
                told.add(event["id"])
                line = _announcement(gate, event)
                if line:
                    echo(line)
        await asyncio.sleep(every)


def _announcement(gate: Gate, event: dict[str, Any]) -> str | None:
    kind, actor, detail = event["kind"], event["actor"], event["detail"]
    step = f"gate at `{gate.step_id}`"
    if kind == "opened":
        return (f"Waiting at the {step}: {detail.get('rule')}. Deadline {gate.deadline:%H:%M:%S} UTC. "
                f"Decide in the UI ({detail.get('url')}: Resume) or with "
                f"`siaga approve {gate.run_id} {gate.step_id} --as ID --code CODE`.")
    if kind == "code sent":
        where = f"the outbox ({outbox_path(siaga_home())})" if event["channel"] == "outbox" else event["channel"]
        return f"  a one-time code for {actor} went to {where}"
    if kind in ("approved", "rejected", "refused", "escalated", "timed out", "decided", "revived"):
        about = actor or ", ".join(detail.get("roles", [])) or ""
        reason = detail.get("reason") or detail.get("comment") or ""
        return f"  {step}: {kind} {about}{': ' + reason if reason else ''}".rstrip()
    return None
