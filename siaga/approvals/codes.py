"""One-time approval codes: random, kept only as a salted scrypt hash bound to what they approve.

A code is bound to (flow run, step, approver, hash of the step's rendered parameters): the same
digits typed for another run, another step, another person, or after the parameters changed,
do not match. scrypt makes a stolen copy of the store useless for guessing the 8 digits offline.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

CODE_PATTERN = r"^[0-9]{8}$"
"""What the resume form accepts as a code (the JSON schema enforces it at the server)."""


@dataclass(frozen=True)
class Binding:
    """What a code approves."""

    run_id: str
    step_id: str
    approver: str
    params_hash: str

    def message(self, code: str) -> bytes:
        return "\x1f".join((self.run_id, self.step_id, self.approver, self.params_hash, code)).encode()


def new_code() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def new_salt() -> str:
    return secrets.token_hex(16)


def code_hash(code: str, binding: Binding, salt: str) -> str:
    return hashlib.scrypt(binding.message(code), salt=bytes.fromhex(salt), n=2**13, r=8, p=1, dklen=32).hex()


def code_matches(code: str, binding: Binding, salt: str, stored_hash: str) -> bool:
    return hmac.compare_digest(code_hash(code, binding, salt), stored_hash)


def params_hash(params: Any) -> str:
    """The SHA-256 of a step's rendered parameters in canonical JSON."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
