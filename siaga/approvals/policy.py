"""Who may approve a gate, and when it is decided. Pure: it takes the runbook, the roster, the votes
and the time it is given, and returns values.

A gate's first level is the roles of the step's ``approval.from``. Its deadline is the approval's
``timeout``, else what is left of the incident's ``impact.max_tolerable_downtime``, else one hour.
Before the deadline the gate escalates up ``chain_of_command``: each role of the chain that is not
already eligible becomes eligible in turn, at one half, three quarters, seven eighths... of the time
to the deadline. The person who asked for the run never counts as an approver of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from siaga.runbook import Roster, Runbook, Step, role_members

DEFAULT_DEADLINE = timedelta(hours=1)
SHORTEST_DEADLINE = timedelta(seconds=30)
"""A gate whose impact clock has (nearly) run out still gives people this long to act."""
MAX_WRONG_CODES = 5

Choice = Literal["approve", "reject"]


@dataclass(frozen=True)
class Level:
    """A step up the chain of command: from `at`, the people of `roles` may approve too."""

    index: int
    at: datetime
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Vote:
    person: str
    choice: Choice
    at: datetime
    roles: tuple[str, ...]  # the gate roles they held when they voted


@dataclass(frozen=True)
class Outcome:
    """Where a gate stands: ``pending`` until ``approved`` or ``rejected``."""

    state: Literal["pending", "approved", "rejected"]
    reason: str
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What a gate decided for its step, once: ``approved`` (the step runs with exactly `params`),
    ``rejected`` (by people, or by the clock with on_timeout: reject), ``failed`` (on_timeout:
    fail), ``skipped`` (its `when:` was false when the gate opened), ``refused`` (its condition or
    parameters could not be rendered: the step fails with `reason`), or ``cancelled`` (the run
    was cancelled while the gate was open)."""

    state: Literal["approved", "rejected", "failed", "skipped", "refused", "cancelled"]
    reason: str = ""
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class GatePolicy:
    step_id: str
    quorum: int
    distinct_roles: bool
    reject_rule: Literal["any", "majority"]
    on_timeout: Literal["reject", "approve", "fail"]
    opened_at: datetime
    deadline: datetime
    levels: tuple[Level, ...]
    members: Mapping[str, tuple[str, ...]]  # role -> people
    requester: str | None = None
    roster_names: Mapping[str, str] = field(default_factory=dict)

    def level_at(self, now: datetime) -> int:
        """How many levels are open at `now` (1 = only the approval's own roles)."""
        return sum(1 for level in self.levels if level.at <= now)

    def roles_at(self, now: datetime) -> tuple[str, ...]:
        return tuple(role for level in self.levels if level.at <= now for role in level.roles)

    def eligible(self, now: datetime) -> dict[str, tuple[str, ...]]:
        """Who may approve at `now`, each with the gate roles they hold; never the requester."""
        people: dict[str, tuple[str, ...]] = {}
        for role in self.roles_at(now):
            for person in self.members.get(role, ()):
                if person != self.requester:
                    people[person] = (*people.get(person, ()), role)
        return people

    def as_json(self) -> dict[str, Any]:
        """The policy as JSON, kept with its gate: every channel decides the gate by the same rule."""
        return {
            "step_id": self.step_id, "quorum": self.quorum, "distinct_roles": self.distinct_roles,
            "reject_rule": self.reject_rule, "on_timeout": self.on_timeout,
            "opened_at": self.opened_at.isoformat(), "deadline": self.deadline.isoformat(),
            "levels": [{"index": lv.index, "at": lv.at.isoformat(), "roles": list(lv.roles)} for lv in self.levels],
            "members": {role: list(people) for role, people in self.members.items()},
            "requester": self.requester, "roster_names": dict(self.roster_names),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GatePolicy:
        return cls(
            step_id=data["step_id"], quorum=data["quorum"], distinct_roles=data["distinct_roles"],
            reject_rule=data["reject_rule"], on_timeout=data["on_timeout"],
            opened_at=datetime.fromisoformat(data["opened_at"]), deadline=datetime.fromisoformat(data["deadline"]),
            levels=tuple(Level(lv["index"], datetime.fromisoformat(lv["at"]), tuple(lv["roles"])) for lv in data["levels"]),
            members={role: tuple(people) for role, people in data["members"].items()},
            requester=data.get("requester"), roster_names=dict(data.get("roster_names") or {}),
        )

    def next_level(self, now: datetime) -> Level | None:
        return next((level for level in self.levels if level.at > now), None)

    def decide(self, votes: Sequence[Vote], now: datetime) -> Outcome:
        """The gate's outcome after `votes` (each person's first vote counts)."""
        first: dict[str, Vote] = {}
        for vote in votes:
            first.setdefault(vote.person, vote)
        approvals = [v for v in first.values() if v.choice == "approve"]
        rejections = [v for v in first.values() if v.choice == "reject"]
        if rejections and self.reject_rule == "any":
            return Outcome("rejected", f"rejected by {_names(rejections, self.roster_names)}")
        if self.reject_rule == "majority":
            eligible = len(self.eligible(now))
            if eligible and len(rejections) * 2 > eligible:
                return Outcome(
                    "rejected",
                    f"rejected by a majority ({len(rejections)} of {eligible}): "
                    f"{_names(rejections, self.roster_names)}",
                )
        chosen = _quorum(approvals, self.quorum, self.distinct_roles)
        if chosen is not None:
            return Outcome(
                "approved",
                f"approved by {', '.join(self.roster_names.get(p, p) for p in chosen)}",
                tuple(chosen),
            )
        needed = self.quorum - len(approvals)
        what = f"{needed} more approval{'s' if needed != 1 else ''}" if needed > 0 else "approvals from distinct roles"
        return Outcome("pending", f"waiting for {what} (quorum {self.quorum}"
                       + (", from distinct roles)" if self.distinct_roles else ")"))


def gate_policy(
    runbook: Runbook,
    step: Step,
    roster: Roster | None,
    *,
    opened_at: datetime,
    incident_opened_at: datetime | None = None,
    requester: str | None = None,
) -> GatePolicy:
    """The policy of `step`'s gate, opened at `opened_at`."""
    approval = step.approval
    assert approval is not None, f"step {step.id} has no approval"
    deadline = _deadline(runbook, approval.timeout, opened_at, incident_opened_at)
    first = tuple(dict.fromkeys(approval.from_))
    above = [role for role in runbook.chain_of_command if role not in first]
    levels = [Level(0, opened_at, first)]
    span = deadline - opened_at
    for index, role in enumerate(above, start=1):
        levels.append(Level(index, opened_at + span * (1 - 0.5**index), (role,)))
    roles = {role for level in levels for role in level.roles}
    return GatePolicy(
        step_id=step.id,
        quorum=approval.quorum,
        distinct_roles=approval.distinct_roles,
        reject_rule=approval.reject,
        on_timeout=approval.on_timeout,
        opened_at=opened_at,
        deadline=deadline,
        levels=tuple(levels),
        members={role: tuple(role_members(runbook, role, roster)) for role in sorted(roles)},
        requester=requester,
        roster_names={pid: person.name for pid, person in (roster.people.items() if roster else ()) if person.name},
    )


def _deadline(
    runbook: Runbook, timeout: timedelta | None, opened_at: datetime, incident_opened_at: datetime | None
) -> datetime:
    if timeout is not None:
        return opened_at + timeout
    tolerance = runbook.impact.max_tolerable_downtime
    if tolerance is not None:
        left = (incident_opened_at or opened_at) + tolerance - opened_at
        return opened_at + max(left, SHORTEST_DEADLINE)
    return opened_at + DEFAULT_DEADLINE


def _quorum(approvals: Sequence[Vote], quorum: int, distinct_roles: bool) -> list[str] | None:
    """`quorum` approvers (each standing for a different role if `distinct_roles`), or None."""
    if not distinct_roles:
        people = [v.person for v in approvals]
        return people[:quorum] if len(people) >= quorum else None
    # a matching of people to distinct roles (augmenting paths; gates are small)
    role_of: dict[str, str] = {}

    def assign(person: str, roles: Iterable[str], seen: set[str]) -> bool:
        for role in roles:
            if role in seen:
                continue
            seen.add(role)
            holder = role_of.get(role)
            if holder is None or assign(holder, by_person[holder], seen):
                role_of[role] = person
                return True
        return False

    by_person = {v.person: v.roles for v in approvals}
    for vote in approvals:
        assign(vote.person, vote.roles, set())
        if len(role_of) >= quorum:
            break
    if len(role_of) < quorum:
        return None
    return list(dict.fromkeys(role_of.values()))[:quorum]


def _names(votes: Iterable[Vote], names: Mapping[str, str]) -> str:
    return ", ".join(names.get(v.person, v.person) for v in votes)
