"""Siaga's seal on the votes it records: an HMAC-SHA256 with a key kept outside the store.

The audit chain proves that no record was changed, removed or moved, but anyone who can write to
the store can append records that chain correctly (the chain has no secret). A vote counts only if
it carries Siaga's seal, which needs the key: ``$SIAGA_LEDGER_KEY`` where several machines share a
store, else the file ``ledger.key`` in the Siaga home, created once (0600).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from functools import cache
from hashlib import sha256
from pathlib import Path
from typing import Any

from siaga.canonical import canonical_json
from siaga.home import ensure_home
from siaga.settings import Settings

KEY_FILE = "ledger.key"


def seal(fields: Mapping[str, Any], key: bytes) -> str:
    """Siaga's seal on `fields`, with `key` (`ledger_key`)."""
    return hmac.new(key, canonical_json(dict(fields)).encode("utf-8"), sha256).hexdigest()


def is_sealed(fields: Mapping[str, Any], mark: object, key: bytes) -> bool:
    """Whether `mark` is Siaga's seal on `fields`, with `key`."""
    return isinstance(mark, str) and hmac.compare_digest(seal(fields, key), mark)


def ledger_key(home: Path | None, settings: Settings) -> bytes:
    """The key of the seals: `Settings.ledger_key` (``$SIAGA_LEDGER_KEY``), else the key file in
    `home` (None: the settings' data folder)."""
    if settings.ledger_key:
        return settings.ledger_key.get_secret_value().encode("utf-8")
    return _key_file(ensure_home(home or settings.home) / KEY_FILE)


@cache
def _key_file(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it a moment ago
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())
