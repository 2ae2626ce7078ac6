"""One canonical JSON text per value, and Siaga's one hash of it.

`canonical_json`: keys sorted, no whitespace, non-ASCII kept as is (hashed as UTF-8), no NaN or
infinity; values JSON does not know are made plain by one rule (`_plain`). `digest`: the SHA-256 of
that text, the one hash of parameters, evidence, bindings, drafts and audit records. `plain`: a
value as it reads back from JSON, so what is stored is exactly what was hashed. `as_utc`: the one
conversion of a datetime (naive ones, as SQLite hands them back, are UTC) to UTC.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any, overload
from uuid import UUID

__all__ = ["as_utc", "canonical_json", "digest", "plain", "utc_iso"]


def _plain(value: Any) -> Any:
    """JSON for what `json` does not know: datetimes as ISO 8601 in UTC, enums by value,
    pydantic models by their JSON dump, sets sorted, anything else as text."""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID | PurePath):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=canonical_json)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json", by_alias=True)
    # Anything else as its text: a record is never lost to an odd value, and since the store
    # keeps the JSON that was hashed (see `plain`), the text is what verification sees.
    return str(value)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """`value` in UTC; a naive one is taken as UTC (SQLite hands datetimes back naive: they were
    written in UTC; PostgreSQL with a zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_iso(moment: datetime) -> str:
    """``2026-11-24T10:00:00.000000+00:00``: a naive datetime is taken as UTC (SQLite gives
    them back naive)."""
    return as_utc(moment).isoformat(timespec="microseconds")


def canonical_json(value: Any) -> str:
    """One text per value: keys sorted, no whitespace, non-ASCII kept as is (hashed as UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_plain)


def digest(value: Any) -> str:
    """The SHA-256 of `value`'s canonical JSON: Siaga's one hash of parameters, evidence and
    bindings (the side-effect ledger, approval gates and runs use it alike)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists, datetimes as text): what is stored
    is exactly what was hashed."""
    return json.loads(canonical_json(value))
