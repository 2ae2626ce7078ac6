"""The runbook revisions runs are started with, kept in Siaga's store: the exact text of each, and
for every run Siaga starts, the revision it must execute. The starter notes the start before
Prefect creates the run, keyed by the run's idempotency key (which Prefect's API cannot change
afterwards); the run takes its start once, by that key (`take`), so a run re-created with the key of
another is told apart. Nothing here is read from Prefect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from siaga.runbook.revision import Revision
from siaga.store import insert_ignoring, run_starts, runbook_revisions, runs

__all__ = ["Revisions", "RunStart"]


@dataclass(frozen=True)
class RunStart:
    """What Siaga started: runbook `runbook_id` at `revision`, taken by flow run `run_id`."""

    start_key: str
    runbook_id: str
    revision: str
    run_id: str | None


class Revisions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def keep(self, revision: Revision) -> None:
        """Keep `revision`'s text (once: the same digest is the same text)."""
        with self.engine.begin() as db:
            db.execute(insert_ignoring(db, runbook_revisions).values(
                revision=revision.digest, runbook_id=revision.runbook_id, text=revision.text,
                templates=dict(revision.templates), kept_at=datetime.now(UTC),
            ))

    def get(self, digest: str) -> Revision | None:
        """The revision kept under `digest`; None if none is, or if its text no longer hashes to it."""
        with self.engine.connect() as db:
            row = db.execute(select(runbook_revisions).where(runbook_revisions.c.revision == digest)).mappings().first()
        if row is None:
            return None
        revision = Revision(row["runbook_id"], row["text"], dict(row["templates"]))
        return revision if revision.digest == digest else None

    def note_start(self, start_key: str, revision: Revision) -> RunStart:
        """Keep `revision` and note that the run keyed `start_key` must execute it; the start noted
        first stands (a retry of the same start finds it). Return the start as noted."""
        self.keep(revision)
        with self.engine.begin() as db:
            db.execute(insert_ignoring(db, run_starts).values(
                start_key=start_key, runbook_id=revision.runbook_id, revision=revision.digest,
                started_at=datetime.now(UTC),
            ))
        found = self.start(start_key)
        assert found is not None
        return found

    def start(self, start_key: str) -> RunStart | None:
        with self.engine.connect() as db:
            row = db.execute(select(run_starts).where(run_starts.c.start_key == start_key)).mappings().first()
        return RunStart(row["start_key"], row["runbook_id"], row["revision"], row["run_id"]) if row else None

    def take(self, start_key: str, run_id: str) -> RunStart | None:
        """The start keyed `start_key`, now taken by `run_id` unless another run took it first (then
        its `run_id` says which); None if Siaga noted no such start."""
        with self.engine.begin() as db:
            db.execute(update(run_starts).where(run_starts.c.start_key == start_key, run_starts.c.run_id.is_(None))
                       .values(run_id=run_id))
        return self.start(start_key)

    def of_run(self, run_id: str) -> str | None:
        """The revision run `run_id` executes (or was started with); None if Siaga knows none."""
        with self.engine.connect() as db:
            pinned = db.execute(select(runs.c.revision).where(runs.c.run_id == run_id)).scalar_one_or_none()
            if pinned:
                return pinned
            return db.execute(select(run_starts.c.revision).where(run_starts.c.run_id == run_id)).scalar_one_or_none()
