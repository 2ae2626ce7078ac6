"""A drill never calls a connection marked `production: true`: it uses the connection's sandbox,
or records the call instead."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import os
import pytest

from siaga.flows import compile_runbook
from siaga.integrations import default_registry
from siaga.runbook import parse_runbook
from siaga.settings import Settings
from testkit.provider_servers import providers

from ..support.settings import settings_with

pytestmark = pytest.mark.usefixtures("prefect_api")

RUNBOOK = """\
runbook: drill-safety
title: Drill safety
severity: sev2
steps:
  - id: page
    action: pagerduty.trigger
    with: {summary: "Gateway errors", severity: critical}
  - id: tell-ops
    action: slack.post
    with: {text: "We are on it"}
"""


def run(mode: str, settings: Settings):
    flow = compile_runbook(parse_runbook(RUNBOOK, default_registry(), file="drill-safety.yaml"), settings=settings)
    state = asyncio.run(flow(mode=mode, return_state=True))
    return state, asyncio.run(state.aresult(raise_on_failure=False))


def test_production_connections_are_never_called_in_drills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAGA_SECRET_PD_PROD", "p" * 32)
    monkeypatch.setenv("SIAGA_SECRET_PD_SANDBOX", "s" * 32)
    monkeypatch.setenv("SIAGA_SECRET_SLACK_PROD", "xoxb-production-token")
    with providers(slack_token="xoxb-production-token") as production, providers() as sandbox:
        connections = {
            "pagerduty-prod": {"type": "pagerduty", "routing_key": "secret://pd-prod",
                               "events_url": production.pagerduty_url, "production": True,
                               "sandbox": "pagerduty-sandbox"},
            "pagerduty-sandbox": {"type": "pagerduty", "routing_key": "secret://pd-sandbox",
                                  "events_url": sandbox.pagerduty_url, "default": True},
            "slack-prod": {"type": "slack", "bot_token": "secret://slack-prod", "channel": "#war-room",
                           "api_url": production.slack_api, "production": True},
        }
        file = tmp_path / "connections.yaml"
        file.write_text(json.dumps({"connections": connections}))
        settings = settings_with(connections=file)

        state, summary = run("drill", settings)
        assert state.is_completed(), state.message
        assert production.requests == [], "a drill reached a production connection"
        [event] = [r.json() for r in sandbox.calls("/pagerduty/v2/enqueue")]
        assert event["routing_key"] == "s" * 32
        assert event["payload"]["summary"].startswith("[DRILL] ")
        outcomes = {s["step"]: s["outcome"] for s in summary["steps"]}
        assert outcomes == {"page": "completed", "tell-ops": "recorded"}

        connections["pagerduty-prod"]["default"] = True
        del connections["pagerduty-sandbox"]["default"]
        file.write_text(json.dumps({"connections": connections}))
        state, summary = run("live", settings)
        assert state.is_completed(), state.message
        assert len(production.calls("/pagerduty/v2/enqueue")) == 1
        assert len(production.calls("/slack/api/chat.postMessage")) == 1


CHANNELS = """\
runbook: drill-channels
title: Drill channels
severity: sev2
drill:
  substitute: {{"pagerduty.*": sandbox}}
  real_channels: {real}
steps:
  - id: page
    action: pagerduty.trigger
    with: {{summary: "Gateway errors", severity: critical}}
  - id: tell-ops
    action: slack.post
    with: {{text: "We are on it"}}
  - id: call-hook
    action: http.request
    with: {{url: "http://127.0.0.1:9/never"}}
"""


def drill_channels(real: bool, settings: Settings) -> dict:
    runbook = parse_runbook(CHANNELS.format(real=str(real).lower()), default_registry(), file="drill-channels.yaml")
    state = asyncio.run(compile_runbook(runbook, settings=settings)(mode="drill", return_state=True))
    assert state.is_completed(), state.message
    return {s["step"]: s["outcome"] for s in asyncio.run(state.aresult())["steps"]}


def test_drill_messages_go_to_the_drill_channels_unless_the_runbook_wants_the_real_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection's `sandbox:` is its drill channel; `drill.real_channels: true` sends to the
    real (non-production) channel instead, marked [DRILL]; the `sandbox` behaviour insists on a
    sandbox and records the call where there is none."""
    monkeypatch.setenv("SIAGA_SECRET_PD_OPS", "o" * 32)
    monkeypatch.setenv("SIAGA_SECRET_PD_DRILL", "d" * 32)
    monkeypatch.setenv("SIAGA_SECRET_SLACK", "xoxb-token")
    with providers(slack_token="xoxb-token") as real, providers(slack_token="xoxb-token") as drill:
        connections = {
            "pagerduty-ops": {"type": "pagerduty", "routing_key": "secret://pd-ops",
                              "events_url": real.pagerduty_url, "sandbox": "pagerduty-drill"},
            "pagerduty-drill": {"type": "pagerduty", "routing_key": "secret://pd-drill",
                                "events_url": drill.pagerduty_url},
            "slack-ops": {"type": "slack", "bot_token": "secret://slack", "channel": "#inc-payments",
                          "api_url": real.slack_api, "sandbox": "slack-drill"},
            "slack-drill": {"type": "slack", "bot_token": "secret://slack", "channel": "#war-room",
                            "api_url": drill.slack_api},
        }
        connections["pagerduty-ops"]["default"] = connections["slack-ops"]["default"] = True
        file = tmp_path / "connections.yaml"
        file.write_text(json.dumps({"connections": connections}))
        settings = settings_with(connections=file)

        outcomes = drill_channels(real=False, settings=settings)
        assert outcomes == {"page": "completed", "tell-ops": "completed", "call-hook": "recorded"}
        assert real.requests == [], "a drill message reached a real channel"
        [page] = [r.json() for r in drill.calls("/pagerduty/v2/enqueue")]
        [post] = [r.json() for r in drill.calls("/slack/api/chat.postMessage")]
        assert page["routing_key"] == "d" * 32 and page["payload"]["summary"] == "[DRILL] Gateway errors"
        assert post["channel"] == "#war-room" and post["text"].startswith("[DRILL] ")

        drill.requests.clear()
        outcomes = drill_channels(real=True, settings=settings)
        # Slack goes to the real channel, marked; the page still insists on its sandbox.
        [post] = [r.json() for r in real.calls("/slack/api/chat.postMessage")]
        assert post["channel"] == "#inc-payments" and post["text"] == "[DRILL] We are on it"
        assert real.calls("/pagerduty/v2/enqueue") == [] and len(drill.calls("/pagerduty/v2/enqueue")) == 1

        del connections["pagerduty-ops"]["sandbox"]
        file.write_text(json.dumps({"connections": connections}))
        real.requests.clear()
        outcomes = drill_channels(real=False, settings=settings)
        assert outcomes["page"] == "recorded", "`sandbox` without a sandbox connection records the page"
        assert real.calls("/pagerduty/v2/enqueue") == []


BUNDLED = ("payment-gateway-outage", "region-outage", "data-breach", "social-media-storm")


@pytest.mark.slow
@pytest.mark.parametrize("runbook_id", BUNDLED)
def test_a_drill_of_every_bundled_runbook_calls_only_sandboxes(
    runbook_id: str, siaga_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every provider a bundled runbook reaches is configured twice: a production stand-in
    (`production: true`, the default of its type, as in real life) and its sandbox. The drill calls sandboxes only; the production stand-ins
    (one server for every HTTP provider, AWS included, and an SMTP server) see no request at all."""
    from siaga.catalog import Catalog
    from siaga.drills.records import DrillRecords
    from siaga.store import engine
    from testkit.provider_servers import smtp_server

    from ..conftest import RUNBOOKS
    from ..support.gate_driver import with_approvals

    for name, value in {"PD": "p" * 32, "SLACK": "xoxb-token", "TEAMS_PROD": "t", "TEAMS_DRILL": "t",
                        "SMTP": "smtp-password", "KEY": "k"}.items():
        monkeypatch.setenv(f"SIAGA_SECRET_{name}", value)
    with (providers(slack_token="xoxb-token") as prod, providers(slack_token="xoxb-token") as drill,
          smtp_server(tmp_path, "siaga", "smtp-password") as prod_mail,
          smtp_server(tmp_path, "siaga", "smtp-password") as drill_mail):
        monkeypatch.setenv("SIAGA_SECRET_TEAMS_PROD", prod.teams_webhook_url)
        monkeypatch.setenv("SIAGA_SECRET_TEAMS_DRILL", drill.teams_webhook_url)

        def mail(box, **extra):
            return {"type": "smtp", "host": "localhost", "port": box.port, "username": "siaga",
                    "password": "secret://smtp", "sender": "Siaga <siaga@pay.example.com>", "ca_file": box.ca_file,
                    **extra}

        connections = {
            "oncall": {"type": "pagerduty", "routing_key": "secret://pd", "events_url": prod.pagerduty_url,
                       "production": True, "sandbox": "oncall-drill", "default": True},
            "oncall-drill": {"type": "pagerduty", "routing_key": "secret://pd", "events_url": drill.pagerduty_url},
            "bridge": {"type": "slack", "bot_token": "secret://slack", "api_url": prod.slack_api,
                       "production": True, "sandbox": "bridge-drill", "default": True},
            "bridge-drill": {"type": "slack", "bot_token": "secret://slack", "api_url": drill.slack_api},
            "cmt": {"type": "teams", "webhook_url": "secret://teams-prod", "production": True, "sandbox": "cmt-drill",
                    "default": True},
            "cmt-drill": {"type": "teams", "webhook_url": "secret://teams-drill"},
            "mail": mail(prod_mail, production=True, sandbox="mail-drill", default=True),
            "mail-drill": mail(drill_mail),
            # no sandbox: a drill records their calls
            "status": {"type": "statuspage", "base_url": f"{prod.url}/statuspage/v1", "page_id": "p1",
                       "api_key": "secret://key", "production": True},
            "switch": {"type": "payment_switch", "base_url": f"{prod.url}/switch", "production": True},
            "aws": {"type": "aws", "region": "ap-southeast-3", "endpoint_url": f"{prod.url}/aws",
                    "access_key_id": "secret://key", "secret_access_key": "secret://key", "production": True},
        }
        file = tmp_path / "connections.yaml"
        file.write_text(json.dumps({"connections": connections}))
        settings = settings_with(connections=file)

        runbook = Catalog.load(RUNBOOKS, default_registry()).runbooks[runbook_id]
        flow = compile_runbook(runbook, settings=settings)
        state = asyncio.run(with_approvals(siaga_home, runbook.id, flow(mode="drill", return_state=True)))
        assert state.is_completed(), state.message

        assert prod.requests == [], [f"{r.method} {r.path}" for r in prod.requests]
        assert prod_mail.messages == [] and prod_mail.logins == []
        assert drill.requests, "the sandboxes were called"
        texts = [r.body.decode() for r in drill.requests]
        # a PagerDuty resolve event (on_resolve's unpage) carries no text at all, only the page's key
        silent = [t for t in texts if '"event_action":"resolve"' in t]
        assert all("payload" not in json.loads(t) for t in silent), silent
        assert all("[DRILL]" in text for text in texts if text not in silent), texts
        for _, _, message in drill_mail.messages:
            assert message["Subject"].startswith("[DRILL] ")
        record = DrillRecords(engine(Settings.from_environ(os.environ).store_url)).find(runbook.id)[-1]
        assert record["run_id"] == str(state.state_details.flow_run_id) and record["state"] == "scored"
        assert record["figures"]["steps_failed"] == []
