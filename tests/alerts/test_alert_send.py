"""`siaga alert send` through the command line to a real receiver (the receiver app on a real
uvicorn, the bundled runbooks, runs started on a real Prefect server): each source's proof is
accepted, a wrong credential is refused with 401 and a non-zero exit, secrets are never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from siaga.alerts.receiver import create_app
from siaga.catalog import Catalog
from siaga.flows.server import free_port
from siaga.integrations import default_registry
from siaga.settings import Settings
from siaga.store import engine
from siaga.wiring import Wiring

from ..conftest import REPO, RUNBOOKS
from ..support.live_receiver import API_TOKEN, read, serve, settle
from ..support.stack import clean_env

EXAMPLES = REPO / "examples" / "alerts"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "alerts"
SECRETS = {
    "SIAGA_ALERTMANAGER_TOKEN": "am-token-for-send-tests",
    "SIAGA_HOOK_SECRET_GENERIC": "generic-hmac-for-send-tests",
    "SIAGA_HOOK_SECRET_SOCIAL": "old-social-secret,social-hmac-for-send-tests",
    "SIAGA_PAGERDUTY_HMAC_SECRET": "pagerduty-hmac-for-send-tests",
    "SIAGA_GRAFANA_HMAC_SECRET": "grafana-hmac-for-send-tests",
}


@dataclass
class Receiver:
    url: str
    home: Path

    def send(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environment = {**clean_env(self.home), **(SECRETS if env is None else env)}
        return subprocess.run([sys.executable, "-m", "siaga.cli", "alert", "send", *args], check=False,
                              capture_output=True, text=True, env=environment, timeout=60)

    def incidents(self, runbook: str) -> list[dict[str, Any]]:
        settle(self.url)
        return [i for i in read(self.url) if i["runbook_id"] == runbook]


@pytest.fixture(scope="module")
def receiver(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from siaga.flows.running import start_incident_run

    home = tmp_path_factory.mktemp("alert-send")
    runbooks = Catalog.load(RUNBOOKS, default_registry()).runbooks
    for runbook_id in runbooks:  # each runbook's deployment, as `siaga up` registers it (no runner)
        flow_id = httpx.post(f"{prefect_api}/flows/", json={"name": runbook_id}).json()["id"]
        assert httpx.post(f"{prefect_api}/deployments/", json={"name": "siaga", "flow_id": flow_id}).status_code < 300

    async def start_run(incident: Any) -> str:
        with temporary_settings({PREFECT_API_URL: prefect_api}):  # uvicorn's thread has its own context
            return await start_incident_run(incident, runbooks=runbooks, wiring=Wiring(Settings.from_environ(os.environ)))

    app = create_app(runbooks, Settings.from_environ({**SECRETS, "SIAGA_API_TOKEN": API_TOKEN}), engine(f"sqlite:///{home / 'siaga.db'}"), start_run)
    with serve(app, free_port()) as url:
        yield Receiver(url, home)


def test_the_alertmanager_example_opens_the_payment_gateway_incident(receiver: Receiver) -> None:
    sent = receiver.send(str(EXAMPLES / "alertmanager-payment-gateway.json"), "--to", f"{receiver.url}/hooks/alertmanager")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[0] == "202 Accepted"
    assert json.loads(sent.stdout.partition("\n")[2]) == {"accepted": 2}
    (incident,) = receiver.incidents("payment-gateway-outage")
    assert json.loads(incident["group_key"]) == ["ap-southeast-3", "qris-switch"]
    assert incident["alerts"] == 2 and incident["flow_run_id"]
    assert incident["inputs"]["region"] == "ap-southeast-3"

    again = receiver.send(str(EXAMPLES / "alertmanager-payment-gateway.json"), "--to", f"{receiver.url}/hooks/alertmanager")
    assert again.returncode == 0
    assert receiver.incidents("payment-gateway-outage") == [incident], "a repeat of a notification changes nothing"


def test_a_wrong_token_or_secret_is_refused_and_exits_non_zero(receiver: Receiver) -> None:
    before = read(receiver.url)
    wrong = receiver.send(str(EXAMPLES / "alertmanager-payment-gateway.json"), "--to", f"{receiver.url}/hooks/alertmanager",
                          "--token", "MY_TOKEN", env={"MY_TOKEN": "guessed-token"})
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("401 Unauthorized")
    assert json.loads(wrong.stdout) == {"detail": "alertmanager: wrong bearer token"}

    forged = receiver.send(str(EXAMPLES / "generic-mention-spike.json"), "--to", f"{receiver.url}/hooks/generic",
                           "--secret", "secret://listening-tool", env={"SIAGA_SECRET_LISTENING_TOOL": "not-the-secret"})
    assert forged.returncode == 1 and forged.stderr.startswith("401")
    assert "signature does not match" in forged.stdout
    assert "not-the-secret" not in forged.stdout + forged.stderr
    assert read(receiver.url) == before

    unset = receiver.send(str(EXAMPLES / "generic-mention-spike.json"), "--to", f"{receiver.url}/hooks/generic", env={})
    assert unset.returncode == 2
    assert "SIAGA_HOOK_SECRET_GENERIC" in unset.stderr

    nowhere = receiver.send(str(EXAMPLES / "generic-mention-spike.json"), "--to", f"http://127.0.0.1:{free_port()}/hooks/generic")
    assert nowhere.returncode == 1 and "no receiver answers" in nowhere.stderr


def test_a_generic_source_signed_with_a_secret_reference_opens_the_social_media_incident(receiver: Receiver) -> None:
    sent = receiver.send(str(EXAMPLES / "generic-mention-spike.json"), "--to", f"{receiver.url}/hooks/generic",
                         "--secret", "secret://listening-tool",
                         env={"SIAGA_SECRET_LISTENING_TOOL": SECRETS["SIAGA_HOOK_SECRET_GENERIC"]})
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert SECRETS["SIAGA_HOOK_SECRET_GENERIC"] not in sent.stdout + sent.stderr
    (incident,) = receiver.incidents("social-media-storm")
    assert incident["inputs"] == {"topic": "payment-failure", "platform": "x", "volume": 340} and incident["flow_run_id"]

    # a source of its own name, signed with the newest of its rotated secrets
    post = receiver.send(str(EXAMPLES / "social-negative-post.json"), "--to", f"{receiver.url}/hooks/social")
    assert post.returncode == 0, post.stdout + post.stderr
    assert json.loads(post.stdout.partition("\n")[2]) == {"accepted": 1}


@pytest.mark.parametrize(("fixture", "source"), [("grafana_firing.json", "grafana"), ("pagerduty_triggered.json", "pagerduty")])
def test_grafana_and_pagerduty_signatures_are_accepted(receiver: Receiver, fixture: str, source: str) -> None:
    sent = receiver.send(str(FIXTURES / fixture), "--to", f"{receiver.url}/hooks/{source}")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert json.loads(sent.stdout.partition("\n")[2])["accepted"] >= 1
    wrong = receiver.send(str(FIXTURES / fixture), "--to", f"{receiver.url}/hooks/{source}", "--secret", "OTHER",
                          env={"OTHER": "wrong"})
    assert wrong.returncode == 1 and wrong.stderr.startswith("401")


def test_bad_input_is_explained(receiver: Receiver) -> None:
    missing = receiver.send("no-such-file.json", "--to", f"{receiver.url}/hooks/alertmanager")
    assert missing.returncode == 2 and "cannot read no-such-file.json" in missing.stderr
    not_a_hook = receiver.send(str(EXAMPLES / "social-negative-post.json"), "--to", f"{receiver.url}/incidents")
    assert not_a_hook.returncode == 2 and "not a receiver hook URL" in not_a_hook.stderr
