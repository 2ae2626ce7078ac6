"""Meta's Graph API, as Facebook Pages, Instagram and the WhatsApp Cloud API speak it.

Every request carries ``Authorization: Bearer <access token>`` (never the token in the URL, where
proxies and logs keep it) and, when the connection gives the app secret, ``appsecret_proof``
(HMAC-SHA256 of the token with the app secret), which apps that "require app secret" insist on.

Graph answers errors as ``{"error": {"message", "type", "code", "error_subcode", "error_data",
"error_user_msg", "fbtrace_id"}}``, and its status code says less than `code` does: a rate limit
is often HTTP 400. `classify` reads the code:

* rate limits (4 app, 17 user, 32 Page, 613 custom, 80001-80014 business use case, 130429
  WhatsApp throughput, 131056 WhatsApp pair rate) changed nothing and are waited out: for as long as
  ``Retry-After`` or the ``X-Business-Use-Case-Usage`` header's ``estimated_time_to_regain_access``
  (minutes) says, up to a minute; a longer wait fails the step now, saying when to try again;
* 1 and 2 (unknown, service) are passing troubles that may have acted: the ledger decides;
* 0, 102 and 190 (the token), 3, 10 and 200-299 (permissions) and 368 (blocked for policy) are
  refusals that say what a person must fix; other codes are refusals with Graph's own message.

Whatever Graph says is scrubbed of every secret Siaga holds before it reaches a message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import Field

from siaga.actions import ActionContext, ActionFailed, Connection
from siaga.secrets import REDACTOR

from . import _http

__all__ = ["GRAPH_URL", "Graph", "GraphConnection", "graph_error"]

GRAPH_URL = "https://graph.facebook.com/v23.0"

RATE_LIMITED = frozenset({4, 17, 32, 613, 130429, 131056, *range(80001, 80015)})
PASSING = frozenset({1, 2})
TOKEN = frozenset({0, 102, 190})
PERMISSION = frozenset({3, 10, *range(200, 300)})
POLICY = frozenset({368})
LONGEST_WAIT = 60.0
"""Seconds a step waits out a rate limit; a longer one fails it now, saying when to try again."""

_SECRET = r"^secret://"


class GraphConnection(Connection):
    """What every Graph API connection has: a token, maybe the app secret, where Graph is."""

    access_token: str = Field(pattern=_SECRET, description="secret://NAME of the access token.")
    app_secret: str | None = Field(
        default=None,
        pattern=_SECRET,
        description="secret://NAME of the app secret: sends appsecret_proof with every call.",
    )
    graph_url: str = Field(
        default=GRAPH_URL,
        pattern=r"^https?://",
        description="The Graph API with its version (tests point it at loopback).",
    )
    timeout: float = Field(default=15.0, gt=0, description="Seconds to wait for Graph.")


class Graph:
    """Calls to the Graph API through one connection, as `provider` (Facebook, Instagram, WhatsApp)."""

    def __init__(
        self, conn: GraphConnection, context: ActionContext, http: httpx.AsyncClient, provider: str
    ) -> None:
        self.conn = conn
        self.http = http
        self.provider = provider
        token = context.secret(conn.access_token)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.proof: dict[str, str] = {}
        if conn.app_secret is not None:
            secret = context.secret(conn.app_secret)
            proof = hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            self.proof = {"appsecret_proof": proof}

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON object Graph answers; ActionFailed as `classify` says."""
        response = await _http.send(
            self.http,
            method,
            f"{self.conn.graph_url.rstrip('/')}/{path.lstrip('/')}",
            provider=self.provider,
            idempotent=method == "GET",
            describe=describe,
            classify=classify,
            headers=self.headers,
            params={**(query or {}), **self.proof},
            json=body,
        )
        return _http.json_object(response, self.provider, changed=None if method != "GET" else False)


def graph_error(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a Graph error response ({} when it has none)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}


def describe(response: httpx.Response) -> str:
    """Graph's error as one line: ``(#code) message: details [fbtrace_id]``, scrubbed of secrets."""
    error = graph_error(response)
    if not error:
        return REDACTOR.text(response.text[:300]) or response.reason_phrase
    text = f"(#{error.get('code')}) {error.get('message') or error.get('type') or 'error'}"
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    for extra in (details, error.get("error_user_msg")):
        if isinstance(extra, str) and extra and extra not in text:
            text += f": {extra}"
    if error.get("fbtrace_id"):
        text += f" [fbtrace_id {error['fbtrace_id']}]"
    return REDACTOR.text(text)


def classify(response: httpx.Response, message: str) -> ActionFailed | None:
    """The ActionFailed Graph's error code calls for (see the module's docstring)."""
    code = graph_error(response).get("code")
    if not isinstance(code, int):
        return None
    if code in RATE_LIMITED:
        wait = _regain_access(response)
        if wait is not None and wait > LONGEST_WAIT:
            return ActionFailed(
                f"{message} (rate limited for about {round(wait / 60)} more minutes)",
                retryable=False,
                changed=False,
                todo=f"run the step again in {round(wait / 60)} minutes, when the rate limit lifts",
            )
        return ActionFailed(message, retryable=True, changed=False, retry_after=wait)
    if code in PASSING:
        return ActionFailed(message, retryable=True, changed=False if response.status_code == 503 else None)
    if code in TOKEN:
        todo = "renew the access token (a long-lived Page or system-user token) and run the step again"
    elif code in PERMISSION:
        todo = "grant the app the permission Graph names above and run the step again"
    elif code in POLICY:
        todo = "the account is blocked for a policy violation: resolve it in Meta's Business Support"
    else:
        return None
    return ActionFailed(message, retryable=False, changed=False, todo=todo)


def _regain_access(response: httpx.Response) -> float | None:
    """Seconds until Graph lets us call again: ``Retry-After``, else the longest
    ``estimated_time_to_regain_access`` (minutes) of ``X-Business-Use-Case-Usage``."""
    asked = _http.retry_after(response)
    if asked is not None:
        return asked
    try:
        usage = json.loads(response.headers.get("X-Business-Use-Case-Usage", ""))
    except ValueError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (usage.values() if isinstance(usage, dict) else [])
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    ]
    waits = [float(m) * 60 for m in minutes if isinstance(m, int | float) and m > 0]
    return max(waits) if waits else None
