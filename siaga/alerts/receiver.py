"""The alert receiver: a FastAPI app that takes webhooks, opens incidents and starts runbooks once.

Endpoints:

* ``POST /hooks/{source}``: a webhook of `source` (alertmanager, grafana, pagerduty, or a generic
  signed source such as ``social``), proven by `siaga.alerts.signatures.verify` (deliveries are
  remembered in the store, so a replayed one is refused: `siaga.alerts.replay`).
* ``POST /heartbeats/{name}``: a sign of life for heartbeat triggers (`siaga.alerts.watch`, which
  also runs the watcher: heartbeats gone quiet, maintenance windows begun and ended).
* ``GET /healthz``: ok, and the worker's queue (``queued``, ``busy``, ``processed``).
* ``GET /incidents`` (``?state=open|resolved``): open incidents ranked (severity, priority, age;
  each with its ``rank``), then resolved ones newest first; ``GET /incidents/{id}`` (with its alerts).

A webhook is answered fast (202) and worked on after: Alertmanager gives a webhook 10 s and then
re-sends the whole batch. The request only authenticates, parses and writes the raw body to the
store's inbox (`siaga.alerts.inbox`) before it is answered; the batch goes onto one queue, and a
single worker records its alerts and opens or joins incidents, one transaction per batch
(`siaga.incidents.recording.process_batch`); beside it a single starter starts each new incident's run, one
at a time and the highest ranked first, then the resolve run of each resolved incident whose
runbook declares `on_resolve` steps, so a slow Prefect server never holds up recording (on the SQLite default, concurrent
writers and concurrent run creation lose work to "database is locked"). Database and Prefect calls
are retried; an incident whose run could not be
started is retried every `RESCAN_SECONDS` (Prefect's ``idempotency_key`` = incident id, or
``<incident id>:resolved`` for the resolve run, makes a retry return the same run; the store notes
the run once, so a restart or a repeated resolved notification starts nothing more). A batch queued but not yet recorded when the process dies stays unfinished in
the inbox, and the next receiver to start processes it (recording is idempotent, so twice is safe).

Answers: 202 accepted (200 for an SNS subscription message); 401 a missing or wrong credential
(nothing recorded); 400 a body that is not JSON; 403 proven but refused (a replay, a topic or host not allowed); 404 a source not configured;
413 a body over 10 MiB; 422 a payload that is not what the source sends, with the reason; 502 an SNS
SubscribeURL that did not confirm; 503 a full queue or a store that cannot keep the webhook (with
Retry-After). Never 500 on bad input.

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
* Secrets may be comma-separated lists (rotation: any one is accepted).
* ``SIAGA_RECEIVER_HOST`` / ``SIAGA_RECEIVER_PORT``: where `siaga receiver` and `siaga up` listen
  (default 127.0.0.1:8787).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DatabaseError, OperationalError

from siaga.incidents import Alert
from siaga.incidents.heartbeats import note_alerts
from siaga.incidents.recording import Outcome, process, process_batch
from siaga.incidents.runs import note_run_failure, pending_resolve_runs, pending_runs, set_flow_run, set_resolve_run
from siaga.incidents.views import get_incident, list_incidents
from siaga.runbook import Runbook

from . import inbox
from .parsers import SOURCES, BadPayload, parse, sns_subscribe_url
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

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ReceiverConfig", "Worker", "create_app"]

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
QUEUE_SIZE = 10_000
RESCAN_SECONDS = 15.0
INBOX_KEEP = timedelta(days=1)
"""How long processed webhooks stay in the inbox (to look into)."""

GENERIC_PREFIX = "SIAGA_HOOK_SECRET_"
BUILT_IN = frozenset(SOURCES)

StartRun = Callable[[Mapping[str, Any]], Awaitable[str]]
"""Start an incident's run (idempotently, keyed by the incident id), or its resolve run when the
incident's ``phase`` is ``resolve``; return the flow run id."""


@dataclass(frozen=True)
class ReceiverConfig:
    sources: Mapping[str, SourceAuth] = field(default_factory=dict)
    """How each served source proves its webhooks; a source not here answers 501."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

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
        )

    @property
    def alertmanager_token(self) -> str | None:
        auth = self.sources.get("alertmanager")
        return auth.bearer_token.get_secret_value() if auth and auth.bearer_token else None


@dataclass(frozen=True)
class Batch:
    source: str
    alerts: list[Alert]
    received_at: datetime
    inbox_id: int | None = None
    """Its row in the durable inbox, marked done once the alerts are recorded."""


@dataclass
class Worker:
    """The one consumer of the queue: records and routes each batch in one transaction; beside it
    one starter starts the new incidents' runs, one at a time."""

    runbooks: Mapping[str, Runbook]
    engine: Engine
    start_run: StartRun
    queue: asyncio.Queue[Batch] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    notify: Callable[[str], None] | None = None
    """Told, in one line each, of incidents opened and resolved and runs started (`siaga up`)."""
    recording: bool = False
    starting: bool = False
    processed: int = 0
    attempts: int = 6
    first_delay: float = 0.25
    _not_before: dict[tuple[str, str], float] = field(default_factory=dict)
    """(incident, phase) whose run failed to start: not retried before this (monotonic) time."""
    session: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None
    """Entered around each pass of run starts: one Prefect client for the pass, rather than one per
    run (building a client costs ~20 ms of CPU on the event loop: its TLS context)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after each batch: the starter looks for incidents whose run is to start."""
    _recorded: int = 0
    """Queued batches recorded since the starter's last pass began."""

    def wake(self) -> None:
        """Have the starter look for runs to start now (incidents opened outside a batch)."""
        self._wake.set()

    @property
    def busy(self) -> bool:
        """Recording a batch, starting runs, or about to (`/healthz`)."""
        return self.recording or self.starting or self._recorded > 0

    async def run(self) -> None:
        starter = asyncio.create_task(self._starter(), name="siaga-receiver-run-starter")
        try:
            await self._take_up_inbox()
            while True:
                batch = await self.queue.get()
                await self._handle(batch, queued=True)
        finally:
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starter

    async def _handle(self, batch: Batch, queued: bool) -> None:
        """Record `batch`, close its inbox row, and wake the starter."""
        self.recording = True
        try:
            complete = await self._record(batch)
            await self._retry("noting heartbeats", lambda: asyncio.to_thread(
                note_alerts, self.engine, self.runbooks, batch.alerts, batch.received_at), (OperationalError,))
            if batch.inbox_id is not None:
                error = None if complete else "some alerts were not recorded"
                await asyncio.to_thread(inbox.finish, self.engine, batch.inbox_id, datetime.now(UTC), error)
        except Exception:  # the worker must outlive any one batch
            log.exception("alert batch from %s failed", batch.source)
        finally:
            self.processed += 1
            self.recording = False
            if queued:
                self._recorded += 1  # done (`queue.task_done`) once the starter has been through
            self._wake.set()

    async def _starter(self) -> None:
        """Start the runs of new incidents (woken after each batch), and retry the runs that did
        not start (at startup and every RESCAN_SECONDS). Apart from recording, so a slow Prefect
        server does not hold up the queue. A batch counts as done (`queue.join`) once a pass that
        began after it was recorded is over."""
        while True:
            self._wake.clear()
            recorded, self._recorded = self._recorded, 0
            self.starting = True
            try:
                await self._rescan()
            finally:
                self.starting = False
                for _ in range(recorded):
                    self.queue.task_done()
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=RESCAN_SECONDS)

    async def _take_up_inbox(self) -> None:
        """Process the webhooks a previous receiver took in but did not finish (it died)."""
        try:
            await asyncio.to_thread(inbox.prune, self.engine, datetime.now(UTC) - INBOX_KEEP)
            left = await asyncio.to_thread(inbox.unfinished, self.engine)
        except Exception:  # the store is down: the next start tries again
            log.exception("reading the inbox failed")
            return
        if left:
            log.info("taking up %d webhooks received before a restart", len(left))
        for delivery in left:
            try:
                alerts = parse(delivery.source, json.loads(delivery.body))
            except Exception as exc:  # noqa: BLE001 - a row that no longer parses is set aside
                log.error("inbox %d from %s no longer parses: %s", delivery.id, delivery.source, exc)
                await asyncio.to_thread(inbox.finish, self.engine, delivery.id, datetime.now(UTC), None)
                continue
            await self._handle(Batch(delivery.source, alerts, delivery.received_at, delivery.id), queued=False)

    async def _rescan(self) -> None:
        """Start the runs that did not start before (at startup, and every RESCAN_SECONDS)."""
        try:
            await self._start_pending()
        except Exception:  # the store is down: try again at the next rescan
            log.exception("rescanning incidents whose run did not start failed")

    def _tell(self, message: str) -> None:
        if self.notify:
            self.notify(message)
        else:
            log.info(message)

    async def _record(self, batch: Batch) -> bool:
        """The batch in one transaction; if that fails for a reason other than a locked store,
        alert by alert, so one bad alert does not cost the rest. False if an alert was lost."""
        try:
            outcomes = await self._retry(
                f"recording {len(batch.alerts)} {batch.source} alerts",
                lambda: asyncio.to_thread(process_batch, self.engine, self.runbooks, batch.alerts, batch.received_at),
                (OperationalError,),
            )
        except Exception:
            log.exception("%s batch of %d alerts failed as a whole; recording it alert by alert", batch.source, len(batch.alerts))
            outcomes = [await self._record_one(batch, alert) for alert in batch.alerts]
        for alert, outcome in zip(batch.alerts, outcomes, strict=True):
            if outcome is None:
                continue
            for problem in outcome.problems:
                log.warning("alert %s: %s", alert.fingerprint, problem)
            for incident_id in outcome.opened:
                self._tell(f"incident {incident_id} opened by {alert.source} alert {alert.labels.get('alertname', alert.fingerprint)}")
            for incident_id in outcome.resolved:
                self._tell(f"incident {incident_id} resolved")
        return all(outcome is not None for outcome in outcomes)

    async def _record_one(self, batch: Batch, alert: Alert) -> Outcome | None:
        try:
            return await self._retry(
                f"recording alert {alert.fingerprint}",
                lambda: asyncio.to_thread(process, self.engine, self.runbooks, alert, batch.received_at),
                (OperationalError,),
            )
        except Exception:  # one bad alert must not cost the rest of the batch
            log.exception("%s alert %s was not recorded", batch.source, alert.fingerprint)
            return None

    async def _start_pending(self) -> None:
        pending = await asyncio.to_thread(pending_runs, self.engine)
        pending += await asyncio.to_thread(pending_resolve_runs, self.engine)
        if not pending:
            return
        async with contextlib.AsyncExitStack() as stack:
            if self.session is not None:
                try:
                    await stack.enter_async_context(self.session())
                except Exception as exc:  # noqa: BLE001 (each start then opens its own connection, and says why it fails)
                    log.warning("no shared connection for starting runs: %s", exc)
            await self._start(pending)

    async def _start(self, pending: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        for incident in pending:
            phase = incident.get("phase", "respond")
            resolving = phase == "resolve"
            which = "resolve run" if resolving else "run"
            key = (incident["id"], phase)
            if self._not_before.get(key, 0.0) > loop.time():
                continue  # failed lately: the rescan retries it later, and the queue moves on
            try:
                flow_run_id = await self._retry(
                    f"starting the {which} of incident {incident['id']}",
                    lambda incident=incident: self.start_run(incident),
                    (Exception,),
                )
            except Exception as exc:  # noqa: BLE001 - whatever start_run raised, retry later
                log.error("incident %s: its %s did not start: %s", incident["id"], which, exc)
                await asyncio.to_thread(
                    note_run_failure, self.engine, incident["id"], f"{type(exc).__name__}: {exc}", phase
                )
                failures = incident["resolve_attempts" if resolving else "run_attempts"] + 1
                self._not_before[key] = loop.time() + min(RESCAN_SECONDS * 2 ** (failures - 1), 600.0)
                continue
            self._not_before.pop(key, None)
            note = set_resolve_run if resolving else set_flow_run
            await asyncio.to_thread(note, self.engine, incident["id"], str(flow_run_id))
            self._tell(f"incident {incident['id']}: {incident['runbook_id']} {which} {flow_run_id} started")

    async def _retry(self, what: str, call: Callable[[], Awaitable[Any]], errors: tuple[type[BaseException], ...]) -> Any:
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except errors as exc:
                if attempt == self.attempts:
                    raise
                log.warning("%s failed (attempt %d of %d), retrying in %.2f s: %s", what, attempt, self.attempts, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


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

        start_run = start_incident_run
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
        worker.queue = asyncio.Queue(QUEUE_SIZE)  # bound to the serving loop
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

    app = FastAPI(title="Siaga alert receiver", lifespan=lifespan)
    app.include_router(watch_router(runbooks, engine, wake=worker.wake, notify=notify))
    app.state.worker = worker
    app.state.sns_certificates = certificates

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "queued": worker.queue.qsize(), "busy": worker.busy, "processed": worker.processed}

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
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
        try:
            # In a thread: the replay guard writes to the store.
            await asyncio.to_thread(
                verify, source, request.headers, body, auth, datetime.now(UTC), certificates, replay_guard=replay_guard
            )
        except AuthError as exc:
            challenge = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
            raise HTTPException(exc.status_code, exc.reason, challenge) from None
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise HTTPException(422, "the body is not a JSON object")
        if source == "cloudwatch" and payload.get("Type") != "Notification":
            return await sns_subscription(payload, replay_key(source, request.headers, body, auth), auth)
        try:
            alerts = parse(source, payload)
        except BadPayload as exc:
            raise HTTPException(422, str(exc)) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise HTTPException(422, f"not a {source} payload: {exc}") from None
        received_at = datetime.now(UTC)
        key = replay_key(source, request.headers, body, auth)
        if worker.queue.full():
            await refuse(key, "the receiver is busy; retry")
        try:
            inbox_id = await asyncio.to_thread(inbox.put, engine, source, body, received_at)
        except DatabaseError as exc:
            log.error("a %s webhook was refused: the inbox could not keep it: %s", source, exc)
            await refuse(key, "the receiver cannot store webhooks right now; retry")
        try:
            worker.queue.put_nowait(Batch(source, alerts, received_at, inbox_id))
        except asyncio.QueueFull:  # filled while the inbox row was written
            with contextlib.suppress(DatabaseError):  # if it stays, the next start does it: harmless
                await asyncio.to_thread(inbox.drop, engine, inbox_id)
            await refuse(key, "the receiver is busy; retry")
        return JSONResponse({"accepted": len(alerts)}, status_code=202)

    async def refuse(key: str | None, reason: str) -> NoReturn:
        """503: the delivery was not taken in, so its retry must not count as a replay."""
        if key:
            with contextlib.suppress(DatabaseError):
                await asyncio.to_thread(replay_guard.release, key)
        raise HTTPException(503, reason, {"Retry-After": "5"})

    async def sns_subscription(payload: dict[str, Any], key: str | None, auth: SourceAuth) -> JSONResponse:
        """A verified SubscriptionConfirmation (visit its SubscribeURL) or UnsubscribeConfirmation."""
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
        except httpx.HTTPError as exc:
            if key:
                await asyncio.to_thread(replay_guard.release, key)  # SNS re-sends the confirmation
            raise HTTPException(502, f"confirming the subscription to {topic} failed: {type(exc).__name__}") from None
        await asyncio.to_thread(record_subscription, engine, topic, "confirmed", message_id, datetime.now(UTC))
        log.info("SNS topic %s: subscription confirmed", topic)
        return JSONResponse({"confirmed": topic})

    @app.get("/incidents")
    async def incidents(state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        if state not in (None, "open", "resolved"):
            raise HTTPException(422, "state is open or resolved")
        return await asyncio.to_thread(list_incidents, engine, state, max(1, min(limit, 1000)))

    @app.get("/incidents/{incident_id}")
    async def incident(incident_id: str) -> dict[str, Any]:
        found = await asyncio.to_thread(get_incident, engine, incident_id)
        if found is None:
            raise HTTPException(404, f"no incident {incident_id}")
        return found

    return app
