"""What the actions that speak in public (X, Facebook, Instagram, a website) and to people's
phones (WhatsApp) share: which account they post from, what they return, and how a post found at
the provider is recognised as ours.

The rules:

* **A drill posts nothing.** A step of these actions is recorded in a drill (their drill behaviour
  is `record`). Called inside `comms.publish` or `notify.fanout`, where the step's drill behaviour
  is not asked, the action itself insists on the connection's `sandbox:` (a test account) and is
  refused otherwise (`NoSandbox`), which those actions record instead of sending.
* **No connection of the kind, the outbox.** As for the notification actions (`_notify`), a post
  whose kind has no connection configured goes to the outbox, marked with where it was meant to go.
* **Ours is what we wrote.** Providers hand texts back changed (X shortens links to t.co and escapes
  ``&``): `same_text` compares texts as the provider shows them.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import TypeVar

from pydantic import Field

from siaga.actions import ActionContext, Connection, DrillConnections, Mode

from ._notify import Delivery, configured, to_outbox

__all__ = ["LOOK_BACK_HOURS", "Posted", "account", "to_outbox_instead", "same_text"]

C = TypeVar("C", bound=Connection)

LOOK_BACK_HOURS = 24
"""How far back a check for an earlier attempt's post looks: a text posted before that is an
older statement, not this step's."""

_URL = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


class Posted(Delivery):
    """A post, comment reply or message the provider accepted (or the outbox recorded)."""

    id: str | None = Field(default=None, description="The provider's id of what was posted.")
    url: str | None = Field(default=None, description="Where it can be seen, where the provider says.")
    reconciled: bool = Field(
        default=False,
        description="True when an earlier attempt had posted it: found at the provider, not posted again.",
    )


def account(context: ActionContext, model: type[C], name: str | None) -> C | None:
    """The connection to post through; None when none of its kind is configured (the outbox).
    In a drill only a connection's `sandbox:` will do: NoSandbox (a ProductionInDrill) otherwise."""
    if context.mode is Mode.DRILL:
        context = replace(context, drill_connections=DrillConnections.REQUIRED)
    return configured(context, model, name)


async def to_outbox_instead(
    context: ActionContext, provider: str, to: str, message: str, subject: str = ""
) -> Posted:
    """The post recorded in the outbox, for `to`, because no connection of its kind is configured."""
    via, entry = await to_outbox(context, provider=provider, to=to, subject=subject, message=message)
    return Posted(delivered_via=via, to=to, outbox_id=entry)


def same_text(ours: str, theirs: str | None) -> bool:
    """Whether the provider's text `theirs` is our `ours`: links, HTML escapes and runs of white
    space aside."""
    if theirs is None:
        return False
    return _plain(ours) == _plain(html.unescape(theirs))


def _plain(text: str) -> str:
    return _SPACE.sub(" ", _URL.sub("<link>", text)).strip()
