"""Gates from a terminal: list the open ones with their evidence, and vote (`siaga approve`): a
channel that submits to the decision ledger directly, and reports the outcome at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from siaga.approvals.evidence import GateView, gate_section
from siaga.approvals.records import Gate, GateRecords, Submission
from siaga.errors import BadInput


def open_gates(records: GateRecords) -> list[dict[str, Any]]:
    """Every open gate: run, step, whose vote can still count, deadline, evidence, link."""
    now = datetime.now(UTC)
    rows = []
    for gate in records.find(state="open"):
        if gate.policy is None:
            continue
        may = records.can_still_count(gate, now)
        votes = records.votes(gate)
        view = GateView(gate.step_id, gate.mode, gate.deadline, gate.evidence, {p: p for p in may},
                        [f"{v.person} {v.choice}d at {v.at:%H:%M:%S}" for v in votes])
        rows.append({
            "run_id": gate.run_id,
            "incident": gate.incident_id,
            "runbook": gate.runbook_id,
            "step": gate.step_id,
            "action": gate.evidence.get("action"),
            "mode": gate.mode,
            "may_approve": sorted(may),
            "decided": sorted(v.person for v in votes),
            "rule": gate.evidence.get("rule"),
            "deadline": gate.deadline.isoformat(),
            "url": _opened_at_url(records, gate),
            "evidence": "\n".join(gate_section(view)),
        })
    return rows


def _opened_at_url(records: GateRecords, gate: Gate) -> str:
    """The run's link on the server that holds it, as the run itself wrote it when the gate opened
    (a `--local` run's temporary server is known only to that run)."""
    opened = next((e for e in records.events(gate.id) if e["kind"] == "opened"), None)
    url = (opened or {}).get("detail", {}).get("url")
    if url:
        return str(url)
    from .links import flow_run_url  # Prefect's settings: imported only when the gate did not say

    return flow_run_url(gate.run_id)


def find_gate(records: GateRecords, reference: str, step: str) -> Gate:
    """The open gate at `step` of the run (or incident) `reference`."""
    found = [g for g in records.find(state="open", run_id=reference)] or [
        g for g in records.find(state="open", incident_id=reference)
    ]
    at_step = [g for g in found if g.step_id == step]
    if not at_step:
        here = ", ".join(sorted(f"{g.step_id} (run {g.run_id})" for g in records.find(state="open"))) or "none"
        raise BadInput(f"no open gate at step `{step}` of `{reference}` (open gates: {here})")
    return at_step[-1]


def answer_gate(
    records: GateRecords, reference: str, step: str, person: str, code: str, *, reject: bool = False, comment: str = "",
) -> Submission:
    """Vote at the gate at `step` of run or incident `reference` as `person`: the ledger's answer
    (counted, decided, or refused and why) comes back at once."""
    gate = find_gate(records, reference, step)
    return records.submit(
        gate.id, person, "reject" if reject else "approve", code, channel="cli", comment=comment
    )


async def announce_gates(
    run_id: UUID | str, echo: Any, every: float = 1.0, *, records: GateRecords, home: Path,
) -> None:
    """Tell the person following a run what each of its gates is waiting for (until cancelled), from
    `records`, codes sent to the outbox in the data folder `home`."""
    told: set[int] = set()
    while True:
        for gate in await asyncio.to_thread(records.find, run_id=str(run_id)):
            for event in await asyncio.to_thread(records.events, gate.id):
                if event["id"] in told:
                    continue
                told.add(event["id"])
                line = _announcement(gate, event, home)
                if line:
                    echo(line)
        await asyncio.sleep(every)


def _announcement(gate: Gate, event: dict[str, Any], home: Path) -> str | None:
    kind, actor, detail = event["kind"], event["actor"], event["detail"]
    step = f"gate at `{gate.step_id}`"
    if kind == "opened":
        return (f"Waiting at the {step}: {detail.get('rule')}. Deadline {gate.deadline:%H:%M:%S} UTC. "
                f"Decide in the UI ({detail.get('url')}: Resume) or with "
                f"`siaga approve {gate.run_id} {gate.step_id} --as ID --code CODE [--reject]`.")
    if kind == "code sent":
        where = f"the outbox ({_outbox_path(home)})" if event["channel"] == "outbox" else event["channel"]
        return f"  approve and reject codes for {actor} went to {where}"
    if kind in ("approved", "rejected", "refused", "escalated", "timed out", "decided", "skipped", "cancelled",
                "voided", "binding changed"):
        about = actor or ", ".join(detail.get("roles", [])) or ""
        reason = detail.get("reason") or detail.get("comment") or ""
        return f"  {step}: {kind} {about}{': ' + reason if reason else ''}".rstrip()
    return None


def _outbox_path(home: Path) -> Path:
    from siaga.integrations.outbox import outbox_path  # the actions: imported only when a code went there

    return outbox_path(home)
