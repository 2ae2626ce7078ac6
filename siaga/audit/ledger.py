"""The side-effect ledger: intent before a call that changes the world, outcome after it.

Keyed by the step's idempotency key (incident or run, step), so a retried step, a restarted run
and a duplicate run of the same incident all find what was already done:

* no entry: this caller claims the key (an *intent* row) and makes the call;
* *done*: the call was made; its recorded result is returned and nothing is called again;
* *intent* left by a caller that never wrote an outcome (a crash between the call and the write):
  the outcome is unknown, so the action must check the provider before acting again. A caller
  in flight keeps its intent's ``updated_at`` moving (`touch`), so others can tell a live call
  from a dead one, and one of them at most `take_over`s a dead one;
* *failed*: the call failed without changing anything; it may be made again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from siaga.canonical import digest
from siaga.store import side_effects


class Claim(StrEnum):
    NEW = "new"  # go ahead: the intent is recorded
    DONE = "done"  # already done: use the recorded result
    UNKNOWN = "unknown"  # an earlier attempt may or may not have acted


@dataclass(frozen=True)
class Entry:
    key: str
    action: str
    state: str
    result: Any
    error: str | None
    run_id: str | None
    created_at: datetime
    updated_at: datetime


class Ledger:
    """The ledger in a store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, key: str, action: str, params: Any, run_id: str) -> tuple[Claim, Any]:
        """Claim `key` for a call of `action`; returns what to do and, for DONE, the result."""
        now = datetime.now(UTC)
        params_digest = digest(params)
        with self.engine.begin() as db:
            row = db.execute(select(side_effects).where(side_effects.c.key == key)).first()
            if row is None:
                try:
                    db.execute(
                        insert(side_effects).values(
                            key=key, action=action, params_hash=params_digest, state="intent",
                            run_id=run_id, created_at=now, updated_at=now,
                        )
                    )
                except IntegrityError:
                    pass  # claimed a moment ago by another run: read it below
                else:
                    return Claim.NEW, None
        return self._existing(key, action, params_digest, run_id)

    def _existing(self, key: str, action: str, params_digest: str, run_id: str) -> tuple[Claim, Any]:
        now = datetime.now(UTC)
        with self.engine.begin() as db:
            row = db.execute(select(side_effects).where(side_effects.c.key == key)).one()
            if row.state == "done":
                return Claim.DONE, row.result
            if row.state == "failed":
                claimed = db.execute(
                    update(side_effects).where(side_effects.c.key == key, side_effects.c.state == "failed")
                    .values(state="intent", action=action, params_hash=params_digest, run_id=run_id, error=None, updated_at=now)
                )
                # Two callers may both have read `failed`: only the one whose update landed goes ahead.
                return (Claim.NEW, None) if claimed.rowcount == 1 else (Claim.UNKNOWN, None)
            return Claim.UNKNOWN, None

    def touch(self, key: str, run_id: str) -> bool:
        """The heartbeat of `run_id`'s call in flight: its intent is still alive."""
        with self.engine.begin() as db:
            touched = db.execute(
                update(side_effects)
                .where(side_effects.c.key == key, side_effects.c.state == "intent", side_effects.c.run_id == run_id)
                .values(updated_at=datetime.now(UTC))
            )
        return touched.rowcount == 1

    def take_over(self, key: str, run_id: str, seen: Entry) -> bool:
        """Make `run_id` the owner of the intent `seen`, whose caller fell silent; true for at most
        one of several callers trying at once, and false if the intent moved on since it was seen."""
        with self.engine.begin() as db:
            taken = db.execute(
                update(side_effects)
                .where(
                    side_effects.c.key == key,
                    side_effects.c.state == "intent",
                    side_effects.c.run_id == seen.run_id,
                    side_effects.c.updated_at == seen.updated_at,
                )
                .values(run_id=run_id, updated_at=datetime.now(UTC))
            )
        return taken.rowcount == 1

    def done(self, key: str, result: Any) -> None:
        self._settle(key, "done", result=result)

    def failed(self, key: str, error: str) -> None:
        self._settle(key, "failed", error=error)

    def _settle(self, key: str, state: str, **values: Any) -> None:
        with self.engine.begin() as db:
            db.execute(
                update(side_effects).where(side_effects.c.key == key)
                .values(state=state, updated_at=datetime.now(UTC), **values)
            )

    def get(self, key: str) -> Entry | None:
        with self.engine.connect() as db:
            row = db.execute(select(side_effects).where(side_effects.c.key == key)).first()
        return None if row is None else _entry(row)

    def entries(self, *, unsettled: bool = False) -> list[Entry]:
        query = select(side_effects).order_by(side_effects.c.updated_at.desc())
        if unsettled:
            query = query.where(side_effects.c.state == "intent")
        with self.engine.connect() as db:
            return [_entry(row) for row in db.execute(query)]


def _entry(row: Any) -> Entry:
    return Entry(row.key, row.action, row.state, row.result, row.error, row.run_id, row.created_at, row.updated_at)


def resolve(ledger: Ledger, key: str, *, done: bool, note: str) -> Entry:
    """A person settles an entry whose outcome was unknown: it took effect (`done`) or not."""
    entry = ledger.get(key)
    if entry is None:
        raise KeyError(f"no side-effect entry {key!r}")
    if done:
        ledger.done(key, {"resolved_by_person": note})
    else:
        ledger.failed(key, f"resolved by a person: {note}")
    resolved = ledger.get(key)
    assert resolved is not None
    return resolved
