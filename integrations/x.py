"""`x.post` and `x.reply`: speak on X through the X API v2.

In ``connections.yaml``, with OAuth 1.0a user-context keys (they do not expire)::

    connections:
      brand-x:
        type: x
        oauth1:
          consumer_key: secret://x-consumer-key
          consumer_secret: secret://x-consumer-secret
          access_token: secret://x-access-token
          access_token_secret: secret://x-access-token-secret
        production: true
        sandbox: brand-x-test                      # a protected test account, for drills

or ``bearer: secret://x-user-token``, an OAuth 2.0 user-context token with ``tweet.write`` kept
fresh by something else (they last two hours). Requests are signed one by one (a fresh nonce for
every retry) with oauthlib.

Both actions ``POST /2/tweets`` with ``{"text"}`` (a reply adds ``{"reply":
{"in_reply_to_tweet_id"}}``); X answers 201 ``{"data": {"id", "text"}}``. A text may weigh 280:
X counts a link as 23 and most characters outside Latin, Greek and Cyrillic scripts (CJK, emoji)
as 2; a longer text is refused before anything is sent.

X's errors are problem objects ``{"title", "detail", "type", "status"}``. 429 (rate limit) changed
nothing and is waited out until ``x-rate-limit-reset`` (a Unix time), up to a minute; a longer wait,
or a spent monthly cap (``usage-capped``), fails the step now saying when to try again. 401 and 403
are refusals. X takes no idempotency key: each post is a side-effect ledger entry. When an earlier
attempt may have posted, the action looks for its text among the account's posts of the last day
(``GET /2/users/{id}/tweets``) before posting; and X itself refuses a text it has just seen from
the account (403 "duplicate content"), which is then taken as our own earlier post once it is found
there.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from oauthlib.oauth1 import Client as OAuth1Client
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from siaga.actions import (
    ActionContext,
    ActionFailed,
    ActionParams,
    ActionSpec,
    Connection,
    DrillBehaviour,
    Risk,
)
from siaga.secrets import REDACTOR

from . import _http
from ._http import http_client
from ._social import LOOK_BACK_HOURS, Posted, account, same_text, to_outbox_instead

__all__ = ["ACTIONS", "XConnection", "XPost", "XReply", "post", "reply", "weighted_length"]

MAX_WEIGHT = 280
LINK_WEIGHT = 23
_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
"""Code points X counts as 1 (the rest count 2): twitter-text's v3 configuration."""
LONGEST_WAIT = 60.0
"""Seconds a step waits out a rate limit; a longer one fails it now, saying when to try again."""
_URL = re.compile(r"https?://\S+")
_SECRET = r"^secret://"
_LOOK_BACK = 100


class OAuth1Keys(BaseModel):
    """An app's consumer keys and the account's access token, for OAuth 1.0a user context."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consumer_key: str = Field(pattern=_SECRET)
    consumer_secret: str = Field(pattern=_SECRET)
    access_token: str = Field(pattern=_SECRET)
    access_token_secret: str = Field(pattern=_SECRET)


class XConnection(Connection):
    """An X account the app may post as."""

    type: Literal["x"] = "x"
    oauth1: OAuth1Keys | None = Field(default=None, description="OAuth 1.0a user-context keys.")
    bearer: str | None = Field(
        default=None, pattern=_SECRET, description="secret://NAME of an OAuth 2.0 user-context token."
    )
    user_id: str | None = Field(
        default=None, pattern=r"^[0-9]+$", description="The account's id (default: asked of /2/users/me)."
    )
    api_url: str = Field(default="https://api.x.com/2", pattern=r"^https?://")
    timeout: float = Field(default=15.0, gt=0, description="Seconds to wait for X.")

    @model_validator(mode="after")
    def _one_way_in(self) -> XConnection:
        if (self.oauth1 is None) == (self.bearer is None):
            raise ValueError("give either oauth1 keys or bearer")
        return self


def weighted_length(text: str) -> int:
    """The length X counts for `text`: a link 23, a light character 1, any other 2."""
    text = unicodedata.normalize("NFC", text)
    total = 0
    position = 0
    for link in _URL.finditer(text):
        total += _weight(text[position:link.start()]) + LINK_WEIGHT
        position = link.end()
    return total + _weight(text[position:])


def _weight(text: str) -> int:
    return sum(1 if any(lo <= ord(ch) <= hi for lo, hi in _LIGHT) else 2 for ch in text)


class XPost(ActionParams):
    """Publish a post on X (or to the outbox when no X account is configured)."""

    text: str = Field(min_length=1, description="The post: 280 weighted characters at most.")
    connection: str | None = Field(default=None, description="The `type: x` connection to post as.")

    @field_validator("text")
    @classmethod
    def _fits(cls, text: str) -> str:
        weight = weighted_length(text)
        if weight > MAX_WEIGHT:
            raise ValueError(
                f"X takes {MAX_WEIGHT} weighted characters and this text weighs {weight} "
                "(a link counts 23, CJK and emoji 2): shorten it, or send one language only"
            )
        return text


class XReply(XPost):
    """Reply to a post on X (or to the outbox when no X account is configured)."""

    reply_to: str = Field(pattern=r"^[0-9]{1,19}$", description="The id of the post to answer.")


class _OAuth1(httpx.Auth):
    """Signs each request as it is sent (a fresh nonce and timestamp for every retry)."""

    def __init__(self, keys: OAuth1Keys, context: ActionContext) -> None:
        self.client = OAuth1Client(
            context.secret(keys.consumer_key),
            client_secret=context.secret(keys.consumer_secret),
            resource_owner_key=context.secret(keys.access_token),
            resource_owner_secret=context.secret(keys.access_token_secret),
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # A JSON body is not signed (OAuth 1.0a signs form bodies only); the query is.
        _, headers, _ = self.client.sign(str(request.url), http_method=request.method)
        request.headers["Authorization"] = headers["Authorization"]
        yield request


class _Account:
    """Calls to the X API as one account."""

    def __init__(self, conn: XConnection, context: ActionContext, http: httpx.AsyncClient) -> None:
        self.conn = conn
        self.http = http
        self.auth: httpx.Auth | None = None
        self.headers: dict[str, str] = {}
        if conn.oauth1 is not None:
            self.auth = _OAuth1(conn.oauth1, context)
        else:
            assert conn.bearer is not None
            self.headers = {"Authorization": f"Bearer {context.secret(conn.bearer)}"}

    async def call(
        self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = await _http.send(
            self.http,
            method,
            f"{self.conn.api_url.rstrip('/')}/{path.lstrip('/')}",
            provider="X",
            idempotent=method == "GET",
            describe=_describe,
            classify=_classify,
            headers=self.headers,
            auth=self.auth if self.auth is not None else httpx.USE_CLIENT_DEFAULT,
            params=query,
            json=body,
        )
        return _http.json_object(response, "X", changed=None if method != "GET" else False)

    async def user_id(self) -> str:
        if self.conn.user_id:
            return self.conn.user_id
        me = await self.call("GET", "users/me")
        return str((me.get("data") or {}).get("id"))


class _Duplicate(ActionFailed):
    """X refused the text as one the account has just posted."""


async def post(params: XPost, context: ActionContext, *, client: httpx.AsyncClient | None = None) -> Posted:
    return await _create(params, None, context, client)


async def reply(params: XReply, context: ActionContext, *, client: httpx.AsyncClient | None = None) -> Posted:
    return await _create(params, params.reply_to, context, client)


async def _create(
    params: XPost, reply_to: str | None, context: ActionContext, client: httpx.AsyncClient | None
) -> Posted:
    conn = account(context, XConnection, params.connection)
    to = f"x:{reply_to}" if reply_to else "x"
    if conn is None:
        return await to_outbox_instead(context, "X", to, params.text)
    body: dict[str, Any] = {"text": params.text}
    if reply_to:
        body["reply"] = {"in_reply_to_tweet_id": reply_to}
    async with http_client(client, conn.timeout) as http:
        x = _Account(conn, context, http)
        try:
            answer = await x.call("POST", "tweets", body=body)
        except _Duplicate as refusal:
            found = await _find(x, params.text, reply_to)
            if found is None:
                refusal.todo = "X has this text from the account already: change a word, or find the post"
                raise
            return _posted(to, found, reconciled=True)
    data = answer.get("data") or {}
    return _posted(to, str(data.get("id") or ""))


async def reconcile(params: XPost, context: ActionContext) -> Posted | None:
    """The account's post of the last day with this text (and this reply target), if any."""
    conn = account(context, XConnection, params.connection)
    if conn is None:
        return None
    reply_to = getattr(params, "reply_to", None)
    async with http_client(None, conn.timeout) as http:
        found = await _find(_Account(conn, context, http), params.text, reply_to)
    return None if found is None else _posted(f"x:{reply_to}" if reply_to else "x", found, reconciled=True)


async def _find(x: _Account, text: str, reply_to: str | None) -> str | None:
    since = datetime.fromtimestamp(time.time() - LOOK_BACK_HOURS * 3600, UTC)
    timeline = await x.call(
        "GET",
        f"users/{await x.user_id()}/tweets",
        query={"max_results": _LOOK_BACK, "tweet.fields": "created_at,referenced_tweets",
               "start_time": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "exclude": "retweets"},
    )
    for tweet in timeline.get("data") or []:
        if not isinstance(tweet, dict) or not same_text(text, tweet.get("text")):
            continue
        answered = {r.get("id") for r in tweet.get("referenced_tweets") or [] if r.get("type") == "replied_to"}
        if reply_to is None and not answered or reply_to in answered:
            return str(tweet.get("id"))
    return None


def _posted(to: str, post_id: str, *, reconciled: bool = False) -> Posted:
    return Posted(
        delivered_via="x",
        to=to,
        id=post_id or None,
        url=f"https://x.com/i/web/status/{post_id}" if post_id else None,
        reconciled=reconciled,
    )


def _describe(response: httpx.Response) -> str:
    """X's problem (``title: detail``) and its ``errors[].message``, scrubbed of secrets."""
    try:
        problem = response.json()
    except ValueError:
        return REDACTOR.text(response.text[:300]) or response.reason_phrase
    if not isinstance(problem, dict):
        return REDACTOR.text(response.text[:300])
    parts = [str(problem[k]) for k in ("title", "detail") if problem.get(k)]
    parts += [str(e.get("message")) for e in problem.get("errors") or [] if isinstance(e, dict) and e.get("message")]
    return REDACTOR.text(": ".join(dict.fromkeys(parts)) or response.text[:300])


def _classify(response: httpx.Response, message: str) -> ActionFailed | None:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    problem = problem if isinstance(problem, dict) else {}
    kind = str(problem.get("type") or "")
    if response.status_code == 429:
        if kind.endswith("/usage-capped"):
            return ActionFailed(message, changed=False,
                                todo="the X app's post cap for this period is spent: raise the plan or wait")
        wait = _until_reset(response)
        if wait is not None and wait > LONGEST_WAIT:
            minutes = max(1, round(wait / 60))
            return ActionFailed(f"{message} (the limit resets in {minutes} minutes)", changed=False,
                                todo=f"run the step again in {minutes} minutes, when X's rate limit resets")
        return ActionFailed(message, retryable=True, changed=False, retry_after=wait)
    if response.status_code == 403 and "duplicate" in message.lower():
        return _Duplicate(message, changed=False)
    if response.status_code == 401:
        return ActionFailed(message, changed=False,
                            todo="check the X connection's keys or token (and that the app may write)")
    return None


def _until_reset(response: httpx.Response) -> float | None:
    asked = _http.retry_after(response)
    if asked is not None:
        return asked
    try:
        return max(0.0, float(response.headers.get("x-rate-limit-reset", "")) - time.time())
    except ValueError:
        return None


ACTIONS = (
    ActionSpec(
        name="x.post",
        params=XPost,
        run=post,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Publish a post on X (API v2); to the outbox when no X account is configured.",
        message_fields=("text",),
        reconcile=reconcile,
    ),
    ActionSpec(
        name="x.reply",
        params=XReply,
        run=reply,
        risk=Risk.NOTIFY,
        drill=DrillBehaviour.RECORD,
        summary="Reply to a post on X (API v2); to the outbox when no X account is configured.",
        message_fields=("text",),
        reconcile=reconcile,
    ),
)
