"""The `payment_switch` provider of the payments actions: a company's own kill switch over HTTP.

In ``connections.yaml``::

    connections:
      switch:
        type: payment_switch
        base_url: https://switch.internal.example
        auth: {bearer: secret://payment-switch-token}
        # or  auth: {basic: {username: siaga, password: secret://switch-password}}
        # or  auth: {header: X-Switch-Key, value: secret://switch-key}
        # method: POST, freeze_path: /freeze, unfreeze_path: /unfreeze,
        # status_path: /status (null if the switch cannot be asked), preview_path: /preview,
        # body: a JSON value or a text, with {{ }} templates (see DEFAULT_BODY)

What Siaga expects of the switch:

* **freeze, unfreeze**: `method` to the path with the rendered `body` and an ``Idempotency-Key``
  header (this step's key); any 2xx is success, a 4xx a refusal whose message is shown.
* **status** (``GET``), for finding out after a crash whether a freeze took effect: JSON listing the
  freezes in force, ``{"freezes": [{"scope": "payouts", "key": "<idempotency key>", ...}]}``.
  An entry is this step's freeze when its `key` is this step's key; entries without a key match
  by scope. A switch that answers otherwise sets `frozen_when`: an expression over `status` (the
  JSON), `scope`, `scope_kind` and `key` (none when asking whether the scope is frozen at all),
  such as ``key in status.active_keys``.
* **preview** (``GET`` with ``?scope=<kind>`` and ``merchant=<id>``... or ``payment_method=<name>``):
  ``{"merchants": [ids] or a count, "pending_payouts": 12, "value": "1500000.00", "currency": "IDR"}``
  or ``"value": [{"currency": "IDR", "amount": "1500000.00"}, ...]``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from siaga.actions import ActionContext, ActionFailed, CannotReconcile, Connection
from siaga.runbook.templates import TemplateError, evaluate_condition, render_value
from siaga.secrets import REDACTOR, is_secret_reference

from . import _http
from ._freeze import (
    Amount,
    FreezeParams,
    Preview,
    PreviewParams,
    Scope,
    UnfreezeParams,
    amounts_text,
    decimal_text,
    describe_scope,
    same_scope,
    scope_kind,
    scope_value,
)

__all__ = [
    "DEFAULT_BODY",
    "BasicAuth",
    "BasicCredentials",
    "BearerAuth",
    "HeaderAuth",
    "PaymentSwitch",
]

PROVIDER = "payment_switch"
_SECRET = r"^secret://"

DEFAULT_BODY: dict[str, str] = {
    "action": "{{ action }}",
    "scope": "{{ scope }}",
    "reason": "{{ reason }}",
    "idempotency_key": "{{ key }}",
    "incident": "{{ incident_id }}",
}
"""The body sent when the connection names none. Templates read `action` (freeze or unfreeze),
`scope` (``"payouts"``, ``{"merchants": [...]}``...), `scope_kind`, `merchants`, `payment_method`,
`reason`, `key` (this step's idempotency key), `freeze_key` (for an unfreeze: the freeze it
lifts, if given), `incident_id`, `runbook` and `step`."""


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BearerAuth(_Auth):
    """``Authorization: Bearer <token>``."""

    bearer: str = Field(pattern=_SECRET, description="secret://NAME of the token.")


class BasicCredentials(_Auth):
    username: str = Field(description="The user name (or a secret://NAME).")
    password: str = Field(pattern=_SECRET, description="secret://NAME of the password.")


class BasicAuth(_Auth):
    """``Authorization: Basic ...``."""

    basic: BasicCredentials


class HeaderAuth(_Auth):
    """A header of the switch's own, such as ``X-Api-Key``."""

    header: str = Field(min_length=1)
    value: str = Field(pattern=_SECRET, description="secret://NAME of the header's value.")


class PaymentSwitch(Connection):
    """A payment kill switch reached over HTTP."""

    type: Literal["payment_switch"] = "payment_switch"
    base_url: str = Field(pattern=r"^https?://", description="The switch's base URL.")
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    freeze_path: str = "/freeze"
    unfreeze_path: str = "/unfreeze"
    status_path: str | None = Field(
        default="/status", description="Where the freezes in force are listed; null if nowhere."
    )
    preview_path: str | None = Field(
        default="/preview", description="Where a freeze is previewed; null if nowhere."
    )
    auth: BearerAuth | BasicAuth | HeaderAuth | None = None
    headers: dict[str, str] = Field(
        default_factory=dict, description="Further headers, sent as they are."
    )
    body: Any = Field(default_factory=lambda: dict(DEFAULT_BODY), description="The body template.")
    frozen_when: str | None = Field(
        default=None,
        description="An expression telling from `status` whether `scope` is frozen (by `key`).",
    )
    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for the switch.")

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")


async def freeze(
    conn: PaymentSwitch,
    name: str,
    params: FreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any]:
    response = await _change(conn, name, "freeze", params.scope, params.reason, None, context, http)
    return _result(
        name, "freeze", params.scope, params.reason, context, response=_content(response)
    )


async def unfreeze(
    conn: PaymentSwitch,
    name: str,
    params: UnfreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any]:
    response = await _change(
        conn, name, "unfreeze", params.scope, params.reason, params.freeze_key, context, http
    )
    result = _result(
        name, "unfreeze", params.scope, params.reason, context, response=_content(response)
    )
    return {**result, "freeze_key": params.freeze_key}


async def freeze_in_place(
    conn: PaymentSwitch,
    name: str,
    params: FreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any] | None:
    """The freeze's result if the switch lists this step's freeze as in force, else None."""
    status = await _status(conn, name, params.scope, context, http)
    if not _frozen(conn, name, status, params.scope, context.idempotency_key):
        return None
    return _result(name, "freeze", params.scope, params.reason, context, reconciled=True)


async def unfreeze_in_place(
    conn: PaymentSwitch,
    name: str,
    params: UnfreezeParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> dict[str, Any] | None:
    """The unfreeze's result if the switch lists no freeze of the scope (or of `freeze_key`)."""
    status = await _status(conn, name, params.scope, context, http)
    if _frozen(conn, name, status, params.scope, params.freeze_key):
        return None
    result = _result(name, "unfreeze", params.scope, params.reason, context, reconciled=True)
    return {**result, "freeze_key": params.freeze_key}


async def preview(
    conn: PaymentSwitch,
    name: str,
    params: PreviewParams,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> Preview:
    if conn.preview_path is None:
        raise ActionFailed(
            f"payment switch {name!r} has no preview_path: it cannot show what a freeze would affect",
            changed=False,
            todo=f"set `preview_path` of connection {name!r} in connections.yaml, or remove the preview step",
        )
    response = await _http.send(
        http,
        "GET",
        conn.url(conn.preview_path),
        provider=f"payment switch {name!r}",
        idempotent=True,
        describe=_describe,
        params=_query(params.scope),
        headers=_auth_headers(conn, context),
    )
    data = _json(response, name, "preview")
    try:
        return _preview(name, params.scope, data)
    except (TypeError, ValueError) as exc:
        raise ActionFailed(
            f"payment switch {name!r}: its preview is not what Siaga reads ({exc})",
            changed=False,
            todo="make the switch's preview answer {merchants, pending_payouts, value, currency}",
        ) from None


async def _change(
    conn: PaymentSwitch,
    name: str,
    action: str,
    scope: Scope,
    reason: str,
    freeze_key: str | None,
    context: ActionContext,
    http: httpx.AsyncClient,
) -> httpx.Response:
    values = {
        "action": action,
        "scope": scope_value(scope),
        "scope_kind": scope_kind(scope),
        "merchants": list(getattr(scope, "merchants", [])),
        "payment_method": getattr(scope, "payment_method", None),
        "reason": reason,
        "key": context.idempotency_key,
        "freeze_key": freeze_key,
        "incident_id": context.incident_id,
        "runbook": context.runbook_id,
        "step": context.step_id,
    }
    try:
        body = render_value(conn.body, values)
    except (TemplateError, TypeError, ValueError) as exc:
        raise ActionFailed(
            f"payment switch {name!r}: its body template does not render: {exc}",
            changed=False,
            todo=f"fix `body:` of connection {name!r} in connections.yaml",
        ) from None
    content = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": context.idempotency_key,
        **conn.headers,
        **_auth_headers(conn, context),
    }
    path = conn.freeze_path if action == "freeze" else conn.unfreeze_path
    return await _http.send(
        http,
        conn.method,
        conn.url(path),
        provider=f"payment switch {name!r}",
        describe=_describe,
        content=content.encode(),
        headers=headers,
    )


async def _status(
    conn: PaymentSwitch, name: str, scope: Scope, context: ActionContext, http: httpx.AsyncClient
) -> Any:
    if conn.status_path is None:
        raise CannotReconcile(
            f"payment switch {name!r} has no status_path to ask whether it took effect"
        )
    response = await _http.send(
        http,
        "GET",
        conn.url(conn.status_path),
        provider=f"payment switch {name!r}",
        idempotent=True,
        describe=_describe,
        params=_query(scope),
        headers=_auth_headers(conn, context),
    )
    return _json(response, name, "status")


def _frozen(conn: PaymentSwitch, name: str, status: Any, scope: Scope, key: str | None) -> bool:
    """Whether `status` lists `scope` as frozen: by `key`, or by anyone if `key` is None."""
    if conn.frozen_when:
        values = {
            "status": status,
            "scope": scope_value(scope),
            "scope_kind": scope_kind(scope),
            "key": key,
        }
        try:
            return evaluate_condition(conn.frozen_when, values)
        except (TemplateError, TypeError, ValueError) as exc:
            raise ActionFailed(
                f"payment switch {name!r}: frozen_when does not evaluate: {exc}",
                changed=False,
                todo=f"fix `frozen_when:` of connection {name!r} in connections.yaml",
            ) from None
    entries = status.get("freezes", status.get("frozen")) if isinstance(status, dict) else status
    if not isinstance(entries, list):
        raise ActionFailed(
            f"payment switch {name!r}: its status lists no `freezes`",
            changed=False,
            todo=f'make the status answer {{"freezes": [...]}} or set `frozen_when` of connection {name!r}',
        )
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("active", True) is False:
            continue
        theirs = entry.get("key", entry.get("idempotency_key"))
        if key is not None and theirs is not None:
            if theirs == key:
                return True
        elif same_scope(scope, entry.get("scope")):
            return True
    return False


def _preview(name: str, scope: Scope, data: Any) -> Preview:
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    merchants = data.get("merchants")
    ids: list[str] = []
    count = data.get("merchant_count")
    if isinstance(merchants, list):
        ids = [str(m.get("id") if isinstance(m, dict) else m) for m in merchants]
        count = len(ids) if count is None else count
    elif isinstance(merchants, int):
        count = merchants
    pending = data.get("pending_payouts")
    if isinstance(pending, list):
        pending = len(pending)
    raw = data.get("value")
    if isinstance(raw, list):
        value = [
            Amount(
                currency=str(v["currency"]).upper(),
                amount=decimal_text(v.get("amount", v.get("value"))),
            )
            for v in raw
        ]
    elif raw is not None:
        value = [Amount(currency=str(data.get("currency", "")).upper(), amount=decimal_text(raw))]
    else:
        value = []
    what = describe_scope(scope)
    summary = (
        f"Freezing {what} would hold {_count(count, 'merchant')}, "
        f"{_count(pending, 'pending payout')} worth {amounts_text(value)}"
    )
    return Preview(
        provider=PROVIDER,
        connection=name,
        scope=what,
        merchant_count=None if count is None else int(count),
        merchants=ids[:100],
        pending_payouts=None if pending is None else int(pending),
        value=value,
        summary=summary,
    )


def _count(n: Any, what: str) -> str:
    if n is None:
        return f"an unknown number of {what}s"
    return f"{n} {what}" + ("" if n == 1 else "s")


def _query(scope: Scope) -> list[tuple[str, str]]:
    query = [("scope", scope_kind(scope))]
    query += [("merchant", m) for m in getattr(scope, "merchants", [])]
    if getattr(scope, "payment_method", None):
        query.append(("payment_method", scope.payment_method))  # type: ignore[union-attr]
    return query


def _auth_headers(conn: PaymentSwitch, context: ActionContext) -> dict[str, str]:
    auth = conn.auth
    if isinstance(auth, BearerAuth):
        return {"Authorization": f"Bearer {context.secret(auth.bearer)}"}
    if isinstance(auth, HeaderAuth):
        return {auth.header: context.secret(auth.value)}
    if isinstance(auth, BasicAuth):
        user = auth.basic.username
        user = context.secret(user) if is_secret_reference(user) else user
        token = base64.b64encode(f"{user}:{context.secret(auth.basic.password)}".encode()).decode()
        REDACTOR.add(
            auth.basic.password.removeprefix("secret://"), token
        )  # an echoed header stays hidden
        return {"Authorization": f"Basic {token}"}
    return {}


_describe = _http.message_in("error", "message", "detail")  # the switch's own message


def _json(response: httpx.Response, name: str, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ActionFailed(
            f"payment switch {name!r}: its {what} answer is not JSON: {response.text[:200]}",
            changed=False,
            todo=f"check the {what}_path of connection {name!r}",
        ) from None


def _content(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


def _result(
    name: str,
    action: str,
    scope: Scope,
    reason: str,
    context: ActionContext,
    *,
    response: Any = None,
    reconciled: bool = False,
) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "connection": name,
        "action": action,
        "scope": scope_value(scope),
        "reason": reason,
        "key": context.idempotency_key,
        "response": response,
        "reconciled": reconciled,
    }
