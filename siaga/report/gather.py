"""Gather the facts of an incident (the I/O side of the reports): its audit chain, its row, its
gates, statement deadlines and voices (new ones taken in first, so the figures are current) from
Siaga's store, and its runbook (targets, steps and the line of each step) from the runbook folder. Every value passes through the process's `REDACTOR` here,
before anything renders it: the trail is redacted when written, but the redactor of this process
may know secrets the writer did not (and gate evidence holds rendered parameters).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from siaga.actions import ActionRegistry
from siaga.approvals.records import GateRecords
from siaga.audit import AuditTrail
from siaga.report.deadlines import DeadlineRecords
from siaga.errors import BadInput
from siaga.report.incident import IncidentNotFound, find_incident_id
from siaga.incidents.views import get_incident
from siaga.runbook import Runbook, RunbookError, load_runbook, runbook_files
from siaga.runbook.roster import Roster, role_members
from siaga.runbook.source import YamlSyntaxError, read_yaml
from siaga.secrets import REDACTOR
from siaga.settings import Settings
from siaga.team import find_roster
from siaga.voices import VoiceFigures, voice_figures
from siaga.voices.intake import take_in
from siaga.voices.records import VoiceRecords

from .facts import DeadlineInfo, GateInfo, IncidentFacts, IncidentInfo, RunbookInfo, StepInfo

__all__ = ["find_chain", "gather", "learn_environment_secrets", "runbook_info"]


def find_chain(engine: Engine, wanted: str) -> str:
    """The audit chain `wanted` names: an incident id (or a unique start of one), or
    ``run:<flow run id>``. Raise BadInput when there is none."""
    trail = AuditTrail(engine)
    if trail.count(wanted):
        return wanted
    started = [chain for chain in trail.chains() if chain.startswith(wanted)]
    if len(started) == 1:
        return started[0]
    try:
        found = find_incident_id(engine, wanted)
    except IncidentNotFound:
        if wanted.startswith("run:"):
            raise BadInput(f"no audit records for {wanted}") from None
        raise
    if not trail.count(found):
        raise BadInput(f"no audit records for {found} yet")
    return found


def gather(
    engine: Engine,
    wanted: str,
    *,
    registry: ActionRegistry,
    folder: Path,
    runbook: Runbook | None = None,
    runbook_path: Path | None = None,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> IncidentFacts:
    """The facts of incident (or chain) `wanted`, redacted. The runbook is read from the runbook
    `folder` unless given, with the roster `settings` name, its actions checked against `registry`."""
    chain = find_chain(engine, wanted)
    now = now or datetime.now(UTC)
    row = None if chain.startswith("run:") else get_incident(engine, chain)
    incident = _incident(row) if row else None
    records = [] if incident else AuditTrail(engine).records(chain)
    runbook_id = (
        incident.runbook_id
        if incident
        else next(
            (
                str(r.data["runbook"])
                for r in records
                if r.kind == "run.started" and r.data.get("runbook")
            ),
            None,
        )
    )
    roster = _roster(folder, settings)
    if runbook is None and runbook_id:
        runbook, runbook_path = _load(runbook_id, folder, registry, roster)
    elif runbook is not None and runbook_path is None:
        runbook_path = _file_of(runbook.id, folder)
    voices = _voices(engine, incident, runbook, roster, now)  # takes new voices in: before the trail is read
    if incident:
        records = AuditTrail(engine).records(chain)
    head = records[-1].hash if records else ""
    notes = []
    if runbook is None:
        why = (
            "is not in"
            if runbook_path is None
            else f"does not validate ({runbook_path}), see `siaga validate`; it is not read from"
        )
        notes.append(
            f"The runbook {runbook_id or '(unknown)'} {why} the runbook folder {folder}: "
            "its targets and step lines are missing here (give --runbooks DIR)."
        )
    if chain.startswith("run:"):
        gates = GateRecords(engine).find(run_id=chain.removeprefix("run:"))
        deadlines = DeadlineRecords(engine).find(run_id=chain.removeprefix("run:"))
    else:
        gates = GateRecords(engine).find(incident_id=chain)
        deadlines = DeadlineRecords(engine).find(incident_id=chain)
    facts = IncidentFacts(
        chain=chain,
        generated_at=now,
        records=[replace(r, actor=REDACTOR(r.actor), data=REDACTOR(dict(r.data))) for r in records],
        head=head,
        incident=incident,
        runbook=runbook_info(runbook, runbook_path, roster) if runbook else None,
        gates=[
            GateInfo(
                step_id=g.step_id,
                run_id=g.run_id,
                state=g.state,
                opened_at=g.opened_at,
                deadline=g.deadline,
                decided_at=g.decided_at,
                decision=REDACTOR(g.decision),
                approvers=list(g.approvers or []),
                params_hash=g.params_hash,
                level=g.level,
                action=g.evidence.get("action"),
                rule=REDACTOR(g.evidence.get("rule")),
                params=REDACTOR(g.evidence.get("params")),
            )
            for g in gates
        ],
        deadlines=[
            DeadlineInfo(
                name=d.name,
                opened_at=d.opened_at,
                due_at=d.due_at,
                state=d.state,
                met_at=d.met_at,
                met_by=d.met_by,
                reminders=d.reminders,
                escalated=d.escalated,
                events=REDACTOR(list(d.events)),
            )
            for d in deadlines
        ],
        risks={spec.name: str(spec.risk) for spec in registry},
        notes=notes,
        voices=voices,
    )
    return facts


def runbook_info(runbook: Runbook, path: Path | None, roster: Roster | None = None) -> RunbookInfo:
    """What the reports need of a runbook: its targets, and each step with its line in `path`."""
    lines: dict[tuple[str, int], int] = {}
    phases = [
        ("respond", "steps", list(runbook.steps)),
        ("resolve", "on_resolve", list(runbook.on_resolve)),
    ]
    if path is not None:
        try:
            doc = read_yaml(path.read_text(encoding="utf-8"), str(path))
            lines = {
                (key, i): doc.positions.of((key, i))[0]
                for _, key, steps in phases
                for i in range(len(steps))
            }
        except (OSError, UnicodeDecodeError, YamlSyntaxError):
            lines = {}
    impact = runbook.impact
    sitrep = runbook.comms.sitrep
    return RunbookInfo(
        id=runbook.id,
        title=runbook.title,
        severity=str(runbook.severity),
        services=list(impact.services),
        max_tolerable_downtime_s=impact.max_tolerable_downtime.total_seconds()
        if impact.max_tolerable_downtime
        else None,
        public_statement_within_s=(
            impact.public_statement_within.total_seconds()
            if impact.public_statement_within
            else None
        ),
        chain_of_command=list(runbook.chain_of_command),
        roles={role: role_members(runbook, role, roster) for role in runbook.roles},
        file=str(path) if path else None,
        steps=[
            StepInfo(
                id=s.id,
                action=s.action,
                gated=s.approval is not None,
                undo=s.undo.action if s.undo else None,
                file=str(path) if path else None,
                line=lines.get((key, i)),
                phase=phase,
            )
            for phase, key, steps in phases
            for i, s in enumerate(steps)
        ],
        sitrep_every_s=sitrep.every.total_seconds() if sitrep else None,
        sitrep_to=list(sitrep.to) if sitrep else [],
    )


def learn_environment_secrets(environ: Mapping[str, str] | None = None) -> int:
    """Teach this process's redactor every secret in the environment (``SIAGA_SECRET_*``), so that
    a command that resolves none of them (`siaga report`) still keeps them out of what it writes;
    returns how many."""
    environ = os.environ if environ is None else environ
    found = 0
    for variable, value in environ.items():
        if variable.startswith("SIAGA_SECRET_") and value:
            name = variable.removeprefix("SIAGA_SECRET_").lower().replace("_", "-")
            REDACTOR.add(name, value)
            found += 1
    return found


def _incident(row: Mapping[str, Any]) -> IncidentInfo:
    return IncidentInfo(
        id=row["id"],
        runbook_id=row["runbook_id"],
        state=row["state"],
        severity=row.get("severity"),
        group_key=row["group_key"],
        opened_at=row["opened_at"],
        resolved_at=row.get("resolved_at"),
        inputs=REDACTOR(dict(row.get("inputs") or {})),
    )


def _voices(
    engine: Engine, incident: IncidentInfo | None, runbook: Runbook | None, roster: Roster | None, now: datetime
) -> VoiceFigures | None:
    """The incident's voices in figures, the newest mentions taken in first; None when its
    runbook answers none and none was taken in."""
    if incident is None:
        return None
    if runbook is not None and runbook.voices is not None:
        take_in(engine, {runbook.id: runbook}, roster=roster)  # on the real clock: `now` may be a report's
    found = VoiceRecords(engine).find(incident_id=incident.id)
    if not found and (runbook is None or runbook.voices is None):
        return None
    return voice_figures(found, now)


def _roster(folder: Path, settings: Settings | None) -> Roster | None:
    try:
        return find_roster(folder, settings)
    except RunbookError:
        return None


def _file_of(runbook_id: str, folder: Path) -> Path | None:
    """The file in `folder` that holds runbook `runbook_id` (by its name, else by its `runbook:`)."""
    named = [folder / f"{runbook_id}.yaml", folder / f"{runbook_id}.yml"]
    candidates = [p for p in named if p.is_file()] + (
        runbook_files(folder) if folder.is_dir() else []
    )
    for path in candidates:
        try:
            doc = read_yaml(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError, YamlSyntaxError):
            continue
        if isinstance(doc.data, Mapping) and doc.data.get("runbook") == runbook_id:
            return path
    return None


def _load(
    runbook_id: str, folder: Path, registry: ActionRegistry, roster: Roster | None
) -> tuple[Runbook | None, Path | None]:
    path = _file_of(runbook_id, folder)
    if path is None:
        return None, None
    try:
        return load_runbook(path, registry, roster), path
    except RunbookError:
        return None, path
