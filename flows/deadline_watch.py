"""Statement deadlines at work: opened when a run starts, met when a `comms.publish` goes out, and
watched by `siaga up`, which reminds the liaison and escalates a miss up the chain of command.

Why a watcher in `siaga up` and not the run: a run ends when its steps are done (minutes), while a
regulator's deadline may be days away, and a statement may go out from a later run of the same
incident. The clock belongs to the incident, so it lives in Siaga's store and a service of the
stack (next to the run watcher of `wakeups.py`) looks at it every few seconds; a stack restarted
meanwhile sends what is owed then (the latest reminder only, see `siaga.report.deadlines.due`).

Drills: a drill's deadlines run on the drill's own clock, and its reminders carry ``[DRILL]``; when
the drill run ends, deadlines it did not meet are recorded missed (nobody is told of a drill that
is over) so that the drill's record says whether the team made it.

The same watcher keeps the voices' clocks (`voice_clocks`: a deadline per mention to answer), on
the same rule.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from siaga.actions import DRILL_PREFIX, ActionContext, ActionRegistry, Mode
from siaga.canonical import as_utc
from siaga.report.deadlines import Deadline, DeadlineRecords, Due, due
from siaga.logs import get_logger
from siaga.runbook import Roster, Runbook, role_members
from siaga.runbook.comms import PUBLISH_ACTION, audiences_meeting, statement_deadlines
from siaga.wiring import Wiring

from .reach import reach
from .secret_blocks import prefect_secret

log = get_logger("siaga.report.deadlines")

LIAISON = "liaison"


def open_deadlines(
    runbook: Runbook, roster: Roster | None, *, run_id: str, mode: str, incident: Mapping[str, Any] | None,
    started_at: datetime, store: DeadlineRecords,
) -> list[str]:
    """Start the clock of each statement deadline of `runbook` for this incident (or, without
    one, this run) at the incident's opening, in `store`; the names of those started now."""
    incident_id = str((incident or {}).get("id") or "") or None
    opened_at = _when((incident or {}).get("opened_at")) or started_at
    chain = [role_members(runbook, role, roster) for role in runbook.chain_of_command]
    liaison = role_members(runbook, LIAISON, roster) or (chain[0] if chain else [])
    started = []
    for name, within in statement_deadlines(runbook).items():
        if store.open(
            subject=incident_id or run_id, name=name, incident_id=incident_id, run_id=run_id, runbook_id=runbook.id,
            mode=mode, opened_at=opened_at, within=within, people={"liaison": liaison, "chain": chain},
        ):
            started.append(name)
    return started


def statement_sent(
    step_id: str, action: str, output: Any, context: ActionContext, store: DeadlineRecords
) -> list[str]:
    """After a step: if it published a statement, meet the deadlines of its audience (in `store`)."""
    if action != PUBLISH_ACTION or not isinstance(output, Mapping):
        return []
    audience = output.get("audience") or (((output.get("params") or {}).get("draft") or {}).get("audience"))
    if not audience:
        return []
    names = [audience, *(["public"] if audience in audiences_meeting("public") else [])]
    return store.meet(context.incident_id or context.run_id, names, at=datetime.now(UTC), step=step_id)


async def check_deadlines(
    now: datetime | None = None,
    *,
    registry: ActionRegistry | None = None,
    folder: Path | None = None,
    store: DeadlineRecords | None = None,
    wiring: Wiring,
) -> list[tuple[str, Due]]:
    """Send what is owed now on every unsettled deadline; returns (deadline id, what was done).
    What is not given is `wiring`'s (its entry point's)."""
    registry = registry or wiring.registry
    folder = folder or wiring.folder()
    records = store or DeadlineRecords(wiring.engine)
    now = now or datetime.now(UTC)
    roster = wiring.roster(folder)
    connections = wiring.connections(folder)
    done = []
    for deadline in records.find(unsettled=True):
        owed = due(deadline, now)
        if owed is None:
            continue
        if owed.kind == "miss" and not records.miss(deadline, now):
            continue  # met (or missed by another watcher) meanwhile
        people, subject, text = _message(deadline, owed, now, roster)
        sent = []
        for person in people:
            context = ActionContext(
                runbook_id=deadline.runbook_id, step_id=f"deadline-{deadline.name}-{owed.kind}{owed.level}-{person}",
                run_id=deadline.run_id, mode=Mode.LIVE, home=wiring.home, incident_id=deadline.incident_id,
                connections=connections, secret_source=prefect_secret,
            )
            sent.append({"to": person, "channel": await reach(person, subject, text, registry, roster, context)})
        counters = {"reminders": owed.level} if owed.kind == "remind" else {"escalated": owed.level}
        kind = {"remind": "reminded", "miss": "missed", "escalate": "escalated"}[owed.kind]
        records.note(deadline, kind, at=now, level=owed.level, sent=sent, **counters)
        done.append((deadline.id, owed))
    return done


def _message(deadline: Deadline, owed: Due, now: datetime, roster: Roster | None) -> tuple[list[str], str, str]:
    who = f"{deadline.name} (public: customers or media)" if deadline.name == "public" else deadline.name
    about = f"incident {deadline.incident_id}" if deadline.incident_id else f"run {deadline.run_id}"
    due_at = f"{deadline.due_at:%Y-%m-%d %H:%M:%S} UTC"
    prefix = DRILL_PREFIX if deadline.mode == "drill" else ""
    if owed.kind == "remind":
        left = deadline.due_at - now
        people = list(deadline.people.get("liaison") or [])
        subject = f"{prefix}Statement to {deadline.name} due {due_at}"
        text = (
            f"{prefix}A statement to {who} for {about} ({deadline.runbook_id}) is due by {due_at}, "
            f"in {int(left.total_seconds() // 60)} minutes; none has been published. Draft it and have it "
            "approved (comms.draft, then the comms.publish gate): `siaga approvals` lists what waits."
        )
        return people, subject, text
    chain = deadline.people.get("chain") or []
    people = list(chain[owed.level - 1]) if owed.level <= len(chain) else []
    subject = f"{prefix}Statement deadline MISSED: {deadline.name}, {deadline.runbook_id}"
    text = (
        f"{prefix}No statement to {who} for {about} ({deadline.runbook_id}) was published by its deadline "
        f"{due_at}. The liaison was reminded {deadline.reminders} time(s). You are level {owed.level} of the "
        "chain of command: get the statement approved and out now, or decide who does."
    )
    return people, subject, text


async def watch_deadlines(
    stop: asyncio.Event, interval: float | None = None, folder: Path | None = None,
    runbooks: Mapping[str, Runbook] | None = None, *, wiring: Wiring,
) -> None:
    """Check the statement deadlines, and the voices' (taking new voices of `runbooks` in,
    `voice_clocks`), every `interval` seconds (default: `Settings.deadline_poll_seconds`) until
    `stop` is set (the runbook `folder` has the roster and connections that reach people; the rest
    is `wiring`'s, its entry point's)."""
    from .voice_clocks import (
        check_voice_deadlines,  # it imports this module's neighbours: kept lazy
    )

    interval = interval or wiring.settings.deadline_poll_seconds
    while not stop.is_set():
        try:
            for deadline_id, owed in await check_deadlines(folder=folder, wiring=wiring):
                log.info("statement deadline acted on", deadline=deadline_id, kind=owed.kind, level=owed.level)
        except Exception as exc:  # noqa: BLE001 - the watcher outlives a bad moment of the store
            log.error("deadline watcher failed; trying again", error=str(exc))
        try:
            await check_voice_deadlines(runbooks=runbooks, folder=folder, secret_source=prefect_secret, wiring=wiring)
        except Exception as exc:  # noqa: BLE001 - likewise
            log.error("voice deadline watcher failed; trying again", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        found = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return as_utc(found)
