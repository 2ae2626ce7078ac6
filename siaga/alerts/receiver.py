"""The alert receiver: a FastAPI app that takes webhooks, opens incidents and starts runbooks once.

Endpoints:

* ``POST /hooks/{source}``: a webhook of `source` (alertmanager, grafana, pagerduty, or a generic
  signed source such as ``social``), proven by `siaga.alerts.signatures.verify` (deliveries are
  remembered in the store, so a replayed one is refused: `siaga.alerts.replay`).
* ``GET /healthz``: ok, the worker's queue (``queued``, ``busy``, ``processed``), and ``failed``:
  how many webhooks taken in were given up on and how many of their alerts were not recorded
  (counts only); open, and shows no alert data.
* ``GET /metrics``: the same as Prometheus text (`siaga.alerts.metrics`), behind the read API's token.
* ``POST /heartbeats/{name}``: a sign of life for heartbeat triggers (`siaga.alerts.watch`, which
  also runs the watcher: heartbeats gone quiet, maintenance windows begun and ended).
* ``GET /incidents`` (``?state=open|resolved``): open incidents ranked (severity, priority, age;
  each with its ``rank``), then resolved ones newest first; ``GET /incidents/{id}`` (with its alerts).
  These and the documents (``/openapi.json``, ``/docs``, ``/redoc``) answer only to the token in
  ``SIAGA_API_TOKEN`` (`siaga.alerts.read_access`), and 404 while it is not set.

What is taken in is bounded before anything else reads it: the body is read as it arrives and
refused at `MAX_BODY` (chunked or not); it must be UTF-8 JSON nested at most
`siaga.alerts.body.MAX_DEPTH` levels, without text or numbers a store cannot keep as sent (half a
surrogate pair, NUL, NaN or Infinity: `siaga.alerts.body`). A proven delivery that is then refused
(any 4xx or 5xx) releases its replay key, so the sender's corrected or repeated delivery is heard.

A webhook is answered fast (202) and worked on after: Alertmanager gives a webhook 10 s and then
re-sends the whole batch. The request only authenticates, parses and writes the raw body to the
store's inbox (`siaga.alerts.inbox`) before it is answered; the batch then goes to the worker
(`siaga.alerts.worker`), which records it in pieces of bounded transactions, one source's lane
after another's, so a storm from one source holds up neither the answers to other webhooks nor
their incidents; nothing answered 202 is dropped: it is recorded, or given up on after a few tries
with its reason, counted in ``/healthz``, ``/metrics`` and ``siaga incidents``. Beside it the
worker starts each new incident's run once. A webhook queued but not yet recorded when the process
dies stays unfinished in the inbox, and the next receiver to start takes it up (recording is
idempotent, so twice is safe).

Answers: 202 accepted (200 for an SNS subscription message); 401 a missing or wrong credential
(nothing recorded); 400 a body that is not UTF-8 JSON; 403 proven but refused (a replay, a topic or
host not allowed); 404 a source not configured; 413 a body over 10 MiB; 422 a payload that is not
what the source sends or that no store keeps, with the reason (always valid UTF-8, quoting broken
text escaped); 502 an SNS SubscribeURL that did not confirm; 503 a full queue or a store that
cannot keep the webhook (with Retry-After). Never 500 on bad input.

Configuration, from the environment:

* ``SIAGA_ALERTMANAGER_TOKEN``: the bearer token Alertmanager sends (its webhook receiver's
  ``http_config: {authorization: {credentials: ...}}``). Without it, /hooks/alertmanager refuses
  every request.
* ``SIAGA_GRAFANA_TOKEN`` and/or ``SIAGA_GRAFANA_HMAC_SECRET`` (and
  ``SIAGA_GRAFANA_TIMESTAMP_HEADER`` if the contact point signs a timestamp).
* ``SIAGA_PAGERDUTY_HMAC_SECRET``: the webhook subscription's signing secret.
* ``SIAGA_SNS_TOPIC_ARNS``: the SNS topics whose messages are taken in (comma-separated); without
  it /hooks/cloudwatch answers 404. ``SIAGA_SNS_CERT_HOSTS`` replaces the hosts certificates and
  SubscribeURLs may be on (default ``sns.<region>.amazonaws.com``; ``host:port`` allows a port).
* ``SIAGA_HEARTBEAT_TOKEN``: the bearer token(s) of ``POST /heartbeats/{name}`` (`siaga.alerts.watch`).
* ``SIAGA_HOOK_SECRET_<NAME>``: serves the generic source ``<name>`` (lowercased) at
  ``/hooks/<name>``, signed ``X-Siaga-Timestamp`` / ``X-Siaga-Signature: sha256=...``.
* ``SIAGA_API_TOKEN``: opens the read API and the documents (bearer, or Basic with the token as
  the password for a browser).
* Secrets may be comma-separated lists (rotation: any one is accepted).
* ``SIAGA_RECEIVER_HOST`` / ``SIAGA_RECEIVER_PORT``: where `siaga receiver` and `siaga up` listen
  (default 127.0.0.1:8787).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError
from starlette.exceptions import HTTPException as StarletteHTTPException

from siaga.incidents.views import get_incident, list_incidents
from siaga.runbook import Runbook
from siaga.runbook.models import HEARTBEAT_SOURCE

from . import inbox
from .body import BadPayload, NotJson, decode, printable
from .metrics import METRICS_CONTENT_TYPE, metrics_text
from .parsers import SOURCES, parse, sns_subscribe_url
from .read_access import ReadAccess
from .replay import StoreReplayGuard
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
from .watch import watch_router
from .worker import Batch, StartRun, Worker

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Batch", "ReceiverConfig", "Worker", "create_app"]

log = logging.getLogger("siaga.receiver")
log.propagate = False  # the `siaga` logger may carry Prefect's API handler, for flow runs only
if not log.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s siaga.receiver: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
MAX_BODY = 10 * 1024 * 1024
INLINE_DECODE = 256 * 1024
"""A body bigger than this is decoded in a thread, so the event loop keeps answering."""

GENERIC_PREFIX = "SIAGA_HOOK_SECRET_"
BUILT_IN = frozenset(SOURCES) | {HEARTBEAT_SOURCE}
"""Source names a generic signed source may not take (``heartbeat``: the alerts quiet heartbeats raise)."""


@dataclass(frozen=True)
class ReceiverConfig:
    sources: Mapping[str, SourceAuth] = field(default_factory=dict)
    """How each served source proves its webhooks; a source not here answers 501."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_tokens: tuple[SecretStr, ...] = ()
    """Tokens that open the read API and its documents (`siaga.alerts.read_access`); none: closed."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReceiverConfig:
        env = os.environ if environ is None else environ

        def secrets(name: str) -> list[str]:
            return [part.strip() for part in (env.get(name) or "").split(",") if part.strip()]

        sources = {
            "alertmanager": SourceAuth(bearer_token=env.get("SIAGA_ALERTMANAGER_TOKEN") or None),
            "grafana": SourceAuth(
                bearer_token=env.get("SIAGA_GRAFANA_TOKEN") or None,
                hmac_secrets=secrets("SIAGA_GRAFANA_HMAC_SECRET"),
                timestamp_header=env.get("SIAGA_GRAFANA_TIMESTAMP_HEADER") or None,
            ),
            "pagerduty": SourceAuth(hmac_secrets=secrets("SIAGA_PAGERDUTY_HMAC_SECRET")),
        }
        if secrets("SIAGA_SNS_TOPIC_ARNS"):
            sources["cloudwatch"] = SourceAuth(
                allowed_topic_arns=secrets("SIAGA_SNS_TOPIC_ARNS"),
                allowed_cert_hosts=secrets("SIAGA_SNS_CERT_HOSTS") or None,
            )
        for key in env:
            if key.startswith(GENERIC_PREFIX) and len(key) > len(GENERIC_PREFIX):
                name = key.removeprefix(GENERIC_PREFIX).lower()
                if name not in sources and name not in BUILT_IN:
                    sources[name] = SourceAuth(hmac_secrets=secrets(key))
        return cls(
            sources=sources,
            host=env.get("SIAGA_RECEIVER_HOST") or DEFAULT_HOST,
            port=int(env.get("SIAGA_RECEIVER_PORT") or DEFAULT_PORT),
            api_tokens=tuple(SecretStr(token) for token in secrets("SIAGA_API_TOKEN")),
        )

    @property
    def alertmanager_token(self) -> str | None:
        auth = self.sources.get("alertmanager")
        return auth.bearer_token.get_secret_value() if auth and auth.bearer_token else None

    def warnings(self) -> list[str]:
        """What whoever starts the receiver should hear: the credentials not set."""
        found = []
        if not self.alertmanager_token:
            found.append("SIAGA_ALERTMANAGER_TOKEN is not set: the receiver refuses every Alertmanager webhook")
        if not self.api_tokens:
            found.append("SIAGA_API_TOKEN is not set: GET /incidents and the API documents are not served")
        return found


def _prefect_session() -> contextlib.AbstractAsyncContextManager[Any]:
    """A Prefect client shared by every `get_client()` inside it (`start_incident_run`'s)."""
    from prefect.context import AsyncClientContext
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # no server: `start_incident_run` says so (no ephemeral one here)
        return contextlib.nullcontext()
    return AsyncClientContext.get_or_create()


def create_app(
    runbooks: Mapping[str, Runbook],
    config: ReceiverConfig,
    engine: Engine | None = None,
    start_run: StartRun | None = None,
    notify: Callable[[str], None] | None = None,
    replay_guard: ReplayGuard | None = None,
    sns_client: httpx.Client | None = None,
) -> FastAPI:
    """The receiver app; its lifespan runs the worker. Deliveries are remembered against replay in
    the store (`StoreReplayGuard`) unless another `replay_guard` is given. `sns_client` fetches SNS
    certificates and confirms subscriptions (default: an `httpx.Client` trusting certifi, or
    ``SSL_CERT_FILE``)."""
    if engine is None:
        from siaga.store import engine as store_engine

        engine = store_engine()
    if start_run is None:
        from siaga.flows.running import start_incident_run

        start_run = functools.partial(start_incident_run, runbooks=runbooks)  # the revisions that route
        session = _prefect_session
    else:
        session = None
    worker = Worker(runbooks, engine, start_run, notify=notify, session=session)
    if replay_guard is None:
        replay_guard = StoreReplayGuard(engine)
    own_client = sns_client is None
    sns_http = sns_client or httpx.Client(timeout=10.0, follow_redirects=False)
    certificates = CertificateCache(sns_http)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.queue = asyncio.Queue()  # bound to the serving loop (`worker.submit` bounds it)
        worker._wake = asyncio.Event()
        task = asyncio.create_task(worker.run(), name="siaga-receiver-worker")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if own_client:
                sns_http.close()

    # The documents are served below, behind the read API's token (FastAPI's own are open).
    app = FastAPI(title="Siaga alert receiver", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(watch_router(runbooks, engine, wake=worker.wake, notify=notify))
    app.state.worker = worker
    app.state.sns_certificates = certificates

    @app.exception_handler(StarletteHTTPException)
    async def readable(request: Request, exc: StarletteHTTPException) -> Response:
        """Every refusal's reason as text any client can read: one quoting a sender's broken text
        (half an emoji) would otherwise fail to encode, and the refusal become a 500."""
        if isinstance(exc.detail, str):
            exc = StarletteHTTPException(exc.status_code, printable(exc.detail), exc.headers)
        return await http_exception_handler(request, exc)

    async def read_body(request: Request) -> bytes:
        """The body, read as it arrives and refused (413) as soon as it passes `MAX_BODY`, chunked
        or not: a sender never makes the receiver hold more than that."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
        return bytes(body)

    reader = ReadAccess.of(config.api_tokens)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        lost = await asyncio.to_thread(inbox.losses, engine)
        return {"ok": True, "queued": worker.queued, "busy": worker.busy, "processed": worker.processed,
                "failed": {"webhooks": lost.webhooks, "alerts": lost.alerts}}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Security(reader.api)])
    async def metrics() -> PlainTextResponse:
        lost = await asyncio.to_thread(inbox.losses, engine)
        return PlainTextResponse(metrics_text(worker, lost), media_type=METRICS_CONTENT_TYPE)

    @app.post(
        "/hooks/{source}",
        status_code=202,
        # The body is read raw (signatures cover its exact bytes); say what it is for the docs.
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "description": "the source's own webhook payload (Alertmanager, Grafana, "
            "SNS, PagerDuty, or a generic {\"alerts\": [...]})"}}}}},
    )
    async def hook(source: str, request: Request) -> JSONResponse:
        auth = config.sources.get(source)
        if auth is None:
            if source == "cloudwatch":
                raise HTTPException(404, "SNS is not configured (set SIAGA_SNS_TOPIC_ARNS)")
            raise HTTPException(404, f"no source `{source}` is configured (set {GENERIC_PREFIX}{source.upper()})")
        body = await read_body(request)
        try:
            # In a thread: the replay guard writes to the store (before the worker's next piece),
            # and SNS fetches its certificate.
            async with worker.intake():
                await asyncio.to_thread(
                    verify, source, request.headers, body, auth, datetime.now(UTC), certificates, replay_guard=replay_guard
                )
        except AuthError as exc:
            challenge = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
            raise HTTPException(exc.status_code, exc.reason, challenge) from None
        except BadPayload as exc:  # an SNS message that is malformed rather than unproven
            raise HTTPException(422, str(exc)) from None
        except DatabaseError as exc:  # the replay guard could not remember it: nothing was claimed
            log.error("a %s webhook was refused: the store could not remember its delivery: %s", source, exc)
            busy("the receiver cannot store webhooks right now; retry")
        key = replay_key(source, request.headers, body, auth)  # claimed by `verify`
        try:
            return await take_in(source, body, auth, key)
        except BaseException:
            if key:  # not taken in: the sender's retry must not count as a replay
                with contextlib.suppress(DatabaseError):
                    await asyncio.to_thread(replay_guard.release, key)
            raise

    async def take_in(source: str, body: bytes, auth: SourceAuth, key: str | None) -> JSONResponse:
        """Decode, parse and keep a proven webhook (202), or say why not."""
        try:
            payload = decode(body) if len(body) <= INLINE_DECODE else await asyncio.to_thread(decode, body)
        except NotJson as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None
        except BadPayload as exc:
            raise HTTPException(422, str(exc)) from None
        if not isinstance(payload, dict):
            raise HTTPException(422, "the body is not a JSON object")
        if source == "cloudwatch" and payload.get("Type") != "Notification":
            return await sns_subscription(payload, auth)
        try:
            alerts = parse(source, payload)
        except BadPayload as exc:
            raise HTTPException(422, str(exc)) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HTTPException(422, f"not a {source} payload: {exc}") from None
        received_at = datetime.now(UTC)
        if worker.full():
            busy("the receiver is busy; retry")
        try:
            async with worker.intake():  # before the worker's next piece
                inbox_id = await asyncio.to_thread(inbox.put, engine, source, body, received_at)
        except DatabaseError as exc:
            log.error("a %s webhook was refused: the inbox could not keep it: %s", source, exc)
            busy("the receiver cannot store webhooks right now; retry")
        try:
            worker.submit(Batch(source, alerts, received_at, inbox_id))
        except asyncio.QueueFull:  # filled while the inbox row was written
            with contextlib.suppress(DatabaseError):  # if it stays, the next start does it: harmless
                await asyncio.to_thread(inbox.drop, engine, inbox_id)
            busy("the receiver is busy; retry")
        return JSONResponse({"accepted": len(alerts)}, status_code=202)

    def busy(reason: str) -> NoReturn:
        """503: the delivery was not taken in (`hook` releases its replay key)."""
        raise HTTPException(503, reason, {"Retry-After": "5"})

    async def sns_subscription(payload: dict[str, Any], auth: SourceAuth) -> JSONResponse:
        """A verified SubscriptionConfirmation (visit its SubscribeURL) or UnsubscribeConfirmation.
        Anything but a confirmed, recorded subscription raises (and `hook` releases the replay key,
        so SNS's re-send is heard)."""
        topic, message_id, kind = payload["TopicArn"], payload["MessageId"], payload["Type"]
        if kind == "UnsubscribeConfirmation":
            await asyncio.to_thread(record_subscription, engine, topic, "unsubscribed", message_id, datetime.now(UTC))
            log.info("SNS topic %s: unsubscribed", topic)
            return JSONResponse({"unsubscribed": topic})
        try:
            url = check_sns_url(sns_subscribe_url(payload), auth, "SubscribeURL")
        except BadPayload as exc:
            raise HTTPException(422, str(exc)) from None
        except AuthError as exc:
            raise HTTPException(exc.status_code, exc.reason) from None
        try:
            await asyncio.to_thread(confirm_subscription, sns_http, url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise HTTPException(502, f"confirming the subscription to {topic} failed: {type(exc).__name__}") from None
        await asyncio.to_thread(record_subscription, engine, topic, "confirmed", message_id, datetime.now(UTC))
        log.info("SNS topic %s: subscription confirmed", topic)
        return JSONResponse({"confirmed": topic})

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(reader.browser)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(reader.browser)])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title}: API")

    @app.get("/redoc", include_in_schema=False, dependencies=[Depends(reader.browser)])
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title}: API")

    @app.get("/incidents", dependencies=[Security(reader.api)])
    async def incidents(state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        if state not in (None, "open", "resolved"):
            raise HTTPException(422, "state is open or resolved")
        return await asyncio.to_thread(list_incidents, engine, state, max(1, min(limit, 1000)))

    @app.get("/incidents/{incident_id}", dependencies=[Security(reader.api)])
    async def incident(incident_id: str) -> dict[str, Any]:
        found = await asyncio.to_thread(get_incident, engine, incident_id)
        if found is None:
            raise HTTPException(404, f"no incident {incident_id}")
        return found

    return app
