"""Once across a cluster: a PostgreSQL session advisory lock, held on a connection of its own.

`Lease(engine, name)` is the right to run one singleton job (for `siaga node`: the run watcher,
the deadline and sitrep watchers, the inbox sweeper). `acquire()` takes it if nobody holds it,
without waiting; the holder keeps it for as long as its connection lives, so a node that dies
(kill -9, a lost host) loses it the moment PostgreSQL notices the connection gone, and another
node's next `acquire()` takes it. `held()` asks the database, on the same connection, whether the
lease is still this node's: a node whose connection broke must stop its singleton at once, since
another node may already run it.

Rules: PostgreSQL only (SQLite has no sessions to tie a lock to: a single machine needs no lease);
the lock's key is a stable 63-bit number derived from the name, so every Siaga version agrees on it.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

__all__ = ["Lease", "lease_key"]


def lease_key(name: str) -> int:
    """The advisory lock key of `name`: the first 63 bits of its SHA-256 (a non-negative bigint)."""
    return int.from_bytes(hashlib.sha256(f"siaga-lease:{name}".encode()).digest()[:8], "big") >> 1


class Lease:
    """One named singleton's lease on a PostgreSQL store."""

    def __init__(self, engine: Engine, name: str) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"a lease needs PostgreSQL, not {engine.dialect.name}")
        self.engine, self.name, self.key = engine, name, lease_key(name)
        self._connection: Connection | None = None

    @property
    def mine(self) -> bool:
        """Whether this process took the lease and has not lost or released it (as last seen)."""
        return self._connection is not None

    def acquire(self) -> bool:
        """Take the lease if it is free; True if this process holds it now."""
        if self._connection is not None:
            return self.held()
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())
        except DBAPIError:
            connection.invalidate()
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        self._connection = connection
        return True

    def held(self) -> bool:
        """Ask the database whether this process still holds the lease; False (and forget the
        connection) when the connection broke."""
        if self._connection is None:
            return False
        try:
            still = self._connection.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                     "AND granted AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = :key"),
                {"key": self.key},
            ).scalar()
        except DBAPIError:
            self._forget()
            return False
        if not still:
            self._forget()
        return bool(still)

    def release(self) -> None:
        """Give the lease up (another node may take it at once)."""
        if self._connection is None:
            return
        try:
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        except DBAPIError:
            pass
        self._forget()

    def _forget(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except DBAPIError:
                connection.invalidate()
