"""Threshold counting: the firing alerts each threshold trigger took, by group, kept in
`threshold_hits` and counted with an index over the trigger's window.

Why not count recent alerts: a scan of every recent alert per new alert grows with the square of a
storm (500 / 1,000 / 2,000 alerts took 2.4 / 15 / 88 s, holding the write lock). A hit row is
written when a threshold trigger takes a new firing alert (whichever route decides it), so
counting a group is one index range over (runbook, trigger, group, received_at): linear in the
alerts it counts. Groups are keyed by the SHA-256 of their group key, so a hostile label value
cannot outgrow an index entry.

Hits count from the moment a runbook's trigger exists: alerts recorded before it was added (or
changed) are not counted. Rows older than every window are deleted (`prune`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, insert, select

from siaga.runbook import Runbook
from siaga.store import as_utc, threshold_hits

from .routing import Route

__all__ = ["HitKey", "hit_key", "hit_row", "load", "longest_window", "prune", "write"]

HitKey = tuple[str, int, str]
"""What a threshold counts over: (runbook id, trigger index, group hash)."""


def hit_key(route: Route) -> HitKey:
    return route.runbook_id, route.trigger_index, hashlib.sha256(route.group_key.encode("utf-8")).hexdigest()


def hit_row(route: Route, alert_id: int, now: datetime) -> dict[str, object]:
    """The row that says `route`'s threshold took alert `alert_id` at `now`."""
    runbook_id, trigger_index, group_hash = hit_key(route)
    return {"runbook_id": runbook_id, "trigger_index": trigger_index, "group_hash": group_hash,
            "alert_id": alert_id, "received_at": now}


def load(connection: Connection, counted: Iterable[Route], now: datetime) -> dict[HitKey, dict[int, datetime]]:
    """The hits within the window ending at `now` of each threshold route in `counted`: alert id ->
    when it arrived, one entry per route's key (empty when nothing counted yet). One query per
    trigger (per 500 groups), each an index range."""
    found: dict[HitKey, dict[int, datetime]] = {}
    by_trigger: dict[tuple[str, int], tuple[timedelta, set[str]]] = {}
    for route in counted:
        assert route.threshold is not None
        key = hit_key(route)
        found.setdefault(key, {})
        by_trigger.setdefault(key[:2], (route.threshold.within, set()))[1].add(key[2])
    for (runbook_id, trigger_index), (within, groups) in by_trigger.items():
        ordered = sorted(groups)
        for start in range(0, len(ordered), 500):
            rows = connection.execute(
                select(threshold_hits.c.group_hash, threshold_hits.c.alert_id, threshold_hits.c.received_at).where(
                    threshold_hits.c.runbook_id == runbook_id,
                    threshold_hits.c.trigger_index == trigger_index,
                    threshold_hits.c.group_hash.in_(ordered[start : start + 500]),
                    threshold_hits.c.received_at >= now - within,
                    threshold_hits.c.received_at <= now,
                )
            )
            for group_hash, alert_id, received_at in rows:
                found[(runbook_id, trigger_index, group_hash)][alert_id] = as_utc(received_at) or now
    return found


def write(connection: Connection, rows: list[dict[str, object]]) -> None:
    for start in range(0, len(rows), 500):
        connection.execute(insert(threshold_hits), rows[start : start + 500])


def longest_window(runbooks: Mapping[str, Runbook]) -> timedelta:
    """The longest threshold window of any trigger (zero when none counts)."""
    windows = [t.threshold.within for r in runbooks.values() for t in r.triggers if t.threshold is not None]
    return max(windows, default=timedelta(0))


def prune(engine: Engine, before: datetime) -> int:
    """Delete the hits that arrived before `before` (outside every window); return how many."""
    with engine.begin() as connection:
        return connection.execute(delete(threshold_hits).where(threshold_hits.c.received_at < before)).rowcount
