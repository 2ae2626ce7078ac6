"""Proofs of a vote: two one-time codes per person and gate, one to approve and one to reject.

A code proves three things at once: the person (it was sent only to them), the decision (the
approve code cannot reject and, what matters, the reject code cannot approve: someone who reads a
person's rejection as it travels through Prefect learns nothing that approves), and the binding:
exactly this step of this run, of this incident, in this mode (drill or live), with these
parameters and this evidence. The codes are kept only as salted scrypt hashes of that whole
statement, so the same digits typed for another run, step, person, decision, mode or parameters do
not match, and a stolen copy of the store does not give the 8 digits away cheaply.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from typing import Literal

from siaga.canonical import digest

CODE_PATTERN = r"^[0-9]{8}$"
"""What the resume form accepts as a code (the JSON schema enforces it at the server)."""

Decision = Literal["approve", "reject"]
DECISIONS: tuple[Decision, Decision] = ("approve", "reject")


@dataclass(frozen=True)
class Binding:
    """What every vote at a gate is about. A vote cast for one binding never counts for another:
    a run whose mode, parameters or evidence changed needs new votes."""

    run_id: str
    step_id: str
    incident_id: str | None
    mode: str
    params_hash: str
    evidence_hash: str

    @property
    def digest(self) -> str:
        return digest(asdict(self))


def statement(binding_digest: str, approver: str, decision: Decision) -> str:
    """What one code says: this person decides so about this binding."""
    return "\x1f".join((binding_digest, approver, decision))


def new_code() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def new_salt() -> str:
    return secrets.token_hex(16)


def code_hash(code: str, said: str, salt: str) -> str:
    message = f"{said}\x1f{code}".encode()
    return hashlib.scrypt(message, salt=bytes.fromhex(salt), n=2**13, r=8, p=1, dklen=32).hex()


def code_matches(code: str, said: str, salt: str, stored_hash: str) -> bool:
    return hmac.compare_digest(code_hash(code, said, salt), stored_hash)
