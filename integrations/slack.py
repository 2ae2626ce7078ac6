"""`slack.post`: a message to a Slack channel, through an incoming webhook or a bot token.

Two kinds of `type: slack` connection::

    ops-slack:  {type: slack, webhook_url: secret://ops-slack-webhook}
    siaga-bot:  {type: slack, bot_token: secret://slack-bot-token, channel: "#inc-payments"}

An incoming webhook posts to the one channel it was made for and answers the plain text ``ok``
(or ``invalid_payload``, ``no_text``... with 400/403/404/410). A bot token calls
``chat.postMessage`` (JSON body, ``Authorization: Bearer``), which answers HTTP 200 with
``{"ok": false, "error": "channel_not_found"}`` on errors and 429 with ``Retry-After`` when rate
limited; it returns the message's ``ts``, which later steps pass as ``thread_ts`` to reply in
its thread. Messages are Block Kit: a section block of mrkdwn (with an optional header), plus the
plain ``text`` that notifications and old clients show.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import Field, model_validator

from siaga.actions import ActionContext, ActionFailed, ActionParams, ActionSpec, Connection, Risk

from . import _http
from ._http import http_client
from ._notify import Delivery, configured, to_outbox

__all__ = ["ACTIONS", "SlackConnection", "SlackPost", "SlackPosted", "post"]

_SECTION_LIMIT = 3000  # characters of text in one section block
_HEADER_LIMIT = 150  # characters of a header block


class SlackConnection(Connection):
    """A Slack workspace, reached by an incoming webhook or by a bot token."""

    type: Literal["slack"] = "slack"
    webhook_url: str | None = Field(
        default=None, pattern=r"^secret://", description="secret://NAME of an incoming webhook URL."
    )
    bot_token: str | None = Field(
        default=None, pattern=r"^secret://", description="secret://NAME of a bot token (xoxb-...)."
    )
    channel: str | None = Field(
        default=None, description="The bot's default channel, e.g. #inc-payments."
    )
    api_url: str = Field(
        default="https://slack.com/api", description="Slack's Web API (tests point it at loopback)."
    )
    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for Slack.")

    @model_validator(mode="after")
    def _one_way_in(self) -> SlackConnection:
        if (self.webhook_url is None) == (self.bot_token is None):
            raise ValueError("give either webhook_url or bot_token")
        return self


class SlackPost(ActionParams):
    """Post a message to Slack (or to the outbox when no Slack connection is configured)."""

    text: str = Field(min_length=1, description="The message, in Slack mrkdwn.")
    title: str = Field(default="", description="A header shown above the message.")
    channel: str | None = Field(
        default=None,
        description="Channel for a bot connection (default: the connection's channel).",
    )
    thread_ts: str | None = Field(
        default=None, description="Reply in this thread: the `thread_ts` of an earlier slack.post."
    )
    connection: str | None = Field(default=None, description="The `type: slack` connection to use.")


class SlackPosted(Delivery):
    """A posted message."""

    delivered_via: Literal["slack", "outbox"]
    channel: str | None = Field(default=None, description="Slack's channel id (bot connections).")
    ts: str | None = Field(
        default=None, description="The message's timestamp id (bot connections)."
    )
    thread_ts: str | None = Field(
        default=None, description="Pass this as `thread_ts` to reply in the thread."
    )


def blocks(text: str, title: str = "") -> list[dict[str, Any]]:
    """Block Kit for a message: an optional header and the text as mrkdwn sections."""
    found: list[dict[str, Any]] = []
    if title:
        found.append(
            {
                "type": "header",
                "text": {"type": "plain_text", "text": title[:_HEADER_LIMIT], "emoji": True},
            }
        )
    for start in range(0, len(text), _SECTION_LIMIT):
        found.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": text[start : start + _SECTION_LIMIT]},
            }
        )
    return found[:50]


def _fallback_text(params: SlackPost) -> str:
    return f"{params.title}\n{params.text}" if params.title else params.text


async def post(
    params: SlackPost, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> SlackPosted:
    connection = configured(context, SlackConnection, params.connection)
    to = params.channel or (connection.channel if connection else None)
    if connection is None:
        meant = f"slack:{to}" if to else "slack"
        via, entry = await to_outbox(
            context, provider="Slack", to=meant, subject=params.title, message=params.text
        )
        return SlackPosted(delivered_via=via, to=meant, outbox_id=entry)
    body: dict[str, Any] = {
        "text": _fallback_text(params),
        "blocks": blocks(params.text, params.title),
    }
    async with http_client(client, connection.timeout) as http:
        if connection.webhook_url is not None:
            url = context.secret(connection.webhook_url)
            await _http.send(
                http,
                "POST",
                url,
                json=body,
                provider="Slack",
                shown_url="the Slack incoming webhook",
                describe=_webhook_error,
            )
            return SlackPosted(delivered_via="slack", to=f"slack:{to or 'webhook'}")
        if not to:
            raise ActionFailed(
                "slack.post: no channel to post to",
                changed=False,
                todo="give the step a `channel:` or the Slack connection a default `channel:`",
            )
        assert connection.bot_token is not None
        token = context.secret(connection.bot_token)
        body["channel"] = to
        if params.thread_ts:
            body["thread_ts"] = params.thread_ts
        response = await _http.send(
            http,
            "POST",
            f"{connection.api_url.rstrip('/')}/chat.postMessage",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            provider="Slack",
            describe=_api_error,
        )
    answer = _json(response)
    if not answer.get("ok"):
        raise _refusal(str(answer.get("error") or "unknown_error"), to, connection.bot_token)
    ts = str(answer.get("ts") or "")
    return SlackPosted(
        delivered_via="slack",
        to=f"slack:{to}",
        channel=answer.get("channel"),
        ts=ts,
        thread_ts=params.thread_ts or ts,
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    return _http.json_object(response, "Slack", changed=None)


def _webhook_error(response: httpx.Response) -> str:
    return response.text.strip()[:300] or response.reason_phrase


def _api_error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text[:300])
    except (ValueError, AttributeError):
        return response.text[:300]


_RETRY = {
    "service_unavailable": False,
    "request_timeout": False,
    "internal_error": None,
    "fatal_error": None,
}
"""Errors worth trying again, and whether the message was certainly not posted (False) or may have been."""

_AUTH = {
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "missing_scope",
    "no_permission",
    "ekm_access_denied",
    "not_allowed_token_type",
}
_CHANNEL = {
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "restricted_action",
    "cannot_reply_to_message",
}


def _refusal(error: str, channel: str, token_ref: str) -> ActionFailed:
    """chat.postMessage's ``{"ok": false, "error": ...}`` as an ActionFailed."""
    if error in _RETRY:
        return ActionFailed(
            f"Slack chat.postMessage to {channel} failed: {error}",
            retryable=True,
            changed=_RETRY[error],
        )
    if error in _AUTH:
        todo = f"check the bot token in {token_ref} (and that the app has the chat:write scope)"
    elif error in _CHANNEL:
        todo = f"check the channel {channel} exists and invite the Siaga app to it (/invite @app)"
    else:
        todo = "fix the message or the connection as Slack's error says, and run the step again"
    return ActionFailed(
        f"Slack refused chat.postMessage to {channel}: {error}", changed=False, todo=todo
    )


ACTIONS = (
    ActionSpec(
        name="slack.post",
        params=SlackPost,
        run=post,
        risk=Risk.NOTIFY,
        summary="Post a message to a Slack channel (webhook or bot); to the outbox when Slack is not configured.",
        message_fields=("title", "text"),
    ),
)
