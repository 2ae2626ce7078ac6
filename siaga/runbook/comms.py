"""Crisis communications in the language: message templates, statement deadlines, and the rules a
runbook's `comms.draft` and `comms.publish` steps must follow.

A message template is a file ``templates/<name>.<language>.md.j2`` next to the runbooks (``name`` is
the audience unless the step says `template:`). It is Jinja in a sandbox with StrictUndefined: a
name it reads that the step does not give is an error, never an empty gap. Its first line, when it
is a Markdown heading (``# ...``), is the message's subject; the rest is the body. It reads
``facts.<name>`` (what happened, impact, what we are doing...: the step's `facts:`, each a text or
one text per language), ``next_update`` (a time in `comms.timezone`), ``audience``, ``language``,
``incident`` (id) and ``runbook`` (id).

Pure: templates come in as text (`load_runbook` reads the folder at the edge).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, lru_cache
from typing import Any, get_args

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .diagnostics import Diagnostic, Loc, did_you_mean
from .models import PHASE_LISTS, PUBLIC, RESOLVE, RESPOND, Audience, Runbook, Step
from .source import Document
from .templates import Reference, is_template, references

__all__ = [
    "ANSWER_ACTION",
    "AUDIENCES",
    "DRAFT_ACTION",
    "GATED_ACTIONS",
    "POSTING_ACTIONS",
    "PUBLISH_ACTION",
    "TEMPLATE_SUFFIX",
    "VOICE_ACTIONS",
    "Message",
    "audiences_meeting",
    "check_comms",
    "render_message",
    "render_text",
    "statement_deadlines",
    "template_file",
    "template_references",
]

DRAFT_ACTION = "comms.draft"
PUBLISH_ACTION = "comms.publish"
POSTING_ACTIONS = frozenset({
    "x.post", "x.reply", "facebook.post", "facebook.reply", "instagram.reply", "instagram.publish",
    "website.notice",
})
"""Actions that speak in public on their own: each is a public statement (drill scores, reports)."""
ANSWER_ACTION = "voices.answer"
VOICE_ACTIONS = frozenset({"voices.draft", ANSWER_ACTION})
"""Actions that answer the incident's voices: they need the runbook's `voices:`."""
GATED_ACTIONS = POSTING_ACTIONS | {ANSWER_ACTION}
"""Actions that speak in public: a step of one waits at an approval gate (`ungated-post`)."""
AUDIENCES: tuple[str, ...] = get_args(Audience)
TEMPLATE_SUFFIX = ".md.j2"
PUBLIC_AUDIENCES = frozenset({"customers", "media"})
DEFAULT_APPROVERS = ("liaison", "commander")


def template_file(name: str, language: str) -> str:
    """The file name of template `name` in `language`: ``customers.id.md.j2``."""
    return f"{name}.{language}{TEMPLATE_SUFFIX}"


def statement_deadlines(runbook: Runbook) -> dict[str, timedelta]:
    """Each statement deadline of `runbook`, by name: ``public`` from
    `impact.public_statement_within`, and one per audience from `comms.deadlines`."""
    found: dict[str, timedelta] = {}
    if runbook.impact.public_statement_within is not None:
        found[PUBLIC] = runbook.impact.public_statement_within
    found.update(runbook.comms.deadlines)
    return found


def audiences_meeting(deadline: str) -> frozenset[str]:
    """The audiences a published statement to which meets deadline `deadline`."""
    return PUBLIC_AUDIENCES if deadline == PUBLIC else frozenset({deadline})


@dataclass(frozen=True)
class Message:
    """One rendered statement in one language."""

    subject: str
    body: str


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=False,
    )


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    return _environment().from_string(source)


def render_text(source: str, values: Mapping[str, Any]) -> str:
    """Render a template of the runbook folder (a message, a reply) to text; raise TemplateError.
    Each template is compiled once (a storm's replies render one template thousands of times)."""
    return _compiled(source).render(**values).strip()


def render_message(source: str, values: Mapping[str, Any], default_subject: str = "") -> Message:
    """Render a message template; raise TemplateError. A first line ``# Subject`` is the subject."""
    text = render_text(source, values)
    first, _, rest = text.partition("\n")
    if first.startswith("# "):
        return Message(first[2:].strip(), rest.strip())
    return Message(default_subject, text)


def check_comms(runbook: Runbook, doc: Document, templates: Mapping[str, str] | None) -> Iterator[Diagnostic]:
    """The rules of crisis communications: every `comms.publish` waits at an approval gate, every
    draft has its templates (when `templates`, the folder's files by name, is known), and the
    comms time zone exists."""
    try:
        zoneinfo.ZoneInfo(runbook.comms.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        yield doc.diagnostic(
            "bad-timezone", f"`{runbook.comms.timezone}` is not an IANA time zone", ("comms", "timezone"),
            hint="for example UTC or Asia/Jakarta",
        )
    sitrep = runbook.comms.sitrep
    for position, role in enumerate(sitrep.to if sitrep else ()):
        if role not in runbook.roles:
            yield doc.diagnostic(
                "unknown-role", f"no role is named `{role}`", ("comms", "sitrep", "to", position),
                hint=did_you_mean(role, runbook.roles) or "declare it under `roles:`, or name the roles in `to:`",
            )
    approvers = [role for role in DEFAULT_APPROVERS if role in runbook.roles] or list(DEFAULT_APPROVERS)
    for where, index, step in (
        (PHASE_LISTS[phase], i, s) for phase in (RESPOND, RESOLVE) for i, s in enumerate(runbook.phase_steps(phase))
    ):
        if step.action == PUBLISH_ACTION and step.approval is None:
            yield doc.diagnostic(
                "ungated-statement",
                "a statement is published only after people approve its exact text: this "
                "`comms.publish` step has no `approval:`",
                (where, index, "action"),
                hint=f"add `approval: {{from: [{', '.join(approvers)}]}}`; for a message that needs "
                "no approval, send it with slack.post, email.send or outbox.send instead",
            )
        if step.action in GATED_ACTIONS and step.approval is None:
            yield doc.diagnostic(
                "ungated-post",
                f"`{step.action}` speaks in public in the company's name: a step of it runs only after people "
                "approve its exact text, and this one has no `approval:`",
                (where, index, "action"),
                hint=f"add `approval: {{from: [{', '.join(approvers)}]}}` (or publish a drafted statement with "
                "comms.publish, which has its own gate); in a drill nothing is posted either way",
            )
        if step.action in VOICE_ACTIONS and runbook.voices is None:
            yield doc.diagnostic(
                "no-voices", f"`{step.action}` answers the incident's voices, and this runbook has no `voices:`",
                (where, index, "action"), hint="add `voices: {respond_within: 24h}` (see README, Answering every voice)",
            )
        if step.action == DRAFT_ACTION and templates is not None:
            yield from _check_draft(runbook, doc, (where, index), step, templates)


def template_references(
    doc: Document, templates: Mapping[str, str], file: str, where: Loc, what: str
) -> tuple[list[Reference], Diagnostic | None]:
    """The names the template `file` (of the folder's `templates`) reads; and, when it is missing
    (`what` names it: ``reply template `templates/x.id.md.j2` in `id` ``) or does not parse, none
    and the diagnostic to give at `where`."""
    source = templates.get(file)
    if source is None:
        return [], doc.diagnostic(
            "missing-template", f"no {what}", where,
            hint=did_you_mean(file, templates) or "write it next to the runbooks, in templates/",
        )
    try:
        return references(source), None
    except TemplateError as exc:
        return [], doc.diagnostic("template-syntax", f"`templates/{file}` does not parse: {exc}", where)


def _check_draft(
    runbook: Runbook, doc: Document, base: Loc, step: Step, templates: Mapping[str, str]
) -> Iterator[Diagnostic]:
    given = step.with_
    audience, name = given.get("audience"), given.get("template")
    if not isinstance(audience, str) or is_template(audience) or audience not in AUDIENCES:
        return  # a value decided at run time, or one the parameter check reports
    if name is not None and (not isinstance(name, str) or is_template(name)):
        return
    languages = given.get("languages", runbook.comms.languages)
    if not isinstance(languages, list) or not all(isinstance(x, str) for x in languages):
        return
    where: Loc = (*base, "with", "template" if name else "audience")
    facts = given.get("facts", {})
    missing: set[str] = set()
    for language in languages:
        file = template_file(name or audience, language)
        read, problem = template_references(doc, templates, file, where, f"message template `templates/{file}` "
                                            f"for {audience} in `{language}`")
        if problem is not None:
            yield problem
            continue
        if isinstance(facts, Mapping):
            for ref in read:
                if ref.root == "facts" and ref.key is not None and ref.key not in {*facts, *missing}:
                    missing.add(ref.key)
                    yield doc.diagnostic(
                        "missing-fact",
                        f"`templates/{file}` reads `facts.{ref.key}`, which this step does not give",
                        (*base, "with", "facts") if "facts" in given else (*base, "with"),
                        hint=f"add `{ref.key}:` under the step's `facts:`",
                    )
            for fact, value in facts.items():
                if isinstance(value, Mapping) and language not in value:
                    yield doc.diagnostic(
                        "missing-language",
                        f"fact `{fact}` has no `{language}` text",
                        (*base, "with", "facts", fact),
                        hint="give one text per language, or a single text for all",
                    )
