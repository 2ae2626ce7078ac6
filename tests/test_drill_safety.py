"""A drill never calls a connection marked `production: true`: it uses the connection's sandbox,
or records the call instead."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from siaga.flows import compile_runbook
from siaga.integrations import default_registry

from siaga.runbook import parse_runbook

from .provider_servers import providers

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


def run(mode: str):
    flow = compile_runbook(parse_runbook(RUNBOOK, default_registry(), file="drill-safety.yaml"))
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
        monkeypatch.setenv("SIAGA_CONNECTIONS", str(file))

        state, summary = run("drill")
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
        state, summary = run("live")
        assert state.is_completed(), state.message
        assert len(production.calls("/pagerduty/v2/enqueue")) == 1
        assert len(production.calls("/slack/api/chat.postMessage")) == 1
