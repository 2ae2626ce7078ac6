"""What a report is built from: the facts of one incident (or of one run without an incident), as
plain values gathered once (`gather.py`), so that every report is a pure function of them.

The facts are JSON round-trippable (`as_json`, `from_json`): a recorded fact set is a test
fixture, and a report can be rebuilt anywhere from one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from siaga.audit.chain import AuditRecord
from siaga.canonical import utc_iso

__all__ = ["DeadlineInfo", "GateInfo", "IncidentFacts", "IncidentInfo", "RunbookInfo", "StepInfo"]


@dataclass(frozen=True)
class StepInfo:
    """A step as the runbook writes it, and where (for lessons that point at the line)."""

    id: str
    action: str
    gated: bool = False
    undo: str | None = None
    file: str | None = None
    line: int | None = None
    phase: str = "respond"
    """``respond`` (the runbook's `steps`) or ``resolve`` (its `on_resolve`)."""

    @property
    def place(self) -> str | None:
        """``runbooks/x.yaml:42``, when the runbook file is known."""
        return f"{self.file}:{self.line}" if self.file and self.line else None


@dataclass(frozen=True)
class RunbookInfo:
    """The runbook's targets and steps (as it reads now, from its file)."""

    id: str
    title: str
    severity: str
    services: list[str] = field(default_factory=list)
    max_tolerable_downtime_s: float | None = None
    public_statement_within_s: float | None = None
    chain_of_command: list[str] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)
    file: str | None = None
    steps: list[StepInfo] = field(default_factory=list)
    sitrep_every_s: float | None = None
    sitrep_to: list[str] = field(default_factory=list)

    def step(self, step_id: str) -> StepInfo | None:
        return next((s for s in self.steps if s.id == step_id), None)


@dataclass(frozen=True)
class IncidentInfo:
    """The incident's row in the store."""

    id: str
    runbook_id: str
    state: str
    severity: str | None
    group_key: str
    opened_at: datetime
    resolved_at: datetime | None = None
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateInfo:
    """One approval gate (its row in the store; the votes are in the trail)."""

    step_id: str
    run_id: str
    state: str  # open | approved | rejected | timed_out | failed | cancelled
    opened_at: datetime
    deadline: datetime
    decided_at: datetime | None
    decision: str | None
    approvers: list[str]
    params_hash: str
    level: int
    action: str | None = None
    rule: str | None = None
    params: Any = None


@dataclass(frozen=True)
class DeadlineInfo:
    """A statement deadline and whether it was met."""

    name: str
    opened_at: datetime
    due_at: datetime
    state: str  # pending | met | missed
    met_at: datetime | None = None
    met_by: str | None = None
    reminders: int = 0
    escalated: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class IncidentFacts:
    """Everything a post-incident report or a situation report says, gathered at `generated_at`."""

    chain: str
    generated_at: datetime
    records: list[AuditRecord]
    head: str
    incident: IncidentInfo | None = None
    runbook: RunbookInfo | None = None
    gates: list[GateInfo] = field(default_factory=list)
    deadlines: list[DeadlineInfo] = field(default_factory=list)
    risks: dict[str, str] = field(default_factory=dict)
    """Each action's risk (read, notify, change, destructive): `notify` actions send messages."""
    notes: list[str] = field(default_factory=list)
    """What the facts lack, said in the report (a runbook that could not be read...)."""

    def as_json(self) -> dict[str, Any]:
        return _jsonable(
            {
                "chain": self.chain,
                "generated_at": self.generated_at,
                "head": self.head,
                "records": [r.as_json() for r in self.records],
                "incident": asdict(self.incident) if self.incident else None,
                "runbook": asdict(self.runbook) if self.runbook else None,
                "gates": [asdict(g) for g in self.gates],
                "deadlines": [asdict(d) for d in self.deadlines],
                "risks": dict(self.risks),
                "notes": list(self.notes),
            }
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IncidentFacts:
        runbook = data.get("runbook")
        incident = data.get("incident")
        return cls(
            chain=data["chain"],
            generated_at=_time(data["generated_at"]),
            head=data["head"],
            records=[AuditRecord.from_json(r) for r in data["records"]],
            incident=IncidentInfo(**_times(incident, "opened_at", "resolved_at"))
            if incident
            else None,
            runbook=RunbookInfo(**{**runbook, "steps": [StepInfo(**s) for s in runbook["steps"]]})
            if runbook
            else None,
            gates=[
                GateInfo(**_times(g, "opened_at", "deadline", "decided_at"))
                for g in data.get("gates", [])
            ],
            deadlines=[
                DeadlineInfo(**_times(d, "opened_at", "due_at", "met_at"))
                for d in data.get("deadlines", [])
            ],
            risks=dict(data.get("risks") or {}),
            notes=list(data.get("notes") or []),
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _times(values: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {k: (_time(v) if k in names and v is not None else v) for k, v in values.items()}
