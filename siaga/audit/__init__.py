"""The tamper-evident audit trail: every step, decision and message, hash-chained per incident.

`chain` is the pure part (canonical JSON, hashes, `verify`); `trail` keeps chains in Siaga's store
(`AuditTrail`); `render` draws timelines. Other parts of Siaga call `record` (or `arecord` from
async code):

    record("step.started", incident_id=incident, run_id=run, step="freeze-payouts")

`record` never raises into the caller for a trail failure (a store that is down, a value that is
not JSON): the crisis run goes on, since stopping it would compound the crisis, but the loss is
loud: an ERROR log line naming the record that was not written (in siaga.jsonl and, in a flow
run, in the run's Prefect logs). Code that must not proceed unless the record is written calls
`AuditTrail.append`, which raises; with ``connection=`` the record joins the caller's transaction,
so the change and its record commit together or not at all: the receiver's incidents and gate
events are recorded that way.

Secret values known to the process are redacted before a record is hashed, so they never reach
the trail or its exports.
"""

from __future__ import annotations

import asyncio
from typing import Any

from siaga.logs import get_logger

from .chain import GENESIS, AuditRecord, Breach, canonical_json, digest, record_hash, verify
from .render import decision_rows, timeline_markdown
from .trail import AuditTrail, chain_of, read_export

__all__ = [
    "GENESIS",
    "AuditRecord",
    "AuditTrail",
    "Breach",
    "arecord",
    "canonical_json",
    "chain_of",
    "decision_rows",
    "digest",
    "read_export",
    "record",
    "record_hash",
    "timeline_markdown",
    "trail",
    "verify",
]

log = get_logger("siaga.audit")


def trail() -> AuditTrail:
    """The trail in this process's store (`siaga.store.engine()`)."""
    from siaga.store import engine

    return AuditTrail(engine())


def record(
    kind: str,
    *,
    incident_id: str | None,
    run_id: str | None = None,
    actor: str | None = None,
    channel: str | None = None,
    **data: Any,
) -> None:
    """Append a record to the incident's chain (the run's, without an incident). Logs an error
    instead of raising if the trail cannot take it."""
    try:
        trail().append(kind, incident_id=incident_id, run_id=run_id, actor=actor, channel=channel, data=data)
    except Exception as exc:  # noqa: BLE001 (said loudly below; the run goes on)
        log.error(
            "audit record NOT written",
            kind=kind,
            chain=chain_of(incident_id, run_id),
            error=f"{type(exc).__name__}: {exc}",
        )


async def arecord(
    kind: str,
    *,
    incident_id: str | None,
    run_id: str | None = None,
    actor: str | None = None,
    channel: str | None = None,
    **data: Any,
) -> None:
    """`record` from async code, off the event loop (an append may wait for the store's lock)."""
    await asyncio.to_thread(
        record, kind, incident_id=incident_id, run_id=run_id, actor=actor, channel=channel, **data
    )
