"""The plan: a validated runbook with its step graph resolved, ready for an executor to run.

A step with no `after:` follows the step before it in the file; `after: [...]` replaces that with
the named steps, and `after: []` lets a step start at once. Steps whose needs are met run together.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from .models import RESPOND, Phase, Runbook, Step


def step_needs(steps: Sequence[Step]) -> dict[str, tuple[str, ...]]:
    """The steps each step waits for (ids as written; unknown ids are the checker's concern)."""
    needs: dict[str, tuple[str, ...]] = {}
    for index, step in enumerate(steps):
        if step.after is not None:
            needs[step.id] = tuple(dict.fromkeys(step.after))
        else:
            needs[step.id] = (steps[index - 1].id,) if index else ()
    return needs


def find_cycle(needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, a]``, or None when the graph has none."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for upstream in needs.get(node, ()):
            if upstream not in needs:
                continue
            if state.get(upstream) == "open":
                return trail[trail.index(upstream) :] + [upstream]
            if upstream not in state and (cycle := visit(upstream)):
                return cycle
        trail.pop()
        state[node] = "done"
        return None

    for node in needs:
        if node not in state and (cycle := visit(node)):
            return list(reversed(cycle))
    return None


def is_upstream(candidate: str, step_id: str, needs: Mapping[str, Sequence[str]]) -> bool:
    """Whether `candidate` finishes before `step_id` starts (is among its transitive needs)."""
    seen: set[str] = set()
    pending = list(needs.get(step_id, ()))
    while pending:
        node = pending.pop()
        if node == candidate:
            return True
        if node not in seen:
            seen.add(node)
            pending.extend(needs.get(node, ()))
    return False


def topological_order(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Steps in an order that respects their needs, keeping file order where free to choose."""
    position = {step: index for index, step in enumerate(needs)}
    waiting = {step: len(set(needs[step])) for step in needs}
    dependents: dict[str, list[str]] = {step: [] for step in needs}
    for step, upstream in needs.items():
        for node in set(upstream):
            dependents[node].append(step)
    ready = [(position[s], s) for s, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, step = heapq.heappop(ready)
        order.append(step)
        for follower in dependents[step]:
            waiting[follower] -= 1
            if waiting[follower] == 0:
                heapq.heappush(ready, (position[follower], follower))
    if len(order) < len(needs):
        raise ValueError("the step graph has a cycle")
    return order


class Plan(BaseModel):
    """What an executor needs: the runbook, the steps of the phase to run, each step's needs, and
    an order that respects them."""

    model_config = ConfigDict(frozen=True)

    runbook: Runbook
    needs: dict[str, tuple[str, ...]]
    order: tuple[str, ...]
    phase: Phase = RESPOND

    @property
    def name(self) -> str:
        return self.runbook.id

    @property
    def steps(self) -> list[Step]:
        """The steps this plan runs: the runbook's `steps`, or its `on_resolve`."""
        return self.runbook.phase_steps(self.phase)

    def step(self, step_id: str) -> Step:
        return next(step for step in self.steps if step.id == step_id)


def plan_runbook(runbook: Runbook, phase: Phase = RESPOND) -> Plan:
    """Resolve the step graph of one phase of a validated runbook (its `steps`, or with
    ``phase="resolve"`` its `on_resolve`); raise ValueError on a cycle. The phases are separate
    graphs: an `on_resolve` step waits only for `on_resolve` steps."""
    needs = step_needs(runbook.phase_steps(phase))
    return Plan(runbook=runbook, needs=needs, order=tuple(topological_order(needs)), phase=phase)
