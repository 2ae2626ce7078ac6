"""Routing: which runbooks an alert starts, the incident it belongs to, and the run's inputs.

Pure: values in, values out; no store, no clock (threshold checks take `now` and the times of the
recent matching alerts as arguments).

* A trigger matches an alert when the sources are equal and every ``match`` label (and, for a
  threshold trigger, every ``threshold.match`` label) has exactly the given value.
* One alert starts a runbook at most once: of a runbook's triggers, the first that matches wins.
* The incident key is (runbook id, the values of the trigger's ``group_by`` labels); a label the
  alert lacks groups as the empty string. `group_key` is that tuple of values as canonical JSON.
* A threshold trigger opens its incident once ``count`` matching alerts of the same group arrived
  within ``within``, counting the current one.
* A heartbeat trigger routes no alert it expects (those are signs of life, noted by
  `siaga.incidents.heartbeats`); it routes only the alert its heartbeat raises when it goes quiet:
  source ``heartbeat`` with the label `HEARTBEAT_LABEL` = `heartbeat_key(trigger)`. The key is the
  digest of what the trigger expects, so runbooks expecting the same signal share one heartbeat.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from siaga.canonical import digest
from siaga.runbook import Runbook
from siaga.runbook.models import HEARTBEAT_SOURCE, Threshold, Trigger
from siaga.runbook.templates import TemplateError, render_value

from .alert import Alert

__all__ = [
    "HEARTBEAT_LABEL",
    "Route",
    "expects",
    "group_key",
    "heartbeat_key",
    "matches",
    "render_inputs",
    "routes",
    "threshold_reached",
]

HEARTBEAT_LABEL = "siaga_heartbeat"
"""The label naming the heartbeat (`heartbeat_key`) on the alert it raises when it goes quiet."""


@dataclass(frozen=True)
class Route:
    """One runbook an alert starts (or joins), and how."""

    runbook_id: str
    trigger_index: int
    group_key: str
    group: dict[str, str]
    inputs: dict[str, Any]
    threshold: Threshold | None = None
    problems: list[str] = field(default_factory=list)
    """Inputs that did not render (the input is left out, so the runbook's default applies)."""

    @property
    def key(self) -> tuple[str, str]:
        """The incident key: (runbook id, group key)."""
        return self.runbook_id, self.group_key


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
    wanted = dict(trigger.match)
    if trigger.threshold:
        wanted.update(trigger.threshold.match)
    return all(alert.labels.get(name) == value for name, value in wanted.items())


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
    """Every runbook `alert` starts or joins, each once, in catalog order."""
    found = []
    for runbook in runbooks:
        for index, trigger in enumerate(runbook.triggers):
            if not matches(trigger, alert):
                continue
            inputs, problems = render_inputs(trigger, alert, runbook)
            found.append(
                Route(
                    runbook_id=runbook.id,
                    trigger_index=index,
                    group_key=group_key(trigger, alert),
                    group={name: alert.labels.get(name, "") for name in trigger.group_by},
                    inputs=inputs,
                    threshold=trigger.threshold,
                    problems=problems,
                )
            )
            break
    return found


def threshold_reached(threshold: Threshold, times: Sequence[datetime], now: datetime) -> bool:
    """Whether `times` (of the matching alerts of one group, the current one included) hold
    `threshold.count` within the window ending at `now`."""
    since = now - threshold.within
    return sum(1 for t in times if since <= t <= now) >= threshold.count

