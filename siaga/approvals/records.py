"""Gates in Siaga's store: the gate, its one-time codes (hashed) and every event at it.

Every event is also logged (structlog JSON) and appended to the incident's audit trail
(`siaga.audit`, kind ``gate.<event>``) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from siaga.audit import AuditTrail
from siaga.logs import get_logger
from siaga.secrets import REDACTOR
from siaga.store import gate_codes, gate_events, gates

from .codes import Binding, code_hash, code_matches, new_code, new_salt
from .policy import MAX_WRONG_CODES, Vote

log = get_logger("siaga.gates")

CodeCheck = Literal["ok", "wrong", "used", "locked", "none"]


@dataclass(frozen=True)
class Gate:
    id: str
    run_id: str
    step_id: str
    runbook_id: str
    incident_id: str | None
    mode: str
    params_hash: str
    requester: str | None
    state: str
    opened_at: datetime
    deadline: datetime
    decided_at: datetime | None
    decision: str | None
    approvers: list[str] | None
    pause_key: str | None
    level: int
    evidence: dict[str, Any]
    host: str | None
    pid: int | None

    @property
    def is_open(self) -> bool:
        return self.state == "open"


def gate_id(run_id: str, step_id: str) -> str:
    return f"{run_id}:{step_id}"


class GateRecords:
    """Reads and appends gate records; codes are checked here so that only hashes are kept."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def open(self, **values: Any) -> tuple[Gate, bool]:
        """The gate `values["id"]`, created with `values` unless it exists; (gate, created)."""
        try:
            with self.engine.begin() as db:
                db.execute(insert(gates).values(state="open", level=1, **values))
            created = True
        except IntegrityError:
            created = False
        gate = self.get(values["id"])
        assert gate is not None
        return gate, created

    def get(self, gate_id: str) -> Gate | None:
        with self.engine.connect() as db:
            row = db.execute(select(gates).where(gates.c.id == gate_id)).mappings().first()
        return _gate(row) if row else None

    def find(self, *, state: str | None = None, run_id: str | None = None, incident_id: str | None = None) -> list[Gate]:
        query = select(gates).order_by(gates.c.opened_at)
        if state:
            query = query.where(gates.c.state == state)
        if run_id:
            query = query.where(gates.c.run_id == run_id)
        if incident_id:
            query = query.where(gates.c.incident_id == incident_id)
        with self.engine.connect() as db:
            return [_gate(row) for row in db.execute(query).mappings()]

    def update(self, gate_id: str, **values: Any) -> None:
        with self.engine.begin() as db:
            db.execute(update(gates).where(gates.c.id == gate_id).values(**values))

    def decide(self, gate_id: str, state: str, reason: str, approvers: list[str] | None = None) -> bool:
        """Close the gate once; False if it was closed already."""
        with self.engine.begin() as db:
            done = db.execute(
                update(gates)
                .where(gates.c.id == gate_id, gates.c.state == "open")
                .values(state=state, decision=reason, approvers=approvers, decided_at=_now(), pause_key=None)
            )
        return done.rowcount == 1

    def event(self, gate: Gate, kind: str, *, actor: str | None = None, channel: str | None = None, **detail: Any) -> None:
        """Record what happened at `gate` (secrets redacted) and log it."""
        clean = REDACTOR(detail)
        with self.engine.begin() as db:
            db.execute(
                insert(gate_events).values(
                    gate_id=gate.id, at=_now(), kind=kind, actor=actor, channel=channel, detail=clean
                )
            )
            # the incident's audit trail, in the same transaction: no gate event without its record
            AuditTrail(self.engine).append(
                f"gate.{kind.replace(' ', '_')}", incident_id=gate.incident_id, run_id=gate.run_id,
                actor=actor, channel=channel, connection=db,
                data={"gate": gate.step_id, "runbook": gate.runbook_id, "params_hash": gate.params_hash, **clean},
            )
        log.info(
            f"gate {kind}", gate=gate.id, runbook=gate.runbook_id, run_id=gate.run_id, step=gate.step_id,
            incident=gate.incident_id, actor=actor, channel=channel, **clean,
        )

    def events(self, gate_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            rows = db.execute(select(gate_events).where(gate_events.c.gate_id == gate_id).order_by(gate_events.c.id))
            return [dict(row) for row in rows.mappings()]

    def votes(self, gate_id: str) -> list[Vote]:
        """The decisions cast at the gate since its parameters last changed (earlier ones were
        about other parameters)."""
        events = self.events(gate_id)
        changed = max((i for i, e in enumerate(events) if e["kind"] == "parameters changed"), default=-1)
        return [
            Vote(e["actor"], "approve" if e["kind"] == "approved" else "reject", e["at"], tuple(e["detail"].get("roles", ())))
            for e in events[changed + 1:]
            if e["kind"] in ("approved", "rejected") and e["actor"]
        ]

    # --- codes ------------------------------------------------------------------------------

    def issue_code(self, gate: Gate, approver: str, binding: Binding) -> str | None:
        """A new code for `approver` at `gate`, or None if one was issued already."""
        code, salt = new_code(), new_salt()
        try:
            with self.engine.begin() as db:
                db.execute(
                    insert(gate_codes).values(
                        gate_id=gate.id, approver=approver, salt=salt, hash=code_hash(code, binding, salt),
                        issued_at=_now(), wrong=0,
                    )
                )
        except IntegrityError:
            return None
        return code

    def reissue_codes(self, gate: Gate) -> None:
        """Forget every code of `gate`: its parameters changed, so the codes (bound to the old
        ones) and the votes cast with them no longer count; everyone is sent a new code."""
        with self.engine.begin() as db:
            db.execute(gate_codes.delete().where(gate_codes.c.gate_id == gate.id))

    def check_code(self, gate: Gate, approver: str, code: str, binding: Binding) -> CodeCheck:
        """Check and use up `approver`'s code; a wrong one counts towards the lock-out. The slow
        hash is compared outside any transaction; the use is one conditional UPDATE."""
        mine = (gate_codes.c.gate_id == gate.id, gate_codes.c.approver == approver)
        with self.engine.connect() as db:
            row = db.execute(select(gate_codes).where(*mine)).mappings().first()
        if row is None:
            return "none"
        if row["wrong"] >= MAX_WRONG_CODES:
            return "locked"
        if row["used_at"] is not None:
            return "used"
        if not code_matches(code, binding, row["salt"], row["hash"]):
            with self.engine.begin() as db:
                db.execute(update(gate_codes).where(*mine).values(wrong=gate_codes.c.wrong + 1))
            return "wrong"
        with self.engine.begin() as db:
            used = db.execute(update(gate_codes).where(*mine, gate_codes.c.used_at.is_(None)).values(used_at=_now()))
        return "ok" if used.rowcount == 1 else "used"

    def wrong_codes(self, gate_id: str, approver: str) -> int:
        with self.engine.connect() as db:
            value = db.execute(
                select(gate_codes.c.wrong).where(gate_codes.c.gate_id == gate_id, gate_codes.c.approver == approver)
            ).scalar()
        return int(value or 0)

    def holders_of_codes(self, gate_id: str) -> set[str]:
        with self.engine.connect() as db:
            return set(db.execute(select(gate_codes.c.approver).where(gate_codes.c.gate_id == gate_id)).scalars())


def _gate(row: Mapping[str, Any]) -> Gate:
    values = dict(row)
    for name in ("opened_at", "deadline", "decided_at"):
        if values[name] is not None and values[name].tzinfo is None:
            values[name] = values[name].replace(tzinfo=UTC)  # SQLite keeps no zone
    return Gate(**values)


def _now() -> datetime:
    return datetime.now(UTC)
