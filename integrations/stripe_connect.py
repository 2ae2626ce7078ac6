"""The `stripe` provider of the payments actions: pause the payouts of Stripe Connect accounts.

In ``connections.yaml``::

    connections:
      stripe:
        type: stripe
        api_key: secret://stripe-secret-key        # sk_live_... or a restricted key rk_...
        # base_url: https://api.stripe.com, api_version: 2024-06-20

A freeze sets each connected account in scope to manual payouts (``POST /v1/accounts/{id}`` with
``settings[payouts][schedule][interval]=manual``), so Stripe stops paying its balance out. The
account's previous schedule goes into the result and, in the same request, into the account's
metadata (``siaga_freeze_key``, ``siaga_payout_schedule``): an unfreeze restores exactly that
schedule, even from another run, and a retry or a restart sees which accounts are already frozen.
Accounts already on manual payouts are left alone, by the freeze and so by the unfreeze.

Every update carries an ``Idempotency-Key`` (this step's key and the account id) and a pinned
``Stripe-Version``. Payments themselves, and payouts Stripe has already created, are not stopped:
scopes `all` and `payment_method` need a payment switch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

from siaga.actions import ActionContext, ActionFailed, Connection

from . import _http
from ._freeze import (
    Amount,
    FreezeParams,
    Preview,
    PreviewParams,
    Scope,
    UnfreezeParams,
    amounts_text,
    describe_scope,
    scope_kind,
    scope_value,
)

__all__ = ["FREEZE_KEY", "PREVIOUS_SCHEDULE", "StripeConnection"]

PROVIDER = "stripe"
FREEZE_KEY = "siaga_freeze_key"
"""Account metadata: the idempotency key of the freeze that set the account to manual payouts."""
PREVIOUS_SCHEDULE = "siaga_payout_schedule"
"""Account metadata: the payout schedule before that freeze, as JSON."""
FREEZE_REASON = "siaga_freeze_reason"

_SCHEDULE_FIELDS = ("weekly_anchor", "monthly_anchor", "weekly_payout_days", "monthly_payout_days")
_ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)  # Stripe's zero-decimal currencies: amounts are already in major units


class StripeConnection(Connection):
    """A Stripe platform account, reached with its secret key."""

    type: Literal["stripe"] = "stripe"
    api_key: str = Field(
        pattern=r"^secret://",
        description="secret://NAME of the secret (sk_...) or restricted (rk_...) key.",
    )
    base_url: str = Field(default="https://api.stripe.com", pattern=r"^https?://")
    api_version: str = Field(default="2024-06-20", description="Sent as Stripe-Version.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for Stripe.")


class _Stripe:
    """Stripe's REST API as the payments actions use it."""

    def __init__(
        self, conn: StripeConnection, context: ActionContext, http: httpx.AsyncClient
    ) -> None:
        self.conn = conn
        self.http = http
        self.headers = {
            "Authorization": f"Bearer {context.secret(conn.api_key)}",
            "Stripe-Version": conn.api_version,
        }

    def _url(self, path: str) -> str:
        return self.conn.base_url.rstrip("/") + path

    async def get(
        self, path: str, query: Mapping[str, Any] | None = None, account: str | None = None
    ) -> Any:
        headers = {**self.headers, **({"Stripe-Account": account} if account else {})}
        response = await _http.send(
            self.http,
            "GET",
            self._url(path),
            provider="Stripe",
            idempotent=True,
            describe=_describe,
            params=dict(query or {}),
            headers=headers,
        )
        return response.json()

    async def list(
        self, path: str, query: Mapping[str, Any] | None = None, account: str | None = None
    ) -> list[Any]:
        """Every item of a list endpoint, page by page (``limit``, ``starting_after``, ``has_more``)."""
        items: list[Any] = []
        after: str | None = None
        while True:
            page = await self.get(
                path,
                {**(query or {}), "limit": 100, **({"starting_after": after} if after else {})},
                account,
            )
            data = page.get("data") or []
            items.extend(data)
            if not page.get("has_more") or not data:
                return items
            after = data[-1]["id"]

    async def update(self, path: str, form: list[tuple[str, str]], idempotency_key: str) -> Any:
        headers = {**self.headers, "Idempotency-Key": idempotency_key}
        response = await _http.send(
            self.http,
            "POST",
            self._url(path),
            provider="Stripe",
            idempotent=True,
            describe=_describe,
            data=dict(form),
            headers=headers,
        )
        return response.json()


async def freeze(
    conn: StripeConnection,
    name: str,
    params: FreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any]:
    api = _Stripe(conn, context, http)
    key = context.idempotency_key
    plan = _freeze_plan(await _accounts(api, params.scope, "freeze"), key)
    done = list(plan.frozen)
    for account in plan.to_freeze:
        previous = _restorable(_schedule(account))
        form = _form(
            {
                "settings": {"payouts": {"schedule": {"interval": "manual"}}},
                "metadata": {
                    FREEZE_KEY: key,
                    PREVIOUS_SCHEDULE: json.dumps(previous),
                    FREEZE_REASON: params.reason[:500],
                },
            }
        )
        try:
            await api.update(
                f"/v1/accounts/{quote(account['id'], safe='')}",
                form,
                _account_key(key, account["id"]),
            )
        except ActionFailed as exc:
            raise _partly(
                exc, "froze", [d["account"] for d in done[len(plan.frozen) :]], account["id"]
            ) from None
        done.append({"account": account["id"], "previous": previous})
    return _freeze_result(name, params, context, done, plan.untouched)


async def freeze_in_place(
    conn: StripeConnection,
    name: str,
    params: FreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any] | None:
    """The freeze's result if every account in scope is on manual payouts, else None."""
    api = _Stripe(conn, context, http)
    plan = _freeze_plan(await _accounts(api, params.scope, "freeze"), context.idempotency_key)
    if plan.to_freeze:
        return None
    return {
        **_freeze_result(name, params, context, plan.frozen, plan.untouched),
        "reconciled": True,
    }


async def unfreeze(
    conn: StripeConnection,
    name: str,
    params: UnfreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any]:
    api = _Stripe(conn, context, http)
    plan = _unfreeze_plan(await _accounts(api, params.scope, "unfreeze"), params.freeze_key)
    restored: list[dict[str, Any]] = []
    for account, schedule in plan.to_restore:
        form = _form(
            {
                "settings": {"payouts": {"schedule": schedule}},
                "metadata": {
                    FREEZE_KEY: "",
                    PREVIOUS_SCHEDULE: "",
                    FREEZE_REASON: "",
                },  # "" deletes a key
            }
        )
        try:
            await api.update(
                f"/v1/accounts/{quote(account['id'], safe='')}",
                form,
                _account_key(context.idempotency_key, account["id"]),
            )
        except ActionFailed as exc:
            raise _partly(
                exc, "restored", [r["account"] for r in restored], account["id"]
            ) from None
        restored.append({"account": account["id"], "schedule": schedule})
    return _unfreeze_result(name, params, context, restored, plan.left_alone)


async def unfreeze_in_place(
    conn: StripeConnection,
    name: str,
    params: UnfreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any] | None:
    """The unfreeze's result if no account in scope is still frozen by Siaga, else None."""
    api = _Stripe(conn, context, http)
    plan = _unfreeze_plan(await _accounts(api, params.scope, "unfreeze"), params.freeze_key)
    if plan.to_restore:
        return None
    return {**_unfreeze_result(name, params, context, [], plan.left_alone), "reconciled": True}


async def preview(
    conn: StripeConnection,
    name: str,
    params: PreviewParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> Preview:
    api = _Stripe(conn, context, http)
    accounts = await _accounts(api, params.scope, "freeze")
    affected = [a for a in accounts if _schedule(a).get("interval") != "manual"]
    totals: dict[str, int] = {}
    pending_payouts = 0
    for account in affected:
        balance = await api.get("/v1/balance", account=account["id"])
        for entry in [*balance.get("available", []), *balance.get("pending", [])]:
            currency = str(entry["currency"]).lower()
            totals[currency] = totals.get(currency, 0) + int(entry["amount"])
        pending_payouts += len(
            await api.list("/v1/payouts", {"status": "pending"}, account=account["id"])
        )
    value = [Amount(currency=c.upper(), amount=_major(c, totals[c])) for c in sorted(totals)]
    manual = len(accounts) - len(affected)
    summary = (
        f"Pausing payouts of {len(affected)} connected account{'s' if len(affected) != 1 else ''} would hold "
        f"{amounts_text(value)} (available and pending balance); "
        f"{pending_payouts} payout{'s' if pending_payouts != 1 else ''} already created would still be paid"
        + (
            f"; {manual} account{'s' if manual != 1 else ''} already on manual payouts"
            if manual
            else ""
        )
    )
    return Preview(
        provider=PROVIDER,
        connection=name,
        scope=describe_scope(params.scope),
        merchant_count=len(affected),
        merchants=[a["id"] for a in affected][:100],
        pending_payouts=pending_payouts,
        value=value,
        summary=summary,
        details={"already_manual": [a["id"] for a in accounts if a not in affected][:100]},
    )


class _FreezePlan:
    def __init__(self) -> None:
        self.frozen: list[dict[str, Any]] = []  # frozen by this key already
        self.untouched: list[str] = []  # on manual payouts already, not by this key
        self.to_freeze: list[dict[str, Any]] = []


def _freeze_plan(accounts: list[dict[str, Any]], key: str) -> _FreezePlan:
    plan = _FreezePlan()
    for account in accounts:
        metadata = account.get("metadata") or {}
        if _schedule(account).get("interval") != "manual":
            plan.to_freeze.append(account)
        elif metadata.get(FREEZE_KEY) == key:
            plan.frozen.append({"account": account["id"], "previous": _previous(metadata)})
        else:
            plan.untouched.append(account["id"])
    return plan


class _UnfreezePlan:
    def __init__(self) -> None:
        self.to_restore: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.left_alone: list[dict[str, str]] = []


def _unfreeze_plan(accounts: list[dict[str, Any]], freeze_key: str | None) -> _UnfreezePlan:
    plan = _UnfreezePlan()
    for account in accounts:
        metadata = account.get("metadata") or {}
        theirs = metadata.get(FREEZE_KEY)
        if not theirs or (freeze_key is not None and theirs != freeze_key):
            continue  # not frozen by Siaga (or by another freeze): not ours to lift
        previous = _previous(metadata)
        if _schedule(account).get("interval") != "manual":
            plan.left_alone.append(
                {
                    "account": account["id"],
                    "why": "its payout schedule was changed by hand since the freeze",
                }
            )
        elif not previous.get("interval"):
            plan.left_alone.append(
                {"account": account["id"], "why": f"its {PREVIOUS_SCHEDULE} metadata is unreadable"}
            )
        else:
            plan.to_restore.append((account, previous))
    return plan


async def _accounts(api: _Stripe, scope: Scope, action: str) -> list[dict[str, Any]]:
    kind = scope_kind(scope)
    if kind in ("all", "payment_method"):
        raise ActionFailed(
            f"a stripe connection can {action} payouts only, not {describe_scope(scope)}",
            changed=False,
            todo="use scope `payouts` or `{merchants: [acct_...]}` with this connection, "
            "or a payment_switch connection for this scope",
        )
    if kind == "payouts":
        return await api.list("/v1/accounts")
    return [await api.get(f"/v1/accounts/{quote(m, safe='')}") for m in scope.merchants]  # type: ignore[union-attr]


def _schedule(account: Mapping[str, Any]) -> dict[str, Any]:
    return ((account.get("settings") or {}).get("payouts") or {}).get("schedule") or {}


def _restorable(schedule: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a payout schedule a freeze changes and an unfreeze restores."""
    kept = {f: schedule[f] for f in _SCHEDULE_FIELDS if schedule.get(f) not in (None, [])}
    return {"interval": schedule.get("interval") or "daily", **kept}


def _previous(metadata: Mapping[str, Any]) -> dict[str, Any]:
    try:
        previous = json.loads(metadata.get(PREVIOUS_SCHEDULE) or "{}")
    except ValueError:
        return {}
    return previous if isinstance(previous, dict) else {}


def _form(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding: ``settings[payouts][schedule][interval]=manual``, lists as ``[0]``."""
    pairs: list[tuple[str, str]] = []
    for key, item in value.items():
        name = f"{prefix}[{key}]" if prefix else key
        if isinstance(item, Mapping):
            pairs += _form(item, name)
        elif isinstance(item, list):
            for index, element in enumerate(item):
                pairs.append((f"{name}[{index}]", str(element)))
        else:
            pairs.append((name, str(item)))
    return pairs


def _account_key(key: str, account: str) -> str:
    """Stripe's Idempotency-Key for one account's update (at most 255 characters)."""
    full = f"{key}:{account}"
    return full if len(full) <= 255 else hashlib.sha256(full.encode()).hexdigest()


def _major(currency: str, minor: int) -> str:
    if currency in _ZERO_DECIMAL:
        return str(minor)
    return format(Decimal(minor).scaleb(-2), "f")


def _partly(error: ActionFailed, verb: str, done: list[str], failed_at: str) -> ActionFailed:
    """`error`, saying which accounts this attempt had already changed."""
    if not done:
        message = f"{error} (account {failed_at}; no account was changed by this attempt)"
        return ActionFailed(
            message,
            retryable=error.retryable,
            changed=error.changed,
            todo=error.todo,
            retry_after=error.retry_after,
        )
    return ActionFailed(
        f"{error} (account {failed_at}; this attempt had already {verb} {', '.join(done)})",
        retryable=error.retryable,
        changed=True,
        retry_after=error.retry_after,
        todo=(error.todo + "; " if error.todo else "")
        + f"running the step again skips the accounts already {verb}",
    )


def _describe(response: httpx.Response) -> str:
    """Stripe's error: ``{"error": {"type", "code", "message", "param"}}``."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
    kind = "/".join(str(error[k]) for k in ("type", "code") if error.get(k))
    param = f", param {error['param']}" if error.get("param") else ""
    return f"{error.get('message') or 'no message'} ({kind}{param})"


def _freeze_result(
    name: str,
    params: FreezeParams,
    context: ActionContext,
    frozen: list[dict[str, Any]],
    untouched: list[str],
) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "connection": name,
        "action": "freeze",
        "scope": scope_value(params.scope),
        "reason": params.reason,
        "key": context.idempotency_key,
        "frozen": frozen,
        "already_manual": untouched,
        "reconciled": False,
    }


def _unfreeze_result(
    name: str,
    params: UnfreezeParams,
    context: ActionContext,
    restored: list[dict[str, Any]],
    left_alone: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "connection": name,
        "action": "unfreeze",
        "scope": scope_value(params.scope),
        "reason": params.reason,
        "key": context.idempotency_key,
        "freeze_key": params.freeze_key,
        "restored": restored,
        "left_alone": left_alone,
        "reconciled": False,
    }
