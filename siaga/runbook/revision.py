"""A runbook's revision: the exact text it was read from and the message templates it renders,
and the SHA-256 of both. A run executes the revision that started it (`siaga.flows.run_body`), so
this is what the starter records and the run compares against.

The roster and the connections are not part of it: they belong to the house, not to one runbook,
and a change to them (a person who left, a rotated credential) must reach every run at once.

Pure: the texts come in from the loader (`load_runbook` reads the folder at the edge).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ..canonical import canonical_json, digest
from .comms import DRAFT_ACTION, template_file
from .models import Runbook
from .templates import is_template

__all__ = ["Revision", "attach_revision", "revision_of", "revision_tag"]

SHORT = 12
"""Hex digits of a revision shown to people (``revision:1a2b3c4d5e6f``)."""


@dataclass(frozen=True)
class Revision:
    """One revision of runbook `runbook_id`: its `text` and the `templates` it renders, by file name."""

    runbook_id: str
    text: str
    templates: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def digest(self) -> str:
        return digest({"runbook": self.text, "templates": dict(self.templates)})

    @property
    def short(self) -> str:
        return self.digest[:SHORT]


def revision_tag(digest_or_revision: str | Revision) -> str:
    """The Prefect tag naming a run's revision (shown in Prefect's UI; Siaga never trusts it)."""
    value = digest_or_revision.digest if isinstance(digest_or_revision, Revision) else digest_or_revision
    return f"revision:{value[:SHORT]}"


def attach_revision(runbook: Runbook, text: str, templates: Mapping[str, str] | None) -> Runbook:
    """Note on `runbook` the `text` it was parsed from and, of the folder's `templates`, those it renders."""
    runbook._revision = Revision(runbook.id, text, rendered_templates(runbook, templates or {}))
    return runbook


def revision_of(runbook: Runbook) -> Revision:
    """The revision `runbook` was read from; for one built in code, its canonical JSON (a runbook
    source too: JSON is YAML)."""
    if isinstance(runbook._revision, Revision):
        return runbook._revision
    text = canonical_json(runbook.model_dump(mode="json", by_alias=True, exclude_defaults=True))
    return Revision(runbook.id, text)


def rendered_templates(runbook: Runbook, templates: Mapping[str, str]) -> dict[str, str]:
    """The message templates of `templates` the runbook's drafts render: every one when a draft
    names its template or audience at run time."""
    wanted: set[str] = set()
    for step in (*runbook.steps, *runbook.on_resolve):
        if step.action != DRAFT_ACTION:
            continue
        name = step.with_.get("template") or step.with_.get("audience")
        languages = step.with_.get("languages", runbook.comms.languages)
        if not isinstance(name, str) or is_template(name) or not isinstance(languages, list):
            return dict(sorted(templates.items()))
        wanted.update(template_file(name, str(language)) for language in languages)
    return {file: templates[file] for file in sorted(wanted) if file in templates}
