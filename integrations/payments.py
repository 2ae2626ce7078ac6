"""`payments.preview`, `payments.freeze`, `payments.unfreeze`: stop money moving in a crisis, show
approvers what that holds back, and let it move again.

The provider is the connection's type: `payment_switch` (a company's own kill switch over HTTP,
see `payment_switch`) or `stripe` (pauses the payouts of Stripe Connect accounts, see
`stripe_connect`). A step names its connection with `connection:`, else the only (or the
`default: true`) connection of either type is used.

A freeze is destructive and its undo partner is the unfreeze: a runbook writes
``undo: payments.unfreeze`` and a later failure lifts the freeze with the same scope. After a
crash between the provider's answer and the ledger's record, a freeze is looked up at the provider
(the switch's status endpoint; the Stripe accounts' schedules and metadata) before it is made again.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import httpx

from siaga.actions import ActionContext, ActionFailed, ActionSpec, Connection, Risk

from . import payment_switch, stripe_connect
from ._freeze import (
    FreezeParams,
    MerchantScope,
    PaymentMethodScope,
    Preview,
    PreviewParams,
    UnfreezeParams,
)
from ._http import http_client
from .payment_switch import PaymentSwitch
from .stripe_connect import StripeConnection

__all__ = [
    "ACTIONS",
    "FreezeParams",
    "MerchantScope",
    "PaymentMethodScope",
    "PaymentSwitch",
    "Preview",
    "PreviewParams",
    "StripeConnection",
    "UnfreezeParams",
]

_PROVIDERS: dict[str, tuple[type[Connection], ModuleType]] = {
    "payment_switch": (PaymentSwitch, payment_switch),
    "stripe": (StripeConnection, stripe_connect),
}


async def freeze(
    params: FreezeParams, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    name, conn, provider = _connection(context, params.connection)
    async with http_client(client, conn.timeout) as http:
        result: dict[str, Any] = await provider.freeze(conn, name, params, context, http)
    return result


async def unfreeze(
    params: UnfreezeParams, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> dict[str, Any]:
    name, conn, provider = _connection(context, params.connection)
    async with http_client(client, conn.timeout) as http:
        result: dict[str, Any] = await provider.unfreeze(conn, name, params, context, http)
    return result


async def preview(
    params: PreviewParams, context: ActionContext, *, client: httpx.AsyncClient | None = None
) -> Preview:
    name, conn, provider = _connection(context, params.connection)
    async with http_client(client, conn.timeout) as http:
        result: Preview = await provider.preview(conn, name, params, context, http)
    return result


async def preview_freeze(params: FreezeParams, context: ActionContext) -> Preview:
    """What this freeze would hold back, for the people at its approval gate."""
    return await preview(PreviewParams(scope=params.scope, connection=params.connection), context)


async def reconcile_freeze(params: FreezeParams, context: ActionContext) -> dict[str, Any] | None:
    name, conn, provider = _connection(context, params.connection)
    async with http_client(None, conn.timeout) as http:
        found: dict[str, Any] | None = await provider.freeze_in_place(
            conn, name, params, context, http
        )
    return found


async def reconcile_unfreeze(
    params: UnfreezeParams, context: ActionContext
) -> dict[str, Any] | None:
    name, conn, provider = _connection(context, params.connection)
    async with http_client(None, conn.timeout) as http:
        found: dict[str, Any] | None = await provider.unfreeze_in_place(
            conn, name, params, context, http
        )
    return found


def _connection(context: ActionContext, name: str | None) -> tuple[str, Any, ModuleType]:
    """The connection `name`, or the only (or `default: true`) payments connection."""
    kinds = " or ".join(f"`type: {kind}`" for kind in _PROVIDERS)
    if name is None:
        candidates = {n: c for n, c in context.connections.items() if c.get("type") in _PROVIDERS}
        defaults = [n for n, c in candidates.items() if c.get("default")]
        if len(candidates) == 1:
            name = next(iter(candidates))
        elif len(defaults) == 1:
            name = defaults[0]
        else:
            raise ActionFailed(
                f"{'no' if not candidates else 'several'} payments connections ({kinds}) configured",
                changed=False,
                todo="name one with the step's `connection:` parameter, or configure exactly one "
                "(or mark one `default: true`) in connections.yaml",
            )
    kind = (context.connections.get(name) or {}).get("type")
    if name in context.connections and kind not in _PROVIDERS:
        raise ActionFailed(
            f"connection {name!r} is of type {kind!r}; the payments actions take {kinds}",
            changed=False,
            todo="name a payments connection in the step's `connection:` parameter",
        )
    model, provider = _PROVIDERS.get(str(kind), _PROVIDERS["payment_switch"])
    return name, context.connection(model, name), provider


ACTIONS = (
    ActionSpec(
        name="payments.preview",
        params=PreviewParams,
        run=preview,
        risk=Risk.READ,
        summary="Show what a freeze would hold back: merchants, pending payouts, value (for approvers).",
    ),
    ActionSpec(
        name="payments.freeze",
        params=FreezeParams,
        run=freeze,
        risk=Risk.DESTRUCTIVE,
        summary="Freeze payments or payouts (all, payouts, some merchants, a payment method), with a reason.",
        undo="payments.unfreeze",
        reconcile=reconcile_freeze,
        preview=preview_freeze,
    ),
    ActionSpec(
        name="payments.unfreeze",
        params=UnfreezeParams,
        run=unfreeze,
        risk=Risk.CHANGE,
        summary="Lift a freeze: restore payments or payouts in the scope as they were.",
        reconcile=reconcile_unfreeze,
    ),
)
