"""`notify.fanout`: one step telling the same thing on several channels at once.

    - id: tell-everyone
      action: notify.fanout
      with:
        subject: "SEV1: card payments failing in {{ inputs.region }}"
        message: "Payments through the gateway are failing. Bridge: #inc-payments."
        channels:
          - {action: pagerduty.trigger, with: {severity: critical}}
          - {action: slack.post, with: {channel: "#inc-payments"}}
          - {action: email.send, with: {to: [cmt@example.com]}}

Each channel's `with` is validated by that action's own parameter model (so runbook validation
reports a mistake at ``with.channels[2].with.to``); `subject` and `message` fill each channel's
title and text unless its `with` gives its own. The channels go out concurrently; each is its own
entry in the side-effect ledger (``<step>.<channel id>``), so a retry sends again only to the
channels that failed. One channel failing fails the step after every other one was tried, naming
those that were delivered and those that were not.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from typing import Any, Literal

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

from . import apprise_notify, outbox, pagerduty, slack, smtp, teams, whatsapp
from ._notify import ChannelOutcome, channel_ids, outcome_of

__all__ = ["ACTIONS", "Channel", "Fanout", "FanoutResult", "fanout"]

CHANNEL_ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        *slack.ACTIONS,
        *teams.ACTIONS,
        *pagerduty.ACTIONS,
        *smtp.ACTIONS,
        *apprise_notify.ACTIONS,
        *outbox.ACTIONS,
        *whatsapp.ACTIONS,
    )
    if spec.name != "pagerduty.resolve"
}
"""The actions a fanout may send through, without a registry: the modules are imported directly."""

ChannelAction = Literal[
    "slack.post", "teams.post", "pagerduty.trigger", "email.send", "apprise.notify", "outbox.send",
    "whatsapp.send",
]

_SHARED_FIELDS: dict[str, tuple[str, str]] = {
    "slack.post": ("title", "text"),
    "teams.post": ("title", "text"),
    "email.send": ("subject", "text"),
    "apprise.notify": ("title", "body"),
    "outbox.send": ("subject", "message"),
}
"""Where each action takes the fanout's `subject` and `message` (a page's summary is the subject,
else the message; with both, the message goes in its details; a WhatsApp text is both, the
subject in bold)."""


class Channel(ActionParams):
    """One channel of a fanout: an action and its parameters."""

    action: ChannelAction = Field(description="The notification action to send through.")
    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Names the channel in the result (default: the provider, e.g. slack).",
    )
    with_: Any = Field(
        default_factory=dict,
        alias="with",
        json_schema_extra={"type": "object"},
        description="The action's parameters, as for a step of that action.",
    )

    @field_validator("with_")
    @classmethod
    def _valid_for_action(cls, value: Any, info: Any) -> Any:
        spec = CHANNEL_ACTIONS.get(info.data.get("action", ""))
        if spec is None or isinstance(value, spec.params):
            return value
        return spec.params.model_validate(value)


class Fanout(ActionParams):
    """Send one message to several channels concurrently."""

    subject: str = Field(
        default="", description="A short subject: Slack/Teams title, e-mail subject, page summary."
    )
    message: str = Field(
        default="", description="The text every channel gets unless its `with` says otherwise."
    )
    channels: list[Channel] = Field(
        min_length=1, description="The channels: `{action, with}` each."
    )

    @model_validator(mode="before")
    @classmethod
    def _share_message(cls, data: Any) -> Any:
        """Fill each channel's title and text from `subject` and `message` where it has none."""
        if not isinstance(data, dict) or not isinstance(data.get("channels"), list):
            return data
        subject, message = str(data.get("subject") or ""), str(data.get("message") or "")
        channels = []
        for entry in data["channels"]:
            if isinstance(entry, dict) and isinstance(entry.get("with") or {}, dict):
                given = dict(entry.get("with") or {})
                action = entry.get("action")
                if action == "pagerduty.trigger":
                    if subject or message:
                        given.setdefault("summary", (subject or message)[:1024])
                    if subject and message:
                        given.setdefault("custom_details", {"message": message})
                elif action == "whatsapp.send" and "template" not in given and (subject or message):
                    given.setdefault("text", f"*{subject}*\n{message}" if subject and message else subject or message)
                elif action in _SHARED_FIELDS:
                    title_field, text_field = _SHARED_FIELDS[action]
                    if subject:
                        given.setdefault(title_field, subject)
                    if message:
                        given.setdefault(text_field, message)
                entry = {**entry, "with": given}
            channels.append(entry)
        return {**data, "channels": channels}

    @model_validator(mode="after")
    def _distinct_ids(self) -> Fanout:
        ids = Counter(channel_ids(self.channels))
        twice = sorted(name for name, count in ids.items() if count > 1)
        if twice:
            raise ValueError(
                f"channel ids must differ: give `id:` to the channels named {', '.join(twice)}"
            )
        return self


class FanoutResult(BaseModel):
    """Every channel's outcome, by channel id."""

    delivered: list[str]
    channels: dict[str, ChannelOutcome]


async def fanout(params: Fanout, context: ActionContext) -> FanoutResult:
    ids = channel_ids(params.channels)
    calls = [
        _one(channel, replace(context, step_id=f"{context.step_id}.{name}"))
        for name, channel in zip(ids, params.channels)
    ]
    outcomes = dict(zip(ids, await asyncio.gather(*calls)))
    delivered = [name for name, outcome in outcomes.items() if outcome.ok]
    failed = {name: outcome for name, outcome in outcomes.items() if not outcome.ok}
    if failed:
        raise _partial(delivered, failed)
    return FanoutResult(delivered=delivered, channels=outcomes)


async def _one(channel: Channel, context: ActionContext) -> ChannelOutcome:
    spec = CHANNEL_ACTIONS[channel.action]
    params: BaseModel = channel.with_
    if context.mode is Mode.DRILL:
        params = params.model_copy(update=_marked(params, spec.message_fields))
    return await outcome_of(spec.name, context.call(spec, params, context))


def _marked(params: BaseModel, fields: tuple[str, ...]) -> dict[str, str]:
    """``[DRILL] `` before each outgoing text of a channel, as a drill step gets it."""
    return {
        name: DRILL_PREFIX + text
        for name in fields
        if isinstance(text := getattr(params, name), str)
        and text
        and not text.startswith(DRILL_PREFIX)
    }


def _partial(delivered: list[str], failed: dict[str, ChannelOutcome]) -> ActionFailed:
    sent = ", ".join(delivered) if delivered else "none"
    reasons = "; ".join(f"{name}: {outcome.error}" for name, outcome in failed.items())
    changes = [outcome.changed for outcome in failed.values()]
    if delivered:
        changed: bool | None = True
    elif all(change is False for change in changes):
        changed = False
    else:
        changed = None
    retryable = any(outcome.retryable for outcome in failed.values())
    return ActionFailed(
        f"notify.fanout delivered to {sent}; failed: {reasons}",
        retryable=retryable,
        changed=changed,
        todo="fix what the failed channels say and run the step again: channels already delivered "
        "are not sent again"
        if delivered
        else "fix what the channels say and run the step again",
    )


ACTIONS = (
    ActionSpec(
        name="notify.fanout",
        params=Fanout,
        run=fanout,
        risk=Risk.NOTIFY,
        summary="Send one message to several channels (Slack, Teams, PagerDuty, e-mail, Apprise, WhatsApp, outbox) "
        "concurrently.",
        message_fields=("subject", "message"),
        # Safe to call again: in a flow run each channel is its own side-effect ledger entry
        # (through ActionContext.call), so a second call sends only where the first did not.
        provider_idempotent=True,
    ),
)
