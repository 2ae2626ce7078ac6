"""`apprise.notify`: the long tail of channels (Discord, Telegram, Matrix, SMS gateways, ntfy...)
through one Apprise URL.

An Apprise URL carries its credentials (``tgram://bottoken/chat``, ``discord://id/token``), so
the connection holds it as a secret reference, and messages never show it::

    ops-telegram: {type: apprise, url: secret://ops-telegram-apprise-url, channel: telegram:ops}

Apprise answers only "sent" or "not sent"; the reason is read from its log (an HTTP status code
where it gives one) so that a refusal is told apart from a call that may have arrived.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Literal

import apprise
from pydantic import Field

from siaga.actions import ActionContext, ActionFailed, ActionParams, ActionSpec, Connection, Risk
from siaga.secrets import REDACTOR

from ._notify import Delivery, configured, to_outbox

__all__ = ["ACTIONS", "AppriseConnection", "AppriseNotified", "AppriseNotify", "notify"]


class AppriseConnection(Connection):
    """One Apprise URL (with its credentials), kept as a secret."""

    type: Literal["apprise"] = "apprise"
    url: str = Field(pattern=r"^secret://", description="secret://NAME of the Apprise URL.")
    channel: str | None = Field(
        default=None, description="What the URL reaches, for the record (e.g. telegram:ops)."
    )


class AppriseNotify(ActionParams):
    """Send a notification through an Apprise URL (or to the outbox when none is configured)."""

    body: str = Field(min_length=1, description="The message.")
    title: str = Field(default="", description="A title, where the service shows one.")
    notify_type: Literal["info", "success", "warning", "failure"] = Field(
        default="info", description="How the service marks it (colour, icon)."
    )
    connection: str | None = Field(
        default=None, description="The `type: apprise` connection to use."
    )


class AppriseNotified(Delivery):
    """A notification Apprise sent (or the outbox recorded)."""

    delivered_via: Literal["apprise", "outbox"]


async def notify(params: AppriseNotify, context: ActionContext) -> AppriseNotified:
    connection = configured(context, AppriseConnection, params.connection)
    to = f"apprise:{connection.channel}" if connection and connection.channel else "apprise"
    if connection is None:
        via, entry = await to_outbox(
            context, provider="Apprise", to=to, subject=params.title, message=params.body
        )
        return AppriseNotified(delivered_via=via, to=to, outbox_id=entry)
    url = context.secret(connection.url)
    # Apprise's own notify is synchronous for most services: keep it off the event loop.
    sent, said = await asyncio.to_thread(_send, url, params)
    if sent is None:
        raise ActionFailed(
            f"Apprise does not understand the URL in {connection.url}",
            changed=False,
            todo=f"fix the Apprise URL in {connection.url} (see the Apprise wiki for its scheme)",
        )
    if not sent:
        raise _failure(to, REDACTOR.text(said), connection.url)
    return AppriseNotified(delivered_via="apprise", to=to)


def _send(url: str, params: AppriseNotify) -> tuple[bool | None, str]:
    """(True if sent, False if not, None if the URL is not Apprise's), and what Apprise logged."""
    service = apprise.Apprise()
    with apprise.LogCapture(level=logging.WARNING) as captured:
        if not service.add(url):
            return None, ""
        sent = service.notify(body=params.body, title=params.title, notify_type=params.notify_type)
        said = captured.getvalue()  # type: ignore[union-attr]
    return bool(sent), said


_CODE = re.compile(r"error(?: code)?[:=]?\s*(\d{3})", re.IGNORECASE)


def _failure(to: str, said: str, reference: str) -> ActionFailed:
    lines = [line.split(" - ", 2)[-1] for line in said.strip().splitlines() if line.strip()]
    reason = "; ".join(lines[-3:]) or "no reason given"
    found = _CODE.search(said)
    status = int(found.group(1)) if found else None
    message = f"Apprise could not notify {to}: {reason}"
    if status is not None and (status == 429 or status == 503):
        return ActionFailed(message, retryable=True, changed=False)
    if status is not None and 400 <= status < 500:
        return ActionFailed(
            message, changed=False, todo=f"check the service behind {reference} and the message"
        )
    # A server error or a broken connection: the notification may have arrived.
    return ActionFailed(message, retryable=True, changed=None)


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        name="apprise.notify",
        params=AppriseNotify,
        run=notify,
        risk=Risk.NOTIFY,
        summary="Notify any service Apprise knows through one Apprise URL; to the outbox when none is configured.",
        message_fields=("title", "body"),
    ),
)
