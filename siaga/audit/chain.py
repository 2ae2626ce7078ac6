"""The hash chain, pure: canonical bytes of a record, its hash, and verification.

A record's hash is ``sha256(prev_hash + canonical_json(record without hash and seq))``: each record
seals its own content and the record before it, so changing one byte of any record, removing one,
or moving one breaks the chain at that record, and `verify` names it. `seq` (the position the
store orders and constrains by) is left out of the hashed body on purpose: a record's place is
proven by its link to its predecessor, so moving a record shows as what it is (a broken link),
and a missing number as a gap.

A chain whose newest records were removed, or one rewritten from the first changed record
onwards with fresh hashes, is consistent in itself: only a head hash kept elsewhere (an export,
a ticket, a report) shows that. `verify` takes that head when it has one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from siaga.canonical import canonical_json, digest, plain, utc_iso

__all__ = [
    "GENESIS", "AuditRecord", "Breach", "canonical_json", "digest", "plain", "record_hash", "utc_iso", "verify",
]

GENESIS = "0" * 64
"""The `prev_hash` of a chain's first record."""


@dataclass(frozen=True)
class AuditRecord:
    """One entry of a chain. `data` holds JSON values only (see `plain`)."""

    id: str
    chain: str
    seq: int
    at: datetime
    kind: str
    incident_id: str | None = None
    run_id: str | None = None
    actor: str | None = None
    channel: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """What the hash covers: everything but the hash itself and the position `seq`."""
        return {
            "id": self.id,
            "chain": self.chain,
            "at": utc_iso(self.at),
            "kind": self.kind,
            "incident_id": self.incident_id,
            "run_id": self.run_id,
            "actor": self.actor,
            "channel": self.channel,
            "data": self.data,
            "prev_hash": self.prev_hash,
        }

    def expected_hash(self) -> str:
        return record_hash(self.prev_hash, self.body())

    def sealed(self) -> AuditRecord:
        """This record with its hash."""
        return replace(self, hash=self.expected_hash())

    def as_json(self) -> dict[str, Any]:
        """The record as one JSON object (an export line)."""
        return self.body() | {"seq": self.seq, "hash": self.hash}

    @classmethod
    def from_json(cls, fields: Mapping[str, Any]) -> AuditRecord:
        values = dict(fields)
        values["at"] = datetime.fromisoformat(values["at"])
        return cls(**values)


def record_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Breach:
    """The first record of a chain that does not match, and why."""

    chain: str
    seq: int | None
    id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"record {self.seq} (id {self.id})" if self.seq is not None else "the chain's end"
        return f"chain {self.chain}: {where}: {self.reason}"


def verify(records: Iterable[AuditRecord], head: str | None = None, chain: str | None = None) -> Breach | None:
    """The first record of one chain (in the order given, which is seq order from the store)
    that was changed, follows a removed record, or is out of place; or, with `head`, a chain that
    does not end at that hash. None when the chain holds."""
    expected_seq, prev, last = 1, GENESIS, None
    for record in records:
        chain = chain or record.chain
        if record.chain != chain:
            return Breach(chain, record.seq, record.id, f"belongs to chain {record.chain}, not {chain}")
        if record.expected_hash() != record.hash:
            return Breach(chain, record.seq, record.id, "changed: its content no longer matches its hash")
        if record.seq > expected_seq:
            missing = str(expected_seq) if record.seq == expected_seq + 1 else f"{expected_seq} to {record.seq - 1}"
            return Breach(chain, record.seq, record.id, f"sequence gap: record {missing} removed")
        if record.seq < expected_seq:
            return Breach(chain, record.seq, record.id, f"out of order: seq {record.seq} where {expected_seq} was due")
        if record.prev_hash != prev:
            return Breach(
                chain, record.seq, record.id,
                "out of place: its prev hash does not match the record before it (records reordered or replaced)",
            )
        expected_seq, prev, last = expected_seq + 1, record.hash, record
    if head is not None and prev != head:
        if last is None:
            return Breach(chain or "?", None, None, f"the chain is empty, the head should be {head}")
        return Breach(chain or last.chain, None, None,
                      f"ends at record {last.seq} with hash {prev}, not at the head {head}: records removed from the end or rewritten")
    return None
