"""Answering voices in the language: the rules of a runbook's `voices:` block and its reply templates.

A reply template is a file ``templates/<name>.<language>.md.j2`` next to the runbooks, as a
statement's is (`comms`): Jinja in a sandbox with StrictUndefined. `voices.replies` names one per
topic (the kind of complaint); the key `default` names the one for every other topic (without it,
``reply``). It is written in each of `comms.languages`. It reads:

* ``voice``: ``platform``, ``author``, ``author_tier``, ``sentiment``, ``language``, ``topic``,
  ``url``, ``thread`` and ``id`` (the mention's). Never the mention's text: a reply does not quote
  what it answers, so nothing a stranger wrote is repeated in our name.
* ``facts.<name>``: the runbook's `voices.facts`, in the reply's language, rendered over the
  incident's ``inputs``.
* ``topic``, ``language``, ``incident`` (id), ``runbook`` (id) and ``inputs`` (the incident's).

A reply that reads nothing of ``voice`` renders the same text for every voice of its topic and
language: those voices form one group, which one approved text answers.

Pure: templates come in as text (`load_runbook` reads the folder at the edge).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import TemplateError

from .comms import render_text, template_file, template_references
from .diagnostics import Diagnostic, Loc, did_you_mean
from .models import Runbook, Voices
from .source import Document
from .templates import is_template, references, render_value

__all__ = ["FACT_ROOTS", "REPLY_ROOTS", "VOICE_KEYS", "check_voices", "render_reply", "reply_facts"]

VOICE_KEYS = frozenset({"platform", "author", "author_tier", "sentiment", "language", "topic", "url", "thread", "id"})
"""What a reply template may read of ``voice``."""
REPLY_ROOTS = frozenset({"voice", "facts", "topic", "language", "incident", "runbook", "inputs"})
FACT_ROOTS = frozenset({"inputs", "incident", "runbook"})
LIAISON = "liaison"


def reply_facts(voices: Voices, language: str, context: Mapping[str, Any]) -> dict[str, str]:
    """`voices.facts` in `language`, each rendered over `context` (``inputs``, ``incident``,
    ``runbook``); raise TemplateError."""
    found = {}
    for name, value in voices.facts.items():
        text = value[language] if isinstance(value, Mapping) else value
        found[name] = str(render_value(text, context))
    return found


def render_reply(source: str, values: Mapping[str, Any]) -> str:
    """A reply template rendered over `values` (the names the module docstring lists); raise
    TemplateError."""
    return render_text(source, values)


def check_voices(runbook: Runbook, doc: Document, templates: Mapping[str, str] | None) -> Iterator[Diagnostic]:
    """The rules of `voices:`: its owners are roles, its mentions come from a source that starts
    the runbook, its reminder comes before its deadline, and (when `templates`, the folder's files
    by name, is known) every reply template it names exists in every language and reads only what
    it is given."""
    voices = runbook.voices
    if voices is None:
        return
    written = doc.data.get("voices") if isinstance(doc.data, Mapping) else None
    written = written if isinstance(written, Mapping) else {}
    for position, role in enumerate(voices.owners):
        if role not in runbook.roles:
            yield doc.diagnostic(
                "unknown-role", f"no role is named `{role}`", ("voices", "owners", position),
                hint=did_you_mean(role, runbook.roles) or "declare it under `roles:`",
            )
    if not voices.owners and LIAISON not in runbook.roles and not runbook.chain_of_command:
        yield doc.diagnostic(
            "no-owners", "nobody answers these voices: there is no liaison role, no chain of command "
            "and no `owners:`", ("voices",), hint="name the roles that answer, e.g. `owners: [comms]`",
        )
    sources = {trigger.source for trigger in runbook.triggers}
    if not any(mention.source in sources for mention in voices.mentions):
        named = ", ".join(sorted({m.source for m in voices.mentions}))
        yield doc.diagnostic(
            "mentions-never-arrive",
            f"no trigger of this runbook takes alerts from {named}: no mention ever reaches its incidents",
            ("voices", "mentions") if "mentions" in written else ("voices",),
            hint="add a trigger for the source that sends mentions, or name it under `voices.mentions`",
        )
    if voices.remind_before is not None and voices.remind_before >= voices.respond_within:
        yield doc.diagnostic(
            "remind-too-early", "`remind_before` is not shorter than `respond_within`: the reminder "
            "would go out as the voice arrives", ("voices", "remind_before"),
        )
    for name, value in voices.facts.items():
        yield from _check_fact(runbook, doc, name, value)
    if templates is not None:
        yield from _check_replies(runbook, voices, doc, templates, "replies" in written)


def _check_fact(runbook: Runbook, doc: Document, name: str, value: Any) -> Iterator[Diagnostic]:
    loc: Loc = ("voices", "facts", name)
    texts: list[tuple[str | None, str]] = list(value.items()) if isinstance(value, Mapping) else [(None, value)]
    if isinstance(value, Mapping):
        for language in runbook.comms.languages:
            if language not in value:
                yield doc.diagnostic("missing-language", f"fact `{name}` has no `{language}` text", loc,
                                     hint="give one text per language of `comms.languages`, or a single text for all")
    for written_in, text in texts:
        where = (*loc, written_in) if written_in else loc
        if not is_template(text):
            continue
        try:
            found = references(text)
        except TemplateError as exc:
            yield doc.diagnostic("template-syntax", f"template does not parse: {exc}", where)
            continue
        for ref in found:
            if ref.key is None and ref.root not in FACT_ROOTS:
                yield doc.diagnostic("unknown-name", f"a voice fact can read only inputs, incident and runbook, "
                                     f"not `{ref.root}`", where)
            elif ref.root == "inputs" and ref.key is not None and ref.key not in runbook.inputs:
                yield doc.diagnostic("unknown-input", f"no input is named `{ref.key}`", where,
                                     hint=did_you_mean(ref.key, runbook.inputs) or "declare it under `inputs:`")


def _check_replies(
    runbook: Runbook, voices: Voices, doc: Document, templates: Mapping[str, str], written: bool
) -> Iterator[Diagnostic]:
    for name in voices.template_names():
        topic = next((t for t, n in voices.replies.items() if n == name), None)
        where: Loc = ("voices", "replies", topic) if written and topic is not None else ("voices",)
        for language in runbook.comms.languages:
            file = template_file(name, language)
            read, problem = template_references(doc, templates, file, where,
                                                f"reply template `templates/{file}` in `{language}`")
            if problem is not None:
                yield problem
                continue
            for ref in read:
                if ref.key is None and ref.root not in REPLY_ROOTS:
                    yield doc.diagnostic(
                        "unknown-name", f"`templates/{file}` reads `{ref.root}`, which a reply is not given",
                        where, hint="a reply reads " + ", ".join(sorted(REPLY_ROOTS)),
                    )
                elif ref.root == "voice" and ref.key is not None and ref.key not in VOICE_KEYS:
                    why = ": a reply never quotes the mention it answers" if ref.key == "text" else ""
                    yield doc.diagnostic(
                        "unknown-name", f"`templates/{file}` reads `voice.{ref.key}`, which a reply is not given{why}",
                        where, hint="a reply reads voice." + ", voice.".join(sorted(VOICE_KEYS)),
                    )
                elif ref.root == "facts" and ref.key is not None and ref.key not in voices.facts:
                    yield doc.diagnostic(
                        "missing-fact", f"`templates/{file}` reads `facts.{ref.key}`, which `voices.facts` does not give",
                        ("voices", "facts") if voices.facts else ("voices",), hint=f"add `{ref.key}:` under `voices.facts:`",
                    )
