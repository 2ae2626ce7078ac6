"""A replay guard in the store: the deliveries a receiver has seen survive its restart and are
shared by every receiver on the same database (`signatures.MemoryReplayGuard` forgets them).

One row per delivery in `siaga.store.deliveries`, under a unique (source, key) constraint, so two
receivers taking the same delivery at once cannot both claim it. Expired rows are pruned as claims
come in, at most once a minute per guard.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete

from siaga.canonical import as_utc
from siaga.store import deliveries, insert_ignoring

__all__ = ["StoreReplayGuard"]

PRUNE_EVERY = timedelta(minutes=1)


def _split(key: str) -> tuple[str, str]:
    source, _, rest = key.partition(":")
    return (source, rest) if rest else ("", key)


class StoreReplayGuard:
    """A `siaga.alerts.signatures.ReplayGuard` backed by the store's `deliveries` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pruned_at: datetime | None = None
        self._lock = threading.Lock()

    def claim(self, key: str, now: datetime, until: datetime) -> bool:
        now, until = as_utc(now), as_utc(until)
        source, delivery = _split(key)
        self._prune_now_and_then(now)
        with self.engine.begin() as connection:
            connection.execute(
                delete(deliveries).where(
                    deliveries.c.source == source,
                    deliveries.c.key == delivery,
                    deliveries.c.expires_at <= now,
                )
            )
            # only a conflict on (source, key) means "seen": any other refusal of the store raises
            # (the receiver answers 503), never passing for a replay that the sender would not retry
            claimed = connection.execute(
                insert_ignoring(connection, deliveries)
                .values(source=source, key=delivery, seen_at=now, expires_at=until)
                .returning(deliveries.c.key)
            ).first()
        return claimed is not None

    def release(self, key: str) -> None:
        source, delivery = _split(key)
        with self.engine.begin() as connection:
            connection.execute(
                delete(deliveries).where(deliveries.c.source == source, deliveries.c.key == delivery)
            )

    def prune(self, now: datetime) -> int:
        """Forget every expired delivery; return how many."""
        with self.engine.begin() as connection:
            return connection.execute(delete(deliveries).where(deliveries.c.expires_at <= as_utc(now))).rowcount

    def _prune_now_and_then(self, now: datetime) -> None:
        with self._lock:
            if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
                return
            self._pruned_at = now
        self.prune(now)
