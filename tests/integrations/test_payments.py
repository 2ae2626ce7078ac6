"""The payments actions against local stand-ins of a company payment switch and of Stripe, over
real sockets: requests on the wire, retries (429 + Retry-After, 5xx bursts, dropped connections),
refusals with the provider's own message, reconciliation, and preview figures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from siaga.integrations import default_registry
from siaga.integrations.payments import (
    FreezeParams,
    PreviewParams,
    UnfreezeParams,
    freeze,
    preview,
    unfreeze,
)
from siaga.integrations.stripe_connect import FREEZE_KEY, PREVIOUS_SCHEDULE

from siaga.actions import ActionContext, ActionFailed, CannotReconcile, Mode

from ..support.payment_standins import Drop, FakeStripe, KillSwitch, Reply, Slow, stripe_error, switch_connection

SWITCH_TOKEN = "sw-token-0d9e7c"
STRIPE_KEY = "sk_test_51Demo0nly"


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAGA_SECRET_SWITCH_TOKEN", SWITCH_TOKEN)
    monkeypatch.setenv("SIAGA_SECRET_STRIPE_KEY", STRIPE_KEY)


@pytest.fixture
def switch() -> Iterator[KillSwitch]:
    with KillSwitch(SWITCH_TOKEN).running() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe(STRIPE_KEY).running() as server:
        yield server  # type: ignore[misc]


def stripe_connection(stripe: FakeStripe, **overrides: Any) -> dict[str, Any]:
    return {"type": "stripe", "base_url": stripe.url, "api_key": "secret://stripe-key", **overrides}


def ctx(
    tmp_path: Path, connections: dict[str, Any], *, step: str = "freeze-payouts"
) -> ActionContext:
    return ActionContext(
        runbook_id="payment-gateway-outage",
        step_id=step,
        run_id="run-1",
        mode=Mode.LIVE,
        home=tmp_path,
        incident_id="inc-42",
        connections=connections,
    )


def go(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def failure(coroutine: Any) -> ActionFailed:
    with pytest.raises(ActionFailed) as caught:
        asyncio.run(coroutine)
    return caught.value


PAYOUTS = FreezeParams(scope="payouts", reason="acquirer outage")


# --- the payment switch ---------------------------------------------------------------------------


def test_switch_freeze_sends_the_rendered_body_with_key_and_token(
    switch: KillSwitch, tmp_path: Path
) -> None:
    context = ctx(tmp_path, {"switch": switch_connection(switch)})
    result = go(
        freeze(FreezeParams(scope={"merchants": ["m-002", "m-001"]}, reason="fraud spike"), context)
    )
    [call] = switch.calls("POST", "/freeze")
    assert call.header("Authorization") == f"Bearer {SWITCH_TOKEN}"
    assert call.header("Idempotency-Key") == "inc-42:freeze-payouts"
    assert call.header("Content-Type") == "application/json"
    assert call.json() == {
        "action": "freeze",
        "scope": {"merchants": ["m-001", "m-002"]},
        "reason": "fraud spike",
        "idempotency_key": "inc-42:freeze-payouts",
        "incident": "inc-42",
    }
    assert result["key"] == "inc-42:freeze-payouts" and result["response"]["frozen"] is True
    assert result["connection"] == "switch" and result["reconciled"] is False


def test_switch_takes_its_own_method_paths_body_template_and_header_auth(
    switch: KillSwitch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    monkeypatch.setenv("SIAGA_SECRET_SWITCH_KEY", "hdr-secret-77")
    connection = switch_connection(
        switch,
        method="PUT",
        freeze_path="/v2/kill",
        auth={"header": "X-Switch-Key", "value": "secret://switch-key"},
        body="kill {{ scope_kind }} {{ payment_method }} because {{ reason }} ({{ key }})",
        headers={"Content-Type": "text/plain"},
    )
    switch.route = lambda request: (seen.append(request), (200, {"ok": True}, {}))[1]  # type: ignore[method-assign]
    go(
        freeze(
            FreezeParams(scope={"payment_method": "qris"}, reason="QRIS double debits"),
            ctx(tmp_path, {"sw": connection}),
        )
    )
    [call] = seen
    assert (call.method, call.path) == ("PUT", "/v2/kill")
    assert call.header("X-Switch-Key") == "hdr-secret-77"
    assert call.header("Content-Type") == "text/plain"
    assert (
        call.body == b"kill payment_method qris because QRIS double debits (inc-42:freeze-payouts)"
    )


def test_switch_basic_auth(
    switch: KillSwitch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIAGA_SECRET_SWITCH_PASSWORD", "pw-3k9")
    seen: list[Any] = []
    switch.route = lambda request: (seen.append(request), (200, {}, {}))[1]  # type: ignore[method-assign]
    connection = switch_connection(
        switch, auth={"basic": {"username": "siaga", "password": "secret://switch-password"}}
    )
    go(freeze(PAYOUTS, ctx(tmp_path, {"sw": connection})))
    assert seen[0].header("Authorization") == "Basic c2lhZ2E6cHctM2s5"  # siaga:pw-3k9


def test_switch_rate_limit_is_retried_after_the_time_it_asks(
    switch: KillSwitch, tmp_path: Path
) -> None:
    switch.fail("POST", "/freeze", Reply(429, {"error": "slow down"}, {"Retry-After": "1"}))
    started = time.monotonic()
    go(freeze(PAYOUTS, ctx(tmp_path, {"switch": switch_connection(switch)})))
    assert time.monotonic() - started >= 1.0
    assert len(switch.calls("POST", "/freeze")) == 2 and len(switch.freezes) == 1


def test_switch_unavailable_bursts_are_ridden_out(switch: KillSwitch, tmp_path: Path) -> None:
    switch.fail(
        "POST", "/freeze", *[Reply(503, {"error": "maintenance"}, {"Retry-After": "0"})] * 3
    )
    go(freeze(PAYOUTS, ctx(tmp_path, {"switch": switch_connection(switch)})))
    assert len(switch.calls("POST", "/freeze")) == 4 and len(switch.freezes) == 1


def test_switch_unavailable_for_good_fails_saying_nothing_changed(
    switch: KillSwitch, tmp_path: Path
) -> None:
    switch.fail(
        "POST", "/freeze", *[Reply(503, {"error": "maintenance"}, {"Retry-After": "0"})] * 4
    )
    error = failure(freeze(PAYOUTS, ctx(tmp_path, {"switch": switch_connection(switch)})))
    assert error.changed is False and error.retryable and "maintenance" in str(error)
    assert switch.freezes == []


def test_switch_server_error_may_have_acted_so_it_is_not_repeated(
    switch: KillSwitch, tmp_path: Path
) -> None:
    switch.fail("POST", "/freeze", Reply(500, {"error": "db timeout after commit"}, after=True))
    error = failure(freeze(PAYOUTS, ctx(tmp_path, {"switch": switch_connection(switch)})))
    assert error.changed is None and error.retryable
    assert "payment switch 'switch' answered 500" in str(
        error
    ) and "db timeout after commit" in str(error)
    assert len(switch.calls("POST", "/freeze")) == 1


def test_switch_refusal_shows_its_message_and_is_final(switch: KillSwitch, tmp_path: Path) -> None:
    switch.fail("POST", "/freeze", Reply(409, {"error": "switch locked by treasury until 04:00"}))
    error = failure(freeze(PAYOUTS, ctx(tmp_path, {"switch": switch_connection(switch)})))
    assert "switch locked by treasury until 04:00" in str(error) and "409" in str(error)
    assert error.changed is False and not error.retryable and error.todo


def test_switch_dropped_connection_and_slow_answer_leave_the_outcome_unknown(
    switch: KillSwitch, tmp_path: Path
) -> None:
    context = ctx(tmp_path, {"switch": switch_connection(switch, timeout=0.5)})
    switch.fail("POST", "/freeze", Drop(after=True), Slow(2))
    dropped = failure(freeze(PAYOUTS, context))
    slow = failure(freeze(PAYOUTS, context))
    assert dropped.changed is None and "RemoteProtocolError" in str(dropped)
    assert slow.changed is None and "Timeout" in str(slow)
    assert len(switch.calls("POST", "/freeze")) == 2, "neither was repeated blindly"


def test_switch_reads_are_retried_after_a_dropped_connection(
    switch: KillSwitch, tmp_path: Path
) -> None:
    switch.fail("GET", "/preview", Drop())
    shown = go(
        preview(
            PreviewParams(scope="payouts"), ctx(tmp_path, {"switch": switch_connection(switch)})
        )
    )
    assert shown.merchant_count == 3 and len(switch.calls("GET", "/preview")) == 2


def test_switch_preview_shows_what_a_freeze_would_hold(switch: KillSwitch, tmp_path: Path) -> None:
    context = ctx(tmp_path, {"switch": switch_connection(switch)})
    everything = go(preview(PreviewParams(scope="payouts"), context))
    card = go(
        preview(PreviewParams(scope={"payment_method": "card"}, connection="switch"), context)
    )
    assert (everything.merchant_count, everything.pending_payouts) == (3, 5)
    assert [(a.currency, a.amount) for a in everything.value] == [("IDR", "1550000.50")]
    assert (
        everything.summary
        == "Freezing payouts would hold 3 merchants, 5 pending payouts worth IDR 1550000.50"
    )
    assert card.merchants == ["m-001", "m-002"] and card.pending_payouts == 5
    assert switch.calls("GET", "/preview")[1].query == {
        "scope": ["payment_method"],
        "payment_method": ["card"],
    }


def test_switch_reconcile_finds_this_steps_freeze_by_its_key(
    switch: KillSwitch, tmp_path: Path
) -> None:
    spec = default_registry()["payments.freeze"]
    assert spec.reconcile is not None
    context = ctx(tmp_path, {"switch": switch_connection(switch)})
    assert go(spec.reconcile(PAYOUTS, context)) is None
    switch.active.append(
        {"scope": "payouts", "key": "inc-7:freeze-payouts", "reason": "another incident"}
    )
    assert go(spec.reconcile(PAYOUTS, context)) is None, "another incident's freeze is not ours"
    go(freeze(PAYOUTS, context))
    found = go(spec.reconcile(PAYOUTS, context))
    assert found["reconciled"] is True and found["key"] == "inc-42:freeze-payouts"
    assert len(switch.freezes) == 1


def test_switch_reconcile_reads_a_status_of_its_own_shape(
    switch: KillSwitch, tmp_path: Path
) -> None:
    switch.route = lambda request: (
        200,
        {"kill_switch": {"engaged_keys": ["inc-42:freeze-payouts"]}},
        {},
    )  # type: ignore[method-assign]
    connection = switch_connection(switch, frozen_when="key in status.kill_switch.engaged_keys")
    spec = default_registry()["payments.freeze"]
    assert spec.reconcile is not None
    assert go(spec.reconcile(PAYOUTS, ctx(tmp_path, {"switch": connection})))["reconciled"] is True


def test_switch_without_a_status_endpoint_cannot_reconcile(
    switch: KillSwitch, tmp_path: Path
) -> None:
    spec = default_registry()["payments.freeze"]
    assert spec.reconcile is not None
    context = ctx(tmp_path, {"switch": switch_connection(switch, status_path=None)})
    with pytest.raises(CannotReconcile, match="no status_path"):
        go(spec.reconcile(PAYOUTS, context))


def test_switch_unfreeze_lifts_the_scope_and_reconciles(switch: KillSwitch, tmp_path: Path) -> None:
    connections = {"switch": switch_connection(switch)}
    go(freeze(PAYOUTS, ctx(tmp_path, connections)))
    lift = UnfreezeParams(scope="payouts", reason="acquirer back")
    spec = default_registry()["payments.unfreeze"]
    assert spec.reconcile is not None
    undo_context = ctx(tmp_path, connections, step="undo-freeze-payouts")
    assert go(spec.reconcile(lift, undo_context)) is None, "still frozen"
    result = go(unfreeze(lift, undo_context))
    assert switch.calls("POST", "/unfreeze")[0].json()["action"] == "unfreeze"
    assert switch.active == [] and result["action"] == "unfreeze"
    assert go(spec.reconcile(lift, undo_context))["reconciled"] is True


def test_switch_body_template_errors_change_nothing(switch: KillSwitch, tmp_path: Path) -> None:
    connection = switch_connection(switch, body={"x": "{{ reason.nothing.here }}"})
    error = failure(freeze(PAYOUTS, ctx(tmp_path, {"switch": connection})))
    assert (
        error.changed is False
        and "body template" in str(error)
        and "connections.yaml" in (error.todo or "")
    )
    assert switch.requests == []


def test_the_connection_is_chosen_by_name_or_default(switch: KillSwitch, tmp_path: Path) -> None:
    none = failure(freeze(PAYOUTS, ctx(tmp_path, {})))
    two = {
        "a": switch_connection(switch),
        "b": {"type": "stripe", "api_key": "secret://stripe-key"},
    }
    several = failure(freeze(PAYOUTS, ctx(tmp_path, two)))
    wrong = failure(
        freeze(
            FreezeParams(scope="payouts", reason="x", connection="mail"),
            ctx(tmp_path, {"mail": {"type": "smtp"}}),
        )
    )
    assert "no payments connections" in str(none) and none.changed is False
    assert "several payments connections" in str(several)
    assert "of type 'smtp'" in str(wrong)
    two["a"] = {**two["a"], "default": True}
    go(freeze(PAYOUTS, ctx(tmp_path, two)))
    assert len(switch.freezes) == 1


def test_scope_is_validated_when_the_runbook_is() -> None:
    spec = default_registry()["payments.freeze"]
    for good in ("all", "payouts", {"merchants": ["m1"]}, {"payment_method": "qris"}):
        spec.params.model_validate({"scope": good, "reason": "r"})
    for bad in ("everything", {"merchants": []}, {"merchants": ["m1"], "payment_method": "qris"}):
        with pytest.raises(ValueError):
            spec.params.model_validate({"scope": bad, "reason": "r"})


# --- Stripe -------------------------------------------------------------------------------------------


def test_stripe_freeze_pauses_payouts_and_records_the_schedule(
    stripe: FakeStripe, tmp_path: Path
) -> None:
    stripe.add_account("acct_1daily")
    stripe.add_account("acct_2weekly", "weekly", weekly_anchor="friday")
    stripe.add_account("acct_3manual", "manual")
    result = go(freeze(PAYOUTS, ctx(tmp_path, {"stripe": stripe_connection(stripe)})))
    assert [stripe.interval(a) for a in sorted(stripe.accounts)] == ["manual"] * 3
    assert result["frozen"] == [
        {"account": "acct_1daily", "previous": {"interval": "daily"}},
        {"account": "acct_2weekly", "previous": {"interval": "weekly", "weekly_anchor": "friday"}},
    ]
    assert result["already_manual"] == ["acct_3manual"]
    update = stripe.calls("POST", "/v1/accounts/acct_2weekly")[0]
    assert update.header("Authorization") == f"Bearer {STRIPE_KEY}"
    assert update.header("Stripe-Version") == "2024-06-20"
    assert update.header("Idempotency-Key") == "inc-42:freeze-payouts:acct_2weekly"
    assert update.header("Content-Type") == "application/x-www-form-urlencoded"
    assert update.form() == {
        "settings[payouts][schedule][interval]": "manual",
        f"metadata[{FREEZE_KEY}]": "inc-42:freeze-payouts",
        f"metadata[{PREVIOUS_SCHEDULE}]": json.dumps(
            {"interval": "weekly", "weekly_anchor": "friday"}
        ),
        "metadata[siaga_freeze_reason]": "acquirer outage",
    }
    assert stripe.calls("POST", "/v1/accounts/acct_3manual") == []


def test_stripe_unfreeze_restores_exactly_the_previous_schedules(
    stripe: FakeStripe, tmp_path: Path
) -> None:
    stripe.add_account("acct_1weekly", "weekly", weekly_anchor="friday")
    stripe.add_account("acct_2monthly", "monthly", monthly_anchor=15)
    stripe.add_account("acct_3manual", "manual")
    connections = {"stripe": stripe_connection(stripe)}
    go(freeze(PAYOUTS, ctx(tmp_path, connections)))
    stripe.accounts["acct_1weekly"]["settings"]["payouts"]["schedule"]["weekly_anchor"] = (
        "monday"  # Stripe keeps it
    )
    result = go(
        unfreeze(
            UnfreezeParams(scope="payouts"), ctx(tmp_path, connections, step="undo-freeze-payouts")
        )
    )
    schedules = {a: stripe.accounts[a]["settings"]["payouts"]["schedule"] for a in stripe.accounts}
    assert (
        schedules["acct_1weekly"]["interval"] == "weekly"
        and schedules["acct_1weekly"]["weekly_anchor"] == "friday"
    )
    assert (
        schedules["acct_2monthly"]["interval"] == "monthly"
        and str(schedules["acct_2monthly"]["monthly_anchor"]) == "15"
    )
    assert schedules["acct_3manual"]["interval"] == "manual", "it was manual before the freeze"
    assert all(FREEZE_KEY not in stripe.accounts[a]["metadata"] for a in stripe.accounts)
    assert [r["account"] for r in result["restored"]] == ["acct_1weekly", "acct_2monthly"]
    assert stripe.calls("POST", "/v1/accounts/acct_1weekly")[1].header("Idempotency-Key") == (
        "inc-42:undo-freeze-payouts:acct_1weekly"
    )


def test_stripe_unfreeze_of_one_freeze_leaves_another_incidents_freeze(
    stripe: FakeStripe, tmp_path: Path
) -> None:
    stripe.add_account("acct_a")
    stripe.add_account("acct_b")
    connections = {"stripe": stripe_connection(stripe)}
    first = go(
        freeze(
            FreezeParams(scope={"merchants": ["acct_a"]}, reason="fraud"),
            ctx(tmp_path, connections, step="freeze-a"),
        )
    )
    go(
        freeze(
            FreezeParams(scope={"merchants": ["acct_b"]}, reason="outage"),
            ctx(tmp_path, connections, step="freeze-b"),
        )
    )
    go(
        unfreeze(
            UnfreezeParams(scope="payouts", freeze_key=first["key"]),
            ctx(tmp_path, connections, step="lift"),
        )
    )
    assert (stripe.interval("acct_a"), stripe.interval("acct_b")) == ("daily", "manual")


def test_stripe_lists_every_page_of_connected_accounts(stripe: FakeStripe, tmp_path: Path) -> None:
    for n in range(101):
        stripe.add_account(f"acct_{n:03d}")
    result = go(freeze(PAYOUTS, ctx(tmp_path, {"stripe": stripe_connection(stripe)})))
    lists = stripe.calls("GET", "/v1/accounts")
    assert [c.query.get("starting_after") for c in lists] == [None, ["acct_099"]]
    assert len(result["frozen"]) == 101 and {stripe.interval(a) for a in stripe.accounts} == {
        "manual"
    }


def test_stripe_rate_limit_waits_as_asked(stripe: FakeStripe, tmp_path: Path) -> None:
    stripe.add_account("acct_1")
    limited = stripe_error(429, "Too many requests hit the API too quickly.", code="rate_limit")
    stripe.fail("GET", "/v1/accounts", Reply(429, limited.body, {"Retry-After": "1"}))
    started = time.monotonic()
    go(freeze(PAYOUTS, ctx(tmp_path, {"stripe": stripe_connection(stripe)})))
    assert time.monotonic() - started >= 1.0 and stripe.interval("acct_1") == "manual"


def test_stripe_errors_after_acting_are_retried_under_the_same_idempotency_key(
    stripe: FakeStripe, tmp_path: Path
) -> None:
    stripe.add_account("acct_1")
    stripe.add_account("acct_2")
    stripe.fail(
        "POST",
        "/v1/accounts/acct_1",
        stripe_error(500, "An unknown error occurred", type="api_error"),
    )
    stripe.fail("POST", "/v1/accounts/acct_2", Drop(after=True))
    stripe.fail(
        "POST", "/v1/accounts/acct_2", Reply(502, {"error": {"type": "api_error"}}, after=True)
    )
    go(freeze(PAYOUTS, ctx(tmp_path, {"stripe": stripe_connection(stripe)})))
    posts = stripe.calls("POST", "/v1/accounts/acct_2")
    assert len(posts) == 3 and len({p.header("Idempotency-Key") for p in posts}) == 1
    assert [a for a, _ in stripe.updates] == ["acct_1", "acct_2"], "each account updated once"


def test_stripe_refusal_shows_stripes_message(stripe: FakeStripe, tmp_path: Path) -> None:
    error = failure(
        freeze(
            FreezeParams(scope={"merchants": ["acct_nope"]}, reason="x"),
            ctx(tmp_path, {"stripe": stripe_connection(stripe)}),
        )
    )
    assert "Stripe answered 404" in str(error)
    assert (
        "No such account: 'acct_nope' (invalid_request_error/resource_missing, param account)"
        in str(error)
    )
    assert error.changed is False and not error.retryable


def test_stripe_partial_freeze_says_what_changed_and_a_rerun_finishes_it(
    stripe: FakeStripe, tmp_path: Path
) -> None:
    stripe.add_account("acct_1")
    stripe.add_account("acct_2")
    stripe.fail(
        "POST", "/v1/accounts/acct_2", stripe_error(400, "This account cannot be updated now.")
    )
    context = ctx(tmp_path, {"stripe": stripe_connection(stripe)})
    error = failure(freeze(PAYOUTS, context))
    assert (
        error.changed is True
        and "already froze acct_1" in str(error)
        and "cannot be updated now" in str(error)
    )
    result = go(freeze(PAYOUTS, context))
    assert [f["account"] for f in result["frozen"]] == ["acct_1", "acct_2"]
    assert len(stripe.calls("POST", "/v1/accounts/acct_1")) == 1, (
        "the rerun skipped what was frozen"
    )


def test_stripe_refuses_scopes_it_cannot_freeze(stripe: FakeStripe, tmp_path: Path) -> None:
    context = ctx(tmp_path, {"stripe": stripe_connection(stripe)})
    for scope in ("all", {"payment_method": "card"}):
        error = failure(freeze(FreezeParams(scope=scope, reason="x"), context))
        assert (
            error.changed is False
            and "payouts only" in str(error)
            and "payment_switch" in (error.todo or "")
        )
    assert stripe.requests == []


def test_stripe_reconcile_sees_accounts_already_frozen(stripe: FakeStripe, tmp_path: Path) -> None:
    stripe.add_account("acct_1")
    spec = default_registry()["payments.freeze"]
    assert spec.reconcile is not None
    context = ctx(tmp_path, {"stripe": stripe_connection(stripe)})
    assert go(spec.reconcile(PAYOUTS, context)) is None
    go(freeze(PAYOUTS, context))
    found = go(spec.reconcile(PAYOUTS, context))
    assert found["reconciled"] and found["frozen"] == [
        {"account": "acct_1", "previous": {"interval": "daily"}}
    ]


def test_stripe_preview_counts_balances_and_payouts_per_account(
    stripe: FakeStripe, tmp_path: Path
) -> None:
    stripe.add_account("acct_1", available=150_000, pending=25_050, pending_payouts=2)
    stripe.add_account("acct_2", available=1_000_000, currency="jpy", pending_payouts=1)
    stripe.add_account("acct_3", "manual", available=999)
    shown = go(
        preview(
            PreviewParams(scope="payouts"), ctx(tmp_path, {"stripe": stripe_connection(stripe)})
        )
    )
    assert (shown.merchant_count, shown.merchants, shown.pending_payouts) == (
        2,
        ["acct_1", "acct_2"],
        3,
    )
    assert [(a.currency, a.amount) for a in shown.value] == [("JPY", "1000000"), ("USD", "1750.50")]
    assert "1 account already on manual payouts" in shown.summary
    balances = stripe.calls("GET", "/v1/balance")
    assert sorted(b.header("Stripe-Account") or "" for b in balances) == ["acct_1", "acct_2"]
