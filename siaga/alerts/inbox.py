"""The receiver's durable inbox: a webhook is written to the store (raw body, source, when) before
it is answered 202, and marked done once its alerts are recorded. A receiver that dies with work
still queued finds the unfinished rows when it starts again and processes them then; recording is
idempotent (each notification once, one open incident per key), so doing a row twice is harmless;
that also covers several receivers on one PostgreSQL database, where a receiver starting takes up
rows another one, alive, still has queued. A row tried `MAX_ATTEMPTS` times is left for a person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, insert, select, update

from siaga.store import inbox

__all__ = ["MAX_ATTEMPTS", "Delivery", "drop", "finish", "prune", "put", "unfinished"]

MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Delivery:
    id: int
    source: str
    body: bytes
    received_at: datetime
    attempts: int


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


def finish(engine: Engine, delivery_id: int, now: datetime, error: str | None = None) -> None:
    """Mark a webhook done, or (with `error`) tried and not done: it is tried again at the next start."""
    values = {"done_at": now, "error": None} if error is None else {"error": error[:2000]}
    with engine.begin() as connection:
        connection.execute(
            update(inbox).where(inbox.c.id == delivery_id).values(attempts=inbox.c.attempts + 1, **values)
        )


def unfinished(engine: Engine, limit: int = 10_000) -> list[Delivery]:
    """Webhooks taken in and not yet done (nor given up on), oldest first."""
    query = select(inbox.c.id, inbox.c.source, inbox.c.body, inbox.c.received_at, inbox.c.attempts)
    query = query.where(inbox.c.done_at.is_(None), inbox.c.attempts < MAX_ATTEMPTS)
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(inbox.c.id).limit(limit)).all()
    return [Delivery(*row) for row in rows]


def prune(engine: Engine, done_before: datetime) -> int:
    """Delete the webhooks done before `done_before`; return how many."""
    with engine.begin() as connection:
        return connection.execute(delete(inbox).where(inbox.c.done_at < done_before)).rowcount
