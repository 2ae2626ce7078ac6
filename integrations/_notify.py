"""What the notification actions share: the outbox as the channel of last resort, their common
result fields, and, for a message sent several ways (`notify.fanout`, `comms.publish`), its
channels' ids and what came of each.

The product rule: when a notification action runs and *no* connection of its type is configured
(and the step names none), the message goes to the outbox instead, noting the channel it was meant
for, so the bundled runbooks work on a bare machine. A configured provider that fails is a
failure: there is no silent fallback then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, Field

from siaga.actions import ActionContext, ActionFailed, Connection, ProductionInDrill
from siaga.logs import get_logger

from . import outbox

log = get_logger("siaga.notify")

C = TypeVar("C", bound=Connection)


class Delivery(BaseModel):
    """Where a message went: the provider itself, or the outbox because none is configured."""

    delivered_via: str = Field(description="The provider's name, or `outbox`.")
    to: str = Field(description="The channel, address or service the message was meant for.")
    outbox_id: str | None = Field(default=None, description="The outbox entry, when it went there.")


def configured(context: ActionContext, model: type[C], name: str | None) -> C | None:
    """The connection to send through, or None when the step names none and none of the model's
    type is configured: the message then goes to the outbox. A named connection that does not
    exist, or several without a default, is an ActionFailed (a configuration error)."""
    kind = model.model_fields["type"].default
    if name is None and not any(c.get("type") == kind for c in context.connections.values()):
        return None
    return context.connection(model, name)


async def to_outbox(
    context: ActionContext, *, provider: str, to: str, subject: str, message: str
) -> tuple[Literal["outbox"], str]:
    """Record the message in the outbox for `to`; returns ("outbox", the entry's id)."""
    entry = await outbox.send(
        outbox.OutboxSend(to=to, subject=subject, message=message or subject or "(no text)"),
        context,
    )
    log.warning(
        f"no {provider} connection is configured: the message went to the outbox",
        to=to,
        step=context.step_id,
        outbox_id=entry["id"],
    )
    return "outbox", str(entry["id"])


class NamedChannel(Protocol):
    """A channel of a message sent several ways (`notify.fanout`, `comms.publish`)."""

    @property
    def id(self) -> str | None: ...

    @property
    def action(self) -> str: ...


def channel_ids(channels: Sequence[NamedChannel]) -> list[str]:
    """Each channel's id: its `id:`, else its provider (slack, pagerduty, email...), numbered
    from the second of a kind on (slack, slack-2)."""
    seen: dict[str, int] = {}
    ids = []
    for channel in channels:
        base = channel.id or {"email.send": "email"}.get(channel.action, channel.action.split(".")[0])
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if channel.id or seen[base] == 1 else f"{base}-{seen[base]}")
    return ids


class ChannelOutcome(BaseModel):
    """What came of one channel."""

    action: str
    ok: bool
    result: Any = None
    error: str | None = None
    changed: bool | None = Field(
        default=None, description="For a failed channel: whether it may have arrived."
    )
    retryable: bool = Field(
        default=False, description="For a failed channel: whether trying again may help."
    )


async def outcome_of(action: str, sending: Awaitable[Any]) -> ChannelOutcome:
    """What came of `sending` on one channel of several: a drill kept from production is a
    recorded call, as a step's is; a failure keeps its reason and what to do next; and nothing one
    channel raises stops the others."""
    try:
        result = await sending
    except ProductionInDrill as refusal:
        return ChannelOutcome(action=action, ok=True, result={"drill": "recorded", "reason": str(refusal)})
    except ActionFailed as exc:
        error = f"{exc} (next: {exc.todo})" if exc.todo else str(exc)
        return ChannelOutcome(action=action, ok=False, error=error, changed=exc.changed, retryable=exc.retryable)
    except Exception as exc:  # noqa: BLE001 - one channel's bug must not stop the others
        return ChannelOutcome(action=action, ok=False, error=f"{type(exc).__name__}: {exc}", retryable=True)
    return ChannelOutcome(action=action, ok=True, result=result)
