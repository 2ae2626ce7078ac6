"""The runs Siaga executes, as Siaga saw them: what Prefect says of a run is checked against this.

Prefect OSS lets any client rewrite a run's parameters, force its state or resume it. So when a
run first starts, Siaga pins it here (its parameters' hash, mode, requester); every later start of
the same run (a resume from a suspension) must match, a run once cancelled stays cancelled, and a
run waiting at its gates without a process is woken from here by `siaga up` (``wake_at`` for the
clock, ``wake_requested_at`` when Siaga itself resumed it, so that a resume it did not ask for is
recorded as such).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from siaga.canonical import as_utc
from siaga.store import runs

ENDED = ("cancelled", "refused", "ended")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    runbook_id: str
    incident_id: str | None
    mode: str
    requester: str | None
    params_hash: str
    state: str  # running | waiting | cancelled | refused | ended
    started_at: datetime
    updated_at: datetime
    form_key: str | None
    form_hash: str | None
    answered_key: str | None
    waiting_on: list[str] | None
    wake_at: datetime | None
    wake_requested_at: datetime | None
    note: str | None
    revision: str | None = None
    """The runbook revision it executes (`siaga.approvals.revisions`); None for runs pinned before."""


class RunRecords:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def pin(self, **values: Any) -> tuple[RunRecord, bool]:
        """The run `values["run_id"]` as first seen, pinned with `values` if this is its first
        start; (record, created)."""
        now = datetime.now(UTC)
        try:
            with self.engine.begin() as db:
                db.execute(insert(runs).values(state="running", started_at=now, updated_at=now, **values))
            created = True
        except IntegrityError:
            created = False
        record = self.get(values["run_id"])
        assert record is not None
        return record, created

    def get(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as db:
            row = db.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return _record(row) if row else None

    def find(self, *states: str) -> list[RunRecord]:
        with self.engine.connect() as db:
            rows = db.execute(select(runs).where(runs.c.state.in_(states)).order_by(runs.c.started_at)).mappings()
            return [_record(row) for row in rows]

    def update(self, run_id: str, *, only_if: Mapping[str, Any] | None = None, **values: Any) -> bool:
        """Change the record; with `only_if`, only while its columns hold those values."""
        query = update(runs).where(runs.c.run_id == run_id)
        for column, value in (only_if or {}).items():
            query = query.where(runs.c[column] == value)
        with self.engine.begin() as db:
            return db.execute(query.values(updated_at=datetime.now(UTC), **values)).rowcount == 1

    def end(self, run_id: str, state: str, note: str | None = None) -> bool:
        """The run ended (cancelled, refused, or ended): once; False if it had ended already."""
        query = update(runs).where(runs.c.run_id == run_id, runs.c.state.not_in(ENDED))
        with self.engine.begin() as db:
            return db.execute(query.values(state=state, note=note, updated_at=datetime.now(UTC), wake_at=None)).rowcount == 1


def _record(row: Mapping[str, Any]) -> RunRecord:
    values = dict(row)
    for name in ("started_at", "updated_at", "wake_at", "wake_requested_at"):
        values[name] = as_utc(values[name])
    return RunRecord(**values)
