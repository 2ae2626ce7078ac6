"""Reply drafts: each voice still unanswered gets a reply text from its runbook's template for its
topic and language, and voices whose reply is the same text form one group (one draft), which one
approved text answers.

* The topic of a voice is its own (`voices.fields.topic`), else its incident's `topic` input,
  else ``general``; its language is its own when the runbook writes in it (`comms.languages`),
  else the runbook's first.
* A group is (incident, language, the exact text): its id is derived from them, so drafting again
  with nothing changed changes nothing, and a text that changes (a template edited, a fact
  corrected) is a new draft, whose approval is a new one: an approval binds to `text_hash`, the
  SHA-256 of the text, never to the draft's name.
* Only voices that are new or drafted are (re)drafted: an approved or answered one keeps its text.
  A draft left with no voice is marked superseded.
* A voice whose template is missing or does not render stays as it is, and the problem is said.

Each group made or changed is recorded in its incident's audit trail as ``voices.drafted`` (the
draft, its text hash, its voices), in the transaction that writes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import TemplateError
from sqlalchemy import Engine, and_, exists, select, update

from siaga.audit import AuditTrail
from siaga.runbook import Runbook
from siaga.runbook.comms import template_file
from siaga.runbook.replies import render_reply, reply_facts
from siaga.store import incidents, insert_ignoring, voice_drafts, voices

from .model import Voice
from .records import VoiceRecords

__all__ = ["Draft", "Drafting", "draft_replies", "text_hash"]

DRAFTABLE = ("new", "drafted")
GENERAL = "general"


@dataclass(frozen=True)
class Draft:
    """One reply text and the voices it answers."""

    id: str
    incident_id: str
    topic: str
    language: str
    template: str
    text: str
    text_hash: str
    voices: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "incident": self.incident_id, "topic": self.topic, "language": self.language,
                "template": self.template, "text": self.text, "text_hash": self.text_hash, "voices": self.voices}


@dataclass
class Drafting:
    """What one `draft_replies` did: the groups (every draftable voice's, changed or not) and
    the voices it could not draft, with why."""

    drafts: list[Draft] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def text_hash(text: str) -> str:
    """What an approval of a reply binds to: the SHA-256 of its exact text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def draft_replies(
    engine: Engine, runbooks: Mapping[str, Runbook], templates: Mapping[str, str], *,
    incident_id: str | None = None, now: datetime | None = None,
) -> Drafting:
    """Draft the replies of every new or drafted voice (of `incident_id`, or of every incident)
    from `templates` (the runbook folder's, by file name)."""
    now = now or datetime.now(UTC)
    pending = VoiceRecords(engine).find(incident_id=incident_id, states=DRAFTABLE)
    inputs = _inputs(engine, {v.incident_id for v in pending})
    done = Drafting()
    groups: dict[str, Draft] = {}
    for voice in pending:
        try:
            draft = _draft(voice, runbooks.get(voice.runbook_id), templates, inputs.get(voice.incident_id, {}))
        except _CannotDraft as exc:
            done.problems.append(f"{voice.id}: {exc}")
            continue
        group = groups.setdefault(draft.id, draft)
        group.voices.append(voice.id)
    done.drafts = list(groups.values())
    _write(engine, done.drafts, {v.id: v for v in pending}, now)
    return done


class _CannotDraft(Exception):
    pass


def _draft(voice: Voice, runbook: Runbook | None, templates: Mapping[str, str], inputs: Mapping[str, Any]) -> Draft:
    if runbook is None or runbook.voices is None:
        raise _CannotDraft(f"its runbook {voice.runbook_id} is not in the runbook folder (or has no `voices:`)")
    spec, languages = runbook.voices, runbook.comms.languages
    topic = voice.topic or str(inputs.get("topic") or "") or GENERAL
    language = voice.language if voice.language in languages else languages[0]
    name = spec.reply_template(topic)
    file = template_file(name, language)
    source = templates.get(file)
    if source is None:
        raise _CannotDraft(f"no reply template templates/{file} (topic {topic}, language {language})")
    context = {"inputs": dict(inputs), "incident": voice.incident_id, "runbook": runbook.id}
    seen = {"platform": voice.platform, "author": voice.author, "author_tier": voice.author_tier,
            "sentiment": voice.sentiment, "language": language, "topic": topic, "url": voice.url,
            "thread": voice.thread, "id": voice.mention_id}
    try:
        facts = reply_facts(spec, language, context)
        text = render_reply(source, context | {"voice": {k: v or "" for k, v in seen.items()}, "facts": facts,
                                               "topic": topic, "language": language})
    except (TemplateError, TypeError, ValueError) as exc:
        raise _CannotDraft(f"templates/{file} did not render: {exc}") from None
    if not text:
        raise _CannotDraft(f"templates/{file} rendered no text")
    key = hashlib.sha256(f"{voice.incident_id}\0{language}\0{text}".encode()).hexdigest()[:12]
    return Draft(f"d-{key}", voice.incident_id, topic, language, name, text, text_hash(text), [])


def _inputs(engine: Engine, ids: set[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    with engine.connect() as connection:
        rows = connection.execute(select(incidents.c.id, incidents.c.inputs).where(incidents.c.id.in_(list(ids))))
        return {row.id: dict(row.inputs or {}) for row in rows}


def _write(engine: Engine, drafts: list[Draft], pending: Mapping[str, Voice], now: datetime) -> None:
    if not drafts:
        return
    trail = AuditTrail(engine, clock=lambda: now)
    with engine.begin() as connection:
        connection.execute(insert_ignoring(connection, voice_drafts), [
            {"id": d.id, "incident_id": d.incident_id, "runbook_id": pending[d.voices[0]].runbook_id, "topic": d.topic,
             "language": d.language, "template": d.template, "text": d.text, "text_hash": d.text_hash,
             "state": "drafted", "created_at": now, "updated_at": now}
            for d in drafts
        ])
        records = []
        for d in drafts:
            moved = [v for v in d.voices if pending[v].draft_id != d.id or pending[v].state != "drafted"]
            if not moved:
                continue
            connection.execute(
                update(voices).where(voices.c.id.in_(moved), voices.c.state.in_(DRAFTABLE))
                .values(draft_id=d.id, state="drafted", updated_at=now)
            )
            connection.execute(update(voice_drafts).where(voice_drafts.c.id == d.id, voice_drafts.c.state == "superseded")
                               .values(state="drafted", updated_at=now))
            records.append(trail.draft("voices.drafted", incident_id=d.incident_id, data={
                "draft": d.id, "text_hash": d.text_hash, "language": d.language, "topic": d.topic,
                "template": d.template, "voices": d.voices, "added": moved}))
        incidents_drafted = sorted({d.incident_id for d in drafts})
        connection.execute(
            update(voice_drafts)
            .where(voice_drafts.c.incident_id.in_(incidents_drafted), voice_drafts.c.state == "drafted",
                   ~exists().where(and_(voices.c.draft_id == voice_drafts.c.id)))
            .values(state="superseded", updated_at=now)
        )
        trail.extend(connection, records)
