"""HTTP calls to providers: retries where they are safe, and errors that say what happened.

* 429 (and whatever else a provider answers when it throttles, `throttled`) and 503 changed
  nothing: they are retried, honouring ``Retry-After`` (seconds or an HTTP date);
* other 5xx and timeouts may have acted: retried only when the provider deduplicates by our
  idempotency key (`idempotent=True`), else left to the side-effect ledger;
* connection refused never reached the provider: retried with backoff and jitter;
* any other 4xx fails at once with the provider's own message.

A provider whose error *body* says more than its status (Meta's Graph API answers a rate limit as
400 with ``{"error": {"code": 4}}``) gives `classify`, which turns such a response into the
ActionFailed to raise; the rules above then decide whether it is tried again.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

import certifi
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from siaga.actions import ActionFailed
from siaga.canonical import as_utc
from siaga.secrets import REDACTOR

Describe = Callable[[httpx.Response], str]
"""Turns a provider's error response into its message."""
Classify = Callable[[httpx.Response, str], ActionFailed | None]
"""Turns a provider's error response (and the message made of it) into the ActionFailed to raise,
or None to leave it to the status code."""

_backoff = wait_random_exponential(multiplier=0.5, max=20)


def _text(response: httpx.Response) -> str:
    return response.text[:500]


def message_in(*fields: str) -> Describe:
    """The describer of a provider whose error is a JSON object with its message in one of
    `fields` (the first given wins; a list is joined, any other value shown as JSON), else its
    body's text; scrubbed of secrets (a provider may quote our credentials back)."""

    def describe(response: httpx.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            for field in fields:
                value = data.get(field)
                if isinstance(value, str) and value:
                    return REDACTOR.text(value)
                if isinstance(value, list) and value:
                    return REDACTOR.text("; ".join(map(str, value)))
                if value:
                    return REDACTOR.text(json.dumps(value)[:300])
        return REDACTOR.text(response.text[:300]) or response.reason_phrase

    return describe


def retry_after(response: httpx.Response) -> float | None:
    """Seconds a provider asks us to wait: its ``Retry-After`` (seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (as_utc(when) - datetime.now(UTC)).total_seconds())


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    idempotent: bool = False,
    attempts: int = 4,
    max_wait: float = 60.0,
    describe: Describe = _text,
    shown_url: str | None = None,
    throttled: Collection[int] = (429,),
    classify: Classify | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """Send the request; return a successful response or raise ActionFailed. Error messages name
    the URL as `shown_url` where given: say "the Slack webhook" when the URL itself is a secret.
    `throttled` are the statuses the provider answers when it rate-limits (Statuspage also 420);
    `classify` reads what a provider's error body says (see the module's docstring)."""

    def transient(error: BaseException) -> bool:
        return isinstance(error, ActionFailed) and error.retryable and (error.changed is False or idempotent)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = getattr(error, "retry_after", None)
        return min(max_wait, asked if asked is not None else _backoff(state))

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts), wait=wait, retry=retry_if_exception(transient), reraise=True
    )
    async for attempt in retrying:
        with attempt:
            return await _once(
                client, method, url, provider, describe, shown_url or url, throttled, classify, **kwargs
            )
    raise AssertionError("unreachable")  # pragma: no cover


async def _once(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    provider: str,
    describe: Describe,
    shown: str,
    throttled: Collection[int],
    classify: Classify | None,
    **kwargs: Any,
) -> httpx.Response:
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.ConnectError as exc:
        raise ActionFailed(f"{provider}: cannot connect to {shown}: {exc}", retryable=True, changed=False) from None
    except httpx.TransportError as exc:
        raise ActionFailed(
            f"{provider}: {method} {shown} failed: {type(exc).__name__}: {exc}", retryable=True, changed=None
        ) from None
    if response.is_success:
        return response
    status = response.status_code
    message = f"{provider} answered {status} to {method} {shown}: {describe(response)}"
    classified = classify(response, message) if classify is not None else None
    if classified is not None:
        raise classified
    if status in throttled or status == 503:
        raise ActionFailed(message, retryable=True, changed=False, retry_after=retry_after(response))
    if status >= 500:
        raise ActionFailed(message, retryable=True, changed=None)
    raise ActionFailed(
        message, retryable=False, changed=False,
        todo=f"read {provider}'s message above, fix the request or the connection, and run the step again",
    )


def json_object(response: httpx.Response, provider: str, *, changed: bool | None) -> dict[str, Any]:
    """The JSON object a provider answered; ActionFailed (scrubbed of secrets) when it is not one.
    `changed` says whether the call may have acted all the same."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ActionFailed(
            f"{provider} answered {response.status_code} with a body that is not its JSON: "
            f"{REDACTOR.text(response.text[:200])}",
            changed=changed,
        )
    return answer


@cache
def _verified() -> ssl.SSLContext:
    """httpx's default certificate check, built once: building it takes ~30 ms of the event loop,
    which a fanout would otherwise spend once per channel, one after the other."""
    return ssl.create_default_context(cafile=certifi.where())


def warm_tls() -> None:
    """Build the certificate check now: in a process that forks runs (the fast lane's
    forkserver), so that no run builds it again."""
    _verified()


@asynccontextmanager
async def http_client(
    given: httpx.AsyncClient | None, timeout: float
) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client (left open), else a client of our own for this call."""
    if given is not None:
        yield given
        return
    async with httpx.AsyncClient(timeout=timeout, verify=_verified()) as own:
        yield own
