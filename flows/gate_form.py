"""The Prefect UI's Resume form: a channel that submits votes to the decision ledger.

A run waiting at its gates is paused (or suspended) with one form for all its open gates: the
step, the decision, the person and their code. What a person submits there is stored by Prefect,
which anyone can rewrite; so the form is only a way in: the answer is submitted to the ledger
like any other vote, where the code must prove the person, the decision and the binding. The
form itself is checked too: if its description or schema in Prefect is not what Siaga wrote, the
answer given in it does not count (the person may have read forged evidence).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from prefect.input import RunInput, keyset_from_base_key
from prefect.input.actions import aread_flow_run_input
from pydantic import Field, create_model

from siaga.approvals.codes import CODE_PATTERN
from siaga.approvals.evidence import GateView, form_description
from siaga.approvals.records import Gate, GateRecords, Submission, gate_id
from siaga.approvals.runs import RunRecords
from siaga.canonical import digest
from siaga.logs import get_logger
from siaga.runbook import Roster

log = get_logger("siaga.gates")

FORM_POLL = 0.5
"""How often a run holding its pause looks for an answer (Prefect's own default is 10 s)."""
RECENT_ANSWERS = 6
OUTSIDE_RESUME = "resumed through Prefect's API, not by Siaga: nothing changes"
"""How a run records a resume that carried no answer and that Siaga did not ask for."""


@dataclass(frozen=True)
class Form:
    """A Resume form: its model (with the description as initial data) and the pause it is for."""

    model: type[RunInput]
    description: str
    key: str = ""


def build_form(run_id: str, gates: Sequence[Gate], records: GateRecords, roster: Roster | None, now: datetime) -> Form:
    """The form of a run waiting at `gates`: it offers only the steps that wait and the people
    whose vote can still count at one of them."""
    views, people = [], {}
    for gate in gates:
        may = {p: _name(roster, p) for p in records.can_still_count(gate, now)}
        people.update(may)
        votes = [f"{_name(roster, v.person)} {v.choice}d at {v.at:%H:%M:%S}" for v in records.votes(gate)]
        views.append(GateView(gate.step_id, gate.mode, gate.deadline, gate.evidence, may, votes))
    first = gates[0]
    description = form_description(
        title=first.evidence.get("title", first.runbook_id), runbook_id=first.runbook_id,
        incident_id=first.incident_id, gates=views, answers=recent_answers(records, gates, roster),
    )
    steps = tuple(g.step_id for g in gates)
    model = create_model(
        "ApprovalDecision",
        __base__=RunInput,
        step=(Literal[steps], Field(description="The step you decide.", json_schema_extra=_listed)),  # type: ignore[valid-type]
        decision=(Literal["approve", "reject"], Field(description="Approve or reject that step.")),
        approver=(Literal[tuple(people) or ("nobody",)], Field(  # type: ignore[misc]
            description="Who you are (your roster id).", json_schema_extra=_listed)),
        code=(str, Field(pattern=CODE_PATTERN, description="Your 8-digit APPROVE or REJECT code, as you decide.")),
        comment=(str, Field(default="", max_length=2000, description="Why (kept in the record).")),
    )
    return Form(model.with_initial_data(description=description), description)


async def save_form(run_id: str, keyset: dict[str, str], form: Form) -> str:
    """Save the form for the pause of `keyset` (after the run paused: Prefect 3.9 clears a pause's
    inputs when the run enters it) and return the hash of the form as Prefect now holds it."""
    run = uuid.UUID(run_id)
    await form.model.asave(keyset, flow_run_id=run)
    return await _form_hash(run, keyset)


async def take_answer(run_id: str, key: str, records: GateRecords, runs: RunRecords) -> Submission | None:
    """Submit the answer given in the form of pause `key` to the ledger (once per pause); None if
    there is none to take (the run was resumed without one: through Prefect's API, not Siaga)."""
    record = runs.get(run_id)
    if record is None or record.answered_key == key:
        return None
    if not runs.update(run_id, answered_key=key, only_if={"answered_key": record.answered_key}):
        return None  # another start of this run took it
    run = uuid.UUID(run_id)
    keyset = keyset_from_base_key(f"paused-{key}")
    answer = await aread_flow_run_input(keyset["response"], flow_run_id=run)
    if not isinstance(answer, dict):
        return None
    step, person = _text(answer.get("step")), _text(answer.get("approver"))
    gate = records.get(gate_id(run_id, step))
    if gate is None:  # not a step the form offered: the stored answer was rewritten
        log.warning("an answer for no gate of this run: nothing counted", run_id=run_id, step=step)
        return None
    if record.form_key == key and record.form_hash and await _form_hash(run, keyset) != record.form_hash:
        records.event(gate, "refused", actor=person, channel="ui", decision=_text(answer.get("decision")),
                      reason="the form was changed through Prefect's API after Siaga wrote it: an answer given "
                             "in it does not count; read the evidence with `siaga approvals`")
        return None
    decision = _text(answer.get("decision"))
    return records.submit(
        gate.id, person, decision, _text(answer.get("code")), channel="ui",  # type: ignore[arg-type]
        comment=_text(answer.get("comment")),
    )


def recent_answers(records: GateRecords, gates: Sequence[Gate], roster: Roster | None) -> list[str]:
    """What became of the latest answers at these gates, newest first: counted or refused and why."""
    seen: list[tuple[Any, str]] = []
    for gate in gates:
        for event in records.events(gate.id):
            if event["kind"] in ("approved", "rejected", "refused") and event["actor"]:
                who = _name(roster, event["actor"])
                said = (f"{who}'s {'approval' if event['kind'] == 'approved' else 'rejection'} of "
                        f"{gate.step_id} counted" if event["kind"] != "refused" else
                        f"{who}'s answer on {gate.step_id} was refused: {event['detail'].get('reason')}")
                seen.append((event["at"], f"{event['at']:%H:%M:%S} {said} ({event['channel']})"))
    return [text for _, text in sorted(seen, key=lambda pair: pair[0], reverse=True)[:RECENT_ANSWERS]]


async def _form_hash(run: uuid.UUID, keyset: dict[str, str]) -> str:
    schema = await aread_flow_run_input(keyset["schema"], flow_run_id=run)
    description = await aread_flow_run_input(keyset["description"], flow_run_id=run)
    return digest({"schema": schema, "description": description})


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _listed(schema: dict[str, Any]) -> None:
    """Keep a single allowed value a one-item list: pydantic writes `Literal["x"]` as
    `{"const": "x"}`, which Prefect's v1 UI shows as an empty read-only field, and its Submit
    then sends nothing."""
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]


def _name(roster: Roster | None, person: str) -> str:
    return roster.name_of(person) if roster else person
