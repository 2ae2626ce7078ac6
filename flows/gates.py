"""Approval gates inside a flow run: decide once what would run, ask the right people, wait on
the decision ledger, and give the process back while nothing but people is awaited.

Design (see README "Approval gates"):
- **Decided once, inside the gate.** A gated step's `when:` and parameters are evaluated when its
  gate opens and kept with the gate (`siaga.approvals.records`); the step later runs with exactly
  those parameters, and a false `when:` is a skip recorded as such.
- **Siaga owns the decision.** People vote through channels (`siaga approve`, the Prefect UI's
  Resume form in `gate_form`), each of which submits to the ledger; the gate only reads the
  ledger's outcome. Nothing written into Prefect decides anything.
- **Gates open side by side.** Every gate waits on its own: a run with three independent gated
  steps asks three groups of people at once, and steps that do not depend on a gate keep running.
- **Waiting holds no process.** A run has one `RunWaiter`: while any step runs it only polls the
  ledger; once every remaining step waits on people, it parks the run with one Resume form that
  serves all its open gates. On a deployment (`siaga up`) parking is Prefect's suspension: the
  process exits and `siaga up` wakes the run when a gate is decided or its clock needs it
  (`wakeups`); the run starts again from the top, its finished steps come back from Prefect's
  result cache and its gates from the ledger. Without a deployment (`--local`, a flow called in
  a test) the process holds the pause and polls.
- **Escalation** rides on each gate's own clock: at each level of the chain of command the next
  role is sent codes; at the deadline the ledger applies the runbook's `on_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.input import keyset_from_base_key
from prefect.states import Paused, Running, State, Suspended

from siaga.actions import DRILL_PREFIX, ActionContext, ActionRegistry, ActionSpec, Mode
from siaga.approvals.codes import Binding
from siaga.approvals.policy import MAX_WRONG_CODES, GatePolicy, Verdict, gate_policy
from siaga.approvals.records import Gate, GateRecords, gate_id
from siaga.approvals.runs import RunRecords
from siaga.audit import AuditTrail
from siaga.canonical import digest
from siaga.logs import get_logger
from siaga.runbook import Roster, Runbook, Step, role_members
from siaga.runbook.templates import TemplateError, evaluate_condition, render_value
from siaga.secrets import REDACTOR

from .execution import RunCancelled
from .gate_form import FORM_POLL, OUTSIDE_RESUME, Form, build_form, save_form, take_answer
from .links import flow_run_url
from .reach import reach
from .steps import StepRefused, drill_behaviour, render_params

log = get_logger("siaga.gates")

# How often a waiting gate reads the ledger (`Settings.gate_poll_seconds`), and how long a run must
# have nothing but people to wait for before it parks (`Settings.gate_park_after`: the gates opening
# together are given this long to open before the form is made): the run's settings, in `RunWaiter`.

Clock = Callable[[], datetime]


class Suspend(Exception):
    """Every remaining step waits on people: the run suspends with this Prefect state."""

    def __init__(self, state: State[Any]) -> None:
        super().__init__("the run waits on people only: suspended")
        self.state = state


class RunWaiter:
    """The run's waiting at its gates: one Prefect pause (one Resume form) for all its open gates,
    made only when nothing but people is awaited, and a suspension where the run can come back."""

    def __init__(
        self, run_id: str, records: GateRecords, runs: RunRecords, *, runbook: Runbook, roster: Roster | None,
        can_suspend: bool, clock: Clock, audit: AuditTrail, poll_seconds: float = 0.5, park_after: float = 1.0,
    ) -> None:
        self.run_id, self.records, self.runs, self.audit = run_id, records, runs, audit
        self.poll_seconds, self.park_after = poll_seconds, park_after
        self.runbook, self.roster, self.can_suspend, self.clock = runbook, roster, can_suspend, clock
        self.active = 0
        self.waiting: dict[str, Gate] = {}
        self.parked: Form | None = None
        self._idle_since: float | None = None
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        """Around work in this process (a step, a gate opening or sending codes): the run is
        Running while it lasts."""
        self.active += 1
        try:
            await self._unpark()
            yield
        finally:
            self.active -= 1

    def waits(self, gate: Gate) -> None:
        self.waiting[gate.id] = gate

    def stops_waiting(self, gate: Gate) -> None:
        self.waiting.pop(gate.id, None)

    async def watch(self) -> None:
        """Until cancelled: park the run when it only waits on people, take answers given in its
        form, notice a cancellation. Raises `Suspend` or `RunCancelled`."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FORM_POLL)
            if self.parked is not None:
                await self._while_parked()
            idle = self.active == 0 and bool(self.waiting) and self.parked is None
            if not idle:
                self._idle_since = None
                continue
            self._idle_since = self._idle_since or loop.time()
            if loop.time() - self._idle_since >= self.park_after:
                await self._park()

    # --- parking ------------------------------------------------------------------------------

    async def _park(self) -> None:
        async with self._lock:
            gates = [g for g in (self.records.get(i) for i in self.waiting) if g is not None]
            if not gates or not all(g.is_open for g in gates):
                return  # a gate was decided a moment ago: its step is about to run
            now = self.clock()
            wake = min(_wake_at(g.rules, now) for g in gates)
            form = build_form(self.run_id, gates, self.records, self.roster, now)
            key = f"gates-{uuid.uuid4().hex[:12]}"
            keyset = keyset_from_base_key(f"paused-{key}")
            timeout = int((max(g.deadline for g in gates) - now).total_seconds()) + 24 * 3600
            state: State[Any] = (Suspended if self.can_suspend else Paused)(  # type: ignore[operator]
                timeout_seconds=max(timeout, 60), pause_key=key, **({} if self.can_suspend else {"reschedule": False})
            )
            state.state_details.run_input_keyset = keyset
            if self.can_suspend:
                self.runs.update(self.run_id, state="waiting", wake_at=wake, waiting_on=sorted(g.id for g in gates))
            async with get_client() as client:
                result = await client.set_flow_run_state(uuid.UUID(self.run_id), state)
                if result.state is None or result.state.type is not StateType.PAUSED:
                    self.runs.update(self.run_id, state="running", wake_at=None)
                    await self._check_cancelled(client)
                    log.warning("the run could not park at its gates", run_id=self.run_id, details=str(result.details))
                    return
            form_hash = await save_form(self.run_id, keyset, form)
            self.runs.update(self.run_id, form_key=key, form_hash=form_hash)
            log.info("waiting on people", run_id=self.run_id, gates=[g.step_id for g in gates],
                     suspended=self.can_suspend, url=flow_run_url(self.run_id))
            if self.can_suspend:
                # a gate decided from here on is among `waiting_on`: `siaga up` wakes the run for it
                raise Suspend(result.state)
            self.parked = replace(form, key=key)

    async def _while_parked(self) -> None:
        """The run holds its pause: take an answer given in the form, notice a cancellation, and
        come out of the pause when a gate is decided (a step will run) or the clock needs it."""
        assert self.parked is not None
        async with get_client() as client:
            run = await client.read_flow_run(uuid.UUID(self.run_id))
        state = run.state
        if state is not None and (state.is_final() or state.type is StateType.CANCELLING):
            await self._cancelled(f"the run was {state.name} while it waited at its gates")
        if state is not None and state.type is StateType.RUNNING:  # resumed: by the form, or by hand
            key, self.parked = self.parked.key, None
            if await take_answer(self.run_id, key, self.records, self.runs) is None:
                record = self.runs.get(self.run_id)
                await self.audit.arecord("run.resumed", incident_id=record.incident_id if record else None,
                                         run_id=self.run_id, how=OUTSIDE_RESUME, channel="prefect-api")
            return
        decided = any(g is None or not g.is_open for g in (self.records.get(i) for i in self.waiting))
        due = any(_wake_at(g.rules, self.clock()) <= self.clock() for g in self.waiting.values() if g.policy)
        if decided or due:
            await self._unpark()

    async def _unpark(self) -> None:
        async with self._lock:
            if self.parked is None:
                return
            self.parked = None
            async with get_client() as client:
                result = await client.set_flow_run_state(uuid.UUID(self.run_id), Running())
                if result.state is None or result.state.type is not StateType.RUNNING:
                    await self._check_cancelled(client)

    async def _check_cancelled(self, client: Any) -> None:
        state = (await client.read_flow_run(uuid.UUID(self.run_id))).state
        if state is not None and (state.is_final() or state.type is StateType.CANCELLING):
            await self._cancelled(f"the run was {state.name} while it waited at its gates")

    async def _cancelled(self, reason: str) -> None:
        self.runs.end(self.run_id, "cancelled", reason)
        self.records.close_for_run(self.run_id, "cancelled", reason)
        raise RunCancelled(reason)


def _wake_at(policy: GatePolicy, now: datetime) -> datetime:
    """When a waiting gate next needs its run: the next escalation, else its deadline."""
    upcoming = policy.next_level(now)
    return min(upcoming.at, policy.deadline) if upcoming else policy.deadline


@dataclass
class Gatekeeper:
    """The gates of one flow run, each deciding its own step."""

    runbook: Runbook
    registry: ActionRegistry
    roster: Roster | None
    records: GateRecords
    waiter: RunWaiter
    requester: str | None
    incident_opened_at: datetime | None
    clock: Clock = lambda: datetime.now(UTC)

    async def __call__(self, step: Step, template_context: Mapping[str, Any], context: ActionContext) -> Verdict:
        async with self.waiter.busy():
            gate = await self._open(step, template_context, context)
        if gate.state in ("skipped", "refused"):
            return Verdict(gate.state, gate.decision or "")  # type: ignore[arg-type]
        self.waiter.waits(gate)
        try:
            return await self._wait(gate, context)
        finally:
            self.waiter.stops_waiting(gate)

    # --- opening: everything decided once ---------------------------------------------------

    async def _open(self, step: Step, template_context: Mapping[str, Any], context: ActionContext) -> Gate:
        gid = gate_id(context.run_id, step.id)
        existing = self.records.get(gid)
        if existing is not None:
            return self._rebound(existing, context)
        spec = self.registry[step.action]
        now = self.clock()
        policy = gate_policy(self.runbook, step, self.roster, opened_at=now,
                             incident_opened_at=self.incident_opened_at, requester=self.requester)
        common = dict(id=gid, run_id=context.run_id, step_id=step.id, runbook_id=self.runbook.id,
                      incident_id=context.incident_id, mode=str(context.mode), requester=self.requester,
                      opened_at=now, deadline=policy.deadline, policy=policy.as_json())
        try:
            if step.when is not None and not evaluate_condition(step.when, template_context):
                gate, _ = self.records.open(**common, state="skipped", decision=f"when: {step.when} was false",
                                            decided_at=now, params_hash="", evidence={})
                self.records.event(gate, "skipped", channel="system", reason=gate.decision)
                return gate
            rendered = render_params(spec, step.with_, template_context, "with").model_dump(mode="json", by_alias=True)
            params_hash = digest(rendered)
        except (TemplateError, StepRefused, ValueError) as exc:
            reason = f"the gate could not render the step: {REDACTOR.text(str(exc))}"
            gate, _ = self.records.open(**common, state="refused", decision=reason, decided_at=now,
                                        params_hash="", evidence={})
            self.records.event(gate, "refused", channel="system", reason=reason)
            return gate
        evidence = await self._evidence(step, spec, rendered, template_context, context, policy)
        binding = Binding(context.run_id, step.id, context.incident_id, str(context.mode), params_hash, digest(evidence))
        gate, created = self.records.open(
            **common, params_hash=params_hash, params=rendered, evidence=evidence,
            binding=asdict(binding), binding_hash=binding.digest,
        )
        if created:
            self.records.event(gate, "opened", channel="system", deadline=policy.deadline.isoformat(),
                               rule=evidence["rule"], binding=binding.digest, url=flow_run_url(context.run_id))
        return gate

    def _rebound(self, gate: Gate, context: ActionContext) -> Gate:
        """A gate opened by an earlier start of this run: still about what this run is? (The run's
        pinned parameters make a change unlikely; if the mode or incident differ all the same, the
        votes cast for the old binding no longer count.)"""
        if not gate.is_open or gate.binding is None:
            return gate
        binding = Binding(**{**gate.binding, "mode": str(context.mode), "incident_id": context.incident_id})
        if binding.digest == gate.binding_hash:
            return gate
        return self.records.rebind(gate, asdict(binding), binding.digest,
                                   "the run's mode or incident changed: earlier votes no longer count")

    async def _evidence(
        self, step: Step, spec: ActionSpec, rendered: Mapping[str, Any], template_context: Mapping[str, Any],
        context: ActionContext, policy: GatePolicy,
    ) -> dict[str, Any]:
        drill = context.mode is Mode.DRILL
        behaviour = drill_behaviour(self.runbook, spec)
        return {
            "title": self.runbook.title,
            "action": spec.name,
            "summary": spec.summary,
            "risk": str(spec.risk),
            "params": REDACTOR(dict(rendered)),
            "undo": _undo(step, template_context),
            "preview": await _preview(spec, rendered, context),
            "inputs_from": _inputs_from(step, template_context),
            "drill": _drill_effect(behaviour) if drill else None,
            "rule": _rule(policy),
            "on_timeout": policy.on_timeout,
        }

    # --- waiting: on the ledger ---------------------------------------------------------------

    async def _wait(self, gate: Gate, context: ActionContext) -> Verdict:
        while True:
            gate = self.records.get(gate.id) or gate
            if not gate.is_open:
                return _verdict_of(gate)
            now = self.clock()
            policy = gate.rules
            level = policy.level_at(now)
            if level > gate.level:
                roles = [role for lv in policy.levels[gate.level:level] for role in lv.roles]
                self.records.update(gate.id, level=level)
                self.records.event(gate, "escalated", channel="system", roles=roles, level=level)
            unsent = [p for p in policy.eligible(now) if p not in self.records.holders_of_codes(gate.id)]
            unalerted = self._unalerted_lockouts(gate)
            if unsent or unalerted:
                async with self.waiter.busy():
                    await self._send_codes(gate, policy, unsent, context)
                    for person in unalerted:
                        await self._alert_commander(gate, person, context)
            self.records.settle(gate, now)
            await asyncio.sleep(self.waiter.poll_seconds)

    def _unalerted_lockouts(self, gate: Gate) -> list[str]:
        events = self.records.events(gate.id)
        locked = [e["actor"] for e in events if e["kind"] == "locked out"]
        alerted = {e["detail"].get("about") for e in events if e["kind"] == "commander alerted"}
        return [p for p in dict.fromkeys(locked) if p not in alerted]

    # --- codes and messages -----------------------------------------------------------------

    async def _send_codes(self, gate: Gate, policy: GatePolicy, people: list[str], context: ActionContext) -> None:
        for person in people:
            codes = self.records.issue_codes(gate, person)
            if codes is None:
                continue
            text = self._code_message(gate, policy, person, *codes)
            channel = await self._deliver(person, f"Approval needed: {self.runbook.title}", text, context, gate.step_id)
            self.records.event(gate, "code sent", actor=person, channel=channel)

    def _code_message(self, gate: Gate, policy: GatePolicy, person: str, approve: str, reject: str) -> str:
        prefix = DRILL_PREFIX if gate.mode == "drill" else ""
        where = f", incident {gate.incident_id}" if gate.incident_id else ""
        what = (f"In this drill it is {gate.evidence['drill']}.\n" if gate.evidence.get("drill") else
                "This is a LIVE action.\n" if gate.mode == "live" else "")
        return (
            f"{prefix}{_name(self.roster, person)}, your decision is needed on step `{gate.step_id}` "
            f"({gate.evidence['action']}) of runbook {self.runbook.id}{where}.\n{what}"
            f"To APPROVE, your one-time code: {approve}\n"
            f"To REJECT, your one-time code: {reject}\n"
            f"Each works once, only for you, only for this step with these exact parameters.\n"
            f"Decide in the Prefect UI: {flow_run_url(gate.run_id)} (Resume), or run:\n"
            f"  siaga approve {gate.run_id} {gate.step_id} --as {person} --code CODE [--reject]\n"
            f"Deadline: {policy.deadline:%Y-%m-%d %H:%M:%S} UTC, then {policy.on_timeout}."
        )

    async def _alert_commander(self, gate: Gate, approver: str, context: ActionContext) -> None:
        """Tell the top of the chain of command that someone typed five wrong codes."""
        top = self.runbook.chain_of_command[-1:] or ["commander"]
        for person in [p for role in top for p in role_members(self.runbook, role, self.roster)]:
            channel = await self._deliver(
                person, f"Approver locked out: {self.runbook.title}",
                f"{_name(self.roster, approver)} typed {MAX_WRONG_CODES} wrong codes at step `{gate.step_id}` of "
                f"run {gate.run_id} and is locked out of that gate. Check that it was them.",
                context, gate.step_id,
            )
            self.records.event(gate, "commander alerted", actor=person, channel=channel, about=approver)

    async def _deliver(self, person: str, subject: str, text: str, context: ActionContext, step_id: str) -> str:
        """Send `text` to `person` through their roster channel; the outbox when they have none.
        The text holds codes: it never goes to the run's artifacts or logs."""
        quiet = replace(context, mode=Mode.LIVE, step_id=f"{step_id}-code-{person}", publish=_publish_nowhere)
        return await reach(person, subject, text, self.registry, self.roster, quiet)


def _verdict_of(gate: Gate) -> Verdict:
    state = {
        "approved": "approved", "failed": "failed", "skipped": "skipped", "refused": "refused",
        "cancelled": "cancelled", "voided": "cancelled",
    }.get(gate.state, "rejected")
    return Verdict(state, gate.decision or gate.state, gate.params if state == "approved" else None)  # type: ignore[arg-type]


def _rule(policy: GatePolicy) -> str:
    roles = ", ".join(policy.levels[0].roles)
    rule = f"{policy.quorum} approval{'s' if policy.quorum > 1 else ''} from {roles}"
    if policy.distinct_roles:
        rule += " (each from a different role)"
    rule += "; one rejection rejects" if policy.reject_rule == "any" else "; a majority of rejections rejects"
    later = [f"{', '.join(lv.roles)} at {lv.at:%H:%M:%S}" for lv in policy.levels[1:]]
    if later:
        rule += "; escalates to " + "; ".join(later)
    if policy.requester:
        rule += f"; {policy.requester} asked for the run and cannot approve it"
    return rule


def _undo(step: Step, template_context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The undo with its values as far as they are known now (what it reads from the step's own
    output is known only once the step has run)."""
    if step.undo is None:
        return None
    raw = step.undo.with_ if step.undo.with_ is not None else step.with_
    values: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            values[name] = render_value(value, {**template_context, "step": {"id": step.id, "output": {}}})
        except TemplateError:
            values[name] = f"(from the step's result once it has run: {value})"
    return {"action": step.undo.action, "with": REDACTOR(values)}


def _inputs_from(step: Step, template_context: Mapping[str, Any]) -> dict[str, Any]:
    """What the steps this one comes after found (a preview's merchants and value, a draft's
    text), for the people deciding: the outputs of this step's `after:` steps."""
    finished = template_context.get("steps") or {}
    shown = {}
    for need in step.after or ():
        done = finished.get(need)
        if isinstance(done, Mapping) and done.get("output") not in (None, {}):
            shown[need] = REDACTOR(done["output"])
    return shown


def _drill_effect(behaviour: Any) -> str:
    return {
        "call": "called for real ([DRILL] marked)",
        "sandbox": "called against its sandbox connection",
        "skip": "skipped",
    }.get(str(behaviour), "recorded only, not called")


async def _preview(spec: ActionSpec, rendered: Mapping[str, Any], context: ActionContext) -> Any:
    """The action's own preview of what it would change, read now; in a drill, none (a drill
    never reads production)."""
    if spec.preview is None or context.mode is Mode.DRILL:
        return None
    try:
        result = await spec.preview(spec.params.model_validate(rendered), context)
    except Exception as exc:  # noqa: BLE001 - evidence without a preview is still evidence
        return {"preview unavailable": REDACTOR.text(str(exc))}
    if hasattr(result, "model_dump"):
        result = result.model_dump(mode="json")
    return REDACTOR(result)


def _name(roster: Roster | None, person: str) -> str:
    return roster.name_of(person) if roster else person


async def _publish_nowhere(key: str, markdown: str) -> None:
    return None


GateRunner = Callable[[Step, Mapping[str, Any], ActionContext], Awaitable[Verdict]]
