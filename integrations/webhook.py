"""`http.request`: call a webhook, optionally signed with HMAC-SHA256.

A signed request carries ``X-Siaga-Timestamp: <unix seconds>`` and
``X-Siaga-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``, the scheme most webhook
receivers (Stripe, Slack, GitHub) use, so the receiver can refuse tampered and replayed calls.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any, Literal

import httpx
from pydantic import Field

from siaga.actions import ActionContext, ActionFailed, ActionParams, ActionSpec, Risk
from siaga.runbook.durations import Duration
from siaga.secrets import SecretNotFound, resolve_secret

from ._http import http_client


class Signing(ActionParams):
    """HMAC-SHA256 signing of the request body with a secret."""

    secret: str = Field(pattern=r"^secret://", description="secret://NAME of the signing key.")
    header: str = "X-Siaga-Signature"
    timestamp_header: str = "X-Siaga-Timestamp"


class HttpRequest(ActionParams):
    """Call an HTTP endpoint (a generic webhook)."""

    url: str = Field(pattern=r"^https?://", description="The URL to call.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json", description="A JSON body.")
    body: str | None = Field(default=None, description="A raw text body (instead of json).")
    sign: Signing | None = None
    expect: list[int] = Field(default_factory=list, description="Accepted status codes; default any 2xx.")
    timeout: Duration = Field(default=timedelta(seconds=10), description="Timeout of the HTTP call.")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``sha256=<hex>`` signature of `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _payload(params: HttpRequest) -> bytes:
    if params.body is not None:
        return params.body.encode()
    if params.json_body is not None:
        return json.dumps(params.json_body, separators=(",", ":")).encode()
    return b""


async def request(
    params: HttpRequest, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    body = _payload(params)
    headers = {"Idempotency-Key": context.idempotency_key, **params.headers}
    if params.json_body is not None and params.body is None:
        headers.setdefault("Content-Type", "application/json")
    if params.sign is not None:
        try:
            secret = resolve_secret(params.sign.secret)
        except SecretNotFound as exc:
            raise ActionFailed(str(exc), todo="set the secret and retry the step") from None
        stamp = str(int(time.time()))
        headers[params.sign.timestamp_header] = stamp
        headers[params.sign.header] = signature(secret, stamp, body)
    timeout = params.timeout.total_seconds()
    async with http_client(client, timeout) as http:
        try:
            response = await http.request(params.method, params.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            # A refused connection never reached the endpoint; a timeout may have.
            reached = not isinstance(exc, httpx.ConnectError)
            raise ActionFailed(
                f"{params.method} {params.url} failed: {type(exc).__name__}: {exc}",
                retryable=True,
                changed=None if reached else False,
            ) from None
    accepted = response.status_code in params.expect if params.expect else response.is_success
    if not accepted:
        status = response.status_code
        retryable = status == 429 or status >= 500
        raise ActionFailed(
            f"{params.method} {params.url} answered {status}: {response.text[:300]}",
            retryable=retryable,
            # Refusals (4xx), rate limits and "unavailable" changed nothing; other 5xx may have.
            changed=False if status < 500 or status == 503 else None,
            retry_after=_retry_after(response),
            todo=None if retryable else "check the request and the endpoint, then run the step again",
        )
    try:
        content: Any = response.json()
    except ValueError:
        content = response.text[:2000]
    return {"status": response.status_code, "body": content}


ACTIONS = (
    ActionSpec(
        name="http.request",
        params=HttpRequest,
        run=request,
        risk=Risk.CHANGE,
        summary="Call an HTTP endpoint (generic webhook), optionally HMAC-signed.",
    ),
)
