"""`voices.draft` and `voices.answer`: every voice of the incident answered with a reply people
approved word for word, posted once per voice on its platform.

    - id: draft-replies
      action: voices.draft                # the replies of the voices so far, grouped by text
    - id: answer-voices
      action: voices.answer
      after: [draft-replies]
      when: "{{ steps['draft-replies'].output.drafts }}"      # no voice to answer: no gate, no one asked
      approval: {from: [comms]}
      with: {replies: "{{ steps['draft-replies'].output.drafts }}"}

The approval gate of `voices.answer` keeps its rendered parameters in Siaga's store and binds the
people's codes to their hash: each reply's exact text, its SHA-256 and the voices it answers. Once
approved, the step runs with exactly those parameters, and before anything is posted each reply
is checked against the store (`ActionContext.voices`, `siaga.voices.desk`): the text must be the
one Siaga drafted, and a voice is answered only while it is open and still in that draft. A voice
whose reply was drafted again meanwhile waits for the approval of its new text.

Each voice is answered with its platform's reply action (`x.reply`, `facebook.reply`,
`instagram.reply`) to the mention itself, as its own side-effect ledger entry keyed by (incident,
voice): a retry, a restarted run or a second run of the incident posts to a voice at most once. On
X, where a text the account has just posted is refused, each reply starts with the author's
@handle (the gate's preview shows every reply as it will be posted). A voice on a platform with no
reply action is left to be answered by hand (`siaga voices answered`). A post that fails keeps
its voice open with the reason, and the step fails after trying the others (its retry posts only
what did not go out).

A drill posts nothing, whatever the connections: it records the exact text each voice would have
been sent (marked ``[DRILL]``) and counts the voice answered, for the drill's score.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from typing import Any

from pydantic import Field, ValidationError, model_validator

from siaga.actions import (
    DRILL_PREFIX,
    ActionContext,
    ActionFailed,
    ActionParams,
    ActionSpec,
    DrillBehaviour,
    Mode,
    Risk,
)
from siaga.secrets import REDACTOR

from . import facebook, instagram, x

__all__ = ["ACTIONS", "AnswerVoices", "DraftReplies", "Reply", "Target", "addressed"]

_SPECS = {spec.name: spec for spec in (*x.ACTIONS, *facebook.ACTIONS, *instagram.ACTIONS)}
REPLY_ACTIONS: dict[str, tuple[ActionSpec, str]] = {
    "x": (_SPECS["x.reply"], "text"),
    "facebook": (_SPECS["facebook.reply"], "message"),
    "instagram": (_SPECS["instagram.reply"], "message"),
}
"""The action that answers a mention on each platform, and the parameter its text goes in."""
_HANDLE = re.compile(r"^@[A-Za-z0-9_]{1,15}$")


class DraftReplies(ActionParams):
    """Draft the replies of the incident's voices (a drill: of the mentions its window held)."""

    limit: int = Field(default=200, ge=1, le=1000, description="At most this many voices a round.")


class Target(ActionParams):
    """One voice a reply answers."""

    voice: str = Field(pattern=r"^v-[0-9a-f]{12}$")
    platform: str = Field(max_length=40)
    reply_to: str = Field(min_length=1, max_length=300, description="The mention answered.")
    author: str | None = Field(default=None, max_length=200)
    url: str | None = Field(default=None, max_length=2000)


class Reply(ActionParams):
    """One approved reply text and the voices it answers."""

    draft: str = Field(pattern=r"^d-[0-9a-f]{12}$")
    language: str = Field(max_length=16)
    topic: str = Field(default="", max_length=80)
    text: str = Field(min_length=1, max_length=25_000)
    text_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of `text`.")
    voices: list[Target] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _hash_is_the_texts(self) -> Reply:
        if hashlib.sha256(self.text.encode("utf-8")).hexdigest() != self.text_hash:
            raise ValueError("the reply's text does not match its text_hash: it was changed after it was drafted")
        return self


class AnswerVoices(ActionParams):
    """Post approved replies, one per voice, on each voice's platform."""

    replies: list[Reply] = Field(
        min_length=1, description="The draft step's groups: \"{{ steps['<draft step>'].output.drafts }}\".")


def addressed(target: Target, text: str) -> str:
    """The text a voice is sent: on X, after the author's @handle."""
    if target.platform == "x" and target.author and _HANDLE.match(target.author):
        return f"{target.author} {text}"
    return text


async def draft(params: DraftReplies, context: ActionContext) -> dict[str, Any]:
    return _desk(context).draft(context, REPLY_ACTIONS, params.limit)


async def answer(params: AnswerVoices, context: ActionContext) -> dict[str, Any]:
    desk = _desk(context)
    drill = context.mode is Mode.DRILL
    posted: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    retryable = False
    refused: dict[str, str] = {}
    for reply in params.replies:
        try:
            verdicts = desk.admit(reply.model_dump(mode="json"), context)
        except ActionFailed as exc:
            refused[reply.draft] = str(exc)
            continue
        for target in reply.voices:
            why = verdicts.get(target.voice, "not checked")
            if why:
                skipped[target.voice] = why
                continue
            text = addressed(target, reply.text)
            if drill:
                posted[target.voice] = {"drill": "recorded, not posted", "text": DRILL_PREFIX + text,
                                        "to": f"{target.platform}:{target.reply_to}"}
                desk.answered(target.voice, context, text=DRILL_PREFIX + text, url=None)
                continue
            try:
                result = await _post(target, text, context)
            except ActionFailed as exc:
                reason = f"{exc} (next: {exc.todo})" if exc.todo else str(exc)
                retryable = retryable or exc.retryable or exc.changed is None
            except Exception as exc:  # noqa: BLE001 - one voice's failure must not stop the others
                reason, retryable = f"{type(exc).__name__}: {exc}", True
            else:
                posted[target.voice] = {"text": text, **result}
                desk.answered(target.voice, context, text=text, url=result.get("url"))
                continue
            failed[target.voice] = REDACTOR.text(reason)
            desk.failed(target.voice, context, failed[target.voice])
    if drill and posted:
        await _record_drill(posted, context)
    outcome = {"answered": sorted(posted), "posts": posted, "skipped": skipped, "failed": failed, "drill": drill}
    if refused:
        raise ActionFailed("; ".join(refused.values()), changed=bool(posted),
                           todo="draft the replies again (`siaga voices draft`) and have the new text approved")
    if failed:
        raise ActionFailed(
            f"voices.answer answered {len(posted)} voice(s); {len(failed)} failed: "
            + "; ".join(f"{voice}: {reason}" for voice, reason in failed.items()),
            retryable=retryable, changed=True if posted else None,
            todo="fix what the failed posts say and run the step again: voices already answered are not posted again",
        )
    return outcome


async def _post(target: Target, text: str, context: ActionContext) -> dict[str, Any]:
    """Reply to the voice's mention, through the side-effect ledger under (incident, voice)."""
    if target.platform not in REPLY_ACTIONS:
        raise ActionFailed(f"no action replies on {target.platform}", changed=False,
                           todo=f"answer it on {target.platform} by hand, then `siaga voices answered {target.voice}`")
    spec, field = REPLY_ACTIONS[target.platform]
    try:
        params = spec.params.model_validate({"reply_to": target.reply_to, field: text})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ActionFailed(f"{spec.name} cannot take this reply: {problems}", changed=False,
                           todo=f"answer it by hand, then `siaga voices answered {target.voice}`") from None
    result = await context.call(spec, params, replace(context, step_id=f"voice-{target.voice}"))
    return dict(result) if isinstance(result, dict) else {"result": result}


async def _record_drill(posted: dict[str, dict[str, Any]], context: ActionContext) -> None:
    lines = [f"- `{voice}` to {entry['to']}: {entry['text']}" for voice, entry in posted.items()]
    await context.publish(
        f"drill-{context.step_id}",
        "### Drill record: `voices.answer`\n\nRecorded, not posted. Each voice would have been sent:\n\n"
        + "\n".join(lines) + "\n",
    )


async def preview(params: AnswerVoices, context: ActionContext) -> dict[str, str]:
    """Every reply as it will be posted, voice by voice (the exact text, its platform and the
    mention it answers), for the people at the gate."""
    return {f"{t.voice} ({t.platform} {t.reply_to}{', ' + t.author if t.author else ''})": addressed(t, r.text)
            for r in params.replies for t in r.voices}


def _desk(context: ActionContext) -> Any:
    if context.voices is None:
        raise ActionFailed("the voices actions run only in a flow run of Siaga: they need Siaga's store",
                           changed=False, todo="run the runbook with `siaga run` or `siaga up`")
    return context.voices


ACTIONS = (
    ActionSpec(
        name="voices.draft",
        params=DraftReplies,
        run=draft,
        risk=Risk.READ,
        summary="Draft the replies of the incident's voices from the templates, grouped by their exact text.",
    ),
    ActionSpec(
        name="voices.answer",
        params=AnswerVoices,
        run=answer,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.CALL,  # the action itself records, and posts nothing, in a drill
        summary="Post approved replies once per voice on X, Facebook and Instagram (checked against Siaga's "
        "drafts); a drill records them.",
        ledger_per_part=True,  # each voice is its own side-effect ledger entry, the round is not
        preview=preview,
    ),
)
