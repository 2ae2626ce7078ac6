"""`comms.draft` and `comms.publish`: crisis statements written from templates, approved by people,
sent exactly as approved.

    - id: draft-customers
      action: comms.draft
      with:
        audience: customers
        next_update: 30m
        facts:
          what_happened: {id: "Pembayaran kartu gagal", en: "Card payments are failing"}
          doing: {id: "...", en: "..."}
    - id: publish-customers
      action: comms.publish
      after: [draft-customers]
      approval: {from: [liaison, commander]}
      with:
        draft: "{{ steps['draft-customers'].output }}"
        channels:
          - {action: statuspage.create_incident, with: {status: investigating, impact: major}}
          - {action: outbox.send}

A draft renders ``templates/<audience>.<language>.md.j2`` (see `siaga.runbook.comms`) in each of the
runbook's `comms.languages` and returns every language's subject and body, the combined subject
and text the channels send, and the SHA-256 of all of it. A publish takes the draft as its
parameter: its approval gate binds the hash of its parameters, so the people approve the very
text; the publish checks that the draft's text still matches its SHA-256 and sends it to every
channel unchanged (a channel cannot override it; drills only put ``[DRILL]`` in front). Each
channel is its own side-effect ledger entry, as in `notify.fanout`. A status page channel with no
`statuspage` connection configured goes to the outbox, as the notification actions do.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from jinja2 import TemplateError
from pydantic import BaseModel, Field, field_validator, model_validator

from siaga.actions import (
    DRILL_PREFIX,
    ActionContext,
    ActionFailed,
    ActionParams,
    ActionSpec,
    Mode,
    Risk,
)
from siaga.canonical import digest
from siaga.runbook.comms import render_message, template_file
from siaga.runbook.durations import Duration
from siaga.runbook.models import Audience, Language

from . import (
    apprise_notify,
    facebook,
    instagram,
    outbox,
    slack,
    smtp,
    statuspage,
    teams,
    website,
    whatsapp,
    x,
)
from ._notify import ChannelOutcome, channel_ids, configured, outcome_of, to_outbox

__all__ = ["ACTIONS", "Draft", "DraftText", "Publish", "draft", "draft_hash", "publish"]

SEPARATOR = "\n\n---\n\n"
"""Between the languages of a combined text."""

_TEXT_FIELDS: dict[str, tuple[str | None, str]] = {
    "statuspage.create_incident": ("name", "body"),
    "statuspage.update_incident": (None, "body"),
    "email.send": ("subject", "text"),
    "slack.post": ("title", "text"),
    "teams.post": ("title", "text"),
    "apprise.notify": ("title", "body"),
    "outbox.send": ("subject", "message"),
    "x.post": (None, "text"),
    "x.reply": (None, "text"),
    "facebook.post": (None, "message"),
    "facebook.reply": (None, "message"),
    "instagram.reply": (None, "message"),
    "instagram.publish": (None, "caption"),
    "website.notice": ("title", "text"),
    "whatsapp.send": (None, "text"),
}
"""Where each channel takes the statement's subject and text."""

_NOT_OVERRIDDEN = {"email.send": ("html",)}
"""Other fields that would change what people read (an e-mail's HTML part is made from the text)."""

CHANNEL_ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (*statuspage.ACTIONS, *smtp.ACTIONS, *slack.ACTIONS, *teams.ACTIONS, *apprise_notify.ACTIONS,
                 *outbox.ACTIONS, *x.ACTIONS, *facebook.ACTIONS, *instagram.ACTIONS, *website.ACTIONS,
                 *whatsapp.ACTIONS)
    if spec.name in _TEXT_FIELDS
}

ChannelAction = Literal[
    "statuspage.create_incident", "statuspage.update_incident", "email.send", "slack.post", "teams.post",
    "apprise.notify", "outbox.send", "x.post", "x.reply", "facebook.post", "facebook.reply", "instagram.reply",
    "instagram.publish", "website.notice", "whatsapp.send",
]


class Draft(ActionParams):
    """Write a statement for an audience from its templates, in every language of the runbook."""

    audience: Audience = Field(description="Whom it is for: customers, employees, media, regulator, partners.")
    template: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="The template's name (default: the audience): templates/<name>.<language>.md.j2.",
    )
    languages: list[Language] | None = Field(
        default=None, min_length=1, description="The languages (default: the runbook's comms.languages)."
    )
    facts: dict[str, str | dict[Language, str]] = Field(
        default_factory=dict,
        description="What the template says: what happened, impact, what we are doing... Each a text, "
        "or one text per language.",
    )
    next_update: Duration | None = Field(
        default=None, description="When the next update comes, from now (the template reads `next_update`)."
    )


class Message(BaseModel):
    subject: str
    body: str


class DraftText(BaseModel):
    """A draft as `comms.draft` returns it and `comms.publish` takes it."""

    audience: Audience
    languages: list[str] = Field(min_length=1)
    messages: dict[str, Message]
    subject: str = Field(description="Every language's subject, joined by ` / `.")
    text: str = Field(description="Every language's body, in order, separated by a rule.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of all of the above.")

    @model_validator(mode="after")
    def _untouched(self) -> DraftText:
        if draft_hash(self) != self.sha256:
            raise ValueError(
                "the draft's text does not match its sha256: it was changed after it was drafted; "
                "publish only the draft step's own output"
            )
        return self


def draft_hash(value: DraftText | dict[str, Any]) -> str:
    """SHA-256 of a draft's audience, languages, messages and combined text (canonical JSON)."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
    content = {k: data[k] for k in ("audience", "languages", "messages", "subject", "text")}
    return digest(content)


def combined(languages: list[str], messages: dict[str, Message]) -> tuple[str, str]:
    """The subject and text a channel sends: every language, in the runbook's order."""
    subjects = list(dict.fromkeys(messages[lang].subject for lang in languages if messages[lang].subject))
    return " / ".join(subjects), SEPARATOR.join(messages[lang].body for lang in languages)


async def draft(params: Draft, context: ActionContext) -> DraftText:
    languages = list(params.languages or context.comms.get("languages") or ["en"])
    folder = context.library / "templates" if context.library else None
    zone = ZoneInfo(str(context.comms.get("timezone") or "UTC"))
    next_update = datetime.now(zone) + params.next_update if params.next_update else None
    name = params.template or params.audience
    messages: dict[str, Message] = {}
    for language in languages:
        file = template_file(name, language)
        source = context.templates[file] if file in context.templates else _template(folder, file)
        values = {
            "audience": params.audience,
            "language": language,
            "facts": {key: _in(language, key, value) for key, value in params.facts.items()},
            "next_update": next_update,
            "incident": {"id": context.incident_id or context.run_id},
            "runbook": {"id": context.runbook_id},
        }
        try:
            rendered = render_message(source, values)
        except TemplateError as exc:
            raise ActionFailed(
                f"templates/{template_file(name, language)} cannot be rendered: {exc}", changed=False,
                todo="fix the template, or give the fact it reads under the step's `facts:`",
            ) from None
        messages[language] = Message(subject=rendered.subject, body=rendered.body)
    subject, text = combined(languages, messages)
    fields = {"audience": params.audience, "languages": languages,
              "messages": {k: v.model_dump() for k, v in messages.items()}, "subject": subject, "text": text}
    return DraftText(**fields, sha256=draft_hash(fields))


def _template(folder: Path | None, file: str) -> str:
    if folder is None:  # no runbook folder was given with the step: only the revision's own templates
        raise ActionFailed(
            f"the message template templates/{file} is not among the run's templates, and no runbook folder "
            "was given to read it from", changed=False,
            todo="write the template next to the runbooks, in templates/ (`siaga validate` checks)",
        )
    try:
        return (folder / file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ActionFailed(
            f"cannot read the message template {folder / file}: {exc}", changed=False,
            todo="write the template next to the runbooks, in templates/ (`siaga validate` checks)",
        ) from None


def _in(language: str, key: str, value: str | dict[str, str]) -> str:
    if isinstance(value, str):
        return value
    if language not in value:
        raise ActionFailed(f"fact `{key}` has no `{language}` text", changed=False,
                           todo="give one text per language, or a single text for all")
    return value[language]


class Channel(ActionParams):
    """Where a statement goes: an action and its parameters, less the text (it is the draft's)."""

    action: ChannelAction = Field(description="The action that sends the statement.")
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$",
                           description="Names the channel in the result (default: its provider).")
    language: Language | None = Field(
        default=None, description="Send only this language's subject and body (default: every language).")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with",
        description="The action's other parameters (a status, recipients, a channel); not its text.",
    )

    @model_validator(mode="after")
    def _text_is_the_drafts(self) -> Channel:
        title, body = _TEXT_FIELDS[self.action]
        taken = [f for f in (title, body, *_NOT_OVERRIDDEN.get(self.action, ())) if f and f in self.with_]
        if taken:
            raise ValueError(
                f"{self.action}'s {', '.join(taken)} come from the approved draft: remove them from `with`"
            )
        filled = {**self.with_, **({title: "subject"} if title else {}), body: "text"}
        if self.action == "outbox.send":
            filled.setdefault("to", "audience")
        CHANNEL_ACTIONS[self.action].params.model_validate(filled)  # the rest must suit the action
        return self


class Publish(ActionParams):
    """Send an approved draft to its audience's channels, exactly as drafted."""

    draft: DraftText = Field(description="The draft step's output: \"{{ steps['<draft step>'].output }}\".")
    channels: list[Channel] = Field(
        default_factory=lambda: [Channel.model_validate({"action": "outbox.send"})],
        min_length=1, description="Where it goes (default: the outbox, to the audience).",
    )

    @field_validator("channels")
    @classmethod
    def _distinct(cls, channels: list[Channel]) -> list[Channel]:
        ids = channel_ids(channels)
        if len(set(ids)) != len(ids):
            raise ValueError("channel ids must differ: give `id:` to channels of the same provider")
        return channels


class Published(BaseModel):
    """A statement sent: its audience, the hash of the text that went out, each channel."""

    audience: str
    sha256: str
    delivered: list[str]
    channels: dict[str, ChannelOutcome]


async def publish(params: Publish, context: ActionContext) -> Published:
    statement = params.draft
    if draft_hash(statement) != statement.sha256:  # the model checks too; never send on a mismatch
        raise ActionFailed("the draft's text does not match its sha256", changed=False)
    ids = channel_ids(params.channels)
    outcomes = await asyncio.gather(*(
        _send(channel, statement, replace(context, step_id=f"{context.step_id}.{cid}"))
        for cid, channel in zip(ids, params.channels)
    ))
    sent = dict(zip(ids, outcomes))
    failed = {cid: s for cid, s in sent.items() if not s.ok}
    delivered = [cid for cid, s in sent.items() if s.ok]
    if failed:
        reasons = "; ".join(f"{cid}: {s.error}" for cid, s in failed.items())
        raise ActionFailed(
            f"comms.publish delivered to {', '.join(delivered) or 'none'}; failed: {reasons}",
            retryable=True, changed=True if delivered else None,
            todo="fix what the failed channels say and run the step again: channels already delivered "
            "are not sent again",
        )
    return Published(audience=statement.audience, sha256=statement.sha256, delivered=delivered, channels=sent)


def _text(channel: Channel, statement: DraftText) -> tuple[str, str]:
    if channel.language is None:
        return statement.subject, statement.text
    message = statement.messages.get(channel.language)
    if message is None:
        raise ActionFailed(f"the draft has no `{channel.language}` text (it has {', '.join(statement.languages)})",
                           changed=False, todo="draft in that language, or drop the channel's `language:`")
    return message.subject, message.body


async def _send(channel: Channel, statement: DraftText, context: ActionContext) -> ChannelOutcome:
    spec = CHANNEL_ACTIONS[channel.action]

    async def sending() -> Any:
        subject, text = _text(channel, statement)
        if context.mode is Mode.DRILL:
            subject, text = (_drill(subject), _drill(text))
        title, body = _TEXT_FIELDS[channel.action]
        values = {**channel.with_, **({title: subject} if title else {}), body: text}
        if channel.action == "outbox.send":
            values.setdefault("to", statement.audience)
        if channel.action.startswith("statuspage.") and configured(
            context, statuspage.StatuspageConnection, values.get("connection")
        ) is None:  # no status page configured: the outbox, as for the notification actions
            via, entry = await to_outbox(context, provider="statuspage", to=f"statuspage:{statement.audience}",
                                         subject=subject, message=text)
            return {"delivered_via": via, "outbox_id": entry}
        return await context.call(spec, spec.params.model_validate(values), context)

    return await outcome_of(spec.name, sending())


async def preview(params: Publish, context: ActionContext) -> str:
    """The statement as each channel will send it, readable, for the people at the gate (the
    exact parameters above it hold the same text as JSON)."""
    parts = []
    for cid, channel in zip(channel_ids(params.channels), params.channels):
        subject, text = _text(channel, params.draft)
        where = ", ".join(f"{k}: {v}" for k, v in channel.with_.items()) or "default"
        parts.append(f"== {cid}: {channel.action} ({where})\nSubject: {subject}\n\n{text}")
    return "\n\n".join(parts)


def _drill(text: str) -> str:
    return text if not text or text.startswith(DRILL_PREFIX) else DRILL_PREFIX + text


ACTIONS = (
    ActionSpec(
        name="comms.draft",
        params=Draft,
        run=draft,
        risk=Risk.READ,
        summary="Write a statement for an audience from its templates, in the runbook's languages (with its SHA-256).",
    ),
    ActionSpec(
        name="comms.publish",
        params=Publish,
        run=publish,
        risk=Risk.NOTIFY,
        summary="Send an approved draft, unchanged, to its audience's channels (status page, e-mail, Slack, X, "
        "Facebook, Instagram, website, WhatsApp, outbox).",
        # Each channel is its own side-effect ledger entry (through ActionContext.call): calling
        # again sends only where the first call did not arrive.
        provider_idempotent=True,
        preview=preview,
    ),
)
