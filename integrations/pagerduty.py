"""`pagerduty.trigger` and `pagerduty.resolve`: page on-call through the PagerDuty Events API v2.

A ``type: pagerduty`` connection holds the integration's routing key::

    payments-oncall: {type: pagerduty, routing_key: secret://pd-payments-routing-key}

Both actions ``POST https://events.pagerduty.com/v2/enqueue`` with
``{"routing_key", "event_action", "dedup_key", "payload": {"summary", "source", "severity",
"custom_details"}}``; PagerDuty answers 202 ``{"status": "success", "message": "Event processed",
"dedup_key": ...}``, 400 with ``errors`` for an invalid event and 429 when rate limited.

The ``dedup_key`` is derived from the incident (or run) and the step, so a retried or duplicated
trigger adds to the same PagerDuty incident instead of paging twice: calling again is always safe.
A resolve names the trigger's key (``dedup_key: "{{ steps.page.output.dedup_key }}"``) or the id
of the step that triggered (``trigger_step: page``), from which the same key is derived.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import httpx
from pydantic import Field, model_validator

from siaga.actions import (
    DRILL_PREFIX,
    ActionContext,
    ActionFailed,
    ActionParams,
    ActionSpec,
    Connection,
    Mode,
    Risk,
)

from . import _http
from ._http import http_client
from ._notify import Delivery, configured, to_outbox

__all__ = [
    "ACTIONS",
    "PagerDutyConnection",
    "PagerDutyEvent",
    "PagerDutyResolve",
    "PagerDutyTrigger",
    "dedup_key_for",
    "resolve",
    "trigger",
]

Severity = Literal["critical", "error", "warning", "info"]


class PagerDutyConnection(Connection):
    """A PagerDuty service's Events API v2 integration."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key: str = Field(
        pattern=r"^secret://", description="secret://NAME of the integration (routing) key."
    )
    events_url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="The Events API (tests point it at loopback).",
    )
    source: str = Field(default="siaga", description="The event's default `source`.")
    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for PagerDuty.")


class PagerDutyTrigger(ActionParams):
    """Open (or add to) a PagerDuty incident: pages whoever is on call for the service."""

    summary: str = Field(
        min_length=1, max_length=1024, description="What is wrong, as the page shows it."
    )
    severity: Severity = Field(default="critical", description="critical, error, warning or info.")
    source: str | None = Field(
        default=None, description="Where it happens (default: the connection's source)."
    )
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(default=None, alias="class")
    custom_details: dict[str, Any] = Field(
        default_factory=dict, description="Free-form details shown with the page."
    )
    dedup_key: str | None = Field(
        default=None,
        max_length=255,
        description="Default: derived from the incident (or run) and the step.",
    )
    connection: str | None = Field(
        default=None, description="The `type: pagerduty` connection to use."
    )


class PagerDutyResolve(ActionParams):
    """Resolve the PagerDuty incident an earlier `pagerduty.trigger` opened."""

    dedup_key: str | None = Field(
        default=None,
        max_length=255,
        description="The trigger's key, e.g. {{ steps.page.output.dedup_key }}.",
    )
    trigger_step: str | None = Field(
        default=None,
        description="Or the id of the step that triggered: its key is derived the same way.",
    )
    connection: str | None = Field(
        default=None, description="The `type: pagerduty` connection to use."
    )

    @model_validator(mode="after")
    def _one_key(self) -> PagerDutyResolve:
        if (self.dedup_key is None) == (self.trigger_step is None):
            raise ValueError("give either dedup_key or trigger_step")
        return self


class PagerDutyEvent(Delivery):
    """An event PagerDuty accepted (or the outbox recorded)."""

    delivered_via: Literal["pagerduty", "outbox"]
    event_action: Literal["trigger", "resolve"]
    dedup_key: str = Field(description="Pass it to pagerduty.resolve.")
    status: str | None = Field(default=None, description="PagerDuty's status (success).")
    message: str | None = Field(default=None, description="PagerDuty's message (Event processed).")


def dedup_key_for(context: ActionContext, step_id: str | None = None) -> str:
    """The dedup key of a trigger made by `step_id` (default: this step) in this incident or run."""
    key = (replace(context, step_id=step_id) if step_id else context).idempotency_key
    return f"siaga:{key}"[:255]


async def trigger(
    params: PagerDutyTrigger, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> PagerDutyEvent:
    connection = configured(context, PagerDutyConnection, params.connection)
    key = params.dedup_key or dedup_key_for(context)
    if connection is None:
        details = "\n".join(f"{k}: {v}" for k, v in params.custom_details.items())
        via, entry = await to_outbox(
            context,
            provider="PagerDuty",
            to="pagerduty",
            subject=f"[{params.severity}] {params.summary}",
            message=details or params.summary,
        )
        return PagerDutyEvent(
            delivered_via=via,
            to="pagerduty",
            outbox_id=entry,
            event_action="trigger",
            dedup_key=key,
        )
    payload: dict[str, Any] = {
        "summary": params.summary,
        "source": params.source or connection.source,
        "severity": params.severity,
    }
    for name in ("component", "group"):
        if getattr(params, name):
            payload[name] = getattr(params, name)
    if params.class_:
        payload["class"] = params.class_
    if params.custom_details:
        payload["custom_details"] = params.custom_details
    return await _enqueue(connection, context, client, "trigger", key, payload)


async def resolve(
    params: PagerDutyResolve, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> PagerDutyEvent:
    connection = configured(context, PagerDutyConnection, params.connection)
    key = params.dedup_key or dedup_key_for(context, params.trigger_step)
    if connection is None:
        marked = DRILL_PREFIX if context.mode is Mode.DRILL else ""  # it has no text a drill would mark
        via, entry = await to_outbox(
            context,
            provider="PagerDuty",
            to="pagerduty",
            subject=f"{marked}resolved",
            message=f"{marked}Resolve {key}",
        )
        return PagerDutyEvent(
            delivered_via=via,
            to="pagerduty",
            outbox_id=entry,
            event_action="resolve",
            dedup_key=key,
        )
    return await _enqueue(connection, context, client, "resolve", key, None)


async def _enqueue(
    connection: PagerDutyConnection,
    context: ActionContext,
    client: httpx.AsyncClient | None,
    action: Literal["trigger", "resolve"],
    key: str,
    payload: dict[str, Any] | None,
) -> PagerDutyEvent:
    event: dict[str, Any] = {
        "routing_key": context.secret(connection.routing_key),
        "event_action": action,
        "dedup_key": key,
    }
    if payload is not None:
        event["payload"] = payload
    async with http_client(client, connection.timeout) as http:
        try:
            response = await _http.send(
                http,
                "POST",
                connection.events_url,
                json=event,
                provider="PagerDuty",
                idempotent=True,
                describe=_error,
            )
        except ActionFailed as exc:
            if not exc.retryable:
                exc.todo = (
                    f"check the routing key in {connection.routing_key} and the event as PagerDuty's "
                    "errors say, then run the step again"
                )
            raise
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    return PagerDutyEvent(
        delivered_via="pagerduty",
        to="pagerduty",
        event_action=action,
        dedup_key=str(answer.get("dedup_key") or key),
        status=answer.get("status"),
        message=answer.get("message"),
    )


def _error(response: httpx.Response) -> str:
    """PagerDuty's ``{"status", "message", "errors": [...]}`` as one line."""
    try:
        answer = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(answer, dict):
        return response.text[:300]
    errors = answer.get("errors") or []
    text = str(answer.get("message") or answer.get("status") or response.reason_phrase)
    return f"{text}: {'; '.join(map(str, errors))}" if errors else text


ACTIONS = (
    ActionSpec(
        name="pagerduty.trigger",
        params=PagerDutyTrigger,
        run=trigger,
        risk=Risk.NOTIFY,
        summary="Page on-call through PagerDuty (Events API v2); to the outbox when PagerDuty is not configured.",
        undo="pagerduty.resolve",
        message_fields=("summary",),
        provider_idempotent=True,
    ),
    ActionSpec(
        name="pagerduty.resolve",
        params=PagerDutyResolve,
        run=resolve,
        risk=Risk.NOTIFY,
        summary="Resolve the PagerDuty incident a pagerduty.trigger opened, by its dedup key.",
        provider_idempotent=True,
    ),
)
