"""The receiver's edges under hostile input (issue 12): `siaga receiver` as a process, on SQLite and
on PostgreSQL, every source configured, sent what an attacker or a broken sender sends. Each answer
is a 4xx that names what is wrong (and is itself valid JSON), or a 2xx for something kept: never a
5xx, never a 202 for an alert that is then lost (every inbox row ends done, without an error).

One receiver per database for the whole module, started on first use; an SNS stand-in on loopback
serves the signing certificate and the SubscribeURL for both."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select as sql_select

from siaga.alerts.receiver import MAX_BODY, create_app
from siaga.audit import AuditTrail
from siaga.flows.server import free_port
from siaga.settings import Settings
from siaga.store import engine, inbox
from testkit.chunked_sender import MIB, send_chunked

from ..support.live_receiver import serve
from ..support.postgres import fresh_database
from ..support.receiver_process import ReceiverProcess, receiver_process, signed_headers
from ..support.sns_server import SnsKey, SnsServer

FIXTURES = Path(__file__).parent.parent / "fixtures" / "alerts"
TOKEN = "edge-alertmanager-token"
API_TOKEN = "edge-api-token"
SOCIAL_SECRET = "edge-social-secret"
PAGERDUTY_SECRET = "edge-pagerduty-secret"
GRAFANA_TOKEN = "edge-grafana-token"
TOPIC = "arn:aws:sns:ap-southeast-1:123456789012:siaga-alarms"

RUNBOOKS = {
    "edge-cases": """
runbook: edge-cases
title: Edge cases
severity: sev2
roles: {ops: [eko]}
inputs:
  region: {type: string, default: nowhere}
  load: {type: number, default: 0}
triggers:
  - source: alertmanager
    match: {alertname: EdgeCase}
    group_by: [region]
    inputs: {region: "{{ alert.labels.region }}", load: "{{ alert.labels.load }}"}
steps:
  - id: hello
    action: note
    with: {text: "edge case in {{ inputs.region }}"}
""",
    "edge-watch": """
runbook: edge-watch
title: Every edge case, watched
severity: sev3
roles: {ops: [eko]}
triggers:
  - source: alertmanager
    match: {alertname: EdgeCase}
    group_by: [region]
steps:
  - id: hello
    action: note
    with: {text: "watched"}
""",
}


def am_alert(region: str, status: str = "firing", fingerprint: str | None = None, **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "EdgeCase", "region": region, **labels},
        "annotations": {"summary": "edge case"},
        "startsAt": "2026-11-24T03:00:00Z",
        "endsAt": "2026-11-24T03:10:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint or f"fp-{region[:40]}",
    }


def am_webhook(*alerts: dict[str, Any], **extra: Any) -> bytes:
    """Alertmanager's webhook (version 4), as bytes: `json.dumps` escapes a lone surrogate as
    ``\\ud83d``, exactly what a sender that cut an emoji in half puts on the wire."""
    return json.dumps({"version": "4", "status": "firing", "receiver": "siaga", "alerts": list(alerts), **extra}).encode()


def unique(prefix: str = "r") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Edge:
    receiver: ReceiverProcess
    store_url: str
    sns: SnsServer
    key: SnsKey

    @property
    def url(self) -> str:
        return self.receiver.url

    def alertmanager(self, body: bytes) -> httpx.Response:
        return self.receiver.post("alertmanager", body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})

    def grafana(self, body: bytes) -> httpx.Response:
        return self.receiver.post("grafana", body, {"Authorization": f"Bearer {GRAFANA_TOKEN}", "Content-Type": "application/json"})

    def social(self, body: bytes) -> httpx.Response:
        return self.receiver.post("social", body, signed_headers(SOCIAL_SECRET, body))

    def pagerduty(self, body: bytes) -> httpx.Response:
        digest = hmac.new(PAGERDUTY_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return self.receiver.post("pagerduty", body, {"X-PagerDuty-Signature": f"v1={digest}", "Content-Type": "application/json"})

    def cloudwatch(self, body: bytes) -> httpx.Response:
        return self.receiver.post("cloudwatch", body, {"Content-Type": "text/plain; charset=UTF-8"})

    def read(self, path: str, **params: str) -> httpx.Response:
        """The read API, with the token."""
        return httpx.get(f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10)

    def incidents(self, group: str) -> list[dict[str, Any]]:
        answer = self.read("/incidents")
        assert answer.status_code == 200, answer.text
        return [i for i in answer.json() if i["group_key"] == json.dumps([group])]

    def nothing_lost(self, timeout: float = 30) -> None:
        """Wait until every webhook taken in is processed; none may have failed (answered 202,
        then lost)."""
        store = engine(self.store_url)
        deadline = time.monotonic() + timeout
        while True:
            with store.connect() as connection:
                rows = connection.execute(sql_select(inbox.c.id, inbox.c.done_at, inbox.c.error)).all()
            failed = [(row.id, row.error) for row in rows if row.error]
            assert not failed, f"webhooks answered 202 and then lost: {failed}\n{self.receiver.output()[-3000:]}"
            if all(row.done_at for row in rows):
                return
            assert time.monotonic() < deadline, f"webhooks not processed: {rows}"
            time.sleep(0.1)

    def sns_message(self, kind: str = "alarm", **changes: Any) -> dict[str, Any]:
        name = "cloudwatch_alarm" if kind == "alarm" else "sns_subscription_confirmation"
        message = json.loads((FIXTURES / f"{name}.json").read_text())
        if kind == "alarm":
            inner = json.loads(message["Message"])
            inner["AlarmName"] = unique("alarm")
            message["Message"] = json.dumps(inner)
        message.update(
            MessageId=str(uuid.uuid4()), TopicArn=TOPIC, SigningCertURL=self.sns.cert_url,
            Timestamp=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        message.update(changes)
        return message


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str | None], Edge]]:
    """Starts (once) the module's receiver on a database: ``edges("sqlite", None)`` or
    ``edges("postgresql", <server url>)``."""
    key = SnsKey()
    started: dict[str, Edge] = {}
    with contextlib.ExitStack() as stack:
        sns = stack.enter_context(SnsServer(tmp_path_factory.mktemp("edge-sns"), key))

        def start(dialect: str, postgres: str | None) -> Edge:
            if dialect not in started:
                home = tmp_path_factory.mktemp(f"edge-{dialect}")
                (home / "runbooks").mkdir()
                for name, text in RUNBOOKS.items():
                    (home / "runbooks" / f"{name}.yaml").write_text(text)
                store_url = fresh_database(postgres) if postgres else f"sqlite:///{home / 'siaga.db'}"
                env = {
                    "SIAGA_DATABASE_URL": store_url,
                    "SIAGA_ALERTMANAGER_TOKEN": TOKEN,
                    "SIAGA_GRAFANA_TOKEN": GRAFANA_TOKEN,
                    "SIAGA_PAGERDUTY_HMAC_SECRET": PAGERDUTY_SECRET,
                    "SIAGA_HOOK_SECRET_SOCIAL": SOCIAL_SECRET,
                    "SIAGA_API_TOKEN": API_TOKEN,
                    "SIAGA_SNS_TOPIC_ARNS": TOPIC,
                    "SIAGA_SNS_CERT_HOSTS": sns.host,
                    "SSL_CERT_FILE": str(sns.ca_file),  # the receiver trusts the stand-in's TLS certificate
                    "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",  # no Prefect: runs do not start
                }
                receiver = stack.enter_context(receiver_process(home, home / "runbooks", env))
                receiver.start()
                started[dialect] = Edge(receiver, store_url, sns, key)
            return started[dialect]

        yield start


@pytest.fixture(params=["sqlite", "postgresql"])
def edge(request: pytest.FixtureRequest, edges: Callable[[str, str | None], Edge]) -> Edge:
    """The module's receiver on each database: a test taking it runs twice."""
    postgres = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    return edges(request.param, postgres)


@pytest.fixture
def sqlite_edge(edges: Callable[[str, str | None], Edge]) -> Edge:
    """The module's receiver on SQLite: for what is refused before the store is touched."""
    return edges("sqlite", None)


# --- values no store keeps faithfully ---------------------------------------------------------

CUT = "cut-emoji-\ud83d"  # half of a surrogate pair


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda a: a["labels"].update(team=CUT), "alerts[0].labels.team"),
        (lambda a: a["labels"].update({CUT: "x"}), "alerts[0].labels"),
        (lambda a: a["annotations"].update(summary=CUT), "alerts[0].annotations.summary"),
        (lambda a: a.update(generatorURL=CUT), "alerts[0].generatorURL"),
        (lambda a: a.update(fingerprint=CUT), "alerts[0].fingerprint"),
        (lambda a: a["labels"].update(team="nul\x00byte"), "alerts[0].labels.team"),
    ],
    ids=["label value", "label key", "annotation", "any field", "fingerprint", "NUL"],
)
def test_text_no_store_can_keep_is_refused_up_front_with_a_reason_that_is_valid_json(
    sqlite_edge: Edge, change: Callable[[dict[str, Any]], None], where: str
) -> None:
    group = unique()
    alert = am_alert(group)
    change(alert)
    answer = sqlite_edge.alertmanager(am_webhook(alert))
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(where) and ("surrogate" in detail or "NUL" in detail), detail
    detail.encode("utf-8")  # the reason itself is text any client can read
    sqlite_edge.nothing_lost()
    assert sqlite_edge.incidents(group) == []


def test_a_cut_emoji_in_raw_utf8_or_in_a_generic_source_is_refused(sqlite_edge: Edge) -> None:
    group = unique()
    raw = am_webhook(am_alert(group, team="PLACEHOLDER")).replace(b"PLACEHOLDER", b"cut-\xed\xa0\xbd")
    answer = sqlite_edge.alertmanager(raw)
    assert answer.status_code == 400 and "UTF-8" in answer.json()["detail"], answer.text
    social = json.dumps({"labels": {"topic": group, "sentiment": CUT}}).encode()
    answer = sqlite_edge.social(social)
    assert answer.status_code == 422 and answer.json()["detail"].startswith("labels.sentiment"), answer.text
    sqlite_edge.nothing_lost()
    assert sqlite_edge.incidents(group) == []


def test_non_standard_json_numbers_are_refused(sqlite_edge: Edge) -> None:
    group = unique()
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = am_webhook(am_alert(group)).replace(b'"receiver": "siaga"', b'"receiver": "siaga", "x": ' + literal)
        answer = sqlite_edge.alertmanager(body)
        assert answer.status_code == 422 and "finite" in answer.json()["detail"], (literal, answer.text)
    sqlite_edge.nothing_lost()
    assert sqlite_edge.incidents(group) == []


def test_a_non_finite_label_for_a_number_input_is_left_out_and_the_alert_kept(edge: Edge) -> None:
    groups = {load: unique() for load in ("NaN", "inf", "-Infinity", "1e999")}
    for load, group in groups.items():
        answer = edge.alertmanager(am_webhook(am_alert(group, load=load)))
        assert answer.status_code == 202, answer.text
    fine = unique()
    assert edge.alertmanager(am_webhook(am_alert(fine, load="0.75"))).status_code == 202
    edge.nothing_lost()
    trail = AuditTrail(engine(edge.store_url))
    for group in [*groups.values(), fine]:
        found = {i["runbook_id"]: i for i in edge.incidents(group)}
        assert set(found) == {"edge-cases", "edge-watch"}, (group, found)  # kept for every runbook it routes to
        expected = {"region": group, "load": 0.75} if group == fine else {"region": group}
        assert found["edge-cases"]["inputs"] == expected
        for incident in found.values():
            assert trail.verify(incident["id"]) is None


# --- long values ------------------------------------------------------------------------------


def test_long_fingerprints_and_group_labels_are_kept_on_every_store(edge: Edge) -> None:
    group = unique("long") + "-" + "g" * 6000  # past PostgreSQL's 2.7 kB for a btree entry
    first, second = "f" * 5000 + "-1", "f" * 5000 + "-2"
    assert edge.alertmanager(am_webhook(am_alert(group, fingerprint=first))).status_code == 202
    assert edge.alertmanager(am_webhook(am_alert(group, fingerprint=second))).status_code == 202
    assert edge.alertmanager(am_webhook(am_alert(group, fingerprint=first))).status_code == 202  # a repeat
    edge.nothing_lost()
    found = {i["runbook_id"]: i for i in edge.incidents(group)}
    assert set(found) == {"edge-cases", "edge-watch"}
    incident = found["edge-cases"]
    assert incident["alerts"] == 2 and incident["inputs"] == {"region": group}
    detail = edge.read(f"/incidents/{incident['id']}").json()
    assert [a["fingerprint"] for a in detail["alert_list"]] == [first, second]

    for fingerprint in (first, second):
        assert edge.alertmanager(am_webhook(am_alert(group, "resolved", fingerprint=fingerprint))).status_code == 202
    edge.nothing_lost()
    assert {i["state"] for i in edge.incidents(group)} == {"resolved"}
    again = {**am_alert(group, fingerprint=first), "startsAt": "2026-11-25T03:00:00Z"}  # the next episode
    assert edge.alertmanager(am_webhook(again)).status_code == 202
    edge.nothing_lost()
    assert sorted(i["state"] for i in edge.incidents(group) if i["runbook_id"] == "edge-cases") == ["open", "resolved"]


# --- nesting ----------------------------------------------------------------------------------


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("levels", [65, 10_000])
def test_deep_nesting_is_refused_for_every_source(sqlite_edge: Edge, levels: int) -> None:
    group = unique()
    nested = deep(levels)
    bodies = {
        "alertmanager": am_webhook(am_alert(group)).replace(b'"receiver": "siaga"', f'"receiver": "siaga", "x": {nested}'.encode()),
        "grafana": am_webhook(am_alert(group)).replace(b'"receiver": "siaga"', f'"receiver": "siaga", "x": {nested}'.encode()),
        "social": f'{{"labels": {{"topic": "{group}"}}, "x": {nested}}}'.encode(),
        "pagerduty": f'{{"event": {{"event_type": "incident.triggered", "x": {nested}}}}}'.encode(),
    }
    for source, body in bodies.items():
        answer = getattr(sqlite_edge, source)(body)
        assert answer.status_code == 422, (source, answer.status_code, answer.text[:300])
        assert "nested deeper than" in answer.json()["detail"], (source, answer.text[:300])
    envelope = json.loads(sqlite_edge.key.sign(sqlite_edge.sns_message()))
    body = json.dumps(envelope)[:-1].encode() + f', "x": {nested}}}'.encode()
    answer = sqlite_edge.cloudwatch(body)
    assert answer.status_code == 422 and "nested deeper than" in answer.json()["detail"], answer.text[:300]
    sqlite_edge.nothing_lost()
    assert sqlite_edge.incidents(group) == []


# --- SNS URLs ---------------------------------------------------------------------------------

BAD_URLS = {
    "tab": "https://{host}/?Action=ConfirmSubscription&Token=t\tok",
    "NUL": "https://{host}/?Action=ConfirmSubscription&Token=t\x00ok",
    "space": "https://{host}/?Action=ConfirmSubscription&Token=t ok",
    "port out of range": "https://{hostname}:99999/?Action=ConfirmSubscription&Token=tok",
    "port not a number": "https://{hostname}:44x/?Action=ConfirmSubscription&Token=tok",
}


@pytest.mark.parametrize("flaw", sorted(BAD_URLS))
def test_a_subscribe_url_that_is_not_a_url_is_refused_and_sns_may_send_again(sqlite_edge: Edge, flaw: str) -> None:
    edge = sqlite_edge
    host, hostname = edge.sns.host, edge.sns.host.split(":")[0]
    visits = len(edge.sns.visited("subscribe"))
    message = edge.sns_message("subscription", SubscribeURL=BAD_URLS[flaw].format(host=host, hostname=hostname))
    body = edge.key.sign(message)
    for _ in range(2):  # SNS re-sends the same message: refused for what it is, not as a replay
        answer = edge.cloudwatch(body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith("SubscribeURL"), answer.text
    assert len(edge.sns.visited("subscribe")) == visits
    fixed = {**message, "SubscribeURL": f"https://{host}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok"}
    answer = edge.cloudwatch(edge.key.sign(fixed))  # the same MessageId, now with a good URL
    assert answer.status_code == 200 and answer.json() == {"confirmed": TOPIC}, answer.text


@pytest.mark.parametrize("flaw", ["tab", "NUL", "space", "port out of range", "port not a number"])
def test_a_signing_cert_url_that_is_not_a_url_is_refused_without_a_fetch(sqlite_edge: Edge, flaw: str) -> None:
    edge = sqlite_edge
    host, hostname = edge.sns.host, edge.sns.host.split(":")[0]
    url = {
        "tab": f"https://{host}/Simple\tNotificationService.pem",
        "NUL": f"https://{host}/Simple\x00NotificationService.pem",
        "space": f"https://{host}/Simple NotificationService.pem",
        "port out of range": f"https://{hostname}:99999/SimpleNotificationService.pem",
        "port not a number": f"https://{hostname}:44x/SimpleNotificationService.pem",
    }[flaw]
    visits = len(edge.sns.visits)
    answer = edge.cloudwatch(edge.key.sign(edge.sns_message(SigningCertURL=url)))
    assert answer.status_code == 422 and answer.json()["detail"].startswith("SigningCertURL"), answer.text
    assert len(edge.sns.visits) == visits


def test_a_message_from_a_foreign_topic_fetches_no_certificate(sqlite_edge: Edge) -> None:
    edge = sqlite_edge
    assert edge.cloudwatch(edge.key.sign(edge.sns_message())).status_code == 202  # the real certificate, cached
    visits = len(edge.sns.visits)
    junk = base64.b64encode(b"\x00" * 256).decode()
    for n in range(40):
        forged = edge.sns_message(TopicArn=f"{TOPIC}-foreign", Signature=junk, SignatureVersion="2",
                                  SigningCertURL=f"https://{edge.sns.host}/SimpleNotificationService-{n}.pem")
        answer = edge.cloudwatch(json.dumps(forged).encode())
        assert answer.status_code == 403 and "not an allowed topic" in answer.json()["detail"], answer.text
    assert len(edge.sns.visits) == visits, "no certificate fetched for a topic that is not allowed"
    assert edge.cloudwatch(edge.key.sign(edge.sns_message())).status_code == 202
    assert len(edge.sns.visits) == visits, "the real certificate is still cached"
    edge.nothing_lost()


# --- bodies that do not end -------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_a_chunked_body_over_the_limit_is_refused_before_it_ends(sqlite_edge: Edge) -> None:
    """Unauthenticated and chunked (no Content-Length to refuse it by): the 413 comes once the
    limit is passed, while the sender is still sending, and the receiver does not hold the body
    (`benchmarks/receiver_body_limit.py` sends 200 MiB and prints the memory, beside a server that
    reads the whole body first)."""
    process = sqlite_edge.receiver.process
    assert process is not None
    before = rss_kib(process.pid)
    result = send_chunked(sqlite_edge.receiver.port, 64 * MIB)
    assert result.status_line.startswith("HTTP/1.1 413"), result
    assert result.answered_at is not None and result.answered_at < MAX_BODY + 8 * MIB, f"413 only after {result.answered_at} bytes"
    assert rss_kib(process.pid) - before < 40 * 1024


# --- the read API -----------------------------------------------------------------------------

READ_PATHS = ["/incidents", "/incidents/inc-nope", "/metrics", "/openapi.json", "/docs", "/redoc"]


def test_the_read_api_and_its_docs_answer_only_to_the_token(sqlite_edge: Edge) -> None:
    url = sqlite_edge.url
    for path in READ_PATHS:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_TOKEN}"}):
            answer = httpx.get(f"{url}{path}", headers=headers, timeout=10)
            assert answer.status_code == 401, (path, headers, answer.status_code)
            assert "SIAGA_API_TOKEN" in answer.json()["detail"] and answer.headers["www-authenticate"]
        answer = sqlite_edge.read(path)
        assert answer.status_code == (404 if path.endswith("nope") else 200), (path, answer.text[:200])
    browser = base64.b64encode(f"anyone:{API_TOKEN}".encode()).decode()  # what a browser sends after asking
    page = httpx.get(f"{url}/docs", headers={"Authorization": f"Basic {browser}"}, timeout=10)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assert httpx.get(f"{url}/docs", timeout=10).headers["www-authenticate"].startswith("Basic")
    health = httpx.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200 and set(health.json()) == {"ok", "queued", "busy", "processed", "failed"}
    assert set(health.json()["failed"]) == {"webhooks", "alerts"}  # counts only


def test_without_a_token_the_read_api_is_not_served(tmp_path: Path) -> None:
    app = create_app({}, Settings.from_environ({}), engine(f"sqlite:///{tmp_path / 'siaga.db'}"), no_runs)
    with serve(app, free_port()) as url:
        for path in READ_PATHS:
            answer = httpx.get(f"{url}{path}", headers={"Authorization": "Bearer anything"}, timeout=10)
            assert answer.status_code == 404 and "SIAGA_API_TOKEN" in answer.json()["detail"], (path, answer.text[:200])
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


async def no_runs(incident: object) -> str:
    raise RuntimeError("this test starts no runs")


# --- a store that cannot remember a delivery ---------------------------------------------------


def test_a_replay_guard_the_store_refuses_is_a_503_to_retry_not_a_500(sqlite_edge: Edge) -> None:
    """The store refuses to remember deliveries (as a locked or failing database would): a proven
    webhook is answered 503 with Retry-After, and the same delivery sent again once the store
    keeps it again is taken in (202), not refused as a replay."""
    store = engine(sqlite_edge.store_url)
    body = json.dumps({"labels": {"topic": unique(), "sentiment": "neutral"}}).encode()
    headers = signed_headers(SOCIAL_SECRET, body)
    with store.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_deliveries BEFORE INSERT ON deliveries BEGIN SELECT RAISE(ABORT, 'refused'); END")
    try:
        answer = sqlite_edge.receiver.post("social", body, headers)
        assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
    finally:
        with store.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER refuse_deliveries")
    answer = sqlite_edge.receiver.post("social", body, headers)
    assert answer.status_code == 202, answer.text
    sqlite_edge.nothing_lost()
