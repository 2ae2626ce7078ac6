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

Configuration, from the settings (`siaga.settings.Settings`, read from the environment by whoever
starts the receiver):

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
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import SecretStr
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from siaga.incidents.views import get_incident, list_incidents
from siaga.runbook import Runbook
from siaga.runbook.models import HEARTBEAT_SOURCE
from siaga.settings import Settings

from . import inbox
from .body import printable
from .intake import MAX_BODY, Intake
from .metrics import METRICS_CONTENT_TYPE, metrics_text
from .parsers import SOURCES
from .read_access import ReadAccess
from .replay import StoreReplayGuard
from .signatures import ReplayGuard, SourceAuth
from .sns import CertificateCache
from .watch import watch_router
from .worker import Batch, Session, StartRun, Worker

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY", "Batch", "ReceiverConfig", "Worker", "create_app"]

log = logging.getLogger("siaga.receiver")
log.propagate = False  # the `siaga` logger may carry Prefect's API handler, for flow runs only
if not log.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s siaga.receiver: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
BUILT_IN = frozenset(SOURCES) | {HEARTBEAT_SOURCE}
"""Source names a generic signed source may not take (``heartbeat``: the alerts quiet heartbeats raise)."""


@dataclass(frozen=True)
class ReceiverConfig:
    sources: Mapping[str, SourceAuth] = field(default_factory=dict)
    """How each served source proves its webhooks; a source not here answers 404."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_tokens: tuple[SecretStr, ...] = ()
    """Tokens that open the read API and its documents (`siaga.alerts.read_access`); none: closed."""
    heartbeat_tokens: tuple[SecretStr, ...] = ()
    """Tokens of ``POST /heartbeats/{name}`` (`siaga.alerts.watch`); none: not served."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ReceiverConfig:
        """The sources `settings` serve, where the receiver listens, and its tokens."""
        sources = {
            "alertmanager": SourceAuth(bearer_token=settings.alertmanager_token),
            "grafana": SourceAuth(
                bearer_token=settings.grafana_token,
                hmac_secrets=list(settings.grafana_hmac_secrets),
                timestamp_header=settings.grafana_timestamp_header,
            ),
            "pagerduty": SourceAuth(hmac_secrets=list(settings.pagerduty_hmac_secrets)),
        }
        if settings.sns_topic_arns:
            sources["cloudwatch"] = SourceAuth(
                allowed_topic_arns=list(settings.sns_topic_arns),
                allowed_cert_hosts=list(settings.sns_cert_hosts) or None,
            )
        for name, secrets in settings.hook_secrets.items():
            if name not in sources and name not in BUILT_IN:
                sources[name] = SourceAuth(hmac_secrets=list(secrets))
        return cls(sources=sources, host=settings.receiver_host, port=settings.receiver_port,
                   api_tokens=settings.api_tokens, heartbeat_tokens=settings.heartbeat_tokens)

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


def create_app(
    runbooks: Mapping[str, Runbook],
    settings: Settings,
    engine: Engine,
    start_run: StartRun,
    *,
    session: Session | None = None,
    notify: Callable[[str], None] | None = None,
    replay_guard: ReplayGuard | None = None,
    sns_client: httpx.Client | None = None,
) -> FastAPI:
    """The receiver app over the store behind `engine`, configured by `settings`; its lifespan runs
    the worker, which starts each new incident's run with `start_run` (inside `session`, if given:
    a client the run starts of one pass share). Deliveries are remembered against replay in the
    store (`StoreReplayGuard`) unless another `replay_guard` is given. `sns_client` fetches SNS
    certificates and confirms subscriptions (default: an `httpx.Client` trusting certifi, or
    ``SSL_CERT_FILE``)."""
    config = ReceiverConfig.from_settings(settings)
    worker = Worker(runbooks, engine, start_run, notify=notify, session=session)
    sns_http = sns_client or httpx.Client(timeout=10.0, follow_redirects=False)
    intake = Intake(config.sources, worker, engine, replay_guard or StoreReplayGuard(engine),
                    CertificateCache(sns_http), sns_http)
    # The documents are served below, behind the read API's token (FastAPI's own are open).
    app = FastAPI(title="Siaga alert receiver", openapi_url=None, docs_url=None, redoc_url=None,
                  lifespan=_lifespan(worker, sns_http if sns_client is None else None))
    app.include_router(watch_router(runbooks, engine, config.heartbeat_tokens, wake=worker.wake, notify=notify))
    app.state.worker = worker
    app.state.sns_certificates = intake.certificates
    app.add_exception_handler(StarletteHTTPException, _readable)  # type: ignore[arg-type]
    reader = ReadAccess.of(config.api_tokens)
    _add_health_routes(app, worker, engine, reader)
    app.add_api_route("/hooks/{source}", intake.hook, methods=["POST"], status_code=202, openapi_extra=HOOK_BODY)
    _add_document_routes(app, reader)
    _add_incident_routes(app, engine, reader)
    return app


HOOK_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "the source's own webhook payload (Alertmanager, Grafana, "
    "SNS, PagerDuty, or a generic {\"alerts\": [...]})"}}}}}
"""The body is read raw (signatures cover its exact bytes); what the documents say it is."""


def _lifespan(worker: Worker, own_client: httpx.Client | None) -> Callable[[FastAPI], Any]:
    """Run the worker while the app serves; close the SNS client the app made itself."""

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
            if own_client is not None:
                own_client.close()

    return lifespan


async def _readable(request: Request, exc: StarletteHTTPException) -> Response:
    """Every refusal's reason as text any client can read: one quoting a sender's broken text
    (half an emoji) would otherwise fail to encode, and the refusal become a 500."""
    if isinstance(exc.detail, str):
        exc = StarletteHTTPException(exc.status_code, printable(exc.detail), exc.headers)
    return await http_exception_handler(request, exc)


def _add_health_routes(app: FastAPI, worker: Worker, engine: Engine, reader: ReadAccess) -> None:
    """``/healthz`` (open, counts only) and ``/metrics`` (behind the read API's token)."""

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        lost = await asyncio.to_thread(inbox.losses, engine)
        return {"ok": True, "queued": worker.queued, "busy": worker.busy, "processed": worker.processed,
                "failed": {"webhooks": lost.webhooks, "alerts": lost.alerts}}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Security(reader.api)])
    async def metrics() -> PlainTextResponse:
        lost = await asyncio.to_thread(inbox.losses, engine)
        return PlainTextResponse(metrics_text(worker, lost), media_type=METRICS_CONTENT_TYPE)


def _add_document_routes(app: FastAPI, reader: ReadAccess) -> None:
    """The OpenAPI document and its two readers, behind the read API's token (Basic for a browser)."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(reader.browser)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(reader.browser)])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title}: API")

    @app.get("/redoc", include_in_schema=False, dependencies=[Depends(reader.browser)])
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title}: API")


def _add_incident_routes(app: FastAPI, engine: Engine, reader: ReadAccess) -> None:
    """The read API: ``/incidents`` ranked, and one incident with its alerts."""

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

