"""The decision ledger: gates, their codes, and the votes that decide them, in Siaga's store.

A gate is a row, opened once per (flow run, step) with everything that is decided once: the
rendered parameters the step will run with, the evidence people see, the binding their votes are
about and the policy that counts them. Every channel (the Prefect UI's Resume form, `siaga
approve`, any later one) submits a vote here with `submit`, which checks the person's code,
records the vote as a sealed record in the incident's audit chain and, in the same transaction,
counts the gate's votes and decides it when the policy says so. The flow run only reads the
outcome: nothing a channel leaves in Prefect decides anything.

Votes are counted only from audit records that verify: the record's own hash, its link to the
record before it, Siaga's seal (`siaga.approvals.seal`, a key outside the store) and the gate's
current binding. A row written into the store by hand, or a vote for other parameters, counts
for nothing.

Every event is also logged (structlog JSON) and kept in `gate_events` for display; the audit
trail (kind ``gate.<event>``) is appended in the same transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from siaga.audit import AuditTrail, chain_of
from siaga.audit.chain import GENESIS
from siaga.canonical import as_utc
from siaga.logs import get_logger
from siaga.secrets import REDACTOR
from siaga.store import audit_records, gate_codes, gate_events, gates

from .codes import Decision, code_hash, code_matches, new_code, new_salt, statement
from .policy import MAX_WRONG_CODES, GatePolicy, Vote
from .seal import is_sealed, seal

log = get_logger("siaga.gates")

CodeCheck = Literal["ok", "wrong", "used", "locked", "none", "other"]
VOTE_KINDS = ("approved", "rejected")
CLOSED_BY_RUN = ("cancelled", "voided")


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
    params: dict[str, Any] | None = None
    binding: dict[str, Any] | None = None
    binding_hash: str | None = None
    policy: dict[str, Any] | None = None

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    @property
    def rules(self) -> GatePolicy:
        assert self.policy is not None, f"gate {self.id} has no policy"
        return GatePolicy.from_json(self.policy)


@dataclass(frozen=True)
class Submission:
    """What the ledger made of a vote: ``counted`` (the gate waits for more), ``decided`` (this
    vote decided the gate), or ``refused`` (with the reason); and the gate afterwards."""

    outcome: Literal["counted", "decided", "refused"]
    reason: str
    gate: Gate

    def __str__(self) -> str:
        if self.outcome == "refused":
            return f"refused: {self.reason}"
        if self.outcome == "decided":
            return f"counted; the gate is {self.gate.state}: {self.gate.decision}"
        return f"counted; {self.reason}"


def gate_id(run_id: str, step_id: str) -> str:
    return f"{run_id}:{step_id}"


class GateRecords:
    """The decision ledger in the store behind `engine`; codes are checked here so that only
    hashes are kept. Votes are sealed and counted with `key` (`siaga.approvals.seal.ledger_key`,
    as its entry point's `Wiring.seal_key`); records made without one only read gates and events."""

    def __init__(self, engine: Engine, key: bytes | None = None) -> None:
        self.engine = engine
        self._key = key

    @property
    def key(self) -> bytes:
        """The key of Siaga's seals on votes (`siaga.approvals.seal`)."""
        if self._key is None:
            raise RuntimeError("these gate records were made without the key of Siaga's seals: give "
                               "GateRecords the entry point's key (Wiring.seal_key) to seal or count votes")
        return self._key

    # --- gates ------------------------------------------------------------------------------

    def open(self, **values: Any) -> tuple[Gate, bool]:
        """The gate `values["id"]`, created with `values` (state ``open`` unless given) unless
        it exists; (gate, created)."""
        try:
            with self.engine.begin() as db:
                db.execute(insert(gates).values(**({"state": "open", "level": 1} | values)))
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

    def decide(
        self, gate_id: str, state: str, reason: str, approvers: list[str] | None = None,
        connection: Connection | None = None,
    ) -> bool:
        """Close the gate once; False if it was closed already."""
        with _within(self.engine, connection) as db:
            done = db.execute(
                update(gates)
                .where(gates.c.id == gate_id, gates.c.state == "open")
                .values(state=state, decision=reason, approvers=approvers, decided_at=_now(), pause_key=None)
            )
        return done.rowcount == 1

    def close_for_run(self, run_id: str, state: str, reason: str) -> list[Gate]:
        """Close every open gate of a run that was cancelled or refused; the gates closed."""
        closed = []
        for gate in self.find(state="open", run_id=run_id):
            if self.decide(gate.id, state, reason):
                self.event(gate, state, channel="system", reason=reason)
                closed.append(gate)
        return closed

    def rebind(self, gate: Gate, binding: Mapping[str, Any], binding_hash: str, reason: str) -> Gate:
        """The gate's binding changed (mode, parameters or evidence): votes cast for the old one no
        longer count, its codes are forgotten and everyone is sent new ones."""
        with self.engine.begin() as db:
            db.execute(gate_codes.delete().where(gate_codes.c.gate_id == gate.id))
            db.execute(update(gates).where(gates.c.id == gate.id).values(binding=dict(binding), binding_hash=binding_hash))
        self.event(gate, "binding changed", channel="system", reason=reason, binding=binding_hash)
        rebound = self.get(gate.id)
        assert rebound is not None
        return rebound

    def event(
        self, gate: Gate, kind: str, *, actor: str | None = None, channel: str | None = None,
        connection: Connection | None = None, **detail: Any,
    ) -> None:
        """Record what happened at `gate` (secrets redacted) and log it."""
        clean = REDACTOR(detail)
        with _within(self.engine, connection) as db:
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

    # --- votes ------------------------------------------------------------------------------

    def submit(
        self, gate_id: str, person: str, decision: Decision, code: str, *, channel: str, comment: str = "",
        now: datetime | None = None,
    ) -> Submission:
        """A vote from `channel`: checked (person, code, decision), recorded as a sealed audit
        record, counted, and the gate decided if the policy says so, in one transaction."""
        gate = self.get(gate_id)
        if gate is None:
            raise KeyError(gate_id)
        now = now or _now()
        comment = comment[:2000]

        def refuse(reason: str) -> Submission:
            self.event(gate, "refused", actor=person, channel=channel, reason=reason, decision=decision)
            return Submission("refused", reason, gate)

        if not gate.is_open:
            return refuse(f"the gate is closed ({gate.state}: {gate.decision})")
        if decision not in ("approve", "reject"):
            return refuse(f"no such decision {decision!r}")
        policy = gate.rules
        if person and person == policy.requester:
            return refuse("the person who asked for this run cannot approve it")
        eligible = policy.eligible(now)
        if person not in eligible:
            return refuse("they may not decide this gate now")
        if person in {v.person for v in self.votes(gate)}:
            return refuse("they have decided this gate already")
        check = self._check_code(gate, person, decision, code)
        if check == "wrong":
            wrong = self.wrong_codes(gate.id, person)
            submission = refuse(f"wrong code ({wrong} of {MAX_WRONG_CODES})")
            if wrong >= MAX_WRONG_CODES:
                self.event(gate, "locked out", actor=person, channel="system", reason=f"{MAX_WRONG_CODES} wrong codes")
            return submission
        if check != "ok":
            return refuse({
                "none": "no code was sent to them for this gate",
                "used": "their code for this gate was used already",
                "locked": f"locked out of this gate after {MAX_WRONG_CODES} wrong codes",
                "other": f"that is their {'reject' if decision == 'approve' else 'approve'} code, "
                         f"not their {decision} code: nothing was counted",
            }[check])
        roles = list(eligible[person])
        kind = "approved" if decision == "approve" else "rejected"
        with self._locked(gate.id) as db:
            row = db.execute(select(gates.c.state).where(gates.c.id == gate.id)).scalar()
            used = db.execute(
                update(gate_codes)
                .where(gate_codes.c.gate_id == gate.id, gate_codes.c.approver == person, gate_codes.c.used_at.is_(None))
                .values(used_at=now, used_for=decision)
            ).rowcount
            if row != "open" or not used:
                db.rollback()
                return refuse("the gate closed a moment ago" if row != "open" else "their code was used a moment ago")
            sealed = _vote_fields(gate, person, decision, roles)
            self.event(gate, kind, actor=person, channel=channel, connection=db, roles=roles, comment=comment,
                       binding=gate.binding_hash, seal=seal(sealed, self.key))
            outcome = policy.decide(self._votes(db, gate), now)
            decided = outcome.state != "pending"
            if decided:
                self.decide(gate.id, outcome.state, outcome.reason, list(outcome.approvers), connection=db)
                self.event(gate, "decided", channel="system", connection=db, decision=outcome.state,
                           reason=outcome.reason, approvers=list(outcome.approvers))
            db.commit()
        after = self.get(gate.id)
        assert after is not None
        return Submission("decided" if decided else "counted", outcome.reason, after)

    def settle(self, gate: Gate, now: datetime) -> Gate:
        """Count the open gate's votes and decide it if they, or the clock, say so: the votes
        counted at `submit` decide at once, this is for the clock (deadline, on_timeout) and for
        a policy whose eligible people changed (escalation)."""
        if not gate.is_open:
            return gate
        policy = gate.rules
        if policy.decide(self.votes(gate), now).state == "pending" and now < policy.deadline:
            return gate  # nothing to decide: no write, no lock
        with self._locked(gate.id) as db:
            if db.execute(select(gates.c.state).where(gates.c.id == gate.id)).scalar() != "open":
                db.rollback()
            else:
                outcome = policy.decide(self._votes(db, gate), now)
                if outcome.state != "pending":
                    self.decide(gate.id, outcome.state, outcome.reason, list(outcome.approvers), connection=db)
                    self.event(gate, "decided", channel="system", connection=db, decision=outcome.state,
                               reason=outcome.reason, approvers=list(outcome.approvers))
                elif now >= policy.deadline:
                    choice = policy.on_timeout
                    state = {"reject": "timed_out", "approve": "approved", "fail": "failed"}[choice]
                    reason = f"nobody decided by the deadline {policy.deadline:%H:%M:%S} UTC: on_timeout {choice}"
                    self.decide(gate.id, state, reason, connection=db)
                    self.event(gate, "timed out", channel="system", connection=db, on_timeout=choice)
                    self.event(gate, "decided", channel="system", connection=db,
                               decision="rejected" if state == "timed_out" else state, reason=reason)
                db.commit()
        after = self.get(gate.id)
        assert after is not None
        return after

    def votes(self, gate: Gate) -> list[Vote]:
        """The votes that count at `gate`: only from audit records that verify."""
        with self.engine.connect() as db:
            return self._votes(db, gate)

    def _votes(self, db: Connection, gate: Gate) -> list[Vote]:
        chain = chain_of(gate.incident_id, gate.run_id)
        rows = db.execute(
            select(audit_records)
            .where(audit_records.c.chain == chain, audit_records.c.run_id == gate.run_id,
                   audit_records.c.kind.in_([f"gate.{k}" for k in VOTE_KINDS]))
            .order_by(audit_records.c.seq)
        ).mappings().all()
        counted = []
        for row in rows:
            data = row["data"] or {}
            if data.get("gate") != gate.step_id:
                continue
            decision: Decision = "approve" if row["kind"] == "gate.approved" else "reject"
            fields = _vote_fields(gate, row["actor"], decision, list(data.get("roles") or ()))
            if data.get("binding") != gate.binding_hash or not is_sealed(fields, data.get("seal"), self.key):
                if data.get("binding") == gate.binding_hash:
                    log.warning("a vote record without Siaga's seal does not count", gate=gate.id, record=row["id"])
                continue
            if not _links(db, row):
                log.warning("a vote record that breaks its chain does not count", gate=gate.id, record=row["id"])
                continue
            at = as_utc(row["at"])
            counted.append(Vote(row["actor"], decision, at, tuple(data.get("roles") or ())))
        return counted

    # --- codes ------------------------------------------------------------------------------

    def issue_codes(self, gate: Gate, approver: str) -> tuple[str, str] | None:
        """New approve and reject codes for `approver` at `gate`, or None if they have theirs."""
        assert gate.binding_hash, f"gate {gate.id} has no binding"
        approve, reject = new_code(), new_code()
        while reject == approve:
            reject = new_code()
        salts = new_salt(), new_salt()
        try:
            with self.engine.begin() as db:
                db.execute(
                    insert(gate_codes).values(
                        gate_id=gate.id, approver=approver, issued_at=_now(), wrong=0,
                        salt=salts[0], hash=code_hash(approve, statement(gate.binding_hash, approver, "approve"), salts[0]),
                        reject_salt=salts[1],
                        reject_hash=code_hash(reject, statement(gate.binding_hash, approver, "reject"), salts[1]),
                    )
                )
        except IntegrityError:
            return None
        return approve, reject

    def _check_code(self, gate: Gate, approver: str, decision: Decision, code: str) -> CodeCheck:
        """Check `approver`'s `decision` code (not using it up); a wrong one counts towards the
        lock-out. The slow hashes are compared outside any transaction."""
        mine = (gate_codes.c.gate_id == gate.id, gate_codes.c.approver == approver)
        with self.engine.connect() as db:
            row = db.execute(select(gate_codes).where(*mine)).mappings().first()
        if row is None or row["reject_hash"] is None or not gate.binding_hash:
            return "none"
        if row["wrong"] >= MAX_WRONG_CODES:
            return "locked"
        if row["used_at"] is not None:
            return "used"
        proofs = {"approve": (row["salt"], row["hash"]), "reject": (row["reject_salt"], row["reject_hash"])}
        for said, (salt, stored) in proofs.items():
            if code_matches(code, statement(gate.binding_hash, approver, said), salt, stored):  # type: ignore[arg-type]
                return "ok" if said == decision else "other"
        with self.engine.begin() as db:
            db.execute(update(gate_codes).where(*mine).values(wrong=gate_codes.c.wrong + 1))
        return "wrong"

    def wrong_codes(self, gate_id: str, approver: str) -> int:
        with self.engine.connect() as db:
            value = db.execute(
                select(gate_codes.c.wrong).where(gate_codes.c.gate_id == gate_id, gate_codes.c.approver == approver)
            ).scalar()
        return int(value or 0)

    def holders_of_codes(self, gate_id: str) -> set[str]:
        with self.engine.connect() as db:
            return set(db.execute(select(gate_codes.c.approver).where(gate_codes.c.gate_id == gate_id)).scalars())

    def can_still_count(self, gate: Gate, now: datetime) -> dict[str, tuple[str, ...]]:
        """Who may decide `gate` now and whose vote would still count: eligible, not the
        requester, not voted yet, not locked out."""
        voted = {v.person for v in self.votes(gate)}
        return {
            person: roles for person, roles in gate.rules.eligible(now).items()
            if person not in voted and self.wrong_codes(gate.id, person) < MAX_WRONG_CODES
        }

    # --- transactions -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, gate_id: str) -> Iterator[Connection]:
        """A transaction that holds the gate: submissions to one gate queue, never interleave
        (SQLite: the write lock from the start; PostgreSQL: the gate's row lock)."""
        with self.engine.connect() as db:
            if db.dialect.name == "sqlite":
                db.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                db.execute(select(gates.c.id).where(gates.c.id == gate_id).with_for_update())
            try:
                yield db
            except BaseException:
                db.rollback()
                raise


@contextlib.contextmanager
def _within(engine: Engine, connection: Connection | None) -> Iterator[Connection]:
    if connection is not None:
        yield connection
        return
    with engine.begin() as db:
        yield db


def _vote_fields(gate: Gate, person: str, decision: str, roles: list[str]) -> dict[str, Any]:
    """What Siaga's seal on a vote covers."""
    return {"gate": gate.id, "person": person, "decision": decision, "binding": gate.binding_hash,
            "roles": sorted(roles)}


def _links(db: Connection, row: Mapping[str, Any]) -> bool:
    """Whether the record `row` is whole and follows the record before it in its chain."""
    from siaga.audit.trail import _record

    record = _record(row)
    if record.expected_hash() != record.hash:
        return False
    if record.seq == 1:
        return record.prev_hash == GENESIS
    before = db.execute(
        select(audit_records.c.hash).where(audit_records.c.chain == record.chain, audit_records.c.seq == record.seq - 1)
    ).scalar()
    return before == record.prev_hash


def _gate(row: Mapping[str, Any]) -> Gate:
    values = dict(row)
    for name in ("opened_at", "deadline", "decided_at"):
        values[name] = as_utc(values[name])
    return Gate(**values)


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = ["Gate", "GateRecords", "Submission", "gate_id"]
