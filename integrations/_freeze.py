"""What a payments freeze covers (its scope), what the freeze actions take, and what a preview
shows approvers. Shared by the payment providers; no I/O."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, Field

from siaga.actions import ActionParams
from siaga.canonical import canonical_json


class MerchantScope(ActionParams):
    """Only these merchants (for Stripe: connected account ids, ``acct_...``)."""

    merchants: list[str] = Field(
        min_length=1, description="Merchant ids (Stripe: connected account ids)."
    )


class PaymentMethodScope(ActionParams):
    """Only payments by this method."""

    payment_method: str = Field(
        min_length=1, description="A payment method: card, qris, ewallet..."
    )


Scope = Literal["all", "payouts"] | MerchantScope | PaymentMethodScope
"""`all` (every payment and payout), `payouts`, `{merchants: [ids]}` or `{payment_method: name}`."""

_SCOPE_HELP = (
    "What to freeze: `all` (every payment and payout), `payouts` (every payout), "
    "`{merchants: [id, ...]}` or `{payment_method: name}`."
)
_CONNECTION_HELP = (
    "The connection to use (a `payment_switch` or `stripe` connection in connections.yaml); "
    "default: the only one, or the one marked `default: true`."
)


class FreezeParams(ActionParams):
    """Freeze money movement in a scope, with a reason."""

    scope: Scope = Field(description=_SCOPE_HELP)
    reason: str = Field(
        min_length=1, description="Why: sent to the provider and kept in the run's record."
    )
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class UnfreezeParams(ActionParams):
    """Let money move again in a scope."""

    scope: Scope = Field(description=_SCOPE_HELP)
    reason: str = Field(default="", description="Why the freeze ends.")
    freeze_key: str | None = Field(
        default=None,
        description="Lift only the freeze made under this key (a freeze step's `output.key`); "
        "default: every freeze Siaga made in the scope.",
    )
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class PreviewParams(ActionParams):
    """What a freeze of a scope would hold back."""

    scope: Scope = Field(description=_SCOPE_HELP)
    connection: str | None = Field(default=None, description=_CONNECTION_HELP)


class Amount(BaseModel):
    """An amount in major units (``"1234.50"``) and its ISO currency code."""

    currency: str
    amount: str


class Preview(BaseModel):
    """What freezing `scope` would hold back, as approvers see it."""

    provider: str
    connection: str
    scope: str
    merchant_count: int | None
    merchants: list[str] = Field(description="Merchant ids in scope (the first 100).")
    pending_payouts: int | None
    value: list[Amount]
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)


def scope_kind(scope: Scope) -> str:
    """``all``, ``payouts``, ``merchants`` or ``payment_method``."""
    if isinstance(scope, MerchantScope):
        return "merchants"
    if isinstance(scope, PaymentMethodScope):
        return "payment_method"
    return scope


def scope_value(scope: Scope) -> str | dict[str, Any]:
    """The scope as plain data, as a runbook writes it (merchants sorted)."""
    if isinstance(scope, MerchantScope):
        return {"merchants": sorted(scope.merchants)}
    if isinstance(scope, PaymentMethodScope):
        return {"payment_method": scope.payment_method}
    return scope


def describe_scope(scope: Scope) -> str:
    """``all payments and payouts``, ``payouts``, ``merchants m1, m2``, ``payment method qris``."""
    if isinstance(scope, MerchantScope):
        return "merchants " + ", ".join(scope.merchants)
    if isinstance(scope, PaymentMethodScope):
        return f"payment method {scope.payment_method}"
    return "all payments and payouts" if scope == "all" else "payouts"


def same_scope(ours: Scope, theirs: Any) -> bool:
    """Whether `theirs` (a provider's JSON) names the same scope as `ours`."""
    if isinstance(theirs, dict) and isinstance(theirs.get("merchants"), list):
        theirs = {**theirs, "merchants": sorted(map(str, theirs["merchants"]))}
    return canonical_json(theirs) == canonical_json(scope_value(ours))


def decimal_text(value: Any) -> str:
    """A provider's number as plain decimal text; raise ValueError if it is none."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a number")
    return format(number, "f")


def amounts_text(value: list[Amount]) -> str:
    """``IDR 1500000.00 and USD 12.50`` (``nothing`` when empty)."""
    return " and ".join(f"{a.currency.upper()} {a.amount}" for a in value) or "nothing"
