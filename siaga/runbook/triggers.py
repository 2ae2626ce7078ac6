"""What a trigger asks of an alert, and which triggers can never decide: shared by validation
(``siaga validate`` warns) and routing (`siaga.incidents.routing`, which states the rule: of a
runbook's triggers that take an alert, the first that fires decides).

Pure: triggers in, values out.
"""

from __future__ import annotations

from collections.abc import Sequence

from .models import Trigger

__all__ = ["shadowed_by", "wanted_labels"]


def wanted_labels(trigger: Trigger) -> dict[str, str]:
    """Every label value `trigger` asks for: its match and its threshold's match."""
    wanted = dict(trigger.match)
    if trigger.threshold:
        wanted.update(trigger.threshold.match)
    return wanted


def shadowed_by(triggers: Sequence[Trigger], index: int) -> int | None:
    """The earlier trigger that fires whenever ``triggers[index]`` would, so that one never
    decides; None if there is none.

    An earlier trigger A pre-empts B when A takes every alert B takes (same source, A's wanted
    labels a subset of B's) and A fires whenever B does: A is a plain trigger; or both count, and
    A needs no more alerts (count), over no shorter a window, in groups no finer (group_by). A
    heartbeat trigger neither pre-empts nor is pre-empted: it takes only its own quiet alert."""
    later = triggers[index]
    if later.heartbeat is not None:  # it takes only the alert its own heartbeat raises going quiet
        return None
    for earlier_index, earlier in enumerate(triggers[:index]):
        if earlier.heartbeat is not None:  # it takes no alert of a source's own
            continue
        if earlier.source != later.source or not wanted_labels(earlier).items() <= wanted_labels(later).items():
            continue
        if earlier.threshold is None:
            return earlier_index
        if later.threshold is not None and (
            earlier.threshold.count <= later.threshold.count
            and earlier.threshold.within >= later.threshold.within
            and set(earlier.group_by) <= set(later.group_by)
        ):
            return earlier_index
    return None
