"""Calls that change the world go through the side-effect ledger, so that retries, restarts
and duplicate runs of the same incident never act twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from siaga.actions import ActionContext, ActionFailed, ActionSpec
from siaga.ledger import Claim, Ledger
from siaga.logs import get_logger

log = get_logger("siaga.effects")

IN_FLIGHT = timedelta(minutes=5)
"""An intent newer than this, left by another run, may still be in flight: wait for it."""


async def call_once(spec: ActionSpec, params: BaseModel, context: ActionContext, ledger: Ledger) -> tuple[Any, str | None]:
    """Call the action unless the ledger shows it was done; returns (result, note)."""
    key = f"{context.idempotency_key}:{spec.name}"
    recorded_params = params.model_dump(mode="json", by_alias=True)
    claim, result = ledger.claim(key, spec.name, recorded_params, context.run_id)
    if claim is Claim.UNKNOWN:
        claim, result = await _settle_unknown(spec, params, context, ledger, key, recorded_params)
    if claim is Claim.DONE:
        log.info("side effect already done", key=key, action=spec.name)
        return result, "already done: the side-effect ledger has its result"
    try:
        result = await spec.run(params, context)
    except ActionFailed as exc:
        if exc.changed is False or spec.provider_idempotent:
            ledger.failed(key, str(exc))
        raise
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json", by_alias=True)
    ledger.done(key, result)
    return result, None


async def _settle_unknown(
    spec: ActionSpec, params: BaseModel, context: ActionContext, ledger: Ledger, key: str, recorded: Any
) -> tuple[Claim, Any]:
    entry = ledger.get(key)
    if entry and entry.run_id != context.run_id and datetime.now(UTC) - _aware(entry.updated_at) < IN_FLIGHT:
        # A duplicate run is making this call right now: wait for its outcome.
        while entry and entry.state == "intent" and datetime.now(UTC) - _aware(entry.updated_at) < IN_FLIGHT:
            await asyncio.sleep(0.25)
            entry = ledger.get(key)
        if entry and entry.state == "done":
            return Claim.DONE, entry.result
        if entry and entry.state == "failed":
            return ledger.claim(key, spec.name, recorded, context.run_id)
    if spec.provider_idempotent:
        return Claim.NEW, None
    if spec.reconcile is not None:
        found = await spec.reconcile(params, context)
        if found is not None:
            if isinstance(found, BaseModel):
                found = found.model_dump(mode="json", by_alias=True)
            ledger.done(key, found)
            log.info("side effect found in place at the provider", key=key, action=spec.name)
            return Claim.DONE, found
        log.info("side effect not in place at the provider: acting again", key=key, action=spec.name)
        return Claim.NEW, None
    raise ActionFailed(
        f"{spec.name} may already have acted: an earlier attempt of this step stopped before "
        "recording its outcome, and this action cannot check the provider",
        retryable=False,
        todo=f"check at the provider whether {spec.name} took effect, then run "
        f"`siaga ledger --resolve {key} --done` (it did) or `--retry` (it did not) and run the step again",
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
