"""The statuspage actions against a local stand-in of Statuspage's v1 API, over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from siaga.integrations import default_registry
from siaga.integrations.statuspage import (
    CreateIncident,
    ResolveIncident,
    UpdateIncident,
    create_incident,
    resolve,
    update_incident,
)

from siaga.actions import ActionContext, ActionFailed, Mode

from ..support.payment_standins import Drop, FakeStatuspage, Reply

API_KEY = "sp-key-5b1e0a"


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStatuspage]:
    monkeypatch.setenv("SIAGA_SECRET_STATUSPAGE_KEY", API_KEY)
    with FakeStatuspage(API_KEY).running() as server:
        yield server  # type: ignore[misc]


def ctx(
    page: FakeStatuspage,
    tmp_path: Path,
    *,
    step: str = "publish-status",
    incident: str | None = "inc-42",
    mode: Mode = Mode.LIVE,
) -> ActionContext:
    connection = {
        "type": "statuspage",
        "base_url": f"{page.url}/v1",
        "page_id": page.page_id,
        "api_key": "secret://statuspage-key",
    }
    return ActionContext(
        runbook_id="payment-gateway-outage",
        step_id=step,
        run_id="run-1",
        mode=mode,
        home=tmp_path,
        incident_id=incident,
        connections={"status": connection},
    )


def go(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def failure(coroutine: Any) -> ActionFailed:
    with pytest.raises(ActionFailed) as caught:
        asyncio.run(coroutine)
    return caught.value


OUTAGE = CreateIncident(
    name="Card payments failing",
    body="We are investigating failed card payments.",
    impact="major",
    components={"cmp-cards": "major_outage"},
    component_ids=["cmp-checkout"],
)


def test_create_posts_the_incident_with_our_marker(page: FakeStatuspage, tmp_path: Path) -> None:
    result = go(create_incident(OUTAGE, ctx(page, tmp_path)))
    [call] = page.calls("POST", f"/v1/pages/{page.page_id}/incidents")
    assert call.header("Authorization") == f"OAuth {API_KEY}"
    assert call.json() == {
        "incident": {
            "name": "Card payments failing",
            "status": "investigating",
            "body": "We are investigating failed card payments.",
            "deliver_notifications": True,
            "impact_override": "major",
            "component_ids": ["cmp-cards", "cmp-checkout"],
            "components": {"cmp-cards": "major_outage"},
            "metadata": {
                "siaga": {
                    "key": "inc-42:publish-status",
                    "incident": "inc-42",
                    "runbook": "payment-gateway-outage",
                    "step": "publish-status",
                }
            },
        }
    }
    [incident] = page.created()
    assert result["id"] == incident["id"] and result["shortlink"] == incident["shortlink"]
    assert result["status"] == "investigating" and result["impact"] == "major"


def test_a_drill_never_notifies_subscribers(page: FakeStatuspage, tmp_path: Path) -> None:
    go(create_incident(OUTAGE, ctx(page, tmp_path, mode=Mode.DRILL)))
    assert page.created()[0]["deliver_notifications"] is False


def test_reconcile_finds_our_incident_among_the_unresolved(
    page: FakeStatuspage, tmp_path: Path
) -> None:
    spec = default_registry()["statuspage.create_incident"]
    assert spec.reconcile is not None and spec.message_fields == ("name", "body")
    context = ctx(page, tmp_path)
    go(create_incident(OUTAGE, ctx(page, tmp_path, incident="inc-other")))
    assert go(spec.reconcile(OUTAGE, context)) is None, (
        "another incident's status incident is not ours"
    )
    created = go(create_incident(OUTAGE, context))
    found = go(spec.reconcile(OUTAGE, context))
    assert found["id"] == created["id"] and found["reconciled"] is True


def test_update_and_resolve_find_this_incidents_status_incident(
    page: FakeStatuspage, tmp_path: Path
) -> None:
    created = go(create_incident(OUTAGE, ctx(page, tmp_path)))
    go(create_incident(OUTAGE, ctx(page, tmp_path, incident="inc-other")))
    update = UpdateIncident(
        status="identified", body="The acquirer route failed; switching to standby."
    )
    go(update_incident(update, ctx(page, tmp_path, step="update-status")))
    patch = page.calls("PATCH", f"/v1/pages/{page.page_id}/incidents/{created['id']}")
    assert patch[0].json() == {
        "incident": {
            "deliver_notifications": True,
            "status": "identified",
            "body": "The acquirer route failed; switching to standby.",
        }
    }
    spec = default_registry()["statuspage.update_incident"]
    assert spec.reconcile is not None
    assert (
        go(spec.reconcile(update, ctx(page, tmp_path, step="update-status")))["reconciled"] is True
    )
    result = go(
        resolve(
            ResolveIncident(body="Payments work again."), ctx(page, tmp_path, step="resolve-status")
        )
    )
    incident = page.incidents[created["id"]]
    assert result["status"] == "resolved" and incident["status"] == "resolved"
    assert [c["status"] for c in incident["components"]] == ["operational", "operational"]
    assert incident["incident_updates"][0]["body"] == "Payments work again."
    resolved = default_registry()["statuspage.resolve"]
    assert resolved.reconcile is not None
    assert go(resolved.reconcile(ResolveIncident(), ctx(page, tmp_path, step="resolve-status")))[
        "reconciled"
    ]


def test_without_an_id_an_ambiguous_or_missing_incident_is_refused(
    page: FakeStatuspage, tmp_path: Path
) -> None:
    missing = failure(resolve(ResolveIncident(), ctx(page, tmp_path)))
    go(create_incident(OUTAGE, ctx(page, tmp_path, step="one")))
    go(create_incident(OUTAGE, ctx(page, tmp_path, step="two")))
    several = failure(resolve(ResolveIncident(), ctx(page, tmp_path)))
    assert (
        "no unresolved incident" in str(missing)
        and missing.changed is False
        and "incident_id" in (missing.todo or "")
    )
    assert "2 unresolved incidents" in str(several)


def test_rate_limits_420_and_429_are_waited_out(page: FakeStatuspage, tmp_path: Path) -> None:
    path = f"/v1/pages/{page.page_id}/incidents"
    page.fail(
        "POST",
        path,
        Reply(420, {"message": "Enhance your calm"}, {"Retry-After": "1"}),
        Reply(429, {"message": "Rate limited"}, {"Retry-After": "0"}),
    )
    started = time.monotonic()
    go(create_incident(OUTAGE, ctx(page, tmp_path)))
    assert time.monotonic() - started >= 1.0
    assert len(page.calls("POST", path)) == 3 and len(page.created()) == 1


def test_refusals_show_statuspage_s_message(page: FakeStatuspage, tmp_path: Path) -> None:
    path = f"/v1/pages/{page.page_id}/incidents"
    page.fail("POST", path, Reply(422, {"error": ["Components must belong to the page"]}))
    refused = failure(create_incident(OUTAGE, ctx(page, tmp_path)))
    page.api_key = "rotated"
    unauthorised = failure(create_incident(OUTAGE, ctx(page, tmp_path)))
    assert "Statuspage answered 422" in str(
        refused
    ) and "Components must belong to the page" in str(refused)
    assert refused.changed is False and not refused.retryable
    assert "Could not authenticate" in str(unauthorised)


def test_a_create_that_may_have_happened_is_not_repeated(
    page: FakeStatuspage, tmp_path: Path
) -> None:
    path = f"/v1/pages/{page.page_id}/incidents"
    page.fail("POST", path, Drop(after=True), Reply(502, {"message": "Bad gateway"}, after=True))
    dropped = failure(create_incident(OUTAGE, ctx(page, tmp_path)))
    bad_gateway = failure(create_incident(OUTAGE, ctx(page, tmp_path)))
    assert (
        dropped.changed is None
        and bad_gateway.changed is None
        and "Bad gateway" in str(bad_gateway)
    )
    assert len(page.calls("POST", path)) == 2, (
        "each attempt made once: the ledger decides what next"
    )
    spec = default_registry()["statuspage.create_incident"]
    assert spec.reconcile is not None
    assert go(spec.reconcile(OUTAGE, ctx(page, tmp_path)))["reconciled"] is True
