"""`facebook.post` and `facebook.reply`: speak on a Facebook Page through the Graph API.

In ``connections.yaml``::

    connections:
      page:
        type: facebook
        page_id: "104567890123456"
        access_token: secret://facebook-page-token     # a Page access token (pages_manage_posts,
        app_secret: secret://facebook-app-secret       #  pages_manage_engagement); optional proof
        production: true
        sandbox: page-test                              # a test Page for drills

* `facebook.post` publishes on the Page's feed: ``POST /{page-id}/feed`` with ``{"message",
  "link"}``, answered ``{"id": "{page-id}_{post-id}"}``.
* `facebook.reply` comments, as the Page, on a post or replies to a comment:
  ``POST /{object-id}/comments`` with ``{"message"}``, answered ``{"id": ...}``.

Graph takes no idempotency key. Each post is a side-effect ledger entry, and when an earlier
attempt may have posted without recording it, the action looks for its text among the Page's
posts of the last day (``GET /{page-id}/feed``) or the Page's comments on the object
(``GET /{object-id}/comments``) before posting again. Errors, rate limits and the token's
safety are `_graph`'s.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx
from pydantic import Field

from siaga.actions import ActionContext, ActionParams, ActionSpec, DrillBehaviour, Risk

from ._graph import Graph, GraphConnection
from ._http import http_client
from ._social import LOOK_BACK_HOURS, Posted, account, same_text, to_outbox_instead

__all__ = ["ACTIONS", "FacebookConnection", "FacebookPost", "FacebookReply", "post", "reply"]

_CONNECTION_HELP = "The `type: facebook` connection (Page) to post as."
_LOOK_BACK = 25
"""How many of the Page's latest posts or comments a check for an earlier attempt reads."""


class FacebookConnection(GraphConnection):
    """A Facebook Page, reached with a Page access token."""

    type: Literal["facebook"] = "facebook"
    page_id: str = Field(pattern=r"^[0-9]+$", description="The Page's id.")


class FacebookPost(ActionParams):
    """Publish a post on the Page's feed (or to the outbox when no Page is configured)."""

    message: str = Field(min_length=1, max_length=63206, description="The post's text.")
    link: str | None = Field(
        default=None, pattern=r"^https?://", description="A link shown with the post."
    )
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class FacebookReply(ActionParams):
    """Comment as the Page on a post, or reply to a comment (or to the outbox when none is configured)."""

    reply_to: str = Field(
        min_length=1,
        pattern=r"^[0-9_]+$",
        description="The post id ({page-id}_{post-id}) or comment id to answer.",
    )
    message: str = Field(min_length=1, max_length=8000, description="The comment's text.")
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


async def post(
    params: FacebookPost, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> Posted:
    page = account(context, FacebookConnection, params.connection)
    if page is None:
        return await to_outbox_instead(context, "Facebook", "facebook:page", params.message)
    body: dict[str, Any] = {"message": params.message}
    if params.link:
        body["link"] = params.link
    async with http_client(client, page.timeout) as http:
        answer = await _graph(page, context, http).call("POST", f"{page.page_id}/feed", body=body)
    return _posted(f"facebook:{page.page_id}", str(answer.get("id") or ""))


async def reconcile_post(params: FacebookPost, context: ActionContext) -> Posted | None:
    """The Page's post of the last day with this text, if an earlier attempt made it."""
    since = int(time.time() - LOOK_BACK_HOURS * 3600)
    return await _find(params.connection, context, "feed", params.message,
                       {"fields": "id,message,created_time", "since": since})


async def reply(
    params: FacebookReply, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> Posted:
    page = account(context, FacebookConnection, params.connection)
    if page is None:
        return await to_outbox_instead(context, "Facebook", f"facebook:{params.reply_to}", params.message)
    async with http_client(client, page.timeout) as http:
        answer = await _graph(page, context, http).call(
            "POST", f"{params.reply_to}/comments", body={"message": params.message}
        )
    return _posted(f"facebook:{params.reply_to}", str(answer.get("id") or ""))


async def reconcile_reply(params: FacebookReply, context: ActionContext) -> Posted | None:
    """The Page's comment with this text on the object, if an earlier attempt made it."""
    return await _find(params.connection, context, f"{params.reply_to}/comments", params.message,
                       {"fields": "id,message,from", "filter": "stream", "order": "reverse_chronological"})


async def _find(
    connection: str | None, context: ActionContext, edge: str, message: str, query: dict[str, Any]
) -> Posted | None:
    """The Page's own entry of a Graph listing (its feed, or comments) whose text is `message`;
    `edge` ``feed`` is the Page's feed."""
    page = account(context, FacebookConnection, connection)
    if page is None:
        return None
    path = f"{page.page_id}/feed" if edge == "feed" else edge
    async with http_client(None, page.timeout) as http:
        listing = await _graph(page, context, http).call("GET", path, query={**query, "limit": _LOOK_BACK})
    for entry in listing.get("data") or []:
        author = entry.get("from") if isinstance(entry, dict) else None
        if isinstance(author, dict) and str(author.get("id")) != page.page_id:
            continue  # someone else's comment with the same words
        if isinstance(entry, dict) and same_text(message, entry.get("message")):
            where = page.page_id if edge == "feed" else edge.split("/")[0]
            return _posted(f"facebook:{where}", str(entry.get("id")), reconciled=True)
    return None


def _graph(page: FacebookConnection, context: ActionContext, http: httpx.AsyncClient) -> Graph:
    return Graph(page, context, http, "Facebook")


def _posted(to: str, object_id: str, *, reconciled: bool = False) -> Posted:
    return Posted(
        delivered_via="facebook",
        to=to,
        id=object_id or None,
        url=f"https://www.facebook.com/{object_id}" if object_id else None,
        reconciled=reconciled,
    )


ACTIONS = (
    ActionSpec(
        name="facebook.post",
        params=FacebookPost,
        run=post,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Publish a post on a Facebook Page (Graph API); to the outbox when no Page is configured.",
        message_fields=("message",),
        reconcile=reconcile_post,
    ),
    ActionSpec(
        name="facebook.reply",
        params=FacebookReply,
        run=reply,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Comment as a Facebook Page on a post, or reply to a comment (Graph API).",
        message_fields=("message",),
        reconcile=reconcile_reply,
    ),
)
