"""The receiver's part for what goes quiet: ``POST /heartbeats/{name}``, and the watcher that runs
beside the worker (heartbeats gone quiet, maintenance windows begun or ended).

`watch_router` is an `APIRouter` that `create_app` includes; its lifespan runs the watcher, which
calls `siaga.incidents.watching.watch_once` every `WATCH_SECONDS` and wakes the worker's run
starter when an incident opened or resolved.

``POST /heartbeats/{name}``: a sign of life for the runbooks' ``source: heartbeat`` triggers with
``match: {name: <name>}``. Authenticated by ``Authorization: Bearer <token>``, the token from
``SIAGA_HEARTBEAT_TOKEN`` (a comma-separated list: any one is accepted, for rotation). The body is
empty or a JSON object ``{"labels": {...}}`` (strings, numbers or booleans, taken as text) for
triggers that match or group on more labels. Answers: 202 once the heartbeat is kept in the store;
401 a missing or wrong token (WWW-Authenticate: Bearer); 404 heartbeats not served (no token
configured) or a name no runbook expects (nothing is kept); 400 a body that is not JSON; 413 a
body over `MAX_BODY`; 422 a body or name not as described, with the reason; 503 a store that cannot
keep it (Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError

from siaga.incidents.heartbeats import arm, expected, note_named
from siaga.incidents.watching import watch_once
from siaga.runbook import Runbook
from siaga.runbook.models import HEARTBEAT_NAME, HEARTBEAT_SOURCE

from .body import BadPayload, NotJson, decode

__all__ = ["MAX_BODY", "TOKEN_VARIABLE", "WATCH_SECONDS", "watch_router"]

log = logging.getLogger("siaga.receiver")

WATCH_SECONDS = 1.0
"""How often the watcher looks: a heartbeat is found quiet at most this long after it is due."""
MAX_BODY = 64 * 1024
MAX_LABELS = 64
TOKEN_VARIABLE = "SIAGA_HEARTBEAT_TOKEN"


def _authenticate(request: Request, tokens: list[str]) -> None:
    if not tokens:
        raise HTTPException(404, f"heartbeats are not served: set {TOKEN_VARIABLE}")
    scheme, _, given = (request.headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(401, "a heartbeat needs Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
    proven = False
    for token in tokens:  # every one compared, in constant time each
        proven |= hmac.compare_digest(given.strip().encode(), token.encode())
    if not proven:
        raise HTTPException(401, "wrong bearer token", {"WWW-Authenticate": "Bearer"})


def _labels(body: bytes) -> dict[str, str]:
    """The labels of a heartbeat's body: empty, or ``{"labels": {...}}``."""
    if not body.strip():
        return {}
    try:
        payload = decode(body)  # the receiver's one rule: UTF-8 JSON, bounded nesting, keepable text
    except NotJson as exc:
        raise HTTPException(400, f"the body is not JSON: {exc}") from None
    except BadPayload as exc:
        raise HTTPException(422, str(exc)) from None
    if not isinstance(payload, dict) or set(payload) - {"labels"}:
        raise HTTPException(422, 'the body is empty or {"labels": {...}}')
    labels = payload.get("labels") or {}
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise HTTPException(422, f"labels: an object of at most {MAX_LABELS} labels")
    found = {}
    for key, value in labels.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int | float) or (isinstance(value, float) and not math.isfinite(value)):
            raise HTTPException(422, f"labels.{ascii(key)[1:-1]}: a string, number or boolean")
        found[key] = str(value)
    return found


def watch_router(
    runbooks: Mapping[str, Runbook],
    engine: Engine,
    heartbeat_tokens: Sequence[SecretStr],
    wake: Callable[[], None] | None = None,
    notify: Callable[[str], None] | None = None,
    every: float = WATCH_SECONDS,
) -> APIRouter:
    """The heartbeat route (proven by one of `heartbeat_tokens`: `Settings.heartbeat_tokens`) and,
    in its lifespan, the watcher; `wake` is called after a pass that opened or resolved an incident
    (the worker's run starter), `notify` told each line of news."""
    tokens = [token.get_secret_value() for token in heartbeat_tokens]
    names = {hb.trigger.match.get("name") for hb in expected(runbooks).values() if hb.trigger.source == HEARTBEAT_SOURCE}
    if names and not tokens:  # every post refused: those heartbeats go quiet and page for nothing
        log.warning("runbooks expect posted heartbeats (%s) but %s is not set: /heartbeats refuses every post",
                    ", ".join(sorted(str(n) for n in names)), TOKEN_VARIABLE)

    def tell(line: str) -> None:
        if notify:
            notify(line)
        else:
            log.info(line)

    async def watch() -> None:
        since = datetime.now(UTC)
        armed = False
        while True:
            try:
                if not armed:
                    await asyncio.to_thread(arm, engine, runbooks, since)
                    armed = True
                watched = await asyncio.to_thread(watch_once, engine, runbooks, datetime.now(UTC), since)
            except Exception:  # the store is down or locked: the next pass tries again
                log.exception("the watcher's pass failed (heartbeats, maintenance windows)")
            else:
                for line in watched.said:
                    tell(line)
                if (watched.opened or watched.resolved) and wake:
                    wake()
            await asyncio.sleep(every)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(watch(), name="siaga-receiver-watcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    router = APIRouter(lifespan=lifespan)

    @router.post("/heartbeats/{name}", status_code=202)
    async def heartbeat(name: str, request: Request) -> JSONResponse:
        _authenticate(request, tokens)
        if not re.fullmatch(HEARTBEAT_NAME, name):
            raise HTTPException(422, "a heartbeat name is lowercase letters, digits, `.`, `-` and `_`")
        if name not in names:
            raise HTTPException(404, f"no runbook expects the heartbeat `{name}`")
        body = b""
        async for chunk in request.stream():  # read no further than the limit, whatever Content-Length says
            body += chunk
            if len(body) > MAX_BODY:
                raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
        labels = _labels(body)
        try:
            kept = await asyncio.to_thread(note_named, engine, runbooks, name, labels, datetime.now(UTC))
        except DatabaseError as exc:
            log.error("a heartbeat %s was refused: the store could not keep it: %s", name, exc)
            raise HTTPException(503, "the receiver cannot keep heartbeats right now; retry", {"Retry-After": "5"}) from None
        if not kept:
            raise HTTPException(404, f"no runbook's `{name}` heartbeat matches these labels: {sorted(labels)}")
        return JSONResponse({"kept": kept}, status_code=202)

    return router
