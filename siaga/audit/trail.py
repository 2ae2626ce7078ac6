"""The audit trail in Siaga's store: append, read, verify and export chains of `audit_records`.

One chain per incident (key: the incident id; a run started without an incident gets the chain
``run:<flow run id>``), not one global chain. Why: the trail is read, exported and proven per
incident (the post-incident report, the regulator), and a chain is only as useful as the head
hash someone keeps: an incident's head can be written into its report. Unrelated incidents never
contend for one chain head, so runs of different incidents append without waiting on each other
(on PostgreSQL; SQLite has a single writer anyway).

Several writers may still append to one incident's chain at once (its run, the receiver, a gate
in another process, a second worker): an append reads the chain's last record and inserts
seq = last + 1 with prev_hash = last hash, in one transaction; the unique (chain, seq) constraint
lets exactly one of two racing appends win and the loser starts over on the new head. On SQLite
the transaction is ``BEGIN IMMEDIATE`` (it takes the write lock before reading the head, so a
deferred transaction cannot fail on a stale snapshot); on PostgreSQL a transaction-scoped advisory
lock on the chain makes racing appends queue instead of retrying.

There is no update or delete here, on purpose: the code path only appends.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from siaga.canonical import as_utc, plain
from siaga.logs import get_logger
from siaga.secrets import REDACTOR
from siaga.store import audit_records

from .chain import GENESIS, AuditRecord, Breach, verify

_COLUMNS = tuple(column.name for column in audit_records.columns)

log = get_logger("siaga.audit")

ATTEMPTS = 200
"""How often an append starts over after losing a race for the chain head (or SQLite's lock)."""


def chain_of(incident_id: str | None, run_id: str | None) -> str:
    """The chain a record belongs to: its incident's, else its run's, else Siaga's own."""
    if incident_id:
        return str(incident_id)
    if run_id:
        return f"run:{run_id}"
    return "siaga"


class AuditTrail:
    """The hash-chained audit trail in the store behind `engine`."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))

    # writing

    def append(self, kind: str, *, connection: Connection | None = None, **fields: Any) -> AuditRecord:
        """Append a record to its chain and return it, sealed; `fields` are `draft`'s (incident_id,
        run_id, actor, channel, data, chain). Every known secret value is redacted from it first.
        With `connection`, the record is part of the caller's transaction (an incident and the record
        of its opening commit together); raises on any store error."""
        draft = self.draft(kind, **fields)
        if connection is not None:
            return self._append_within(connection, draft)
        for attempt in range(ATTEMPTS):
            try:
                with self.engine.connect() as own:
                    self._begin(own, draft.chain)
                    record = _insert_next(own, draft)
                    own.commit()
                    return record
            except (IntegrityError, OperationalError) as exc:
                if attempt == ATTEMPTS - 1 or (isinstance(exc, OperationalError) and not _locked(exc)):
                    raise
                time.sleep(random.uniform(0, min(0.002 * (attempt + 1), 0.05)))
        raise AssertionError("unreachable")

    def record(
        self,
        kind: str,
        *,
        incident_id: str | None,
        run_id: str | None = None,
        actor: str | None = None,
        channel: str | None = None,
        **data: Any,
    ) -> None:
        """Append a record to the incident's chain (the run's, without an incident), never raising
        into the caller for a trail failure: the crisis run goes on, and the loss is an ERROR log
        line naming the record that was not written."""
        try:
            self.append(kind, incident_id=incident_id, run_id=run_id, actor=actor, channel=channel, data=data)
        except Exception as exc:  # noqa: BLE001 (said loudly below; the run goes on)
            log.error(
                "audit record NOT written",
                kind=kind,
                chain=chain_of(incident_id, run_id),
                error=f"{type(exc).__name__}: {exc}",
            )

    async def arecord(
        self,
        kind: str,
        *,
        incident_id: str | None,
        run_id: str | None = None,
        actor: str | None = None,
        channel: str | None = None,
        **data: Any,
    ) -> None:
        """`record` from async code, off the event loop (an append may wait for the store's lock)."""
        await asyncio.to_thread(
            self.record, kind, incident_id=incident_id, run_id=run_id, actor=actor, channel=channel, **data
        )

    def draft(
        self,
        kind: str,
        *,
        incident_id: str | None = None,
        run_id: str | None = None,
        actor: str | None = None,
        channel: str | None = None,
        data: Mapping[str, Any] | None = None,
        chain: str | None = None,
    ) -> AuditRecord:
        """A record to append (`extend`), redacted, not yet sealed into its chain."""
        return AuditRecord(
            id=uuid.uuid4().hex,
            chain=chain or chain_of(incident_id, run_id),
            seq=0,
            at=self.clock(),
            kind=kind,
            incident_id=incident_id,
            run_id=run_id,
            actor=REDACTOR(actor),
            channel=channel,
            data=REDACTOR(plain(dict(data or {}))),  # plain first: then every value is text the redactor sees
        )

    def extend(self, connection: Connection, drafts: Iterable[AuditRecord]) -> list[AuditRecord]:
        """Append many drafts (`draft`), in order, within the caller's transaction: each chain's head
        is read once and the records are inserted together (an alert storm's thousands of records)."""
        drafts = list(drafts)
        chains = sorted({d.chain for d in drafts})
        if connection.dialect.name == "postgresql":
            for chain in chains:  # in one order, so two writers never wait on each other's chains
                self._begin(connection, chain)
        heads = {chain: _head(connection, chain) for chain in chains}
        records = []
        for draft in drafts:
            seq, prev = heads[draft.chain]
            record = replace(draft, seq=seq + 1, prev_hash=prev).sealed()
            heads[draft.chain] = (record.seq, record.hash)
            records.append(record)
        for start in range(0, len(records), 500):
            connection.execute(insert(audit_records), [_row(r) for r in records[start : start + 500]])
        return records

    def _begin(self, connection: Connection, chain: str) -> None:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:chain))"), {"chain": chain})

    def _append_within(self, connection: Connection, draft: AuditRecord) -> AuditRecord:
        if connection.dialect.name != "postgresql":
            # SQLite: the caller's transaction holds (or takes) the database's one write lock
            return _insert_next(connection, draft)
        for attempt in range(ATTEMPTS):
            try:
                with connection.begin_nested():
                    self._begin(connection, draft.chain)
                    return _insert_next(connection, draft)
            except IntegrityError:
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # reading

    def chains(self) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(audit_records.c.chain).distinct().order_by(audit_records.c.chain)).scalars())

    def records(self, chain: str, run_id: str | None = None) -> list[AuditRecord]:
        """The chain's records in order (only those of `run_id`, if given)."""
        return list(self.iter_records(chain, run_id))

    def iter_records(self, chain: str, run_id: str | None = None) -> Iterator[AuditRecord]:
        query = select(audit_records).where(audit_records.c.chain == chain).order_by(audit_records.c.seq)
        if run_id is not None:
            query = query.where(audit_records.c.run_id == run_id)
        with self.engine.connect() as connection:
            for row in connection.execution_options(yield_per=2000).execute(query).mappings():
                yield _record(row)

    def last(self, chain: str, kind: str) -> AuditRecord | None:
        """The chain's newest record of `kind` (the last situation report sent...), or None."""
        query = (select(audit_records).where(audit_records.c.chain == chain, audit_records.c.kind == kind)
                 .order_by(audit_records.c.seq.desc()).limit(1))
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return _record(row) if row else None

    def head(self, chain: str) -> tuple[int, str]:
        """The chain's length and head hash (0 and GENESIS for an empty chain)."""
        with self.engine.connect() as connection:
            return _head(connection, chain)

    def count(self, chain: str | None = None) -> int:
        query = select(func.count()).select_from(audit_records)
        if chain is not None:
            query = query.where(audit_records.c.chain == chain)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def verify(self, chain: str | None = None, head: str | None = None) -> Breach | None:
        """The first record that does not hold in `chain` (every chain if None), or None."""
        for name in [chain] if chain is not None else self.chains():
            breach = verify(self.iter_records(name), head=head, chain=name)
            if breach is not None:
                return breach
        return None

    def export(self, incident: str, file: IO[str] | Path | str) -> str:
        """Write the chain `incident` as JSON lines, one record each, then a last line
        ``{"chain": ..., "records": n, "head": hash}``; return the head hash."""
        if isinstance(file, str | Path):
            with open(file, "w", encoding="utf-8") as opened:
                return self.export(incident, opened)
        count, head = 0, GENESIS
        for record in self.iter_records(incident):
            file.write(json.dumps(record.as_json(), sort_keys=True, ensure_ascii=False) + "\n")
            count, head = count + 1, record.hash
        file.write(json.dumps({"chain": incident, "records": count, "head": head}) + "\n")
        return head


def read_export(lines: Iterable[str]) -> tuple[list[AuditRecord], str | None]:
    """The records and head hash of an export (`AuditTrail.export`), to verify it anywhere."""
    records, head = [], None
    for line in lines:
        if not line.strip():
            continue
        fields = json.loads(line)
        if "head" in fields and "kind" not in fields:
            head = fields["head"]
        else:
            records.append(AuditRecord.from_json(fields))
    return records, head


def _head(connection: Connection, chain: str) -> tuple[int, str]:
    """The chain's last sequence number and hash (0 and GENESIS for an empty chain)."""
    last = connection.execute(
        select(audit_records.c.seq, audit_records.c.hash)
        .where(audit_records.c.chain == chain)
        .order_by(audit_records.c.seq.desc())
        .limit(1)
    ).first()
    return (last.seq, last.hash) if last else (0, GENESIS)


def _insert_next(connection: Connection, draft: AuditRecord) -> AuditRecord:
    seq, prev = _head(connection, draft.chain)
    record = replace(draft, seq=seq + 1, prev_hash=prev).sealed()
    connection.execute(insert(audit_records).values(_row(record)))
    return record


def _row(record: AuditRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _COLUMNS} | {"data": dict(record.data)}


def _record(row: Mapping[str, Any]) -> AuditRecord:
    values = {name: row[name] for name in _COLUMNS}
    values["at"] = as_utc(values["at"])
    return AuditRecord(**values)


def _locked(error: OperationalError) -> bool:
    return "locked" in str(error).lower() or "busy" in str(error).lower()
