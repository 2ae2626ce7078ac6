"""What the clock changes, not an alert: one pass of the receiver's watcher.

In order: open the runbooks' recurring maintenance windows due (`maintenance.schedule_declared`);
release the alerts held by windows that have ended (`maintenance.release_ended`); mark the
heartbeats past due quiet and record their alerts, and the alerts of heartbeats back
(`heartbeats.check`, recorded by `recording.process_batch` as any alert). Every part is safe to run
on several receivers at once, and again after a crash half-way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from siaga.runbook import Runbook

from . import heartbeats, maintenance
from .recording import process_batch

__all__ = ["Watched", "watch_once"]


@dataclass
class Watched:
    """What one pass did, in lines for people (`siaga up` prints them)."""

    opened: list[str] = field(default_factory=list)
    """Incidents opened (a heartbeat gone quiet, an alert a window no longer holds)."""
    resolved: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)


def watch_once(engine: Engine, runbooks: Mapping[str, Runbook], now: datetime, watching_since: datetime) -> Watched:
    """One pass at `now`, of a watcher that started at `watching_since`."""
    watched = Watched()
    for window in maintenance.schedule_declared(engine, runbooks, now):
        watched.said.append(f"maintenance window {window['id']} set: {window['reason']} "
                            f"({window['starts_at']:%Y-%m-%d %H:%M} to {window['ends_at']:%H:%M} UTC)")
    for release in maintenance.release_ended(engine, runbooks, now):
        watched.opened += release.opened
        watched.said.append(
            f"maintenance window {release.window_id} ended: {release.routed} alerts still firing routed again"
            + (f", incidents opened: {', '.join(release.opened)}" if release.opened else "")
            + (f"; held by {', '.join(release.held_again)}" if release.held_again else "")
        )
    spells = heartbeats.check(engine, runbooks, now, watching_since)
    if spells:
        outcomes = process_batch(engine, runbooks, [spell.alert for spell in spells], now)
        heartbeats.mark_reported(engine, spells)
        for spell, outcome in zip(spells, outcomes, strict=True):
            watched.opened += outcome.opened
            watched.resolved += outcome.resolved
            what = spell.alert.annotations.get("summary", spell.alert.fingerprint)
            if outcome.opened:
                watched.said.append(f"incident {', '.join(outcome.opened)} opened: {what}")
            elif outcome.resolved:
                watched.said.append(f"incident {', '.join(outcome.resolved)} resolved: {what}")
            elif outcome.suppressed:
                watched.said.append(f"{what}: held back by maintenance window {', '.join(outcome.suppressed)}")
    return watched
