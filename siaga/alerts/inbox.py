"""The receiver's durable inbox: a webhook is written to the store (raw body, source, when) before
it is answered 202, and then ends one of two ways, never silently:

* **done**: its alerts are recorded (`finish`);
* **failed**: after `MAX_ATTEMPTS` tries some of its alerts could still not be recorded, or its
  body no longer parses: the row keeps the body, the reason and how many alerts were lost
  (`fail`), is never tried again, and is counted by `losses` (``siaga incidents``, the
  receiver's ``/healthz`` and ``/metrics``) until a person deals with it.

A try that does not record everything counts (`retry_later`); so does a try a receiver started and
did not finish because it stopped: a receiver starting takes up the rows left unfinished
(`take_up`), counting one more try for each, and gives up on those out of tries, rather than trying
them again at every restart. Recording is idempotent (each notification once, one open incident per
key), so doing a row twice is harmless; that also covers several receivers on one PostgreSQL
database, where a receiver starting takes up rows another one, alive, still has queued.

Reasons are kept short (the database's message, without the statement and its parameters) and
redacted of every known secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from typing import Any

from sqlalchemy import Engine, Select, delete, func, insert, select, update

from siaga.secrets import REDACTOR
from siaga.store import inbox

__all__ = [
    "MAX_ATTEMPTS",
    "Delivery",
    "Losses",
    "drop",
    "fail",
    "finish",
    "losses",
    "prune",
    "put",
    "reason",
    "retry_later",
    "take_up",
    "unfinished",
]

MAX_ATTEMPTS = 5
"""Tries of one webhook (in one receiver's life or across restarts) before it is given up on."""


@dataclass(frozen=True)
class Delivery:
    id: int
    source: str
    body: bytes
    received_at: datetime
    attempts: int


@dataclass(frozen=True)
class Losses:
    """Webhooks taken in and given up on: how many, how many of their alerts were not recorded
    (where known), and why (the most frequent reasons first, with how many webhooks each)."""

    webhooks: int
    alerts: int
    reasons: list[tuple[str, int]]


def reason(exc: BaseException) -> str:
    """Why a try failed, in one short line: the database's own message rather than SQLAlchemy's
    (which quotes the statement and its parameters), redacted."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return REDACTOR(f"{type(cause).__name__}: {text}"[:500])


def put(engine: Engine, source: str, body: bytes, received_at: datetime) -> int:
    """Keep a webhook that was taken in; return its id."""
    with engine.begin() as connection:
        return connection.execute(
            insert(inbox).values(source=source, body=body, received_at=received_at, attempts=0)
        ).inserted_primary_key[0]


def drop(engine: Engine, delivery_id: int) -> None:
    """Forget a webhook that was, after all, not taken in (the sender was told to retry)."""
    with engine.begin() as connection:
        connection.execute(delete(inbox).where(inbox.c.id == delivery_id))


def finish(engine: Engine, delivery_id: int, now: datetime) -> None:
    """Mark a webhook done: its alerts are recorded."""
    with engine.begin() as connection:
        connection.execute(update(inbox).where(inbox.c.id == delivery_id).values(done_at=now, error=None))


def retry_later(engine: Engine, delivery_id: int, error: str) -> int:
    """Count a try that did not record everything, and why; return the tries so far."""
    with engine.begin() as connection:
        return connection.execute(
            update(inbox).where(inbox.c.id == delivery_id)
            .values(attempts=inbox.c.attempts + 1, error=error[:2000]).returning(inbox.c.attempts)
        ).scalar_one()


def fail(engine: Engine, delivery_id: int, now: datetime, error: str, lost: int | None) -> None:
    """Give up on a webhook: `lost` of its alerts (None: unknown) were not recorded, because of
    `error`. It is kept, and never tried again."""
    with engine.begin() as connection:
        connection.execute(
            update(inbox).where(inbox.c.id == delivery_id).values(failed_at=now, error=error[:2000], lost=lost)
        )


def _unfinished(limit: int) -> Select[Any]:
    return (select(inbox.c.id, inbox.c.source, inbox.c.body, inbox.c.received_at, inbox.c.attempts, inbox.c.error)
            .where(inbox.c.done_at.is_(None), inbox.c.failed_at.is_(None)).order_by(inbox.c.id).limit(limit))


def unfinished(engine: Engine, limit: int = 10_000) -> list[Delivery]:
    """The webhooks taken in and neither done nor given up on, oldest first (to look at: a
    receiver that starts takes them up with `take_up`)."""
    with engine.connect() as connection:
        rows = connection.execute(_unfinished(limit)).all()
    return [Delivery(row.id, row.source, row.body, row.received_at, row.attempts) for row in rows]


def take_up(engine: Engine, now: datetime, limit: int = 10_000) -> list[Delivery]:
    """The `unfinished` webhooks, for a receiver that starts: each counts one more try (the one a
    receiver that stopped did not finish); those out of tries are given up on instead (their
    reason says so) and not returned."""
    with engine.begin() as connection:
        rows = connection.execute(_unfinished(limit)).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        for start in range(0, len(ids), 500):
            connection.execute(update(inbox).where(inbox.c.id.in_(ids[start : start + 500]))
                               .values(attempts=inbox.c.attempts + 1))
        spent = [row for row in rows if row.attempts + 1 >= MAX_ATTEMPTS]
        for row in spent:
            last = row.error or "the receiver stopped before it was recorded"
            connection.execute(update(inbox).where(inbox.c.id == row.id).values(
                failed_at=now, error=f"given up after {row.attempts + 1} tries; the last: {last}"[:2000]))
    return [Delivery(row.id, row.source, row.body, row.received_at, row.attempts + 1)
            for row in rows if row.attempts + 1 < MAX_ATTEMPTS]


def losses(engine: Engine) -> Losses:
    """What was given up on (see `Losses`)."""
    failed = inbox.c.failed_at.is_not(None)
    with engine.connect() as connection:
        webhooks, alerts = connection.execute(
            select(func.count(), func.coalesce(func.sum(inbox.c.lost), 0)).where(failed)).one()
        reasons = connection.execute(
            select(inbox.c.error, func.count()).where(failed).group_by(inbox.c.error)
            .order_by(func.count().desc()).limit(5)
        ).all() if webhooks else []
    return Losses(int(webhooks), int(alerts), [(str(error), int(n)) for error, n in reasons])


def prune(engine: Engine, done_before: datetime) -> int:
    """Delete the webhooks done before `done_before` (never those given up on); return how many."""
    with engine.begin() as connection:
        return connection.execute(delete(inbox).where(inbox.c.done_at < done_before)).rowcount
