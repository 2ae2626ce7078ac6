"""The roster: the people of the crisis team, the roles each may hold and how each is reached.

It lives next to the runbooks in ``roster.yaml`` (or the file ``$SIAGA_ROSTER`` names)::

    people:
      citra:
        name: Citra Lestari
        roles: [finance]
        channels: {email: citra@example.com, slack: U024BE7LH, whatsapp: "+6281234567890"}

A runbook's ``roles:`` names people of the roster (``finance: [citra, dewi]``), or takes everyone the
roster lets hold the role (``finance: roster``). A person without channels is reached through the
outbox. Pure: parsing takes text, checks take values.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field, ValidationError

from .diagnostics import Diagnostic, RunbookError, did_you_mean
from .models import ROSTER_ROLE, Runbook, Slug, _Model
from .source import Document, YamlSyntaxError, read_yaml

__all__ = ["Channels", "Person", "Roster", "check_roster", "parse_roster", "role_members"]


class Channels(_Model):
    """Where a person is reached: the first of slack, whatsapp, email that is set (the next one when
    it fails); else the outbox."""

    slack: str | None = None
    pagerduty: str | None = None
    whatsapp: str | None = Field(
        default=None, pattern=r"^\+?[1-9][0-9]{6,14}$", description="A phone number: +6281234567890."
    )
    email: str | None = None
    outbox: str | None = None


class Person(_Model):
    name: str = ""
    roles: list[Slug] = Field(default_factory=list)
    channels: Channels = Field(default_factory=Channels)


class Roster(_Model):
    people: dict[Slug, Person] = Field(default_factory=dict)

    def holders(self, role: str) -> list[str]:
        """Everyone the roster lets hold `role`, in roster order."""
        return [pid for pid, person in self.people.items() if role in person.roles]

    def name_of(self, person_id: str) -> str:
        person = self.people.get(person_id)
        return person.name if person and person.name else person_id


def parse_roster(text: str, file: str = "roster.yaml") -> Roster:
    """The roster in `text`; raise RunbookError with every problem placed at file:line:col."""
    try:
        doc = read_yaml(text, file)
    except YamlSyntaxError as exc:
        raise RunbookError([exc.diagnostic]) from None
    try:
        return Roster.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        raise RunbookError(
            [doc.diagnostic("invalid-roster", str(e["msg"]), tuple(e["loc"])) for e in exc.errors()]
        ) from None


def role_members(runbook: Runbook, role: str, roster: Roster | None) -> list[str]:
    """The people who hold `role` in `runbook` (the roster's holders where it says ``roster``)."""
    members = runbook.roles.get(role, [])
    if members == ROSTER_ROLE:
        return roster.holders(role) if roster else []
    return list(members)


def check_roster(runbook: Runbook, doc: Document, roster: Roster) -> Iterator[Diagnostic]:
    """Every person a runbook names is in the roster and may hold the role it is given there."""
    for role, members in runbook.roles.items():
        if members == ROSTER_ROLE:
            if not roster.holders(role):
                yield doc.diagnostic(
                    "empty-role",
                    f"the roster lets nobody hold `{role}`",
                    ("roles", role),
                    hint=f"add `{role}` to the roles of someone in the roster",
                )
            continue
        for position, person in enumerate(members):
            loc = ("roles", role, position)
            if person not in roster.people:
                yield doc.diagnostic(
                    "unknown-person",
                    f"`{person}` is not in the roster",
                    loc,
                    hint=did_you_mean(person, roster.people) or "add them to roster.yaml",
                )
            elif role not in roster.people[person].roles:
                held = ", ".join(roster.people[person].roles) or "no role"
                yield doc.diagnostic(
                    "role-not-held",
                    f"the roster does not let `{person}` hold `{role}` (they may hold: {held})",
                    loc,
                    hint=f"add `{role}` to their roles in the roster, or name someone who holds it",
                )

