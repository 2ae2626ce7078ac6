"""The receiver's worker: records the webhooks taken in, fairly and without losing any, and starts
the runs their incidents are owed.

* **Intake.** The HTTP layer keeps a webhook in the inbox, then `submit`s its `Batch` (its parsed
  alerts) to `queue`. Around its own store writes (the replay guard, the inbox) it enters
  `intake()`: between pieces the worker lets those go first, so a webhook is answered within about
  one piece's time however large a storm is being recorded (SQLite has one write lock).
* **Lanes.** Batches wait in one lane per source (first in, first out) and the lanes are served
  round robin, one piece at a time (`siaga.incidents.recording.PIECE` alerts, one short
  transaction): a storm from one source never holds another source's alert back by more than a
  piece. Within a source the order is kept.
* **Nothing accepted is lost.** A piece the store refuses for a moment (locked, unreachable) is
  retried; one that fails for another reason is recorded alert by alert, so one bad alert does not
  cost the rest. The alerts still not recorded are tried again later (`retry_delay`, doubling), in
  their lane, while the other lanes go on; after `inbox.MAX_ATTEMPTS` tries the webhook is given up
  on with its reason (`inbox.fail`) and counted in ``/healthz`` and ``/metrics``. A receiver that
  starts takes up what one that stopped left unfinished (`inbox.take_up`).
* **Runs.** Beside the lanes one starter starts each new incident's run, one at a time
  (`start_concurrency` at a time under `siaga node`) and the highest ranked first, then the resolve run of each resolved incident whose runbook declares
  `on_resolve` steps, so a slow Prefect server never holds up recording. A run that did not start
  is retried every `RESCAN_SECONDS` (Prefect's ``idempotency_key`` = incident id, or
  ``<incident id>:resolved``, makes a retry return the same run; the store notes the run once).

`queue.join()` returns once every batch put on `queue` is recorded (or given up on) and the starter
has been through the incidents it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from siaga.incidents import Alert, thresholds
from siaga.incidents.heartbeats import note_alerts
from siaga.incidents.recording import PIECE, Outcome, record_piece
from siaga.incidents.runs import (
    note_run_failure,
    pending_resolve_runs,
    pending_runs,
    set_flow_run,
    set_resolve_run,
)
from siaga.runbook import Runbook
from siaga.voices.intake import take_in

from . import inbox
from .parsers import parse

__all__ = ["QUEUE_SIZE", "RESCAN_SECONDS", "Batch", "StartRun", "Worker"]

log = logging.getLogger("siaga.receiver")

QUEUE_SIZE = 10_000
"""Batches waiting (queued and in lanes) before the receiver answers 503."""
RESCAN_SECONDS = 15.0
INBOX_KEEP = timedelta(days=1)
"""How long processed webhooks stay in the inbox (to look into)."""
INTAKE_WAIT = 0.5
"""The longest the worker lets intake writes go first before its next piece (it must progress too)."""
PRUNE_EVERY = 3600.0
"""Seconds between prunes of threshold hits older than every window."""

StartRun = Callable[[Mapping[str, Any]], Awaitable[str | None]]
"""Create the run an incident is owed and return its id; None when another receiver is creating it
(it then notes it, or the rescan finds the incident still owed)."""
"""Start an incident's run (idempotently, keyed by the incident id), or its resolve run when the
incident's ``phase`` is ``resolve``; return the flow run id."""


Session = Callable[[], contextlib.AbstractAsyncContextManager[Any]]
"""Opens what a pass of run starts shares (a Prefect client, given by whoever starts the receiver)."""

@dataclass(frozen=True)
class Batch:
    source: str
    alerts: list[Alert]
    received_at: datetime
    inbox_id: int | None = None
    """Its row in the durable inbox, marked done once the alerts are recorded."""


@dataclass
class _Job:
    """A batch being recorded: the alerts of its current try and how far that got."""

    batch: Batch
    queued: bool
    """Put on `Worker.queue` (done there once recorded); else taken up from the inbox."""
    alerts: Sequence[Alert]
    position: int = 0
    failed: list[tuple[Alert, str]] = field(default_factory=list)
    tries: int = 0
    not_before: float = 0.0


class _Lanes:
    """One first-in-first-out lane of jobs per source, served round robin."""

    def __init__(self) -> None:
        self._lanes: OrderedDict[str, deque[_Job]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def add(self, job: _Job) -> None:
        self._lanes.setdefault(job.batch.source, deque()).append(job)

    def next(self, now: float) -> _Job | None:
        """The first job due in the first lane (in turn) that has one."""
        for lane in self._lanes.values():
            for job in lane:
                if job.not_before <= now:
                    return job
        return None

    def served(self, job: _Job) -> None:
        """`job`'s lane had its turn: it goes last."""
        if job.batch.source in self._lanes:
            self._lanes.move_to_end(job.batch.source)

    def remove(self, job: _Job) -> None:
        lane = self._lanes[job.batch.source]
        lane.remove(job)
        if not lane:
            del self._lanes[job.batch.source]

    def next_due(self) -> float | None:
        """When the first waiting job is due (None: no job)."""
        return min((job.not_before for lane in self._lanes.values() for job in lane), default=None)


@dataclass
class Worker:
    """The one consumer of `queue` (see the module's docstring)."""

    runbooks: Mapping[str, Runbook]
    engine: Engine
    start_run: StartRun
    queue: asyncio.Queue[Batch] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    notify: Callable[[str], None] | None = None
    """Told, in one line each, of incidents opened and resolved and runs started (`siaga up`)."""
    recording: bool = False
    starting: bool = False
    processed: int = 0
    """Batches finished: recorded, or given up on."""
    attempts: int = 6
    """Tries of one store call that meets a locked or unreachable store."""
    first_delay: float = 0.25
    retry_delay: float = 1.0
    """Before the first new try of alerts that were not recorded (it doubles for each try)."""
    piece: int = PIECE
    session: Session | None = None
    """Entered around each pass of run starts: one Prefect client for the pass, rather than one per
    run (building a client costs ~20 ms of CPU on the event loop: its TLS context)."""
    _not_before: dict[tuple[str, str], float] = field(default_factory=dict)
    """(incident, phase) whose run failed to start: not retried before this (monotonic) time."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after each batch: the starter looks for incidents whose run is to start."""
    _recorded: int = 0
    """Queued batches recorded since the starter's last pass began."""
    _lanes: _Lanes = field(default_factory=_Lanes)
    _intake: set[asyncio.Future[None]] = field(default_factory=set)
    """The HTTP layer's store writes under way (`intake`)."""
    _pruned_at: float | None = None
    start_concurrency: int = 1
    """How many runs the starter creates at once: one on the embedded default (Prefect on SQLite
    loses concurrent creations to "database is locked"); more on a cluster (`siaga node`), where
    Prefect is on PostgreSQL behind several API servers."""

    @property
    def busy(self) -> bool:
        """Recording, starting runs, or about to (`/healthz`)."""
        return self.recording or self.starting or self._recorded > 0 or len(self._lanes) > 0

    @property
    def queued(self) -> int:
        """Batches waiting to be recorded (`/healthz`): on the queue and in the lanes."""
        return self.queue.qsize() + len(self._lanes)

    def submit(self, batch: Batch) -> None:
        """Queue `batch`; raise `asyncio.QueueFull` when `QUEUE_SIZE` batches wait already."""
        if self.queued >= QUEUE_SIZE:
            raise asyncio.QueueFull
        self.queue.put_nowait(batch)

    def full(self) -> bool:
        return self.queued >= QUEUE_SIZE

    def wake(self) -> None:
        """Have the starter look for runs to start now (incidents opened outside a batch: the
        watcher's quiet heartbeats and ended maintenance windows)."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def intake(self) -> AsyncIterator[None]:
        """Around a store write of the HTTP layer: the worker's next piece waits for it (for up to
        `INTAKE_WAIT`; writes that begin meanwhile do not hold the piece up further)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._intake.add(done)
        try:
            yield
        finally:
            self._intake.discard(done)
            done.set_result(None)

    async def run(self) -> None:
        starter = asyncio.create_task(self._starter(), name="siaga-receiver-run-starter")
        try:
            await self._take_up_inbox()
            while True:
                self._drain()
                job = self._lanes.next(asyncio.get_running_loop().time())
                if job is None:
                    await self._wait_for_work()
                else:
                    await self._step(job)
        finally:
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starter

    def _drain(self) -> None:
        while not self.queue.empty():
            batch = self.queue.get_nowait()
            self._lanes.add(_Job(batch, queued=True, alerts=batch.alerts))

    async def _wait_for_work(self) -> None:
        """Until a batch arrives, or the first job waiting to be tried again is due."""
        due = self._lanes.next_due()
        timeout = None if due is None else max(0.0, due - asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError):
            batch = await asyncio.wait_for(self.queue.get(), timeout)
            self._lanes.add(_Job(batch, queued=True, alerts=batch.alerts))

    async def _step(self, job: _Job) -> None:
        """Record the next piece of `job`; once its try is through, finish it or plan the next."""
        self.recording = True
        try:
            if self._intake:  # the writes under way go first
                await asyncio.wait(list(self._intake), timeout=INTAKE_WAIT)
            piece = job.alerts[job.position : job.position + self.piece]
            results = await self._record(job.batch, piece)
            await self._note_signs_of_life(job.batch, piece)
            job.position += len(piece)
            job.failed += [(alert, why) for alert, outcome, why in results if outcome is None and why]
            self._report(results)
            if job.position >= len(job.alerts):
                await self._end_try(job)
        except Exception:  # the worker must outlive any one batch (the store failed it while closing a try)
            log.exception("a %s batch failed; it is tried again later", job.batch.source)
            job.tries += 1
            if job.tries >= inbox.MAX_ATTEMPTS:
                self._done(job)  # its inbox row stays unfinished: the next start takes it up
            else:
                job.failed, job.position = [], 0
                job.not_before = asyncio.get_running_loop().time() + self.retry_delay * 2 ** (job.tries - 1)
        finally:
            self.recording = False
            self._lanes.served(job)

    async def _record(self, batch: Batch, piece: Sequence[Alert]) -> list[tuple[Alert, Outcome | None, str | None]]:
        """Record `piece` in one transaction; if the store refuses it for a reason of its alerts,
        alert by alert. Each alert with its outcome, or None and why it was not recorded."""
        try:
            outcomes = await self._retry(
                f"recording {len(piece)} {batch.source} alerts",
                lambda: asyncio.to_thread(record_piece, self.engine, self.runbooks, piece, batch.received_at),
                (OperationalError,),
            )
            return [(alert, outcome, None) for alert, outcome in zip(piece, outcomes, strict=True)]
        except OperationalError as exc:  # the store itself: the whole piece waits for the next try
            log.error("%d %s alerts were not recorded: %s", len(piece), batch.source, inbox.reason(exc))
            return [(alert, None, inbox.reason(exc)) for alert in piece]
        except Exception as exc:  # noqa: BLE001 - whatever the store raised, each alert on its own
            if len(piece) == 1:
                log.error("%s alert %s was not recorded: %s", batch.source, piece[0].fingerprint, inbox.reason(exc))
                return [(piece[0], None, inbox.reason(exc))]
            log.warning("%d %s alerts were refused together (%s); recording them one by one",
                        len(piece), batch.source, inbox.reason(exc))
        results = []
        for alert in piece:
            results += await self._record(batch, [alert])
        return results

    def _report(self, results: list[tuple[Alert, Outcome | None, str | None]]) -> None:
        for alert, outcome, _ in results:
            if outcome is None:
                continue
            for problem in outcome.problems:
                log.warning("alert %s: %s", alert.fingerprint, problem)
            for incident_id in outcome.opened:
                self._tell(f"incident {incident_id} opened by {alert.source} alert {alert.labels.get('alertname', alert.fingerprint)}")
            for incident_id in outcome.resolved:
                self._tell(f"incident {incident_id} resolved")

    async def _end_try(self, job: _Job) -> None:
        """The try of `job` is through: done, given up on, or to be tried again later (only the
        alerts that were not recorded)."""
        batch = job.batch
        if not job.failed:
            if batch.inbox_id is not None:
                await self._store_call("closing an inbox row", inbox.finish, self.engine, batch.inbox_id, datetime.now(UTC))
            self._done(job)
            return
        why = f"{len(job.failed)} of {len(batch.alerts)} alerts were not recorded: {job.failed[0][1]}"
        if batch.inbox_id is None:
            job.tries += 1
        else:
            job.tries = await self._store_call("counting a try", inbox.retry_later, self.engine, batch.inbox_id, why)
        if job.tries >= inbox.MAX_ATTEMPTS:
            log.error("a %s webhook is given up on after %d tries: %s", batch.source, job.tries, why)
            if batch.inbox_id is not None:
                await self._store_call("giving up on an inbox row", inbox.fail, self.engine, batch.inbox_id,
                                       datetime.now(UTC), f"given up after {job.tries} tries; the last: {why}",
                                       len(job.failed))
            self._done(job)
            return
        delay = self.retry_delay * 2 ** (job.tries - 1)
        log.warning("a %s webhook is tried again in %.1f s (try %d of %d): %s", batch.source, delay, job.tries,
                    inbox.MAX_ATTEMPTS, why)
        job.alerts, job.failed, job.position = [alert for alert, _ in job.failed], [], 0
        job.not_before = asyncio.get_running_loop().time() + delay

    def _done(self, job: _Job) -> None:
        self._lanes.remove(job)
        self.processed += 1
        if job.queued:
            self._recorded += 1  # done (`queue.task_done`) once the starter has been through
        self._wake.set()

    async def _note_signs_of_life(self, batch: Batch, piece: Sequence[Alert]) -> None:
        """The piece's alerts that heartbeat triggers expect move their heartbeats; a failure costs
        at most a late sign of life (the next alert moves it), never the recording."""
        try:
            await self._store_call("noting heartbeats", note_alerts, self.engine, self.runbooks, piece, batch.received_at)
        except Exception:
            log.exception("noting heartbeats of a %s batch failed", batch.source)

    async def _store_call(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        return await self._retry(what, lambda: asyncio.to_thread(call, *args), (OperationalError,))

    async def _take_up_inbox(self) -> None:
        """Take up the webhooks a previous receiver took in but did not finish (it stopped)."""
        try:
            await asyncio.to_thread(inbox.prune, self.engine, datetime.now(UTC) - INBOX_KEEP)
            left = await asyncio.to_thread(inbox.take_up, self.engine, datetime.now(UTC))
        except Exception:  # the store is down: the next start tries again
            log.exception("reading the inbox failed")
            return
        if left:
            log.info("taking up %d webhooks received before a restart", len(left))
        for delivery in left:
            try:
                alerts = parse(delivery.source, json.loads(delivery.body))
            except Exception as exc:  # noqa: BLE001 - a row that no longer parses is given up on, saying why
                log.error("inbox %d from %s no longer parses: %s", delivery.id, delivery.source, exc)
                await asyncio.to_thread(inbox.fail, self.engine, delivery.id, datetime.now(UTC),
                                        f"no longer parses: {inbox.reason(exc)}", None)
                continue
            batch = Batch(delivery.source, alerts, delivery.received_at, delivery.id)
            self._lanes.add(_Job(batch, queued=False, alerts=alerts, tries=delivery.attempts))

    async def _starter(self) -> None:
        """Start the runs of new incidents (woken after each batch), and retry the runs that did
        not start (at startup and every RESCAN_SECONDS). Apart from recording, so a slow Prefect
        server does not hold up the lanes. A batch counts as done (`queue.join`) once a pass that
        began after it was recorded is over."""
        while True:
            self._wake.clear()
            recorded, self._recorded = self._recorded, 0
            self.starting = True
            try:
                await self._rescan()
                await self._take_in_voices()
                await self._prune_hits()
            finally:
                self.starting = False
                for _ in range(recorded):
                    self.queue.task_done()
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=RESCAN_SECONDS)

    async def _take_in_voices(self) -> None:
        """The mentions just recorded become voices with their deadlines (`siaga.voices`); safe to
        repeat, so a failure here is made good by the next pass (or `siaga voices`)."""
        try:
            await asyncio.to_thread(take_in, self.engine, self.runbooks)
        except Exception:
            log.exception("taking voices in failed; the next pass tries again")

    async def _rescan(self) -> None:
        """Start the runs that did not start before (at startup, and every RESCAN_SECONDS)."""
        try:
            await self._start_pending()
        except Exception:  # the store is down: try again at the next rescan
            log.exception("rescanning incidents whose run did not start failed")

    async def _prune_hits(self) -> None:
        """Every `PRUNE_EVERY` seconds, forget threshold hits older than every window."""
        now = asyncio.get_running_loop().time()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        keep = thresholds.longest_window(self.runbooks) + timedelta(minutes=1)
        try:
            await asyncio.to_thread(thresholds.prune, self.engine, datetime.now(UTC) - keep)
        except Exception:
            log.exception("pruning threshold hits failed")

    def _tell(self, message: str) -> None:
        if self.notify:
            self.notify(message)
        else:
            log.info(message)

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
        """Start the runs of `pending` in rank order, `start_concurrency` at a time."""
        if self.start_concurrency <= 1:
            for incident in pending:
                await self._start_one(incident)
            return
        slots = asyncio.Semaphore(self.start_concurrency)

        async def start(incident: dict[str, Any]) -> None:
            async with slots:
                await self._start_one(incident)

        await asyncio.gather(*(start(incident) for incident in pending))

    async def _start_one(self, incident: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        phase = incident.get("phase", "respond")
        resolving = phase == "resolve"
        which = "resolve run" if resolving else "run"
        key = (incident["id"], phase)
        if self._not_before.get(key, 0.0) > loop.time():
            return  # failed lately: the rescan retries it later, and the queue moves on
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
            return
        self._not_before.pop(key, None)
        if flow_run_id is None:
            return  # another receiver holds its claim and notes the run
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
