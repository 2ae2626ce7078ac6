"""`siaga node`: one node of Siaga on Prefect's own distributed deployment (cluster mode).

A node joins the Prefect server that ``PREFECT_API_URL`` names (a load balancer in front of
several API servers) and never starts one; Siaga's store must be PostgreSQL (``SIAGA_DATABASE_URL``):
SQLite is refused, since it is one machine's file and the singletons below are kept to once by a
PostgreSQL lease.

What runs where:

* **on every node**: the alert receiver (`siaga.alerts.receiver`), behind a load balancer. Its
  runs are created on the runbooks' deployments in the process work pool (`siaga deploy`), and
  Prefect workers (`siaga worker`) run them. Receivers agree through the store: one open incident
  per key (a unique constraint), each delivery once (replay table), one run per incident (Prefect's
  idempotency key is the incident id; `claimed_start` lets one receiver at a time create it, and
  the store notes it once). Each receiver creates `START_CONCURRENCY` runs at once.
* **once across the cluster**, on the node holding the lease ``siaga-singletons`` (a PostgreSQL
  session advisory lock, `siaga.store.lease`): the zombie-run automation (installed when the lease is
  taken), the run watcher (`siaga.flows.wakeups`: wakes runs waiting at gates, ends runs that
  died), the statement-deadline and situation-report watchers, and the inbox sweeper (webhooks a
  receiver accepted and did not record because it died are handed to this node's receiver after
  `inbox_stale` seconds; recording is idempotent). A node that dies loses the lease with its connection; another
  node takes it within `lease_every` seconds. A node that can no longer see its lease stops its
  singletons at once.
* **not on a node**: Prefect's API servers and its background services
  (``prefect server services start``: the scheduler and the other loops, kept to once per interval
  by Prefect through Docket on Redis), and the flow runs (Prefect workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from siaga.alerts import inbox
from siaga.alerts.parsers import parse
from siaga.alerts.worker import Batch, StartRun, Worker
from siaga.catalog import Catalog
from siaga.errors import StackUnavailable
from siaga.home import prefect_answers
from siaga.store.lease import Lease
from siaga.logs import get_logger
from siaga.settings import Settings
from siaga.store import as_utc, incidents
from siaga.wiring import Wiring

from .deadline_watch import watch_deadlines
from .running import Deployments, start_incident_run
from .sitreps import watch_sitreps
from .stack import ensure_zombie_automation, served_catalog, start_receiver, zombie_window
from .wakeups import watch_runs

log = get_logger("siaga.node")

SINGLETONS = "siaga-singletons"
"""The lease whose holder runs the cluster's singletons."""

START_CONCURRENCY = 8
"""How many runs a node's receiver creates at once (Prefect on PostgreSQL takes them in parallel)."""

Echo = Callable[[str], None]


@dataclass(frozen=True)
class NodeOptions:
    host: str = "127.0.0.1"
    port: int = 8787
    runbooks: Path = Path("runbooks")
    name: str = ""
    lease_every: float = 2.0
    """How often a node tries to take the lease, and its holder checks it still holds it (s)."""
    inbox_stale: float = 30.0
    """How old an unrecorded webhook must be before the lease holder records it (s)."""


def check_cluster_environment(settings: Settings) -> tuple[str, str]:
    """The Prefect API and the store a node would use; raise StackUnavailable naming what is wrong."""
    api = settings.prefect_api_url or ""
    if not api:
        raise StackUnavailable(
            "cluster mode joins an existing Prefect server: set PREFECT_API_URL to it (its load balancer), "
            "or run `siaga up` for one machine"
        )
    store = settings.store_url
    if not store.startswith("postgresql"):
        shown = store.split("://", 1)[0]
        raise StackUnavailable(
            f"cluster mode needs Siaga's store on PostgreSQL (SIAGA_DATABASE_URL=postgresql+psycopg://...), "
            f"not {shown}: SQLite is one machine's file, and the nodes keep their singletons to once with a "
            "PostgreSQL lease"
        )
    return api, store


def run_node(options: NodeOptions, wiring: Wiring, echo: Echo = print) -> int:
    """Run this node until SIGTERM or Ctrl-C, its services made from `wiring` (the command line's)."""
    api, _ = check_cluster_environment(wiring.settings)
    if not prefect_answers(api):
        raise StackUnavailable(f"PREFECT_API_URL is {api}, but no Prefect server answers there")
    catalog = served_catalog(options.runbooks, wiring, echo)
    if catalog is None:
        return 2
    # the runs this node starts in-process read their settings from its environment (`siaga.settings`)
    os.environ["SIAGA_RUNBOOKS"] = str(options.runbooks.resolve())
    return asyncio.run(_serve(catalog, options, wiring, echo))


async def _serve(catalog: Catalog, options: NodeOptions, wiring: Wiring, echo: Echo) -> int:
    store = wiring.engine
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    receiver, receiver_task = await start_receiver(
        catalog, wiring, options.host, options.port, echo, start_concurrency=START_CONCURRENCY,
        start_run=claimed_start(store, functools.partial(start_incident_run, runbooks=catalog.runbooks, wiring=wiring,
                                                         folder=catalog.folder, deployments=Deployments())),
    )
    name = options.name or f"{os.uname().nodename}:{options.port}"
    echo(f"Siaga node {name} is up: {len(catalog.runbooks)} runbooks; runs go to the work pool for Prefect workers")
    worker = receiver.config.app.state.worker  # the inbox sweeper hands it what a dead receiver left
    singletons = asyncio.create_task(_hold_singletons(stop, catalog, options, wiring, worker, name, echo))
    await asyncio.wait({asyncio.create_task(stop.wait()), receiver_task, singletons},
                       return_when=asyncio.FIRST_COMPLETED)
    echo(f"Stopping Siaga node {name}...")
    stop.set()
    receiver.should_exit = True
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(receiver_task, timeout=10)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(singletons, timeout=10)
    return 0


def claimed_start(store: Engine, start: StartRun = start_incident_run) -> StartRun:
    """`start` (Prefect's run creation for an incident), done by one receiver at a time: every
    receiver sees the same incidents waiting for their run, in the same order, so without a claim
    they would all create each run (Prefect's idempotency key keeps it one run, at the cost of
    every receiver's call). The claim is a PostgreSQL advisory lock per incident and phase; a
    receiver that finds it taken moves on to the next incident at once (None: the holder notes the
    run), so the receivers' slots share out the waiting incidents instead of queueing on each
    other's claims. If the holder dies, its claim goes with its connection and the next rescan
    finds the incident still owed (a holder that released the claim just before noting the run
    is harmless: Prefect returns the same run for the incident's idempotency key)."""

    async def start_claimed(incident: Mapping[str, Any]) -> str | None:
        phase = incident.get("phase", "respond")
        noted = await asyncio.to_thread(_noted_run, store, incident["id"], phase)
        if noted:
            return noted
        claim = Lease(store, f"incident-run:{incident['id']}:{phase}")
        if not await asyncio.to_thread(claim.acquire):
            return None
        try:
            return await start(incident)
        finally:
            await asyncio.to_thread(claim.release)

    return start_claimed


def _noted_run(store: Engine, incident_id: str, phase: str) -> str | None:
    column = incidents.c.resolve_run_id if phase == "resolve" else incidents.c.flow_run_id
    with store.connect() as db:
        return db.execute(select(column).where(incidents.c.id == incident_id)).scalar()


async def _hold_singletons(
    stop: asyncio.Event, catalog: Catalog, options: NodeOptions, wiring: Wiring, worker: Worker, name: str, echo: Echo
) -> None:
    """Try for the lease every `lease_every` seconds; while it is this node's, run the singletons."""
    lease = Lease(wiring.engine, SINGLETONS)
    tenure: asyncio.Event | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        while not stop.is_set():
            try:
                holding = await asyncio.to_thread(lease.acquire)
            except Exception as exc:  # noqa: BLE001 - the store is away: try again
                log.warning("the singletons' lease could not be asked for", error=str(exc))
                holding = False
            if holding and tenure is None:
                echo(f"node {name} holds the lease {SINGLETONS}: it runs the run watcher, the deadline and sitrep "
                     "watchers and the inbox sweeper")
                tenure = asyncio.Event()
                tasks = _singleton_tasks(tenure, catalog, options, wiring, worker)
            elif not holding and tenure is not None:
                echo(f"node {name} lost the lease {SINGLETONS}: its singletons stop")
                await _end(tenure, tasks)
                tenure, tasks = None, []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), options.lease_every)
    finally:
        if tenure is not None:
            await _end(tenure, tasks)
        await asyncio.to_thread(lease.release)


def _singleton_tasks(
    tenure: asyncio.Event, catalog: Catalog, options: NodeOptions, wiring: Wiring, worker: Worker
) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(_zombie_automation(list(catalog.runbooks), zombie_window(wiring.settings))),
        asyncio.create_task(watch_runs(tenure, wiring)),
        asyncio.create_task(watch_deadlines(tenure, folder=catalog.folder, wiring=wiring)),
        asyncio.create_task(watch_sitreps(tenure, catalog.runbooks, folder=catalog.folder, wiring=wiring)),
        asyncio.create_task(sweep_inbox(tenure, wiring.engine, worker, options.inbox_stale)),
    ]


async def _zombie_automation(flow_names: list[str], window: timedelta) -> None:
    try:
        await ensure_zombie_automation(flow_names, window)
    except Exception as exc:  # noqa: BLE001 - the next holder installs it
        log.error("the zombie-run automation could not be installed", error=str(exc))


async def _end(tenure: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    tenure.set()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()


async def sweep_inbox(stop: asyncio.Event, store: Engine, worker: Worker, stale: float) -> None:
    """Every few seconds until `stop`, hand the webhooks accepted more than `stale` seconds ago and
    still not recorded (their receiver died) to this node's receiver `worker`, which records them
    as its own (done, or tried again, or given up on with the reason: `siaga.alerts.inbox`) and
    starts the runs of the incidents they open."""
    handed: set[int] = set()
    while not stop.is_set():
        try:
            for batch in await asyncio.to_thread(take_up_stale, store, timedelta(seconds=stale), handed):
                worker.submit(batch)
                handed.add(batch.inbox_id or 0)
                log.info("took up a webhook its receiver did not record", id=batch.inbox_id, source=batch.source,
                         alerts=len(batch.alerts))
        except Exception as exc:  # noqa: BLE001 - the store is away, or the queue full: next time
            log.error("the inbox sweep failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(1.0, min(stale / 3, 10.0)))


def take_up_stale(store: Engine, stale: timedelta, handed: Collection[int] = ()) -> list[Batch]:
    """The unfinished inbox rows older than `stale` (and not in `handed`), as batches to record.
    Each counts one more try, as a receiver starting counts the one a stopped receiver left
    unfinished; a row out of tries, or whose body no longer parses, is given up on with the reason."""
    now = datetime.now(UTC)
    batches = []
    for delivery in inbox.unfinished(store):
        received = as_utc(delivery.received_at)
        if delivery.id in handed or received is None or received > now - stale:
            continue
        try:
            alerts = parse(delivery.source, json.loads(delivery.body))
        except Exception as exc:  # noqa: BLE001 - given up on, saying why, as the receiver does
            inbox.fail(store, delivery.id, now, f"no longer parses: {inbox.reason(exc)}", None)
            continue
        tries = inbox.retry_later(store, delivery.id, "its receiver stopped before it was recorded")
        if tries >= inbox.MAX_ATTEMPTS:
            inbox.fail(store, delivery.id, now, f"given up after {tries} tries: its receivers stopped", len(alerts))
            continue
        batches.append(Batch(delivery.source, alerts, delivery.received_at, delivery.id))
    return batches
