"""Routing: which runbooks an alert starts, the incident it belongs to, and the run's inputs.

Pure: values in, values out; no store, no clock. What routing needs from the store (is an incident
open, how many alerts a threshold counted) comes in as functions (`decide`).

* A trigger takes an alert when the sources are equal and every ``match`` label (and, for a
  threshold trigger, every ``threshold.match`` label) has exactly the given value.
* Every trigger of a runbook that takes the alert is a candidate `Route`, in file order
  (`routes`). Of one runbook's candidates, the first that fires decides (`decide`): a plain
  trigger fires when it takes the alert; a threshold trigger fires once ``count`` alerts it took
  (of the same group, the current one included) arrived within ``within``, or when the incident of
  its key is open already (the alert joins it). A threshold trigger that is not reached does not
  shadow a later trigger that fires.
* So one alert opens or joins at most one incident per runbook: the one of the deciding route.
  Every threshold trigger that takes a firing alert counts it, whichever route decides.
* The incident key is (runbook id, the values of the trigger's ``group_by`` labels); a label the
  alert lacks groups as the empty string. `group_key` is that tuple of values as canonical JSON.
* A trigger that an earlier one of its runbook always pre-empts never decides
  (`siaga.runbook.triggers.shadowed_by`; ``siaga validate`` warns about it).
* A heartbeat trigger routes no alert it expects (those are signs of life, noted by
  `siaga.incidents.heartbeats`); it routes only the alert its heartbeat raises when it goes quiet:
  source ``heartbeat`` with the label `HEARTBEAT_LABEL` = `heartbeat_key(trigger)`. The key is the
  digest of what the trigger expects, so runbooks expecting the same signal share one heartbeat.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from siaga.canonical import digest
from siaga.runbook import Runbook
from siaga.runbook.models import HEARTBEAT_SOURCE, Threshold, Trigger
from siaga.runbook.templates import TemplateError, render_value
from siaga.runbook.triggers import wanted_labels

from .alert import Alert

__all__ = [
    "HEARTBEAT_LABEL",
    "Route",
    "decide",
    "expects",
    "group_key",
    "heartbeat_key",
    "matches",
    "per_runbook",
    "render_inputs",
    "routes",
]

HEARTBEAT_LABEL = "siaga_heartbeat"
"""The label naming the heartbeat (`heartbeat_key`) on the alert it raises when it goes quiet."""


@dataclass(frozen=True)
class Route:
    """One trigger of one runbook that takes an alert: the incident it would open or join."""

    runbook_id: str
    trigger_index: int
    group_key: str
    group: dict[str, str] = field(hash=False)
    trigger: Trigger = field(compare=False, hash=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """The incident key: (runbook id, group key)."""
        return self.runbook_id, self.group_key

    @property
    def open_key(self) -> str:
        """The incident key as the store's one-open-incident constraint holds it."""
        return f"{self.runbook_id} {self.group_key}"

    @property
    def threshold(self) -> Threshold | None:
        return self.trigger.threshold


def matches(trigger: Trigger, alert: Alert) -> bool:
    """Whether `trigger` takes `alert`: same source, and every match label equal; for a heartbeat
    trigger, whether `alert` is the one its heartbeat raised going quiet."""
    if trigger.heartbeat is not None:
        return alert.source == HEARTBEAT_SOURCE and alert.labels.get(HEARTBEAT_LABEL) == heartbeat_key(trigger)
    return expects(trigger, alert)


def expects(trigger: Trigger, alert: Alert) -> bool:
    """Whether `alert` is of the kind `trigger` waits for: same source, every match label equal
    (for a heartbeat trigger: a sign of life)."""
    if trigger.source != alert.source:
        return False
    return all(alert.labels.get(name) == value for name, value in wanted_labels(trigger).items())


def group_key(trigger: Trigger, alert: Alert) -> str:
    """The group part of the incident key: the `group_by` label values as canonical JSON."""
    return json.dumps([alert.labels.get(name, "") for name in trigger.group_by], separators=(",", ":"))


def heartbeat_key(trigger: Trigger) -> str:
    """The heartbeat a heartbeat trigger watches: a digest of what it expects (source, match,
    group_by, interval)."""
    assert trigger.heartbeat is not None
    return digest([trigger.source, trigger.match, trigger.group_by, trigger.heartbeat.every.total_seconds()])[:24]


def render_inputs(trigger: Trigger, alert: Alert, runbook: Runbook | None = None) -> tuple[dict[str, Any], list[str]]:
    """The trigger's `inputs` templates rendered over ``alert`` (and coerced to the type of the
    runbook's input, given the runbook); and a message per input left out: a label the alert
    lacks, a broken template, a value the input does not take (its default applies)."""
    context = {"alert": alert.template_context()}
    rendered: dict[str, Any] = {}
    problems: list[str] = []
    for name, template in trigger.inputs.items():
        try:
            value = render_value(template, context)
        except (TemplateError, TypeError, ValueError) as exc:
            problems.append(f"input `{name}` ({template!r}) did not render: {exc}")
            continue
        if value is None:
            problems.append(f"input `{name}` ({template!r}) is undefined for this alert")
            continue
        spec = runbook.inputs.get(name) if runbook else None
        if spec is not None:
            try:
                value = spec.coerce(value)
            except ValueError as exc:
                problems.append(f"input `{name}` = {value!r} is left out: {exc}")
                continue
        rendered[name] = value
    return rendered, problems


def routes(runbooks: Iterable[Runbook], alert: Alert) -> list[Route]:
    """Every trigger that takes `alert`: runbook by runbook in catalog order, each runbook's
    triggers in file order (`per_runbook` splits them; `decide` picks one per runbook)."""
    found = []
    for runbook in runbooks:
        for index, trigger in enumerate(runbook.triggers):
            if matches(trigger, alert):
                found.append(Route(
                    runbook_id=runbook.id, trigger_index=index, group_key=group_key(trigger, alert),
                    group={name: alert.labels.get(name, "") for name in trigger.group_by}, trigger=trigger,
                ))
    return found


def per_runbook(found: Sequence[Route]) -> Iterator[list[Route]]:
    """`routes`' candidates, one list per runbook."""
    for _, candidates in groupby(found, key=lambda route: route.runbook_id):
        yield list(candidates)


def decide(candidates: Sequence[Route], is_open: Callable[[Route], bool], counted: Callable[[Route], int]) -> Route | None:
    """Of one runbook's candidate routes (file order), the first that fires; None if none does.

    `is_open(route)`: whether the incident of the route's key is open; `counted(route)`: the alerts
    its threshold counted in its window, the current one included (asked only of threshold routes
    whose incident is not open)."""
    for route in candidates:
        threshold = route.threshold
        if threshold is None or is_open(route) or counted(route) >= threshold.count:
            return route
    return None
