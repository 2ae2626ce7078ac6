"""The receiver tests' `siaga up`: a stack serving three runbooks (Alertmanager's gateway errors, a
gateway down with steps to run once it is back, a threshold on social posts), its receiver, the
webhook server its resolve steps call and Debian's Alertmanager sending to it; with what reads
them back. Import the fixtures (`hooks`, `receiver`, `alertmanager`) into a test module."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga.flows.server import free_port

from .alert_payloads import SOCIAL_SECRET
from .alertmanager import alertmanager_process
from .live_receiver import read
from .stack import Stack, running_stack
from .webhook_server import WebhookServer, webhook_server

TOKEN = "s3cret-token-for-tests"
RUNBOOK = "gateway-alert"
RUNBOOK_YAML = f"""
runbook: {RUNBOOK}
title: Gateway errors from Alertmanager
severity: sev2
roles: {{ops: [eko]}}
inputs:
  region: {{type: string, default: nowhere}}
triggers:
  - source: alertmanager
    match: {{alertname: GatewayErrors}}
    group_by: [region]
    inputs: {{region: "{{{{ alert.labels.region }}}}"}}
steps:
  - id: hello
    action: note
    with: {{text: "gateway errors in {{{{ inputs.region }}}}, incident {{{{ incident.id }}}}"}}
"""

RESOLVING = "gateway-down"
RESOLVING_YAML = """
runbook: gateway-down
title: Gateway down, with steps to run once it is back
severity: sev1
impact: {{priority: P1}}
roles: {{ops: [eko]}}
inputs:
  region: {{type: string, default: nowhere}}
triggers:
  - source: alertmanager
    match: {{alertname: GatewayDown}}
    group_by: [region]
    inputs: {{region: "{{{{ alert.labels.region }}}}"}}
steps:
  - id: hello
    action: note
    with: {{text: "gateway down in {{{{ inputs.region }}}}"}}
on_resolve:
  - id: stand-down
    action: note
    with: {{text: "gateway back in {{{{ inputs.region }}}}, incident {{{{ incident.id }}}} resolved"}}
  - id: all-clear
    action: http.request
    approval: {{from: [ops]}}
    with:
      url: "{hooks}/all-clear"
      json: {{incident: "{{{{ incident.id }}}}", said: "{{{{ steps['stand-down'].output.text }}}}"}}
"""
"""A runbook with on_resolve steps: a note, then an all-clear call behind an approval gate, to
`{hooks}` (a local webhook server)."""

STORM = "social-storm"
STORM_YAML = f"""
runbook: {STORM}
title: Angry posts about payments
severity: sev3
roles: {{comms: [gita]}}
inputs:
  topic: {{type: string, default: unknown}}
triggers:
  - source: social
    group_by: [topic]
    inputs: {{topic: "{{{{ alert.labels.topic }}}}"}}
    threshold: {{count: 3, within: 10m, match: {{sentiment: negative}}}}
steps:
  - id: hello
    action: note
    with: {{text: "posts about {{{{ inputs.topic }}}}"}}
"""


class Receiver:
    def __init__(self, stack: Stack, url: str) -> None:
        self.stack, self.url = stack, url

    def post(self, body: Any, token: str | None = TOKEN, *, raw: bytes | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if raw is not None:
            return httpx.post(f"{self.url}/hooks/alertmanager", content=raw, headers=headers, timeout=10)
        return httpx.post(f"{self.url}/hooks/alertmanager", json=body, headers=headers, timeout=10)

    def settle(self, timeout: float = 60) -> None:
        """Wait until the worker has done everything posted so far, runs started included."""
        deadline = time.monotonic() + timeout
        while True:
            health = httpx.get(f"{self.url}/healthz", timeout=5).json()
            if health["queued"] == 0 and not health["busy"] and all(i["flow_run_id"] for i in self.incidents(state="open")):
                return
            assert time.monotonic() < deadline, health
            time.sleep(0.2)

    def incidents(self, **params: str) -> list[dict[str, Any]]:
        return read(self.url, **params)

    def runs(self, runbook: str = RUNBOOK) -> list[dict[str, Any]]:
        return httpx.post(
            f"{self.stack.api}/flow_runs/filter", json={"flows": {"name": {"any_": [runbook]}}, "limit": 200}
        ).json()


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookServer]:
    """Where the resolve steps of `RESOLVING` call."""
    with webhook_server() as server:
        yield server


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, hooks: WebhookServer, prefect_db: Path) -> Iterator[Receiver]:
    home = tmp_path_factory.mktemp("receiver-home")
    folder = home / "runbooks"
    folder.mkdir()
    (folder / f"{RUNBOOK}.yaml").write_text(RUNBOOK_YAML)
    (folder / f"{RESOLVING}.yaml").write_text(RESOLVING_YAML.format(hooks=hooks.url))
    (folder / f"{STORM}.yaml").write_text(STORM_YAML)
    receiver_port = free_port()
    env = {"SIAGA_ALERTMANAGER_TOKEN": TOKEN, "SIAGA_HOOK_SECRET_SOCIAL": f"old-secret,{SOCIAL_SECRET}"}
    with running_stack(home, folder, "--receiver-port", str(receiver_port), env=env, prefect_db=prefect_db) as stack:
        assert f"Alert receiver: http://127.0.0.1:{receiver_port}" in stack.output.read_text()
        yield Receiver(stack, f"http://127.0.0.1:{receiver_port}")


def region() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


def runs_in(receiver: Receiver, name: str) -> list[dict[str, Any]]:
    """The runs started for region `name`, whatever other tests started before or meanwhile."""
    return [run for run in receiver.runs() if run["parameters"].get("region") == name]


def of_group(incidents: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [i for i in incidents if i["group_key"] == json.dumps([name])]


def wait_for_run(receiver: Receiver, run_id: str, timeout: float = 120) -> dict[str, Any]:
    """The run once it has completed (fails on any other end)."""
    deadline = time.monotonic() + timeout
    while (run := httpx.get(f"{receiver.stack.api}/flow_runs/{run_id}").json())["state"]["type"] != "COMPLETED":
        assert run["state"]["type"] not in ("FAILED", "CRASHED", "CANCELLED") and time.monotonic() < deadline, run["state"]
        time.sleep(0.3)
    return run


ALERTMANAGER_CONFIG = """
route:
  receiver: siaga
  group_by: [alertname, region]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: siaga
    webhook_configs:
      - url: {url}/hooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {token}
"""


@pytest.fixture(scope="module")
def alertmanager(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Alertmanager on loopback, sending its webhooks to the receiver; yields its URL."""
    config = ALERTMANAGER_CONFIG.format(url=receiver.url, token=TOKEN)
    with alertmanager_process(tmp_path_factory.mktemp("alertmanager"), config) as url:
        yield url


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return value
