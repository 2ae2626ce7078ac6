"""Whether a flow run may start (or start again): Siaga checks what Prefect hands it.

Anyone who reaches Prefect's API can create runs, rewrite a run's parameters, force its state or
resume it. So every start of a runbook's flow run is admitted here first:

- a live run with approval gates must name who asked for it (`requested_by`: the receiver and
  `siaga run` always do), since the person who asks never approves;
- its first start pins its parameters (`siaga.approvals.runs`); a later start (a resume from a
  suspension) with other parameters or another mode is refused, and its gates close as voided;
- a run that was cancelled, however it was cancelled (its Prefect state history says so, or
  Siaga recorded it), or that already ended, never runs again;
- a resume Siaga did not ask for and that carries no answer is recorded as such; it changes
  nothing, since every gate decides from the ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prefect import get_client
from prefect.client.schemas.objects import StateType

from siaga.approvals.records import GateRecords
from siaga.approvals.runs import RunRecords
from siaga.audit import AuditTrail
from siaga.canonical import digest

from .gate_form import OUTSIDE_RESUME, take_answer


@dataclass(frozen=True)
class Admission:
    """``start`` (first start), ``resume`` (a start after a suspension), or ``cancelled`` /
    ``refused`` / ``ended`` (the run must not run: `reason` says why)."""

    verdict: Literal["start", "resume", "cancelled", "refused", "ended"]
    reason: str = ""

    @property
    def runs(self) -> bool:
        return self.verdict in ("start", "resume")


async def admit(
    run_id: str, runbook_id: str, parameters: Mapping[str, Any], *, mode: str, requester: str | None,
    incident_id: str | None, gated: bool, runs: RunRecords, records: GateRecords, audit: AuditTrail,
    revision: str | None = None,
) -> Admission:
    """Admit this start of run `run_id` (with all its flow parameters; `gated` if its steps have
    approval gates; executing runbook `revision`, pinned at its first start), or say why not; a
    refusal or resume is recorded in `audit`."""
    trail = {"incident_id": incident_id, "run_id": run_id, "runbook": runbook_id}
    if mode == "live" and gated and not requester:
        reason = ("a live run with approval gates must say who asked for it (the parameter requested_by): the person who asks "
                  "never approves its gates; runs started by the receiver or `siaga run` name one")
        runs.pin(run_id=run_id, runbook_id=runbook_id, incident_id=incident_id, mode=mode, requester=None,
                 params_hash=digest(dict(parameters)), revision=revision)
        runs.end(run_id, "refused", reason)
        await audit.arecord("run.refused", **trail, reason=reason)
        return Admission("refused", reason)
    record, first = runs.pin(run_id=run_id, runbook_id=runbook_id, incident_id=incident_id, mode=mode,
                             requester=requester, params_hash=digest(dict(parameters)), revision=revision)
    if first:
        return Admission("start")
    if record.state in ("cancelled", "refused", "ended"):
        reason = f"this run {record.state if record.state != 'ended' else 'has ended'}" + (
            f" ({record.note})" if record.note else "") + ": Siaga does not run it again; start a new run"
        await audit.arecord("run.refused", **trail, reason=reason, channel="prefect-api")
        return Admission("ended" if record.state == "ended" else record.state, reason)  # type: ignore[arg-type]
    cancelled = await _cancelled_in_prefect(run_id)
    if cancelled:
        reason = f"the run was cancelled ({cancelled}); Siaga does not start it again"
        runs.end(run_id, "cancelled", reason)
        records.close_for_run(run_id, "cancelled", reason)
        await audit.arecord("run.refused", **trail, reason=reason)
        return Admission("cancelled", reason)
    if record.params_hash != digest(dict(parameters)):
        was = f" (mode {record.mode} -> {mode})" if record.mode != mode else ""
        reason = (f"its parameters were changed through Prefect's API after it started{was}: refused; the "
                  "votes cast for it no longer count; start a new run")
        runs.end(run_id, "refused", reason)
        records.close_for_run(run_id, "voided", reason)
        await audit.arecord("run.refused", **trail, reason=reason, channel="prefect-api")
        return Admission("refused", reason)
    if record.wake_requested_at is not None:
        how, channel = "woken by Siaga", "system"
    elif record.form_key and await take_answer(run_id, record.form_key, records, runs) is not None:
        how, channel = "resumed from its Resume form", "ui"
    else:
        how, channel = OUTSIDE_RESUME, "prefect-api"
    runs.update(run_id, state="running", wake_requested_at=None, waiting_on=None)
    await audit.arecord("run.resumed", **trail, how=how, channel=channel)
    return Admission("resume", how)


async def _cancelled_in_prefect(run_id: str) -> str | None:
    """The cancellation in the run's Prefect state history, if there is one."""
    try:
        key = uuid.UUID(run_id)
    except ValueError:
        return None
    async with get_client() as client:
        states = await client.read_flow_run_states(key)
    for state in states:
        if state.type in (StateType.CANCELLED, StateType.CANCELLING):
            return f"{state.name} at {state.timestamp:%Y-%m-%d %H:%M:%S} UTC" + (f": {state.message}" if state.message else "")
    return None
