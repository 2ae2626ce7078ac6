"""The tamper-evident audit trail: every step, decision and message, hash-chained per incident.

`chain` is the pure part (canonical JSON, hashes, `verify`); `trail` keeps chains in Siaga's store
(`AuditTrail`); `render` draws timelines. Other parts of Siaga call `record` (or `arecord` from
async code) on the trail their entry point made (`siaga.wiring.Wiring.audit`) and handed down:

    audit.record("step.started", incident_id=incident, run_id=run, step="freeze-payouts")

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

from .chain import GENESIS, AuditRecord, Breach, canonical_json, digest, record_hash, verify
from .render import decision_rows, timeline_markdown
from .trail import AuditTrail, chain_of, read_export

__all__ = [
    "GENESIS",
    "AuditRecord",
    "AuditTrail",
    "Breach",
    "canonical_json",
    "chain_of",
    "decision_rows",
    "digest",
    "read_export",
    "record_hash",
    "timeline_markdown",
    "verify",
]
