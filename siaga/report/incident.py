"""One incident in detail, for `siaga incident ID`: what the store holds (alerts, approval gates),
its run and its resolve run as the Prefect API sees them, and a timeline of it all.

The store is read directly (no receiver needed); the run's state is read over HTTP from the
Prefect API named by ``PREFECT_API_URL`` (set by `siaga up`'s stack.json), without importing
Prefect, so the command answers in well under a second. With no stack up, the report says so and
still shows everything the store knows.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from siaga.approvals.records import GateRecords
from siaga.approvals.revisions import Revisions
from siaga.audit import AuditTrail
from siaga.canonical import as_utc
from .deadlines import DeadlineRecords
from siaga.errors import BadInput
from siaga.incidents.views import get_incident
from siaga.audit.ledger import Ledger
from siaga.store import incidents

__all__ = [
    "IncidentNotFound", "find_incident_id", "gates_of", "incident_report", "next_actions", "run_url",
    "timeline",
]

GATE_TIMELINE = {"opened", "approved", "rejected", "escalated", "timed out", "decided", "cancelled"}
"""The gate events a timeline shows (codes sent, refusals and the like stay in the audit trail)."""


class IncidentNotFound(BadInput):
    """No incident has that id; the message names the nearest ones."""


def find_incident_id(engine: Engine, wanted: str) -> str:
    """The id `wanted` names: itself, or the one id it is a unique prefix of. Raise
    IncidentNotFound with the nearest ids as a hint."""
    with engine.connect() as connection:
        ids = connection.execute(select(incidents.c.id)).scalars().all()
    if wanted in ids:
        return wanted
    prefixed = [i for i in ids if i.startswith(wanted)]
    if len(prefixed) == 1:
        return prefixed[0]
    near = prefixed[:5] or difflib.get_close_matches(wanted, ids, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ("; `siaga incidents` lists them" if ids else "; none is recorded yet")
    raise IncidentNotFound(f"no incident {wanted}{hint}")


def run_url(flow_run_id: str, api_url: str | None, ui_url: str | None = None) -> str:
    """The Prefect UI page of a flow run (as `siaga.flows.running.flow_run_url` builds it): under
    `ui_url` (``PREFECT_UI_URL``), else the UI beside `api_url`."""
    ui = ui_url or (api_url or "http://127.0.0.1:4200/api").rstrip("/").removesuffix("/api")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"


def gates_of(engine: Engine, incident_id: str, api_url: str | None, ui_url: str | None = None) -> list[dict[str, Any]]:
    """The incident's approval gates, oldest first: step, state, who approved and who rejected,
    the deadline, the link to the waiting run, and the events the timeline shows."""
    records = GateRecords(engine)
    found = []
    for gate in records.find(incident_id=incident_id):
        events = records.events(gate.id)
        voted = {kind: [e["actor"] for e in events if e["kind"] == kind and e["actor"]] for kind in ("approved", "rejected")}
        found.append({
            "step": gate.step_id,
            "run_id": gate.run_id,
            "action": gate.evidence.get("action"),
            "state": gate.state,
            "approved_by": gate.approvers if gate.approvers else voted["approved"],
            "rejected_by": voted["rejected"],
            "opened_at": as_utc(gate.opened_at),
            "deadline": as_utc(gate.deadline),
            "decided_at": as_utc(gate.decided_at),
            "decision": gate.decision,
            "url": run_url(gate.run_id, api_url, ui_url),
            "events": [
                {"at": as_utc(e["at"]), "kind": e["kind"], "actor": e["actor"], "decision": e["detail"].get("decision")}
                for e in events if e["kind"] in GATE_TIMELINE
            ],
        })
    return found


def _gate_event(step: str, event: Mapping[str, Any]) -> str:
    said = f"gate {step}: {event['kind']}" + (f" by {event['actor']}" if event["actor"] else "")
    return said + (f": {event['decision']}" if event["kind"] == "decided" and event.get("decision") else "")


def timeline(
    incident: Mapping[str, Any],
    run: Mapping[str, Any] | None,
    gates: Sequence[Mapping[str, Any]] = (),
    resolve_run: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """What happened, oldest first: alerts received and resolved, the incident opened, its run
    created, started and ended (when the Prefect API told), its gates opened and decided, the
    incident resolved, and its resolve run."""
    events: list[tuple[datetime, int, str]] = []
    # a firing alert marked resolved tells when; its resolved notification would say it twice
    closed = {(a["source"], a["fingerprint"]) for a in incident["alert_list"] if a["resolved_at"]}
    for a in incident["alert_list"]:
        name = a["labels"].get("alertname") or a["fingerprint"]
        said = f"{a['source']} alert {name} ({a['fingerprint']})"
        if a["status"] != "resolved":
            events.append((a["received_at"], 0, f"{said} received, firing"))
            if a["resolved_at"]:
                events.append((a["resolved_at"], 0, f"{said} resolved"))
        elif (a["source"], a["fingerprint"]) not in closed:
            events.append((a["received_at"], 0, f"{said} resolved"))
    events.append((incident["opened_at"], 1, f"incident opened ({incident['runbook_id']}, group {incident['group_key']})"))
    run = run or {}
    if incident.get("flow_run_id"):
        if run.get("created"):
            events.append((run["created"], 2, f"run {run.get('name') or incident['flow_run_id']} created"))
        if run.get("start_time"):
            events.append((run["start_time"], 3, "run started"))
        if run.get("end_time"):
            events.append((run["end_time"], 4, f"run ended: {run.get('state')}"))
    for gate in gates:
        for event in gate["events"]:
            events.append((event["at"], 4, _gate_event(gate["step"], event)))
    if incident.get("resolved_at"):
        events.append((incident["resolved_at"], 5, "incident resolved"))
    resolve_run = resolve_run or {}
    if incident.get("resolve_run_id"):
        if resolve_run.get("created"):
            events.append((resolve_run["created"], 6, f"resolve run {resolve_run.get('name') or incident['resolve_run_id']} created"))
        if resolve_run.get("start_time"):
            events.append((resolve_run["start_time"], 7, "resolve run started"))
        if resolve_run.get("end_time"):
            events.append((resolve_run["end_time"], 8, f"resolve run ended: {resolve_run.get('state')}"))
    events.sort(key=lambda e: (e[0], e[1]))
    return [{"at": at, "event": what} for at, _, what in events]


def incident_report(
    engine: Engine, wanted: str, api_url: str | None, now: datetime | None = None, *, ui_url: str | None = None,
    read_run: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Everything `siaga incident` shows, as plain data (what ``--json`` prints); links to runs
    under `ui_url` (``PREFECT_UI_URL``), else beside `api_url`. `read_run` reads a flow run's state
    and times from Prefect (`siaga.flows.running.read_run`), or ``{"error": why}``."""
    incident_id = find_incident_id(engine, wanted)
    incident = get_incident(engine, incident_id)
    if incident is None:  # deleted between the two reads
        raise IncidentNotFound(f"no incident {wanted}")
    now = now or datetime.now(UTC)
    end = incident["resolved_at"] or now
    report = dict(incident)
    report["age_seconds"] = round((end - incident["opened_at"]).total_seconds(), 3)
    run: dict[str, Any] | None = None
    if incident["flow_run_id"]:
        run = {"id": incident["flow_run_id"], "url": run_url(incident["flow_run_id"], api_url, ui_url)}
        run |= read_run(incident["flow_run_id"])
        run["revision"] = Revisions(engine).of_run(incident["flow_run_id"])
    report["run"] = run
    resolve_run: dict[str, Any] | None = None
    if incident["resolve_run_id"]:
        resolve_run = {"id": incident["resolve_run_id"], "url": run_url(incident["resolve_run_id"], api_url, ui_url)}
        resolve_run |= read_run(incident["resolve_run_id"])
        resolve_run["revision"] = Revisions(engine).of_run(incident["resolve_run_id"])
    report["resolve_run"] = resolve_run
    report["gates"] = gates_of(engine, incident_id, api_url, ui_url)
    report["deadlines"] = [d.as_dict() for d in DeadlineRecords(engine).find(incident_id=incident_id)]
    report["timeline"] = timeline(incident, run, report["gates"], resolve_run)
    report["next"] = next_actions(engine, incident_id, report["gates"])
    return report


def next_actions(engine: Engine, incident_id: str, gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a person must do now about the incident's runs: a run that died or was refused, a
    side effect of unknown outcome to settle (its whole ledger key), a step people rejected."""
    todo = []
    for record in AuditTrail(engine).records(incident_id):
        if record.kind in ("run.died", "run.refused"):
            todo.append(f"run {record.run_id} {'died' if record.kind == 'run.died' else 'was refused'}: "
                        f"{record.data.get('reason')}")
            todo += [f"  then {item}" for item in record.data.get("next") or ()]
    for entry in Ledger(engine).entries(unsettled=True):
        if entry.key.startswith(f"{incident_id}:"):
            todo.append(f"settle {entry.key} ({entry.action}, outcome unknown): check the provider, then "
                        f"`siaga ledger --resolve {entry.key} --done` (it took effect) or `--retry`")
    for gate in gates:
        if gate["state"] in ("rejected", "timed_out"):
            todo.append(f"step {gate['step']} was {gate['state'].replace('_', ' ')} "
                        f"({gate.get('decision') or 'no reason given'}): not done; start the runbook again "
                        "if it is still needed")
    return todo


def labels_summary(labels: Mapping[str, str], width: int = 80) -> str:
    """``k=v, k=v`` cut to `width` characters (alertname first; it is in the alert column)."""
    text = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
    return text if len(text) <= width else text[: width - 1] + "…"
