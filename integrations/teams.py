"""`teams.post`: a message to a Microsoft Teams channel through a Workflows webhook.

A ``type: teams`` connection holds the webhook URL that Teams' "Post to a channel when a webhook
request is received" workflow gives out (the URL carries its signature, so it is a secret)::

    ops-teams: {type: teams, webhook_url: secret://ops-teams-webhook}

The message is an Adaptive Card in a ``message`` envelope::

    {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
      "content": {"type": "AdaptiveCard", "version": "1.4", "body": [TextBlock, ...]}}]}

The workflow answers 202 Accepted; errors come as ``{"error": {"code", "message"}}`` with 400,
401/403 and 404, and 429 with ``Retry-After`` when it is triggered too often.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import Field

from siaga.actions import ActionContext, ActionFailed, ActionParams, ActionSpec, Connection, Risk

from . import _http
from ._http import http_client
from ._notify import Delivery, configured, to_outbox

__all__ = ["ACTIONS", "TeamsConnection", "TeamsPost", "TeamsPosted", "adaptive_card", "post"]

CARD_TYPE = "application/vnd.microsoft.card.adaptive"


class TeamsConnection(Connection):
    """A Teams channel's Workflows webhook."""

    type: Literal["teams"] = "teams"
    webhook_url: str = Field(
        pattern=r"^secret://", description="secret://NAME of the workflow's webhook URL."
    )
    channel: str | None = Field(default=None, description="The channel's name, for the record.")
    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for Teams.")


class TeamsPost(ActionParams):
    """Post a message to a Teams channel (or to the outbox when no Teams connection is configured)."""

    text: str = Field(
        min_length=1, description="The message (Adaptive Card TextBlocks take a Markdown subset)."
    )
    title: str = Field(default="", description="A bold heading above the message.")
    facts: dict[str, str] = Field(
        default_factory=dict, description="Name/value pairs shown as a fact set."
    )
    connection: str | None = Field(default=None, description="The `type: teams` connection to use.")


class TeamsPosted(Delivery):
    """A message Teams accepted (or the outbox recorded)."""

    delivered_via: Literal["teams", "outbox"]
    status: int | None = Field(default=None, description="Teams' HTTP status (202).")


def adaptive_card(
    text: str, title: str = "", facts: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``message`` envelope with an Adaptive Card 1.4 of TextBlocks (and a FactSet)."""
    body: list[dict[str, Any]] = []
    if title:
        body.append(
            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True}
        )
    body.extend(
        {"type": "TextBlock", "text": part, "wrap": True}
        for part in text.split("\n\n")
        if part.strip()
    )
    if facts:
        body.append(
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts.items()]}
        )
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": CARD_TYPE,
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                },
            }
        ],
    }


async def post(
    params: TeamsPost, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> TeamsPosted:
    connection = configured(context, TeamsConnection, params.connection)
    to = f"teams:{connection.channel}" if connection and connection.channel else "teams"
    if connection is None:
        facts = "".join(f"\n{k}: {v}" for k, v in params.facts.items())
        via, entry = await to_outbox(
            context, provider="Teams", to=to, subject=params.title, message=params.text + facts
        )
        return TeamsPosted(delivered_via=via, to=to, outbox_id=entry)
    url = context.secret(connection.webhook_url)
    async with http_client(client, connection.timeout) as http:
        try:
            response = await _http.send(
                http,
                "POST",
                url,
                json=adaptive_card(params.text, params.title, params.facts),
                provider="Teams",
                shown_url="the Teams workflow webhook",
                describe=_error,
            )
        except ActionFailed as exc:
            if not exc.retryable:
                exc.todo = (
                    f"check the workflow behind {connection.webhook_url} is on and its URL current, "
                    "then run the step again"
                )
            raise
    return TeamsPosted(delivered_via="teams", to=to, status=response.status_code)


def _error(response: httpx.Response) -> str:
    """The workflow's ``{"error": {"code", "message"}}`` as one line."""
    try:
        error = response.json().get("error") or {}
        return (
            f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
            or response.text[:300]
        )
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase


ACTIONS = (
    ActionSpec(
        name="teams.post",
        params=TeamsPost,
        run=post,
        risk=Risk.NOTIFY,
        summary="Post an Adaptive Card to a Teams channel (Workflows webhook); to the outbox when Teams is not configured.",
        message_fields=("title", "text"),
    ),
)
