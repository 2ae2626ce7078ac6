"""Notification actions against local stand-ins that speak each provider's wire format: Slack
(Web API and incoming webhooks), PagerDuty Events v2, Teams Workflows, SMTP with STARTTLS and
AUTH (aiosmtpd), Apprise's json://, and the fanout of them all. Every provider's secret is a
canary that must never show in results, errors or logs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from siaga.actions import ActionContext, ActionFailed, Mode
from siaga.flows.steps import perform
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.audit.ledger import Ledger
from siaga.store import engine
from testkit.provider_servers import SLACK_CHANNELS, Providers, Reply, providers, smtp_server

from ..support.notify_canaries import APPRISE_PASS, CANARY

REGISTRY = default_registry()


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in CANARY.items():
        if value:
            monkeypatch.setenv("SIAGA_SECRET_" + name.upper().replace("-", "_"), value)
    return CANARY


@pytest.fixture
def stand_ins(secrets: dict[str, str]) -> Any:
    with providers(
        slack_token=secrets["slack-token"],
        slack_webhook=secrets["slack-webhook"],
        teams_webhook=secrets["teams-webhook"],
    ) as servers:
        yield servers


def connections(servers: Providers, *kinds: str) -> dict[str, dict[str, Any]]:
    """connections.yaml's content for `kinds`, pointed at the stand-ins."""
    every = {
        "slack-bot": {
            "type": "slack",
            "bot_token": "secret://slack-token",
            "channel": "#inc-payments",
            "api_url": servers.slack_api,
        },
        "slack-hook": {"type": "slack", "webhook_url": "secret://slack-webhook"},
        "pagerduty": {
            "type": "pagerduty",
            "routing_key": "secret://pd-key",
            "events_url": servers.pagerduty_url,
        },
        "teams": {
            "type": "teams",
            "webhook_url": "secret://teams-webhook",
            "channel": "CMT",
            "timeout": 1.0,
        },
        "apprise": {"type": "apprise", "url": "secret://apprise-url", "channel": "json:ops"},
    }
    return {kind: every[kind] for kind in kinds}


def context(
    home: Path,
    conns: dict[str, Any] | None = None,
    *,
    step: str = "tell",
    mode: Mode = Mode.LIVE,
    run_id: str | None = None,
) -> ActionContext:
    return ActionContext(
        runbook_id="notify-test",
        step_id=step,
        run_id=run_id or uuid.uuid4().hex,
        mode=mode,
        home=home,
        connections=conns or {},
    )


def act(name: str, params: dict[str, Any], ctx: ActionContext) -> Any:
    spec = REGISTRY[name]
    result = asyncio.run(spec.run(spec.params.model_validate(params), ctx))
    return result.model_dump(mode="json") if hasattr(result, "model_dump") else result


def failure(name: str, params: dict[str, Any], ctx: ActionContext) -> ActionFailed:
    with pytest.raises(ActionFailed) as caught:
        act(name, params, ctx)
    return caught.value


def assert_no_canary(*texts: Any) -> None:
    blob = json.dumps([str(t) for t in texts])
    for name, value in CANARY.items():
        if value:
            assert value not in blob, f"the {name} secret leaked"
    assert APPRISE_PASS not in blob, "the Apprise URL's password leaked"


# --- Slack --------------------------------------------------------------------------------------


def test_slack_bot_posts_block_kit_and_returns_ts_for_threads(
    stand_ins: Providers, tmp_path: Path
) -> None:
    ctx = context(tmp_path, connections(stand_ins, "slack-bot"))
    first = act("slack.post", {"title": "SEV1", "text": "Payments *failing*"}, ctx)
    assert first["delivered_via"] == "slack" and first["channel"] == SLACK_CHANNELS["#inc-payments"]
    assert first["ts"] and first["thread_ts"] == first["ts"]
    reply = act(
        "slack.post", {"text": "Update: failover done", "thread_ts": first["thread_ts"]}, ctx
    )
    assert reply["thread_ts"] == first["ts"] and reply["ts"] != first["ts"]

    sent = stand_ins.calls("/slack/api/chat.postMessage")
    assert sent[0].headers["Authorization"] == f"Bearer {CANARY['slack-token']}"
    assert sent[0].headers["Content-Type"].startswith("application/json")
    body = sent[0].json()
    assert body["channel"] == "#inc-payments" and body["text"] == "SEV1\nPayments *failing*"
    assert body["blocks"] == [
        {"type": "header", "text": {"type": "plain_text", "text": "SEV1", "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "Payments *failing*"}},
    ]
    assert sent[1].json()["thread_ts"] == first["ts"]
    assert_no_canary(first, reply)


def test_slack_errors_say_what_to_do_and_keep_the_token_out(
    stand_ins: Providers, tmp_path: Path
) -> None:
    ctx = context(tmp_path, connections(stand_ins, "slack-bot"))
    error = failure("slack.post", {"text": "hi", "channel": "#nowhere"}, ctx)
    assert "channel_not_found" in str(error) and error.changed is False and not error.retryable
    assert "invite" in (error.todo or "")

    stand_ins.slack_token = "xoxb-rotated"
    error = failure("slack.post", {"text": "hi"}, ctx)
    assert "invalid_auth" in str(error) and "secret://slack-token" in (error.todo or "")

    stand_ins.answer(
        "/slack/api/chat.postMessage", Reply(500, {"ok": False, "error": "internal_error"})
    )
    before = len(stand_ins.requests)
    error = failure("slack.post", {"text": "hi"}, ctx)
    assert error.changed is None, "a 500 may have posted"
    assert len(stand_ins.requests) == before + 1, (
        "a post that may have arrived is not blindly repeated"
    )
    assert_no_canary(str(error), error.todo)


def test_slack_429_waits_as_long_as_retry_after_says(stand_ins: Providers, tmp_path: Path) -> None:
    stand_ins.answer(
        "/slack/api/chat.postMessage",
        Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}),
    )
    started = time.monotonic()
    posted = act(
        "slack.post", {"text": "hi"}, context(tmp_path, connections(stand_ins, "slack-bot"))
    )
    assert posted["ts"]
    assert time.monotonic() - started >= 1.0
    assert len(stand_ins.calls("/slack/api/chat.postMessage")) == 2


def test_slack_incoming_webhook(stand_ins: Providers, tmp_path: Path) -> None:
    conns = connections(stand_ins, "slack-hook")
    conns["slack-hook"]["webhook_url"] = "secret://slack-webhook-url"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIAGA_SECRET_SLACK_WEBHOOK_URL", stand_ins.slack_webhook_url)
        ctx = context(tmp_path, conns)
        posted = act("slack.post", {"text": "Bridge open"}, ctx)
        assert posted["delivered_via"] == "slack" and posted["ts"] is None
        [call] = stand_ins.calls(f"/slack/services/T0001/B0001/{CANARY['slack-webhook']}")
        assert call.json()["blocks"][0]["text"] == {"type": "mrkdwn", "text": "Bridge open"}

        hook_path = f"/slack/services/T0001/B0001/{CANARY['slack-webhook']}"
        stand_ins.answer(hook_path, Reply(400, "invalid_payload", {"Content-Type": "text/html"}))
        bad = failure("slack.post", {"text": "Bridge open"}, ctx)
        assert "answered 400" in str(bad) and "invalid_payload" in str(bad) and bad.changed is False
        assert len(stand_ins.calls(hook_path)) == 2, "a refusal is not retried"

        patch.setenv("SIAGA_SECRET_SLACK_WEBHOOK_URL", stand_ins.slack_webhook_url + "-revoked")
        error = failure("slack.post", {"text": "Bridge open"}, context(tmp_path, conns))
        assert (
            "answered 404" in str(error) and "no_service" in str(error) and error.changed is False
        )
        assert "the Slack incoming webhook" in str(error)
        assert_no_canary(posted, str(error), error.todo, str(bad))


# --- PagerDuty ----------------------------------------------------------------------------------


def test_pagerduty_trigger_and_resolve_share_the_derived_dedup_key(
    stand_ins: Providers, tmp_path: Path
) -> None:
    run_id = uuid.uuid4().hex
    conns = connections(stand_ins, "pagerduty")
    page = act(
        "pagerduty.trigger",
        {
            "summary": "Gateway down",
            "severity": "critical",
            "custom_details": {"region": "ap-southeast-3"},
        },
        context(tmp_path, conns, step="page", run_id=run_id),
    )
    assert page["dedup_key"] == f"siaga:{run_id}:page"
    assert page["status"] == "success" and page["message"] == "Event processed"
    [event] = [r.json() for r in stand_ins.calls("/pagerduty/v2/enqueue")]
    assert event == {
        "routing_key": CANARY["pd-key"],
        "event_action": "trigger",
        "dedup_key": f"siaga:{run_id}:page",
        "payload": {
            "summary": "Gateway down",
            "source": "siaga",
            "severity": "critical",
            "custom_details": {"region": "ap-southeast-3"},
        },
    }
    later = context(tmp_path, conns, step="all-clear", run_id=run_id)
    by_step = act("pagerduty.resolve", {"trigger_step": "page"}, later)
    by_key = act("pagerduty.resolve", {"dedup_key": page["dedup_key"]}, later)
    assert by_step["dedup_key"] == by_key["dedup_key"] == page["dedup_key"]
    resolves = [r.json() for r in stand_ins.calls("/pagerduty/v2/enqueue")][1:]
    assert [(e["event_action"], e["dedup_key"], "payload" in e) for e in resolves] == [
        ("resolve", page["dedup_key"], False)
    ] * 2
    assert_no_canary(page, by_step)


def test_pagerduty_retries_rate_limits_server_errors_and_drops_but_not_refusals(
    stand_ins: Providers, tmp_path: Path
) -> None:
    ctx = context(tmp_path, connections(stand_ins, "pagerduty"), step="page")
    stand_ins.answer(
        "/pagerduty/v2/enqueue",
        Reply(
            429,
            {
                "status": "throttle event",
                "message": "Requests for this service are arriving too quickly.",
            },
            {"Retry-After": "1"},
        ),
        Reply(500, {"status": "error"}),
        Reply(drop=True),
    )
    started = time.monotonic()
    page = act("pagerduty.trigger", {"summary": "Gateway down"}, ctx)
    assert page["status"] == "success"
    assert len(stand_ins.calls("/pagerduty/v2/enqueue")) == 4, (
        "the dedup key makes every retry safe"
    )
    assert time.monotonic() - started >= 1.0, "Retry-After: 1 was honoured"
    assert len({r.json()["dedup_key"] for r in stand_ins.requests}) == 1

    conns = connections(stand_ins, "pagerduty")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIAGA_SECRET_PD_KEY", "too-short")
        error = failure("pagerduty.trigger", {"summary": "Gateway down"}, context(tmp_path, conns))
    assert "answered 400" in str(error) and "Length of 'routing_key' is incorrect" in str(error)
    assert (
        error.changed is False and not error.retryable and "secret://pd-key" in (error.todo or "")
    )
    assert_no_canary(page, str(error))


# --- Teams --------------------------------------------------------------------------------------


def test_teams_posts_an_adaptive_card(stand_ins: Providers, tmp_path: Path) -> None:
    conns = connections(stand_ins, "teams")
    conns["teams"]["webhook_url"] = "secret://teams-url"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIAGA_SECRET_TEAMS_URL", stand_ins.teams_webhook_url)
        posted = act(
            "teams.post",
            {
                "title": "SEV1",
                "text": "Payments failing.\n\nBridge: #inc",
                "facts": {"Region": "ap-southeast-3"},
            },
            context(tmp_path, conns),
        )
        assert posted == {
            "delivered_via": "teams",
            "to": "teams:CMT",
            "outbox_id": None,
            "status": 202,
        }
        [call] = stand_ins.calls(f"/teams/workflows/{CANARY['teams-webhook']}")
        card = call.json()
        assert card["type"] == "message"
        [attachment] = card["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        content = attachment["content"]
        assert (content["type"], content["version"]) == ("AdaptiveCard", "1.4")
        assert [(b["type"], b.get("text")) for b in content["body"]] == [
            ("TextBlock", "SEV1"),
            ("TextBlock", "Payments failing."),
            ("TextBlock", "Bridge: #inc"),
            ("FactSet", None),
        ]

        path = f"/teams/workflows/{CANARY['teams-webhook']}"
        stand_ins.answer(
            path,
            Reply(
                429,
                {"error": {"code": "TooManyRequests", "message": "Rate limit"}},
                {"Retry-After": "1"},
            ),
        )
        started = time.monotonic()
        act("teams.post", {"text": "again"}, context(tmp_path, conns))
        assert time.monotonic() - started >= 1.0 and len(stand_ins.calls(path)) == 3

        stand_ins.answer(path, Reply(202, b"", delay=3))
        slow = failure("teams.post", {"text": "slow"}, context(tmp_path, conns))
        assert "ReadTimeout" in str(slow) and slow.changed is None, (
            "a slow answer may still have posted"
        )
        assert len(stand_ins.calls(path)) == 4, "and is not repeated"

        patch.setenv("SIAGA_SECRET_TEAMS_URL", stand_ins.teams_webhook_url + "x")
        gone = failure("teams.post", {"text": "hi"}, context(tmp_path, conns))
        assert "WorkflowTriggerNotFound" in str(gone) and gone.changed is False
        assert "the Teams workflow webhook" in str(gone)
        assert_no_canary(posted, str(slow), str(gone), gone.todo)


# --- e-mail -------------------------------------------------------------------------------------


def smtp_connection(box: Any) -> dict[str, Any]:
    return {
        "mail": {
            "type": "smtp",
            "host": "localhost",
            "port": box.port,
            "username": "siaga",
            "password": "secret://smtp-password",
            "sender": "Siaga CMT <cmt@siaga.test>",
            "ca_file": box.ca_file,
            "timeout": 5,
        }
    }


def test_email_over_starttls_and_auth_with_both_parts(
    secrets: dict[str, str], tmp_path: Path
) -> None:
    with smtp_server(tmp_path, "siaga", secrets["smtp-password"]) as box:
        ctx = context(tmp_path, smtp_connection(box), step="notify-ojk", mode=Mode.DRILL)
        step = asyncio.run(
            perform(
                REGISTRY["email.send"],
                REGISTRY["email.send"].params.model_validate(
                    {
                        "to": "ojk@regulator.test, Legal <legal@siaga.test>",
                        "cc": ["cmt@siaga.test"],
                        "bcc": ["audit@siaga.test"],
                        "subject": "Incident notice",
                        "text": "Dear OJK,\n\nWe report an incident.",
                        "html": "<p>Dear OJK,</p><p>We report an incident.</p>",
                    }
                ),
                ctx,
                REGISTRY["email.send"].drill_behaviour,
            )
        )
        sent = step.output
        assert sent["delivered_via"] == "smtp"
        assert sent["recipients"] == [
            "ojk@regulator.test",
            "legal@siaga.test",
            "cmt@siaga.test",
            "audit@siaga.test",
        ]
        [(mail_from, rcpt, message)] = box.messages
        assert box.logins == ["siaga"]
        assert mail_from == "cmt@siaga.test" and rcpt == sent["recipients"]
        assert message["From"] == "Siaga CMT <cmt@siaga.test>"
        assert (
            message["To"] == "ojk@regulator.test, Legal <legal@siaga.test>"
            and message["Cc"] == "cmt@siaga.test"
        )
        assert message["Bcc"] is None
        assert message["Subject"] == "[DRILL] Incident notice"
        assert message["Message-ID"] == sent["message_id"]
        assert sent["message_id"].startswith("<siaga.") and sent["message_id"].endswith(
            "@siaga.test>"
        )
        plain = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert plain.startswith("[DRILL] Dear OJK,") and "We report an incident." in plain
        assert "<p>Dear OJK,</p>" in html and html.startswith("[DRILL] ")

        again = act(
            "email.send",
            {"to": "a@b.test", "subject": "s", "text": "t"},
            context(tmp_path, smtp_connection(box), step="notify-ojk", run_id=ctx.run_id),
        )
        assert again["message_id"] == sent["message_id"], (
            "the Message-ID comes from the idempotency key"
        )
        generated = box.messages[-1][2]
        assert "<p>t</p>" in generated.get_body(("html",)).get_content()
        assert_no_canary(sent, again)


def test_email_refusals_say_what_failed(secrets: dict[str, str], tmp_path: Path) -> None:
    with smtp_server(tmp_path, "siaga", "another-password") as box:
        error = failure(
            "email.send",
            {"to": ["a@b.test"], "subject": "s", "text": "t"},
            context(tmp_path, smtp_connection(box)),
        )
        assert "refused AUTH for siaga" in str(error) and "535" in str(error)
        assert error.changed is False and "secret://smtp-password" in (error.todo or "")
        conns = smtp_connection(box)
        conns["mail"].pop("ca_file")
        untrusted = failure(
            "email.send",
            {"to": ["a@b.test"], "subject": "s", "text": "t"},
            context(tmp_path, conns),
        )
        assert "TLS failed during starttls" in str(untrusted) and untrusted.changed is False
        assert box.messages == []
        assert_no_canary(str(error), str(untrusted))


# --- Apprise ------------------------------------------------------------------------------------


def test_apprise_json_url(
    stand_ins: Providers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = stand_ins.url.removeprefix("http://")
    monkeypatch.setenv("SIAGA_SECRET_APPRISE_URL", f"json://siaga:{APPRISE_PASS}@{host}/json/ops")
    ctx = context(tmp_path, connections(stand_ins, "apprise"))
    sent = act(
        "apprise.notify",
        {"title": "SEV1", "body": "Payments failing", "notify_type": "failure"},
        ctx,
    )
    assert sent == {"delivered_via": "apprise", "to": "apprise:json:ops", "outbox_id": None}
    [call] = stand_ins.calls("/json/ops")
    assert call.json()["title"] == "SEV1" and call.json()["message"] == "Payments failing"
    assert call.json()["type"] == "failure"

    stand_ins.answer("/json/ops", Reply(400, {"error": "bad"}))
    refused = failure("apprise.notify", {"body": "x"}, ctx)
    assert "error=400" in str(refused) and refused.changed is False
    stand_ins.answer("/json/ops", Reply(502, {}))
    unknown = failure("apprise.notify", {"body": "x"}, ctx)
    assert unknown.changed is None and unknown.retryable
    assert_no_canary(sent, str(refused), str(unknown), refused.todo)


# --- the outbox when nothing is configured ------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "params", "to"),
    [
        (
            "slack.post",
            {"text": "Bridge open", "channel": "#payments-incident", "title": "SEV1"},
            "slack:#payments-incident",
        ),
        ("teams.post", {"text": "Bridge open", "title": "SEV1"}, "teams"),
        ("pagerduty.trigger", {"summary": "SEV1 gateway down"}, "pagerduty"),
        (
            "email.send",
            {"to": ["cmt@siaga.test"], "subject": "SEV1", "text": "Bridge open"},
            "email:cmt@siaga.test",
        ),
        ("apprise.notify", {"body": "Bridge open", "title": "SEV1"}, "apprise"),
    ],
)
def test_without_a_connection_the_message_goes_to_the_outbox(
    action: str, params: dict[str, Any], to: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, {"other": {"type": "http"}})
    result = act(action, params, ctx)
    assert result["delivered_via"] == "outbox" and result["to"] == to
    [entry] = read_outbox(tmp_path)
    assert entry["id"] == result["outbox_id"] and entry["to"] == to and entry["step"] == "tell"
    if action == "pagerduty.trigger":
        assert result["dedup_key"] == f"siaga:{ctx.run_id}:tell"


def test_a_named_connection_that_is_missing_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    error = failure("slack.post", {"text": "hi", "connection": "ops-slack"}, context(tmp_path))
    assert "no connection named 'ops-slack'" in str(error) and error.changed is False
    assert read_outbox(tmp_path) == []


def test_a_configured_provider_that_fails_does_not_fall_back(
    stand_ins: Providers, tmp_path: Path
) -> None:
    stand_ins.answer(
        "/pagerduty/v2/enqueue", *[Reply(503, {"status": "unavailable"}, {"Retry-After": "0"})] * 4
    )
    error = failure(
        "pagerduty.trigger",
        {"summary": "x"},
        context(tmp_path, connections(stand_ins, "pagerduty")),
    )
    assert "answered 503" in str(error) and error.retryable
    assert read_outbox(tmp_path) == []


# --- fanout -------------------------------------------------------------------------------------


def fanout_params(**extra: Any) -> dict[str, Any]:
    return {
        "subject": "SEV1: card payments failing",
        "message": "Payments through the gateway are failing. Bridge: #inc-payments.",
        "channels": [
            {"action": "slack.post"},
            {"action": "teams.post"},
            {"action": "pagerduty.trigger", "with": {"severity": "error"}},
            {"action": "outbox.send", "with": {"to": "cmt"}},
        ],
        **extra,
    }


def test_fanout_sends_to_every_channel_and_retries_only_the_failed_ones(
    stand_ins: Providers, tmp_path: Path
) -> None:
    conns = connections(stand_ins, "slack-bot", "pagerduty", "teams")
    conns["teams"]["webhook_url"] = "secret://teams-url"
    spec = REGISTRY["notify.fanout"]
    params = spec.params.model_validate(fanout_params())
    ledger = Ledger(engine(f"sqlite:///{tmp_path / 'siaga.db'}"))
    run_id = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIAGA_SECRET_TEAMS_URL", stand_ins.teams_webhook_url)
        teams_path = f"/teams/workflows/{CANARY['teams-webhook']}"
        stand_ins.answer(
            teams_path,
            Reply(400, {"error": {"code": "InvalidRequestContent", "message": "bad card"}}),
        )
        ctx = context(tmp_path, conns, step="tell-everyone", run_id=run_id)
        with pytest.raises(ActionFailed) as caught:
            asyncio.run(perform(spec, params, ctx, spec.drill_behaviour, ledger))
        error = caught.value
        assert "delivered to slack, pagerduty, outbox; failed: teams" in str(error)
        assert "InvalidRequestContent" in str(error) and error.changed is True
        assert len(stand_ins.calls("/slack/api/chat.postMessage")) == 1

        # the step runs again: only Teams is sent again
        result = asyncio.run(perform(spec, params, ctx, spec.drill_behaviour, ledger))
        assert len(stand_ins.calls("/slack/api/chat.postMessage")) == 1
        assert len(stand_ins.calls("/pagerduty/v2/enqueue")) == 1
        assert len(stand_ins.calls(teams_path)) == 2
        assert len(read_outbox(tmp_path)) == 1
        out = result.output
        assert out["delivered"] == ["slack", "teams", "pagerduty", "outbox"]
        assert (
            out["channels"]["pagerduty"]["result"]["dedup_key"]
            == f"siaga:{run_id}:tell-everyone.pagerduty"
        )
        assert ledger.get(f"{run_id}:tell-everyone.slack:slack.post").state == "done"
        page = stand_ins.calls("/pagerduty/v2/enqueue")[0].json()
        assert page["payload"]["summary"] == "SEV1: card payments failing"
        assert page["payload"]["severity"] == "error"
        assert page["payload"]["custom_details"] == {"message": fanout_params()["message"]}
        slack_body = stand_ins.calls("/slack/api/chat.postMessage")[0].json()
        assert slack_body["text"] == "SEV1: card payments failing\n" + fanout_params()["message"]
        assert_no_canary(out, str(error))


def test_fanout_channels_go_out_concurrently_and_drills_are_marked(
    stand_ins: Providers, tmp_path: Path
) -> None:
    stand_ins.delays.update({"slack": 0.5, "pagerduty": 0.5})
    conns = connections(stand_ins, "slack-bot", "pagerduty")
    spec = REGISTRY["notify.fanout"]
    params = spec.params.model_validate(
        fanout_params(
            channels=[
                {"action": "slack.post"},
                {"action": "pagerduty.trigger"},
                {"action": "slack.post", "with": {"channel": "#war-room"}},
            ]
        )
    )
    started = time.monotonic()
    step = asyncio.run(
        perform(spec, params, context(tmp_path, conns, mode=Mode.DRILL), spec.drill_behaviour)
    )
    assert time.monotonic() - started < 1.2, "three 0.5 s channels at once"
    assert step.output["delivered"] == ["slack", "pagerduty", "slack-2"]
    bodies = [r.json() for r in stand_ins.requests]
    texts = sorted(b.get("text") or b["payload"]["summary"] for b in bodies)
    assert all(text.startswith("[DRILL] SEV1") for text in texts), texts


def test_fanout_entries_are_validated_by_each_actions_own_model() -> None:
    from siaga.runbook import parse_runbook
    from siaga.runbook.diagnostics import RunbookError

    with pytest.raises(RunbookError) as caught:
        parse_runbook(
            """\
runbook: fanout-check
title: Fanout check
severity: sev3
inputs:
  severity: {type: string, default: critical}
steps:
  - id: tell
    action: notify.fanout
    with:
      subject: SEV1
      message: failing
      channels:
        - {action: pagerduty.trigger, with: {severity: "{{ inputs.severity }}"}}
        - {action: email.send, with: {to: not-an-address}}
        - {action: pagerduty.trigger, with: {severity: loud}}
        - {action: sms.send}
""",
            REGISTRY,
            file="fanout.yaml",
        )
    text = str(caught.value)
    assert "steps[0].with.channels[1].with.to: 'not-an-address' is not an e-mail address" in text
    assert "steps[0].with.channels[2].with.severity" in text
    assert "steps[0].with.channels[3].action" in text
    assert "channels[0]" not in text, "a template is judged when rendered, not before"

    twice = {
        "channels": [
            {"action": "slack.post", "with": {"text": "a"}},
            {"action": "slack.post", "id": "slack-2"},
            {"action": "slack.post", "with": {"text": "c"}},
        ],
        "message": "m",
    }
    with pytest.raises(
        ValueError, match="channel ids must differ: give `id:` to the channels named slack-2"
    ):
        REGISTRY["notify.fanout"].params.model_validate(twice)
