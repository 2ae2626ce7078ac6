"""Drills in Siaga's store: each drill's score and figures, or why it was skipped; and the live
incident that makes a drill of the same runbook stand down."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from siaga.canonical import as_utc
from siaga.store import drills, incidents


def live_incident(engine: Engine, runbook_id: str) -> dict[str, Any] | None:
    """The oldest open incident of `runbook_id`, if any: a drill must not run beside it (its
    people are busy with the real thing, and its records would mix with the drill's)."""
    query = (
        select(incidents.c.id, incidents.c.opened_at, incidents.c.group_key)
        .where(incidents.c.runbook_id == runbook_id, incidents.c.state == "open")
        .order_by(incidents.c.opened_at)
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return dict(row) if row else None


class DrillRecords:
    """Reads and writes the `drills` table; a run's record is replaced if it is written again
    (a drill revived at an open gate ends, and is scored, once more)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def skipped(self, run_id: str, runbook_id: str, at: datetime, reason: str) -> None:
        self._put(run_id=run_id, runbook_id=runbook_id, state="skipped", started_at=at, ended_at=at,
                  score=None, figures={}, reason=reason)

    def scored(
        self, run_id: str, runbook_id: str, started_at: datetime, ended_at: datetime,
        score: int, figures: Mapping[str, Any],
    ) -> None:
        self._put(run_id=run_id, runbook_id=runbook_id, state="scored", started_at=started_at,
                  ended_at=ended_at, score=score, figures=dict(figures), reason=None)

    def _put(self, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(drills).where(drills.c.run_id == values["run_id"]))
            connection.execute(insert(drills).values(**values))

    def find(self, runbook_id: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Past drills, oldest first (the last `limit`)."""
        query = select(drills).order_by(drills.c.started_at.desc()).limit(limit)
        if runbook_id is not None:
            query = query.where(drills.c.runbook_id == runbook_id)
        with self.engine.connect() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        for row in rows:
            for key in ("started_at", "ended_at"):
                row[key] = as_utc(row[key])
        return rows[::-1]
