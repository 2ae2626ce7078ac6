"""A compiled runbook on the real Prefect server pages, posts to Slack and Teams, sends mail and
fans out, against the local stand-ins, with the connections in a connections.yaml; no canary
secret shows in Siaga's log file, Prefect's logs, the artifacts or the step outputs and errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import os
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from siaga.integrations.outbox import read_outbox
from siaga.audit.ledger import Ledger
from siaga.logs import log_file
from siaga.runbook import parse_runbook
from siaga.settings import Settings
from siaga.store import engine
from testkit.provider_servers import providers, smtp_server

from ..support.notify_canaries import APPRISE_PASS, CANARY
from ..support.settings import settings_with

pytestmark = pytest.mark.usefixtures("prefect_api")

RUNBOOK = """\
runbook: notify-e2e
title: Notifications end to end
severity: sev1
inputs:
  region: {type: string, default: ap-southeast-3}
steps:
  - id: page
    action: pagerduty.trigger
    with:
      summary: "Card payments failing in {{ inputs.region }}"
      severity: critical
      custom_details: {region: "{{ inputs.region }}"}
  - id: open-bridge
    action: slack.post
    with: {title: Incident bridge open, text: "Roles: commander alice, ops eko."}
  - id: bridge-update
    action: slack.post
    with: {text: "Paged: {{ steps.page.output.dedup_key }}", thread_ts: "{{ steps['open-bridge'].output.thread_ts }}"}
  - id: tell-teams
    action: teams.post
    with: {title: SEV1, text: "Card payments failing in {{ inputs.region }}."}
  - id: mail-cmt
    action: email.send
    with:
      to: [cmt@siaga.test, legal@siaga.test]
      subject: "SEV1 in {{ inputs.region }}"
      text: "Card payments are failing. Bridge: #inc-payments."
  - id: long-tail
    action: apprise.notify
    with: {title: SEV1, body: "Card payments failing."}
  - id: everyone
    action: notify.fanout
    with:
      subject: "Status: failing over"
      message: "Failover to the standby gateway has started."
      channels:
        - {action: slack.post, with: {channel: "#war-room"}}
        - {action: teams.post}
        - {action: email.send, with: {to: [board@siaga.test]}}
  - id: wrong-channel
    action: slack.post
    continue_on_error: true
    with: {channel: "#nowhere", text: "lost"}
  - id: all-clear
    action: pagerduty.resolve
    with: {dedup_key: "{{ steps.page.output.dedup_key }}"}
"""


def test_a_runbook_notifies_every_provider_and_leaks_no_secret(
    siaga_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CANARY.items():
        if value:
            monkeypatch.setenv("SIAGA_SECRET_" + name.upper().replace("-", "_"), value)
    with (
        providers(
            slack_token=CANARY["slack-token"],
            slack_webhook=CANARY["slack-webhook"],
            teams_webhook=CANARY["teams-webhook"],
        ) as stand_ins,
        smtp_server(tmp_path, "siaga", CANARY["smtp-password"]) as box,
    ):
        monkeypatch.setenv("SIAGA_SECRET_TEAMS_URL", stand_ins.teams_webhook_url)
        conns = tmp_path / "connections.yaml"
        conns.write_text(
            json.dumps(
                {
                    "connections": {
                        "bot": {
                            "type": "slack",
                            "bot_token": "secret://slack-token",
                            "channel": "#inc-payments",
                            "api_url": stand_ins.slack_api,
                        },
                        "oncall": {
                            "type": "pagerduty",
                            "routing_key": "secret://pd-key",
                            "events_url": stand_ins.pagerduty_url,
                        },
                        "cmt-teams": {
                            "type": "teams",
                            "webhook_url": "secret://teams-url",
                            "channel": "CMT",
                        },
                        "mail": {
                            "type": "smtp",
                            "host": "localhost",
                            "port": box.port,
                            "username": "siaga",
                            "password": "secret://smtp-password",
                            "sender": "Siaga <siaga@siaga.test>",
                            "ca_file": box.ca_file,
                        },
                        # no apprise connection: long-tail goes to the outbox
                    }
                }
            )
        )
        flow = compile_runbook(parse_runbook(RUNBOOK, default_registry(), file="notify-e2e.yaml"),
                               settings=settings_with(connections=conns))
        state, result, artifacts, prefect_logs = asyncio.run(_run(flow))

        assert state.is_completed(), state.message
        steps = {s["step"]: s for s in result["steps"]}
        assert {k: s["outcome"] for k, s in steps.items()} == {
            "page": "completed",
            "open-bridge": "completed",
            "bridge-update": "completed",
            "tell-teams": "completed",
            "mail-cmt": "completed",
            "long-tail": "completed",
            "everyone": "completed",
            "wrong-channel": "failed, continued",
            "all-clear": "completed",
        }
        run_id = str(state.state_details.flow_run_id)
        events = [r.json() for r in stand_ins.calls("/pagerduty/v2/enqueue")]
        assert [(e["event_action"], e["dedup_key"]) for e in events] == [
            ("trigger", f"siaga:{run_id}:page"),
            ("resolve", f"siaga:{run_id}:page"),
        ]
        # step outputs, as the side-effect ledger recorded them
        outputs = {
            e.key.split(":")[1]: e.result
            for e in Ledger(engine(Settings.from_environ(os.environ).store_url)).entries()
            if e.key.startswith(run_id)
        }
        posts = [r.json() for r in stand_ins.calls("/slack/api/chat.postMessage")]
        assert posts[0]["text"] == "Incident bridge open\nRoles: commander alice, ops eko."
        assert posts[1]["thread_ts"] == outputs["open-bridge"]["ts"]
        assert posts[1]["text"] == f"Paged: siaga:{run_id}:page"
        assert {p["channel"] for p in posts} == {"#inc-payments", "#war-room", "#nowhere"}
        assert len(stand_ins.calls(f"/teams/workflows/{CANARY['teams-webhook']}")) == 2
        assert sorted(tuple(rcpt) for _, rcpt, _ in box.messages) == [
            ("board@siaga.test",),
            ("cmt@siaga.test", "legal@siaga.test"),
        ]
        assert outputs["everyone"]["delivered"] == ["slack", "teams", "email"]
        assert outputs["everyone.email"]["recipients"] == ["board@siaga.test"]
        assert "channel_not_found" in steps["wrong-channel"]["error"]

        assert outputs["long-tail"]["delivered_via"] == "outbox"
        [fallback] = [m for m in read_outbox(siaga_home) if m["run_id"] == run_id]
        assert fallback["to"] == "apprise" and fallback["message"] == "Card payments failing."
        log_lines = log_file(siaga_home).read_text(encoding="utf-8")
        assert "no Apprise connection is configured: the message went to the outbox" in log_lines

        everything = json.dumps(
            [result, outputs, artifacts, prefect_logs, log_lines, state.message]
        )
        for name, value in CANARY.items():
            assert not value or value not in everything, f"the {name} secret leaked"
        assert APPRISE_PASS not in everything
        assert any("Outbox: to apprise" in a for a in artifacts), (
            "the fallback shows as an artifact"
        )


async def _run(flow: Any) -> tuple[Any, dict[str, Any], list[str], list[str]]:
    state = await flow(return_state=True)
    result = await state.aresult(raise_on_failure=False)
    run_id = state.state_details.flow_run_id
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        )
    summary = result if isinstance(result, dict) else getattr(result, "summary", {})
    return state, summary, [json.dumps(a.data) for a in artifacts], [log.message for log in logs]


UNDO_RUNBOOK = """\
runbook: notify-undo
title: A page is resolved when the run fails
severity: sev2
steps:
  - id: page
    action: pagerduty.trigger
    with: {summary: Payouts stuck}
    undo:
      action: pagerduty.resolve
      with: {dedup_key: "{{ step.output.dedup_key }}"}
  - id: tell
    action: slack.post
    with: {channel: "#nowhere", text: "Payouts stuck"}
"""


def test_a_failed_run_resolves_its_page_by_undo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIAGA_SECRET_PD_KEY", CANARY["pd-key"])
    monkeypatch.setenv("SIAGA_SECRET_SLACK_TOKEN", CANARY["slack-token"])
    with providers(slack_token=CANARY["slack-token"]) as stand_ins:
        conns = tmp_path / "connections.yaml"
        conns.write_text(
            json.dumps(
                {
                    "connections": {
                        "bot": {
                            "type": "slack",
                            "bot_token": "secret://slack-token",
                            "api_url": stand_ins.slack_api,
                        },
                        "oncall": {
                            "type": "pagerduty",
                            "routing_key": "secret://pd-key",
                            "events_url": stand_ins.pagerduty_url,
                        },
                    }
                }
            )
        )
        flow = compile_runbook(
            parse_runbook(UNDO_RUNBOOK, default_registry(), file="notify-undo.yaml"),
            settings=settings_with(connections=conns),
        )
        state, result, _, _ = asyncio.run(_run(flow))
        assert state.is_failed()
        run_id = str(state.state_details.flow_run_id)
        events = [r.json() for r in stand_ins.calls("/pagerduty/v2/enqueue")]
        assert [(e["event_action"], e["dedup_key"]) for e in events] == [
            ("trigger", f"siaga:{run_id}:page"),
            ("resolve", f"siaga:{run_id}:page"),
        ]
        [page] = [s for s in result["steps"] if s["step"] == "page"]
        assert (page["undo"], page["undo_outcome"]) == ("pagerduty.resolve", "completed")
        assert "channel_not_found" in state.message or "channel_not_found" in json.dumps(result)


def test_connections_yaml_example_validates() -> None:
    """The connection models accept what the module docs show."""
    from siaga.integrations.pagerduty import PagerDutyConnection
    from siaga.integrations.slack import SlackConnection
    from siaga.integrations.smtp import SmtpConnection

    SlackConnection.model_validate({"type": "slack", "webhook_url": "secret://ops-slack-webhook"})
    PagerDutyConnection.model_validate({"type": "pagerduty", "routing_key": "secret://pd"})
    SmtpConnection.model_validate(
        {"type": "smtp", "host": "smtp.example.com", "sender": "Siaga <s@example.com>"}
    )
    with pytest.raises(ValueError, match="either webhook_url or bot_token"):
        SlackConnection.model_validate({"type": "slack"})
    with pytest.raises(ValueError, match="pattern"):
        SlackConnection.model_validate({"type": "slack", "bot_token": "xoxb-written-in-clear"})
