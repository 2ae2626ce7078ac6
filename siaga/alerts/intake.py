"""The receiver's way in for webhooks (``POST /hooks/{source}``): read the body within its bound,
prove it (`siaga.alerts.signatures.verify`, which claims its replay key), decode and parse it, keep
it in the inbox and hand it to the worker, answering 202; or refuse it with the reason, releasing
the replay key so the sender's corrected or repeated delivery is heard. SNS subscription messages
are confirmed here too. See `siaga.alerts.receiver` for the answers and what they mean."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError

from siaga.settings import HOOK_SECRET_PREFIX

from . import inbox
from .body import BadPayload, NotJson, decode
from .parsers import parse, sns_subscribe_url
from .signatures import (
    AuthError,
    ReplayGuard,
    SourceAuth,
    Unauthenticated,
    check_sns_url,
    replay_key,
    verify,
)
from .sns import CertificateCache, confirm_subscription, record_subscription
from .worker import Batch, Worker

__all__ = ["INLINE_DECODE", "MAX_BODY", "Intake"]

log = logging.getLogger("siaga.receiver")

MAX_BODY = 10 * 1024 * 1024
INLINE_DECODE = 256 * 1024
"""A body bigger than this is decoded in a thread, so the event loop keeps answering."""


@dataclass(frozen=True)
class Intake:
    """The hook endpoint over the sources served, the worker and the store."""

    sources: Mapping[str, SourceAuth]
    worker: Worker
    engine: Engine
    replay_guard: ReplayGuard
    certificates: CertificateCache
    sns_http: httpx.Client

    async def hook(self, source: str, request: Request) -> JSONResponse:
        """A webhook of `source`: proven, then taken in (or refused, its replay key released)."""
        auth = self.sources.get(source)
        if auth is None:
            if source == "cloudwatch":
                raise HTTPException(404, "SNS is not configured (set SIAGA_SNS_TOPIC_ARNS)")
            raise HTTPException(404, f"no source `{source}` is configured (set {HOOK_SECRET_PREFIX}{source.upper()})")
        body = await read_body(request)
        await self._prove(source, request, body, auth)
        key = replay_key(source, request.headers, body, auth)  # claimed by `verify`
        try:
            return await self._take_in(source, body, auth)
        except BaseException:
            if key:  # not taken in: the sender's retry must not count as a replay
                with contextlib.suppress(DatabaseError):
                    await asyncio.to_thread(self.replay_guard.release, key)
            raise

    async def _prove(self, source: str, request: Request, body: bytes, auth: SourceAuth) -> None:
        """Verify the delivery (and claim its replay key), or refuse it."""
        try:
            # In a thread: the replay guard writes to the store (before the worker's next piece),
            # and SNS fetches its certificate.
            async with self.worker.intake():
                await asyncio.to_thread(
                    verify, source, request.headers, body, auth, datetime.now(UTC), self.certificates,
                    replay_guard=self.replay_guard,
                )
        except AuthError as exc:
            challenge = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
            raise HTTPException(exc.status_code, exc.reason, challenge) from None
        except BadPayload as exc:  # an SNS message that is malformed rather than unproven
            raise HTTPException(422, str(exc)) from None
        except DatabaseError as exc:  # the replay guard could not remember it: nothing was claimed
            log.error("a %s webhook was refused: the store could not remember its delivery: %s", source, exc)
            busy("the receiver cannot store webhooks right now; retry")

    async def _take_in(self, source: str, body: bytes, auth: SourceAuth) -> JSONResponse:
        """Decode, parse and keep a proven webhook (202), or say why not."""
        payload = await _decoded(body)
        if source == "cloudwatch" and payload.get("Type") != "Notification":
            return await self._sns_subscription(payload, auth)
        try:
            alerts = parse(source, payload)
        except BadPayload as exc:
            raise HTTPException(422, str(exc)) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HTTPException(422, f"not a {source} payload: {exc}") from None
        received_at = datetime.now(UTC)
        if self.worker.full():
            busy("the receiver is busy; retry")
        try:
            async with self.worker.intake():  # before the worker's next piece
                inbox_id = await asyncio.to_thread(inbox.put, self.engine, source, body, received_at)
        except DatabaseError as exc:
            log.error("a %s webhook was refused: the inbox could not keep it: %s", source, exc)
            busy("the receiver cannot store webhooks right now; retry")
        try:
            self.worker.submit(Batch(source, alerts, received_at, inbox_id))
        except asyncio.QueueFull:  # filled while the inbox row was written
            with contextlib.suppress(DatabaseError):  # if it stays, the next start does it: harmless
                await asyncio.to_thread(inbox.drop, self.engine, inbox_id)
            busy("the receiver is busy; retry")
        return JSONResponse({"accepted": len(alerts)}, status_code=202)

    async def _sns_subscription(self, payload: dict[str, Any], auth: SourceAuth) -> JSONResponse:
        """A verified SubscriptionConfirmation (visit its SubscribeURL) or UnsubscribeConfirmation.
        Anything but a confirmed, recorded subscription raises (and `hook` releases the replay key,
        so SNS's re-send is heard)."""
        topic, message_id, kind = payload["TopicArn"], payload["MessageId"], payload["Type"]
        if kind == "UnsubscribeConfirmation":
            await asyncio.to_thread(record_subscription, self.engine, topic, "unsubscribed", message_id, datetime.now(UTC))
            log.info("SNS topic %s: unsubscribed", topic)
            return JSONResponse({"unsubscribed": topic})
        try:
            url = check_sns_url(sns_subscribe_url(payload), auth, "SubscribeURL")
        except BadPayload as exc:
            raise HTTPException(422, str(exc)) from None
        except AuthError as exc:
            raise HTTPException(exc.status_code, exc.reason) from None
        try:
            await asyncio.to_thread(confirm_subscription, self.sns_http, url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise HTTPException(502, f"confirming the subscription to {topic} failed: {type(exc).__name__}") from None
        await asyncio.to_thread(record_subscription, self.engine, topic, "confirmed", message_id, datetime.now(UTC))
        log.info("SNS topic %s: subscription confirmed", topic)
        return JSONResponse({"confirmed": topic})


async def read_body(request: Request) -> bytes:
    """The body, read as it arrives and refused (413) as soon as it passes `MAX_BODY`, chunked or
    not: a sender never makes the receiver hold more than that."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
    return bytes(body)


async def _decoded(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (big ones decoded in a thread), or 400/422 saying why not."""
    try:
        payload = decode(body) if len(body) <= INLINE_DECODE else await asyncio.to_thread(decode, body)
    except NotJson as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None
    except BadPayload as exc:
        raise HTTPException(422, str(exc)) from None
    if not isinstance(payload, dict):
        raise HTTPException(422, "the body is not a JSON object")
    return payload


def busy(reason: str) -> NoReturn:
    """503: the delivery was not taken in (`Intake.hook` releases its replay key)."""
    raise HTTPException(503, reason, {"Retry-After": "5"})
