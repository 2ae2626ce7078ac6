"""Calls that change the world go through the side-effect ledger, so that retries, restarts
and duplicate runs of the same incident never act twice.

While a call is in flight its caller touches its intent every `HEARTBEAT`. Another run that
finds the intent waits as long as it moves; once it has stood still for `SILENT` (measured on the
waiter's own clock, so clocks of different hosts need not agree), its caller is taken to be dead,
one waiter takes the intent over and asks the provider (`reconcile`) before acting again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from siaga.actions import ActionContext, ActionFailed, ActionSpec, CannotReconcile
from siaga.canonical import as_utc
from siaga.audit.ledger import Claim, Entry, Ledger
from siaga.logs import get_logger
from siaga.secrets import REDACTOR

log = get_logger("siaga.effects")

HEARTBEAT = timedelta(seconds=2)
"""How often a caller in flight touches its intent."""
SILENT = timedelta(seconds=10)
"""An intent of another run that has not moved for this long (five missed heartbeats) is dead."""
IN_FLIGHT = timedelta(minutes=5)
"""An intent older than this by the wall clock is dead without waiting to watch it."""
_POLL = 0.25

ALREADY_DONE = "already done: the side-effect ledger has its result"
FOUND_IN_PLACE = "found in place at the provider: an earlier attempt had acted before recording its outcome"


async def call_once(spec: ActionSpec, params: BaseModel, context: ActionContext, ledger: Ledger) -> tuple[Any, str | None]:
    """Call the action unless the ledger shows it was done; returns (result, note)."""
    key = f"{context.idempotency_key}:{spec.name}"
    recorded_params = params.model_dump(mode="json", by_alias=True)
    claim, result = ledger.claim(key, spec.name, recorded_params, context.run_id)
    with _heartbeat(ledger, key, context.run_id):
        note = None
        if claim is Claim.UNKNOWN:
            claim, result, note = await _settle_unknown(spec, params, context, ledger, key, recorded_params)
        if claim is Claim.DONE:
            log.info("side effect already done", key=key, action=spec.name)
            return result, note or ALREADY_DONE
        try:
            result = await spec.run(params, context)
        except ActionFailed as exc:
            if exc.changed is False or spec.provider_idempotent:
                ledger.failed(key, REDACTOR.text(str(exc)))
            raise
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json", by_alias=True)
    ledger.done(key, REDACTOR(result))  # the ledger is printed by `siaga ledger --json`
    return result, None


async def _settle_unknown(
    spec: ActionSpec, params: BaseModel, context: ActionContext, ledger: Ledger, key: str, recorded: Any
) -> tuple[Claim, Any, str | None]:
    """An intent is there already: wait for its caller if it is alive, else find out at the provider."""
    while True:
        entry = await _until_settled_or_silent(ledger, key, context.run_id)
        if entry.state == "done":
            return Claim.DONE, entry.result, None
        if entry.state == "failed":
            claim, result = ledger.claim(key, spec.name, recorded, context.run_id)
            if claim is Claim.UNKNOWN:
                continue  # another run claimed it first: wait for that one
            return claim, result, None
        if entry.run_id == context.run_id or ledger.take_over(key, context.run_id, entry):
            break  # our own earlier attempt, or a dead caller's intent that is now ours
    if spec.provider_idempotent:
        return Claim.NEW, None, None
    why = "this action cannot check the provider"
    if spec.reconcile is not None:
        try:
            found = await spec.reconcile(params, context)
        except CannotReconcile as exc:
            why = str(exc)
        else:
            if found is None:
                log.info("side effect not in place at the provider: acting again", key=key, action=spec.name)
                return Claim.NEW, None, None
            if isinstance(found, BaseModel):
                found = found.model_dump(mode="json", by_alias=True)
            ledger.done(key, REDACTOR(found))
            log.info("side effect found in place at the provider", key=key, action=spec.name)
            return Claim.DONE, found, FOUND_IN_PLACE
    raise ActionFailed(
        f"{spec.name} may already have acted: an earlier attempt of this step stopped before "
        f"recording its outcome, and {why}",
        retryable=False,
        todo=f"check at the provider whether {spec.name} took effect, then run "
        f"`siaga ledger --resolve {key} --done` (it did) or `--retry` (it did not) and run the step again",
    )


async def _until_settled_or_silent(ledger: Ledger, key: str, run_id: str) -> Entry:
    """The entry once it has an outcome, or once the other run making the call has stopped
    its heartbeat; at once if the intent is our own run's (an earlier attempt of this step)."""
    entry = _get(ledger, key)
    seen, since = entry.updated_at, time.monotonic()
    while entry.state == "intent" and entry.run_id != run_id:
        if datetime.now(UTC) - as_utc(entry.updated_at) > IN_FLIGHT:
            break
        if entry.updated_at != seen:
            seen, since = entry.updated_at, time.monotonic()
        elif time.monotonic() - since >= SILENT.total_seconds():
            log.info("side effect in flight elsewhere fell silent", key=key, owner=entry.run_id)
            break
        await asyncio.sleep(_POLL)
        entry = _get(ledger, key)
    return entry


def _get(ledger: Ledger, key: str) -> Entry:
    entry = ledger.get(key)
    if entry is None:  # pragma: no cover - entries are never deleted
        raise RuntimeError(f"side-effect entry {key!r} vanished")
    return entry


@contextmanager
def _heartbeat(ledger: Ledger, key: str, run_id: str) -> Iterator[None]:
    """Touch `run_id`'s intent every HEARTBEAT until the block ends. A thread, so that a busy
    event loop cannot make a live call look dead."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT.total_seconds()):
            try:
                ledger.touch(key, run_id)
            except Exception as exc:  # the next beat tries again
                log.warning("side-effect heartbeat failed", key=key, error=f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=beat, name=f"siaga-heartbeat-{key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


