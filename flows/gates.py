"""Approval gates inside a flow run: pause with a form the Prefect UI renders, check who answered,
pause again until the gate is decided, escalate up the chain of command on the impact clock.

Design (see README "Approval gates"):
- The gate is a loop in the flow run itself: open (record, send one-time codes), pause with a
  RunInput form whose JSON schema holds every rule it can (approver enum, code pattern), check the
  answer (code, eligibility, self-approval), record it, pause again until decided.
- Deadlines and escalation ride on the flow's own clock, not on the pause timeout (a pause that
  reaches its timeout always fails the run): while paused, the loop wakes at the next escalation
  or the deadline, takes the run out of the pause itself, escalates or decides, and pauses again.
- Gates are kept in Siaga's store, keyed by (flow run, step): a run restarted from the top (see
  `flows/revival.py`) finds its gate with its codes and votes, and every step done before comes
  back from Prefect's result cache instead of running again.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import get_client
from prefect.client.schemas.objects import StateType
from prefect.input import RunInput, keyset_from_base_key
from prefect.input.actions import aread_flow_run_input
from prefect.states import Paused, Running
from pydantic import Field, create_model

from siaga.actions import DRILL_PREFIX, ActionContext, ActionRegistry, ActionSpec, Mode
from siaga.approvals.codes import CODE_PATTERN, Binding, params_hash
from siaga.approvals.evidence import gate_description
from siaga.approvals.policy import MAX_WRONG_CODES, GatePolicy, Verdict, gate_policy
from siaga.approvals.records import Gate, GateRecords, gate_id
from siaga.logs import get_logger
from siaga.runbook import Roster, Runbook, Step, role_members
from siaga.runbook.templates import TemplateError, evaluate_condition
from siaga.secrets import REDACTOR

from .links import flow_run_url
from .reach import reach
from .steps import StepRefused, render_params

log = get_logger("siaga.gates")

POLL_SECONDS = float(os.environ.get("SIAGA_GATE_POLL_SECONDS", "0.5"))
"""How often a paused gate looks for an answer (Prefect's own default is 10 s)."""
CHANNEL_KEY = "siaga-channel-{key}"
"""A flow run input `siaga approve` writes before resuming, so the gate records the CLI channel."""

Clock = Callable[[], datetime]


class Gatekeeper:
    """The gates of one flow run, one at a time (a Prefect run can only wait on one pause)."""

    def __init__(
        self,
        runbook: Runbook,
        registry: ActionRegistry,
        roster: Roster | None,
        records: GateRecords,
        *,
        requester: str | None,
        incident_opened_at: datetime | None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.runbook, self.registry, self.roster, self.records = runbook, registry, roster, records
        self.requester, self.incident_opened_at, self.clock = requester, incident_opened_at, clock
        self._lock = asyncio.Lock()

    async def __call__(self, step: Step, template_context: Mapping[str, Any], context: ActionContext) -> Verdict:
        async with self._lock:
            return await self._gate(step, template_context, context)

    async def _gate(self, step: Step, template_context: Mapping[str, Any], context: ActionContext) -> Verdict:
        spec = self.registry[step.action]
        try:
            if step.when is not None and not evaluate_condition(step.when, template_context):
                return Verdict("ungated", "its condition is false")
            params = render_params(spec, step.with_, template_context, "with")
        except (TemplateError, StepRefused) as exc:
            return Verdict("ungated", str(exc))  # the step itself refuses, with the reason
        rendered = params.model_dump(mode="json", by_alias=True)
        digest = params_hash(rendered)
        now = self.clock()
        existing = self.records.get(gate_id(context.run_id, step.id))
        policy = gate_policy(
            self.runbook, step, self.roster,
            opened_at=existing.opened_at if existing else now,
            incident_opened_at=self.incident_opened_at, requester=self.requester,
        )
        evidence = {
            "title": self.runbook.title,
            "action": spec.name,
            "summary": spec.summary,
            "params": REDACTOR(rendered),
            "undo": _undo(step),
            "preview": await _preview(spec, params, context),
            "rule": _rule(policy),
            "on_timeout": policy.on_timeout,
        }
        gate, created = self.records.open(
            id=gate_id(context.run_id, step.id), run_id=context.run_id, step_id=step.id,
            runbook_id=self.runbook.id, incident_id=context.incident_id, mode=str(context.mode),
            params_hash=digest, requester=self.requester, opened_at=policy.opened_at,
            deadline=policy.deadline, evidence=evidence, host=socket.gethostname(), pid=os.getpid(),
        )
        if created:
            self.records.event(gate, "opened", channel="system", deadline=policy.deadline.isoformat(),
                               rule=evidence["rule"], params_hash=digest, url=flow_run_url(context.run_id))
        else:
            if not gate.is_open:
                return _verdict_of(gate)
            self.records.update(gate.id, host=socket.gethostname(), pid=os.getpid())
            self.records.event(gate, "reopened", channel="system", reason="the run restarted while the gate was open")
            if gate.params_hash != digest:
                self.records.reissue_codes(gate)
                self.records.update(gate.id, params_hash=digest, evidence=evidence)
                self.records.event(gate, "parameters changed", channel="system", params_hash=digest,
                                   reason="codes issued for the old parameters no longer count")
        return await self._loop(step, policy, context)

    async def _loop(self, step: Step, policy: GatePolicy, context: ActionContext) -> Verdict:
        gid = gate_id(context.run_id, step.id)
        notes: list[str] = []
        left = self.records.get(gid)
        if left is not None and left.pause_key and not any(
            e["detail"].get("pause") == left.pause_key for e in self.records.events(gid)
        ):  # an answer given while the run was down
            waiting = await _answer_at(uuid.UUID(context.run_id), left.pause_key)
            if waiting is not None:
                await self._consider(left, policy, *waiting, context)
        while True:
            gate = self.records.get(gid)
            assert gate is not None
            if not gate.is_open:
                return _verdict_of(gate)
            now = self.clock()
            level = policy.level_at(now)
            if level > gate.level:
                roles = [role for lv in policy.levels[gate.level:level] for role in lv.roles]
                self.records.update(gid, level=level)
                self.records.event(gate, "escalated", channel="system", roles=roles, level=level)
            await self._send_codes(gate, policy, now, context)
            outcome = policy.decide(self.records.votes(gid), now)
            if outcome.state != "pending":
                state = "approved" if outcome.state == "approved" else "rejected"
                if self.records.decide(gid, state, outcome.reason, list(outcome.approvers)):
                    self.records.event(gate, "decided", channel="system", decision=state, reason=outcome.reason,
                                       approvers=list(outcome.approvers))
                continue
            if now >= policy.deadline:
                self._time_out(gate, policy)
                continue
            wake = min(filter(None, (getattr(policy.next_level(now), "at", None), policy.deadline)))
            answer = await self._pause(gate, policy, step, context, wake, notes)
            if answer is not None:
                note = await self._consider(gate, policy, *answer, context)
                if note:
                    notes = [note]

    def _time_out(self, gate: Gate, policy: GatePolicy) -> None:
        choice = policy.on_timeout
        state = {"reject": "rejected", "approve": "approved", "fail": "failed"}[choice]
        reason = f"nobody decided by the deadline {policy.deadline:%H:%M:%S} UTC: on_timeout {choice}"
        if self.records.decide(gate.id, state if state != "rejected" else "timed_out", reason):
            self.records.event(gate, "timed out", channel="system", on_timeout=choice)
            self.records.event(gate, "decided", channel="system", decision=state, reason=reason)

    # --- one pause ------------------------------------------------------------------------

    async def _pause(
        self, gate: Gate, policy: GatePolicy, step: Step, context: ActionContext, wake: datetime, notes: list[str]
    ) -> tuple[dict[str, Any], str, str] | None:
        """Pause the run with the form until someone answers (the answer and its channel) or
        `wake` comes (None)."""
        now = self.clock()
        key = f"{step.id}-{uuid.uuid4().hex[:8]}"
        keyset = keyset_from_base_key(f"paused-{key}")
        votes = self.records.votes(gate.id)
        voted = {v.person for v in votes}
        eligible = {
            pid: _name(self.roster, pid) for pid in policy.eligible(now)
            if pid not in voted and self.records.wrong_codes(gate.id, pid) < MAX_WRONG_CODES
        }
        description = gate_description(
            runbook_id=self.runbook.id, incident_id=gate.incident_id, mode=gate.mode, step_id=step.id,
            deadline=policy.deadline, eligible=eligible,
            votes=[{"by": _name(self.roster, v.person), "choice": v.choice + "d", "at": f"{v.at:%H:%M:%S}"} for v in votes],
            notes=notes, **{k: v for k, v in gate.evidence.items() if k != "rule"}, rule=gate.evidence["rule"],
        )
        form = approval_form(list(eligible) or list(policy.eligible(now)) or ["nobody"], description)
        run_id = uuid.UUID(context.run_id)
        async with get_client() as client:
            pause = Paused(
                timeout_seconds=int((policy.deadline - now).total_seconds()) + 24 * 3600,
                reschedule=False, pause_key=key,
            )
            pause.state_details.run_input_keyset = keyset
            result = await client.set_flow_run_state(run_id, pause)
            if result.state is None or result.state.type is not StateType.PAUSED:
                raise RuntimeError(f"the run could not pause at gate {step.id}: {result.details}")
            # The form is saved once the run is Paused: Prefect >= 3.9 clears a pause key's inputs
            # when the run enters Paused (as its own pause_flow_run does, save after pausing).
            await form.asave(keyset, flow_run_id=run_id)
            self.records.update(gate.id, pause_key=key)  # the form is up: answers may come
            log.info("gate waiting", gate=gate.id, step=step.id, eligible=sorted(eligible), url=flow_run_url(run_id))
            while True:
                await asyncio.sleep(POLL_SECONDS)
                state = (await client.read_flow_run(run_id)).state
                if state is not None and state.type is StateType.RUNNING:
                    break
                if state is not None and (state.is_final() or state.type is StateType.CANCELLING):
                    raise asyncio.CancelledError(f"the run was {state.name} while waiting at gate {step.id}")
                if self.clock() >= wake:
                    taken = await client.set_flow_run_state(run_id, Running())
                    if taken.state is not None and taken.state.type is StateType.RUNNING:
                        break
        return await _answer_at(run_id, key)

    async def _consider(
        self, gate: Gate, policy: GatePolicy, answer: dict[str, Any], channel: str, pause: str, context: ActionContext
    ) -> str | None:
        """Check and record one answer (given at pause `pause`); returns a note for the next form
        when it was refused."""
        approver = str(answer.get("approver", ""))
        choice = answer.get("decision")
        comment = str(answer.get("comment") or "")[:2000]
        now = self.clock()

        def refuse(reason: str) -> str:
            self.records.event(gate, "refused", actor=approver, channel=channel, reason=reason, decision=choice,
                               pause=pause)
            return f"Refused an answer as {approver}: {reason}."

        if approver and approver == self.requester:
            return refuse("the person who asked for this run cannot approve it")
        eligible = policy.eligible(now)
        if approver not in eligible:
            return refuse("they may not decide this gate now")
        if approver in {v.person for v in self.records.votes(gate.id)}:
            return refuse("they have decided this gate already")
        binding = Binding(gate.run_id, gate.step_id, approver, self.records.get(gate.id).params_hash)  # type: ignore[union-attr]
        check = self.records.check_code(gate, approver, str(answer.get("code", "")), binding)
        if check == "wrong":
            wrong = self.records.wrong_codes(gate.id, approver)
            note = refuse(f"wrong code ({wrong} of {MAX_WRONG_CODES})")
            if wrong >= MAX_WRONG_CODES:
                self.records.event(gate, "locked out", actor=approver, channel="system",
                                   reason=f"{MAX_WRONG_CODES} wrong codes")
                await self._alert_commander(gate, approver, context)
            return note
        if check != "ok":
            return refuse({
                "none": "no code was sent to them for this gate",
                "used": "that code was used already",
                "locked": f"locked out of this gate after {MAX_WRONG_CODES} wrong codes",
            }[check])
        kind = "approved" if choice == "approve" else "rejected"
        self.records.event(gate, kind, actor=approver, channel=channel, roles=list(eligible[approver]), comment=comment,
                           pause=pause)
        return None

    # --- codes and messages -----------------------------------------------------------------

    async def _send_codes(self, gate: Gate, policy: GatePolicy, now: datetime, context: ActionContext) -> None:
        have = self.records.holders_of_codes(gate.id)
        binding_hash = gate.params_hash
        for person in policy.eligible(now):
            if person in have:
                continue
            code = self.records.issue_code(gate, person, Binding(gate.run_id, gate.step_id, person, binding_hash))
            if code is None:
                continue
            text = self._code_message(gate, policy, person, code)
            channel = await self._deliver(person, f"Approval needed: {self.runbook.title}", text, context, gate.step_id)
            self.records.event(gate, "code sent", actor=person, channel=channel)

    def _code_message(self, gate: Gate, policy: GatePolicy, person: str, code: str) -> str:
        prefix = DRILL_PREFIX if gate.mode == "drill" else ""
        return (
            f"{prefix}{_name(self.roster, person)}, your approval is needed for step `{gate.step_id}` "
            f"({gate.evidence['action']}) of runbook {self.runbook.id}"
            + (f", incident {gate.incident_id}" if gate.incident_id else "") + ".\n"
            f"Your one-time code: {code}\n"
            f"Decide in the Prefect UI: {flow_run_url(gate.run_id)} (Resume), or run:\n"
            f"  siaga approve {gate.run_id} {gate.step_id} --as {person} --code {code} [--reject]\n"
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
        The text holds a code: it never goes to the run's artifacts or logs."""
        quiet = replace(context, mode=Mode.LIVE, step_id=f"{step_id}-code-{person}", publish=_publish_nowhere)
        return await reach(person, subject, text, self.registry, self.roster, quiet)


async def _answer_at(run_id: uuid.UUID, key: str) -> tuple[dict[str, Any], str, str] | None:
    """The answer given at pause `key`, the channel it came through, and the key; None if none."""
    answer = await aread_flow_run_input(keyset_from_base_key(f"paused-{key}")["response"], flow_run_id=run_id)
    if not isinstance(answer, dict):
        return None
    channel = await aread_flow_run_input(CHANNEL_KEY.format(key=key), flow_run_id=run_id)
    return answer, "cli" if channel == "cli" else "ui", key


def approval_form(approvers: list[str], description: str) -> type[RunInput]:
    """The resume form: every rule it can hold is in its JSON schema, which the server enforces."""
    model = create_model(
        "ApprovalDecision",
        __base__=RunInput,
        decision=(Literal["approve", "reject"], Field(description="Approve or reject this step.")),
        approver=(Literal[tuple(approvers)], Field(description="Who you are (your roster id).",  # type: ignore[valid-type]
                                                   json_schema_extra=_listed)),
        code=(str, Field(pattern=CODE_PATTERN, description="The 8-digit one-time code you were sent.")),
        comment=(str, Field(default="", max_length=2000, description="Why (kept in the record).")),
    )
    return model.with_initial_data(description=description)


def _listed(schema: dict[str, Any]) -> None:
    """Keep a single allowed approver a one-item list: pydantic writes `Literal["x"]` as
    `{"const": "x"}`, which Prefect 3.8's v1 UI (the one the message's link opens) shows as an
    empty read-only field, and its Submit then sends nothing."""
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]


def _verdict_of(gate: Gate) -> Verdict:
    state = {"approved": "approved", "failed": "failed"}.get(gate.state, "rejected")
    return Verdict(state, gate.decision or gate.state, gate.params_hash)  # type: ignore[arg-type]


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


def _undo(step: Step) -> dict[str, Any] | None:
    if step.undo is None:
        return None
    return {"action": step.undo.action, "with": step.undo.with_ if step.undo.with_ is not None else "(the step's own)"}


async def _preview(spec: ActionSpec, params: Any, context: ActionContext) -> Any:
    """The action's own preview of what it would change, read now; in a drill, none (a drill
    never reads production)."""
    if spec.preview is None or context.mode is Mode.DRILL:
        return None
    try:
        result = await spec.preview(params, context)
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
