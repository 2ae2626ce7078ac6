"""The drill's ends of a runbook's flow run: stand down when the real thing is happening, open the
drill's maintenance window (`drill.maintenance`) as it starts, and score the team once the drill
is over (`siaga.drills`).

A drill that stands down ends **Completed**, in a state named ``Skipped`` (as a step a drill skips
does): nothing went wrong and nobody cancelled it; the schedule did its job, and the reason is in
the state's message, the drill record and a Markdown artifact. A Cancelled state would read as
someone stopping it, and a Failed one would page people about a drill while they handle the
incident.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import acreate_markdown_artifact
from prefect.states import Completed, State
from sqlalchemy import Engine

from siaga.approvals.records import GateRecords
from siaga.canonical import as_utc
from siaga.report.deadlines import DeadlineRecords
from siaga.drills.records import DrillRecords, live_incident
from siaga.drills.score import (
    Deadline,
    DrillFacts,
    DrillScore,
    GateFacts,
    VoiceFacts,
    report_markdown,
    score_drill,
    steps_facts,
)
from siaga.incidents.maintenance import open_window
from siaga.logs import get_logger
from siaga.runbook.comms import PUBLIC
from siaga.runbook.models import Runbook
from siaga.report.summary import RunSummary
from siaga.voices.desk import close_drill, drill_incident_id
from siaga.voices.records import VoiceRecords

log = get_logger("siaga.drills")


async def stand_down(runbook: Runbook, run_id: str, store: Engine) -> State[Any] | None:
    """The ``Skipped`` state a drill ends in while a live incident of its runbook is open (in
    `store`), with the reason recorded; None when the drill may go ahead."""
    incident = live_incident(store, runbook.id)
    if incident is None:
        return None
    opened = incident["opened_at"]
    reason = (
        f"skipped: live incident {incident['id']} of {runbook.id} is open (since "
        f"{opened:%Y-%m-%d %H:%M} UTC); drills of this runbook wait until it is resolved"
    )
    now = datetime.now(UTC)
    DrillRecords(store).skipped(run_id, runbook.id, now, reason)
    log.info("drill skipped", runbook=runbook.id, run_id=run_id, incident=incident["id"])
    await acreate_markdown_artifact(
        key=f"{runbook.id}-drill-score", markdown=f"# Drill of {runbook.id} skipped\n\n{reason}.\n", description=reason
    )
    return Completed(
        name="Skipped",
        message=reason,
        data={"runbook": runbook.id, "mode": "drill", "run_id": run_id, "ok": True, "skipped": reason, "steps": []},
    )


def open_drill_window(runbook: Runbook, run_id: str, store: Engine) -> dict[str, Any] | None:
    """The maintenance window the drill opens as it starts (`drill.maintenance`), so the alerts it
    sets off page nobody: this runbook, alerts with its `match` labels, for its `for` from now.
    One per drill run (a resumed drill finds its own); None if the runbook asks for none."""
    declared = runbook.drill.maintenance
    if declared is None:
        return None
    now = datetime.now(UTC)
    window = open_window(
        store, runbooks=[runbook.id], match=declared.match, starts_at=now, ends_at=now + declared.for_,
        reason=f"drill {run_id} of {runbook.id}", by=f"drill {run_id}", origin="drill", drill=True,
        window_id=f"drill-{run_id}", now=now,
    )
    log.info("drill maintenance window open", runbook=runbook.id, run_id=run_id, window=window["id"])
    return window


def drill_facts(
    runbook: Runbook, summary: RunSummary, started_at: datetime, ended_at: datetime, store: Engine
) -> DrillFacts:
    """The facts of a finished drill: its steps from `summary`, its gates from the `store`."""
    records = GateRecords(store)
    gates = []
    for gate in records.find(run_id=summary.run_id):
        kinds = [event["kind"] for event in records.events(gate.id)]
        gates.append(GateFacts(
            gate.step_id, as_utc(gate.opened_at), as_utc(gate.deadline),
            as_utc(gate.decided_at), gate.state,
            escalations=kinds.count("escalated"), timed_out="timed out" in kinds,
        ))
    steps = steps_facts(
        (s.step_id, s.action, runbook.step(s.step_id).with_, str(s.outcome), s.finished_at) for s in summary.steps
    )
    # the resolve steps rehearsed after the response neither page nor make the first statement
    resolving = {step.id for step in runbook.on_resolve}
    steps = [replace(f, page=False, public=False) if f.step_id in resolving else f for f in steps]
    # the audiences' statement deadlines the run kept (comms); the public one the score derives
    # from the steps and `impact.public_statement_within`, as for a runbook without comms
    deadlines = [
        Deadline(d.name, d.period, (as_utc(d.met_at) - started_at) if d.met_at else None)
        for d in DeadlineRecords(store).find(run_id=summary.run_id)
        if d.name != PUBLIC
    ]
    # the voices it answered: the mentions its window held, taken in as its own (`siaga.voices.desk`)
    voices = [
        VoiceFacts(v.id, v.due_at, v.answered_at, v.state)
        for v in VoiceRecords(store).find(incident_id=drill_incident_id(summary.run_id)) if v.due_at is not None
    ]
    return DrillFacts(
        runbook.id, summary.run_id, started_at, ended_at, steps, gates, runbook.impact.public_statement_within,
        deadlines=deadlines, voices=voices,
    )


async def score(runbook: Runbook, summary: RunSummary, started_at: datetime, store: Engine) -> DrillScore:
    """Score the drill that just ended, keep it in the `store`, and publish its report."""
    facts = drill_facts(runbook, summary, started_at, datetime.now(UTC), store)
    result = score_drill(facts)
    close_drill(store, summary.run_id)  # counted above: nobody is reminded of a drill that is over
    figures = result.figures | {"deductions": [{"points": d.points, "reason": d.reason} for d in result.deductions]}
    DrillRecords(store).scored(summary.run_id, runbook.id, facts.started_at, facts.ended_at, result.score, figures)
    log.info("drill scored", runbook=runbook.id, run_id=summary.run_id, score=result.score)
    await acreate_markdown_artifact(
        key=f"{runbook.id}-drill-score", markdown=report_markdown(facts, result),
        description=f"Drill score {result.score}/100",
    )
    return result
