"""`instagram.reply` and `instagram.publish`: speak on an Instagram professional account through
the Graph API (Instagram API with Facebook Login).

In ``connections.yaml``::

    connections:
      insta:
        type: instagram
        ig_user_id: "17841400000000000"               # the professional account's id
        access_token: secret://instagram-token       # instagram_manage_comments, instagram_content_publish
        production: true
        sandbox: insta-test

* `instagram.reply` answers a comment, as the account: ``POST /{ig-comment-id}/replies`` with
  ``{"message"}``, answered ``{"id"}``.
* `instagram.publish` puts an image post on the feed, in Graph's two steps: a container
  (``POST /{ig-user-id}/media`` with ``{"image_url", "caption"}``, answered ``{"id"}``), asked
  until its ``status_code`` is ``FINISHED``, then ``POST /{ig-user-id}/media_publish`` with
  ``{"creation_id"}``, answered with the media's ``{"id"}``; its ``permalink`` is read after.
  Instagram has no text-only posts: the image is required. An account may publish 100 posts a day
  (error 9 with subcode 2207042 past it).

Graph takes no idempotency key: each call is a side-effect ledger entry, and when an earlier
attempt may have posted without recording it, the action looks for its text among the account's
replies to the comment (``GET /{ig-comment-id}/replies``) or its media of the last day
(``GET /{ig-user-id}/media``) before posting again. An unpublished container shows nowhere, so a
crash between the two steps costs nothing. Errors and rate limits are `_graph`'s.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import Field

from siaga.actions import ActionContext, ActionFailed, ActionParams, ActionSpec, DrillBehaviour, Risk

from ._graph import Graph, GraphConnection
from ._http import http_client
from ._social import LOOK_BACK_HOURS, Posted, account, same_text, to_outbox_instead

__all__ = ["ACTIONS", "InstagramConnection", "InstagramPublish", "InstagramReply", "publish", "reply"]

_CONNECTION_HELP = "The `type: instagram` connection (account) to post as."
_LOOK_BACK = 50
_CONTAINER_CHECKS = 20
_CONTAINER_WAIT = 0.5


class InstagramConnection(GraphConnection):
    """An Instagram professional account, reached with a token of its Facebook Page's app."""

    type: Literal["instagram"] = "instagram"
    ig_user_id: str = Field(pattern=r"^[0-9]+$", description="The Instagram professional account's id.")


class InstagramReply(ActionParams):
    """Reply to a comment as the account (or to the outbox when no account is configured)."""

    reply_to: str = Field(min_length=1, pattern=r"^[0-9]+$", description="The comment's id.")
    message: str = Field(min_length=1, max_length=2200, description="The reply's text.")
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class InstagramPublish(ActionParams):
    """Publish an image post with a caption (or to the outbox when no account is configured)."""

    image_url: str = Field(
        pattern=r"^https://", description="A public JPEG the post shows (Instagram fetches it)."
    )
    caption: str = Field(min_length=1, max_length=2200, description="The post's caption.")
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


async def reply(
    params: InstagramReply, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> Posted:
    insta = account(context, InstagramConnection, params.connection)
    if insta is None:
        return await to_outbox_instead(context, "Instagram", f"instagram:{params.reply_to}", params.message)
    async with http_client(client, insta.timeout) as http:
        answer = await _graph(insta, context, http).call(
            "POST", f"{params.reply_to}/replies", body={"message": params.message}
        )
    return Posted(delivered_via="instagram", to=f"instagram:{params.reply_to}", id=_id(answer))


async def reconcile_reply(params: InstagramReply, context: ActionContext) -> Posted | None:
    """The account's reply with this text to the comment, if an earlier attempt made it."""
    insta = account(context, InstagramConnection, params.connection)
    if insta is None:
        return None
    async with http_client(None, insta.timeout) as http:
        replies = await _graph(insta, context, http).call(
            "GET", f"{params.reply_to}/replies", query={"fields": "id,text,from", "limit": _LOOK_BACK}
        )
    for entry in replies.get("data") or []:
        author = entry.get("from") if isinstance(entry, dict) else None
        if (isinstance(author, dict) and str(author.get("id")) == insta.ig_user_id
                and same_text(params.message, entry.get("text"))):
            return Posted(delivered_via="instagram", to=f"instagram:{params.reply_to}",
                          id=str(entry.get("id")), reconciled=True)
    return None


async def publish(
    params: InstagramPublish, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> Posted:
    insta = account(context, InstagramConnection, params.connection)
    if insta is None:
        text = f"{params.caption}\n\n(image: {params.image_url})"
        return await to_outbox_instead(context, "Instagram", "instagram:feed", text)
    async with http_client(client, insta.timeout) as http:
        graph = _graph(insta, context, http)
        container = _id(await graph.call(
            "POST", f"{insta.ig_user_id}/media",
            body={"image_url": params.image_url, "caption": params.caption},
        ))
        await _until_finished(graph, container)
        media = _id(await graph.call(
            "POST", f"{insta.ig_user_id}/media_publish", body={"creation_id": container}
        ))
        try:
            link = (await graph.call("GET", media, query={"fields": "permalink"})).get("permalink")
        except ActionFailed:
            link = None  # published; only its link is unknown
    return Posted(delivered_via="instagram", to=f"instagram:{insta.ig_user_id}", id=media,
                  url=str(link) if link else None)


async def reconcile_publish(params: InstagramPublish, context: ActionContext) -> Posted | None:
    """The account's media of the last day with this caption, if an earlier attempt published it."""
    insta = account(context, InstagramConnection, params.connection)
    if insta is None:
        return None
    since = datetime.fromtimestamp(time.time() - LOOK_BACK_HOURS * 3600, UTC)
    async with http_client(None, insta.timeout) as http:
        media = await _graph(insta, context, http).call(
            "GET", f"{insta.ig_user_id}/media",
            query={"fields": "id,caption,permalink,timestamp", "limit": _LOOK_BACK},
        )
    for entry in media.get("data") or []:
        if not isinstance(entry, dict) or not same_text(params.caption, entry.get("caption")):
            continue
        if _when(entry.get("timestamp")) < since:
            continue
        return Posted(delivered_via="instagram", to=f"instagram:{insta.ig_user_id}",
                      id=str(entry.get("id")), url=entry.get("permalink"), reconciled=True)
    return None


async def _until_finished(graph: Graph, container: str) -> None:
    """Wait until Instagram has fetched and checked the image of `container`."""
    for _ in range(_CONTAINER_CHECKS):
        status = (await graph.call("GET", container, query={"fields": "status_code,status"}))
        code = status.get("status_code")
        if code in (None, "FINISHED"):
            return
        if code in ("ERROR", "EXPIRED"):
            raise ActionFailed(
                f"Instagram could not prepare the post ({code}): {status.get('status') or 'no reason given'}",
                changed=False,
                todo="check that image_url is a public JPEG Instagram can fetch, then run the step again",
            )
        await asyncio.sleep(_CONTAINER_WAIT)
    raise ActionFailed(
        f"Instagram was still preparing the post after {_CONTAINER_CHECKS} checks",
        retryable=True, changed=False,
    )


def _graph(insta: InstagramConnection, context: ActionContext, http: httpx.AsyncClient) -> Graph:
    return Graph(insta, context, http, "Instagram")


def _id(answer: dict[str, Any]) -> str:
    found = answer.get("id")
    if not found:
        raise ActionFailed(f"Instagram answered without an id: {str(answer)[:200]}", changed=None)
    return str(found)


def _when(stamp: Any) -> datetime:
    """Graph's ``2026-01-02T03:04:05+0000``; the distant past when it cannot be read."""
    try:
        return datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


ACTIONS = (
    ActionSpec(
        name="instagram.reply",
        params=InstagramReply,
        run=reply,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Reply to an Instagram comment as the account (Graph API).",
        message_fields=("message",),
        reconcile=reconcile_reply,
    ),
    ActionSpec(
        name="instagram.publish",
        params=InstagramPublish,
        run=publish,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Publish an image post with a caption on an Instagram account (Graph API).",
        message_fields=("caption",),
        reconcile=reconcile_publish,
    ),
)
