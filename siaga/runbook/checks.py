"""Rules that span a runbook: step graph, actions and their parameters, roles, templates, schedule.

Each check takes the validated model and returns diagnostics (errors, and warnings such as a
trigger that never decides); none raises.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ValidationError

from ..actions import ActionRegistry, Risk
from .comms import check_comms
from .diagnostics import Diagnostic, Loc, did_you_mean
from .models import HEARTBEAT_NAME, HEARTBEAT_SOURCE, PHASE_LISTS, RESOLVE, RESPOND, ROSTER_ROLE, Runbook, Step, Trigger
from .plan import find_cycle, is_upstream, step_needs
from .replies import check_voices
from .roster import Roster, check_roster, role_members
from .source import Document
from .templates import CONTEXT_ROOTS, TemplateError, is_template, references
from .triggers import shadowed_by

_TRIGGER_ROOTS = frozenset({"alert"})
UNDO_ROOTS = frozenset({"step"})
"""An undo's templates also read `step`: the id and output of the step being undone."""


def check_runbook(
    runbook: Runbook,
    doc: Document,
    registry: ActionRegistry,
    roster: Roster | None = None,
    templates: Mapping[str, str] | None = None,
) -> list[Diagnostic]:
    """Every cross-field problem of `runbook`; `doc` places each one in the source. With a
    `roster`, every person named must be in it and allowed the role they are given; with
    `templates` (message templates by file name), every draft must have its own."""
    return [
        *_check_step_graph(runbook, doc),
        *_check_actions(runbook, doc, registry),
        *_check_roles(runbook, doc, roster),
        *_check_clock_approvals(runbook, doc, registry),
        *(check_roster(runbook, doc, roster) if roster is not None else ()),
        *_check_templates(runbook, doc),
        *_check_triggers(runbook, doc),
        *_check_maintenance(runbook, doc),
        *_check_drill(runbook, doc, registry),
        *check_comms(runbook, doc, templates),
        *check_voices(runbook, doc, templates),
    ]


def _phases(runbook: Runbook) -> Iterator[tuple[str, list[Step]]]:
    """Each step list with its name (the first part of a diagnostic's path): `steps`, then
    `on_resolve`."""
    for phase in (RESPOND, RESOLVE):
        yield PHASE_LISTS[phase], runbook.phase_steps(phase)


def _all_steps(runbook: Runbook) -> Iterator[tuple[str, int, Step]]:
    for where, steps in _phases(runbook):
        for index, step in enumerate(steps):
            yield where, index, step


def _check_step_graph(runbook: Runbook, doc: Document) -> Iterator[Diagnostic]:
    first_place: dict[str, tuple[str, int]] = {}
    for where, steps in _phases(runbook):
        ids = [step.id for step in steps]
        others = {step.id for _, other in _phases(runbook) if other is not steps for step in other}
        for index, step in enumerate(steps):
            if step.id in first_place:
                name, at = first_place[step.id]
                yield doc.diagnostic(
                    "duplicate-step",
                    f"step id `{step.id}` is already used by {name}[{at}]",
                    (where, index, "id"),
                    hint="give every step its own id"
                    + ("" if name == where else ": ids are unique across steps and on_resolve"),
                )
            first_place.setdefault(step.id, (where, index))
            for position, name in enumerate(step.after or ()):
                loc: Loc = (where, index, "after", position)
                if name == step.id:
                    yield doc.diagnostic("self-dependency", f"step `{name}` cannot run after itself", loc)
                elif name in others and name not in ids:
                    yield doc.diagnostic(
                        "other-phase",
                        f"`{name}` is not in {where}: "
                        + ("on_resolve steps run in a run of their own, after the incident resolves"
                           if where == "on_resolve" else "on_resolve steps run only after the incident resolves"),
                        loc,
                        hint=f"`after:` names steps of {where} only",
                    )
                elif name not in ids:
                    yield doc.diagnostic(
                        "unknown-step", f"no step has the id `{name}`", loc, hint=did_you_mean(name, ids)
                    )
        for index, step in enumerate(steps):
            if step.releases is None:
                continue
            responds = [s.id for s in runbook.steps]
            if where != "on_resolve":
                yield doc.diagnostic(
                    "releases-in-response", "`releases:` is for on_resolve steps: it names a step of the response",
                    (where, index, "releases"), hint="move this step to on_resolve, or use `after:`",
                )
            elif step.releases not in responds:
                yield doc.diagnostic(
                    "unknown-step", f"no step of the response has the id `{step.releases}`",
                    (where, index, "releases"), hint=did_you_mean(step.releases, responds),
                )
        needs = step_needs(steps)
        cycle = find_cycle({k: [n for n in v if n != k] for k, v in needs.items()})
        if cycle:
            index = ids.index(cycle[0])
            yield doc.diagnostic(
                "cycle",
                "steps wait for each other in a cycle: " + " -> ".join(cycle),
                (where, index, "after"),
                hint="remove one of these `after:` entries",
            )


def _check_actions(runbook: Runbook, doc: Document, registry: ActionRegistry) -> Iterator[Diagnostic]:
    for where, steps in _phases(runbook):
        for index, step in enumerate(steps):
            yield from _check_step_actions(step, (where, index), doc, registry)


def _check_step_actions(step: Step, base: Loc, doc: Document, registry: ActionRegistry) -> Iterator[Diagnostic]:
    if step.action not in registry:
        yield doc.diagnostic(
            "unknown-action",
            f"no action is named `{step.action}`",
            (*base, "action"),
            hint=did_you_mean(step.action, registry.names()) or "`siaga actions` lists them",
        )
    else:
        yield from _check_params(step.action, registry[step.action].params, step.with_, (*base, "with"), doc)
    if step.undo is None:
        return
    if step.undo.action not in registry:
        spelled_out: Loc = (*base, "undo", "action")  # not `undo: name`
        yield doc.diagnostic(
            "unknown-action",
            f"no action is named `{step.undo.action}`",
            spelled_out if spelled_out in doc.positions.values else spelled_out[:-1],
            hint=did_you_mean(step.undo.action, registry.names()) or "`siaga actions` lists them",
        )
        return
    name, undo_model = step.undo.action, registry[step.undo.action].params
    if step.undo.with_ is None:
        yield from _check_params(name, undo_model, step.with_, (*base, "with"), doc, "undo: ")
    else:
        yield from _check_params(name, undo_model, step.undo.with_, (*base, "undo", "with"), doc)


def _check_params(
    action: str,
    model: type[BaseModel], params: Mapping[str, Any], loc: Loc, doc: Document, prefix: str = ""
) -> Iterator[Diagnostic]:
    """Validate `params` against an action's model; a value still to be templated is not judged."""
    try:
        model.model_validate(dict(params))
    except ValidationError as exc:
        known = [field.alias or name for name, field in model.model_fields.items()]
        for error in exc.errors():
            where = tuple(error["loc"])
            kind = error["type"]
            # Any prefix: a union's errors name its members below the value (scope.literal[...]).
            if kind not in {"missing", "extra_forbidden"} and any(
                is_template(_value_at(params, where[:n])) for n in range(1, len(where) + 1)
            ):
                continue
            place = (*loc, *where)
            if kind == "extra_forbidden":
                yield doc.diagnostic(
                    "unknown-parameter",
                    f"{prefix}action `{action}` takes no parameter `{where[-1]}`",
                    place,
                    key=True,
                    hint=did_you_mean(str(where[-1]), known)
                    or "it takes: " + ", ".join(known),
                )
            elif kind == "missing":
                yield doc.diagnostic("missing-parameter", f"{prefix}`{where[-1]}` is required", place)
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                yield doc.diagnostic("bad-parameter", prefix + message, place)


def _value_at(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _check_roles(runbook: Runbook, doc: Document, roster: Roster | None) -> Iterator[Diagnostic]:
    roles = runbook.roles
    for position, role in enumerate(runbook.chain_of_command):
        if role not in roles:
            yield doc.diagnostic(
                "unknown-role",
                f"no role is named `{role}`",
                ("chain_of_command", position),
                hint=did_you_mean(role, roles) or "declare it under `roles:`",
            )
    for where, index, step in _all_steps(runbook):
        approval = step.approval
        if approval is None:
            continue
        loc: Loc = (where, index, "approval")
        people: set[str] = set()
        all_known = True
        for position, role in enumerate(approval.from_):
            if role not in roles:
                all_known = False
                yield doc.diagnostic(
                    "unknown-role",
                    f"no role is named `{role}`",
                    (*loc, "from", position),
                    hint=did_you_mean(role, roles) or "declare it under `roles:`",
                )
            if roles.get(role) == ROSTER_ROLE and roster is None:
                all_known = False  # who holds it is only known with the roster
            people.update(role_members(runbook, role, roster))
        if all_known and approval.quorum > len(people):  # an unknown role's people are unknown
            yield doc.diagnostic(
                "quorum-too-high",
                f"quorum {approval.quorum} needs more people than the {len(people)} "
                f"in roles {', '.join(approval.from_)}",
                (*loc, "quorum"),
            )
        if approval.distinct_roles and approval.quorum > len(set(approval.from_)):
            yield doc.diagnostic(
                "quorum-too-high",
                f"distinct_roles with quorum {approval.quorum} needs at least "
                f"{approval.quorum} roles in `from`",
                (*loc, "quorum"),
            )


def _check_clock_approvals(
    runbook: Runbook, doc: Document, registry: ActionRegistry
) -> Iterator[Diagnostic]:
    """A destructive step is approved by the clock only where its approval says so in words."""
    for where, index, step in _all_steps(runbook):
        approval = step.approval
        if approval is None or approval.on_timeout != "approve":
            continue
        if approval.timeout_approves_destructive:
            continue
        if step.action in registry and registry[step.action].risk is Risk.DESTRUCTIVE:
            yield doc.diagnostic(
                "timeout-approves-destructive",
                f"`{step.action}` is destructive: on_timeout: approve would let the clock approve it "
                "when nobody answers",
                (where, index, "approval", "on_timeout"),
                hint="use on_timeout: reject or fail, or add `timeout_approves_destructive: true` to "
                "this approval if running it unapproved is really the safe choice",
            )


def _check_templates(runbook: Runbook, doc: Document) -> Iterator[Diagnostic]:
    for where, steps in _phases(runbook):
        needs = step_needs(steps)
        step_ids = [step.id for step in steps]
        others = [step.id for _, other in _phases(runbook) if other is not steps for step in other]
        for index, step in enumerate(steps):
            def upstream(candidate: str, step_id: str = step.id, needs: dict[str, tuple[str, ...]] = needs) -> bool:
                return is_upstream(candidate, step_id, needs)

            for loc, source, expression in _templates_of(step, (where, index)):
                try:
                    found = references(source, expression=expression)
                except TemplateError as exc:
                    yield doc.diagnostic("template-syntax", f"template does not parse: {exc}", loc)
                    continue
                roots = CONTEXT_ROOTS | UNDO_ROOTS if "undo" in loc else CONTEXT_ROOTS
                for ref in found:
                    if ref.root == "steps" and ref.key in others and ref.key not in step_ids:
                        yield _other_phase_output(ref.key, where, loc, doc)
                        continue
                    yield from _check_reference(ref.root, ref.key, loc, doc, runbook, step_ids, upstream, roots)


def _other_phase_output(step_id: str, where: str, loc: Loc, doc: Document) -> Diagnostic:
    """A template reading the output of a step of the other phase, which its run never has."""
    if where == "on_resolve":
        return doc.diagnostic(
            "other-phase",
            f"`{step_id}` is a step of `steps:`; on_resolve steps run in a run of their own once the "
            "incident resolves, where the response's outputs are not at hand",
            loc,
            hint="read `incident` or `alert`, or let the action find its own (pagerduty.resolve "
            "`trigger_step:`, statuspage.resolve finds the incident's status incident)",
        )
    return doc.diagnostic(
        "other-phase",
        f"`{step_id}` is an on_resolve step: it runs only after the incident resolves",
        loc,
        hint="read only steps of `steps:` here",
    )


def _check_reference(
    root: str,
    key: str | None,
    loc: Loc,
    doc: Document,
    runbook: Runbook,
    step_ids: list[str],
    upstream: Callable[[str], bool],
    roots: frozenset[str],
) -> Iterator[Diagnostic]:
    if key is None:
        if root not in roots:
            yield doc.diagnostic(
                "unknown-name",
                f"templates here cannot read `{root}`; they read " + ", ".join(sorted(roots)),
                loc,
                hint=did_you_mean(root, roots),
            )
    elif root == "inputs" and key not in runbook.inputs:
        yield doc.diagnostic(
            "unknown-input",
            f"no input is named `{key}`",
            loc,
            hint=did_you_mean(key, runbook.inputs) or "declare it under `inputs:`",
        )
    elif root == "steps" and key not in step_ids:
        yield doc.diagnostic(
            "unknown-step", f"no step has the id `{key}`", loc, hint=did_you_mean(key, step_ids)
        )
    elif root == "steps" and not upstream(key):
        yield doc.diagnostic(
            "not-upstream",
            f"step `{key}` has not finished when this step runs, so its output is not there yet",
            loc,
            hint=f"add `{key}` to this step's `after:`",
        )


def _templates_of(step: Step, base: Loc) -> Iterator[tuple[Loc, str, bool]]:
    if step.when is not None:
        yield (*base, "when"), step.when, True
    yield from _strings((*base, "with"), step.with_)
    if step.undo is not None and step.undo.with_:
        yield from _strings((*base, "undo", "with"), step.undo.with_)


def _strings(loc: Loc, value: Any) -> Iterator[tuple[Loc, str, bool]]:
    if isinstance(value, str) and is_template(value):
        yield loc, value, False
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings((*loc, key), item)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _strings((*loc, position), item)


def _check_triggers(runbook: Runbook, doc: Document) -> Iterator[Diagnostic]:
    required = [name for name, spec in runbook.inputs.items() if spec.required]
    for index, trigger in enumerate(runbook.triggers):
        loc: Loc = ("triggers", index)
        for name, source in trigger.inputs.items():
            if name not in runbook.inputs:
                yield doc.diagnostic(
                    "unknown-input",
                    f"no input is named `{name}`",
                    (*loc, "inputs", name),
                    key=True,
                    hint=did_you_mean(name, runbook.inputs) or "declare it under `inputs:`",
                )
            try:
                found = references(source)
            except TemplateError as exc:
                yield doc.diagnostic(
                    "template-syntax", f"template does not parse: {exc}", (*loc, "inputs", name)
                )
                continue
            for ref in found:
                if ref.key is None and ref.root not in _TRIGGER_ROOTS:
                    yield doc.diagnostic(
                        "unknown-name",
                        f"a trigger's inputs can read only `alert`, not `{ref.root}`",
                        (*loc, "inputs", name),
                    )
        yield from _check_heartbeat(trigger, loc, doc)
        missing = [name for name in required if name not in trigger.inputs]
        if missing:
            yield doc.diagnostic(
                "missing-input",
                "this trigger gives no value for required input " + ", ".join(missing),
                loc,
                hint="map it under the trigger's `inputs:` or give the input a default",
            )
        earlier = shadowed_by(runbook.triggers, index)
        if earlier is not None:
            yield doc.diagnostic(
                "shadowed-trigger",
                f"this trigger never decides: triggers[{earlier}] takes every alert it takes and fires first"
                + ("" if runbook.triggers[earlier].threshold is None else " (it needs no more alerts, over no shorter a window, in groups no finer)"),
                loc,
                hint=f"move it above triggers[{earlier}], or narrow triggers[{earlier}]'s match",
                severity="warning",
            )


def _check_heartbeat(trigger: Trigger, loc: Loc, doc: Document) -> Iterator[Diagnostic]:
    """A heartbeat trigger expects a signal: it counts nothing, and a posted heartbeat has a name."""
    if trigger.heartbeat is None:
        return
    if trigger.threshold is not None:
        yield doc.diagnostic(
            "heartbeat-threshold",
            "a heartbeat trigger cannot also be a threshold: it opens when its signal stops, not when alerts pile up",
            (*loc, "threshold"),
            hint="split it into two triggers",
        )
    if trigger.source == HEARTBEAT_SOURCE:
        name = trigger.match.get("name")
        if name is None:
            yield doc.diagnostic(
                "heartbeat-name",
                "a `source: heartbeat` trigger names the heartbeat it expects: match: {name: ...} "
                "(what is posted to /heartbeats/{name})",
                (*loc, "match"),
            )
        elif not re.fullmatch(HEARTBEAT_NAME, name):
            yield doc.diagnostic(
                "heartbeat-name",
                f"`{name}` cannot be posted to /heartbeats/{{name}}: lowercase letters, digits, `.`, `-` and `_`",
                (*loc, "match", "name"),
            )


def _check_schedule(schedule: str, timezone: str, loc: Loc, doc: Document) -> Iterator[Diagnostic]:
    """A cron `schedule` (at `loc` + ``schedule``) and its IANA `timezone` (+ ``timezone``)."""
    try:
        CronSim(schedule, datetime(2000, 1, 1))
    except (CronSimError, ValueError, KeyError, IndexError) as exc:
        yield doc.diagnostic(
            "bad-cron",
            f"`{schedule}` is not a cron schedule: {exc}",
            (*loc, "schedule"),
            hint="five fields: minute hour day-of-month month day-of-week, e.g. 0 3 * * MON",
        )
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: `Asia`, a folder
        yield doc.diagnostic(
            "bad-timezone",
            f"`{timezone}` is not an IANA time zone",
            (*loc, "timezone"),
            hint="for example UTC, Asia/Jakarta or Europe/Berlin",
        )


def _check_maintenance(runbook: Runbook, doc: Document) -> Iterator[Diagnostic]:
    for index, window in enumerate(runbook.maintenance):
        yield from _check_schedule(window.schedule, window.timezone, ("maintenance", index), doc)


def _check_drill(runbook: Runbook, doc: Document, registry: ActionRegistry) -> Iterator[Diagnostic]:
    drill = runbook.drill
    for name, value in drill.inputs.items():
        loc: Loc = ("drill", "inputs", name)
        if name not in runbook.inputs:
            yield doc.diagnostic(
                "unknown-input", f"no input is named `{name}`", loc, key=True,
                hint=did_you_mean(name, runbook.inputs) or "declare it under `inputs:`",
            )
            continue
        try:
            runbook.inputs[name].coerce(value)
        except ValueError as exc:
            yield doc.diagnostic("invalid", str(exc), loc)
    missing = [n for n, s in runbook.inputs.items() if s.required and n not in drill.inputs]
    if drill.schedule is not None and missing:
        yield doc.diagnostic(
            "missing-input",
            "a scheduled drill gives no value for required input " + ", ".join(missing),
            ("drill", "schedule"),
            hint="set them under `drill.inputs:` or give the inputs defaults",
        )
    schedule = _check_schedule(drill.schedule or "* * * * *", drill.timezone, ("drill",), doc)
    yield from (d for d in schedule if drill.schedule is not None or d.code != "bad-cron")
    for pattern in drill.substitute:
        if not registry.matching(pattern):
            wildcard = re.search(r"[*?\[]", pattern)
            yield doc.diagnostic(
                "unknown-action",
                f"`{pattern}` matches no action",
                ("drill", "substitute", pattern),
                key=True,
                hint=None if wildcard else did_you_mean(pattern, registry.names()),
            )
