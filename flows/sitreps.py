"""Situation reports at work: built from the incident's facts (`siaga.report.sitrep`), sent to the
liaison and the commander (or `comms.sitrep.to`) through their roster channels the way statement
reminders are (`reach`: Slack, then e-mail, else the outbox), and recorded in the trail
as ``sitrep.sent`` (to whom, through which channel, the text).

`siaga up` watches open incidents (`watch_sitreps`, beside the deadline watcher): a runbook with
`comms.sitrep: {every: 30m}` gets a report every 30 minutes from the incident's opening, counted
from the last report sent (one sent on demand with `siaga sitrep INCIDENT --send` counts too), for
as long as the incident is open. The clock is the store's, not a run's: the incident outlives its
runs. A stack that was down sends one report when it comes back, not every one it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from siaga.actions import ActionContext, ActionRegistry, Mode
from siaga.audit import AuditTrail
from siaga.errors import BadInput
from siaga.incidents.views import list_incidents
from siaga.logs import get_logger
from siaga.report.gather import gather
from siaga.report.sitrep import build_sitrep, recipients, sitrep_due
from siaga.report.story import tell
from siaga.runbook import Runbook, RunbookError
from siaga.secrets import REDACTOR, SecretSource
from siaga.wiring import Wiring

from .reach import reach
from .secret_blocks import prefect_secret

__all__ = ["check_sitreps", "send_sitrep", "watch_sitreps"]

log = get_logger("siaga.sitreps")

SENT = "sitrep.sent"


async def send_sitrep(
    wanted: str,
    wiring: Wiring,
    *,
    runbook: Runbook | None = None,
    registry: ActionRegistry | None = None,
    folder: Path | None = None,
    store: Engine | None = None,
    now: datetime | None = None,
    actor: str | None = None,
    channel: str = "system",
    secret_source: SecretSource | None = None,
) -> dict[str, Any]:
    """Build the situation report of incident (or chain) `wanted`, send it to its people and record
    it; returns the report and where it went. Raise BadInput when it has nobody to go to. The
    store, registry, data folder and library not given are `wiring`'s (its entry point's)."""
    registry = registry or wiring.registry
    store = store or wiring.engine
    folder = folder or wiring.folder()
    facts = await asyncio.to_thread(
        gather, store, wanted, registry=registry, runbook=runbook, folder=folder, now=now, settings=wiring.settings
    )
    report = build_sitrep(tell(facts), now)
    people = recipients(facts.runbook)
    if not people:
        raise BadInput(
            f"the situation report of {facts.chain} has nobody to go to: "
            + (" ".join(facts.notes) or "no one holds the roles of comms.sitrep.to")
        )
    try:
        roster = wiring.roster(folder)
    except RunbookError:
        roster = None
    run_id = next((r.run_id for r in reversed(facts.records) if r.run_id), None)
    text = REDACTOR.text(report.text())
    context = ActionContext(
        runbook_id=facts.runbook.id if facts.runbook else "siaga",
        step_id=f"sitrep-{report.number}",
        run_id=run_id or facts.chain,
        mode=Mode.LIVE,
        home=wiring.home,
        incident_id=facts.incident.id if facts.incident else None,
        connections=wiring.connections(folder),
        secret_source=secret_source,
    )
    sent = []
    for person in people:
        via = await reach(person, report.subject, text, registry, roster, _for(context, person))
        sent.append({"to": person, "channel": via})
    await asyncio.to_thread(
        AuditTrail(store).append,
        SENT,
        chain=facts.chain,
        incident_id=facts.incident.id if facts.incident else None,
        run_id=run_id,
        actor=actor,
        channel=channel,
        data={
            "number": report.number,
            "subject": report.subject,
            "to": people,
            "sent": sent,
            "text": text,
        },
    )
    log.info(
        "situation report sent",
        chain=facts.chain,
        number=report.number,
        to=people,
        channels=[s["channel"] for s in sent],
    )
    return {"sitrep": report.as_dict() | {"text": text}, "sent": sent}


def _for(context: ActionContext, person: str) -> ActionContext:
    return replace(context, step_id=f"{context.step_id}-{person}")


async def check_sitreps(
    runbooks: Mapping[str, Runbook],
    now: datetime | None = None,
    *,
    registry: ActionRegistry | None = None,
    folder: Path | None = None,
    store: Engine | None = None,
    secret_source: SecretSource | None = None,
    wiring: Wiring,
) -> list[str]:
    """Send the situation report owed now by every open incident whose runbook has a cadence;
    returns the incidents sent for. What is not given is `wiring`'s."""
    store = store or wiring.engine
    now = now or datetime.now(UTC)
    trail = AuditTrail(store)
    done = []
    for incident in await asyncio.to_thread(list_incidents, store, "open"):
        runbook = runbooks.get(incident["runbook_id"])
        cadence = runbook.comms.sitrep if runbook else None
        if cadence is None:
            continue
        last = await asyncio.to_thread(trail.last, incident["id"], SENT)
        if not sitrep_due(incident["opened_at"], last.at if last else None, cadence.every, now):
            continue
        try:
            await send_sitrep(
                incident["id"],
                wiring,
                runbook=runbook,
                registry=registry,
                folder=folder,
                store=store,
                now=now,
                secret_source=secret_source,
            )
        except Exception as exc:  # noqa: BLE001 - one incident's trouble must not silence the others
            log.error(
                "situation report not sent", incident=incident["id"], error=REDACTOR.text(str(exc))
            )
            continue
        done.append(incident["id"])
    return done


async def watch_sitreps(
    stop: asyncio.Event,
    runbooks: Mapping[str, Runbook],
    interval: float | None = None,
    folder: Path | None = None,
    store: Engine | None = None,
    *,
    wiring: Wiring,
) -> None:
    """Send situation reports on their runbooks' cadence every `interval` seconds (default:
    `Settings.sitrep_poll_seconds`) until `stop`; what is not given is `wiring`'s."""
    interval = interval or wiring.settings.sitrep_poll_seconds
    while not stop.is_set():
        try:
            for incident_id in await check_sitreps(
                runbooks, folder=folder, store=store, secret_source=prefect_secret, wiring=wiring
            ):
                log.info("situation report on its cadence", incident=incident_id)
        except Exception as exc:  # noqa: BLE001 - the watcher outlives a bad moment of the store
            log.error(
                "situation report watcher failed; trying again", error=REDACTOR.text(str(exc))
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
