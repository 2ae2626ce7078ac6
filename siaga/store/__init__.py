"""Siaga's own store, in three modules: its tables (`tables`), its database, engine and migrations
(`database`, `migrations`), and the singletons' lease (`lease`). Import what they define from
``siaga.store``.

SQLite in WAL mode under the data folder by default, any SQLAlchemy URL (PostgreSQL for scale-out)
through ``SIAGA_DATABASE_URL``."""

from __future__ import annotations

from siaga.canonical import as_utc  # the store's readers convert the times they read with it

from .database import (
    BASELINE,
    current_revision,
    engine,
    insert_ignoring,
    migrate,
    StoreError,
    upgrade,
    write_transaction,
)
from .tables import (
    alerts,
    audit_records,
    comms_deadlines,
    deliveries,
    drills,
    gate_codes,
    gate_events,
    gates,
    heartbeats,
    inbox,
    incident_alerts,
    incidents,
    maintenance_windows,
    metadata,
    run_starts,
    runbook_revisions,
    runs,
    side_effects,
    sns_subscriptions,
    suppressed_alerts,
    threshold_hits,
    voice_alerts,
    voice_drafts,
    voices,
)

__all__ = [
    "as_utc",
    "BASELINE", "current_revision", "engine", "insert_ignoring", "migrate", "StoreError", "upgrade", "write_transaction",
    "alerts", "audit_records", "comms_deadlines", "deliveries", "drills", "gate_codes", "gate_events", "gates", "heartbeats", "inbox", "incident_alerts", "incidents", "maintenance_windows", "metadata", "run_starts", "runbook_revisions", "runs", "side_effects", "sns_subscriptions", "suppressed_alerts", "threshold_hits", "voice_alerts", "voice_drafts", "voices",
]
