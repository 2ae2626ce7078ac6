"""CloudWatch alarms through SNS, end to end: `siaga receiver` as a process, an SNS stand-in serving
the signing certificate and the SubscribeURL over HTTPS on loopback (the test's allowed host), and
messages signed as SNS signs them. A subscription is confirmed and recorded; an alarm opens one
incident; tampered, unsigned, foreign-certificate, stale, replayed and foreign-topic messages are
refused with 4xx and record nothing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from siaga.flows.server import free_port
from siaga.store import engine, sns_subscriptions

from ..support.live_receiver import read
from ..support.receiver_process import ReceiverProcess, receiver_process
from ..support.sns_server import SnsKey, SnsServer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alerts"
TOPIC = "arn:aws:sns:ap-southeast-1:123456789012:siaga-alarms"
RUNBOOK = """
runbook: ledger-cpu
title: Ledger database CPU
severity: sev2
roles: {ops: [eko]}
inputs:
  alarm: {type: string, default: unknown}
triggers:
  - source: cloudwatch
    group_by: [alertname]
    inputs: {alarm: "{{ alert.labels.alertname }}"}
steps:
  - id: hello
    action: note
    with: {text: "alarm {{ inputs.alarm }}"}
"""


class Sns:
    def __init__(self, receiver: ReceiverProcess, server: SnsServer, key: SnsKey) -> None:
        self.receiver, self.server, self.key = receiver, server, key

    def message(self, kind: str = "alarm", alarm: str = "ledger-prod-cpu", **changes: Any) -> dict[str, Any]:
        name = "cloudwatch_alarm" if kind == "alarm" else "sns_subscription_confirmation"
        message = json.loads((FIXTURES / f"{name}.json").read_text())
        if kind == "alarm":
            inner = json.loads(message["Message"])
            inner["AlarmName"] = alarm
            message["Message"] = json.dumps(inner)
        message.update(
            MessageId=str(uuid.uuid4()),
            Timestamp=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            SigningCertURL=self.server.cert_url,
        )
        message.update(changes)
        return message

    def post(self, body: bytes) -> httpx.Response:
        return self.receiver.post("cloudwatch", body, {"Content-Type": "text/plain; charset=UTF-8",
                                                       "x-amz-sns-message-type": "Notification"})

    def incidents(self, alarm: str) -> list[dict[str, Any]]:
        found = read(self.receiver.url)
        return [i for i in found if i["inputs"].get("alarm") == alarm]

    def settle(self) -> None:
        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{self.receiver.url}/healthz", timeout=5).json())["queued"] or health["busy"]:
            assert time.monotonic() < deadline, health
            time.sleep(0.1)


@pytest.fixture(scope="module")
def sns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sns]:
    home = tmp_path_factory.mktemp("sns-home")
    (home / "runbooks").mkdir()
    (home / "runbooks" / "ledger-cpu.yaml").write_text(RUNBOOK)
    key = SnsKey()
    with SnsServer(home, key) as server:
        env = {
            "SIAGA_SNS_TOPIC_ARNS": TOPIC,
            "SIAGA_SNS_CERT_HOSTS": server.host,
            "SSL_CERT_FILE": str(server.ca_file),  # the receiver trusts the stand-in's TLS certificate
            "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",  # no Prefect: runs do not start
        }
        with receiver_process(home, home / "runbooks", env) as receiver:
            receiver.start()
            yield Sns(receiver, server, key)


def subscriptions(sns: Sns) -> dict[str, str]:
    store = engine(f"sqlite:///{sns.receiver.home / 'siaga.db'}")
    with store.connect() as connection:
        return dict(connection.execute(select(sns_subscriptions.c.topic_arn, sns_subscriptions.c.state)).all())


def test_a_subscription_confirmation_is_confirmed_at_the_allowed_host_and_recorded(sns: Sns) -> None:
    subscribe = f"https://{sns.server.host}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok-1"
    answer = sns.post(sns.key.sign(sns.message("subscription", SubscribeURL=subscribe)))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"confirmed": TOPIC}
    assert [v for v in sns.server.visited("subscribe") if "tok-1" in v] != []
    assert subscriptions(sns) == {TOPIC: "confirmed"}


def test_a_subscribe_url_on_another_host_is_not_visited(sns: Sns) -> None:
    before = list(sns.server.visits)
    evil = "https://sns.ap-southeast-1.amazonaws.com.evil.example/?Action=ConfirmSubscription&Token=tok-2"
    answer = sns.post(sns.key.sign(sns.message("subscription", SubscribeURL=evil)))
    assert answer.status_code == 403, answer.text
    assert "SubscribeURL" in answer.json()["detail"]
    assert [v for v in sns.server.visits if v not in before and "tok-2" in v] == []


def test_an_alarm_opens_one_incident_and_the_certificate_is_fetched_once(sns: Sns) -> None:
    for _ in range(3):  # three notifications of the same alarm (SNS re-sends are new MessageIds)
        answer = sns.post(sns.key.sign(sns.message(alarm="ledger-prod-cpu")))
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"accepted": 1}
    sns.settle()
    (incident,) = sns.incidents("ledger-prod-cpu")
    assert incident["runbook_id"] == "ledger-cpu" and incident["state"] == "open"
    assert len(sns.server.visited("cert")) == 1, "the signing certificate is cached"


def refused_cases(sns: Sns) -> dict[str, tuple[bytes, int, str]]:
    alarm = "refused-alarm"
    signed = json.loads(sns.key.sign(sns.message(alarm=alarm)))
    tampered = {**signed, "Message": signed["Message"].replace("ALARM", "OK")}
    unsigned = {k: v for k, v in signed.items() if k != "Signature"}
    stale_time = (datetime.now(UTC) - timedelta(minutes=20)).isoformat().replace("+00:00", "Z")
    return {
        "tampered": (json.dumps(tampered).encode(), 401, "does not match"),
        "unsigned": (json.dumps(unsigned).encode(), 401, "not signed"),
        "other key": (SnsKey().sign(sns.message(alarm=alarm)), 401, "does not match"),
        "certificate on another host": (
            sns.key.sign(sns.message(alarm=alarm, SigningCertURL="https://sns.ap-southeast-1.amazonaws.com/x.pem")),
            403, "not an allowed SNS host"),
        "certificate over http": (
            sns.key.sign(sns.message(alarm=alarm, SigningCertURL=sns.server.cert_url.replace("https", "http"))),
            403, "plain https"),
        "stale": (sns.key.sign(sns.message(alarm=alarm, Timestamp=stale_time)), 401, "outside the 300s window"),
        "another topic": (sns.key.sign(sns.message(alarm=alarm, TopicArn=TOPIC + "-other")), 403, "not an allowed topic"),
    }


def test_forged_stale_and_foreign_messages_are_refused_and_record_nothing(sns: Sns) -> None:
    cases = refused_cases(sns)
    answers = {name: sns.post(body) for name, (body, _, _) in cases.items()}
    assert {name: a.status_code for name, a in answers.items()} == {name: c[1] for name, c in cases.items()}, {
        n: a.text for n, a in answers.items()}
    for name, (_, _, reason) in cases.items():
        assert reason in answers[name].json()["detail"], (name, answers[name].text)
    sns.settle()
    assert sns.incidents("refused-alarm") == []


def test_a_replayed_notification_is_refused(sns: Sns) -> None:
    body = sns.key.sign(sns.message(alarm="replayed-alarm"))
    assert sns.post(body).status_code == 202
    again = sns.post(body)
    assert again.status_code == 403 and "replay" in again.json()["detail"]
    sns.settle()
    (incident,) = sns.incidents("replayed-alarm")
    assert incident["alerts"] == 1


def test_an_unsubscribe_confirmation_is_recorded_and_not_visited(sns: Sns) -> None:
    visits = len(sns.server.visits)
    unsubscribe = sns.message("subscription", Type="UnsubscribeConfirmation",
                              SubscribeURL=f"https://{sns.server.host}/?Action=ConfirmSubscription&Token=tok-3")
    answer = sns.post(sns.key.sign(unsubscribe))
    assert answer.status_code == 200 and answer.json() == {"unsubscribed": TOPIC}
    assert len(sns.server.visits) == visits
    assert subscriptions(sns) == {TOPIC: "unsubscribed"}


def test_without_configured_topics_sns_is_not_served(tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    with receiver_process(tmp_path, tmp_path / "runbooks", {}) as receiver:
        receiver.start()
        answer = receiver.post("cloudwatch", b"{}", {})
    assert answer.status_code == 404 and "SIAGA_SNS_TOPIC_ARNS" in answer.json()["detail"]
