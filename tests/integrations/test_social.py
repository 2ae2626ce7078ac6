"""Posting in public and on WhatsApp against local stand-ins that speak each provider's wire format
(`social_standins`): X API v2, Meta's Graph API (Facebook Page, Instagram, WhatsApp Cloud API) and
a website's notices endpoint, over real sockets. Every credential is a canary that must never
show in a result, an error, the ledger or the outbox; a retry or a restart posts nothing twice; a
drill posts nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siaga.actions import ActionContext, ActionFailed, Mode
from siaga.flows.effects import FOUND_IN_PLACE
from siaga.flows.steps import perform
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.audit.ledger import Ledger
from siaga.store import engine

from ..support.gate_driver import with_approvals
from ..support.settings import settings_with
from ..support.social_standins import Drop, FakeGraph, FakeWebsite, FakeX, Reply, graph_error

CANARY = {
    "x-consumer-key": "canary-x-ck-3f9a1c",
    "x-consumer-secret": "canary-x-cs-77b0e2d4",
    "x-access-token": "1467726470533754880-canaryXtoken51",
    "x-access-token-secret": "canary-x-ats-c0ffee99",
    "x-user-token": "canary-x-oauth2-user-token-5d1e",
    "meta-token": "EAAGcanaryMetaToken0000ZZZ",
    "meta-app-secret": "canary-app-secret-9e81aa",
    "cms-token": "canary-cms-token-2b7c",
    "cms-signing": "canary-cms-hmac-key-61f0",
}
REGISTRY = default_registry()


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in CANARY.items():
        monkeypatch.setenv("SIAGA_SECRET_" + name.upper().replace("-", "_"), value)
    return CANARY


@pytest.fixture(scope="module")
def x_api() -> Iterator[FakeX]:
    keys = {k.removeprefix("x-").replace("-", "_"): CANARY[k]
            for k in ("x-consumer-key", "x-consumer-secret", "x-access-token", "x-access-token-secret")}
    with FakeX(keys, bearer=CANARY["x-user-token"]).running() as server:
        yield server  # type: ignore[misc]


@pytest.fixture(scope="module")
def graph() -> Iterator[FakeGraph]:
    with FakeGraph(CANARY["meta-token"], app_secret=CANARY["meta-app-secret"], echo_token=True).running() as server:
        yield server  # type: ignore[misc]


@pytest.fixture(scope="module")
def site() -> Iterator[FakeWebsite]:
    with FakeWebsite(CANARY["cms-token"], CANARY["cms-signing"], echo_token=True).running() as server:
        yield server  # type: ignore[misc]


def x_connection(server: FakeX, **extra: Any) -> dict[str, Any]:
    oauth1 = {name: f"secret://x-{name.replace('_', '-')}"
              for name in ("consumer_key", "consumer_secret", "access_token", "access_token_secret")}
    return {"type": "x", "api_url": f"{server.url}/2", "oauth1": oauth1, **extra}


def graph_connection(server: FakeGraph, kind: str, **extra: Any) -> dict[str, Any]:
    ids = {"facebook": {"page_id": server.page_id}, "instagram": {"ig_user_id": server.ig_user_id},
           "whatsapp": {"phone_number_id": server.phone_number_id}}[kind]
    return {"type": kind, "access_token": "secret://meta-token", "app_secret": "secret://meta-app-secret",
            "graph_url": server.graph_url, **ids, **extra}


def site_connection(server: FakeWebsite, **extra: Any) -> dict[str, Any]:
    return {"type": "website", "url": f"{server.url}/api/notices/{{id}}", "bearer": "secret://cms-token",
            "sign": {"secret": "secret://cms-signing"}, **extra}


def context(home: Path, connections: dict[str, Any] | None = None, *, step: str = "answer",
            mode: Mode = Mode.LIVE, run_id: str | None = None, incident: str | None = None) -> ActionContext:
    return ActionContext(runbook_id="social-media-storm", step_id=step, run_id=run_id or uuid.uuid4().hex,
                         mode=mode, home=home, incident_id=incident, connections=connections or {})


def act(name: str, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    spec = REGISTRY[name]
    return asyncio.run(spec.run(spec.params.model_validate(params), ctx)).model_dump(mode="json")


def failure(name: str, params: dict[str, Any], ctx: ActionContext) -> ActionFailed:
    with pytest.raises(ActionFailed) as caught:
        act(name, params, ctx)
    return caught.value


def step(name: str, params: dict[str, Any], ctx: ActionContext, ledger: Ledger | None = None) -> Any:
    """The step as a flow runs it: drill behaviour, side-effect ledger, redaction."""
    spec = REGISTRY[name]
    return asyncio.run(perform(spec, spec.params.model_validate(params), ctx, spec.drill_behaviour, ledger))


def assert_no_canary(*things: Any) -> None:
    blob = json.dumps([str(t) for t in things])
    for name, value in CANARY.items():
        assert value not in blob, f"the {name} secret leaked"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(engine(f"sqlite:///{tmp_path / 'siaga.db'}"))


# --- X ------------------------------------------------------------------------------------------


def test_x_posts_and_replies_signed_with_oauth1(x_api: FakeX, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"brand": x_connection(x_api)})
    posted = act("x.post", {"text": "Kami sedang menangani gangguan pembayaran. Info: https://status.example.com"}, ctx)
    answer = act("x.reply", {"text": "Halo Budi, saldo Anda aman & akan kembali.", "reply_to": "1790000000000000999"}, ctx)
    [first, second] = [r for r in x_api.calls("POST", "/2/tweets")]
    assert first.json() == {"text": "Kami sedang menangani gangguan pembayaran. Info: https://status.example.com"}
    assert second.json() == {"text": "Halo Budi, saldo Anda aman & akan kembali.",
                             "reply": {"in_reply_to_tweet_id": "1790000000000000999"}}
    assert first.header("Authorization").startswith("OAuth ") and "oauth_signature=" in first.header("Authorization")
    assert posted["delivered_via"] == "x" and posted["id"] == x_api.posts[-2]["id"]
    assert posted["url"] == f"https://x.com/i/web/status/{posted['id']}" and answer["to"] == "x:1790000000000000999"
    assert_no_canary(posted, answer)


def test_x_texts_over_280_weighted_characters_are_refused_before_sending() -> None:
    spec = REGISTRY["x.post"]
    spec.params.model_validate({"text": "a" * 256 + " https://example.com/" + "x" * 100})  # a link counts 23
    with pytest.raises(ValueError, match="weighs 281"):
        spec.params.model_validate({"text": "a" * 281})
    with pytest.raises(ValueError, match="weighs 282"):
        spec.params.model_validate({"text": "危" * 141})  # CJK counts 2


def test_x_rate_limits_are_waited_out_and_every_retry_is_signed_afresh(x_api: FakeX, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"brand": x_connection(x_api)})
    before = len(x_api.calls("POST", "/2/tweets"))
    soon = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(time.time()) + 2)}
    x_api.fail("POST", "/2/tweets", Reply(429, {"title": "Too Many Requests", "detail": "Too Many Requests",
                                                "type": "about:blank", "status": 429}, soon))
    started = time.monotonic()
    act("x.post", {"text": "Update 14:05 WIB: pembayaran pulih bertahap."}, ctx)
    assert time.monotonic() - started >= 1.0, "x-rate-limit-reset was honoured"
    assert len(x_api.calls("POST", "/2/tweets")) == before + 2, "the retry was accepted: a fresh nonce"

    later = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(time.time()) + 900)}
    x_api.fail("POST", "/2/tweets", Reply(429, {"title": "Too Many Requests", "detail": "Too Many Requests",
                                                "type": "about:blank", "status": 429}, later))
    waited = failure("x.post", {"text": "Update 14:10 WIB."}, ctx)
    assert "resets in 15 minutes" in str(waited) and waited.changed is False and not waited.retryable
    assert "15 minutes" in (waited.todo or "")

    x_api.fail("POST", "/2/tweets", Reply(429, {"title": "UsageCapExceeded", "detail": "Usage cap exceeded: Monthly product cap",
                                                "type": "https://api.twitter.com/2/problems/usage-capped",
                                                "period": "Monthly", "scope": "Product"}))
    capped = failure("x.post", {"text": "Update 14:15 WIB."}, ctx)
    assert "Usage cap exceeded" in str(capped) and not capped.retryable and "cap" in (capped.todo or "")


def test_x_refusals_say_what_to_fix_and_never_quote_the_token(x_api: FakeX, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bearer = {"type": "x", "api_url": f"{x_api.url}/2", "bearer": "secret://x-user-token"}
    ok = act("x.post", {"text": "Dari token OAuth 2.0."}, context(tmp_path, {"brand": bearer}))
    assert ok["id"]
    monkeypatch.setenv("SIAGA_SECRET_X_USER_TOKEN", "canary-x-oauth2-user-token-revoked")
    refused = failure("x.post", {"text": "Lagi."}, context(tmp_path, {"brand": bearer}))
    assert "X answered 401" in str(refused) and "Unauthorized" in str(refused) and refused.changed is False
    assert "keys or token" in (refused.todo or "")
    assert_no_canary(ok, refused, refused.todo)


def test_an_x_post_that_may_have_arrived_is_found_not_posted_again(x_api: FakeX, tmp_path: Path,
                                                                    ledger: Ledger) -> None:
    ctx = context(tmp_path, {"brand": x_connection(x_api, user_id=x_api.user_id)}, step="holding-x")
    text = "Kami tahu banyak yang gagal bayar hari ini. Saldo Anda aman; info lengkap menyusul."
    x_api.fail("POST", "/2/tweets", Drop(after=True))
    with pytest.raises(ActionFailed) as caught:
        step("x.post", {"text": text}, ctx, ledger)
    assert caught.value.changed is None, "a dropped answer may have posted"
    again = step("x.post", {"text": text}, ctx, ledger)  # the step's retry
    assert again.note == FOUND_IN_PLACE and again.output["reconciled"] is True
    assert [p["raw"] for p in x_api.posts].count(text) == 1
    assert again.output["id"] == next(p["id"] for p in x_api.posts if p["raw"] == text)
    assert step("x.post", {"text": text}, ctx, ledger).output == again.output, "the ledger has it now"

    # the ledger lost (another machine, a reset store): X's duplicate refusal finds the same post
    lost = act("x.post", {"text": text}, context(tmp_path, {"brand": x_connection(x_api)}))
    assert lost["reconciled"] is True and lost["id"] == again.output["id"]
    assert [p["raw"] for p in x_api.posts].count(text) == 1


# --- Facebook -----------------------------------------------------------------------------------


def test_facebook_page_post_and_comment_reply(graph: FakeGraph, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"page": graph_connection(graph, "facebook")})
    posted = act("facebook.post", {"message": "Kami sedang menangani gangguan pembayaran.",
                                   "link": "https://status.example.com"}, ctx)
    customer = f"{graph.page_id}_900000000000001"
    answer = act("facebook.reply", {"reply_to": customer, "message": "Halo, saldo Anda aman."}, ctx)
    [feed] = graph.calls("POST", f"/v23.0/{graph.page_id}/feed")
    assert feed.json() == {"message": "Kami sedang menangani gangguan pembayaran.", "link": "https://status.example.com"}
    assert feed.header("Authorization") == f"Bearer {CANARY['meta-token']}"
    assert feed.arg("appsecret_proof") and feed.arg("access_token") is None, "the token travels in a header"
    assert posted["id"] in graph.feed and posted["url"] == f"https://www.facebook.com/{posted['id']}"
    assert answer["id"] in graph.comments[customer] and graph.objects[answer["id"]]["from"]["id"] == graph.page_id
    assert_no_canary(posted, answer)


def test_graph_rate_limits_are_read_from_the_error_code(graph: FakeGraph, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"page": graph_connection(graph, "facebook")})
    path = f"/v23.0/{graph.page_id}/feed"
    usage = {graph.page_id: [{"type": "pages", "call_count": 100, "total_cputime": 25, "total_time": 25,
                              "estimated_time_to_regain_access": 0}]}
    graph.fail("POST", path,
               graph_error(400, 32, "(#32) Page request limit reached",
                           headers={"X-Business-Use-Case-Usage": json.dumps(usage)}),
               graph_error(400, 4, "(#4) Application request limit reached", headers={"Retry-After": "1"}))
    started = time.monotonic()
    before = len(graph.feed)
    act("facebook.post", {"message": "Pembaruan: layanan pulih."}, ctx)
    assert len(graph.feed) == before + 1 and time.monotonic() - started >= 1.0

    usage[graph.page_id][0]["estimated_time_to_regain_access"] = 15
    graph.fail("POST", path, graph_error(400, 80001, "(#80001) There have been too many calls to this Page account.",
                                         headers={"X-Business-Use-Case-Usage": json.dumps(usage)}))
    later = failure("facebook.post", {"message": "Pembaruan kedua."}, ctx)
    assert "(#80001)" in str(later) and "15 more minutes" in str(later) and not later.retryable
    assert later.changed is False and "15 minutes" in (later.todo or "")
    assert len(graph.feed) == before + 1


def test_graph_refusals_are_scrubbed_even_when_they_quote_the_token(graph: FakeGraph, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAGA_SECRET_META_TOKEN", CANARY["meta-token"] + "-expired")
    ctx = context(tmp_path, {"page": graph_connection(graph, "facebook")})
    expired = failure("facebook.post", {"message": "Halo."}, ctx)
    assert "(#190) Invalid OAuth access token" in str(expired) and "[secret:meta-token]" in str(expired)
    assert "AqZ0token" in str(expired), "the fbtrace_id is kept for Meta's support"
    assert expired.changed is False and not expired.retryable and "renew the access token" in (expired.todo or "")
    monkeypatch.setenv("SIAGA_SECRET_META_TOKEN", CANARY["meta-token"])
    missing = failure("facebook.reply", {"reply_to": "123_456", "message": "Halo."}, ctx)
    assert "(#100) Unsupported post request" in str(missing) and missing.changed is False
    assert_no_canary(expired, missing, CANARY["meta-token"] + "-expired" in str(expired))


def test_a_facebook_post_that_may_have_arrived_is_found_not_posted_again(graph: FakeGraph, tmp_path: Path,
                                                                         ledger: Ledger) -> None:
    ctx = context(tmp_path, {"page": graph_connection(graph, "facebook")}, step="holding-fb", incident="inc-7")
    text = "Kami mendengar keluhan Anda tentang pembayaran yang gagal dan sedang menanganinya."
    graph.fail("POST", f"/v23.0/{graph.page_id}/feed", graph_error(500, 2, "(#2) Service temporarily unavailable",
                                                                    kind="OAuthException"))
    with pytest.raises(ActionFailed) as caught:
        step("facebook.post", {"message": text}, ctx, ledger)
    assert caught.value.changed is None and caught.value.retryable
    assert step("facebook.post", {"message": text}, ctx, ledger).status == "completed"
    graph.fail("POST", f"/v23.0/{graph.page_id}/feed", Drop(after=True))
    customer = f"{graph.page_id}_900000000000001"
    reply_ctx = context(tmp_path, ctx.connections, step="answer-fb", incident="inc-7")
    with pytest.raises(ActionFailed):
        step("facebook.post", {"message": text + " (2)"}, reply_ctx, ledger)
    found = step("facebook.post", {"message": text + " (2)"}, reply_ctx, ledger)
    assert found.note == FOUND_IN_PLACE
    assert [graph.objects[i]["message"] for i in graph.feed].count(text + " (2)") == 1
    graph.fail("POST", f"/v23.0/{customer}/comments", Drop(after=True))
    comment_ctx = context(tmp_path, ctx.connections, step="reply-fb", incident="inc-7")
    with pytest.raises(ActionFailed):
        step("facebook.reply", {"reply_to": customer, "message": "Mohon cek DM ya."}, comment_ctx, ledger)
    assert step("facebook.reply", {"reply_to": customer, "message": "Mohon cek DM ya."}, comment_ctx,
                ledger).note == FOUND_IN_PLACE
    assert [graph.objects[i].get("message") for i in graph.comments[customer]].count("Mohon cek DM ya.") == 1


# --- Instagram ----------------------------------------------------------------------------------


def test_instagram_reply_and_two_step_publish(graph: FakeGraph, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"insta": graph_connection(graph, "instagram")})
    answer = act("instagram.reply", {"reply_to": "1780000000000001", "message": "Halo! Cek DM ya."}, ctx)
    assert graph.calls("POST", "/v23.0/1780000000000001/replies")[-1].json() == {"message": "Halo! Cek DM ya."}
    graph.container_checks = 2
    published = act("instagram.publish", {"image_url": "https://cdn.example.com/holding.jpg",
                                          "caption": "Kami sedang menangani gangguan pembayaran."}, ctx)
    [container] = graph.calls("POST", f"/v23.0/{graph.ig_user_id}/media")
    assert container.json() == {"image_url": "https://cdn.example.com/holding.jpg",
                                "caption": "Kami sedang menangani gangguan pembayaran."}
    assert published["id"] in graph.media and published["url"].startswith("https://www.instagram.com/p/")
    assert answer["id"] in graph.comments["1780000000000001"]
    spec = REGISTRY["instagram.publish"]
    found = asyncio.run(spec.reconcile(spec.params.model_validate(
        {"image_url": "https://cdn.example.com/holding.jpg", "caption": "Kami sedang menangani gangguan pembayaran."}), ctx))
    assert found.id == published["id"] and found.reconciled
    reply_spec = REGISTRY["instagram.reply"]
    assert asyncio.run(reply_spec.reconcile(reply_spec.params.model_validate(
        {"reply_to": "1780000000000001", "message": "Halo! Cek DM ya."}), ctx)).id == answer["id"]

    graph.publish_limit, graph.container_checks = len(graph.media), 0
    limited = failure("instagram.publish", {"image_url": "https://cdn.example.com/x.jpg", "caption": "Lagi."}, ctx)
    assert "(#9) Application request limit reached" in str(limited) and "maximum number of posts" in str(limited)
    assert not limited.retryable
    graph.publish_limit = 100
    assert_no_canary(answer, published, limited)


# --- WhatsApp -----------------------------------------------------------------------------------


def test_whatsapp_session_and_template_messages(graph: FakeGraph, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"wa": graph_connection(graph, "whatsapp")}, incident="inc-9", step="tell-budi")
    graph.window_open.add("6281234567890")
    sent = act("whatsapp.send", {"to": "+6281234567890", "text": "Halo Budi, saldo Anda aman.",
                                 "reply_to": "wamid.FROMBUDI"}, ctx)
    closed = failure("whatsapp.send", {"to": "+6289876543210", "text": "Halo."}, ctx)
    template = act("whatsapp.send", {"to": "+6289876543210",
                                     "template": {"name": "incident_update", "language": "id",
                                                  "parameters": ["Pembayaran kartu pulih pukul 14:05 WIB."]}}, ctx)
    first, _, third = [r.json() for r in graph.calls("POST", f"/v23.0/{graph.phone_number_id}/messages")]
    assert first == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "6281234567890",
                     "biz_opaque_callback_data": "inc-9:tell-budi", "type": "text",
                     "text": {"body": "Halo Budi, saldo Anda aman.", "preview_url": False},
                     "context": {"message_id": "wamid.FROMBUDI"}}
    assert third["template"] == {"name": "incident_update", "language": {"code": "id"}, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "Pembayaran kartu pulih pukul 14:05 WIB."}]}]}
    assert sent["delivered_via"] == "whatsapp" and sent["id"].startswith("wamid.") and sent["to"] == "whatsapp:+6281234567890"
    assert template["id"] == graph.messages[-1]["id"]
    assert "(#131047) Re-engagement message" in str(closed) and "24 hours" in str(closed)
    assert closed.changed is False and not closed.retryable and "template" in (closed.todo or "")

    wrong = failure("whatsapp.send", {"to": "+6289876543210", "template": {"name": "incident_update"}}, ctx)
    assert "(#132000)" in str(wrong) and wrong.changed is False
    with pytest.raises(ValueError, match="either text"):
        REGISTRY["whatsapp.send"].params.model_validate({"to": "+6281234567890"})
    assert_no_canary(sent, closed, template, wrong)


def test_whatsapp_throughput_limits_are_waited_out_and_unknown_outcomes_left_to_a_person(
    graph: FakeGraph, tmp_path: Path, ledger: Ledger
) -> None:
    graph.window_open.add("6281111111111")
    path = f"/v23.0/{graph.phone_number_id}/messages"
    graph.fail("POST", path, graph_error(400, 130429, "(#130429) Rate limit hit", details="Message failed to send "
                                         "because there were too many messages sent from this phone number in a short "
                                         "period of time", headers={"Retry-After": "1"}))
    before = len(graph.messages)
    ctx = context(tmp_path, {"wa": graph_connection(graph, "whatsapp")}, step="tell-ops")
    assert step("whatsapp.send", {"to": "+6281111111111", "text": "Bridge: #war-room-social"}, ctx, ledger).status == "completed"
    assert len(graph.messages) == before + 1

    graph.fail("POST", path, Drop(after=True))
    unknown = context(tmp_path, ctx.connections, step="tell-ops-again", run_id=ctx.run_id)
    with pytest.raises(ActionFailed):
        step("whatsapp.send", {"to": "+6281111111111", "text": "Update."}, unknown, ledger)
    with pytest.raises(ActionFailed) as caught:
        step("whatsapp.send", {"to": "+6281111111111", "text": "Update."}, unknown, ledger)
    assert "may already have acted" in str(caught.value) and "siaga ledger --resolve" in (caught.value.todo or "")
    assert "cannot list the messages" in str(caught.value)
    assert len(graph.messages) == before + 2, "the second attempt sent nothing"


def test_a_person_is_reached_on_whatsapp_and_on_the_next_channel_once_their_window_closed(
    graph: FakeGraph, tmp_path: Path
) -> None:
    from siaga.flows.reach import reach
    from siaga.runbook.roster import parse_roster

    roster = parse_roster("""\
people:
  budi: {roles: [liaison], channels: {whatsapp: "+6284444444444"}}
  dewi: {roles: [care], channels: {whatsapp: "+6285555555555"}}
""")
    graph.window_open.add("6284444444444")
    ctx = context(tmp_path, {"wa": graph_connection(graph, "whatsapp")}, step="gate-codes")
    assert asyncio.run(reach("budi", "Kode persetujuan", "APPROVE 12345678", REGISTRY, roster, ctx)) == "whatsapp"
    assert graph.messages[-1]["to"] == "6284444444444"
    assert graph.messages[-1]["text"]["body"] == "*Kode persetujuan*\nAPPROVE 12345678"
    assert asyncio.run(reach("dewi", "Kode persetujuan", "APPROVE 87654321", REGISTRY, roster, ctx)) == "outbox"
    assert read_outbox(tmp_path)[-1]["to"] == "person:dewi", "her window was closed (131047): the next channel"
    bare = context(tmp_path, {}, step="gate-codes")
    assert asyncio.run(reach("budi", "Kode", "APPROVE 1", REGISTRY, roster, bare)) == "outbox"
    assert read_outbox(tmp_path)[-1]["to"] == "person:budi", "no WhatsApp number configured: not tried"


# --- website notices ----------------------------------------------------------------------------


def test_website_notice_is_put_signed_and_updated_in_place(site: FakeWebsite, tmp_path: Path) -> None:
    ctx = context(tmp_path, {"site": site_connection(site)}, incident="inc/42", step="banner")
    posted = act("website.notice", {"title": "Gangguan pembayaran", "text": "Kami sedang menanganinya.",
                                    "fields": {"placement": ["help-centre", "in-app-home"]}}, ctx)
    [call] = site.calls("PUT", "/api/notices/incident-inc-42")
    assert call.json() == {"placement": ["help-centre", "in-app-home"], "id": "incident-inc-42",
                           "title": "Gangguan pembayaran", "text": "Kami sedang menanganinya.", "level": "warning",
                           "incident": "inc/42", "runbook": "social-media-storm", "step": "banner"}
    assert call.header("Idempotency-Key") == "inc/42:banner" and call.header("X-Siaga-Signature").startswith("sha256=")
    assert posted == {"delivered_via": "website", "to": "website:incident-inc-42", "outbox_id": None,
                      "id": "incident-inc-42", "url": f"{site.url}/notices/incident-inc-42", "reconciled": False}

    # a later step of the incident updates the same notice; a dropped answer is simply put again
    site.fail("PUT", "/api/notices/incident-inc-42", Drop(after=True), Reply(503, {"error": "busy"}, {"Retry-After": "0"}))
    later = context(tmp_path, ctx.connections, incident="inc/42", step="banner-resolved")
    act("website.notice", {"title": "Pulih", "text": "Pembayaran normal kembali.", "level": "resolved"}, later)
    assert len(site.calls("PUT", "/api/notices/incident-inc-42")) == 4
    assert list(site.notices) == ["incident-inc-42"] and site.notices["incident-inc-42"]["level"] == "resolved"


def test_website_post_notices_carry_the_idempotency_key_and_refusals_are_scrubbed(
    site: FakeWebsite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = site_connection(site, url=f"{site.url}/api/notices")
    ctx = context(tmp_path, {"site": conn}, incident="inc-43", step="banner")
    first = act("website.notice", {"title": "Info", "text": "Teks."}, ctx)
    again = act("website.notice", {"title": "Info", "text": "Teks."}, ctx)
    assert first["id"] == again["id"] and len(site.notices) >= 1
    assert [r.header("Idempotency-Key") for r in site.calls("POST", "/api/notices")] == ["inc-43:banner"] * 2
    spec = REGISTRY["website.notice"]
    with pytest.raises(Exception, match="by POST"):
        asyncio.run(spec.reconcile(spec.params.model_validate({"title": "Info", "text": "Teks."}), ctx))
    monkeypatch.setenv("SIAGA_SECRET_CMS_TOKEN", "canary-cms-token-2b7c-old")
    refused = failure("website.notice", {"title": "Info", "text": "Teks."}, ctx)
    assert "answered 401" in str(refused) and "invalid credentials" in str(refused) and refused.changed is False
    assert_no_canary(first, refused, "canary-cms-token-2b7c-old" in str(refused))
    with pytest.raises(ValueError, match="never published unauthenticated"):
        from siaga.integrations.website import WebsiteConnection
        WebsiteConnection.model_validate({"type": "website", "url": "https://example.com/n"})


# --- drills, the outbox, channels ---------------------------------------------------------------


POSTS = {
    "x.post": {"text": "Kami sedang menanganinya."},
    "x.reply": {"text": "Halo, saldo Anda aman.", "reply_to": "1790000000000000999"},
    "facebook.post": {"message": "Kami sedang menanganinya."},
    "facebook.reply": {"reply_to": "104567890123456_900000000000001", "message": "Halo."},
    "instagram.reply": {"reply_to": "1780000000000001", "message": "Halo."},
    "instagram.publish": {"image_url": "https://cdn.example.com/a.jpg", "caption": "Kami sedang menanganinya."},
    "whatsapp.send": {"to": "+6281234567890", "text": "Halo."},
    "website.notice": {"title": "Gangguan", "text": "Kami sedang menanganinya."},
}


def test_a_drill_posts_nothing_and_records_what_it_would_have_posted(
    x_api: FakeX, graph: FakeGraph, site: FakeWebsite, tmp_path: Path
) -> None:
    connections = {"brand": x_connection(x_api), "page": graph_connection(graph, "facebook"),
                   "insta": graph_connection(graph, "instagram"), "wa": graph_connection(graph, "whatsapp"),
                   "site": site_connection(site)}
    seen = len(x_api.requests) + len(graph.requests) + len(site.requests)
    published: list[tuple[str, str]] = []

    async def publish(key: str, markdown: str) -> None:
        published.append((key, markdown))

    from dataclasses import replace
    for name, params in POSTS.items():
        ctx = replace(context(tmp_path, connections, step=name.replace(".", "-"), mode=Mode.DRILL), publish=publish)
        result = step(name, params, ctx)
        assert result.status == "recorded" and result.output["action"] == name
        assert result.note == "drill: recorded, not called"
        text = next(v for k, v in result.output["params"].items() if k in ("text", "message", "caption"))
        assert text.startswith("[DRILL] "), "the record shows the text as a drill would have sent it"
    assert len(x_api.requests) + len(graph.requests) + len(site.requests) == seen, "a drill posted"
    assert len(published) == len(POSTS) and all("Would have called" in md for _, md in published)

    # as a comms.publish channel (where the step's drill behaviour is not asked): the sandbox, or nothing
    sandboxed = {**connections, "page": {**connections["page"], "production": True}}
    ctx = context(tmp_path, sandboxed, mode=Mode.DRILL)
    for name, params in POSTS.items():
        spec = REGISTRY[name]
        with pytest.raises(ActionFailed, match="names no `sandbox:`|is production"):
            asyncio.run(spec.run(spec.params.model_validate(params), ctx))
    assert len(x_api.requests) + len(graph.requests) + len(site.requests) == seen
    test_page = {**connections["page"], "page_id": graph.page_id}
    with_sandbox = {"page": {**connections["page"], "production": True, "sandbox": "page-test", "default": True},
                    "page-test": test_page}
    tried = act("facebook.post", {"message": "[DRILL] Uji coba."}, context(tmp_path, with_sandbox, mode=Mode.DRILL))
    assert tried["delivered_via"] == "facebook" and graph.objects[tried["id"]]["message"] == "[DRILL] Uji coba."


@pytest.mark.parametrize("name", sorted(POSTS))
def test_without_a_connection_the_post_goes_to_the_outbox(name: str, tmp_path: Path) -> None:
    result = act(name, POSTS[name], context(tmp_path, {"other": {"type": "http"}}))
    assert result["delivered_via"] == "outbox" and result["id"] is None
    [entry] = read_outbox(tmp_path)
    assert entry["id"] == result["outbox_id"] and entry["to"] == result["to"]
    assert entry["to"].split(":")[0] == name.split(".")[0]


def test_social_actions_are_channels_of_comms_publish_and_notify_fanout(
    x_api: FakeX, graph: FakeGraph, site: FakeWebsite, tmp_path: Path, ledger: Ledger
) -> None:
    from siaga.integrations.comms import DraftText, draft_hash

    fields = {"audience": "media", "languages": ["id"], "messages": {"id": {"subject": "Pembayaran",
              "body": "Kami sedang menangani gangguan pembayaran."}}, "subject": "Pembayaran",
              "text": "Kami sedang menangani gangguan pembayaran."}
    draft = DraftText(**fields, sha256=draft_hash(fields)).model_dump()
    connections = {"brand": x_connection(x_api), "page": graph_connection(graph, "facebook"),
                   "wa": graph_connection(graph, "whatsapp"), "site": site_connection(site)}
    graph.window_open.add("6282222222222")
    spec = REGISTRY["comms.publish"]
    params = spec.params.model_validate({"draft": draft, "channels": [
        {"action": "x.post"}, {"action": "facebook.post"}, {"action": "website.notice"},
        {"action": "whatsapp.send", "with": {"to": "+6282222222222"}}]})
    ctx = context(tmp_path, connections, step="holding-statement", incident="inc-50")
    result = asyncio.run(perform(spec, params, ctx, spec.drill_behaviour, ledger)).output
    assert result["delivered"] == ["x", "facebook", "website", "whatsapp"]
    assert x_api.posts[-1]["raw"] == "Kami sedang menangani gangguan pembayaran."
    assert graph.objects[result["channels"]["facebook"]["result"]["id"]]["message"] == fields["text"]
    assert site.notices["incident-inc-50"]["title"] == "Pembayaran"
    assert graph.messages[-1]["text"]["body"] == fields["text"]
    seen = len(x_api.requests) + len(graph.requests) + len(site.requests)
    drill = context(tmp_path, connections, step="holding-statement", incident="inc-51", mode=Mode.DRILL)
    rehearsed = asyncio.run(perform(spec, params, drill, spec.drill_behaviour, ledger)).output
    assert rehearsed["delivered"] == ["x", "facebook", "website", "whatsapp"]
    assert all(c["result"]["drill"] == "recorded" and "sandbox" in c["result"]["reason"]
               for c in rehearsed["channels"].values())
    assert len(x_api.requests) + len(graph.requests) + len(site.requests) == seen, "a drill's statement was posted"
    with pytest.raises(ValueError, match="come from the approved draft"):
        spec.params.model_validate({"draft": draft, "channels": [{"action": "x.post", "with": {"text": "mine"}}]})

    fanout = REGISTRY["notify.fanout"]
    sent = asyncio.run(perform(fanout, fanout.params.model_validate({
        "message": "Bridge: #war-room-social",
        "channels": [{"action": "whatsapp.send", "with": {"to": "+6282222222222"}}, {"action": "outbox.send"}]}),
        context(tmp_path, connections, step="tell-cmt"), fanout.drill_behaviour, ledger)).output
    assert sent["delivered"] == ["whatsapp", "outbox"] and graph.messages[-1]["text"]["body"] == "Bridge: #war-room-social"
    assert_no_canary(result, sent, [e.result for e in ledger.entries()], read_outbox(tmp_path))


# --- a runbook's flow run -----------------------------------------------------------------------

RUNBOOK = """\
runbook: social-answer
title: Social answer
severity: sev3
roles: {comms: [gita, fajar], liaison: [budi]}
steps:
  - id: answer-x
    action: x.reply
    approval: {from: [comms]}   # a post in public waits for people (`ungated-post`)
    with: {reply_to: "1790000000000000999", text: "Halo Budi, saldo Anda aman (run {{ run.name }})."}
  - id: page-post
    action: facebook.post
    approval: {from: [comms]}
    with: {message: "Pembaruan {{ run.name }}: pembayaran pulih bertahap."}
  - id: tell-ops
    action: whatsapp.send
    with: {to: "+6283333333333", text: "Bridge: #war-room-social"}
  - id: banner
    action: website.notice
    approval: {from: [comms]}
    with: {title: Gangguan pembayaran, text: Kami sedang menanganinya.}
"""


@pytest.mark.usefixtures("prefect_api")
def test_a_runbook_posts_once_live_and_nothing_in_a_drill(
    x_api: FakeX, graph: FakeGraph, site: FakeWebsite, siaga_home: Path, tmp_path: Path,
) -> None:
    from siaga.flows import compile_runbook
    from siaga.runbook import parse_runbook

    connections = {"brand": x_connection(x_api), "page": graph_connection(graph, "facebook"),
                   "wa": graph_connection(graph, "whatsapp"), "site": site_connection(site)}
    file = tmp_path / "connections.yaml"
    file.write_text(json.dumps({"connections": connections}))
    graph.window_open.add("6283333333333")
    flow = compile_runbook(parse_runbook(RUNBOOK, REGISTRY, file="social-answer.yaml"),
                           settings=settings_with(connections=file))

    def run(mode: str) -> dict[str, str]:
        state = asyncio.run(with_approvals(siaga_home, "social-answer",
                                           flow(mode=mode, requested_by="budi", return_state=True)))
        assert state.is_completed(), state.message
        return {s["step"]: s["outcome"] for s in asyncio.run(state.aresult())["steps"]}

    seen = len(x_api.requests) + len(graph.requests) + len(site.requests)
    assert run("drill") == dict.fromkeys(("answer-x", "page-post", "tell-ops", "banner"), "recorded")
    assert len(x_api.requests) + len(graph.requests) + len(site.requests) == seen, "a drill posted"

    posts, feed, messages = len(x_api.posts), len(graph.feed), len(graph.messages)
    assert run("live") == dict.fromkeys(("answer-x", "page-post", "tell-ops", "banner"), "completed")
    assert (len(x_api.posts), len(graph.feed), len(graph.messages)) == (posts + 1, feed + 1, messages + 1)
    assert x_api.posts[-1]["referenced_tweets"] == [{"type": "replied_to", "id": "1790000000000000999"}]
    assert any(n.startswith("incident-") for n in site.notices)
    logs = (siaga_home / "logs" / "siaga.jsonl").read_text(encoding="utf-8")
    assert '"step": "answer-x"' in logs or '"step":"answer-x"' in logs
    assert_no_canary(logs)


def test_every_posting_action_counts_as_a_public_statement() -> None:
    from siaga.drills.score import PUBLIC_ACTIONS
    from siaga.runbook.comms import POSTING_ACTIONS

    assert POSTING_ACTIONS <= PUBLIC_ACTIONS and POSTING_ACTIONS <= set(REGISTRY.names())
    assert {n for n in REGISTRY.names() if n.split(".")[0] in ("x", "facebook", "instagram", "website")} == POSTING_ACTIONS
